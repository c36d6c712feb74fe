/*
** hm_conn.h: a NATS connection driven by a libuv loop, with a request
** multiplexer.
**
** Threads. Every function here must be called on the loop thread (the
** thread that calls hm_conn_connect and runs uv_run on its loop), and every
** callback below runs there, from the top of a libuv callback, except where
** a function says it calls back synchronously. The socket is polled by the
** loop; cnats parses on the loop thread and, since every subscription is
** synchronous, messages are taken from cnats right after each read: no
** delivery thread and no cross-thread hand-off per message. What cnats still
** does on its own threads (connection events, reconnect attach) goes
** through a locked queue and a uv_async wake-up. The first connect runs on
** a thread of its own (one per connection, joined when it is over), since
** cnats' handshake blocks: DNS, TCP, INFO/CONNECT/PONG, for each server.
**
** Requests. One `_INBOX.<nuid>.*` subscription per connection, made on the
** first request; each request publishes with the reply subject
** `<inbox>.<id>` and waits in a pending table keyed by id. A reply or the
** deadline completes a record exactly once; replies that find no record are
** dropped and counted (stats.late_replies). Nothing here blocks the loop.
**
** Ownership. Messages handed to hm_msg_cb / hm_reply_cb belong to the
** callee, which must hm_msg_destroy them (natsMsg_Destroy works too, more
** slowly). A hm_sub_t belongs to the caller
** until hm_sub_unsubscribe, which frees it (or right after the current
** pass over the subscriptions, when called from a message callback);
** hm_sub_drain does not free it. A hm_conn_t belongs to the caller until
** hm_conn_close; it is freed after the `closed` callback has run. One
** whose first connect failed belongs to the core from the `connected`
** callback on, and is freed after it returns.
**
** Names. Every subject, reply subject and queue group is checked against
** hm_subject.h before it reaches cnats (cnats writes publish subjects into
** the protocol unchecked): a bad one fails with HM_SUBJECT and
** hm_conn_error names the field, shows the value escaped and cut, and
** names the rule. The connection is untouched by such a failure.
*/
#ifndef HM_CONN_H
#define HM_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>
#include <uv.h>

#include "hm_status.h"
#include "hm_subject.h"

typedef struct hm_conn hm_conn_t;
typedef struct hm_sub hm_sub_t;

typedef enum {
  HM_EV_DISCONNECTED = 1,
  HM_EV_RECONNECTED,
  HM_EV_ERROR, /* asynchronous error, e.g. slow consumer; text says which */
  HM_EV_CLOSED /* last event: the connection is gone */
} hm_conn_event;

typedef struct hm_conn_opts {
  /* URLs, each as hm_conn_check_url takes it (one URL per entry: split
  ** comma lists first); NULL or empty: nats://127.0.0.1:4222 */
  const char *const *servers;
  int nservers;
  const char *name;           /* client name shown by the server */
  const char *user, *password;
  const char *token;
  int secure;                 /* require TLS */
  const char *tls_ca;         /* CA file */
  const char *tls_cert;       /* client certificate chain */
  const char *tls_key;        /* client key */
  int tls_skip_verify;
  int allow_reconnect;        /* default 1 (set -1 for "not given") */
  int max_reconnect;          /* attempts; -1 forever; 0 means default (60) */
  int reconnect_wait_ms;      /* 0: default (2000) */
  int connect_timeout_ms;     /* 0: default (2000) */
  /* 1: a failed first connect is tried again like a reconnect, up to
  ** max_reconnect more passes over the servers (-1: until it connects or
  ** is closed), reconnect_wait_ms apart. 0: one pass, then failure (as
  ** nats.js without waitOnFirstConnect). */
  int retry_connect;
  int max_pending_msgs;       /* per subscription; 0: cnats default */
  /* Per subscription, message data and headers waiting in cnats (also
  ** while delivery credits hold them back, see hm_conn_set_credits); past
  ** it cnats drops and reports a slow consumer. 0: HM_CONN_PENDING_BYTES;
  ** -1: no limit; at most INT32_MAX (cnats keeps an int). */
  int64_t max_pending_bytes;
} hm_conn_opts;

/* The default byte bound per subscription: 64 MiB, cnats' own default for
** its default message count (65536 x 1 KiB), made explicit because cnats
** scales its byte bound with max_pending_msgs (N x 1 KiB) and we set both
** limits on every subscription. With the default max_payload of 1 MB it
** holds 64 full-size messages, and memory stays bounded even when many
** large messages wait behind a slow handler. */
#define HM_CONN_PENDING_BYTES (64 * 1024 * 1024)

typedef void (*hm_event_cb)(hm_conn_t *c, hm_conn_event ev, const char *text,
                            void *arg);
typedef void (*hm_msg_cb)(hm_sub_t *s, natsMsg *msg, void *arg);
/* st is HM_OK with a reply message, or HM_TIMEOUT / HM_CLOSED with msg
** NULL. `done` is 1 on the call that completes the request; no call follows
** it. */
typedef void (*hm_reply_cb)(hm_conn_t *c, uint64_t id, hm_status st,
                            natsMsg *msg, int done, void *arg);
typedef void (*hm_closed_cb)(hm_conn_t *c, void *arg);
/* The outcome of the first connect, exactly once: HM_OK (connected: the
** connection can be used), HM_CONNECT (every attempt failed; `text` says
** what cnats said last and how many passes were made; `c` is freed right
** after this returns, so drop it and do not close it) or HM_CLOSED
** (hm_conn_close came first: called synchronously from inside it; its
** `done` follows as usual). `text` is NULL with HM_OK. */
typedef void (*hm_connected_cb)(hm_conn_t *c, hm_status st, const char *text,
                                void *arg);
/* st: HM_OK (everything the server sent before the drain was delivered),
** HM_TIMEOUT (the server did not confirm in time; what had arrived was
** delivered) or HM_CLOSED (the connection closed or the subscription was
** unsubscribed first; what was still waiting is dropped). */
typedef void (*hm_drained_cb)(hm_sub_t *s, hm_status st, void *arg);

typedef struct hm_conn_stats {
  uint64_t msgs_in;        /* messages delivered to subscriptions */
  uint64_t replies_in;     /* replies matched to a pending request */
  uint64_t late_replies;   /* replies that found no pending request */
  uint64_t timeouts;
  uint64_t requests;
  uint64_t pending;        /* requests in flight now */
  uint64_t dropped;        /* messages for subscriptions already closed */
  uint64_t slow_consumer;  /* times cnats dropped messages over the limits */
  uint64_t slow_dropped;   /* messages cnats dropped for live subscriptions */
  uint64_t in_use;         /* delivery credits in use (see set_credits) */
} hm_conn_stats;

/* Starts connecting without blocking the loop: the handshake runs on a
** thread of its own and `connected` (not NULL) reports the outcome from
** the loop (see hm_connected_cb). Returns HM_OK with *out set; or, with
** *out NULL, nothing started and err saying why: HM_INVAL (bad options, a
** bad URL: err names it), HM_CONNECT (cnats refused the options: a TLS
** file it cannot load, named in err) or HM_NOMEM. `on_event` may be NULL; `arg` goes to both callbacks.
** Until `connected` has run with HM_OK, the connection takes only
** hm_conn_close, hm_conn_is_closed, hm_conn_get_stats and hm_conn_error;
** the rest return HM_BUSY (or 0). A close while a handshake is under way
** waits for that one attempt (bounded by connect_timeout_ms per server),
** not for the retries. */
hm_status hm_conn_connect(uv_loop_t *loop, const hm_conn_opts *opts,
                          hm_event_cb on_event, hm_connected_cb connected,
                          void *arg, hm_conn_t **out, char *err,
                          size_t errlen);

/* Checks one server URL as NATS clients write it:
** [nats:// | tls://][user[:password]@]host[:port][/], host a name, an IPv4
** address or a [bracketed] IPv6 one, port 1..65535 (default 4222). cnats
** takes almost anything (a comma list becomes one odd host name, found
** out only by DNS), hence this. HM_OK, or HM_INVAL with one line in err
** that shows the URL with its credentials masked, escaped and cut, and
** names the rule. Any thread. */
hm_status hm_conn_check_url(const char *url, size_t len, char *err,
                            size_t errlen);

/* Writes `url` with any user:password@ or token@ part replaced by ***@
** into out (always terminated when outlen > 0); returns out. Any thread. */
char *hm_conn_redact_url(const char *url, char *out, size_t outlen);

/* Subscribes; `queue` may be NULL; `max` > 0 unsubscribes automatically
** after that many messages. HM_SUBJECT for a bad subject or queue group
** (wildcards are fine: "*" as a token, ">" as the last one), or when both
** together pass HM_SUBJECT_MAX bytes. */
hm_status hm_conn_subscribe(hm_conn_t *c, const char *subject,
                            const char *queue, int max, hm_msg_cb cb,
                            void *arg, hm_sub_t **out);

/* Stops delivery at once: no callback for this subscription runs after this
** returns, even for messages already queued. The handle is invalid
** afterwards. Every subscription of a connection also dies when the
** connection is freed (after hm_conn_close's `done`), so owners must drop
** their handles then. */
void hm_sub_unsubscribe(hm_sub_t *s);
/* Messages delivered so far. */
uint64_t hm_sub_delivered(const hm_sub_t *s);

/* Ends a subscription without losing what the server already sent it (a
** rolling restart: unsubscribing at once drops messages already on their
** way or queued here). Sends UNSUB at once (cnats' own drain mode, which
** keeps the subscription's messages flowing locally), then a round trip
** through the server (hm_conn_flush): once it returns, everything the
** server sent this subscription before the UNSUB is here. Delivery goes on
** as usual meanwhile, delivery credits included (messages held back by
** hm_conn_set_credits are delivered as credits come back), and `done`
** runs once the round trip is over and nothing of the subscription is
** left waiting. No message callback for it runs after `done`.
**
** `done` runs exactly once for every HM_OK return: from the loop, or from
** inside hm_sub_unsubscribe / hm_conn_close (HM_CLOSED) when one of those
** comes first. timeout_ms (0: 5000) bounds the round trip only; messages
** held back by credits are waited for as long as it takes. The handle
** stays the caller's: it must still call hm_sub_unsubscribe (from `done`
** or later) to free it. HM_BUSY when a drain was already started,
** HM_CLOSED when the connection is closing, HM_INVAL for the request
** inbox's own subscription. Uses one short-lived cnats thread (its drain
** flush). */
hm_status hm_sub_drain(hm_sub_t *s, uint64_t timeout_ms, hm_drained_cb done,
                       void *arg);
/* Whether a drain was started and has not yet run its `done`. */
int hm_sub_draining(const hm_sub_t *s);


/* Publishes (reply may be NULL). HM_LIMIT when over the server's
** max_payload, HM_CLOSED when closed, HM_SUBJECT for a bad subject or reply
** subject (wildcard tokens included) or when both together pass
** HM_SUBJECT_MAX bytes. */
hm_status hm_conn_publish(hm_conn_t *c, const char *subject,
                          const char *reply, const void *data, size_t len);

/* Publishes with NATS headers: nhdr key/value pairs in hdrs (the caller's;
** copied). Same outcomes as hm_conn_publish, plus HM_INVAL for a header key
** or value with CR, LF or NUL (they would end the header block early), or a
** key with ':' or a space. A server without header support gets the bare
** payload: the headers are dropped, as the server itself drops them for
** clients that cannot take them. Loop thread only. */
hm_status hm_conn_publish_hdrs(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               const char *const *hdrs, int nhdr);

/* Starts a request. max_replies: 1 for plain request/reply, N to accept N
** replies before a fixed deadline, 0 for no limit: then the deadline is an
** idle timeout, pushed back by each reply, and the request ends when
** replies stop coming or on hm_conn_cancel. timeout_ms 0 means no deadline.
** `cb` never runs before this returns. HM_SUBJECT for a bad subject (as
** for hm_conn_publish, with the connection's inbox as reply subject). */
hm_status hm_conn_request(hm_conn_t *c, const char *subject,
                          const void *data, size_t len, uint64_t timeout_ms,
                          int max_replies, hm_reply_cb cb, void *arg,
                          uint64_t *id);

/* hm_conn_request for one reply, with NATS headers: nhdr key/value pairs
** in hdrs (the caller's, copied before this returns), e.g. JetStream's
** Nats-Msg-Id. HM_INVAL (hm_conn_error says which) for an empty key, a
** key with CR, LF, ':' or a space, or a value with CR or LF; HM_NATS when
** the server takes no headers. */
hm_status hm_conn_request_hdrs(hm_conn_t *c, const char *subject,
                               const void *data, size_t len,
                               const char *const *hdrs, int nhdr,
                               uint64_t timeout_ms, hm_reply_cb cb, void *arg,
                               uint64_t *id);

/* A round trip through the server without blocking: `cb` runs (HM_OK,
** msg to destroy, done 1) once the server has processed everything this
** connection sent before, subscriptions included; HM_TIMEOUT after
** timeout_ms. */
hm_status hm_conn_flush(hm_conn_t *c, uint64_t timeout_ms, hm_reply_cb cb,
                        void *arg, uint64_t *id);

/* Ends a pending request without calling its callback. Returns 1 if it was
** pending, and then hands back its callback argument through `arg` (may be
** NULL) so the caller can release it. */
int hm_conn_cancel(hm_conn_t *c, uint64_t id, void **arg);

/* Backpressure: at most `max` messages (0: no limit) delivered to
** subscriptions (replies aside) and not yet marked done with
** hm_conn_done. At the limit, messages wait in cnats within its pending
** limits, beyond which cnats drops them and reports a slow consumer. */
void hm_conn_set_credits(hm_conn_t *c, int max);
/* One delivered message is done; may deliver waiting ones, synchronously,
** from inside this call. */
void hm_conn_done(hm_conn_t *c);

/* Closes: completes every pending request and drain with HM_CLOSED
** (synchronously, from inside this call), stops every subscription, flushes and closes the
** NATS connection; `done` runs from the loop once cnats has finished with
** it, and the hm_conn_t is freed right after. Calling it twice is a no-op. */
void hm_conn_close(hm_conn_t *c, hm_closed_cb done, void *arg);

/* For an owner that goes away now (its loop may not run again before it is
** gone, or something may close every handle on the loop): completes every
** pending request and drain with HM_CLOSED (synchronously), stops every
** subscription, closes the NATS connection without the final round trip
** and closes every handle at once. No callback runs after it returns, not
** even a `done` given to an earlier hm_conn_close (nor `connected`); the
** hm_conn_t is freed once libuv has closed the handles (when the loop runs
** next). During the first connect it waits for the pass under way (at most
** connect_timeout_ms per server) and joins the connect thread. */
void hm_conn_abandon(hm_conn_t *c);

int hm_conn_is_closed(const hm_conn_t *c);
void hm_conn_get_stats(const hm_conn_t *c, hm_conn_stats *out);
/* The connection's max_payload as announced by the server. */
int64_t hm_conn_max_payload(const hm_conn_t *c);
/* Text of the last error on this connection ("" if none). */
const char *hm_conn_error(const hm_conn_t *c);

/* Frees a message at once on the calling thread (any thread; NULL is
** fine), where natsMsg_Destroy hands it to cnats' collector thread. */
void hm_msg_destroy(natsMsg *m);
/* Whether hm_msg_destroy frees directly on this libnats (1), or falls back
** to natsMsg_Destroy (0). Valid once a connection was made. */
int hm_msg_freed_directly(void);

/* At process exit, after every connection is closed: stops the NATS
** client's threads (waiting for them) and frees what they could still
** have reached. Any thread; once. */
void hm_conn_library_close(void);

#endif
