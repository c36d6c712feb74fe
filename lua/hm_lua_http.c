/*
** hm_lua_http.c: HTTP servers on the state's loop (core/hm_http.c), for
** the metrics endpoint now and the gateway later.
**
**   core.http_listen(opts, handler) -> server | nil, err
**       opts: host (numeric address, default "127.0.0.1"), port (0: any
**       free port), maxHeaderBytes, maxBodyBytes, maxHeaders,
**       maxConnections, idleTimeout (ms), requestTimeout (ms).
**       handler(req) runs in a Hemera coroutine per request (it may act,
**       sleep, wait) and returns status [, headers [, body]]:
**         req = {method, target, path, query (or nil), version,
**                headers = {lower-case name = value, repeats joined ", "},
**                body}
**         headers = {Name = "value", ...}. A handler that raises, or
**         returns a bad status or header, answers 500 (the error goes to
**         core.on_error, else stderr).
**       Bad options raise; a port in use returns nil, err.
**   server:port(), server:close() (idempotent; also at shutdown).
**
** Ownership: the server record (lhttp) is malloc'd, because libuv holds the
** core server until its close callback; the userdata points to it and is
** anchored (self_ref) until close. The record and the userdata point at
** each other, and closing (by the userdata, its __gc or shutdown) clears
** both pointers: a shutdown frees the record once the host runs the loop,
** and the userdata may be used (or collected at lua_close) after that.
** An exchange userdata stands for one request being served: it lives on
** the handler's coroutine, and the core clears its pointer if the request
** goes away first.
*/
#include <stdlib.h>
#include <string.h>

#include "hm_http.h"
#include "hm_lua_private.h"

#define HM_HTTP_MT "hemera.HttpServer"
#define HM_EXCHANGE_MT "hemera.HttpExchange"
#define MAX_RESPONSE_HEADERS 64

typedef struct userhttp userhttp;

struct lhttp {
  hm_http_server *srv; /* NULL once closed */
  hm_ctx *ctx;
  userhttp *u; /* the server's userdata, NULL once closed */
  int handler_ref;
  int self_ref;
  int port;
  struct lhttp *prev, *next; /* ctx->https */
};

typedef struct lhttp lhttp;

struct userhttp {
  lhttp *h; /* NULL once closed */
};

typedef struct exchange {
  hm_http_req *req; /* NULL once answered or gone */
} exchange;

static const char dispatch_key = 'd';

/* {====================================================================
** Exchanges
** ===================================================================== */

static void ex_abort(void *arg) { ((exchange *)arg)->req = NULL; }

/* ex:respond(status, headers, body) -> true, or false when the request is
** gone. Raises on a bad status, header or body, naming it. */
static int ex_respond(lua_State *L) {
  exchange *ex = luaL_checkudata(L, 1, HM_EXCHANGE_MT);
  hm_http_header_t hs[MAX_RESPONSE_HEADERS];
  size_t nh = 0, blen = 0;
  const char *body = NULL;
  char err[256];
  int isnum;
  lua_Integer status = lua_tointegerx(L, 2, &isnum);
  if (!isnum || status < 100 || status > 599)
    return luaL_error(L,
                      "http handler: status must be an integer from 100 to "
                      "599, got %s",
                      luaL_tolstring(L, 2, NULL));
  if (!lua_isnoneornil(L, 3)) {
    if (!lua_istable(L, 3))
      return luaL_error(L, "http handler: headers must be a table, got %s",
                        luaL_typename(L, 3));
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING ||
          (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        return luaL_error(L,
                          "http handler: a header must map a name to a "
                          "string, got %s = %s",
                          luaL_typename(L, -2), luaL_typename(L, -1));
      if (nh == MAX_RESPONSE_HEADERS)
        return luaL_error(L, "http handler: more than %d response headers",
                          MAX_RESPONSE_HEADERS);
      hs[nh].name = lua_tolstring(L, -2, &hs[nh].nlen);
      /* A number becomes a string in its stack slot, which stays below
      ** the next key for as long as hs needs it. */
      hs[nh].value = lua_tolstring(L, -1, &hs[nh].vlen);
      nh++;
      luaL_checkstack(L, 2, "too many headers");
      lua_pushvalue(L, -2);
    }
  }
  if (!lua_isnoneornil(L, 4)) {
    if (lua_type(L, 4) != LUA_TSTRING)
      return luaL_error(L, "http handler: body must be a string, got %s",
                        luaL_typename(L, 4));
    body = lua_tolstring(L, 4, &blen);
  }
  if (ex->req == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  {
    hm_status st = hm_http_respond(ex->req, (int)status, hs, nh, body, blen, err, sizeof err);
    if (st == HM_INVAL) return luaL_error(L, "http handler: %s", err);
    ex->req = NULL; /* answered, or gone with the connection (NOMEM) */
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int ex_gc(lua_State *L) {
  exchange *ex = luaL_checkudata(L, 1, HM_EXCHANGE_MT);
  if (ex->req) {
    /* The handler's coroutine was dropped (shutdown) before it answered. */
    char err[64];
    static const char msg[] = "the handler never answered\n";
    hm_http_req *r = ex->req;
    ex->req = NULL;
    hm_http_on_abort(r, NULL, NULL);
    hm_http_respond(r, 503, NULL, 0, msg, sizeof msg - 1, err, sizeof err);
  }
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** Requests into Lua
** ===================================================================== */

/* Pushes the request table onto co. */
static void push_request(lua_State *co, hm_http_req *r) {
  size_t tlen, i, n = hm_http_nheaders(r), blen;
  const char *target = hm_http_target(r, &tlen), *q, *body;
  lua_createtable(co, 0, 7);
  lua_pushstring(co, hm_http_method(r));
  lua_setfield(co, -2, "method");
  lua_pushlstring(co, target, tlen);
  lua_setfield(co, -2, "target");
  q = memchr(target, '?', tlen);
  lua_pushlstring(co, target, q ? (size_t)(q - target) : tlen);
  lua_setfield(co, -2, "path");
  if (q) {
    lua_pushlstring(co, q + 1, tlen - (size_t)(q + 1 - target));
    lua_setfield(co, -2, "query");
  }
  lua_pushstring(co, hm_http_version_minor(r) == 0 ? "1.0" : "1.1");
  lua_setfield(co, -2, "version");
  lua_createtable(co, 0, (int)n);
  for (i = 0; i < n; i++) {
    const char *name, *value;
    size_t nlen, vlen, k;
    luaL_Buffer b;
    hm_http_header(r, i, &name, &nlen, &value, &vlen);
    luaL_buffinit(co, &b);
    for (k = 0; k < nlen; k++) {
      char ch = name[k];
      luaL_addchar(&b, ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch);
    }
    luaL_pushresult(&b); /* the name */
    lua_pushvalue(co, -1);
    if (lua_rawget(co, -3) == LUA_TSTRING) {
      /* A repeated header: one value, joined as RFC 9110 allows. */
      lua_pushliteral(co, ", ");
      lua_pushlstring(co, value, vlen);
      lua_concat(co, 3);
    } else {
      lua_pop(co, 1);
      lua_pushlstring(co, value, vlen);
    }
    lua_rawset(co, -3);
  }
  lua_setfield(co, -2, "headers");
  body = hm_http_body(r, &blen);
  lua_pushlstring(co, body, blen);
  lua_setfield(co, -2, "body");
}

static void on_request(hm_http_req *r, void *arg) {
  lhttp *h = arg;
  hm_ctx *ctx = h->ctx;
  lua_State *co;
  exchange *ex;
  int ref;
  char err[64];
  /* A pooled or new coroutine has LUA_MINSTACK free slots: enough for the
  ** five values pushed below. */
  co = hm_sched_spawn_begin(ctx, &ref);
  if (co == NULL) {
    static const char msg[] = "shutting down\n";
    hm_http_respond(r, 503, NULL, 0, msg, sizeof msg - 1, err, sizeof err);
    return;
  }
  lua_rawgetp(co, LUA_REGISTRYINDEX, &dispatch_key);
  lua_rawgeti(co, LUA_REGISTRYINDEX, h->handler_ref);
  push_request(co, r);
  ex = lua_newuserdatauv(co, sizeof *ex, 0);
  ex->req = r;
  luaL_setmetatable(co, HM_EXCHANGE_MT);
  hm_http_on_abort(r, ex_abort, ex);
  hm_sched_spawn_end(ctx, co, ref, 3);
}

/* }==================================================================== */

/* {====================================================================
** Servers
** ===================================================================== */

static void on_closed(void *arg) { free(arg); }

/* Closes h's server; h itself goes once libuv is done with it. */
static void server_close(lhttp *h) {
  hm_ctx *ctx = h->ctx;
  if (h->srv == NULL) return;
  hm_http_close(h->srv, on_closed, h);
  h->srv = NULL;
  if (h->u) h->u->h = NULL;
  h->u = NULL;
  if (h->prev) h->prev->next = h->next; else ctx->https = h->next;
  if (h->next) h->next->prev = h->prev;
  h->prev = h->next = NULL;
  luaL_unref(ctx->L, LUA_REGISTRYINDEX, h->handler_ref);
  luaL_unref(ctx->L, LUA_REGISTRYINDEX, h->self_ref);
  h->handler_ref = h->self_ref = LUA_NOREF;
}

void hm_lua_close_https(hm_ctx *ctx) {
  while (ctx->https) server_close(ctx->https);
}

static userhttp *check_server(lua_State *L) {
  return luaL_checkudata(L, 1, HM_HTTP_MT);
}

static int s_close(lua_State *L) {
  userhttp *u = check_server(L);
  if (u->h) server_close(u->h);
  return 0;
}

static int s_port(lua_State *L) {
  userhttp *u = check_server(L);
  if (u->h == NULL) return luaL_error(L, "http server is closed");
  lua_pushinteger(L, u->h->port);
  return 1;
}

static unsigned opt_limit(lua_State *L, const char *key, lua_Integer max) {
  lua_Integer v;
  int isnum;
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v < 1 || v > max)
    luaL_error(L,
               "http_listen: option '%s' must be an integer from 1 to %I, "
               "got %s",
               key, max, luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
  return (unsigned)v;
}

static int l_http_listen(lua_State *L) {
  hm_ctx *ctx = hm_ctx_get(L);
  hm_http_limits lim;
  const char *host;
  lua_Integer port;
  int isnum;
  char err[256];
  hm_http_server *srv;
  hm_status st;
  lhttp *h;
  userhttp *u;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_getfield(L, 1, "host");
  host = lua_isnil(L, -1) ? "127.0.0.1" : lua_tostring(L, -1);
  if (host == NULL || lua_type(L, -1) == LUA_TNUMBER)
    return luaL_error(L, "http_listen: option 'host' must be a string, got %s",
                      luaL_typename(L, -1));
  lua_getfield(L, 1, "port");
  port = lua_tointegerx(L, -1, &isnum);
  if (!isnum || port < 0 || port > 65535)
    return luaL_error(L,
                      "http_listen: option 'port' must be an integer from 0 "
                      "to 65535, got %s",
                      luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
  memset(&lim, 0, sizeof lim);
  lim.max_header_bytes = opt_limit(L, "maxHeaderBytes", 1 << 20);
  lim.max_body_bytes = opt_limit(L, "maxBodyBytes", (lua_Integer)1 << 30);
  lim.max_headers = opt_limit(L, "maxHeaders", 10000);
  lim.max_conns = opt_limit(L, "maxConnections", 100000);
  lim.idle_ms = opt_limit(L, "idleTimeout", 3600 * 1000);
  lim.request_ms = opt_limit(L, "requestTimeout", 3600 * 1000);
  if (ctx->shutdown) return luaL_error(L, "http_listen: shutting down");
  /* The userdata first: once the server listens nothing may raise. */
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->h = NULL;
  luaL_setmetatable(L, HM_HTTP_MT);
  h = calloc(1, sizeof *h);
  if (h == NULL) return luaL_error(L, "out of memory");
  h->ctx = ctx;
  h->handler_ref = h->self_ref = LUA_NOREF;
  st = hm_http_listen(ctx->loop, host, (int)port, &lim, on_request, h, &srv,
                      err, sizeof err);
  if (st == HM_INVAL) {
    free(h);
    return luaL_error(L, "http_listen: %s", err);
  }
  if (st != HM_OK) {
    free(h);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  h->srv = srv;
  h->port = hm_http_port(srv);
  h->u = u;
  u->h = h;
  lua_pushvalue(L, 2);
  h->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  h->next = ctx->https;
  if (ctx->https) ctx->https->prev = h;
  ctx->https = h;
  return 1;
}

static int s_gc(lua_State *L) {
  /* Reached only after close, or at lua_close (which ignores anchors). */
  return s_close(L);
}

/* }==================================================================== */

/* Runs a request's handler, and answers 500 when it fails. */
static const char dispatch_src[] =
    "local core = ...\n"
    "local xpcall, pcall, traceback = xpcall, pcall, debug.traceback\n"
    "local function report(err)\n"
    "  local h = core.on_error\n"
    "  if h then pcall(h, err) else\n"
    "    io.stderr:write('hemera: http handler failed: ', tostring(err), "
    "'\\n') end\n"
    "end\n"
    "return function(handler, req, ex)\n"
    "  local ok, status, headers, body = xpcall(handler, traceback, req)\n"
    "  if ok then\n"
    "    local rok, rerr = pcall(ex.respond, ex, status, headers, body)\n"
    "    if rok then return end\n"
    "    report(rerr)\n"
    "  else\n"
    "    report(status)\n"
    "  end\n"
    "  ex:respond(500, {['Content-Type'] = 'text/plain; charset=utf-8'},\n"
    "    'internal server error\\n')\n"
    "end\n";

static const luaL_Reg server_methods[] = {
    {"close", s_close}, {"port", s_port}, {NULL, NULL}};

void hm_lua_open_http(lua_State *L) {
  luaL_newmetatable(L, HM_HTTP_MT);
  luaL_newlib(L, server_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, s_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, s_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_newmetatable(L, HM_EXCHANGE_MT);
  lua_newtable(L);
  lua_pushcfunction(L, ex_respond);
  lua_setfield(L, -2, "respond");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ex_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* The module table is on top. */
  if (luaL_loadbuffer(L, dispatch_src, sizeof dispatch_src - 1,
                      "=hemera.http") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &dispatch_key);
  lua_pushcfunction(L, l_http_listen);
  lua_setfield(L, -2, "http_listen");
}
