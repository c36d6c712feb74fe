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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hm_buf first, second;
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    hm_codec_register(L);
    lua_setglobal(L, "codec");
  }
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
