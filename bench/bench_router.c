/*
** bench_router.c: lookups per second of hm_router and of the naive
** reference, measured in the same run, for 10 to 100,000 patterns of a
** Hemera-like shape: half the patterns on one shared topic, the rest on a
** few others, a `cmd`, and up to four more keys (2-6 keys in all); about
** 5% carry a regex value. Requests are a stored pattern plus payload keys
** in shuffled order (hit mix), or the same with an unknown `cmd` or one
** changed value (miss mix). Numbers are printed, never asserted.
**
** `bench_router --export DIR` also writes, for each size, the generated
** pattern set (in insertion order) and both request mixes, with the route
** hm_router picked for each request, to DIR/router-<patterns>.json, before
** that size is measured. bench/node/bloomrun-bench.js loads that file into
** bloomrun 4.1.1 (insertion indexing, as Hemera) and measures the same
** lookups; bench/run.sh prints the ratio. The generator's sequence is the
** same with or without --export, so the numbers stay comparable.
** File: {"patterns": [{key: value, ...}], "hit": [...], "miss": [...],
**        "hitRoute": [n], "missRoute": [n]} where a regex value is
** {"$re": "<source>"} and a route is the 1-based index of the pattern
** (0: none).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hm_router.h"
#include "hm_router_naive.h"

#define MAXF 8
#define NREQ 4096

typedef struct pat {
  hm_field f[MAXF];
  size_t n;
} pat;

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static hm_field fs(const char *k, const char *v) {
  hm_field f = {k, strlen(k), HM_VAL_STRING, v, strlen(v), 0, 0};
  return f;
}

static hm_field fn(const char *k, double x) {
  hm_field f = {k, strlen(k), HM_VAL_NUMBER, NULL, 0, x, 0};
  return f;
}

static hm_field fr(const char *k, const char *src) {
  hm_field f = {k, strlen(k), HM_VAL_REGEX, src, strlen(src), 0, 0};
  return f;
}

static const char *topics[] = {"math", "users", "orders", "billing",
                               "search", "mail", "auth", "stats", "files"};
static const char *regions[] = {"eu", "us", "ap"};
static const char *types[] = {"t0", "t1", "t2", "t3", "t4"};
static const char *formats[] = {"json", "msgpack"};
static const char *extra[] = {"version", "region", "a", "b", "type",
                              "format"};

/* cmd strings live here; "cmd%u" for u < 25,000 fits easily. */
static char cmdpool[25000][12];

static hm_field extra_field(const char *k) {
  if (!strcmp(k, "version")) return fn(k, 1 + rnd(3));
  if (!strcmp(k, "region")) return fs(k, regions[rnd(3)]);
  if (!strcmp(k, "a") || !strcmp(k, "b")) return fn(k, rnd(10));
  if (!strcmp(k, "type")) return fs(k, types[rnd(5)]);
  return fs(k, formats[rnd(2)]);
}

static void make_pattern(pat *p, size_t count) {
  uint32_t ncmd = count / 4 ? (uint32_t)(count / 4) : 1;
  if (ncmd > 25000) ncmd = 25000;
  p->n = 0;
  p->f[p->n++] = fs("topic", rnd(2) ? "math" : topics[1 + rnd(8)]);
  p->f[p->n++] = fs("cmd", cmdpool[rnd(ncmd)]);
  int used[6] = {0};
  uint32_t k = rnd(5);
  while (k--) {
    uint32_t i = rnd(6);
    if (used[i]) continue;
    used[i] = 1;
    p->f[p->n++] = extra_field(extra[i]);
  }
  if (rnd(100) < 5) {
    size_t i = 0;
    while (i < p->n && strcmp(p->f[i].key, "region")) i++;
    if (i == p->n) p->n++;
    p->f[i] = fr("region", "^(eu|us)$");
  }
}

static size_t make_request(const pat *p, hm_field *q, int hit) {
  static char ids[NREQ][16];
  static uint32_t nid;
  size_t n = 0;
  for (size_t i = 0; i < p->n; i++) {
    q[n] = p->f[i];
    if (q[n].type == HM_VAL_REGEX) q[n] = fs("region", "eu");
    n++;
  }
  if (!hit) {
    if (rnd(2) || n == 2)
      q[1] = fs("cmd", "nope");
    else {
      size_t i = 2 + rnd((uint32_t)n - 2);
      q[i] = fn(q[i].key, 99);
    }
  }
  char *id = ids[nid++ % NREQ];
  snprintf(id, 16, "r%u", rnd(1000000));
  q[n++] = fs("id", id);
  q[n++] = fn("amount", rnd(1000) / 10.0);
  for (size_t i = n; i > 1; i--) {
    size_t j = rnd((uint32_t)i);
    hm_field t = q[i - 1];
    q[i - 1] = q[j];
    q[j] = t;
  }
  return n;
}

typedef struct req {
  hm_field f[MAXF + 2];
  size_t n;
} req;

/* Runs lookups round-robin until `budget` seconds have passed (at least
** `min` lookups); returns lookups per second. */
static double run(void *(*look)(const void *, const hm_field *, size_t),
                  const void *idx, const req *rq, size_t nrq, double budget,
                  size_t min, size_t *found) {
  size_t done = 0, hits = 0;
  double t0 = now(), t;
  do {
    for (size_t i = 0; i < 64; i++) {
      const req *r = &rq[done % nrq];
      if (look(idx, r->f, r->n)) hits++;
      done++;
    }
    t = now();
  } while (t - t0 < budget || done < min);
  if (found) *found = hits;
  return (double)done / (t - t0);
}

static void *look_router(const void *idx, const hm_field *f, size_t n) {
  return hm_router_lookup(idx, f, n);
}

static void *look_naive(const void *idx, const hm_field *f, size_t n) {
  return hm_naive_lookup(idx, f, n);
}

/* {--- export for bench/node/bloomrun-bench.js */

static void json_str(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void json_fields(FILE *f, const hm_field *fl, size_t n) {
  fputc('{', f);
  for (size_t i = 0; i < n; i++) {
    if (i) fputc(',', f);
    json_str(f, fl[i].key, fl[i].key_len);
    fputc(':', f);
    if (fl[i].type == HM_VAL_NUMBER) {
      fprintf(f, "%.17g", fl[i].num);
    } else if (fl[i].type == HM_VAL_BOOLEAN) {
      fputs(fl[i].boolean ? "true" : "false", f);
    } else if (fl[i].type == HM_VAL_REGEX) {
      fputs("{\"$re\":", f);
      json_str(f, fl[i].str, fl[i].str_len);
      fputc('}', f);
    } else {
      json_str(f, fl[i].str, fl[i].str_len);
    }
  }
  fputc('}', f);
}

static int export_set(const char *dir, size_t count, const pat *ps,
                      const req *hq, const req *mq, const hm_router_t *r) {
  char path[4096];
  FILE *f;
  snprintf(path, sizeof path, "%s/router-%zu.json", dir, count);
  f = fopen(path, "w");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  fputs("{\"patterns\":[", f);
  for (size_t i = 0; i < count; i++) {
    if (i) fputs(",\n", f);
    json_fields(f, ps[i].f, ps[i].n);
  }
  for (int mix = 0; mix < 2; mix++) {
    const req *q = mix ? mq : hq;
    fprintf(f, "],\n\"%s\":[", mix ? "miss" : "hit");
    for (size_t i = 0; i < NREQ; i++) {
      if (i) fputs(",\n", f);
      json_fields(f, q[i].f, q[i].n);
    }
    fprintf(f, "],\n\"%sRoute\":[", mix ? "miss" : "hit");
    for (size_t i = 0; i < NREQ; i++)
      fprintf(f, "%s%zu", i ? "," : "",
              (size_t)(uintptr_t)hm_router_lookup(r, q[i].f, q[i].n));
  }
  fputs("]}\n", f);
  return fclose(f) == 0 ? 0 : -1;
}

/* }--- */

int main(int argc, char **argv) {
  static const size_t sizes[] = {10, 1000, 10000, 100000};
  const char *export_dir = NULL;
  if (argc == 3 && !strcmp(argv[1], "--export")) {
    export_dir = argv[2];
  } else if (argc != 1) {
    fprintf(stderr, "usage: bench_router [--export DIR]\n");
    return 2;
  }
  static req hitq[NREQ], missq[NREQ];
  double rate[4][2];
  for (uint32_t i = 0; i < 25000; i++) snprintf(cmdpool[i], 12, "cmd%u", i);
  double start = now();

  printf("%9s %5s %15s %15s %9s %13s %8s\n", "patterns", "mix",
         "router/s", "naive/s", "speedup", "bytes/pattern", "agree");
  for (size_t si = 0; si < 4; si++) {
    size_t count = sizes[si];
    pat *ps = malloc(count * sizeof *ps);
    hm_router_t *r;
    hm_naive_t *nv;
    if (!ps || hm_router_new(HM_INDEX_INSERTION, &r) != HM_OK ||
        hm_naive_new(HM_INDEX_INSERTION, &nv) != HM_OK)
      return 1;
    for (size_t i = 0; i < count; i++) {
      make_pattern(&ps[i], count);
      void *tag = (void *)(uintptr_t)(i + 1);
      if (hm_router_add(r, ps[i].f, ps[i].n, tag, NULL) != HM_OK ||
          hm_naive_add(nv, ps[i].f, ps[i].n, tag) != HM_OK)
        return 1;
    }
    for (size_t i = 0; i < NREQ; i++) {
      hitq[i].n = make_request(&ps[rnd((uint32_t)count)], hitq[i].f, 1);
      missq[i].n = make_request(&ps[rnd((uint32_t)count)], missq[i].f, 0);
    }
    if (export_dir && export_set(export_dir, count, ps, hitq, missq, r))
      return 1;
    size_t bytes = hm_router_memory(r) / count;
    for (int mix = 0; mix < 2; mix++) {
      const req *q = mix ? missq : hitq;
      size_t rh, nh;
      double rr = run(look_router, r, q, NREQ, 0.4, NREQ, &rh);
      /* The naive matcher is O(patterns) per lookup: give it a fixed
      ** time and fewer lookups at large sizes. */
      size_t nmin = count >= 100000 ? 16 : count >= 10000 ? 64 : 512;
      double nr = run(look_naive, nv, q, NREQ, 1.0, nmin, &nh);
      /* Spot-check that both return the same route. */
      size_t agree = 0, checked = count >= 100000 ? 32 : 256;
      for (size_t i = 0; i < checked; i++)
        agree += hm_router_lookup(r, q[i].f, q[i].n) ==
                 hm_naive_lookup(nv, q[i].f, q[i].n);
      rate[si][mix] = rr;
      printf("%9zu %5s %15.0f %15.0f %8.0fx %13zu %4zu/%zu\n", count,
             mix ? "miss" : "hit", rr, nr, rr / nr, bytes, agree, checked);
      fflush(stdout);
    }
    hm_router_free(r, NULL, NULL);
    hm_naive_free(nv);
    free(ps);
  }
  printf("\ncost growth from 1,000 to 100,000 patterns (time per lookup):\n");
  printf("  hit  %.2fx\n  miss %.2fx\n", rate[1][0] / rate[3][0],
         rate[1][1] / rate[3][1]);
  printf("total bench time %.1f s\n", now() - start);
  return 0;
}
