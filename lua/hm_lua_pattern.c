/*
** hm_lua_pattern.c: Hemera's pattern string (Util.pattern), the
** `trace.method` of every request, made once per act so it is in C.
**
** core.method(pattern [, c]) -> "a:1,b:2,cmd:add,topic:math" [, ends]
**   Scalar pairs of keys not ending in "$" (and regex values, as /src/),
**   each "key:" .. String(value) with JavaScript's number formatting,
**   sorted by bytes, joined by ",". With the one-byte string c, also
**   whether some string key ends in c (core.key_ends(pattern, c)): an
**   act asks for "_" (options as `name_`) and so reads the keys once.
**
** core.ecma_regex(source [, jit]) -> regex | nil, message
** regex:test(subject) -> true | false | nil, message, code
** regex:jit() -> whether PCRE2's JIT compiled it
**   A JSON Schema `pattern` (an ECMA-262 regex) compiled once with PCRE2,
**   matched with bounded work. test() reports a limit hit (code "limit")
**   or a subject that is not UTF-8 (code "utf") as values, never raises:
**   they come from request data, not from the programmer. `jit` false
**   keeps the regex on the interpreter (its limits differ, see below).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "hm_jsnum.h"
#include "hm_lua_private.h"

#define PAIRS_STACK 32

/* One "key:value" of the method string, not yet joined: the key and
** string values stay anchored by the pattern table (or its regex) while
** l_method runs; numbers are formatted into num. */
typedef struct pair {
  const char *k, *v;
  size_t klen, vlen;
  int slashes; /* a regex: "/source/" */
  char num[HM_JSNUM_BUFSIZE];
} pair;

/* A number's text lives in the pair itself (which may move). */
#define VAL(p) ((p)->v != NULL ? (p)->v : (p)->num)

/* Byte i of "key:value" (or of "key:/source/"). */
static unsigned char pair_at(const pair *p, size_t i) {
  if (i < p->klen) return (unsigned char)p->k[i];
  i -= p->klen;
  if (i == 0) return ':';
  i--;
  if (p->slashes) {
    if (i == 0 || i == p->vlen + 1) return '/';
    i--;
  }
  return (unsigned char)VAL(p)[i];
}

static size_t pair_len(const pair *p) {
  return p->klen + 1 + p->vlen + (p->slashes ? 2 : 0);
}

static int cmp_pair(const void *a, const void *b) {
  const pair *x = a, *y = b;
  size_t nx = pair_len(x), ny = pair_len(y), n = nx < ny ? nx : ny;
  /* Keys usually differ, and then within the shorter key. */
  size_t kn = x->klen < y->klen ? x->klen : y->klen;
  int r = memcmp(x->k, y->k, kn);
  if (r != 0) return r;
  for (size_t i = kn; i < n; i++) {
    unsigned char cx = pair_at(x, i), cy = pair_at(y, i);
    if (cx != cy) return cx < cy ? -1 : 1;
  }
  return nx < ny ? -1 : nx > ny;
}

/* Fills *p from the pair on top (key at -2, value at -1); 0 when the pair
** is not part of the method string. May leave nothing on the stack. Sets
** *ends when the key is a string ending in the byte c (c < 0: none). */
static int read_pair(lua_State *L, pair *p, int c, int *ends) {
  if (lua_type(L, -2) != LUA_TSTRING) return 0;
  p->k = lua_tolstring(L, -2, &p->klen);
  if (p->klen > 0 && (unsigned char)p->k[p->klen - 1] == c) *ends = 1;
  if (p->klen > 0 && p->k[p->klen - 1] == '$') return 0;
  p->slashes = 0;
  switch (lua_type(L, -1)) {
    case LUA_TSTRING:
      p->v = lua_tolstring(L, -1, &p->vlen);
      return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, -1))
        p->vlen = hm_jsnum_int((long long)lua_tointeger(L, -1), p->num);
      else
        p->vlen = hm_jsnum_format((double)lua_tonumber(L, -1), p->num);
      p->v = NULL;
      return 1;
    case LUA_TBOOLEAN:
      p->v = lua_toboolean(L, -1) ? "true" : "false";
      p->vlen = strlen(p->v);
      return 1;
    case LUA_TTABLE:
      if (!hm_lua_is_regex(L, -1)) return 0;
      lua_getfield(L, -1, "source"); /* the regex keeps it alive */
      p->v = lua_tolstring(L, -1, &p->vlen);
      lua_pop(L, 1);
      if (p->v == NULL) return 0;
      p->slashes = 1;
      return 1;
    default:
      return 0;
  }
}

/* Sorts the n pairs through `order` (pointers: a pair is big). Patterns
** have a handful of keys, where insertion sort beats qsort's calls
** through a function pointer several times over. */
static void sort_pairs(pair *pairs, const pair **order, int n) {
  for (int i = 0; i < n; i++) {
    const pair *p = &pairs[i];
    int j = i;
    for (; j > 0 && cmp_pair(order[j - 1], p) > 0; j--) order[j] = order[j - 1];
    order[j] = p;
  }
}

/* The method string is written on the C stack, or in a userdata when longer. */
#define METHOD_STACK 256

static int l_method(lua_State *L) {
  pair local[PAIRS_STACK], *pairs = local;
  const pair *lorder[PAIRS_STACK], **order = lorder;
  int n = 0, cap = PAIRS_STACK, i, ends = 0;
  size_t total = 0, cl = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *c = luaL_optlstring(L, 2, NULL, &cl);
  luaL_argcheck(L, c == NULL || cl == 1, 2, "one byte expected");
  const int cc = c != NULL ? (unsigned char)*c : -1;
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (n == cap) {
      /* A wide pattern: a bigger array, anchored at slot 2, below the
      ** iteration's key and value. */
      pair *np = lua_newuserdatauv(L, (size_t)cap * 2 * sizeof *np, 0);
      memcpy(np, pairs, (size_t)n * sizeof *np);
      if (pairs == local) lua_insert(L, 2); else lua_replace(L, 2);
      pairs = np;
      cap *= 2;
    }
    if (read_pair(L, &pairs[n], cc, &ends)) n++;
    lua_pop(L, 1);
  }
  /* A wide pattern's order lives on the stack until the return. */
  if (n > PAIRS_STACK) order = lua_newuserdatauv(L, (size_t)n * sizeof *order, 0);
  sort_pairs(pairs, order, n);
  for (i = 0; i < n; i++) total += pair_len(order[i]) + 1;
  char local_out[METHOD_STACK];
  char *out = total <= METHOD_STACK ? local_out : lua_newuserdatauv(L, total, 0);
  char *w = out;
  for (i = 0; i < n; i++) {
    const pair *p = order[i];
    if (i > 0) *w++ = ',';
    memcpy(w, p->k, p->klen);
    w += p->klen;
    *w++ = ':';
    if (p->slashes) *w++ = '/';
    memcpy(w, VAL(p), p->vlen);
    w += p->vlen;
    if (p->slashes) *w++ = '/';
  }
  lua_pushlstring(L, out, (size_t)(w - out));
  if (cc < 0) return 1;
  lua_pushboolean(L, ends);
  return 2;
}

/* {====================================================================
** ECMA-262 regexes on PCRE2 (core.ecma_regex)
**
** Compile options, chosen so PCRE2 reads a pattern the way ECMAScript
** does with the `u` flag (code points, not UTF-16 units):
**   PCRE2_UTF               the pattern and subjects are UTF-8; subjects
**                           are checked on every match (no
**                           PCRE2_MATCH_INVALID_UTF), so a bad one is an
**                           error rather than a silent non-match;
**   PCRE2_DOLLAR_ENDONLY    `$` only at the very end, not before a final
**                           "\n" as in Perl;
**   PCRE2_ALT_BSUX and PCRE2_EXTRA_ALT_BSUX
**                           `\uHHHH`, `\u{H...}` and `\xHH` as in
**                           ECMAScript;
**   PCRE2_ALLOW_EMPTY_CLASS `[]` matches nothing, `[^]` any character;
**   PCRE2_MATCH_UNSET_BACKREF
**                           a backreference to an unset group matches "";
**   PCRE2_NEVER_UCP         `\d \w \b` stay ASCII, as ECMAScript's are,
**                           even if the pattern starts with (*UCP);
**   PCRE2_NEVER_BACKSLASH_C `\C` (one byte) could split a character;
**   newline ANYCRLF         `.` stops at "\r" and "\n".
** What still differs from ECMAScript: `.` matches U+2028 and U+2029;
** `\s` is ASCII white space only; `\v` is PCRE2's vertical-space class,
** not just U+000B; surrogate escapes (`\uD83D\uDE00`) are refused (write
** the character or `\u{1F600}`); lookbehinds must have a fixed length per
** alternative; `{,n}` is a literal in PCRE2 10.42 (as in ECMAScript
** without `u`) but means {0,n} from 10.43; and PCRE2-only syntax
** (possessive `a++`, atomic groups, `(?i)`, `\A \z`, `[[:alpha:]]`,
** `(*VERB)`s, recursion) is accepted where ECMAScript would reject it or
** read it otherwise.
** ===================================================================== */

#define ECMA_MT "hemera.EcmaRegex"
#define ENGINE_MT "hemera.EcmaEngine"

#define ECMA_OPTIONS                                                     \
  (PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX |                  \
   PCRE2_ALLOW_EMPTY_CLASS | PCRE2_MATCH_UNSET_BACKREF | PCRE2_NEVER_UCP | \
   PCRE2_NEVER_BACKSLASH_C)

/* The bounds of one match. The match limit counts backtracking steps from
** each start position (milliseconds of work); the depth and heap limits
** bound the interpreter's backtracking frames, and the JIT stack bounds the
** JIT's. A pattern that needs more gets an error, not the loop thread.
** The frame bounds cap a repeated group, `^(a|b)*$`, at about 50,000
** iterations (interpreter) or 130,000 (JIT); a repeated single character
** or class, `^[ab]*$`, has no such cap. The JIT stack is address space
** reserved once per Lua state; pages a deep match touched stay mapped. */
#define MATCH_LIMIT 1000000
#define DEPTH_LIMIT 100000
#define HEAP_LIMIT_KB (16 * 1024)
#define JIT_STACK_MIN (32 * 1024)
#define JIT_STACK_MAX (4 * 1024 * 1024)

/* What every regex of one Lua state shares. Lua runs one match at a time
** and PCRE2 never calls back into Lua here (no callouts), so one match
** data block and one JIT stack serve all patterns. Each regex holds the
** engine as its first user value, so the engine is alive whenever a match
** uses it. */
typedef struct engine {
  pcre2_compile_context *cctx;
  pcre2_match_context *mctx;
  pcre2_match_data *md;
  pcre2_jit_stack *stack; /* NULL without JIT */
  int jit;                /* the library has JIT */
} engine;

typedef struct ecma {
  pcre2_code *code; /* NULL once closed or when compiling failed */
  int jit;          /* pcre2_jit_compile succeeded */
} ecma;

static int engine_gc(lua_State *L) {
  engine *e = luaL_checkudata(L, 1, ENGINE_MT);
  pcre2_match_data_free(e->md);
  pcre2_match_context_free(e->mctx);
  pcre2_compile_context_free(e->cctx);
  pcre2_jit_stack_free(e->stack);
  e->md = NULL;
  e->mctx = NULL;
  e->cctx = NULL;
  e->stack = NULL;
  return 0;
}

/* Pushes a new engine. Raises on memory exhaustion, after which the
** userdata's __gc frees whatever was made. */
static engine *push_engine(lua_State *L) {
  uint32_t jit = 0;
  engine *e = lua_newuserdatauv(L, sizeof *e, 0);
  memset(e, 0, sizeof *e);
  luaL_setmetatable(L, ENGINE_MT);
  e->cctx = pcre2_compile_context_create(NULL);
  e->mctx = pcre2_match_context_create(NULL);
  e->md = pcre2_match_data_create(1, NULL); /* we only ask "any match?" */
  if (!e->cctx || !e->mctx || !e->md) luaL_error(L, "out of memory");
  pcre2_set_newline(e->cctx, PCRE2_NEWLINE_ANYCRLF);
  pcre2_set_compile_extra_options(e->cctx, PCRE2_EXTRA_ALT_BSUX);
  pcre2_set_match_limit(e->mctx, MATCH_LIMIT);
  pcre2_set_depth_limit(e->mctx, DEPTH_LIMIT);
  pcre2_set_heap_limit(e->mctx, HEAP_LIMIT_KB);
  if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit) {
    /* Without a stack of our own the JIT would use 32 KiB of the C stack,
    ** too little for a long subject under a repeated group. */
    e->stack = pcre2_jit_stack_create(JIT_STACK_MIN, JIT_STACK_MAX, NULL);
    if (e->stack) {
      pcre2_jit_stack_assign(e->mctx, NULL, e->stack);
      e->jit = 1;
    }
  }
  return e;
}

static int ecma_close(lua_State *L) {
  ecma *re = luaL_checkudata(L, 1, ECMA_MT);
  pcre2_code_free(re->code);
  re->code = NULL;
  return 0;
}

static int l_ecma_regex(lua_State *L) {
  size_t len;
  const char *src = luaL_checklstring(L, 1, &len);
  int want_jit = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  engine *e = lua_touserdata(L, lua_upvalueindex(1));
  int code;
  PCRE2_SIZE off;
  ecma *re = lua_newuserdatauv(L, sizeof *re, 2);
  re->code = NULL;
  re->jit = 0;
  luaL_setmetatable(L, ECMA_MT);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setiuservalue(L, -2, 1); /* the engine */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2); /* the source */
  re->code = pcre2_compile((PCRE2_SPTR)src, len, ECMA_OPTIONS, &code, &off,
                           e->cctx);
  if (re->code == NULL) {
    char msg[256];
    if (code == PCRE2_ERROR_NOMEMORY) return luaL_error(L, "out of memory");
    pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s (at offset %d)", msg, (int)off);
    return 2;
  }
  /* Without the JIT (not built in, or no executable memory) the
  ** interpreter matches the same strings, only slower. */
  if (e->jit && want_jit)
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  return 1;
}

/* Pushes nil, message, code for a failed match; returns 3. */
static int match_error(lua_State *L, engine *e, int rc) {
  const char *what = NULL;
  switch (rc) {
    case PCRE2_ERROR_MATCHLIMIT: what = "match limit"; break;
    case PCRE2_ERROR_DEPTHLIMIT: what = "depth limit"; break;
    case PCRE2_ERROR_HEAPLIMIT: what = "heap limit"; break;
    case PCRE2_ERROR_JIT_STACKLIMIT: what = "JIT stack limit"; break;
    case PCRE2_ERROR_NOMEMORY: return luaL_error(L, "out of memory");
    default: break;
  }
  luaL_pushfail(L);
  if (what) {
    /* The match data keeps its backtracking frames for the next match;
    ** after a runaway match they may be megabytes, so start afresh. */
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (md) {
      pcre2_match_data_free(e->md);
      e->md = md;
    }
    lua_pushfstring(L, "exceeded the %s", what);
    lua_pushliteral(L, "limit");
  } else {
    char msg[256];
    pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) {
      lua_pushfstring(L, "invalid UTF-8 at byte %d (%s)",
                      (int)pcre2_get_startchar(e->md), msg);
      lua_pushliteral(L, "utf");
    } else {
      lua_pushstring(L, msg);
      lua_pushliteral(L, "error");
    }
  }
  return 3;
}

static int ecma_test(lua_State *L) {
  ecma *re = luaL_checkudata(L, 1, ECMA_MT);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  engine *e;
  int rc;
  if (re->code == NULL) return luaL_error(L, "regex is closed");
  lua_getiuservalue(L, 1, 1);
  e = lua_touserdata(L, -1);
  if (e == NULL || e->md == NULL)
    return luaL_error(L, "regex engine is closed");
  rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, e->md, e->mctx);
  if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH) {
    lua_pushboolean(L, rc >= 0);
    return 1;
  }
  return match_error(L, e, rc);
}

static int ecma_jit(lua_State *L) {
  ecma *re = luaL_checkudata(L, 1, ECMA_MT);
  lua_pushboolean(L, re->jit);
  return 1;
}

static int ecma_tostring(lua_State *L) {
  luaL_checkudata(L, 1, ECMA_MT);
  lua_getiuservalue(L, 1, 2);
  lua_pushfstring(L, "/%s/", lua_tostring(L, -1));
  return 1;
}

static const luaL_Reg ecma_methods[] = {
    {"test", ecma_test}, {"jit", ecma_jit}, {NULL, NULL}};

static const luaL_Reg ecma_meta[] = {{"__gc", ecma_close},
                                     {"__close", ecma_close},
                                     {"__tostring", ecma_tostring},
                                     {NULL, NULL}};

/* }==================================================================== */

/* core.key_ends(t, c) -> whether a string key of t ends with the byte c:
** pattern.normalize's test for `name_` options, once per act (a Lua pairs
** loop over the pattern cost about twice as much). */
static int l_key_ends(lua_State *L) {
  size_t cl;
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *c = luaL_checklstring(L, 2, &cl);
  luaL_argcheck(L, cl == 1, 2, "one byte expected");
  lua_settop(L, 2);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    size_t n;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    const char *k = lua_tolstring(L, -1, &n);
    if (n > 0 && k[n - 1] == *c) {
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  lua_pushboolean(L, 0);
  return 1;
}

void hm_lua_open_pattern(lua_State *L) {
  lua_pushcfunction(L, l_method);
  lua_setfield(L, -2, "method");
  lua_pushcfunction(L, l_key_ends);
  lua_setfield(L, -2, "key_ends");
  if (luaL_newmetatable(L, ENGINE_MT)) {
    lua_pushcfunction(L, engine_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, ECMA_MT)) {
    luaL_setfuncs(L, ecma_meta, 0);
    luaL_newlib(L, ecma_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  push_engine(L);
  lua_pushcclosure(L, l_ecma_regex, 1);
  lua_setfield(L, -2, "ecma_regex");
}
