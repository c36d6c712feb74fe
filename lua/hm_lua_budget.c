/*
** hm_lua_budget.c: CPU budgets for handlers, and preemption after a
** shutdown signal.
**
** core.budget_call(ms, fn, ...) -> true, results... | false, err
**   Calls fn(...) protected, like pcall, and yieldable: fn may act or
**   sleep. With ms > 0 the code running in this coroutine may use ms
**   milliseconds of CPU: the time it actually runs, summed over its
**   resumes, so waiting in act or sleep is free (the clock is uv_hrtime
**   while it runs, so a blocking call in it is charged too). Over budget
**   it returns false and the table
**     { name = "HandlerBudgetError", message = "...", budget = ms,
**       used = <ms charged when it ran out> }
**   and a pcall inside fn cannot swallow that. With ms <= 0 or nil it is a
**   yieldable pcall and nothing else. A budget needs a Hemera coroutine.
**   Calls nest: an inner budget cannot extend an outer one.
**
** core.budget_xpcall(ms, msgh, fn, ...) -> true, results... | false, err
**   | false, err, true
**   budget_call as xpcall: an error of fn goes through msgh first. Over
**   budget it returns false, the table above, and true.
**
** core.budget_strict([on]) -> on
**   Strict mode runs the hook for the whole of every budget_call, which
**   also stops a user coroutine that spins inside the budget (it inherits
**   the hook), at the cost measured below. Off by default; not to be
**   changed while a budget runs.
**
** How. The clock runs only while the coroutine does: resume() starts and
** stops it around each resume segment of a coroutine inside a budget. A
** count hook (every COUNT instructions) compares the time charged with
** the limit. Over the limit the hook raises and re-arms itself to fire on
** every instruction (like redis' script kill), so each further
** instruction raises again until the continuation of the budget_call
** that owns the limit runs: it disarms the hook and returns false, err.
**
** A count hook makes Lua run every instruction through luaG_traceexec:
** installed for the whole call it cost 66% more instructions per request
** (bench/budget_cost.sh). So by default no hook runs while a budget has
** time left. The state publishes when the running segment will run out
** (a deadline, two atomic stores per segment); a watchdog thread, ticking
** every TICK_NS while budgets are in use, sends SIGURG with the state's
** slot (pthread_sigqueue) to the loop thread once a deadline has passed,
** and the handler installs the hook on the running coroutine as lua.c's
** laction does (lua_sethook is safe in a signal handler). The hook is then
** as above. Where SIGURG is taken by the host or blocked on the loop
** thread, or the thread cannot start, the hook is installed for the whole
** call instead (correct, only slower). The cost of the watchdog way: a
** coroutine that spins inside a user coroutine it resumed is stopped only
** once that returns or yields (the hook goes on the Hemera coroutine;
** hooks reach user coroutines only when they are created with one).
**
** Per coroutine the state is one userdata, made at its first budget and
** reused while the pooled coroutine lives (a weak-keyed registry table maps
** the thread to it); a call allocates nothing else. What no hook can
** stop: a single C function that runs forever.
**
** Preemption. hm_lua_interrupt, from a signal handler, makes the running
** coroutine yield at its next hook point and sets ctx->preempt: from then
** on resume() hooks every coroutine and the hook yields each one after a
** time slice, so the loop keeps running while a handler spins and a
** graceful close can finish.
*/
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hm_lua.h"
#include "hm_lua_private.h"

/* Instructions between two clock reads once the hook runs: ~0.1 ms of
** Lua, so the clock costs nothing measurable. */
#define COUNT 10000
/* How long a coroutine runs before it yields while ctx->preempt is set. */
#define SLICE_NS (10 * 1000000ULL)
#define MAX_DEPTH 8
#define NONE INT64_MAX
/* The watchdog's period: a budget is overrun by at most about this. */
#define TICK_NS (5 * 1000000L)
/* Ticks without any budget running before the watchdog sleeps until the
** next budget starts. */
#define PARK_TICKS 200
/* States (hemera.core opened in a lua_State) the watchdog can serve. */
#define SLOTS 16
#define HM_BUDGET_MT "hemera.Budget"

static const char states_key = 'b';

typedef struct frame {
  int64_t old_limit, old_base; /* the budget in force before this call */
  double old_ms;
  int64_t mine; /* this call's own limit */
} frame;

struct hm_budget {
  /* Nanoseconds charged at ctx->seg_start; negative when the budget began
  ** after the segment did, so that the charge was 0 at its start. */
  int64_t used;
  int64_t limit; /* the charge at which the innermost budget runs out */
  int64_t base;  /* the charge when the call owning `limit` started */
  double ms;     /* that call's budget */
  int64_t spent; /* the charge when it ran out */
  int tripped;   /* out of budget: the hook raises on every instruction */
  int depth;
  int parked;    /* counted in ctx->budgets_parked */
  hm_ctx *ctx;
  frame frames[MAX_DEPTH];
};

/* {====================================================================
** Watchdog
** ===================================================================== */

typedef struct slot {
  hm_ctx *ctx; /* NULL: free. Written under `lock` on its loop thread */
  pthread_t thread; /* the loop thread */
  _Atomic uint64_t deadline; /* uv_hrtime when the running segment runs
                             ** out of budget; 0: none */
  atomic_int kicked; /* the signal for this deadline went out */
} slot;

static slot slots[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static atomic_int started; /* the thread runs */
static atomic_int parked;  /* it waits on `wake` */
static int handler_state;  /* under lock: 0 not tried, 1 ours, -1 taken */

static void on_kick(int sig, siginfo_t *si, void *uc) {
  int saved = errno, i = si->si_value.sival_int;
  /* Only ours: sockets' SIGURG (ignored by default) stays ignored. */
  if (si->si_code == SI_QUEUE && si->si_pid == getpid() && i >= 0 &&
      i < SLOTS) {
    hm_ctx *ctx = slots[i].ctx;
    /* The state is this thread's, so nothing changes under us. */
    if (ctx != NULL && pthread_equal(slots[i].thread, pthread_self()) &&
        ctx->cur_co != NULL && ctx->seg_budget != NULL)
      lua_sethook(ctx->cur_co, hm_budget_hook, LUA_MASKCOUNT, 1);
  }
  errno = saved;
}

static int any_deadline(void) {
  int i;
  for (i = 0; i < SLOTS; i++)
    if (slots[i].ctx != NULL && atomic_load(&slots[i].deadline) != 0)
      return 1;
  return 0;
}

static void *watch(void *arg) {
  int idle = 0;
  for (;;) {
    struct timespec ts = {0, TICK_NS};
    uint64_t now;
    int i, busy = 0;
    nanosleep(&ts, NULL);
    now = uv_hrtime();
    pthread_mutex_lock(&lock);
    for (i = 0; i < SLOTS; i++) {
      slot *s = &slots[i];
      uint64_t d = s->ctx != NULL ? atomic_load(&s->deadline) : 0;
      if (d == 0) continue;
      busy = 1;
      if (now >= d && !atomic_exchange(&s->kicked, 1)) {
        union sigval v;
        v.sival_int = i;
        pthread_sigqueue(s->thread, SIGURG, v);
      }
    }
    if (busy) {
      idle = 0;
    } else if (++idle >= PARK_TICKS) {
      /* Announce first, then look again: a deadline set meanwhile is
      ** either seen here or its setter sees `parked` and signals. */
      atomic_store(&parked, 1);
      while (!any_deadline()) pthread_cond_wait(&wake, &lock);
      atomic_store(&parked, 0);
      idle = 0;
    }
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

/* Starts the thread, with every signal blocked in it. 0 on failure. */
static int start_watchdog(void) {
  int ok = 1;
  pthread_mutex_lock(&lock);
  if (!atomic_load(&started)) {
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ok = pthread_create(&t, NULL, watch, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ok) {
      pthread_detach(t);
      atomic_store(&started, 1);
    }
  }
  pthread_mutex_unlock(&lock);
  return ok;
}

/* Publishes when the running segment runs out of budget b. */
static void watch_set(hm_ctx *ctx, hm_budget *b) {
  slot *s;
  uint64_t d;
  if (!ctx->budget_async) return;
  s = &slots[ctx->budget_slot];
  if (b->limit == NONE) {
    atomic_store(&s->deadline, 0);
    return;
  }
  d = b->limit <= b->used ? ctx->seg_start
      : ctx->seg_start + (uint64_t)(b->limit - b->used);
  atomic_store(&s->kicked, 0);
  atomic_store(&s->deadline, d ? d : 1); /* 0 means none */
  if (atomic_load(&parked)) {
    pthread_mutex_lock(&lock);
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
  }
}

static void watch_clear(hm_ctx *ctx) {
  if (ctx->budget_async)
    atomic_store(&slots[ctx->budget_slot].deadline, 0);
}

/* Takes a slot for ctx, installing the SIGURG handler the first time.
** Leaves ctx->budget_async 0 when the watchdog cannot serve it. */
static void watch_open(hm_ctx *ctx) {
  sigset_t mask;
  int i;
  ctx->budget_async = 0;
  ctx->budget_slot = -1;
  pthread_mutex_lock(&lock);
  if (handler_state == 0) {
    struct sigaction old, sa;
    handler_state = -1;
    if (sigaction(SIGURG, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN)) {
      memset(&sa, 0, sizeof sa);
      sa.sa_sigaction = on_kick;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;
      sigemptyset(&sa.sa_mask);
      if (sigaction(SIGURG, &sa, NULL) == 0) handler_state = 1;
    }
  }
  if (handler_state == 1 && pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 &&
      !sigismember(&mask, SIGURG)) {
    for (i = 0; i < SLOTS; i++) {
      if (slots[i].ctx == NULL) {
        slots[i].ctx = ctx;
        slots[i].thread = pthread_self();
        atomic_store(&slots[i].deadline, 0);
        ctx->budget_slot = i;
        ctx->budget_async = 1;
        break;
      }
    }
  }
  pthread_mutex_unlock(&lock);
}

void hm_budget_close(hm_ctx *ctx) {
  ctx->budget_async = 0;
  if (ctx->budget_slot < 0) return;
  pthread_mutex_lock(&lock);
  atomic_store(&slots[ctx->budget_slot].deadline, 0);
  slots[ctx->budget_slot].ctx = NULL;
  pthread_mutex_unlock(&lock);
  ctx->budget_slot = -1;
}

/* }==================================================================== */

static int64_t charge(hm_ctx *ctx, hm_budget *b, uint64_t now) {
  return b->used + (int64_t)(now - ctx->seg_start);
}

static void arm(lua_State *L) {
  lua_sethook(L, hm_budget_hook, LUA_MASKCOUNT, COUNT);
}

static void push_error(lua_State *L, double ms, int64_t used) {
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "HandlerBudgetError");
  lua_setfield(L, -2, "name");
  lua_pushfstring(L, "handler exceeded its CPU budget of %f ms", ms);
  lua_setfield(L, -2, "message");
  lua_pushnumber(L, ms);
  lua_setfield(L, -2, "budget");
  lua_pushnumber(L, (double)used / 1e6);
  lua_setfield(L, -2, "used");
}

static void fail(lua_State *L, hm_budget *b) {
  push_error(L, b->ms, b->spent - b->base);
  lua_error(L);
}

void hm_budget_hook(lua_State *L, lua_Debug *ar) {
  hm_ctx *ctx = hm_ctx_of(L);
  hm_budget *b = ctx->seg_budget;
  uint64_t now;
  if (b != NULL && b->tripped) fail(L, b);
  if (ctx->interrupt && L == ctx->L) {
    /* The main thread cannot yield. Running the script (before the loop),
    ** do what lua.c does; in a loop callback, the loop gets the signal as
    ** soon as the callback returns. */
    ctx->interrupt = 0;
    lua_sethook(L, NULL, 0, 0);
    if (!ctx->running) luaL_error(L, "interrupted!");
    return;
  }
  if (b == NULL && !ctx->preempt) {
    /* Left over: inherited by a user coroutine, or outlived its budget. */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  now = uv_hrtime();
  if (b != NULL && charge(ctx, b, now) > b->limit) {
    b->tripped = 1;
    b->spent = charge(ctx, b, now);
    /* Every instruction from now on raises, here and in the Hemera
    ** coroutine when L is a user coroutine inside it. */
    lua_sethook(L, hm_budget_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
    if (ctx->cur_co != NULL && ctx->cur_co != L)
      lua_sethook(ctx->cur_co, hm_budget_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
    fail(L, b);
  }
  /* After an interrupt (count 1) or an error mode that ended: back to the
  ** plain count. */
  if (lua_gethookcount(L) != COUNT || lua_gethookmask(L) != LUA_MASKCOUNT)
    arm(L);
  /* Only the scheduler's coroutine yields: a yield in a user coroutine
  ** would return to user code, not to the loop. */
  if (ctx->preempt && L == ctx->cur_co && lua_isyieldable(L) &&
      (ctx->interrupt || (ctx->seg_timed && now - ctx->seg_start >= SLICE_NS))) {
    ctx->interrupt = 0;
    ctx->preempted = 1;
    lua_yield(L, 0); /* in a hook it returns; Lua yields when we return */
  }
}

/* The state of the coroutine L, made on first use. The weak-keyed table
** of states is budget_call's second upvalue (a registry lookup less per
** call). */
static hm_budget *state_of(lua_State *L, hm_ctx *ctx) {
  hm_budget *b;
  lua_pushthread(L);
  if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TUSERDATA) {
    b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
  }
  lua_pop(L, 1);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  b->ctx = ctx;
  luaL_setmetatable(L, HM_BUDGET_MT);
  lua_pushthread(L);
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(2)); /* states[thread] = b */
  lua_pop(L, 1);
  return b;
}

void hm_budget_begin(hm_ctx *ctx, lua_State *co) {
  hm_budget *b = NULL;
  ctx->seg_start = uv_hrtime();
  ctx->seg_timed = 1;
  if (ctx->preempt && lua_gethook(co) != hm_budget_hook) arm(co);
  /* Looked up on the coroutine's own stack, above the values it will be
  ** resumed with, which the two pushes leave as they were. */
  if (lua_checkstack(co, 2)) {
    lua_rawgetp(co, LUA_REGISTRYINDEX, &states_key);
    lua_pushthread(co);
    lua_rawget(co, -2);
    b = lua_touserdata(co, -1);
    lua_pop(co, 2);
  }
  if (b != NULL && b->depth > 0) {
    if (b->parked) {
      b->parked = 0;
      ctx->budgets_parked--;
    }
    ctx->seg_budget = b;
    watch_set(ctx, b);
  } else if (!ctx->preempt && lua_gethook(co) == hm_budget_hook) {
    lua_sethook(co, NULL, 0, 0);
  }
}

void hm_budget_end(hm_ctx *ctx) {
  hm_budget *b = ctx->seg_budget;
  watch_clear(ctx);
  b->used = charge(ctx, b, uv_hrtime());
  ctx->seg_budget = NULL;
  /* It waits inside the budget: resume() must look for it again. */
  if (!b->parked && b->depth > 0) {
    b->parked = 1;
    ctx->budgets_parked++;
  }
}

/* A coroutine that never came back from its wait is gone. */
static int budget_gc(lua_State *L) {
  hm_budget *b = lua_touserdata(L, 1);
  if (b->parked) {
    b->parked = 0;
    b->ctx->budgets_parked--;
  }
  return 0;
}

static void enter(lua_State *L, hm_ctx *ctx, hm_budget *b, double ms) {
  uint64_t now = uv_hrtime();
  int64_t at;
  frame *f;
  if (b->depth == MAX_DEPTH) luaL_error(L, "budget_call nested too deep");
  if (b->depth == 0) {
    if (!ctx->seg_timed) {
      ctx->seg_start = now;
      ctx->seg_timed = 1;
    }
    b->used = -(int64_t)(now - ctx->seg_start);
    b->limit = NONE;
    b->base = 0;
    b->ms = 0;
    b->tripped = 0;
    ctx->seg_budget = b;
  }
  at = charge(ctx, b, now);
  f = &b->frames[b->depth++];
  f->old_limit = b->limit;
  f->old_base = b->base;
  f->old_ms = b->ms;
  f->mine = ms * 1e6 < (double)(NONE - at) ? at + (int64_t)(ms * 1e6) : NONE;
  if (f->mine <= b->limit) {
    b->limit = f->mine;
    b->base = at;
    b->ms = ms;
  }
  if (ctx->budget_async) watch_set(ctx, b);
  else if (lua_gethook(L) != hm_budget_hook || lua_gethookcount(L) != COUNT)
    arm(L);
}

/* The end of a call with budget b (NULL: none): its frame goes. Returns 1
** with false and the budget's error pushed when this call's budget ran
** out, 0 otherwise; an outer call's budget that ran out is raised on. */
static int settle(lua_State *L, hm_budget *b) {
  if (b != NULL) {
    hm_ctx *ctx = b->ctx;
    frame *f = &b->frames[--b->depth];
    int tripped = b->tripped;
    double ms = b->ms;
    int64_t used = b->spent - b->base;
    if (tripped && f->mine > f->old_limit) {
      /* An outer call's budget ran out: it stays in error mode, and this
      ** call passes the error on to it. */
      b->limit = f->old_limit;
      b->base = f->old_base;
      b->ms = f->old_ms;
      push_error(L, ms, used);
      return lua_error(L);
    }
    b->limit = f->old_limit;
    b->base = f->old_base;
    b->ms = f->old_ms;
    b->tripped = 0;
    if (b->depth == 0) {
      ctx->seg_budget = NULL;
      watch_clear(ctx);
    } else {
      watch_set(ctx, b);
    }
    /* No hook while a budget has time left, unless the watchdog is off. */
    if (ctx->preempt || (b->depth > 0 && !ctx->budget_async)) arm(L);
    else lua_sethook(L, NULL, 0, 0);
    if (tripped) {
      lua_pushboolean(L, 0);
      push_error(L, ms, used);
      return 1;
    }
  }
  return 0;
}

/* The continuation of budget_call, and its end when fn did not yield. */
static int finish(lua_State *L, int status, lua_KContext k) {
  if (settle(L, (hm_budget *)k)) return 2;
  /* The stack is [ms, results...] or [ms, error]. */
  lua_pushboolean(L, status == LUA_OK || status == LUA_YIELD);
  lua_replace(L, 1);
  return lua_gettop(L);
}

/* The same for budget_xpcall: over budget, a third value says so. */
static int finish_x(lua_State *L, int status, lua_KContext k) {
  if (settle(L, (hm_budget *)k)) {
    lua_pushboolean(L, 1);
    return 3;
  }
  /* The stack is [ms, msgh, results...] or [ms, msgh, handled error]. */
  lua_pushboolean(L, status == LUA_OK || status == LUA_YIELD);
  lua_replace(L, 2);
  return lua_gettop(L) - 1;
}

/* fn (at 2, or at 3 after the message handler msgh) called protected
** under a budget of ms (the number at 1, none when not > 0); k ends it. */
static int budgeted(lua_State *L, int msgh, lua_KFunction k, const char *what) {
  hm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  int fn = msgh ? msgh + 1 : 2;
  double ms = luaL_optnumber(L, 1, 0);
  hm_budget *b = NULL;
  HM_CHECK_OPEN(L, ctx);
  if (msgh) luaL_checktype(L, msgh, LUA_TFUNCTION);
  luaL_checktype(L, fn, LUA_TFUNCTION);
  if (ms > 0) {
    hm_sched_check(L, ctx, what);
    if (ctx->budget_async && !atomic_load(&started) && !start_watchdog())
      hm_budget_close(ctx); /* no thread: the hook for the whole call */
    b = ctx->seg_budget != NULL ? ctx->seg_budget : state_of(L, ctx);
    enter(L, ctx, b, ms);
  }
  return k(L, lua_pcallk(L, lua_gettop(L) - fn, LUA_MULTRET, msgh, (lua_KContext)b, k),
           (lua_KContext)b);
}

static int l_budget_call(lua_State *L) {
  return budgeted(L, 0, finish, "budget_call with a budget");
}

/* One protected call where serve made two (budget_call of xpcall): each
** costs a C call and a setjmp per request. */
static int l_budget_xpcall(lua_State *L) {
  return budgeted(L, 2, finish_x, "budget_xpcall with a budget");
}

/* core.budget_strict([on]) -> on: with on, the hook runs for the whole of
** every budget_call (it then also reaches user coroutines created inside,
** at the cost measured above); without, the watchdog arms it. Returns the
** mode in force. Not while a budget runs. */
static int l_budget_strict(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  if (!lua_isnone(L, 1)) {
    if (ctx->seg_budget != NULL || ctx->budgets_parked > 0)
      return luaL_error(L, "cannot change the budget mode while a budget runs");
    watch_clear(ctx);
    ctx->budget_async = !lua_toboolean(L, 1) && ctx->budget_slot >= 0;
  }
  lua_pushboolean(L, !ctx->budget_async);
  return 1;
}

void *hm_lua_interrupt_handle(lua_State *L) {
  hm_ctx *ctx = hm_ctx_of(L);
  return ctx != NULL && !ctx->shutdown ? ctx : NULL;
}

void hm_lua_interrupt(void *handle) {
  hm_ctx *ctx = handle;
  lua_State *co = ctx->cur_co;
  if (!ctx->preempt) ctx->preempt_at = uv_hrtime(); /* clock_gettime */
  ctx->preempt = 1;
  ctx->interrupt = 1;
  /* As lua.c's laction does: lua_sethook is safe in a signal handler.
  ** With no coroutine running inside Hemera.run the loop is in C and hears
  ** the signal itself; a hook left on the main thread would fire in the
  ** script's own code once the run has ended and raise "interrupted!"
  ** there, turning a graceful close into exit status 1. */
  if (co != NULL) lua_sethook(co, hm_budget_hook, LUA_MASKCOUNT, 1);
  else if (!ctx->running) lua_sethook(ctx->L, hm_budget_hook, LUA_MASKCOUNT, 1);
}

void hm_lua_open_budget(lua_State *L) {
  static const luaL_Reg funcs[] = {{"budget_call", l_budget_call},
                                   {"budget_xpcall", l_budget_xpcall},
                                   {"budget_strict", l_budget_strict},
                                   {NULL, NULL}};
  luaL_newmetatable(L, HM_BUDGET_MT);
  lua_pushcfunction(L, budget_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  watch_open(hm_ctx_get(L));
  lua_pushlightuserdata(L, hm_ctx_get(L));
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &states_key);
  luaL_setfuncs(L, funcs, 2); /* upvalues: ctx, states */
}
