/*
** fuzz_msgpack.c: the MessagePack codec (hm_lua_msgpack.c) on arbitrary
** bytes.
**
** decode must never crash, hang or leak, whatever the input. When it
** accepts the input, encoding the result must succeed (a decoded value has
** no function, no cycle, no deeper nesting than decode allowed), and the
** round trip must hold from the first round: encode(decode(encode(
** decode(x)))) equals encode(decode(x)) byte for byte. What decode
** normalizes (number and bin keys become strings, the last of repeated
** keys wins, float32 widens to float64, uint64 above int64 is a float)
** encodes the same either way.
**
**   CC=clang cmake -S . -B /tmp/fz -DHM_FUZZ=ON \
**     -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link,address,undefined
**   cmake --build /tmp/fz --target fuzz_msgpack
**   /tmp/fz/fuzz_msgpack -max_total_time=60 fuzz/corpus/msgpack
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hm_lua_msgpack.h"
#include "lauxlib.h"
#include "lualib.h"

static lua_State *L;

static int encode_top(hm_buf *b) {
  char err[320];
  b->len = 0;
  return hm_msgpack_encode(L, lua_gettop(L), b, err, sizeof err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hm_buf first, second;
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
  }
  lua_settop(L, 0);
  int r = hm_msgpack_decode(L, (const char *)data, size);
  if (r == 2) {
    /* nil and a message naming the byte */
    if (!lua_isnil(L, 1) || strncmp(lua_tostring(L, 2), "msgpack error at byte ", 22) != 0)
      abort();
    lua_settop(L, 0);
    return 0;
  }
  if (r != 1 || lua_gettop(L) != 1) abort();
  hm_buf_init(&first);
  hm_buf_init(&second);
  if (encode_top(&first) != 0) abort();
  lua_settop(L, 0);
  if (hm_msgpack_decode(L, first.data, first.len) != 1) abort();
  if (encode_top(&second) != 0) abort();
  if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0)
    abort();
  hm_buf_free(&first);
  hm_buf_free(&second);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
