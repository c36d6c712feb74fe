/*
** hm_lua.c: the module `hemera.core`: per-state context, the scheduler
** (the one place that calls lua_resume), the coroutine pool, sleep, and the
** embedding API of hm_lua.h.
*/
#include <dlfcn.h>
#include <math.h>
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
static char pool_sentinel = 'p';

/* Idle coroutines kept for reuse; beyond this the GC takes them. */
#define POOL_MAX 256

/* {====================================================================
** Context
** ===================================================================== */

hm_ctx *hm_ctx_get(lua_State *L) {
  hm_ctx *ctx;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (ctx == NULL) luaL_error(L, "hemera.core is not open in this state");
  return ctx;
}

void hm_lua_set_loop(lua_State *L, struct uv_loop_s *loop) {
  lua_pushlightuserdata(L, loop);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
}

/* }==================================================================== */

/* {====================================================================
** Scheduler
** ===================================================================== */

static void on_idle(uv_idle_t *h);

static void ready_put(hm_ctx *ctx, lua_State *co, int ref, int nargs,
                      int preempted) {
  if (ctx->rcount == ctx->rcap) {
    size_t ncap = ctx->rcap ? ctx->rcap * 2 : 64, i;
    hm_ready *nr = malloc(ncap * sizeof *nr);
    if (nr == NULL) {
      /* Cannot queue: the coroutine is lost, but nothing dangles. */
      luaL_unref(ctx->L, LUA_REGISTRYINDEX, ref);
      fprintf(stderr, "hemera: out of memory queueing a coroutine\n");
      return;
    }
    for (i = 0; i < ctx->rcount; i++)
      nr[i] = ctx->ready[(ctx->rhead + i) % ctx->rcap];
    free(ctx->ready);
    ctx->ready = nr;
    ctx->rcap = ncap;
    ctx->rhead = 0;
  }
  ctx->ready[(ctx->rhead + ctx->rcount) % ctx->rcap] =
      (hm_ready){co, ref, nargs, preempted};
  ctx->rcount++;
  if (!ctx->idle_active) {
    /* An active idle handle also keeps the loop from blocking in poll. */
    uv_idle_start(&ctx->idle, on_idle);
    ctx->idle_active = 1;
  }
}

static void ready_push(hm_ctx *ctx, lua_State *co, int ref, int nargs) {
  ready_put(ctx, co, ref, nargs, 0);
}

void hm_sched_wake(hm_ctx *ctx, lua_State *co, int ref, int nargs) {
  if (ctx->shutdown) {
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, ref);
    return;
  }
  ready_push(ctx, co, ref, nargs);
}

void hm_sched_drop(hm_ctx *ctx, int ref) {
  luaL_unref(ctx->L, LUA_REGISTRYINDEX, ref);
}

lua_State *hm_sched_spawn_begin(hm_ctx *ctx, int *ref) {
  lua_State *L = ctx->L, *co;
  if (ctx->shutdown) return NULL;
  if (ctx->npool > 0) {
    *ref = ctx->pool[--ctx->npool];
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    co = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    co = lua_newthread(L);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops the thread */
    /* A fresh coroutine starts in the trampoline: first resume calls it
    ** with the job, later ones return the job from its yield. */
    lua_rawgeti(co, LUA_REGISTRYINDEX, ctx->trampoline_ref);
  }
  return co;
}

void hm_sched_spawn_end(hm_ctx *ctx, lua_State *co, int ref, int nargs) {
  ready_push(ctx, co, ref, nargs + 1);
}

void hm_sched_spawn(hm_ctx *ctx, lua_State *from, int nargs) {
  int ref;
  lua_State *co = hm_sched_spawn_begin(ctx, &ref);
  if (co == NULL) {
    lua_pop(from, nargs + 1);
    return;
  }
  lua_xmove(from, co, nargs + 1);
  hm_sched_spawn_end(ctx, co, ref, nargs);
}

void hm_sched_check(lua_State *L, hm_ctx *ctx, const char *what) {
  if (L != ctx->cur_co || ctx->cur_ref == LUA_NOREF)
    luaL_error(L,
               "%s must run in a Hemera coroutine (a handler, a ready or "
               "act callback, or Hemera.spawn), or be given a callback",
               what);
}

void hm_sched_await(lua_State *L, hm_ctx *ctx, int *ref, const char *what) {
  hm_sched_check(L, ctx, what);
  *ref = ctx->cur_ref;
  ctx->cur_ref = LUA_NOREF;
  ctx->awaited = 1;
}

static void report(hm_ctx *ctx, lua_State *co, int status) {
  lua_State *L = ctx->L;
  const char *msg = lua_tostring(co, -1);
  /* The traceback must come from the dead coroutine: the main thread's
  ** stack says nothing about where it failed. */
  luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
  fprintf(stderr, "hemera: coroutine failed (%s): %s\n",
          status == LUA_ERRMEM ? "out of memory" : "error",
          lua_tostring(L, -1));
  lua_pop(L, 1);
}

/* Keeps an idle coroutine for reuse; 0 when the pool is full. */
static int pool_put(hm_ctx *ctx, int ref) {
  if (ctx->shutdown || ctx->npool >= POOL_MAX) return 0;
  if (ctx->npool == ctx->pool_cap) {
    int ncap = ctx->pool_cap ? ctx->pool_cap * 2 : 16;
    int *np = realloc(ctx->pool, (size_t)ncap * sizeof *np);
    if (np == NULL) return 0;
    ctx->pool = np;
    ctx->pool_cap = ncap;
  }
  ctx->pool[ctx->npool++] = ref;
  return 1;
}

/* The only lua_resume of the project. Runs from the top of a loop
** callback, never inside a C function that Lua called. */
static void resume(hm_ctx *ctx, hm_ready *r) {
  lua_State *L = ctx->L, *co = r->co;
  int nres = 0, status, preempted;
  ctx->cur_co = co;
  ctx->cur_ref = r->ref;
  ctx->awaited = 0;
  /* The clock runs only for coroutines with the budget hook or while some
  ** coroutine waits inside a budget (and for all once a signal asked for
  ** preemption). */
  if (ctx->preempt || ctx->budgets_parked > 0 ||
      lua_gethook(co) == hm_budget_hook)
    hm_budget_begin(ctx, co);
  status = lua_resume(co, L, r->nargs, &nres);
  if (ctx->seg_budget != NULL) hm_budget_end(ctx);
  ctx->seg_timed = 0;
  preempted = ctx->preempted;
  ctx->preempted = 0;
  ctx->cur_co = NULL;
  if (status == LUA_YIELD) {
    int pooled = nres == 1 && lua_touserdata(co, -1) == &pool_sentinel;
    lua_pop(co, nres);
    if (ctx->awaited) {
      /* Parked: the awaited operation owns the anchor now. */
    } else if (pooled) {
      if (!pool_put(ctx, ctx->cur_ref))
        luaL_unref(L, LUA_REGISTRYINDEX, ctx->cur_ref);
    } else {
      /* A bare coroutine.yield() in Hemera code, or the hook preempting
      ** it: treat it as "let others run" and resume it later with no
      ** values. */
      ready_put(ctx, co, ctx->cur_ref, 0, preempted);
    }
  } else {
    if (status != LUA_OK) report(ctx, co, status);
    /* Runs pending to-be-closed variables of the dead coroutine. */
#if LUA_VERSION_RELEASE_NUM >= 50406
    lua_closethread(co, L);
#else
    lua_resetthread(co);
#endif
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->cur_ref);
  }
  ctx->cur_ref = LUA_NOREF;
}

/* How long after a shutdown signal a coroutine that keeps running may
** still finish: Hemera's default closeTimeout. */
#define ABANDON_NS (2000 * 1000000ULL)

/* After a shutdown signal (ctx->preempt): when the loop has nothing left
** but coroutines the hook keeps preempting (handlers that spin), the loop
** would never end. Once they had ABANDON_NS to finish, drop them, as
** shutdown drops whatever is queued, so the process can exit. Our idle
** handle is the one active handle left then. */
static void abandon(hm_ctx *ctx) {
  size_t i;
  if (ctx->loop->active_handles > 1 || ctx->loop->active_reqs.count > 0 ||
      uv_hrtime() - ctx->preempt_at < ABANDON_NS)
    return;
  for (i = 0; i < ctx->rcount; i++)
    if (!ctx->ready[(ctx->rhead + i) % ctx->rcap].preempted) return;
  fprintf(stderr,
          "hemera: shutting down: abandoned %u coroutine(s) still running\n",
          (unsigned)ctx->rcount);
  while (ctx->rcount > 0) {
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, ctx->ready[ctx->rhead].ref);
    ctx->rhead = (ctx->rhead + 1) % ctx->rcap;
    ctx->rcount--;
  }
}

static void on_idle(uv_idle_t *h) {
  hm_ctx *ctx = h->data;
  /* Only what is queued now runs in this round, so a coroutine that
  ** yields in a loop cannot starve I/O. */
  size_t n = ctx->rcount;
  while (n-- > 0 && ctx->rcount > 0) {
    hm_ready r = ctx->ready[ctx->rhead];
    ctx->rhead = (ctx->rhead + 1) % ctx->rcap;
    ctx->rcount--;
    resume(ctx, &r);
  }
  if (ctx->preempt && ctx->rcount > 0) abandon(ctx);
  if (ctx->rcount == 0 && ctx->idle_active) {
    uv_idle_stop(&ctx->idle);
    ctx->idle_active = 0;
  }
}

/* core.spawn(fn, ...): runs fn(...) in a pooled coroutine, soon. */
static int l_spawn(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  int n = lua_gettop(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  hm_sched_spawn(ctx, L, n - 1);
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** Sleep
** ===================================================================== */

static void waiter_unlink(hm_waiter *w) {
  hm_ctx *ctx = w->ctx;
  if (w->prev) w->prev->next = w->next; else ctx->waiters = w->next;
  if (w->next) w->next->prev = w->prev;
}

static void waiter_free(uv_handle_t *h) { free(h->data); }

static void on_sleep(uv_timer_t *t) {
  hm_waiter *w = t->data;
  waiter_unlink(w);
  hm_sched_wake(w->ctx, w->co, w->ref, 0);
  uv_close((uv_handle_t *)t, waiter_free);
}

/* core.sleep(ms): suspends the running Hemera coroutine. */
static int l_sleep(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  /* Milliseconds may come as a float (from hrtime arithmetic): round up,
  ** so a sleep is never shorter than asked. */
  lua_Number ms = ceil(luaL_checknumber(L, 1));
  hm_waiter *w;
  luaL_argcheck(L, ms >= 0, 1, "must be >= 0");
  if (ms > 1e12) ms = 1e12; /* ~31 years; keeps the cast defined */
  w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "out of memory");
  hm_sched_await(L, ctx, &w->ref, "sleep");
  w->ctx = ctx;
  w->co = L;
  uv_timer_init(ctx->loop, &w->timer);
  w->timer.data = w;
  /* Timers count from the loop's cached clock: refresh it first so time
  ** Lua spent since the iteration began is not taken off the sleep. */
  uv_update_time(ctx->loop);
  uv_timer_start(&w->timer, on_sleep, (uint64_t)ms, 0);
  w->next = ctx->waiters;
  if (ctx->waiters) ctx->waiters->prev = w;
  ctx->waiters = w;
  return lua_yield(L, 0);
}

/* }==================================================================== */

/* {====================================================================
** Futures: a one-shot value one coroutine can wait for
**
** core.future() -> f;  f:set(...) once;  f:wait([timeout_ms]) -> ...
** wait returns at once when the value is already set; otherwise it
** suspends the running Hemera coroutine until set, or returns
** nil, "timeout" when timeout_ms passes first. One waiter at a time.
** ===================================================================== */

#define HM_FUTURE_MT "hemera.Future"

typedef struct lfuture {
  hm_ctx *ctx;
  int set;
  lua_State *co; /* the waiting coroutine, or NULL */
  int co_ref;
  uv_timer_t *timer; /* malloc'd: libuv may hold it after the userdata dies */
} lfuture;

static void timer_free(uv_handle_t *h) { free(h); }

static void future_stop_timer(lfuture *f) {
  if (f->timer) {
    f->timer->data = NULL;
    uv_close((uv_handle_t *)f->timer, timer_free);
    f->timer = NULL;
  }
}

/* Moves the stored values (uservalue table) onto the waiting coroutine. */
static void future_wake(lua_State *L, lfuture *f, int fidx) {
  lua_State *co = f->co;
  int n, i, ref = f->co_ref;
  f->co = NULL;
  f->co_ref = LUA_NOREF;
  future_stop_timer(f);
  lua_getiuservalue(L, fidx, 1);
  n = (int)luaL_len(L, -1);
  lua_checkstack(co, n + 1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_xmove(L, co, 1);
  }
  lua_pop(L, 1);
  hm_sched_wake(f->ctx, co, ref, n);
}

static void on_future_timeout(uv_timer_t *t) {
  lfuture *f = t->data;
  lua_State *co;
  int ref;
  if (f == NULL || f->co == NULL) return;
  co = f->co;
  ref = f->co_ref;
  f->co = NULL;
  f->co_ref = LUA_NOREF;
  future_stop_timer(f);
  lua_checkstack(co, 2);
  lua_pushnil(co);
  lua_pushliteral(co, "timeout");
  hm_sched_wake(f->ctx, co, ref, 2);
}

static int l_future(lua_State *L) {
  lfuture *f = lua_newuserdatauv(L, sizeof *f, 1);
  f->ctx = hm_ctx_get(L);
  f->set = 0;
  f->co = NULL;
  f->co_ref = LUA_NOREF;
  f->timer = NULL;
  luaL_setmetatable(L, HM_FUTURE_MT);
  return 1;
}

static int f_set(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  int i, n = lua_gettop(L) - 1;
  if (f->set) return luaL_error(L, "future is already set");
  f->set = 1;
  lua_createtable(L, n, 1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, 1, 1);
  if (f->co) future_wake(L, f, 1);
  return 0;
}

static int f_wait(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  hm_ctx *ctx = f->ctx;
  lua_Number timeout = ceil(luaL_optnumber(L, 2, 0)); /* see l_sleep */
  if (f->set) {
    int i, n, t;
    lua_getiuservalue(L, 1, 1);
    t = lua_gettop(L);
    lua_getfield(L, t, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n, "too many values");
    for (i = 1; i <= n; i++) lua_rawgeti(L, t, i);
    return n;
  }
  if (f->co) return luaL_error(L, "future already has a waiter");
  hm_sched_await(L, ctx, &f->co_ref, "future:wait");
  f->co = L;
  if (timeout > 1e12) timeout = 1e12; /* see l_sleep */
  if (timeout > 0) {
    f->timer = malloc(sizeof *f->timer);
    if (f->timer) {
      uv_timer_init(ctx->loop, f->timer);
      f->timer->data = f;
      uv_update_time(ctx->loop); /* see l_sleep */
      uv_timer_start(f->timer, on_future_timeout, (uint64_t)timeout, 0);
    }
  }
  /* Keep the userdata alive while a coroutine waits on it: the waiting
  ** coroutine's stack holds it (argument 1). */
  return lua_yield(L, 0);
}

static int f_is_set(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  lua_pushboolean(L, f->set);
  return 1;
}

static int f_gc(lua_State *L) {
  lfuture *f = luaL_checkudata(L, 1, HM_FUTURE_MT);
  future_stop_timer(f);
  return 0;
}

static const luaL_Reg future_methods[] = {
    {"set", f_set}, {"wait", f_wait}, {"is_set", f_is_set}, {NULL, NULL}};

/* }==================================================================== */

/* {====================================================================
** Run and shutdown
** ===================================================================== */

int hm_lua_run(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  if (ctx->running || ctx->cur_co != NULL) return -1;
  ctx->running = 1;
  uv_run(ctx->loop, UV_RUN_DEFAULT);
  ctx->running = 0;
  return 0;
}

/* Hemera.run(): also allowed on a host's loop (the interpreter's), so
** scripts run the same in every host; a host that runs the loop itself must
** not call it from inside a loop callback. */
static int l_run(lua_State *L) {
  if (hm_lua_run(L) != 0) return luaL_error(L, "the loop is already running");
  return 0;
}

static void walk_close(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void hm_lua_shutdown(lua_State *L) {
  hm_ctx *ctx;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (ctx == NULL || ctx->shutdown) return;
  ctx->shutdown = 1;
  hm_budget_close(ctx);
  hm_lua_close_conns(ctx);
  hm_lua_close_sampler(ctx);
  while (ctx->waiters != NULL) {
    hm_waiter *w = ctx->waiters;
    waiter_unlink(w);
    luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
    uv_close((uv_handle_t *)&w->timer, waiter_free);
  }
  while (ctx->rcount > 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->ready[ctx->rhead].ref);
    ctx->rhead = (ctx->rhead + 1) % ctx->rcap;
    ctx->rcount--;
  }
  while (ctx->npool > 0)
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->pool[--ctx->npool]);
  uv_close((uv_handle_t *)&ctx->idle, NULL);
  /* Let cnats detach and every close callback run. */
  if (!ctx->running) uv_run(ctx->loop, UV_RUN_DEFAULT);
  if (ctx->owns_loop && !ctx->running) {
    if (uv_loop_close(ctx->loop) != 0) {
      uv_walk(ctx->loop, walk_close, NULL);
      uv_run(ctx->loop, UV_RUN_DEFAULT);
      uv_loop_close(ctx->loop);
    }
  }
  free(ctx->ready);
  ctx->ready = NULL;
  free(ctx->pool);
  ctx->pool = NULL;
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

static int l_nuid(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
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

static int l_is_hemera_coroutine(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_pushboolean(L, L == ctx->cur_co && ctx->cur_ref != LUA_NOREF);
  return 1;
}

static int l_stats(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)ctx->rcount);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, ctx->npool);
  lua_setfield(L, -2, "pooled");
  lua_pushboolean(L, ctx->owns_loop);
  lua_setfield(L, -2, "owns_loop");
  return 1;
}

/* }==================================================================== */

/* The trampoline every pooled coroutine runs: it takes a job (function
** and arguments) from resume, runs it protected, then yields the sentinel
** to return to the pool. A parked coroutine must hold nothing of its last
** job: the job lives only in run's frame, gone once run returns, and the
** yielded values go straight into the next call of run. The first job
** comes as the arguments of `first`, whose frame the tail call replaces. */
static const char trampoline_src[] =
    "local sentinel, core = ...\n"
    "local yield, xpcall, traceback = coroutine.yield, xpcall, debug.traceback\n"
    "local function report(err)\n"
    "  local h = core.on_error\n"
    "  if h then pcall(h, err) else\n"
    "    io.stderr:write('hemera: uncaught error: ', tostring(err), '\\n') end\n"
    "end\n"
    "local function run(f, ...)\n"
    "  local ok, err = xpcall(f, traceback, ...)\n"
    "  if not ok then report(err) end\n"
    "end\n"
    "local function loop()\n"
    "  while true do run(yield(sentinel)) end\n"
    "end\n"
    "local function first(...)\n"
    "  run(...)\n"
    "  return loop()\n"
    "end\n"
    "return first\n";

static const luaL_Reg funcs[] = {
    {"spawn", l_spawn},   {"sleep", l_sleep}, {"run", l_run},
    {"nuid", l_nuid},     {"hrtime", l_hrtime}, {"now", l_now},
    {"stats", l_stats},   {"in_coroutine", l_is_hemera_coroutine},
    {"future", l_future},
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
  if (host_loop) {
    ctx->loop = host_loop;
  } else {
    if (uv_loop_init(&ctx->own_loop) != 0)
      return luaL_error(L, "cannot create an event loop");
    ctx->loop = &ctx->own_loop;
    ctx->owns_loop = 1;
  }
  uv_idle_init(ctx->loop, &ctx->idle);
  ctx->idle.data = ctx;
  hm_nuid_init(&ctx->nuid);
  {
    static const char *const names[] = {"topic", "_msg", "replyTo", "meta",
                                        "trace", "request", "pattern",
                                        "delegate"};
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

  luaL_newmetatable(L, HM_FUTURE_MT);
  luaL_newlib(L, future_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, f_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newlib(L, funcs);
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

  if (luaL_loadbuffer(L, trampoline_src, sizeof trampoline_src - 1,
                      "=hemera.trampoline") != LUA_OK)
    return lua_error(L);
  lua_pushlightuserdata(L, &pool_sentinel);
  lua_pushvalue(L, -3); /* the module table */
  lua_call(L, 2, 1);
  ctx->trampoline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &module_key);
  return 1;
}
