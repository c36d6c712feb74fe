/*
** hm_http_client.c: see hm_http_client.h.
**
** One request's life: post() inits the TCP handle and connects; the
** request goes out in one write; llhttp reads the response until its
** message is complete (or the peer closes, or the timer fires); finish()
** records the outcome and closes the TCP handle; its close callback, and
** only it, clears `busy` and runs the caller's callback, so that callback
** may post the next request on the same handle. The client is freed by
** maybe_free once it is closing and both handles are closed.
*/
#include "hm_http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llhttp.h"

struct hm_http_client {
  uv_loop_t *loop;
  struct sockaddr_storage addr;
  char hostport[80]; /* the Host header */
  char *path;
  unsigned timeout_ms;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t creq;
  uv_write_t wreq;
  llhttp_t parser;
  llhttp_settings_t settings;
  char *req; /* the request being sent: head and body */
  size_t reqlen;
  int busy;      /* a POST accepted and its callback not run yet */
  int tcp_open;  /* tcp initialised and its close callback not run yet */
  int finished;  /* the request in flight has its outcome */
  int complete;  /* llhttp saw the whole response */
  int closing;   /* hm_http_client_close was called */
  int timer_closed;
  hm_status st;
  int status;
  char err[160];
  hm_http_post_cb cb;
  void *arg;
};

static void maybe_free(hm_http_client *cl) {
  if (!cl->closing || cl->tcp_open || !cl->timer_closed) return;
  free(cl->path);
  free(cl->req);
  free(cl);
}

static void on_tcp_closed(uv_handle_t *h) {
  hm_http_client *cl = h->data;
  hm_http_post_cb cb = cl->cb;
  cl->tcp_open = 0;
  cl->busy = 0;
  cl->cb = NULL;
  free(cl->req);
  cl->req = NULL;
  if (cb) cb(cl->st, cl->status, cl->st == HM_OK ? NULL : cl->err, cl->arg);
  maybe_free(cl);
}

static void finish(hm_http_client *cl, hm_status st, const char *fmt,
                   const char *detail) {
  if (cl->finished) return;
  cl->finished = 1;
  cl->st = st;
  if (fmt) snprintf(cl->err, sizeof cl->err, fmt, detail ? detail : "");
  uv_timer_stop(&cl->timer);
  uv_close((uv_handle_t *)&cl->tcp, on_tcp_closed);
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  (void)at;
  (void)len;
  ((hm_http_client *)p->data)->status = p->status_code;
  return 0;
}

static int on_complete(llhttp_t *p) {
  hm_http_client *cl = p->data;
  cl->status = p->status_code;
  cl->complete = 1;
  return HPE_PAUSED; /* the rest of the bytes do not matter */
}

static void on_timer(uv_timer_t *t) {
  hm_http_client *cl = t->data;
  char ms[24];
  snprintf(ms, sizeof ms, "%u", cl->timeout_ms);
  finish(cl, HM_TIMEOUT, "no whole response within %s ms", ms);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[16384]; /* loop thread only, consumed before the next read */
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  hm_http_client *cl = s->data;
  if (cl->finished) return;
  if (n < 0) {
    if (n == UV_EOF && llhttp_finish(&cl->parser) == HPE_OK && cl->complete) {
      finish(cl, HM_OK, NULL, NULL);
    } else if (n == UV_EOF) {
      finish(cl, HM_INVAL, "the collector closed the connection before a "
                           "whole response%s", "");
    } else {
      finish(cl, HM_CONNECT, "reading the response: %s", uv_strerror((int)n));
    }
    return;
  }
  if (n == 0) return;
  llhttp_errno_t e = llhttp_execute(&cl->parser, buf->base, (size_t)n);
  if (cl->complete) {
    finish(cl, HM_OK, NULL, NULL);
  } else if (e != HPE_OK) {
    finish(cl, HM_INVAL, "unreadable HTTP response: %s",
           llhttp_errno_name(e));
  }
}

static void on_write(uv_write_t *w, int status) {
  hm_http_client *cl = w->data;
  if (status < 0) finish(cl, HM_CONNECT, "sending the request: %s",
                         uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status) {
  hm_http_client *cl = c->data;
  if (cl->finished) return;
  if (status < 0) {
    finish(cl, HM_CONNECT, "connect: %s", uv_strerror(status));
    return;
  }
  int r = uv_read_start((uv_stream_t *)&cl->tcp, on_alloc, on_read);
  uv_buf_t b = uv_buf_init(cl->req, (unsigned)cl->reqlen);
  if (r == 0) r = uv_write(&cl->wreq, (uv_stream_t *)&cl->tcp, &b, 1, on_write);
  if (r != 0) finish(cl, HM_CONNECT, "sending the request: %s", uv_strerror(r));
}

static hm_status bad_url(const char *url, const char *why, char *err,
                         size_t errlen) {
  snprintf(err, errlen, "invalid collector URL \"%.200s\": %s", url, why);
  return HM_INVAL;
}

hm_status hm_http_client_new(uv_loop_t *loop, const char *url,
                             unsigned timeout_ms, hm_http_client **out,
                             char *err, size_t errlen) {
  static const char scheme[] = "http://";
  char host[64];
  const char *p, *hend, *path;
  size_t hlen;
  long port = 80;
  *out = NULL;
  if (strncmp(url, scheme, sizeof scheme - 1) != 0)
    return bad_url(url, "expected http://host:port/path (no https)", err,
                   errlen);
  p = url + sizeof scheme - 1;
  if (*p == '[') {
    hend = strchr(p, ']');
    if (hend == NULL) return bad_url(url, "unclosed '[' of an IPv6 host", err, errlen);
    hlen = (size_t)(hend - p - 1);
    if (hlen >= sizeof host) return bad_url(url, "host too long", err, errlen);
    memcpy(host, p + 1, hlen);
    hend++;
  } else {
    hend = p + strcspn(p, ":/");
    hlen = (size_t)(hend - p);
    if (hlen >= sizeof host) return bad_url(url, "host too long", err, errlen);
    memcpy(host, p, hlen);
  }
  host[hlen] = '\0';
  if (*hend == ':') {
    char *end;
    port = strtol(hend + 1, &end, 10);
    if (end == hend + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
      return bad_url(url, "port must be from 1 to 65535", err, errlen);
    path = end;
  } else {
    path = hend;
  }
  if (*path == '\0') path = "/";
  if (*path != '/') return bad_url(url, "expected a path after the host", err, errlen);
  if (strpbrk(path, " \r\n") != NULL)
    return bad_url(url, "the path has a space or a line break", err, errlen);
  hm_http_client *cl = calloc(1, sizeof *cl);
  if (cl == NULL) return HM_NOMEM;
  const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
  if (uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&cl->addr) != 0 &&
      uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&cl->addr) != 0) {
    free(cl);
    return bad_url(url, "the host must be a numeric IP address or localhost",
                   err, errlen);
  }
  cl->path = strdup(path);
  if (cl->path == NULL) {
    free(cl);
    return HM_NOMEM;
  }
  snprintf(cl->hostport, sizeof cl->hostport, "%s%s%s:%ld",
           strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
           port);
  cl->loop = loop;
  cl->timeout_ms = timeout_ms ? timeout_ms : 10000;
  llhttp_settings_init(&cl->settings);
  cl->settings.on_status = on_status;
  cl->settings.on_message_complete = on_complete;
  uv_timer_init(loop, &cl->timer);
  cl->timer.data = cl;
  *out = cl;
  return HM_OK;
}

hm_status hm_http_client_post(hm_http_client *cl, const char *content_type,
                              const char *body, size_t len,
                              hm_http_post_cb cb, void *arg) {
  if (cl->closing) return HM_CLOSED;
  if (cl->busy) return HM_BUSY;
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n"
                    "User-Agent: hemera-lua\r\n\r\n",
                    cl->path, cl->hostport, content_type, len);
  if (hl < 0 || (size_t)hl >= sizeof head) return HM_INVAL;
  cl->req = malloc((size_t)hl + len);
  if (cl->req == NULL) return HM_NOMEM;
  memcpy(cl->req, head, (size_t)hl);
  if (len) memcpy(cl->req + hl, body, len);
  cl->reqlen = (size_t)hl + len;
  int r = uv_tcp_init(cl->loop, &cl->tcp);
  if (r != 0) {
    free(cl->req);
    cl->req = NULL;
    return HM_UV;
  }
  cl->tcp.data = cl;
  cl->tcp_open = 1;
  cl->busy = 1;
  cl->finished = cl->complete = 0;
  cl->status = 0;
  cl->err[0] = '\0';
  cl->cb = cb;
  cl->arg = arg;
  llhttp_init(&cl->parser, HTTP_RESPONSE, &cl->settings);
  cl->parser.data = cl;
  cl->creq.data = cl;
  cl->wreq.data = cl;
  r = uv_tcp_connect(&cl->creq, &cl->tcp, (struct sockaddr *)&cl->addr,
                     on_connect);
  if (r != 0) {
    /* Still called back, from the close callback: one path for every
    ** outcome. */
    finish(cl, HM_CONNECT, "connect: %s", uv_strerror(r));
    return HM_OK;
  }
  uv_timer_start(&cl->timer, on_timer, cl->timeout_ms, 0);
  return HM_OK;
}

int hm_http_client_busy(const hm_http_client *cl) { return cl->busy; }

static void on_timer_closed(uv_handle_t *h) {
  hm_http_client *cl = h->data;
  cl->timer_closed = 1;
  maybe_free(cl);
}

void hm_http_client_close(hm_http_client *cl) {
  if (cl->closing) return;
  cl->closing = 1;
  if (cl->busy) finish(cl, HM_CLOSED, "the exporter closed%s", "");
  uv_close((uv_handle_t *)&cl->timer, on_timer_closed);
}
