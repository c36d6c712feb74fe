/*
** hm_lua_envelope.c: Hemera's envelope on the request path, in C.
**
** A message that reaches a Hemera topic, or a reply to an act, comes to Lua
** as a Msg: a userdata holding a copy of the payload and the reply subject
** (the natsMsg is freed at once). Nothing of it is decoded until asked:
**
**   core.msg_route(msg, router [, topic]) -> pattern, pubsub, value
**       | nil, kind, detail
**       validates the whole text (the decoder's rules and messages),
**       decodes only `pattern`, says whether request.type is "pubsub", and
**       looks the pattern up as router:lookup(pattern, topic) does, with
**       the router's fields taken as the pattern is decoded (no second
**       walk of its table). kind "json" (detail: the decoder's message),
**       "top" (the text is not an object; detail: what it is, "an
**       array"), "pattern" (pattern is not an object; detail: what it is,
**       "nothing" when absent).
**   core.msg_member(msg, name [, any]) -> the member decoded: only an
**       object unless `any` (then null is core.null, absent nil)
**   Everything decoded from a Msg keeps its objects' key order for when it
**   is encoded again (hm_codec.h, Key order of decoded objects).
**   core.msg_result(msg [, actx]) -> true, result, error, seen
**       | false, kind, detail
**       for a reply: validates it, decodes `result` and `error` only;
**       error is nil when it is absent, null or false. With the act's
**       context: a valid reply is stored as its _reply, and `seen` says
**       whether it already holds a meta, request or trace of its own.
**   core.msg_data(msg), core.msg_reply(msg), core.msg_arrived(msg)
**       the payload as a string, the reply subject or nil, and the
**       core.hrtime() of its arrival.
**   core.lazy_index(scope, builders) -> an __index function: a missing key
**       with a builder gets builders[k](t, scope), stored in t when not nil; any
**       other key is looked up in scope. Contexts materialise their parts
**       through it, so a handler pays only for what it reads.
**   core.act_payload(actx, pattern, meta, method, rid, sid, tid, psid, ts,
**       pubsub) -> the JSON text of a request, or nil, err. Parts the act
**       context holds (rawget: hooks touched or set them) are encoded; the
**       others are written straight from the pattern and the ids given
**       (the context's fields, see client.lua).
**   conn:reply(ctx, result, err, skipped)
**       (hm_lua_conn.c, with hm_env_reply below) -> "sent" | "noreply" |
**       "closed" | nil, encode error | false, publish error, code.
**       The context's own meta, trace and request (rawget) are encoded;
**       where it has none, the request's own bytes go back (its key
**       order with them). replyTo, when set, overrides the message's.
**
** Only the loop thread calls these (they use the Lua state).
*/
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "hm_codec.h"
#include "hm_lua_envelope.h"

static const char *const span_keys[HM_SP_N] = {
  "pattern", "meta", "trace", "request", "delegate", "result", "error"};

/* {====================================================================
** Msg
** ===================================================================== */

/* The functions of this file have the context as upvalue 1. */
#define CTX_UP(L) ((hm_ctx *)lua_touserdata((L), lua_upvalueindex(1)))

void hm_env_push_msg(lua_State *L, hm_ctx *ctx, natsMsg *m) {
  size_t len = (size_t)natsMsg_GetDataLength(m);
  const char *reply = natsMsg_GetReply(m);
  size_t rlen = reply ? strlen(reply) : 0;
  /* User value 1: the endpoint counting it (hm_lua_micro.c), or nil. */
  hm_lmsg *g = lua_newuserdatauv(L, offsetof(hm_lmsg, data) + len + rlen + 2, 1);
  g->len = len;
  g->rlen = rlen;
  g->has_reply = reply != NULL;
  g->scanned = 0;
  g->pubsub = -1;
  g->arrived = (double)uv_hrtime() / 1e6;
  if (len) memcpy(g->data, natsMsg_GetData(m), len);
  g->data[len] = '\0';
  if (rlen) memcpy(g->data + len + 1, reply, rlen);
  g->data[len + 1 + rlen] = '\0';
  hm_pushk(L, ctx, HM_K_MSGMT);
  lua_setmetatable(L, -2);
}

hm_lmsg *hm_env_check_msg(lua_State *L, hm_ctx *ctx, int idx) {
  hm_lmsg *g = lua_touserdata(L, idx);
  if (g != NULL && lua_getmetatable(L, idx)) {
    hm_pushk(L, ctx, HM_K_MSGMT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return g;
  }
  luaL_typeerror(L, idx, "hemera message");
  return NULL;
}

const char *hm_env_reply_to(const hm_lmsg *g) {
  return g->has_reply ? g->data + g->len + 1 : NULL;
}

static const char *const type_key[1] = {"type"};

/* The router fields of a pattern, gathered as it is decoded. */
#define ROUTE_FIELDS 32
typedef struct route_acc {
  const void *table; /* the pattern they are of */
  int n;             /* -1: more than ROUTE_FIELDS */
  hm_field f[ROUTE_FIELDS];
} route_acc;

/* hm_scan's member callback: a repeated key keeps its first place with the
** last value, as the table does. */
static void route_member(lua_State *L, void *arg) {
  route_acc *a = arg;
  const void *t = lua_topointer(L, -3);
  if (t != a->table) { /* a repeated pattern member: start again */
    a->table = t;
    a->n = 0;
  }
  hm_field fl;
  if (a->n < 0 || !hm_lua_field(L, -2, -1, &fl, 0)) return;
  for (int k = 0; k < a->n; k++) {
    if (a->f[k].key_len == fl.key_len && memcmp(a->f[k].key, fl.key, fl.key_len) == 0) {
      fl.key = a->f[k].key; /* the table keeps the first key string */
      a->f[k] = fl;
      return;
    }
  }
  if (a->n == ROUTE_FIELDS) {
    a->n = -1;
    return;
  }
  a->f[a->n++] = fl;
}

/* Scans the message once: spans of the envelope's members and of
** request.type. With L, the pattern (when an object) is decoded in the same
** pass and pushed (its fields gathered in acc, when given): returns 2 then.
** Else 0: an object, spans known; 1: not an object; -1: invalid JSON (the
** decoder's message in err, when given). */
static int scan_ex(lua_State *L, hm_lmsg *g, char *err, size_t errlen, route_acc *acc) {
  if (g->scanned == 0 || (g->scanned < 0 && err != NULL)) {
    char tmp[8];
    hm_scan sub = {type_key, 1, &g->type_sp, -1, -1, NULL, NULL, NULL};
    hm_scan w = {span_keys, HM_SP_N, g->sp, L ? HM_SP_PATTERN : -1, HM_SP_REQUEST, &sub,
                 acc ? route_member : NULL, acc};
    g->type_sp.start = g->type_sp.end = -1;
    int r = hm_codec_scan_ex(L, g->data, g->len, &w, L ? 1 : 0, err ? err : tmp,
                             err ? errlen : sizeof tmp);
    g->scanned = r == 0 || r == 2 ? 1 : r == 1 ? 2 : -1;
    if (r == 2) return 2;
  }
  return g->scanned == 1 ? 0 : g->scanned == 2 ? 1 : -1;
}

static int scan(hm_lmsg *g, char *err, size_t errlen) {
  return scan_ex(NULL, g, err, errlen, NULL);
}

static int span_is(const hm_lmsg *g, int which, char c) {
  return g->sp[which].start >= 0 && g->data[g->sp[which].start] == c;
}

/* What a value is, in JSON's words (util.json_type), from its first byte. */
static const char *json_type_at(const hm_lmsg *g, int which) {
  if (g->sp[which].start < 0) return "nothing";
  switch (g->data[g->sp[which].start]) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
  }
}

static const char *json_type_of(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return "nothing";
    case LUA_TLIGHTUSERDATA: return "null";
    case LUA_TTABLE: {
      int arr = 0;
      if (lua_getmetatable(L, idx)) {
        hm_codec_push_array_mt(L);
        arr = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
      }
      return arr ? "an array" : "an object";
    }
    case LUA_TNUMBER: return "a number";
    case LUA_TSTRING: return "a string";
    case LUA_TBOOLEAN: return "a boolean";
    default: return lua_typename(L, lua_type(L, idx));
  }
}

/* Pushes the member decoded (its span was validated: this cannot fail);
** the Msg is at stack slot 1, and its objects keep their key order. */
static void push_member(lua_State *L, const hm_lmsg *g, int which) {
  const hm_span *sp = &g->sp[which];
  if (hm_codec_decode_from(L, g->data + sp->start, (size_t)(sp->end - sp->start),
                           1, (size_t)sp->start) != 1)
    lua_error(L); /* out of stack; the message is on top */
}

/* hm_codec_source for the holders the binding gives the codec: Msgs, and
** the strings core.decode reads. */
static const char *msg_source(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
  const hm_lmsg *g = lua_touserdata(L, idx);
  if (g == NULL) return NULL;
  *len = g->len;
  return g->data;
}

/* Pushes nil, kind, detail for a message that is not a valid object: r
** and err are what its scan said (a text of megabytes is not walked twice
** to word the error). */
static int not_an_object(lua_State *L, hm_lmsg *g, int r, const char *err) {
  if (r < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "json");
    lua_pushstring(L, err);
    return 3;
  }
  /* Not an object: the full decoder has the exact error, or the type. */
  if (hm_codec_decode(L, g->data, g->len) == 2) {
    lua_pushliteral(L, "json");
    lua_replace(L, -3);
    lua_pushnil(L);
    lua_insert(L, -3);
    return 3;
  }
  const char *what = json_type_of(L, -1);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_pushliteral(L, "top");
  lua_pushstring(L, what);
  return 3;
}

/* Whether request.type is "pubsub" (after a scan). */
static int is_pubsub(lua_State *L, hm_lmsg *g) {
  if (g->pubsub >= 0) return g->pubsub;
  g->pubsub = 0;
  const hm_span *t = &g->type_sp;
  if (t->start < 0 || !span_is(g, HM_SP_REQUEST, '{')) return 0;
  const char *v = g->data + t->start;
  size_t vlen = (size_t)(t->end - t->start);
  if (vlen == 8 && memcmp(v, "\"pubsub\"", 8) == 0) {
    g->pubsub = 1;
  } else if (vlen > 8 && v[0] == '"' && memchr(v, '\\', vlen)) {
    /* Spelt with escapes: let the decoder read it. */
    if (hm_codec_decode(L, v, vlen) == 1 && lua_type(L, -1) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      g->pubsub = n == 6 && memcmp(s, "pubsub", 6) == 0;
    }
    lua_pop(L, 1);
  }
  return g->pubsub;
}

static int l_msg_route(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  size_t tlen = 0;
  const char *topic = luaL_optlstring(L, 3, NULL, &tlen);
  lua_settop(L, 3);
  char err[160];
  route_acc acc;
  acc.table = NULL;
  acc.n = 0;
  int r = scan_ex(L, g, err, sizeof err, &acc);
  if (r == 1 || r < 0) return not_an_object(L, g, r, err);
  if (!span_is(g, HM_SP_PATTERN, '{')) {
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_pushliteral(L, "pattern");
    lua_pushstring(L, json_type_at(g, HM_SP_PATTERN));
    return 3;
  }
  lua_pushboolean(L, is_pubsub(L, g));
  if (r == 2 && acc.n >= 0 && acc.table == lua_topointer(L, 4)) {
    hm_lua_router_find(L, 2, acc.f, acc.n, topic, tlen);
    return 3;
  }
  /* Scanned before, an empty pattern, or too many fields: from its table. */
  if (r != 2) {
    push_member(L, g, HM_SP_PATTERN);
    lua_insert(L, 4);
  }
  lua_pushcfunction(L, hm_lua_router_lookup);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 3);
  lua_call(L, 3, 1);
  return 3;
}

static int member_index(const char *name) {
  for (int k = 0; k < HM_SP_N; k++)
    if (strcmp(span_keys[k], name) == 0) return k;
  return -1;
}

static int l_msg_member(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  int which = member_index(luaL_checkstring(L, 2));
  int any = lua_toboolean(L, 3);
  luaL_argcheck(L, which >= 0, 2, "not an envelope member");
  lua_settop(L, 3);
  if (scan(g, NULL, 0) != 0 || g->sp[which].start < 0 ||
      (!any && !span_is(g, which, '{'))) {
    lua_pushnil(L);
    return 1;
  }
  push_member(L, g, which);
  return 1;
}

static int l_msg_result(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  char err[160];
  int r = scan(g, err, sizeof err);
  if (r != 0) {
    not_an_object(L, g, r, err);
    lua_pushboolean(L, 0);
    lua_replace(L, -4);
    return 3;
  }
  int seen = 0;
  if (lua_istable(L, 2)) {
    /* The act context takes the reply; whether a hook or the recursion
    ** guard built one of the parts the reply has its own of (client.lua
    ** then swaps them) is looked up here, in one call. */
    hm_ctx *ctx = CTX_UP(L);
    hm_pushk(L, ctx, HM_K_REPLY);
    lua_pushvalue(L, 1);
    lua_rawset(L, 2);
    static const int parts[] = {HM_K_META, HM_K_REQUEST, HM_K_TRACE};
    for (int k = 0; k < 3 && !seen; k++) {
      hm_pushk(L, ctx, parts[k]);
      seen = lua_rawget(L, 2) != LUA_TNIL;
      lua_pop(L, 1);
    }
  }
  lua_pushboolean(L, 1);
  if (g->sp[HM_SP_RESULT].start >= 0)
    push_member(L, g, HM_SP_RESULT);
  else
    lua_pushnil(L);
  const hm_span *e = &g->sp[HM_SP_ERROR];
  char c = e->start >= 0 ? g->data[e->start] : 0;
  /* Absent, null and false all mean success (spec section 5.1). */
  if (c == 0 || c == 'n' || c == 'f')
    lua_pushnil(L);
  else
    push_member(L, g, HM_SP_ERROR);
  lua_pushboolean(L, seen);
  return 4;
}

static int l_msg_data(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  lua_pushlstring(L, g->data, g->len);
  return 1;
}

static int l_msg_reply(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  const char *to = hm_env_reply_to(g);
  if (to) lua_pushlstring(L, to, g->rlen); else lua_pushnil(L);
  return 1;
}

static int l_msg_arrived(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  lua_pushnumber(L, (lua_Number)g->arrived);
  return 1;
}

static int msg_tostring(lua_State *L) {
  hm_lmsg *g = hm_env_check_msg(L, CTX_UP(L), 1);
  lua_pushfstring(L, "hemera.Msg (%I bytes)", (lua_Integer)g->len);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Lazy contexts
** ===================================================================== */

/* __index(t, k): upvalue 1 the scope, 2 the builders, called as
** builder(t, scope). */
static int lazy_index(lua_State *L) {
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) {
    lua_pushvalue(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 2, 1);
    if (!lua_isnil(L, -1)) {
      lua_pushvalue(L, 2);
      lua_pushvalue(L, -2);
      lua_rawset(L, 1);
    }
    return 1;
  }
  lua_pop(L, 1);
  lua_gettable(L, lua_upvalueindex(1));
  return 1;
}

static int l_lazy_index(lua_State *L) {
  luaL_checkany(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushcclosure(L, lazy_index, 2);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Writing envelopes
** ===================================================================== */

/* Inline while the buffer has room: an envelope is a dozen short pieces. */
static inline int put(hm_buf *b, const char *s, size_t len) {
  if (len > 0 && b->cap - b->len >= len) {
    memcpy(b->data + b->len, s, len);
    b->len += len;
    return 0;
  }
  return hm_buf_append(b, s, len);
}
#define putlit(b, s) put((b), (s), sizeof(s) - 1)

/* The request's own bytes of member `which` if it is an object, else {}. */
static int splice_member(hm_buf *b, const hm_lmsg *g, int which) {
  if (!span_is(g, which, '{')) return putlit(b, "{}");
  const hm_span *sp = &g->sp[which];
  return put(b, g->data + sp->start, (size_t)(sp->end - sp->start));
}

static int member(lua_State *L, hm_buf *b, int idx, const char *key,
                  int skipped, char *err, size_t errlen) {
  return hm_codec_encode_member(L, idx, b, key, skipped, 0, err, errlen);
}

#define OOM(err, errlen) (snprintf((err), (errlen), "out of memory"), -1)

int hm_env_reply(lua_State *L, hm_lmsg *g, int meta, int trace, int request,
                 int result, int error, int skipped, hm_buf *b, char *err,
                 size_t errlen) {
  if (!lua_istable(L, meta) || !lua_istable(L, trace) || !lua_istable(L, request))
    scan(g, NULL, 0); /* spans are only read for objects below */
  if (putlit(b, "{\"meta\":")) return OOM(err, errlen);
  if (lua_isnil(L, meta) ? splice_member(b, g, HM_SP_META)
                         : member(L, b, meta, "meta", skipped, err, errlen))
    return -1;
  if (putlit(b, ",\"trace\":")) return OOM(err, errlen);
  if (lua_isnil(L, trace) ? splice_member(b, g, HM_SP_TRACE)
                          : member(L, b, trace, "trace", skipped, err, errlen))
    return -1;
  if (putlit(b, ",\"request\":")) return OOM(err, errlen);
  if (lua_isnil(L, request) ? splice_member(b, g, HM_SP_REQUEST)
                            : member(L, b, request, "request", skipped, err, errlen))
    return -1;
  if (!lua_isnil(L, error)) {
    if (putlit(b, ",\"result\":null,\"error\":")) return OOM(err, errlen);
    if (member(L, b, error, "error", skipped, err, errlen)) return -1;
  } else {
    /* A nil result is no member at all, as JSON.stringify leaves out an
    ** undefined one; Hemera.null is "result":null. */
    if (!lua_isnil(L, result)) {
      if (putlit(b, ",\"result\":")) return OOM(err, errlen);
      if (member(L, b, result, "result", skipped, err, errlen)) return -1;
    }
    if (putlit(b, ",\"error\":null")) return OOM(err, errlen);
  }
  if (putlit(b, "}")) return OOM(err, errlen);
  return 0;
}

/* One shared output buffer per state, anchored in the registry. */
static const char bufkey = 'b';

typedef struct scratch {
  hm_buf b;
  int busy;
} scratch;

static int scratch_gc(lua_State *L) {
  scratch *s = lua_touserdata(L, 1);
  hm_buf_free(&s->b);
  return 0;
}

static scratch *newscratch(lua_State *L) {
  scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  hm_buf_init(&s->b);
  lua_newtable(L);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  return s;
}

hm_buf *hm_env_buffer(lua_State *L) {
  scratch *s = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &bufkey) == LUA_TUSERDATA)
    s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (s == NULL) {
    s = newscratch(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &bufkey);
  } else if (s->busy) {
    /* A finalizer that writes while a reply is being written gets a
    ** private buffer, left on the stack to keep it alive. */
    s = newscratch(L);
  }
  s->busy = 1;
  s->b.len = 0;
  return &s->b;
}

void hm_env_buffer_done(hm_buf *b) {
  scratch *s = (scratch *)((char *)b - offsetof(scratch, b));
  s->busy = 0;
  /* One huge reply must not pin its memory forever. */
  if (b->cap > (1u << 20)) hm_buf_free(b);
}

/* Writes the value at idx as member `key` (strings and numbers straight
** in: the encoder's set-up costs more than writing one of them). */
static int putval(lua_State *L, hm_buf *b, int idx, const char *key,
                  char *err, size_t errlen) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (hm_codec_put_string(b, s, n) == 0) return 0;
    /* Invalid UTF-8 (or no memory): the encoder says which. */
  } else if (t == LUA_TNUMBER && hm_codec_put_number(L, idx, b) == 0) {
    return 0;
  }
  return hm_codec_encode_member(L, idx, b, key, 0, 0, err, errlen);
}

/* ,"key":<value at idx>, left out when nil or false (the context keeps
** `false` for "none" so that reading it never reaches its metatable);
** first: no comma. Returns 1 when written, 0 when left out, -1 on error. */
static int field(lua_State *L, hm_buf *b, int idx, const char *lit,
                 size_t litlen, const char *key, int first, char *err,
                 size_t errlen) {
  if (!lua_toboolean(L, idx)) return 0;
  if (put(b, lit + first, litlen - (size_t)first)) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return putval(L, b, idx, key, err, errlen) ? -1 : 1;
}
/* errlen: the enclosing function's. */
#define FIELD(L, b, idx, lit, key, first, err) \
  field((L), (b), (idx), lit, sizeof(lit) - 1, (key), (first), (err), errlen)

/* The context's (at idx) own part k (rawget), pushed; 1 when it has one. */
static int own(lua_State *L, hm_ctx *ctx, int idx, int k) {
  hm_pushk(L, ctx, k);
  if (lua_rawget(L, idx) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  return 0;
}

int hm_env_act(lua_State *L, hm_ctx *ctx, int base, hm_buf *b, char *err,
               size_t errlen) {
  const int CTX = base, PAT = base + 1, SMETA = base + 2, METHOD = base + 3,
            RID = base + 4, SID = base + 5, TID = base + 6, PSID = base + 7,
            TS = base + 8, PUBSUB = base + 9;
  int w;
  err[0] = '\0';
  hm_pushk(L, ctx, HM_K_TOPIC);
  lua_gettable(L, PAT);
  const int topic = lua_gettop(L), top = topic;
  /* pattern */
  if (putlit(b, "{\"pattern\":")) goto oom;
  if (own(L, ctx, CTX, HM_K_PATTERN) ? hm_codec_encode_member(L, -1, b, "pattern", 0, 0, err, errlen)
                        : hm_codec_encode_member(L, PAT, b, "pattern", 0, 1, err, errlen))
    goto done;
  lua_settop(L, top);
  /* meta: the context's, else the scope's with meta$ over it */
  if (putlit(b, ",\"meta\":")) goto oom;
  if (!own(L, ctx, CTX, HM_K_META)) {
    int has = 0;
    if (lua_istable(L, SMETA)) {
      lua_pushnil(L);
      if (lua_next(L, SMETA)) { lua_pop(L, 2); has = 1; }
    }
    if (!has) {
      hm_pushk(L, ctx, HM_K_METAD);
      if (lua_gettable(L, PAT) == LUA_TTABLE) {
        lua_pushnil(L);
        if (lua_next(L, -2)) { lua_pop(L, 2); has = 1; }
      }
    }
    lua_settop(L, top);
    if (!has) {
      if (putlit(b, "{}")) goto oom;
      goto meta_done;
    }
    /* Not empty: the builder makes the merged table once, and keeps it. */
    hm_pushk(L, ctx, HM_K_META);
    lua_gettable(L, CTX);
  }
  if (hm_codec_encode_member(L, -1, b, "meta", 0, 0, err, errlen)) goto done;
meta_done:
  lua_settop(L, top);
  /* delegate */
  if (putlit(b, ",\"delegate\":")) goto oom;
  if (!own(L, ctx, CTX, HM_K_DELEGATE)) {
    hm_pushk(L, ctx, HM_K_DELEGATED);
    lua_gettable(L, PAT);
    int arr = 0;
    if (lua_istable(L, -1) && lua_getmetatable(L, -1)) {
      hm_codec_push_array_mt(L);
      arr = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
    }
    if (!lua_istable(L, -1) || arr) {
      if (putlit(b, "{}")) goto oom;
      goto delegate_done;
    }
  }
  if (hm_codec_encode_member(L, -1, b, "delegate", 0, 0, err, errlen)) goto done;
delegate_done:
  lua_settop(L, top);
  /* trace and request: the context's tables, else from its ids */
  if (putlit(b, ",\"trace\":")) goto oom;
  if (own(L, ctx, CTX, HM_K_TRACE)) {
    if (hm_codec_encode_member(L, -1, b, "trace", 0, 0, err, errlen)) goto done;
  } else {
    int first = 1;
    if (putlit(b, "{")) goto oom;
    if ((w = FIELD(L, b, SID, ",\"spanId\":", "trace.spanId", first, err)) < 0) goto done;
    first &= !w;
    if ((w = FIELD(L, b, TID, ",\"traceId\":", "trace.traceId", first, err)) < 0) goto done;
    first &= !w;
    if ((w = FIELD(L, b, PSID, ",\"parentSpanId\":", "trace.parentSpanId", first, err)) < 0) goto done;
    first &= !w;
    if ((w = FIELD(L, b, TS, ",\"timestamp\":", "trace.timestamp", first, err)) < 0) goto done;
    first &= !w;
    if ((w = FIELD(L, b, topic, ",\"service\":", "trace.service", first, err)) < 0) goto done;
    first &= !w;
    if (FIELD(L, b, METHOD, ",\"method\":", "trace.method", first, err) < 0) goto done;
    if (putlit(b, "}")) goto oom;
  }
  lua_settop(L, top);
  if (putlit(b, ",\"request\":")) goto oom;
  if (own(L, ctx, CTX, HM_K_REQUEST)) {
    if (hm_codec_encode_member(L, -1, b, "request", 0, 0, err, errlen)) goto done;
  } else {
    if (putlit(b, "{")) goto oom;
    if ((w = FIELD(L, b, RID, ",\"id\":", "request.id", 1, err)) < 0) goto done;
    if ((w ? putlit(b, ",") : 0) ||
        (lua_toboolean(L, PUBSUB) ? putlit(b, "\"type\":\"pubsub\"") : putlit(b, "\"type\":\"request\"")))
      goto oom;
    if (FIELD(L, b, topic, ",\"service\":", "request.service", 0, err) < 0) goto done;
    if (FIELD(L, b, METHOD, ",\"method\":", "request.method", 0, err) < 0) goto done;
    if (putlit(b, "}")) goto oom;
  }
  lua_settop(L, top);
  if (putlit(b, "}")) goto oom;
  return 0;
oom:
  snprintf(err, errlen, "out of memory");
done:
  lua_settop(L, top);
  return -1;
}

/* core.act_payload(actx, pattern, scope_meta, method, rid, sid, tid, psid,
** ts, pubsub) -> the request as a string, or nil, message. For hemera.durable,
** whose acts go out through JetStream; hemera.client uses conn:act. */
static int l_act_payload(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 10);
  char err[320];
  hm_buf *b = hm_env_buffer(L);
  int r = hm_env_act(L, CTX_UP(L), 1, b, err, sizeof err);
  if (r == 0) lua_pushlstring(L, b->data, b->len);
  hm_env_buffer_done(b);
  if (r == 0) return 1;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* }==================================================================== */

void hm_lua_open_envelope(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"msg_route", l_msg_route},
    {"msg_member", l_msg_member},
    {"msg_result", l_msg_result},
    {"msg_data", l_msg_data},
    {"msg_reply", l_msg_reply},
    {"msg_arrived", l_msg_arrived},
    {"lazy_index", l_lazy_index},
    {"act_payload", l_act_payload},
    {NULL, NULL},
  };
  hm_ctx *ctx = hm_ctx_get(L);
  hm_codec_source = msg_source;
  lua_pushlightuserdata(L, ctx);
  luaL_setfuncs(L, fns, 1);
  lua_createtable(L, 0, 2);
  lua_pushlightuserdata(L, ctx);
  lua_pushcclosure(L, msg_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "hemera.Msg");
  lua_setfield(L, -2, "__name");
  ctx->k[HM_K_MSGMT] = luaL_ref(L, LUA_REGISTRYINDEX);
}
