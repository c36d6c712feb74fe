-- Hemera.handleSignals in a plain lua5.4 host: the first SIGINT closes
-- every instance, lets the request in flight finish and send its reply,
-- and ends Hemera.run(); a second one exits at once; the signal handles
-- never keep the loop alive on their own.
local testing = require "hemera.testing"
local Hemera = require "hemera"

local shell_quote = require("shell").quote

-- Sanitizer builds need their runtimes preloaded into a plain lua5.4:
-- the environment assignments for that.
local function preload_env()
  local preload = os.getenv("HEMERA_LUA_PRELOAD") or ""
  if preload == "" then return "" end
  return "LD_PRELOAD=" .. shell_quote(preload) .. " ASAN_OPTIONS=detect_leaks=0 "
end

local function tmpdir()
  return (assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-signals.XXXXXX\"")):read("l"))
end

-- Starts `lua5.4 script` in the background; its merged output and then
-- "EXIT=<status>" go to dir/out.txt. Returns a reader of that file.
local function start(source)
  local dir = tmpdir()
  local f = assert(io.open(dir .. "/service.lua", "w"))
  f:write(source)
  f:close()
  f = assert(io.open(dir .. "/run.sh", "w"))
  f:write(("%sHEMERA_NATS_URL=%s timeout -s KILL 60 lua5.4 %s >%s 2>&1\necho \"EXIT=$?\" >>%s\n"):format(
    preload_env(), shell_quote(testing.url()), shell_quote(dir .. "/service.lua"), shell_quote(dir .. "/out.txt"),
    shell_quote(dir .. "/out.txt")))
  f:close()
  os.execute("sh " .. shell_quote(dir .. "/run.sh") .. " </dev/null >/dev/null 2>&1 &")
  return dir
end

local function read_out(dir)
  local f = io.open(dir .. "/out.txt")
  local text = f and f:read("a") or ""
  if f then f:close() end
  return text
end

-- The status once the process has written it: awaited by following the
-- file (tail -F wakes on inotify), not by sleeping.
local function wait_exit(dir)
  local p = assert(io.popen(("timeout 60 tail -n +1 -F %s 2>/dev/null | grep -m1 '^EXIT='")
    :format(dir .. "/out.txt")))
  local line = p:read("l")
  p:close()
  local text = read_out(dir)
  os.execute("rm -rf " .. shell_quote(dir))
  return tonumber(line and line:match("^EXIT=(%d+)")), text
end

local function has(text, s) return text:find(s, 1, true) ~= nil end

local SERVICE = [[
local Hemera = require "hemera"
local pid = io.open("/proc/self/stat"):read("l"):match("^(%%d+)")
Hemera.handleSignals { "SIGINT", "SIGTERM" }
local hemera = Hemera.new { closeTimeout = %d }
hemera:add({ topic = %q }, function(req)
  if req.k == 0 then return 0 end -- the spec's probe: are we up?
  -- Tell the spec this handler runs (and our pid), then work a while.
  hemera:act { topic = %q, pubsub_ = true, pid = pid }
  Hemera.sleep(%d)
  return req.k * 2
end)
hemera:ready()
Hemera.run()
print("Hemera.run returned")
]]

describe("Hemera.handleSignals in a plain lua5.4", function()
  -- Runs the service, makes one request, sends `signals` (a function of
  -- the pid) once the handler has started, and returns the reply or error
  -- the caller got, then the exit status and the output.
  local function serve_and_signal(closeTimeout, sleep_ms, act_timeout, send)
    local topic = testing.topic("signals")
    local dir = start(SERVICE:format(closeTimeout, topic, topic .. ".entered", sleep_ms))
    local outcome
    testing.run(function()
      local entered = testing.future()
      local watcher = Hemera.new { servers = testing.url() }
      watcher:add({ topic = topic .. ".entered", pubsub_ = true }, function(req) entered:set(req.pid) end)
      assert(watcher:ready())
      local c = Hemera.new { servers = testing.url() }
      assert(c:ready())
      -- The service may still be starting: its first reply says it is up.
      local probe
      for _ = 1, 100 do
        probe = c:act { topic = topic, k = 0, timeout_ = 2000 }
        if probe == 0 or read_out(dir):find("EXIT=", 1, true) then break end
      end
      assert.equal(0, probe, "the service did not start:\n" .. read_out(dir))
      entered = testing.future()
      local done = testing.future()
      c:act({ topic = topic, k = 21, timeout_ = act_timeout }, function(err, res) done:set(err or res) end)
      local pid = assert(entered:wait(10000), "the handler did not start")
      send(pid, dir)
      outcome = done:wait(25000)
      Hemera.closeAll()
    end, 40000)
    local status, text = wait_exit(dir)
    return outcome, status, text
  end

  it("drains the request in flight on SIGINT (its reply arrives), ends Hemera.run() and exits 0", function()
    local outcome, status, text = serve_and_signal(10000, 300, 20000, function(pid)
      os.execute("kill -INT " .. pid)
    end)
    assert.equal(42, outcome, text)
    assert.equal(0, status, text)
    assert.is_true(has(text, "SIGINT: closing every instance"), text)
    assert.is_true(has(text, "Hemera.run returned"), text)
  end)

  it("exits at once with 128 + 15 on a second signal while the close still waits", function()
    local outcome, status, text = serve_and_signal(60000, 1e9, 1500, function(pid, dir)
      -- The second only once the first was taken: sent back to back, the
      -- two can land on two threads of the process in either order.
      os.execute("kill -INT " .. pid)
      -- Awaited as wait_exit awaits EXIT= (tail -F wakes on the write).
      local p = assert(io.popen(("timeout 10 tail -n +1 -F %s 2>/dev/null | grep -m1 -F %s")
        :format(shell_quote(dir .. "/out.txt"), shell_quote("SIGINT: closing every instance"))))
      p:read("a")
      p:close()
      os.execute("kill -TERM " .. pid)
    end)
    assert.equal(143, status, text)
    assert.is_false(has(text, "Hemera.run returned"), text)
    -- The caller hears of the lost connection or times out, nothing else.
    assert.is_true(Hemera.errors.Error:is(outcome), tostring(outcome))
  end)

  it("never keeps the loop alive on its own", function()
    local dir = start([[
local Hemera = require "hemera"
Hemera.handleSignals { "SIGINT", "SIGTERM", "SIGHUP" }
Hemera.spawn(function() Hemera.sleep(10) print("slept") end)
Hemera.run()
print("Hemera.run returned")
]])
    local status, text = wait_exit(dir)
    assert.equal(0, status, text)
    assert.is_true(has(text, "slept\nHemera.run returned"), text)
  end)

  it("refuses an unknown signal name, naming it and the names it knows", function()
    local ok, err = pcall(Hemera.handleSignals, { "SIGINT", "SIGFOO" })
    assert.is_false(ok)
    assert.matches("unknown signal 'SIGFOO' %(known: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2%)", tostring(err))
    ok, err = pcall(Hemera.handleSignals, "SIGINT")
    assert.is_false(ok)
    assert.matches("expected a list of signal names", tostring(err))
  end)
end)
