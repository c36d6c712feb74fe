/*
** hm_router_naive.c: the reference matcher. It spells the rules of
** hm_router.h out as directly as it can: a route list in add order, a
** match test per route, and the bloomrun order computed from the bucket
** definition itself (a bucket is every route holding an indexed field with
** that key and that String() value; its head is its first route in weight
** order). Shares no code with hm_router.c beyond hm_jsnum and PCRE2.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hm_router_naive.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "hm_jsnum.h"

typedef struct nfield {
  hm_field f; /* key and str point into our own copies */
  int indexed;
  int wild;
  pcre2_code *re;
} nfield;

typedef struct nroute {
  void *udata;
  unsigned long long seq;
  size_t n;
  nfield *fields;
} nroute;

struct hm_naive {
  hm_indexing indexing;
  nroute *routes; /* in add order */
  size_t count, cap;
  unsigned long long seq;
  pcre2_compile_context *cctx;
  pcre2_match_context *mctx;
  pcre2_match_data *md;
};

static char *dupbytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d) return NULL;
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static int sameb(const char *a, size_t an, const char *b, size_t bn) {
  return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int samekey(const hm_field *a, const hm_field *b) {
  return sameb(a->key, a->key_len, b->key, b->key_len);
}

/* Splits on '.' into at most `max` tokens; returns the count. */
static size_t tokens(const char *s, size_t n, const char **tok, size_t *len,
                     size_t max) {
  size_t k = 0, start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || s[i] == '.') {
      if (k == max) return max + 1;
      tok[k] = s + start;
      len[k] = i - start;
      k++;
      start = i + 1;
    }
  }
  return k;
}

#define MAXTOK 64

static int wildcard(const char *s, size_t n) {
  const char *tok[MAXTOK];
  size_t len[MAXTOK];
  size_t k = tokens(s, n, tok, len, MAXTOK);
  if (k > MAXTOK) k = MAXTOK;
  for (size_t i = 0; i < k; i++)
    if (len[i] == 1 && (tok[i][0] == '*' || tok[i][0] == '>')) return 1;
  /* Subjects longer than MAXTOK tokens: fall back to a byte scan. */
  for (size_t i = 0; i < n && k == MAXTOK; i++)
    if ((s[i] == '*' || s[i] == '>') && (i == 0 || s[i - 1] == '.') &&
        (i + 1 == n || s[i + 1] == '.'))
      return 1;
  return 0;
}

static int subj_rec(const char **pt, const size_t *pl, size_t pn,
                    const char **st, const size_t *sl, size_t sn) {
  if (pn == 0) return sn == 0;
  if (sn == 0) return 0;
  if (pn == 1 && pl[0] == 1 && pt[0][0] == '>') return 1;
  if (!(pl[0] == 1 && pt[0][0] == '*') && !sameb(pt[0], pl[0], st[0], sl[0]))
    return 0;
  return subj_rec(pt + 1, pl + 1, pn - 1, st + 1, sl + 1, sn - 1);
}

static int subject(const char *p, size_t pn, const char *s, size_t sn) {
  const char *pt[MAXTOK], *st[MAXTOK];
  size_t pl[MAXTOK], sl[MAXTOK];
  size_t a = tokens(p, pn, pt, pl, MAXTOK);
  size_t b = tokens(s, sn, st, sl, MAXTOK);
  if (a > MAXTOK || b > MAXTOK) return 0; /* the fuzzer never goes there */
  return subj_rec(pt, pl, a, st, sl, b);
}

/* String(v); NULL for a regex. */
static const char *tostr(const hm_field *f, char *buf, size_t *n) {
  if (f->type == HM_VAL_STRING) {
    *n = f->str_len;
    return f->str_len ? f->str : "";
  }
  if (f->type == HM_VAL_NUMBER) {
    *n = hm_jsnum_format(f->num, buf);
    return buf;
  }
  if (f->type == HM_VAL_BOOLEAN) {
    const char *s = f->boolean ? "true" : "false";
    *n = strlen(s);
    return s;
  }
  return NULL;
}

static int field_eq(const hm_naive_t *nv, const nfield *sf,
                    const hm_field *q) {
  const hm_field *f = &sf->f;
  char buf[HM_JSNUM_BUFSIZE];
  size_t n = 0;
  const char *s;
  if (f->type == HM_VAL_REGEX) {
    if (q->type == HM_VAL_REGEX)
      return sameb(f->str, f->str_len, q->str, q->str_len);
    s = tostr(q, buf, &n);
    return pcre2_match(sf->re, (PCRE2_SPTR)s, n, 0, 0, nv->md, nv->mctx) >= 0;
  }
  if (sf->wild) {
    if (q->type == HM_VAL_REGEX) return 0;
    s = tostr(q, buf, &n);
    return subject(f->str, f->str_len, s, n);
  }
  if (f->type != q->type) return 0;
  if (f->type == HM_VAL_STRING)
    return sameb(f->str, f->str_len, q->str, q->str_len);
  if (f->type == HM_VAL_NUMBER) return f->num == q->num;
  return (f->boolean != 0) == (q->boolean != 0);
}

static int route_matches(const hm_naive_t *nv, const nroute *rt,
                         const hm_field *req, size_t n) {
  for (size_t i = 0; i < rt->n; i++) {
    size_t j = 0;
    while (j < n && !samekey(&rt->fields[i].f, &req[j])) j++;
    if (j == n || !field_eq(nv, &rt->fields[i], &req[j])) return 0;
  }
  return 1;
}

static void route_free(nroute *rt) {
  for (size_t i = 0; i < rt->n; i++) {
    free((char *)rt->fields[i].f.key);
    free((char *)rt->fields[i].f.str);
    pcre2_code_free(rt->fields[i].re);
  }
  free(rt->fields);
}

hm_status hm_naive_new(hm_indexing indexing, hm_naive_t **out) {
  hm_naive_t *nv = calloc(1, sizeof *nv);
  *out = NULL;
  if (!nv) return HM_NOMEM;
  nv->indexing = indexing;
  nv->cctx = pcre2_compile_context_create(NULL);
  nv->mctx = pcre2_match_context_create(NULL);
  nv->md = pcre2_match_data_create(1, NULL);
  if (!nv->cctx || !nv->mctx || !nv->md) {
    hm_naive_free(nv);
    return HM_NOMEM;
  }
  pcre2_set_newline(nv->cctx, PCRE2_NEWLINE_ANYCRLF);
  pcre2_set_match_limit(nv->mctx, 1000000);
  *out = nv;
  return HM_OK;
}

void hm_naive_free(hm_naive_t *nv) {
  if (!nv) return;
  for (size_t i = 0; i < nv->count; i++) route_free(&nv->routes[i]);
  free(nv->routes);
  pcre2_match_data_free(nv->md);
  pcre2_match_context_free(nv->mctx);
  pcre2_compile_context_free(nv->cctx);
  free(nv);
}

hm_status hm_naive_add(hm_naive_t *nv, const hm_field *fields, size_t n,
                       void *udata) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (samekey(&fields[i], &fields[j])) return HM_INVAL;
  if (nv->count == nv->cap) {
    size_t cap = nv->cap ? nv->cap * 2 : 16;
    nroute *r = realloc(nv->routes, cap * sizeof *r);
    if (!r) return HM_NOMEM;
    nv->routes = r;
    nv->cap = cap;
  }
  nroute rt = {udata, 0, n, calloc(n ? n : 1, sizeof(nfield))};
  if (!rt.fields) return HM_NOMEM;
  hm_status st = HM_OK;
  for (size_t i = 0; i < n; i++) {
    nfield *nf = &rt.fields[i];
    nf->f = fields[i];
    nf->f.key = dupbytes(fields[i].key, fields[i].key_len);
    nf->f.str = NULL;
    if (fields[i].type == HM_VAL_STRING || fields[i].type == HM_VAL_REGEX)
      nf->f.str = dupbytes(fields[i].str, fields[i].str_len);
    if (!nf->f.key ||
        (!nf->f.str && (fields[i].type == HM_VAL_STRING ||
                        fields[i].type == HM_VAL_REGEX))) {
      st = HM_NOMEM;
      break;
    }
    nf->wild = fields[i].type == HM_VAL_STRING &&
               sameb(fields[i].key, fields[i].key_len, "topic", 5) &&
               wildcard(fields[i].str, fields[i].str_len);
    nf->indexed = fields[i].type != HM_VAL_REGEX && !nf->wild;
    if (fields[i].type == HM_VAL_REGEX) {
      int code;
      PCRE2_SIZE off;
      nf->re = pcre2_compile(
          (PCRE2_SPTR)nf->f.str, nf->f.str_len,
          PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX |
              PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS |
              PCRE2_DOLLAR_ENDONLY,
          &code, &off, nv->cctx);
      if (!nf->re) {
        st = HM_REGEX;
        break;
      }
    }
  }
  if (st != HM_OK) {
    route_free(&rt);
    return st;
  }
  rt.seq = nv->seq++;
  nv->routes[nv->count++] = rt;
  return HM_OK;
}

static void remove_at(hm_naive_t *nv, size_t i) {
  route_free(&nv->routes[i]);
  memmove(&nv->routes[i], &nv->routes[i + 1],
          (nv->count - i - 1) * sizeof *nv->routes);
  nv->count--;
}

int hm_naive_remove(hm_naive_t *nv, void *udata) {
  for (size_t i = 0; i < nv->count; i++)
    if (nv->routes[i].udata == udata) {
      remove_at(nv, i);
      return 1;
    }
  return 0;
}

static int has_topic(const nroute *rt, const char *topic, size_t len) {
  for (size_t j = 0; j < rt->n; j++) {
    const hm_field *f = &rt->fields[j].f;
    if (f->type == HM_VAL_STRING && sameb(f->key, f->key_len, "topic", 5) &&
        sameb(f->str, f->str_len, topic, len))
      return 1;
  }
  return 0;
}

size_t hm_naive_remove_topic(hm_naive_t *nv, const char *topic, size_t len,
                             void (*each)(void *udata, void *arg),
                             void *arg) {
  size_t removed = 0;
  for (size_t i = 0; i < nv->count;) {
    const nroute *rt = &nv->routes[i];
    if (has_topic(rt, topic, len)) {
      if (each) each(rt->udata, arg);
      remove_at(nv, i);
      removed++;
    } else {
      i++;
    }
  }
  return removed;
}

/* A route's place among routes: insertion mode by add order; depth mode
** by key count, more first, then add order. */
typedef struct rank {
  int cls; /* 0: has indexed fields; 1: regex and wildcard only, last */
  long long depth;
  unsigned long long seq;
  size_t fidx;
  /* the route itself */
  long long rdepth;
  unsigned long long rseq;
} rank;

static long long depth_of(const hm_naive_t *nv, const nroute *rt) {
  return nv->indexing == HM_INDEX_DEPTH ? -(long long)rt->n : 0;
}

/* Compares the route parts (depth, seq) of two routes. */
static int cmp_route(long long da, unsigned long long sa, long long db,
                     unsigned long long sb) {
  if (da != db) return da < db ? -1 : 1;
  if (sa != sb) return sa < sb ? -1 : 1;
  return 0;
}

static int cmp_rank(const rank *a, const rank *b) {
  if (a->cls != b->cls) return a->cls < b->cls ? -1 : 1;
  int c = cmp_route(a->depth, a->seq, b->depth, b->seq);
  if (c) return c;
  if (a->fidx != b->fidx) return a->fidx < b->fidx ? -1 : 1;
  return cmp_route(a->rdepth, a->rseq, b->rdepth, b->rseq);
}

/* The bucket (key, String(value)) of field f: its head route and the
** position of the key among the head's fields. */
static void bucket_head(const hm_naive_t *nv, const hm_field *f, rank *out) {
  char buf[HM_JSNUM_BUFSIZE], buf2[HM_JSNUM_BUFSIZE];
  size_t n = 0, n2 = 0;
  const char *s = tostr(f, buf, &n);
  int found = 0;
  for (size_t i = 0; i < nv->count; i++) {
    const nroute *rt = &nv->routes[i];
    for (size_t j = 0; j < rt->n; j++) {
      const nfield *g = &rt->fields[j];
      if (!g->indexed || !samekey(&g->f, f)) continue;
      const char *s2 = tostr(&g->f, buf2, &n2);
      if (!sameb(s, n, s2, n2)) continue;
      long long d = depth_of(nv, rt);
      if (!found || cmp_route(d, rt->seq, out->depth, out->seq) < 0) {
        out->depth = d;
        out->seq = rt->seq;
        out->fidx = j;
        found = 1;
      }
    }
  }
}

static rank rank_of(const hm_naive_t *nv, const nroute *rt) {
  rank best = {1, 0, 0, 0, depth_of(nv, rt), rt->seq};
  for (size_t j = 0; j < rt->n; j++) {
    if (!rt->fields[j].indexed) continue;
    rank b = best;
    b.cls = 0;
    bucket_head(nv, &rt->fields[j].f, &b);
    if (best.cls == 1 || cmp_rank(&b, &best) < 0) best = b;
  }
  if (best.cls == 1) best.depth = 0, best.seq = 0, best.fidx = 0;
  return best;
}

typedef struct nhit {
  rank k;
  void *udata;
} nhit;

static int cmp_nhit(const void *a, const void *b) {
  return cmp_rank(&((const nhit *)a)->k, &((const nhit *)b)->k);
}

/* Every matching route in lookup order; with `topic`, only that topic's
** routes (n == 0 then lists that topic's routes). */
static void matches(const hm_naive_t *nv, const hm_field *req, size_t n,
                    const char *topic, size_t tlen,
                    int (*fn)(void *udata, void *arg), void *arg) {
  nhit *hits = malloc((nv->count ? nv->count : 1) * sizeof *hits);
  if (!hits) return;
  size_t nh = 0;
  for (size_t i = 0; i < nv->count; i++) {
    const nroute *rt = &nv->routes[i];
    if (topic && !has_topic(rt, topic, tlen)) continue;
    if (n && !route_matches(nv, rt, req, n)) continue;
    hits[nh].k = rank_of(nv, rt);
    hits[nh].udata = rt->udata;
    nh++;
  }
  qsort(hits, nh, sizeof *hits, cmp_nhit);
  for (size_t i = 0; i < nh; i++)
    if (fn(hits[i].udata, arg)) break;
  free(hits);
}

void hm_naive_lookup_all(const hm_naive_t *nv, const hm_field *req, size_t n,
                         int (*fn)(void *udata, void *arg), void *arg) {
  matches(nv, req, n, NULL, 0, fn, arg);
}

static int first(void *udata, void *arg) {
  *(void **)arg = udata;
  return 1;
}

void *hm_naive_lookup(const hm_naive_t *nv, const hm_field *req, size_t n) {
  void *found = NULL;
  if (n) matches(nv, req, n, NULL, 0, first, &found);
  return found;
}

void *hm_naive_lookup_topic(const hm_naive_t *nv, const hm_field *req,
                            size_t n, const char *topic, size_t len) {
  void *found = NULL;
  if (n) matches(nv, req, n, topic ? topic : "", len, first, &found);
  return found;
}

size_t hm_naive_count(const hm_naive_t *nv) { return nv->count; }
