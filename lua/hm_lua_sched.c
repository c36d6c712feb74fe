/*
** hm_lua_sched.c: the scheduler. The one place that calls lua_resume, the
** ready queue it drains from an idle handle, the pool of coroutines that
** run the trampoline, and the records of suspended coroutines (hm_wait).
**
** Ownership. Every coroutine the scheduler knows has exactly one anchor (a
** registry ref), held by exactly one of: the ready queue, the pool, the
** resume running it (ctx->cur_ref), or a hm_wait record. anchor_drop is
** the only place that lets go of one. At shutdown hm_sched_shutdown walks
** all of them.
*/
#include <stdio.h>
#include <stdlib.h>

#include "hm_lua_private.h"

struct hm_ready {
  lua_State *co; /* values to resume with are on its stack */
  int ref;       /* the coroutine's one anchor, owned by this entry */
  int nargs;
  int preempted; /* queued because the hook made it yield, not by itself */
};

/* Idle coroutines kept for reuse; beyond this the GC takes them. */
#define POOL_MAX 256

static char pool_sentinel = 'p';

/* The only luaL_unref of a coroutine's anchor. */
static void anchor_drop(hm_ctx *ctx, int ref) {
  if (ref != LUA_NOREF && ref != LUA_REFNIL)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, ref);
}

/* {====================================================================
** Ready queue
** ===================================================================== */

static void on_idle(uv_idle_t *h);

static void idle_start(hm_ctx *ctx) {
  /* Not while a coroutine runs: a nested uv_run (a coroutine calling
  ** luv's uv.run, say) must not resume another one inside it. on_idle
  ** starts it again once the running one is back. */
  if (ctx->idle_active || ctx->cur_co != NULL || ctx->idle == NULL) return;
  /* An active idle handle also keeps the loop from blocking in poll. */
  uv_idle_start(ctx->idle, on_idle);
  ctx->idle_active = 1;
}

static void idle_stop(hm_ctx *ctx) {
  if (!ctx->idle_active) return;
  uv_idle_stop(ctx->idle);
  ctx->idle_active = 0;
}

static void ready_put(hm_ctx *ctx, lua_State *co, int ref, int nargs,
                      int preempted) {
  if (ctx->rcount == ctx->rcap) {
    size_t ncap = ctx->rcap ? ctx->rcap * 2 : 64, i;
    hm_ready *nr = malloc(ncap * sizeof *nr);
    if (nr == NULL) {
      /* Cannot queue: the coroutine is lost, but nothing dangles. */
      anchor_drop(ctx, ref);
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
  idle_start(ctx);
}

static void ready_push(hm_ctx *ctx, lua_State *co, int ref, int nargs) {
  if (ctx->shutdown) {
    anchor_drop(ctx, ref);
    return;
  }
  ready_put(ctx, co, ref, nargs, 0);
}

static hm_ready ready_take(hm_ctx *ctx) {
  hm_ready r = ctx->ready[ctx->rhead];
  ctx->rhead = (ctx->rhead + 1) % ctx->rcap;
  ctx->rcount--;
  return r;
}

static void ready_clear(hm_ctx *ctx) {
  while (ctx->rcount > 0) anchor_drop(ctx, ready_take(ctx).ref);
}

/* }==================================================================== */

/* {====================================================================
** Spawning and the pool
** ===================================================================== */

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
** Waiting: one record per suspended coroutine
** ===================================================================== */

static void wait_unlink(hm_ctx *ctx, hm_wait *w) {
  if (w->prev) w->prev->next = w->next; else ctx->waits = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

void hm_sched_check(lua_State *L, hm_ctx *ctx, const char *what) {
  HM_CHECK_OPEN(L, ctx);
  if (L != ctx->cur_co || ctx->cur_ref == LUA_NOREF)
    luaL_error(L,
               "%s must run in a Hemera coroutine (a handler, a ready or "
               "act callback, or Hemera.spawn), or be given a callback",
               what);
}

void hm_sched_park(lua_State *L, hm_ctx *ctx, hm_wait *w, hm_wait_fn cancel) {
  w->co = L;
  w->ref = ctx->cur_ref;
  w->cancel = cancel;
  ctx->cur_ref = LUA_NOREF;
  ctx->awaited = 1;
  w->prev = NULL;
  w->next = ctx->waits;
  if (ctx->waits) ctx->waits->prev = w;
  ctx->waits = w;
}

void hm_sched_unanchor(hm_ctx *ctx, hm_wait *w) {
  anchor_drop(ctx, w->ref);
  w->ref = LUA_NOREF;
}

void hm_sched_wake(hm_ctx *ctx, hm_wait *w, int nargs) {
  lua_State *co = w->co;
  int ref = w->ref;
  if (co == NULL) return;
  wait_unlink(ctx, w);
  w->co = NULL;
  w->ref = LUA_NOREF;
  if (ref == LUA_NOREF && !ctx->shutdown) {
    /* Unanchored (the operation's Lua value held it): it needs its
    ** registry anchor back to sit in the ready queue. */
    lua_pushthread(co);
    lua_xmove(co, ctx->L, 1);
    ref = luaL_ref(ctx->L, LUA_REGISTRYINDEX);
  }
  ready_push(ctx, co, ref, nargs);
}

void hm_sched_release(hm_ctx *ctx, hm_wait *w) {
  if (w->co == NULL) return;
  wait_unlink(ctx, w);
  anchor_drop(ctx, w->ref);
  w->co = NULL;
  w->ref = LUA_NOREF;
}

/* }==================================================================== */

/* {====================================================================
** Resume
** ===================================================================== */

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
      /* Parked: the awaited operation's record owns the anchor now. */
    } else if (pooled) {
      if (!pool_put(ctx, ctx->cur_ref)) anchor_drop(ctx, ctx->cur_ref);
    } else if (ctx->shutdown) {
      /* The state was shut down while it ran: nothing resumes it. */
      anchor_drop(ctx, ctx->cur_ref);
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
    anchor_drop(ctx, ctx->cur_ref);
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
  ready_clear(ctx);
}

static void on_idle(uv_idle_t *h) {
  hm_ctx *ctx = h->data;
  size_t n;
  if (ctx->cur_co != NULL) {
    /* A loop run nested inside a running coroutine: resuming another
    ** one here would nest resumes. Wait until it is back. */
    idle_stop(ctx);
    return;
  }
  /* Only what is queued now runs in this round, so a coroutine that
  ** yields in a loop cannot starve I/O. */
  n = ctx->rcount;
  while (n-- > 0 && ctx->rcount > 0 && !ctx->shutdown) {
    hm_ready r = ready_take(ctx);
    resume(ctx, &r);
  }
  if (ctx->shutdown) return; /* the handle is closing */
  if (ctx->preempt && ctx->rcount > 0) abandon(ctx);
  if (ctx->rcount == 0) idle_stop(ctx);
  else idle_start(ctx);
}

/* }==================================================================== */

/* {====================================================================
** Opening and shutdown
** ===================================================================== */

/* The trampoline every pooled coroutine runs: it takes a job (function
** and arguments) from resume, runs it protected, then yields the sentinel
** to return to the pool. A parked coroutine must hold nothing of its last
** job: the job lives only in run's frame, gone once run returns, and the
** yielded values go straight into the next call of run. The first job
** comes as the arguments of `first`, whose frame the tail call replaces.
** Uncaught errors go to core.on_error when set (the interpreter's exit
** policy), else to stderr. */
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

static void idle_free(uv_handle_t *h) { free(h); }

void hm_lua_open_sched(lua_State *L, hm_ctx *ctx) {
  ctx->idle = malloc(sizeof *ctx->idle);
  if (ctx->idle == NULL) luaL_error(L, "out of memory");
  uv_idle_init(ctx->loop, ctx->idle);
  ctx->idle->data = ctx;
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
  if (luaL_loadbuffer(L, trampoline_src, sizeof trampoline_src - 1,
                      "=hemera.trampoline") != LUA_OK)
    lua_error(L);
  lua_pushlightuserdata(L, &pool_sentinel);
  lua_pushvalue(L, -3); /* the module table */
  lua_call(L, 2, 1);
  ctx->trampoline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void hm_sched_shutdown(hm_ctx *ctx) {
  /* As OpenResty's finalize_threads: every coroutine still suspended is
  ** let go, and what it waited on is stopped. */
  while (ctx->waits != NULL) {
    hm_wait *w = ctx->waits;
    hm_wait_fn cancel = w->cancel;
    hm_sched_release(ctx, w);
    if (cancel) cancel(w);
  }
  ready_clear(ctx);
  while (ctx->npool > 0) anchor_drop(ctx, ctx->pool[--ctx->npool]);
  free(ctx->ready);
  ctx->ready = NULL;
  ctx->rcap = ctx->rhead = 0;
  free(ctx->pool);
  ctx->pool = NULL;
  ctx->pool_cap = 0;
  if (ctx->idle != NULL) {
    uv_close((uv_handle_t *)ctx->idle, idle_free);
    ctx->idle = NULL;
    ctx->idle_active = 0;
  }
}

/* }==================================================================== */
