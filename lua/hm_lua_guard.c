/*
** hm_lua_guard.c: the protections Hemera builds in.
**
** core.recursion(meta, key, max) -> true | false, count
**   Hemera's loop protection (spec 8.1): the counter lives on the wire in
**   meta.referrers[key] (key = "<traceId>:<method>"), so it grows along a
**   call chain across processes and languages. A missing, null or
**   non-number count counts as 0; NaN is never written. Over `max` the
**   referrers are cleared and the act must fail with MaxRecursionError
**   {count = max}.
**
** core.load_start(interval_ms), core.load_stop(), core.load() ->
**   {eventLoopDelay = ms, heapUsed = bytes, rss = bytes}
**   Samples the event-loop delay (how late a repeating timer fires), the
**   Lua heap and the process RSS every interval (spec 8.2).
*/
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hm_lua_private.h"

static int l_recursion(lua_State *L) {
  lua_Integer max = luaL_checkinteger(L, 3);
  lua_Integer count = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  if (lua_getfield(L, 1, "referrers") == LUA_TTABLE) {
    int t = lua_gettop(L);
    lua_pushvalue(L, 2);
    if (lua_gettable(L, t) == LUA_TNUMBER) {
      lua_Number n = lua_tonumber(L, -1);
      /* NaN and negative garbage from other clients count as 0. */
      if (n == n && n >= 0 && n < 1e15) count = (lua_Integer)n + 1;
    }
    lua_pop(L, 1);
    if (count > max) {
      lua_pushnil(L);
      lua_setfield(L, 1, "referrers");
      lua_pushboolean(L, 0);
      lua_pushinteger(L, count - 1);
      return 2;
    }
    lua_pushvalue(L, 2);
    lua_pushinteger(L, count);
    lua_settable(L, t);
  } else {
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, 1);
    lua_settable(L, -3);
    lua_setfield(L, 1, "referrers");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* {====================================================================
** Load sampler: one per state
** ===================================================================== */

typedef struct sampler {
  uv_timer_t timer;
  hm_ctx *ctx;
  uint64_t interval;
  uint64_t expected; /* hrtime ns when the next tick is due */
  double delay_ms, heap, rss;
  int running;
  int table_ref; /* the Lua table each sample is written into */
} sampler;

/* The state's sampler, made at first use. ctx->sampler is its one
** pointer: hm_lua_close_sampler clears it, and every entry point reaches
** the sampler through the context, which refuses after shutdown. */
static sampler *the_sampler(hm_ctx *ctx) {
  sampler *s = ctx->sampler;
  if (s == NULL) {
    /* malloc'd, not a userdata: libuv may touch it until its close
    ** callback, which can run after the state is gone. */
    s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->ctx = ctx;
    s->table_ref = LUA_NOREF;
    uv_timer_init(ctx->loop, &s->timer);
    s->timer.data = s;
    uv_unref((uv_handle_t *)&s->timer);
    ctx->sampler = s;
  }
  return s;
}

static double read_rss(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return 0;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  fclose(f);
  return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Writes the last sample into the shared table (hemera.load). */
static void publish(sampler *s) {
  lua_State *L = s->ctx->L;
  if (s->table_ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->table_ref);
  lua_pushnumber(L, s->delay_ms);
  lua_setfield(L, -2, "eventLoopDelay");
  lua_pushnumber(L, s->heap);
  lua_setfield(L, -2, "heapUsed");
  lua_pushnumber(L, s->rss);
  lua_setfield(L, -2, "rss");
  lua_pop(L, 1);
}

static double heap_bytes(lua_State *L) {
  return (double)lua_gc(L, LUA_GCCOUNT) * 1024.0 + lua_gc(L, LUA_GCCOUNTB);
}

static void take_sample(sampler *s) {
  s->heap = heap_bytes(s->ctx->L);
  s->rss = read_rss();
  publish(s);
}

static void on_tick(uv_timer_t *t) {
  sampler *s = t->data;
  uint64_t now = uv_hrtime();
  s->delay_ms = now > s->expected ? (double)(now - s->expected) / 1e6 : 0;
  s->expected = now + s->interval * 1000000ULL;
  take_sample(s);
}

static int l_load_start(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_Integer ms = luaL_checkinteger(L, 1);
  sampler *s;
  luaL_argcheck(L, ms > 0, 1, "sample interval must be > 0 ms");
  s = the_sampler(ctx);
  if (s == NULL) return luaL_error(L, "out of memory");
  s->interval = (uint64_t)ms;
  s->expected = uv_hrtime() + s->interval * 1000000ULL;
  take_sample(s);
  uv_timer_start(&s->timer, on_tick, (uint64_t)ms, (uint64_t)ms);
  s->running = 1;
  return 0;
}

static int l_load_stop(lua_State *L) {
  sampler *s = hm_ctx_get(L)->sampler;
  if (s && s->running) {
    uv_timer_stop(&s->timer);
    s->running = 0;
  }
  return 0;
}

static int l_load(lua_State *L) {
  sampler *s = hm_ctx_get(L)->sampler;
  lua_createtable(L, 0, 3);
  if (s && s->running) {
    lua_pushnumber(L, s->delay_ms);
    lua_setfield(L, -2, "eventLoopDelay");
    lua_pushnumber(L, s->heap);
    lua_setfield(L, -2, "heapUsed");
    lua_pushnumber(L, s->rss);
    lua_setfield(L, -2, "rss");
  } else {
    /* Not sampling: measure now (no loop delay known). */
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "eventLoopDelay");
    lua_pushnumber(L, heap_bytes(L));
    lua_setfield(L, -2, "heapUsed");
    lua_pushnumber(L, read_rss());
    lua_setfield(L, -2, "rss");
  }
  return 1;
}

/* core.load_table(): the table every sample is written into (the same
** table each call), holding a sample taken now when none runs. */
static int l_load_table(lua_State *L) {
  sampler *s = the_sampler(hm_ctx_get(L));
  if (s == NULL) return luaL_error(L, "out of memory");
  if (s->table_ref == LUA_NOREF) {
    lua_createtable(L, 0, 3);
    s->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (s->running) publish(s); /* the last sample, not an empty table */
  }
  if (!s->running) take_sample(s);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->table_ref);
  return 1;
}

static void sampler_free(uv_handle_t *h) { free(h->data); }

void hm_lua_close_sampler(hm_ctx *ctx) {
  sampler *s = ctx->sampler;
  if (s == NULL) return;
  ctx->sampler = NULL;
  if (s->table_ref != LUA_NOREF)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, s->table_ref);
  s->table_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&s->timer, sampler_free);
}

/* }==================================================================== */

void hm_lua_open_guard(lua_State *L) {
  static const luaL_Reg funcs[] = {{"recursion", l_recursion},
                                   {"load_start", l_load_start},
                                   {"load_stop", l_load_stop},
                                   {"load", l_load},
                                   {"load_table", l_load_table},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
