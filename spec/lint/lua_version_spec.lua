-- Run by a plain `busted` (its `#!/usr/bin/env lua` shebang, ctest
-- lint.lua_version): installing lua-check or luarocks pulls in lua5.1,
-- whose lua-interpreter alternative outranks 5.4's, and every spec would
-- then silently run under 5.1. tools/deps.sh pins 5.4.
describe("the Lua that busted runs under", function()
  it("is Lua 5.4", function()
    assert.equal("Lua 5.4", _VERSION)
  end)

  it("is what /usr/bin/lua runs", function()
    local p = assert(io.popen("lua -v 2>&1"))
    local v = p:read("*a") -- "*a": still parses under 5.1, so the assertion reports it
    p:close()
    assert.truthy(v:find("^Lua 5%.4"), "lua -v: " .. v)
  end)
end)
