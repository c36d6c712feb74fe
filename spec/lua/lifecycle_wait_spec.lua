-- Lifecycle: what a coroutine waits on owns it, and lets go of it. A
-- future nobody can set any more does not keep its waiter alive; a future
-- gives its waiter and a later wait the same values, as many as set got.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Spawns n coroutines that each wait on a future of their own that nothing
-- else references; returns once all of them are parked. The ready queue
-- runs in order, so the marker spawned last runs after every one of them
-- has reached its wait.
local function park_forgotten(n, weak, timeout)
  for _ = 1, n do
    Hemera.spawn(function()
      weak[coroutine.running()] = true
      core.future():wait(timeout)
    end)
  end
  local parked = core.future()
  Hemera.spawn(function() parked:set(true) end)
  assert(parked:wait(5000))
end

describe("lifecycle: futures", function()
  it("a future nobody can set is collected with its waiting coroutine", function()
    local weak = setmetatable({}, { __mode = "k" })
    testing.run(function()
      park_forgotten(100, weak)
      assert.equal(100, count(weak))
      collectgarbage()
      collectgarbage()
      assert.equal(0, count(weak))
    end)
  end)

  it("a future still reachable keeps its waiter, and wakes it", function()
    local weak = setmetatable({}, { __mode = "k" })
    testing.run(function()
      local f = core.future()
      local got = core.future()
      Hemera.spawn(function()
        weak[coroutine.running()] = true
        got:set(f:wait())
      end)
      local parked = core.future()
      Hemera.spawn(function() parked:set(true) end)
      parked:wait(5000)
      collectgarbage()
      collectgarbage()
      assert.equal(1, count(weak))
      f:set("v", 2)
      local a, b = got:wait(5000)
      assert.equal("v", a)
      assert.equal(2, b)
    end)
  end)

  it("a waiter with a timeout is held until the timeout, then gets nil, 'timeout'", function()
    testing.run(function()
      local f = core.future()
      collectgarbage()
      local v, err = f:wait(1)
      assert.is_nil(v)
      assert.equal("timeout", err)
    end)
  end)

  -- select('#', ...) of the values given to set, for the waiter and for a
  -- wait after set alike.
  for _, case in ipairs {
    { "nothing", {} },
    { "nil, nil", { nil, nil, n = 2 } },
    { "1, nil, 3, nil", { 1, nil, 3, nil, n = 4 } },
    { "false", { false } },
  } do
    local name, values = case[1], case[2]
    local n = values.n or #values
    it("set(" .. name .. ") gives " .. n .. " values to its waiter and to a later wait", function()
      testing.run(function()
        local f = core.future()
        local woke = core.future()
        Hemera.spawn(function() woke:set(table.pack(f:wait(5000))) end)
        local parked = core.future()
        Hemera.spawn(function() parked:set(true) end)
        parked:wait(5000)
        f:set(table.unpack(values, 1, n))
        local first = woke:wait(5000)
        local later = table.pack(f:wait())
        assert.equal(n, first.n)
        assert.equal(n, later.n)
        for i = 1, n do
          assert.equal(values[i], first[i])
          assert.equal(values[i], later[i])
        end
      end)
    end)
  end

  it("set from a plain (non-Hemera) coroutine wakes the waiter", function()
    testing.run(function()
      local f = core.future()
      local got = core.future()
      Hemera.spawn(function() got:set(f:wait(5000)) end)
      -- A plain function called by the main thread (as a luv callback is).
      local co = coroutine.create(function() f:set("from a plain coroutine") end)
      local parked = core.future()
      Hemera.spawn(function() parked:set(true) end)
      parked:wait(5000)
      assert(coroutine.resume(co))
      assert.equal("from a plain coroutine", got:wait(5000))
    end)
  end)
end)

describe("lifecycle: waiting outside a Hemera coroutine", function()
  it("sleep and wait refuse with a clear error", function()
    local ok, err = pcall(core.sleep, 1)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("must run in a Hemera coroutine", 1, true), err)
    ok, err = pcall(function() return core.future():wait(10) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("must run in a Hemera coroutine", 1, true), err)
  end)
end)
