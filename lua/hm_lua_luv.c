/*
** hm_lua_luv.c: sharing luv's loop.
**
** When luv is open in the state before hemera.core (`require "luv"` then
** `require "hemera"`), Hemera runs on luv's loop, so uv.run() drives both
** and Hemera.run() is uv.run(). luv keeps its context, a luv_ctx_t whose
** first field is the loop, as a userdata in the registry under
** "luv_context"; luv_loop(L) reads it from there (luv.h). We read it the
** same way instead of linking libluv, so hemera.core loads whether luv is
** installed or not, and it always finds the luv the host loaded (a second
** copy linked in would have a context of its own). Where luv.h is at hand
** the build checks that the loop still comes first.
**
** A host that gave luv a loop of its own (luv_set_loop) and never opened
** luv's module is served as any host loop: Hemera uses it and the host
** runs it.
*/
#include "hm_lua_private.h"

#ifdef HM_HAVE_LUV_H
#include <stddef.h>

#include <luv/luv.h>
_Static_assert(offsetof(luv_ctx_t, loop) == 0,
               "luv_ctx_t no longer starts with its loop");
#endif

uv_loop_t *hm_luv_loop(lua_State *L, hm_ctx *ctx) {
  uv_loop_t *loop = NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, "luv_context");
  if (lua_type(L, -1) == LUA_TUSERDATA &&
      lua_rawlen(L, -1) >= sizeof(uv_loop_t *))
    loop = *(uv_loop_t **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (loop == NULL) return NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "luv");
  if (lua_istable(L, -1)) {
    ctx->luv_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it */
    ctx->loop_kind = HM_LOOP_LUV;
  } else {
    lua_pop(L, 1);
    ctx->loop_kind = HM_LOOP_HOST;
  }
  lua_pop(L, 1); /* package.loaded */
  return loop;
}

/* Calls luv.<name>() protected with one result. */
static int luv_call(lua_State *L, hm_ctx *ctx, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->luv_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  return lua_pcall(L, 0, 1, 0);
}

int hm_luv_run(lua_State *L, hm_ctx *ctx) {
  int st;
  /* luv 1.44's run does not refuse to nest: uv_run must not be entered
  ** from one of its own callbacks. */
  if (luv_call(L, ctx, "loop_mode") != LUA_OK) return -1;
  if (!lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "the loop is already running");
    return -1;
  }
  lua_pop(L, 1);
  ctx->running = 1;
  st = luv_call(L, ctx, "run");
  ctx->running = 0;
  if (st != LUA_OK) return -1;
  lua_pop(L, 1);
  return 0;
}
