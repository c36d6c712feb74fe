/*
** test_jsnum.c: hm_jsnum_format against what node prints for the same
** doubles, and a round-trip property over random bit patterns.
*/
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>

#include "hm_jsnum.h"
#include "hm_test.h"

static const char *fmt(double x) {
  static char buf[HM_JSNUM_BUFSIZE];
  size_t n = hm_jsnum_format(x, buf);
  if (n != strlen(buf)) return "<length mismatch>";
  return buf;
}

TEST(zeros_and_small_integers) {
  ASSERT_STREQ(fmt(0.0), "0");
  ASSERT_STREQ(fmt(-0.0), "0");
  ASSERT_STREQ(fmt(1.0), "1");
  ASSERT_STREQ(fmt(-1.0), "-1");
  ASSERT_STREQ(fmt(3.0), "3");
  ASSERT_STREQ(fmt(-250.0), "-250");
}

TEST(fractions) {
  ASSERT_STREQ(fmt(0.1), "0.1");
  ASSERT_STREQ(fmt(0.1 + 0.2), "0.30000000000000004");
  ASSERT_STREQ(fmt(-0.5), "-0.5");
  ASSERT_STREQ(fmt(322962.057579), "322962.057579");
  ASSERT_STREQ(fmt(1576930.324352), "1576930.324352");
  ASSERT_STREQ(fmt(2.1643980001099408), "2.1643980001099408");
  ASSERT_STREQ(fmt(1.5), "1.5");
  ASSERT_STREQ(fmt(123.456), "123.456");
  ASSERT_STREQ(fmt(1.0 / 3.0), "0.3333333333333333");
  ASSERT_STREQ(fmt(2.0 / 3.0), "0.6666666666666666");
}

TEST(decimal_exponent_boundaries) {
  ASSERT_STREQ(fmt(1e21), "1e+21");
  ASSERT_STREQ(fmt(-1e21), "-1e+21");
  ASSERT_STREQ(fmt(1e20), "100000000000000000000");
  ASSERT_STREQ(fmt(1.5e20), "150000000000000000000");
  ASSERT_STREQ(fmt(123456789012345680000.0), "123456789012345680000");
  ASSERT_STREQ(fmt(1.2345e21), "1.2345e+21");
  ASSERT_STREQ(fmt(123e-20), "1.23e-18");
  ASSERT_STREQ(fmt(1e-7), "1e-7");
  ASSERT_STREQ(fmt(1.5e-7), "1.5e-7");
  ASSERT_STREQ(fmt(1e-6), "0.000001");
  ASSERT_STREQ(fmt(1.5e-6), "0.0000015");
  ASSERT_STREQ(fmt(0.00001), "0.00001");
}

TEST(large_integers) {
  ASSERT_STREQ(fmt(9007199254740992.0), "9007199254740992");
  ASSERT_STREQ(fmt(-9007199254740992.0), "-9007199254740992");
  ASSERT_STREQ(fmt(9007199254740994.0), "9007199254740994");
  ASSERT_STREQ(fmt(123456789012345.0), "123456789012345");
  ASSERT_STREQ(fmt(1e16), "10000000000000000");
  ASSERT_STREQ(fmt(18446744073709551616.0), "18446744073709552000");
  ASSERT_STREQ(fmt(9223372036854775807.0), "9223372036854776000");
}

TEST(extremes) {
  ASSERT_STREQ(fmt(1e300), "1e+300");
  ASSERT_STREQ(fmt(5e-324), "5e-324");
  ASSERT_STREQ(fmt(-5e-324), "-5e-324");
  ASSERT_STREQ(fmt(1.7976931348623157e308), "1.7976931348623157e+308");
  ASSERT_STREQ(fmt(2.2250738585072014e-308), "2.2250738585072014e-308");
  ASSERT_STREQ(fmt(2.225073858507201e-308), "2.225073858507201e-308");
  ASSERT_STREQ(fmt(1e-323), "1e-323");
  ASSERT_STREQ(fmt(1e23), "1e+23");
  ASSERT_STREQ(fmt(9.5e-322), "9.5e-322");
}

TEST(powers_of_two) {
  /* Values whose gap below is half the gap above: the shortest digits are
  ** not always the nearest ones at that precision (node agrees). */
  ASSERT_STREQ(fmt(ldexp(1.0, -44)), "5.684341886080802e-14");
  ASSERT_STREQ(fmt(ldexp(1.0, 60)), "1152921504606847000");
  ASSERT_STREQ(fmt(ldexp(1.0, 70)), "1.1805916207174113e+21");
  ASSERT_STREQ(fmt(ldexp(1.0, -1022)), "2.2250738585072014e-308");
  ASSERT_STREQ(fmt(ldexp(1.0, 1023)), "8.98846567431158e+307");
  ASSERT_STREQ(fmt(ldexp(1.0, 970)), "9.9792015476736e+291");
}

TEST(non_finite) {
  ASSERT_STREQ(fmt(NAN), "NaN");
  ASSERT_STREQ(fmt(-NAN), "NaN");
  ASSERT_STREQ(fmt(INFINITY), "Infinity");
  ASSERT_STREQ(fmt(-INFINITY), "-Infinity");
}

static uint64_t rng = UINT64_C(0x243F6A8885A308D3);

static uint64_t next64(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Significant digits in the output: first to last non-zero digit. */
static int sigdigits(const char *s) {
  int pos = 0, first = -1, last = -1;
  for (; *s && *s != 'e'; s++) {
    if (*s < '0' || *s > '9') continue;
    if (*s != '0') {
      if (first < 0) first = pos;
      last = pos;
    }
    pos++;
  }
  return first < 0 ? 0 : last - first + 1;
}

TEST(round_trip_random_bits) {
  char buf[HM_JSNUM_BUFSIZE];
  for (int i = 0; i < 400000; i++) {
    uint64_t bits = next64();
    double x;
    memcpy(&x, &bits, sizeof x);
    size_t n = hm_jsnum_format(x, buf);
    ASSERT(n < HM_JSNUM_BUFSIZE);
    if (isnan(x)) {
      ASSERT_STREQ(buf, "NaN");
      continue;
    }
    double y = strtod(buf, NULL);
    if (memcmp(&x, &y, sizeof x) != 0 && !(x == 0 && y == 0)) {
      fprintf(stderr, "%.17g -> %s -> %.17g\n", x, buf, y);
      ASSERT(0);
    }
    ASSERT(sigdigits(buf) <= 17);
  }
}

TEST(round_trip_short_decimals) {
  /* Decimals as people write them: the output must be the input text. */
  char in[64], buf[HM_JSNUM_BUFSIZE];
  for (int i = 0; i < 200000; i++) {
    uint64_t r = next64();
    int digits = 1 + (int)(r % 9);
    uint64_t m = (r >> 8) % 1000000000;
    int scale = 1 + (int)((r >> 40) % 8);
    snprintf(in, sizeof in, "%llu", (unsigned long long)(m % (uint64_t)pow(10, digits)));
    double x = strtod(in, NULL) / pow(10, scale);
    hm_jsnum_format(x, buf);
    double y = strtod(buf, NULL);
    ASSERT(x == y);
  }
}

TEST(locale_independent) {
  /* Only meaningful where a comma-decimal locale is installed. */
  const char *locs[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", NULL};
  for (int i = 0; locs[i]; i++) {
    if (setlocale(LC_NUMERIC, locs[i])) {
      ASSERT_STREQ(fmt(0.1 + 0.2), "0.30000000000000004");
      ASSERT_STREQ(fmt(1.5e-7), "1.5e-7");
      ASSERT_STREQ(fmt(322962.057579), "322962.057579");
      break;
    }
  }
  setlocale(LC_NUMERIC, "C");
}

/* The integer formatter of the request path against snprintf's, which it
** replaces: every boundary of the digit loop and of the sign. */
TEST(integers_as_snprintf) {
  static const long long v[] = {0, 1, -1, 9, 10, -10, 99, 100, 123456789,
                                -987654321, 9007199254740991LL,
                                -9007199254740991LL, LLONG_MAX, LLONG_MIN};
  char got[HM_JSNUM_BUFSIZE], want[32];
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    size_t n = hm_jsnum_int(v[i], got);
    snprintf(want, sizeof want, "%lld", v[i]);
    ASSERT_STREQ(got, want);
    ASSERT_EQ(n, strlen(want));
  }
}

int main(void) {
  RUN(integers_as_snprintf);
  RUN(zeros_and_small_integers);
  RUN(fractions);
  RUN(decimal_exponent_boundaries);
  RUN(large_integers);
  RUN(extremes);
  RUN(powers_of_two);
  RUN(non_finite);
  RUN(round_trip_random_bits);
  RUN(round_trip_short_decimals);
  RUN(locale_independent);
  TEST_EXIT();
}
