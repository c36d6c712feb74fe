/*
** fuzz_router.c: hm_router against hm_router_naive, both indexing modes.
**
** The input is a program over a small alphabet so that collisions (same
** key, same String() value, overlapping wildcards) are common:
**   op byte % 8: 0-2 add, 3 remove, 4 remove_topic, 5-7 lookup
**   add:    slot byte, then a pattern
**   remove: slot byte
**   remove_topic: topic byte
**   lookup: a pattern (which may carry regex values)
**   pattern: key-mask byte (5 keys), then one value byte per key
** At most NSLOT routes live at once (an add into a taken slot removes the
** old route first), which keeps the quadratic reference fast. Any
** difference aborts, lookups restricted to one topic included.
**
** hmcore needs coverage instrumentation too, or libFuzzer is blind:
**   CC=clang cmake -S . -B /tmp/fz -DHM_FUZZ=ON \
**     -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link,address,undefined
**   cmake --build /tmp/fz --target fuzz_router
**   /tmp/fz/fuzz_router -max_total_time=60 fuzz/corpus/router
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm_router.h"
#include "hm_router_naive.h"

#define NSLOT 32

static const char *keys[] = {"topic", "cmd", "a", "b", "c"};
static const char *strs[] = {"x", "y", "1", "true", "", "x.y", "NaN", "1e+21"};
static const double nums[] = {0.0, -0.0, 1.0, 1.5, 1e21, NAN};
static const char *regexes[] = {"^x",  "y$",  "^1",     ".",      "^$",
                                "ru",  "\\d", "(?:)",   "[]",     "[^]",
                                "^\\u0078$", "^(x|y)$", "^1e\\+", "^N"};
static const char *topics[] = {"x",   "y",     "x.y",   "x.*",   "x.>", ">",
                               "*",   "*.y",   "x.y.z", "x.>.z", "x..y", "",
                               "*.>", "x.*.z", "y.*"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef struct input {
  const uint8_t *p;
  size_t n;
} input;

static int next(input *in, uint8_t *b) {
  if (!in->n) return 0;
  *b = *in->p++;
  in->n--;
  return 1;
}

static hm_field value(const char *k, uint8_t b, int request) {
  hm_field f = {k, strlen(k), HM_VAL_STRING, NULL, 0, 0, 0};
  int topic = !strcmp(k, "topic");
  uint8_t sel = b >> 3;
  switch (b & 7) {
    case 0:
      f.type = HM_VAL_NUMBER;
      f.num = nums[sel % COUNT(nums)];
      break;
    case 1:
      f.type = HM_VAL_BOOLEAN;
      f.boolean = sel & 1;
      break;
    case 2:
    case 3:
      /* Requests carry regexes less often: they only match by source. */
      if (!request || (b & 1)) {
        f.type = HM_VAL_REGEX;
        f.str = regexes[sel % COUNT(regexes)];
        f.str_len = strlen(f.str);
        break;
      }
      /* fall through */
    default:
      f.str = topic ? topics[sel % COUNT(topics)] : strs[sel % COUNT(strs)];
      f.str_len = strlen(f.str);
      break;
  }
  return f;
}

static size_t pattern(input *in, hm_field *f, int request) {
  uint8_t mask, b;
  size_t n = 0;
  if (!next(in, &mask)) return 0;
  for (size_t i = 0; i < COUNT(keys); i++)
    if ((mask >> i) & 1) {
      if (!next(in, &b)) break;
      f[n++] = value(keys[i], b, request);
    }
  /* The top bits rotate the field order: order must never matter. */
  size_t rot = n ? (mask >> 5) % n : 0;
  hm_field tmp[8];
  for (size_t i = 0; i < n; i++) tmp[i] = f[(i + rot) % n];
  memcpy(f, tmp, n * sizeof *f);
  return n;
}

typedef struct side {
  hm_indexing ix;
  hm_router_t *r;
  hm_naive_t *nv;
  hm_route_t *h[NSLOT];
} side;

typedef struct list {
  void *u[NSLOT + 1];
  size_t n;
} list;

static int col(hm_route_t *route, void *udata, void *arg) {
  list *l = arg;
  (void)route;
  if (l->n > NSLOT) abort();
  l->u[l->n++] = udata;
  return 0;
}

static int coln(void *udata, void *arg) {
  list *l = arg;
  if (l->n > NSLOT) abort();
  l->u[l->n++] = udata;
  return 0;
}

static void forget(void *udata, void *arg) {
  side *s = arg;
  for (int i = 0; i < NSLOT; i++)
    if (s->h[i] && hm_route_udata(s->h[i]) == udata) s->h[i] = NULL;
}

static void check(side *s, const hm_field *q, size_t n) {
  void *a = hm_router_lookup(s->r, q, n);
  void *b = hm_naive_lookup(s->nv, q, n);
  if (a != b) {
    fprintf(stderr, "mode %d: lookup %p, naive %p\n", s->ix, a, b);
    abort();
  }
  list la = {{0}, 0}, lb = {{0}, 0};
  hm_router_lookup_all(s->r, q, n, col, &la);
  hm_naive_lookup_all(s->nv, q, n, coln, &lb);
  if (la.n != lb.n || memcmp(la.u, lb.u, la.n * sizeof *la.u)) {
    fprintf(stderr, "mode %d: lookup_all differs (%zu vs %zu)\n", s->ix,
            la.n, lb.n);
    abort();
  }
  if (n && la.n && la.u[0] != a) abort();
  if (!n && a) abort(); /* no field matches nothing */
  /* Routing restricted to one subscription's topic: the request's own
  ** topic, and one of the dictionary's in turn. */
  static size_t turn;
  const char *t[2] = {NULL, topics[turn++ % COUNT(topics)]};
  for (size_t i = 0; i < n; i++)
    if (q[i].type == HM_VAL_STRING && !strcmp(q[i].key, "topic"))
      t[0] = q[i].str;
  for (int i = 0; i < 2; i++) {
    if (!t[i]) continue;
    size_t tl = strlen(t[i]);
    void *x = hm_router_lookup_topic(s->r, q, n, t[i], tl);
    void *y = hm_naive_lookup_topic(s->nv, q, n, t[i], tl);
    if (x != y) {
      fprintf(stderr, "mode %d: lookup_topic(%s) %p, naive %p\n", s->ix, t[i],
              x, y);
      abort();
    }
  }
}

static void drop(side *s, int slot) {
  void *u = hm_route_udata(s->h[slot]);
  hm_router_remove(s->r, s->h[slot]);
  s->h[slot] = NULL;
  if (!hm_naive_remove(s->nv, u)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  side sides[2] = {{HM_INDEX_INSERTION, NULL, NULL, {0}},
                   {HM_INDEX_DEPTH, NULL, NULL, {0}}};
  for (int i = 0; i < 2; i++)
    if (hm_router_new(sides[i].ix, &sides[i].r) != HM_OK ||
        hm_naive_new(sides[i].ix, &sides[i].nv) != HM_OK)
      abort();
  input in = {data, size};
  uintptr_t tag = 1;
  uint8_t op, b;
  while (next(&in, &op)) {
    hm_field f[8];
    size_t n;
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {
        if (!next(&in, &b)) break;
        int slot = b % NSLOT;
        n = pattern(&in, f, 0);
        for (int i = 0; i < 2; i++) {
          side *s = &sides[i];
          if (s->h[slot]) drop(s, slot);
          hm_status x = hm_router_add(s->r, f, n, (void *)tag, &s->h[slot]);
          hm_status y = hm_naive_add(s->nv, f, n, (void *)tag);
          if (x != y) abort();
        }
        tag++;
        break;
      }
      case 3:
        if (!next(&in, &b)) break;
        for (int i = 0; i < 2; i++)
          if (sides[i].h[b % NSLOT]) drop(&sides[i], b % NSLOT);
        break;
      case 4: {
        if (!next(&in, &b)) break;
        const char *t = topics[b % COUNT(topics)];
        for (int i = 0; i < 2; i++) {
          size_t x = hm_router_remove_topic(sides[i].r, t, strlen(t), forget,
                                            &sides[i]);
          size_t y = hm_naive_remove_topic(sides[i].nv, t, strlen(t), NULL,
                                           NULL);
          if (x != y) abort();
        }
        break;
      }
      default:
        n = pattern(&in, f, 1);
        for (int i = 0; i < 2; i++) check(&sides[i], f, n);
        break;
    }
    for (int i = 0; i < 2; i++)
      if (hm_router_count(sides[i].r) != hm_naive_count(sides[i].nv))
        abort();
  }
  for (int i = 0; i < 2; i++) {
    check(&sides[i], NULL, 0);
    hm_router_free(sides[i].r, NULL, NULL);
    hm_naive_free(sides[i].nv);
  }
  return 0;
}
