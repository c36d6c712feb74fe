/*
** hm_lua_router.c: the pattern index (core/hm_router.h) for Lua.
**
** core.router([indexing]) -> router      indexing "insertion" | "depth"
** router:add(pattern, value) -> id | nil, err
** router:lookup(request [, topic]) -> value | nil   only routes of that topic
**                                   (as written) with a topic; {} finds nil
** router:list([request]) -> { value... } in lookup order
** router:remove(id) -> bool
** router:remove_topic(topic) -> n        every route whose topic is exactly it
** router:count(), router:memory()
** core.regex(source) -> a regex value usable in patterns
**
** Only scalar values (string, number, boolean), regex values and JSON null
** (core.null) take part; keys ending in "$" and table values are left out,
** as Hemera does. Null follows bloomrun (spec section 2): a null value in a
** stored pattern never matches; a null value in a request equals no plain
** stored value, and a stored regex is tested against String(null), "null".
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hm_lua_private.h"
#include "hm_router.h"

/* Fields converted on the C stack; larger patterns use a userdata. */
#define FIELDS_STACK 32

typedef struct lrouter {
  hm_router_t *r;
  lua_Integer next_id;
} lrouter;

/* Uservalues of a router userdata: 1 = id -> value, 2 = id -> route. */

static lrouter *check_router(lua_State *L, int idx) {
  lrouter *lr = luaL_checkudata(L, idx, HM_ROUTER_MT);
  if (lr->r == NULL) luaL_error(L, "router is closed");
  return lr;
}

int hm_lua_is_regex(lua_State *L, int idx) {
  int yes = 0;
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, HM_REGEX_MT);
    yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  return yes;
}

/* A stored null is a regex that never matches (PCRE2 "(?!)"); a request
** null is the string "null" with this very pointer, so that routes holding
** a plain string there can be told apart (see keep()). */
static const char null_never[] = "(?!)";
static const char null_req[] = "null";

int hm_lua_field(lua_State *L, int kidx, int vidx, hm_field *out, int stored) {
  size_t klen;
  const char *k;
  if (lua_type(L, kidx) != LUA_TSTRING) return 0;
  k = lua_tolstring(L, kidx, &klen);
  if (klen > 0 && k[klen - 1] == '$') return 0;
  hm_field fl;
  memset(&fl, 0, sizeof fl);
  fl.key = k;
  fl.key_len = klen;
  switch (lua_type(L, vidx)) {
    case LUA_TSTRING:
      fl.type = HM_VAL_STRING;
      fl.str = lua_tolstring(L, vidx, &fl.str_len);
      break;
    case LUA_TNUMBER:
      fl.type = HM_VAL_NUMBER;
      fl.num = (double)lua_tonumber(L, vidx);
      break;
    case LUA_TBOOLEAN:
      fl.type = HM_VAL_BOOLEAN;
      fl.boolean = lua_toboolean(L, vidx);
      break;
    case LUA_TTABLE:
      if (hm_lua_is_regex(L, vidx)) {
        lua_getfield(L, vidx, "source");
        fl.type = HM_VAL_REGEX;
        /* The regex table holds the string, so it outlives the pop. */
        fl.str = lua_tolstring(L, -1, &fl.str_len);
        lua_pop(L, 1);
        if (fl.str == NULL) fl.type = 0;
      }
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, vidx) != NULL) break;
      if (stored) {
        fl.type = HM_VAL_REGEX;
        fl.str = null_never;
        fl.str_len = sizeof null_never - 1;
      } else {
        fl.type = HM_VAL_STRING;
        fl.str = null_req;
        fl.str_len = sizeof null_req - 1;
      }
      break;
    default: break;
  }
  if (fl.type == 0) return 0;
  *out = fl;
  return 1;
}

/* Converts the scalar fields of the table at idx (`stored`: of a pattern
** being added, else of a request). Pointers stay valid while
** the table is alive (it holds the strings). Returns the count, or -1 when
** more than `cap` (the caller retries with room for `*need`). */
static int to_fields(lua_State *L, int idx, hm_field *f, int cap, int *need,
                     int stored) {
  int n = 0;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    hm_field fl;
    if (hm_lua_field(L, -2, -1, &fl, stored)) {
      if (n < cap) f[n] = fl;
      n++;
    }
    lua_pop(L, 1);
  }
  if (n > cap) {
    *need = n;
    return -1;
  }
  return n;
}

/* Calls body(L, lr, fields, n, arg) with the fields of the table at idx,
** on the C stack when they fit. */
typedef int (*with_fields_fn)(lua_State *L, lrouter *lr, hm_field *f, int n);

static int with_fields(lua_State *L, lrouter *lr, int idx, with_fields_fn fn,
                       int stored) {
  hm_field local[FIELDS_STACK];
  int need = 0, n = to_fields(L, idx, local, FIELDS_STACK, &need, stored);
  if (n >= 0) return fn(L, lr, local, n);
  {
    hm_field *heap = lua_newuserdatauv(L, sizeof(hm_field) * (size_t)need, 0);
    int top = lua_gettop(L), r;
    n = to_fields(L, idx, heap, need, &need, stored);
    r = fn(L, lr, heap, n);
    lua_remove(L, top);
    return r;
  }
}

static int do_add(lua_State *L, lrouter *lr, hm_field *f, int n) {
  hm_route_t *route;
  lua_Integer id = ++lr->next_id;
  hm_status st = hm_router_add(lr->r, f, (size_t)n, (void *)(intptr_t)id,
                               &route);
  if (st != HM_OK) {
    lua_pushnil(L);
    lua_pushstring(L, st == HM_REGEX || st == HM_INVAL
                          ? hm_router_error(lr->r)
                          : hm_status_text(st));
    return 2;
  }
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, id);
  lua_pop(L, 1);
  lua_getiuservalue(L, 1, 2);
  lua_pushlightuserdata(L, route);
  lua_rawseti(L, -2, id);
  lua_pop(L, 1);
  lua_pushinteger(L, id);
  return 1;
}

static int r_add(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  return with_fields(L, lr, 2, do_add, 1);
}

static int has_null(const hm_field *f, int n) {
  for (int i = 0; i < n; i++)
    if (f[i].str == null_req) return 1;
  return 0;
}

/* A request with null values: which routes really match. The router saw
** each null as the string "null", which also matched a route holding the
** plain string "null" there; bloomrun's equal(a, null) is false for every
** plain a, so such a route is out. With a topic, only routes of exactly
** that topic count (as hm_router_lookup_topic). */
typedef struct null_acc {
  const hm_field *req;
  int n;
  const char *topic;
  size_t tlen;
  void *found;
} null_acc;

static int keep(hm_route_t *route, const null_acc *a) {
  size_t rn, i;
  const hm_field *rf = hm_route_fields(route, &rn);
  int topic_ok = a->topic == NULL;
  for (i = 0; i < rn; i++) {
    if (rf[i].type != HM_VAL_STRING) continue;
    if (!topic_ok && rf[i].key_len == 5 && memcmp(rf[i].key, "topic", 5) == 0 &&
        rf[i].str_len == a->tlen && memcmp(rf[i].str, a->topic, a->tlen) == 0)
      topic_ok = 1;
    for (int j = 0; j < a->n; j++) {
      if (a->req[j].str == null_req && a->req[j].key_len == rf[i].key_len &&
          memcmp(a->req[j].key, rf[i].key, rf[i].key_len) == 0)
        return 0;
    }
  }
  return topic_ok;
}

static int first_kept(hm_route_t *route, void *udata, void *arg) {
  null_acc *a = arg;
  if (!keep(route, a)) return 0;
  a->found = udata;
  return 1;
}

/* Pushes the value of the first route of the router at `ridx` that the
** request fields f match, with a topic only one of that topic; or nil. */
static int find(lua_State *L, lrouter *lr, int ridx, const hm_field *f, int n,
                const char *topic, size_t tlen) {
  void *u;
  if (n > 0 && has_null(f, n)) {
    null_acc a = {f, n, topic, tlen, NULL};
    hm_router_lookup_all(lr->r, f, (size_t)n, first_kept, &a);
    u = a.found;
  } else {
    u = topic ? hm_router_lookup_topic(lr->r, f, (size_t)n, topic, tlen)
              : hm_router_lookup(lr->r, f, (size_t)n);
  }
  if (u == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_getiuservalue(L, ridx, 1);
  lua_rawgeti(L, -1, (lua_Integer)(intptr_t)u);
  lua_remove(L, -2);
  return 1;
}

int hm_lua_router_find(lua_State *L, int ridx, const hm_field *f, int n,
                       const char *topic, size_t tlen) {
  ridx = lua_absindex(L, ridx);
  return find(L, check_router(L, ridx), ridx, f, n, topic, tlen);
}

static int do_lookup(lua_State *L, lrouter *lr, hm_field *f, int n) {
  size_t tlen = 0;
  const char *topic = lua_tolstring(L, 3, &tlen);
  return find(L, lr, 1, f, n, topic, tlen);
}

int hm_lua_router_lookup(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TSTRING);
  return with_fields(L, lr, 2, do_lookup, 0);
}

typedef struct list_acc {
  lua_State *L;
  int values, out;
  lua_Integer n;
  null_acc nulls; /* nulls.req == NULL: no null in the request */
} list_acc;

static int list_one(hm_route_t *route, void *udata, void *arg) {
  list_acc *a = arg;
  if (a->nulls.req && !keep(route, &a->nulls)) return 0;
  lua_rawgeti(a->L, a->values, (lua_Integer)(intptr_t)udata);
  lua_rawseti(a->L, a->out, ++a->n);
  return 0;
}

static int do_list(lua_State *L, lrouter *lr, hm_field *f, int n) {
  list_acc a;
  a.L = L;
  lua_getiuservalue(L, 1, 1);
  a.values = lua_gettop(L);
  lua_newtable(L);
  a.out = lua_gettop(L);
  a.n = 0;
  memset(&a.nulls, 0, sizeof a.nulls);
  if (n > 0 && has_null(f, n)) {
    a.nulls.req = f;
    a.nulls.n = n;
  }
  luaL_checkstack(L, 4, NULL);
  hm_router_lookup_all(lr->r, f, (size_t)n, list_one, &a);
  return 1;
}

static int r_list(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  if (lua_isnoneornil(L, 2)) return do_list(L, lr, NULL, 0);
  luaL_checktype(L, 2, LUA_TTABLE);
  return with_fields(L, lr, 2, do_list, 0);
}

static int r_remove(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  hm_route_t *route;
  lua_getiuservalue(L, 1, 2);
  lua_rawgeti(L, -1, id);
  route = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (route == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  hm_router_remove(lr->r, route);
  lua_pushnil(L);
  lua_rawseti(L, -2, id);
  lua_getiuservalue(L, 1, 1);
  lua_pushnil(L);
  lua_rawseti(L, -2, id);
  lua_pushboolean(L, 1);
  return 1;
}

typedef struct rm_acc {
  lua_State *L;
  int values, routes;
} rm_acc;

static void forget(void *udata, void *arg) {
  rm_acc *a = arg;
  lua_Integer id = (lua_Integer)(intptr_t)udata;
  lua_pushnil(a->L);
  lua_rawseti(a->L, a->values, id);
  lua_pushnil(a->L);
  lua_rawseti(a->L, a->routes, id);
}

static int r_remove_topic(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  size_t len;
  const char *topic = luaL_checklstring(L, 2, &len);
  rm_acc a;
  a.L = L;
  lua_getiuservalue(L, 1, 1);
  a.values = lua_gettop(L);
  lua_getiuservalue(L, 1, 2);
  a.routes = lua_gettop(L);
  lua_pushinteger(L,
                  (lua_Integer)hm_router_remove_topic(lr->r, topic, len,
                                                      forget, &a));
  return 1;
}

static int r_count(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  lua_pushinteger(L, (lua_Integer)hm_router_count(lr->r));
  return 1;
}

static int r_memory(lua_State *L) {
  lrouter *lr = check_router(L, 1);
  lua_pushinteger(L, (lua_Integer)hm_router_memory(lr->r));
  return 1;
}

static int r_gc(lua_State *L) {
  lrouter *lr = luaL_checkudata(L, 1, HM_ROUTER_MT);
  if (lr->r) hm_router_free(lr->r, NULL, NULL);
  lr->r = NULL;
  return 0;
}

static int l_router(lua_State *L) {
  static const char *const modes[] = {"insertion", "depth", NULL};
  int mode = luaL_checkoption(L, 1, "insertion", modes);
  lrouter *lr = lua_newuserdatauv(L, sizeof *lr, 2);
  lr->r = NULL;
  lr->next_id = 0;
  luaL_setmetatable(L, HM_ROUTER_MT);
  if (hm_router_new(mode ? HM_INDEX_DEPTH : HM_INDEX_INSERTION, &lr->r) !=
      HM_OK)
    return luaL_error(L, "out of memory");
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

static int l_regex(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "source");
  luaL_setmetatable(L, HM_REGEX_MT);
  return 1;
}

static int regex_tostring(lua_State *L) {
  lua_getfield(L, 1, "source");
  lua_pushfstring(L, "/%s/", lua_tostring(L, -1));
  return 1;
}

static const luaL_Reg router_methods[] = {
    {"add", r_add},       {"lookup", hm_lua_router_lookup},
    {"list", r_list},     {"remove", r_remove},
    {"remove_topic", r_remove_topic}, {"count", r_count},
    {"memory", r_memory}, {NULL, NULL}};

void hm_lua_open_router(lua_State *L) {
  luaL_newmetatable(L, HM_ROUTER_MT);
  luaL_newlib(L, router_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, r_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, HM_REGEX_MT);
  lua_pushcfunction(L, regex_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, "regex");
  lua_setfield(L, -2, "__jsontype");
  lua_setfield(L, -2, "regex_mt");
  lua_pushcfunction(L, l_regex);
  lua_setfield(L, -2, "regex");
  lua_pushcfunction(L, l_router);
  lua_setfield(L, -2, "router");
}
