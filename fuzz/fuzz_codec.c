/*
** fuzz_codec.c: the JSON codec on arbitrary bytes.
**
** decode must never crash, hang or leak, whatever the input; when it
** accepts the input, encoding the result must succeed (or fail with a
** message, never crash), and then the round trip must hold from the first
** round (issue 11: null members survive): decode(encode(decode(x)))
** equals decode(x), compared by encoding both, byte for byte. What decode
** normalizes (1e400 is Infinity, written null; -0 is 0; a lone surrogate
** is U+FFFD; the last of duplicate keys wins) encodes the same either way.
**
** The envelope scanner (hm_codec_scan_ex, the request path) must agree with
** the decoder on every input: it fails where decode fails on an object,
** with the same message; it calls a non-object one; and each member's span,
** and the member it decodes, decode to what decode put under that key. Its
** fast walk and its careful one agree on everything, spans inside the
** probed member too.
**
**   CC=clang cmake -S . -B /tmp/fz -DHM_FUZZ=ON \
**     -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link,address,undefined
**   cmake --build /tmp/fz --target fuzz_codec
**   /tmp/fz/fuzz_codec -max_total_time=60 fuzz/corpus/codec
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_codec.h"
#include "lauxlib.h"
#include "lualib.h"

static lua_State *L;

static int encode_top(hm_buf *b) {
  char err[256];
  b->len = 0;
  return hm_codec_encode(L, lua_gettop(L), b, err, sizeof err);
}

/* encode(value at a) == encode(value at b), both present or both nil. */
static void same_value(int a, int b) {
  hm_buf x, y;
  if (lua_isnil(L, a) != lua_isnil(L, b)) abort();
  if (lua_isnil(L, a)) return;
  hm_buf_init(&x);
  hm_buf_init(&y);
  char err[256];
  int rx = hm_codec_encode(L, a, &x, err, sizeof err);
  int ry = hm_codec_encode(L, b, &y, err, sizeof err);
  if (rx != ry || (rx == 0 && (x.len != y.len || memcmp(x.data, y.data, x.len) != 0)))
    abort();
  hm_buf_free(&x);
  hm_buf_free(&y);
}

extern int hm_codec_scan_careful;

static void count_member(lua_State *l, void *arg) {
  (void)l;
  ++*(int *)arg;
}

/* The scanner's fast walk (fscan) and its careful one (object) agree on
** everything: the outcome, the message, every span, the decoded member. */
static void check_walks(const char *s, size_t size) {
  static const char *const keys[] = {"pattern", "meta", "trace", "request",
                                     "delegate", "result", "error"};
  static const char *const type_key[] = {"type"};
  hm_span sp[2][7], tsp[2];
  char err[2][256];
  int r[2], members[2] = {0, 0};
  lua_settop(L, 0);
  for (int k = 0; k < 2; k++) {
    hm_scan sub = {type_key, 1, &tsp[k], -1, -1, NULL, NULL, NULL};
    hm_scan w = {keys, 7, sp[k], 0, 3, &sub, count_member, &members[k]};
    err[k][0] = '\0';
    hm_codec_scan_careful = k;
    r[k] = hm_codec_scan_ex(L, s, size, &w, 0, err[k], sizeof err[k]);
  }
  hm_codec_scan_careful = 0;
  if (r[0] != r[1]) abort();
  if (r[0] == -1 && strcmp(err[0], err[1]) != 0) abort();
  if (r[0] != -1 && members[0] != members[1]) abort();
  if (r[0] == 0 || r[0] == 2) {
    if (memcmp(sp[0], sp[1], sizeof sp[0]) != 0) abort();
    if (tsp[0].start != tsp[1].start || tsp[0].end != tsp[1].end) abort();
  }
  if (lua_gettop(L) != (r[0] == 2 ? 2 : 0)) abort();
  if (r[0] == 2) same_value(1, 2);
  lua_settop(L, 0);
}

static void check_scan(const char *s, size_t size) {
  static const char *const keys[] = {"pattern", "meta", "trace", "request",
                                     "delegate", "result", "error"};
  static const char *const type_key[] = {"type"};
  hm_span spans[7], tsp;
  hm_scan sub = {type_key, 1, &tsp, -1, -1, NULL, NULL, NULL};
  hm_scan w = {keys, 7, spans, 0, 3, &sub, NULL, NULL};
  char err[256];
  size_t i = 0;
  lua_settop(L, 0);
  while (i < size && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
  int object = i < size && s[i] == '{';
  int sr = hm_codec_scan_ex(L, s, size, &w, 0, err, sizeof err);
  int pushed = lua_gettop(L);
  if ((sr == 2) != (pushed == 1) || pushed > 1) abort();
  int dr = hm_codec_decode(L, s, size);
  if (!object) {
    if (sr != 1) abort();
    lua_settop(L, 0);
    return;
  }
  if (sr == -1) {
    if (dr != 2 || strcmp(err, lua_tostring(L, -1)) != 0) abort();
    lua_settop(L, 0);
    return;
  }
  if (dr != 1 || !lua_istable(L, -1)) abort();
  int t = lua_gettop(L);
  if (sr == 2) {
    lua_getfield(L, t, "pattern");
    same_value(1, lua_gettop(L));
    lua_pop(L, 1);
  }
  for (int k = 0; k < 7; k++) {
    lua_getfield(L, t, keys[k]);
    if (spans[k].start < 0) {
      if (!lua_isnil(L, -1)) abort();
    } else {
      if (hm_codec_decode(L, s + spans[k].start, (size_t)(spans[k].end - spans[k].start)) != 1)
        abort();
      same_value(-2, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hm_buf first, second;
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    hm_codec_register(L);
    lua_setglobal(L, "codec");
  }
  check_scan((const char *)data, size);
  check_walks((const char *)data, size);
  lua_settop(L, 0);
  if (hm_codec_decode(L, (const char *)data, size) != 1) {
    lua_settop(L, 0);
    return 0;
  }
  hm_buf_init(&first);
  hm_buf_init(&second);
  if (encode_top(&first) == 0) {
    /* first = encode(decode(x)); second = encode(decode(first)). */
    lua_settop(L, 0);
    if (hm_codec_decode(L, first.data, first.len) != 1) abort();
    if (encode_top(&second) != 0) abort();
    if (first.len != second.len ||
        memcmp(first.data, second.data, first.len) != 0)
      abort();
  }
  hm_buf_free(&first);
  hm_buf_free(&second);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
