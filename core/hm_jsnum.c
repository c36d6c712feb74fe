/*
** hm_jsnum.c: JavaScript Number#toString for doubles.
**
** The digits come from printf "%.*e" at the smallest precision that strtod
** reads back as the same double. Neither call may see a decimal point: the
** digits are picked out of printf's output whatever separator the locale
** uses, and strtod gets an integer mantissa with an exponent ("12345e-3"),
** which every locale parses the same way.
*/
#include "hm_jsnum.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes v backwards ending at `end`; returns the first character. */
static char *utoa(uint64_t v, char *end) {
  do {
    *--end = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return end;
}

size_t hm_jsnum_int(long long v, char *buf) {
  char tmp[24];
  char *p = utoa(v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v,
                 tmp + sizeof tmp);
  size_t n;
  if (v < 0) *--p = '-';
  n = (size_t)(tmp + sizeof tmp - p);
  memcpy(buf, p, n);
  buf[n] = '\0';
  return n;
}

/* The `prec` most significant digits of ax (> 0), rounded to nearest, into
** dig; *e10 gets the exponent of the first digit (ax ~ d.ddd * 10^e10). */
static void getdigits(double ax, int prec, char *dig, int *e10) {
  char tmp[64];
  int n = snprintf(tmp, sizeof tmp, "%.*e", prec - 1, ax);
  int i = 0, k = 0;
  for (; i < n && tmp[i] != 'e'; i++)
    if (tmp[i] >= '0' && tmp[i] <= '9') dig[k++] = tmp[i];
  i++;  /* skip 'e' */
  int neg = tmp[i] == '-';
  int e = 0;
  for (i++; i < n; i++) e = e * 10 + (tmp[i] - '0');
  *e10 = neg ? -e : e;
}

static int readsback(const char *dig, int k, int e10, double ax) {
  char tmp[64];
  memcpy(tmp, dig, (size_t)k);
  int e = e10 - (k - 1);
  char *p = tmp + k;
  *p++ = 'e';
  if (e < 0) {
    *p++ = '-';
    e = -e;
  }
  char num[8];
  char *s = utoa((uint64_t)e, num + sizeof num);
  size_t sl = (size_t)(num + sizeof num - s);
  memcpy(p, s, sl);
  p[sl] = '\0';
  return strtod(tmp, NULL) == ax;
}

/* Adds one unit in the last of k digits; returns the new count (the carry
** out of "99" gives "1" with a higher exponent). */
static int bumpup(char *dig, int k, int *e10) {
  int i = k - 1;
  while (i >= 0 && dig[i] == '9') dig[i--] = '0';
  if (i >= 0) {
    dig[i]++;
    return k;
  }
  dig[0] = '1';
  (*e10)++;
  return 1;
}

static const double pow10tab[23] = {
  1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The usual payload number (a timestamp, a price) has few decimals; this
** finds them without printf. For j = 1, 2, ... let m be ax * 10^j rounded
** to an integer. While m < 10^15 (< 2^50) the product's rounding error is
** under 0.375, so m is the nearest integer to the exact product; and
** m / 10^j (both exact, one correctly rounded division) equals what strtod
** makes of the decimal "m e-j". So the first j that gives back ax has the
** fewest fractional digits, hence the fewest significant digits (at most
** 15, so no tie across a power of ten), and m is the nearest such decimal,
** as ECMA-262 asks. Returns the digit count, or 0 to fall back. */
static int fewdecimals(double ax, char *dig, int *e10) {
  if (ax < 1e-7 || ax >= 1e15) return 0;
  for (int j = 1; j <= 22; j++) {
    double y = ax * pow10tab[j];
    if (y >= 1e15) return -1;  /* no decimal of <= 15 digits reads back */
    double m = nearbyint(y);
    if (m != 0 && m / pow10tab[j] == ax) {
      char tmp[24];
      char *s = utoa((uint64_t)m, tmp + sizeof tmp);
      int k = (int)(tmp + sizeof tmp - s);
      memcpy(dig, s, (size_t)k);
      *e10 = k - 1 - j;
      return k;
    }
  }
  return 0;
}

/* The nearest prec-digit decimal (prec 15 or 16), cut from the 17 digits in
** d17 when that is safe: a cut right at "5" or "50" may be a rounded-up
** 4999.. or a tie, so printf settles those. */
static int nearest(double ax, const char *d17, int e17, int prec, char *dig,
                   int *e10) {
  int half = prec == 16 ? d17[16] == '5'
                        : (d17[15] == '5' && d17[16] == '0');
  if (half) {
    getdigits(ax, prec, dig, e10);
    return prec;
  }
  memcpy(dig, d17, (size_t)prec);
  *e10 = e17;
  if (d17[prec] >= '5') return bumpup(dig, prec, e10);
  return prec;
}

/* Shortest digits of ax (finite, > 0); returns their count. */
static int shortest(double ax, char *dig, int *e10) {
  int k = fewdecimals(ax, dig, e10);
  if (k > 0) return k;
  int from = k < 0 ? 16 : 15;
  uint64_t bits;
  memcpy(&bits, &ax, sizeof bits);
  uint64_t frac = bits & ((UINT64_C(1) << 52) - 1);
  uint64_t bexp = bits >> 52;
  if (bexp > 1 && frac != 0) {
    /* A normal double is at least 15 digits precise, so any decimal of up
    ** to 15 digits that maps to it is its nearest 15-digit decimal with
    ** trailing zeros: one try at 15 settles every length up to 15. */
    char d17[20];
    int e17;
    getdigits(ax, 17, d17, &e17);
    for (int prec = from; prec <= 16; prec++) {
      k = nearest(ax, d17, e17, prec, dig, e10);
      if (readsback(dig, k, *e10, ax)) {
        while (k > 1 && dig[k - 1] == '0') k--;
        return k;
      }
    }
    memcpy(dig, d17, 17);
    *e10 = e17;
    return 17;
  }
  /* Subnormals have fewer digits than 15 to spare, and a power of two has
  ** a gap below it half the size of the gap above, so the nearest short
  ** decimal may miss while the next one up still reads back (JS takes the
  ** shorter); walk every precision for these rare values. */
  for (k = 1; k < 17; k++) {
    getdigits(ax, k, dig, e10);
    if (readsback(dig, k, *e10, ax)) break;
    if (frac == 0) {
      char up[20];
      int ue = *e10;
      memcpy(up, dig, (size_t)k);
      int uk = bumpup(up, k, &ue);
      if (uk == k && readsback(up, uk, ue, ax)) {
        memcpy(dig, up, (size_t)k);
        *e10 = ue;
        break;
      }
    }
  }
  if (k == 17) getdigits(ax, 17, dig, e10);
  while (k > 1 && dig[k - 1] == '0') k--;
  return k;
}

size_t hm_jsnum_format(double x, char *buf) {
  if (isnan(x)) {
    memcpy(buf, "NaN", 4);
    return 3;
  }
  char *p = buf;
  if (x < 0) {
    *p++ = '-';
    x = -x;
  }
  if (isinf(x)) {
    memcpy(p, "Infinity", 9);
    return (size_t)(p - buf) + 8;
  }
  if (x == 0) {  /* -0 too: JS prints both as "0" */
    buf[0] = '0';
    buf[1] = '\0';
    return 1;
  }
  /* Integers below 2^53 are their own shortest digits, and are common. */
  if (x < 9007199254740992.0 && x == (double)(int64_t)x) {
    char tmp[24];
    char *s = utoa((uint64_t)x, tmp + sizeof tmp);
    size_t l = (size_t)(tmp + sizeof tmp - s);
    memcpy(p, s, l);
    p[l] = '\0';
    return (size_t)(p - buf) + l;
  }
  char dig[20];
  int e10;
  int k = shortest(x, dig, &e10);
  int n = e10 + 1;  /* ECMA-262: value = 0.d1..dk * 10^n */
  if (k <= n && n <= 21) {
    memcpy(p, dig, (size_t)k);
    memset(p + k, '0', (size_t)(n - k));
    p += n;
  } else if (0 < n && n <= 21) {
    memcpy(p, dig, (size_t)n);
    p[n] = '.';
    /* n < k <= 17 here (the branch above took k <= n), so dig + n is in dig. */
    // cppcheck-suppress pointerOutOfBoundsCond
    memcpy(p + n + 1, dig + n, (size_t)(k - n));
    p += k + 1;
  } else if (-6 < n && n <= 0) {
    *p++ = '0';
    *p++ = '.';
    memset(p, '0', (size_t)-n);
    p += -n;
    memcpy(p, dig, (size_t)k);
    p += k;
  } else {
    *p++ = dig[0];
    if (k > 1) {
      *p++ = '.';
      memcpy(p, dig + 1, (size_t)(k - 1));
      p += k - 1;
    }
    *p++ = 'e';
    int e = n - 1;
    *p++ = e < 0 ? '-' : '+';
    char tmp[8];
    char *s = utoa((uint64_t)(e < 0 ? -e : e), tmp + sizeof tmp);
    size_t l = (size_t)(tmp + sizeof tmp - s);
    memcpy(p, s, l);
    p += l;
  }
  *p = '\0';
  return (size_t)(p - buf);
}
