/*
** hm_router_naive.h: a reference matcher with hm_router's semantics (see
** hm_router.h) and none of its indexing. Every lookup scans every route,
** and the bloomrun bucket order is recomputed from scratch by more scans,
** so it is quadratic in places: it exists for differential tests, the
** fuzzer and the benchmark, never for production.
**
** Routes are named by their udata, which callers keep unique. Ownership as
** in hm_router: fields are copied, udata is never touched. Not thread-safe.
*/
#ifndef HM_ROUTER_NAIVE_H
#define HM_ROUTER_NAIVE_H

#include "hm_router.h"

typedef struct hm_naive hm_naive_t;

hm_status hm_naive_new(hm_indexing indexing, hm_naive_t **out);
void hm_naive_free(hm_naive_t *nv);

/* HM_REGEX for a regex PCRE2 rejects, HM_INVAL for duplicate keys. */
hm_status hm_naive_add(hm_naive_t *nv, const hm_field *fields, size_t n,
                       void *udata);
/* Removes the route added with `udata`; returns 1 if there was one. */
int hm_naive_remove(hm_naive_t *nv, void *udata);
size_t hm_naive_remove_topic(hm_naive_t *nv, const char *topic, size_t len,
                             void (*each)(void *udata, void *arg), void *arg);

void *hm_naive_lookup(const hm_naive_t *nv, const hm_field *req, size_t n);
void *hm_naive_lookup_topic(const hm_naive_t *nv, const hm_field *req,
                            size_t n, const char *topic, size_t len);
/* Same order and stopping rule as hm_router_lookup_all. */
void hm_naive_lookup_all(const hm_naive_t *nv, const hm_field *req, size_t n,
                         int (*fn)(void *udata, void *arg), void *arg);
size_t hm_naive_count(const hm_naive_t *nv);

#endif
