/*
** hm_lua_signal.c: shutdown signals, and ending Hemera.run().
**
** core.handle_signals(names, fn)
**   For each name ("SIGINT", "SIGTERM", ...) not handled yet, a uv_signal
**   on the state's loop. Each delivery spawns fn(name) in a Hemera
**   coroutine (Hemera.handleSignals passes Hemera's shutdown). The handles
**   are unref'd: they never keep the loop alive on their own. Calling it
**   again adds names; fn is the latest one given. Raises on an unknown
**   name, naming it and the names it knows.
**   The first delivery of any handled signal also makes Lua give the loop
**   back (hm_lua_interrupt), and the second one exits the process at once
**   with status 128 + signum: see "Chaining" below.
** core.stop_run([ms])
**   Ends hm_lua_run (Hemera.run) after the current loop iteration, or ms
**   milliseconds from now if the loop is still running then (an unref'd
**   timer: a loop that ends by itself first is not held up). A no-op when
**   the loop runs in a host's hands: a host's uv_run is the host's.
**
** Ownership: one record per state (a userdata anchored in the registry,
** released by lua_close through its __gc). Each uv handle is malloc'd
** because libuv holds it until its close callback, which runs after the
** userdata is gone; handle_release is the one function that gives it back.
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hm_lua.h"
#include "hm_lua_private.h"

static const char rec_key = 'g';

static const struct {
  const char *name;
  int signum;
} known[] = {{"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT},
             {"SIGTERM", SIGTERM}, {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}};
#define NKNOWN (sizeof known / sizeof known[0])

typedef struct sigrec {
  hm_ctx *ctx;
  uv_signal_t *h[NKNOWN]; /* NULL until that signal is handled */
  uv_timer_t *stop;       /* core.stop_run's timer, or NULL */
  int owns_chain;         /* this state's loop thread gets the interrupts */
} sigrec;

/* {====================================================================
** Chaining: our sigaction in front of libuv's
**
** libuv hands a signal to its loop through a pipe, so while Lua spins (a
** handler that never yields, a sort comparator that cannot) the loop never
** hears it. Our handler runs first, in the signal itself: it makes the
** running coroutine yield at its next hook point (hm_lua_interrupt, which
** also preempts every coroutine from then on, so a graceful close can
** finish), then calls libuv's handler, which wakes the loop. A second
** signal means "now": _exit at once, whatever Lua is doing. One state per
** process (the first to handle signals) owns this; libuv alone serves the
** others.
** ===================================================================== */

static struct {
  volatile sig_atomic_t active; /* the owner state is alive */
  volatile sig_atomic_t seen;   /* handled signals delivered so far */
  void *volatile interrupt;     /* hm_lua_interrupt_handle of the owner */
  pthread_t thread;             /* the owner's loop thread */
  struct sigaction next[NSIG];  /* libuv's handler, run after ours */
  volatile sig_atomic_t installed[NSIG];
} chain;

static void on_signal(int signum, siginfo_t *info, void *uc) {
  int saved = errno;
  const struct sigaction *next = &chain.next[signum];
  if (chain.active && !pthread_equal(pthread_self(), chain.thread)) {
    /* A cnats thread took it: Lua and the loop are the owner thread's,
    ** and hm_lua_interrupt must run there. */
    pthread_kill(chain.thread, signum);
    errno = saved;
    return;
  }
  if (chain.active) {
    if (++chain.seen > 1) _exit(128 + signum);
    if (chain.interrupt != NULL) hm_lua_interrupt(chain.interrupt);
  }
  if (next->sa_flags & SA_SIGINFO) {
    if (next->sa_sigaction != NULL) next->sa_sigaction(signum, info, uc);
  } else if (next->sa_handler != SIG_DFL && next->sa_handler != SIG_IGN) {
    next->sa_handler(signum);
  }
  errno = saved;
}

/* After uv_signal_start: put ours in front of what libuv installed. */
static void chain_install(int signum) {
  struct sigaction cur, ours;
  if (sigaction(signum, NULL, &cur) != 0) return;
  if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_signal) return;
  chain.next[signum] = cur;
  memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = on_signal;
  ours.sa_mask = cur.sa_mask; /* libuv blocks every signal in its handler */
  sigaddset(&ours.sa_mask, signum);
  ours.sa_flags = (cur.sa_flags & ~SA_RESETHAND) | SA_SIGINFO;
  if (sigaction(signum, &ours, NULL) == 0) chain.installed[signum] = 1;
}

/* }==================================================================== */

static void handle_free(uv_handle_t *h) { free(h); }

/* The one release of a handle: close it, or free it when the loop closed
** it already (hm_lua_shutdown walks the handles of a loop it owns). */
static void handle_release(uv_handle_t *h) {
  if (uv_is_closing(h)) free(h);
  else uv_close(h, handle_free);
}

static void on_uv_signal(uv_signal_t *h, int signum) {
  sigrec *r = h->data;
  hm_ctx *ctx = r->ctx;
  lua_State *co;
  const char *name = NULL;
  size_t k;
  int ref;
  for (k = 0; k < NKNOWN; k++)
    if (known[k].signum == signum) name = known[k].name;
  /* Without our handler in front (another state owns the chain), count
  ** here: a second signal still exits at once. */
  if (!r->owns_chain || !chain.installed[signum]) {
    static int seen;
    if (++seen > 1) _exit(128 + signum);
  }
  co = hm_sched_spawn_begin(ctx, &ref);
  if (co == NULL) return; /* shutting down: nothing new starts */
  lua_checkstack(co, 4);
  lua_rawgetp(co, LUA_REGISTRYINDEX, &rec_key);
  lua_getiuservalue(co, -1, 1); /* fn */
  lua_remove(co, -2);
  lua_pushstring(co, name);
  hm_sched_spawn_end(ctx, co, ref, 1);
}

static void rec_close(sigrec *r) {
  size_t k;
  if (r->owns_chain) {
    /* Our handler may stay in front of another state's libuv handles:
    ** it only forwards from now on. */
    chain.active = 0;
    chain.interrupt = NULL;
    r->owns_chain = 0;
  }
  for (k = 0; k < NKNOWN; k++) {
    if (r->h[k] != NULL) {
      handle_release((uv_handle_t *)r->h[k]);
      r->h[k] = NULL;
    }
  }
  if (r->stop != NULL) {
    handle_release((uv_handle_t *)r->stop);
    r->stop = NULL;
  }
}

static int rec_gc(lua_State *L) {
  rec_close(lua_touserdata(L, 1));
  return 0;
}

/* hm_lua_shutdown closes every handle of the state then, not at
** lua_close: on a host's loop nothing of ours may stay open. */
void hm_lua_close_signal(hm_ctx *ctx) {
  sigrec *r;
  lua_rawgetp(ctx->L, LUA_REGISTRYINDEX, &rec_key);
  r = lua_touserdata(ctx->L, -1);
  lua_pop(ctx->L, 1);
  if (r != NULL) rec_close(r);
}

static sigrec *the_rec(lua_State *L, hm_ctx *ctx) {
  sigrec *r;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &rec_key);
  r = lua_touserdata(L, -1);
  if (r != NULL) return r; /* left on the stack */
  lua_pop(L, 1);
  r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, rec_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &rec_key);
  return r;
}

static int known_index(lua_State *L, int idx) {
  const char *given, *list;
  luaL_Buffer b;
  size_t k;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING)
    for (k = 0; k < NKNOWN; k++)
      if (strcmp(lua_tostring(L, idx), known[k].name) == 0) return (int)k;
  given = luaL_tolstring(L, idx, NULL);
  luaL_buffinit(L, &b);
  for (k = 0; k < NKNOWN; k++) {
    if (k > 0) luaL_addstring(&b, ", ");
    luaL_addstring(&b, known[k].name);
  }
  luaL_pushresult(&b);
  list = lua_tostring(L, -1);
  return luaL_error(L, "Hemera.handleSignals: unknown signal '%s' (known: %s)",
                    given, list);
}

static int l_handle_signals(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_Integer i, n;
  int idx[NKNOWN * 4];
  sigrec *r;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (ctx->shutdown) return luaL_error(L, "Hemera.handleSignals: the state is shut down");
  n = luaL_len(L, 1);
  if (n < 1 || n > (lua_Integer)(sizeof idx / sizeof idx[0]))
    return luaL_error(L, "Hemera.handleSignals: expected a list of 1 to %d signal names, got %d",
                      (int)(sizeof idx / sizeof idx[0]), (int)n);
  /* Every name is checked before anything starts. */
  for (i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    idx[i - 1] = known_index(L, -1);
    lua_pop(L, 1);
  }
  r = the_rec(L, ctx);
  lua_pushvalue(L, 2); /* fn */
  lua_setiuservalue(L, -2, 1);
  lua_pop(L, 1);
  {
    static int taken; /* one owner per process, ever: see Chaining */
    if (!taken) {
      taken = 1;
      r->owns_chain = 1;
      chain.thread = pthread_self();
      chain.interrupt = hm_lua_interrupt_handle(L);
      chain.active = 1;
    }
  }
  for (i = 0; i < n; i++) {
    int k = idx[i], rc;
    uv_signal_t *h;
    if (r->h[k] != NULL) continue;
    h = malloc(sizeof *h);
    if (h == NULL) return luaL_error(L, "Hemera.handleSignals: out of memory");
    uv_signal_init(ctx->loop, h);
    h->data = r;
    rc = uv_signal_start(h, on_uv_signal, known[k].signum);
    if (rc != 0) {
      handle_release((uv_handle_t *)h);
      return luaL_error(L, "Hemera.handleSignals: cannot handle %s: %s",
                        known[k].name, uv_strerror(rc));
    }
    uv_unref((uv_handle_t *)h);
    r->h[k] = h;
    if (r->owns_chain) chain_install(known[k].signum);
  }
  return 0;
}

static void on_stop(uv_timer_t *t) {
  sigrec *r = t->data;
  if (r->ctx->running) uv_stop(r->ctx->loop);
}

static int l_stop_run(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  lua_Number ms = luaL_optnumber(L, 1, 0);
  sigrec *r;
  luaL_argcheck(L, ms >= 0 && ms <= 1e12, 1, "must be between 0 and 1e12 ms");
  if (ctx->shutdown) return 0;
  if (ms == 0) {
    if (ctx->running) uv_stop(ctx->loop);
    return 0;
  }
  r = the_rec(L, ctx);
  lua_pop(L, 1);
  if (r->stop == NULL) {
    r->stop = malloc(sizeof *r->stop);
    if (r->stop == NULL) return luaL_error(L, "core.stop_run: out of memory");
    uv_timer_init(ctx->loop, r->stop);
    r->stop->data = r;
    uv_unref((uv_handle_t *)r->stop);
  }
  uv_update_time(ctx->loop);
  uv_timer_start(r->stop, on_stop, (uint64_t)ms, 0);
  return 0;
}

void hm_lua_open_signal(lua_State *L) {
  static const luaL_Reg funcs[] = {{"handle_signals", l_handle_signals},
                                   {"stop_run", l_stop_run},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
