/*
** hm_jsnum.h: format a double exactly as JavaScript's Number#toString does
** (shortest round-trip digits; "3" not "3.0"; exponent form below 1e-6 and
** from 1e21; "NaN", "Infinity", "-Infinity"; -0 prints "0").
** Pure function, any thread.
*/
#ifndef HM_JSNUM_H
#define HM_JSNUM_H

#include <stddef.h>

#define HM_JSNUM_BUFSIZE 32

/* Writes a NUL-terminated string into buf (at least HM_JSNUM_BUFSIZE bytes)
** and returns its length. */
size_t hm_jsnum_format(double x, char *buf);

/* The decimal digits of an integer (a leading '-' when negative), as
** String(n) gives for a safe integer: NUL-terminated into buf (at least
** HM_JSNUM_BUFSIZE bytes), returns the length. snprintf's "%lld" costs
** about 700 instructions a call, and the request path formats several. */
size_t hm_jsnum_int(long long v, char *buf);

#endif
