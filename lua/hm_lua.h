/*
** hm_lua.h: the embedding API of Hemera for Lua 5.4 hosts.
**
** A host that owns a libuv loop calls hm_lua_set_loop() before the module
** is opened; otherwise the module creates its own loop and Hemera.run()
** drives it. The bundled interpreter (lua/main.c) uses only this header.
** Every function here must be called on the thread that runs the loop.
*/
#ifndef HM_LUA_H
#define HM_LUA_H

#include "lua.h"

struct uv_loop_s;

/* Opens the module `hemera.core` (the C part of `require "hemera"`). */
int luaopen_hemera_core(lua_State *L);

/* Makes the module use `loop` (owned by the host, which runs it). Must be
** called before luaopen_hemera_core. */
void hm_lua_set_loop(lua_State *L, struct uv_loop_s *loop);

/* Runs the loop until every Hemera instance is closed and nothing is
** pending. Returns 0, or -1 if the loop is already running. */
int hm_lua_run(lua_State *L);

/* Closes every connection and handle this state owns, runs the loop until
** cnats has detached, and closes the loop if the module created it. Safe to
** call more than once; lua_close calls it too. */
void hm_lua_shutdown(lua_State *L);

/* Frees the NATS client's process-wide resources (its threads). Call once
** at process exit, after every state that opened the module is closed. */
void hm_lua_library_close(void);

/* For a host's shutdown signal while Lua may be spinning (the loop then
** never runs its signal callbacks). hm_lua_interrupt_handle, on the loop
** thread once the module is open, returns this state's handle (owned by
** the state: valid until hm_lua_shutdown). hm_lua_interrupt(handle) is
** async-signal-safe and must run on the loop thread, i.e. in a signal
** handler that interrupted it: the coroutine running now yields to the
** loop at its next hook point, and from then on every coroutine yields
** after each 10 ms slice and is dropped 2 s later if still running, so
** the loop keeps running and a graceful close can finish. The host still
** starts the close itself. Hemera.handleSignals (hm_lua_signal.c, which
** the interpreter uses) does all of this for a host without handlers of
** its own. */
void *hm_lua_interrupt_handle(lua_State *L);
void hm_lua_interrupt(void *handle);

#endif
