/*
** hm_lua_msgpack.h: the MessagePack codec of the binding (Lua values <->
** MessagePack bytes), behind `require "hemera.msgpack"`.
**
** The value rules are the JSON codec's (hm_codec.h), so that a service
** sees the same Lua values whichever codec its peers use:
**   - a Lua integer is written as the smallest MessagePack int that holds
**     it, a float always as float64 (so 3.0 stays a float, and NaN and
**     +-Infinity are kept: MessagePack has a word for them, JSON has not);
**     on decode every int that fits in int64 is a Lua integer, a uint64
**     above that and every float32/float64 a Lua float;
**   - nil and the null sentinel (core.null) are written as nil; nil
**     decodes to the null sentinel, in maps and arrays alike;
**   - a table is an array or a map by hm_codec's rules (the array
**     metatable HM_CODEC_ARRAY_MT, else all keys positive integers and not
**     excessively sparse; an empty plain table is an empty map); decoded
**     arrays get the array metatable, so they re-encode as arrays;
**   - map keys are strings: number keys are written as their JavaScript
**     text ("1", "1.5"), as msgpack5 and JSON.stringify see them; str,
**     bin and number keys decode to Lua strings the same way;
**   - map keys go out in byte order, after the keys a "__jsonorder"
**     metatable field lists (the envelope's own order);
**   - a Lua string that is valid UTF-8 is a `str`, any other a `bin`; both
**     decode to Lua strings (a `str` must be valid UTF-8);
**   - functions, threads, userdata, cycles, extension types and nesting
**     deeper than HM_CODEC_MAX_DEPTH are errors naming their path or byte.
**
** Only the loop thread calls these (they use the Lua state).
*/
#ifndef HM_LUA_MSGPACK_H
#define HM_LUA_MSGPACK_H

#include <stddef.h>

#include "hm_codec.h"
#include "lua.h"

/* Appends the MessagePack bytes of the value at `idx` to `out`. Returns 0,
** or -1 (out as it was) with a message naming the path and the problem
** ("cannot encode a function at meta.x") in err. Never raises, except on
** memory errors inside the Lua API (nothing is leaked then: the scratch
** memory belongs to a userdata). */
int hm_msgpack_encode(lua_State *L, int idx, hm_buf *out, char *err,
                      size_t errlen);

/* Pushes the decoded value and returns 1; or pushes nil and a message
** ("msgpack error at byte 3: truncated str (5 bytes, 2 left)") and
** returns 2. The whole input must be one value. Never raises on bad
** input. */
int hm_msgpack_decode(lua_State *L, const char *s, size_t len);

#endif
