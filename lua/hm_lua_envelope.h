/*
** hm_lua_envelope.h: the binding's envelope messages (hm_lua_envelope.c),
** shared with hm_lua_conn.c. Not installed. Loop thread only.
*/
#ifndef HM_LUA_ENVELOPE_H
#define HM_LUA_ENVELOPE_H

#include "hm_codec.h"
#include "hm_lua_private.h"

/* The envelope members whose spans a Msg records. */
enum {
  HM_SP_PATTERN, HM_SP_META, HM_SP_TRACE, HM_SP_REQUEST, HM_SP_DELEGATE,
  HM_SP_RESULT, HM_SP_ERROR, HM_SP_N
};

/* A message for Lua: a userdata without finalizer that owns copies of the
** payload and the reply subject; the Lua GC frees it. */
typedef struct hm_lmsg {
  size_t len, rlen;
  int has_reply;
  int scanned; /* 0 not yet; 1 an object (sp valid); 2 not one; -1 invalid */
  int pubsub;  /* request.type == "pubsub": -1 not looked at yet */
  double arrived; /* core.hrtime() milliseconds */
  hm_span sp[HM_SP_N];
  hm_span type_sp; /* request.type, when request is an object */
  char data[]; /* len bytes, NUL, rlen bytes of reply subject, NUL */
} hm_lmsg;

/* Pushes a Msg with copies of m's data and reply subject (m stays the
** caller's). */
void hm_env_push_msg(lua_State *L, hm_ctx *ctx, natsMsg *m);
/* The Msg at idx, or raises. */
hm_lmsg *hm_env_check_msg(lua_State *L, hm_ctx *ctx, int idx);
/* Its reply subject, or NULL. */
const char *hm_env_reply_to(const hm_lmsg *g);

/* Appends the reply envelope to b: the tables at meta, trace, request (or,
** where nil, the request's own bytes of that member), then result or the
** error (a wire error table) at error when not nil. skipped: the lenient
** encoder's list (0: strict). 0, or -1 with a message in err. */
int hm_env_reply(lua_State *L, hm_lmsg *g, int meta, int trace, int request,
                 int result, int error, int skipped, hm_buf *b, char *err,
                 size_t errlen);

/* Appends an act's request envelope to b, from the ten values at base..
** base+9 (actx, pattern, scope meta, method, rid, sid, tid, psid, ts,
** pubsub: core.act_payload's arguments; the context's own meta, trace,
** request, delegate or pattern, where set, win). Leaves the pattern's topic
** pushed, written or not. 0, or -1 with a message in err. Loop thread. */
int hm_env_act(lua_State *L, hm_ctx *ctx, int base, hm_buf *b, char *err,
               size_t errlen);

/* The state's shared output buffer, emptied. May push one value (a
** private buffer, when the shared one is in use) that must stay on the
** stack until the buffer is given back with hm_env_buffer_done. */
hm_buf *hm_env_buffer(lua_State *L);
void hm_env_buffer_done(hm_buf *b);

void hm_lua_open_envelope(lua_State *L);

#endif
