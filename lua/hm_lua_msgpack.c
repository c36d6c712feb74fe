/*
** hm_lua_msgpack.c: core.msgpack_encode / core.msgpack_decode, the codec of
** `hemera.msgpack` (see hm_lua_msgpack.h for the value rules).
**
** The library is msgpuck (Debian's libmsgpuck-dev, Tarantool's codec),
** chosen over msgpack-c (libmsgpack-dev) and libmpack (libmpack-dev):
**   - msgpack-c's C unpacker builds a tree of msgpack_object in a zone
**     (one more allocation and copy per message), and its parser stack is
**     fixed at 32 levels (MSGPACK_EMBED_STACK_SIZE), deeper input failing
**     as "out of memory": we want the JSON codec's 1000 levels and a true
**     message;
**   - libmpack is a token stream with 32-bit halves (mpack_value_t) made
**     for incremental parsing, which a whole NATS payload does not need,
**     and it picks float32 when a double happens to fit;
**   - msgpuck is inline encode and decode functions over a plain buffer:
**     no allocation, no callbacks, mp_encode_double always float64, the
**     smallest int forms, and mp_check_* to bounds-check every header, so
**     we walk the input once, with our own depth limit and an exact byte
**     offset for each error. Its 1.0.3 has no ext helpers: ext headers are
**     read here only to name the type in the error. Its static archive is
**     not position independent, so it is used header-only (MP_SOURCE).
**
** Nothing malloc'd is held outside a userdata: the output buffer and the
** key arena belong to a scratch userdata kept in the registry, so a memory
** error raised by the Lua API in the middle leaks nothing. Input is never
** trusted: every length is checked against the bytes left before use, and
** a declared element count larger than the bytes left fails at once (each
** element needs a byte), so a 5-byte message cannot make us allocate.
*/
#include "hm_lua_msgpack.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* msgpuck's documented header-only use: this one unit holds its functions
** and tables. Hidden, so the module exports none of them (another module
** may carry its own msgpuck); the C headers it includes come first, so
** libc's declarations keep their visibility. */
#define MP_SOURCE 1
#pragma GCC visibility push(hidden)
#include <msgpuck.h>
#pragma GCC visibility pop

#include "hm_jsnum.h"
#include "hm_lua_private.h"
#include "lauxlib.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* {====================================================================
** UTF-8
** ===================================================================== */

/* The offset of the first byte of s that is not part of well-formed
** UTF-8, or n when s is valid. ASCII runs go 8 bytes at a time. */
static size_t utf8_bad(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = hm_codec_utf8len(s + i, n - i);
    if (k == 0) return i;
    i += k;
  }
  return n;
}

/* }==================================================================== */

/* {====================================================================
** Scratch state
** ===================================================================== */

/* One key of a map being written. */
typedef struct entry {
  const char *s;   /* the string key (anchored by its table), or NULL */
  size_t len;
  int slot;        /* stack slot of the value; 0: look it up again */
  int used;        /* already written by __jsonorder */
  int isint;       /* number keys: which of ikey/fkey */
  lua_Integer ikey;
  lua_Number fkey;
  char num[HM_JSNUM_BUFSIZE]; /* a number key's text */
} entry;

typedef struct mstate {
  hm_buf out;
  entry *ents; /* the keys of every map on the current path */
  size_t nents, capents;
  int busy;
} mstate;

static const char statekey = 'M';
static const char statemtkey = 'T';

static int state_gc(lua_State *L) {
  mstate *st = lua_touserdata(L, 1);
  hm_buf_free(&st->out);
  free(st->ents);
  st->ents = NULL;
  st->nents = st->capents = 0;
  return 0;
}

static mstate *newstate(lua_State *L) {
  mstate *st = lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  hm_buf_init(&st->out);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &statemtkey) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &statemtkey);
  }
  lua_setmetatable(L, -2);
  return st;
}

/* Pushes a scratch state and marks it busy. The shared one is busy only if
** a finalizer the GC runs during a call encodes again: that nested call
** gets a private state, collected like any userdata. */
static mstate *acquire(lua_State *L) {
  mstate *st = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &statekey) == LUA_TUSERDATA)
    st = lua_touserdata(L, -1);
  if (st == NULL) {
    lua_pop(L, 1);
    st = newstate(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &statekey);
  } else if (st->busy) {
    lua_pop(L, 1);
    st = newstate(L);
  }
  st->busy = 1;
  st->nents = 0;
  return st;
}

static void release(mstate *st) {
  st->busy = 0;
  st->nents = 0;
  /* One huge message must not pin its memory for the life of the state. */
  if (st->out.cap > (1u << 20)) hm_buf_free(&st->out);
  if (st->capents > 4096) {
    free(st->ents);
    st->ents = NULL;
    st->capents = 0;
  }
}

/* }==================================================================== */

/* {====================================================================
** Encoder
** ===================================================================== */

/* Maps keep up to this many values on the Lua stack while their keys are
** sorted; a wider one has its values looked up again by key. */
#define RETAIN_MAX 256


enum { KEY_NONE, KEY_STR, KEY_INDEX };

/* One table on the current path: for cycles and error paths. */
typedef struct frame {
  const struct frame *up;
  const void *tab;
  int kind;
  const char *key;
  size_t klen;
  lua_Integer index;
  char num[HM_JSNUM_BUFSIZE];
} frame;

typedef struct enc {
  lua_State *L;
  hm_buf *out;
  mstate *st;
  const void *arraymt;
  int orderkey; /* stack slot of the string "__jsonorder" */
  char *err;
  size_t errlen;
} enc;

/* Appends key to the path, any byte that is not printable ASCII or part of
** well-formed UTF-8 shown as '?', so the message is valid UTF-8. */
static size_t putkey(char *dst, size_t cap, size_t len, const char *key,
                     size_t klen) {
  const unsigned char *p = (const unsigned char *)key, *end = p + klen;
  while (p < end && len + 1 < cap) {
    size_t n = *p >= 0x80 ? hm_codec_utf8len(p, (size_t)(end - p)) : 1;
    if (n == 0 || *p < 0x20 || *p == 0x7F) {
      dst[len++] = '?';
      p++;
      continue;
    }
    if (len + n >= cap) break;
    memcpy(dst + len, p, n);
    len += n;
    p += n;
  }
  dst[len] = '\0';
  return p < end ? cap : len;
}

static void writepath(char *dst, size_t cap, const frame *f) {
  const frame *chain[HM_CODEC_MAX_DEPTH + 2];
  int n = 0, i;
  size_t len = 0;
  for (; f && n < HM_CODEC_MAX_DEPTH + 2; f = f->up) chain[n++] = f;
  dst[0] = '\0';
  for (i = n - 1; i >= 0 && len + 1 < cap; i--) {
    const frame *c = chain[i];
    if (c->kind == KEY_STR) {
      if (len) dst[len++] = '.';
      len = putkey(dst, cap, len, c->key, c->klen);
    } else if (c->kind == KEY_INDEX) {
      int w = snprintf(dst + len, cap - len, "[%lld]", (long long)c->index);
      if (w < 0) break;
      len += (size_t)w;
    }
  }
  if ((i >= 0 || len >= cap) && cap > 4) {
    if (len > cap - 4) len = cap - 4;
    memcpy(dst + len, "...", 4);
  }
}

/* "<what> at <path>" into e->err. */
static int fail(enc *e, const frame *f, const char *what) {
  char path[256];
  writepath(path, sizeof path, f);
  if (e->errlen)
    snprintf(e->err, e->errlen, "%s%s%s", what, path[0] ? " at " : "", path);
  return -1;
}

static int oom(enc *e) {
  if (e->errlen) snprintf(e->err, e->errlen, "out of memory");
  return -1;
}

static int grow(hm_buf *b, size_t need) {
  if (need > SIZE_MAX / 2 - b->len) return -1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < need) cap *= 2;
  char *d = realloc(b->data, cap);
  if (d == NULL) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

/* Room for n more bytes; the write position, or NULL (message set). */
static inline char *room(enc *e, size_t n) {
  hm_buf *b = e->out;
  if (b->cap - b->len < n && grow(b, n)) return oom(e), NULL;
  return b->data + b->len;
}

static inline int done(enc *e, const char *w) {
  e->out->len = (size_t)(w - e->out->data);
  return 0;
}

static int putnil(enc *e) {
  char *w = room(e, 1);
  return w ? done(e, mp_encode_nil(w)) : -1;
}

/* A string as `str` when it is valid UTF-8, else as `bin`. */
static int putstring(enc *e, const char *s, size_t len, const frame *f) {
  if (len > UINT32_MAX) return fail(e, f, "string longer than 4 GiB");
  char *w = room(e, len + 5);
  if (!w) return -1;
  if (utf8_bad((const unsigned char *)s, len) == len)
    w = mp_encode_str(w, s, (uint32_t)len);
  else
    w = mp_encode_bin(w, s, (uint32_t)len);
  return done(e, w);
}

static int value(enc *e, int idx, const frame *f, int depth);

static entry *newentry(mstate *st) {
  if (st->nents == st->capents) {
    size_t cap = st->capents ? st->capents * 2 : 64;
    entry *v = realloc(st->ents, cap * sizeof *v);
    if (v == NULL) return NULL;
    st->ents = v;
    st->capents = cap;
  }
  return &st->ents[st->nents++];
}

static const char *keyof(const entry *en) { return en->s ? en->s : en->num; }

static int keycmp(const void *pa, const void *pb) {
  const entry *a = pa, *b = pb;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(keyof(a), keyof(b), n) : 0;
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

static void sortkeys(entry *v, size_t n) {
  if (n > 16) {
    qsort(v, n, sizeof *v, keycmp);
    return;
  }
  for (size_t i = 1; i < n; i++) {
    entry t = v[i];
    size_t j = i;
    while (j > 0 && keycmp(&v[j - 1], &t) > 0) {
      v[j] = v[j - 1];
      j--;
    }
    v[j] = t;
  }
}

static int writearray(enc *e, int idx, frame *fr, lua_Integer n, int depth) {
  lua_State *L = e->L;
  if (n > ((lua_Integer)1 << 28)) return fail(e, fr->up, "array too large");
  char *w = room(e, 5);
  if (!w) return -1;
  done(e, mp_encode_array(w, (uint32_t)n));
  fr->kind = KEY_INDEX;
  for (lua_Integer i = 1; i <= n; i++) {
    fr->index = i;
    lua_rawgeti(L, idx, i);
    if (value(e, lua_gettop(L), fr, depth)) return -1;
    lua_pop(L, 1);
  }
  return 0;
}

/* Writes entry j of the arena: its key, then its value (at its slot, or
** looked up again). */
static int writemember(enc *e, int idx, frame *fr, size_t j, int depth) {
  lua_State *L = e->L;
  /* A copy: writing the value may move the arena. */
  entry en = e->st->ents[j];
  fr->kind = KEY_STR;
  if (en.s) {
    fr->key = en.s;
  } else {
    memcpy(fr->num, en.num, sizeof fr->num);
    fr->key = fr->num;
  }
  fr->klen = en.len;
  if (putstring(e, fr->key, fr->klen, fr)) return -1;
  int vidx = en.slot, pushed = 0;
  if (!vidx) {
    if (en.s)
      lua_pushlstring(L, en.s, en.len);
    else if (en.isint)
      lua_pushinteger(L, en.ikey);
    else
      lua_pushnumber(L, en.fkey);
    lua_rawget(L, idx);
    vidx = lua_gettop(L);
    pushed = 1;
  }
  int r = value(e, vidx, fr, depth);
  if (pushed) lua_pop(L, 1);
  return r;
}

static int writemap(enc *e, int idx, frame *fr, int order, int depth) {
  lua_State *L = e->L;
  mstate *st = e->st;
  size_t base = st->nents;
  int sbase = lua_gettop(L);
  int retain = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    entry *en = newentry(st);
    if (en == NULL) return oom(e);
    en->used = 0;
    int kt = lua_type(L, -2);
    if (kt == LUA_TSTRING) {
      en->s = lua_tolstring(L, -2, &en->len);
    } else if (kt == LUA_TNUMBER) {
      /* JavaScript object keys are strings: 1 is "1", 1.5 is "1.5". */
      en->s = NULL;
      en->isint = lua_isinteger(L, -2);
      if (en->isint) {
        en->ikey = lua_tointeger(L, -2);
        en->len = (size_t)snprintf(en->num, sizeof en->num, "%lld",
                                   (long long)en->ikey);
      } else {
        en->fkey = lua_tonumber(L, -2);
        en->len = hm_jsnum_format((double)en->fkey, en->num);
      }
    } else {
      char what[64];
      snprintf(what, sizeof what, "cannot encode a %s key",
               lua_typename(L, kt));
      return fail(e, fr->up, what);
    }
    if (retain && st->nents - base > RETAIN_MAX) {
      /* Too wide for the stack: keep only the iteration key. */
      lua_pop(L, 1);
      lua_replace(L, sbase + 1);
      lua_settop(L, sbase + 1);
      for (size_t j = base; j < st->nents; j++) st->ents[j].slot = 0;
      retain = 0;
      continue;
    }
    if (retain) {
      if (!lua_checkstack(L, 3)) return fail(e, fr->up, "out of Lua stack space");
      en->slot = lua_gettop(L);
      lua_pushvalue(L, -2); /* the key again, for lua_next */
    } else {
      en->slot = 0;
      lua_pop(L, 1);
    }
  }
  size_t n = st->nents - base;
  if (n > UINT32_MAX) return fail(e, fr->up, "map too large");
  if (n > 1) sortkeys(st->ents + base, n);
  char *w = room(e, 5);
  if (!w) return -1;
  done(e, mp_encode_map(w, (uint32_t)n));
  if (order) {
    for (lua_Integer i = 1; lua_rawgeti(L, order, i) != LUA_TNIL; i++) {
      if (lua_type(L, -1) == LUA_TSTRING) {
        size_t kl;
        const char *k = lua_tolstring(L, -1, &kl);
        for (size_t j = base; j < base + n; j++) {
          entry *en = &st->ents[j];
          if (!en->used && en->len == kl && memcmp(keyof(en), k, kl) == 0) {
            en->used = 1;
            if (writemember(e, idx, fr, j, depth)) return -1;
            break;
          }
        }
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  for (size_t j = base; j < base + n; j++) {
    if (st->ents[j].used) continue;
    if (writemember(e, idx, fr, j, depth)) return -1;
  }
  st->nents = base;
  lua_settop(L, sbase);
  return 0;
}

static int table(enc *e, int idx, const frame *f, int depth) {
  lua_State *L = e->L;
  if (depth > HM_CODEC_MAX_DEPTH)
    return fail(e, f, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels");
  const void *p = lua_topointer(L, idx);
  /* msgpack5 overflows its stack on a cycle; we name where it closes. */
  for (const frame *q = f; q; q = q->up)
    if (q->tab == p) return fail(e, f, "cannot encode a circular reference");
  if (!lua_checkstack(L, 8)) return fail(e, f, "out of Lua stack space");
  frame fr;
  fr.up = f;
  fr.tab = p;
  fr.kind = KEY_NONE;
  int top = lua_gettop(L);
  int order = 0, r;
  if (lua_getmetatable(L, idx)) {
    if (lua_topointer(L, -1) == e->arraymt) {
      lua_settop(L, top);
      r = writearray(e, idx, &fr, hm_codec_arraylen(L, idx), depth);
      lua_settop(L, top);
      return r;
    }
    lua_pushvalue(L, e->orderkey);
    if (lua_rawget(L, -2) == LUA_TTABLE) order = lua_gettop(L);
  }
  lua_Integer n = hm_codec_arrayshape(L, idx);
  r = n > 0 ? writearray(e, idx, &fr, n, depth)
            : writemap(e, idx, &fr, order, depth);
  lua_settop(L, top);
  return r;
}

static int value(enc *e, int idx, const frame *f, int depth) {
  lua_State *L = e->L;
  int t = lua_type(L, idx);
  char *w;
  switch (t) {
    case LUA_TNIL:
      return putnil(e);
    case LUA_TBOOLEAN:
      if (!(w = room(e, 1))) return -1;
      return done(e, mp_encode_bool(w, lua_toboolean(L, idx)));
    case LUA_TNUMBER:
      if (!(w = room(e, 9))) return -1;
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        return done(e, v < 0 ? mp_encode_int(w, (int64_t)v)
                             : mp_encode_uint(w, (uint64_t)v));
      }
      return done(e, mp_encode_double(w, (double)lua_tonumber(L, idx)));
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return putstring(e, s, len, f);
    }
    case LUA_TTABLE:
      return table(e, idx, f, depth + 1);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return putnil(e);
      return fail(e, f, "cannot encode a light userdata");
    default: {
      char what[64];
      snprintf(what, sizeof what, "cannot encode a %s", lua_typename(L, t));
      return fail(e, f, what);
    }
  }
}

static int encode(lua_State *L, mstate *st, int idx, hm_buf *out, char *err,
                  size_t errlen) {
  int top = lua_gettop(L);
  size_t start = out->len;
  enc e;
  e.L = L;
  e.out = out;
  e.st = st;
  e.err = err;
  e.errlen = errlen;
  if (errlen) err[0] = '\0';
  if (!lua_checkstack(L, 8)) {
    if (errlen) snprintf(err, errlen, "out of Lua stack space");
    return -1;
  }
  hm_codec_push_array_mt(L);
  e.arraymt = lua_topointer(L, -1);
  lua_pushliteral(L, "__jsonorder");
  e.orderkey = lua_gettop(L);
  int r = value(&e, idx, NULL, 0);
  lua_settop(L, top);
  if (r) out->len = start;
  return r;
}

int hm_msgpack_encode(lua_State *L, int idx, hm_buf *out, char *err,
                      size_t errlen) {
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    if (errlen) snprintf(err, errlen, "out of Lua stack space");
    return -1;
  }
  mstate *st = acquire(L);
  int r = encode(L, st, idx, out, err, errlen);
  release(st);
  lua_settop(L, top);
  return r;
}

/* }==================================================================== */

/* {====================================================================
** Decoder
** ===================================================================== */

typedef struct dec {
  lua_State *L;
  const char *start, *p, *end;
  int arraymt; /* stack slot */
  size_t off;  /* of the error */
  char msg[96];
} dec;

static int derr(dec *d, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int derr(dec *d, const char *at, const char *fmt, ...) {
  va_list ap;
  d->off = (size_t)(at - d->start);
  va_start(ap, fmt);
  vsnprintf(d->msg, sizeof d->msg, fmt, ap);
  va_end(ap);
  return -1;
}

static size_t left(const dec *d, const char *p) { return (size_t)(d->end - p); }

static const char *const tname[] = {
  "nil", "uint", "int", "str", "bin", "array", "map", "bool", "float32",
  "float64", "ext",
};

/* A header (the type byte and its length or value fields) that does not
** fit in what is left. */
static int truncated(dec *d, const char *at, enum mp_type t) {
  return derr(d, at, "truncated %s header", tname[t]);
}

/* mp_check_binl with its check in the right place: msgpuck 1.0.3 asserts
** that a byte follows the bin type byte before it counts the bytes
** missing, so a lone 0xc4 at the end of the input aborts a debug build. */
static ptrdiff_t check_binl(const char *cur, const char *end) {
  unsigned char c = (unsigned char)*cur;
  ptrdiff_t hsize = (ptrdiff_t)1 << (c & 0x3); /* 0xc4: 1, 0xc5: 2, 0xc6: 4 */
  return 1 + hsize - (end - cur);
}

/* The header of the str or bin at `at` is all there (> 0: bytes short). */
static ptrdiff_t check_strbin(enum mp_type t, const char *at, const char *end) {
  return t == MP_STR ? mp_check_strl(at, end) : check_binl(at, end);
}

/* Reads the length of a str or bin (whose header fits) and checks that
** the body is there too. Returns the body, or NULL (error set). */
static const char *body(dec *d, enum mp_type t, uint32_t *len) {
  const char *at = d->p, *q = at;
  *len = t == MP_STR ? mp_decode_strl(&q) : mp_decode_binl(&q);
  if (*len > left(d, q)) {
    derr(d, at, "truncated %s (%lu bytes, %zu left)", tname[t],
         (unsigned long)*len, left(d, q));
    return NULL;
  }
  d->p = q + *len;
  return q;
}

/* An extension: MessagePack's timestamps and application types have no
** Lua value; the message names the type. The header was checked to fit. */
static int extension(dec *d) {
  const unsigned char *q = (const unsigned char *)d->p;
  size_t at = 1;
  switch (*q) {
    case 0xc7: at = 2; break;
    case 0xc8: at = 3; break;
    case 0xc9: at = 5; break;
  }
  if (left(d, d->p) <= at) return derr(d, d->p, "truncated ext header");
  return derr(d, d->p, "extension type %d is not supported", (int)(int8_t)q[at]);
}

static int parse(dec *d, int depth);

/* A map key, pushed as a Lua string: str and bin as they are, numbers as
** their JavaScript text (msgpack5 gives JavaScript the same keys). */
static int key(dec *d) {
  lua_State *L = d->L;
  const char *at = d->p;
  if (at >= d->end) return derr(d, at, "unexpected end of input");
  unsigned char c = (unsigned char)*at;
  enum mp_type t = mp_typeof((char)c);
  char num[HM_JSNUM_BUFSIZE];
  const char *q = at;
  switch (c == 0xc1 ? MP_EXT : t) {
    case MP_STR:
    case MP_BIN: {
      if (check_strbin(t, at, d->end) > 0)
        return truncated(d, at, t);
      uint32_t len;
      const char *s = body(d, t, &len);
      if (s == NULL) return -1;
      if (t == MP_STR) {
        size_t bad = utf8_bad((const unsigned char *)s, len);
        if (bad != len) return derr(d, s + bad, "invalid UTF-8 in a str");
      }
      lua_pushlstring(L, s, len);
      return 0;
    }
    case MP_UINT: {
      if (mp_check_uint(at, d->end) > 0) return truncated(d, at, t);
      snprintf(num, sizeof num, "%llu", (unsigned long long)mp_decode_uint(&q));
      lua_pushstring(L, num);
      break;
    }
    case MP_INT: {
      if (mp_check_int(at, d->end) > 0) return truncated(d, at, t);
      snprintf(num, sizeof num, "%lld", (long long)mp_decode_int(&q));
      lua_pushstring(L, num);
      break;
    }
    case MP_FLOAT:
    case MP_DOUBLE: {
      if ((t == MP_FLOAT ? mp_check_float(at, d->end) : mp_check_double(at, d->end)) > 0)
        return truncated(d, at, t);
      double v = t == MP_FLOAT ? (double)mp_decode_float(&q) : mp_decode_double(&q);
      hm_jsnum_format(v, num);
      lua_pushstring(L, num);
      break;
    }
    default:
      if (c == 0xc1) return derr(d, at, "invalid byte 0xC1");
      return derr(d, at, "a map key must be a string or a number, got %s",
                  t == MP_EXT ? "an ext" : t == MP_ARRAY ? "an array"
                  : t == MP_MAP ? "a map" : tname[t]);
  }
  d->p = q;
  return 0;
}

static int map(dec *d, int depth) {
  lua_State *L = d->L;
  const char *at = d->p, *q = at;
  if (mp_check_map(at, d->end) > 0) return truncated(d, at, MP_MAP);
  uint32_t n = mp_decode_map(&q);
  /* Each pair needs two bytes at least: no allocation on a false count. */
  if (n > left(d, q) / 2)
    return derr(d, at, "truncated map (%lu pairs, %zu bytes left)",
                (unsigned long)n, left(d, q));
  if (depth > HM_CODEC_MAX_DEPTH)
    return derr(d, at, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels");
  if (!lua_checkstack(L, 6)) return derr(d, at, "out of Lua stack space");
  d->p = q;
  lua_createtable(L, 0, (int)(n < 32 ? n : 32));
  for (uint32_t i = 0; i < n; i++) {
    if (key(d)) return -1;
    int r = parse(d, depth);
    if (r < 0) return -1;
    lua_rawset(L, -3);
  }
  return 0;
}

static int array(dec *d, int depth) {
  lua_State *L = d->L;
  const char *at = d->p, *q = at;
  if (mp_check_array(at, d->end) > 0) return truncated(d, at, MP_ARRAY);
  uint32_t n = mp_decode_array(&q);
  if (n > left(d, q))
    return derr(d, at, "truncated array (%lu elements, %zu bytes left)",
                (unsigned long)n, left(d, q));
  if (depth > HM_CODEC_MAX_DEPTH)
    return derr(d, at, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels");
  if (!lua_checkstack(L, 6)) return derr(d, at, "out of Lua stack space");
  d->p = q;
  /* Sized from the count only so far: a false count in each of 1000 nested
  ** headers must not cost more than a few MB before it is found out. */
  lua_createtable(L, (int)(n < 256 ? n : 256), 0);
  lua_pushvalue(L, d->arraymt);
  lua_setmetatable(L, -2);
  for (uint32_t i = 0; i < n; i++) {
    if (parse(d, depth) < 0) return -1;
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 0;
}

/* Pushes the value at d->p (nil as the null sentinel) and returns 0, or
** returns -1 with the error set. */
static int parse(dec *d, int depth) {
  // cppcheck-suppress ctuuninitvar ; l_decode sets L, p and end before parsing
  lua_State *L = d->L;
  const char *at = d->p, *q = at;
  if (at >= d->end) return derr(d, at, "unexpected end of input");
  unsigned char c = (unsigned char)*at;
  if (c == 0xc1) return derr(d, at, "invalid byte 0xC1");
  enum mp_type t = mp_typeof((char)c);
  switch (t) {
    case MP_NIL:
      d->p++;
      lua_pushlightuserdata(L, NULL);
      return 0;
    case MP_BOOL:
      d->p++;
      lua_pushboolean(L, c == 0xc3);
      return 0;
    case MP_UINT: {
      if (mp_check_uint(at, d->end) > 0) return truncated(d, at, t);
      uint64_t v = mp_decode_uint(&q);
      if (v <= (uint64_t)INT64_MAX)
        lua_pushinteger(L, (lua_Integer)v);
      else
        lua_pushnumber(L, (lua_Number)v);
      d->p = q;
      return 0;
    }
    case MP_INT:
      if (mp_check_int(at, d->end) > 0) return truncated(d, at, t);
      lua_pushinteger(L, (lua_Integer)mp_decode_int(&q));
      d->p = q;
      return 0;
    case MP_FLOAT:
      if (mp_check_float(at, d->end) > 0) return truncated(d, at, t);
      lua_pushnumber(L, (lua_Number)mp_decode_float(&q));
      d->p = q;
      return 0;
    case MP_DOUBLE:
      if (mp_check_double(at, d->end) > 0) return truncated(d, at, t);
      lua_pushnumber(L, (lua_Number)mp_decode_double(&q));
      d->p = q;
      return 0;
    case MP_STR:
    case MP_BIN: {
      if (check_strbin(t, at, d->end) > 0)
        return truncated(d, at, t);
      uint32_t len;
      const char *s = body(d, t, &len);
      if (s == NULL) return -1;
      if (t == MP_STR) {
        size_t bad = utf8_bad((const unsigned char *)s, len);
        if (bad != len) return derr(d, s + bad, "invalid UTF-8 in a str");
      }
      lua_pushlstring(L, s, len);
      return 0;
    }
    case MP_ARRAY:
      return array(d, depth + 1);
    case MP_MAP:
      return map(d, depth + 1);
    case MP_EXT:
    default:
      return extension(d);
  }
}

int hm_msgpack_decode(lua_State *L, const char *s, size_t len) {
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "msgpack decode");
  hm_codec_push_array_mt(L);
  dec d;
  d.L = L;
  d.start = d.p = s;
  d.end = s + len;
  d.arraymt = lua_gettop(L);
  d.msg[0] = '\0';
  int r = parse(&d, 0);
  if (r == 0 && d.p < d.end)
    r = derr(&d, d.p, "unexpected data after the value");
  if (r < 0) {
    lua_settop(L, top);
    lua_pushnil(L);
    lua_pushfstring(L, "msgpack error at byte %I: %s", (lua_Integer)d.off, d.msg);
    return 2;
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Lua functions
** ===================================================================== */

/* core.msgpack_encode(v) -> bytes | nil, message */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  char err[320];
  mstate *st = acquire(L); /* stays on the stack: it owns the buffer */
  st->out.len = 0;
  int r = encode(L, st, 1, &st->out, err, sizeof err);
  if (r == 0)
    lua_pushlstring(L, st->out.data ? st->out.data : "", st->out.len);
  release(st);
  if (r == 0) return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* core.msgpack_decode(bytes) -> value | nil, message */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  return hm_msgpack_decode(L, s, len);
}

void hm_lua_open_msgpack(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"msgpack_encode", l_encode},
    {"msgpack_decode", l_decode},
    {NULL, NULL},
  };
  luaL_setfuncs(L, fns, 0);
  release(acquire(L)); /* the shared scratch state, made now */
  lua_pop(L, 1);
}

/* }==================================================================== */
