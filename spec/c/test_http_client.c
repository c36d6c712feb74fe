/*
** core/hm_http_client against core/hm_http on loopback, one loop: the
** outcomes a collector can give (a status, no answer, no listener), bad
** URLs, one POST at a time, and a close with a POST in flight. Every test
** runs its loop to the end and checks that it closes (no handle left).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hm_http.h"
#include "hm_http_client.h"
#include "hm_test.h"

/* {======== a collector ======== */
static int status_to_send = 200, requests, defer;
static char last_target[128], last_body[256], last_ctype[64];
static hm_http_req *held;

static void on_abort(void *arg) {
  (void)arg;
  held = NULL;
}

static void on_req(hm_http_req *r, void *arg) {
  const char *name, *value, *body;
  size_t nlen, vlen, blen;
  char err[128];
  (void)arg;
  requests++;
  snprintf(last_target, sizeof last_target, "%s %s", hm_http_method(r),
           hm_http_target(r, NULL));
  body = hm_http_body(r, &blen);
  snprintf(last_body, sizeof last_body, "%.*s", (int)blen, body);
  for (size_t i = 0; i < hm_http_nheaders(r); i++) {
    hm_http_header(r, i, &name, &nlen, &value, &vlen);
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
      snprintf(last_ctype, sizeof last_ctype, "%.*s", (int)vlen, value);
  }
  if (defer) {
    held = r;
    hm_http_on_abort(r, on_abort, NULL);
    return;
  }
  hm_http_respond(r, status_to_send, NULL, 0, "{}", 2, err, sizeof err);
}

static void on_closed(void *arg) { (void)arg; }

static hm_http_server *collector(uv_loop_t *loop, int *port) {
  hm_http_server *s = NULL;
  char err[128];
  hm_http_limits lim;
  memset(&lim, 0, sizeof lim);
  if (hm_http_listen(loop, "127.0.0.1", 0, &lim, on_req, NULL, &s, err,
                     sizeof err) != HM_OK)
    return NULL;
  *port = hm_http_port(s);
  return s;
}
/* }======== */

/* {======== outcomes ======== */
typedef struct outcome {
  int calls;
  hm_status st;
  int status;
  char err[200];
  hm_http_client *cl;
  hm_http_server *srv; /* closed after the last expected outcome */
  int again;           /* POSTs still to start from the callback */
  hm_status busy;      /* what a POST while one is in flight said */
} outcome;

static void on_post(hm_status st, int status, const char *err, void *arg) {
  outcome *o = arg;
  o->calls++;
  o->st = st;
  o->status = status;
  snprintf(o->err, sizeof o->err, "%s", err ? err : "");
  if (o->again > 0) {
    o->again--;
    if (hm_http_client_post(o->cl, "application/json", "{\"n\":2}", 7,
                            on_post, o) == HM_OK)
      return;
  }
  hm_http_client_close(o->cl);
  if (o->srv) hm_http_close(o->srv, on_closed, NULL);
}

static int finish(uv_loop_t *loop) {
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}
/* }======== */

TEST(posts_and_reads_the_status) {
  uv_loop_t loop;
  outcome o = {0};
  char url[64], err[200];
  int port;
  uv_loop_init(&loop);
  status_to_send = 200;
  requests = 0;
  o.srv = collector(&loop, &port);
  ASSERT(o.srv != NULL);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  ASSERT_EQ(hm_http_client_new(&loop, url, 5000, &o.cl, err, sizeof err), HM_OK);
  o.again = 1; /* a second POST from the first one's callback */
  ASSERT_EQ(hm_http_client_post(o.cl, "application/json", "{\"n\":1}", 7,
                                on_post, &o), HM_OK);
  o.busy = hm_http_client_post(o.cl, "application/json", "{}", 2, on_post, &o);
  ASSERT_EQ(finish(&loop), 0);
  ASSERT_EQ(o.busy, HM_BUSY);
  ASSERT_EQ(o.calls, 2);
  ASSERT_EQ(o.st, HM_OK);
  ASSERT_EQ(o.status, 200);
  ASSERT_EQ(requests, 2);
  ASSERT_STREQ(last_target, "POST /v1/traces");
  ASSERT_STREQ(last_body, "{\"n\":2}");
  ASSERT_STREQ(last_ctype, "application/json");
}

TEST(an_error_status_is_an_outcome) {
  uv_loop_t loop;
  outcome o = {0};
  char url[64], err[200];
  int port;
  uv_loop_init(&loop);
  status_to_send = 503;
  o.srv = collector(&loop, &port);
  ASSERT(o.srv != NULL);
  snprintf(url, sizeof url, "http://localhost:%d/api/v2/spans", port);
  ASSERT_EQ(hm_http_client_new(&loop, url, 5000, &o.cl, err, sizeof err), HM_OK);
  ASSERT_EQ(hm_http_client_post(o.cl, "application/json", "[]", 2, on_post, &o), HM_OK);
  ASSERT_EQ(finish(&loop), 0);
  status_to_send = 200;
  ASSERT_EQ(o.calls, 1);
  ASSERT_EQ(o.st, HM_OK);
  ASSERT_EQ(o.status, 503);
}

TEST(nobody_listening_is_a_connect_failure) {
  uv_loop_t loop;
  outcome o = {0};
  char url[64], err[200];
  int port;
  uv_loop_init(&loop);
  /* A port that was just free: a server's, closed. */
  hm_http_server *s = collector(&loop, &port);
  ASSERT(s != NULL);
  hm_http_close(s, on_closed, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  ASSERT_EQ(hm_http_client_new(&loop, url, 5000, &o.cl, err, sizeof err), HM_OK);
  ASSERT_EQ(hm_http_client_post(o.cl, "application/json", "{}", 2, on_post, &o), HM_OK);
  ASSERT_EQ(finish(&loop), 0);
  ASSERT_EQ(o.calls, 1);
  ASSERT_EQ(o.st, HM_CONNECT);
  ASSERT(strstr(o.err, "connect") != NULL);
}

TEST(no_answer_times_out) {
  uv_loop_t loop;
  outcome o = {0};
  char url[64], err[200];
  int port;
  uv_loop_init(&loop);
  defer = 1;
  o.srv = collector(&loop, &port);
  ASSERT(o.srv != NULL);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  ASSERT_EQ(hm_http_client_new(&loop, url, 50, &o.cl, err, sizeof err), HM_OK);
  ASSERT_EQ(hm_http_client_post(o.cl, "application/json", "{}", 2, on_post, &o), HM_OK);
  ASSERT_EQ(finish(&loop), 0);
  defer = 0;
  ASSERT_EQ(o.calls, 1);
  ASSERT_EQ(o.st, HM_TIMEOUT);
  ASSERT_STREQ(o.err, "no whole response within 50 ms");
}

static void close_now(uv_idle_t *i) {
  outcome *o = i->data;
  if (!held) return; /* until the collector has the request */
  uv_idle_stop(i);
  uv_close((uv_handle_t *)i, NULL);
  hm_http_client_close(o->cl);
  hm_http_close(o->srv, on_closed, NULL);
}

static void on_post_closed(hm_status st, int status, const char *err, void *arg) {
  outcome *o = arg;
  (void)err;
  o->calls++;
  o->st = st;
  o->status = status;
}

TEST(close_ends_the_post_in_flight) {
  uv_loop_t loop;
  uv_idle_t idle;
  outcome o = {0};
  char url[64], err[200];
  int port;
  uv_loop_init(&loop);
  defer = 1;
  held = NULL;
  o.srv = collector(&loop, &port);
  ASSERT(o.srv != NULL);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  ASSERT_EQ(hm_http_client_new(&loop, url, 5000, &o.cl, err, sizeof err), HM_OK);
  ASSERT_EQ(hm_http_client_post(o.cl, "application/json", "{}", 2, on_post_closed, &o), HM_OK);
  uv_idle_init(&loop, &idle);
  idle.data = &o;
  uv_idle_start(&idle, close_now);
  ASSERT_EQ(finish(&loop), 0);
  defer = 0;
  ASSERT_EQ(o.calls, 1);
  ASSERT_EQ(o.st, HM_CLOSED);
}

TEST(bad_urls_are_refused_with_the_reason) {
  uv_loop_t loop;
  hm_http_client *cl = NULL;
  char err[300];
  uv_loop_init(&loop);
  ASSERT_EQ(hm_http_client_new(&loop, "https://127.0.0.1:4318/v1/traces", 0, &cl, err, sizeof err), HM_INVAL);
  ASSERT(strstr(err, "no https") != NULL);
  ASSERT(strstr(err, "https://127.0.0.1:4318/v1/traces") != NULL);
  ASSERT_EQ(hm_http_client_new(&loop, "http://collector:4318/", 0, &cl, err, sizeof err), HM_INVAL);
  ASSERT(strstr(err, "numeric IP address or localhost") != NULL);
  ASSERT_EQ(hm_http_client_new(&loop, "http://127.0.0.1:0/", 0, &cl, err, sizeof err), HM_INVAL);
  ASSERT(strstr(err, "port must be from 1 to 65535") != NULL);
  ASSERT_EQ(hm_http_client_new(&loop, "http://127.0.0.1:4318/a b", 0, &cl, err, sizeof err), HM_INVAL);
  ASSERT(strstr(err, "space or a line break") != NULL);
  ASSERT_EQ(hm_http_client_new(&loop, "http://[::1:4318/", 0, &cl, err, sizeof err), HM_INVAL);
  ASSERT(strstr(err, "unclosed '['") != NULL);
  ASSERT(cl == NULL);
  ASSERT_EQ(hm_http_client_new(&loop, "http://[::1]:4318", 0, &cl, err, sizeof err), HM_OK);
  hm_http_client_close(cl);
  ASSERT_EQ(finish(&loop), 0);
}

int main(void) {
  RUN(posts_and_reads_the_status);
  RUN(an_error_status_is_an_outcome);
  RUN(nobody_listening_is_a_connect_failure);
  RUN(no_answer_times_out);
  RUN(close_ends_the_post_in_flight);
  RUN(bad_urls_are_refused_with_the_reason);
  return hm_test_failures ? 1 : 0;
}
