/*
** hm_lua_budget.c: CPU budgets for handlers, and preemption after a
** shutdown signal.
**
** core.budget_call(ms, fn, ...) -> true, results... | false, err
**   Calls fn(...) protected, like pcall, and yieldable: fn may act or
**   sleep. With ms > 0 the code running in this coroutine (and in user
**   coroutines it resumes) may use ms milliseconds of CPU: the time it
**   actually runs, summed over its resumes, so waiting in act or sleep is
**   free. Over budget it returns false and the table
**     { name = "HandlerBudgetError", message = "...", budget = ms,
**       used = <ms charged when it ran out> }
**   and a pcall inside fn cannot swallow that. With ms <= 0 or nil it is a
**   yieldable pcall and nothing else. A budget needs a Hemera coroutine.
**   Calls nest: an inner budget cannot extend an outer one.
**
** How. A count hook (every COUNT instructions) installed on the coroutine
** for the duration of the call compares the time charged with the limit;
** the scheduler's resume() starts and stops the clock around each resume
** segment of a coroutine that has the hook. Over the limit the hook raises
** and re-arms itself to fire on every instruction (like redis' script
** kill), so each further instruction raises again until the continuation
** of the budget_call that owns the limit runs: it disarms the hook and
** returns false, err. Per coroutine the state is one userdata, made at its
** first budget and reused while the pooled coroutine lives (a weak-keyed
** registry table maps the thread to it); a call allocates nothing else.
** What the hook cannot stop: a single C function that runs forever.
**
** Preemption. hm_lua_interrupt, from a signal handler, makes the running
** coroutine yield at its next hook point and sets ctx->preempt: from then
** on resume() hooks every coroutine and the hook yields each one after a
** time slice, so the loop keeps running while a handler spins and a
** graceful close can finish.
*/
#include <stdint.h>
#include <string.h>

#include "hm_lua_private.h"

/* Instructions between two clock reads: ~0.1 ms of Lua, so a budget is
** overrun by about that much, and the clock costs nothing measurable. */
#define COUNT 10000
/* How long a coroutine runs before it yields while ctx->preempt is set. */
#define SLICE_NS (10 * 1000000ULL)
#define MAX_DEPTH 8
#define NONE INT64_MAX

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
  frame frames[MAX_DEPTH];
};

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
  hm_ctx *ctx = hm_ctx_get(L);
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

/* The state of the coroutine L, made on first use. */
static hm_budget *state_of(lua_State *L) {
  hm_budget *b;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &states_key); /* weak-keyed */
  lua_pushthread(L);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    b = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return b;
  }
  lua_pop(L, 1);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  lua_pushthread(L);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4); /* states[thread] = b */
  lua_pop(L, 2);
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
  if (b != NULL && b->depth > 0) ctx->seg_budget = b;
  else if (!ctx->preempt) lua_sethook(co, NULL, 0, 0);
}

void hm_budget_end(hm_ctx *ctx) {
  hm_budget *b = ctx->seg_budget;
  b->used = charge(ctx, b, uv_hrtime());
  ctx->seg_budget = NULL;
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
  if (lua_gethook(L) != hm_budget_hook || lua_gethookcount(L) != COUNT)
    arm(L);
}

/* The continuation of budget_call, and its end when fn did not yield. */
static int finish(lua_State *L, int status, lua_KContext k) {
  hm_budget *b = (hm_budget *)k;
  if (b != NULL) {
    hm_ctx *ctx = hm_ctx_get(L);
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
      if (ctx->preempt) arm(L);
      else lua_sethook(L, NULL, 0, 0);
    } else {
      arm(L);
    }
    if (tripped) {
      lua_pushboolean(L, 0);
      push_error(L, ms, used);
      return 2;
    }
  }
  /* The stack is [ms, results...] or [ms, error]. */
  lua_pushboolean(L, status == LUA_OK || status == LUA_YIELD);
  lua_replace(L, 1);
  return lua_gettop(L);
}

static int l_budget_call(lua_State *L) {
  double ms = luaL_optnumber(L, 1, 0);
  hm_budget *b = NULL;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (ms > 0) {
    hm_ctx *ctx = hm_ctx_get(L);
    hm_sched_check(L, ctx, "budget_call with a budget");
    b = ctx->seg_budget != NULL ? ctx->seg_budget : state_of(L);
    enter(L, ctx, b, ms);
  }
  return finish(L,
                lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0,
                           (lua_KContext)b, finish),
                (lua_KContext)b);
}

void *hm_lua_interrupt_handle(lua_State *L) { return hm_ctx_get(L); }

void hm_lua_interrupt(void *handle) {
  hm_ctx *ctx = handle;
  lua_State *co = ctx->cur_co;
  ctx->preempt = 1;
  ctx->interrupt = 1;
  /* As lua.c's laction does: lua_sethook is safe in a signal handler. */
  lua_sethook(co != NULL ? co : ctx->L, hm_budget_hook, LUA_MASKCOUNT, 1);
}

void hm_lua_open_budget(lua_State *L) {
  static const luaL_Reg funcs[] = {{"budget_call", l_budget_call},
                                   {NULL, NULL}};
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &states_key);
  luaL_setfuncs(L, funcs, 0);
}
