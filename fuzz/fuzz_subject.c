/*
** fuzz_subject.c: hm_subject against the rules of hm_subject.h spelled
** out as plainly as possible, for every kind, and the error text's own
** promises (terminated, nothing unescaped, the value cut).
**
** Input: a kind byte, a split byte (where the line check cuts the rest
** into subject and reply/queue), then the bytes of the name. Any
** difference or broken promise aborts.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hm_subject.h"

static int plain_ok(const uint8_t *s, size_t n, hm_subject_kind kind,
                    size_t budget) {
  size_t i, start = 0;
  if (n == 0 || n > budget) return 0;
  for (i = 0; i < n; i++)
    if (s[i] <= 0x20 || s[i] == 0x7f) return 0;
  if (kind == HM_SUBJ_QUEUE) return 1;
  for (i = 0; i <= n; i++) {
    if (i < n && s[i] != '.') continue;
    size_t len = i - start;
    if (len == 0) return 0; /* empty token */
    if (len == 1 && (s[start] == '*' || s[start] == '>')) {
      if (kind != HM_SUBJ_SUBSCRIBE) return 0;
      if (s[start] == '>' && i != n) return 0; /* '>' only last */
    }
    start = i + 1;
  }
  return 1;
}

static void check_text(const char *err, size_t cap) {
  size_t len = strnlen(err, cap);
  if (len == cap) abort(); /* not terminated */
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)err[i];
    if (b < 0x20 || b == 0x7f || b >= 0x80) abort(); /* shown raw */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const hm_subject_kind kinds[] = {HM_SUBJ_PUBLISH, HM_SUBJ_SUBSCRIBE,
                                          HM_SUBJ_REPLY, HM_SUBJ_QUEUE};
  char err[768];
  if (size < 2) return 0;
  hm_subject_kind kind = kinds[data[0] % 4];
  size_t split = data[1];
  const uint8_t *s = data + 2;
  size_t n = size - 2;
  hm_status st = hm_subject_check((const char *)s, n, kind, "name", 0, err,
                                  sizeof err);
  if ((st == HM_OK) != plain_ok(s, n, kind, HM_SUBJECT_MAX)) abort();
  if (st != HM_OK) check_text(err, sizeof err);
  /* A small budget: the same rules, a shorter limit. */
  st = hm_subject_check((const char *)s, n, kind, NULL, 16, err, sizeof err);
  if ((st == HM_OK) != plain_ok(s, n, kind, 16)) abort();
  if (st != HM_OK) check_text(err, sizeof err);
  /* One protocol line: subject and its reply (publish) or queue
  ** (subscribe) share the limit. */
  if (kind == HM_SUBJ_PUBLISH || kind == HM_SUBJ_SUBSCRIBE) {
    size_t cut = split < n ? split : n;
    const uint8_t *o = s + cut;
    size_t on = n - cut;
    hm_subject_kind ok = kind == HM_SUBJ_PUBLISH ? HM_SUBJ_REPLY : HM_SUBJ_QUEUE;
    st = hm_subject_check_line((const char *)s, cut, kind,
                               on ? (const char *)o : NULL, on, err, sizeof err);
    int want = plain_ok(s, cut, kind, HM_SUBJECT_MAX) &&
               (on == 0 || plain_ok(o, on, ok, HM_SUBJECT_MAX)) &&
               cut + on <= HM_SUBJECT_MAX;
    if ((st == HM_OK) != want) abort();
    if (st != HM_OK) check_text(err, sizeof err);
  }
  return 0;
}
