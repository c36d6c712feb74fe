/*
** hm_http_client.h: a small HTTP/1.1 client on a libuv loop (no lua.h),
** for exporters that POST to a collector (the tracing plugin's spans).
**
** One request at a time per client, each on a connection of its own
** ("Connection: close"): an exporter posts one batch every second or so,
** so a kept-alive connection would save little and add a state to get
** wrong when the collector restarts. The response is parsed by llhttp in
** response mode (the parser core/hm_http.c uses for requests); its body is
** read and dropped, only the status matters.
**
** Threads: loop thread only; callbacks run from the top of a libuv
** callback.
**
** Ownership: the client owns the request in flight and its copy of the
** body. hm_http_client_close ends the request in flight (its callback runs
** with HM_CLOSED) and frees the client once its handles have closed; the
** client must not be used after that call.
*/
#ifndef HM_HTTP_CLIENT_H
#define HM_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>

#include "hm_status.h"

typedef struct hm_http_client hm_http_client;

/* The outcome of one POST: st HM_OK with the HTTP status (any status: the
** caller decides what a 4xx means), or HM_CONNECT / HM_TIMEOUT / HM_CLOSED
** / HM_UV / HM_INVAL (a response llhttp could not parse) with status 0 and
** a message in err. */
typedef void (*hm_http_post_cb)(hm_status st, int status, const char *err,
                                void *arg);

/* url: "http://HOST:PORT/PATH" with a numeric IPv4 or bracketed IPv6 host,
** or "localhost" (127.0.0.1); no https (a collector on loopback or a
** sidecar). timeout_ms bounds a whole request, connect to last byte. On a
** bad URL returns HM_INVAL with a message naming it in err. */
hm_status hm_http_client_new(uv_loop_t *loop, const char *url,
                             unsigned timeout_ms, hm_http_client **out,
                             char *err, size_t errlen);

/* Starts a POST of body (copied) with content_type. HM_BUSY while one is
** in flight, HM_CLOSED after close, HM_NOMEM. cb runs exactly once for an
** accepted POST, never from inside this call. */
hm_status hm_http_client_post(hm_http_client *cl, const char *content_type,
                              const char *body, size_t len,
                              hm_http_post_cb cb, void *arg);

/* Whether a POST is in flight. */
int hm_http_client_busy(const hm_http_client *cl);

/* Ends the client: see Ownership above. */
void hm_http_client_close(hm_http_client *cl);

#endif
