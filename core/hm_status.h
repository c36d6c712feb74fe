/*
** hm_status.h: status codes of the C core.
**
** Every fallible core function returns an hm_status (HM_OK == 0). Only the
** Lua binding turns statuses into Lua errors; the core never raises.
** Any thread may call hm_status_name/hm_status_text (they return static
** strings).
*/
#ifndef HM_STATUS_H
#define HM_STATUS_H

#define HM_STATUS_MAP(XX)                                              \
  XX(OK, "ok")                                                         \
  XX(NOMEM, "out of memory")                                           \
  XX(INVAL, "invalid argument")                                        \
  XX(NOTFOUND, "not found")                                            \
  XX(EXISTS, "already exists")                                         \
  XX(TIMEOUT, "timeout")                                               \
  XX(CLOSED, "connection closed")                                      \
  XX(CONNECT, "could not connect")                                     \
  XX(NATS, "NATS error")                                               \
  XX(UV, "libuv error")                                                \
  XX(REGEX, "invalid regular expression")                              \
  XX(LIMIT, "limit exceeded")                                          \
  XX(BUSY, "busy")                                                     \
  XX(SUBJECT, "invalid subject")

typedef enum {
#define XX(name, text) HM_##name,
  HM_STATUS_MAP(XX)
#undef XX
  HM_STATUS_COUNT
} hm_status;

/* "HM_TIMEOUT" style name, and a human readable text. */
const char *hm_status_name(hm_status s);
const char *hm_status_text(hm_status s);

#endif
