/*
** test_nuid.c: NUID shape, uniqueness, and independent prefixes.
*/
#include <stdint.h>

#include "hm_nuid.h"
#include "hm_test.h"

static int idcmp(const void *a, const void *b) {
  return memcmp(a, b, HM_NUID_LEN);
}

TEST(shape) {
  hm_nuid_t n;
  hm_nuid_init(&n);
  char id[HM_NUID_LEN + 1];
  for (int i = 0; i < 1000; i++) {
    memset(id, 'x', sizeof id);
    hm_nuid_next(&n, id);
    ASSERT_EQ(strlen(id), (size_t)22);
    for (int j = 0; j < HM_NUID_LEN; j++)
      ASSERT((id[j] >= '0' && id[j] <= '9') || (id[j] >= 'A' && id[j] <= 'Z'));
  }
}

TEST(unique) {
  enum { COUNT = 100000 };
  char (*ids)[HM_NUID_LEN + 1] = malloc(COUNT * sizeof *ids);
  ASSERT(ids != NULL);
  hm_nuid_t n;
  hm_nuid_init(&n);
  for (int i = 0; i < COUNT; i++) hm_nuid_next(&n, ids[i]);
  qsort(ids, COUNT, sizeof *ids, idcmp);
  int dups = 0;
  for (int i = 1; i < COUNT; i++)
    if (memcmp(ids[i - 1], ids[i], HM_NUID_LEN) == 0) dups++;
  free(ids);
  ASSERT_EQ(dups, 0);
}

TEST(prefix_stays_then_sequence_moves) {
  hm_nuid_t n;
  hm_nuid_init(&n);
  n.seq = 0;
  n.inc = 40;
  char a[HM_NUID_LEN + 1], b[HM_NUID_LEN + 1];
  hm_nuid_next(&n, a);
  hm_nuid_next(&n, b);
  ASSERT(memcmp(a, b, 12) == 0);
  ASSERT_STREQ(a + 12, "0000000014");  /* 40 in base 36 */
  ASSERT_STREQ(b + 12, "0000000028");  /* 80 */
}

TEST(overflow_renews_prefix) {
  hm_nuid_t n;
  hm_nuid_init(&n);
  char pre[12];
  memcpy(pre, n.pre, 12);
  n.seq = INT64_C(3656158440062976) - 10;  /* 36^10 - 10 */
  n.inc = 100;
  char id[HM_NUID_LEN + 1];
  hm_nuid_next(&n, id);
  ASSERT(memcmp(id, pre, 12) != 0);
  ASSERT(n.seq < INT64_C(3656158440062976));
  ASSERT(n.inc >= 33 && n.inc < 333);
}

TEST(generators_differ) {
  hm_nuid_t a, b;
  hm_nuid_init(&a);
  hm_nuid_init(&b);
  char x[HM_NUID_LEN + 1], y[HM_NUID_LEN + 1];
  hm_nuid_next(&a, x);
  hm_nuid_next(&b, y);
  ASSERT(memcmp(x, y, 12) != 0);
  ASSERT(strcmp(x, y) != 0);
}

int main(void) {
  RUN(shape);
  RUN(unique);
  RUN(prefix_stays_then_sequence_moves);
  RUN(overflow_renews_prefix);
  RUN(generators_differ);
  TEST_EXIT();
}
