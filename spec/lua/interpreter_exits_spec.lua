-- The exits a user expects from the `hemera` interpreter: an uncaught error
-- in any coroutine ends the process with status 1 after closing (or is
-- only printed with --keep-serving), a failing plugin is loud whatever the
-- log level, close abandons what never finishes and the process exits, a
-- second signal exits at once; and the small promises of the docs.
local testing = require "hemera.testing"
local Hemera = require "hemera"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local shell_quote = require("shell").quote

-- A server of our own: examples/math_client.lua asks for topic "math",
-- which other specs serve on the shared test server.
local srv

local function tmpdir()
  return (assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-exits.XXXXXX\"")):read("l"))
end

-- Runs `hemera [flags] script` on our server; on_line(line) sees each line
-- of its merged stdout and stderr as it comes. Returns the exit status
-- and the whole output. `timeout` is a safety net only: a hang shows as
-- status 137.
local function run(source, opts)
  opts = opts or {}
  local dir = tmpdir()
  local script = opts.file or (dir .. "/script.lua")
  if not opts.file then
    local f = assert(io.open(script, "w"))
    f:write(source)
    f:close()
  end
  local p = assert(io.popen(("timeout -s KILL 60 %s --server %s %s %s 2>&1; echo \"EXIT=$?\"")
    :format(bin, shell_quote(srv.url), opts.flags or "", shell_quote(script))))
  local out, status = {}, nil
  for line in p:lines() do
    out[#out + 1] = line
    if opts.on_line then opts.on_line(line) end
    status = tonumber(line:match("^EXIT=(%d+)$")) or status
  end
  p:close()
  os.execute("rm -rf " .. shell_quote(dir))
  return status, table.concat(out, "\n")
end

local function has(text, s) return text:find(s, 1, true) ~= nil end

describe("the hemera interpreter exits", function()
  setup(function() srv = testing.start_server() end)
  teardown(function() testing.stop_all() end)

  it("with status 1 when examples/math_client.lua finds no service: its assert fails in the ready callback", function()
    local status, out = run(nil, { file = "examples/math_client.lua" })
    assert.equal(1, status, out)
    assert.is_true(has(out, "hemera: uncaught error: TimeoutError: Client timeout"), out)
    -- The traceback points at the script, not at Hemera's frames.
    assert.is_true(has(out, "stack traceback:"), out)
    assert.truthy(out:match("\n%s*examples/math_client%.lua:%d+: in function"), out)
    assert.is_false(has(out, "hemera.trampoline"), out)
  end)

  it("with status 1 after closing when an act callback raises", function()
    local status, out = run([[
local Hemera = require "hemera"
local hemera = Hemera.new()
hemera:ext("onClose", function() print("onClose ran") end)
hemera:add({ topic = "exits.act" }, function() return 1 end)
hemera:ready(function()
  hemera:act({ topic = "exits.act" }, function(err, res)
    error("boom in the act callback")
  end)
end)
]])
    assert.equal(1, status, out)
    assert.is_true(has(out, "hemera: uncaught error: "), out)
    assert.is_true(has(out, "script.lua:7: boom in the act callback"), out)
    assert.is_true(has(out, "stack traceback:"), out)
    -- Closed before it exited.
    assert.is_true(has(out, "onClose ran"), out)
  end)

  it("with status 1 when a spawned coroutine raises an error table, with the traceback of where it was raised", function()
    local status, out = run([[
local Hemera = require "hemera"
local hemera = Hemera.new()
hemera:ready(function()
  Hemera.spawn(function()
    Hemera.sleep(1)
    error(Hemera.errors.HemeraError("table boom"))
  end)
end)
]])
    assert.equal(1, status, out)
    assert.is_true(has(out, "hemera: uncaught error: HemeraError: table boom"), out)
    assert.is_true(has(out, "script.lua:6:"), out)
  end)

  it("with status 1, loudly at logLevel silent, when a plugin fails in a top-level ready()", function()
    local status, out = run([[
local Hemera = require "hemera"
local hemera = Hemera.new { logLevel = "silent" }
hemera:use({ name = "broken", register = function() error("the plugin exploded") end })
hemera:ready()
]])
    assert.equal(1, status, out)
    assert.is_true(has(out, "hemera:ready() failed:"), out)
    assert.is_true(has(out, "script.lua:3: the plugin exploded"), out)
  end)

  it("keeps serving after an uncaught error with --keep-serving, and with Hemera.onUncaughtError('log')", function()
    local source = [[
local Hemera = require "hemera"
%s
local hemera = Hemera.new()
hemera:add({ topic = "exits.keep" }, function() return "still serving" end)
hemera:ready(function()
  error("one bad callback")
end)
Hemera.spawn(function()
  Hemera.sleep(50)
  local res = hemera:act { topic = "exits.keep" }
  print("after the error: " .. tostring(res))
  hemera:close()
end)
]]
    for _, variant in ipairs { { flags = "--keep-serving", code = "" },
                               { flags = "", code = "Hemera.onUncaughtError('log')" } } do
      local status, out = run(source:format(variant.code), { flags = variant.flags })
      assert.equal(0, status, out)
      assert.is_true(has(out, "hemera: uncaught error: "), out)
      assert.is_true(has(out, "one bad callback"), out)
      assert.is_true(has(out, "after the error: still serving"), out)
    end
  end)

  it("after close abandons a handler that never returns: named by its pattern, at closeTimeout", function()
    local status, out = run([[
local Hemera = require "hemera"
local hemera = Hemera.new { closeTimeout = 200 }
local entered = Hemera.future()
hemera:add({ topic = "exits.stuck", cmd = "forever" }, function()
  entered:set()
  Hemera.sleep(1e9)
end)
hemera:ready(function()
  hemera:act({ topic = "exits.stuck", cmd = "forever", timeout_ = 30000 }, function(err)
    print("the caller heard: " .. tostring(err))
  end)
  entered:wait()
  hemera:close(function() print("closed") end)
end)
]])
    assert.equal(0, status, out)
    assert.is_true(has(out, "Abandoned a handler still running at closeTimeout: closeTimeout=200 "
      .. "pattern=cmd:forever,topic:exits.stuck"), out)
    assert.is_true(has(out, "closed"), out)
  end)

  it("at once with status 130 / 143 on a second SIGINT / SIGTERM while close waits for a handler", function()
    for _, sig in ipairs { { name = "INT", status = 130 }, { name = "TERM", status = 143 } } do
      local pid
      local status, out = run([[
local Hemera = require "hemera"
local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
local hemera = Hemera.new { closeTimeout = 60000 }
hemera:add({ topic = "exits.second" }, function()
  io.stdout:write("entered ", pid, "\n")
  io.stdout:flush()
  Hemera.sleep(1e9)
end)
hemera:ready(function()
  hemera:act({ topic = "exits.second", timeout_ = 60000 }, function() end)
end)
]], { on_line = function(line)
        local p = line:match("^entered (%d+)")
        if p then
          pid = p
          os.execute("kill -" .. sig.name .. " " .. pid)
        elseif line:find("SIG" .. sig.name .. ": closing every instance", 1, true) then
          -- The first one is being handled: the second means now.
          os.execute("kill -" .. sig.name .. " " .. pid)
        end
      end })
      assert.equal(sig.status, status, out)
    end
  end)
end)

describe("the hemera interpreter and the docs", function()
  it("prints the library's version with -v as with --version", function()
    local function out_of(flag)
      local p = assert(io.popen(bin .. " " .. flag .. " 2>&1; echo EXIT=$?"))
      local out = p:read("a")
      p:close()
      return out
    end
    local out = out_of("-v")
    assert.is_true(has(out, "hemera " .. Hemera.VERSION .. "\nLua 5.4"), out)
    assert.is_true(has(out, "EXIT=0"), out)
    assert.equal(out_of("--version"), out)
  end)

  it("ready(fn) passes nil on success and the plugin's error on failure, not the instance", function()
    testing.run(function()
      local ok_arg = testing.future()
      local a = testing.new()
      a:ready(function(...) ok_arg:set(select("#", ...), ...) end)
      local n, v = ok_arg:wait(5000)
      assert.equal(1, n)
      assert.is_nil(v)
      local failed = testing.future()
      local b = testing.new()
      b:use(function() error("plugin failed") end)
      b:ready(function(err) failed:set(err) end)
      local err = failed:wait(5000)
      assert.is_true(Hemera.errors.Error:is(err))
      assert.matches("plugin failed", tostring(err))
      -- hemera.topics is a field, a list of the subscribed topics.
      a:add({ topic = testing.topic("field") }, function() end)
      assert.equal("table", type(a.topics))
      assert.equal(1, #a.topics)
      Hemera.closeAll()
    end)
  end)
end)
