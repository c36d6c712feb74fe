/*
** bench_transport.c: raw NATS request/reply in C, the transport ceiling the
** Lua path is compared with (bench/run.sh runs it; numbers are printed,
** never asserted).
**
** Layout: two processes on the same nats-server, like the Lua benchmark: an
** echo service (`echo`) and a client (`client`). The payload is a real
** Hemera request envelope (about 400 bytes), echoed back unchanged, so both
** directions carry a Hemera-sized message. The client keeps N requests in
** flight (each "worker" sends its next request when its reply arrives) for
** a fixed time per level and prints the same line as every other client of
** bench/:
**   inflight  128:     98000 req/s  p50     1200 us  p99     2400 us  errors 0
**     requests 294000  cpu_us 2900000  svc_cpu_us 2500000
** (one line; requests: answered in the level; cpu_us: this process's CPU,
** getrusage, over the level; svc_cpu_us: the service's utime + stime from
** /proc/$BENCH_SVC_PID/stat over the level, -1 without it) and, at the end,
** `client_hwm_kb <peak RSS>`.
**
** Two transports, both cnats (the system libnats) on a libuv loop with
** SendAsap, so publishes are written at once instead of by cnats' flusher:
**   cnats  cnats' own libuv adapter (nats/adapters/libuv.h) and plain async
**          subscriptions: cnats parses on the loop thread and delivers each
**          message on the subscription's own thread, whose callback
**          publishes the reply (service) or the worker's next request
**          (client) from there. Request/reply is done by hand with one
**          `_INBOX.<nuid>.*` subscription (what cnats' and nats.js's
**          request multiplexers do). This is "raw cnats over libuv".
**   hm     core/hm_conn.h, our transport without Lua: our own loop glue,
**          synchronous subscriptions drained on the loop thread (no thread
**          hand-off), hm_conn_request's multiplexer, pending table and
**          deadlines. This is what the Lua binding sits on.
**
** A third mode measures the start-up of any service: `startup` connects,
** then spawns the service's command and keeps sending a Hemera
** `{topic, cmd:"add", a:1, b:2}` request every millisecond until one is
** answered with `"result":3`; the time from the spawn to that reply is the
** start-up time. It then waits `settle` ms, reads the service's resident
** memory (VmRSS, its idle size), asks it to stop with `{topic, cmd:"stop"}`
** and waits for it to exit:
**   startup_ms 12.3 idle_rss_kb 5120 hwm_kb 5200 exit 0
**
** usage:
**   bench_transport echo    <cnats|hm> <subject>
**   bench_transport client  <cnats|hm> <subject> <seconds> <warmup-s> <inflight>...
**   bench_transport startup <topic> <settle-ms> <timeout-ms> <command> [args...]
** The server is $HEMERA_NATS_URL (default nats://127.0.0.1:4222). `echo`
** ends on SIGTERM or SIGINT, exiting 0 after closing its connection.
*/
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nats/adapters/libuv.h>
#include <nats/nats.h>
#include <uv.h>

#include "hm_conn.h"
#include "hm_nuid.h"

static const char *server_url(void) {
  const char *u = getenv("HEMERA_NATS_URL");
  return u && *u ? u : "nats://127.0.0.1:4222";
}

static long proc_status_kb(int pid, const char *field) {
  char path[64], line[256];
  long kb = -1;
  size_t n = strlen(field);
  FILE *f;
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%d/status", pid);
  else
    snprintf(path, sizeof path, "/proc/self/status");
  f = fopen(path, "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') {
      kb = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

/* utime + stime of process `pid`, every thread, in microseconds, or -1:
** fields 14 and 15 of /proc/<pid>/stat (clock ticks). They are counted from
** the last ')', since the command name before it may hold spaces. */
static double proc_cpu_us(int pid) {
  char path[64], buf[1024], *p;
  unsigned long long ut, st;
  size_t n;
  FILE *f;
  if (pid <= 0) return -1;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  f = fopen(path, "r");
  if (f == NULL) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  p = strrchr(buf, ')');
  /* After ")": the state (field 3), fields 4 to 13, then utime, stime. */
  if (p == NULL ||
      sscanf(p + 1, " %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu",
             &ut, &st) != 2)
    return -1;
  return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* This process's CPU (user + system, every thread) in microseconds. */
static double self_cpu_us(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A Hemera v7 request envelope as nats-hemera (and our Lua client) sends it
** for {topic, cmd, a, b}: pattern, meta, delegate, trace, request. */
static size_t hemera_envelope(char *buf, size_t cap, const char *topic,
                              const char *cmd, long a, long b) {
  static hm_nuid_t nuid;
  static int seeded;
  char span[HM_NUID_LEN + 1], trace[HM_NUID_LEN + 1], id[HM_NUID_LEN + 1];
  char method[160];
  if (!seeded) {
    hm_nuid_init(&nuid);
    seeded = 1;
  }
  hm_nuid_next(&nuid, span);
  hm_nuid_next(&nuid, trace);
  hm_nuid_next(&nuid, id);
  if (!strcmp(cmd, "add"))
    snprintf(method, sizeof method, "a:%ld,b:%ld,cmd:%s,topic:%s", a, b, cmd,
             topic);
  else
    snprintf(method, sizeof method, "cmd:%s,topic:%s", cmd, topic);
  int n;
  if (!strcmp(cmd, "add"))
    n = snprintf(buf, cap,
                 "{\"pattern\":{\"topic\":\"%s\",\"cmd\":\"%s\",\"a\":%ld,"
                 "\"b\":%ld},\"meta\":{},\"delegate\":{},\"trace\":{"
                 "\"spanId\":\"%s\",\"traceId\":\"%s\",\"timestamp\":"
                 "%.6f,\"service\":\"%s\",\"method\":\"%s\"},\"request\":{"
                 "\"id\":\"%s\",\"type\":\"request\",\"service\":\"%s\","
                 "\"method\":\"%s\"}}",
                 topic, cmd, a, b, span, trace, (double)uv_hrtime() / 1e6,
                 topic, method, id, topic, method);
  else
    n = snprintf(buf, cap,
                 "{\"pattern\":{\"topic\":\"%s\",\"cmd\":\"%s\"},\"meta\":{},"
                 "\"delegate\":{},\"trace\":{\"spanId\":\"%s\",\"traceId\":"
                 "\"%s\",\"timestamp\":%.6f,\"service\":\"%s\",\"method\":"
                 "\"%s\"},\"request\":{\"id\":\"%s\",\"type\":\"request\","
                 "\"service\":\"%s\",\"method\":\"%s\"}}",
                 topic, cmd, span, trace, (double)uv_hrtime() / 1e6, topic,
                 method, id, topic, method);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static int is_cnats(const char *impl) {
  if (!strcmp(impl, "cnats")) return 1;
  if (!strcmp(impl, "hm")) return 0;
  fprintf(stderr, "bench_transport: transport must be cnats or hm, not %s\n",
          impl);
  exit(2);
}

/* cnats connection on `loop` through cnats' libuv adapter; SendAsap. Must
** be called on the loop thread (the adapter's first attach insists). */
static natsConnection *cnats_connect(uv_loop_t *loop, const char *name) {
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  natsStatus s;
  natsLibuv_Init();
  natsLibuv_SetThreadLocalLoop(loop);
  s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, server_url());
  if (s == NATS_OK) s = natsOptions_SetName(o, name);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false);
  if (s == NATS_OK)
    s = natsOptions_SetEventLoop(o, loop, natsLibuv_Attach, natsLibuv_Read,
                                 natsLibuv_Write, natsLibuv_Detach);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    fprintf(stderr, "bench_transport: cannot connect to %s: %s\n",
            server_url(), natsStatus_GetText(s));
    exit(1);
  }
  return nc;
}

/* The connect runs off the loop: the bench waits for it here. */
static void hm_connected(hm_conn_t *c, hm_status st, const char *text,
                         void *arg) {
  if (st != HM_OK) {
    fprintf(stderr, "bench_transport: cannot connect to %s: %s\n",
            server_url(), text);
    exit(1);
  }
  *(int *)arg = 1;
}

static hm_conn_t *hm_connect(uv_loop_t *loop, const char *name) {
  const char *servers[1] = {server_url()};
  hm_conn_opts o;
  hm_conn_t *c = NULL;
  char err[256];
  int done = 0;
  memset(&o, 0, sizeof o);
  o.servers = servers;
  o.nservers = 1;
  o.name = name;
  o.allow_reconnect = 0;
  if (hm_conn_connect(loop, &o, NULL, hm_connected, &done, &c, err,
                      sizeof err) != HM_OK) {
    fprintf(stderr, "bench_transport: cannot connect to %s: %s\n",
            server_url(), err);
    exit(1);
  }
  while (!done) uv_run(loop, UV_RUN_ONCE);
  return c;
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* {====================================================================
** echo
** ===================================================================== */

static struct {
  uv_loop_t *loop;
  int cnats;
  natsConnection *nc;
  natsSubscription *sub, *readysub;
  hm_conn_t *hc;
  hm_sub_t *hsub;
  uv_signal_t sigterm, sigint;
  uv_async_t ready;
} E;

static void print_ready(void) {
  fputs("ready\n", stdout);
  fflush(stdout);
}

static void echo_cnats_msg(natsConnection *nc, natsSubscription *sub,
                           natsMsg *msg, void *arg) {
  const char *reply = natsMsg_GetReply(msg);
  if (reply)
    natsConnection_Publish(nc, reply, natsMsg_GetData(msg),
                           natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

static void echo_cnats_ready(natsConnection *nc, natsSubscription *sub,
                             natsMsg *msg, void *arg) {
  natsMsg_Destroy(msg);
  print_ready();
}

static void echo_hm_msg(hm_sub_t *s, natsMsg *msg, void *arg) {
  const char *reply = natsMsg_GetReply(msg);
  if (reply)
    hm_conn_publish(E.hc, reply, NULL, natsMsg_GetData(msg),
                    (size_t)natsMsg_GetDataLength(msg));
  hm_msg_destroy(msg);
}

static void echo_hm_ready(hm_conn_t *c, uint64_t id, hm_status st,
                          natsMsg *msg, int done, void *arg) {
  if (msg) hm_msg_destroy(msg);
  if (st == HM_OK) print_ready();
  else fprintf(stderr, "bench_transport echo: flush failed\n");
}

static void echo_hm_closed(hm_conn_t *c, void *arg) {}

static void echo_signal(uv_signal_t *h, int signum) {
  close_handle((uv_handle_t *)&E.sigterm);
  close_handle((uv_handle_t *)&E.sigint);
  if (E.cnats) {
    natsConnection_Close(E.nc);
  } else {
    hm_conn_close(E.hc, echo_hm_closed, NULL);
  }
}

static int run_echo(const char *impl, const char *subject) {
  E.cnats = is_cnats(impl);
  E.loop = uv_default_loop();
  uv_signal_init(E.loop, &E.sigterm);
  uv_signal_init(E.loop, &E.sigint);
  uv_signal_start(&E.sigterm, echo_signal, SIGTERM);
  uv_signal_start(&E.sigint, echo_signal, SIGINT);
  if (E.cnats) {
    char inbox[64];
    natsInbox *ib = NULL;
    E.nc = cnats_connect(E.loop, "bench-echo-cnats");
    if (natsConnection_QueueSubscribe(&E.sub, E.nc, subject, "queue.bench",
                                      echo_cnats_msg, NULL) != NATS_OK)
      return 1;
    /* "ready" once the server has seen the subscription: a message to an
    ** inbox of ours, published after it, has come back. */
    natsInbox_Create(&ib);
    snprintf(inbox, sizeof inbox, "%s", ib);
    natsInbox_Destroy(ib);
    natsConnection_Subscribe(&E.readysub, E.nc, inbox, echo_cnats_ready,
                             NULL);
    natsSubscription_AutoUnsubscribe(E.readysub, 1);
    natsConnection_PublishString(E.nc, inbox, "ready");
  } else {
    uint64_t id;
    E.hc = hm_connect(E.loop, "bench-echo-hm");
    if (hm_conn_subscribe(E.hc, subject, "queue.bench", 0, echo_hm_msg, NULL,
                          &E.hsub) != HM_OK)
      return 1;
    hm_conn_flush(E.hc, 5000, echo_hm_ready, NULL, &id);
  }
  uv_run(E.loop, UV_RUN_DEFAULT);
  if (E.cnats) {
    natsSubscription_Destroy(E.sub);
    natsSubscription_Destroy(E.readysub);
    natsConnection_Destroy(E.nc);
  }
  uv_loop_close(E.loop);
  nats_Close();
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** client
** ===================================================================== */

static struct {
  uv_loop_t *loop;
  int cnats;
  const char *subject;
  char payload[1024];
  size_t plen;
  /* cnats mode */
  natsConnection *nc;
  natsSubscription *inbox_sub;
  char inbox[64]; /* "_INBOX.<nuid>." */
  /* hm mode */
  hm_conn_t *hc;
  /* the level being measured */
  int *levels, nlevels, li; /* li == -1: the warm-up */
  double seconds, warmup;
  int inflight;
  uint64_t *sent;              /* per worker: when its request went out */
  uint64_t *lat;               /* latencies, ns */
  size_t nlat, caplat;
  uint64_t t_start, stop_at;
  int svc_pid;                 /* $BENCH_SVC_PID, for its CPU per level */
  double cpu0, svc0;           /* CPU at the level's start, us */
  atomic_int active;           /* workers still running */
  atomic_uint_fast64_t done, errors;
  uv_async_t level_done;
  uv_timer_t watchdog;
} C;

static void record(uint64_t ns) {
  if (C.nlat == C.caplat) {
    size_t ncap = C.caplat ? C.caplat * 2 : 1 << 16;
    uint64_t *n = realloc(C.lat, ncap * sizeof *n);
    if (n == NULL) return;
    C.lat = n;
    C.caplat = ncap;
  }
  C.lat[C.nlat++] = ns;
}

static void worker_end(void) {
  if (atomic_fetch_sub(&C.active, 1) == 1) uv_async_send(&C.level_done);
}

static int send_cnats(int w) {
  char reply[96];
  snprintf(reply, sizeof reply, "%s%d", C.inbox, w);
  C.sent[w] = uv_hrtime();
  return natsConnection_PublishRequest(C.nc, C.subject, reply, C.payload,
                                       (int)C.plen) == NATS_OK;
}

/* On the inbox subscription's delivery thread. */
static void client_cnats_reply(natsConnection *nc, natsSubscription *sub,
                               natsMsg *msg, void *arg) {
  const char *subj = natsMsg_GetSubject(msg);
  const char *dot = strrchr(subj, '.');
  int w = dot ? atoi(dot + 1) : -1;
  uint64_t now = uv_hrtime();
  natsMsg_Destroy(msg);
  if (w < 0 || w >= C.inflight) return;
  record(now - C.sent[w]);
  atomic_fetch_add(&C.done, 1);
  if (now < C.stop_at && send_cnats(w)) return;
  worker_end();
}

static void send_hm(int w);

static void client_hm_reply(hm_conn_t *c, uint64_t id, hm_status st,
                            natsMsg *msg, int done, void *arg) {
  int w = (int)(intptr_t)arg;
  uint64_t now = uv_hrtime();
  if (msg) hm_msg_destroy(msg);
  if (st == HM_OK) {
    record(now - C.sent[w]);
    atomic_fetch_add(&C.done, 1);
  } else {
    atomic_fetch_add(&C.errors, 1);
  }
  if (now < C.stop_at) send_hm(w);
  else worker_end();
}

static void send_hm(int w) {
  uint64_t id;
  C.sent[w] = uv_hrtime();
  if (hm_conn_request(C.hc, C.subject, C.payload, C.plen, 10000, 1,
                      client_hm_reply, (void *)(intptr_t)w, &id) != HM_OK) {
    atomic_fetch_add(&C.errors, 1);
    worker_end();
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The same rank as bench/rps.lua and bench/node: lat[max(1, floor(n*p))],
** 1-based, of the sorted latencies. */
static double pct_us(double p) {
  size_t i;
  if (C.nlat == 0) return 0;
  i = (size_t)((double)C.nlat * p);
  if (i < 1) i = 1;
  return (double)C.lat[i - 1] / 1e3;
}

static void start_level(void);

static void finish_client(void);

static void on_level_done(uv_async_t *h) {
  uint64_t t_end = uv_hrtime();
  double cpu = self_cpu_us() - C.cpu0, svc = proc_cpu_us(C.svc_pid);
  uv_timer_stop(&C.watchdog);
  if (C.li >= 0) {
    double elapsed = (double)(t_end - C.t_start) / 1e9;
    qsort(C.lat, C.nlat, sizeof *C.lat, cmp_u64);
    printf("inflight %4d: %9.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %llu"
           "  requests %llu  cpu_us %.0f  svc_cpu_us %.0f\n",
           C.inflight, (double)atomic_load(&C.done) / elapsed, pct_us(0.50),
           pct_us(0.99), (unsigned long long)atomic_load(&C.errors),
           (unsigned long long)atomic_load(&C.done), cpu,
           svc >= 0 && C.svc0 >= 0 ? svc - C.svc0 : -1.0);
    fflush(stdout);
  }
  C.li++;
  if (C.li < C.nlevels) start_level();
  else finish_client();
}

/* Workers lost for good (a message the server dropped): count them as
** errors and end the level. */
static void on_watchdog(uv_timer_t *t) {
  int left = atomic_exchange(&C.active, 0);
  atomic_fetch_add(&C.errors, (uint64_t)left);
  if (left > 0) uv_async_send(&C.level_done);
}

static void start_level(void) {
  int n = C.li < 0 ? C.levels[C.nlevels - 1] : C.levels[C.li];
  double secs = C.li < 0 ? C.warmup : C.seconds;
  C.inflight = n;
  C.nlat = 0;
  /* CPU is read around each level alone, the warm-up being a level too. */
  C.cpu0 = self_cpu_us();
  C.svc0 = proc_cpu_us(C.svc_pid);
  atomic_store(&C.done, 0);
  atomic_store(&C.errors, 0);
  atomic_store(&C.active, n);
  C.t_start = uv_hrtime();
  C.stop_at = C.t_start + (uint64_t)(secs * 1e9);
  uv_timer_start(&C.watchdog, on_watchdog, (uint64_t)(secs * 1000) + 15000,
                 0);
  for (int w = 0; w < n; w++) {
    if (C.cnats) {
      if (!send_cnats(w)) {
        atomic_fetch_add(&C.errors, 1);
        worker_end();
      }
    } else {
      send_hm(w);
    }
  }
}

static void client_hm_closed(hm_conn_t *c, void *arg) {}

static void finish_client(void) {
  close_handle((uv_handle_t *)&C.level_done);
  close_handle((uv_handle_t *)&C.watchdog);
  printf("client_hwm_kb %ld\n", proc_status_kb(0, "VmHWM"));
  fflush(stdout);
  if (C.cnats) natsConnection_Close(C.nc);
  else hm_conn_close(C.hc, client_hm_closed, NULL);
}

static int run_client(int argc, char **argv) {
  /* argv: impl subject seconds warmup levels... */
  if (argc < 5) return 2;
  C.cnats = is_cnats(argv[0]);
  C.subject = argv[1];
  C.seconds = atof(argv[2]);
  C.warmup = atof(argv[3]);
  C.nlevels = argc - 4;
  C.levels = calloc((size_t)C.nlevels, sizeof *C.levels);
  int most = 1;
  for (int i = 0; i < C.nlevels; i++) {
    C.levels[i] = atoi(argv[4 + i]);
    if (C.levels[i] < 1) return 2;
    if (C.levels[i] > most) most = C.levels[i];
  }
  /* Sized once: a late reply from a level ended by the watchdog must not
  ** find it freed. */
  C.sent = calloc((size_t)most, sizeof *C.sent);
  C.svc_pid = getenv("BENCH_SVC_PID") ? atoi(getenv("BENCH_SVC_PID")) : 0;
  C.plen = hemera_envelope(C.payload, sizeof C.payload, "bench", "add", 1,
                           2);
  C.loop = uv_default_loop();
  uv_async_init(C.loop, &C.level_done, on_level_done);
  uv_timer_init(C.loop, &C.watchdog);
  if (C.cnats) {
    natsInbox *ib = NULL;
    C.nc = cnats_connect(C.loop, "bench-client-cnats");
    natsInbox_Create(&ib);
    snprintf(C.inbox, sizeof C.inbox, "%s.", ib);
    natsInbox_Destroy(ib);
    char wild[80];
    snprintf(wild, sizeof wild, "%s*", C.inbox);
    if (natsConnection_Subscribe(&C.inbox_sub, C.nc, wild,
                                 client_cnats_reply, NULL) != NATS_OK)
      return 1;
  } else {
    C.hc = hm_connect(C.loop, "bench-client-hm");
  }
  fprintf(stderr, "bench_transport client (%s): payload %zu bytes\n",
          C.cnats ? "cnats libuv adapter" : "hm_conn", C.plen);
  /* The warm-up (li -1) runs at the last level and is not reported. The
  ** subscription is made before the first request goes out on the same
  ** connection, so the server has it first. */
  C.li = C.warmup > 0 ? -1 : 0;
  start_level();
  uv_run(C.loop, UV_RUN_DEFAULT);
  if (C.cnats) {
    natsSubscription_Destroy(C.inbox_sub);
    natsConnection_Destroy(C.nc);
  }
  uv_loop_close(C.loop);
  nats_Close();
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** startup
** ===================================================================== */

static struct {
  uv_loop_t *loop;
  hm_conn_t *hc;
  const char *topic;
  uint64_t settle_ms, timeout_ms;
  uv_process_t proc;
  uv_timer_t poll, settle, limit;
  uint64_t t0, t1;
  int flushed, answered, exited, exit_status, pid, sent;
  long idle_kb, hwm_kb;
  int stop_sent;
} S;

static void startup_closed(hm_conn_t *c, void *arg) {}

static void startup_finish(void) {
  printf("startup_ms %.2f idle_rss_kb %ld hwm_kb %ld exit %d requests %d\n",
         S.answered ? (double)(S.t1 - S.t0) / 1e6 : -1.0, S.idle_kb,
         S.hwm_kb, S.exited ? S.exit_status : -1, S.sent);
  fflush(stdout);
  uv_timer_stop(&S.poll);
  uv_timer_stop(&S.settle);
  uv_timer_stop(&S.limit);
  close_handle((uv_handle_t *)&S.poll);
  close_handle((uv_handle_t *)&S.settle);
  close_handle((uv_handle_t *)&S.limit);
  close_handle((uv_handle_t *)&S.proc);
  hm_conn_close(S.hc, startup_closed, NULL);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  S.exited = 1;
  S.exit_status = sig ? 128 + sig : (int)status;
  if (!S.answered) fprintf(stderr, "startup: the service exited first\n");
  startup_finish();
}

static void on_stop_reply(hm_conn_t *c, uint64_t id, hm_status st,
                          natsMsg *msg, int done, void *arg) {
  if (msg) hm_msg_destroy(msg);
}

static void send_stop(void) {
  char buf[1024];
  uint64_t id;
  size_t n = hemera_envelope(buf, sizeof buf, S.topic, "stop", 0, 0);
  S.stop_sent = 1;
  hm_conn_request(S.hc, S.topic, buf, n, 2000, 1, on_stop_reply, NULL, &id);
}

static void on_settled(uv_timer_t *t) {
  S.idle_kb = proc_status_kb(S.pid, "VmRSS");
  S.hwm_kb = proc_status_kb(S.pid, "VmHWM");
  send_stop();
}

static void on_probe_reply(hm_conn_t *c, uint64_t id, hm_status st,
                           natsMsg *msg, int done, void *arg) {
  uint64_t now = uv_hrtime();
  int ok = 0;
  if (msg) {
    const char *d = natsMsg_GetData(msg);
    ok = d && strstr(d, "\"result\":3") != NULL;
    hm_msg_destroy(msg);
  }
  if (!ok || S.answered) return;
  S.answered = 1;
  S.t1 = now;
  uv_timer_stop(&S.poll);
  uv_timer_start(&S.settle, on_settled, S.settle_ms, 0);
}

static void on_poll_timer(uv_timer_t *t) {
  char buf[1024];
  uint64_t id;
  size_t n;
  if (S.answered || S.exited) return;
  n = hemera_envelope(buf, sizeof buf, S.topic, "add", 1, 2);
  if (hm_conn_request(S.hc, S.topic, buf, n, 50, 1, on_probe_reply, NULL,
                      &id) == HM_OK)
    S.sent++;
}

static void on_limit(uv_timer_t *t) {
  if (S.exited) return;
  fprintf(stderr, "startup: %s; killing the service\n",
          S.answered ? "it did not exit after stop" : "no answer in time");
  uv_process_kill(&S.proc, SIGKILL);
}

static void on_first_flush(hm_conn_t *c, uint64_t id, hm_status st,
                           natsMsg *msg, int done, void *arg);

static int run_startup(int argc, char **argv) {
  /* argv: topic settle timeout command args... */
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  uint64_t id;
  if (argc < 4) return 2;
  S.topic = argv[0];
  S.settle_ms = (uint64_t)atol(argv[1]);
  S.timeout_ms = (uint64_t)atol(argv[2]);
  S.loop = uv_default_loop();
  S.idle_kb = S.hwm_kb = -1;
  uv_timer_init(S.loop, &S.poll);
  uv_timer_init(S.loop, &S.settle);
  uv_timer_init(S.loop, &S.limit);
  S.hc = hm_connect(S.loop, "bench-startup");
  /* The inbox subscription exists before the service does. */
  hm_conn_flush(S.hc, 5000, on_first_flush, NULL, &id);
  while (!S.flushed && uv_run(S.loop, UV_RUN_ONCE)) {
  }
  if (!S.flushed) {
    fprintf(stderr, "startup: no round trip through the server\n");
    return 1;
  }
  memset(&po, 0, sizeof po);
  memset(stdio, 0, sizeof stdio);
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  po.file = argv[3];
  po.args = argv + 3;
  po.exit_cb = on_exit_cb;
  po.stdio = stdio;
  po.stdio_count = 3;
  S.t0 = uv_hrtime();
  int r = uv_spawn(S.loop, &S.proc, &po);
  if (r != 0) {
    fprintf(stderr, "startup: cannot run %s: %s\n", argv[3], uv_strerror(r));
    return 1;
  }
  S.pid = S.proc.pid;
  on_poll_timer(&S.poll);
  uv_timer_start(&S.poll, on_poll_timer, 1, 1);
  uv_timer_start(&S.limit, on_limit, S.timeout_ms, 0);
  uv_run(S.loop, UV_RUN_DEFAULT);
  uv_loop_close(S.loop);
  nats_Close();
  return S.answered && S.exited && S.exit_status == 0 ? 0 : 1;
}

static void on_first_flush(hm_conn_t *c, uint64_t id, hm_status st,
                           natsMsg *msg, int done, void *arg) {
  if (msg) hm_msg_destroy(msg);
  /* Connected, and the server knows our inbox subscription. */
  S.flushed = st == HM_OK;
  if (!S.flushed) uv_stop(S.loop);
}

/* }==================================================================== */

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "echo")) return run_echo(argv[2], argv[3]);
  if (argc >= 7 && !strcmp(argv[1], "client"))
    return run_client(argc - 2, argv + 2);
  if (argc >= 6 && !strcmp(argv[1], "startup"))
    return run_startup(argc - 2, argv + 2);
  fprintf(stderr,
          "usage: bench_transport echo <cnats|hm> <subject>\n"
          "       bench_transport client <cnats|hm> <subject> <seconds> "
          "<warmup-s> <inflight>...\n"
          "       bench_transport startup <topic> <settle-ms> <timeout-ms> "
          "<command> [args...]\n");
  return 2;
}
