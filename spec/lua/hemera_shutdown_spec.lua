-- Hemera v7 graceful shutdown (test/hemera/gracefully-shutdown.spec.js):
-- close() unsubscribes every topic, closes the NATS connection, runs the
-- onClose hooks and then close(fn) with the first onClose error; fatal()
-- closes and exits with status 1. `hemera.transport` is the connection
-- (Node: the nats client passed to new Hemera).
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- A test of a behaviour the library once got wrong; `symptom` records what
-- it was, and the test now runs like any other.
local function fixed_bug(_symptom, body)
  return function() testing.run(body) end
end

local function spy()
  return setmetatable({ n = 0 }, { __call = function(self) self.n = self.n + 1 end })
end

-- Closes `s` and returns what close(fn) got (false for no error).
local function close(s)
  local closed = testing.future()
  s:close(function(err) closed:set(err or false) end)
  local err, why = closed:wait(5000)
  assert.is_nil(why, "close(fn) was not called back")
  return err
end

local function add_noop(s, topic, cmd)
  s:add({ topic = topic, cmd = cmd }, function() end)
end

describe("Gracefully shutdown", function()
  it("Should gracefully shutdown nats and exit the process when calling fatal()", function()
    local real_exit = os.exit
    local ok, err = pcall(testing.run, function()
      local s = testing.new()
      assert(s:ready())
      local topic = testing.topic("math")
      add_noop(s, topic, "sub")
      add_noop(s, topic, "add")
      local on_close = spy()
      s:ext("onClose", function() on_close() end)
      local exited = testing.future()
      -- luacheck: ignore 122 (the spec stubs os.exit to see fatal() call it)
      os.exit = function(code) exited:set(code == nil and "nil" or code) end
      s:fatal()
      local code = exited:wait(5000)
      os.exit = real_exit -- luacheck: ignore 122
      assert.equal(1, code)
      assert.equal(1, on_close.n)
      assert.is_true(s.transport:is_closed())
    end)
    os.exit = real_exit -- luacheck: ignore 122
    assert(ok, err)
  end)

  it("Should be able to unsubscribe active subscription", fixed_bug(
    "after close(), hemera.topics still lists the closed topics (init.lua Hemera:close unsubscribes but never removes the topics; Hemera runs removeAll)",
    function()
      local s = testing.new()
      assert(s:ready())
      local topic = testing.topic("math")
      add_noop(s, topic, "sub")
      add_noop(s, topic, "add")
      assert.same({ topic }, s.topics)
      assert.is_nil(close(s) or nil)
      assert.equal(0, #s.topics)
      assert.same({}, s:list())
    end))

  it("Should be able to unsubscribe multiple active subscriptions", fixed_bug(
    "after close(), hemera.topics still lists the closed topics (init.lua Hemera:close unsubscribes but never removes the topics; Hemera runs removeAll)",
    function()
      local s = testing.new()
      assert(s:ready())
      local math_topic = testing.topic("math")
      add_noop(s, math_topic, "sub")
      add_noop(s, math_topic, "add")
      add_noop(s, testing.topic("user"), "add")
      add_noop(s, testing.topic("order"), "add")
      assert.equal(3, #s.topics)
      assert.is_nil(close(s) or nil)
      assert.equal(0, #s.topics)
    end))

  it("Should stop serving the topics once closed", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local topic = testing.topic("math")
      local served = spy()
      s:add({ topic = topic, cmd = "add" }, function() served() end)
      local c = testing.new()
      assert(c:ready())
      local _, err = c:act { topic = topic, cmd = "add" }
      assert.is_nil(err)
      assert.is_nil(close(s) or nil)
      local _, terr = c:act { topic = topic, cmd = "add", timeout_ = 100 }
      assert.equal("TimeoutError", terr.name)
      assert.equal(1, served.n)
    end)
  end)

  it("Should close the underlying nats connection", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local topic = testing.topic("math")
      add_noop(s, topic, "sub")
      add_noop(s, topic, "add")
      assert.is_false(s.transport:is_closed())
      assert.is_nil(close(s) or nil)
      assert.is_true(s.transport:is_closed())
    end)
  end)

  it("Should close without callback", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      assert.is_nil(s:close())
      -- A later close(fn) still reports the end of that shutdown.
      assert.is_nil(close(s) or nil)
      assert.is_true(s.transport:is_closed())
    end)
  end)

  it("Should gracefully shutdown even when NATS connection is already closed", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local on_close = spy()
      s:ext("onClose", function() on_close() end)
      local topic = testing.topic("math")
      add_noop(s, topic, "sub")
      add_noop(s, topic, "add")
      local nats_closed = testing.future()
      s.transport:close(function() nats_closed:set(true) end)
      assert.is_true(nats_closed:wait(3000))
      assert.is_true(s.transport:is_closed())
      assert.is_nil(close(s) or nil)
      assert.equal(1, on_close.n)
    end)
  end)

  it("Should gracefully shutdown while the NATS connection is closing", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local on_close = spy()
      s:ext("onClose", function() on_close() end)
      add_noop(s, testing.topic("math"), "add")
      s.transport:close()
      assert.is_nil(close(s) or nil)
      assert.equal(1, on_close.n)
    end)
  end)

  it("Should call close callback even when we did no IO", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      assert.is_nil(close(s) or nil)
      assert.is_true(s.transport:is_closed())
    end)
  end)

  it("Should call close callback for an instance that never connected", function()
    testing.run(function()
      local s = testing.new()
      local on_close = spy()
      s:ext("onClose", function() on_close() end)
      assert.is_nil(close(s) or nil)
      assert.equal(1, on_close.n)
    end)
  end)

  it("Should be able to listen on error events before exit", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      s:ext("onClose", function() return nil, Hemera.errors.Error("test") end)
      local err = close(s)
      assert.is_table(err)
      assert.equal("test", err.message)
      assert.is_true(s.transport:is_closed())
    end)
  end)

  it("Should let a running handler finish and reply before closing", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local topic = testing.topic("slow")
      local started = testing.future()
      s:add({ topic = topic }, function()
        started:set(true)
        Hemera.sleep(50)
        return "done"
      end)
      local c = testing.new()
      assert(c:ready())
      local reply = testing.future()
      c:act({ topic = topic }, function(err, res) reply:set(err or false, res) end)
      assert.is_true(started:wait(2000))
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      local err, res = reply:wait(3000)
      assert.is_false(err)
      assert.equal("done", res)
      assert.is_false(closed:wait(3000))
    end)
  end)
end)
