/*
** hm_codec.h: the JSON codec of the binding (Lua values <-> JSON text).
**
** Numbers meet invariant 4 of docs/architecture.md: Lua integers are
** written exactly ("%lld"); floats as JavaScript prints them (hm_jsnum), so
** 3.0 is "3" and 0.1+0.2 is "0.30000000000000004"; NaN and +-Infinity are
** written as null. On decode, a number without fraction or exponent that
** fits in int64 becomes a Lua integer, every other number a float.
**
** Key order: a decoded object remembers the order of its keys, and goes
** out again in that order, keys added since after them in byte order (see
** hm_codec_decode_from); core.decode(s) does this for every object of s.
**
** Tables: a table whose metatable is the array metatable (registry key
** HM_CODEC_ARRAY_MT) is an array, its holes up to its largest positive
** integer key written as null. A plain table whose keys are all positive
** integers is an array too (holes as null), unless it is excessively
** sparse (lua-cjson's encode_sparse_array defaults, ratio 2, safe 10:
** largest key > 2 * number of keys and > 10): then it is an object with the
** keys as strings, {"1000":x}. Any other table is an object; an empty plain
** table is "{}" (core.array() is "[]"). A metatable field "__jsonorder" (a
** list of key strings) fixes the order of those keys, which come first;
** the other string keys follow in byte order. Decoded arrays get the array
** metatable so they re-encode as arrays, empty ones included.
** JSON null decodes to the null sentinel (a NULL lightuserdata,
** `core.null`, lua-cjson's cjson.null), in objects and arrays alike, so a
** decode then encode gives the same JSON back; the sentinel and nil encode
** as null.
**
** Values JSON has no word for (functions, threads, userdata other than the
** sentinel) are an error naming their path. core.encode(v, skipped) is
** lenient instead, as JSON.stringify is: such a value is left out of an
** object and is null in an array, and its path ("result.f", "list[2]") is
** appended to the list `skipped` (at most 16 paths); `v` itself being one
** is still an error.
**
** Only the loop thread calls these (they use the Lua state).
*/
#ifndef HM_CODEC_H
#define HM_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

#define HM_CODEC_ARRAY_MT "hemera.array"
#define HM_CODEC_MAX_DEPTH 1000

typedef struct hm_buf {
  char *data;
  size_t len;
  size_t cap;
} hm_buf;

void hm_buf_init(hm_buf *b);
void hm_buf_free(hm_buf *b);
/* 0 on success, -1 when out of memory. */
int hm_buf_append(hm_buf *b, const void *data, size_t len);

/* The rules every codec of the binding shares (hm_lua_msgpack.c too), so a
** value has one shape whatever the wire format:
** - hm_codec_utf8len: the length of the well-formed UTF-8 sequence at s
**   (s[0] >= 0x80, n bytes left), or 0 (no overlong forms, no surrogates,
**   nothing above U+10FFFF);
** - hm_codec_arrayshape: the array length of the plain table at idx (its
**   largest key), or 0 when it is an object: empty, a key that is not a
**   positive integer, or too sparse (lua-cjson's encode_sparse_array
**   defaults);
** - hm_codec_arraylen: the length of a table marked as an array (its
**   largest positive integer key: holes are nulls, as in a JS array);
** - hm_codec_push_array_mt: pushes the metatable decoded arrays get. */
size_t hm_codec_utf8len(const unsigned char *s, size_t n);
lua_Integer hm_codec_arrayshape(lua_State *L, int idx);
lua_Integer hm_codec_arraylen(lua_State *L, int idx);
void hm_codec_push_array_mt(lua_State *L);

/* Appends the JSON text of the value at `idx` to `out`. Returns 0, or -1
** with a message naming the path and the problem (for example
** "cannot encode a function at result.cb" or "invalid UTF-8 at
** pattern.name byte 3") written into err. Never raises, except on memory
** errors inside the Lua API. */
int hm_codec_encode(lua_State *L, int idx, hm_buf *out, char *err,
                    size_t errlen);

/* Like hm_codec_encode, for the value of member `key` of an envelope that
** is being written piece by piece: error paths and the lenient encoder's
** left-out paths (skipidx: the stack slot of the list, 0: strict) read as
** if the value sat under `key` ("result.f"). `clean`: members of the value
** itself (a table) whose key ends in '$' or whose value is a function are
** left out, as Hemera leaves options out of a wire pattern. */
int hm_codec_encode_member(lua_State *L, int idx, hm_buf *out,
                           const char *key, int skipidx, int clean, char *err,
                           size_t errlen);

/* Appends s as a JSON string, as the encoder writes it. 0, or -1 (nothing
** appended) for invalid UTF-8 or no memory: encode it with
** hm_codec_encode_member then for the message. */
int hm_codec_put_string(hm_buf *out, const char *s, size_t len);

/* Appends the number at idx as the encoder writes it (null when not
** finite). 0, or -1 (nothing appended) for no memory. */
int hm_codec_put_number(lua_State *L, int idx, hm_buf *out);

/* The byte range [start, end) of a member's value in a JSON text; start
** -1 when the member is absent. */
typedef struct hm_span {
  int32_t start, end;
} hm_span;

/* What hm_codec_scan_ex looks for in an object: the spans of `keys`; the
** member keys[decode] (-1: none), when it is an object, also decoded and
** pushed; the member keys[probe] (-1: none), when it is an object, walked
** with `sub` instead of skipped (its spans relative to the whole text). */
typedef struct hm_scan {
  const char *const *keys;
  int nkeys;
  hm_span *spans;
  int decode, probe;
  const struct hm_scan *sub;
  /* Or NULL. Called for each member of the decoded member's own object
  ** (not of objects inside it) just before it is stored: the table at -3,
  ** the key at -2, the value at -1 (null as the null sentinel). It must
  ** leave the stack as it found it and not raise. A repeated member is
  ** stored, and reported, again; a repeated decoded member is a new
  ** table. */
  void (*member)(lua_State *L, void *arg);
  void *member_arg;
} hm_scan;

/* Validates the whole text as hm_codec_decode would, in one pass, and for
** each of w's top-level keys records the span of its value (the last one,
** as the decoder keeps the last of repeated keys), with the extras of `w`
** (holder: as for hm_codec_decode_from, for the decoded member). Returns
** 0 for an object; 2 when the decoded member was pushed (L must then be
** given; with L NULL nothing is decoded and no Lua state is touched); 1
** when the text is not an object (not validated: decode it for the exact
** error or its type); -1 with hm_codec_decode's message in err for invalid
** JSON. Nothing is pushed but the decoded member. */
int hm_codec_scan_ex(lua_State *L, const char *s, size_t len,
                     const hm_scan *w, int holder, char *err, size_t errlen);

/* Key order of decoded objects. A text decoded with a holder (a Lua value
** at stack slot `holder` that owns the text, 0 for none) has each of its
** objects remember where it came from; when such an object is encoded
** again, its keys go out in the order the text had them (keys added since
** follow in byte order), as JSON.stringify keeps a parsed object's order.
** hm_codec_source(L, idx, &len) gives a holder's text (the whole of it;
** `base` is the offset of the decoded text within it); the binding sets it
** once, and with it NULL nothing is remembered. */
typedef const char *(*hm_codec_source_fn)(lua_State *L, int idx, size_t *len);
extern hm_codec_source_fn hm_codec_source;

/* hm_codec_decode of a text that lies at offset base of its holder's. */
int hm_codec_decode_from(lua_State *L, const char *s, size_t len, int holder,
                         size_t base);

/* Pushes a list of the top-level keys of the object text s, in the order
** they first appear (a repeated key keeps its first place, as in a
** JavaScript object). For a text already validated. Returns 0. */
int hm_codec_keys(lua_State *L, const char *s, size_t len);

/* Pushes the decoded value and returns 1; or pushes nil and an error
** message ("JSON error at byte 17: expected ',' or '}'") and returns 2.
** Never raises on bad input. */
int hm_codec_decode(lua_State *L, const char *s, size_t len);

/* Sets encode, decode, null, array_mt, jsnum and array() on the table at
** the top of the stack. */
void hm_codec_register(lua_State *L);

#endif
