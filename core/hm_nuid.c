/*
** hm_nuid.c: NUID ids as nats-io/nuid makes them (the generator behind
** Hemera's Util.randomId): base-36 digits, 12 random prefix characters and
** a 10-digit sequence that starts at a random point and steps by a random
** increment in [33, 333), so consecutive ids are neither guessable nor
** equal across processes.
*/
#include "hm_nuid.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char digits[36] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

#define PRELEN 12
#define SEQLEN 10
#define MAXSEQ INT64_C(3656158440062976) /* 36^10 */
#define MININC 33
#define MAXINC 333

static _Thread_local uint64_t mixfallback;

/* splitmix64: only used if the OS gives us no randomness at all. */
static uint64_t splitmix(void) {
  uint64_t z = (mixfallback += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static void fillrandom(void *p, size_t len) {
  unsigned char *b = p;
  size_t got = 0;
  while (got < len) {
    ssize_t r = getrandom(b + got, len - got, 0);
    if (r > 0) {
      got += (size_t)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  if (got < len) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      while (got < len) {
        ssize_t r = read(fd, b + got, len - got);
        if (r > 0) got += (size_t)r;
        else if (!(r < 0 && errno == EINTR)) break;
      }
      close(fd);
    }
  }
  if (got < len) {
    /* Ids must still differ between processes and calls. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mixfallback ^= (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                   ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)p;
    for (; got < len; got++) b[got] = (unsigned char)splitmix();
  }
}

static void newprefix(hm_nuid_t *n) {
  unsigned char rnd[PRELEN];
  fillrandom(rnd, sizeof rnd);
  /* 256 % 36 != 0, so a byte modulo 36 favours the first 4 digits
  ** slightly; NUID accepts the same bias. */
  for (int i = 0; i < PRELEN; i++) n->pre[i] = digits[rnd[i] % 36];
}

static void newsequence(hm_nuid_t *n) {
  uint64_t r[2];
  fillrandom(r, sizeof r);
  n->seq = (int64_t)(r[0] % (uint64_t)MAXSEQ);
  n->inc = MININC + (int64_t)(r[1] % (uint64_t)(MAXINC - MININC));
}

void hm_nuid_init(hm_nuid_t *n) {
  newprefix(n);
  newsequence(n);
}

void hm_nuid_next(hm_nuid_t *n, char out[HM_NUID_LEN + 1]) {
  n->seq += n->inc;
  if (n->seq >= MAXSEQ) {
    newprefix(n);
    newsequence(n);
  }
  memcpy(out, n->pre, PRELEN);
  int64_t s = n->seq;
  for (int i = HM_NUID_LEN - 1; i >= PRELEN; i--) {
    out[i] = digits[s % 36];
    s /= 36;
  }
  out[HM_NUID_LEN] = '\0';
}
