-- Faults: acts that end abnormally (timeout, cancel, send failure, closed
-- connection) leave no pending record and no Lua registry reference behind.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local N = 1000

-- Live entries in the Lua registry: callbacks and coroutines the C side
-- holds are registry references (luaL_ref), so a leaked request shows up
-- here one entry per act.
-- Two things vary with how many acts ran at once, which depends on the
-- machine's speed, and are not counted: the scheduler's idle coroutines
-- (up to 256 references), and the slots luaL_unref frees, which stay in
-- the registry as its free list (an integer key holding an integer).
local function registry_size()
  collectgarbage()
  local n = 0
  for k, v in pairs(debug.getregistry()) do
    if not (math.type(k) == "integer" and math.type(v) == "integer") then n = n + 1 end
  end
  return n - require("hemera.core").stats().pooled
end

-- Other bookkeeping may grow a little: the first round of N acts fills
-- that; what a later round adds is a leak (N entries per round for a
-- per-act leak).
local SLACK = 100

-- Runs round() three times; returns the registry growth of the last one.
local function growth(round)
  round()
  round()
  local before = registry_size()
  round()
  return registry_size() - before
end

describe("faults: no leaks from acts that end abnormally", function()
  local srv
  setup(function() srv = testing.start_server { config = "max_payload: 4096" } end)
  teardown(function() testing.stop_all() end)

  it("timed-out acts", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local topic = testing.topic("nobody")
      local grown = growth(function()
        local ended, all = 0, testing.future()
        for _ = 1, N do
          c:act({ topic = topic, timeout_ = 50 }, function()
            ended = ended + 1
            if ended == N then all:set() end
          end)
        end
        assert.is_nil(select(2, all:wait(10000)))
        assert.equal(0, c:stats().pending)
      end)
      assert.is_true(grown < SLACK, "the registry grew by " .. grown)
    end)
  end)

  it("acts cancelled with hemera:remove(ctx.sid)", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local topic = testing.topic("cancel")
      local called = 0
      local grown = growth(function()
        for _ = 1, N do
          local ctx = c:act({ topic = topic, timeout_ = 60000 }, function() called = called + 1 end)
          assert.is_true(c:remove(ctx.sid))
        end
        assert(c:flush())
        assert.equal(0, c:stats().pending)
      end)
      assert.equal(0, called)
      assert(grown < SLACK, ("the Lua registry grew by %d entries after %d cancels"):format(grown, N))
    end)
  end)

  it("acts that cannot be sent (over max_payload)", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local topic = testing.topic("toobig")
      local big = ("x"):rep(8192)
      local grown = growth(function()
        for _ = 1, N do
          local res, err = c:act { topic = topic, data = { big = big } }
          assert.is_nil(res)
          assert.matches("max_payload", err.message)
        end
        assert.equal(0, c:stats().pending)
      end)
      assert.is_true(grown < SLACK, "the registry grew by " .. grown)
    end)
  end)

  it("acts ended by close()", function()
    testing.run(function()
      local s = Hemera.new { servers = srv.url }
      local topic = testing.topic("closing")
      local hold, arrived = {}, nil
      s:add({ topic = topic }, function()
        local f = testing.future()
        hold[#hold + 1] = f
        if #hold == N then arrived:set() end
        f:wait()
      end)
      assert(s:ready())
      local grown = growth(function()
        local c = Hemera.new { servers = srv.url }
        assert(c:ready())
        local ended, all = 0, testing.future()
        arrived = testing.future()
        for _ = 1, N do
          c:act({ topic = topic, timeout_ = 60000 }, function()
            ended = ended + 1
            if ended == N then all:set() end
          end)
        end
        assert.is_nil(select(2, arrived:wait(10000)))
        local closed = testing.future()
        c:close(function() closed:set(true) end)
        assert.is_nil(select(2, all:wait(10000)))
        assert.is_true(closed:wait(10000))
        -- Release the service's handlers (their replies go nowhere).
        for _, f in ipairs(hold) do f:set() end
        hold = {}
        assert(s:flush())
      end)
      assert.is_true(grown < SLACK, "the registry grew by " .. grown)
    end, 25000)
  end)
end)
