-- Security findings 4 and 7: a CPU budget per handler (core.budget_call),
-- signals the interpreter honours while Lua spins, and pooled coroutines
-- that keep nothing of their last job.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local function spin() while true do end end

-- Busy for `ms` of wall time: the budget's clock runs while Lua runs.
local function busy(ms)
  local t = core.hrtime()
  while core.hrtime() - t < ms do end
end

local function is_budget_error(err, ms)
  assert.is_table(err)
  assert.equal("HandlerBudgetError", err.name)
  assert.equal(ms, err.budget)
  assert.is_true(err.used >= ms, "used " .. tostring(err.used))
  assert.is_string(err.message)
end

describe("core.budget_call", function()
  it("returns the budget error for a loop that never ends, and the pooled coroutine serves the next job", function()
    testing.run(function()
      local first, second = testing.future(), testing.future()
      core.spawn(function()
        local ok, err = core.budget_call(50, spin)
        first:set(coroutine.running(), ok, err, debug.gethook())
      end)
      local co1, ok, err, hook = first:wait(5000)
      assert.is_false(ok)
      is_budget_error(err, 50)
      assert.is_nil(hook)
      -- The coroutine went back to the pool; the pool hands out the last one in.
      core.spawn(function()
        local inside
        local r = { core.budget_call(50, function(a, b)
          inside = debug.gethook()
          return a + b, "x"
        end, 1, 2) }
        second:set(coroutine.running(), r, inside, debug.gethook())
      end)
      local co2, r, inside, after = second:wait(5000)
      assert.equal(co1, co2)
      assert.same({ true, 3, "x" }, r)
      assert.is_nil(inside)
      assert.is_nil(after)
    end)
  end)

  it("cannot be swallowed by a pcall, an xpcall or a user coroutine inside", function()
    testing.run(function()
      local rounds = 0
      local ok, err = core.budget_call(30, function()
        while true do
          rounds = rounds + 1
          pcall(spin)
        end
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
      ok, err = core.budget_call(30, function()
        while true do xpcall(spin, function(e) return e end) end
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
      -- A user coroutine that spins is reached in strict mode only, where
      -- coroutines made inside a budget inherit the hook.
      assert.is_true(core.budget_strict(true))
      ok, err = core.budget_call(30, function()
        while true do coroutine.resume(coroutine.create(spin)) end
      end)
      assert.is_false(core.budget_strict(false))
      assert.is_false(ok)
      is_budget_error(err, 30)
      -- Without it, a user coroutine that returns cannot shelter its caller.
      ok, err = core.budget_call(30, function()
        while true do coroutine.wrap(function() for _ = 1, 1000 do end end)() end
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
      assert.is_nil(debug.gethook())
      -- And the coroutine is fine afterwards.
      assert.same({ true, 42 }, { core.budget_call(30, function() return 42 end) })
    end)
  end)

  it("charges only the time the coroutine runs, across sleeps and acts", function()
    testing.run(function()
      local ok, a, b = core.budget_call(100, function()
        Hemera.sleep(300)
        return "slept", 1
      end)
      assert.is_true(ok)
      assert.equal("slept", a)
      assert.equal(1, b)
      -- Running time adds up over the resumes.
      local rounds = 0
      local err
      ok, err = core.budget_call(100, function()
        for _ = 1, 20 do
          busy(20)
          rounds = rounds + 1
          Hemera.sleep(5)
        end
      end)
      assert.is_false(ok)
      is_budget_error(err, 100)
      assert.is_true(rounds >= 4 and rounds < 20, "rounds " .. rounds)
      -- An act suspends through the budget_call as well.
      local topic = testing.topic("budget")
      local hemera = testing.new()
      hemera:add({ topic = topic }, function(req)
        local rok, r = core.budget_call(100, function()
          Hemera.sleep(200)
          return req.a * 2
        end)
        assert(rok, r)
        return r
      end)
      assert(hemera:ready())
      local r1, r2 = core.budget_call(100, function()
        return hemera:act { topic = topic, a = 21 }
      end)
      assert.is_true(r1)
      assert.equal(42, r2)
      hemera:close()
    end)
  end)

  it("without a budget is a yieldable pcall and leaves no hook behind", function()
    testing.run(function()
      local inside
      local ok, v = core.budget_call(nil, function()
        inside = debug.gethook()
        Hemera.sleep(10)
        return "v"
      end)
      assert.is_true(ok)
      assert.equal("v", v)
      assert.is_nil(inside)
      assert.is_nil(debug.gethook())
      ok, v = core.budget_call(0, function() error({ code = 7 }) end)
      assert.is_false(ok)
      assert.same({ code = 7 }, v)
      ok, v = core.budget_call(20, function() error("plain", 0) end)
      assert.is_false(ok)
      assert.equal("plain", v)
      assert.is_nil(debug.gethook())
    end)
  end)

  it("nests: an inner budget fails alone, an outer one fails through the inner call", function()
    testing.run(function()
      local ok, r1, r2 = core.budget_call(500, function()
        return core.budget_call(20, spin)
      end)
      assert.is_true(ok)
      assert.is_false(r1)
      is_budget_error(r2, 20)
      local inner_returned = false
      local err
      ok, err = core.budget_call(30, function()
        core.budget_call(10000, spin)
        inner_returned = true
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
      assert.is_false(inner_returned)
      assert.is_nil(debug.gethook())
    end)
  end)

  it("in strict mode: the same, and a hook a user coroutine inherited removes itself once no budget runs", function()
    testing.run(function()
      core.budget_strict(true)
      local ok, err = core.budget_call(50, spin)
      assert.is_false(ok)
      is_budget_error(err, 50)
      ok, err = core.budget_call(30, function()
        while true do pcall(spin) end
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
      assert.same({ true, "slept" }, { core.budget_call(50, function()
        Hemera.sleep(100)
        return "slept"
      end) })
      assert.is_nil(debug.gethook())
      local co
      assert.is_true(core.budget_call(1000, function()
        co = coroutine.create(function()
          for _ = 1, 3 do
            for _ = 1, 100000 do end
            coroutine.yield()
          end
        end)
      end))
      assert.equal("external hook", debug.gethook(co))
      assert.is_true(coroutine.resume(co))
      assert.is_nil(debug.gethook(co))
      assert.is_true(coroutine.resume(co))
      core.budget_strict(false)
    end)
  end)

  it("by default runs no hook while the budget has time left", function()
    testing.run(function()
      assert.is_false(core.budget_strict())
      local hook
      assert.is_true(core.budget_call(1000, function() hook = debug.gethook() end))
      assert.is_nil(hook)
      local ok, err = core.budget_call(1000, function() core.budget_strict(true) end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("while a budget runs", 1, true))
      assert.is_false(core.budget_strict())
    end)
  end)

  it("needs a Hemera coroutine for a budget", function()
    assert.has_error(function() core.budget_call(10, function() end) end)
    assert.same({ true, 1 }, { core.budget_call(nil, function() return 1 end) })
  end)
end)

describe("core.budget_xpcall", function()
  it("is budget_call of xpcall: results, errors through the handler, yields, and over budget a third value", function()
    testing.run(function()
      local function handler(e) return { handled = e } end
      assert.same({ true, 3, "x" }, { core.budget_xpcall(50, handler, function(a, b)
        Hemera.sleep(5) -- it yields like any handler
        return a + b, "x"
      end, 1, 2) })
      assert.same({ false, { handled = "plain" } },
                  { core.budget_xpcall(50, handler, function() error("plain", 0) end) })
      assert.same({ false, { handled = { code = 7 } } },
                  { core.budget_xpcall(nil, handler, function() error({ code = 7 }) end) })
      -- Over budget: the budget's error, not the handler's, and true.
      local r = { core.budget_xpcall(30, handler, spin) }
      assert.equal(3, #r)
      assert.is_false(r[1])
      is_budget_error(r[2], 30)
      assert.is_true(r[3])
      assert.is_nil(debug.gethook())
      -- Nested in budget_call: the outer budget runs out through it.
      local ok, err = core.budget_call(30, function()
        return core.budget_xpcall(1000, handler, spin)
      end)
      assert.is_false(ok)
      is_budget_error(err, 30)
    end)
  end)

  it("checks its arguments", function()
    assert.has_error(function() core.budget_xpcall(nil, nil, function() end) end)
    assert.has_error(function() core.budget_xpcall(nil, print, nil) end)
  end)
end)

describe("pooled coroutines", function()
  local function jobs_hold_nothing(n)
    local weak = setmetatable({}, { __mode = "v" })
    local gate, left, all_done = testing.future(), n, testing.future()
    for k = 1, n do
      -- The table is reachable only through the job's arguments.
      core.spawn(function(t, kk)
        weak[kk] = t
        gate:wait(5000)
        left = left - 1
        if left == 0 then all_done:set(true) end
      end, { payload = ("x"):rep(1000) }, k)
    end
    gate:set()
    assert.is_true(all_done:wait(5000))
    -- A job parks before the waiter it woke runs: all are pooled now.
    assert.is_true(core.stats().pooled >= n)
    collectgarbage()
    collectgarbage()
    return next(weak)
  end

  it("keep nothing of their last job, fresh or reused", function()
    testing.run(function()
      -- The first round makes fresh coroutines, the second reuses them.
      assert.is_nil(jobs_hold_nothing(20))
      assert.is_nil(jobs_hold_nothing(20))
    end)
  end)

  it("do not keep a big request payload alive", function()
    testing.run(function()
      local done = testing.future()
      collectgarbage()
      collectgarbage()
      local before = collectgarbage("count")
      core.spawn(function(s) done:set(#s) end, ("y"):rep(16 * 1024 * 1024))
      assert.equal(16 * 1024 * 1024, done:wait(5000))
      -- The job parked before this waiter was resumed.
      collectgarbage()
      collectgarbage()
      local grown = collectgarbage("count") - before
      assert.is_true(grown < 4 * 1024, ("heap grew by %.0f KiB"):format(grown))
    end)
  end)
end)

-- {==================================================================
-- The interpreter and signals
-- ===================================================================

local shell_quote = require("shell").quote

-- Runs `hemera script` (with the test server), waits for its first line
-- "spinning <pid>", calls on_spin(pid), and returns the exit status and
-- the output. `timeout` is only a safety net.
local function run_spinner(source, on_spin, private)
  local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-budget.XXXXXX\"")):read("l")
  local script = dir .. "/service.lua"
  local f = assert(io.open(script, "w"))
  f:write([[
local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
local function spinning()
  io.stdout:write("spinning ", pid, "\n")
  io.stdout:flush()
end
]], source)
  f:close()
  local server = private and "" or "--server " .. shell_quote(testing.url())
  -- The shared server's state in our own directory, and no probe of 4222.
  local env = private and ("env -u HEMERA_NATS_URL HEMERA_PROBE=none HEMERA_SERVER_GRACE=0 HEMERA_STATE_DIR="
    .. shell_quote(dir) .. " ") or ""
  local p = assert(io.popen(("%stimeout -s KILL 60 %s %s %s 2>&1; echo \"EXIT=$?\"")
    :format(env, bin, server, shell_quote(script))))
  local out, status = {}, nil
  for line in p:lines() do
    out[#out + 1] = line
    local pid = line:match("^spinning (%d+)")
    if pid then on_spin(pid) end
    status = tonumber(line:match("^EXIT=(%d+)")) or status
  end
  p:close()
  os.execute("rm -rf " .. shell_quote(dir))
  return status, table.concat(out, "\n")
end

describe("the hemera interpreter while Lua spins", function()
  it("closes gracefully on SIGTERM while a spawned coroutine spins", function()
    local status, out = run_spinner([[
local Hemera = require "hemera"
Hemera.spawn(function() spinning(); while true do end end)
]], function(pid) os.execute("kill -TERM " .. pid) end)
    assert.equal(0, status, out)
    assert.truthy(out:find("abandoned 1 coroutine", 1, true), out)
  end)

  it("lets a coroutine that is busy for a while finish after SIGTERM", function()
    local status, out = run_spinner([[
local Hemera = require "hemera"
local hrtime = require("hemera.core").hrtime
Hemera.spawn(function()
  spinning()
  -- Busy for 1 s from here (the signal comes right away), less than the
  -- 2 s a preempted coroutine has to finish.
  local t = hrtime()
  while hrtime() - t < 1000 do end
  print("finished")
end)
]], function(pid) os.execute("kill -TERM " .. pid) end)
    assert.equal(0, status, out)
    assert.truthy(out:find("finished", 1, true), out)
    assert.falsy(out:find("abandoned", 1, true), out)
  end)

  it("closes gracefully on SIGTERM while a handler spins: the instance closes, the process exits", function()
    local topic = testing.topic("spin")
    local status, out = run_spinner(([[
local Hemera = require "hemera"
local hemera = Hemera.new { closeTimeout = 200, handlerBudget = 0 } -- no budget: it spins
hemera:ext("onClose", function() print("onClose ran") end)
hemera:add({ topic = %q }, function() spinning(); while true do end end)
hemera:ready(function()
  hemera:act({ topic = %q, timeout_ = 30000 }, function() end)
end)
]]):format(topic, topic), function(pid) os.execute("kill -TERM " .. pid) end)
    assert.equal(0, status, out)
    assert.truthy(out:find("onClose ran", 1, true), out)
    -- Abandoned at closeTimeout, named by its pattern.
    assert.truthy(out:find("Abandoned a handler still running at closeTimeout: closeTimeout=200 pattern=topic:"
      .. topic, 1, true), out)
  end)

  it("exits at once on a second signal while Lua cannot yield", function()
    local status, out = run_spinner([[
local Hemera = require "hemera"
Hemera.spawn(function()
  spinning()
  -- A sort comparator cannot yield: the first signal has to wait.
  table.sort({ 3, 2, 1, 5, 4 }, function() while true do end end)
end)
]], function(pid)
      -- Two different signals, so they cannot merge into one pending signal.
      os.execute("kill -INT " .. pid .. "; kill -TERM " .. pid)
    end)
    assert.equal(128 + 15, status, out)
  end)

  it("leaves no nats-server behind after the second signal: the shared one stops once its last user is gone", function()
    local status, out = run_spinner([[
require("hemera.devserver").url()
local Hemera = require "hemera"
Hemera.spawn(function()
  spinning()
  table.sort({ 3, 2, 1, 5, 4 }, function() while true do end end)
end)
]], function(pid) os.execute("kill -INT " .. pid .. "; kill -TERM " .. pid) end, true)
    assert.equal(128 + 15, status, out)
    local server = assert(out:match("started a shared nats%-server on %S+ %(pid (%d+)%)"), out)
    -- Its supervisor sees the last user gone (the kernel drops the lock of
    -- a process however it ends) and stops it: poll, a bounded number of
    -- times.
    local state
    for _ = 1, 200 do
      local stat = io.open("/proc/" .. server .. "/stat")
      state = stat and stat:read("l"):match("^%d+ %b() (%a)")
      if stat then stat:close() end
      if state == nil or state == "Z" then break end
      os.execute("sleep 0.05")
    end
    assert.is_true(state == nil or state == "Z", "shared nats-server " .. server .. " still runs")
  end)
end)
