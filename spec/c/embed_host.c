/*
** A C host that owns its libuv loop, with a repeating timer of its own,
** embedding Hemera through hm_lua.h only (as luv's src/test.c does for
** luv). It runs a service and a request on the loop, then shuts Hemera
** down while the service, a pending act, a sleeping coroutine, a future's
** timeout and the load sampler are all still live: shutdown must return
** without running the host's loop (the host's timer does not tick during
** it), every C entry point must then refuse with a clear error, and the
** host must be able to run its loop afterwards to let the close callbacks
** finish (under ASan: no use-after-free, also when lua_close came first)
** and close it.
**
** Needs HEMERA_NATS_URL (tools/with-nats.sh) and LUA_PATH to lua/.
*/
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "hm_lua.h"
#include "hm_test.h"
#include "lauxlib.h"
#include "lualib.h"

static int ticks;     /* the host timer's ticks */
static int lua_done;  /* set from Lua by host_done() */

static void on_tick(uv_timer_t *t) {
  ticks++;
  if (lua_done) uv_stop(t->loop);
}

static int l_host_done(lua_State *L) {
  lua_done = 1;
  return 0;
}

static lua_State *new_state(uv_loop_t *loop) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  hm_lua_set_loop(L, loop);
  /* The module is linked in: require finds it here, not a second copy on
  ** package.cpath. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_hemera_core);
  lua_setfield(L, -2, "hemera.core");
  lua_pop(L, 1);
  lua_register(L, "host_done", l_host_done);
  return L;
}

/* Runs a chunk; on error prints it and returns 0. */
static int run_lua(lua_State *L, const char *src) {
  if (luaL_dostring(L, src) != LUA_OK) {
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* A service and a client; the client's act result goes to the global
** `result`. Then, still running: an act the service never answers, a
** coroutine asleep for a minute, a future waiting with a timeout, the
** load sampler and a signal handle. */
static const char setup_src[] =
    "local Hemera = require 'hemera'\n"
    "local core = require 'hemera.core'\n"
    "local url = assert(os.getenv('HEMERA_NATS_URL'))\n"
    "local topic = 'embed.' .. core.nuid()\n"
    "service = Hemera.new { servers = url }\n"
    "client = Hemera.new { servers = url, timeout = 60000 }\n"
    "service:add({ topic = topic, cmd = 'add' }, function(req)\n"
    "  return req.a + req.b end)\n"
    "service:add({ topic = topic, cmd = 'stall' }, function()\n"
    "  Hemera.sleep(60000) end)\n"
    "core.load_start(5)\n"
    "Hemera.handleSignals { 'SIGUSR2' }\n"
    "later = core.future()\n"
    "service:ready(function()\n"
    "  client:ready(function()\n"
    "    result = client:act { topic = topic, cmd = 'add', a = 1, b = 2 }\n"
    "    client:act({ topic = topic, cmd = 'stall' }, function() end)\n"
    "    Hemera.spawn(function() Hemera.sleep(60000) end)\n"
    "    Hemera.spawn(function() core.future():wait(60000) end)\n"
    "    host_done()\n"
    "  end)\n"
    "end)\n";

/* Serves until Lua calls host_done(); the host timer stops the loop. */
static void serve(uv_loop_t *loop, uv_timer_t *timer) {
  lua_done = 0;
  uv_timer_init(loop, timer);
  uv_timer_start(timer, on_tick, 5, 5);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* After shutdown, every entry point that needs the state refuses. */
static const char after_src[] =
    "local core = require 'hemera.core'\n"
    "local Hemera = require 'hemera'\n"
    "local calls = {\n"
    "  load_table = function() return core.load_table() end,\n"
    "  load = function() return core.load() end,\n"
    "  load_start = function() return core.load_start(10) end,\n"
    "  load_stop = function() return core.load_stop() end,\n"
    "  spawn = function() return core.spawn(print) end,\n"
    "  sleep = function() return core.sleep(1) end,\n"
    "  future = function() return core.future() end,\n"
    "  future_set = function() return later:set(1) end,\n"
    "  future_wait = function() return later:wait() end,\n"
    "  run = function() return core.run() end,\n"
    "  Hemera_run = function() return Hemera.run() end,\n"
    "  stats = function() return core.stats() end,\n"
    "  nuid = function() return core.nuid() end,\n"
    "  in_coroutine = function() return core.in_coroutine() end,\n"
    "  budget_call = function() return core.budget_call(10, print) end,\n"
    "  connect = function() return core.connect { servers = 'nats://x' } end,\n"
    "}\n"
    "for name, f in pairs(calls) do\n"
    "  local ok, err = pcall(f)\n"
    "  assert(not ok, name .. ' did not refuse')\n"
    "  assert(tostring(err):find('shut down', 1, true), name .. ': ' .. tostring(err))\n"
    "end\n"
    "-- Connections are closed: their methods say so.\n"
    "local ok, err = pcall(function() return client._i.conn:max_payload() end)\n"
    "assert(not ok and tostring(err):find('closed', 1, true), tostring(err))\n";

/* Handles still open on the loop, the host's own timer aside. */
static int open_handles;
static void count_open(uv_handle_t *h, void *timer) {
  if (h != timer && !uv_is_closing(h)) open_handles++;
}

static void drain_and_close(uv_loop_t *loop, uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
  /* Returns only once every handle is closed: Hemera's too. */
  uv_run(loop, UV_RUN_DEFAULT);
}

TEST(shutdown_returns_on_a_host_loop) {
  uv_loop_t loop;
  uv_timer_t timer;
  lua_State *L;
  int before;
  uv_loop_init(&loop);
  L = new_state(&loop);
  ASSERT(run_lua(L, setup_src));
  serve(&loop, &timer);
  ASSERT(lua_done);
  lua_getglobal(L, "result");
  ASSERT_EQ(lua_tointeger(L, -1), 3);
  lua_pop(L, 1);
  before = ticks;
  hm_lua_shutdown(L); /* hangs here when it runs the host's loop */
  ASSERT_EQ(ticks, before);
  /* Every handle of Hemera's is closing: none is left for the host. */
  open_handles = 0;
  uv_walk(&loop, count_open, &timer);
  ASSERT_EQ(open_handles, 0);
  ASSERT(hm_lua_run(L) == -1);
  ASSERT(hm_lua_interrupt_handle(L) == NULL);
  ASSERT(run_lua(L, after_src));
  hm_lua_shutdown(L); /* twice is fine */
  lua_close(L);
  /* The state is gone; what was closing finishes now. */
  drain_and_close(&loop, &timer);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Runs `before` on a host loop, shuts Hemera down, runs the loop (so the
** close callbacks shutdown started free what they own), then runs `after`
** and closes the state. Under ASan a userdata still pointing at what was
** freed shows here, in `after` or in its __gc at lua_close. */
static int use_after_shutdown(const char *before, const char *after) {
  uv_loop_t loop;
  lua_State *L;
  int ok;
  uv_loop_init(&loop);
  L = new_state(&loop);
  ok = run_lua(L, before);
  hm_lua_shutdown(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  ok = ok && run_lua(L, after);
  lua_close(L);
  return ok && uv_loop_close(&loop) == 0;
}

/* The load sampler's one pointer is the context's: once shutdown freed it,
** core.load_table refuses instead of reading freed memory. */
TEST(sampler_after_shutdown) {
  ASSERT(use_after_shutdown(
      "core = require 'hemera.core'\n"
      "assert(core.load_table().heapUsed > 0)\n"
      "core.load_start(5)\n",
      "local ok, err = pcall(core.load_table)\n"
      "assert(not ok and tostring(err):find('shut down', 1, true),\n"
      "       tostring(err))\n"));
}

/* An HTTP server's record and its userdata clear each other's pointer:
** once shutdown freed the record, the userdata says the server is closed,
** and its __gc does not reach the record. */
TEST(http_server_after_shutdown) {
  ASSERT(use_after_shutdown(
      "core = require 'hemera.core'\n"
      "srv = assert(core.http_listen({ port = 0 }, function() end))\n"
      "assert(srv:port() > 0)\n",
      "local ok, err = pcall(srv.port, srv)\n"
      "assert(not ok and tostring(err):find('closed', 1, true),\n"
      "       tostring(err))\n"
      "srv:close()\n"));
}

/* Shutdown finalizes a tracer without closing it, and frees it only once
** the host runs its loop: a span in between is dropped and counted, not
** queued into the finalized tracer, and a close function given then is
** not kept (nothing would run or release it). */
TEST(tracer_after_shutdown) {
  uv_loop_t loop;
  lua_State *L;
  uv_loop_init(&loop);
  L = new_state(&loop);
  ASSERT(run_lua(L,
                 "core = require 'hemera.core'\n"
                 "tracer = assert(core.tracer({ service = 's', otlp = "
                 "'http://127.0.0.1:9/v1/traces' }))\n"));
  hm_lua_shutdown(L);
  ASSERT(run_lua(L,
                 "local tid, sid = ('a'):rep(32), ('b'):rep(16)\n"
                 "assert(tracer:span('server', 's', 't', false, tid, sid, nil, 1, 2) == false)\n"
                 "assert(tracer:stats().dropped == 1, tracer:stats().dropped)\n"
                 "assert(tracer:close(function() error('never') end) == true)\n"));
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* The host may also never call hm_lua_shutdown: lua_close does it (the
** context's __gc), and the loop runs only after the state is gone. */
TEST(lua_close_then_run_the_loop) {
  uv_loop_t loop;
  uv_timer_t timer;
  lua_State *L;
  int before;
  uv_loop_init(&loop);
  L = new_state(&loop);
  ASSERT(run_lua(L, setup_src));
  serve(&loop, &timer);
  ASSERT(lua_done);
  before = ticks;
  lua_close(L);
  ASSERT_EQ(ticks, before);
  drain_and_close(&loop, &timer);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Without a loop from the host the module makes its own, and shutdown
** runs it to completion and closes it. */
TEST(own_loop_is_run_to_completion) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_hemera_core);
  lua_setfield(L, -2, "hemera.core");
  lua_pop(L, 1);
  ASSERT(run_lua(L,
                 "local core = require 'hemera.core'\n"
                 "assert(core.stats().loop == 'own')\n"
                 "core.spawn(function() core.sleep(60000) end)\n"
                 "core.load_start(5)\n"));
  lua_close(L);
}

/* core.sleep outside a coroutine raises before it allocates anything:
** 1,000 refused calls leak nothing (under ASan the leak checker sees what
** glibc's counters cannot). */
TEST(refused_sleep_allocates_nothing) {
  uv_loop_t loop;
  lua_State *L;
  size_t before, after;
  uv_loop_init(&loop);
  L = new_state(&loop);
  ASSERT(run_lua(L, "core = require 'hemera.core'\n"
                    "refuse = function()\n"
                    "  for _ = 1, 1000 do assert(not pcall(core.sleep, 1)) end\n"
                    "end\n"
                    "refuse() collectgarbage() collectgarbage()"));
  before = mallinfo2().uordblks;
  ASSERT(run_lua(L, "refuse() collectgarbage() collectgarbage()"));
  after = mallinfo2().uordblks;
  /* Each leaked waiter was ~190 bytes: 1,000 of them show. */
  ASSERT(after < before + 64 * 1024);
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

int main(void) {
  RUN(shutdown_returns_on_a_host_loop);
  RUN(sampler_after_shutdown);
  RUN(http_server_after_shutdown);
  RUN(tracer_after_shutdown);
  RUN(lua_close_then_run_the_loop);
  RUN(own_loop_is_run_to_completion);
  RUN(refused_sleep_allocates_nothing);
  hm_lua_library_close();
  TEST_EXIT();
}
