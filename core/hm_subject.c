/*
** hm_subject.c: NATS subject, reply subject and queue group rules (see
** hm_subject.h for the rules and why).
*/
#include "hm_subject.h"

#include <stdio.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

char *hm_subject_quote(const char *s, size_t len, size_t show, char *out,
                       size_t outlen) {
  static const char hex[] = "0123456789abcdef";
  size_t i, o = 0, n = len < show ? len : show;
  char tmp[5];
  if (outlen == 0) return out;
  /* Room for one escape (4), the closing quote, "..." and the NUL. */
#define PUT(str)                                               \
  do {                                                         \
    const char *p_ = (str);                                    \
    while (*p_ && o + 1 < outlen) out[o++] = *p_++;            \
  } while (0)
  PUT("\"");
  for (i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    if (o + 4 + 5 >= outlen) break; /* keep room to close the quote */
    switch (b) {
      case '\r': PUT("\\r"); continue;
      case '\n': PUT("\\n"); continue;
      case '\t': PUT("\\t"); continue;
      case '\0': PUT("\\0"); continue;
      case '"': PUT("\\\""); continue;
      case '\\': PUT("\\\\"); continue;
      default: break;
    }
    if (b < 0x20 || b >= 0x7f) {
      /* Bytes >= 0x80 too: a cut could split a UTF-8 sequence, and logs
      ** should get plain ASCII. */
      tmp[0] = '\\';
      tmp[1] = 'x';
      tmp[2] = hex[b >> 4];
      tmp[3] = hex[b & 15];
      tmp[4] = '\0';
      PUT(tmp);
    } else {
      out[o++] = (char)b;
    }
  }
  PUT("\"");
  out[o] = '\0';
  if (i < len) {
    /* Cut: say so, and how long the whole value was. */
    snprintf(out + o, outlen - o, "... (%zu bytes)", len);
  }
#undef PUT
  return out;
}

static const char *kind_field(hm_subject_kind kind) {
  switch (kind) {
    case HM_SUBJ_REPLY: return "reply subject";
    case HM_SUBJ_QUEUE: return "queue group";
    default: return "subject";
  }
}

static const char *kind_plural(hm_subject_kind kind) {
  switch (kind) {
    case HM_SUBJ_REPLY: return "reply subjects";
    case HM_SUBJ_QUEUE: return "queue groups";
    default: return "subjects";
  }
}

/* Writes `invalid <field> <quoted>: <rule>` into err. */
static hm_status fail(const char *s, size_t len, const char *field,
                      char *err, size_t errlen, const char *rule) {
  char q[HM_SUBJECT_SHOW * 4 + 48];
  if (errlen > 0) {
    hm_subject_quote(s, len, HM_SUBJECT_SHOW, q, sizeof q);
    snprintf(err, errlen, "invalid %s %s: %s", field, q, rule);
  }
  return HM_SUBJECT;
}

/* Names a byte no subject may hold, or NULL when it is fine; *ws says
** whether it counts as whitespace (for the rule's wording). */
static const char *bad_byte(unsigned char b, int *ws, char *buf,
                            size_t buflen) {
  *ws = 1;
  switch (b) {
    case ' ': return "a space";
    case '\t': return "a tab";
    case '\r': return "a carriage return (CR)";
    case '\n': return "a line feed (LF)";
    default: break;
  }
  *ws = 0;
  if (b == 0) return "a NUL byte";
  if (b == 0x7f) return "DEL (0x7f)";
  if (b < 0x20) {
    snprintf(buf, buflen, "the control byte 0x%02x", b);
    return buf;
  }
  return NULL;
}

/* Byte classes for plain(): 0 ordinary, 1 never in a name (whitespace,
** control bytes, DEL), 2 '.', 3 a wildcard character. */
static const unsigned char bytecls[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, /* ' ' '*' '.' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, /* '>' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* DEL */
};

/* Whether s is a name every kind accepts: no bad byte, no empty token, no
** wildcard character at all. Every message published goes through here,
** twice on a request (subject and reply). Anything else takes the full
** check below, which says exactly what is wrong. An empty token is a '.'
** first, last, or right after another. */
static int plain(const unsigned char *s, size_t len, size_t budget) {
  size_t i = 0;
  unsigned prevdot = 1; /* a '.' first is an empty token */
  if (len == 0 || len > budget || s[len - 1] == '.') return 0;
#ifdef __SSE2__
  /* 16 bytes a step: a bad byte is < 0x21 (unsigned), DEL or a wildcard
  ** character; dots only matter next to each other. */
  const __m128i c21 = _mm_set1_epi8(0x21), del = _mm_set1_epi8(0x7f),
                star = _mm_set1_epi8('*'), gt = _mm_set1_epi8('>'),
                dot = _mm_set1_epi8('.');
  for (; i + 16 <= len; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
    __m128i ok = _mm_cmpeq_epi8(_mm_max_epu8(v, c21), v);
    __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(v, del),
                               _mm_or_si128(_mm_cmpeq_epi8(v, star),
                                            _mm_cmpeq_epi8(v, gt)));
    if (((unsigned)_mm_movemask_epi8(ok) ^ 0xffffu) |
        (unsigned)_mm_movemask_epi8(bad))
      return 0;
    unsigned dots = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dot));
    if (dots & ((dots << 1) | prevdot)) return 0;
    prevdot = dots >> 15;
  }
#endif
  for (; i < len; i++) {
    unsigned c = bytecls[s[i]];
    if (c == 0) {
      prevdot = 0;
      continue;
    }
    if (c != 2 || prevdot) return 0;
    prevdot = 1;
  }
  return 1;
}

hm_status hm_subject_check(const char *s, size_t len, hm_subject_kind kind,
                           const char *field, size_t budget, char *err,
                           size_t errlen) {
  if (budget == 0) budget = HM_SUBJECT_MAX;
  if (s != NULL && plain((const unsigned char *)s, len, budget)) {
    if (errlen > 0) err[0] = '\0';
    return HM_OK;
  }
  char rule[256], what[32];
  const char *plural = kind_plural(kind);
  size_t i, tok = 0; /* start of the current token */
  if (field == NULL) field = kind_field(kind);
  if (errlen > 0) err[0] = '\0';
  if (s == NULL || len == 0) {
    snprintf(rule, sizeof rule, "is empty (NATS %s cannot be empty)", plural);
    return fail("", 0, field, err, errlen, rule);
  }
  /* Bytes that break the protocol line first: they are what an injection
  ** attempt looks like, whatever else is wrong with the value. */
  for (i = 0; i < len; i++) {
    int ws;
    const char *b = bad_byte((unsigned char)s[i], &ws, what, sizeof what);
    if (b != NULL) {
      snprintf(rule, sizeof rule, "contains %s at byte %zu (NATS %s have no %s)",
               b, i + 1, plural, ws ? "whitespace" : "control bytes");
      return fail(s, len, field, err, errlen, rule);
    }
  }
  if (len > budget) {
    snprintf(rule, sizeof rule,
             "is %zu bytes, over the limit of %zu (so the NATS protocol line "
             "stays within nats-server's max_control_line of %d bytes)",
             len, budget, HM_SUBJECT_MAX_LINE);
    return fail(s, len, field, err, errlen, rule);
  }
  /* A queue group is one opaque name to the server: dots mean nothing. */
  if (kind == HM_SUBJ_QUEUE) return HM_OK;
  for (i = 0; i <= len; i++) {
    size_t tlen;
    if (i < len && s[i] != '.') continue;
    tlen = i - tok;
    if (tlen == 0) {
      if (tok == 0)
        snprintf(rule, sizeof rule,
                 "starts with a dot (NATS %s have no empty tokens)", plural);
      else if (i == len)
        snprintf(rule, sizeof rule,
                 "ends with a dot (NATS %s have no empty tokens)", plural);
      else
        snprintf(rule, sizeof rule,
                 "has two dots in a row at byte %zu (NATS %s have no empty "
                 "tokens)", i, plural);
      return fail(s, len, field, err, errlen, rule);
    }
    if (tlen == 1 && (s[tok] == '*' || s[tok] == '>')) {
      if (kind != HM_SUBJ_SUBSCRIBE) {
        snprintf(rule, sizeof rule,
                 "has the wildcard token \"%c\" at byte %zu (a %s must be "
                 "literal: wildcards are for subscriptions)",
                 s[tok], tok + 1,
                 kind == HM_SUBJ_REPLY ? "reply subject" : "publish subject");
        return fail(s, len, field, err, errlen, rule);
      }
      if (s[tok] == '>' && i < len) {
        snprintf(rule, sizeof rule,
                 "has \">\" at byte %zu before the last token (\">\" may only "
                 "be the last token)", tok + 1);
        return fail(s, len, field, err, errlen, rule);
      }
    }
    tok = i + 1;
  }
  return HM_OK;
}

hm_status hm_subject_check_line(const char *subject, size_t slen,
                                hm_subject_kind kind, const char *other,
                                size_t olen, char *err, size_t errlen) {
  hm_subject_kind okind =
      kind == HM_SUBJ_SUBSCRIBE ? HM_SUBJ_QUEUE : HM_SUBJ_REPLY;
  char rule[256];
  hm_status st;
  /* Each alone first, so a bad reply is blamed on the reply. */
  st = hm_subject_check(subject, slen, kind, NULL, 0, err, errlen);
  if (st != HM_OK || other == NULL) return st;
  st = hm_subject_check(other, olen, okind, NULL, 0, err, errlen);
  if (st != HM_OK) return st;
  if (slen + olen > HM_SUBJECT_MAX) {
    snprintf(rule, sizeof rule,
             "is %zu bytes, and with its %s (%zu bytes) that is %zu, over the "
             "limit of %d for both (so the NATS protocol line stays within "
             "nats-server's max_control_line of %d bytes)",
             slen, kind_field(okind), olen, slen + olen, HM_SUBJECT_MAX,
             HM_SUBJECT_MAX_LINE);
    return fail(subject, slen, kind_field(kind), err, errlen, rule);
  }
  return HM_OK;
}
