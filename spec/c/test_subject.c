/*
** test_subject.c: hm_subject against every rule of hm_subject.h, the
** length limits, and the escaping of the values shown in error messages.
*/
#include "hm_subject.h"
#include "hm_test.h"

static char err[1024];

/* Checks a C string (or, with n, n bytes) as `kind`. */
static hm_status chk(const char *s, hm_subject_kind kind) {
  return hm_subject_check(s, strlen(s), kind, NULL, 0, err, sizeof err);
}

static hm_status chkn(const char *s, size_t n, hm_subject_kind kind) {
  return hm_subject_check(s, n, kind, NULL, 0, err, sizeof err);
}

TEST(valid_names_pass) {
  static const char *const ok[] = {"a", "a.b", "math.add", "_INBOX.x.1",
                                   "a*b", "a>b", "x.*b", "caf\xc3\xa9.t",
                                   "a-b_c:d/e", "A.B.C.D.E.F"};
  size_t i;
  for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    ASSERT_EQ(chk(ok[i], HM_SUBJ_PUBLISH), HM_OK);
    ASSERT_EQ(chk(ok[i], HM_SUBJ_SUBSCRIBE), HM_OK);
    ASSERT_EQ(chk(ok[i], HM_SUBJ_REPLY), HM_OK);
    ASSERT_EQ(chk(ok[i], HM_SUBJ_QUEUE), HM_OK);
    ASSERT_STREQ(err, "");
  }
}

TEST(empty_is_refused) {
  ASSERT_EQ(chk("", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"\": is empty (NATS subjects cannot be "
                    "empty)");
  ASSERT_EQ(chk("", HM_SUBJ_QUEUE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid queue group \"\": is empty (NATS queue groups "
                    "cannot be empty)");
  ASSERT_EQ(hm_subject_check(NULL, 0, HM_SUBJ_REPLY, NULL, 0, err, sizeof err),
            HM_SUBJECT);
  ASSERT(strstr(err, "invalid reply subject") == err);
}

TEST(whitespace_is_refused_everywhere) {
  ASSERT_EQ(chk("a b", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a b\": contains a space at byte 2 "
                    "(NATS subjects have no whitespace)");
  ASSERT_EQ(chk("a\tb", HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a\\tb\": contains a tab at byte 2 "
                    "(NATS subjects have no whitespace)");
  ASSERT_EQ(chk("ab\r", HM_SUBJ_REPLY), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid reply subject \"ab\\r\": contains a carriage "
                    "return (CR) at byte 3 (NATS reply subjects have no "
                    "whitespace)");
  ASSERT_EQ(chk("\nq", HM_SUBJ_QUEUE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid queue group \"\\nq\": contains a line feed (LF) "
                    "at byte 1 (NATS queue groups have no whitespace)");
}

TEST(protocol_injection_is_refused_and_escaped) {
  ASSERT_EQ(chk("a\r\nPUB x 1\r\n", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a\\r\\nPUB x 1\\r\\n\": contains a "
                    "carriage return (CR) at byte 2 (NATS subjects have no "
                    "whitespace)");
}

TEST(control_bytes_nul_and_del_are_refused) {
  ASSERT_EQ(chkn("a\0b", 3, HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a\\0b\": contains a NUL byte at byte 2 "
                    "(NATS subjects have no control bytes)");
  ASSERT_EQ(chk("a\x07", HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a\\x07\": contains the control byte "
                    "0x07 at byte 2 (NATS subjects have no control bytes)");
  ASSERT_EQ(chk("x\x7f", HM_SUBJ_QUEUE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid queue group \"x\\x7f\": contains DEL (0x7f) at "
                    "byte 2 (NATS queue groups have no control bytes)");
  ASSERT_EQ(chk("\x1b[2J", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT(strstr(err, "0x1b at byte 1") != NULL);
}

TEST(empty_tokens_are_refused) {
  ASSERT_EQ(chk(".a", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \".a\": starts with a dot (NATS subjects "
                    "have no empty tokens)");
  ASSERT_EQ(chk("a.", HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a.\": ends with a dot (NATS subjects "
                    "have no empty tokens)");
  ASSERT_EQ(chk("a..b", HM_SUBJ_REPLY), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid reply subject \"a..b\": has two dots in a row at "
                    "byte 2 (NATS reply subjects have no empty tokens)");
  ASSERT_EQ(chk(".", HM_SUBJ_PUBLISH), HM_SUBJECT);
  /* Queue groups are one opaque name: dots are the server's business. */
  ASSERT_EQ(chk("queue..a.", HM_SUBJ_QUEUE), HM_OK);
}

TEST(wildcards_only_in_subscriptions) {
  ASSERT_EQ(chk("a.*", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a.*\": has the wildcard token \"*\" at "
                    "byte 3 (a publish subject must be literal: wildcards are "
                    "for subscriptions)");
  ASSERT_EQ(chk(">", HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_EQ(chk("*.b", HM_SUBJ_REPLY), HM_SUBJECT);
  ASSERT(strstr(err, "a reply subject must be literal") != NULL);
  ASSERT_EQ(chk("a.*.c", HM_SUBJ_SUBSCRIBE), HM_OK);
  ASSERT_EQ(chk("*", HM_SUBJ_SUBSCRIBE), HM_OK);
  ASSERT_EQ(chk("a.>", HM_SUBJ_SUBSCRIBE), HM_OK);
  ASSERT_EQ(chk(">", HM_SUBJ_SUBSCRIBE), HM_OK);
  ASSERT_EQ(chk("*.>", HM_SUBJ_SUBSCRIBE), HM_OK);
  ASSERT_EQ(chk("a.>.b", HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid subject \"a.>.b\": has \">\" at byte 3 before the "
                    "last token (\">\" may only be the last token)");
  ASSERT_EQ(chk(">.b", HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  /* Inside a token they are plain characters. */
  ASSERT_EQ(chk("a.b*.>c", HM_SUBJ_PUBLISH), HM_OK);
}

TEST(length_limit_and_its_message) {
  static char big[10 * 1024 + 1];
  memset(big, 'a', sizeof big - 1);
  ASSERT_EQ(chkn(big, HM_SUBJECT_MAX, HM_SUBJ_PUBLISH), HM_OK);
  ASSERT_EQ(chkn(big, HM_SUBJECT_MAX + 1, HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT_EQ(chkn(big, 10240, HM_SUBJ_SUBSCRIBE), HM_SUBJECT);
  /* The value is cut at 64 bytes, the length and the limit are named. */
  ASSERT_STREQ(err, "invalid subject "
                    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""
                    "... (10240 bytes): is 10240 bytes, over the limit of 4032 "
                    "(so the NATS protocol line stays within nats-server's "
                    "max_control_line of 4096 bytes)");
  ASSERT(strlen(err) < 300);
  /* A caller's own budget and field name. */
  ASSERT_EQ(hm_subject_check("abcdef", 6, HM_SUBJ_PUBLISH, "topic", 5, err,
                             sizeof err), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid topic \"abcdef\": is 6 bytes, over the limit of 5 "
                    "(so the NATS protocol line stays within nats-server's "
                    "max_control_line of 4096 bytes)");
  /* A huge value full of control bytes: still a short message. */
  memset(big, '\r', sizeof big - 1);
  ASSERT_EQ(chkn(big, sizeof big - 1, HM_SUBJ_PUBLISH), HM_SUBJECT);
  ASSERT(strlen(err) < 500);
  ASSERT(strstr(err, "... (10240 bytes)") != NULL);
}

TEST(line_checks_both_names_and_their_sum) {
  static char big[4096];
  memset(big, 'b', sizeof big);
  ASSERT_EQ(hm_subject_check_line("a.b", 3, HM_SUBJ_PUBLISH, "_INBOX.x.1", 10,
                                  err, sizeof err), HM_OK);
  ASSERT_EQ(hm_subject_check_line("a.b", 3, HM_SUBJ_PUBLISH, NULL, 0, err,
                                  sizeof err), HM_OK);
  ASSERT_EQ(hm_subject_check_line("a.b", 3, HM_SUBJ_PUBLISH, "r.*", 3, err,
                                  sizeof err), HM_SUBJECT);
  ASSERT(strstr(err, "invalid reply subject \"r.*\"") == err);
  ASSERT_EQ(hm_subject_check_line("a.*", 3, HM_SUBJ_SUBSCRIBE, "q 1", 3, err,
                                  sizeof err), HM_SUBJECT);
  ASSERT_STREQ(err, "invalid queue group \"q 1\": contains a space at byte 2 "
                    "(NATS queue groups have no whitespace)");
  ASSERT_EQ(hm_subject_check_line("a b", 3, HM_SUBJ_SUBSCRIBE, "q", 1, err,
                                  sizeof err), HM_SUBJECT);
  ASSERT(strstr(err, "invalid subject \"a b\"") == err);
  /* Each fits alone, together they do not: a SUB line with its queue. */
  ASSERT_EQ(hm_subject_check_line(big, 2000, HM_SUBJ_SUBSCRIBE, big, 2032,
                                  err, sizeof err), HM_OK);
  ASSERT_EQ(hm_subject_check_line(big, 2000, HM_SUBJ_SUBSCRIBE, big, 2033,
                                  err, sizeof err), HM_SUBJECT);
  ASSERT(strstr(err, "is 2000 bytes, and with its queue group (2033 bytes) "
                     "that is 4033, over the limit of 4032 for both") != NULL);
  ASSERT_EQ(hm_subject_check_line(big, 4000, HM_SUBJ_PUBLISH, big, 40, err,
                                  sizeof err), HM_SUBJECT);
  ASSERT(strstr(err, "with its reply subject (40 bytes)") != NULL);
}

TEST(quote_escapes_and_cuts) {
  char out[512];
  ASSERT_STREQ(hm_subject_quote("a\"b\\c", 5, 64, out, sizeof out),
               "\"a\\\"b\\\\c\"");
  ASSERT_STREQ(hm_subject_quote("\xc3\xa9\x01", 3, 64, out, sizeof out),
               "\"\\xc3\\xa9\\x01\"");
  ASSERT_STREQ(hm_subject_quote("abcdef", 6, 3, out, sizeof out),
               "\"abc\"... (6 bytes)");
  /* A small buffer is never overrun and always terminated. */
  memset(out, 'Z', sizeof out);
  hm_subject_quote("\r\r\r\r\r\r\r\r\r\r\r\r", 12, 64, out, 12);
  ASSERT(memchr(out, '\0', 12) != NULL);
  ASSERT_EQ(out[12], 'Z');
  hm_subject_quote("abc", 3, 64, out, 1);
  ASSERT_STREQ(out, "");
  /* A tiny err buffer: truncated, terminated, still HM_SUBJECT. */
  {
    char small[8];
    ASSERT_EQ(hm_subject_check("a b", 3, HM_SUBJ_PUBLISH, NULL, 0, small,
                               sizeof small), HM_SUBJECT);
    ASSERT_STREQ(small, "invalid");
    ASSERT_EQ(hm_subject_check("a b", 3, HM_SUBJ_PUBLISH, NULL, 0, NULL, 0),
              HM_SUBJECT);
  }
}

TEST(status_text_is_in_sync) {
  ASSERT_STREQ(hm_status_name(HM_SUBJECT), "HM_SUBJECT");
  ASSERT_STREQ(hm_status_text(HM_SUBJECT), "invalid subject");
}

int main(void) {
  RUN(valid_names_pass);
  RUN(empty_is_refused);
  RUN(whitespace_is_refused_everywhere);
  RUN(protocol_injection_is_refused_and_escaped);
  RUN(control_bytes_nul_and_del_are_refused);
  RUN(empty_tokens_are_refused);
  RUN(wildcards_only_in_subscriptions);
  RUN(length_limit_and_its_message);
  RUN(line_checks_both_names_and_their_sum);
  RUN(quote_escapes_and_cuts);
  RUN(status_text_is_in_sync);
  TEST_EXIT();
}
