-- The rock: `luarocks make` from a clean copy of the checkout into a fresh
-- tree, offline, then a plain lua5.4 with only that tree's paths runs a
-- service and a client (the demo, and a plugin from the rock).
local src = assert(os.getenv("HEMERA_SRC"), "HEMERA_SRC is not set")

local shell_quote = require("shell").quote

local function run(cmd)
  local out = os.tmpname()
  local _, _, code = os.execute(("(%s) >%s 2>&1"):format(cmd, out))
  local f = assert(io.open(out))
  local text = f:read("a")
  f:close()
  os.remove(out)
  return code, text
end

describe("hemera-<version>-1.rockspec", function()
  it("builds and installs with luarocks make, offline, and the installed rock serves", function()
    local Hemera = require "hemera"
    local rockspec = ("hemera-%s-1.rockspec"):format(Hemera.VERSION)
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-rock.XXXXXX\"")):read("l")
    finally(function() os.execute("rm -rf " .. shell_quote(dir)) end)
    local copy, tree = dir .. "/src", dir .. "/tree"
    -- What a clone has (tracked files, and new ones not yet ignored): no
    -- build directory, nothing generated.
    local code, text = run(("mkdir %s && cd %s && git ls-files -z --cached --others --exclude-standard"
      .. " | tar --null -T - -cf - | tar -C %s -xf -"):format(shell_quote(copy), shell_quote(src), shell_quote(copy)))
    assert.equal(0, code, text)
    -- Offline: any download would go to a proxy that refuses it.
    code, text = run(("cd %s && env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9"
      .. " luarocks --lua-version=5.4 --tree=%s make %s"):format(shell_quote(copy), shell_quote(tree), rockspec))
    assert.equal(0, code, text)
    assert.truthy(text:find("hemera " .. Hemera.VERSION .. "-1 is now installed", 1, true), text)
    -- The LuaLS definitions, where the README points the editor.
    local types = ("%s/lib/luarocks/rocks-5.4/hemera/%s-1/share/hemera/types/hemera.lua"):format(tree, Hemera.VERSION)
    local fh = io.open(types, "r")
    assert.truthy(fh, "no " .. types)
    fh:close()

    local lua = ("env -u LUA_PATH -u LUA_CPATH LUA_PATH=%s LUA_CPATH=%s HEMERA_LOG=silent timeout 60 lua5.4 "):format(
      shell_quote(tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua"),
      shell_quote(tree .. "/lib/lua/5.4/?.so"))
    code, text = run(("cd %s && %s -e %s"):format(shell_quote(copy), lua, shell_quote([[
      for _, m in ipairs { "hemera", "hemera.core", "hemera.validation.schema", "hemera.jwt", "hemera.stats",
                           "hemera.metrics", "hemera.msgpack", "hemera.testing" } do
        print(package.searchpath(m, package.path) or package.searchpath(m, package.cpath))
      end]])))
    assert.equal(0, code, text)
    for path in text:gmatch("[^\n]+") do
      assert.equal(tree, path:sub(1, #tree), text)
    end
    -- The demo: a math service and its client.
    code, text = run(("cd %s && %s spec/fixtures/plain_host.lua"):format(shell_quote(copy), lua))
    assert.equal(0, code, text)
    assert.truthy(text:find("1 + 2 = 3\n", 1, true), text)
    assert.truthy(text:find("loop ended", 1, true), text)
    -- A plugin from the rock, on its own topic (the server is shared).
    local topic = ("rock.%d.%d"):format(os.time(), math.random(1 << 30))
    code, text = run(("cd %s && README_TOPIC=%s %s spec/fixtures/readme_service.lua"):format(shell_quote(copy), topic, lua))
    assert.equal(0, code, text)
    assert.equal("sum 3\nmissing ValidationError b\n", text)
  end)
end)
