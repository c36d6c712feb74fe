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
  it("requires the module and serves under Hemera.run()", function()
    local lua_path = os.getenv("LUA_PATH") or ""
    -- Sanitizer builds need their runtimes preloaded into a plain lua5.4.
    local preload = os.getenv("HEMERA_LUA_PRELOAD") or ""
    if preload ~= "" then preload = "LD_PRELOAD=" .. shell_quote(preload) .. " ASAN_OPTIONS=detect_leaks=0 " end
    local ok, code, text = run(preload .. "HEMERA_LOG=silent lua5.4 spec/fixtures/plain_host.lua")
    assert.is_true(ok, text .. "\nLUA_PATH=" .. lua_path)
    assert.equal(0, code)
    for _, line in ipairs(DEMO_LINES) do
      assert.truthy(text:find(line, 1, true), "missing line: " .. line .. "\n" .. text)
    end
    assert.truthy(text:find("loop ended", 1, true), text)
  end)
end)
