/*
** hm_lua_pattern.c: Hemera's pattern string (Util.pattern), the
** `trace.method` of every request, made once per act so it is in C.
**
** core.method(pattern) -> "a:1,b:2,cmd:add,topic:math"
**   Scalar pairs of keys not ending in "$" (and regex values, as /src/),
**   each "key:" .. String(value) with JavaScript's number formatting,
**   sorted by bytes, joined by ",".
*/
#include <stdlib.h>
#include <string.h>

#include "hm_jsnum.h"
#include "hm_lua_private.h"

#define PAIRS_STACK 32

typedef struct pair {
  const char *s;
  size_t len;
} pair;

static int cmp_pair(const void *a, const void *b) {
  const pair *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int r = memcmp(x->s, y->s, n);
  if (r != 0) return r;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* Pushes "key:value" for the pair on top (key at -2, value at -1), or
** nothing; returns 1 when it pushed. */
static int push_pair(lua_State *L) {
  size_t klen;
  const char *k;
  char num[HM_JSNUM_BUFSIZE];
  if (lua_type(L, -2) != LUA_TSTRING) return 0;
  k = lua_tolstring(L, -2, &klen);
  if (klen > 0 && k[klen - 1] == '$') return 0;
  switch (lua_type(L, -1)) {
    case LUA_TSTRING:
      lua_pushfstring(L, "%s:%s", k, lua_tostring(L, -1));
      return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, -1))
        lua_pushfstring(L, "%s:%I", k, (LUAI_UACINT)lua_tointeger(L, -1));
      else {
        hm_jsnum_format((double)lua_tonumber(L, -1), num);
        lua_pushfstring(L, "%s:%s", k, num);
      }
      return 1;
    case LUA_TBOOLEAN:
      lua_pushfstring(L, "%s:%s", k, lua_toboolean(L, -1) ? "true" : "false");
      return 1;
    case LUA_TTABLE:
      if (!hm_lua_is_regex(L, -1)) return 0;
      lua_getfield(L, -1, "source");
      lua_pushfstring(L, "%s:/%s/", k, lua_tostring(L, -1));
      lua_remove(L, -2);
      return 1;
    default:
      return 0;
  }
}

static int l_method(lua_State *L) {
  pair local[PAIRS_STACK], *pairs = local;
  int n = 0, cap = PAIRS_STACK, base, i;
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  /* The "k:v" strings stay on the stack (so they live) until joined. */
  base = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (push_pair(L)) {
      if (n == cap) {
        pair *np;
        cap *= 2;
        np = lua_newuserdatauv(L, (size_t)cap * sizeof *np, 0);
        memcpy(np, pairs, (size_t)n * sizeof *np);
        pairs = np;
        /* Keep the userdata below the strings being collected. */
        lua_insert(L, base + 1);
        base++;
      }
      luaL_checkstack(L, 3, "pattern too large");
      pairs[n].s = lua_tolstring(L, -1, &pairs[n].len);
      n++;
      lua_insert(L, -3); /* string below key/value */
    }
    lua_pop(L, 1);
  }
  qsort(pairs, (size_t)n, sizeof *pairs, cmp_pair);
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    if (i > 0) luaL_addchar(&b, ',');
    luaL_addlstring(&b, pairs[i].s, pairs[i].len);
  }
  luaL_pushresult(&b);
  return 1;
}

void hm_lua_open_pattern(lua_State *L) {
  lua_pushcfunction(L, l_method);
  lua_setfield(L, -2, "method");
}
