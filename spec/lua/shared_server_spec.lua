-- The interpreter's shared default server: with no server configured,
-- the first `hemera` starts a local nats-server that later ones find, and
-- it goes away when the last user has gone. Every test keeps the state in
-- a directory of its own (HEMERA_STATE_DIR), skips the 127.0.0.1:4222
-- probe (HEMERA_PROBE=none: CI may or may not have a server there) and
-- sets no grace period (HEMERA_SERVER_GRACE=0) unless the case is about
-- it.
local testing = require "hemera.testing"
local Hemera = require "hemera"
local core = require "hemera.core"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local shell_quote = require("shell").quote
local function has(text, s) return text:find(s, 1, true) ~= nil end

local function tmpdir()
  return (assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-shared.XXXXXX\"")):read("l"))
end

local function env(state, grace)
  return ("env -u HEMERA_NATS_URL HEMERA_PROBE=none HEMERA_SERVER_GRACE=%d HEMERA_STATE_DIR=%s ")
    :format(grace or 0, shell_quote(state))
end

local function read(path)
  local f = io.open(path)
  local text = f and f:read("a") or ""
  if f then f:close() end
  return text
end

-- Runs `hemera args` in the background, output (and then EXIT=<status>)
-- to `out`.
local function background(state, args, out)
  local script = out .. ".sh"
  local f = assert(io.open(script, "w"))
  f:write(("%stimeout -s KILL 60 %s %s >%s 2>&1\necho \"EXIT=$?\" >>%s\n")
    :format(env(state), bin, args, shell_quote(out), shell_quote(out)))
  f:close()
  os.execute("sh " .. shell_quote(script) .. " </dev/null >/dev/null 2>&1 &")
end

-- The first line of `path` matching the Lua pattern, awaited by following
-- the file (tail -F wakes on inotify); nil after 30 s.
local function await_line(path, lua_pattern, grep_fixed)
  local p = assert(io.popen(("timeout 30 tail -n +1 -F %s 2>/dev/null | grep -m1 -F %s")
    :format(shell_quote(path), shell_quote(grep_fixed))))
  local line = p:read("l")
  p:close()
  if line then return line:match(lua_pattern) end
  return nil
end

-- Runs `hemera args` to the end; returns its status and output.
local function run(state, args, grace)
  local p = assert(io.popen(("%stimeout -s KILL 60 %s %s 2>&1; echo \"EXIT=$?\""):format(env(state, grace), bin,
    args)))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("EXIT=(%d+)%s*$")), out
end

-- Polls a pid until it is gone (not our child: no exit event), bounded.
local function gone(pid) return testing.wait_gone(pid, 10000) end

describe("the shared default nats-server", function()
  it("serves a service and a client run as two interpreters, then goes away after both exit", function()
    local state = tmpdir()
    local service_out = state .. "/service.out"
    background(state, "examples/math_service.lua", service_out)
    local url, pid = await_line(service_out, "started a shared nats%-server on (%S+) %(pid (%d+)%)",
      "started a shared nats-server on")
    assert.truthy(url, read(service_out))
    local status, text = run(state, "server status")
    assert.equal(0, status, text)
    assert.is_true(has(text, "shared nats-server on " .. url .. " (pid " .. pid), text)
    -- The service is up when it answers (a successful request, not a wait).
    testing.run(function()
      local probe = Hemera.new { servers = url }
      assert(probe:ready())
      local sum
      for _ = 1, 50 do
        sum = probe:act { topic = "math", cmd = "add", a = 1, b = 1, timeout_ = 2000 }
        if sum == 2 then break end
      end
      assert.equal(2, sum, read(service_out))
      probe:close()
    end, 120000)
    -- A second interpreter, the README's second terminal.
    status, text = run(state, "examples/math_client.lua")
    assert.equal(0, status, text)
    assert.is_true(has(text, "using the shared nats-server on " .. url), text)
    assert.is_true(has(text, "1 + 2 = 3"), text)
    assert.is_true(has(text, "sum of 1..4 = 10"), text)
    assert.is_true(has(text, "1 / 0 fails: DivisionByZero"), text)
    -- A third terminal: `hemera ls` finds the shared server without being
    -- told, and lists the service with its endpoint and what it served.
    status, text = run(state, "ls --json --timeout 500")
    assert.equal(0, status, text)
    local listed = core.decode(text:match("^(.-)EXIT=") or text)
    assert.is_table(listed, text)
    local math_svc, math_ep
    for _, svc in ipairs(listed) do
      for _, ep in ipairs(svc.endpoints or {}) do
        if ep.subject == "math" then math_svc, math_ep = svc, ep end
      end
    end
    assert.is_table(math_ep, text)
    assert.equal("math-service", math_svc.name)
    assert.equal("queue.math", math_ep.queue_group)
    -- The client made 9 requests of math (sum's 4 nested adds among
    -- them), 2 of them errors (1 / 0, no sqrt); the probe above 1 or more.
    assert.is_true(math_ep.num_requests >= 10, text)
    assert.equal(2, math_ep.num_errors, text)
    -- What a user reads: the table, a row for the service.
    status, text = run(state, "ls --timeout 500")
    assert.equal(0, status, text)
    assert.matches("NAME%s+ID%s+VERSION%s+ENDPOINTS%s+REQUESTS%s+ERRORS", text)
    assert.matches("math%-service%s+%S+%s+" .. Hemera.VERSION:gsub("%.", "%%.") .. "%s+math %(queue%.math%)%s+%d+%s+2\n",
      text)
    -- Ctrl-C in the first terminal: the service drains and exits 0.
    local service_pid = assert(io.popen("pgrep -f -n " .. shell_quote("^" .. bin .. " examples/math_service.lua$")))
      :read("l")
    assert.truthy(service_pid)
    os.execute("kill -INT " .. service_pid)
    assert.equal("0", await_line(service_out, "^EXIT=(%d+)", "EXIT="), read(service_out))
    assert.is_true(gone(pid), "nats-server " .. pid .. " still runs")
    status, text = run(state, "server status")
    assert.equal(3, status, text)
    os.execute("rm -rf " .. shell_quote(state))
  end)

  it("starts one server when two interpreters start at the same time", function()
    local state = tmpdir()
    -- Each says which server it uses, then waits for its stdin to close.
    local script = state .. "/hold.lua"
    local f = assert(io.open(script, "w"))
    f:write([[print("url " .. require("hemera.devserver").url()) io.stdout:flush() io.read("a")]])
    f:close()
    local holders = {}
    for k = 1, 2 do
      local out = state .. "/holder" .. k .. ".out"
      holders[k] = { out = out, pipe = assert(io.popen(("%s%s %s >%s 2>&1"):format(env(state), bin,
        shell_quote(script), shell_quote(out)), "w")) }
    end
    local urls, started = {}, 0
    for k = 1, 2 do
      urls[k] = await_line(holders[k].out, "^url (%S+)", "url ")
      if has(read(holders[k].out), "started a shared nats-server") then started = started + 1 end
    end
    assert.truthy(urls[1], read(holders[1].out))
    assert.equal(urls[1], urls[2])
    assert.equal(1, started, read(holders[1].out) .. read(holders[2].out))
    local pid = read(state .. "/server"):match("^%d+ (%d+)")
    for k = 1, 2 do holders[k].pipe:close() end
    assert.is_true(gone(pid), "nats-server " .. pid .. " still runs")
    os.execute("rm -rf " .. shell_quote(state))
  end)

  it("replaces a stale server (its supervisor is gone), and `hemera server stop` stops a live one", function()
    local state = tmpdir()
    -- A pid that is certainly dead: a shell that has exited.
    local dead = assert(io.popen("sh -c 'echo $$'")):read("l")
    local f = assert(io.open(state .. "/server", "w"))
    f:write(dead .. " " .. dead .. " nats://127.0.0.1:1\n")
    f:close()
    local status, text = run(state, "server status")
    assert.equal(3, status, text)
    local script = state .. "/hold.lua"
    f = assert(io.open(script, "w"))
    f:write([[print("url " .. require("hemera.devserver").url()) io.stdout:flush() io.read("a")]])
    f:close()
    local out = state .. "/holder.out"
    local holder = assert(io.popen(("%s%s %s >%s 2>&1"):format(env(state), bin, shell_quote(script),
      shell_quote(out)), "w"))
    local url = await_line(out, "^url (%S+)", "url ")
    assert.truthy(url, read(out))
    assert.is_true(has(read(out), "started a shared nats-server on " .. url), read(out))
    local pid = read(state .. "/server"):match("^%d+ (%d+)")
    status, text = run(state, "server stop")
    assert.equal(0, status, text)
    assert.is_true(has(text, "stopped the shared nats-server on " .. url), text)
    assert.is_true(gone(pid), "nats-server " .. pid .. " still runs")
    status, text = run(state, "server status")
    assert.equal(3, status, text)
    holder:close()
    os.execute("rm -rf " .. shell_quote(state))
  end)

  it("outlives its last user for the grace period: a later hemera joins the same server", function()
    local state = tmpdir()
    -- A grace far longer than the test: the server must still be there
    -- after the first user has exited, whatever the machine's speed.
    local grace = 600000
    local print_url = "-e " .. shell_quote("print('url ' .. require('hemera.devserver').url())")
    local status, text = run(state, print_url, grace)
    assert.equal(0, status, text)
    local url = text:match("url (%S+)")
    assert.is_true(has(text, "started a shared nats-server on " .. url), text)
    local pid = read(state .. "/server"):match("^%d+ (%d+)")
    status, text = run(state, "server status", grace)
    assert.equal(0, status, text)
    assert.is_true(has(text, "shared nats-server on " .. url .. " (pid " .. pid), text)
    status, text = run(state, print_url, grace)
    assert.equal(0, status, text)
    assert.is_true(has(text, "using the shared nats-server on " .. url), text)
    assert.is_false(has(text, "started a shared nats-server"), text)
    -- The grace period does not hold up a stop.
    status, text = run(state, "server stop", grace)
    assert.equal(0, status, text)
    assert.is_true(gone(pid), "nats-server " .. pid .. " still runs")
    os.execute("rm -rf " .. shell_quote(state))
  end)

  it("refuses a bad HEMERA_SERVER_GRACE or HEMERA_PROBE and an unknown server command, naming the value", function()
    local state = tmpdir()
    local url = shell_quote("print(require('hemera.devserver').url())")
    local p = assert(io.popen(("%sHEMERA_SERVER_GRACE=soon %s -e %s 2>&1"):format(env(state), bin, url)))
    local text = p:read("a")
    p:close()
    assert.is_true(has(text, "HEMERA_SERVER_GRACE must be milliseconds from 0 to 86400000, got 'soon'"), text)
    p = assert(io.popen(("env -u HEMERA_NATS_URL HEMERA_PROBE=4222 HEMERA_STATE_DIR=%s %s -e %s 2>&1")
      :format(shell_quote(state), bin, url)))
    text = p:read("a")
    p:close()
    assert.is_true(has(text, "HEMERA_PROBE must be host:port or none, got '4222'"), text)
    local status
    status, text = run(state, "server restart")
    assert.equal(1, status, text)
    assert.is_true(has(text, "unknown server command 'restart' (status, stop)"), text)
    os.execute("rm -rf " .. shell_quote(state))
  end)

  it("refuses a state directory others can write, naming it and its mode", function()
    local state = tmpdir()
    os.execute("chmod 0777 " .. shell_quote(state))
    local status, text = run(state, "-e " .. shell_quote("print(require('hemera.devserver').url())"))
    assert.equal(0, status, text)
    assert.is_true(has(text, "the state directory " .. state .. " must be a directory of mode 0700"), text)
    assert.is_true(has(text, "mode 777"), text)
    os.execute("rm -rf " .. shell_quote(state))
  end)
end)
