-- One namespace: every plugin is hemera.<name>; the old validation.* names
-- still load for one release, with a warning; the README's embedding
-- command line, taken from README.md itself, runs as written.
local src = assert(os.getenv("HEMERA_SRC"), "HEMERA_SRC is not set")
local build = assert(os.getenv("HEMERA_BUILD"), "HEMERA_BUILD is not set")

local shell_quote = require("shell").quote

-- Sanitizer builds need their runtimes preloaded into a plain lua5.4.
local function preload()
  local p = os.getenv("HEMERA_LUA_PRELOAD") or ""
  if p == "" then return "" end
  return "LD_PRELOAD=" .. shell_quote(p) .. " ASAN_OPTIONS=detect_leaks=0 "
end

-- Runs a shell command; its exit code, stdout and stderr apart.
local function run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local _, _, code = os.execute(("(%s) >%s 2>%s"):format(cmd, out, err))
  local function slurp(path)
    local f = assert(io.open(path)); local t = f:read("a"); f:close(); os.remove(path); return t
  end
  return code, slurp(out), slurp(err)
end

local function lua54(code_text)
  return run(preload() .. "HEMERA_LOG=silent timeout 60 lua5.4 -e " .. shell_quote(code_text))
end

describe("the hemera.validation namespace", function()
  for _, name in ipairs { "schema", "jsonschema", "values" } do
    it("hemera.validation." .. name .. " loads without a warning", function()
      local code, out, err = lua54(("assert(type(require 'hemera.validation.%s') == 'table'); print 'ok'"):format(name))
      assert.equal(0, code, err)
      assert.equal("ok\n", out)
      assert.equal("", err)
    end)

    it("validation." .. name .. " warns once on stderr and is the same module", function()
      local code, out, err = lua54(([[
        local old = require "validation.%s"
        assert(require "validation.%s" == old)
        assert(old == require "hemera.validation.%s", "the shim returns another table")
        print "ok"]]):format(name, name, name))
      assert.equal(0, code, err)
      assert.equal("ok\n", out)
      assert.equal(('hemera: require "validation.%s" is deprecated, use require "hemera.validation.%s"\n')
        :format(name, name), err)
    end)
  end
end)

describe("the README's embedding command line", function()
  -- The first command in the sh block of "Embedding in a Lua 5.4 host".
  local function readme_command()
    local f = assert(io.open(src .. "/README.md"))
    local text = f:read("a")
    f:close()
    local section = assert(text:match("\n## Embedding in a Lua 5.4 host\n(.-)\n## "), "no embedding section in README.md")
    local block = assert(section:match("```sh\n(.-)\n```"), "no sh block in the embedding section")
    return (block:match("[^\n]+"))
  end

  it("names lua/, modules/ and the built module, and runs myservice.lua as written", function()
    local cmd = readme_command()
    assert.truthy(cmd:find("modules/?.lua", 1, true), cmd)
    assert.truthy(cmd:find("myservice.lua", 1, true), cmd)
    -- A directory shaped like the checkout (lua/, modules/, build/), so the
    -- README's relative paths mean what they mean in a checkout.
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-readme.XXXXXX\"")):read("l")
    finally(function() os.execute("rm -rf " .. shell_quote(dir)) end)
    assert(os.execute(("ln -s %s/lua %s/modules %s && ln -s %s %s/build && cp %s/spec/fixtures/readme_service.lua %s/myservice.lua")
      :format(shell_quote(src), shell_quote(src), shell_quote(dir), shell_quote(build), shell_quote(dir),
              shell_quote(src), shell_quote(dir))))
    local topic = ("readme.%d.%d"):format(os.time(), math.random(1 << 30))
    local code, out, err = run(("cd %s && env -u LUA_PATH -u LUA_CPATH %sREADME_TOPIC=%s HEMERA_LOG=silent timeout 60 sh -c %s")
      :format(shell_quote(dir), preload(), topic, shell_quote(cmd)))
    assert.equal(0, code, out .. err)
    assert.equal("sum 3\nmissing ValidationError b\n", out)
  end)
end)

describe("make install", function()
  it("installs the library and every plugin under share/lua/5.4, the module under lib/lua/5.4", function()
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-install.XXXXXX\"")):read("l")
    finally(function() os.execute("rm -rf " .. shell_quote(dir)) end)
    local code, out, err = run(("cmake --install %s --prefix %s"):format(shell_quote(build), shell_quote(dir)))
    assert.equal(0, code, out .. err)
    local paths = ("env -u LUA_PATH -u LUA_CPATH LUA_PATH=%s LUA_CPATH=%s "):format(
      shell_quote(dir .. "/share/lua/5.4/?.lua;" .. dir .. "/share/lua/5.4/?/init.lua"),
      shell_quote(dir .. "/lib/lua/5.4/?.so"))
    code, out, err = run(preload() .. paths .. "HEMERA_LOG=silent timeout 60 lua5.4 -e " .. shell_quote([[
      for _, m in ipairs { "hemera", "hemera.core", "hemera.validation.schema", "hemera.validation.jsonschema",
                           "hemera.jwt", "hemera.stats", "hemera.metrics" } do
        print(m, package.searchpath(m, package.path) or package.searchpath(m, package.cpath), type(require(m)))
      end]]))
    assert.equal(0, code, out .. err)
    for _, m in ipairs { "hemera", "hemera.validation.schema", "hemera.jwt", "hemera.core" } do
      assert.truthy(out:find("\n?" .. m:gsub("%.", "%%.") .. "\t" .. dir:gsub("%p", "%%%0"), 1), m .. ":\n" .. out)
    end
  end)
end)
