/*
** hm_lua_conn.c: connections and subscriptions for Lua.
**
** One convention for every function and method here:
**  - misuse raises: a wrong argument type or range, an option that is not
**    one, an await outside a Hemera coroutine or a second waiter, a Conn
**    used before its first connect is over (conn:wait_connected first) or
**    after hemera.core was shut down in the state;
**  - a failure the caller cannot rule out returns nil, message, code: the
**    connection closed under it (a handler outliving close, NATS giving
**    up), a timeout, a name or payload NATS refuses, a server that cannot
**    be reached. `code` is the core status' name (HM_CLOSED, HM_TIMEOUT,
**    HM_SUBJECT, HM_LIMIT, HM_NATS, HM_CONNECT, ...), for callers to tell
**    them apart; `message` says it in words ("closed" and "timeout" for
**    those two);
**  - success returns a value, true when there is nothing more to say;
**  - queries answer in every state: is_closed, stats (the last counters
**    once closed), cancel, sub:delivered, sub:active, sub:draining.
** Completion callbacks take the failure word or nil first: cb(err, ...).
**
** core.connect(opts [, on_event]) -> conn        (the connect goes on)
** conn:wait_connected() -> true | nil, message, code   (suspends)
**     message names every URL tried: "could not connect to NATS (url,
**     url): what cnats said (n attempts, ms apart)"
** core.servers(value [, field]) -> {url...} | nil, message
**     value: a URL, a comma-separated list of URLs (NATS' convention),
**     or a list of either; entries trimmed and checked (hm_conn_check_url)
** core.subject_check(name, kind [, field]) -> true | nil, message, code
**     kind "publish" | "subscribe" | "reply" | "queue" (hm_subject.h)
** conn:publish(subject, data [, reply [, headers]]) -> true | nil, message, code
**     headers: {name = value} (strings), sent as NATS headers
** conn:subscribe(subject, queue|nil, max, fn [, ctx_mt]) -> sub | nil, ...
**     fn(subject, reply, data); with ctx_mt (a Hemera topic) fn(ctx) instead,
**     ctx = setmetatable({topic = subject, _msg = Msg}, ctx_mt), the Msg
**     holding the payload undecoded (hm_lua_envelope.c)
** conn:request(subject, data, timeout_ms, max [, cb [, as_msg [, headers]]]) ->
**     without cb (in a Hemera coroutine): data | nil, message, code
**     (suspends until the outcome)
**     with cb: request id | nil, message, code; cb(err|nil, data, done)
**     runs once per reply; as_msg: data is a Msg rather than a string;
**     headers ({name = value}) go out as NATS headers when max is 1 (the
**     multiplexer takes headers on single-reply requests only)
** conn:act(actx, pattern, scope_meta, method, rid, sid, tid, psid, ts,
**     pubsub, timeout_ms [, max [, cb [, headers]]]): an act's request
**     written into the shared envelope buffer (hm_env_act) and sent from
**     it to pattern.topic: pubsub -> true | nil, message, code; else the
**     outcomes of conn:request with as_msg. nil, message, "HM_ENCODE"
**     when the request cannot be written (nothing is sent)
** conn:trace_headers(on) -> true: from now on a Hemera topic's context
**     gets the message's W3C `traceparent` and `tracestate` headers, when
**     it has them, as ctx._traceparent and ctx._tracestate (hemera.tracing)
** conn:flush([timeout_ms [, cb]]) -> true | nil, message, code
**     without cb suspends until the server has processed everything sent
**     so far; with cb returns at once and cb(err|nil) runs then
** conn:reply(ctx, result, err, skipped) -> "sent" | "noreply" |
**     nil, message, code; code is nil when the reply could not be encoded
**     (hm_lua_envelope.c), "HM_CLOSED" when the connection is closed
** conn:cancel(id) -> whether it was pending
** conn:close([fn]) -> true   fn() runs once cnats has let go
** conn:credits(max) -> true | nil, message, code;  conn:done() -> true
** conn:stats() -> table;  conn:is_closed() -> bool
** conn:max_payload() -> bytes | nil, message, code
** sub:unsubscribe() -> true;  sub:delivered(), sub:active()
** sub:drain([fn [, timeout_ms]]) -> true | nil, message, code
**     fn(nil | "timeout" | "closed") runs once nothing the server sent the
**     subscription before the drain is left undelivered (hm_sub_drain)
** sub:draining() -> bool
**
** Every Lua callback runs in a pooled coroutine through the scheduler. A
** bad subject, reply subject or queue group is refused before it reaches
** NATS with nil, message, "HM_SUBJECT" (the message names the rule and
** shows the value escaped and cut), so the connection is untouched.
*/
#include <stdlib.h>
#include <string.h>

#include "hm_lua_envelope.h"

/* A request in flight: who to complete. Exactly one of co/cb_ref. */
typedef struct lreq {
  hm_ctx *ctx;
  lconn *owner;
  hm_wait wait; /* the awaiting coroutine, if any */
  int cb_ref;   /* callback function */
  int as_msg; /* replies come as Msg (hm_lua_envelope.h), not strings */
  int flush;  /* a round trip: true, not the (empty) reply, on success */
} lreq;

/* lconn.state: the first connect. */
enum { LC_CONNECTING = 0, LC_UP, LC_FAILED, LC_CANCELLED };

/* The Conn at idx, for an operation that needs the connection up: using
** it before the first connect is over is a sequencing mistake, so it
** raises. Once closed, lc->c is NULL (or the core says HM_CLOSED). */
/* luaL_checkudata for the Conn methods, which have the Conn metatable as
** their upvalue: luaL_checkudata finds it by name, making and comparing a
** string, ~330 instructions, and a request makes two or three calls. */
static lconn *check_conn(lua_State *L, int idx) {
  lconn *lc = lua_touserdata(L, idx);
  int ok = lc != NULL && lua_getmetatable(L, idx);
  if (ok) {
    ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  if (!ok) luaL_typeerror(L, idx, HM_CONN_MT);
  return lc;
}

static lconn *check_up(lua_State *L, int idx) {
  lconn *lc = check_conn(L, idx);
  if (lc->ctx->shutdown)
    luaL_error(L, "connection is closed: hemera.core was shut down in this "
                  "state (hm_lua_shutdown or lua_close ran)");
  if (lc->state == LC_CONNECTING)
    luaL_error(L, "the connection is not up yet: call conn:wait_connected() "
                  "first");
  return lc;
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  lua_pushstring(L, hm_status_name(HM_CLOSED));
  return 3;
}

/* For operations whose failure is an outcome, not a misuse: a connection
** that closed under a running handler. */
#define RETURN_IF_CLOSED(L, lc)                                            \
  do {                                                                     \
    if ((lc)->c == NULL) return push_closed(L);                            \
  } while (0)

static const char *status_word(hm_status st) {
  switch (st) {
    case HM_TIMEOUT: return "timeout";
    case HM_CLOSED: return "closed";
    default: return hm_status_text(st);
  }
}

/* nil, message, code: the code is the status' name ("HM_SUBJECT", ...)
** so callers can tell a bad name from a closed connection. */
static int push_status(lua_State *L, hm_conn_t *c, hm_status st) {
  lua_pushnil(L);
  if (c != NULL &&
      (st == HM_LIMIT || st == HM_INVAL || st == HM_NATS || st == HM_SUBJECT))
    lua_pushstring(L, hm_conn_error(c));
  else
    lua_pushstring(L, status_word(st));
  lua_pushstring(L, hm_status_name(st));
  return 3;
}

/* nil, message, code for a first connect that is over without a
** connection; the Conn userdata is at idx (its user value holds the
** message). */
static int push_connect_failure(lua_State *L, lconn *lc, int idx) {
  if (lc->state != LC_FAILED) return push_closed(L);
  lua_pushnil(L);
  lua_getiuservalue(L, idx, 1);
  lua_pushstring(L, hm_status_name(HM_CONNECT));
  return 3;
}

/* {====================================================================
** Callbacks from the core (loop thread, no Lua running)
** ===================================================================== */

static void unref(hm_ctx *ctx, int *ref) {
  if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

static void on_event(hm_conn_t *c, hm_conn_event ev, const char *text,
                     void *arg) {
  lconn *lc = arg;
  hm_ctx *ctx = lc->ctx;
  static const char *const names[] = {"", "disconnected", "reconnected",
                                      "error", "closed"};
  lua_State *co;
  int ref;
  if (lc->event_ref == LUA_NOREF) return;
  co = hm_sched_spawn_begin(ctx, &ref);
  if (co == NULL) return;
  lua_rawgeti(co, LUA_REGISTRYINDEX, lc->event_ref);
  lua_pushstring(co, names[ev]);
  lua_pushstring(co, text);
  hm_sched_spawn_end(ctx, co, ref, 2);
}

/* The W3C trace context of m, into the context table on top of co. Only
** when hemera.tracing asked (conn:trace_headers): cnats parses a message's
** headers the first time one is asked for. */
static void push_trace_headers(lua_State *co, natsMsg *m) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, "traceparent", &v) != NATS_OK || v == NULL) return;
  lua_pushstring(co, v);
  lua_setfield(co, -2, "_traceparent");
  if (natsMsgHeader_Get(m, "tracestate", &v) == NATS_OK && v != NULL) {
    lua_pushstring(co, v);
    lua_setfield(co, -2, "_tracestate");
  }
}

int hm_lua_headers(lua_State *L, int idx, const char **hdrs, int max) {
  int n = 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "headers must map strings to strings, got %s = %s",
                        luaL_typename(L, -2), luaL_typename(L, -1));
    if (n == max) return luaL_error(L, "at most %d headers", max);
    /* Both strings stay alive: the table holds them. */
    hdrs[2 * n] = lua_tostring(L, -2);
    hdrs[2 * n + 1] = lua_tostring(L, -1);
    n++;
    lua_pop(L, 1);
  }
  return n;
}

static void on_msg(hm_sub_t *s, natsMsg *m, void *arg) {
  lsub *ls = arg;
  hm_ctx *ctx = ls->owner->ctx;
  const char *reply = natsMsg_GetReply(m);
  int ref;
  lua_State *co = hm_sched_spawn_begin(ctx, &ref);
  if (co != NULL && ls->mt_ref != LUA_NOREF) {
    /* A Hemera topic: fn(ctx), the context made here with the message in
    ** it, undecoded (its parts materialise when read). */
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->fn_ref);
    lua_createtable(co, 0, 8);
    hm_pushk(co, ctx, HM_K_TOPIC);
    lua_pushstring(co, natsMsg_GetSubject(m));
    lua_rawset(co, -3);
    hm_pushk(co, ctx, HM_K_MSG);
    hm_env_push_msg(co, ctx, m);
    if (ls->ep) hm_micro_arrived(co, ls);
    lua_rawset(co, -3);
    if (ls->owner->trace_hdrs) push_trace_headers(co, m);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->mt_ref);
    lua_setmetatable(co, -2);
    hm_sched_spawn_end(ctx, co, ref, 1);
  } else if (co != NULL) {
    lua_rawgeti(co, LUA_REGISTRYINDEX, ls->fn_ref);
    lua_pushstring(co, natsMsg_GetSubject(m));
    if (reply) lua_pushstring(co, reply); else lua_pushnil(co);
    lua_pushlstring(co, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    hm_sched_spawn_end(ctx, co, ref, 3);
  }
  hm_msg_destroy(m);
}

static void on_reply(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                     int done, void *arg) {
  lreq *r = arg;
  hm_ctx *ctx = r->ctx;
  lua_State *co;
  int ref;
  if (r->wait.co != NULL) {
    co = r->wait.co;
    /* Stack room for the resume values; the yielded ones are gone. */
    lua_checkstack(co, 3);
  } else {
    co = hm_sched_spawn_begin(ctx, &ref);
    if (co != NULL) lua_rawgeti(co, LUA_REGISTRYINDEX, r->cb_ref);
  }
  if (co != NULL && r->wait.co != NULL) {
    /* The awaited call returns: data (true for a flush) | nil, word, code. */
    if (st != HM_OK) {
      push_status(co, NULL, st);
      hm_sched_wake(ctx, &r->wait, 3);
    } else {
      if (r->flush)
        lua_pushboolean(co, 1);
      else if (r->as_msg)
        hm_env_push_msg(co, ctx, m);
      else
        lua_pushlstring(co, natsMsg_GetData(m),
                        (size_t)natsMsg_GetDataLength(m));
      hm_sched_wake(ctx, &r->wait, 1);
    }
  } else if (co != NULL) {
    /* cb(err | nil, data, done) */
    if (st == HM_OK) {
      lua_pushnil(co);
      if (r->as_msg)
        hm_env_push_msg(co, ctx, m);
      else
        lua_pushlstring(co, natsMsg_GetData(m),
                        (size_t)natsMsg_GetDataLength(m));
    } else {
      lua_pushstring(co, status_word(st));
      lua_pushnil(co);
    }
    lua_pushboolean(co, done);
    hm_sched_spawn_end(ctx, co, ref, 3);
  }
  hm_msg_destroy(m);
  if (done) {
    unref(ctx, &r->cb_ref);
    free(r);
  }
}

/* The core lets go of the connection (closed, or its first connect
** failed): drop every pointer into it, keep its last counters. */
static void on_closed(hm_conn_t *c, void *arg) {
  lconn *lc = arg;
  hm_ctx *ctx = lc->ctx;
  lsub *ls;
  hm_conn_get_stats(c, &lc->last);
  lc->c = NULL;
  /* A wait_connected still parked (the state shuts down while the first
  ** connect is under way): its record lives in the userdata, which may go
  ** once the anchor below is dropped. */
  hm_sched_release(ctx, &lc->wait);
  while ((ls = lc->subs) != NULL) {
    lc->subs = ls->next;
    ls->s = NULL;
    ls->prev = ls->next = NULL;
    unref(ctx, &ls->fn_ref);
    unref(ctx, &ls->mt_ref);
    unref(ctx, &ls->self_ref);
  }
  if (lc->prev) lc->prev->next = lc->next; else ctx->conns = lc->next;
  if (lc->next) lc->next->prev = lc->prev;
  lc->prev = lc->next = NULL;
  if (lc->close_ref != LUA_NOREF) {
    int ref;
    lua_State *co = hm_sched_spawn_begin(ctx, &ref);
    if (co != NULL) {
      lua_rawgeti(co, LUA_REGISTRYINDEX, lc->close_ref);
      hm_sched_spawn_end(ctx, co, ref, 0);
    }
  }
  unref(ctx, &lc->close_ref);
  unref(ctx, &lc->event_ref);
  unref(ctx, &lc->self_ref);
}

/* The first connect is over: wakes conn:wait_connected's coroutine, if
** one waits. On HM_CONNECT the core frees c right after this returns;
** on HM_CLOSED (a close came first, from inside hm_conn_close) its
** `closed` callback follows. */
static void on_connected(hm_conn_t *c, hm_status st, const char *text,
                         void *arg) {
  lconn *lc = arg;
  hm_ctx *ctx = lc->ctx;
  lua_State *L = ctx->L, *co = lc->wait.co;
  lc->state = st == HM_OK ? LC_UP : st == HM_CONNECT ? LC_FAILED
                                                     : LC_CANCELLED;
  if (st == HM_CONNECT) {
    /* The message stays with the Conn for later calls to wait_connected:
    ** its user value, the list of URLs until now. */
    lua_checkstack(L, 3);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);  /* conn */
    lua_getiuservalue(L, -1, 1);                      /* conn urls */
    lua_pushfstring(L, "could not connect to NATS (%s): %s",
                    lua_tostring(L, -1), text);       /* conn urls msg */
    lua_setiuservalue(L, -3, 1);                      /* conn urls */
    lua_pop(L, 2);
  }
  if (co != NULL) {
    lua_checkstack(co, 4);
    if (st == HM_OK) {
      lua_pushboolean(co, 1);
      hm_sched_wake(ctx, &lc->wait, 1);
    } else {
      lua_rawgeti(co, LUA_REGISTRYINDEX, lc->self_ref); /* conn */
      push_connect_failure(co, lc, lua_gettop(co));    /* conn nil msg code */
      lua_remove(co, -4);
      hm_sched_wake(ctx, &lc->wait, 3);
    }
  }
  if (st == HM_CONNECT) on_closed(c, lc);
}

/* }==================================================================== */

/* {====================================================================
** Connect
** ===================================================================== */

static const char *opt_string(lua_State *L, int t, const char *k) {
  const char *v = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING) v = lua_tostring(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "option '%s' must be a string, got %s", k,
               luaL_typename(L, -1));
  lua_pop(L, 1); /* the string stays alive: the options table holds it */
  return v;
}

static int opt_int(lua_State *L, int t, const char *k, int def) {
  int v = def, ty = lua_getfield(L, t, k);
  if (ty == LUA_TNUMBER && lua_isinteger(L, -1)) v = (int)lua_tointeger(L, -1);
  else if (ty == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "option '%s' must be an integer, got %s", k,
               luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* maxPendingBytes: -1 (no limit) or 1..INT32_MAX; nil or 0: the core's
** default (HM_CONN_PENDING_BYTES). */
static int64_t opt_pending_bytes(lua_State *L, int t) {
  lua_Integer v = 0;
  int ty = lua_getfield(L, t, "maxPendingBytes");
  if (ty == LUA_TNUMBER && lua_isinteger(L, -1)) v = lua_tointeger(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "option 'maxPendingBytes' must be an integer, got %s",
               luaL_typename(L, -1));
  if (v < -1 || v > INT32_MAX)
    luaL_error(L, "option 'maxPendingBytes' must be -1 (no limit) or 1..%d "
               "bytes, got %I", (int)INT32_MAX, v);
  lua_pop(L, 1);
  return (int64_t)v;
}

/* Pushes the URL with any user:password@ or token@ part masked, for
** messages and logs. */
static void push_redacted(lua_State *L, const char *url) {
  size_t n = strlen(url) + 4; /* "***" may stand for an empty user part */
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n);
  hm_conn_redact_url(url, p, n);
  luaL_pushresultsize(&b, strlen(p));
}

/* core.redact(url) -> the URL with its credentials masked. */
static int l_redact(lua_State *L) {
  push_redacted(L, luaL_checkstring(L, 1));
  return 1;
}

#define MAX_SERVERS 32

/* Appends the URLs of `s` (a comma-separated list, entries trimmed) to
** the table at t, each checked. Returns 1, or 0 with the message pushed. */
static int add_servers(lua_State *L, int t, const char *s, size_t len,
                       const char *field) {
  const char *p = s, *end = s + len;
  for (;;) {
    const char *a = p, *comma = memchr(p, ',', (size_t)(end - p));
    const char *e = comma ? comma : end;
    int n = (int)lua_rawlen(L, t);
    char err[512];
    while (a < e && (*a == ' ' || *a == '\t')) a++;
    while (e > a && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (n == MAX_SERVERS) {
      lua_pushfstring(L, "%s: more than %d server URLs", field, MAX_SERVERS);
      return 0;
    }
    if (hm_conn_check_url(a, (size_t)(e - a), err, sizeof err) != HM_OK) {
      lua_pushfstring(L, "%s: URL %d: %s", field, n + 1, err);
      return 0;
    }
    lua_pushlstring(L, a, (size_t)(e - a));
    lua_rawseti(L, t, n + 1);
    if (comma == NULL) return 1;
    p = comma + 1;
  }
}

/* Pushes the list of URLs of the value at idx (see core.servers), or nil
** and the message. */
static int push_servers(lua_State *L, int idx, const char *field) {
  int t;
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  t = lua_gettop(L);
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (add_servers(L, t, s, len, field)) return 1;
  } else if (lua_type(L, idx) == LUA_TTABLE) {
    lua_Integer i, n = luaL_len(L, idx);
    if (n == 0) {
      lua_pushfstring(L, "%s: the list of server URLs is empty", field);
    } else {
      for (i = 1; i <= n; i++) {
        size_t len;
        const char *s;
        if (lua_rawgeti(L, idx, i) != LUA_TSTRING) {
          lua_pushfstring(L, "%s[%I] must be a URL string, got %s", field, i,
                          luaL_typename(L, -1));
          lua_remove(L, -2);
          break;
        }
        s = lua_tolstring(L, -1, &len);
        if (!add_servers(L, t, s, len, field)) {
          lua_remove(L, -2);
          break;
        }
        lua_pop(L, 1);
      }
      if (i > n) return 1;
    }
  } else {
    lua_pushfstring(L, "%s must be a URL, a comma-separated list of URLs or "
                    "a list of them, got %s", field, luaL_typename(L, idx));
  }
  lua_remove(L, t); /* the message stays */
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* core.servers(value [, field]) -> {url...} | nil, message: NATS' own
** conventions for a server list, checked as a connect would. */
static int l_servers(lua_State *L) {
  luaL_checkany(L, 1);
  return push_servers(L, 1, luaL_optstring(L, 2, "servers"));
}

/* core.connect{servers = url | "url,url" | {url...}, name, user, password,
**   token, tls = {ca, cert, key, verify = true}, reconnect = true,
**   maxReconnect, reconnectWait, connectTimeout, retryOnFailedConnect,
**   maxPendingMsgs, maxPendingBytes} [, on_event(event, text)]
** Starts connecting and returns the Conn at once; wait_connected says
** how it went. Bad options raise. */
static int l_connect(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  hm_conn_opts o;
  const char *servers[MAX_SERVERS];
  char err[512];
  lconn *lc;
  hm_status st;
  int n = 0, i, list;
  luaL_Buffer urls;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  memset(&o, 0, sizeof o);
  if (lua_getfield(L, 1, "servers") == LUA_TNIL) {
    lua_pushliteral(L, "nats://127.0.0.1:4222");
    lua_replace(L, -2);
  }
  if (push_servers(L, -1, "option 'servers'") != 1)
    return luaL_error(L, "%s", lua_tostring(L, -1));
  lua_replace(L, -2);
  list = lua_gettop(L); /* 3: the URLs, kept alive here */
  n = (int)lua_rawlen(L, list);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    servers[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  o.servers = servers;
  o.nservers = n;
  o.name = opt_string(L, 1, "name");
  o.user = opt_string(L, 1, "user");
  o.password = opt_string(L, 1, "password");
  o.token = opt_string(L, 1, "token");
  o.allow_reconnect = opt_int(L, 1, "reconnect", -1);
  o.max_reconnect = opt_int(L, 1, "maxReconnect", 0);
  o.reconnect_wait_ms = opt_int(L, 1, "reconnectWait", 0);
  o.connect_timeout_ms = opt_int(L, 1, "connectTimeout", 0);
  o.retry_connect = opt_int(L, 1, "retryOnFailedConnect", 0);
  o.max_pending_msgs = opt_int(L, 1, "maxPendingMsgs", 0);
  o.max_pending_bytes = opt_pending_bytes(L, 1);
  if (lua_getfield(L, 1, "tls") == LUA_TTABLE) { /* 4 */
    int t = lua_gettop(L);
    o.secure = 1;
    o.tls_ca = opt_string(L, t, "ca");
    o.tls_cert = opt_string(L, t, "cert");
    o.tls_key = opt_string(L, t, "key");
    o.tls_skip_verify = !opt_int(L, t, "verify", 1);
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "option 'tls' must be a table");
  }
  /* Keep the tls table on the stack: its strings are in use. The URLs,
  ** masked, become the Conn's user value, for the failure message. */
  luaL_buffinit(L, &urls);
  for (i = 0; i < n; i++) {
    if (i > 0) luaL_addstring(&urls, ", ");
    push_redacted(L, servers[i]);
    luaL_addvalue(&urls);
  }
  luaL_pushresult(&urls); /* 5 */
  lc = lua_newuserdatauv(L, sizeof *lc, 1); /* 6 */
  memset(lc, 0, sizeof *lc);
  lc->ctx = ctx;
  lc->self_ref = lc->event_ref = lc->close_ref = LUA_NOREF;
  lc->wait = (hm_wait)HM_WAIT_INIT;
  lc->state = LC_CONNECTING;
  luaL_setmetatable(L, HM_CONN_MT);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);
  st = hm_conn_connect(ctx->loop, &o, on_event, on_connected, lc, &lc->c, err,
                       sizeof err);
  if (st == HM_INVAL) return luaL_error(L, "%s", err);
  if (st == HM_NOMEM) return luaL_error(L, "out of memory");
  if (st != HM_OK) {
    /* Refused before any attempt (a TLS file): a Conn that failed, so the
    ** failure comes out of wait_connected like any other. */
    lc->state = LC_FAILED;
    lua_getiuservalue(L, -1, 1);
    lua_pushfstring(L, "could not connect to NATS (%s): %s",
                    lua_tostring(L, -1), err);
    lua_setiuservalue(L, -3, 1);
    lua_pop(L, 1);
    return 1;
  }
  lua_pushvalue(L, -1);
  lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, 2)) {
    lua_pushvalue(L, 2);
    lc->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lc->next = ctx->conns;
  if (ctx->conns) ctx->conns->prev = lc;
  ctx->conns = lc;
  return 1;
}

/* conn:wait_connected(): in a Hemera coroutine, the first connect's
** outcome, waiting for it if it is not over. One waiter at a time. */
static int c_wait_connected(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  if (lc->state == LC_UP) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (lc->state != LC_CONNECTING) return push_connect_failure(L, lc, 1);
  hm_sched_check(L, lc->ctx, "wait_connected");
  if (lc->wait.co != NULL)
    return luaL_error(L, "another coroutine already waits for this "
                         "connection");
  hm_sched_park(L, lc->ctx, &lc->wait, NULL);
  return lua_yield(L, 0);
}

/* }==================================================================== */

/* {====================================================================
** Conn methods
** ===================================================================== */

/* A Lua string may hold NULs, where cnats (which takes C strings) would
** cut the name short and send another one than asked. Names with a NUL
** are refused here, in the core's own words; the core checks the rest.
** Pushes nil, message, code and returns 3, or returns 0. */
static int refuse_nul(lua_State *L, const char *subj, size_t slen,
                      hm_subject_kind kind, const char *other, size_t olen) {
  char err[768];
  if (memchr(subj, '\0', slen) == NULL &&
      (other == NULL || memchr(other, '\0', olen) == NULL))
    return 0;
  if (hm_subject_check_line(subj, slen, kind, other, olen, err, sizeof err) ==
      HM_OK)
    return 0; /* not reached: a NUL always fails */
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, hm_status_name(HM_SUBJECT));
  return 3;
}

/* Publishes data (headers only without a reply subject): the outcome
** pushed, true or nil, message, code; returns their count. Raises
** nothing: a caller may hold the shared envelope buffer. */
static int send_publish(lua_State *L, lconn *lc, const char *subj,
                        size_t slen, const char *reply, size_t rlen,
                        const char *data, size_t len, const char **hdrs,
                        int nhdr) {
  RETURN_IF_CLOSED(L, lc);
  if (refuse_nul(L, subj, slen, HM_SUBJ_PUBLISH, reply, rlen)) return 3;
  hm_status st = nhdr ? hm_conn_publish_hdrs(lc->c, subj, data, len, hdrs, nhdr)
                      : hm_conn_publish(lc->c, subj, reply, data, len);
  if (st != HM_OK) return push_status(L, lc->c, st);
  lua_pushboolean(L, 1);
  return 1;
}

static int c_publish(lua_State *L) {
  lconn *lc = check_up(L, 1);
  size_t slen, rlen = 0, len;
  const char *subj = luaL_checklstring(L, 2, &slen);
  const char *data = luaL_checklstring(L, 3, &len);
  const char *reply = luaL_optlstring(L, 4, NULL, &rlen);
  const char *hdrs[2 * HM_LUA_MAX_HEADERS];
  int nhdr = lua_isnoneornil(L, 5) ? 0 : hm_lua_headers(L, 5, hdrs, HM_LUA_MAX_HEADERS);
  luaL_argcheck(L, nhdr == 0 || reply == NULL, 5, "headers with a reply subject are not supported");
  return send_publish(L, lc, subj, slen, reply, rlen, data, len, hdrs, nhdr);
}

/* conn:reply(ctx, result, err, skipped): see hm_lua_envelope.c. The
** context's own fields (rawget) say what changed: _msg, replyTo, meta,
** trace, request. Published from the shared buffer: no Lua string. */
static int c_reply(lua_State *L) {
  static const int fields[] = {HM_K_MSG, HM_K_REPLYTO, HM_K_META, HM_K_TRACE,
                               HM_K_REQUEST};
  lconn *lc = check_up(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 5);
  for (int k = 0; k < 5; k++) { /* slots 6..10 */
    hm_pushk(L, lc->ctx, fields[k]);
    lua_rawget(L, 2);
  }
  hm_lmsg *g = hm_env_check_msg(L, lc->ctx, 6);
  size_t tlen = 0;
  const char *to = NULL;
  if (!lua_isnil(L, 7)) {
    to = luaL_checklstring(L, 7, &tlen);
  } else if ((to = hm_env_reply_to(g)) != NULL) {
    tlen = g->rlen;
  }
  if (to == NULL) {
    hm_micro_replied(L, 6, NULL, NULL);
    lua_pushliteral(L, "noreply");
    return 1;
  }
  if (lc->c == NULL || hm_conn_is_closed(lc->c)) return push_closed(L);
  if (refuse_nul(L, to, tlen, HM_SUBJ_PUBLISH, NULL, 0)) return 3;
  char err[320];
  hm_buf *b = hm_env_buffer(L);
  int r = hm_env_reply(L, g, 8, 9, 10, 3, 4, lua_istable(L, 5) ? 5 : 0, b,
                       err, sizeof err);
  if (r != 0) {
    /* No status: the reply could not be encoded, nothing reached NATS. */
    hm_env_buffer_done(b);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  hm_status st;
  char etext[HM_MICRO_ERRLEN], ecode[24];
  if (lua_istable(L, 4)) {
    /* ADR-32's service error headers, for clients that read them. */
    const char *hdrs[4] = {"Nats-Service-Error", etext,
                           "Nats-Service-Error-Code", ecode};
    hm_micro_error(L, 4, etext, sizeof etext, ecode);
    st = hm_conn_publish_hdrs(lc->c, to, b->data, b->len, hdrs, 2);
  } else {
    st = hm_conn_publish(lc->c, to, NULL, b->data, b->len);
  }
  hm_env_buffer_done(b);
  if (st != HM_OK) return push_status(L, lc->c, st);
  if (lua_istable(L, 4)) hm_micro_replied(L, 6, ecode, etext);
  else hm_micro_replied(L, 6, NULL, NULL);
  lua_pushliteral(L, "sent");
  return 1;
}

static int c_subscribe(lua_State *L) {
  lconn *lc = check_up(L, 1);
  size_t slen, qlen = 0;
  const char *subj = luaL_checklstring(L, 2, &slen);
  const char *queue = luaL_optlstring(L, 3, NULL, &qlen);
  lua_Integer max = luaL_optinteger(L, 4, 0);
  lsub *ls;
  hm_status st;
  int has_mt = !lua_isnoneornil(L, 6);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  if (has_mt) luaL_checktype(L, 6, LUA_TTABLE);
  luaL_argcheck(L, max >= 0 && max <= INT32_MAX, 4, "must be >= 0");
  RETURN_IF_CLOSED(L, lc);
  if (refuse_nul(L, subj, slen, HM_SUBJ_SUBSCRIBE, queue, qlen)) return 3;
  ls = lua_newuserdatauv(L, sizeof *ls, 1); /* 1: its endpoint, if any */
  memset(ls, 0, sizeof *ls);
  ls->owner = lc;
  ls->fn_ref = ls->self_ref = ls->mt_ref = LUA_NOREF;
  luaL_setmetatable(L, HM_SUB_MT);
  st = hm_conn_subscribe(lc->c, subj, queue, (int)max, on_msg, ls, &ls->s);
  if (st != HM_OK) return push_status(L, lc->c, st);
  lua_pushvalue(L, 5);
  ls->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (has_mt) {
    lua_pushvalue(L, 6);
    ls->mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushvalue(L, -1);
  ls->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ls->next = lc->subs;
  if (lc->subs) lc->subs->prev = ls;
  lc->subs = ls;
  return 1;
}

/* Sends a request for max replies (0: open-ended); the transport has
** copied data out when this returns. 0 with *out and *id set, or the
** count of outcome values pushed (nil, message, code) when nothing went
** out. Raises nothing: a caller may hold the shared envelope buffer. */
static int send_request(lua_State *L, lconn *lc, const char *subj,
                        size_t slen, const char *data, size_t len,
                        lua_Integer timeout, lua_Integer max, int as_msg,
                        const char **hdrs, int nhdr, lreq **out,
                        uint64_t *id) {
  RETURN_IF_CLOSED(L, lc);
  if (refuse_nul(L, subj, slen, HM_SUBJ_PUBLISH, NULL, 0)) return 3;
  lreq *r = calloc(1, sizeof *r);
  if (r == NULL) return push_status(L, lc->c, HM_NOMEM);
  r->ctx = lc->ctx;
  r->owner = lc;
  r->wait = (hm_wait)HM_WAIT_INIT;
  r->cb_ref = LUA_NOREF;
  r->as_msg = as_msg;
  hm_status st = HM_NATS;
  if (nhdr > 0 && max == 1)
    st = hm_conn_request_hdrs(lc->c, subj, data, len, hdrs, nhdr,
                              (uint64_t)timeout, on_reply, r, id);
  /* A server without headers (before nats-server 2.2) still gets the
  ** request: the headers are extras, as hm_conn_publish_hdrs treats them. */
  if (st == HM_NATS)
    st = hm_conn_request(lc->c, subj, data, len, (uint64_t)timeout, (int)max,
                         on_reply, r, id);
  if (st != HM_OK) {
    free(r);
    return push_status(L, lc->c, st);
  }
  *out = r;
  return 0;
}

/* After send_request: the callback at cb (0: none) kept for the replies
** and the id returned, or the running coroutine parked until the reply. */
static int await_request(lua_State *L, lconn *lc, lreq *r, uint64_t id,
                         int cb) {
  if (cb) {
    lua_pushvalue(L, cb);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
  }
  hm_sched_park(L, lc->ctx, &r->wait, NULL);
  return lua_yield(L, 0);
}

/* The checks conn:request and conn:act share: timeout, max, the callback
** at cb (or a coroutine to park). Raises on misuse. */
static void check_request(lua_State *L, lconn *lc, int tidx, int midx,
                          int cb, lua_Integer *timeout, lua_Integer *max) {
  *timeout = luaL_checkinteger(L, tidx);
  *max = luaL_optinteger(L, midx, 1);
  luaL_argcheck(L, *timeout >= 0, tidx, "must be >= 0");
  luaL_argcheck(L, *max >= 0 && *max <= INT32_MAX, midx, "must be >= 0");
  if (!lua_isnoneornil(L, cb)) {
    luaL_checktype(L, cb, LUA_TFUNCTION);
  } else {
    luaL_argcheck(L, *max == 1, midx, "several replies need a callback");
    hm_sched_check(L, lc->ctx, "request");
  }
}

static int c_request(lua_State *L) {
  lconn *lc = check_up(L, 1);
  size_t slen, len;
  const char *subj = luaL_checklstring(L, 2, &slen);
  const char *data = luaL_checklstring(L, 3, &len);
  lua_Integer timeout, max;
  check_request(L, lc, 4, 5, 6, &timeout, &max);
  int cb = lua_isnoneornil(L, 6) ? 0 : 6;
  int as_msg = lua_toboolean(L, 7);
  const char *hdrs[2 * HM_LUA_MAX_HEADERS];
  int nhdr = lua_isnoneornil(L, 8) ? 0 : hm_lua_headers(L, 8, hdrs, HM_LUA_MAX_HEADERS);
  lreq *r;
  uint64_t id;
  int n = send_request(L, lc, subj, slen, data, len, timeout, max, as_msg,
                       hdrs, nhdr, &r, &id);
  if (n > 0) return n;
  return await_request(L, lc, r, id, cb);
}

/* conn:act(actx, pattern, scope_meta, method, rid, sid, tid, psid, ts,
** pubsub, timeout [, max [, cb [, hdrs]]]): an act's request envelope
** (hm_env_act, core.act_payload's arguments) written into the shared
** buffer and sent from it to the pattern's topic, with no Lua string in
** between. pubsub: published, true; else the outcomes of conn:request
** with as_msg. nil, message, "HM_ENCODE" when the envelope cannot be
** written (nothing is sent). */
static int c_act(lua_State *L) {
  enum { BASE = 2, PUBSUB = 11, TIMEOUT, MAX, CB, HDRS };
  lconn *lc = check_up(L, 1);
  luaL_checktype(L, BASE, LUA_TTABLE);
  luaL_checktype(L, BASE + 1, LUA_TTABLE);
  lua_settop(L, HDRS);
  int pubsub = lua_toboolean(L, PUBSUB);
  lua_Integer timeout = 0, max = 1;
  if (!pubsub) check_request(L, lc, TIMEOUT, MAX, CB, &timeout, &max);
  int cb = lua_isnil(L, CB) ? 0 : CB;
  const char *hdrs[2 * HM_LUA_MAX_HEADERS];
  int nhdr = lua_isnil(L, HDRS) ? 0 : hm_lua_headers(L, HDRS, hdrs, HM_LUA_MAX_HEADERS);
  char err[320];
  /* Nothing below raises until the buffer is given back. */
  hm_buf *b = hm_env_buffer(L);
  int n = 0;
  lreq *r = NULL;
  uint64_t id = 0;
  if (hm_env_act(L, lc->ctx, BASE, b, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushliteral(L, "HM_ENCODE");
    n = 3;
  } else if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushfstring(L, "the pattern's topic must be a string, got %s", luaL_typename(L, -2));
    lua_pushstring(L, hm_status_name(HM_INVAL));
    n = 3;
  } else {
    size_t slen;
    const char *subj = lua_tolstring(L, -1, &slen);
    n = pubsub ? send_publish(L, lc, subj, slen, NULL, 0, b->data, b->len, hdrs, nhdr)
               : send_request(L, lc, subj, slen, b->data, b->len, timeout, max, 1,
                              hdrs, nhdr, &r, &id);
  }
  hm_env_buffer_done(b);
  if (n > 0 || pubsub) return n;
  return await_request(L, lc, r, id, cb);
}

/* conn:flush([timeout_ms [, cb]]): a round trip through the server; see
** the list at the top. */
static int c_flush(lua_State *L) {
  lconn *lc = check_up(L, 1);
  hm_ctx *ctx = lc->ctx;
  lua_Integer timeout = luaL_optinteger(L, 2, 5000);
  int has_cb = !lua_isnoneornil(L, 3);
  uint64_t id;
  hm_status st;
  lreq *r;
  luaL_argcheck(L, timeout >= 0, 2, "must be >= 0");
  if (has_cb) luaL_checktype(L, 3, LUA_TFUNCTION);
  else hm_sched_check(L, ctx, "flush");
  RETURN_IF_CLOSED(L, lc);
  r = calloc(1, sizeof *r);
  if (r == NULL) return luaL_error(L, "out of memory");
  r->ctx = ctx;
  r->owner = lc;
  r->wait = (hm_wait)HM_WAIT_INIT;
  r->cb_ref = LUA_NOREF;
  r->flush = 1;
  st = hm_conn_flush(lc->c, (uint64_t)timeout, on_reply, r, &id);
  if (st != HM_OK) {
    free(r);
    return push_status(L, lc->c, st);
  }
  if (has_cb) {
    lua_pushvalue(L, 3);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 1);
    return 1;
  }
  hm_sched_park(L, ctx, &r->wait, NULL);
  return lua_yield(L, 0);
}

static int c_cancel(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  void *arg;
  int was = lc->c != NULL && hm_conn_cancel(lc->c, (uint64_t)id, &arg);
  if (was) {
    lreq *r = arg;
    /* A coroutine waiting on it would never wake: only callback requests
    ** can be cancelled from Lua (a waiting coroutine cannot call this). */
    hm_sched_release(lc->ctx, &r->wait);
    unref(lc->ctx, &r->cb_ref);
    free(r);
  }
  lua_pushboolean(L, was);
  return 1;
}

static int c_close(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_pushboolean(L, 1); /* 3: the result */
  if (lc->c == NULL) {
    /* Already gone: the callback still runs, once. */
    if (!lua_isnoneornil(L, 2)) {
      lua_pushvalue(L, 2);
      hm_sched_spawn(lc->ctx, L, 0);
    }
    return 1;
  }
  if (lc->close_ref != LUA_NOREF) return 1;
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    lc->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  hm_conn_close(lc->c, on_closed, lc);
  return 1;
}

/* conn:credits(max): see hm_conn_set_credits. */
static int c_credits(lua_State *L) {
  lconn *lc = check_up(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max >= 0 && max <= INT32_MAX, 2, "must be >= 0");
  RETURN_IF_CLOSED(L, lc);
  hm_conn_set_credits(lc->c, (int)max);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:done(): one delivered message is finished (hands its credit back);
** nothing to hand back once closed. */
static int c_done(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  if (lc->c) hm_conn_done(lc->c);
  lua_pushboolean(L, 1);
  return 1;
}

static int c_trace_headers(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  lc->trace_hdrs = lua_toboolean(L, 2);
  lua_pushboolean(L, 1);
  return 1;
}

static int c_is_closed(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  lua_pushboolean(L, lc->c == NULL || hm_conn_is_closed(lc->c));
  return 1;
}

static int c_max_payload(lua_State *L) {
  lconn *lc = check_up(L, 1);
  RETURN_IF_CLOSED(L, lc);
  lua_pushinteger(L, (lua_Integer)hm_conn_max_payload(lc->c));
  return 1;
}

/* conn:stats(): the counters now, or the last ones once closed. */
static int c_stats(lua_State *L) {
  lconn *lc = check_conn(L, 1);
  hm_conn_stats s;
  if (lc->c != NULL) hm_conn_get_stats(lc->c, &s);
  else s = lc->last;
  lua_createtable(L, 0, 10);
#define F(name)                               \
  lua_pushinteger(L, (lua_Integer)s.name);    \
  lua_setfield(L, -2, #name);
  F(msgs_in) F(replies_in) F(late_replies) F(timeouts) F(requests) F(pending)
  F(dropped) F(slow_consumer) F(slow_dropped) F(in_use)
#undef F
  return 1;
}

static int c_tostring(lua_State *L) {
  lconn *lc = luaL_checkudata(L, 1, HM_CONN_MT);
  static const char *const states[] = {" (connecting)", "", " (failed)",
                                       " (closed)"};
  lua_pushfstring(L, "hemera.Conn: %p%s", (void *)lc,
                  lc->c == NULL && lc->state == LC_UP ? " (closed)"
                                                      : states[lc->state]);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Sub methods
** ===================================================================== */

static int s_unsubscribe(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  hm_ctx *ctx;
  lua_pushboolean(L, 1);
  if (ls->s == NULL) return 1;
  ctx = ls->owner->ctx;
  hm_sub_unsubscribe(ls->s);
  ls->s = NULL;
  if (ls->prev) ls->prev->next = ls->next; else ls->owner->subs = ls->next;
  if (ls->next) ls->next->prev = ls->prev;
  ls->prev = ls->next = NULL;
  unref(ctx, &ls->fn_ref);
  unref(ctx, &ls->mt_ref);
  unref(ctx, &ls->self_ref);
  return 1;
}

static int s_delivered(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  lua_pushinteger(L, ls->s ? (lua_Integer)hm_sub_delivered(ls->s) : 0);
  return 1;
}

static int s_active(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  lua_pushboolean(L, ls->s != NULL);
  return 1;
}

/* A drain's Lua side: malloc'd, since the core calls back after the
** userdata may be gone; freed in on_drained, which the core runs exactly
** once (from unsubscribe or close at the latest). */
typedef struct ldrain {
  hm_ctx *ctx;
  int fn_ref; /* LUA_NOREF: nothing to run */
} ldrain;

static void on_drained(hm_sub_t *s, hm_status st, void *arg) {
  ldrain *d = arg;
  hm_ctx *ctx = d->ctx;
  if (d->fn_ref != LUA_NOREF) {
    int ref;
    lua_State *co = hm_sched_spawn_begin(ctx, &ref);
    if (co != NULL) {
      lua_rawgeti(co, LUA_REGISTRYINDEX, d->fn_ref);
      if (st == HM_OK) lua_pushnil(co); else lua_pushstring(co, status_word(st));
      hm_sched_spawn_end(ctx, co, ref, 1);
    }
  }
  unref(ctx, &d->fn_ref);
  free(d);
}

/* sub:drain([fn [, timeout_ms]]): see hm_sub_drain. fn(err) runs in a
** coroutine like conn:close's; the subscription stays active (and must
** still be unsubscribed) after it. */
static int s_drain(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  lua_Integer timeout = luaL_optinteger(L, 3, 0);
  ldrain *d;
  hm_status st;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, timeout >= 0, 3, "must be >= 0");
  if (ls->s == NULL) return push_closed(L);
  d = malloc(sizeof *d);
  if (d == NULL) return luaL_error(L, "out of memory");
  d->ctx = ls->owner->ctx;
  d->fn_ref = LUA_NOREF;
  st = hm_sub_drain(ls->s, (uint64_t)timeout, on_drained, d);
  if (st != HM_OK) {
    free(d);
    lua_pushnil(L);
    if (st == HM_BUSY) lua_pushliteral(L, "already draining");
    else if (st == HM_NATS) lua_pushstring(L, hm_conn_error(ls->owner->c));
    else lua_pushstring(L, status_word(st));
    lua_pushstring(L, hm_status_name(st));
    return 3;
  }
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    d->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int s_draining(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  lua_pushboolean(L, ls->s != NULL && hm_sub_draining(ls->s));
  return 1;
}

/* core.subject_check(name, kind [, field]): the core's rules for a name
** before it is used (e.g. a topic made from caller data), with `field`
** naming it in the message. */
static int l_subject_check(lua_State *L) {
  static const char *const kinds[] = {"publish", "subscribe", "reply",
                                      "queue", NULL};
  static const hm_subject_kind kv[] = {HM_SUBJ_PUBLISH, HM_SUBJ_SUBSCRIBE,
                                       HM_SUBJ_REPLY, HM_SUBJ_QUEUE};
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  int k = luaL_checkoption(L, 2, NULL, kinds);
  const char *field = luaL_optstring(L, 3, NULL);
  char err[768];
  if (hm_subject_check(name, len, kv[k], field, 0, err, sizeof err) == HM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushstring(L, hm_status_name(HM_SUBJECT));
  return 3;
}

/* }==================================================================== */

/* hm_lua_shutdown: the loop may not run again while this state lives (a
** host's loop, luv's, or lua_close next), so nothing of the core may call
** back into it: abandon every connection (what is pending completes now;
** the core frees it once libuv lets go) and let go of its Lua side here,
** as on_closed would. */
void hm_lua_close_conns(hm_ctx *ctx) {
  while (ctx->conns != NULL) {
    lconn *lc = ctx->conns;
    hm_conn_abandon(lc->c);
    on_closed(lc->c, lc);
  }
}

static const luaL_Reg conn_methods[] = {
    {"publish", c_publish},   {"subscribe", c_subscribe},
    {"reply", c_reply},
    {"request", c_request},   {"act", c_act},   {"cancel", c_cancel},
    {"wait_connected", c_wait_connected},
    {"flush", c_flush},
    {"close", c_close},       {"is_closed", c_is_closed},
    {"credits", c_credits},   {"done", c_done},
    {"max_payload", c_max_payload}, {"stats", c_stats},
    {"trace_headers", c_trace_headers},
    {NULL, NULL}};

static const luaL_Reg sub_methods[] = {{"unsubscribe", s_unsubscribe},
                                       {"delivered", s_delivered},
                                       {"active", s_active},
                                       {"drain", s_drain},
                                       {"draining", s_draining},
                                       {NULL, NULL}};

void hm_lua_open_conn(lua_State *L) {
  luaL_newmetatable(L, HM_CONN_MT);
  luaL_newlibtable(L, conn_methods);
  lua_pushvalue(L, -2); /* the methods' upvalue: check_conn */
  luaL_setfuncs(L, conn_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, c_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, HM_SUB_MT);
  luaL_newlib(L, sub_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_pushcfunction(L, l_redact);
  lua_setfield(L, -2, "redact");
  lua_pushcfunction(L, l_subject_check);
  lua_setfield(L, -2, "subject_check");
  lua_pushcfunction(L, l_servers);
  lua_setfield(L, -2, "servers");
}
