/*
** hm_router.h: the pattern index (Hemera/bloomrun matching semantics).
**
** A stored pattern ("route") is a set of fields key -> value where a value is
** a string, a number, a boolean, a regular expression, or (only for the key
** "topic") a NATS subject that may hold the wildcards `*` and `>`.
** A route matches a request when every key of the route is present in the
** request and equal (strict: number 1 never equals string "1"; numbers
** compare as doubles so integer 1 equals float 1.0). Extra request keys are
** ignored. A regex value matches when the regex finds a match in the request
** value converted to a string the way JavaScript's String() would (numbers
** through hm_jsnum). A wildcard topic matches concrete subjects by NATS rules
** (`*` exactly one token, `>` one or more trailing tokens).
**
** Order (bloomrun): HM_INDEX_INSERTION returns the earliest added matching
** route; HM_INDEX_DEPTH the matching route with the most keys (ties: earliest
** added). Routes whose every value is a regex or a wildcard topic are
** searched after all others.
**
** Exactly (bloomrun 4.1.1's bucket scan, whose result the index computes
** without scanning): every indexed field (string, number or boolean value;
** not a regex, not a wildcard topic) puts its route in the bucket
** (key, String(value)). Routes in a bucket are in weight order (insertion:
** add order; depth: more keys first, then add order); a bucket's place is
** its first route's place, and when two buckets share a first route, the
** bucket whose key comes earlier in that route's fields goes first. A
** lookup scans the request's buckets in that order and returns the first
** route that matches. So usually the earliest (insertion) or deepest
** (depth) matching route wins, but not always: with insertion, after
** {topic:z,cmd:y}, {topic:x}, {topic:x,cmd:y}, the request {topic:x,cmd:y}
** gets the third, because bucket cmd:y starts with the older first route.
** Regex-and-wildcard-only routes (and routes with no field at all, which
** match every non-empty request) come after, in weight order. Lookup cost does not
** grow with the number of routes, only with the request and the matches.
** Wildcards: a token that is exactly `*` matches one token, a last token
** exactly `>` one or more; a `>` elsewhere matches itself, as in NATS.
** They and regexes see non-string request values as String() would; a
** request regex never matches a wildcard topic.
**
** Ownership: the router copies every key and string it is given; callers
** keep ownership of their hm_field arrays. `udata` is opaque and never
** touched; the caller frees it after hm_router_remove / in the remove
** callbacks. Not thread-safe: one thread (the loop thread) uses a router.
*/
#ifndef HM_ROUTER_H
#define HM_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "hm_status.h"

typedef enum {
  HM_VAL_STRING = 1,
  HM_VAL_NUMBER,
  HM_VAL_BOOLEAN,
  HM_VAL_REGEX /* str/len hold the regex source (JavaScript-like syntax) */
} hm_val_type;

typedef struct hm_field {
  const char *key;
  size_t key_len;
  hm_val_type type;
  const char *str; /* HM_VAL_STRING, HM_VAL_REGEX */
  size_t str_len;
  double num;      /* HM_VAL_NUMBER */
  int boolean;     /* HM_VAL_BOOLEAN: 0 or 1 */
} hm_field;

typedef enum { HM_INDEX_INSERTION = 0, HM_INDEX_DEPTH = 1 } hm_indexing;

typedef struct hm_router hm_router_t;
typedef struct hm_route hm_route_t;

hm_status hm_router_new(hm_indexing indexing, hm_router_t **out);
/* Frees every route. `each` (may be NULL) is called with each route's udata
** first so the caller can release it. */
void hm_router_free(hm_router_t *r, void (*each)(void *udata, void *arg),
                    void *arg);

/* Adds a route. Fields must have distinct keys. A HM_VAL_STRING field whose
** key is "topic" and whose value contains `*` or `>` as a whole token is a
** wildcard subject. On HM_REGEX, hm_router_error() describes the problem.
** `out` (may be NULL) receives a handle valid until the route is removed. */
hm_status hm_router_add(hm_router_t *r, const hm_field *fields, size_t n,
                        void *udata, hm_route_t **out);

/* The first matching route's udata, or NULL. Request fields may include
** keys the router never saw; duplicate keys are not allowed. A request field
** of type HM_VAL_REGEX only equals a stored regex with the same source.
** With n == 0 nothing matches (NULL): bloomrun's lookup({}) finds nothing
** either, and "no field" must never mean "any route". */
void *hm_router_lookup(const hm_router_t *r, const hm_field *req, size_t n);

/* The same lookup among the routes whose topic field is exactly `topic` as
** written (wildcards included, as hm_router_remove_topic counts them): the
** first such route in hm_router_lookup's scan order, so for a request whose
** topic is that same concrete subject the answer is hm_router_lookup's
** whenever that is a route of this topic. A message is
** routed this way among the patterns of the subscription that delivered
** it, so a crafted pattern cannot reach another topic's handler. */
void *hm_router_lookup_topic(const hm_router_t *r, const hm_field *req,
                             size_t n, const char *topic, size_t len);

/* Calls fn for every matching route in lookup order; stops when fn
** returns non-zero. With n == 0 every route matches (list all). fn must
** not add or remove routes; collect handles and act after the call. Each
** route is visited once; if memory for the sort runs out, the visit may
** be incomplete. */
void hm_router_lookup_all(const hm_router_t *r, const hm_field *req, size_t n,
                          int (*fn)(hm_route_t *route, void *udata, void *arg),
                          void *arg);

/* Removes one route (the handle dies). */
void hm_router_remove(hm_router_t *r, hm_route_t *route);

/* Removes every route whose topic field is exactly `topic` as written
** (wildcards included); calls each(udata, arg) for each removed route
** before freeing it. Returns how many were removed. Only HM_VAL_STRING
** topics count (a number 5 is not the topic "5"). `each` must not call
** into the router. */
size_t hm_router_remove_topic(hm_router_t *r, const char *topic, size_t len,
                              void (*each)(void *udata, void *arg), void *arg);

size_t hm_router_count(const hm_router_t *r);
void *hm_route_udata(const hm_route_t *route);
/* The route's fields in the order given to add (valid while it lives). */
const hm_field *hm_route_fields(const hm_route_t *route, size_t *n);

/* Bytes held by the router (index + routes), for benchmarks. */
size_t hm_router_memory(const hm_router_t *r);
/* Text of the last HM_REGEX / HM_INVAL error of this router ("" if none;
** valid until the next failing add). */
const char *hm_router_error(const hm_router_t *r);

#endif
