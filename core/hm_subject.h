/*
** hm_subject.h: the rules a NATS subject, reply subject or queue group
** must follow before it may reach cnats.
**
** Why this exists: cnats 3.4 writes a publish subject into the protocol
** line unchecked, so a subject holding CR/LF injects protocol (a second
** PUB, an UNSUB of the caller's own inbox), a space or tab shifts the
** arguments and the server drops the connection, and a line longer than
** the server's max_control_line closes the connection; with reconnects on,
** cnats replays the same SUB line and the connection dies again, for good.
**
** Rules (nats-server's, plus the two we add on purpose, marked *):
** - not empty; no whitespace (space, tab, CR, LF), no control byte
**   (0x00-0x1f, NUL included) and no DEL (0x7f); bytes >= 0x80 (UTF-8) are
**   fine;
** - subjects: no empty token (no leading or trailing dot, no "..");
** - publish and reply subjects: no wildcard token ("*" or ">" as a whole
**   token)*: nats-server accepts them outside pedantic mode and routes
**   them in surprising ways; "a*b" is a literal token and fine;
** - subscribe subjects: "*" as a whole token anywhere, ">" only as the
**   last token;
** - queue groups: one name without whitespace or control bytes (dots are
**   fine: Hemera's are "queue.<topic>");
** - length*: a subject together with what shares its protocol line (the
**   reply subject of a PUB, the queue group of a SUB) is at most
**   HM_SUBJECT_MAX bytes, so that the whole line ("HPUB <subject> <reply>
**   <hdr> <size>\r\n", "SUB <subject> <queue> <sid>\r\n") stays within
**   nats-server's default max_control_line of 4096 bytes. The reserve of
**   64 bytes covers the verb, the spaces, a 20-digit sid or two 10-digit
**   sizes and the CRLF with room to spare.
**
** Pure C: no Lua, no libuv, no cnats; any thread.
*/
#ifndef HM_SUBJECT_H
#define HM_SUBJECT_H

#include <stddef.h>

#include "hm_status.h"

#define HM_SUBJECT_MAX_LINE 4096 /* nats-server's default max_control_line */
#define HM_SUBJECT_LINE_RESERVE 64
/* Subject plus reply subject or queue group, in bytes. */
#define HM_SUBJECT_MAX (HM_SUBJECT_MAX_LINE - HM_SUBJECT_LINE_RESERVE)
/* How much of an offending value an error message shows. */
#define HM_SUBJECT_SHOW 64

typedef enum {
  HM_SUBJ_PUBLISH = 1, /* a PUB subject (also a request's subject) */
  HM_SUBJ_SUBSCRIBE,   /* a SUB subject: wildcards allowed */
  HM_SUBJ_REPLY,       /* a reply subject: literal, like a publish one */
  HM_SUBJ_QUEUE        /* a queue group name */
} hm_subject_kind;

/* Checks `len` bytes at `s` (which may hold NULs: they are reported, so
** pass the length the caller really has, e.g. Lua's) as a name of `kind`.
** `field` names it in the message ("subject", "reply subject", "topic",
** ...; NULL: the kind's own name). `budget` is the most bytes it may take
** (0: HM_SUBJECT_MAX); callers checking a protocol line pass
** HM_SUBJECT_MAX minus what shares the line, see hm_subject_check_line.
** Returns HM_OK, or HM_SUBJECT with one line in err (always terminated
** when errlen > 0), e.g.
**   invalid subject "a b": contains a space at byte 2 (NATS subjects have
**   no whitespace)
** The value is shown escaped (\r \n \t \0 \" \\ \xHH) and cut after
** HM_SUBJECT_SHOW bytes, so no caller data is echoed whole. */
hm_status hm_subject_check(const char *s, size_t len, hm_subject_kind kind,
                           const char *field, size_t budget, char *err,
                           size_t errlen);

/* Checks both names of one protocol line and their combined length:
** `subject` as `kind` (HM_SUBJ_PUBLISH or HM_SUBJ_SUBSCRIBE) and `other`
** (may be NULL) as the reply subject (publish) or queue group (subscribe).
** The message names which of the two broke which rule. */
hm_status hm_subject_check_line(const char *subject, size_t slen,
                                hm_subject_kind kind, const char *other,
                                size_t olen, char *err, size_t errlen);

/* Writes `len` bytes of `s` into out (size outlen, always terminated when
** outlen > 0) quoted and escaped as the messages above show them, cut
** after `show` bytes (then `..."` and the full length follow). Returns out. */
char *hm_subject_quote(const char *s, size_t len, size_t show, char *out,
                       size_t outlen);

#endif
