/*
** A C program embedding Hemera through its installed C API (hm_lua.h,
** libhemera, `pkg-config --cflags --libs hemera`): a Lua 5.4 state with
** hemera.core linked in, a math service and a client, on the loop Hemera
** makes itself (hm_lua_run drives it until every instance is closed).
**
**   cc host.c $(pkg-config --cflags --libs hemera) -o host
**   LUA_PATH="$PREFIX/share/lua/5.4/?.lua;$PREFIX/share/lua/5.4/?/init.lua" ./host
**
** The Lua library is found on LUA_PATH (or the default path after make
** install); the server is $HEMERA_NATS_URL, else nats://127.0.0.1:4222.
*/
#include <stdio.h>
#include <stdlib.h>

#include <hm_lua.h>
#include <lauxlib.h>
#include <lualib.h>

static const char service_src[] =
    "local Hemera = require 'hemera'\n"
    "local hemera = Hemera.new { servers = os.getenv('HEMERA_NATS_URL') or 'nats://127.0.0.1:4222' }\n"
    "local topic = 'c_host.' .. require('hemera.core').nuid()\n"
    "hemera:add({ topic = topic, cmd = 'add' }, function(req) return req.a + req.b end)\n"
    "hemera:ready(function()\n"
    "  print('1 + 2 = ' .. tostring((hemera:act { topic = topic, cmd = 'add', a = 1, b = 2 })))\n"
    "  hemera:close()\n"
    "end)\n";

int main(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  /* hemera.core is linked into this program: require must find it here,
  ** not a second copy on package.cpath. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_hemera_core);
  lua_setfield(L, -2, "hemera.core");
  lua_pop(L, 1);

  int status = luaL_dostring(L, service_src);
  if (status == LUA_OK && hm_lua_run(L) != 0) {
    fprintf(stderr, "host: hm_lua_run failed\n");
    status = -1;
  }
  if (status > 0) fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
  lua_close(L); /* also shuts Hemera down (hm_lua_shutdown) */
  hm_lua_library_close();
  return status == LUA_OK ? 0 : 1;
}
