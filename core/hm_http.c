/*
** hm_http.c: the HTTP/1.1 server of hm_http.h. llhttp parses; this file
** owns the sockets. A connection reads until llhttp has one whole request
** (on_message_complete pauses the parser), stops reading, hands the
** request over, and resumes with the bytes left over once the response is
** written, so pipelined requests are answered in order and a connection
** never holds more than one request and one read's worth of bytes.
*/
#include "hm_http.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llhttp.h"

#define READ_BUF 16384

/* After a response that ends the connection, how long the rest of what the
** peer sends is read and dropped (see linger). */
#define LINGER_MS 2000

enum { C_READING, C_SERVING, C_WRITING, C_LINGER };

typedef struct hdr {
  size_t n, nl, v, vl; /* offsets and lengths in req.buf */
} hdr;

typedef struct conn conn;

struct hm_http_req {
  conn *c;
  char *buf; /* target, then header names and values, each NUL-ended */
  size_t len, cap;
  size_t hbytes; /* bytes of target and headers as sent (the limit) */
  size_t target, target_len;
  size_t cur;    /* start of the field or value being read, or SIZE_MAX */
  hdr *h;
  size_t nh, hcap;
  char *body;
  size_t blen, bcap;
  int started; /* a byte of this message has come */
  int keep_alive, minor, head;
  const char *method;
  hm_http_abort_cb abort_cb;
  void *abort_arg;
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shut;
  hm_http_server *srv;
  llhttp_t parser;
  conn *prev, *next;
  int state;
  int closing;
  int nclosed; /* of the two handles */
  int counted; /* in srv->nopen */
  int err_status; /* set by a parser callback that refused the request */
  char err_msg[192];
  char *pend; /* bytes after the last complete request, not parsed yet */
  size_t npend, pcap;
  hm_http_req req;
  char rbuf[READ_BUF];
};

struct hm_http_server {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  hm_http_limits lim;
  hm_http_req_cb on_req;
  void *arg;
  hm_http_closed_cb closed;
  void *closed_arg;
  int port;
  int closing;
  unsigned nconns; /* allocated, until their handles have closed */
  unsigned nopen;  /* admitted and not yet closing: max_conns bounds it */
  int listener_open;
  conn *conns;
};

typedef struct wreq {
  uv_write_t w;
  conn *c;
  int last; /* close the connection once written */
  size_t len;
  char data[];
} wreq;

static llhttp_settings_t settings;
static int settings_ready;

static void conn_close(conn *c);
static void feed(conn *c, const char *data, size_t len);
static void on_timer(uv_timer_t *t);

/* {====================================================================
** Requests
** ===================================================================== */

static void req_reset(hm_http_req *r) {
  r->len = r->hbytes = r->nh = r->blen = 0;
  r->target = r->target_len = 0;
  r->cur = SIZE_MAX;
  r->started = r->keep_alive = r->minor = r->head = 0;
  r->method = "GET";
  r->abort_cb = NULL;
  r->abort_arg = NULL;
}

static void req_free(hm_http_req *r) {
  free(r->buf);
  free(r->h);
  free(r->body);
  r->buf = NULL;
  r->h = NULL;
  r->body = NULL;
}

static int grow(char **p, size_t *cap, size_t need) {
  size_t ncap;
  char *np;
  if (need <= *cap) return 0;
  ncap = *cap ? *cap : 256;
  while (ncap < need) ncap *= 2;
  np = realloc(*p, ncap);
  if (np == NULL) return -1;
  *p = np;
  *cap = ncap;
  return 0;
}

/* A parser callback refuses the request: feed answers with status. */
static int refuse(conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(conn *c, int status, const char *fmt, ...) {
  va_list ap;
  c->err_status = status;
  va_start(ap, fmt);
  vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
  va_end(ap);
  return -1;
}

/* Appends request-line or header text, within max_header_bytes. */
static int add_text(conn *c, const char *at, size_t n) {
  hm_http_req *r = &c->req;
  size_t max = c->srv->lim.max_header_bytes;
  if (r->hbytes + n > max)
    return refuse(c, 431,
                  "request line and headers over the limit of %zu bytes",
                  max);
  r->hbytes += n;
  if (r->cur == SIZE_MAX) r->cur = r->len;
  if (grow(&r->buf, &r->cap, r->len + n + 1) != 0)
    return refuse(c, 500, "out of memory");
  memcpy(r->buf + r->len, at, n);
  r->len += n;
  return 0;
}

/* Ends the text being read: NUL-terminates it; *off, *n describe it. */
static int end_text(conn *c, size_t *off, size_t *n) {
  hm_http_req *r = &c->req;
  if (r->cur == SIZE_MAX) r->cur = r->len; /* empty (llhttp sent no bytes) */
  if (grow(&r->buf, &r->cap, r->len + 1) != 0)
    return refuse(c, 500, "out of memory");
  *off = r->cur;
  *n = r->len - r->cur;
  r->buf[r->len++] = '\0';
  r->cur = SIZE_MAX;
  return 0;
}

static conn *of(llhttp_t *p) { return p->data; }

static int on_message_begin(llhttp_t *p) {
  conn *c = of(p);
  c->req.started = 1;
  /* From the first byte, the whole request has request_ms to arrive. */
  uv_timer_start(&c->timer, on_timer, c->srv->lim.request_ms, 0);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  return add_text(of(p), at, n);
}

static int on_url_complete(llhttp_t *p) {
  conn *c = of(p);
  return end_text(c, &c->req.target, &c->req.target_len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  return add_text(of(p), at, n);
}

static int on_header_field_complete(llhttp_t *p) {
  conn *c = of(p);
  hm_http_req *r = &c->req;
  if (r->nh >= c->srv->lim.max_headers)
    return refuse(c, 431, "more than %u request headers",
                  c->srv->lim.max_headers);
  if (r->nh == r->hcap) {
    size_t ncap = r->hcap ? r->hcap * 2 : 16;
    hdr *nh = realloc(r->h, ncap * sizeof *nh);
    if (nh == NULL) return refuse(c, 500, "out of memory");
    r->h = nh;
    r->hcap = ncap;
  }
  return end_text(c, &r->h[r->nh].n, &r->h[r->nh].nl);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  return add_text(of(p), at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  conn *c = of(p);
  hm_http_req *r = &c->req;
  int rc = end_text(c, &r->h[r->nh].v, &r->h[r->nh].vl);
  if (rc == 0) r->nh++;
  return rc;
}

static int on_headers_complete(llhttp_t *p) {
  conn *c = of(p);
  hm_http_req *r = &c->req;
  size_t max = c->srv->lim.max_body_bytes;
  if (llhttp_get_upgrade(p))
    return refuse(c, 501, "protocol upgrades are not served here");
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > max)
    return refuse(c, 413, "request body over the limit of %zu bytes",
                  max);
  r->keep_alive = llhttp_should_keep_alive(p);
  r->minor = llhttp_get_http_minor(p);
  r->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
  r->head = llhttp_get_method(p) == HTTP_HEAD;
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  conn *c = of(p);
  hm_http_req *r = &c->req;
  size_t max = c->srv->lim.max_body_bytes;
  if (r->blen + n > max)
    return refuse(c, 413, "request body over the limit of %zu bytes",
                  max);
  if (grow(&r->body, &r->bcap, r->blen + n + 1) != 0)
    return refuse(c, 500, "out of memory");
  memcpy(r->body + r->blen, at, n);
  r->blen += n;
  return 0;
}

/* One whole request: stop here, serve it, go on after the response. */
static int on_message_complete(llhttp_t *p) { return HPE_PAUSED; }

static void init_settings(void) {
  if (settings_ready) return;
  llhttp_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_url_complete = on_url_complete;
  settings.on_header_field = on_header_field;
  settings.on_header_field_complete = on_header_field_complete;
  settings.on_header_value = on_header_value;
  settings.on_header_value_complete = on_header_value_complete;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  settings_ready = 1;
}

/* }==================================================================== */

/* {====================================================================
** Connections
** ===================================================================== */

static void arm_idle(conn *c) {
  uv_timer_start(&c->timer, on_timer, c->srv->lim.idle_ms, 0);
}

static void srv_maybe_free(hm_http_server *s) {
  if (!s->closing || s->listener_open || s->nconns > 0) return;
  if (s->closed) s->closed(s->closed_arg);
  free(s);
}

static void conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  hm_http_server *s = c->srv;
  if (++c->nclosed < 2) return;
  if (c->prev) c->prev->next = c->next; else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  req_free(&c->req);
  free(c->pend);
  free(c);
  s->nconns--;
  srv_maybe_free(s);
}

/* The connection stops counting against max_conns: from the moment it is
** closed or lingers, so that a client that saw it end can connect again. */
static void uncount(conn *c) {
  if (!c->counted) return;
  c->counted = 0;
  c->srv->nopen--;
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  uncount(c);
  if (c->state == C_SERVING && c->req.abort_cb) {
    hm_http_abort_cb cb = c->req.abort_cb;
    c->req.abort_cb = NULL;
    cb(c->req.abort_arg);
  }
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn *c = h->data;
  buf->base = c->rbuf;
  buf->len = sizeof c->rbuf;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  conn *c = st->data;
  if (n < 0) {
    conn_close(c); /* EOF or error: a partial request is dropped */
    return;
  }
  if (n > 0 && c->state != C_LINGER) feed(c, buf->base, (size_t)n);
}

static void start_reading(conn *c) {
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
  (void)sr;
  (void)status; /* the linger timer or the peer's EOF ends it either way */
}

/* The last response is written: send FIN, then read and drop what the peer
** still sends (the rest of a refused body, a pipelined request) until it
** closes or LINGER_MS pass. Closing at once, with unread bytes, would make
** the kernel answer RST, and a client still sending may then lose the
** response it was about to read (nginx's lingering_close). */
static void linger(conn *c) {
  c->state = C_LINGER;
  uncount(c);
  c->npend = 0;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
  start_reading(c);
}

static void on_write(uv_write_t *w, int status) {
  wreq *wr = (wreq *)w;
  conn *c = wr->c;
  int last = wr->last;
  free(wr);
  if (c->closing) return;
  if (status < 0 || c->srv->closing) {
    conn_close(c);
    return;
  }
  if (last) {
    linger(c);
    return;
  }
  /* Keep-alive: on to the next request, first from what is buffered. */
  req_reset(&c->req);
  c->state = C_READING;
  llhttp_resume(&c->parser);
  arm_idle(c);
  if (c->npend > 0) {
    size_t n = c->npend;
    c->npend = 0;
    feed(c, c->pend, n);
    if (c->closing || c->state != C_READING) return;
  }
  start_reading(c);
}

/* Queues len bytes of data (copied) and, with last, closes afterwards. */
static hm_status write_out(conn *c, const char *head, size_t hlen,
                           const char *body, size_t blen, int last) {
  wreq *wr = malloc(sizeof *wr + hlen + blen);
  uv_buf_t b;
  if (wr == NULL) return HM_NOMEM;
  wr->c = c;
  wr->last = last;
  wr->len = hlen + blen;
  memcpy(wr->data, head, hlen);
  if (blen) memcpy(wr->data + hlen, body, blen);
  b = uv_buf_init(wr->data, (unsigned)wr->len);
  c->state = C_WRITING;
  if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(wr);
    conn_close(c);
  }
  return HM_OK;
}

static const char *reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : "Error";
  }
}

/* Answers a request the parser refused, and closes: after a framing error
** nothing later on the connection can be trusted. */
static void refuse_and_close(conn *c, int status, const char *msg) {
  char head[256], body[256];
  /* The newline ends the message for whoever reads it with curl. */
  int blen = snprintf(body, sizeof body, "%s\n", msg);
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain; "
                   "charset=utf-8\r\nContent-Length: %d\r\nConnection: "
                   "close\r\n\r\n",
                   status, reason(status), blen);
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  c->npend = 0;
  if (write_out(c, head, (size_t)n, body, (size_t)blen, 1) != HM_OK)
    conn_close(c);
}

static void feed(conn *c, const char *data, size_t len) {
  llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
  if (e == HPE_OK) return;
  if (e == HPE_PAUSED) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t rest = (size_t)(data + len - pos);
    if (rest > 0) {
      if (data == c->pend) {
        memmove(c->pend, pos, rest);
      } else {
        if (grow(&c->pend, &c->pcap, rest) != 0) {
          conn_close(c);
          return;
        }
        memcpy(c->pend, pos, rest);
      }
    }
    c->npend = rest;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    c->state = C_SERVING;
    c->req.c = c;
    c->srv->on_req(&c->req, c->srv->arg);
    return;
  }
  if (c->err_status) {
    refuse_and_close(c, c->err_status, c->err_msg);
  } else {
    char msg[256];
    snprintf(msg, sizeof msg, "bad request: %s (%s)",
             llhttp_get_error_reason(&c->parser), llhttp_errno_name(e));
    refuse_and_close(c, 400, msg);
  }
}

static void on_timer(uv_timer_t *t) {
  conn *c = t->data;
  if (c->state == C_LINGER) {
    conn_close(c);
    return;
  }
  if (c->state != C_READING) return;
  if (c->req.started) {
    char msg[128];
    snprintf(msg, sizeof msg, "request not received within %u ms",
             c->srv->lim.request_ms);
    refuse_and_close(c, 408, msg);
  } else {
    conn_close(c); /* idle keep-alive connection */
  }
}

static void on_connection(uv_stream_t *ls, int status) {
  hm_http_server *s = ls->data;
  conn *c;
  if (status < 0 || s->closing) return;
  c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  req_reset(&c->req);
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0 ||
      s->nconns > 2 * s->lim.max_conns) {
    /* Far over the limit (connections refused but still lingering count
    ** here): not even a response. */
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (s->nopen >= s->lim.max_conns) {
    char msg[96];
    snprintf(msg, sizeof msg, "too many connections (the limit is %u)",
             s->lim.max_conns);
    refuse_and_close(c, 503, msg);
    return;
  }
  c->counted = 1;
  s->nopen++;
  arm_idle(c);
  start_reading(c);
}

/* }==================================================================== */

/* {====================================================================
** Server
** ===================================================================== */

hm_status hm_http_listen(uv_loop_t *loop, const char *host, int port,
                         const hm_http_limits *limits, hm_http_req_cb on_req,
                         void *arg, hm_http_server **out, char *err,
                         size_t errlen) {
  struct sockaddr_storage ss;
  struct sockaddr_storage bound;
  int namelen = sizeof bound, rc;
  hm_http_server *s;
  *out = NULL;
  if (port < 0 || port > 65535) {
    snprintf(err, errlen, "invalid port %d (0 to 65535)", port);
    return HM_INVAL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen,
             "invalid host \"%.64s\" (a numeric IPv4 or IPv6 address, e.g. "
             "127.0.0.1 or ::1)",
             host);
    return HM_INVAL;
  }
  init_settings();
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return HM_NOMEM;
  }
  s->loop = loop;
  s->on_req = on_req;
  s->arg = arg;
  if (limits) s->lim = *limits;
  if (!s->lim.max_header_bytes) s->lim.max_header_bytes = HM_HTTP_MAX_HEADER_BYTES;
  if (!s->lim.max_body_bytes) s->lim.max_body_bytes = HM_HTTP_MAX_BODY_BYTES;
  if (!s->lim.max_headers) s->lim.max_headers = HM_HTTP_MAX_HEADERS;
  if (!s->lim.max_conns) s->lim.max_conns = HM_HTTP_MAX_CONNS;
  if (!s->lim.idle_ms) s->lim.idle_ms = HM_HTTP_IDLE_MS;
  if (!s->lim.request_ms) s->lim.request_ms = HM_HTTP_REQUEST_MS;
  uv_tcp_init(loop, &s->tcp);
  s->tcp.data = s;
  s->listener_open = 1;
  rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 128, on_connection);
  if (rc == 0)
    rc = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &namelen);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %.64s:%d: %s", host, port,
             uv_strerror(rc));
    hm_http_close(s, NULL, NULL);
    return HM_UV;
  }
  s->port = ntohs(bound.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&bound)->sin6_port
                      : ((struct sockaddr_in *)&bound)->sin_port);
  *out = s;
  return HM_OK;
}

int hm_http_port(const hm_http_server *s) { return s->port; }

static void listener_closed(uv_handle_t *h) {
  hm_http_server *s = h->data;
  s->listener_open = 0;
  srv_maybe_free(s);
}

void hm_http_close(hm_http_server *s, hm_http_closed_cb closed, void *arg) {
  conn *c, *next;
  if (s->closing) return;
  s->closing = 1;
  s->closed = closed;
  s->closed_arg = arg;
  uv_close((uv_handle_t *)&s->tcp, listener_closed);
  for (c = s->conns; c; c = next) {
    next = c->next;
    conn_close(c);
  }
}

/* }==================================================================== */

/* {====================================================================
** Request accessors and the response
** ===================================================================== */

const char *hm_http_method(const hm_http_req *r) { return r->method; }

const char *hm_http_target(const hm_http_req *r, size_t *len) {
  if (len) *len = r->target_len;
  return r->buf ? r->buf + r->target : "";
}

int hm_http_version_minor(const hm_http_req *r) { return r->minor; }

size_t hm_http_nheaders(const hm_http_req *r) { return r->nh; }

void hm_http_header(const hm_http_req *r, size_t i, const char **name,
                    size_t *nlen, const char **value, size_t *vlen) {
  *name = r->buf + r->h[i].n;
  *nlen = r->h[i].nl;
  *value = r->buf + r->h[i].v;
  *vlen = r->h[i].vl;
}

const char *hm_http_body(const hm_http_req *r, size_t *len) {
  *len = r->blen;
  return r->body ? r->body : "";
}

void hm_http_on_abort(hm_http_req *r, hm_http_abort_cb cb, void *arg) {
  r->abort_cb = cb;
  r->abort_arg = arg;
}

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int ieq(const char *a, size_t n, const char *b) {
  size_t i;
  if (strlen(b) != n) return 0;
  for (i = 0; i < n; i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
    if (x != y) return 0;
  }
  return 1;
}

hm_status hm_http_respond(hm_http_req *r, int status,
                          const hm_http_header_t *headers, size_t nheaders,
                          const char *body, size_t blen, char *err,
                          size_t errlen) {
  conn *c = r->c;
  char *head = NULL;
  size_t hlen = 0, hcap = 0, i, j;
  int n, last, nobody;
  char line[128];
  hm_status st;
  if (status < 100 || status > 599) {
    snprintf(err, errlen, "invalid status %d (100 to 599)", status);
    return HM_INVAL;
  }
  for (i = 0; i < nheaders; i++) {
    const hm_http_header_t *h = &headers[i];
    if (h->nlen == 0) {
      snprintf(err, errlen, "empty header name");
      return HM_INVAL;
    }
    for (j = 0; j < h->nlen; j++)
      if (!is_tchar((unsigned char)h->name[j])) {
        snprintf(err, errlen,
                 "invalid header name \"%.64s\": byte %zu is not allowed "
                 "in a token",
                 h->name, j + 1);
        return HM_INVAL;
      }
    for (j = 0; j < h->vlen; j++) {
      unsigned char ch = (unsigned char)h->value[j];
      if (ch == '\r' || ch == '\n' || ch == '\0') {
        snprintf(err, errlen,
                 "invalid value of header \"%.64s\": CR, LF or NUL at byte "
                 "%zu",
                 h->name, j + 1);
        return HM_INVAL;
      }
    }
    if (ieq(h->name, h->nlen, "content-length") ||
        ieq(h->name, h->nlen, "connection") ||
        ieq(h->name, h->nlen, "transfer-encoding")) {
      snprintf(err, errlen, "header \"%.64s\" is set by the server",
               h->name);
      return HM_INVAL;
    }
  }
  last = !r->keep_alive || c->srv->closing;
  nobody = r->head || status == 204 || status == 304 || status < 200;
  n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status,
               reason(status));
  if (grow(&head, &hcap, (size_t)n + 64) != 0) goto nomem;
  memcpy(head, line, (size_t)n);
  hlen = (size_t)n;
  for (i = 0; i < nheaders; i++) {
    const hm_http_header_t *h = &headers[i];
    if (grow(&head, &hcap, hlen + h->nlen + h->vlen + 4) != 0) goto nomem;
    memcpy(head + hlen, h->name, h->nlen);
    hlen += h->nlen;
    head[hlen++] = ':';
    head[hlen++] = ' ';
    memcpy(head + hlen, h->value, h->vlen);
    hlen += h->vlen;
    head[hlen++] = '\r';
    head[hlen++] = '\n';
  }
  n = 0;
  if (status != 204 && status != 304 && status >= 200)
    n = snprintf(line, sizeof line, "Content-Length: %zu\r\n", blen);
  n += snprintf(line + n, sizeof line - (size_t)n, "%s\r\n",
                last ? "Connection: close\r\n" : "");
  if (grow(&head, &hcap, hlen + (size_t)n) != 0) goto nomem;
  memcpy(head + hlen, line, (size_t)n);
  hlen += (size_t)n;
  r->abort_cb = NULL;
  st = write_out(c, head, hlen, body, nobody ? 0 : blen, last);
  free(head);
  if (st != HM_OK) {
    conn_close(c); /* the request is gone either way */
  }
  return HM_OK;
nomem:
  free(head);
  snprintf(err, errlen, "out of memory");
  return HM_NOMEM;
}

/* }==================================================================== */
