/*
** shared_server.c: the interpreter's shared default nats-server (see
** shared_server.h for the state it keeps and who owns what).
**
** Why flock: a lock is the kernel's record of who is alive. A user that
** crashes, is SIGKILLed or _exits on a second Ctrl-C drops its shared lock
** on `users` with its last descriptor, so a count never goes stale, and
** the supervisor learns that the last user has gone by a blocking
** LOCK_EX, not by polling. Joining and stopping both happen under `lock`,
** so a process that joins while the supervisor decides to stop either
** holds `users` before the supervisor looks, or finds no server and
** starts one.
*/
#include "shared_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PROBE "127.0.0.1:4222"
#define DEFAULT_GRACE_MS 5000L
/* How long a first user waits for the supervisor's nats-server. */
#define START_TIMEOUT_MS 15000

typedef struct srvinfo {
  long sup, nats; /* supervisor and nats-server pids */
  char url[64];
  int port;
} srvinfo;

static char state_dir[PATH_MAX - 32];

/* {====================================================================
** Small helpers
** ===================================================================== */

static int tcp_answers(const char *host, int port) {
  struct sockaddr_in a;
  int ok, fd;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return 0;
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

/* "host:port" or "nats://host:port" into host and port; 0 on success. */
static int parse_hostport(const char *s, char *host, size_t n, int *port) {
  const char *colon;
  char *end;
  long p;
  if (strncmp(s, "nats://", 7) == 0) s += 7;
  colon = strrchr(s, ':');
  if (colon == NULL || (size_t)(colon - s) >= n || colon == s) return -1;
  p = strtol(colon + 1, &end, 10);
  if (*end != '\0' || p <= 0 || p > 65535) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  *port = (int)p;
  return 0;
}

static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int port = -1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* $HEMERA_SERVER_GRACE in ms, or -1 when it is not a count of ms. */
static long grace_ms(void) {
  const char *g = getenv("HEMERA_SERVER_GRACE");
  char *end;
  long v;
  if (g == NULL || *g == '\0') return DEFAULT_GRACE_MS;
  errno = 0;
  v = strtol(g, &end, 10);
  return (*end == '\0' && errno == 0 && v >= 0 && v <= 86400000L) ? v : -1;
}

/* }==================================================================== */

/* {====================================================================
** The state directory and its files
** ===================================================================== */

/* Resolves and creates the state directory; refuses one that another
** user could write (or a symlink to one). Returns 0, or -1 with why. */
static int open_state_dir(char *why, size_t n) {
  const char *d = getenv("HEMERA_STATE_DIR"), *x = getenv("XDG_RUNTIME_DIR");
  struct stat st;
  if (d != NULL && *d != '\0')
    snprintf(state_dir, sizeof state_dir, "%s", d);
  else if (x != NULL && *x != '\0')
    snprintf(state_dir, sizeof state_dir, "%s/hemera", x);
  else
    snprintf(state_dir, sizeof state_dir, "/tmp/hemera-%u", (unsigned)getuid());
  if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(why, n, "cannot create the state directory %s: %s", state_dir,
             strerror(errno));
    return -1;
  }
  if (lstat(state_dir, &st) != 0) {
    snprintf(why, n, "cannot read the state directory %s: %s", state_dir,
             strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077)) {
    snprintf(why, n,
             "the state directory %s must be a directory of mode 0700 owned by "
             "uid %u (it is %s, owner %u, mode %03o): refusing to use it",
             state_dir, (unsigned)getuid(),
             S_ISDIR(st.st_mode) ? "a directory" : "not a directory",
             (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
    return -1;
  }
  return 0;
}

static void state_path(char *out, size_t n, const char *file) {
  snprintf(out, n, "%s/%s", state_dir, file);
}

/* Opens a state file and takes the flock `op`, waiting if it must (a
** signal does not break the wait). Returns the descriptor or -1. */
static int open_locked(const char *file, int op) {
  char path[PATH_MAX];
  int fd;
  state_path(path, sizeof path, file);
  fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  while (flock(fd, op) != 0) {
    if (errno != EINTR) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

static int read_server(srvinfo *si) {
  char path[PATH_MAX], host[32];
  FILE *f;
  int n;
  state_path(path, sizeof path, "server");
  f = fopen(path, "re");
  if (f == NULL) return -1;
  n = fscanf(f, "%ld %ld %63s", &si->sup, &si->nats, si->url);
  fclose(f);
  if (n != 3 || si->sup <= 0 || si->nats <= 0) return -1;
  return parse_hostport(si->url, host, sizeof host, &si->port);
}

/* Alive: the supervisor exists and the port answers. A dead pid, or a pid
** whose server no longer answers (a crash, a reused pid) is stale. */
static int server_alive(const srvinfo *si) {
  return kill((pid_t)si->sup, 0) == 0 && tcp_answers("127.0.0.1", si->port);
}

static int write_server(const srvinfo *si) {
  char path[PATH_MAX], tmp[PATH_MAX];
  FILE *f;
  state_path(path, sizeof path, "server");
  state_path(tmp, sizeof tmp, "server.tmp");
  f = fopen(tmp, "we");
  if (f == NULL) return -1;
  fprintf(f, "%ld %ld %s\n", si->sup, si->nats, si->url);
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

/* Removes the server file if it still names supervisor `sup`: a
** supervisor thought dead may have been replaced already. */
static void remove_server(long sup) {
  char path[PATH_MAX];
  srvinfo si;
  if (read_server(&si) == 0 && si.sup != sup) return;
  state_path(path, sizeof path, "server");
  unlink(path);
}

/* }==================================================================== */

/* {====================================================================
** The supervisor: `hemera server _supervise`, started by the first user
** with its stdout on a pipe, on which it reports
**   READY <supervisor pid> <nats-server pid> <url>   or   FAIL <why>
** ===================================================================== */

static volatile sig_atomic_t sv_stop = 0, sv_child = 0;

static void sv_on_signal(int signum) {
  if (signum == SIGCHLD) sv_child = 1;
  else sv_stop = 1;
}

static pid_t sv_start_nats(int devnull, srvinfo *si) {
  int attempt;
  pid_t me = getpid();
  for (attempt = 0; attempt < 5; attempt++) {
    char portstr[16];
    int port = free_port(), i;
    pid_t pid;
    if (port <= 0) return -1;
    snprintf(portstr, sizeof portstr, "%d", port);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      /* The server must not outlive its supervisor, even a SIGKILLed one. */
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != me) _exit(1);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", portstr,
             (char *)NULL);
      _exit(127);
    }
    /* Ready when it accepts connections (at most ~5 s). */
    for (i = 0; i < 500; i++) {
      if (waitpid(pid, NULL, WNOHANG) == pid) {
        pid = 0; /* port taken meanwhile, or no nats-server: try again */
        break;
      }
      if (tcp_answers("127.0.0.1", port)) {
        si->nats = pid;
        si->port = port;
        snprintf(si->url, sizeof si->url, "nats://127.0.0.1:%d", port);
        return pid;
      }
      sleep_ms(10);
    }
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
  }
  return -1;
}

static pid_t sv_nats = 0;

/* Whether to stop now: asked to, or nats-server is gone. SIGCHLD only
** says some child changed (a failed start attempt, too): waitpid tells. */
static int sv_done(void) {
  if (sv_child) {
    sv_child = 0;
    if (waitpid(sv_nats, NULL, WNOHANG) == sv_nats) sv_nats = 0;
  }
  return sv_stop || sv_nats == 0;
}

/* Sleeps the grace period; 1 when a stop or the server's death cut it. */
static int sv_grace(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
    if (errno != EINTR) break;
    if (sv_done()) return 1;
  }
  return sv_done();
}

static int supervise(void) {
  char why[PATH_MAX + 128];
  struct sigaction sa;
  srvinfo si;
  int devnull, users, lockfd, locked = 0;
  pid_t pid;
  /* fd 1 is the pipe to the first user; nothing else it had is ours. */
  if (close_range(3, ~0U, 0) != 0) {
    int fd;
    for (fd = 3; fd < 1024; fd++) close(fd);
  }
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) return 1;
  dup2(devnull, 0);
  dup2(devnull, 2);
  /* Daemonise: the first user reaps this parent at once, and the
  ** supervisor runs in a session of its own, out of reach of the
  ** terminal's Ctrl-C that ends the first user. */
  pid = fork();
  if (pid < 0) {
    printf("FAIL cannot fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid > 0) _exit(0);
  setsid();
  {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* a mask survives exec */
  }
  if (open_state_dir(why, sizeof why) != 0) {
    printf("FAIL %s\n", why);
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sv_on_signal; /* no SA_RESTART: a signal breaks flock */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  state_path(why, sizeof why, "users");
  users = open(why, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  state_path(why, sizeof why, "lock");
  lockfd = open(why, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (users < 0 || lockfd < 0) {
    printf("FAIL cannot open the state files in %s: %s\n", state_dir,
           strerror(errno));
    return 1;
  }
  memset(&si, 0, sizeof si);
  sv_nats = sv_start_nats(devnull, &si);
  if (sv_nats <= 0) {
    printf("FAIL nats-server could not be started (is it installed? run "
           "'make deps')\n");
    return 1;
  }
  si.sup = getpid();
  printf("READY %ld %ld %s\n", si.sup, si.nats, si.url);
  fflush(stdout);
  dup2(devnull, 1);
  for (;;) {
    if (sv_done()) break;
    /* Blocks while any user holds its shared lock. A signal that lands
    ** just before the call is seen when the wait ends; `hemera server
    ** stop` repeats its SIGTERM for that reason. */
    if (flock(users, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      break;
    }
    flock(users, LOCK_UN);
    if (sv_grace(grace_ms())) break;
    if (flock(lockfd, LOCK_EX) != 0) continue;
    if (flock(users, LOCK_EX | LOCK_NB) == 0) {
      locked = 1; /* nobody joined during the grace period */
      break;
    }
    flock(lockfd, LOCK_UN);
  }
  while (!locked) {
    if (flock(lockfd, LOCK_EX) == 0) locked = 1;
    else if (errno != EINTR) break;
  }
  remove_server(si.sup);
  if (sv_nats > 0) {
    int i;
    kill(sv_nats, SIGTERM);
    for (i = 0; i < 500 && waitpid(sv_nats, NULL, WNOHANG) == 0; i++) sleep_ms(10);
    if (i == 500) {
      kill(sv_nats, SIGKILL);
      waitpid(sv_nats, NULL, 0);
    }
  }
  if (locked) flock(lockfd, LOCK_UN);
  return 0;
}

/* }==================================================================== */

/* {====================================================================
** Users
** ===================================================================== */

static int users_fd = -1; /* held (shared) until the process exits */

/* Starts the supervisor and waits for its report. Called under `lock`. */
static int start_supervisor(srvinfo *si, char *why, size_t n) {
  static char *const argv[] = {"hemera", "server", "_supervise", NULL};
  char exe[PATH_MAX], line[256];
  size_t len = 0;
  ssize_t r;
  int p[2], st;
  pid_t pid;
  r = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (r <= 0) {
    snprintf(why, n, "cannot find this executable: %s", strerror(errno));
    return -1;
  }
  exe[r] = '\0';
  if (pipe2(p, O_CLOEXEC) != 0) {
    snprintf(why, n, "pipe: %s", strerror(errno));
    return -1;
  }
  pid = fork();
  if (pid < 0) {
    snprintf(why, n, "fork: %s", strerror(errno));
    close(p[0]);
    close(p[1]);
    return -1;
  }
  if (pid == 0) {
    /* Only async-signal-safe calls: cnats' threads may exist. */
    dup2(p[1], 1);
    execv(exe, argv);
    _exit(127);
  }
  close(p[1]);
  /* It forks the daemon and exits at once. */
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  for (;;) {
    struct pollfd pfd = {p[0], POLLIN, 0};
    int rc = poll(&pfd, 1, START_TIMEOUT_MS);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) break;
    r = read(p[0], line + len, sizeof line - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
    if (memchr(line, '\n', len) != NULL || len == sizeof line - 1) break;
  }
  close(p[0]);
  line[len] = '\0';
  line[strcspn(line, "\n")] = '\0';
  if (sscanf(line, "READY %ld %ld %63s", &si->sup, &si->nats, si->url) == 3) {
    char host[32];
    return parse_hostport(si->url, host, sizeof host, &si->port);
  }
  if (strncmp(line, "FAIL ", 5) == 0) snprintf(why, n, "%s", line + 5);
  else snprintf(why, n, "the shared server's supervisor did not start");
  return -1;
}

/* The probe address ($HEMERA_PROBE): 1 and its URL in url when a server
** answers there; 0 when none does (said: the words for it, or "" when the
** probe is off); -1 when the variable is bad (said on stderr). */
static int probe(const char *progname, char *url, size_t n, char *said,
                 size_t saidn) {
  const char *probe = getenv("HEMERA_PROBE");
  char host[64];
  int port = 0;
  said[0] = '\0';
  if (probe == NULL || *probe == '\0') probe = DEFAULT_PROBE;
  if (strcmp(probe, "none") == 0) return 0;
  if (parse_hostport(probe, host, sizeof host, &port) != 0) {
    fprintf(stderr, "%s: HEMERA_PROBE must be host:port or none, got '%s'\n",
            progname, probe);
    return -1;
  }
  if (tcp_answers(host, port)) {
    snprintf(url, n, "nats://%s:%d", host, port);
    return 1;
  }
  snprintf(said, saidn, " and none on nats://%s:%d", host, port);
  return 0;
}

const char *hm_shared_server_find(const char *progname) {
  static char url[96];
  char why[PATH_MAX + 128], said[96];
  srvinfo si;
  int p = probe(progname, url, sizeof url, said, sizeof said);
  if (p != 0) return p > 0 ? url : NULL;
  if (open_state_dir(why, sizeof why) != 0) return NULL;
  if (read_server(&si) != 0 || !server_alive(&si)) return NULL;
  snprintf(url, sizeof url, "%s", si.url);
  return url;
}

const char *hm_shared_server_url(const char *progname) {
  static char url[96];
  static int done = 0;
  char why[PATH_MAX + 128], said[96];
  int lockfd, started = 0, p;
  srvinfo si;
  if (done) return url[0] ? url : NULL;
  done = 1;
  if (grace_ms() < 0) {
    fprintf(stderr,
            "%s: HEMERA_SERVER_GRACE must be milliseconds from 0 to 86400000, "
            "got '%s'\n",
            progname, getenv("HEMERA_SERVER_GRACE"));
    return NULL;
  }
  p = probe(progname, url, sizeof url, said, sizeof said);
  if (p != 0) return p > 0 ? url : NULL;
  if (open_state_dir(why, sizeof why) != 0) {
    fprintf(stderr, "%s: no NATS server given%s; %s\n", progname, said, why);
    return NULL;
  }
  lockfd = open_locked("lock", LOCK_EX);
  if (lockfd >= 0) users_fd = open_locked("users", LOCK_SH);
  if (lockfd < 0 || users_fd < 0) {
    fprintf(stderr, "%s: no NATS server given%s; cannot lock %s: %s\n",
            progname, said, state_dir, strerror(errno));
    if (lockfd >= 0) close(lockfd);
    return NULL;
  }
  memset(&si, 0, sizeof si);
  if (read_server(&si) != 0 || !server_alive(&si)) {
    char path[PATH_MAX];
    state_path(path, sizeof path, "server");
    unlink(path); /* stale, or none */
    memset(&si, 0, sizeof si);
    if (start_supervisor(&si, why, sizeof why) != 0 || write_server(&si) != 0) {
      fprintf(stderr,
              "%s: no NATS server given%s, and the shared nats-server could "
              "not be started: %s; connections will fail\n",
              progname, said, why);
      close(lockfd);
      return NULL;
    }
    started = 1;
  }
  close(lockfd);
  snprintf(url, sizeof url, "%s", si.url);
  if (started)
    fprintf(stderr,
            "%s: no NATS server given%s; started a shared nats-server on %s "
            "(pid %ld) for every hemera of this user; it stops when the last "
            "one exits ('%s server stop' stops it now)\n",
            progname, said, url, si.nats, progname);
  else
    fprintf(stderr,
            "%s: no NATS server given%s; using the shared nats-server on %s "
            "(pid %ld)\n",
            progname, said, url, si.nats);
  return url;
}

/* }==================================================================== */

/* {====================================================================
** hemera server status | stop
** ===================================================================== */

static int server_status(const char *progname) {
  char why[PATH_MAX + 128];
  srvinfo si;
  if (open_state_dir(why, sizeof why) != 0) {
    fprintf(stderr, "%s: %s\n", progname, why);
    return 1;
  }
  if (read_server(&si) == 0 && server_alive(&si)) {
    printf("shared nats-server on %s (pid %ld, supervisor pid %ld; state in "
           "%s)\n",
           si.url, si.nats, si.sup, state_dir);
    return 0;
  }
  printf("no shared nats-server is running (state in %s)\n", state_dir);
  return 3; /* as LSB's status: not running */
}

static int server_stop(const char *progname) {
  char why[PATH_MAX + 128];
  srvinfo si;
  int i;
  if (open_state_dir(why, sizeof why) != 0) {
    fprintf(stderr, "%s: %s\n", progname, why);
    return 1;
  }
  if (read_server(&si) != 0 || kill((pid_t)si.sup, 0) != 0) {
    printf("no shared nats-server is running (state in %s)\n", state_dir);
    return 0;
  }
  /* Repeated: a SIGTERM that lands just before the supervisor blocks in
  ** flock is not seen until the next one. */
  for (i = 0; i < 100 && kill((pid_t)si.sup, SIGTERM) == 0; i++) sleep_ms(50);
  if (kill((pid_t)si.sup, 0) == 0) {
    kill((pid_t)si.sup, SIGKILL);
    kill((pid_t)si.nats, SIGKILL);
    remove_server(si.sup);
  }
  printf("stopped the shared nats-server on %s (pid %ld)\n", si.url, si.nats);
  return 0;
}

int hm_shared_server_main(const char *progname, int argc, char **argv) {
  if (argc < 1) return -1;
  if (strcmp(argv[0], "status") == 0) return server_status(progname);
  if (strcmp(argv[0], "stop") == 0) return server_stop(progname);
  if (strcmp(argv[0], "_supervise") == 0) {
    /* The starter checked it; keep a bad value from spinning here. */
    if (grace_ms() < 0) setenv("HEMERA_SERVER_GRACE", "5000", 1);
    return supervise();
  }
  return -1;
}

/* }==================================================================== */
