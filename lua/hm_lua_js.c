/*
** hm_lua_js.c: the two things JetStream needs from C that plain
** connections do not give (hemera.durable does the rest in Lua, over the
** connection's own asynchronous requests and subscriptions).
**
** core.js_request(conn, subject, data, headers, timeout_ms) ->
**     nil, reply data, status | "timeout"|"closed", nil | "failed", message,
**     code
**   In a Hemera coroutine: publishes with NATS headers (a table of string
**   keys and values, e.g. Nats-Msg-Id) and the request inbox as reply
**   subject, and suspends until the one reply or the timeout. `status` is
**   the reply's status code when it has one (503: no responders, i.e. no
**   stream takes the subject), else nil.
** core.js_msg(data) -> Msg
**   A Msg (hm_lua_envelope.h) holding `data` and no reply subject: the
**   context of a stored message, whose own reply subject is JetStream's
**   ack subject (a reply sent there would ack it).
**
** Loop thread only, like everything in the binding.
*/
#include <stdlib.h>
#include <string.h>

#include "hm_lua_envelope.h"

#define JS_MAX_HEADERS HM_LUA_MAX_HEADERS

typedef struct jsreq {
  hm_ctx *ctx;
  hm_wait wait; /* the waiting coroutine */
} jsreq;

static void on_js_reply(hm_conn_t *c, uint64_t id, hm_status st, natsMsg *m,
                        int done, void *arg) {
  jsreq *r = arg;
  lua_State *co = r->wait.co;
  const char *status = NULL;
  if (co == NULL) { /* released: nobody to tell */
    hm_msg_destroy(m);
    free(r);
    return;
  }
  lua_checkstack(co, 3);
  if (st == HM_OK) {
    lua_pushnil(co);
    lua_pushlstring(co, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    /* cnats keeps a status line ("NATS/1.0 503") as the header "Status". */
    if (natsMsgHeader_Get(m, "Status", &status) == NATS_OK && status != NULL)
      lua_pushinteger(co, (lua_Integer)atoi(status));
    else
      lua_pushnil(co);
  } else {
    lua_pushstring(co, st == HM_TIMEOUT ? "timeout" : "closed");
    lua_pushnil(co);
    lua_pushnil(co);
  }
  hm_msg_destroy(m);
  hm_sched_wake(r->ctx, &r->wait, 3);
  free(r);
}

static int l_js_request(lua_State *L) {
  lconn *lc = luaL_checkudata(L, 1, HM_CONN_MT);
  hm_ctx *ctx = lc->ctx;
  size_t slen, len;
  const char *subj = luaL_checklstring(L, 2, &slen);
  const char *data = luaL_checklstring(L, 3, &len);
  lua_Integer timeout = luaL_checkinteger(L, 5);
  const char *hdrs[2 * JS_MAX_HEADERS];
  int nhdr = 0;
  uint64_t id;
  hm_status st;
  jsreq *r;
  luaL_argcheck(L, timeout > 0, 5, "must be > 0");
  if (!lua_isnoneornil(L, 4)) nhdr = hm_lua_headers(L, 4, hdrs, JS_MAX_HEADERS);
  hm_sched_check(L, ctx, "js_request");
  if (lc->c == NULL) {
    lua_pushliteral(L, "closed");
    return 1;
  }
  if (memchr(subj, '\0', slen) != NULL) {
    lua_pushliteral(L, "failed");
    lua_pushliteral(L, "subject must not hold a NUL byte");
    lua_pushstring(L, hm_status_name(HM_SUBJECT));
    return 3;
  }
  r = malloc(sizeof *r);
  if (r == NULL) return luaL_error(L, "out of memory");
  r->ctx = ctx;
  r->wait = (hm_wait)HM_WAIT_INIT;
  st = hm_conn_request_hdrs(lc->c, subj, data, len, hdrs, nhdr,
                            (uint64_t)timeout, on_js_reply, r, &id);
  if (st != HM_OK) {
    free(r);
    lua_pushliteral(L, "failed");
    if (st == HM_CLOSED) lua_pushliteral(L, "closed");
    else lua_pushstring(L, hm_conn_error(lc->c));
    lua_pushstring(L, hm_status_name(st));
    return 3;
  }
  hm_sched_park(L, ctx, &r->wait, NULL);
  return lua_yield(L, 0);
}

static int l_js_msg(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  natsMsg *m = NULL;
  if (len > INT32_MAX) return luaL_error(L, "message too large");
  if (natsMsg_Create(&m, "_", NULL, data, (int)len) != NATS_OK)
    return luaL_error(L, "out of memory");
  hm_env_push_msg(L, ctx, m);
  hm_msg_destroy(m);
  return 1;
}

void hm_lua_open_js(lua_State *L) {
  lua_pushcfunction(L, l_js_request);
  lua_setfield(L, -2, "js_request");
  lua_pushcfunction(L, l_js_msg);
  lua_setfield(L, -2, "js_msg");
}
