/*
** hm_conn.c: NATS connection on a libuv loop, and a request multiplexer
** whose pending requests (by id and by deadline) are an hm_mux.
**
** The connection is attached to the loop by our own event-loop glue
** (cnats' natsOptions_SetEventLoop callbacks): the socket is polled by a
** uv_poll_t and cnats parses what arrives from the loop thread. Every
** subscription is synchronous (SubscribeSync), so parsed messages wait in
** cnats' per-subscription queue and we take them right after each read, on
** the loop thread: no delivery thread, no hand-off per message. cnats still
** calls a few things from its own threads (connection events from its
** callback thread, attach and poll changes from its reconnect thread);
** those go through a locked queue and a uv_async wake-up.
*/
#include "hm_conn.h"
#include "hm_jsnum.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hm_mux.h"
#include "hm_nuid.h"

/* Items handed from cnats threads to the loop. */
enum { Q_EVENT = 1, Q_ATTACH, Q_POLL, Q_DETACH };

typedef struct qitem {
  int kind;
  int status;         /* Q_EVENT: hm_conn_event; Q_POLL: add (1) or remove */
  natsStatus nstatus; /* Q_EVENT: cnats status for HM_EV_ERROR */
  int which;          /* Q_POLL: UV_READABLE or UV_WRITABLE */
  natsSock fd;        /* Q_ATTACH */
  const void *ns;     /* Q_EVENT: the subscription an error is about; only
                      ** compared, never followed (it may be gone) */
} qitem;

/* What cnats holds as the closure of every callback it may call from its
** threads. cnats can call (detach from its reconnect thread, for one) after
** it reported the connection closed, so this outlives the hm_conn_t: `c`
** goes NULL when the connection is freed, and the glue itself waits in a
** list freed by hm_conn_library_close, once cnats' threads are gone. */
typedef struct glue {
  uv_mutex_t lock;
  hm_conn_t *c;
  struct glue *next;
} glue;

static uv_once_t glue_once = UV_ONCE_INIT;
static uv_mutex_t dead_lock;
static glue *dead_glues;

/* {====================================================================
** Freeing messages
**
** natsMsg_Destroy hands each message the parser made, and each one
** natsMsg_Create made for a publish with headers, to cnats' garbage
** collector thread: a lock, and often a futex wake-up and a context switch,
** per message on each side (error replies with ADR-32 headers: 45k req/s
** at 128 in flight that way, 73k freed here). natsMsg_free, which that
** thread ends up calling, frees it at once (its headers, then the one
** block holding subject, reply and data). libnats exports it but does not
** declare it, so it is a weak reference, used only on the versions whose
** natsMsg_free was read to do just that (3.4 to 3.14); anywhere else, or
** when the symbol is missing, messages go the public way.
** ===================================================================== */

void natsMsg_free(void *msg) __attribute__((weak));

static void (*msg_free)(void *);

static void glue_init_once(void) {
  int v = nats_GetVersionNumber();
  uv_mutex_init(&dead_lock);
  if (natsMsg_free != NULL && v >= 0x030400 && v < 0x030f00)
    msg_free = natsMsg_free;
}

void hm_msg_destroy(natsMsg *m) {
  if (m == NULL) return;
  if (msg_free != NULL) msg_free(m);
  else natsMsg_Destroy(m);
}

int hm_msg_freed_directly(void) {
  uv_once(&glue_once, glue_init_once);
  return msg_free != NULL;
}

/* }==================================================================== */

struct hm_sub {
  hm_conn_t *c;
  natsSubscription *ns;
  hm_msg_cb cb;
  void *arg;
  uint64_t delivered;
  int stopped;  /* no more callbacks (unsubscribed, or connection closing) */
  int released; /* the owner called hm_sub_unsubscribe */
  int ended;    /* cnats closed it (auto-unsubscribe, connection closed) */
  int is_mux;
  /* Drain (hm_sub_drain): D_QUEUED once the UNSUB is out and the round
  ** trip not yet started, D_FLUSH while it is out (drain_id: one round
  ** trip serves every drain queued in the same loop iteration), D_FLUSHED
  ** once it is back, D_OVER once `done` ran or was abandoned. */
  int drain;
  uint64_t drain_id;
  hm_status drain_st;
  hm_drained_cb drain_cb;
  void *drain_arg;
  hm_sub_t *prev, *next;
};

enum { D_NONE = 0, D_QUEUED, D_FLUSH, D_FLUSHED, D_OVER };

typedef struct req {
  hm_mux_entry e;    /* first: a req is its entry (id; deadline in uv_now ms) */
  uint64_t timeout;  /* ms; with max 0 each reply pushes the deadline */
  int max;
  int count;
  hm_reply_cb cb;
  void *arg;
} req;

struct hm_conn {
  uv_loop_t *loop;
  natsConnection *nc;
  glue *g;
  hm_event_cb on_event;
  void *event_arg;

  /* Cross-thread queue: a growable ring guarded by qlock. `qdead` is set
  ** (under the lock) before the wake-up handle closes, so producers never
  ** signal a closed handle. */
  uv_mutex_t qlock;
  qitem *ring;
  size_t rcap, rhead, rcount;
  int qdead;
  uv_async_t wake;
  uv_timer_t timer;
  uv_prepare_t flush; /* see do_poll */
  int handles_open;

  /* Event-loop glue. The poll handle is malloc'd (a pollbox): on reconnect
  ** the old one closes while the new one starts. */
  uv_thread_t loop_thread;
  uv_poll_t *poll;
  int poll_events;
  int polls_open; /* poll handles not yet closed */
  int attached;   /* between the first attach and detach */
  int write_wanted; /* cnats has output buffered (its write event added) */

  hm_sub_t *subs; /* every subscription not yet freed; busy ones first */
  int draining;   /* inside drain_subs: frees wait */
  int unswept;    /* released while draining, for sweep */
  int max_pending_msgs; /* per subscription, 0: cnats' default */
  int credits_max;      /* messages delivered and not yet done; 0: no limit */
  int credits_used;
  int starved;          /* a drain stopped for want of credits */
  int64_t max_pending_bytes; /* per subscription; -1: no limit */
  /* Messages cnats had taken in at the last pass over the subscriptions
  ** (see arrived). */
  natsStatistics *nstats;
  uint64_t in_seen;
  /* Drains waiting for their shared round trip (D_QUEUED), and the longest
  ** timeout among them. */
  int drains_queued;
  uint64_t drain_timeout_ms;

  /* Request mux. */
  hm_sub_t *mux;
  char inbox[64]; /* "_INBOX.<nuid>." */
  size_t inbox_len;
  uint64_t next_id;
  hm_mux pending;

  /* The first connect (connect_main, on a thread of its own). The thread
  ** owns cx_opts and writes cx_nc, cx_passes and cx_text before
  ** it sets cx_done under qlock; the loop reads them once it sees cx_done,
  ** and only then sets `nc`. cx_cancel (under qlock, signalled through
  ** cx_cond) cuts the wait between two passes short. */
  int connecting;        /* from hm_conn_connect until finish_connect */
  int cx_reported;       /* `connected` has run */
  hm_connected_cb connected;
  uv_thread_t cx_thread;
  uv_cond_t cx_cond;
  natsOptions *cx_opts;
  natsConnection *cx_nc;
  int cx_attempts; /* passes over the servers allowed; 0: no limit */
  int cx_passes;   /* passes made */
  uint64_t cx_wait_ms;
  int cx_done, cx_cancel;
  char cx_text[512];

  hm_nuid_t nuid;
  hm_conn_stats stats;
  int closing;     /* hm_conn_close was called */
  int in_close;    /* inside hm_conn_close: callbacks it runs may close too */
  int nats_closed; /* cnats reported the connection closed */
  int finishing;
  hm_closed_cb done;
  void *done_arg;
  /* Room for a subject error: the value escaped (up to 4 bytes for each
  ** of the 64 shown) plus its rule. */
  char err[768];
};

/* {====================================================================
** Cross-thread queue
** ===================================================================== */

static int qpush(hm_conn_t *c, const qitem *it) {
  int ok = 1;
  uv_mutex_lock(&c->qlock);
  if (c->qdead) {
    ok = 0;
  } else {
    if (c->rcount == c->rcap) {
      size_t ncap = c->rcap ? c->rcap * 2 : 64, i;
      qitem *nr = malloc(ncap * sizeof *nr);
      if (nr == NULL) {
        ok = 0;
      } else {
        for (i = 0; i < c->rcount; i++)
          nr[i] = c->ring[(c->rhead + i) % c->rcap];
        free(c->ring);
        c->ring = nr;
        c->rcap = ncap;
        c->rhead = 0;
      }
    }
    if (ok) {
      c->ring[(c->rhead + c->rcount) % c->rcap] = *it;
      /* The consumer re-signals itself when it leaves items behind, so
      ** only the transition from empty needs a wake-up. */
      if (c->rcount++ == 0) uv_async_send(&c->wake);
    }
  }
  uv_mutex_unlock(&c->qlock);
  return ok;
}

/* Queues an event for the loop, unless the connection is gone. */
static void push_event(glue *g, int ev, natsStatus st, const void *ns) {
  qitem it = {Q_EVENT, ev, st, 0, -1, ns};
  uv_mutex_lock(&g->lock);
  if (g->c != NULL) qpush(g->c, &it);
  uv_mutex_unlock(&g->lock);
}

static void on_nats_disconnected(natsConnection *nc, void *closure) {
  push_event(closure, HM_EV_DISCONNECTED, NATS_OK, NULL);
}

static void on_nats_reconnected(natsConnection *nc, void *closure) {
  push_event(closure, HM_EV_RECONNECTED, NATS_OK, NULL);
}

static void on_nats_closed(natsConnection *nc, void *closure) {
  push_event(closure, HM_EV_CLOSED, NATS_OK, NULL);
}

static void on_nats_error(natsConnection *nc, natsSubscription *ns,
                          natsStatus err, void *closure) {
  /* Reading the subscription here could race with its destruction on
  ** the loop thread: the loop finds it by address instead. */
  push_event(closure, HM_EV_ERROR, err, ns);
}

/* }==================================================================== */

/* {====================================================================
** Pending table and deadline heap
** ===================================================================== */

static req *pending_find(const hm_conn_t *c, uint64_t id) {
  return (req *)hm_mux_find(&c->pending, id);
}

static void on_deadline(uv_timer_t *t);

static void arm_timer(hm_conn_t *c) {
  if (!c->handles_open) return;
  hm_mux_entry *first = hm_mux_earliest(&c->pending);
  if (first == NULL) {
    uv_timer_stop(&c->timer);
  } else {
    uint64_t now = uv_now(c->loop), d = first->deadline;
    uv_timer_start(&c->timer, on_deadline, d > now ? d - now : 0, 0);
  }
}

/* Takes a record out of the table and the heap; the caller frees it. */
static void req_unlink(hm_conn_t *c, req *r) {
  hm_mux_remove(&c->pending, &r->e);
  c->stats.pending--;
}

static void on_deadline(uv_timer_t *t) {
  hm_conn_t *c = t->data;
  uint64_t now = uv_now(c->loop);
  hm_mux_entry *first;
  while ((first = hm_mux_earliest(&c->pending)) != NULL &&
         first->deadline <= now) {
    req *r = (req *)first;
    req_unlink(c, r);
    c->stats.timeouts++;
    r->cb(c, r->e.id, HM_TIMEOUT, NULL, 1, r->arg);
    free(r);
  }
  arm_timer(c);
}

/* Completes every pending request with HM_CLOSED. */
static void fail_all_pending(hm_conn_t *c) {
  size_t cursor = 0;
  req *r;
  while ((r = (req *)hm_mux_any(&c->pending, &cursor)) != NULL) {
    req_unlink(c, r);
    r->cb(c, r->e.id, HM_CLOSED, NULL, 1, r->arg);
    free(r);
  }
  arm_timer(c);
}

/* }==================================================================== */

/* {====================================================================
** Dispatch on the loop thread
** ===================================================================== */

static void sub_unlink_free(hm_sub_t *s) {
  hm_conn_t *c = s->c;
  if (s->prev) s->prev->next = s->next; else c->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  if (s->ns) natsSubscription_Destroy(s->ns);
  free(s);
}

static void try_finish(hm_conn_t *c);

/* Frees the subscriptions released while a pass over them was running. */
static void sweep(hm_conn_t *c) {
  hm_sub_t *s, *next;
  if (c->unswept == 0) return;
  c->unswept = 0;
  for (s = c->subs; s != NULL; s = next) {
    next = s->next;
    if (s->released) sub_unlink_free(s);
  }
}

static void on_reply(hm_conn_t *c, natsMsg *msg) {
  const char *subj = natsMsg_GetSubject(msg);
  uint64_t id = 0;
  const char *p;
  req *r = NULL;
  if (strncmp(subj, c->inbox, c->inbox_len) == 0) {
    p = subj + c->inbox_len;
    if (*p >= '0' && *p <= '9') {
      for (; *p >= '0' && *p <= '9'; p++) id = id * 10 + (uint64_t)(*p - '0');
      if (*p == '\0') r = pending_find(c, id);
    }
  }
  if (r == NULL) {
    c->stats.late_replies++;
    hm_msg_destroy(msg);
    return;
  }
  c->stats.replies_in++;
  r->count++;
  if (r->max > 0 && r->count >= r->max) {
    req_unlink(c, r);
    r->cb(c, id, HM_OK, msg, 1, r->arg);
    free(r);
    arm_timer(c);
  } else {
    if (r->max == 0 && r->e.hidx != SIZE_MAX) {
      /* An open-ended stream times out when replies stop coming (a later
      ** deadline: moving it cannot fail). */
      hm_mux_schedule(&c->pending, &r->e, uv_now(c->loop) + r->timeout);
      arm_timer(c);
    }
    /* The callback may cancel this very request: touch nothing after. */
    r->cb(c, id, HM_OK, msg, 0, r->arg);
  }
}

/* {====================================================================
** Draining one subscription (hm_sub_drain)
** ===================================================================== */

static hm_status start_request(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               uint64_t timeout_ms, int max_replies,
                               hm_reply_cb cb, void *arg, uint64_t *id);

/* Runs the drain's `done` once; no callback for the subscription follows. */
static void drain_end(hm_sub_t *s, hm_status st) {
  hm_drained_cb cb = s->drain_cb;
  if (s->drain == D_NONE || s->drain == D_OVER) return;
  /* A round trip still out may serve other drains too: it is left to
  ** complete, and finds this one over. */
  if (s->drain == D_QUEUED) s->c->drains_queued--;
  s->drain = D_OVER;
  s->stopped = 1;
  s->drain_cb = NULL;
  if (cb) cb(s, st, s->drain_arg);
}

/* Ends every drain still going with HM_CLOSED. */
static void drain_end_all(hm_conn_t *c) {
  hm_sub_t *s;
  c->draining++; /* a `done` that unsubscribes frees after the loop */
  for (s = c->subs; s != NULL; s = s->next)
    if (!s->released) drain_end(s, HM_CLOSED);
  if (--c->draining == 0) sweep(c);
}

/* The round trip is back (or failed): once cnats holds nothing more for
** the subscription, the drain is over. Messages held back by credits keep
** it going until hm_conn_done lets them through. */
static void drain_check(hm_sub_t *s) {
  int msgs = 0;
  if (s->drain != D_FLUSHED) return;
  if (!s->ended && natsSubscription_GetPending(s->ns, &msgs, NULL) != NATS_OK)
    msgs = 0; /* cnats closed it: nothing can be left */
  if (s->ended || msgs <= 0) drain_end(s, s->drain_st);
}

static void on_drain_flush(hm_conn_t *c, uint64_t id, hm_status st,
                           natsMsg *m, int done, void *arg) {
  hm_sub_t *s;
  (void)arg;
  hm_msg_destroy(m);
  c->draining++; /* a `done` that unsubscribes frees after the loop */
  for (s = c->subs; s != NULL; s = s->next) {
    if (s->released || s->drain != D_FLUSH || s->drain_id != id) continue;
    s->drain_id = 0;
    if (st == HM_CLOSED) {
      drain_end(s, HM_CLOSED);
      continue;
    }
    /* HM_OK: everything sent before the UNSUB is in cnats' queue. On a
    ** timeout, what has arrived is still delivered before `done`. */
    s->drain = D_FLUSHED;
    s->drain_st = st;
    drain_check(s);
  }
  if (--c->draining == 0) sweep(c);
}

/* One round trip for every drain queued since the last: started from the
** loop after the UNSUBs of this iteration, so it follows all of them. A
** close that drains 10,000 topics then costs a few round trips, not
** 10,000 (each reply is a message, and each message a pass over every
** subscription). */
static void start_drains(hm_conn_t *c) {
  hm_sub_t *s;
  uint64_t id = 0;
  hm_status st;
  if (c->drains_queued == 0) return;
  st = start_request(c, NULL, "", 0, c->drain_timeout_ms, 1, on_drain_flush,
                     NULL, &id);
  c->draining++;
  for (s = c->subs; s != NULL; s = s->next) {
    if (s->released || s->drain != D_QUEUED) continue;
    if (st == HM_OK) {
      s->drain = D_FLUSH;
      s->drain_id = id;
    } else {
      /* The UNSUB is out, the confirmation cannot come: the owner can
      ** only unsubscribe now. */
      drain_end(s, HM_CLOSED);
    }
  }
  c->drains_queued = 0;
  c->drain_timeout_ms = 0;
  if (--c->draining == 0) sweep(c);
}

/* }==================================================================== */

/* Hands what cnats parsed for one subscription to its owner, on the loop
** thread; returns how many messages it took. */
static int drain_sub(hm_conn_t *c, hm_sub_t *s) {
  natsMsg *m;
  natsStatus st = NATS_TIMEOUT;
  int queued = 0, taken = 0;
  /* Take what the count says, no more: NextMsg on an empty subscription
  ** fails with NATS_TIMEOUT, and cnats formats every failure into its
  ** thread-local error stack (snprintf), which made each pass over
  ** 10,000 idle subscriptions cost milliseconds. Nothing can be added
  ** meanwhile (cnats parses on this thread); a nested pass from a
  ** callback (hm_conn_done) can only take some away. */
  if (natsSubscription_GetPending(s->ns, &queued, NULL) != NATS_OK)
    queued = 1; /* let NextMsg say what happened to it */
  while (queued > 0 && !s->released) {
    /* Out of delivery credits: what waits stays in cnats (within its
    ** pending limits) until hm_conn_done hands credits back. */
    if (!s->is_mux && c->credits_max > 0 && c->credits_used >= c->credits_max) {
      c->starved = 1;
      return taken;
    }
    st = natsSubscription_NextMsg(&m, s->ns, 0);
    if (st == NATS_OK) {
      queued--;
      taken++;
      if (s->is_mux) {
        /* Replies still count while closing: the final flush is one. */
        on_reply(c, m);
      } else if (s->stopped) {
        c->stats.dropped++;
        hm_msg_destroy(m);
      } else {
        s->delivered++;
        c->stats.msgs_in++;
        if (c->credits_max > 0) c->credits_used++;
        s->cb(s, m, s->arg);
      }
    } else if (st == NATS_SLOW_CONSUMER) {
      /* cnats dropped messages over the pending limits and says so once;
      ** the subscription goes on (the error handler logs which one). */
      c->stats.slow_consumer++;
    } else {
      break;
    }
  }
  if (st == NATS_OK) st = NATS_TIMEOUT; /* the count is used up */
  /* Anything else than "nothing pending" means cnats closed it: auto-
  ** unsubscribe reached its count, or the connection closed. */
  if (!s->released && st != NATS_TIMEOUT) s->ended = 1;
  return taken;
}

/* A pass over the subscriptions, taking what cnats holds for them
** (subscriptions released meanwhile are freed at the end, not under our
** feet). With
** want >= 0 (a read that brought `want` messages) it stops once it has
** taken that many: a subscription that got messages moves to the front,
** so a service with thousands of idle topics finds its busy ones first
** and a read costs what it carries, not the number of topics. With -1
** (credits came back, or cannot tell) it visits every subscription. */
static void drain_subs(hm_conn_t *c, int64_t want) {
  hm_sub_t *s, *next;
  int64_t taken = 0;
  c->draining++;
  for (s = c->subs; s != NULL && (want < 0 || taken < want); s = next) {
    next = s->next;
    if (!s->ended && !s->released) {
      int n = drain_sub(c, s);
      taken += n;
      if (n > 0 && s != c->subs && !s->released) {
        s->prev->next = s->next; /* s != head: prev is set */
        if (s->next) s->next->prev = s->prev;
        s->prev = NULL;
        s->next = c->subs;
        c->subs->prev = s;
        c->subs = s;
      }
    }
    if (s->drain == D_FLUSHED && !s->released) drain_check(s);
  }
  if (--c->draining == 0) sweep(c);
}

/* {====================================================================
** Event-loop glue (natsOptions_SetEventLoop callbacks)
** ===================================================================== */

static int on_loop_thread(hm_conn_t *c) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &c->loop_thread);
}

static void free_conn(hm_conn_t *c);

/* A poll handle and the descriptor it watches: a dup of cnats' socket.
** libuv takes a descriptor out of epoll by its number, also when the
** handle closes; cnats closes its socket on a thread of its own, and a new
** socket (of this connection or another on the loop) may get the number
** before our handle closes, which would then unwatch that socket. A number
** of our own is freed only once libuv is done with it. cnats shuts its
** socket down before it stops polling, so the dup keeps no connection up. */
typedef struct {
  uv_poll_t h; /* first: the handle is the box */
  int fd;
} pollbox;

static void poll_closed(uv_handle_t *h) {
  hm_conn_t *c = h->data;
  close(((pollbox *)h)->fd);
  free(h);
  c->polls_open--;
  if (!c->finishing) try_finish(c);
  else if (c->polls_open == 0 && c->handles_open == 0)
    free_conn(c); /* abandoned: its other handles closed first */
}

/* How many messages cnats took in since the last look, or -1 when it
** cannot tell. A read that carried none (PONGs: a close that drains every
** topic reads thousands) needs no pass at all, and one that carried some
** needs only as much of a pass as finds them. One lock. */
static int64_t arrived(hm_conn_t *c) {
  uint64_t in = 0, n;
  if (c->nstats == NULL && natsStatistics_Create(&c->nstats) != NATS_OK)
    c->nstats = NULL;
  if (c->nstats == NULL || natsConnection_GetStats(c->nc, c->nstats) != NATS_OK ||
      natsStatistics_GetCounts(c->nstats, &in, NULL, NULL, NULL, NULL) != NATS_OK)
    return -1; /* cannot tell: look everywhere */
  n = in - c->in_seen;
  c->in_seen = in;
  return n > INT64_MAX ? -1 : (int64_t)n;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  hm_conn_t *c = h->data;
  if (h != c->poll) return; /* an old handle still closing */
  /* On error let cnats read: it notices the broken socket and reconnects. */
  if (status < 0 || (events & UV_READABLE)) {
    natsConnection_ProcessReadEvent(c->nc);
    int64_t n = status < 0 ? -1 : arrived(c);
    /* Messages held back for want of credits are not new, and a pass that
    ** counted them could stop short of a new one: until every hold is
    ** over (hm_conn_done's full pass), passes are full. */
    if (c->starved && n > 0) n = -1;
    if (n != 0) drain_subs(c, n);
  }
  if (status == 0 && (events & UV_WRITABLE) && h == c->poll)
    natsConnection_ProcessWriteEvent(c->nc);
}

static void poll_apply(hm_conn_t *c) {
  /* cnats attaches from the connect thread before `nc` is ours: polling
  ** starts in finish_connect. */
  if (c->poll == NULL || c->connecting) return;
  if (c->poll_events)
    uv_poll_start(c->poll, c->poll_events, on_poll);
  else
    uv_poll_stop(c->poll);
}

static void do_attach(hm_conn_t *c, natsSock fd) {
  if (c->poll != NULL) {
    uv_close((uv_handle_t *)c->poll, poll_closed);
    c->poll = NULL;
  }
  pollbox *box = malloc(sizeof *box);
  int own = box != NULL ? dup(fd) : -1;
  if (own < 0 || uv_poll_init_socket(c->loop, &box->h, own) != 0) {
    if (own >= 0) close(own);
    free(box);
    snprintf(c->err, sizeof c->err, "cannot poll the NATS socket");
    return;
  }
  box->fd = own;
  c->poll = &box->h;
  c->poll->data = c;
  c->polls_open++;
  c->attached = 1;
  c->poll_events = UV_READABLE;
  poll_apply(c);
}

static void do_detach(hm_conn_t *c) {
  c->attached = 0;
  if (c->poll != NULL) {
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, poll_closed);
    c->poll = NULL;
  }
  try_finish(c);
}

/* Whether cnats has the socket polled for reading: not before the first
** connect is over, nor between its stop (a disconnect) and the attach of
** the next socket, while its reconnect thread owns the output. */
static int polling(const hm_conn_t *c) {
  return c->poll != NULL && !c->connecting && (c->poll_events & UV_READABLE);
}

/* Before the loop next waits for I/O: cnats' output, every publish since
** the last wait in one write. */
static void on_flush(uv_prepare_t *h) {
  hm_conn_t *c = h->data;
  uv_prepare_stop(h);
  if (!c->write_wanted || !polling(c)) return;
  natsConnection_ProcessWriteEvent(c->nc);
  /* Not all of it went (a full socket buffer): the rest when writable. */
  if (c->write_wanted && c->poll != NULL && !(c->poll_events & UV_WRITABLE)) {
    c->poll_events |= UV_WRITABLE;
    poll_apply(c);
  }
}

static void do_poll(hm_conn_t *c, int which, int add) {
  if (which == UV_WRITABLE) {
    c->write_wanted = add;
    /* The socket is almost always writable: asking the poller to say so
    ** costs two epoll_ctl calls and a loop iteration per write. Writing
    ** from a prepare handle instead also puts every publish made in one
    ** iteration into one write. Polling for writable is for the rest of
    ** a partial write (on_flush), and for the times polling() is false. */
    if (add && polling(c)) {
      uv_prepare_start(&c->flush, on_flush);
      return;
    }
    if (!add && !(c->poll_events & UV_WRITABLE)) return;
  }
  if (add) c->poll_events |= which; else c->poll_events &= ~which;
  poll_apply(c);
}

/* The glue's connection, locked; NULL (and unlocked) when it is gone. */
static hm_conn_t *glue_enter(glue *g) {
  uv_mutex_lock(&g->lock);
  if (g->c == NULL) uv_mutex_unlock(&g->lock);
  return g->c;
}

static natsStatus evl_attach(void **user, void *loop, natsConnection *nc,
                             natsSock fd) {
  glue *g = *user ? *user : loop; /* first attach: see hm_conn_connect */
  natsStatus st = NATS_OK;
  hm_conn_t *c;
  *user = g;
  if ((c = glue_enter(g)) == NULL) return NATS_ERR;
  if (on_loop_thread(c)) {
    do_attach(c, fd);
    if (c->poll == NULL) st = NATS_ERR;
  } else {
    qitem it = {Q_ATTACH, 0, NATS_OK, 0, fd, NULL};
    if (!qpush(c, &it)) st = NATS_NO_MEMORY;
  }
  uv_mutex_unlock(&g->lock);
  return st;
}

static natsStatus evl_poll(glue *g, int which, bool add) {
  natsStatus st = NATS_OK;
  hm_conn_t *c = glue_enter(g);
  if (c == NULL) return NATS_OK;
  if (on_loop_thread(c)) {
    do_poll(c, which, add);
  } else {
    qitem it = {Q_POLL, add ? 1 : 0, NATS_OK, which, -1, NULL};
    if (!qpush(c, &it)) st = NATS_NO_MEMORY;
  }
  uv_mutex_unlock(&g->lock);
  return st;
}

static natsStatus evl_read(void *user, bool add) {
  return evl_poll(user, UV_READABLE, add);
}

static natsStatus evl_write(void *user, bool add) {
  return evl_poll(user, UV_WRITABLE, add);
}

static natsStatus evl_detach(void *user) {
  glue *g = user;
  hm_conn_t *c = glue_enter(g);
  if (c == NULL) return NATS_OK;
  if (on_loop_thread(c)) {
    do_detach(c);
  } else {
    qitem it = {Q_DETACH, 0, NATS_OK, 0, -1, NULL};
    qpush(c, &it);
  }
  uv_mutex_unlock(&g->lock);
  return NATS_OK;
}

/* }==================================================================== */

static const char *event_text(int ev, natsStatus st) {
  switch (ev) {
    case HM_EV_DISCONNECTED: return "disconnected";
    case HM_EV_RECONNECTED: return "reconnected";
    case HM_EV_CLOSED: return "closed";
    default: return natsStatus_GetText(st);
  }
}

static void dispatch(hm_conn_t *c, qitem *it) {
  switch (it->kind) {
    case Q_ATTACH: do_attach(c, it->fd); break;
    case Q_POLL: do_poll(c, it->which, it->status); break;
    case Q_DETACH: do_detach(c); break;
    case Q_EVENT:
      if (it->status == HM_EV_CLOSED) {
        c->nats_closed = 1;
        drain_end_all(c);
        fail_all_pending(c);
      }
      if (it->status == HM_EV_ERROR) {
        const char *subject = NULL;
        hm_sub_t *s;
        for (s = c->subs; s != NULL && it->ns != NULL; s = s->next)
          if ((const void *)s->ns == it->ns && !s->released) {
            subject = natsSubscription_GetSubject(s->ns);
            break;
          }
        if (subject)
          snprintf(c->err, sizeof c->err, "%s (subscription '%s')",
                   natsStatus_GetText(it->nstatus), subject);
        else
          snprintf(c->err, sizeof c->err, "%s", natsStatus_GetText(it->nstatus));
      }
      if (c->on_event)
        c->on_event(c, (hm_conn_event)it->status,
                    it->status == HM_EV_ERROR ? c->err
                                              : event_text(it->status, it->nstatus),
                    c->event_arg);
      if (it->status == HM_EV_CLOSED) try_finish(c);
      break;
  }
}

static void finish_connect(hm_conn_t *c);

static void on_wake(uv_async_t *h) {
  hm_conn_t *c = h->data;
  qitem batch[64];
  size_t n, i;
  int more, cx = 0;
  uv_mutex_lock(&c->qlock);
  n = c->rcount < 64 ? c->rcount : 64;
  for (i = 0; i < n; i++) batch[i] = c->ring[(c->rhead + i) % c->rcap];
  if (n > 0) c->rhead = (c->rhead + n) % c->rcap;
  c->rcount -= n;
  more = c->rcount > 0;
  /* The connect thread queued its attach before it set cx_done: once the
  ** queue is empty, the poll handle exists (or never will). */
  if (!more && c->cx_done) {
    c->cx_done = 0;
    cx = 1;
  }
  if (more) uv_async_send(&c->wake);
  uv_mutex_unlock(&c->qlock);
  for (i = 0; i < n; i++) dispatch(c, &batch[i]);
  if (cx) finish_connect(c);
  if (c->drains_queued && !c->closing) start_drains(c);
}

/* }==================================================================== */

/* {====================================================================
** Teardown
** ===================================================================== */

static void free_conn(hm_conn_t *c) {
  hm_closed_cb done = c->done;
  void *done_arg = c->done_arg;
  /* From now on cnats' late calls find no connection behind the glue. */
  uv_mutex_lock(&c->g->lock);
  c->g->c = NULL;
  uv_mutex_unlock(&c->g->lock);
  uv_mutex_lock(&dead_lock);
  c->g->next = dead_glues;
  dead_glues = c->g;
  uv_mutex_unlock(&dead_lock);
  /* Nothing can be queued any more (qdead); what is left owns nothing,
  ** but a drain still open is told (its owner may hold a reference). */
  drain_end_all(c);
  while (c->subs != NULL) sub_unlink_free(c->subs);
  natsConnection_Destroy(c->nc);
  if (c->nstats) natsStatistics_Destroy(c->nstats);
  uv_mutex_destroy(&c->qlock);
  uv_cond_destroy(&c->cx_cond);
  free(c->ring);
  hm_mux_free(&c->pending);
  if (done) done(c, done_arg);
  free(c);
}

static void on_handle_closed(uv_handle_t *h) {
  hm_conn_t *c = h->data;
  if (--c->handles_open == 0 && c->polls_open == 0) free_conn(c);
}

static void finish(hm_conn_t *c) {
  c->finishing = 1;
  uv_mutex_lock(&c->qlock);
  c->qdead = 1;
  uv_mutex_unlock(&c->qlock);
  uv_close((uv_handle_t *)&c->wake, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->flush, on_handle_closed);
}

/* The connection can go once the user asked for it and cnats reported it
** closed (its callback thread will not call us again); our poll handle must
** be closed first. */
static void try_finish(hm_conn_t *c) {
  /* The connect thread still uses c: finish_connect comes back here. */
  if (!c->closing || !c->nats_closed || c->finishing || c->connecting) return;
  /* cnats is done with the socket once it reports the connection closed,
  ** whether or not it told us to detach. */
  if (c->poll != NULL) do_detach(c);
  if (c->polls_open > 0) return;
  finish(c);
}

static void close_now(hm_conn_t *c) {
  /* `closed` arrives through the queue and finishes the teardown. */
  natsConnection_Close(c->nc);
  try_finish(c);
}

static void on_final_flush(hm_conn_t *c, uint64_t id, hm_status st,
                           natsMsg *m, int done, void *arg) {
  hm_msg_destroy(m);
  if (!c->nats_closed) close_now(c);
}

/* How long close waits for the server to confirm what was sent. */
#define CLOSE_FLUSH_MS 2000

void hm_conn_close(hm_conn_t *c, hm_closed_cb done, void *arg) {
  hm_sub_t *s;
  uint64_t id;
  if (c->closing || c->in_close) return;
  c->in_close = 1;
  c->done = done;
  c->done_arg = arg;
  if (c->connecting) {
    /* The pass under way cannot be cut short (cnats blocks in it); the
    ** wait before the next one can. finish_connect closes what it got. */
    c->closing = 1;
    uv_mutex_lock(&c->qlock);
    c->cx_cancel = 1;
    uv_cond_signal(&c->cx_cond);
    uv_mutex_unlock(&c->qlock);
    if (!c->cx_reported) {
      c->cx_reported = 1;
      c->connected(c, HM_CLOSED, "closed before the connection was up",
                   c->event_arg);
    }
    return;
  }
  drain_end_all(c);
  fail_all_pending(c);
  for (s = c->subs; s != NULL; s = s->next) s->stopped = 1;
  if (c->nats_closed) {
    c->closing = 1;
    try_finish(c);
    return;
  }
  /* natsConnection_Close may drop what is still buffered (replies just
  ** published by the last handlers): first a round trip through the
  ** server, then close. */
  if (start_request(c, NULL, "", 0, CLOSE_FLUSH_MS, 1, on_final_flush, NULL,
                    &id) != HM_OK) {
    c->closing = 1;
    close_now(c);
    return;
  }
  c->closing = 1;
}

void hm_conn_abandon(hm_conn_t *c) {
  hm_sub_t *s;
  c->on_event = NULL;
  c->done = NULL;
  c->cx_reported = 1; /* no `connected` either */
  if (c->connecting) {
    /* The connect thread uses c: it is stopped (after the pass under way)
    ** and joined here, the one wait an abandon makes. */
    uv_mutex_lock(&c->qlock);
    c->cx_cancel = 1;
    uv_cond_signal(&c->cx_cond);
    uv_mutex_unlock(&c->qlock);
    uv_thread_join(&c->cx_thread);
    uv_mutex_lock(&c->qlock);
    c->cx_done = 0;
    uv_mutex_unlock(&c->qlock);
    natsOptions_Destroy(c->cx_opts);
    c->cx_opts = NULL;
    c->connecting = 0;
    if (c->cx_nc != NULL) {
      c->nc = c->cx_nc;
      c->cx_nc = NULL;
    } else {
      c->nats_closed = 1; /* nothing to close */
    }
  }
  if (c->finishing) return; /* its handles are closing already */
  c->in_close = 1;
  drain_end_all(c);
  for (s = c->subs; s != NULL; s = s->next) s->stopped = 1;
  c->closing = 1;
  if (!c->nats_closed) {
    c->nats_closed = 1;
    natsConnection_Close(c->nc);
  }
  /* Everything still pending completes now, the final flush of an earlier
  ** hm_conn_close among it. */
  fail_all_pending(c);
  if (c->poll != NULL) do_detach(c); /* may finish */
  if (!c->finishing) finish(c);
}

/* }==================================================================== */

/* {====================================================================
** Public API
** ===================================================================== */

static hm_status set_opts(natsOptions *o, const hm_conn_opts *co,
                          uv_loop_t *loop, hm_conn_t *c) {
  natsStatus s = NATS_OK;
  static const char *const defserver[] = {"nats://127.0.0.1:4222"};
  const char *const *servers = co->nservers > 0 ? co->servers : defserver;
  int nservers = co->nservers > 0 ? co->nservers : 1;
  s = natsOptions_SetServers(o, (const char **)servers, nservers);
  if (s == NATS_OK && co->name) s = natsOptions_SetName(o, co->name);
  if (s == NATS_OK && (co->user || co->password))
    s = natsOptions_SetUserInfo(o, co->user, co->password);
  if (s == NATS_OK && co->token) s = natsOptions_SetToken(o, co->token);
  if (s == NATS_OK && (co->secure || co->tls_ca || co->tls_cert))
    s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && co->tls_ca)
    s = natsOptions_LoadCATrustedCertificates(o, co->tls_ca);
  if (s == NATS_OK && co->tls_cert)
    s = natsOptions_LoadCertificatesChain(o, co->tls_cert, co->tls_key);
  if (s == NATS_OK && co->tls_skip_verify)
    s = natsOptions_SkipServerVerification(o, true);
  if (s == NATS_OK && co->allow_reconnect >= 0)
    s = natsOptions_SetAllowReconnect(o, co->allow_reconnect != 0);
  if (s == NATS_OK && co->max_reconnect != 0)
    s = natsOptions_SetMaxReconnect(o, co->max_reconnect);
  if (s == NATS_OK && co->reconnect_wait_ms > 0)
    s = natsOptions_SetReconnectWait(o, co->reconnect_wait_ms);
  if (s == NATS_OK && co->connect_timeout_ms > 0)
    s = natsOptions_SetTimeout(o, co->connect_timeout_ms);
  if (s == NATS_OK && co->max_pending_msgs > 0)
    s = natsOptions_SetMaxPendingMsgs(o, co->max_pending_msgs);
  c->max_pending_msgs = co->max_pending_msgs;
  /* cnats' bound would be max_pending_msgs x 1 KiB, or none at all with
  ** the -1 we used to pass: an explicit one keeps large messages that wait
  ** behind a slow handler from taking the memory. */
  c->max_pending_bytes =
      co->max_pending_bytes == 0 ? HM_CONN_PENDING_BYTES : co->max_pending_bytes;
  /* No waiting for cnats' flusher, which runs about once per millisecond
  ** and caps request/reply rates: cnats asks for the write event at once,
  ** and do_poll writes before the loop next waits. */
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
  /* Hemera callers wait for their deadline when nobody serves a topic (a
  ** service may subscribe a moment later); the server's instant
  ** "no responders" status would end requests early and differently. */
  if (s == NATS_OK) s = natsOptions_DisableNoResponders(o, true);
  /* Every closure is the glue; the "loop" cnats passes to our first
  ** attach is the glue too. */
  if (s == NATS_OK)
    s = natsOptions_SetEventLoop(o, c->g, evl_attach, evl_read, evl_write,
                                 evl_detach);
  if (s == NATS_OK)
    s = natsOptions_SetDisconnectedCB(o, on_nats_disconnected, c->g);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectedCB(o, on_nats_reconnected, c->g);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_nats_closed, c->g);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_nats_error, c->g);
  return s == NATS_OK ? HM_OK : HM_INVAL;
}

/* {====================================================================
** Server URLs
** ===================================================================== */

/* Credentials end at the last '@', as cnats reads them (a NATS URL has no
** path, so a '/' before it is part of a password). */
char *hm_conn_redact_url(const char *url, char *out, size_t outlen) {
  const char *scheme = strstr(url, "://");
  const char *start = scheme ? scheme + 3 : url;
  const char *at = strrchr(start, '@');
  if (outlen == 0) return out;
  if (at == NULL)
    snprintf(out, outlen, "%s", url);
  else
    snprintf(out, outlen, "%.*s***%s", (int)(start - url), url, at);
  return out;
}

static int is_host_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
}

/* The rule a URL breaks, or NULL. */
static const char *url_rule(const char *url, size_t len, char *why,
                            size_t whylen) {
  const char *p = url, *end = url + len, *host, *sep;
  size_t i;
  unsigned long port = 0;
  if (len == 0) return "is empty";
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)url[i];
    if (ch <= ' ' || ch == 0x7f) {
      snprintf(why, whylen, "has a space or control character at byte %zu",
               i + 1);
      return why;
    }
    if (ch == ',')
      return "holds a ',': give a list as one URL per entry";
  }
  /* Scheme: nats:// or tls:// (cnats 3.4 has no websocket transport). */
  for (sep = p; sep + 3 <= end && memcmp(sep, "://", 3) != 0; sep++) {}
  if (sep + 3 <= end) {
    size_t n = (size_t)(sep - p);
    if (!((n == 4 && strncasecmp(p, "nats", 4) == 0) ||
          (n == 3 && strncasecmp(p, "tls", 3) == 0))) {
      snprintf(why, whylen, "has the scheme '%.*s' (use nats:// or tls://)",
               (int)(n > 16 ? 16 : n), p);
      return why;
    }
    p = sep + 3;
  }
  /* Credentials end at the last '@' (see hm_conn_redact_url). */
  for (sep = end; sep > p && sep[-1] != '@'; sep--) {}
  if (sep > p) p = sep;
  host = p;
  if (p < end && *p == '[') {
    for (p++; p < end && *p != ']'; p++)
      if (!(isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
        return "has a bracketed IPv6 address with a character other than "
               "hex digits, ':' and '.'";
    if (p == end) return "has a '[' without its ']'";
    p++;
    if (p - host == 2) return "has an empty IPv6 address";
  } else {
    for (; p < end && is_host_char((unsigned char)*p); p++) {}
    if (p == host) return "has no host";
  }
  if (p < end && *p == ':') {
    const char *digits = ++p;
    for (; p < end && *p >= '0' && *p <= '9' && port <= 65535; p++)
      port = port * 10 + (unsigned long)(*p - '0');
    for (; p < end && *p >= '0' && *p <= '9'; p++) {}
    if (p == digits) {
      const char *stop = p;
      while (stop < end && *stop != '/') stop++;
      snprintf(why, whylen, "has the port '%.*s' (1..65535 expected)",
               (int)(stop - digits > 16 ? 16 : stop - digits), digits);
      return p == end || *p == '/' ? "has ':' but no port after it" : why;
    }
    if (port < 1 || port > 65535) {
      snprintf(why, whylen, "has the port %.*s (1..65535 expected)",
               (int)(p - digits > 16 ? 16 : p - digits), digits);
      return why;
    }
  }
  if (p < end && !(p + 1 == end && *p == '/')) {
    snprintf(why, whylen,
             "has '%.*s' after the %s (a NATS URL is host and port only)",
             (int)(end - p > 16 ? 16 : end - p), p,
             port ? "port" : "host");
    return why;
  }
  return NULL;
}

hm_status hm_conn_check_url(const char *url, size_t len, char *err,
                            size_t errlen) {
  char why[96], shown[HM_SUBJECT_SHOW * 4 + 16], *masked;
  const char *rule;
  if ((rule = url_rule(url, len, why, sizeof why)) == NULL) return HM_OK;
  /* The credentials go before anything is shown. */
  masked = malloc(len + 4);
  if (masked == NULL) {
    snprintf(err, errlen, "invalid NATS server URL: %s", rule);
    return HM_INVAL;
  }
  {
    char *raw = malloc(len + 1);
    if (raw == NULL) {
      free(masked);
      snprintf(err, errlen, "invalid NATS server URL: %s", rule);
      return HM_INVAL;
    }
    memcpy(raw, url, len);
    raw[len] = '\0';
    /* An embedded NUL ends the text there: what follows is not shown. */
    hm_conn_redact_url(raw, masked, len + 4);
    free(raw);
  }
  hm_subject_quote(masked, strlen(masked), HM_SUBJECT_SHOW, shown,
                   sizeof shown);
  free(masked);
  snprintf(err, errlen, "invalid NATS server URL %s: %s", shown, rule);
  return HM_INVAL;
}

/* }==================================================================== */

/* {====================================================================
** The first connect, off the loop
** ===================================================================== */

/* Runs on the connection's own thread: passes over the servers (cnats
** tries each one in a pass) until one connects, the passes allowed are
** made, or a close cancels. Touches nothing of c but the cx_ fields and,
** through cnats' attach, the queue. */
static void connect_main(void *arg) {
  hm_conn_t *c = arg;
  natsConnection *nc = NULL;
  natsStatus ns = NATS_OK;
  int passes = 0, cancel;
  sigset_t all;
  /* A process signal goes to a thread that does not block it: never this
  ** one (nor the threads cnats starts from it, which inherit the mask),
  ** so the host's handlers see signals where they expect them. */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    ns = natsConnection_Connect(&nc, c->cx_opts);
    passes++;
    if (ns == NATS_OK) break;
    nc = NULL;
    {
      natsStatus ls;
      const char *t = nats_GetLastError(&ls);
      /* cnats' last error is per thread: read it here, without the
      ** "(conn.c:2088): " of its own source position. */
      if (t != NULL && *t == '(') {
        const char *e = strstr(t, "): ");
        if (e != NULL) t = e + 3;
      }
      snprintf(c->cx_text, sizeof c->cx_text, "%s",
               t && *t ? t : natsStatus_GetText(ns));
    }
    if (c->cx_attempts > 0 && passes >= c->cx_attempts) break;
    uv_mutex_lock(&c->qlock);
    if (!c->cx_cancel)
      uv_cond_timedwait(&c->cx_cond, &c->qlock, c->cx_wait_ms * 1000000ULL);
    cancel = c->cx_cancel;
    uv_mutex_unlock(&c->qlock);
    if (cancel) break;
  }
  c->cx_nc = nc;
  c->cx_passes = passes;
  uv_mutex_lock(&c->qlock);
  c->cx_done = 1;
  uv_async_send(&c->wake);
  uv_mutex_unlock(&c->qlock);
}

/* On the loop, once the connect thread is over: the connection is ours
** (HM_OK), or failed, or a close came first. */
static void finish_connect(hm_conn_t *c) {
  int reported = c->cx_reported;
  if (!c->connecting) return; /* hm_conn_abandon joined it already */
  uv_thread_join(&c->cx_thread);
  natsOptions_Destroy(c->cx_opts);
  c->cx_opts = NULL;
  c->connecting = 0;
  c->cx_reported = 1;
  if (c->cx_nc != NULL) {
    c->nc = c->cx_nc;
    c->cx_nc = NULL;
    if (c->closing) {
      close_now(c);
      return;
    }
    poll_apply(c);
    c->connected(c, HM_OK, NULL, c->event_arg);
    return;
  }
  /* No connection exists, so cnats holds no pointer to c: close our
  ** handles and free once libuv is done with them. */
  c->nats_closed = 1;
  if (!c->closing) {
    c->closing = 1;
    c->done = NULL;
    if (c->cx_passes > 1)
      snprintf(c->err, sizeof c->err, "%s (%d attempts, %" PRIu64
               " ms apart)", c->cx_text, c->cx_passes, c->cx_wait_ms);
    else
      snprintf(c->err, sizeof c->err, "%s", c->cx_text);
    if (!reported) c->connected(c, HM_CONNECT, c->err, c->event_arg);
  }
  try_finish(c);
}

/* }==================================================================== */

hm_status hm_conn_connect(uv_loop_t *loop, const hm_conn_opts *co,
                          hm_event_cb on_event, hm_connected_cb connected,
                          void *arg, hm_conn_t **out, char *err,
                          size_t errlen) {
  natsOptions *o = NULL;
  hm_status st;
  hm_conn_t *c;
  int i, retries;
  *out = NULL;
  /* Everything that can be refused is, before anything exists. */
  for (i = 0; i < co->nservers; i++) {
    const char *u = co->servers[i];
    if (u == NULL) {
      snprintf(err, errlen, "invalid NATS server URL: servers[%d] is NULL",
               i + 1);
      return HM_INVAL;
    }
    if (hm_conn_check_url(u, strlen(u), err, errlen) != HM_OK)
      return HM_INVAL;
  }
  if (co->max_pending_bytes < -1 || co->max_pending_bytes > INT32_MAX ||
      co->max_pending_msgs < 0) {
    snprintf(err, errlen,
             "invalid connection options: max_pending_bytes must be -1 (no "
             "limit), 0 (default) or 1..%d, max_pending_msgs >= 0",
             (int)INT32_MAX);
    return HM_INVAL;
  }
  if (connected == NULL) {
    snprintf(err, errlen, "invalid connection options: no connected callback");
    return HM_INVAL;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) return HM_NOMEM;
  hm_mux_init(&c->pending);
  c->loop = loop;
  c->on_event = on_event;
  c->connected = connected;
  c->event_arg = arg;
  hm_nuid_init(&c->nuid);
  uv_once(&glue_once, glue_init_once);
  c->g = calloc(1, sizeof *c->g);
  if (c->g == NULL || uv_mutex_init(&c->g->lock) != 0) {
    free(c->g);
    free(c);
    return HM_NOMEM;
  }
  c->g->c = c;
  if (uv_mutex_init(&c->qlock) != 0) {
    uv_mutex_destroy(&c->g->lock);
    free(c->g);
    free(c);
    return HM_NOMEM;
  }
  if (uv_cond_init(&c->cx_cond) != 0) {
    uv_mutex_destroy(&c->qlock);
    uv_mutex_destroy(&c->g->lock);
    free(c->g);
    free(c);
    return HM_NOMEM;
  }
  /* Calls from any other thread than this one are queued for it. */
  c->loop_thread = uv_thread_self();
  if (natsOptions_Create(&o) != NATS_OK) {
    st = HM_NOMEM;
    snprintf(err, errlen, "cannot create NATS options");
    goto fail;
  }
  if (set_opts(o, co, loop, c) != HM_OK) {
    /* What cnats refuses here is mostly the environment: a TLS file it
    ** cannot read or parse (its message names it). */
    natsStatus ls;
    const char *t = nats_GetLastError(&ls);
    if (t != NULL && *t == '(') {
      const char *e = strstr(t, "): ");
      if (e != NULL) t = e + 3;
    }
    st = HM_CONNECT;
    snprintf(err, errlen, "invalid connection options: %s",
             t ? t : "unknown");
    goto fail;
  }
  retries = co->max_reconnect != 0 ? co->max_reconnect : 60;
  c->cx_attempts = !co->retry_connect ? 1 : retries < 0 ? 0 : 1 + retries;
  c->cx_wait_ms = co->reconnect_wait_ms > 0 ? (uint64_t)co->reconnect_wait_ms
                                            : 2000;
  c->cx_opts = o;
  /* The wake-up handle must exist before cnats may push anything. */
  uv_async_init(loop, &c->wake, on_wake);
  c->wake.data = c;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_prepare_init(loop, &c->flush);
  c->flush.data = c;
  c->handles_open = 3;
  c->connecting = 1;
  if (uv_thread_create(&c->cx_thread, connect_main, c) != 0) {
    /* As a failed connect: the handles close, then c is freed. */
    c->connecting = 0;
    c->cx_opts = NULL;
    natsOptions_Destroy(o);
    c->closing = 1;
    c->nats_closed = 1;
    try_finish(c);
    snprintf(err, errlen, "cannot start the connect thread");
    return HM_NOMEM;
  }
  *out = c;
  return HM_OK;
fail:
  if (o) natsOptions_Destroy(o);
  uv_cond_destroy(&c->cx_cond);
  uv_mutex_destroy(&c->qlock);
  uv_mutex_destroy(&c->g->lock);
  free(c->g);
  free(c);
  return st;
}

hm_status hm_conn_subscribe(hm_conn_t *c, const char *subject,
                            const char *queue, int max, hm_msg_cb cb,
                            void *arg, hm_sub_t **out) {
  natsStatus ns;
  hm_sub_t *s;
  int msgs = 0;
  *out = NULL;
  if (c->closing || c->nats_closed) return HM_CLOSED;
  if (c->connecting) return HM_BUSY;
  /* cnats checks these too, but not the line length: a SUB line over the
  ** server's max_control_line closes the connection, and reconnecting
  ** replays it. */
  if (hm_subject_check_line(subject, subject ? strlen(subject) : 0,
                            HM_SUBJ_SUBSCRIBE, queue,
                            queue ? strlen(queue) : 0, c->err,
                            sizeof c->err) != HM_OK)
    return HM_SUBJECT;
  s = calloc(1, sizeof *s);
  if (s == NULL) return HM_NOMEM;
  s->c = c;
  s->cb = cb;
  s->arg = arg;
  /* Synchronous: messages wait in cnats until drain_subs takes them on
  ** the loop thread (no delivery thread). */
  if (queue)
    ns = natsConnection_QueueSubscribeSync(&s->ns, c->nc, subject, queue);
  else
    ns = natsConnection_SubscribeSync(&s->ns, c->nc, subject);
  if (ns != NATS_OK) {
    snprintf(c->err, sizeof c->err, "subscribe to '%s': %s", subject,
             natsStatus_GetText(ns));
    free(s);
    return ns == NATS_INVALID_SUBJECT ? HM_INVAL : HM_NATS;
  }
  /* Both limits on every subscription: the message count from the options
  ** (cnats already applied it, or its default), the bytes from ours. */
  if (natsSubscription_GetPendingLimits(s->ns, &msgs, NULL) != NATS_OK ||
      msgs == 0)
    msgs = c->max_pending_msgs > 0 ? c->max_pending_msgs : 65536;
  natsSubscription_SetPendingLimits(s->ns, msgs, (int)c->max_pending_bytes);
  if (max > 0) natsSubscription_AutoUnsubscribe(s->ns, max);
  s->next = c->subs;
  if (c->subs) c->subs->prev = s;
  c->subs = s;
  *out = s;
  return HM_OK;
}

void hm_sub_unsubscribe(hm_sub_t *s) {
  hm_conn_t *c = s->c;
  if (s->released) return;
  /* Released first: a drain's `done` below may unsubscribe again. */
  s->released = 1;
  c->draining++;
  drain_end(s, HM_CLOSED);
  c->draining--;
  s->stopped = 1;
  /* Fails harmlessly when cnats already closed it. */
  if (!s->ended && !c->nats_closed) natsSubscription_Unsubscribe(s->ns);
  if (!c->draining) sub_unlink_free(s);
  else c->unswept++;
}

uint64_t hm_sub_delivered(const hm_sub_t *s) { return s->delivered; }

/* How long a drain waits for the server's confirmation by default. */
#define DRAIN_FLUSH_MS 5000

hm_status hm_sub_drain(hm_sub_t *s, uint64_t timeout_ms, hm_drained_cb done,
                       void *arg) {
  hm_conn_t *c = s->c;
  if (s->released || s->is_mux) return HM_INVAL;
  if (s->drain != D_NONE) return HM_BUSY;
  if (c->closing || c->nats_closed) return HM_CLOSED;
  if (!s->ended) {
    /* cnats' drain mode is the one way to send UNSUB and still take in
    ** what the server sent before it (a plain unsubscribe forgets the sid,
    ** so those messages would be dropped on arrival). Its timeout 0 means
    ** cnats never closes the subscription on its own: we decide when it
    ** is over. Its thread's flush also pushes the UNSUB out. */
    natsStatus ns = natsSubscription_DrainTimeout(s->ns, 0);
    if (ns == NATS_CONNECTION_CLOSED) return HM_CLOSED;
    if (ns != NATS_OK && ns != NATS_INVALID_SUBSCRIPTION) {
      /* INVALID_SUBSCRIPTION: cnats already closed it (auto-unsubscribe
      ** reached its count); the round trip below still settles it. */
      snprintf(c->err, sizeof c->err, "drain '%s': %s",
               natsSubscription_GetSubject(s->ns), natsStatus_GetText(ns));
      return HM_NATS;
    }
  }
  /* Our own round trip, on the loop: the server handles a connection's
  ** protocol in order, so when it returns, everything it sent this
  ** subscription before the UNSUB has been read. It starts from the loop
  ** (on_wake), shared with the other drains of this iteration. */
  s->drain = D_QUEUED;
  s->drain_st = HM_OK;
  s->drain_cb = done;
  s->drain_arg = arg;
  if (!timeout_ms) timeout_ms = DRAIN_FLUSH_MS;
  if (timeout_ms > c->drain_timeout_ms) c->drain_timeout_ms = timeout_ms;
  if (c->drains_queued++ == 0) uv_async_send(&c->wake);
  return HM_OK;
}

int hm_sub_draining(const hm_sub_t *s) {
  return s->drain == D_QUEUED || s->drain == D_FLUSH || s->drain == D_FLUSHED;
}

void hm_conn_set_credits(hm_conn_t *c, int max) {
  c->credits_max = max > 0 ? max : 0;
}

void hm_conn_done(hm_conn_t *c) {
  if (c->credits_used > 0) c->credits_used--;
  /* Resume once half the credits are back, not one message at a time. */
  if (c->starved && c->credits_used <= c->credits_max / 2) {
    c->starved = 0;
    if (!c->closing && !c->nats_closed) drain_subs(c, -1);
  }
}

static hm_status pub_status(hm_conn_t *c, natsStatus ns, const char *subject,
                            size_t len) {
  if (ns == NATS_OK) return HM_OK;
  if (ns == NATS_MAX_PAYLOAD) {
    snprintf(c->err, sizeof c->err,
             "payload of %zu bytes to '%s' exceeds the server's max_payload "
             "of %" PRId64 " bytes",
             len, subject, natsConnection_GetMaxPayload(c->nc));
    return HM_LIMIT;
  }
  snprintf(c->err, sizeof c->err, "publish to '%s': %s", subject,
           natsStatus_GetText(ns));
  if (ns == NATS_CONNECTION_CLOSED) return HM_CLOSED;
  return ns == NATS_INVALID_SUBJECT ? HM_INVAL : HM_NATS;
}

hm_status hm_conn_publish(hm_conn_t *c, const char *subject,
                          const char *reply, const void *data, size_t len) {
  natsStatus ns;
  if (c->closing || c->nats_closed) return HM_CLOSED;
  if (c->connecting) return HM_BUSY;
  /* cnats writes a publish subject into the PUB line unchecked: CR/LF
  ** would inject protocol, a space or an overlong line drops the
  ** connection. */
  if (hm_subject_check_line(subject, subject ? strlen(subject) : 0,
                            HM_SUBJ_PUBLISH, reply, reply ? strlen(reply) : 0,
                            c->err, sizeof c->err) != HM_OK)
    return HM_SUBJECT;
  if (len > INT32_MAX) return pub_status(c, NATS_MAX_PAYLOAD, subject, len);
  if (reply)
    ns = natsConnection_PublishRequest(c->nc, subject, reply, data, (int)len);
  else
    ns = natsConnection_Publish(c->nc, subject, data, (int)len);
  return pub_status(c, ns, subject, len);
}

static void on_mux_msg(hm_sub_t *s, natsMsg *msg, void *arg) {
  /* Unused: mux messages are routed in drain_subs(). */
  hm_msg_destroy(msg);
}

static hm_status ensure_mux(hm_conn_t *c) {
  char nuid[HM_NUID_LEN + 1], subj[80];
  hm_status st;
  if (c->mux != NULL) return HM_OK;
  hm_nuid_next(&c->nuid, nuid);
  c->inbox_len = (size_t)snprintf(c->inbox, sizeof c->inbox, "_INBOX.%s.",
                                  nuid);
  snprintf(subj, sizeof subj, "%s*", c->inbox);
  st = hm_conn_subscribe(c, subj, NULL, 0, on_mux_msg, NULL, &c->mux);
  if (st == HM_OK) c->mux->is_mux = 1;
  return st;
}

static hm_status publish_hdrs(hm_conn_t *c, const char *subject,
                              const char *reply, const void *data, size_t len,
                              const char *const *hdrs, int nhdr, int bare);

/* Registers a pending record and publishes `data` to `subject` with the
** record's inbox as reply subject, with nhdr headers when nhdr > 0; with
** subject NULL, publishes to the inbox itself (a round trip through the
** server: see hm_conn_flush). */
static hm_status start_request_hdrs(hm_conn_t *c, const char *subject,
                                    const void *data, size_t len,
                                    const char *const *hdrs, int nhdr,
                                    uint64_t timeout_ms, int max_replies,
                                    hm_reply_cb cb, void *arg, uint64_t *id) {
  char reply[96];
  hm_status st;
  req *r;
  if (c->closing || c->nats_closed) return HM_CLOSED;
  if (c->connecting) return HM_BUSY;
  /* Before anything exists: the publish below checks it again together
  ** with the inbox reply subject. */
  if (subject != NULL &&
      hm_subject_check(subject, strlen(subject), HM_SUBJ_PUBLISH, NULL, 0,
                       c->err, sizeof c->err) != HM_OK)
    return HM_SUBJECT;
  st = ensure_mux(c);
  if (st != HM_OK) return st;
  r = calloc(1, sizeof *r);
  if (r == NULL) return HM_NOMEM;
  r->e.id = ++c->next_id;
  r->max = max_replies;
  r->timeout = timeout_ms;
  r->cb = cb;
  r->arg = arg;
  {
    /* snprintf("%s%llu") cost more than the rest of this function. The
    ** ids stay far below 2^63. inbox is at most 63 bytes, reply has room
    ** for HM_JSNUM_BUFSIZE more. */
    size_t n = strlen(c->inbox);
    memcpy(reply, c->inbox, n);
    hm_jsnum_int((long long)r->e.id, reply + n);
  }
  if (hm_mux_insert(&c->pending, &r->e) != 0) {
    free(r);
    return HM_NOMEM;
  }
  if (timeout_ms > 0) {
    /* The loop's clock is cached at the top of each iteration; a request
    ** made after a long callback would get a deadline already partly
    ** spent. */
    uv_update_time(c->loop);
    if (hm_mux_schedule(&c->pending, &r->e, uv_now(c->loop) + timeout_ms) != 0) {
      hm_mux_remove(&c->pending, &r->e);
      free(r);
      return HM_NOMEM;
    }
  }
  c->stats.pending++;
  /* Publish after the record exists: a reply can never beat it, since
  ** replies are only dispatched from the loop anyway. */
  if (subject != NULL && nhdr > 0)
    st = publish_hdrs(c, subject, reply, data, len, hdrs, nhdr, 0);
  else if (subject != NULL)
    st = hm_conn_publish(c, subject, reply, data, len);
  else
    st = hm_conn_publish(c, reply, NULL, data, len);
  if (st != HM_OK) {
    req_unlink(c, r);
    free(r);
    return st;
  }
  if (subject != NULL) c->stats.requests++;
  if (r->e.hidx == 0) arm_timer(c);
  *id = r->e.id;
  return HM_OK;
}

static hm_status start_request(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               uint64_t timeout_ms, int max_replies,
                               hm_reply_cb cb, void *arg, uint64_t *id) {
  return start_request_hdrs(c, subject, data, len, NULL, 0, timeout_ms,
                            max_replies, cb, arg, id);
}

hm_status hm_conn_request(hm_conn_t *c, const char *subject,
                          const void *data, size_t len, uint64_t timeout_ms,
                          int max_replies, hm_reply_cb cb, void *arg,
                          uint64_t *id) {
  return start_request(c, subject, data, len, timeout_ms, max_replies, cb,
                       arg, id);
}

/* A header key or value that would end the header block early (CR, LF),
** or a key cnats would split wrongly (':', space). */
static int header_bad(const char *s, int is_key) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n' || (is_key && (*s == ':' || *s == ' ')))
      return 1;
  return 0;
}

/* bare: a server without header support gets the message without them
** (headers that only add information, as ADR-32's error headers do). */
static hm_status publish_hdrs(hm_conn_t *c, const char *subject,
                              const char *reply, const void *data, size_t len,
                              const char *const *hdrs, int nhdr, int bare) {
  natsMsg *m = NULL;
  natsStatus ns;
  int k;
  if (c->closing || c->nats_closed) return HM_CLOSED;
  if (c->connecting) return HM_BUSY;
  if (hm_subject_check_line(subject, strlen(subject), HM_SUBJ_PUBLISH, reply,
                            reply ? strlen(reply) : 0, c->err,
                            sizeof c->err) != HM_OK)
    return HM_SUBJECT;
  if (len > INT32_MAX) return pub_status(c, NATS_MAX_PAYLOAD, subject, len);
  for (k = 0; k < nhdr; k++) {
    if (hdrs[2 * k][0] == '\0' || header_bad(hdrs[2 * k], 1) ||
        header_bad(hdrs[2 * k + 1], 0)) {
      snprintf(c->err, sizeof c->err,
               "header '%.64s' of a publish to '%.128s': a key must be "
               "non-empty without CR, LF, ':' or a space, a value without CR "
               "or LF",
               hdrs[2 * k], subject);
      return HM_INVAL;
    }
  }
  ns = natsMsg_Create(&m, subject, reply, data, (int)len);
  for (k = 0; ns == NATS_OK && k < nhdr; k++)
    ns = natsMsgHeader_Set(m, hdrs[2 * k], hdrs[2 * k + 1]);
  if (ns == NATS_OK) ns = natsConnection_PublishMsg(c->nc, m);
  hm_msg_destroy(m);
  if (ns == NATS_NO_SERVER_SUPPORT && bare) {
    if (reply)
      ns = natsConnection_PublishRequest(c->nc, subject, reply, data, (int)len);
    else
      ns = natsConnection_Publish(c->nc, subject, data, (int)len);
  }
  return pub_status(c, ns, subject, len);
}

hm_status hm_conn_publish_hdrs(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               const char *const *hdrs, int nhdr) {
  if (subject == NULL) return HM_INVAL;
  return publish_hdrs(c, subject, NULL, data, len, hdrs, nhdr, 1);
}

hm_status hm_conn_request_hdrs(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               const char *const *hdrs, int nhdr,
                               uint64_t timeout_ms, hm_reply_cb cb, void *arg,
                               uint64_t *id) {
  if (subject == NULL) return HM_INVAL;
  return start_request_hdrs(c, subject, data, len, hdrs, nhdr, timeout_ms, 1,
                            cb, arg, id);
}

hm_status hm_conn_flush(hm_conn_t *c, uint64_t timeout_ms, hm_reply_cb cb,
                        void *arg, uint64_t *id) {
  /* The server handles one connection's protocol in order, so a message we
  ** publish to our own inbox comes back only after everything we sent
  ** before it (subscriptions included) was processed. */
  return start_request(c, NULL, "", 0, timeout_ms, 1, cb, arg, id);
}

int hm_conn_cancel(hm_conn_t *c, uint64_t id, void **arg) {
  req *r = pending_find(c, id);
  if (arg) *arg = NULL;
  if (r == NULL) return 0;
  if (arg) *arg = r->arg;
  req_unlink(c, r);
  free(r);
  arm_timer(c);
  return 1;
}

int hm_conn_is_closed(const hm_conn_t *c) {
  return c->closing || c->nats_closed;
}

void hm_conn_get_stats(const hm_conn_t *c, hm_conn_stats *out) {
  const hm_sub_t *s;
  *out = c->stats;
  out->slow_dropped = 0;
  out->in_use = (uint64_t)c->credits_used;
  for (s = c->subs; s != NULL; s = s->next) {
    int64_t d = 0;
    if (!s->released && natsSubscription_GetDropped(s->ns, &d) == NATS_OK && d > 0)
      out->slow_dropped += (uint64_t)d;
  }
}

int64_t hm_conn_max_payload(const hm_conn_t *c) {
  return c->nc != NULL ? natsConnection_GetMaxPayload(c->nc) : 0;
}

const char *hm_conn_error(const hm_conn_t *c) { return c->err; }

/* }==================================================================== */

void hm_conn_library_close(void) {
  glue *g;
  /* Only once cnats' threads are gone can no callback reach a glue. */
  nats_CloseAndWait(0);
  uv_once(&glue_once, glue_init_once);
  uv_mutex_lock(&dead_lock);
  while ((g = dead_glues) != NULL) {
    dead_glues = g->next;
    uv_mutex_destroy(&g->lock);
    free(g);
  }
  uv_mutex_unlock(&dead_lock);
}
