/*
** hm_nuid.h: NUID-style ids: 22 characters of [0-9A-Z], a 12-character
** random prefix and a 10-character sequence that advances by a random
** increment, re-randomizing the prefix when the sequence overflows.
** One hm_nuid_t per thread; hm_nuid_next is not thread-safe.
*/
#ifndef HM_NUID_H
#define HM_NUID_H

#include <stdint.h>

#define HM_NUID_LEN 22

typedef struct hm_nuid {
  char pre[12];
  int64_t seq;
  int64_t inc;
} hm_nuid_t;

/* Seeds from the OS random source. */
void hm_nuid_init(hm_nuid_t *n);
/* Writes HM_NUID_LEN characters plus a NUL into out. */
void hm_nuid_next(hm_nuid_t *n, char out[HM_NUID_LEN + 1]);

#endif
