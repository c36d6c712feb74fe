/*
** core/hm_http against real sockets on loopback: a client on the same loop
** writes raw bytes and reads until the server closes. Each test runs its
** loop to completion and asserts that it closes cleanly (every handle of
** the server and its connections is gone).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_http.h"
#include "hm_test.h"

/* {======== the server side ======== */
static int requests, aborts, closed_calls;
static hm_http_req *held; /* a request answered later (defer mode) */
static int defer;

static void on_abort(void *arg) {
  aborts++;
  if (arg == held) held = NULL;
}

static void answer(hm_http_req *r) {
  char body[256], err[128];
  size_t blen;
  const char *name, *value;
  size_t nlen, vlen, i;
  const char *xt = "-";
  hm_http_header_t h = {"X-Test", "yes", 6, 3};
  for (i = 0; i < hm_http_nheaders(r); i++) {
    hm_http_header(r, i, &name, &nlen, &value, &vlen);
    if (nlen == 3 && strncmp(name, "X-T", 3) == 0) xt = value;
  }
  hm_http_body(r, &blen);
  snprintf(body, sizeof body, "%s %s %s %zu", hm_http_method(r),
           hm_http_target(r, NULL), xt, blen);
  hm_http_respond(r, 200, &h, 1, body, strlen(body), err, sizeof err);
}

static void on_req(hm_http_req *r, void *arg) {
  requests++;
  if (defer) {
    held = r;
    hm_http_on_abort(r, on_abort, r);
    return;
  }
  answer(r);
}

static void on_closed(void *arg) { closed_calls++; }
/* }======== */

/* {======== the client side ======== */
typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t w;
  const char *send;
  size_t slen;
  char got[65536];
  size_t glen;
  int eof;
  void (*on_data)(struct client *);
} client;

static void c_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  client *c = h->data;
  b->base = c->got + c->glen;
  b->len = sizeof c->got - c->glen - 1;
}

static void c_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  client *c = s->data;
  if (n < 0) {
    c->eof = 1;
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  c->glen += (size_t)n;
  c->got[c->glen] = '\0';
  if (c->on_data) c->on_data(c);
}

static void c_written(uv_write_t *w, int status) {}

static void c_connected(uv_connect_t *req, int status) {
  client *c = req->data;
  uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)c->slen);
  if (status < 0) {
    c->eof = 1;
    uv_close((uv_handle_t *)&c->tcp, NULL);
    return;
  }
  if (c->slen) uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, c_written);
  uv_read_start((uv_stream_t *)&c->tcp, c_alloc, c_read);
}

static void client_start(uv_loop_t *loop, client *c, int port,
                         const char *send, size_t slen) {
  struct sockaddr_in a;
  memset(c, 0, sizeof *c);
  c->send = send;
  c->slen = slen;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->conn.data = c;
  uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&a, c_connected);
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  const char *p = hay;
  while ((p = strstr(p, needle)) != NULL) {
    n++;
    p += strlen(needle);
  }
  return n;
}
/* }======== */

static hm_http_server *start(uv_loop_t *loop, hm_http_limits *lim) {
  hm_http_server *s = NULL;
  char err[256];
  requests = aborts = closed_calls = 0;
  held = NULL;
  defer = 0;
  if (hm_http_listen(loop, "127.0.0.1", 0, lim, on_req, NULL, &s, err,
                     sizeof err) != HM_OK)
    fprintf(stderr, "listen: %s\n", err);
  return s;
}

/* Ends the idle watcher i and closes the server. */
static hm_http_server *to_close;
static void close_server(uv_idle_t *i) {
  uv_idle_stop(i);
  uv_close((uv_handle_t *)i, NULL);
  hm_http_close(to_close, on_closed, NULL);
}

/* The server closes once the client has seen EOF. */
static void closer(uv_idle_t *i) {
  client *c = i->data;
  if (c->eof) close_server(i);
}

static void run_until_eof(uv_loop_t *loop, hm_http_server *s, client *c) {
  uv_idle_t idle;
  uv_idle_init(loop, &idle);
  idle.data = c;
  to_close = s;
  uv_idle_start(&idle, closer);
  uv_run(loop, UV_RUN_DEFAULT);
}

TEST(keepalive_and_pipelining) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  /* Three requests in one write: two keep-alive, the last closes. */
  static const char req[] =
      "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-T: one\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
      "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  uv_loop_init(&loop);
  s = start(&loop, NULL);
  ASSERT(s != NULL);
  client_start(&loop, &c, hm_http_port(s), req, sizeof req - 1);
  run_until_eof(&loop, s, &c);
  ASSERT_EQ(requests, 3);
  ASSERT_EQ(count(c.got, "HTTP/1.1 200 OK\r\n"), 3);
  ASSERT_EQ(count(c.got, "X-Test: yes\r\n"), 3);
  /* In order, each with its own target, header and body. */
  ASSERT(strstr(c.got, "GET /a?x=1 one 0") != NULL);
  ASSERT(strstr(c.got, "POST /b - 5") > strstr(c.got, "GET /a?x=1 one 0"));
  ASSERT(strstr(c.got, "GET /c - 0") > strstr(c.got, "POST /b - 5"));
  ASSERT_EQ(count(c.got, "Connection: close\r\n"), 1);
  ASSERT_EQ(closed_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(header_limit_431) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  hm_http_limits lim;
  char req[600];
  memset(&lim, 0, sizeof lim);
  lim.max_header_bytes = 256;
  snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-Big: %0300d\r\n\r\n", 0);
  uv_loop_init(&loop);
  s = start(&loop, &lim);
  ASSERT(s != NULL);
  client_start(&loop, &c, hm_http_port(s), req, strlen(req));
  run_until_eof(&loop, s, &c);
  ASSERT_EQ(requests, 0);
  ASSERT(strstr(c.got, "HTTP/1.1 431 ") == c.got);
  ASSERT(strstr(c.got, "over the limit of 256 bytes") != NULL);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(body_limit_413) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  hm_http_limits lim;
  /* Refused on the Content-Length alone, and when chunks pass the limit. */
  static const char req1[] =
      "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
  static const char req2[] =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
  const char *reqs[2] = {req1, req2};
  int k;
  memset(&lim, 0, sizeof lim);
  lim.max_body_bytes = 10;
  for (k = 0; k < 2; k++) {
    uv_loop_init(&loop);
    s = start(&loop, &lim);
    ASSERT(s != NULL);
    client_start(&loop, &c, hm_http_port(s), reqs[k], strlen(reqs[k]));
    run_until_eof(&loop, s, &c);
    ASSERT_EQ(requests, 0);
    ASSERT(strstr(c.got, "HTTP/1.1 413 ") == c.got);
    ASSERT(strstr(c.got, "request body over the limit of 10 bytes") != NULL);
    ASSERT_EQ(uv_loop_close(&loop), 0);
  }
}

TEST(garbage_400) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  static const char req[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP AT ALL\r\n\r\n";
  uv_loop_init(&loop);
  s = start(&loop, NULL);
  ASSERT(s != NULL);
  client_start(&loop, &c, hm_http_port(s), req, sizeof req - 1);
  run_until_eof(&loop, s, &c);
  /* The good request first, then the refusal, then the close. */
  ASSERT_EQ(requests, 1);
  ASSERT(strstr(c.got, "HTTP/1.1 200 OK") == c.got);
  ASSERT(strstr(c.got, "HTTP/1.1 400 Bad Request") != NULL);
  ASSERT(strstr(c.got, "bad request: ") != NULL);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Closing the server with a request being served: its abort callback
** runs, and every handle goes. */
static void close_when_held(uv_idle_t *i) {
  if (held != NULL) close_server(i);
}

TEST(close_aborts_pending) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  uv_idle_t idle;
  static const char req[] = "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n";
  uv_loop_init(&loop);
  s = start(&loop, NULL);
  ASSERT(s != NULL);
  defer = 1;
  client_start(&loop, &c, hm_http_port(s), req, sizeof req - 1);
  uv_idle_init(&loop, &idle);
  to_close = s;
  uv_idle_start(&idle, close_when_held);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(requests, 1);
  ASSERT_EQ(aborts, 1);
  ASSERT(held == NULL);
  ASSERT_EQ(closed_calls, 1);
  ASSERT(c.eof);
  ASSERT_EQ(c.glen, 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(bad_listen) {
  uv_loop_t loop;
  hm_http_server *s = NULL;
  char err[256];
  uv_loop_init(&loop);
  ASSERT_EQ(hm_http_listen(&loop, "localhost", 0, NULL, on_req, NULL, &s, err,
                           sizeof err),
            HM_INVAL);
  ASSERT(strstr(err, "invalid host \"localhost\"") != NULL);
  ASSERT_EQ(hm_http_listen(&loop, "127.0.0.1", 70000, NULL, on_req, NULL, &s,
                           err, sizeof err),
            HM_INVAL);
  ASSERT(strstr(err, "invalid port 70000") != NULL);
  ASSERT(s == NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* A response with a header value that would split the response is refused
** and the request stays answerable. */
static int refused;
static void on_req_bad(hm_http_req *r, void *arg) {
  char err[256];
  hm_http_header_t h = {"X-A", "a\r\nInjected: 1", 3, 15};
  requests++;
  if (hm_http_respond(r, 200, &h, 1, "", 0, err, sizeof err) == HM_INVAL &&
      strstr(err, "CR, LF or NUL at byte 2") != NULL)
    refused++;
  if (hm_http_respond(r, 42, NULL, 0, "", 0, err, sizeof err) == HM_INVAL &&
      strstr(err, "invalid status 42") != NULL)
    refused++;
  hm_http_respond(r, 204, NULL, 0, NULL, 0, err, sizeof err);
}

TEST(response_checks) {
  uv_loop_t loop;
  client c;
  hm_http_server *s = NULL;
  char err[256];
  static const char req[] = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
  uv_loop_init(&loop);
  requests = refused = 0;
  ASSERT_EQ(hm_http_listen(&loop, "127.0.0.1", 0, NULL, on_req_bad, NULL, &s,
                           err, sizeof err),
            HM_OK);
  client_start(&loop, &c, hm_http_port(s), req, sizeof req - 1);
  run_until_eof(&loop, s, &c);
  ASSERT_EQ(requests, 1);
  ASSERT_EQ(refused, 2);
  ASSERT(strstr(c.got, "HTTP/1.1 204 No Content") == c.got);
  ASSERT(strstr(c.got, "Injected") == NULL);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Over max_conns: once the one allowed connection is held, the next gets
** 503 naming the limit and is closed; then the server closes. */
static client second;
static uv_loop_t *second_loop;
static int second_started;
static void connect_second(uv_idle_t *i) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  if (!second_started) {
    if (held == NULL) return;
    second_started = 1;
    client_start(second_loop, &second, hm_http_port(to_close), req,
                 sizeof req - 1);
    return;
  }
  if (second.eof) close_server(i);
}

TEST(connection_limit_503) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  hm_http_limits lim;
  uv_idle_t idle;
  static const char req[] = "GET /held HTTP/1.1\r\nHost: h\r\n\r\n";
  memset(&lim, 0, sizeof lim);
  lim.max_conns = 1;
  uv_loop_init(&loop);
  s = start(&loop, &lim);
  ASSERT(s != NULL);
  defer = 1;
  second_started = 0;
  second_loop = &loop;
  client_start(&loop, &c, hm_http_port(s), req, sizeof req - 1);
  uv_idle_init(&loop, &idle);
  to_close = s;
  uv_idle_start(&idle, connect_second);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(requests, 1); /* the second never reached the handler */
  ASSERT(strstr(second.got, "HTTP/1.1 503 ") == second.got);
  ASSERT(strstr(second.got, "too many connections (the limit is 1)") != NULL);
  ASSERT(strstr(second.got, "Connection: close\r\n") != NULL);
  ASSERT_EQ(aborts, 1);
  ASSERT_EQ(closed_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* A refused body the client goes on sending: the 413 is read in full and
** the rest is dropped (linger) until the client closes, not reset. */
static char big_req[300000];
static void close_after_413(client *c) {
  if (strstr(c->got, "\r\n\r\n") && strstr(c->got, "bytes\n")) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->eof = 1;
    uv_close((uv_handle_t *)&c->tcp, NULL);
  }
}

TEST(linger_after_413) {
  uv_loop_t loop;
  client c;
  hm_http_server *s;
  hm_http_limits lim;
  size_t n;
  memset(&lim, 0, sizeof lim);
  lim.max_body_bytes = 10;
  /* Chunked, so the refusal comes mid-body with most of it unsent. */
  n = (size_t)snprintf(big_req, sizeof big_req,
                       "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "\r\n%x\r\n",
                       (unsigned)(sizeof big_req - 200));
  memset(big_req + n, 'a', sizeof big_req - n);
  uv_loop_init(&loop);
  s = start(&loop, &lim);
  ASSERT(s != NULL);
  client_start(&loop, &c, hm_http_port(s), big_req, sizeof big_req);
  c.on_data = close_after_413;
  run_until_eof(&loop, s, &c);
  ASSERT_EQ(requests, 0);
  ASSERT(strstr(c.got, "HTTP/1.1 413 ") == c.got);
  ASSERT(strstr(c.got, "request body over the limit of 10 bytes\n") != NULL);
  ASSERT_EQ(closed_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

int main(void) {
  RUN(keepalive_and_pipelining);
  RUN(header_limit_431);
  RUN(body_limit_413);
  RUN(garbage_400);
  RUN(close_aborts_pending);
  RUN(bad_listen);
  RUN(response_checks);
  RUN(connection_limit_503);
  RUN(linger_after_413);
  TEST_EXIT();
}
