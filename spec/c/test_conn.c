/*
** Transport and request mux against a real nats-server (HEMERA_NATS_URL,
** started by the test run). Each test runs its own loop to completion and
** asserts that the loop closes cleanly, so nothing is left open.
*/
#include <stdlib.h>
#include <string.h>

#include "hm_conn.h"
#include "hm_test.h"

static const char *url(void) {
  const char *u = getenv("HEMERA_NATS_URL");
  return u && *u ? u : "nats://127.0.0.1:4222";
}

static hm_conn_t *connect_to(uv_loop_t *loop) {
  hm_conn_opts o;
  const char *servers[1];
  char err[256];
  hm_conn_t *c = NULL;
  memset(&o, 0, sizeof o);
  servers[0] = url();
  o.servers = servers;
  o.nservers = 1;
  o.name = "hm-test";
  o.allow_reconnect = -1;
  if (hm_conn_connect(loop, &o, NULL, NULL, &c, err, sizeof err) != HM_OK)
    fprintf(stderr, "connect: %s\n", err);
  return c;
}

static int closed_calls;
static void on_closed(hm_conn_t *c, void *arg) { closed_calls++; }

/* Echo server: replies with the request's own bytes. */
static void echo_cb(hm_sub_t *s, natsMsg *m, void *arg) {
  hm_conn_t *c = arg;
  const char *reply = natsMsg_GetReply(m);
  if (reply)
    hm_conn_publish(c, reply, NULL, natsMsg_GetData(m),
                    (size_t)natsMsg_GetDataLength(m));
  natsMsg_Destroy(m);
}

typedef struct {
  int ok, timeouts, closed, other, done_calls;
  char last[64];
  hm_conn_t *close_after;
  int close_at;
} counts;

static void reply_cb(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                     int done, void *arg) {
  counts *k = arg;
  if (st == HM_OK) {
    k->ok++;
    snprintf(k->last, sizeof k->last, "%.*s", natsMsg_GetDataLength(m),
             natsMsg_GetData(m));
    natsMsg_Destroy(m);
  } else if (st == HM_TIMEOUT) {
    k->timeouts++;
  } else if (st == HM_CLOSED) {
    k->closed++;
  } else {
    k->other++;
  }
  if (done) k->done_calls++;
  if (k->close_after && k->done_calls == k->close_at)
    hm_conn_close(k->close_after, on_closed, NULL);
}

TEST(round_trip_and_clean_close) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s;
  uint64_t id;
  counts k;
  memset(&k, 0, sizeof k);
  closed_calls = 0;
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.echo", "q", 0, echo_cb, c, &s), HM_OK);
  ASSERT_EQ(hm_conn_request(c, "hmtest.echo", "hello", 5, 2000, 1, reply_cb,
                            &k, &id), HM_OK);
  k.close_after = c;
  k.close_at = 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.ok, 1);
  ASSERT_EQ(k.done_calls, 1);
  ASSERT_STREQ(k.last, "hello");
  ASSERT_EQ(closed_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

static int check_late_reply(void);

TEST(timeout_completes_once_and_late_reply_is_counted) {
  uv_loop_t loop;
  hm_conn_t *c;
  uint64_t id;
  counts k;
  memset(&k, 0, sizeof k);
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  /* Nobody listens: the deadline fires. */
  ASSERT_EQ(hm_conn_request(c, "hmtest.nobody", "x", 1, 50, 1, reply_cb, &k,
                            &id), HM_OK);
  k.close_after = c;
  k.close_at = 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.timeouts, 1);
  ASSERT_EQ(k.ok, 0);
  ASSERT_EQ(k.done_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);

  ASSERT(check_late_reply());
}

/* A slow server answers after the caller gave up: the reply must be
** dropped and counted, and the caller sees only its timeout. */
static char slow_reply[128];
static uv_timer_t slow_timer;
static hm_conn_t *slow_conn;
static counts slow_k, probe_k;
static uint64_t late_seen;

static void probe_cb(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                     int done, void *arg) {
  hm_conn_stats s;
  if (m) natsMsg_Destroy(m);
  /* The late reply was published before the probe, so it was handled. */
  hm_conn_get_stats(c, &s);
  late_seen = s.late_replies;
  probe_k.ok += st == HM_OK;
  hm_conn_close(c, on_closed, NULL);
}

static void slow_fire(uv_timer_t *t) {
  uint64_t id;
  hm_conn_publish(slow_conn, slow_reply, NULL, "late", 4);
  hm_conn_request(slow_conn, "hmtest.echo4", "p", 1, 5000, 1, probe_cb, NULL,
                  &id);
  uv_close((uv_handle_t *)t, NULL);
}

static void slow_cb(hm_sub_t *s, natsMsg *m, void *arg) {
  snprintf(slow_reply, sizeof slow_reply, "%s", natsMsg_GetReply(m));
  natsMsg_Destroy(m);
  uv_timer_start(&slow_timer, slow_fire, 100, 0);
}

static int check_late_reply(void) {
  uv_loop_t loop;
  hm_sub_t *s1, *s2;
  uint64_t id;
  memset(&slow_k, 0, sizeof slow_k);
  memset(&probe_k, 0, sizeof probe_k);
  late_seen = 0;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &slow_timer);
  slow_conn = connect_to(&loop);
  if (!slow_conn) return 0;
  hm_conn_subscribe(slow_conn, "hmtest.slow", NULL, 0, slow_cb, NULL, &s1);
  hm_conn_subscribe(slow_conn, "hmtest.echo4", NULL, 0, echo_cb, slow_conn,
                    &s2);
  hm_conn_request(slow_conn, "hmtest.slow", "x", 1, 20, 1, reply_cb, &slow_k,
                  &id);
  uv_run(&loop, UV_RUN_DEFAULT);
  return slow_k.timeouts == 1 && slow_k.ok == 0 && slow_k.done_calls == 1 &&
         probe_k.ok == 1 && late_seen == 1 && uv_loop_close(&loop) == 0;
}

TEST(many_concurrent_requests) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s;
  counts k;
  int i;
  memset(&k, 0, sizeof k);
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.many", NULL, 0, echo_cb, c, &s),
            HM_OK);
  for (i = 0; i < 1000; i++) {
    uint64_t id;
    ASSERT_EQ(hm_conn_request(c, "hmtest.many", "m", 1, 5000, 1, reply_cb, &k,
                              &id), HM_OK);
  }
  k.close_after = c;
  k.close_at = 1000;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.ok, 1000);
  ASSERT_EQ(k.timeouts, 0);
  ASSERT_EQ(k.done_calls, 1000);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(multiple_replies_and_close_fails_pending) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s1, *s2, *s3;
  uint64_t id;
  counts k, k2;
  memset(&k, 0, sizeof k);
  memset(&k2, 0, sizeof k2);
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  /* Three plain subscribers: fan-out gives three replies. */
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.fan", NULL, 0, echo_cb, c, &s1), HM_OK);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.fan", NULL, 0, echo_cb, c, &s2), HM_OK);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.fan", NULL, 0, echo_cb, c, &s3), HM_OK);
  ASSERT_EQ(hm_conn_request(c, "hmtest.fan", "f", 1, 5000, 3, reply_cb, &k,
                            &id), HM_OK);
  /* This one never completes on its own: close must fail it. */
  ASSERT_EQ(hm_conn_request(c, "hmtest.nobody", "x", 1, 0, 1, reply_cb, &k2,
                            &id), HM_OK);
  k.close_after = c;
  k.close_at = 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.ok, 3);
  ASSERT_EQ(k.done_calls, 1);
  ASSERT_EQ(k2.closed, 1);
  ASSERT_EQ(k2.done_calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

static int auto_msgs;
static void count_cb(hm_sub_t *s, natsMsg *m, void *arg) {
  auto_msgs++;
  natsMsg_Destroy(m);
}

TEST(auto_unsubscribe_and_unsubscribe) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s, *echo;
  uint64_t id;
  counts k;
  int i;
  memset(&k, 0, sizeof k);
  auto_msgs = 0;
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.auto", NULL, 2, count_cb, NULL, &s),
            HM_OK);
  for (i = 0; i < 5; i++)
    ASSERT_EQ(hm_conn_publish(c, "hmtest.auto", NULL, "a", 1), HM_OK);
  /* An echo round trip after the publishes proves they were all handled. */
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.echo3", NULL, 0, echo_cb, c, &echo),
            HM_OK);
  ASSERT_EQ(hm_conn_request(c, "hmtest.echo3", "e", 1, 5000, 1, reply_cb, &k,
                            &id), HM_OK);
  k.close_after = c;
  k.close_at = 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(auto_msgs, 2);
  ASSERT_EQ(k.ok, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(connect_failure_is_clean) {
  uv_loop_t loop;
  hm_conn_opts o;
  const char *servers[] = {"nats://127.0.0.1:1"};
  char err[256] = "";
  hm_conn_t *c = NULL;
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 1;
  o.allow_reconnect = -1;
  uv_loop_init(&loop);
  ASSERT_EQ(hm_conn_connect(&loop, &o, NULL, NULL, &c, err, sizeof err),
            HM_CONNECT);
  ASSERT(c == NULL);
  ASSERT(strlen(err) > 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(oversize_payload_is_refused) {
  uv_loop_t loop;
  hm_conn_t *c;
  size_t n;
  char *big;
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  n = (size_t)hm_conn_max_payload(c) + 1;
  big = calloc(1, n);
  ASSERT_EQ(hm_conn_publish(c, "hmtest.big", NULL, big, n), HM_LIMIT);
  ASSERT(strstr(hm_conn_error(c), "max_payload") != NULL);
  free(big);
  hm_conn_close(c, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(cancel_hands_back_the_argument_and_never_calls_back) {
  uv_loop_t loop;
  hm_conn_t *c;
  uint64_t id;
  counts k;
  void *arg = NULL;
  hm_conn_stats st;
  memset(&k, 0, sizeof k);
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_conn_request(c, "hmtest.nobody", "x", 1, 50, 1, reply_cb, &k,
                            &id), HM_OK);
  ASSERT_EQ(hm_conn_cancel(c, id, &arg), 1);
  ASSERT(arg == &k);
  ASSERT_EQ(hm_conn_cancel(c, id, &arg), 0);
  ASSERT(arg == NULL);
  hm_conn_get_stats(c, &st);
  ASSERT_EQ(st.pending, 0);
  hm_conn_close(c, on_closed, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.done_calls, 0);
  ASSERT_EQ(k.timeouts, 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

int main(void) {
  RUN(round_trip_and_clean_close);
  RUN(timeout_completes_once_and_late_reply_is_counted);
  RUN(many_concurrent_requests);
  RUN(multiple_replies_and_close_fails_pending);
  RUN(auto_unsubscribe_and_unsubscribe);
  RUN(connect_failure_is_clean);
  RUN(oversize_payload_is_refused);
  RUN(cancel_hands_back_the_argument_and_never_calls_back);
  hm_conn_library_close();
  TEST_EXIT();
}
