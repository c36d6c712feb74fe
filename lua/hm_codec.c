/*
** hm_codec.c: the JSON codec of the binding (see hm_codec.h for the
** contract, and invariant 4 of docs/architecture.md for the numbers).
**
** Both directions run on every message, so neither allocates per value:
** the encoder writes into one reusable buffer, keeps the values of an
** object on the Lua stack while it sorts the keys (so it never has to push
** a key string again), and keeps the keys in an arena owned by a userdata;
** the decoder pushes unescaped strings straight from the input and unescapes
** the others through a luaL_Buffer. Nothing malloc'd is held outside a
** userdata, so an error raised by the Lua API leaks nothing.
*/
#include "hm_codec.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_jsnum.h"
#include "lauxlib.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* {====================================================================
** Buffer
** ===================================================================== */

void hm_buf_init(hm_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void hm_buf_free(hm_buf *b) {
  free(b->data);
  hm_buf_init(b);
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

#define reserve(b, n) ((b)->cap - (b)->len >= (n) ? 0 : grow((b), (n)))

int hm_buf_append(hm_buf *b, const void *data, size_t len) {
  if (reserve(b, len)) return -1;
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

/* }==================================================================== */

/* Byte classes shared by both directions: 0 plain ASCII, 1 needs an
** escape (controls, '"', '\\'), 2 starts a multi-byte UTF-8 sequence. */
static const unsigned char cls[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* Length of the well-formed UTF-8 sequence at s (first byte >= 0x80), or 0:
** no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF. */
size_t hm_codec_utf8len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  unsigned lo = 0x80, hi = 0xBF;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3) return 0;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 4) return 0;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 &&
                   (s[3] & 0xC0) == 0x80
               ? 4
               : 0;
  }
  return 0;
}

#ifdef __SSE2__
#include <emmintrin.h>
/* The index in [0, 16] of the first of the 16 bytes at q that needs a look
** ('"', '\\', a control byte or a byte >= 0x80): 16 when none does. Most
** of a message's bytes are in strings; this takes them 16 at a time. */
static inline int special16(const unsigned char *q) {
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
  __m128i m = _mm_or_si128(
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                   _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
      /* signed: true for 0x00-0x1F and for 0x80-0xFF */
      _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
  int bits = _mm_movemask_epi8(m);
  return bits ? __builtin_ctz((unsigned)bits) : 16;
}
#endif

/* Skips the bytes from p that need no look, 16 at a time while 16 are
** left; returns the first that may (or p where fewer than 16 are left, for
** the byte loop of the caller). */
static inline const unsigned char *skip16(const unsigned char *p,
                                          const unsigned char *end) {
#ifdef __SSE2__
  while (end - p >= 16) {
    int k = special16(p);
    p += k;
    if (k < 16) break;
  }
#else
  (void)end;
#endif
  return p;
}

/* {====================================================================
** Per-state scratch
** ===================================================================== */

/* One key of the object being written. */
typedef struct entry {
  const char *s;   /* string key (anchored by its table), or NULL */
  size_t len;
  int slot;        /* stack slot of the value; 0: look it up again */
  int used;        /* already written by __jsonorder */
  int ktype;       /* LUA_TSTRING, or LUA_TNUMBER with num/ikey/fkey */
  int isint;
  lua_Integer ikey;
  lua_Number fkey;
  char num[HM_JSNUM_BUFSIZE];
} entry;

typedef struct cstate {
  hm_buf out;      /* what encode() returns, reused across calls */
  entry *ents;     /* keys of every object on the current path */
  size_t nents, capents;
  int busy;
} cstate;

static const char statekey = 's';
static const char statemtkey = 'm';
/* The weak tables of decoded objects' origins (Key order, below). */
static const char wsrckey = 'w', woffkey = 'o';

hm_codec_source_fn hm_codec_source = NULL;

static int state_gc(lua_State *L) {
  cstate *st = lua_touserdata(L, 1);
  hm_buf_free(&st->out);
  free(st->ents);
  st->ents = NULL;
  st->capents = st->nents = 0;
  return 0;
}

static cstate *newstate(lua_State *L) {
  cstate *st = lua_newuserdatauv(L, sizeof *st, 0);
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
** a finalizer run by the GC in the middle of a call calls the codec again;
** that nested call gets a private state, collected like any userdata. */
static cstate *acquire(lua_State *L) {
  cstate *st = NULL;
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
  return st;
}

static void release(cstate *st) {
  st->busy = 0;
  st->nents = 0;
  /* One huge message must not pin its memory forever. */
  if (st->out.cap > (1u << 20)) hm_buf_free(&st->out);
  if (st->capents > 4096) {
    free(st->ents);
    st->ents = NULL;
    st->capents = 0;
  }
}

void hm_codec_push_array_mt(lua_State *L) {
  if (luaL_getmetatable(L, HM_CODEC_ARRAY_MT) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_newmetatable(L, HM_CODEC_ARRAY_MT);
  }
}

/* }==================================================================== */

/* {====================================================================
** Encoder
** ===================================================================== */

/* Objects keep up to this many values on the Lua stack; past it they are
** looked up again by key, so a wide table cannot exhaust the stack. */
#define RETAIN_MAX 256

enum { KEY_NONE, KEY_STR, KEY_INDEX };

/* One table on the current path: for "[Circular]" and error paths. */
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
  cstate *st;
  const void *arraymt;
  int orderkey;  /* stack slot of the string "__jsonorder" */
  int skipped;   /* stack slot of the list of left-out paths; 0: strict */
  int clean;     /* leave `$` keys and functions out of the top object */
  int wsrc, woff; /* stack slots of the order tables, or 0 */
  lua_Integer nskipped;
  char *err;
  size_t errlen;
} enc;

/* Appends a key to the path with any byte that is not printable ASCII or
** well-formed UTF-8 shown as '?', so the message is always valid UTF-8. */
static size_t putkey(char *dst, size_t cap, size_t len, const char *key,
                     size_t klen) {
  const unsigned char *p = (const unsigned char *)key, *end = p + klen;
  while (p < end && len + 1 < cap) {
    size_t n = 1;
    if (*p >= 0x80) n = hm_codec_utf8len(p, (size_t)(end - p));
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
  return p < end ? cap : len;  /* cap: truncated */
}

static void writepath(char *dst, size_t cap, const frame *f) {
  const frame *chain[HM_CODEC_MAX_DEPTH + 2];
  int n = 0;
  for (; f && n < HM_CODEC_MAX_DEPTH + 2; f = f->up) chain[n++] = f;
  size_t len = 0;
  int i;
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

/* Writes "<what> at <path><tail>" into e->err. */
static int fail(enc *e, const frame *f, const char *what, const char *tail) {
  char path[256];
  writepath(path, sizeof path, f);
  if (e->errlen)
    snprintf(e->err, e->errlen, "%s%s%s%s", what, path[0] ? " at " : "",
             path, tail ? tail : "");
  return -1;
}

static int oom(enc *e) {
  if (e->errlen) snprintf(e->err, e->errlen, "out of memory");
  return -1;
}

static inline int put(enc *e, const char *s, size_t len) {
  hm_buf *b = e->out;
  if (reserve(b, len)) return oom(e);
  memcpy(b->data + b->len, s, len);
  b->len += len;
  return 0;
}

#define putlit(e, s) put((e), (s), sizeof(s) - 1)

static inline int putchr(enc *e, char c) {
  hm_buf *b = e->out;
  if (b->len == b->cap && grow(b, 1)) return oom(e);
  b->data[b->len++] = c;
  return 0;
}

static int putint(enc *e, lua_Integer v) {
  hm_buf *b = e->out;
  if (reserve(b, HM_JSNUM_BUFSIZE)) return oom(e);
  b->len += hm_jsnum_int((long long)v, b->data + b->len);
  return 0;
}

static int putfloat(enc *e, lua_Number x) {
  if (!isfinite(x)) return putlit(e, "null");  /* as JSON.stringify */
  hm_buf *b = e->out;
  if (reserve(b, HM_JSNUM_BUFSIZE)) return oom(e);
  b->len += hm_jsnum_format((double)x, b->data + b->len);
  return 0;
}

static int badutf8(enc *e, const frame *f, size_t at) {
  char tail[40];
  snprintf(tail, sizeof tail, " byte %zu", at);
  return fail(e, f, "invalid UTF-8", tail);
}

/* JSON.stringify's escaping: '"', '\\', the short forms, \u00xx for the
** other controls, everything else (UTF-8 included) as is. */
static int putstring(enc *e, const char *s, size_t len, const frame *f) {
  static const char hex[] = "0123456789abcdef";
  hm_buf *b = e->out;
#ifdef __SSE2__
  /* Most strings are plain ASCII with nothing to escape: copied whole and
  ** checked where they landed, 16 bytes at a time, the last block against
  ** padding that needs no look (so there is no byte loop for the tail, which
  ** is all of a short string). Anything else takes the loop below. */
  if (len <= SIZE_MAX - 18) {
    if (reserve(b, len + 18)) return oom(e);
    unsigned char *q = (unsigned char *)b->data + b->len + 1;
    size_t i = 0;
    memcpy(q, s, len);
    memset(q + len, 'a', 16);
    while (i < len) {
      int k = special16(q + i);
      if (k < 16) {
        i += (size_t)k;
        break;
      }
      i += 16;
    }
    if (i >= len) {
      q[-1] = '"';
      q[len] = '"';
      b->len += len + 2;
      return 0;
    }
  }
#endif
  if (reserve(b, len + 2)) return oom(e);
  char *w = b->data + b->len;
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  const unsigned char *run = p;
  *w++ = '"';
  while (p < end) {
    p = skip16(p, end);
    if (p >= end) break;
    unsigned c = *p;
    if (cls[c] == 0) {
      p++;
      continue;
    }
    if (cls[c] == 2) {
      size_t n = hm_codec_utf8len(p, (size_t)(end - p));
      if (n == 0) return badutf8(e, f, (size_t)(p - (const unsigned char *)s));
      p += n;
      continue;
    }
    memcpy(w, run, (size_t)(p - run));
    w += p - run;
    b->len = (size_t)(w - b->data);
    if (reserve(b, 6 + (size_t)(end - p) + 1)) return oom(e);
    w = b->data + b->len;
    *w++ = '\\';
    switch (c) {
      case '"': *w++ = '"'; break;
      case '\\': *w++ = '\\'; break;
      case '\b': *w++ = 'b'; break;
      case '\f': *w++ = 'f'; break;
      case '\n': *w++ = 'n'; break;
      case '\r': *w++ = 'r'; break;
      case '\t': *w++ = 't'; break;
      default:
        *w++ = 'u';
        *w++ = '0';
        *w++ = '0';
        *w++ = hex[c >> 4];
        *w++ = hex[c & 15];
    }
    run = ++p;
  }
  memcpy(w, run, (size_t)(end - run));
  w += end - run;
  *w++ = '"';
  b->len = (size_t)(w - b->data);
  return 0;
}

static int value(enc *e, int idx, const frame *f, int depth);

/* A value JSON has no word for: a function, a thread, a userdata other
** than the null sentinel. */
static int unencodable(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TFUNCTION: case LUA_TTHREAD: case LUA_TUSERDATA: return 1;
    case LUA_TLIGHTUSERDATA: return lua_touserdata(L, idx) != NULL;
    default: return 0;
  }
}

/* Most paths a lenient encode lists; the rest are left out silently. */
#define SKIPPED_MAX 16

/* Appends the path of a left-out value to the list (lenient mode). */
static void note(enc *e, const frame *f) {
  if (e->nskipped >= SKIPPED_MAX) return;
  char path[256];
  writepath(path, sizeof path, f);
  lua_pushstring(e->L, path);
  lua_rawseti(e->L, e->skipped, ++e->nskipped);
}

static const char *keyof(const entry *en) {
  return en->s ? en->s : en->num;
}

static inline int keycmp(const entry *a, const entry *b) {
  const unsigned char *x = (const unsigned char *)keyof(a);
  const unsigned char *y = (const unsigned char *)keyof(b);
  size_t n = a->len < b->len ? a->len : b->len;
  /* Keys mostly differ in the first bytes: skip the call to memcmp. */
  size_t i = 0;
  for (; i < n && i < 8; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  int c = i < n ? memcmp(x + i, y + i, n - i) : 0;
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

static int qkeycmp(const void *a, const void *b) {
  return keycmp(a, b);
}

static void sortkeys(entry *v, size_t n) {
  if (n > 16) {
    qsort(v, n, sizeof *v, qkeycmp);
    return;
  }
  for (size_t i = 1; i < n; i++) {
    if (keycmp(&v[i - 1], &v[i]) <= 0) continue;
    entry t = v[i];
    size_t j = i;
    while (j > 0 && keycmp(&v[j - 1], &t) > 0) {
      v[j] = v[j - 1];
      j--;
    }
    v[j] = t;
  }
}

static entry *newentry(cstate *st) {
  if (st->nents == st->capents) {
    size_t cap = st->capents ? st->capents * 2 : 64;
    entry *v = realloc(st->ents, cap * sizeof *v);
    if (v == NULL) return NULL;
    st->ents = v;
    st->capents = cap;
  }
  return &st->ents[st->nents++];
}

/* lua-cjson's encode_sparse_array defaults: a table whose keys are all
** positive integers is an array (holes written as null) unless it is
** excessively sparse: largest key > SPARSE_RATIO * number of keys and
** > SPARSE_SAFE. Where cjson (convert = false) then raises, we write an
** object with the keys as strings (cjson's convert = true): nothing is lost
** and a reply does not fail. */
#define SPARSE_RATIO 2
#define SPARSE_SAFE 10

/* The array length of the plain table at idx (its largest key), or 0 when
** it is to be written as an object: empty, a key that is not a positive
** integer, or excessively sparse. One pass. */
lua_Integer hm_codec_arrayshape(lua_State *L, int idx) {
  lua_Integer max = 0, count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k < 1) {
      lua_pop(L, 1);
      return 0;
    }
    if (k > max) max = k;
    count++;
  }
  if (max > SPARSE_SAFE && max > SPARSE_RATIO * count) return 0;
  return max;
}

/* Length of a table marked as an array: its largest positive integer key,
** so holes become nulls as in a JS array; other keys are ignored. */
lua_Integer hm_codec_arraylen(lua_State *L, int idx) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k > n) n = k;
    }
  }
  return n;
}

static int writearray(enc *e, int idx, frame *fr, lua_Integer n, int depth) {
  lua_State *L = e->L;
  if (n > ((lua_Integer)1 << 28)) return fail(e, fr->up, "array too large", NULL);
  if (putchr(e, '[')) return -1;
  fr->kind = KEY_INDEX;
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1 && putchr(e, ',')) return -1;
    fr->index = i;
    lua_rawgeti(L, idx, i);
    if (value(e, lua_gettop(L), fr, depth)) return -1;
    lua_pop(L, 1);
  }
  return putchr(e, ']');
}

/* Writes entry j of the arena (its value at its slot, or looked up).
** Returns 1 when a lenient encode left the member out (JSON.stringify drops
** functions and the like from objects), 0 when written, -1 on error. */
static int writemember(enc *e, int idx, frame *fr, size_t j, int first,
                       int depth) {
  lua_State *L = e->L;
  /* Copy out what we need: writing the value may move the arena. */
  entry en = e->st->ents[j];
  fr->kind = KEY_STR;
  if (en.s) {
    fr->key = en.s;
  } else {
    memcpy(fr->num, en.num, sizeof fr->num);
    fr->key = fr->num;
  }
  fr->klen = en.len;
  int vidx = en.slot, pushed = 0;
  if (!vidx) {
    if (en.ktype == LUA_TSTRING) {
      lua_pushlstring(L, en.s, en.len);
      lua_rawget(L, idx);
    } else if (en.isint) {
      lua_rawgeti(L, idx, en.ikey);
    } else {
      lua_pushnumber(L, en.fkey);
      lua_rawget(L, idx);
    }
    vidx = lua_gettop(L);
    pushed = 1;
  }
  int r;
  if (e->skipped && unencodable(L, vidx)) {
    note(e, fr);
    r = 1;
  } else if ((!first && putchr(e, ',')) ||
             putstring(e, fr->key, fr->klen, fr) || putchr(e, ':')) {
    r = -1;
  } else {
    r = value(e, vidx, fr, depth);
  }
  if (pushed) lua_pop(L, 1);
  return r;
}

/* Hemera's option keys ("timeout$"): never part of a wire pattern. */
static int dollarkey(lua_State *L, int idx) {
  size_t len;
  const char *k = lua_tolstring(L, idx, &len);
  return len > 0 && k[len - 1] == '$';
}

static int writeobject(enc *e, int idx, frame *fr, int order, int depth) {
  lua_State *L = e->L;
  cstate *st = e->st;
  size_t base = st->nents;
  int sbase = lua_gettop(L);
  int retain = 1;
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (e->clean && depth == 1 &&
        (lua_type(L, -1) == LUA_TFUNCTION ||
         (lua_type(L, -2) == LUA_TSTRING && dollarkey(L, -2)))) {
      lua_pop(L, 1);
      continue;
    }
    entry *en = newentry(st);
    if (en == NULL) return oom(e);
    en->used = 0;
    en->ktype = lua_type(L, -2);
    if (en->ktype == LUA_TSTRING) {
      en->s = lua_tolstring(L, -2, &en->len);
    } else if (en->ktype == LUA_TNUMBER) {
      /* JS object keys are strings: 1 becomes "1", 1.5 "1.5". */
      en->s = NULL;
      en->isint = lua_isinteger(L, -2);
      if (en->isint) {
        en->ikey = lua_tointeger(L, -2);
        en->len = hm_jsnum_int((long long)en->ikey, en->num);
      } else {
        en->fkey = lua_tonumber(L, -2);
        en->len = hm_jsnum_format((double)en->fkey, en->num);
      }
    } else {
      char what[64];
      snprintf(what, sizeof what, "cannot encode a %s key",
               lua_typename(L, en->ktype));
      return fail(e, fr->up, what, NULL);
    }
    count++;
    if (retain && count > RETAIN_MAX) {
      /* Too wide to keep on the stack: keep only the iteration key. */
      lua_pop(L, 1);
      lua_replace(L, sbase + 1);
      lua_settop(L, sbase + 1);
      for (size_t j = base; j < st->nents; j++) st->ents[j].slot = 0;
      retain = 0;
      continue;
    }
    if (retain) {
      if (!lua_checkstack(L, 3)) return fail(e, fr->up, "out of Lua stack space", NULL);
      en->slot = lua_gettop(L);
      lua_pushvalue(L, -2);
    } else {
      en->slot = 0;
      lua_pop(L, 1);
    }
  }
  size_t n = st->nents - base;
  if (n > 1) sortkeys(st->ents + base, n); /* ents may be NULL when n == 0 */
  if (putchr(e, '{')) return -1;
  int first = 1;
  if (order) {
    for (lua_Integer i = 1; lua_rawgeti(L, order, i) != LUA_TNIL; i++) {
      if (lua_type(L, -1) == LUA_TSTRING) {
        size_t kl;
        const char *k = lua_tolstring(L, -1, &kl);
        for (size_t j = base; j < base + n; j++) {
          entry *en = &st->ents[j];
          if (!en->used && en->len == kl && memcmp(keyof(en), k, kl) == 0) {
            en->used = 1;
            int w = writemember(e, idx, fr, j, first, depth);
            if (w < 0) return -1;
            if (w == 0) first = 0;
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
    int w = writemember(e, idx, fr, j, first, depth);
    if (w < 0) return -1;
    if (w == 0) first = 0;
  }
  st->nents = base;
  lua_settop(L, sbase);
  return putchr(e, '}');
}

/* A decoded object's key order, read from the text it came from (see Key
** order of decoded objects): pushes the list and returns its slot, or 0. */
static int source_order(enc *e, int idx) {
  lua_State *L = e->L;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->wsrc) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  size_t len;
  const char *src = hm_codec_source(L, -1, &len);
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_rawget(L, e->woff);
  lua_Integer at = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (src == NULL || at < 0 || (size_t)at >= len) return 0;
  hm_codec_keys(L, src + at, len - (size_t)at);
  return lua_gettop(L);
}

static int table(enc *e, int idx, const frame *f, int depth) {
  lua_State *L = e->L;
  if (depth > HM_CODEC_MAX_DEPTH)
    return fail(e, f, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels",
                NULL);
  const void *p = lua_topointer(L, idx);
  /* fast-safe-stringify's rule: a table already on the path is a cycle. */
  for (const frame *q = f; q; q = q->up)
    if (q->tab == p) return putlit(e, "\"[Circular]\"");
  if (!lua_checkstack(L, 8)) return fail(e, f, "out of Lua stack space", NULL);
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
  if (!order && e->wsrc) order = source_order(e, idx);
  lua_Integer n = hm_codec_arrayshape(L, idx);
  if (n > 0)
    r = writearray(e, idx, &fr, n, depth);
  else
    r = writeobject(e, idx, &fr, order, depth);
  lua_settop(L, top);
  return r;
}

static int value(enc *e, int idx, const frame *f, int depth) {
  lua_State *L = e->L;
  int t = lua_type(L, idx);
  switch (t) {
    case LUA_TNIL:
      return putlit(e, "null");
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? putlit(e, "true") : putlit(e, "false");
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return putint(e, lua_tointeger(L, idx));
      return putfloat(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return putstring(e, s, len, f);
    }
    case LUA_TTABLE:
      return table(e, idx, f, depth + 1);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return putlit(e, "null");
      /* fall through */
    default:
      /* Lenient: an array element JSON has no word for is null, as in
      ** JSON.stringify (object members never get here: writemember leaves
      ** them out). The value itself (f == NULL) is always an error. */
      if (e->skipped && f && f->kind == KEY_INDEX) {
        note(e, f);
        return putlit(e, "null");
      }
      if (t == LUA_TLIGHTUSERDATA)
        return fail(e, f, "cannot encode a light userdata", NULL);
      {
        char what[64];
        snprintf(what, sizeof what, "cannot encode a %s", lua_typename(L, t));
        return fail(e, f, what, NULL);
      }
  }
}

static int encode(lua_State *L, cstate *st, int idx, int skipidx,
                  const frame *root, int clean, hm_buf *out, char *err,
                  size_t errlen) {
  int top = lua_gettop(L);
  size_t start = out->len;
  enc e;
  e.L = L;
  e.out = out;
  e.st = st;
  e.err = err;
  e.errlen = errlen;
  e.skipped = skipidx;
  e.clean = clean;
  e.nskipped = skipidx ? (lua_Integer)lua_rawlen(L, skipidx) : 0;
  if (errlen) err[0] = '\0';
  if (!lua_checkstack(L, 8)) {
    if (errlen) snprintf(err, errlen, "out of Lua stack space");
    return -1;
  }
  hm_codec_push_array_mt(L);
  e.arraymt = lua_topointer(L, -1);
  lua_pushliteral(L, "__jsonorder");
  e.orderkey = lua_gettop(L);
  e.wsrc = e.woff = 0;
  if (hm_codec_source != NULL) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &wsrckey) == LUA_TTABLE &&
        lua_rawgetp(L, LUA_REGISTRYINDEX, &woffkey) == LUA_TTABLE) {
      e.wsrc = lua_gettop(L) - 1;
      e.woff = lua_gettop(L);
    }
  }
  size_t base = st->nents;
  int r = value(&e, idx, root, 0);
  st->nents = base;
  lua_settop(L, top);
  if (r) out->len = start;
  return r;
}

int hm_codec_encode(lua_State *L, int idx, hm_buf *out, char *err,
                    size_t errlen) {
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    if (errlen) snprintf(err, errlen, "out of Lua stack space");
    return -1;
  }
  cstate *st = acquire(L);
  int r = encode(L, st, idx, 0, NULL, 0, out, err, errlen);
  release(st);
  lua_settop(L, top);
  return r;
}

int hm_codec_put_string(hm_buf *out, const char *s, size_t len) {
  enc e;
  memset(&e, 0, sizeof e);
  e.out = out;
  size_t start = out->len;
  if (putstring(&e, s, len, NULL)) {
    out->len = start;
    return -1;
  }
  return 0;
}

int hm_codec_put_number(lua_State *L, int idx, hm_buf *out) {
  enc e;
  memset(&e, 0, sizeof e);
  e.out = out;
  size_t start = out->len;
  int r = lua_isinteger(L, idx) ? putint(&e, lua_tointeger(L, idx))
                                 : putfloat(&e, lua_tonumber(L, idx));
  if (r) {
    out->len = start;
    return -1;
  }
  return 0;
}

int hm_codec_encode_member(lua_State *L, int idx, hm_buf *out,
                           const char *key, int skipidx, int clean, char *err,
                           size_t errlen) {
  idx = lua_absindex(L, idx);
  if (skipidx) skipidx = lua_absindex(L, skipidx);
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    if (errlen) snprintf(err, errlen, "out of Lua stack space");
    return -1;
  }
  frame root;
  memset(&root, 0, sizeof root);
  root.kind = KEY_STR;
  root.key = key;
  root.klen = strlen(key);
  if (lua_type(L, idx) != LUA_TTABLE) {
    /* A scalar needs no scratch state: the envelope's ids and names. */
    enc e;
    memset(&e, 0, sizeof e);
    e.L = L;
    e.out = out;
    e.err = err;
    e.errlen = errlen;
    e.skipped = skipidx;
    if (errlen) err[0] = '\0';
    size_t start = out->len;
    int r = value(&e, idx, &root, 0);
    if (r) out->len = start;
    return r;
  }
  cstate *st = acquire(L);
  int r = encode(L, st, idx, skipidx, &root, clean, out, err, errlen);
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
  const unsigned char *start, *p, *end;
  int arraymt;  /* stack slot */
  int skip;     /* validate only: push nothing */
  int careful;  /* skip with the careful path: fvalue found a fault */
  int holder;   /* stack slot of the text's holder (key order kept), or 0 */
  const hm_scan *each; /* its member callback runs for the object at */
  int each_depth;      /* this depth (hm_codec_scan_ex's decoded member) */
  int wsrc, woff; /* stack slots of the order tables, when holder */
  size_t base;  /* offset of start in the holder's text */
  size_t off;   /* of the error */
  const char *msg;
  char msgbuf[64];
} dec;

static int derr(dec *d, const unsigned char *at, const char *msg) {
  d->off = (size_t)(at - d->start);
  d->msg = msg;
  return -1;
}

static int unexpected(dec *d, const unsigned char *at) {
  if (at >= d->end) return derr(d, at, "unexpected end of input");
  if (*at >= 0x20 && *at < 0x7F)
    snprintf(d->msgbuf, sizeof d->msgbuf, "unexpected character '%c'", *at);
  else
    snprintf(d->msgbuf, sizeof d->msgbuf, "unexpected byte 0x%02X", *at);
  return derr(d, at, d->msgbuf);
}

static void skipws(dec *d) {
  // cppcheck-suppress ctuuninitvar ; every decoder sets p and end before parsing
  const unsigned char *p = d->p, *end = d->end;
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  d->p = p;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static unsigned hex4(const unsigned char *p) {
  return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 |
                    hexval(p[2]) << 4 | hexval(p[3]));
}

static char *pututf8(char *w, unsigned cp) {
  if (cp < 0x80) {
    *w++ = (char)cp;
  } else if (cp < 0x800) {
    *w++ = (char)(0xC0 | cp >> 6);
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *w++ = (char)(0xE0 | cp >> 12);
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *w++ = (char)(0xF0 | cp >> 18);
    *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  }
  return w;
}

/* Unescapes the validated body [s, q) of a string. The result is never
** longer than the escaped text (\uXXXX is 6 bytes for at most 3, a pair 12
** for 4), so one buffer of that size is enough. */
static void unescape(lua_State *L, const unsigned char *s,
                     const unsigned char *q) {
  luaL_Buffer b;
  char *w0 = luaL_buffinitsize(L, &b, (size_t)(q - s));
  char *w = w0;
  while (s < q) {
    if (*s != '\\') {
      *w++ = (char)*s++;
      continue;
    }
    s++;
    switch (*s++) {
      case 'b': *w++ = '\b'; break;
      case 'f': *w++ = '\f'; break;
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'u': {
        unsigned cp = hex4(s);
        s += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && q - s >= 6 && s[0] == '\\' &&
            s[1] == 'u') {
          unsigned lo = hex4(s + 2);
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            s += 6;
          }
        }
        /* A lone surrogate has no UTF-8 form. */
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        w = pututf8(w, cp);
        break;
      }
      default: *w++ = (char)s[-1]; break;  /* '"', '\\', '/' */
    }
  }
  luaL_pushresultsize(&b, (size_t)(w - w0));
}


/* The length of the valid escape at q ('\\', with a byte after it), or 0. */
static inline int esclen(const unsigned char *q, const unsigned char *end) {
  switch (q[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
    case 't':
      return 2;
    case 'u':
      return end - q >= 6 && hexval(q[2]) >= 0 && hexval(q[3]) >= 0 &&
                     hexval(q[4]) >= 0 && hexval(q[5]) >= 0
                 ? 6
                 : 0;
    default:
      return 0;
  }
}

static int string(dec *d) {
  const unsigned char *s = d->p + 1, *q = s, *end = d->end;
  int escaped = 0;
  for (;;) {
    q = skip16(q, end);
    if (q >= end) return derr(d, q, "unterminated string");
    unsigned c = *q;
    if (cls[c] == 0) {
      q++;
      continue;
    }
    if (cls[c] == 2) {
      size_t n = hm_codec_utf8len(q, (size_t)(end - q));
      if (n == 0) return derr(d, q, "invalid UTF-8 in string");
      q += n;
      continue;
    }
    if (c == '"') break;
    if (c != '\\') return derr(d, q, "control character in string");
    escaped = 1;
    if (q + 1 >= end) return derr(d, q + 1, "unterminated string");
    int n = esclen(q, end);
    if (n == 0)
      return derr(d, q, q[1] == 'u' ? "invalid \\u escape" : "invalid escape in string");
    q += n;
  }
  if (d->skip)
    ;
  else if (escaped)
    unescape(d->L, s, q);
  else
    lua_pushlstring(d->L, (const char *)s, (size_t)(q - s));
  d->p = q + 1;
  return 0;
}

static pthread_once_t clocale_once = PTHREAD_ONCE_INIT;
static locale_t clocale;

static void makeclocale(void) {
  clocale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* strtod in the C locale, whatever the process locale says. */
static double cstrtod(const char *s) {
  pthread_once(&clocale_once, makeclocale);
  if (clocale) return strtod_l(s, NULL, clocale);
  return strtod(s, NULL);
}

static const double pow10tab[23] = {
  1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int number(dec *d) {
  lua_State *L = d->L;
  const unsigned char *s = d->p, *q = s, *end = d->end;
  int neg = 0, isint = 1, big = 0;
  uint64_t m = 0;
  int scale = 0;  /* value = m * 10^scale while !big */
  if (*q == '-') {
    neg = 1;
    q++;
  }
  if (q >= end || *q < '0' || *q > '9')
    return derr(d, q, q >= end ? "unexpected end of input"
                               : "expected a digit in number");
  if (*q == '0') {
    q++;
    if (q < end && *q >= '0' && *q <= '9')
      return derr(d, q - 1, "leading zero in number");
  } else {
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
      if (m <= (UINT64_MAX - 9) / 10)
        m = m * 10 + (uint64_t)(*q - '0');
      else
        big = 1;
    }
  }
  if (q < end && *q == '.') {
    isint = 0;
    q++;
    if (q >= end || *q < '0' || *q > '9')
      return derr(d, q, "expected a digit after '.'");
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
      if (m <= (UINT64_MAX - 9) / 10) {
        m = m * 10 + (uint64_t)(*q - '0');
        scale--;
      } else {
        big = 1;
      }
    }
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    isint = 0;
    q++;
    int eneg = 0, ev = 0;
    if (q < end && (*q == '+' || *q == '-')) eneg = *q++ == '-';
    if (q >= end || *q < '0' || *q > '9')
      return derr(d, q, "expected a digit in exponent");
    for (; q < end && *q >= '0' && *q <= '9'; q++)
      if (ev < 100000) ev = ev * 10 + (*q - '0');
    scale += eneg ? -ev : ev;
  }
  d->p = q;
  if (d->skip) return 0;
  if (isint && !big) {
    if (!neg && m <= (uint64_t)INT64_MAX) {
      lua_pushinteger(L, (lua_Integer)m);
      return 0;
    }
    if (neg && m <= (uint64_t)INT64_MAX + 1) {
      lua_pushinteger(L, (lua_Integer)(0 - m));
      return 0;
    }
  }
  double x;
  if (!big && m <= (UINT64_C(1) << 53) && scale >= -22 && scale <= 22) {
    /* Both operands exact, one rounding: the correctly rounded value. */
    x = scale < 0 ? (double)m / pow10tab[-scale] : (double)m * pow10tab[scale];
    if (neg) x = -x;
  } else if (q - s < 64) {
    char tmp[64];
    memcpy(tmp, s, (size_t)(q - s));
    tmp[q - s] = '\0';
    x = cstrtod(tmp);
  } else {
    lua_pushlstring(L, (const char *)s, (size_t)(q - s));
    x = cstrtod(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pushnumber(L, (lua_Number)x);
  return 0;
}

static int literal(dec *d, const char *word, size_t len) {
  if ((size_t)(d->end - d->p) < len || memcmp(d->p, word, len) != 0) {
    const unsigned char *p = d->p;
    for (size_t i = 0; p < d->end && i < len && *p == (unsigned char)word[i]; i++) p++;
    return unexpected(d, p);
  }
  d->p += len;
  return 0;
}

static int parse(dec *d, int depth);

/* {====================================================================
** Validating without decoding
**
** Most of a Hemera envelope is only validated on the way in (meta, trace,
** request, delegate stay bytes until read). This walks a value with the
** decoder's grammar and nothing else: no Lua, no stored state, the cursor
** in a register. It only says "valid, ends here" or "not sure": on any
** doubt (an error, nesting past FAST_DEPTH) the careful path below walks
** the same value again and says what is wrong, with its own messages and
** offsets, so the two never disagree about an error's text.
** ===================================================================== */

#define FAST_DEPTH 32

static inline const unsigned char *fws(const unsigned char *p,
                                       const unsigned char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* p at the opening quote; returns past the closing one, or NULL. */
static const unsigned char *fstring(const unsigned char *p,
                                    const unsigned char *end) {
  p++;
  for (;;) {
    p = skip16(p, end);
    if (p >= end) return NULL;
    unsigned c = *p;
    if (cls[c] == 0) {
      p++;
    } else if (c == '"') {
      return p + 1;
    } else if (cls[c] == 2) {
      size_t n = hm_codec_utf8len(p, (size_t)(end - p));
      if (n == 0) return NULL;
      p += n;
    } else if (c == '\\' && end - p >= 2) {
      int n = esclen(p, end);
      if (n == 0) return NULL;
      p += n;
    } else {
      return NULL; /* a control byte, or a '\\' at the end */
    }
  }
}

static inline const unsigned char *fdigits(const unsigned char *p,
                                           const unsigned char *end) {
  if (p >= end || *p < '0' || *p > '9') return NULL;
  while (p < end && *p >= '0' && *p <= '9') p++;
  return p;
}

static const unsigned char *fnumber(const unsigned char *p,
                                    const unsigned char *end) {
  if (*p == '-') p++;
  if (p < end && *p == '0') {
    p++;
    if (p < end && *p >= '0' && *p <= '9') return NULL;
  } else if ((p = fdigits(p, end)) == NULL) {
    return NULL;
  }
  if (p < end && *p == '.' && (p = fdigits(p + 1, end)) == NULL) return NULL;
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    p = fdigits(p, end);
  }
  return p;
}

static const unsigned char *fvalue(const unsigned char *p,
                                   const unsigned char *end, int depth) {
  p = fws(p, end);
  if (p >= end) return NULL;
  switch (*p) {
    case '"': return fstring(p, end);
    case '{':
      if (++depth > FAST_DEPTH) return NULL;
      p = fws(p + 1, end);
      if (p < end && *p == '}') return p + 1;
      for (;;) {
        if (p >= end || *p != '"' || (p = fstring(p, end)) == NULL) return NULL;
        p = fws(p, end);
        if (p >= end || *p != ':') return NULL;
        if ((p = fvalue(p + 1, end, depth)) == NULL) return NULL;
        p = fws(p, end);
        if (p < end && *p == ',') {
          p = fws(p + 1, end);
          continue;
        }
        return p < end && *p == '}' ? p + 1 : NULL;
      }
    case '[':
      if (++depth > FAST_DEPTH) return NULL;
      p = fws(p + 1, end);
      if (p < end && *p == ']') return p + 1;
      for (;;) {
        if ((p = fvalue(p, end, depth)) == NULL) return NULL;
        p = fws(p, end);
        if (p < end && *p == ',') {
          p++;
          continue;
        }
        return p < end && *p == ']' ? p + 1 : NULL;
      }
    case 't':
      return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
      return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
      return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
      return *p == '-' || (*p >= '0' && *p <= '9') ? fnumber(p, end) : NULL;
  }
}

/* }==================================================================== */

/* {====================================================================
** Key order of decoded objects
**
** A decoded object remembers where it came from, in two weak-keyed tables
** (the table as key, so they cost nothing once it is collected): the
** holder of the text (a binding's message, see hm_codec_source) and the
** offset of its '{'. Nothing more is done unless the object is encoded
** again: the encoder then reads its keys' order from the text. Only texts
** with a holder are remembered (core.decode's strings are not).
** ===================================================================== */

static void pushweak(lua_State *L, const char *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
}

/* The new table on top came from the '{' at offset `at` of d's text. */
static void remember(dec *d, size_t at) {
  lua_State *L = d->L;
  lua_pushvalue(L, -1);
  lua_pushvalue(L, d->holder);
  lua_rawset(L, d->wsrc);
  lua_pushvalue(L, -1);
  lua_pushinteger(L, (lua_Integer)(at + d->base));
  lua_rawset(L, d->woff);
}

/* Sets d up to remember the objects it decodes, for the holder at `holder`
** (0: not) whose text d->start is at offset base of. */
static void record(dec *d, int holder, size_t base) {
  d->holder = 0;
  if (holder == 0 || hm_codec_source == NULL) return;
  pushweak(d->L, &wsrckey);
  d->wsrc = lua_gettop(d->L);
  pushweak(d->L, &woffkey);
  d->woff = lua_gettop(d->L);
  d->holder = holder;
  d->base = base;
}

/* }==================================================================== */

/* Whether the validated body of a key string, escapes and all, spells
** `key` (ASCII): "\u006deta" is "meta" to the decoder, so it is here. */
static int keyeq(const unsigned char *raw, size_t rawlen, const char *key) {
  const unsigned char *p = raw, *end = raw + rawlen;
  for (; *key; key++) {
    unsigned c;
    if (p >= end) return 0;
    if (*p != '\\') {
      c = *p++;
    } else if (p[1] == 'u') {
      c = hex4(p + 2);
      p += 6;
    } else {
      switch (p[1]) {
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        default: c = p[1]; break;
      }
      p += 2;
    }
    if (c != (unsigned char)*key) return 0;
  }
  return p == end;
}

/* The index of the key of w that the raw key spells, or -1. Keys are
** distinct; a first byte that differs (and is no escape) rules one out. */
static inline int keyindex(const hm_scan *w, const unsigned char *raw,
                           size_t rawlen) {
  for (int k = 0; k < w->nkeys; k++) {
    const char *key = w->keys[k];
    if (rawlen > 0 && raw[0] != (unsigned char)key[0] && raw[0] != '\\') continue;
    if (keyeq(raw, rawlen, key)) return k;
  }
  return -1;
}

static void clearspans(const hm_scan *w);

/* Decodes the member at d->p that w wants as Lua values, in an object at
** `depth` (the last of repeated ones replaces the one before, as the
** decoder keeps). Both walks of hm_codec_scan_ex call it. */
static int decode_member(dec *d, const hm_scan *w, int depth, int *pushed) {
  d->skip = 0;
  if (w->member) {
    d->each = w;
    d->each_depth = depth + 1;
  }
  int r = parse(d, depth);
  d->each = NULL;
  d->skip = 1;
  if (r < 0) return -1;
  if (*pushed) lua_replace(d->L, -2);
  *pushed = 1;
  return 0;
}

/* An object. With w (hm_codec_scan_ex, d->skip set), the members named in
** w are found as the text is validated: their spans recorded, w->decode
** decoded and left on the stack (*pushed), w->probe walked with w->sub. */
static int object(dec *d, int depth, const hm_scan *w, int *pushed) {
  lua_State *L = d->L;
  if (depth > HM_CODEC_MAX_DEPTH)
    return derr(d, d->p, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels");
  if (!d->skip && !lua_checkstack(L, 6))
    return derr(d, d->p, "out of Lua stack space");
  d->p++;
  if (!d->skip) {
    lua_createtable(L, 0, 4);
    if (d->holder) remember(d, (size_t)(d->p - 1 - d->start));
  }
  skipws(d);
  if (d->p < d->end && *d->p == '}') {
    d->p++;
    return 0;
  }
  for (;;) {
    skipws(d);
    if (d->p >= d->end || *d->p != '"') {
      if (d->p < d->end && *d->p == '}') return derr(d, d->p, "trailing ',' in object");
      return d->p >= d->end ? unexpected(d, d->p)
                            : derr(d, d->p, "expected a string key");
    }
    const unsigned char *k0 = d->p + 1;
    if (string(d)) return -1;
    int which = w ? keyindex(w, k0, (size_t)(d->p - 1 - k0)) : -1;
    skipws(d);
    if (d->p >= d->end || *d->p != ':') {
      if (d->p >= d->end) return unexpected(d, d->p);
      return derr(d, d->p, "expected ':'");
    }
    d->p++;
    skipws(d);
    const unsigned char *v0 = d->p;
    int object_next = d->p < d->end && *d->p == '{';
    int r;
    if (which >= 0 && which == w->decode && L && object_next) {
      r = decode_member(d, w, depth, pushed);
    } else if (which >= 0 && which == w->probe && w->sub && object_next) {
      clearspans(w->sub); /* a repeated member: only the last one counts */
      r = object(d, depth + 1, w->sub, pushed);
    } else {
      r = parse(d, depth);
    }
    if (r < 0) return -1;
    if (which >= 0) {
      w->spans[which].start = (int32_t)(v0 - d->start);
      w->spans[which].end = (int32_t)(d->p - d->start);
    }
    /* A null member stays, as the null sentinel (lua-cjson's cjson.null),
    ** so that decode then encode gives the same JSON back. */
    if (!d->skip) {
      if (r == 1) lua_pushlightuserdata(L, NULL);
      if (d->each && depth == d->each_depth) d->each->member(L, d->each->member_arg);
      lua_rawset(L, -3);
    }
    skipws(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == '}') {
      d->p++;
      return 0;
    }
    if (d->p >= d->end) return unexpected(d, d->p);
    return derr(d, d->p, "expected ',' or '}'");
  }
}

static int array(dec *d, int depth) {
  lua_State *L = d->L;
  if (depth > HM_CODEC_MAX_DEPTH)
    return derr(d, d->p, "nesting deeper than " STR(HM_CODEC_MAX_DEPTH) " levels");
  if (!d->skip && !lua_checkstack(L, 6))
    return derr(d, d->p, "out of Lua stack space");
  d->p++;
  if (!d->skip) {
    lua_createtable(L, 0, 0);
    lua_pushvalue(L, d->arraymt);
    lua_setmetatable(L, -2);
  }
  skipws(d);
  if (d->p < d->end && *d->p == ']') {
    d->p++;
    return 0;
  }
  for (lua_Integer i = 1;; i++) {
    int r = parse(d, depth);
    if (r < 0) return -1;
    if (!d->skip) {
      if (r == 1) lua_pushlightuserdata(L, NULL);
      lua_rawseti(L, -2, i);
    }
    skipws(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == ']') {
      d->p++;
      return 0;
    }
    if (d->p >= d->end) return unexpected(d, d->p);
    return derr(d, d->p, "expected ',' or ']'");
  }
}

/* Pushes the value at d->p and returns 0; returns 1 for null (nothing
** pushed: the caller knows whether it means a hole or an absent key). */
static int parse(dec *d, int depth) {
  skipws(d);
  if (d->p >= d->end) return unexpected(d, d->p);
  if (d->skip && !d->careful) {
    const unsigned char *e = fvalue(d->p, d->end, 0);
    int null = *d->p == 'n';
    if (e != NULL) {
      d->p = e;
      return null;
    }
    /* Once, for the whole value: its parts are not tried fast again. */
    d->careful = 1;
    int r = parse(d, depth);
    d->careful = 0;
    return r;
  }
  switch (*d->p) {
    case '{': return object(d, depth + 1, NULL, NULL);
    case '[': return array(d, depth + 1);
    case '"': return string(d);
    case 't':
      if (literal(d, "true", 4)) return -1;
      if (!d->skip) lua_pushboolean(d->L, 1);
      return 0;
    case 'f':
      if (literal(d, "false", 5)) return -1;
      if (!d->skip) lua_pushboolean(d->L, 0);
      return 0;
    case 'n':
      return literal(d, "null", 4) ? -1 : 1;
    case '-': case '0': case '1': case '2': case '3': case '4': case '5':
    case '6': case '7': case '8': case '9':
      return number(d);
    default:
      return unexpected(d, d->p);
  }
}

int hm_codec_decode(lua_State *L, const char *s, size_t len) {
  return hm_codec_decode_from(L, s, len, 0, 0);
}

int hm_codec_decode_from(lua_State *L, const char *s, size_t len, int holder,
                         size_t base) {
  if (holder) holder = lua_absindex(L, holder);
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "JSON decode");
  dec d;
  d.each = NULL;
  d.L = L;
  d.start = d.p = (const unsigned char *)s;
  d.end = d.start + len;
  d.arraymt = 0;
  d.skip = 0;
  d.careful = 0;
  d.holder = 0;
  d.msg = NULL;
  skipws(&d);
  /* Only objects and arrays need the array metatable and the key-order
  ** tables: a scalar (a result, often) spares their look-ups. */
  if (d.p < d.end && (*d.p == '{' || *d.p == '[')) {
    hm_codec_push_array_mt(L);
    d.arraymt = lua_gettop(L);
    if (holder) record(&d, holder, base);
  }
  int r = parse(&d, 0);
  if (r >= 0) {
    skipws(&d);
    if (d.p < d.end) {
      r = derr(&d, d.p, "unexpected data after the JSON value");
    }
  }
  if (r < 0) {
    lua_settop(L, top);
    lua_pushnil(L);
    lua_pushfstring(L, "JSON error at byte %I: %s", (lua_Integer)d.off, d.msg);
    return 2;
  }
  if (r == 1) lua_pushlightuserdata(L, NULL);  /* a top-level null */
  if (lua_gettop(L) > top + 1) lua_replace(L, top + 1); /* the set-up's slots */
  lua_settop(L, top + 1);
  return 1;
}


static void clearspans(const hm_scan *w) {
  for (; w; w = w->sub)
    for (int k = 0; k < w->nkeys; k++) w->spans[k].start = w->spans[k].end = -1;
}

#ifdef HM_CODEC_FUZZ
/* Set by fuzz_codec, which compares the two walks: only the careful one. */
int hm_codec_scan_careful;
#endif

/* The fast walk of an object for hm_codec_scan_ex: w's spans recorded as
** object() records them, the values validated by fvalue, and the member
** w->decode (with d->L) decoded by parse where it stands, as object() does
** (*pushed). p at the '{'; returns past the '}', or NULL on any doubt: the
** careful walk then does it all again, with its messages. */
static const unsigned char *fscan(dec *d, const unsigned char *p,
                                  const hm_scan *w, int *pushed) {
  const unsigned char *start = d->start, *end = d->end;
  p = fws(p + 1, end);
  if (p < end && *p == '}') return p + 1;
  for (;;) {
    if (p >= end || *p != '"') return NULL;
    const unsigned char *k0 = p + 1;
    if ((p = fstring(p, end)) == NULL) return NULL;
    int which = keyindex(w, k0, (size_t)(p - 1 - k0));
    p = fws(p, end);
    if (p >= end || *p != ':') return NULL;
    p = fws(p + 1, end);
    const unsigned char *v0 = p;
    int object_next = p < end && *p == '{';
    if (which >= 0 && which == w->decode && d->L && object_next) {
      d->p = p;
      if (decode_member(d, w, 1, pushed) < 0) return NULL;
      p = d->p;
    } else if (which >= 0 && which == w->probe && w->sub && object_next) {
      clearspans(w->sub); /* a repeated member: only the last one counts */
      p = fscan(d, p, w->sub, pushed);
    } else {
      p = fvalue(p, end, 0);
    }
    if (p == NULL) return NULL;
    if (which >= 0) {
      w->spans[which].start = (int32_t)(v0 - start);
      w->spans[which].end = (int32_t)(p - start);
    }
    p = fws(p, end);
    if (p < end && *p == ',') {
      p = fws(p + 1, end);
      continue;
    }
    return p < end && *p == '}' ? p + 1 : NULL;
  }
}

int hm_codec_scan_ex(lua_State *L, const char *s, size_t len,
                     const hm_scan *w, int holder, char *err, size_t errlen) {
  dec d;
  d.each = NULL;
  if (L && holder) holder = lua_absindex(L, holder);
  int top = L ? lua_gettop(L) : 0;
  d.L = L;
  d.start = d.p = (const unsigned char *)s;
  d.end = d.start + len;
  d.arraymt = 0;
  d.skip = 1;
  d.careful = 0;
  d.holder = 0;
  d.msg = NULL;
  clearspans(w);
  if (len > INT32_MAX) {
    snprintf(err, errlen, "JSON error at byte 0: text too large");
    return -1;
  }
  if (L) {
    luaL_checkstack(L, 8, "JSON scan");
    hm_codec_push_array_mt(L);
    d.arraymt = lua_gettop(L);
    record(&d, holder, 0);
  }
  skipws(&d);
  /* Not an object: the caller decodes it to say what it is. */
  if (d.p >= d.end || *d.p != '{') {
    if (L) lua_settop(L, top);
    return 1;
  }
  int pushed = 0, r = 0;
#ifdef HM_CODEC_FUZZ
  const unsigned char *fend = hm_codec_scan_careful ? NULL : fscan(&d, d.p, w, &pushed);
#else
  const unsigned char *fend = fscan(&d, d.p, w, &pushed);
#endif
  if (fend == NULL || fws(fend, d.end) != d.end) {
    if (L) lua_settop(L, d.arraymt + (d.holder ? 2 : 0));
    pushed = 0;
    d.p = d.start;
    skipws(&d);
    clearspans(w);
    r = object(&d, 1, w, &pushed);
    if (r == 0) {
      skipws(&d);
      if (d.p < d.end) r = derr(&d, d.p, "unexpected data after the JSON value");
    }
  }
  if (r < 0) {
    if (L) lua_settop(L, top);
    snprintf(err, errlen, "JSON error at byte %zu: %s", d.off, d.msg);
    return -1;
  }
  if (L) {
    /* [arraymt, order tables?, value?] -> [value?] */
    if (pushed) lua_replace(L, top + 1);
    lua_settop(L, top + pushed);
  }
  return pushed ? 2 : 0;
}

int hm_codec_keys(lua_State *L, const char *s, size_t len) {
  dec d;
  d.each = NULL;
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "JSON keys");
  d.L = L;
  d.start = d.p = (const unsigned char *)s;
  d.end = d.start + len;
  d.arraymt = 0;
  d.skip = 1;
  d.careful = 0;
  d.holder = 0;
  d.msg = NULL;
  lua_newtable(L); /* the keys, in order */
  lua_newtable(L); /* the keys seen */
  lua_Integer n = 0;
  skipws(&d);
  if (d.p >= d.end || *d.p != '{') {
    lua_settop(L, top + 1);
    return 0;
  }
  d.p++;
  for (;;) {
    skipws(&d);
    if (d.p >= d.end || *d.p != '"') break; /* '}' (or invalid: stop) */
    d.skip = 0;
    int r = string(&d);
    d.skip = 1;
    if (r < 0) break;
    /* A repeated key keeps its first place, as in JavaScript objects. */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, top + 2) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_rawseti(L, top + 1, ++n);
      lua_rawgeti(L, top + 1, n);
      lua_pushboolean(L, 1);
      lua_rawset(L, top + 2);
    } else {
      lua_pop(L, 2);
    }
    skipws(&d);
    if (d.p >= d.end || *d.p != ':') break;
    d.p++;
    if (parse(&d, 1) < 0) break;
    skipws(&d);
    if (d.p < d.end && *d.p == ',') {
      d.p++;
      continue;
    }
    break;
  }
  lua_settop(L, top + 1);
  return 0;
}


/* }==================================================================== */

/* {====================================================================
** Lua functions
** ===================================================================== */

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  char err[320];
  cstate *st = acquire(L);
  st->out.len = 0;
  int r = encode(L, st, 1, lua_istable(L, 2) ? 2 : 0, NULL, 0, &st->out, err,
                 sizeof err);
  if (r == 0)
    lua_pushlstring(L, st->out.data ? st->out.data : "", st->out.len);
  release(st);
  if (r == 0) return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  /* The string is the holder: decoded objects keep their key order. */
  return hm_codec_decode_from(L, s, len, 1, 0);
}

static int l_jsnum(lua_State *L) {
  luaL_checktype(L, 1, LUA_TNUMBER);
  if (lua_isinteger(L, 1)) {
    lua_pushfstring(L, "%I", lua_tointeger(L, 1));
  } else {
    char buf[HM_JSNUM_BUFSIZE];
    size_t n = hm_jsnum_format((double)lua_tonumber(L, 1), buf);
    lua_pushlstring(L, buf, n);
  }
  return 1;
}

static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  hm_codec_push_array_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

void hm_codec_register(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"encode", l_encode},
    {"decode", l_decode},
    {"jsnum", l_jsnum},
    {"array", l_array},
    {NULL, NULL},
  };
  luaL_checkstack(L, 4, "hm_codec_register");
  luaL_setfuncs(L, fns, 0);
  hm_codec_push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  release(acquire(L));  /* create the shared scratch state now */
  lua_pop(L, 1);
}

/* }==================================================================== */
