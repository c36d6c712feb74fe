/*
** hm_lua_tracing.c: the C part of hemera.tracing (lua/hemera/tracing.lua):
** a bounded buffer of finished spans, batched and POSTed to collectors by
** core/hm_http_client.c on the state's loop, so that exporting never runs
** on the request path and a down collector costs a request nothing.
**
** core.tracer(opts) -> tracer (bad options raise, naming option and value)
**     opts: service (resource service.name), otlp (URL of OTLP/HTTP JSON
**     traces), zipkin (URL of Zipkin v2 JSON spans), maxQueue (spans held,
**     2048), batchSize (spans per POST, 512), interval (ms between
**     flushes, 1000), timeout (ms per POST, 5000), maxBackoff (ms, 30000)
** tracer:span(kind, name, topic, pubsub, traceId, spanId, parentId|nil,
**     start_us, end_us, requestId, hemeraTraceId, hemeraSpanId,
**     hemeraParentId|nil, errName|nil, errMessage|nil) -> true | false
**     (false: the buffer is full or the tracer closing, the span is
**     dropped and counted);
**     kind "server" | "client"; ids as lower-case hex (core.trace_hex)
** tracer:stats() -> {queued, dropped, exported, failedBatches, lastError}
** tracer:close([fn]) -> true: flushes what is held (one batch after the
**     other, stopping at the first failure, whose spans and the rest are
**     dropped), then closes and spawns fn()
** core.trace_hex(s, nhex [, prefix]) -> s when it already is nhex (32 or
**     16) lower-case hex digits and not all zeros (a W3C id) and there is
**     no prefix, else a hash of prefix .. s (FNV-1a 64, twice with two
**     offsets for 32 digits)
** core.trace_parts(msg) -> traceId, spanId, parentSpanId, method,
**     requestId, requestType: the request's own trace and request members
**     (nil where absent or not a string), read without the context
**     holding them (a held part is re-encoded into the reply). The Msg
**     must have been scanned (core.msg_route ran).
** core.trace_now() -> microseconds since the epoch (an integer)
** core.trace_sampled(traceIdHex, ratio) -> whether the ratio sampler keeps
**     the trace: its last 16 hex digits as a fraction of 2^64, so every
**     service decides the same way for one trace without telling another
**
** Ownership: a tracer is malloc'd (libuv holds its timer, the HTTP
** clients call back into it); the userdata points to it. Each span is one
** malloc'd block owned by the ring, then by the batch in flight; a batch
** is freed by batch_done once every exporter has answered. The tracer is
** freed by maybe_free once it is closed, its timer closed and no POST is
** outstanding. Shutdown (hm_lua_close_tracers) drops what is held.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hm_codec.h"
#include "hm_http_client.h"
#include "hm_lua_envelope.h"
#include "hm_version.h"

#define HM_TRACER_MT "hemera.Tracer"

enum { S_NAME, S_TOPIC, S_RID, S_HTID, S_HSID, S_HPSID, S_ENAME, S_EMSG, S_N };
enum { FMT_OTLP, FMT_ZIPKIN };

typedef struct tspan {
  int64_t start_us, end_us;
  unsigned char server, pubsub, has_parent, error, has[S_N];
  char trace_id[33], span_id[17], parent_id[17];
  uint32_t off[S_N], len[S_N];
  char data[];
} tspan;

typedef struct hm_tracer tracer;

/* The Lua side: the tracer and its userdata point at each other until
** the first of them goes (maybe_free or t_gc clears the other's pointer). */
typedef struct utracer {
  tracer *t;
} utracer;

typedef struct exporter {
  hm_http_client *cl;
  int format;
  tracer *t;
} exporter;

struct hm_tracer {
  hm_ctx *ctx;
  uv_timer_t timer;
  tspan **ring;
  size_t cap, head, count, batch;
  tspan **flight; /* the batch being posted */
  size_t nflight;
  int pending; /* exporters that have not answered the batch yet */
  int failed;
  exporter ex[2];
  int nex;
  unsigned interval_ms, timeout_ms, max_backoff_ms, backoff_ms;
  uint64_t retry_at; /* uv_now before which nothing is posted */
  uint64_t dropped, exported, failed_batches;
  char last_error[200];
  char *service;
  int closing, closed, abandoned, timer_closed;
  int close_ref;
  utracer *u; /* NULL once the userdata was collected */
  tracer *prev, *next; /* ctx->tracers */
};


static void try_flush(tracer *t);

/* {====================================================================
** Ids and clocks
** ===================================================================== */

static uint64_t fnv1a(const char *s, size_t n, uint64_t h) {
  for (size_t k = 0; k < n; k++) {
    h ^= (unsigned char)s[k];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static int is_hex_id(const char *s, size_t n, size_t want) {
  int nonzero = 0;
  if (n != want) return 0;
  for (size_t k = 0; k < n; k++) {
    char c = s[k];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
    if (c != '0') nonzero = 1;
  }
  return nonzero;
}

static void put_hex(char *out, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  for (int k = 15; k >= 0; k--, v >>= 4) out[k] = digits[v & 15];
}

static int l_trace_hex(lua_State *L) {
  size_t n, pn = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer want = luaL_checkinteger(L, 2);
  const char *prefix = luaL_optlstring(L, 3, NULL, &pn);
  char out[32];
  luaL_argcheck(L, want == 16 || want == 32, 2, "must be 16 or 32");
  if (prefix == NULL && is_hex_id(s, n, (size_t)want)) {
    lua_settop(L, 1);
    return 1;
  }
  uint64_t a = fnv1a(s, n, fnv1a(prefix, pn, 0xcbf29ce484222325ULL));
  put_hex(out, a);
  if (want == 32)
    put_hex(out + 16, fnv1a(s, n, fnv1a(prefix, pn, 0x84222325cbf29ce4ULL)));
  lua_pushlstring(L, out, (size_t)want);
  return 1;
}

/* Pushes the string values of `n` keys of the object at `which` in g, nil
** for each that is absent or not a string: one validating pass
** (hm_codec_scan_ex) records where the values are; a string without
** escapes is pushed as it stands, another one decoded. */
static void push_strings(lua_State *L, const hm_lmsg *g, int which,
                         const char *const *keys, int n) {
  const hm_span *sp = &g->sp[which];
  hm_span spans[4];
  hm_scan w = {keys, n, spans, -1, -1, NULL, NULL, NULL};
  char err[8];
  int ok = g->scanned == 1 && sp->start >= 0 && g->data[sp->start] == '{' &&
           hm_codec_scan_ex(NULL, g->data + sp->start,
                            (size_t)(sp->end - sp->start), &w, 0, err,
                            sizeof err) == 0;
  for (int k = 0; k < n; k++) {
    const char *v = ok && spans[k].start >= 0 ? g->data + sp->start + spans[k].start : NULL;
    size_t vlen = v ? (size_t)(spans[k].end - spans[k].start) : 0;
    if (v == NULL || *v != '"') {
      lua_pushnil(L);
    } else if (memchr(v, '\\', vlen) == NULL) {
      lua_pushlstring(L, v + 1, vlen - 2);
    } else if (hm_codec_decode(L, v, vlen) != 1) {
      lua_pop(L, 2);
      lua_pushnil(L);
    }
  }
}

static int l_trace_parts(lua_State *L) {
  static const char *const trace_keys[] = {"traceId", "spanId",
                                           "parentSpanId", "method"};
  static const char *const request_keys[] = {"id", "type"};
  hm_lmsg *g = hm_env_check_msg(L, hm_ctx_get(L), 1);
  lua_settop(L, 1);
  push_strings(L, g, HM_SP_TRACE, trace_keys, 4);
  push_strings(L, g, HM_SP_REQUEST, request_keys, 2);
  return 6;
}

static int l_trace_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
  return 1;
}

static int l_trace_sampled(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Number ratio = luaL_checknumber(L, 2);
  uint64_t v = 0;
  if (ratio >= 1) {
    lua_pushboolean(L, 1);
    return 1;
  }
  for (size_t k = n > 16 ? n - 16 : 0; k < n; k++) {
    char c = s[k];
    v = (v << 4) | (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  lua_pushboolean(L, ratio > 0 && (double)v < ratio * 18446744073709551616.0);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Rendering
** ===================================================================== */

#define STR(sp, k) ((sp)->data + (sp)->off[k])

static int put(hm_buf *b, const char *s) { return hm_buf_append(b, s, strlen(s)); }

/* A JSON string; text that is not UTF-8 (a pattern value of bytes) goes
** out as a placeholder rather than failing the batch. */
static int put_str(hm_buf *b, const char *s, size_t n) {
  if (hm_codec_put_string(b, s, n) == 0) return 0;
  return put(b, "\"(not UTF-8)\"");
}

/* Zipkin's own clients lower-case span and service names (npm zipkin's
** model does), and its UI searches them so: the same here. */
static int put_lower_str(hm_buf *b, const char *s, size_t n) {
  hm_buf tmp;
  int r;
  hm_buf_init(&tmp);
  if (n && hm_buf_append(&tmp, s, n) != 0) return -1;
  for (size_t k = 0; k < n; k++)
    if (tmp.data[k] >= 'A' && tmp.data[k] <= 'Z') tmp.data[k] = (char)(tmp.data[k] | 0x20);
  r = put_str(b, n ? tmp.data : "", n);
  hm_buf_free(&tmp);
  return r;
}

static int put_attr(hm_buf *b, int *first, const char *key, const char *s,
                    size_t n) {
  int r = put(b, *first ? "{\"key\":\"" : ",{\"key\":\"");
  *first = 0;
  r |= put(b, key);
  r |= put(b, "\",\"value\":{\"stringValue\":");
  r |= put_str(b, s, n);
  return r | put(b, "}}");
}

static int put_tag(hm_buf *b, int *first, const char *key, const char *s,
                   size_t n) {
  int r = put(b, *first ? "\"" : ",\"");
  *first = 0;
  r |= put(b, key);
  r |= put(b, "\":");
  return r | put_str(b, s, n);
}

/* The error text: "Name: message", or either alone. */
static int put_error_text(hm_buf *b, const tspan *sp) {
  hm_buf tmp;
  int r = 0;
  hm_buf_init(&tmp);
  if (sp->has[S_ENAME]) r |= hm_buf_append(&tmp, STR(sp, S_ENAME), sp->len[S_ENAME]);
  if (sp->has[S_ENAME] && sp->has[S_EMSG]) r |= put(&tmp, ": ");
  if (sp->has[S_EMSG]) r |= hm_buf_append(&tmp, STR(sp, S_EMSG), sp->len[S_EMSG]);
  r |= put_str(b, tmp.data ? tmp.data : "", tmp.len);
  hm_buf_free(&tmp);
  return r;
}

static const char *const hemera_attrs[][2] = {
    {"hemera.request_id", NULL}, {"hemera.trace_id", NULL},
    {"hemera.span_id", NULL}, {"hemera.parent_span_id", NULL}};

/* A span's opening, the same in both formats but for the two key names:
** {"traceId":"..","<span>":"..",["<parent>":"..",]"name": */
static int put_ids(hm_buf *b, const tspan *sp, const char *span,
                   const char *parent) {
  int r = put(b, "{\"traceId\":\"");
  r |= put(b, sp->trace_id);
  r |= put(b, "\",\"");
  r |= put(b, span);
  r |= put(b, "\":\"");
  r |= put(b, sp->span_id);
  if (sp->has_parent) {
    r |= put(b, "\",\"");
    r |= put(b, parent);
    r |= put(b, "\":\"");
    r |= put(b, sp->parent_id);
  }
  return r | put(b, "\",\"name\":");
}

static int render_otlp(tracer *t, tspan **v, size_t n, hm_buf *b) {
  char num[160];
  int r = put(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  int first = 1;
  r |= put_attr(b, &first, "service.name", t->service, strlen(t->service));
  r |= put(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"hemera.tracing\","
              "\"version\":\"" HM_VERSION "\"},\"spans\":[");
  for (size_t k = 0; k < n; k++) {
    tspan *sp = v[k];
    if (k) r |= put(b, ",");
    r |= put_ids(b, sp, "spanId", "parentSpanId");
    r |= put_str(b, STR(sp, S_NAME), sp->len[S_NAME]);
    snprintf(num, sizeof num,
             ",\"kind\":%d,\"startTimeUnixNano\":\"%lld000\","
             "\"endTimeUnixNano\":\"%lld000\",\"attributes\":[",
             sp->server ? 2 : 3, (long long)sp->start_us, (long long)sp->end_us);
    r |= put(b, num);
    first = 1;
    r |= put_attr(b, &first, "hemera.topic", STR(sp, S_TOPIC), sp->len[S_TOPIC]);
    r |= put_attr(b, &first, "hemera.pattern", STR(sp, S_NAME), sp->len[S_NAME]);
    r |= put(b, ",{\"key\":\"hemera.pubsub\",\"value\":{\"boolValue\":");
    r |= put(b, sp->pubsub ? "true}}" : "false}}");
    r |= put_attr(b, &first, "rpc.system", "hemera", 6);
    r |= put_attr(b, &first, "messaging.system", "nats", 4);
    for (int a = 0; a < 4; a++) {
      int s = S_RID + a;
      if (sp->has[s])
        r |= put_attr(b, &first, hemera_attrs[a][0], STR(sp, s), sp->len[s]);
    }
    if (sp->error && sp->has[S_ENAME])
      r |= put_attr(b, &first, "error.type", STR(sp, S_ENAME), sp->len[S_ENAME]);
    r |= put(b, "]");
    if (sp->error) {
      r |= put(b, ",\"status\":{\"code\":2,\"message\":");
      r |= put_error_text(b, sp);
      r |= put(b, "}");
    }
    r |= put(b, "}");
  }
  return r | put(b, "]}]}]}");
}

static int render_zipkin(tracer *t, tspan **v, size_t n, hm_buf *b) {
  char num[96];
  int r = put(b, "[");
  for (size_t k = 0; k < n; k++) {
    tspan *sp = v[k];
    int first = 1;
    if (k) r |= put(b, ",");
    r |= put_ids(b, sp, "id", "parentId");
    r |= put_lower_str(b, STR(sp, S_NAME), sp->len[S_NAME]);
    snprintf(num, sizeof num, ",\"kind\":\"%s\",\"timestamp\":%lld,\"duration\":%lld",
             sp->server ? "SERVER" : "CLIENT", (long long)sp->start_us,
             (long long)(sp->end_us > sp->start_us ? sp->end_us - sp->start_us : 1));
    r |= put(b, num);
    r |= put(b, ",\"localEndpoint\":{\"serviceName\":");
    r |= put_lower_str(b, t->service, strlen(t->service));
    r |= put(b, "},\"tags\":{");
    r |= put_tag(b, &first, "hemera.topic", STR(sp, S_TOPIC), sp->len[S_TOPIC]);
    r |= put_tag(b, &first, "hemera.pattern", STR(sp, S_NAME), sp->len[S_NAME]);
    r |= put_tag(b, &first, "hemera.pubsub", sp->pubsub ? "true" : "false",
                 sp->pubsub ? 4 : 5);
    r |= put_tag(b, &first, "rpc.system", "hemera", 6);
    r |= put_tag(b, &first, "messaging.system", "nats", 4);
    for (int a = 0; a < 4; a++) {
      int s = S_RID + a;
      if (sp->has[s])
        r |= put_tag(b, &first, hemera_attrs[a][0], STR(sp, s), sp->len[s]);
    }
    if (sp->error) {
      if (sp->has[S_ENAME])
        r |= put_tag(b, &first, "error.type", STR(sp, S_ENAME), sp->len[S_ENAME]);
      r |= put(b, ",\"error\":");
      r |= put_error_text(b, sp);
    }
    r |= put(b, "}}");
  }
  return r | put(b, "]");
}

/* }==================================================================== */

/* {====================================================================
** Exporting
** ===================================================================== */

static void maybe_free(tracer *t) {
  if (!t->closed || !t->timer_closed || t->pending > 0) return;
  if (t->u) t->u->t = NULL;
  while (t->count) {
    free(t->ring[t->head]);
    t->head = (t->head + 1) % t->cap;
    t->count--;
  }
  free(t->ring);
  free(t->flight);
  free(t->service);
  free(t);
}

static void on_timer_closed(uv_handle_t *h) {
  tracer *t = h->data;
  t->timer_closed = 1;
  maybe_free(t);
}

/* Takes t off the state's list and closes its handles; with `run_fn` the
** close function is spawned (not at shutdown: nothing may call Lua). */
static void finalize(tracer *t, int run_fn) {
  hm_ctx *ctx = t->ctx;
  if (t->closed) return;
  t->closed = 1;
  if (t->prev) t->prev->next = t->next; else ctx->tracers = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  for (int k = 0; k < t->nex; k++) hm_http_client_close(t->ex[k].cl);
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
  if (t->close_ref != LUA_NOREF) {
    int ref = t->close_ref, cref;
    t->close_ref = LUA_NOREF;
    lua_State *co = run_fn ? hm_sched_spawn_begin(ctx, &cref) : NULL;
    if (co != NULL) {
      lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
      hm_sched_spawn_end(ctx, co, cref, 0);
    }
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, ref);
  }
}

static void drop_held(tracer *t) {
  while (t->count) {
    free(t->ring[t->head]);
    t->head = (t->head + 1) % t->cap;
    t->count--;
    t->dropped++;
  }
}

static void batch_done(tracer *t) {
  for (size_t k = 0; k < t->nflight; k++) free(t->flight[k]);
  if (t->failed) {
    t->dropped += t->nflight;
    t->failed_batches++;
    t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : t->interval_ms;
    if (t->backoff_ms > t->max_backoff_ms) t->backoff_ms = t->max_backoff_ms;
    t->retry_at = uv_now(t->ctx->loop) + t->backoff_ms;
  } else {
    t->exported += t->nflight;
    t->backoff_ms = 0;
    t->retry_at = 0;
  }
  t->nflight = 0;
  if (t->abandoned) return;
  if (t->closing && t->failed) drop_held(t);
  try_flush(t);
}

static void on_posted(hm_status st, int status, const char *err, void *arg) {
  exporter *e = arg;
  tracer *t = e->t;
  if (st != HM_OK || status < 200 || status > 299) {
    t->failed = 1;
    if (st != HM_OK)
      snprintf(t->last_error, sizeof t->last_error, "%s: %s",
               e->format == FMT_OTLP ? "otlp" : "zipkin", err);
    else
      snprintf(t->last_error, sizeof t->last_error,
               "%s: the collector answered HTTP %d",
               e->format == FMT_OTLP ? "otlp" : "zipkin", status);
  }
  if (--t->pending == 0) {
    batch_done(t);
    maybe_free(t);
  }
}

static void try_flush(tracer *t) {
  if (t->closed || t->nflight > 0) return;
  if (t->count == 0) {
    if (t->closing) finalize(t, 1);
    return;
  }
  if (!t->closing && t->retry_at && uv_now(t->ctx->loop) < t->retry_at) return;
  size_t n = t->count < t->batch ? t->count : t->batch;
  for (size_t k = 0; k < n; k++) {
    t->flight[k] = t->ring[t->head];
    t->head = (t->head + 1) % t->cap;
  }
  t->count -= n;
  t->nflight = n;
  t->failed = 0;
  t->pending = 1; /* held until every POST is started */
  for (int k = 0; k < t->nex; k++) {
    exporter *e = &t->ex[k];
    hm_buf b;
    hm_buf_init(&b);
    int r = e->format == FMT_OTLP ? render_otlp(t, t->flight, n, &b)
                                  : render_zipkin(t, t->flight, n, &b);
    hm_status st = r == 0 ? hm_http_client_post(e->cl, "application/json",
                                                b.data, b.len, on_posted, e)
                          : HM_NOMEM;
    hm_buf_free(&b);
    if (st == HM_OK) {
      t->pending++;
    } else {
      t->failed = 1;
      snprintf(t->last_error, sizeof t->last_error, "%s: %s",
               e->format == FMT_OTLP ? "otlp" : "zipkin", hm_status_text(st));
    }
  }
  if (--t->pending == 0) batch_done(t);
}

static void on_timer(uv_timer_t *h) { try_flush(h->data); }

/* }==================================================================== */

/* {====================================================================
** Lua
** ===================================================================== */

static int t_span(lua_State *L) {
  utracer *u = luaL_checkudata(L, 1, HM_TRACER_MT);
  tracer *t = u->t;
  static const int args[S_N] = {3, 4, 11, 12, 13, 14, 15, 16};
  size_t len[S_N], tl, sl, pl = 0, total = 0;
  const char *s[S_N];
  const char *kind = luaL_checkstring(L, 2);
  const char *tid = luaL_checklstring(L, 6, &tl);
  const char *sid = luaL_checklstring(L, 7, &sl);
  const char *pid = luaL_optlstring(L, 8, NULL, &pl);
  lua_Integer start = luaL_checkinteger(L, 9), end = luaL_checkinteger(L, 10);
  luaL_argcheck(L, tl == 32, 6, "must be 32 hex digits");
  luaL_argcheck(L, sl == 16, 7, "must be 16 hex digits");
  luaL_argcheck(L, pid == NULL || pl == 16, 8, "must be 16 hex digits");
  for (int k = 0; k < S_N; k++) {
    s[k] = lua_type(L, args[k]) == LUA_TSTRING ? lua_tolstring(L, args[k], &len[k]) : NULL;
    if (s[k] == NULL) len[k] = 0;
    total += len[k] + 1;
  }
  if (t == NULL || t->closing || t->closed) {
    /* A handler that outlived close (or the core's shutdown, which
    ** finalizes without closing): its span has nowhere to go. */
    if (t) t->dropped++;
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t->count == t->cap) {
    t->dropped++;
    lua_pushboolean(L, 0);
    return 1;
  }
  tspan *sp = malloc(sizeof *sp + total);
  if (sp == NULL) return luaL_error(L, "out of memory");
  sp->start_us = start;
  sp->end_us = end;
  sp->server = strcmp(kind, "server") == 0;
  sp->pubsub = (unsigned char)lua_toboolean(L, 5);
  memcpy(sp->trace_id, tid, 33);
  memcpy(sp->span_id, sid, 17);
  sp->has_parent = pid != NULL;
  if (pid) memcpy(sp->parent_id, pid, 17); else sp->parent_id[0] = '\0';
  size_t off = 0;
  for (int k = 0; k < S_N; k++) {
    sp->has[k] = s[k] != NULL;
    sp->off[k] = (uint32_t)off;
    sp->len[k] = (uint32_t)len[k];
    if (len[k]) memcpy(sp->data + off, s[k], len[k]);
    sp->data[off + len[k]] = '\0';
    off += len[k] + 1;
  }
  sp->error = sp->has[S_ENAME] || sp->has[S_EMSG];
  t->ring[(t->head + t->count) % t->cap] = sp;
  t->count++;
  /* A full batch goes out on the next loop iteration, not from here. */
  if (t->count == t->batch) uv_timer_start(&t->timer, on_timer, 0, t->interval_ms);
  lua_pushboolean(L, 1);
  return 1;
}

static int t_stats(lua_State *L) {
  utracer *u = luaL_checkudata(L, 1, HM_TRACER_MT);
  tracer *t = u->t;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, t ? (lua_Integer)(t->count + t->nflight) : 0);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, t ? (lua_Integer)t->dropped : 0);
  lua_setfield(L, -2, "dropped");
  lua_pushinteger(L, t ? (lua_Integer)t->exported : 0);
  lua_setfield(L, -2, "exported");
  lua_pushinteger(L, t ? (lua_Integer)t->failed_batches : 0);
  lua_setfield(L, -2, "failedBatches");
  if (t && t->last_error[0]) {
    lua_pushstring(L, t->last_error);
    lua_setfield(L, -2, "lastError");
  }
  return 1;
}

static int t_close(lua_State *L) {
  utracer *u = luaL_checkudata(L, 1, HM_TRACER_MT);
  tracer *t = u->t;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (t == NULL || t->closing || t->closed) {
    /* A close_ref taken after shutdown's finalize would never be run. */
    lua_pushboolean(L, 1);
    return 1;
  }
  t->closing = 1;
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    t->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  try_flush(t);
  lua_pushboolean(L, 1);
  return 1;
}

static int t_gc(lua_State *L) {
  /* Only reached once nothing references the tracer (the plugin closes it
  ** at close) or at lua_close, after shutdown already let go of it. */
  utracer *u = luaL_checkudata(L, 1, HM_TRACER_MT);
  tracer *t = u->t;
  u->t = NULL;
  if (t) t->u = NULL;
  if (t && !t->closed) {
    t->abandoned = 1;
    drop_held(t);
    finalize(t, 0);
  }
  return 0;
}

static unsigned opt_uint(lua_State *L, const char *key, unsigned def,
                         unsigned min, unsigned max) {
  lua_getfield(L, 1, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  int isnum;
  lua_Integer v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || lua_type(L, -1) != LUA_TNUMBER || v < min || v > max)
    luaL_error(L, "hemera.tracing: option '%s' must be an integer from %d to "
                  "%d, got %s",
               key, (int)min, (int)max, luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
  return (unsigned)v;
}

static int l_tracer(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  static const char *const urls[2] = {"otlp", "zipkin"};
  const char *url[2];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "service");
  const char *service = lua_tostring(L, -1);
  if (service == NULL || lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "hemera.tracing: option 'service' must be a string, got %s",
                      luaL_typename(L, -1));
  for (int k = 0; k < 2; k++) {
    lua_getfield(L, 1, urls[k]);
    url[k] = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "hemera.tracing: option '%s' must be a URL string, got %s",
                        urls[k], luaL_typename(L, -1));
  }
  if (url[0] == NULL && url[1] == NULL)
    return luaL_error(L, "hemera.tracing: give 'otlp' (e.g. "
                         "\"http://127.0.0.1:4318/v1/traces\") or 'zipkin' (e.g. "
                         "\"http://127.0.0.1:9411/api/v2/spans\"), or both");
  unsigned cap = opt_uint(L, "maxQueue", 2048, 1, 1u << 24);
  unsigned batch = opt_uint(L, "batchSize", 512, 1, 1u << 20);
  unsigned interval = opt_uint(L, "interval", 1000, 1, 3600000);
  unsigned timeout = opt_uint(L, "timeout", 5000, 1, 3600000);
  unsigned maxb = opt_uint(L, "maxBackoff", 30000, 1, 3600000);
  if (batch > cap)
    return luaL_error(L, "hemera.tracing: option 'batchSize' (%d) must not be "
                         "over 'maxQueue' (%d)", (int)batch, (int)cap);
  if (ctx->shutdown) return luaL_error(L, "hemera.tracing: shutting down");
  tracer *t = calloc(1, sizeof *t);
  if (t == NULL) return luaL_error(L, "out of memory");
  t->ring = calloc(cap, sizeof *t->ring);
  t->flight = calloc(batch, sizeof *t->flight);
  t->service = strdup(service);
  if (!t->ring || !t->flight || !t->service) {
    free(t->ring);
    free(t->flight);
    free(t->service);
    free(t);
    return luaL_error(L, "out of memory");
  }
  t->ctx = ctx;
  t->cap = cap;
  t->batch = batch;
  t->interval_ms = interval;
  t->timeout_ms = timeout;
  t->max_backoff_ms = maxb;
  t->close_ref = LUA_NOREF;
  for (int k = 0; k < 2; k++) {
    char err[300];
    if (url[k] == NULL) continue;
    exporter *e = &t->ex[t->nex];
    hm_status st = hm_http_client_new(ctx->loop, url[k], timeout, &e->cl, err,
                                      sizeof err);
    if (st != HM_OK) {
      for (int j = 0; j < t->nex; j++) hm_http_client_close(t->ex[j].cl);
      free(t->ring);
      free(t->flight);
      free(t->service);
      free(t);
      return luaL_error(L, "hemera.tracing: option '%s': %s", urls[k],
                        st == HM_INVAL ? err : hm_status_text(st));
    }
    e->format = k == 0 ? FMT_OTLP : FMT_ZIPKIN;
    e->t = t;
    t->nex++;
  }
  uv_timer_init(ctx->loop, &t->timer);
  t->timer.data = t;
  uv_timer_start(&t->timer, on_timer, interval, interval);
  /* The exporter never keeps a run alive: hemera:close flushes it. */
  uv_unref((uv_handle_t *)&t->timer);
  t->next = ctx->tracers;
  if (ctx->tracers) ctx->tracers->prev = t;
  ctx->tracers = t;
  utracer *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->t = t;
  t->u = u;
  luaL_setmetatable(L, HM_TRACER_MT);
  return 1;
}

void hm_lua_close_tracers(hm_ctx *ctx) {
  while (ctx->tracers) {
    tracer *t = ctx->tracers;
    t->abandoned = 1;
    drop_held(t);
    finalize(t, 0);
  }
}

static const luaL_Reg tracer_methods[] = {{"span", t_span},
                                          {"stats", t_stats},
                                          {"close", t_close},
                                          {NULL, NULL}};

void hm_lua_open_tracing(lua_State *L) {
  luaL_newmetatable(L, HM_TRACER_MT);
  luaL_newlib(L, tracer_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, t_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_tracer);
  lua_setfield(L, -2, "tracer");
  lua_pushcfunction(L, l_trace_hex);
  lua_setfield(L, -2, "trace_hex");
  lua_pushcfunction(L, l_trace_now);
  lua_setfield(L, -2, "trace_now");
  lua_pushcfunction(L, l_trace_parts);
  lua_setfield(L, -2, "trace_parts");
  lua_pushcfunction(L, l_trace_sampled);
  lua_setfield(L, -2, "trace_sampled");
}
