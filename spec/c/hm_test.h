/*
** hm_test.h: the smallest test harness that does the job: TEST(name)
** functions registered in main() with RUN(name); every assertion failure
** prints file:line and the expression, and the process exits non-zero.
*/
#ifndef HM_TEST_H
#define HM_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hm_test_failures = 0;
static int hm_test_count = 0;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                     \
  do {                                                                \
    int before_ = hm_test_failures;                                   \
    hm_test_count++;                                                  \
    test_##name();                                                    \
    printf("%s %s\n", hm_test_failures == before_ ? "ok  " : "FAIL",  \
           #name);                                                    \
  } while (0)

#define ASSERT(cond)                                                  \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,      \
              __LINE__, #cond);                                       \
      hm_test_failures++;                                             \
      return;                                                         \
    }                                                                 \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT((a) == (b))
#define ASSERT_STREQ(a, b)                                            \
  do {                                                                \
    const char *a_ = (a), *b_ = (b);                                  \
    if (strcmp(a_, b_) != 0) {                                        \
      fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, \
              a_, b_);                                                \
      hm_test_failures++;                                             \
      return;                                                         \
    }                                                                 \
  } while (0)

#define TEST_EXIT()                                                   \
  do {                                                                \
    printf("%d passed, %d failed\n", hm_test_count - hm_test_failures, \
           hm_test_failures);                                         \
    return hm_test_failures ? 1 : 0;                                  \
  } while (0)

#endif
