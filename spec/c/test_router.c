/*
** test_router.c: hm_router against the matching rules of hm_router.h and
** spec §2, plus a randomized differential run against hm_router_naive.
*/
#include <math.h>
#include <stdint.h>

#include "hm_router.h"
#include "hm_router_naive.h"
#include "hm_test.h"

static hm_field S(const char *k, const char *v) {
  hm_field f = {k, strlen(k), HM_VAL_STRING, v, strlen(v), 0, 0};
  return f;
}

static hm_field N(const char *k, double x) {
  hm_field f = {k, strlen(k), HM_VAL_NUMBER, NULL, 0, x, 0};
  return f;
}

static hm_field B(const char *k, int b) {
  hm_field f = {k, strlen(k), HM_VAL_BOOLEAN, NULL, 0, 0, b};
  return f;
}

static hm_field R(const char *k, const char *src) {
  hm_field f = {k, strlen(k), HM_VAL_REGEX, src, strlen(src), 0, 0};
  return f;
}

#define F(...) (hm_field[]){__VA_ARGS__}, \
  sizeof((hm_field[]){__VA_ARGS__}) / sizeof(hm_field)

/* Lookups return the tag string given at add, or "-" for no match. */
static const char *look(hm_router_t *r, const hm_field *q, size_t n) {
  const char *s = hm_router_lookup(r, q, n);
  return s ? s : "-";
}

#define ADD(r, tag, ...) \
  ASSERT_EQ(hm_router_add(r, F(__VA_ARGS__), (void *)(tag), NULL), HM_OK)
#define LOOK(r, ...) look(r, F(__VA_ARGS__))

static hm_router_t *mk(hm_indexing ix) {
  hm_router_t *r = NULL;
  if (hm_router_new(ix, &r) != HM_OK) return NULL;
  return r;
}

TEST(exact_match) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "A", S("topic", "math"), S("cmd", "add"));
  ADD(r, "B", S("topic", "math"), S("cmd", "sub"));
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "add")), "A");
  ASSERT_STREQ(LOOK(r, S("cmd", "sub"), S("topic", "math")), "B");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "mul")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "math")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "maths"), S("cmd", "add")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "mat"), S("cmd", "add")), "-");
  ASSERT_EQ(hm_router_count(r), 2);
  hm_router_free(r, NULL, NULL);
}

TEST(extra_request_keys_ignored) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "A", S("topic", "math"), S("cmd", "add"));
  ASSERT_STREQ(LOOK(r, S("a", "1"), S("topic", "math"), N("b", 2),
                    S("cmd", "add"), R("z", "x"), B("c", 1)),
               "A");
  hm_router_free(r, NULL, NULL);
}

TEST(strict_types) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "num", S("topic", "t"), N("a", 1));
  ADD(r, "str", S("topic", "t"), S("b", "1"));
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("a", "1")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("a", 1)), "num");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("b", 1)), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("b", "1")), "str");
  /* 1 and 1.0 are one JavaScript number. */
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("a", 1.0)), "num");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("a", 1.0000001)), "-");
  ADD(r, "zero", S("topic", "z"), N("a", 0.0));
  ASSERT_STREQ(LOOK(r, S("topic", "z"), N("a", -0.0)), "zero");
  ADD(r, "nan", S("topic", "n"), N("a", NAN));
  ASSERT_STREQ(LOOK(r, S("topic", "n"), N("a", NAN)), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "n"), S("a", "NaN")), "-");
  ADD(r, "big", S("topic", "g"), N("a", 1e21));
  ASSERT_STREQ(LOOK(r, S("topic", "g"), N("a", 1e21)), "big");
  ASSERT_STREQ(LOOK(r, S("topic", "g"), S("a", "1e+21")), "-");
  hm_router_free(r, NULL, NULL);
}

TEST(booleans) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "T", S("topic", "t"), B("on", 1));
  ADD(r, "F", S("topic", "t"), B("off", 0));
  ASSERT_STREQ(LOOK(r, S("topic", "t"), B("on", 1)), "T");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), B("on", 7)), "T");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("on", "true")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("on", 1)), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), B("off", 0)), "F");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), N("off", 0)), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("off", "false")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), B("off", 1)), "-");
  hm_router_free(r, NULL, NULL);
}

/* docs/pattern-matching.md of Hemera. */
TEST(insertion_vs_depth) {
  hm_router_t *ri = mk(HM_INDEX_INSERTION), *rd = mk(HM_INDEX_DEPTH);
  ASSERT(ri && rd);
  ADD(ri, "short", S("topic", "math"), S("cmd", "a"));
  ADD(ri, "long", S("topic", "math"), S("cmd", "a"), S("foo", "bar"));
  ADD(rd, "short", S("topic", "math"), S("cmd", "a"));
  ADD(rd, "long", S("topic", "math"), S("cmd", "a"), S("foo", "bar"));
  ASSERT_STREQ(LOOK(ri, S("topic", "math"), S("cmd", "a"), S("foo", "bar")),
               "short");
  ASSERT_STREQ(LOOK(rd, S("topic", "math"), S("cmd", "a"), S("foo", "bar")),
               "long");
  ASSERT_STREQ(LOOK(rd, S("topic", "math"), S("cmd", "a")), "short");
  /* Added the other way round, depth still prefers the deeper one. */
  hm_router_t *rd2 = mk(HM_INDEX_DEPTH);
  ASSERT(rd2);
  ADD(rd2, "long", S("topic", "math"), S("cmd", "a"), S("foo", "bar"));
  ADD(rd2, "short", S("topic", "math"), S("cmd", "a"));
  ASSERT_STREQ(LOOK(rd2, S("topic", "math"), S("cmd", "a"), S("foo", "bar")),
               "long");
  hm_router_free(ri, NULL, NULL);
  hm_router_free(rd, NULL, NULL);
  hm_router_free(rd2, NULL, NULL);
}

TEST(depth_ties_earliest) {
  hm_router_t *r = mk(HM_INDEX_DEPTH);
  ASSERT(r);
  ADD(r, "first", S("topic", "x"), N("a", 1));
  ADD(r, "second", S("topic", "x"), N("b", 2));
  ASSERT_STREQ(LOOK(r, S("topic", "x"), N("a", 1), N("b", 2)), "first");
  ASSERT_STREQ(LOOK(r, N("b", 2), N("a", 1), S("topic", "x")), "first");
  hm_router_free(r, NULL, NULL);
}

/* bloomrun scans whole buckets: here the bucket cmd:y (head 1) is scanned
** before topic:x (head 2), so route 3 wins although 2 is older. Checked
** against bloomrun 4.1.1 itself. */
TEST(bucket_order_edge) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "1", S("topic", "z"), S("cmd", "y"));
  ADD(r, "2", S("topic", "x"));
  ADD(r, "3", S("topic", "x"), S("cmd", "y"));
  ASSERT_STREQ(LOOK(r, S("topic", "x"), S("cmd", "y")), "3");
  ASSERT_STREQ(LOOK(r, S("topic", "x"), S("cmd", "q")), "2");
  hm_router_free(r, NULL, NULL);
}

/* Hemera's bloomrun.lookupBeforeAdd: add refuses a pattern when a lookup
** of it already finds something. */
TEST(lookup_before_add) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "old", S("topic", "math"), S("cmd", "add"));
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "add"), S("foo", "bar")),
               "old");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "add")), "old");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "sub")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "math")), "-");
  hm_router_free(r, NULL, NULL);
}

TEST(regex_values) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "ad", S("topic", "math"), R("cmd", "^ad"));
  ADD(r, "num", S("topic", "n"), R("v", "^1\\.5$"));
  ADD(r, "bool", S("topic", "b"), R("v", "^tr"));
  ADD(r, "uni", S("topic", "u"), R("v", "^\\u00e9t\\u00e9$"));
  ADD(r, "dot", S("topic", "d"), R("v", "^a.b$"));
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "add")), "ad");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "sub")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "bad")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "math")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "n"), N("v", 1.5)), "num");
  ASSERT_STREQ(LOOK(r, S("topic", "n"), S("v", "1.5")), "num");
  ASSERT_STREQ(LOOK(r, S("topic", "b"), B("v", 1)), "bool");
  ASSERT_STREQ(LOOK(r, S("topic", "b"), B("v", 0)), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "u"), S("v", "\xc3\xa9t\xc3\xa9")), "uni");
  ASSERT_STREQ(LOOK(r, S("topic", "d"), S("v", "a-b")), "dot");
  ASSERT_STREQ(LOOK(r, S("topic", "d"), S("v", "a\nb")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "d"), S("v", "a\rb")), "-");
  /* A request regex equals a stored regex of the same source only. */
  ASSERT_STREQ(LOOK(r, S("topic", "math"), R("cmd", "^ad")), "ad");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), R("cmd", "^add")), "-");
  /* ...and never a stored string. */
  ADD(r, "s", S("topic", "s"), S("cmd", "^x"));
  ASSERT_STREQ(LOOK(r, S("topic", "s"), R("cmd", "^x")), "-");
  /* An invalid UTF-8 subject simply does not match. */
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "ad\xff")), "ad");
  ASSERT_STREQ(LOOK(r, S("topic", "d"), S("v", "a\xffz")), "-");
  hm_router_free(r, NULL, NULL);
}

TEST(regex_only_searched_last) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "anycmd", R("cmd", ".*"));
  ADD(r, "wild", S("topic", "math.*"));
  ADD(r, "both", R("topic", "^ma"), S("topic2", "x"));
  ADD(r, "plain", S("topic", "math"), S("cmd", "add"));
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "add")), "plain");
  ASSERT_STREQ(LOOK(r, S("topic", "math"), S("cmd", "sub")), "anycmd");
  ASSERT_STREQ(LOOK(r, S("topic", "math.x")), "wild");
  ASSERT_STREQ(LOOK(r, S("topic", "math.x"), S("topic2", "x")), "both");
  hm_router_free(r, NULL, NULL);

  r = mk(HM_INDEX_DEPTH);
  ASSERT(r);
  ADD(r, "re3", R("a", "."), R("b", "."), R("c", "."));
  ADD(r, "plain1", S("a", "1"));
  ADD(r, "re2", R("a", "."), R("b", "."));
  ASSERT_STREQ(LOOK(r, S("a", "1"), S("b", "2"), S("c", "3")), "plain1");
  ASSERT_STREQ(LOOK(r, S("a", "2"), S("b", "2"), S("c", "3")), "re3");
  ASSERT_STREQ(LOOK(r, S("a", "2"), S("b", "2")), "re2");
  hm_router_free(r, NULL, NULL);
}

static const char *wl(hm_router_t *r, const char *topic) {
  hm_field q = S("topic", topic);
  return look(r, &q, 1);
}

TEST(wildcard_topics) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "a.*", S("topic", "a.*"));
  ASSERT_STREQ(wl(r, "a.b"), "a.*");
  ASSERT_STREQ(wl(r, "a"), "-");
  ASSERT_STREQ(wl(r, "a.b.c"), "-");
  ASSERT_STREQ(wl(r, "b.b"), "-");
  ASSERT_STREQ(wl(r, "ab"), "-");
  hm_router_free(r, NULL, NULL);

  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "a.>", S("topic", "a.>"));
  ASSERT_STREQ(wl(r, "a.b"), "a.>");
  ASSERT_STREQ(wl(r, "a.b.c.d"), "a.>");
  ASSERT_STREQ(wl(r, "a"), "-");
  ASSERT_STREQ(wl(r, "ab.c"), "-");
  hm_router_free(r, NULL, NULL);

  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "a.*.c", S("topic", "a.*.c"));
  ASSERT_STREQ(wl(r, "a.b.c"), "a.*.c");
  ASSERT_STREQ(wl(r, "a.xyz-1.c"), "a.*.c");
  ASSERT_STREQ(wl(r, "a.b.d"), "-");
  ASSERT_STREQ(wl(r, "a.b.c.d"), "-");
  ASSERT_STREQ(wl(r, "a.c"), "-");
  hm_router_free(r, NULL, NULL);

  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, ">", S("topic", ">"));
  ASSERT_STREQ(wl(r, "a"), ">");
  ASSERT_STREQ(wl(r, "a.b.c"), ">");
  hm_router_free(r, NULL, NULL);

  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "a.*.>", S("topic", "a.*.>"));
  ASSERT_STREQ(wl(r, "a.b.c"), "a.*.>");
  ASSERT_STREQ(wl(r, "a.b.c.d"), "a.*.>");
  ASSERT_STREQ(wl(r, "a.b"), "-");
  ASSERT_STREQ(wl(r, "x.b.c"), "-");
  hm_router_free(r, NULL, NULL);

  /* Not wildcards: `*` inside a token, and keys other than topic. */
  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "lit", S("topic", "a.b*"));
  ADD(r, "cmd", S("topic", "t"), S("cmd", "*"));
  ASSERT_STREQ(wl(r, "a.b*"), "lit");
  ASSERT_STREQ(wl(r, "a.bc"), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "x")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "*")), "cmd");
  /* A wildcard topic plus plain keys is indexed by the plain keys. */
  ADD(r, "wcmd", S("topic", "w.*"), S("cmd", "go"));
  ASSERT_STREQ(LOOK(r, S("topic", "w.1"), S("cmd", "go")), "wcmd");
  ASSERT_STREQ(LOOK(r, S("topic", "w.1.2"), S("cmd", "go")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "w.1"), S("cmd", "stop")), "-");
  hm_router_free(r, NULL, NULL);

  /* Overlapping subscriptions route to the first matching pattern. */
  r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "gt", S("topic", "a.>"));
  ADD(r, "star", S("topic", "a.*"));
  ASSERT_STREQ(wl(r, "a.b"), "gt");
  ASSERT_STREQ(wl(r, "a.b.c"), "gt");
  hm_router_free(r, NULL, NULL);
}

/* A pattern with no routing field finds nothing: it used to run the first
** route of any topic, which let `{"pattern":{}}` reach any handler. */
TEST(empty_request_matches_nothing) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "W", S("topic", "admin"), S("cmd", "wipe"));
  ADD(r, "H", S("topic", "pub"), S("cmd", "hi"));
  ADD(r, "R", R("cmd", "."));
  ASSERT(hm_router_lookup(r, NULL, 0) == NULL);
  ASSERT_STREQ(LOOK(r, S("topic", "pub"), S("cmd", "hi")), "H");
  hm_router_free(r, NULL, NULL);
}

static const char *look_in(hm_router_t *r, const char *topic,
                           const hm_field *q, size_t n) {
  const char *s = hm_router_lookup_topic(r, q, n, topic, strlen(topic));
  return s ? s : "-";
}
#define LOOK_IN(r, t, ...) look_in(r, t, F(__VA_ARGS__))

/* Routing among one subscription's patterns: a pattern that names another
** topic finds nothing, wildcards count as written, and within the topic
** the answer is the unrestricted one. */
TEST(lookup_topic) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "A", S("topic", "admin"), S("cmd", "wipe"));
  ADD(r, "P", S("topic", "pub"), S("cmd", "hi"));
  ADD(r, "X", S("topic", "a.b"), S("cmd", "x"));
  ADD(r, "W", S("topic", "a.*"), S("cmd", "x"));
  /* The crafted message: delivered on `pub`, pattern of `admin`. */
  ASSERT_STREQ(LOOK_IN(r, "pub", S("topic", "admin"), S("cmd", "wipe")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "admin"), S("cmd", "wipe")), "A");
  ASSERT_STREQ(LOOK_IN(r, "pub", S("topic", "pub"), S("cmd", "hi")), "P");
  ASSERT_STREQ(LOOK_IN(r, "nosuch", S("topic", "pub"), S("cmd", "hi")), "-");
  /* a.b reaches both subscriptions; each runs its own route. */
  ASSERT_STREQ(LOOK(r, S("topic", "a.b"), S("cmd", "x")), "X");
  ASSERT_STREQ(LOOK_IN(r, "a.b", S("topic", "a.b"), S("cmd", "x")), "X");
  ASSERT_STREQ(LOOK_IN(r, "a.*", S("topic", "a.b"), S("cmd", "x")), "W");
  ASSERT_STREQ(LOOK_IN(r, "a.*", S("topic", "a.c"), S("cmd", "x")), "W");
  ASSERT_STREQ(LOOK_IN(r, "a.*", S("topic", "b.c"), S("cmd", "x")), "-");
  ASSERT(hm_router_lookup_topic(r, NULL, 0, "pub", 3) == NULL);
  /* The bucket order is the whole router's (bucket_order_edge). */
  ADD(r, "1", S("topic", "z"), S("cmd", "y"));
  ADD(r, "2", S("topic", "q"));
  ADD(r, "3", S("topic", "q"), S("cmd", "y"));
  ASSERT_STREQ(LOOK(r, S("topic", "q"), S("cmd", "y")), "3");
  ASSERT_STREQ(LOOK_IN(r, "q", S("topic", "q"), S("cmd", "y")), "3");
  hm_router_free(r, NULL, NULL);
}

TEST(remove_middle_of_bucket) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  hm_route_t *h[5];
  static const char *tags[5] = {"0", "1", "2", "3", "4"};
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(hm_router_add(r, F(S("topic", "t"), S("cmd", "same")),
                            (void *)tags[i], &h[i]),
              HM_OK);
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "same")), "0");
  hm_router_remove(r, h[2]);
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "same")), "0");
  hm_router_remove(r, h[0]);
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "same")), "1");
  hm_router_remove(r, h[4]);
  hm_router_remove(r, h[1]);
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "same")), "3");
  ASSERT_EQ(hm_router_count(r), 1);
  hm_router_remove(r, h[3]);
  ASSERT_STREQ(LOOK(r, S("topic", "t"), S("cmd", "same")), "-");
  ASSERT_EQ(hm_router_count(r), 0);

  /* Depth mode: removal from the middle of a key-count group. */
  hm_router_t *d = mk(HM_INDEX_DEPTH);
  ASSERT(d);
  hm_route_t *a, *b, *c;
  ASSERT_EQ(hm_router_add(d, F(S("topic", "t"), S("x", "1")), "a", &a), HM_OK);
  ASSERT_EQ(hm_router_add(d, F(S("topic", "t"), S("x", "1"), S("y", "2")),
                          "b", &b), HM_OK);
  ASSERT_EQ(hm_router_add(d, F(S("topic", "t"), S("x", "1"), S("z", "3")),
                          "c", &c), HM_OK);
  ASSERT_STREQ(LOOK(d, S("topic", "t"), S("x", "1"), S("y", "2"),
                    S("z", "3")), "b");
  hm_router_remove(d, b);
  ASSERT_STREQ(LOOK(d, S("topic", "t"), S("x", "1"), S("y", "2"),
                    S("z", "3")), "c");
  hm_router_remove(d, c);
  ASSERT_STREQ(LOOK(d, S("topic", "t"), S("x", "1"), S("y", "2"),
                    S("z", "3")), "a");
  hm_router_free(d, NULL, NULL);
  hm_router_free(r, NULL, NULL);
}

static void count_each(void *udata, void *arg) {
  (void)udata;
  (*(int *)arg)++;
}

TEST(remove_topic) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "x1", S("topic", "x"), S("cmd", "1"));
  ADD(r, "y1", S("topic", "y"), S("cmd", "1"));
  ADD(r, "x2", S("topic", "x"), S("cmd", "2"));
  ADD(r, "xw", S("topic", "x.*"), S("cmd", "1"));
  ADD(r, "xn", N("topic", 5), S("cmd", "1"));
  int n = 0;
  ASSERT_EQ(hm_router_remove_topic(r, "x", 1, count_each, &n), 2);
  ASSERT_EQ(n, 2);
  ASSERT_EQ(hm_router_count(r), 3);
  ASSERT_STREQ(LOOK(r, S("topic", "x"), S("cmd", "1")), "-");
  ASSERT_STREQ(LOOK(r, S("topic", "y"), S("cmd", "1")), "y1");
  ASSERT_STREQ(LOOK(r, S("topic", "x.a"), S("cmd", "1")), "xw");
  ASSERT_EQ(hm_router_remove_topic(r, "x", 1, count_each, &n), 0);
  ASSERT_EQ(hm_router_remove_topic(r, "5", 1, NULL, NULL), 0);
  ASSERT_EQ(hm_router_remove_topic(r, "x.*", 3, NULL, NULL), 1);
  ASSERT_STREQ(LOOK(r, S("topic", "x.a"), S("cmd", "1")), "-");
  ASSERT_EQ(hm_router_count(r), 2);
  hm_router_free(r, count_each, &n);
  ASSERT_EQ(n, 4);
}

TEST(invalid_input) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  size_t mem = hm_router_memory(r);
  hm_route_t *h = (hm_route_t *)1;
  ASSERT_EQ(hm_router_add(r, F(S("topic", "t"), S("a", "1"), R("b", "(")),
                          "bad", &h),
            HM_REGEX);
  ASSERT(h == NULL);
  ASSERT(strstr(hm_router_error(r), "invalid regular expression") != NULL);
  ASSERT(strstr(hm_router_error(r), "'b'") != NULL);
  ASSERT_EQ(hm_router_add(r, F(S("topic", "t"), R("b", "a{2,1}")), "bad",
                          NULL),
            HM_REGEX);
  ASSERT_EQ(hm_router_add(r, F(S("topic", "t"), S("topic", "u")), "dup",
                          NULL),
            HM_INVAL);
  ASSERT(strstr(hm_router_error(r), "duplicate") != NULL);
  ASSERT_EQ(hm_router_count(r), 0);
  ASSERT_EQ(hm_router_memory(r), mem);
  hm_router_free(r, NULL, NULL);
}

typedef struct listing {
  const char *got[16];
  int n, stop_at;
} listing;

static int collect_fn(hm_route_t *route, void *udata, void *arg) {
  listing *l = arg;
  (void)route;
  l->got[l->n++] = udata;
  return l->n == l->stop_at;
}

TEST(lookup_all_order) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  ADD(r, "re", R("cmd", "."));
  ADD(r, "a", S("topic", "t"), S("cmd", "x"));
  ADD(r, "b", S("topic", "t"));
  ADD(r, "c", S("topic", "u"));
  ADD(r, "d", S("topic", "t"), S("cmd", "x"), S("e", "1"));
  listing l = {{0}, 0, 0};
  hm_router_lookup_all(r, F(S("topic", "t"), S("cmd", "x"), S("e", "1")),
                       collect_fn, &l);
  ASSERT_EQ(l.n, 4);
  ASSERT_STREQ(l.got[0], "a");
  ASSERT_STREQ(l.got[1], "b");
  ASSERT_STREQ(l.got[2], "d");
  ASSERT_STREQ(l.got[3], "re");
  listing s = {{0}, 0, 2};
  hm_router_lookup_all(r, F(S("topic", "t"), S("cmd", "x"), S("e", "1")),
                       collect_fn, &s);
  ASSERT_EQ(s.n, 2);
  listing all = {{0}, 0, 0};
  hm_router_lookup_all(r, NULL, 0, collect_fn, &all);
  ASSERT_EQ(all.n, 5);
  ASSERT_STREQ(all.got[0], "a");
  ASSERT_STREQ(all.got[4], "re");
  ASSERT_STREQ(look(r, NULL, 0), "-"); /* listing all is not matching all */
  size_t nf;
  hm_route_t *h;
  ASSERT_EQ(hm_router_add(r, F(S("topic", "v"), N("n", 2)), "v", &h), HM_OK);
  const hm_field *fs = hm_route_fields(h, &nf);
  ASSERT_EQ(nf, 2);
  ASSERT_STREQ(fs[0].key, "topic");
  ASSERT_STREQ(fs[0].str, "v");
  ASSERT(fs[1].num == 2);
  ASSERT_STREQ(hm_route_udata(h), "v");
  hm_router_free(r, NULL, NULL);
}

TEST(hundred_thousand) {
  hm_router_t *r = mk(HM_INDEX_INSERTION);
  ASSERT(r);
  size_t base = hm_router_memory(r);
  enum { COUNT = 100000 };
  hm_route_t **h = malloc(COUNT * sizeof *h);
  ASSERT(h);
  char cmd[32];
  for (int i = 0; i < COUNT; i++) {
    snprintf(cmd, sizeof cmd, "c%d", i);
    hm_field f[4] = {S("topic", i % 3 ? "math" : "other"), S("cmd", cmd),
                     N("v", i % 7), S("k", "x")};
    ASSERT_EQ(hm_router_add(r, f, 3 + (i % 2), (void *)(intptr_t)(i + 1),
                            &h[i]),
              HM_OK);
  }
  ASSERT_EQ(hm_router_count(r), COUNT);
  for (int i = 0; i < COUNT; i += 997) {
    snprintf(cmd, sizeof cmd, "c%d", i);
    hm_field q[5] = {S("topic", i % 3 ? "math" : "other"), S("cmd", cmd),
                     N("v", i % 7), S("k", "x"), S("extra", "1")};
    ASSERT_EQ((intptr_t)hm_router_lookup(r, q, 5), i + 1);
  }
  /* Remove in an order unrelated to insertion. */
  for (int i = 0; i < COUNT; i += 2) hm_router_remove(r, h[i]);
  for (int i = COUNT - 1; i > 0; i -= 2) hm_router_remove(r, h[i]);
  ASSERT_EQ(hm_router_count(r), 0);
  ASSERT_EQ(hm_router_memory(r), base);
  free(h);
  hm_router_free(r, NULL, NULL);
}

/* {===================== differential check ========================== */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static const char *dkeys[] = {"topic", "cmd", "a", "b", "c"};
static const char *dstr[] = {"x", "y", "1", "true", "x.y", ""};
static const double dnum[] = {1, 1.5, 0, -0.0};
static const char *dregex[] = {"^x", "y$", "^1", ".", "^$", "ru"};
static const char *dtopic[] = {"x",   "y",   "x.y",   "x.*",
                               "x.>", ">",   "*.y",   "x.y.z"};

static hm_field dfield(const char *k, int for_request) {
  int topic = !strcmp(k, "topic");
  switch (rnd(topic ? 8 : 5)) {
    case 0: return N(k, dnum[rnd(4)]);
    case 1: return B(k, (int)rnd(2));
    case 2:
      if (rnd(4) || !for_request) return R(k, dregex[rnd(6)]);
      return S(k, dstr[rnd(6)]);
    default:
      if (topic) return S(k, dtopic[rnd(8)]);
      return S(k, dstr[rnd(6)]);
  }
}

static size_t dpattern(hm_field *f, int for_request) {
  size_t n = 0;
  for (size_t i = 0; i < 5; i++)
    if (rnd(100) < (i == 0 ? 85u : 45u)) f[n++] = dfield(dkeys[i], for_request);
  /* Shuffle so key order in requests and patterns varies. */
  for (size_t i = n; i > 1; i--) {
    size_t j = rnd((uint32_t)i);
    hm_field t = f[i - 1];
    f[i - 1] = f[j];
    f[j] = t;
  }
  return n;
}

typedef struct dlist {
  void *got[512];
  size_t n;
} dlist;

static int dcol(hm_route_t *route, void *udata, void *arg) {
  dlist *l = arg;
  (void)route;
  if (l->n < 512) l->got[l->n++] = udata;
  return 0;
}

static int dcoln(void *udata, void *arg) {
  dlist *l = arg;
  if (l->n < 512) l->got[l->n++] = udata;
  return 0;
}

/* remove_topic frees routes we hold handles to: forget them first. */
static void forget(void *udata, void *arg) {
  hm_route_t **handles = arg;
  for (int i = 0; i < 256; i++)
    if (handles[i] && hm_route_udata(handles[i]) == udata) handles[i] = NULL;
}

/* At most `cap` routes live at once: a small cap keeps topics at a few
** routes each, where lookup_topic tries each route instead of the walk. */
static int differential(hm_indexing ix, int ops, size_t cap) {
  hm_router_t *r = mk(ix);
  hm_naive_t *nv = NULL;
  if (!r || hm_naive_new(ix, &nv) != HM_OK) return 0;
  hm_route_t *handles[256] = {0};
  intptr_t next = 1;
  int ok = 1;
  for (int op = 0; op < ops && ok; op++) {
    uint32_t what = rnd(100);
    hm_field f[5];
    if (what < 40) {
      size_t n = dpattern(f, 0);
      uint32_t slot = rnd(256);
      if (handles[slot] || hm_router_count(r) >= cap) continue;
      hm_route_t *h;
      hm_status a = hm_router_add(r, f, n, (void *)next, &h);
      hm_status b = hm_naive_add(nv, f, n, (void *)next);
      if (a != b) ok = 0;
      if (a == HM_OK) handles[slot] = h;
      next++;
    } else if (what < 55) {
      uint32_t slot = rnd(256);
      if (!handles[slot]) continue;
      void *u = hm_route_udata(handles[slot]);
      hm_router_remove(r, handles[slot]);
      handles[slot] = NULL;
      if (!hm_naive_remove(nv, u)) ok = 0;
    } else if (what < 58) {
      const char *t = dtopic[rnd(8)];
      size_t a = hm_router_remove_topic(r, t, strlen(t), forget, handles);
      size_t b = hm_naive_remove_topic(nv, t, strlen(t), NULL, NULL);
      if (a != b) ok = 0;
      dlist l = {{0}, 0};
      hm_router_lookup_all(r, NULL, 0, dcol, &l);
      ok = ok && l.n == hm_router_count(r);
    } else {
      size_t n = dpattern(f, 1);
      void *a = hm_router_lookup(r, f, n);
      void *b = hm_naive_lookup(nv, f, n);
      if (a != b) {
        fprintf(stderr, "lookup differs at op %d: %p vs %p\n", op, a, b);
        ok = 0;
      }
      /* Mostly the request's own topic, as a subscription delivers it. */
      const char *t = dtopic[rnd(8)];
      size_t tl = strlen(t);
      for (size_t i = 0; i < n; i++)
        if (f[i].type == HM_VAL_STRING && f[i].key_len == 5 &&
            !memcmp(f[i].key, "topic", 5) && rnd(4)) {
          t = f[i].str;
          tl = f[i].str_len;
        }
      a = hm_router_lookup_topic(r, f, n, t, tl);
      b = hm_naive_lookup_topic(nv, f, n, t, tl);
      if (a != b) {
        fprintf(stderr, "lookup_topic(%s) differs at op %d: %p vs %p\n", t, op,
                a, b);
        ok = 0;
      }
      dlist la = {{0}, 0}, lb = {{0}, 0};
      hm_router_lookup_all(r, f, n, dcol, &la);
      hm_naive_lookup_all(nv, f, n, dcoln, &lb);
      if (la.n != lb.n || memcmp(la.got, lb.got, la.n * sizeof(void *))) {
        fprintf(stderr, "lookup_all differs at op %d\n", op);
        ok = 0;
      }
    }
    if (hm_router_count(r) != hm_naive_count(nv)) ok = 0;
  }
  if (ok) {
    dlist la = {{0}, 0}, lb = {{0}, 0};
    hm_router_lookup_all(r, NULL, 0, dcol, &la);
    hm_naive_lookup_all(nv, NULL, 0, dcoln, &lb);
    ok = la.n == lb.n && !memcmp(la.got, lb.got, la.n * sizeof(void *));
    ok = ok && hm_router_lookup(r, NULL, 0) == hm_naive_lookup(nv, NULL, 0);
  }
  hm_router_free(r, NULL, NULL);
  hm_naive_free(nv);
  return ok;
}

TEST(differential_insertion) { ASSERT(differential(HM_INDEX_INSERTION, 5000, 256)); }
TEST(differential_depth) { ASSERT(differential(HM_INDEX_DEPTH, 5000, 256)); }
TEST(differential_few_per_topic) {
  ASSERT(differential(HM_INDEX_INSERTION, 20000, 12));
  ASSERT(differential(HM_INDEX_DEPTH, 20000, 12));
}

/* }=================================================================== */

int main(void) {
  RUN(exact_match);
  RUN(extra_request_keys_ignored);
  RUN(strict_types);
  RUN(booleans);
  RUN(insertion_vs_depth);
  RUN(depth_ties_earliest);
  RUN(bucket_order_edge);
  RUN(lookup_before_add);
  RUN(regex_values);
  RUN(regex_only_searched_last);
  RUN(wildcard_topics);
  RUN(empty_request_matches_nothing);
  RUN(lookup_topic);
  RUN(remove_middle_of_bucket);
  RUN(remove_topic);
  RUN(invalid_input);
  RUN(lookup_all_order);
  RUN(hundred_thousand);
  RUN(differential_insertion);
  RUN(differential_depth);
  RUN(differential_few_per_topic);
  TEST_EXIT();
}
