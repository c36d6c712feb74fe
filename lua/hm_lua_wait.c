/*
** hm_lua_wait.c: what a Hemera coroutine can wait for besides NATS.
**
** core.sleep(ms)
**   Suspends the running Hemera coroutine for at least ms milliseconds.
**
** core.future() -> f;  f:set(...) once;  f:wait([timeout_ms]) -> ...
**   wait returns at once when the value is already set; otherwise it
**   suspends the running Hemera coroutine until set, or returns
**   nil, "timeout" when timeout_ms passes first. Either way it returns
**   exactly the values given to set (select('#', ...) of them). One waiter
**   at a time. f:set may be called from anywhere, a luv callback included.
**
** Ownership. Each wait is a hm_wait record (hm_lua_sched.c) in the struct
** it waits on. A sleep's record lives in a malloc'd struct with its timer,
** freed by the timer's close callback. A future's lives in the future's
** userdata; its timer is malloc'd (libuv may hold it after the userdata is
** gone). A future waited for without a timeout anchors its coroutine in
** its own user value instead of the registry: the coroutine then lives as
** long as something can still set the future, and a future nobody can
** reach any more is collected together with its waiter (its __gc releases
** the record).
*/
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "hm_lua_private.h"

/* Milliseconds from Lua: may come as a float (from hrtime arithmetic):
** round up, so a wait is never shorter than asked; capped at ~31 years to
** keep the cast defined. */
static uint64_t check_ms(lua_State *L, lua_Number ms, int arg) {
  ms = ceil(ms);
  luaL_argcheck(L, ms >= 0, arg, "must be >= 0");
  if (ms > 1e12) ms = 1e12;
  return (uint64_t)ms;
}

static void handle_free(uv_handle_t *h) { free(h); }

/* Timers count from the loop's cached clock: refresh it first so time Lua
** spent since the iteration began is not taken off the wait. */
static void timer_start(hm_ctx *ctx, uv_timer_t *t, uv_timer_cb cb,
                        uint64_t ms) {
  uv_update_time(ctx->loop);
  uv_timer_start(t, cb, ms, 0);
}

/* {====================================================================
** Sleep
** ===================================================================== */

typedef struct sleeper {
  uv_timer_t timer; /* first: the close callback frees the struct */
  hm_ctx *ctx;
  hm_wait wait;
} sleeper;

static void on_sleep(uv_timer_t *t) {
  sleeper *s = t->data;
  hm_sched_wake(s->ctx, &s->wait, 0);
  uv_close((uv_handle_t *)t, handle_free);
}

/* Shutdown: the record was released; the timer must not fire. */
static void sleep_cancel(hm_wait *w) {
  sleeper *s = (sleeper *)((char *)w - offsetof(sleeper, wait));
  uv_close((uv_handle_t *)&s->timer, handle_free);
}

static int l_sleep(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  uint64_t ms = check_ms(L, luaL_checknumber(L, 1), 1);
  sleeper *s;
  /* Every check before the allocation: nothing to free when one raises. */
  hm_sched_check(L, ctx, "sleep");
  s = malloc(sizeof *s);
  if (s == NULL) return luaL_error(L, "out of memory");
  s->ctx = ctx;
  s->wait = (hm_wait)HM_WAIT_INIT;
  uv_timer_init(ctx->loop, &s->timer);
  s->timer.data = s;
  hm_sched_park(L, ctx, &s->wait, sleep_cancel);
  timer_start(ctx, &s->timer, on_sleep, ms);
  return lua_yield(L, 0);
}

/* }==================================================================== */

/* {====================================================================
** Futures
** ===================================================================== */

#define HM_FUTURE_MT "hemera.Future"

/* User values of a future. */
enum { UV_VALUES = 1, /* {n = count, ...}: what set was given */
       UV_WAITER = 2  /* the waiting coroutine, when waited without timeout */
};

typedef struct lfuture {
  hm_ctx *ctx;
  int set;
  hm_wait wait;
  uv_timer_t *timer; /* the wait's timeout, or NULL */
} lfuture;

static void future_stop_timer(lfuture *f) {
  if (f->timer) {
    f->timer->data = NULL;
    uv_close((uv_handle_t *)f->timer, handle_free);
    f->timer = NULL;
  }
}

/* Pushes the stored values onto `to`; returns how many. */
static int push_values(lua_State *L, int fidx, lua_State *to) {
  int i, n, t;
  lua_getiuservalue(L, fidx, UV_VALUES);
  t = lua_gettop(L);
  lua_getfield(L, t, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (!lua_checkstack(to, n + 1)) {
    lua_pop(L, 1);
    return luaL_error(L, "too many values");
  }
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    if (to != L) lua_xmove(L, to, 1);
  }
  if (to == L) lua_remove(L, t);
  else lua_pop(L, 1);
  return n;
}

static void future_wake(lua_State *L, lfuture *f, int fidx) {
  int n = push_values(L, fidx, f->wait.co);
  future_stop_timer(f);
  hm_sched_wake(f->ctx, &f->wait, n);
  /* Anchored in the registry again (or released): the user value may go. */
  lua_pushnil(L);
  lua_setiuservalue(L, fidx, UV_WAITER);
}

static void on_future_timeout(uv_timer_t *t) {
  lfuture *f = t->data;
  lua_State *co;
  if (f == NULL || f->wait.co == NULL) return;
  co = f->wait.co;
  future_stop_timer(f);
  lua_checkstack(co, 2);
  lua_pushnil(co);
  lua_pushliteral(co, "timeout");
  hm_sched_wake(f->ctx, &f->wait, 2);
}

/* Shutdown: the record was released; the timeout must not fire. */
static void future_cancel(hm_wait *w) {
  lfuture *f = (lfuture *)((char *)w - offsetof(lfuture, wait));
  future_stop_timer(f);
}

static lfuture *check_future(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  HM_CHECK_OPEN(L, f->ctx);
  return f;
}

static int l_future(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lfuture *f = lua_newuserdatauv(L, sizeof *f, 2);
  f->ctx = ctx;
  f->set = 0;
  f->wait = (hm_wait)HM_WAIT_INIT;
  f->timer = NULL;
  luaL_setmetatable(L, HM_FUTURE_MT);
  return 1;
}

static int f_set(lua_State *L) {
  lfuture *f = check_future(L);
  int i, n = lua_gettop(L) - 1;
  if (f->set) return luaL_error(L, "future is already set");
  lua_createtable(L, n, 1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, 1, UV_VALUES);
  f->set = 1;
  if (f->wait.co) future_wake(L, f, 1);
  return 0;
}

static int f_wait(lua_State *L) {
  lfuture *f = check_future(L);
  hm_ctx *ctx = f->ctx;
  uint64_t timeout = check_ms(L, luaL_optnumber(L, 2, 0), 2);
  if (f->set) return push_values(L, 1, L);
  if (f->wait.co) return luaL_error(L, "future already has a waiter");
  hm_sched_check(L, ctx, "future:wait");
  if (timeout > 0) {
    f->timer = malloc(sizeof *f->timer);
    if (f->timer == NULL) return luaL_error(L, "out of memory");
    uv_timer_init(ctx->loop, f->timer);
    f->timer->data = f;
  } else {
    /* May raise (memory): before anything else is taken. */
    lua_pushthread(L);
    lua_setiuservalue(L, 1, UV_WAITER);
  }
  hm_sched_park(L, ctx, &f->wait, future_cancel);
  if (f->timer) {
    /* The timer holds f by pointer: the waiting coroutine's stack
    ** (argument 1) keeps the userdata alive, and the registry anchor
    ** keeps the coroutine. */
    timer_start(ctx, f->timer, on_future_timeout, timeout);
  } else {
    hm_sched_unanchor(ctx, &f->wait);
  }
  return lua_yield(L, 0);
}

static int f_is_set(lua_State *L) {
  lfuture *f = check_future(L);
  lua_pushboolean(L, f->set);
  return 1;
}

static int f_gc(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  /* Collected while waited for: nothing could set it any more, and its
  ** waiter (anchored by this userdata alone) goes with it. */
  hm_sched_release(f->ctx, &f->wait);
  future_stop_timer(f);
  return 0;
}

/* }==================================================================== */

void hm_lua_open_wait(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"set", f_set}, {"wait", f_wait}, {"is_set", f_is_set}, {NULL, NULL}};
  luaL_newmetatable(L, HM_FUTURE_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, f_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  lua_pushcfunction(L, l_future);
  lua_setfield(L, -2, "future");
}
