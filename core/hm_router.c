/*
** hm_router.c: the pattern index, bloomrun 4.1.1 semantics without its
** linear scans.
**
** bloomrun keeps a bucket per (key, String(value)) pair of every stored
** pattern; a lookup sorts the request's buckets by bucket weight and scans
** them in order, so the route it returns is the matching route R that
** minimises (order of R's first-scanned bucket, order of R in that bucket).
** Because a matching route's buckets are all among the request's buckets,
** R's first-scanned bucket is simply the least of its own buckets: the
** answer is a function of R and the bucket heads only. We keep the buckets
** (to know their heads) but find the matching routes another way:
**
** - Every route's indexed pairs, sorted by key id, form a path in a trie
**   whose edges are buckets. A lookup walks only the edges whose bucket the
**   request holds, so it reaches exactly the routes whose pairs all appear
**   in the request, without looking at any other route.
** - Each trie node and each bucket keeps its routes in weight order
**   (insertion: add order; depth: most keys first, then add order) as one
**   list per key count, so heads are O(1) and removal is O(1) plus the
**   number of distinct key counts.
** - Routes with no indexed pair (regex values and wildcard topics only) sit
**   at the trie root and are searched last, as bloomrun's regex bucket is.
**
** Bucket order: insertion mode sorts by the head's add counter, depth mode
** by the head's key count (more first) and then its add counter; when two
** buckets share a head, the one whose key comes first in that route's
** fields goes first. bloomrun leaves such ties to the request's key order;
** ours are deterministic.
**
** Keys get ids in order of first appearance, so the keys every pattern
** shares (topic, cmd) come first in paths and the trie fans out early.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hm_router.h"

#include <pcre2.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_jsnum.h"

/* {====================================================================
** Memory accounting and hashing
** ===================================================================== */

static void *ralloc(hm_router_t *r, size_t n);
static void rfree(hm_router_t *r, void *p, size_t n);

static uint64_t fmix(uint64_t h) {
  h ^= h >> 33;
  h *= UINT64_C(0xff51afd7ed558ccd);
  h ^= h >> 33;
  h *= UINT64_C(0xc4ceb9fe1a85ec53);
  h ^= h >> 33;
  return h;
}

static uint64_t hbytes(const char *s, size_t n, uint64_t seed) {
  uint64_t h = seed ^ (n * UINT64_C(0x9E3779B97F4A7C15));
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, s, 8);
    h = (h ^ fmix(v)) * UINT64_C(0x9E3779B97F4A7C15);
    s += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ fmix(v)) * UINT64_C(0x9E3779B97F4A7C15);
  }
  return fmix(h);
}

static uint64_t hptrs(const void *a, const void *b) {
  return fmix((uint64_t)(uintptr_t)a * UINT64_C(0x9E3779B97F4A7C15) ^
              fmix((uint64_t)(uintptr_t)b));
}

/* Chained table of intrusive nodes; callers walk the chain themselves so
** every table compares its own way without callbacks. */
typedef struct hnode {
  struct hnode *next;
  uint64_t hash;
} hnode;

typedef struct htab {
  hnode **slot;
  size_t mask;
  size_t count;
} htab;

#define HTAB_MIN 16

static int htab_init(hm_router_t *r, htab *t) {
  t->slot = ralloc(r, HTAB_MIN * sizeof *t->slot);
  if (!t->slot) return -1;
  memset(t->slot, 0, HTAB_MIN * sizeof *t->slot);
  t->mask = HTAB_MIN - 1;
  t->count = 0;
  return 0;
}

static hnode *htab_chain(const htab *t, uint64_t h) {
  return t->slot[h & t->mask];
}

/* A failed resize keeps the old array: the table stays correct, only its
** chains get longer. */
static void htab_resize(hm_router_t *r, htab *t, size_t cap) {
  hnode **slot = ralloc(r, cap * sizeof *slot);
  if (!slot) return;
  memset(slot, 0, cap * sizeof *slot);
  for (size_t i = 0; i <= t->mask; i++) {
    hnode *n = t->slot[i];
    while (n) {
      hnode *next = n->next;
      n->next = slot[n->hash & (cap - 1)];
      slot[n->hash & (cap - 1)] = n;
      n = next;
    }
  }
  rfree(r, t->slot, (t->mask + 1) * sizeof *t->slot);
  t->slot = slot;
  t->mask = cap - 1;
}

static void htab_insert(hm_router_t *r, htab *t, hnode *n, uint64_t h) {
  if (t->count >= t->mask + 1) htab_resize(r, t, (t->mask + 1) * 2);
  n->hash = h;
  n->next = t->slot[h & t->mask];
  t->slot[h & t->mask] = n;
  t->count++;
}

static void htab_remove(hm_router_t *r, htab *t, hnode *n) {
  hnode **pp = &t->slot[n->hash & t->mask];
  while (*pp != n) pp = &(*pp)->next;
  *pp = n->next;
  t->count--;
  if (t->mask + 1 > HTAB_MIN && t->count < (t->mask + 1) / 8)
    htab_resize(r, t, (t->mask + 1) / 2);
}

/* }==================================================================== */

/* {====================================================================
** Ordered route sets
** ===================================================================== */

typedef struct olink {
  struct olink *prev, *next;
  hm_route_t *route;
} olink;

/* Routes of one key count, in add order. Insertion mode uses one group
** (depth 0); depth mode one per key count, most keys first. */
typedef struct ogroup {
  size_t depth;
  olink *first, *last;
} ogroup;

typedef struct oset {
  ogroup *g; /* == &one while cap == 1 */
  uint32_t ng, cap;
  ogroup one;
} oset;

static void oset_init(oset *s) {
  s->g = &s->one;
  s->ng = 0;
  s->cap = 1;
}

static void oset_fini(hm_router_t *r, oset *s) {
  if (s->g != &s->one) rfree(r, s->g, s->cap * sizeof *s->g);
  oset_init(s);
}

static uint32_t oset_find(const oset *s, size_t depth) {
  uint32_t i = 0;
  while (i < s->ng && s->g[i].depth > depth) i++;
  return i;
}

/* Makes sure oset_add for `depth` cannot need memory. */
static int oset_reserve(hm_router_t *r, oset *s, size_t depth) {
  uint32_t i = oset_find(s, depth);
  if ((i < s->ng && s->g[i].depth == depth) || s->ng < s->cap) return 0;
  uint32_t cap = s->cap * 2;
  ogroup *g = ralloc(r, cap * sizeof *g);
  if (!g) return -1;
  memcpy(g, s->g, s->ng * sizeof *g);
  if (s->g != &s->one) rfree(r, s->g, s->cap * sizeof *s->g);
  s->g = g;
  s->cap = cap;
  return 0;
}

/* Routes arrive in add order, so appending keeps each group sorted. */
static void oset_add(oset *s, olink *l, size_t depth) {
  uint32_t i = oset_find(s, depth);
  if (i == s->ng || s->g[i].depth != depth) {
    memmove(&s->g[i + 1], &s->g[i], (s->ng - i) * sizeof *s->g);
    s->g[i].depth = depth;
    s->g[i].first = s->g[i].last = NULL;
    s->ng++;
  }
  ogroup *g = &s->g[i];
  l->next = NULL;
  l->prev = g->last;
  if (g->last)
    g->last->next = l;
  else
    g->first = l;
  g->last = l;
}

static void oset_del(oset *s, olink *l, size_t depth) {
  uint32_t i = oset_find(s, depth);
  ogroup *g = &s->g[i];
  if (l->prev)
    l->prev->next = l->next;
  else
    g->first = l->next;
  if (l->next)
    l->next->prev = l->prev;
  else
    g->last = l->prev;
  if (!g->first) {
    memmove(&s->g[i], &s->g[i + 1], (s->ng - i - 1) * sizeof *s->g);
    s->ng--;
  }
}

/* }==================================================================== */

/* {====================================================================
** Types
** ===================================================================== */

enum { K_PLAIN, K_REGEX, K_WILD };

typedef struct fx {
  pcre2_code *re; /* K_REGEX */
  int kind;
} fx;

typedef struct key {
  hnode h;
  size_t refs; /* buckets using this key */
  uint64_t id;
  size_t len;
  char s[];
} key;

typedef struct bucket {
  hnode h;
  key *k;
  oset set; /* of pair links */
  size_t vlen;
  char v[];
} bucket;

typedef struct node {
  hnode h; /* in r->edges, keyed by (parent, edge) */
  struct node *parent;
  bucket *edge;
  size_t nchild;
  /* A bit per child edge (hashed); stale bits only cost a probe. It
  ** spares most failing probes the trip to the big edge table. */
  uint64_t cmask;
  oset set; /* of route nlinks */
} node;

typedef struct topic {
  hnode h;
  hm_route_t *first;
  size_t n;
  size_t len;
  char s[];
} topic;

typedef struct pair {
  olink link; /* first member: a bucket head link is its pair */
  bucket *b;
  uint32_t fidx;
} pair;

struct hm_route {
  olink nlink; /* in node->set */
  hm_route_t *prev, *next;   /* every route, in add order */
  hm_route_t *tprev, *tnext; /* routes of the same topic */
  topic *t;
  node *nd;
  void *udata;
  uint64_t seq;
  uint64_t major; /* depth mode: UINT64_MAX - nfields; else 0 */
  size_t nfields, npairs;
  hm_field *fields;
  fx *fx;
  pair *pairs; /* the indexed fields, sorted by key id */
  size_t size; /* of this allocation */
};

struct hm_router {
  hm_indexing indexing;
  size_t mem;
  size_t count;
  uint64_t seq, keyseq;
  htab keys, buckets, edges, topics;
  node root;
  hm_route_t *first, *last;
  pcre2_compile_context *cctx;
  pcre2_match_context *mctx;
  pcre2_match_data *md;
  char err[256];
};

static void *ralloc(hm_router_t *r, size_t n) {
  void *p = malloc(n);
  if (p) r->mem += n;
  return p;
}

static void rfree(hm_router_t *r, void *p, size_t n) {
  if (!p) return;
  r->mem -= n;
  free(p);
}

/* The order of routes inside a bucket or a node. */
typedef struct okey {
  uint64_t major, seq;
  uint32_t fidx;
} okey;

static int okey_cmp(const okey *a, const okey *b) {
  if (a->major != b->major) return a->major < b->major ? -1 : 1;
  if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
  if (a->fidx != b->fidx) return a->fidx < b->fidx ? -1 : 1;
  return 0;
}

static okey route_key(const hm_route_t *rt) {
  okey k = {rt->major, rt->seq, 0};
  return k;
}

static okey bucket_key(const bucket *b) {
  const pair *p = (const pair *)b->set.g[0].first;
  okey k = {p->link.route->major, p->link.route->seq, p->fidx};
  return k;
}

/* The key of the first-scanned bucket among a node's path. */
static okey node_key(const node *nd) {
  okey best = bucket_key(nd->edge);
  for (nd = nd->parent; nd->parent; nd = nd->parent) {
    okey k = bucket_key(nd->edge);
    if (okey_cmp(&k, &best) < 0) best = k;
  }
  return best;
}

/* }==================================================================== */

/* {====================================================================
** Keys, buckets, trie edges, topics
** ===================================================================== */

#define SEED_KEY UINT64_C(0x243F6A8885A308D3)
#define SEED_VAL UINT64_C(0x13198A2E03707344)
#define SEED_TOPIC UINT64_C(0xA4093822299F31D0)

static key *key_find(const hm_router_t *r, const char *s, size_t len,
                     uint64_t h) {
  for (hnode *n = htab_chain(&r->keys, h); n; n = n->next) {
    key *k = (key *)n;
    if (n->hash == h && k->len == len && (len == 0 || !memcmp(k->s, s, len)))
      return k;
  }
  return NULL;
}

static uint64_t bucket_hash(const key *k, const char *v, size_t vlen) {
  return fmix(k->id * UINT64_C(0x9E3779B97F4A7C15) ^
              hbytes(v, vlen, SEED_VAL));
}

static bucket *bucket_find(const hm_router_t *r, const key *k, const char *v,
                           size_t vlen, uint64_t h) {
  for (hnode *n = htab_chain(&r->buckets, h); n; n = n->next) {
    bucket *b = (bucket *)n;
    if (n->hash == h && b->k == k && b->vlen == vlen &&
        (vlen == 0 || !memcmp(b->v, v, vlen)))
      return b;
  }
  return NULL;
}

/* Finds or makes the bucket; a new one is empty until a route joins. */
static bucket *bucket_get(hm_router_t *r, const char *ks, size_t klen,
                          const char *v, size_t vlen) {
  uint64_t kh = hbytes(ks, klen, SEED_KEY);
  key *k = key_find(r, ks, klen, kh);
  if (k) {
    uint64_t h = bucket_hash(k, v, vlen);
    bucket *b = bucket_find(r, k, v, vlen, h);
    if (b) return b;
  } else {
    k = ralloc(r, sizeof *k + klen + 1);
    if (!k) return NULL;
    k->refs = 0;
    k->id = r->keyseq++;
    k->len = klen;
    if (klen) memcpy(k->s, ks, klen);
    k->s[klen] = '\0';
    htab_insert(r, &r->keys, &k->h, kh);
  }
  bucket *b = ralloc(r, sizeof *b + vlen + 1);
  if (!b) {
    if (k->refs == 0) {
      htab_remove(r, &r->keys, &k->h);
      rfree(r, k, sizeof *k + k->len + 1);
    }
    return NULL;
  }
  b->k = k;
  k->refs++;
  oset_init(&b->set);
  b->vlen = vlen;
  if (vlen) memcpy(b->v, v, vlen);
  b->v[vlen] = '\0';
  htab_insert(r, &r->buckets, &b->h, bucket_hash(k, v, vlen));
  return b;
}

static void bucket_release(hm_router_t *r, bucket *b) {
  if (b->set.ng) return;
  key *k = b->k;
  htab_remove(r, &r->buckets, &b->h);
  oset_fini(r, &b->set);
  rfree(r, b, sizeof *b + b->vlen + 1);
  if (--k->refs == 0) {
    htab_remove(r, &r->keys, &k->h);
    rfree(r, k, sizeof *k + k->len + 1);
  }
}

static uint64_t cbit(const bucket *b) {
  return UINT64_C(1) << (fmix((uint64_t)(uintptr_t)b) & 63);
}

static node *edge_find(const hm_router_t *r, const node *parent,
                       const bucket *b) {
  if (!(parent->cmask & cbit(b))) return NULL;
  uint64_t h = hptrs(parent, b);
  for (hnode *n = htab_chain(&r->edges, h); n; n = n->next) {
    node *c = (node *)n;
    if (n->hash == h && c->parent == parent && c->edge == b) return c;
  }
  return NULL;
}

static node *edge_get(hm_router_t *r, node *parent, bucket *b) {
  node *c = edge_find(r, parent, b);
  if (c) return c;
  c = ralloc(r, sizeof *c);
  if (!c) return NULL;
  c->parent = parent;
  c->edge = b;
  c->nchild = 0;
  c->cmask = 0;
  oset_init(&c->set);
  parent->nchild++;
  parent->cmask |= cbit(b);
  htab_insert(r, &r->edges, &c->h, hptrs(parent, b));
  return c;
}

/* Frees the node and its ancestors while they lead to no route. */
static void node_prune(hm_router_t *r, node *nd) {
  while (nd->parent && nd->set.ng == 0 && nd->nchild == 0) {
    node *parent = nd->parent;
    htab_remove(r, &r->edges, &nd->h);
    oset_fini(r, &nd->set);
    rfree(r, nd, sizeof *nd);
    if (--parent->nchild == 0) parent->cmask = 0;
    nd = parent;
  }
}

static topic *topic_find(const hm_router_t *r, const char *s, size_t len) {
  uint64_t h = hbytes(s, len, SEED_TOPIC);
  for (hnode *n = htab_chain(&r->topics, h); n; n = n->next) {
    topic *t = (topic *)n;
    if (n->hash == h && t->len == len && (len == 0 || !memcmp(t->s, s, len)))
      return t;
  }
  return NULL;
}

static topic *topic_get(hm_router_t *r, const char *s, size_t len) {
  topic *t = topic_find(r, s, len);
  if (t) return t;
  t = ralloc(r, sizeof *t + len + 1);
  if (!t) return NULL;
  t->first = NULL;
  t->n = 0;
  t->len = len;
  if (len) memcpy(t->s, s, len);
  t->s[len] = '\0';
  htab_insert(r, &r->topics, &t->h, hbytes(s, len, SEED_TOPIC));
  return t;
}

static void topic_release(hm_router_t *r, topic *t) {
  if (t->n) return;
  htab_remove(r, &r->topics, &t->h);
  rfree(r, t, sizeof *t + t->len + 1);
}

/* }==================================================================== */

/* {====================================================================
** Values
** ===================================================================== */

static int is_topic(const hm_field *f) {
  return f->type == HM_VAL_STRING && f->key_len == 5 &&
         !memcmp(f->key, "topic", 5);
}

/* A subject is a wildcard when a whole token is `*` or `>`. */
static int is_wild(const char *s, size_t len) {
  size_t i = 0;
  for (;;) {
    size_t e = i;
    while (e < len && s[e] != '.') e++;
    if (e - i == 1 && (s[i] == '*' || s[i] == '>')) return 1;
    if (e >= len) return 0;
    i = e + 1;
  }
}

/* NATS rules, token by token: `*` takes one token, a last `>` takes one or
** more; a `>` elsewhere is an ordinary token, as nats-server treats it. */
static int subject_match(const char *p, size_t plen, const char *s,
                         size_t slen) {
  size_t pi = 0, si = 0;
  for (;;) {
    size_t pe = pi, se = si;
    while (pe < plen && p[pe] != '.') pe++;
    while (se < slen && s[se] != '.') se++;
    int plast = pe >= plen, slast = se >= slen;
    size_t pn = pe - pi;
    if (pn == 1 && p[pi] == '>' && plast) return 1;
    if (!(pn == 1 && p[pi] == '*') &&
        (pn != se - si || (pn && memcmp(p + pi, s + si, pn))))
      return 0;
    if (plast || slast) return plast && slast;
    pi = pe + 1;
    si = se + 1;
  }
}

/* The value as JavaScript's String() prints it; NULL for a regex. */
static const char *jsstr(const hm_field *f, char *buf, size_t *len) {
  switch (f->type) {
    case HM_VAL_STRING:
      *len = f->str_len;
      return f->str_len ? f->str : "";
    case HM_VAL_NUMBER:
      *len = hm_jsnum_format(f->num, buf);
      return buf;
    case HM_VAL_BOOLEAN:
      *len = f->boolean ? 4 : 5;
      return f->boolean ? "true" : "false";
    default:
      return NULL;
  }
}

static int plain_equal(const hm_field *a, const hm_field *b) {
  if (a->type != b->type) return 0;
  switch (a->type) {
    case HM_VAL_STRING:
      return a->str_len == b->str_len &&
             (a->str_len == 0 || !memcmp(a->str, b->str, a->str_len));
    case HM_VAL_NUMBER:
      return a->num == b->num;
    case HM_VAL_BOOLEAN:
      return !a->boolean == !b->boolean;
    default:
      return 0;
  }
}

static int value_match(const hm_router_t *r, const hm_field *f, const fx *x,
                       const hm_field *q) {
  char buf[HM_JSNUM_BUFSIZE];
  size_t len = 0;
  const char *s;
  switch (x->kind) {
    case K_PLAIN:
      return plain_equal(f, q);
    case K_REGEX:
      if (q->type == HM_VAL_REGEX)
        return f->str_len == q->str_len &&
               (f->str_len == 0 || !memcmp(f->str, q->str, f->str_len));
      s = jsstr(q, buf, &len);
      return s && pcre2_match(x->re, (PCRE2_SPTR)s, len, 0, 0, r->md,
                              r->mctx) >= 0;
    default: /* K_WILD */
      s = jsstr(q, buf, &len);
      return s && subject_match(f->str, f->str_len, s, len);
  }
}

static const hm_field *req_field(const hm_field *req, size_t n,
                                 const hm_field *f) {
  for (size_t i = 0; i < n; i++)
    if (req[i].key_len == f->key_len &&
        (f->key_len == 0 || !memcmp(req[i].key, f->key, f->key_len)))
      return &req[i];
  return NULL;
}

/* `path` maps the route's pairs to request fields when the trie walk
** already paired them (their String() forms are known equal); NULL means
** look every key up. */
static int route_match(const hm_router_t *r, const hm_route_t *rt,
                       const hm_field *req, size_t n, const size_t *path) {
  if (path) {
    for (size_t i = 0; i < rt->npairs; i++)
      if (!plain_equal(&rt->fields[rt->pairs[i].fidx], &req[path[i]]))
        return 0;
  }
  for (size_t i = 0; i < rt->nfields; i++) {
    if (path && rt->fx[i].kind == K_PLAIN) continue;
    const hm_field *q = req_field(req, n, &rt->fields[i]);
    if (!q || !value_match(r, &rt->fields[i], &rt->fx[i], q)) return 0;
  }
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Router lifecycle
** ===================================================================== */

hm_status hm_router_new(hm_indexing indexing, hm_router_t **out) {
  *out = NULL;
  if (indexing != HM_INDEX_INSERTION && indexing != HM_INDEX_DEPTH)
    return HM_INVAL;
  hm_router_t *r = calloc(1, sizeof *r);
  if (!r) return HM_NOMEM;
  r->mem = sizeof *r;
  r->indexing = indexing;
  oset_init(&r->root.set);
  if (htab_init(r, &r->keys) || htab_init(r, &r->buckets) ||
      htab_init(r, &r->edges) || htab_init(r, &r->topics))
    goto nomem;
  r->cctx = pcre2_compile_context_create(NULL);
  r->mctx = pcre2_match_context_create(NULL);
  /* One ovector pair is enough: we only ask whether there is a match. */
  r->md = pcre2_match_data_create(1, NULL);
  if (!r->cctx || !r->mctx || !r->md) goto nomem;
  /* JavaScript's `.` stops at \r as well as \n. */
  pcre2_set_newline(r->cctx, PCRE2_NEWLINE_ANYCRLF);
  /* A request value must not be able to stall the loop thread. */
  pcre2_set_match_limit(r->mctx, 1000000);
  *out = r;
  return HM_OK;
nomem:
  hm_router_free(r, NULL, NULL);
  return HM_NOMEM;
}

static void route_destroy(hm_router_t *r, hm_route_t *rt) {
  for (size_t i = 0; i < rt->nfields; i++)
    if (rt->fx[i].re) {
      size_t sz = 0;
      pcre2_pattern_info(rt->fx[i].re, PCRE2_INFO_SIZE, &sz);
      r->mem -= sz;
      pcre2_code_free(rt->fx[i].re);
    }
  rfree(r, rt, rt->size);
}

static void htab_clear(hm_router_t *r, htab *t, void (*fn)(hm_router_t *,
                                                           hnode *)) {
  if (!t->slot) return;
  for (size_t i = 0; i <= t->mask; i++) {
    hnode *n = t->slot[i];
    while (n) {
      hnode *next = n->next;
      fn(r, n);
      n = next;
    }
  }
  rfree(r, t->slot, (t->mask + 1) * sizeof *t->slot);
  t->slot = NULL;
}

static void free_key(hm_router_t *r, hnode *n) {
  key *k = (key *)n;
  rfree(r, k, sizeof *k + k->len + 1);
}

static void free_bucket(hm_router_t *r, hnode *n) {
  bucket *b = (bucket *)n;
  oset_fini(r, &b->set);
  rfree(r, b, sizeof *b + b->vlen + 1);
}

static void free_node(hm_router_t *r, hnode *n) {
  node *nd = (node *)n;
  oset_fini(r, &nd->set);
  rfree(r, nd, sizeof *nd);
}

static void free_topic(hm_router_t *r, hnode *n) {
  topic *t = (topic *)n;
  rfree(r, t, sizeof *t + t->len + 1);
}

void hm_router_free(hm_router_t *r, void (*each)(void *udata, void *arg),
                    void *arg) {
  if (!r) return;
  hm_route_t *rt = r->first;
  while (rt) {
    hm_route_t *next = rt->next;
    if (each) each(rt->udata, arg);
    route_destroy(r, rt);
    rt = next;
  }
  htab_clear(r, &r->edges, free_node);
  htab_clear(r, &r->buckets, free_bucket);
  htab_clear(r, &r->keys, free_key);
  htab_clear(r, &r->topics, free_topic);
  oset_fini(r, &r->root.set);
  pcre2_match_data_free(r->md);
  pcre2_match_context_free(r->mctx);
  pcre2_compile_context_free(r->cctx);
  free(r);
}

/* }==================================================================== */

/* {====================================================================
** Add and remove
** ===================================================================== */

static int cmp_fieldp(const void *a, const void *b) {
  const hm_field *x = *(const hm_field *const *)a;
  const hm_field *y = *(const hm_field *const *)b;
  size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c = n ? memcmp(x->key, y->key, n) : 0;
  if (c) return c;
  return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* printf arguments for "%.*s" naming a field's key in an error. */
#define SHOWKEY(f) \
  (int)((f)->key_len > 64 ? 64 : (f)->key_len), ((f)->key ? (f)->key : "")

static hm_status check_fields(hm_router_t *r, const hm_field *fields,
                              size_t n) {
  if (n && !fields) {
    snprintf(r->err, sizeof r->err, "fields missing");
    return HM_INVAL;
  }
  /* Field positions are kept in 32 bits; no real pattern comes close. */
  if (n > 65536) {
    snprintf(r->err, sizeof r->err, "too many fields (%zu)", n);
    return HM_LIMIT;
  }
  for (size_t i = 0; i < n; i++) {
    const hm_field *f = &fields[i];
    if (f->key_len && !f->key) {
      snprintf(r->err, sizeof r->err, "field %zu has no key", i);
      return HM_INVAL;
    }
    if (f->type < HM_VAL_STRING || f->type > HM_VAL_REGEX) {
      snprintf(r->err, sizeof r->err, "field '%.*s' has an unknown type",
               SHOWKEY(f));
      return HM_INVAL;
    }
    if ((f->type == HM_VAL_STRING || f->type == HM_VAL_REGEX) &&
        f->str_len && !f->str) {
      snprintf(r->err, sizeof r->err, "field '%.*s' has no string",
               SHOWKEY(f));
      return HM_INVAL;
    }
  }
  if (n < 2) return HM_OK;
  const hm_field **ord = malloc(n * sizeof *ord);
  if (!ord) return HM_NOMEM;
  for (size_t i = 0; i < n; i++) ord[i] = &fields[i];
  qsort(ord, n, sizeof *ord, cmp_fieldp);
  hm_status st = HM_OK;
  for (size_t i = 1; i < n; i++)
    if (!cmp_fieldp(&ord[i - 1], &ord[i])) {
      snprintf(r->err, sizeof r->err, "duplicate key '%.*s'",
               SHOWKEY(ord[i]));
      st = HM_INVAL;
      break;
    }
  free(ord);
  return st;
}

#define ALIGNUP(x) (((x) + alignof(max_align_t) - 1) & \
                    ~(alignof(max_align_t) - 1))

static int cmp_pair(const void *a, const void *b) {
  const pair *x = a, *y = b;
  return x->b->k->id < y->b->k->id ? -1 : x->b->k->id > y->b->k->id;
}

/* Undoes a half-built add: nothing is linked yet, so this only drops the
** nodes, buckets and topic that were made for this route and are empty. */
static void add_unwind(hm_router_t *r, hm_route_t *rt, node *nd, topic *t) {
  if (nd) node_prune(r, nd);
  for (size_t i = 0; i < rt->npairs; i++)
    if (rt->pairs[i].b) bucket_release(r, rt->pairs[i].b);
  if (t) topic_release(r, t);
  route_destroy(r, rt);
}

hm_status hm_router_add(hm_router_t *r, const hm_field *fields, size_t n,
                        void *udata, hm_route_t **out) {
  if (out) *out = NULL;
  hm_status st = check_fields(r, fields, n);
  if (st != HM_OK) return st;

  size_t npairs = 0, strbytes = 0;
  for (size_t i = 0; i < n; i++) {
    const hm_field *f = &fields[i];
    strbytes += f->key_len + 1;
    if (f->type == HM_VAL_STRING || f->type == HM_VAL_REGEX)
      strbytes += f->str_len + 1;
    if (f->type != HM_VAL_REGEX && !(is_topic(f) && is_wild(f->str,
                                                            f->str_len)))
      npairs++;
  }
  size_t off_fields = ALIGNUP(sizeof(hm_route_t));
  size_t off_fx = ALIGNUP(off_fields + n * sizeof(hm_field));
  size_t off_pairs = ALIGNUP(off_fx + n * sizeof(fx));
  size_t off_str = off_pairs + npairs * sizeof(pair);
  size_t size = off_str + strbytes;
  hm_route_t *rt = ralloc(r, size);
  if (!rt) return HM_NOMEM;
  memset(rt, 0, off_str);
  rt->size = size;
  rt->udata = udata;
  rt->nfields = n;
  rt->npairs = npairs;
  rt->fields = (hm_field *)((char *)rt + off_fields);
  rt->fx = (fx *)((char *)rt + off_fx);
  rt->pairs = (pair *)((char *)rt + off_pairs);
  rt->major = r->indexing == HM_INDEX_DEPTH ? UINT64_MAX - n : 0;
  rt->nlink.route = rt;

  /* Copy first so every later step reads our own NUL-terminated strings. */
  char *sp = (char *)rt + off_str;
  const hm_field *topicf = NULL;
  for (size_t i = 0; i < n; i++) {
    hm_field *f = &rt->fields[i];
    *f = fields[i];
    if (f->key_len) memcpy(sp, fields[i].key, f->key_len);
    sp[f->key_len] = '\0';
    f->key = sp;
    sp += f->key_len + 1;
    if (f->type == HM_VAL_STRING || f->type == HM_VAL_REGEX) {
      if (f->str_len) memcpy(sp, fields[i].str, f->str_len);
      sp[f->str_len] = '\0';
      f->str = sp;
      sp += f->str_len + 1;
    } else {
      f->str = NULL;
      f->str_len = 0;
    }
    if (f->type == HM_VAL_BOOLEAN) f->boolean = !!f->boolean;
    rt->fx[i].kind = K_PLAIN;
    if (is_topic(f)) {
      topicf = f;
      if (is_wild(f->str, f->str_len)) rt->fx[i].kind = K_WILD;
    }
  }

  for (size_t i = 0; i < n; i++) {
    hm_field *f = &rt->fields[i];
    if (f->type != HM_VAL_REGEX) continue;
    int code;
    PCRE2_SIZE eoff;
    rt->fx[i].kind = K_REGEX;
    rt->fx[i].re = pcre2_compile(
        (PCRE2_SPTR)f->str, f->str_len,
        PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX |
            PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS |
            PCRE2_DOLLAR_ENDONLY,
        &code, &eoff, r->cctx);
    if (!rt->fx[i].re) {
      char msg[160];
      pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
      snprintf(r->err, sizeof r->err,
               "invalid regular expression /%.*s/ for '%.*s': %s at "
               "offset %zu",
               (int)(f->str_len > 64 ? 64 : f->str_len), f->str,
               SHOWKEY(f), msg,
               (size_t)eoff);
      route_destroy(r, rt);
      return code == PCRE2_ERROR_NOMEMORY ? HM_NOMEM : HM_REGEX;
    }
    size_t sz = 0;
    pcre2_pattern_info(rt->fx[i].re, PCRE2_INFO_SIZE, &sz);
    r->mem += sz;
  }

  /* Buckets, trie path and topic, all before linking anything, so a
  ** failure leaves the index as it was. */
  node *nd = NULL;
  topic *t = NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const hm_field *f = &rt->fields[i];
    if (rt->fx[i].kind != K_PLAIN) continue;
    char buf[HM_JSNUM_BUFSIZE];
    size_t vlen = 0;
    const char *v = jsstr(f, buf, &vlen);
    rt->pairs[k].link.route = rt;
    rt->pairs[k].fidx = (uint32_t)i;
    rt->pairs[k].b = bucket_get(r, f->key, f->key_len, v, vlen);
    if (!rt->pairs[k].b) goto nomem;
    k++;
  }
  qsort(rt->pairs, npairs, sizeof *rt->pairs, cmp_pair);
  nd = &r->root;
  for (size_t i = 0; i < npairs; i++) {
    node *c = edge_get(r, nd, rt->pairs[i].b);
    if (!c) goto nomem;
    nd = c;
  }
  size_t depth = r->indexing == HM_INDEX_DEPTH ? n : 0;
  for (size_t i = 0; i < npairs; i++)
    if (oset_reserve(r, &rt->pairs[i].b->set, depth)) goto nomem;
  if (oset_reserve(r, &nd->set, depth)) goto nomem;
  if (topicf && !(t = topic_get(r, topicf->str, topicf->str_len)))
    goto nomem;

  for (size_t i = 0; i < npairs; i++)
    oset_add(&rt->pairs[i].b->set, &rt->pairs[i].link, depth);
  oset_add(&nd->set, &rt->nlink, depth);
  rt->nd = nd;
  if (t) {
    rt->t = t;
    rt->tprev = NULL;
    rt->tnext = t->first;
    if (t->first) t->first->tprev = rt;
    t->first = rt;
    t->n++;
  }
  rt->seq = r->seq++;
  rt->prev = r->last;
  rt->next = NULL;
  if (r->last)
    r->last->next = rt;
  else
    r->first = rt;
  r->last = rt;
  r->count++;
  if (out) *out = rt;
  return HM_OK;

nomem:
  snprintf(r->err, sizeof r->err, "out of memory");
  add_unwind(r, rt, nd, t);
  return HM_NOMEM;
}

void hm_router_remove(hm_router_t *r, hm_route_t *rt) {
  size_t depth = r->indexing == HM_INDEX_DEPTH ? rt->nfields : 0;
  for (size_t i = 0; i < rt->npairs; i++)
    oset_del(&rt->pairs[i].b->set, &rt->pairs[i].link, depth);
  oset_del(&rt->nd->set, &rt->nlink, depth);
  /* Nodes first: their edges name the buckets freed below. */
  node_prune(r, rt->nd);
  for (size_t i = 0; i < rt->npairs; i++) bucket_release(r, rt->pairs[i].b);
  if (rt->t) {
    topic *t = rt->t;
    if (rt->tprev)
      rt->tprev->tnext = rt->tnext;
    else
      t->first = rt->tnext;
    if (rt->tnext) rt->tnext->tprev = rt->tprev;
    t->n--;
    topic_release(r, t);
  }
  if (rt->prev)
    rt->prev->next = rt->next;
  else
    r->first = rt->next;
  if (rt->next)
    rt->next->prev = rt->prev;
  else
    r->last = rt->prev;
  r->count--;
  route_destroy(r, rt);
}

size_t hm_router_remove_topic(hm_router_t *r, const char *s, size_t len,
                              void (*each)(void *udata, void *arg),
                              void *arg) {
  topic *t = topic_find(r, len ? s : "", len);
  if (!t) return 0;
  /* The last removal frees t, so count first and never look back. */
  size_t n = t->n;
  for (size_t i = 0; i < n; i++) {
    hm_route_t *rt = t->first;
    if (each) each(rt->udata, arg);
    hm_router_remove(r, rt);
  }
  return n;
}

/* }==================================================================== */

/* {====================================================================
** Lookup
** ===================================================================== */

typedef struct rq {
  bucket *b;
  size_t idx; /* request field */
} rq;

typedef struct hit {
  hm_route_t *rt;
  okey g; /* its first-scanned bucket */
} hit;

typedef struct lctx {
  const hm_router_t *r;
  const hm_field *req;
  size_t n;
  rq *e;
  size_t ne;
  size_t *path;
  int all;
  /* first match; bestg is computed only once a rival needs it */
  hm_route_t *best;
  okey bestg;
  int bestg_ok;
  /* every match */
  hit *hits;
  size_t nhits, caphits;
  int oom;
  /* Only routes of this topic count (hm_router_lookup_topic), or NULL. */
  const topic *only;
} lctx;

/* Whether a route may be returned by this lookup at all: the topic
** restriction is a pointer compare, since topics are interned. */
#define ADMITS(c, rt) ((c)->only == NULL || (rt)->t == (c)->only)

static int cmp_hit(const void *a, const void *b) {
  const hit *x = a, *y = b;
  int c = okey_cmp(&x->g, &y->g);
  if (c) return c;
  okey kx = route_key(x->rt), ky = route_key(y->rt);
  return okey_cmp(&kx, &ky);
}

static void push_hit(lctx *c, hm_route_t *rt, okey g) {
  if (c->nhits == c->caphits) {
    size_t cap = c->caphits ? c->caphits * 2 : 16;
    hit *h = realloc(c->hits, cap * sizeof *h);
    if (!h) {
      c->oom = 1;
      return;
    }
    c->hits = h;
    c->caphits = cap;
  }
  c->hits[c->nhits].rt = rt;
  c->hits[c->nhits].g = g;
  c->nhits++;
}

/* Bucket keys read scattered heads, so a node's key is only worked out
** when there is something to compare it with: usually a lookup has a
** single candidate node and never needs one. */
static void visit_node(lctx *c, const node *nd) {
  okey g = {0, 0, 0};
  int g_ok = 0;
  if (!c->all && c->best) {
    if (!c->bestg_ok) {
      c->bestg = node_key(c->best->nd);
      c->bestg_ok = 1;
    }
    g = node_key(nd);
    g_ok = 1;
    if (okey_cmp(&g, &c->bestg) > 0) return;
  }
  for (uint32_t i = 0; i < nd->set.ng; i++)
    for (const olink *l = nd->set.g[i].first; l; l = l->next) {
      hm_route_t *rt = l->route;
      if (!c->all && c->best && okey_cmp(&g, &c->bestg) == 0) {
        okey a = route_key(rt), b = route_key(c->best);
        if (okey_cmp(&a, &b) >= 0) return;
      }
      if (!ADMITS(c, rt) || !route_match(c->r, rt, c->req, c->n, c->path))
        continue;
      if (!g_ok && c->all) {
        g = node_key(nd);
        g_ok = 1;
      }
      if (c->all) {
        push_hit(c, rt, g);
      } else {
        c->best = rt;
        c->bestg = g;
        c->bestg_ok = g_ok;
        return;
      }
    }
}

/* Walks the trie along the request's buckets (sorted by key id like the
** paths), so only nodes whose whole path is in the request are reached. */
static void walk(lctx *c, const node *nd, size_t start, size_t depth) {
  for (size_t i = start; i < c->ne; i++) {
    const node *ch = edge_find(c->r, nd, c->e[i].b);
    if (!ch) continue;
    c->path[depth] = c->e[i].idx;
    if (ch->set.ng) visit_node(c, ch);
    if (ch->nchild) walk(c, ch, i + 1, depth + 1);
  }
}

static int cmp_rq(const void *a, const void *b) {
  const rq *x = a, *y = b;
  return x->b->k->id < y->b->k->id ? -1 : x->b->k->id > y->b->k->id;
}

/* Fills c->e with the request's existing buckets, sorted by key id.
** Returns -1 when the scratch arrays cannot be had. */
static int collect(lctx *c, rq *ebuf, size_t *pbuf, size_t cap) {
  const hm_router_t *r = c->r;
  if (c->n > cap) {
    c->e = malloc(c->n * sizeof *c->e);
    c->path = malloc(c->n * sizeof *c->path);
    if (!c->e || !c->path) return -1;
  } else {
    c->e = ebuf;
    c->path = pbuf;
  }
  c->ne = 0;
  for (size_t i = 0; i < c->n; i++) {
    const hm_field *q = &c->req[i];
    char buf[HM_JSNUM_BUFSIZE];
    size_t vlen = 0;
    const char *v = jsstr(q, buf, &vlen);
    if (!v) continue; /* a request regex only equals a stored regex */
    key *k = key_find(r, q->key_len ? q->key : "", q->key_len,
                      hbytes(q->key, q->key_len, SEED_KEY));
    if (!k) continue;
    bucket *b = bucket_find(r, k, v, vlen, bucket_hash(k, v, vlen));
    if (!b) continue;
    c->e[c->ne].b = b;
    c->e[c->ne].idx = i;
    c->ne++;
  }
  if (c->ne > 1) {
    if (c->ne <= 16) {
      for (size_t i = 1; i < c->ne; i++) {
        rq x = c->e[i];
        size_t j = i;
        while (j > 0 && c->e[j - 1].b->k->id > x.b->k->id) {
          c->e[j] = c->e[j - 1];
          j--;
        }
        c->e[j] = x;
      }
    } else {
      qsort(c->e, c->ne, sizeof *c->e, cmp_rq);
    }
  }
  return 0;
}

static void release(lctx *c, rq *ebuf, size_t *pbuf) {
  if (c->e != ebuf) free(c->e);
  if (c->path != pbuf) free(c->path);
  free(c->hits);
}

/* Without a usable trie walk (no request, or no scratch memory) every
** indexed route is a candidate; same order, linear time. */
static void scan_all(lctx *c) {
  for (hm_route_t *rt = c->r->first; rt; rt = rt->next) {
    if (rt->nd == &c->r->root || !ADMITS(c, rt)) continue;
    if (c->n && !route_match(c->r, rt, c->req, c->n, NULL)) continue;
    okey g = node_key(rt->nd);
    if (c->all) {
      push_hit(c, rt, g);
      continue;
    }
    if (c->best) {
      int d = okey_cmp(&g, &c->bestg);
      okey a = route_key(rt), b = route_key(c->best);
      if (d > 0 || (d == 0 && okey_cmp(&a, &b) > 0)) continue;
    }
    c->best = rt;
    c->bestg = g;
    c->bestg_ok = 1;
  }
}

#define SCRATCH 32
/* Topics of at most this many routes are searched by trying each. */
#define FEW_ROUTES 4

/* A lookup with no field at all matches nothing: Hemera's router returned
** its first route for an empty pattern, which let a crafted `{}` reach any
** handler. */
static void *lookup(const hm_router_t *r, const hm_field *req, size_t n,
                    const topic *only) {
  rq ebuf[SCRATCH];
  size_t pbuf[SCRATCH];
  lctx c = {0};
  if (n == 0) return NULL;
  /* A subscription's topic usually holds a few patterns, and a request
  ** matches one of them: then it is the answer whatever the order rules
  ** say, and checking each costs less than hashing the request's pairs.
  ** Two matches go to the walk, which knows their order. */
  if (only && only->n <= FEW_ROUTES) {
    const hm_route_t *one = NULL;
    const hm_route_t *rt;
    for (rt = only->first; rt; rt = rt->tnext)
      if (route_match(r, rt, req, n, NULL)) {
        if (one) break;
        one = rt;
      }
    if (rt == NULL) return one ? one->udata : NULL;
  }
  c.r = r;
  c.req = req;
  c.n = n;
  c.only = only;
  if (collect(&c, ebuf, pbuf, SCRATCH))
    scan_all(&c);
  else if (r->root.nchild)
    walk(&c, &r->root, 0, 0);
  release(&c, ebuf, pbuf);
  if (c.best) return c.best->udata;
  const oset *s = &r->root.set;
  for (uint32_t i = 0; i < s->ng; i++)
    for (const olink *l = s->g[i].first; l; l = l->next)
      if (ADMITS(&c, l->route) && route_match(r, l->route, req, n, NULL))
        return l->route->udata;
  return NULL;
}

void *hm_router_lookup(const hm_router_t *r, const hm_field *req, size_t n) {
  return lookup(r, req, n, NULL);
}

void *hm_router_lookup_topic(const hm_router_t *r, const hm_field *req,
                             size_t n, const char *name, size_t len) {
  const topic *t = topic_find(r, len ? name : "", len);
  return t ? lookup(r, req, n, t) : NULL;
}

void hm_router_lookup_all(const hm_router_t *r, const hm_field *req, size_t n,
                          int (*fn)(hm_route_t *route, void *udata, void *arg),
                          void *arg) {
  rq ebuf[SCRATCH];
  size_t pbuf[SCRATCH];
  lctx c = {0};
  c.r = r;
  c.req = req;
  c.n = n;
  c.all = 1;
  if (n == 0 || collect(&c, ebuf, pbuf, SCRATCH))
    scan_all(&c);
  else if (r->root.nchild)
    walk(&c, &r->root, 0, 0);
  if (c.nhits > 1) qsort(c.hits, c.nhits, sizeof *c.hits, cmp_hit);
  int stop = 0;
  for (size_t i = 0; i < c.nhits && !stop; i++)
    stop = fn(c.hits[i].rt, c.hits[i].rt->udata, arg);
  release(&c, ebuf, pbuf);
  const oset *s = &r->root.set;
  for (uint32_t i = 0; i < s->ng && !stop; i++)
    for (olink *l = s->g[i].first; l && !stop; l = l->next)
      if (n == 0 || route_match(r, l->route, req, n, NULL))
        stop = fn(l->route, l->route->udata, arg);
}

/* }==================================================================== */

size_t hm_router_count(const hm_router_t *r) { return r->count; }

void *hm_route_udata(const hm_route_t *route) { return route->udata; }

const hm_field *hm_route_fields(const hm_route_t *route, size_t *n) {
  if (n) *n = route->nfields;
  return route->fields;
}

size_t hm_router_memory(const hm_router_t *r) { return r->mem; }

const char *hm_router_error(const hm_router_t *r) { return r->err; }
