/*
** hm_lua.c: the module `hemera.core`: the per-state context, whose loop it
** runs on, run and shutdown (the embedding API of hm_lua.h), and small
** utilities. The scheduler is in hm_lua_sched.c, sleep and futures in
** hm_lua_wait.c, luv's loop in hm_lua_luv.c.
**
** Loops. A loop is run to completion only when we own it. On a host's loop
** (hm_lua_set_loop, or luv's) shutdown closes our handles and returns: the
** host runs its loop to let their close callbacks finish, which touch
** only malloc'd memory that they free, so that may happen after lua_close.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_codec.h"
#include "hm_jsnum.h"
#include "hm_lua.h"
#include "hm_lua_private.h"
#include "lualib.h"

/* Registry keys: addresses of statics. */
static const char ctx_key = 'c';
static const char loop_key = 'l';
static const char module_key = 'm';

/* {====================================================================
** Context
** ===================================================================== */

hm_ctx *hm_ctx_of(lua_State *L) {
  hm_ctx *ctx;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

int hm_lua_refuse(lua_State *L) {
  return luaL_error(L, "hemera.core was shut down in this state "
                       "(hm_lua_shutdown or lua_close ran): it cannot be used "
                       "any more");
}

hm_ctx *hm_ctx_get(lua_State *L) {
  hm_ctx *ctx = hm_ctx_of(L);
  if (ctx == NULL) luaL_error(L, "hemera.core is not open in this state");
  HM_CHECK_OPEN(L, ctx);
  return ctx;
}

void hm_lua_set_loop(lua_State *L, struct uv_loop_s *loop) {
  lua_pushlightuserdata(L, loop);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
}

/* }==================================================================== */

/* {====================================================================
** Run and shutdown
** ===================================================================== */

static void walk_close(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Our own loop, once shut down: only our handles are on it, every one of
** them closing, and no close callback of ours calls Lua. */
static void close_own_loop(hm_ctx *ctx) {
  uv_run(ctx->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(ctx->loop) != 0) {
    uv_walk(ctx->loop, walk_close, NULL);
    uv_run(ctx->loop, UV_RUN_DEFAULT);
    uv_loop_close(ctx->loop);
  }
  ctx->owns_loop = 0; /* closed: nothing runs it again */
}

int hm_lua_run(lua_State *L) {
  hm_ctx *ctx = hm_ctx_of(L);
  if (ctx == NULL || ctx->shutdown || ctx->running || ctx->cur_co != NULL)
    return -1;
  if (ctx->loop_kind == HM_LOOP_LUV) {
    if (hm_luv_run(L, ctx) == 0) return 0;
    lua_pop(L, 1);
    return -1;
  }
  ctx->running = 1;
  uv_run(ctx->loop, UV_RUN_DEFAULT);
  ctx->running = 0;
  if (ctx->shutdown && ctx->owns_loop) close_own_loop(ctx);
  return 0;
}

/* Hemera.run(): also allowed on a host's loop (the interpreter's), so
** scripts run the same in every host; a host that runs the loop itself must
** not call it from inside a loop callback. On luv's loop it is uv.run(). */
static int l_run(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  if (ctx->running || ctx->cur_co != NULL)
    return luaL_error(L, "the loop is already running");
  if (ctx->loop_kind == HM_LOOP_LUV) {
    if (hm_luv_run(L, ctx) != 0) return lua_error(L);
    return 0;
  }
  hm_lua_run(L);
  return 0;
}

void hm_lua_shutdown(lua_State *L) {
  hm_ctx *ctx = hm_ctx_of(L);
  if (ctx == NULL || ctx->shutdown) return;
  ctx->shutdown = 1;
  hm_budget_close(ctx);
  /* First the connections: what they still had pending completes now, and
  ** wakes or releases its coroutines. */
  hm_lua_close_conns(ctx);
  hm_lua_close_https(ctx);
  hm_lua_close_tracers(ctx);
  hm_lua_close_sampler(ctx);
  hm_lua_close_signal(ctx);
  hm_sched_shutdown(ctx);
  if (ctx->owns_loop && !ctx->running) close_own_loop(ctx);
}

void hm_lua_library_close(void) { hm_conn_library_close(); }

static int ctx_gc(lua_State *L) {
  hm_lua_shutdown(L);
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** Small utilities
** ===================================================================== */

/* The context is upvalue 1: up to three ids an act, and a registry lookup
** for each cost a fifth of the call. */
static int l_nuid(lua_State *L) {
  hm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  HM_CHECK_OPEN(L, ctx);
  char id[HM_NUID_LEN + 1];
  hm_nuid_next(&ctx->nuid, id);
  lua_pushlstring(L, id, HM_NUID_LEN);
  return 1;
}

/* Monotonic milliseconds as a float, like Node's process.hrtime in ms. */
static int l_hrtime(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

/* Wall-clock milliseconds since the epoch. */
static int l_now(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushinteger(L, (lua_Integer)tv.tv_sec * 1000 + tv.tv_usec / 1000);
  return 1;
}

/* core.copy(t): a shallow copy of t (no metatable), made at its size so
** that filling it never rehashes: a validator copies every request. */
static int l_copy(lua_State *L) {
  lua_Integer n = 0, narr;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    n++;
    lua_pop(L, 1);
  }
  narr = (lua_Integer)lua_rawlen(L, 1);
  if (narr > n) narr = n;
  lua_createtable(L, (int)narr, (int)(n - narr));
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 2);
  }
  return 1;
}

static int l_is_hemera_coroutine(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_pushboolean(L, L == ctx->cur_co && ctx->cur_ref != LUA_NOREF);
  return 1;
}

static int l_stats(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  static const char *const kinds[] = {"own", "host", "luv"};
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kinds[ctx->loop_kind]);
  lua_setfield(L, -2, "loop");
  lua_pushinteger(L, (lua_Integer)ctx->rcount);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, ctx->npool);
  lua_setfield(L, -2, "pooled");
  lua_pushboolean(L, ctx->owns_loop);
  lua_setfield(L, -2, "owns_loop");
  return 1;
}

/* }==================================================================== */

static const luaL_Reg funcs[] = {
    {"run", l_run},       {"hrtime", l_hrtime},
    {"now", l_now},       {"stats", l_stats},
    {"in_coroutine", l_is_hemera_coroutine},
    {"copy", l_copy},
    {NULL, NULL}};

/* cnats keeps threads of its own alive for the whole process. If Lua
** unloaded this module at lua_close, libnats could go with it while those
** threads still run: pin the module (and so libnats) for the process's
** lifetime. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)&luaopen_hemera_core, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_hemera_core(lua_State *L) {
  hm_ctx *ctx;
  uv_loop_t *host_loop;
  lua_State *mainL;

  /* Opened again (a host that cleared package.loaded, as busted does
  ** between spec files): the state has one context, so one module table. */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &module_key);
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);
  pin_module();

  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  host_loop = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  mainL = lua_tothread(L, -1);
  lua_pop(L, 1);

  ctx = lua_newuserdatauv(L, sizeof *ctx, 0);
  memset(ctx, 0, sizeof *ctx);
  /* Callbacks always run on the main thread, even when the module is
  ** first required from inside a coroutine. */
  ctx->L = mainL;
  ctx->cur_ref = LUA_NOREF;
  ctx->trampoline_ref = LUA_NOREF;
  ctx->luv_ref = LUA_NOREF;
  /* A loop the host handed over wins; then luv's, when luv is open here;
  ** else our own. */
  if (host_loop) {
    ctx->loop = host_loop;
    ctx->loop_kind = HM_LOOP_HOST;
  } else if ((ctx->loop = hm_luv_loop(L, ctx)) == NULL) {
    if (uv_loop_init(&ctx->own_loop) != 0)
      return luaL_error(L, "cannot create an event loop");
    ctx->loop = &ctx->own_loop;
    ctx->loop_kind = HM_LOOP_OWN;
    ctx->owns_loop = 1;
  }
  hm_nuid_init(&ctx->nuid);
  {
    static const char *const names[] = {"topic", "_msg", "replyTo", "meta",
                                        "trace", "request", "pattern",
                                        "delegate", "meta$", "delegate$",
                                        "_reply"};
    for (int k = 0; k < HM_K_MSGMT; k++) {
      lua_pushstring(L, names[k]);
      ctx->k[k] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    ctx->k[HM_K_MSGMT] = LUA_REFNIL; /* hm_lua_open_envelope */
  }
  lua_newtable(L); /* metatable of the context */
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);

  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, ctx);
  lua_pushcclosure(L, l_nuid, 1);
  lua_setfield(L, -2, "nuid");
  hm_codec_register(L);
  hm_lua_open_conn(L);
  hm_lua_open_router(L);
  hm_lua_open_guard(L);
  hm_lua_open_pattern(L);
  hm_lua_open_budget(L);
  hm_lua_open_envelope(L);
  hm_lua_open_micro(L);
  hm_lua_open_js(L);
  hm_lua_open_signal(L);
  hm_lua_open_jwt(L);
  hm_lua_open_wait(L);
  hm_lua_open_http(L);
  hm_lua_open_metrics(L);
  hm_lua_open_msgpack(L);
  hm_lua_open_tracing(L);
  hm_lua_open_sched(L, ctx); /* last: the trampoline sees the whole table */

  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &module_key);
  return 1;
}
