-- The bundled interpreter and a plain Lua 5.4 host, as users run them.
local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")
local url = assert(os.getenv("HEMERA_NATS_URL"), "HEMERA_NATS_URL is not set")

local run = require("shell").run

local shell_quote = require("shell").quote

local DEMO_LINES = {
  "1 + 2 = 3",
  "10 / 4 = 2.5",
  "sum of 1..4 = 10",
  "1 / 0 fails: DivisionByZero: cannot divide by zero (code 400)",
  "math.sqrt: PatternNotFound: No action found for this pattern",
  "nobody serves physics: TimeoutError: Client timeout",
}

describe("the hemera interpreter", function()
  it("runs the demo against a given server and exits 0 when every instance closed", function()
    local ok, code, text = run(("HEMERA_LOG=silent %s --server %s examples/demo.lua"):format(bin, shell_quote(url)))
    assert.is_true(ok, text)
    assert.equal(0, code)
    for _, line in ipairs(DEMO_LINES) do
      assert.truthy(text:find(line, 1, true), "missing line: " .. line .. "\n" .. text)
    end
  end)

  it("starts the shared nats-server when no URL is given and nothing answers on the probe address", function()
    -- Its state in a directory of our own, and a probe address nothing
    -- listens on (CI may or may not have a server on 127.0.0.1:4222).
    local state = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-interp.XXXXXX\"")):read("l")
    local ok, code, text = run(("env -u HEMERA_NATS_URL HEMERA_LOG=silent HEMERA_PROBE=none "
      .. "HEMERA_SERVER_GRACE=0 HEMERA_STATE_DIR=%s %s examples/demo.lua"):format(shell_quote(state), bin))
    os.execute("rm -rf " .. shell_quote(state))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("no NATS server given; started a shared nats-server on nats://127.0.0.1:", 1, true), text)
    for _, line in ipairs(DEMO_LINES) do
      assert.truthy(text:find(line, 1, true), "missing line: " .. line .. "\n" .. text)
    end
  end)

  it("reports a script error with a traceback and exits non-zero", function()
    local ok, code, text = run(("%s -e %s"):format(bin, shell_quote("error('boom')")))
    assert.is_falsy(ok)
    assert.equal(1, code)
    assert.truthy(text:find("boom", 1, true), text)
    assert.truthy(text:find("stack traceback", 1, true), text)
  end)

  it("loads C modules from Debian's Lua packages (symbols exported)", function()
    local ok, _, text = run(("%s --server %s -e %s"):format(bin, shell_quote(url),
      shell_quote("local cjson = require 'cjson'; print(cjson.encode({1}))")))
    assert.is_true(ok, text)
    assert.truthy(text:find("[1]", 1, true), text)
  end)
end)

describe("a plain lua5.4 host", function()
  -- Sanitizer builds need their runtimes preloaded into a plain lua5.4.
  local function lua54()
    local preload = os.getenv("HEMERA_LUA_PRELOAD") or ""
    if preload ~= "" then preload = "LD_PRELOAD=" .. shell_quote(preload) .. " ASAN_OPTIONS=detect_leaks=0 " end
    return preload .. "lua5.4"
  end

  it("requires the module and serves under Hemera.run()", function()
    local lua_path = os.getenv("LUA_PATH") or ""
    local ok, code, text = run("HEMERA_LOG=silent " .. lua54() .. " spec/fixtures/plain_host.lua")
    assert.is_true(ok, text .. "\nLUA_PATH=" .. lua_path)
    assert.equal(0, code)
    for _, line in ipairs(DEMO_LINES) do
      assert.truthy(text:find(line, 1, true), "missing line: " .. line .. "\n" .. text)
    end
    assert.truthy(text:find("loop ended", 1, true), text)
  end)

  it("exits 1 after an uncaught error: every instance closes and Hemera.run() raises UNCAUGHT", function()
    local script = [[
local Hemera = require "hemera"
local hemera = Hemera.new()
hemera:ext("onClose", function() print("onClose ran") end)
hemera:ready(function() error("boom in ready") end)
%s
]]
    local ok, code, text = run(lua54() .. " -e " .. shell_quote(script:format("Hemera.run()")))
    assert.falsy(ok, text)
    assert.equal(1, code, text)
    assert.truthy(text:find("hemera: uncaught error: [^\n]*boom in ready\nstack traceback:"), text)
    assert.truthy(text:find("onClose ran", 1, true), text)
    assert.truthy(text:find("(code UNCAUGHT)", 1, true), text)
    ok, code, text = run(lua54() .. " -e " .. shell_quote(script:format([[
local got
Hemera.onUncaughtError(function(message) got = message; Hemera.closeAll() end)
Hemera.run()
print("handler got: " .. tostring(got))
]])))
    assert.is_true(ok, text)
    assert.equal(0, code, text)
    -- A handler of one's own: nothing printed, the instance runs until
    -- the handler closes it, and Hemera.run() ends without raising.
    assert.falsy(text:find("hemera: uncaught error", 1, true), text)
    assert.truthy(text:find("handler got: [^\n]*boom in ready\nstack traceback:"), text)
  end)
end)
