/*
** hm_conn_abandon against a real nats-server (HEMERA_NATS_URL): what is
** pending completes inside the call, every handle is closing when it
** returns (so a uv_walk that closes whatever is still open, as luv's loop
** __gc does, finds none of ours), no callback runs afterwards, and the
** loop then finishes and closes cleanly.
*/
#include <stdlib.h>
#include <string.h>

#include "hm_conn.h"
#include "hm_test.h"

static int connected_calls;
static hm_status connected_st;

static void on_connected(hm_conn_t *c, hm_status st, const char *text,
                         void *arg) {
  connected_calls++;
  connected_st = st;
  if (st != HM_OK) fprintf(stderr, "connect: %s\n", text ? text : "");
}

/* Connects, running the loop until the first connect is over. */
static hm_conn_t *connect_to(uv_loop_t *loop, hm_event_cb ev, void *arg) {
  const char *u = getenv("HEMERA_NATS_URL");
  const char *servers[1];
  hm_conn_opts o;
  char err[256];
  hm_conn_t *c = NULL;
  memset(&o, 0, sizeof o);
  servers[0] = u && *u ? u : "nats://127.0.0.1:4222";
  o.servers = servers;
  o.nservers = 1;
  connected_calls = 0;
  if (hm_conn_connect(loop, &o, ev, on_connected, arg, &c, err, sizeof err) !=
      HM_OK) {
    fprintf(stderr, "connect: %s\n", err);
    return NULL;
  }
  while (connected_calls == 0) uv_run(loop, UV_RUN_ONCE);
  return connected_st == HM_OK ? c : NULL;
}

typedef struct {
  int closed, other, events, done_calls, closed_cb, drained;
} counts;

static void reply_cb(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                     int done, void *arg) {
  counts *k = arg;
  if (st == HM_CLOSED) k->closed++; else k->other++;
  if (done) k->done_calls++;
  hm_msg_destroy(m);
}

static void event_cb(hm_conn_t *c, hm_conn_event ev, const char *text,
                     void *arg) {
  ((counts *)arg)->events++;
}

static void closed_cb(hm_conn_t *c, void *arg) { ((counts *)arg)->closed_cb++; }

static void drained_cb(hm_sub_t *s, hm_status st, void *arg) {
  ((counts *)arg)->drained++;
}

static void msg_cb(hm_sub_t *s, natsMsg *m, void *arg) { hm_msg_destroy(m); }

static int open_handles;
static void count_open(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) open_handles++;
}

/* Pending work at abandon: a request, a drain; an earlier close's final
** round trip in the second case. */
static void abandon_case(int close_first) {
  uv_loop_t loop;
  hm_conn_t *c;
  hm_sub_t *s;
  uint64_t id;
  counts k;
  memset(&k, 0, sizeof k);
  uv_loop_init(&loop);
  c = connect_to(&loop, event_cb, &k);
  ASSERT(c != NULL);
  ASSERT_EQ(hm_conn_subscribe(c, "hmtest.abandon", NULL, 0, msg_cb, NULL, &s),
            HM_OK);
  /* Nobody answers: the request stays pending. */
  ASSERT_EQ(hm_conn_request(c, "hmtest.nobody", "x", 1, 60000, 1, reply_cb,
                            &k, &id), HM_OK);
  ASSERT_EQ(hm_sub_drain(s, 60000, drained_cb, &k), HM_OK);
  if (close_first) {
    hm_conn_close(c, closed_cb, &k);
    ASSERT_EQ(k.closed, 1); /* hm_conn_close completes it already */
  }
  hm_conn_abandon(c);
  ASSERT_EQ(k.closed, 1);
  ASSERT_EQ(k.done_calls, 1);
  ASSERT_EQ(k.drained, 1);
  open_handles = 0;
  uv_walk(&loop, count_open, NULL);
  ASSERT_EQ(open_handles, 0);
  k.events = 0;
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(k.other, 0);
  ASSERT_EQ(k.events, 0);    /* not even "closed" */
  ASSERT_EQ(k.closed_cb, 0); /* an earlier close's `done` neither */
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(abandon_completes_pending_and_closes_every_handle) { abandon_case(0); }

TEST(abandon_after_close_drops_its_done) { abandon_case(1); }

/* Abandoned while its first connect is under way (to a closed port,
** retried for ever): the connect thread is stopped and joined inside the
** call, `connected` never runs, every handle is closing. */
TEST(abandon_during_the_first_connect) {
  uv_loop_t loop;
  hm_conn_opts o;
  const char *servers[] = {"nats://127.0.0.1:1"};
  char err[256];
  hm_conn_t *c = NULL;
  counts k;
  memset(&k, 0, sizeof k);
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 1;
  o.retry_connect = 1;
  o.max_reconnect = -1;
  o.reconnect_wait_ms = 1;
  uv_loop_init(&loop);
  connected_calls = 0;
  ASSERT_EQ(hm_conn_connect(&loop, &o, event_cb, on_connected, &k, &c, err,
                            sizeof err), HM_OK);
  uv_run(&loop, UV_RUN_NOWAIT);
  hm_conn_abandon(c);
  open_handles = 0;
  uv_walk(&loop, count_open, NULL);
  ASSERT_EQ(open_handles, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(connected_calls, 0);
  ASSERT_EQ(k.events, 0);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

int main(void) {
  RUN(abandon_completes_pending_and_closes_every_handle);
  RUN(abandon_after_close_drops_its_done);
  RUN(abandon_during_the_first_connect);
  hm_conn_library_close();
  TEST_EXIT();
}
