/*
** hm_http.h: a small HTTP/1.1 server on a libuv loop (no lua.h).
**
** The parser is llhttp (Node's), compiled from the C sources Debian's
** node-llhttp ships; this file does the sockets, limits, keep-alive and
** shutdown around it. Why llhttp and not libh2o: we need a parser, not a
** second server framework. llhttp leaves every handle on our loop under
** our ownership (one close path, our shutdown order, nothing h2o-internal
** left for ASan to find), it has no OpenSSL or HTTP/2 to carry along, and
** its response mode will parse what a collector answers when the tracing
** exporter POSTs spans. libh2o-dev is the 2018 2.2.5 release, whose
** libuv build has no graceful way to close its open connections.
**
** Threads: every function here must be called on the loop thread, and
** every callback runs there, from the top of a libuv callback.
**
** Ownership: the server owns its connections and each connection owns the
** one request it is serving. A request (hm_http_req) is valid from the
** request callback until hm_http_respond, or until its abort callback
** runs (the peer went away or the server closed first): after either the
** caller must not touch it. One request per connection is served at a
** time; pipelined requests wait, so responses go out in order.
**
** Refusals: a request the parser refuses gets its status (400, 408, 413,
** 431, 501) and the connection ends; so does a connection over max_conns
** (503; past twice max_conns it is closed with no answer). A connection
** that ends after a response lingers: FIN is sent and what the peer still
** sends is read and dropped for up to 2 s, so that the peer reads the
** response instead of a reset.
*/
#ifndef HM_HTTP_H
#define HM_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "hm_status.h"

typedef struct hm_http_server hm_http_server;
typedef struct hm_http_req hm_http_req;

typedef struct hm_http_limits {
  size_t max_header_bytes; /* request line + headers; over: 431 (8 KiB) */
  size_t max_body_bytes;   /* over: 413 (1 MiB) */
  unsigned max_headers;    /* over: 431 (100) */
  unsigned max_conns;      /* open connections; more get 503 (256) */
  unsigned idle_ms;        /* keep-alive connection without a request (5 s) */
  unsigned request_ms;     /* to receive one whole request (10 s) */
} hm_http_limits;

/* Zero fields of hm_http_listen's limits take these defaults. */
#define HM_HTTP_MAX_HEADER_BYTES 8192
#define HM_HTTP_MAX_BODY_BYTES (1024 * 1024)
#define HM_HTTP_MAX_HEADERS 100
#define HM_HTTP_MAX_CONNS 256
#define HM_HTTP_IDLE_MS 5000
#define HM_HTTP_REQUEST_MS 10000

typedef void (*hm_http_req_cb)(hm_http_req *req, void *arg);
typedef void (*hm_http_closed_cb)(void *arg);
typedef void (*hm_http_abort_cb)(void *arg);

/* Listens on host (a numeric IPv4 or IPv6 address) and port (0: any free
** port, see hm_http_port). `on_req` runs for each complete request. On
** failure returns HM_INVAL (bad host, port or limit) or HM_UV (bind, listen)
** with a message in err. */
hm_status hm_http_listen(uv_loop_t *loop, const char *host, int port,
                         const hm_http_limits *limits, hm_http_req_cb on_req,
                         void *arg, hm_http_server **out, char *err,
                         size_t errlen);

/* The port the server listens on. */
int hm_http_port(const hm_http_server *s);

/* Stops listening and closes every connection (requests being served get
** their abort callback now). `closed` (may be NULL) runs once every handle
** has closed and the server is freed. No request callback runs after this
** call. Call once. */
void hm_http_close(hm_http_server *s, hm_http_closed_cb closed, void *arg);

/* {======== the request ======== */
const char *hm_http_method(const hm_http_req *r); /* "GET", ... */
/* The request target as sent ("/metrics?x=1"), NUL-terminated. */
const char *hm_http_target(const hm_http_req *r, size_t *len);
int hm_http_version_minor(const hm_http_req *r); /* HTTP/1.x */
size_t hm_http_nheaders(const hm_http_req *r);
/* Header i (0-based): name as sent, value; both NUL-terminated. */
void hm_http_header(const hm_http_req *r, size_t i, const char **name,
                    size_t *nlen, const char **value, size_t *vlen);
const char *hm_http_body(const hm_http_req *r, size_t *len);

/* Runs cb(arg) if the request goes away before it is answered. */
void hm_http_on_abort(hm_http_req *r, hm_http_abort_cb cb, void *arg);

typedef struct hm_http_header_t {
  const char *name, *value;
  size_t nlen, vlen;
} hm_http_header_t;

/* Answers the request: status 100-599, headers (Content-Length and
** Connection are ours: given ones are refused), body (none for HEAD, 204,
** 304). The bytes are copied. HM_INVAL, with the request left unanswered,
** for a bad status or a header name or value with CR, LF or NUL, with a
** message in err; HM_NOMEM. After HM_OK the request is gone. */
hm_status hm_http_respond(hm_http_req *r, int status,
                          const hm_http_header_t *headers, size_t nheaders,
                          const char *body, size_t blen, char *err,
                          size_t errlen);
/* }======== */

#endif
