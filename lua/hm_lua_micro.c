/*
** hm_lua_micro.c: the counters behind ADR-32's $SRV.STATS, one set per
** endpoint (a Hemera topic), kept in C on the request path, and the service
** error of an error reply (its NATS headers).
**
**   core.endpoint() -> ep            a fresh set of counters
**   core.endpoint_attach(sub, ep)    sub's messages count in ep from now on
**   ep:stats() -> {num_requests, num_errors, last_error, processing_time,
**       average_processing_time}     integers; times in ns; last_error is
**       "" until an error ("<code>:<message>", as nats.go writes it)
**   ep:reset()                       every counter back to zero
**   core.msg_count(msg [, err])      a reply of msg went out some other way
**       than conn:reply (err: its wire error table): counted as conn:reply
**       counts
**   core.service_error(err) -> message, code   the header values of a wire
**       error table (see hm_micro_error)
**   core.versions() -> {lua, nats, uv}   the versions of what we run on
**
** What is counted, and when: a message counts as a request when it arrives
** (on_msg, hm_lua_conn.c); its first reply (or, with no reply subject, the
** point where its reply would have gone) adds the time from arrival to the
** publish, and an error if that reply is one. The Msg carries its endpoint
** as its user value until then, which also keeps the counters alive while
** the message is in flight after its topic is gone; counting clears it, so
** later replies of a stream do not count again.
**
** Loop thread only.
*/
#include <math.h>
#include <string.h>

#include "hm_lua_envelope.h"
#include "hm_version.h"

#define HM_ENDPOINT_MT "hemera.Endpoint"

/* The counters. The last error is the userdata's user value 1 (a string),
** so it lives exactly as long as the counters. */
struct hm_ep {
  int64_t num_requests;
  int64_t num_errors;
  int64_t processing_ns;
};

void hm_micro_arrived(lua_State *co, lsub *ls) {
  ls->ep->num_requests++;
  lua_rawgeti(co, LUA_REGISTRYINDEX, ls->self_ref); /* the Sub */
  lua_getiuservalue(co, -1, 1);                      /* its endpoint */
  lua_setiuservalue(co, -3, 1);                      /* msg's user value */
  lua_pop(co, 1);
}

void hm_micro_replied(lua_State *L, int msg, const char *code,
                      const char *text) {
  hm_ep *ep;
  hm_lmsg *g;
  int64_t ns;
  if (lua_getiuservalue(L, msg, 1) != LUA_TUSERDATA) {
    lua_pop(L, 1); /* not a message of an endpoint, or counted already */
    return;
  }
  ep = lua_touserdata(L, -1);
  g = lua_touserdata(L, msg);
  /* g->arrived is uv_hrtime() / 1e6: back to ns within a few ns. */
  ns = (int64_t)uv_hrtime() - (int64_t)llround(g->arrived * 1e6);
  ep->processing_ns += ns > 0 ? ns : 0;
  if (text != NULL) {
    ep->num_errors++;
    lua_pushfstring(L, "%s:%s", code, text);
    lua_setiuservalue(L, -2, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, msg, 1);
}

/* Copies s into out (cap > 4) with every control character made a space,
** cut at cap - 1 bytes without splitting a UTF-8 sequence. */
static void header_text(const char *s, size_t len, char *out, size_t cap) {
  size_t n = len < cap - 1 ? len : cap - 1, k;
  if (n < len) /* cut: back off to the start of a character */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  for (k = 0; k < n; k++) {
    unsigned char c = (unsigned char)s[k];
    out[k] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
  out[n] = '\0';
}

void hm_micro_error(lua_State *L, int idx, char *msg, size_t cap,
                    char code[24]) {
  size_t len = 0;
  const char *s = NULL;
  lua_Integer n;
  int isnum = 0;
  idx = lua_absindex(L, idx);
  if (lua_istable(L, idx)) {
    if (lua_getfield(L, idx, "message") == LUA_TSTRING)
      s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1); /* the table still holds the string */
    if (s == NULL || len == 0) {
      if (lua_getfield(L, idx, "name") == LUA_TSTRING)
        s = lua_tolstring(L, -1, &len);
      lua_pop(L, 1);
    }
    if (lua_getfield(L, idx, "code") == LUA_TNUMBER) {
      n = lua_tointegerx(L, -1, &isnum);
      if (isnum) snprintf(code, 24, "%lld", (long long)n);
    }
    lua_pop(L, 1);
  }
  if (!isnum) memcpy(code, "500", 4);
  if (s == NULL || len == 0) {
    s = "Error";
    len = 5;
  }
  header_text(s, len, msg, cap);
}

static hm_ep *check_ep(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, HM_ENDPOINT_MT);
}

static int l_endpoint(lua_State *L) {
  hm_ep *ep = lua_newuserdatauv(L, sizeof *ep, 1);
  memset(ep, 0, sizeof *ep);
  lua_pushliteral(L, "");
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, HM_ENDPOINT_MT);
  return 1;
}

static int l_endpoint_attach(lua_State *L) {
  lsub *ls = luaL_checkudata(L, 1, HM_SUB_MT);
  hm_ep *ep = check_ep(L, 2);
  lua_pushvalue(L, 2);
  if (!lua_setiuservalue(L, 1, 1))
    return luaL_error(L, "this subscription cannot count requests");
  ls->ep = ep;
  return 0;
}

static int ep_stats(lua_State *L) {
  hm_ep *ep = check_ep(L, 1);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)ep->num_requests);
  lua_setfield(L, -2, "num_requests");
  lua_pushinteger(L, (lua_Integer)ep->num_errors);
  lua_setfield(L, -2, "num_errors");
  lua_getiuservalue(L, 1, 1);
  lua_setfield(L, -2, "last_error");
  lua_pushinteger(L, (lua_Integer)ep->processing_ns);
  lua_setfield(L, -2, "processing_time");
  lua_pushinteger(L, ep->num_requests > 0
                         ? (lua_Integer)(ep->processing_ns / ep->num_requests)
                         : 0);
  lua_setfield(L, -2, "average_processing_time");
  return 1;
}

static int ep_reset(lua_State *L) {
  hm_ep *ep = check_ep(L, 1);
  memset(ep, 0, sizeof *ep);
  lua_pushliteral(L, "");
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int l_msg_count(lua_State *L) {
  char text[HM_MICRO_ERRLEN], code[24];
  hm_ctx *ctx = hm_ctx_get(L);
  if (lua_isnoneornil(L, 1)) return 0; /* a context made by hand */
  hm_env_check_msg(L, ctx, 1);
  if (lua_isnoneornil(L, 2)) {
    hm_micro_replied(L, 1, NULL, NULL);
  } else {
    hm_micro_error(L, 2, text, sizeof text, code);
    hm_micro_replied(L, 1, code, text);
  }
  return 0;
}

static int l_service_error(lua_State *L) {
  char text[HM_MICRO_ERRLEN], code[24];
  hm_micro_error(L, 1, text, sizeof text, code);
  lua_pushstring(L, text);
  lua_pushstring(L, code);
  return 2;
}

/* core.versions() -> {lua, nats, uv}: what `hemera --version` prints
** (hemera.cli) besides the library's own (core.VERSION, HM_VERSION). */
static int l_versions(lua_State *L) {
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, LUA_RELEASE);
  lua_setfield(L, -2, "lua");
  lua_pushstring(L, nats_GetVersion());
  lua_setfield(L, -2, "nats");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "uv");
  return 1;
}

void hm_lua_open_micro(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"stats", ep_stats}, {"reset", ep_reset}, {NULL, NULL}};
  luaL_newmetatable(L, HM_ENDPOINT_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_endpoint);
  lua_setfield(L, -2, "endpoint");
  lua_pushcfunction(L, l_endpoint_attach);
  lua_setfield(L, -2, "endpoint_attach");
  lua_pushcfunction(L, l_msg_count);
  lua_setfield(L, -2, "msg_count");
  lua_pushcfunction(L, l_service_error);
  lua_setfield(L, -2, "service_error");
  lua_pushcfunction(L, l_versions);
  lua_setfield(L, -2, "versions");
  lua_pushliteral(L, HM_VERSION);
  lua_setfield(L, -2, "VERSION");
}
