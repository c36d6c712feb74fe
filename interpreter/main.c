/*
** main.c: the bundled interpreter `hemera`, a Lua 5.4 host built only on
** the public embedding API (hm_lua.h), the way lua.c is built on lua.h.
**
**   hemera [options] [script [args...]]
**   hemera server status | stop
**
** It owns a libuv loop, opens Hemera on it, hands SIGINT and SIGTERM to
** Hemera.handleSignals, runs the script, then Hemera.run() until every
** instance is closed (or a signal or an uncaught error ended it). Exit
** status: 0; 1 for an error in the script, or an uncaught error in a
** coroutine unless --keep-serving; 128 + signum on a second signal.
** When no NATS URL is given (--server, HEMERA_NATS_URL), the shared local
** server of shared_server.h is used, joined or started at the first
** connection (scripts that never connect start none).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "hm_lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "shared_server.h"

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
static int run_ref = LUA_NOREF; /* Hemera.run, once the library is open */

static void usage(void) {
  fprintf(stderr,
          "usage: %s [options] [script [args]]\n"
          "       %s server status|stop\n"
          "       %s act|ls|ping|stats|watch|web ...  (the CLI: %s act --help)\n"
          "  --server URL    NATS server (also HEMERA_NATS_URL); without one,\n"
          "                  127.0.0.1:4222 or the shared local nats-server\n"
          "  --keep-serving  an uncaught error in a coroutine is printed and\n"
          "                  the process goes on (default: close, exit 1)\n"
          "  -e stat         execute string 'stat'\n"
          "  -v, --version   show version information\n"
          "  -h, --help      show this help\n"
          "  server status   show the shared nats-server (exit 3: none)\n"
          "  server stop     stop the shared nats-server now\n",
          progname, progname, progname, progname);
}

/* require("hemera.devserver").url(): the server to use when a script
** names none; the shared server is joined or started only then. */
static int l_devserver_url(lua_State *L) {
  const char *u = getenv("HEMERA_NATS_URL");
  if (u == NULL || *u == '\0') {
    u = hm_shared_server_url(progname);
    /* Processes this script starts find the same server. */
    if (u != NULL) setenv("HEMERA_NATS_URL", u, 1);
  }
  if (u != NULL && *u != '\0') lua_pushstring(L, u);
  else lua_pushnil(L);
  return 1;
}

/* require("hemera.devserver").find(): the server a tool should use when
** none is named, without starting one (hm_shared_server_find), or nil. */
static int l_devserver_find(lua_State *L) {
  const char *u = hm_shared_server_find(progname);
  if (u != NULL) lua_pushstring(L, u);
  else lua_pushnil(L);
  return 1;
}

static int open_devserver(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_devserver_url);
  lua_setfield(L, -2, "url");
  lua_pushcfunction(L, l_devserver_find);
  lua_setfield(L, -2, "find");
  return 1;
}

/* {====================================================================
** Running Lua (as lua.c does)
** ===================================================================== */

/* Whether the value at idx is what Hemera.run raises after an uncaught
** error: a HemeraError with code UNCAUGHT, reported already. */
static int is_uncaught_exit(lua_State *L, int idx) {
  int yes = 0;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "code");
    yes = lua_type(L, -1) == LUA_TSTRING &&
          strcmp(lua_tostring(L, -1), "UNCAUGHT") == 0;
    lua_pop(L, 1);
  }
  return yes;
}

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL && is_uncaught_exit(L, 1)) return 1;
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
    if (!is_uncaught_exit(L, -1))
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

/* Loads the library the way a script would, and gives it the process's
** signals and uncaught-error policy before any script code runs. */
static int open_hemera(lua_State *L, int keep_serving) {
  static const char src[] =
      "local keep = ...\n"
      "local Hemera = require 'hemera'\n"
      "Hemera.handleSignals { 'SIGINT', 'SIGTERM' }\n"
      "if keep then Hemera.onUncaughtError('log') end\n"
      "return Hemera.run\n";
  int status = luaL_loadbuffer(L, src, sizeof src - 1, "=(hemera)");
  if (status != LUA_OK) return status;
  lua_pushboolean(L, keep_serving);
  status = docall(L, 1, 1);
  if (status != LUA_OK) return status;
  run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return LUA_OK;
}

/* hemera <verb> ...: the CLI (lua/hemera/cli.lua), which runs the loop
** itself; its exit status goes to cli_status. A verb wins over a script
** of the same name: `hemera ./act` runs a file named act. -v is
** --version. */
static int cli_status = -1;

static int is_verb(const char *arg) {
  static const char *const verbs[] = {"act",   "ls",        "ping", "stats",
                                      "watch", "web",       "--version",
                                      "-v",    NULL};
  int i = 0;
  while (verbs[i] && strcmp(verbs[i], arg) != 0) i++;
  return verbs[i] != NULL;
}

static void run_cli(lua_State *L, int argc, char **argv) {
  int i;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "hemera.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc - 1, 0);
  for (i = 1; i < argc; i++) {
    lua_pushstring(L, strcmp(argv[i], "-v") == 0 ? "--version" : argv[i]);
    lua_rawseti(L, -2, i);
  }
  cli_status = report(L, docall(L, 1, 1)) == LUA_OK ? (int)lua_tointeger(L, -1) : 1;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int i, script = 0, status, ran = 0, keep_serving = 0;
  luaL_checkversion(L);
  /* Services make short-lived tables per message: generational mode
  ** measured ~25% more requests/s at 128 in flight than incremental. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  luaL_openlibs(L);
  luaL_requiref(L, "hemera.core", luaopen_hemera_core, 0);
  lua_pop(L, 1);
  set_paths(L);
  luaL_requiref(L, "hemera.devserver", open_devserver, 0);
  lua_pop(L, 1);
  if (argc > 1 && is_verb(argv[1])) {
    /* The CLI's verbs get the same signals and policy as a script. */
    if (report(L, open_hemera(L, 0)) == LUA_OK) run_cli(L, argc, argv);
    else cli_status = 1;
    lua_pushboolean(L, 1);
    return 1;
  }
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
      setenv("HEMERA_NATS_URL", argv[++i], 1);
    } else if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) {
      i++; /* run after the server is settled */
    } else if (strcmp(argv[i], "--keep-serving") == 0) {
      keep_serving = 1;
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
  status = report(L, open_hemera(L, keep_serving));
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
  if (!ran && status == LUA_OK) {
    usage();
    lua_pushboolean(L, 0);
    return 1;
  }
  /* The script has set things up; now serve until every instance closes,
  ** a signal shuts down, or an uncaught error ends the run (it raises
  ** then, reported already). */
  if (status == LUA_OK) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
    status = report(L, docall(L, 0, 0));
  }
  lua_pushboolean(L, status == LUA_OK);
  return 1;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  lua_State *L;
  int status, result;
  if (argv[0] && argv[0][0]) progname = argv[0];
  /* `hemera server ...`, unless `server` is a script of that name. */
  if (argc >= 2 && strcmp(argv[1], "server") == 0) {
    int rc = hm_shared_server_main(progname, argc - 2, argv + 2);
    if (rc >= 0) return rc;
    if (access("server", F_OK) != 0) {
      if (argc >= 3)
        fprintf(stderr, "%s: unknown server command '%s' (status, stop)\n",
                progname, argv[2]);
      usage();
      return EXIT_FAILURE;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&loop);
  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
    return EXIT_FAILURE;
  }
  hm_lua_set_loop(L, &loop);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  result = lua_toboolean(L, -1);
  report(L, status);
  hm_lua_shutdown(L);
  /* Closes the signal handles too: from here a signal has its default
  ** effect (the state is going away). */
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  hm_lua_library_close();
  if (cli_status >= 0) return cli_status;
  return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
