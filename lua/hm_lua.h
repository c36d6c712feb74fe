/*
** hm_lua.h: the embedding API of Hemera for Lua 5.4 hosts.
**
** Loops. Hemera runs on one of three loops, chosen when the module opens:
**   - the host's: a host that owns a libuv loop calls hm_lua_set_loop()
**     before the module is opened, and runs the loop itself;
**   - luv's: when luv is open in the state (`require "luv"` before
**     `require "hemera"`), Hemera uses luv's loop (what luv_loop(L) returns)
**     and uv.run() drives both; Hemera.run() then runs uv.run();
**   - its own, otherwise: Hemera.run() (or hm_lua_run) drives it.
** A loop is run to completion only by its owner: hm_lua_shutdown runs
** (and closes) only a loop the module made itself.
**
** The bundled interpreter (interpreter/main.c) uses only this header. Every
** function here must be called on the thread that runs the loop, never
** from inside a Lua call into hemera.core.
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
** pending (on luv's loop: luv's uv.run()). Returns 0, or -1 if the loop is
** already running, the module is not open or was shut down. */
int hm_lua_run(lua_State *L);

/* Ends Hemera in this state, at once: nothing of it runs Lua again. Acts
** and sleeps still pending are cancelled: a coroutine waiting on one is
** released, never resumed, and no callback runs. Every connection closes
** without a final round trip (for a graceful close, close the instances
** first: hemera:close, Hemera.closeAll), and every libuv handle of ours is
** closed. On the module's own loop it then runs the loop until those
** handles are closed, and closes it. On a host's loop (or luv's) it returns
** without running it: the host runs its loop later to let the close
** callbacks finish, and may do so after lua_close; their memory is
** malloc'd and freed by them, and none touches the Lua state. Afterwards
** every function of hemera.core that needs the state raises "hemera.core
** was shut down ...". Safe to call more than once; lua_close calls it too
** (the context's __gc). Not from inside a Lua call into hemera.core. */
void hm_lua_shutdown(lua_State *L);

/* Frees the NATS client's process-wide resources (its threads). Call once
** at process exit, after every state that opened the module is closed. */
void hm_lua_library_close(void);

/* For a host's shutdown signal while Lua may be spinning (the loop then
** never runs its signal callbacks). hm_lua_interrupt_handle, on the loop
** thread once the module is open, returns this state's handle (owned by
** the state: valid until hm_lua_shutdown), or NULL when the module is not
** open or was shut down. hm_lua_interrupt(handle) is
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
