/*
** hm_lua_private.h: what the binding's files share. Not installed.
**
** Every function here runs on the loop thread.
*/
#ifndef HM_LUA_PRIVATE_H
#define HM_LUA_PRIVATE_H

#include <signal.h>
#include <stdint.h>
#include <uv.h>

#include "hm_conn.h"
#include "hm_nuid.h"
#include "hm_router.h"
#include "lauxlib.h"
#include "lua.h"

typedef struct hm_ready hm_ready; /* the ready queue's entries (hm_lua_sched.c) */

/* {======== waiting coroutines (hm_lua_sched.c) ======== */
typedef struct hm_wait hm_wait;
/* Stops the operation a released record was waiting on (closes its timer,
** say). Runs at shutdown, after the record let go of the coroutine; may
** free the struct the record is embedded in. */
typedef void (*hm_wait_fn)(hm_wait *w);

/* One suspended coroutine: the record embedded in the operation it waits
** on (a sleep, a future, a request). From hm_sched_park until
** hm_sched_wake or hm_sched_release the record owns the coroutine's anchor
** and is on ctx->waits, which hm_lua_shutdown walks (as OpenResty's
** finalize_threads does). co is NULL whenever nobody waits. */
struct hm_wait {
  lua_State *co;
  int ref;           /* registry anchor; LUA_NOREF after hm_sched_unanchor */
  hm_wait_fn cancel; /* or NULL */
  hm_wait *prev, *next;
};
#define HM_WAIT_INIT {NULL, LUA_NOREF, NULL, NULL, NULL}
/* }======== */

typedef struct hm_budget hm_budget;

/* Values the request path pushes for every message, kept as registry
** references (an array slot: no string hashing, no lookup by name). */
enum {
  HM_K_TOPIC, HM_K_MSG, HM_K_REPLYTO, HM_K_META, HM_K_TRACE, HM_K_REQUEST,
  HM_K_PATTERN, HM_K_DELEGATE, HM_K_METAD, HM_K_DELEGATED, HM_K_REPLY, HM_K_MSGMT,
  HM_K_N
};

/* Whose loop the state runs on. */
typedef enum { HM_LOOP_OWN, HM_LOOP_HOST, HM_LOOP_LUV } hm_loop_kind;

typedef struct hm_ctx {
  lua_State *L; /* the main thread: callbacks never use a coroutine's L */
  int k[HM_K_N]; /* registry references of the HM_K_ values */
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop; /* loop_kind == HM_LOOP_OWN */
  hm_loop_kind loop_kind;
  int luv_ref;  /* HM_LOOP_LUV: luv's module table (its run, loop_mode) */
  volatile sig_atomic_t running; /* inside hm_lua_run; read by hm_lua_interrupt */
  int shutdown; /* hm_lua_shutdown ran: nothing new starts */

  /* Ready queue of coroutines to resume: a ring. */
  hm_ready *ready;
  size_t rcap, rhead, rcount;
  /* Active exactly while the ready queue is non-empty and no coroutine
  ** runs. malloc'd: it may still be closing on a host's loop after the
  ** state is gone. */
  uv_idle_t *idle;
  int idle_active;

  /* Idle coroutines running the pool trampoline, by registry ref. */
  int *pool;
  int npool, pool_cap;
  int trampoline_ref; /* the trampoline function */

  /* The coroutine the scheduler is resuming right now. An await takes
  ** ownership of cur_ref and sets awaited. */
  lua_State *cur_co;
  int cur_ref;
  int awaited;

  hm_wait *waits; /* every suspended coroutine, for shutdown */
  struct sampler *sampler; /* load sampler (hm_lua_guard.c): its one pointer */
  struct lconn *conns; /* open connections, for shutdown */
  struct lhttp *https; /* open HTTP servers (hm_lua_http.c), for shutdown */
  struct hm_tracer *tracers; /* open span exporters (hm_lua_tracing.c) */
  hm_nuid_t nuid;

  /* CPU budgets and preemption (hm_lua_budget.c). The seg_ fields describe
  ** the resume segment running now: seg_start is valid while seg_timed,
  ** seg_budget is the running coroutine's active budget or NULL. */
  hm_budget *seg_budget;
  uint64_t seg_start;
  int seg_timed;
  int preempted; /* the hook yielded the running coroutine */
  int budget_async;   /* a watchdog arms the hook (else: for the whole call) */
  int budget_slot;    /* this state's watchdog slot */
  int budgets_parked; /* coroutines suspended inside a budget */
  /* Written from a signal handler (hm_lua_interrupt). */
  volatile sig_atomic_t interrupt; /* yield the running coroutine now */
  volatile sig_atomic_t preempt;   /* from now on, yield every time slice */
  volatile uint64_t preempt_at;    /* uv_hrtime of the first interrupt */
} hm_ctx;

typedef struct lsub lsub;

typedef struct lconn {
  hm_conn_t *c; /* NULL once freed by the core */
  hm_ctx *ctx;
  int self_ref;  /* anchors the userdata while the core may call back */
  int event_ref; /* Lua function(event, text) or LUA_NOREF */
  int close_ref; /* function to spawn once closed, or LUA_NOREF */
  int state;     /* the first connect: LC_CONNECTING, LC_UP, LC_FAILED, LC_CANCELLED */
  hm_wait wait;  /* the coroutine in conn:wait_connected, if any */
  hm_conn_stats last; /* the counters when the core let go (stats after close) */
  int trace_hdrs; /* give Hemera contexts their W3C trace headers */
  lsub *subs;
  struct lconn *prev, *next;
} lconn;

struct lsub {
  hm_sub_t *s; /* NULL once unsubscribed or its connection is gone */
  lconn *owner;
  int fn_ref;
  int mt_ref;  /* Hemera topic: metatable of each message's context, or LUA_NOREF */
  int self_ref;
  lsub *prev, *next;
  struct hm_ep *ep; /* ADR-32 counters (hm_lua_micro.c), or NULL; the Sub's
                       user value keeps them alive */
};

#define HM_CONN_MT "hemera.Conn"
#define HM_SUB_MT "hemera.Sub"
#define HM_ROUTER_MT "hemera.Router"
#define HM_REGEX_MT "hemera.regex"

/* The {name = value} table of NATS headers at idx, as nhdr pairs in hdrs
** (the table keeps the strings alive); at most max pairs. Raises on a
** value that is not a string or too many headers. Returns nhdr. */
#define HM_LUA_MAX_HEADERS 16
int hm_lua_headers(lua_State *L, int idx, const char **hdrs, int max);

/* The router's view of one pattern member, key at kidx and value at vidx
** (`stored`: of a pattern being added, else of a request): 1 with *out
** set when it takes part (see hm_lua_router.c), else 0. Its pointers live
** as long as the key and value. */
int hm_lua_field(lua_State *L, int kidx, int vidx, hm_field *out, int stored);

/* router:lookup for request fields already converted: pushes the value of
** the router at ridx that f (n fields) finds, within `topic` when not
** NULL, or nil. Raises if ridx is not an open router. */
int hm_lua_router_find(lua_State *L, int ridx, const hm_field *f, int n,
                       const char *topic, size_t tlen);

/* router:lookup(request [, topic]) itself. */
int hm_lua_router_lookup(lua_State *L);

/* Whether the value at idx is a regex value (core.regex / Hemera.regex). */
int hm_lua_is_regex(lua_State *L, int idx);

/* The state's context, for Lua entry points: raises when the module is not
** open in L or hm_lua_shutdown already ran (hm_lua_refuse's message). */
hm_ctx *hm_ctx_get(lua_State *L);
/* The context even after shutdown, or NULL when the module was never
** opened in L; never raises (C API functions and hooks). */
hm_ctx *hm_ctx_of(lua_State *L);
/* Raises the error every entry point gives after shutdown. */
int hm_lua_refuse(lua_State *L);
#define HM_CHECK_OPEN(L, ctx) \
  do { if ((ctx)->shutdown) hm_lua_refuse(L); } while (0)

/* Pushes the HM_K_ value k. */
#define hm_pushk(L, ctx, kk) lua_rawgeti((L), LUA_REGISTRYINDEX, (ctx)->k[(kk)])

/* {======== scheduler (hm_lua_sched.c) ======== */
/* Takes a coroutine from the pool (or makes one), moves the function and its
** `nargs` arguments from the top of `from` onto it, and queues it. `from`
** may be any thread of the state, or NULL to push nothing (then the caller
** pushes onto the returned thread itself, see hm_sched_spawn_begin). */
void hm_sched_spawn(hm_ctx *ctx, lua_State *from, int nargs);
/* Two-step spawn for loop callbacks: begin returns a thread on which the
** caller pushes the function and arguments, end queues it. Returns NULL
** during shutdown. */
lua_State *hm_sched_spawn_begin(hm_ctx *ctx, int *ref);
void hm_sched_spawn_end(hm_ctx *ctx, lua_State *co, int ref, int nargs);
/* Raises unless L is the coroutine the scheduler is running. Call it
** before allocating anything for the wait. */
void hm_sched_check(lua_State *L, hm_ctx *ctx, const char *what);
/* Suspends the running coroutine L, which hm_sched_check accepted: w takes
** its anchor and goes on ctx->waits; `cancel` (or NULL) is for shutdown.
** Never raises. The caller then does `return lua_yield(L, 0);`. */
void hm_sched_park(lua_State *L, hm_ctx *ctx, hm_wait *w, hm_wait_fn cancel);
/* For a parked coroutine that a Lua value of the operation keeps alive
** (reachable from whatever can wake it, e.g. a future's user value): drops
** the registry anchor, so that once nothing can wake it the GC takes the
** coroutine and the operation together. The operation's __gc must then
** hm_sched_release the record. */
void hm_sched_unanchor(hm_ctx *ctx, hm_wait *w);
/* Queues w's coroutine, with the `nargs` values the caller pushed onto
** w->co; the anchor passes to the ready queue and w is empty again. */
void hm_sched_wake(hm_ctx *ctx, hm_wait *w, int nargs);
/* Lets go of w's coroutine, which will never be woken. Idempotent. */
void hm_sched_release(hm_ctx *ctx, hm_wait *w);
/* luaopen: the idle handle, core.spawn and the pool's trampoline (the
** module table on top of L). Raises on failure. */
void hm_lua_open_sched(lua_State *L, hm_ctx *ctx);
/* hm_lua_shutdown: releases every wait (then cancels its operation), the
** ready queue and the pool; closes the idle handle. */
void hm_sched_shutdown(hm_ctx *ctx);
/* }======== */

/* {======== luv (hm_lua_luv.c) ======== */
/* luaopen: when luv is open in L (its context in the registry has a
** loop), returns that loop and records luv's module in ctx->luv_ref;
** otherwise NULL. */
uv_loop_t *hm_luv_loop(lua_State *L, hm_ctx *ctx);
/* Runs luv's loop through luv's own run (so its loop_mode is right).
** Returns 0, or -1 with a message on L's stack. */
int hm_luv_run(lua_State *L, hm_ctx *ctx);
/* }======== */

/* {======== opening the parts (one per file) ======== */
void hm_lua_open_conn(lua_State *L);   /* connect, Conn, Sub */
void hm_lua_open_router(lua_State *L); /* router */
void hm_lua_close_conns(hm_ctx *ctx);  /* shutdown: close every connection */
void hm_lua_open_guard(lua_State *L);  /* recursion counter, load sampler */
void hm_lua_open_pattern(lua_State *L); /* core.method */
void hm_lua_close_sampler(hm_ctx *ctx);
void hm_lua_open_budget(lua_State *L); /* core.budget_call */
void hm_lua_open_envelope(lua_State *L); /* messages, lazy contexts, envelopes */
void hm_lua_open_js(lua_State *L); /* JetStream's requests with headers */
void hm_lua_open_signal(lua_State *L); /* handle_signals, stop_run */
void hm_lua_open_jwt(lua_State *L);   /* core.jwt: hemera.jwt's crypto */
void hm_lua_close_signal(hm_ctx *ctx);  /* shutdown: close the signal handles */
void hm_lua_open_wait(lua_State *L);   /* core.sleep, core.future */
void hm_lua_open_http(lua_State *L);   /* core.http_listen */
void hm_lua_close_https(hm_ctx *ctx);  /* shutdown: close every HTTP server */
void hm_lua_open_metrics(lua_State *L); /* core.metrics_registry, process stats */
void hm_lua_open_msgpack(lua_State *L); /* core.msgpack_encode/decode */
void hm_lua_open_tracing(lua_State *L); /* core.tracer, trace ids */
/* shutdown: drop held spans, close every exporter without a last POST */
void hm_lua_close_tracers(hm_ctx *ctx);
/* }======== */

/* {======== ADR-32 counters and service errors (hm_lua_micro.c) ======== */
typedef struct hm_ep hm_ep;
#define HM_MICRO_ERRLEN 1024 /* longest Nats-Service-Error value, + 1 */
void hm_lua_open_micro(lua_State *L); /* core.endpoint, msg_count, ... */
/* on_msg: the Msg on top of co is a request of ls's endpoint (ls->ep). */
void hm_micro_arrived(lua_State *co, lsub *ls);
/* The first reply of the Msg at (absolute) msg went out: counts its time
** from arrival, and an error when text is not NULL. Later calls for the
** same Msg, and Msgs of no endpoint, count nothing. */
void hm_micro_replied(lua_State *L, int msg, const char *code,
                      const char *text);
/* The service error of the wire error table at idx: into msg (cap bytes)
** its message (else its name, else "Error") with control characters made
** spaces, cut at cap - 1 bytes; into code its integer `code` in decimal,
** else "500". */
void hm_micro_error(lua_State *L, int idx, char *msg, size_t cap,
                    char code[24]);
/* }======== */

/* {======== CPU budgets (hm_lua_budget.c) ======== */
/* The count hook of budgets and preemption. resume() compares
** lua_gethook(co) with it to keep the clock off coroutines without one. */
void hm_budget_hook(lua_State *L, lua_Debug *ar);
/* resume(): around lua_resume of a coroutine that has the hook (or of
** every coroutine while ctx->preempt). begin starts the segment's clock;
** end charges the segment to the coroutine's budget (call it when
** ctx->seg_budget is set). */
void hm_budget_begin(hm_ctx *ctx, lua_State *co);
void hm_budget_end(hm_ctx *ctx);
/* hm_lua_shutdown: the watchdog forgets this state. */
void hm_budget_close(hm_ctx *ctx);
/* }======== */

#endif
