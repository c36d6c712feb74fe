/*
** main.c: the bundled interpreter `hemera`, a Lua 5.4 host built only on
** the public embedding API (hm_lua.h), the way lua.c is built on lua.h.
**
**   hemera [--server URL] [-e stat] [script [args...]]
**
** It owns a libuv loop, opens Hemera on it, runs the script, then runs the
** loop until every Hemera instance is closed. When no NATS URL is given
** (--server, HEMERA_NATS_URL) and nothing answers on 127.0.0.1:4222, it
** starts a private nats-server on a free loopback port for its own
** lifetime and says so on stderr.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "hm_lua.h"
#include "lauxlib.h"
#include "lualib.h"

#ifndef HM_LUA_DIR
#define HM_LUA_DIR "."
#endif
#ifndef HM_MODULES_DIR
#define HM_MODULES_DIR "./modules"
#endif
#ifndef HM_INSTALL_LUA_DIR
#define HM_INSTALL_LUA_DIR "/usr/local/share/lua/5.4"
#endif

static const char *progname = "hemera";
/* The signal handler reads these, hence volatile. */
static volatile pid_t private_server = 0;
static volatile sig_atomic_t signals_seen = 0;
static volatile sig_atomic_t closing = 0; /* the state is being torn down */
static void *volatile interrupter = NULL;
static lua_State *globalL = NULL;
static pthread_t main_thread;
static uv_async_t sigasync;

static void usage(void) {
  fprintf(stderr,
          "usage: %s [options] [script [args]]\n"
          "  --server URL  NATS server (also HEMERA_NATS_URL); without one,\n"
          "                127.0.0.1:4222 or a private nats-server is used\n"
          "  -e stat       execute string 'stat'\n"
          "  -v            show version information\n"
          "  -h            show this help\n",
          progname);
}

/* {====================================================================
** Private nats-server
** ===================================================================== */

static int tcp_answers(int port) {
  struct sockaddr_in a;
  int ok, fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int port = -1, fd = socket(AF_INET, SOCK_STREAM, 0);
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

static void stop_private_server(void) {
  if (private_server > 0) {
    kill(private_server, SIGTERM);
    waitpid(private_server, NULL, 0);
    private_server = 0;
  }
}

static int start_private_server(void) {
  int attempt;
  for (attempt = 0; attempt < 5; attempt++) {
    char portstr[16], url[64];
    int port = free_port(), i;
    pid_t pid;
    if (port <= 0) return -1;
    snprintf(portstr, sizeof portstr, "%d", port);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      int devnull = open("/dev/null", O_RDWR);
      /* The server must not outlive us, even if we are killed. */
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
      }
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", portstr,
             (char *)NULL);
      _exit(127);
    }
    /* Ready when it accepts connections (at most ~5 s). */
    for (i = 0; i < 500; i++) {
      int st;
      struct timespec ts = {0, 10 * 1000 * 1000};
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = 0;
        break;
      }
      if (tcp_answers(port)) {
        private_server = pid;
        snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
        setenv("HEMERA_NATS_URL", url, 1);
        fprintf(stderr,
                "%s: no NATS server given and none on nats://127.0.0.1:4222; "
                "started a private nats-server on %s (pid %d) for this "
                "process\n",
                progname, url, (int)pid);
        return 0;
      }
      nanosleep(&ts, NULL);
    }
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
  }
  return -1;
}

static void ensure_server(void) {
  const char *u = getenv("HEMERA_NATS_URL");
  if (u && *u) return;
  if (tcp_answers(4222)) return;
  if (start_private_server() != 0)
    fprintf(stderr,
            "%s: no NATS server given, none on 127.0.0.1:4222, and "
            "nats-server could not be started (is it installed? run "
            "'make deps'); connections will fail\n",
            progname);
}

/* require("hemera.devserver").url(): the server to use when a script
** names none; the private server starts only then, on the first
** connection of the process, so scripts that never connect start none. */
static int l_devserver_url(lua_State *L) {
  const char *u;
  ensure_server();
  u = getenv("HEMERA_NATS_URL");
  if (u && *u) lua_pushstring(L, u);
  else lua_pushnil(L);
  return 1;
}

static int open_devserver(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_devserver_url);
  lua_setfield(L, -2, "url");
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Running Lua (as lua.c does)
** ===================================================================== */

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int docall(lua_State *L, int narg, int nres) {
  int status, base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return status;
}

static void set_paths(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L,
                  "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;"
                  "%s/?.lua;%s/?/init.lua;%s",
                  HM_LUA_DIR, HM_LUA_DIR, HM_MODULES_DIR, HM_MODULES_DIR,
                  HM_INSTALL_LUA_DIR, HM_INSTALL_LUA_DIR,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

static void create_arg_table(lua_State *L, char **argv, int argc,
                             int script) {
  int i;
  lua_createtable(L, argc - script, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* SIGINT/SIGTERM: ask Hemera to close every instance gracefully; a second
** signal exits at once. The handler itself must get through while Lua
** spins, when the loop never runs: it makes the running coroutine yield
** (hm_lua_interrupt, which also keeps every coroutine yielding after each
** time slice from then on) and wakes the loop, whose callback does the
** close. Only async-signal-safe calls here. */
static void on_signal(int signum) {
  int saved = errno;
  if (!pthread_equal(pthread_self(), main_thread)) {
    /* cnats' threads can take it too; Lua and the loop are the main
    ** thread's. */
    pthread_kill(main_thread, signum);
  } else if (++signals_seen > 1 || closing) {
    /* At once: the private server gets no time to linger either (kill
    ** and waitpid are async-signal-safe). */
    if (private_server > 0) {
      kill(private_server, SIGKILL);
      waitpid(private_server, NULL, 0);
    }
    _exit(128 + signum);
  } else {
    if (interrupter != NULL) hm_lua_interrupt(interrupter);
    uv_async_send(&sigasync);
  }
  errno = saved;
}

static void on_sigasync(uv_async_t *h) {
  lua_State *L = globalL;
  if (closing) return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_getfield(L, -1, "hemera");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "closeAll");
    if (lua_isfunction(L, -1)) report(L, docall(L, 0, 0));
    else lua_pop(L, 1);
  }
  lua_pop(L, 3);
}

static void catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  /* One handler at a time: signals_seen counts without atomics. */
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* hemera <verb> ...: the CLI (lua/hemera/cli.lua), which runs the loop
** itself; its exit status goes to cli_status. A verb wins over a script
** of the same name: `hemera ./act` runs a file named act. */
static int cli_status = -1;
static int run_cli(lua_State *L, int argc, char **argv) {
  static const char *const verbs[] = {"act", "ls", "ping", "stats", "watch",
                                      "--version", NULL};
  int i = 0;
  while (verbs[i] && strcmp(verbs[i], argv[1]) != 0) i++;
  if (verbs[i] == NULL) return 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "hemera.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc - 1, 0);
  for (i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  cli_status = report(L, docall(L, 1, 1)) == LUA_OK ? (int)lua_tointeger(L, -1) : 1;
  return 1;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int i, script = 0, status = LUA_OK, ran = 0;
  luaL_checkversion(L);
  /* Services make short-lived tables per message: generational mode
  ** measured ~25% more requests/s at 128 in flight than incremental. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_openlibs(L);
  luaL_requiref(L, "hemera.core", luaopen_hemera_core, 0);
  lua_pop(L, 1);
  interrupter = hm_lua_interrupt_handle(L);
  set_paths(L);
  if (argc > 1 && run_cli(L, argc, argv)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
      setenv("HEMERA_NATS_URL", argv[++i], 1);
    } else if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) {
      i++; /* run after the server is settled */
    } else if (strcmp(argv[i], "-v") == 0) {
      printf("hemera for %s\n", LUA_RELEASE);
      ran = 1;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage();
      lua_pushboolean(L, 1);
      return 1;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "%s: unknown option '%s'\n", progname, argv[i]);
      usage();
      lua_pushboolean(L, 0);
      return 1;
    } else {
      script = i;
      break;
    }
  }
  if (script == 0 && ran) {
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_requiref(L, "hemera.devserver", open_devserver, 0);
  lua_pop(L, 1);
  create_arg_table(L, argv, argc, script ? script : argc - 1);
  for (i = 1; i < (script ? script : argc) && status == LUA_OK; i++) {
    if (strcmp(argv[i], "--server") == 0) i++;
    else if (strcmp(argv[i], "-e") == 0) {
      status = luaL_loadbuffer(L, argv[i + 1], strlen(argv[i + 1]), "=(command line)");
      if (status == LUA_OK) status = docall(L, 0, 0);
      report(L, status);
      i++;
      ran = 1;
    }
  }
  if (status == LUA_OK && script) {
    int n = argc - script - 1;
    status = luaL_loadfile(L, strcmp(argv[script], "-") == 0 ? NULL
                                                              : argv[script]);
    if (status == LUA_OK) {
      luaL_checkstack(L, n, "too many arguments to script");
      for (i = 1; i <= n; i++) lua_pushstring(L, argv[script + i]);
      status = docall(L, n, 0);
    }
    report(L, status);
    ran = 1;
  }
  if (!ran) {
    usage();
    lua_pushboolean(L, 0);
    return 1;
  }
  /* The script has set things up; now serve until every instance closes. */
  if (status == LUA_OK && hm_lua_run(L) != 0) status = LUA_ERRRUN;
  lua_pushboolean(L, status == LUA_OK);
  return 1;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  lua_State *L;
  int status, result;
  if (argv[0] && argv[0][0]) progname = argv[0];
  signal(SIGPIPE, SIG_IGN);
  main_thread = pthread_self();
  uv_loop_init(&loop);
  uv_async_init(&loop, &sigasync, on_sigasync);
  /* Signals must not keep the loop alive on their own. */
  uv_unref((uv_handle_t *)&sigasync);
  catch_signals();
  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
    return EXIT_FAILURE;
  }
  globalL = L;
  hm_lua_set_loop(L, &loop);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  result = lua_toboolean(L, -1);
  report(L, status);
  /* From here a signal exits at once: the state is going away. */
  closing = 1;
  interrupter = NULL;
  hm_lua_shutdown(L);
  lua_close(L);
  uv_close((uv_handle_t *)&sigasync, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  hm_lua_library_close();
  stop_private_server();
  if (cli_status >= 0) return cli_status;
  return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
