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

/* What a connect's `connected` callback said. */
typedef struct {
  int calls;
  hm_status st;
  char text[512];
  int at_served; /* `served` when it ran (see connect_keeps_the_loop_going) */
} outcome;

static int served;

static void on_connected(hm_conn_t *c, hm_status st, const char *text,
                         void *arg) {
  outcome *k = arg;
  k->calls++;
  k->st = st;
  k->at_served = served;
  snprintf(k->text, sizeof k->text, "%s", text ? text : "");
}

/* Starts a connect and runs the loop until its outcome: the connection,
** or NULL (k says why). */
static hm_conn_t *connect_with(uv_loop_t *loop, hm_conn_opts *o,
                               outcome *k) {
  char err[256];
  hm_conn_t *c = NULL;
  memset(k, 0, sizeof *k);
  if (hm_conn_connect(loop, o, NULL, on_connected, k, &c, err, sizeof err) !=
      HM_OK) {
    fprintf(stderr, "connect: %s\n", err);
    return NULL;
  }
  while (k->calls == 0) uv_run(loop, UV_RUN_ONCE);
  if (k->st != HM_OK) fprintf(stderr, "connect: %s\n", k->text);
  return k->st == HM_OK ? c : NULL;
}

static outcome connected_k[8];
static int nconnected;

static hm_conn_t *connect_to(uv_loop_t *loop) {
  hm_conn_opts o;
  const char *servers[1];
  memset(&o, 0, sizeof o);
  servers[0] = url();
  o.servers = servers;
  o.nservers = 1;
  o.name = "hm-test";
  o.allow_reconnect = -1;
  return connect_with(loop, &o, &connected_k[nconnected++ % 8]);
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

/* On the libnats versions whose natsMsg_free was read (3.4 to 3.14),
** messages are freed on the loop thread, not handed to cnats' collector
** thread; elsewhere the public natsMsg_Destroy serves. */
TEST(messages_freed_on_the_loop_thread_where_known) {
  uv_loop_t loop;
  hm_conn_t *c;
  int v = nats_GetVersionNumber();
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_msg_freed_directly(), v >= 0x030400 && v < 0x030f00);
  hm_msg_destroy(NULL);
  hm_conn_close(c, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
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
  outcome k;
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 1;
  o.allow_reconnect = -1;
  uv_loop_init(&loop);
  ASSERT(connect_with(&loop, &o, &k) == NULL);
  ASSERT_EQ(k.calls, 1);
  ASSERT_EQ(k.st, HM_CONNECT);
  ASSERT(strlen(k.text) > 0);
  ASSERT(strstr(k.text, "attempts") == NULL); /* one pass by default */
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* retry_connect: max_reconnect more passes, then the failure says how
** many were made. */
TEST(connect_retries_then_fails_with_the_count) {
  uv_loop_t loop;
  hm_conn_opts o;
  const char *servers[] = {"nats://127.0.0.1:1", "nats://127.0.0.1:2"};
  outcome k;
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 2;
  o.retry_connect = 1;
  o.max_reconnect = 2;
  o.reconnect_wait_ms = 5;
  uv_loop_init(&loop);
  ASSERT(connect_with(&loop, &o, &k) == NULL);
  ASSERT_EQ(k.st, HM_CONNECT);
  ASSERT(strstr(k.text, "(3 attempts, 5 ms apart)") != NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.calls, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* One dead server and one alive in the list: the live one is used. */
TEST(connect_finds_the_live_server_in_a_list) {
  uv_loop_t loop;
  hm_conn_opts o;
  const char *servers[2];
  outcome k;
  hm_conn_t *c;
  servers[0] = "nats://127.0.0.1:1";
  servers[1] = url();
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 2;
  uv_loop_init(&loop);
  c = connect_with(&loop, &o, &k);
  ASSERT(c != NULL);
  ASSERT(hm_conn_max_payload(c) > 0);
  hm_conn_close(c, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* The loop serves while a connect is under way: sequential round trips on
** a live connection complete while another connection keeps trying an
** address that refuses (retrying for ever, so a connect that held the
** loop would never give it back); a close then ends it with HM_CLOSED,
** from inside hm_conn_close. */
#define SERVED_WANTED 20
static hm_conn_t *live, *dead;
static outcome dead_k;
static int dead_closed;

static void on_dead_closed(hm_conn_t *c, void *arg) { dead_closed++; }

static void next_round_trip(hm_conn_t *c, uint64_t id, hm_status st,
                            natsMsg *m, int done, void *arg) {
  uint64_t nid;
  hm_msg_destroy(m);
  if (st != HM_OK) return;
  served++;
  if (served < SERVED_WANTED) {
    hm_conn_request(live, "hmtest.connect.echo", "x", 1, 5000, 1,
                    next_round_trip, NULL, &nid);
    return;
  }
  hm_conn_close(dead, on_dead_closed, NULL);
  hm_conn_close(live, NULL, NULL);
}

TEST(connect_keeps_the_loop_going) {
  uv_loop_t loop;
  hm_conn_opts o;
  const char *servers[] = {"nats://127.0.0.1:1"};
  char err[256];
  hm_sub_t *s;
  uint64_t id;
  served = dead_closed = 0;
  uv_loop_init(&loop);
  live = connect_to(&loop);
  ASSERT(live != NULL);
  ASSERT_EQ(hm_conn_subscribe(live, "hmtest.connect.echo", NULL, 0, echo_cb,
                              live, &s), HM_OK);
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 1;
  o.retry_connect = 1;
  o.max_reconnect = -1;
  o.reconnect_wait_ms = 1;
  memset(&dead_k, 0, sizeof dead_k);
  ASSERT_EQ(hm_conn_connect(&loop, &o, NULL, on_connected, &dead_k, &dead,
                            err, sizeof err), HM_OK);
  /* Only close, is_closed, stats and error until it is up. */
  ASSERT_EQ(hm_conn_publish(dead, "hmtest.x", NULL, "", 0), HM_BUSY);
  ASSERT_EQ(hm_conn_subscribe(dead, "hmtest.x", NULL, 0, echo_cb, NULL, &s),
            HM_BUSY);
  ASSERT_EQ(hm_conn_is_closed(dead), 0);
  ASSERT_EQ(hm_conn_request(live, "hmtest.connect.echo", "x", 1, 5000, 1,
                            next_round_trip, NULL, &id), HM_OK);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(served, SERVED_WANTED);
  ASSERT_EQ(dead_k.calls, 1);
  ASSERT_EQ(dead_k.st, HM_CLOSED);
  ASSERT_EQ(dead_k.at_served, SERVED_WANTED); /* pending all along */
  ASSERT_EQ(dead_closed, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Server URLs are checked before anything starts, each message naming the
** URL (credentials masked) and the rule. */
TEST(server_urls_are_checked) {
  static const char *const good[] = {
      "nats://127.0.0.1:4222", "127.0.0.1", "tls://nats.example.com:4443",
      "NATS://h:1/", "nats://u:p@h:65535", "nats://tok@h", "[::1]:4222"};
  static const struct {
    const char *url, *want;
  } bad[] = {
      {"", "is empty"},
      {"nats://a:1,nats://b:2", "holds a ','"},
      {"http://h:4222", "has the scheme 'http'"},
      {"nats://h:x", "has the port 'x'"},
      {"nats://h:", "has ':' but no port"},
      {"nats://h:0", "has the port 0"},
      {"nats://h:65536", "has the port 65536"},
      {"nats://:4222", "has no host"},
      {"nats://h:4222/path", "has '/path' after the port"},
      {"nats://h 1:4222", "space or control character at byte 9"},
      {"nats://user:secret@h:x", "***@h:x"},
      {"nats://[::1:4222", "without its ']'"},
  };
  char err[512];
  size_t i;
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    if (hm_conn_check_url(good[i], strlen(good[i]), err, sizeof err) != HM_OK)
      fprintf(stderr, "refused %s: %s\n", good[i], err);
    ASSERT_EQ(hm_conn_check_url(good[i], strlen(good[i]), err, sizeof err),
              HM_OK);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(hm_conn_check_url(bad[i].url, strlen(bad[i].url), err,
                                sizeof err), HM_INVAL);
    if (strstr(err, bad[i].want) == NULL)
      fprintf(stderr, "%s: got \"%s\"\n", bad[i].url, err);
    ASSERT(strstr(err, bad[i].want) != NULL);
    ASSERT(strstr(err, "secret") == NULL);
  }
  {
    uv_loop_t loop;
    hm_conn_opts o;
    const char *servers[] = {"nats://127.0.0.1:4222", "nats://u:pw@h:99999"};
    hm_conn_t *c = NULL;
    memset(&o, 0, sizeof o);
    o.servers = servers;
    o.nservers = 2;
    uv_loop_init(&loop);
    ASSERT_EQ(hm_conn_connect(&loop, &o, NULL, on_connected, NULL, &c, err,
                              sizeof err), HM_INVAL);
    ASSERT(c == NULL);
    ASSERT(strstr(err, "\"nats://***@h:99999\"") != NULL);
    ASSERT(strstr(err, "pw") == NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
  }
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

/* {====================================================================
** Subject checks: refused before cnats, the connection stays up
** ===================================================================== */

TEST(bad_subjects_are_refused_and_the_connection_stays_up) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s, *echo;
  uint64_t id;
  counts k;
  static char big[10 * 1024 + 1];
  static const char *const bad_pub[] = {
      "a\r\nPUB x 1\r\n", "a b", "a\tb", "", "a..b", ".a", "a.", "a.*", ">",
      "a\nUNSUB 1"};
  size_t i;
  memset(&k, 0, sizeof k);
  memset(big, 'x', sizeof big - 1);
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  for (i = 0; i < sizeof bad_pub / sizeof bad_pub[0]; i++) {
    ASSERT_EQ(hm_conn_publish(c, bad_pub[i], NULL, "x", 1), HM_SUBJECT);
    ASSERT(strstr(hm_conn_error(c), "invalid subject \"") == hm_conn_error(c));
    ASSERT_EQ(hm_conn_request(c, bad_pub[i], "x", 1, 1000, 1, reply_cb, &k,
                              &id), HM_SUBJECT);
  }
  ASSERT_EQ(hm_conn_publish(c, "a\r\nPUB x 1\r\n", NULL, "x", 1), HM_SUBJECT);
  ASSERT_STREQ(hm_conn_error(c),
               "invalid subject \"a\\r\\nPUB x 1\\r\\n\": contains a carriage "
               "return (CR) at byte 2 (NATS subjects have no whitespace)");
  ASSERT_EQ(hm_conn_publish(c, big, NULL, "x", 1), HM_SUBJECT);
  ASSERT(strstr(hm_conn_error(c), "(10240 bytes): is 10240 bytes, over the "
                                  "limit of 4032") != NULL);
  ASSERT(strlen(hm_conn_error(c)) < 400);
  ASSERT_EQ(hm_conn_publish(c, "ok.subject", "bad reply", "x", 1), HM_SUBJECT);
  ASSERT(strstr(hm_conn_error(c), "invalid reply subject") == hm_conn_error(c));
  ASSERT_EQ(hm_conn_subscribe(c, "a b", NULL, 0, count_cb, NULL, &s),
            HM_SUBJECT);
  ASSERT(s == NULL);
  ASSERT_EQ(hm_conn_subscribe(c, "a.>.b", NULL, 0, count_cb, NULL, &s),
            HM_SUBJECT);
  ASSERT_EQ(hm_conn_subscribe(c, "a.b", "q 1", 0, count_cb, NULL, &s),
            HM_SUBJECT);
  ASSERT(strstr(hm_conn_error(c), "invalid queue group") == hm_conn_error(c));
  /* Each fits alone; the SUB line with both would not. */
  big[2100] = '\0';
  ASSERT_EQ(hm_conn_subscribe(c, big, big, 0, count_cb, NULL, &s), HM_SUBJECT);
  ASSERT(strstr(hm_conn_error(c), "with its queue group (2100 bytes)") != NULL);
  big[2100] = 'x';
  ASSERT_EQ(k.done_calls, 0);
  /* The connection is fine: a round trip through an echo works. */
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.subj.echo", "q", 0, echo_cb, c,
                              &echo), HM_OK);
  ASSERT_EQ(hm_conn_request(c, "hmtest.subj.echo", "fine", 4, 5000, 1,
                            reply_cb, &k, &id), HM_OK);
  k.close_after = c;
  k.close_at = 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.ok, 1);
  ASSERT_STREQ(k.last, "fine");
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* }==================================================================== */

/* {====================================================================
** Drain: everything the server sent before the UNSUB, then done
** ===================================================================== */

typedef struct {
  hm_conn_t *c, *pub; /* subscriber, publisher */
  hm_sub_t *s;
  int n;              /* messages published before the drain */
  int got, after;     /* delivered; delivered after done */
  int done_calls;
  hm_status done_st;
  int got_at_done;
  int got_at_drain;   /* delivered when the drain started */
  int hold;           /* messages holding a credit (credits test) */
  int credits;
  uv_timer_t tick;
  int closes;
} drainer;

static drainer D;

static void drain_msg(hm_sub_t *s, natsMsg *m, void *arg) {
  D.got++;
  if (D.done_calls) D.after++;
  if (D.credits) D.hold++;
  natsMsg_Destroy(m);
}

static void drain_closed(hm_conn_t *c, void *arg) { D.closes++; }

/* After done: what is published now must not arrive; a round trip of
** the subscriber after the publisher's proves it. */
static void after_probe(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                        int done, void *arg) {
  if (m) natsMsg_Destroy(m);
  hm_sub_unsubscribe(D.s);
  if (D.pub != D.c) hm_conn_close(D.pub, drain_closed, NULL);
  hm_conn_close(D.c, drain_closed, NULL);
  if (D.credits) uv_close((uv_handle_t *)&D.tick, NULL);
}

static void after_pub_flushed(hm_conn_t *c, uint64_t id, hm_status st,
                              natsMsg *m, int done, void *arg) {
  uint64_t pid;
  if (m) natsMsg_Destroy(m);
  hm_conn_flush(D.c, 5000, after_probe, NULL, &pid);
}

static void drained(hm_sub_t *s, hm_status st, void *arg) {
  uint64_t id;
  int i;
  D.done_calls++;
  D.done_st = st;
  D.got_at_done = D.got;
  for (i = 0; i < 20; i++)
    hm_conn_publish(D.pub, "hmtest.drain", NULL, "late", 4);
  hm_conn_flush(D.pub, 5000, after_pub_flushed, NULL, &id);
}

/* The publisher's messages reached the server (and were routed to the
** subscriber, maybe still on the wire): drain now. */
static void pub_flushed(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                        int done, void *arg) {
  if (m) natsMsg_Destroy(m);
  D.got_at_drain = D.got;
  hm_sub_drain(D.s, 5000, drained, NULL);
}

/* The subscription is known to the server: flood from the publisher. */
static void sub_ready(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                      int done, void *arg) {
  uint64_t pid;
  int i;
  if (m) natsMsg_Destroy(m);
  for (i = 0; i < D.n; i++)
    hm_conn_publish(D.pub, "hmtest.drain", NULL, "m", 1);
  hm_conn_flush(D.pub, 5000, pub_flushed, NULL, &pid);
}

static hm_conn_t *connect_opts(uv_loop_t *loop, hm_conn_opts *o) {
  const char *servers[1];
  servers[0] = url();
  o->servers = servers;
  o->nservers = 1;
  o->allow_reconnect = -1;
  return connect_with(loop, o, &connected_k[nconnected++ % 8]);
}

TEST(drain_delivers_what_the_server_sent_before_done) {
  uv_loop_t loop;
  uint64_t id;
  memset(&D, 0, sizeof D);
  D.n = 2000;
  uv_loop_init(&loop);
  D.c = connect_to(&loop);
  D.pub = connect_to(&loop);
  ASSERT(D.c != NULL && D.pub != NULL);
  ASSERT_EQ(hm_conn_subscribe(D.c, "hmtest.drain", NULL, 0, drain_msg, NULL,
                              &D.s), HM_OK);
  ASSERT_EQ(hm_conn_flush(D.c, 5000, sub_ready, NULL, &id), HM_OK);
  uv_run(&loop, UV_RUN_DEFAULT);
  fprintf(stderr, "drain started with %d of %d delivered\n", D.got_at_drain,
          D.n);
  ASSERT_EQ(D.done_calls, 1);
  ASSERT_EQ(D.done_st, HM_OK);
  ASSERT_EQ(D.got_at_done, D.n);
  ASSERT_EQ(D.got, D.n);
  ASSERT_EQ(D.after, 0);
  ASSERT_EQ(D.closes, 2);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* One credit: every message waits in cnats until the one before is done;
** the drain must still deliver all of them before done. */
static void credit_tick(uv_timer_t *t) {
  if (D.hold > 0) {
    D.hold--;
    hm_conn_done(D.c);
  }
}

TEST(drain_waits_for_messages_held_back_by_credits) {
  uv_loop_t loop;
  int i;
  memset(&D, 0, sizeof D);
  D.n = 50;
  D.credits = 1;
  uv_loop_init(&loop);
  D.c = connect_to(&loop);
  ASSERT(D.c != NULL);
  D.pub = D.c;
  hm_conn_set_credits(D.c, 1);
  uv_timer_init(&loop, &D.tick);
  uv_timer_start(&D.tick, credit_tick, 2, 2);
  ASSERT_EQ(hm_conn_subscribe(D.c, "hmtest.drain", NULL, 0, drain_msg, NULL,
                              &D.s), HM_OK);
  /* Same connection: the PUBs go out before the UNSUB. */
  for (i = 0; i < D.n; i++)
    ASSERT_EQ(hm_conn_publish(D.c, "hmtest.drain", NULL, "m", 1), HM_OK);
  ASSERT_EQ(hm_sub_drain(D.s, 5000, drained, NULL), HM_OK);
  ASSERT(hm_sub_draining(D.s));
  ASSERT_EQ(hm_sub_drain(D.s, 5000, drained, NULL), HM_BUSY);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(D.done_calls, 1);
  ASSERT_EQ(D.done_st, HM_OK);
  ASSERT_EQ(D.got_at_done, D.n);
  ASSERT_EQ(D.after, 0);
  ASSERT_EQ(D.closes, 1);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

static int abandoned_calls;
static hm_status abandoned_st;
static void abandoned(hm_sub_t *s, hm_status st, void *arg) {
  abandoned_calls++;
  abandoned_st = st;
  hm_sub_unsubscribe(s); /* again, from inside: harmless */
}

TEST(drain_done_runs_once_when_unsubscribed_or_closed_first) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s1, *s2, *mux_probe;
  uv_loop_init(&loop);
  c = connect_to(&loop);
  ASSERT(c != NULL);
  abandoned_calls = 0;
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.drain.a", NULL, 0, count_cb, NULL,
                              &s1), HM_OK);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.drain.b", NULL, 0, count_cb, NULL,
                              &s2), HM_OK);
  ASSERT_EQ(hm_sub_drain(s1, 5000, abandoned, NULL), HM_OK);
  hm_sub_unsubscribe(s1);
  ASSERT_EQ(abandoned_calls, 1);
  ASSERT_EQ(abandoned_st, HM_CLOSED);
  ASSERT_EQ(hm_sub_drain(s2, 5000, abandoned, NULL), HM_OK);
  (void)mux_probe;
  hm_conn_close(c, on_closed, NULL);
  ASSERT_EQ(abandoned_calls, 2);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(abandoned_calls, 2);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* }==================================================================== */

/* {====================================================================
** max_pending_bytes: a byte bound on what waits behind a slow handler
** ===================================================================== */

static int held;
static void hold_cb(hm_sub_t *s, natsMsg *m, void *arg) {
  held++; /* keeps its credit: everything else waits in cnats */
  natsMsg_Destroy(m);
}

static hm_conn_t *bytes_c, *bytes_pub;
static counts bytes_k;
static hm_conn_stats bytes_st;

static void bytes_probe(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                        int done, void *arg) {
  reply_cb(c, id, st, m, done, arg);
  hm_conn_get_stats(bytes_c, &bytes_st);
  bytes_st.pending = (uint64_t)hm_conn_is_closed(bytes_c);
  hm_conn_close(bytes_c, on_closed, NULL);
  hm_conn_close(bytes_pub, on_closed, NULL);
}

static void bytes_flushed(hm_conn_t *c, uint64_t id, hm_status st,
                          natsMsg *m, int done, void *arg) {
  uint64_t rid;
  if (m) natsMsg_Destroy(m);
  /* The flood is in the subscriber's cnats queue or dropped; a request
  ** from the subscriber (replies need no credit) proves it still works. */
  hm_conn_request(bytes_c, "hmtest.bytes.echo", "up", 2, 5000, 1, bytes_probe,
                  &bytes_k, &rid);
}

/* Both subscriptions are known to the server (a round trip of each
** connection): flood the slow one. */
static void bytes_ready(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                        int done, void *arg) {
  static char payload[16 * 1024];
  uint64_t pid;
  int i;
  if (m) natsMsg_Destroy(m);
  if (arg == NULL) {
    hm_conn_flush(bytes_pub, 5000, bytes_ready, bytes_pub, &pid);
    return;
  }
  for (i = 0; i < 64; i++)
    hm_conn_publish(bytes_pub, "hmtest.bytes", NULL, payload, sizeof payload);
  hm_conn_flush(bytes_pub, 5000, bytes_flushed, NULL, &pid);
}

TEST(max_pending_bytes_drops_and_the_connection_stays_up) {
  uv_loop_t loop;
  hm_conn_opts o;
  hm_sub_t *s, *echo;
  uint64_t id;
  memset(&bytes_k, 0, sizeof bytes_k);
  memset(&bytes_st, 0, sizeof bytes_st);
  held = 0;
  uv_loop_init(&loop);
  memset(&o, 0, sizeof o);
  o.max_pending_bytes = 64 * 1024;
  bytes_c = connect_opts(&loop, &o);
  bytes_pub = connect_to(&loop);
  ASSERT(bytes_c != NULL && bytes_pub != NULL);
  hm_conn_set_credits(bytes_c, 1);
  ASSERT_EQ(hm_conn_subscribe(bytes_c, "hmtest.bytes", NULL, 0, hold_cb, NULL,
                              &s), HM_OK);
  ASSERT_EQ(hm_conn_subscribe(bytes_pub, "hmtest.bytes.echo", NULL, 0, echo_cb,
                              bytes_pub, &echo), HM_OK);
  ASSERT_EQ(hm_conn_flush(bytes_c, 5000, bytes_ready, NULL, &id), HM_OK);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(bytes_k.ok, 1);
  ASSERT_EQ(bytes_st.pending, 0); /* not closed */
  ASSERT_EQ(held, 1);
  /* 64 x 16 KiB against a 64 KiB bound: most were dropped. */
  ASSERT(bytes_st.slow_dropped >= 50);
  ASSERT(bytes_st.slow_dropped <= 63);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(max_pending_bytes_out_of_range_is_refused) {
  uv_loop_t loop;
  hm_conn_opts o;
  hm_conn_t *c = NULL;
  char err[256] = "";
  const char *servers[1];
  uv_loop_init(&loop);
  memset(&o, 0, sizeof o);
  servers[0] = url();
  o.servers = servers;
  o.nservers = 1;
  o.max_pending_bytes = (int64_t)INT32_MAX + 1;
  ASSERT_EQ(hm_conn_connect(&loop, &o, NULL, on_connected, NULL, &c, err,
                            sizeof err), HM_INVAL);
  ASSERT(c == NULL);
  ASSERT(strstr(err, "max_pending_bytes") != NULL);
  o.max_pending_bytes = -2;
  ASSERT_EQ(hm_conn_connect(&loop, &o, NULL, on_connected, NULL, &c, err,
                            sizeof err), HM_INVAL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* }==================================================================== */

int main(void) {
  RUN(round_trip_and_clean_close);
  RUN(messages_freed_on_the_loop_thread_where_known);
  RUN(timeout_completes_once_and_late_reply_is_counted);
  RUN(many_concurrent_requests);
  RUN(multiple_replies_and_close_fails_pending);
  RUN(auto_unsubscribe_and_unsubscribe);
  RUN(connect_failure_is_clean);
  RUN(connect_retries_then_fails_with_the_count);
  RUN(connect_finds_the_live_server_in_a_list);
  RUN(connect_keeps_the_loop_going);
  RUN(server_urls_are_checked);
  RUN(oversize_payload_is_refused);
  RUN(cancel_hands_back_the_argument_and_never_calls_back);
  RUN(bad_subjects_are_refused_and_the_connection_stays_up);
  RUN(drain_delivers_what_the_server_sent_before_done);
  RUN(drain_waits_for_messages_held_back_by_credits);
  RUN(drain_done_runs_once_when_unsubscribed_or_closed_first);
  RUN(max_pending_bytes_drops_and_the_connection_stays_up);
  RUN(max_pending_bytes_out_of_range_is_refused);
  hm_conn_library_close();
  TEST_EXIT();
}
