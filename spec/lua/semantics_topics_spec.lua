-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/unsubscribing.spec.js,
-- transport-options.spec.js, custom-queues.spec.js and pub-sub.spec.js.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return err
end

local function has(list, value)
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end

local function sum(req) return { result = (req.a or 0) + (req.b or 0) } end

describe("unsubscribing.spec.js", function()
  it("unsubscribes a NATS topic", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, sum)
      assert.truthy(has(hemera.topics, topic))
      local result = hemera:remove(topic)
      assert.is_true(result)
      assert.is_false(has(hemera.topics, topic))
      assert.equal(0, #hemera.topics)
      assert.equal(0, #hemera:list())
      -- Node checks the driver's 'unsubscribe' event; here: nobody serves it any more.
      local client = testing.new()
      client:ready()
      local _, err = client:act { topic = topic, cmd = "add", timeout_ = 100 }
      assert.equal("TimeoutError", err.name)
    end)
  end)

  it("unsubscribes every pattern of the same topic", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new { bloomrun = { lookupBeforeAdd = false } }
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, sum)
      hemera:add({ topic = topic, cmd = "add", a = { b = 1 } }, sum)
      assert.is_true(hemera:remove(topic))
      assert.is_false(has(hemera.topics, topic))
      assert.equal(0, #hemera.topics)
      assert.equal(0, #hemera:list())
    end)
  end)

  it("needs a topic to unsubscribe", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      local err = raises(function() hemera:remove("") end)
      assert.equal("HemeraError", err.name)
      assert.equal("The sid or topic name is required", err.message)
      err = raises(function() hemera:remove(nil) end)
      assert.equal("The sid or topic name is required", err.message)
    end)
  end)

  it("returns false when the topic was not found", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, sum)
      assert.is_false(hemera:remove(topic .. "1"))
      assert.truthy(has(hemera.topics, topic))
      assert.equal(1, #hemera.topics)
      assert.equal(1, #hemera:list())
    end)
  end)

  it("unsubscribes a wildcard topic", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = base .. ".a.*" }, sum)
      assert.equal(1, #hemera:list())
      local _, err = hemera:act { topic = base .. ".a.test" }
      assert.is_nil(err)
      assert.is_true(hemera:remove(base .. ".a.*"))
      assert.equal(0, #hemera.topics)
      assert.equal(0, #hemera:list())
    end)
  end)

  it("throws when the topic is neither a string nor a subscription id", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      local err = raises(function() hemera:remove({}) end)
      assert.equal("HemeraError", err.name)
      assert.equal("Topic must be from type string or number but got 'table'", err.message)
      err = raises(function() hemera:remove(true) end)
      assert.equal("Topic must be from type string or number but got 'boolean'", err.message)
    end)
  end)

  it("unsubscribes all at once", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      local math, foo, order = testing.topic("math"), testing.topic("foo"), testing.topic("order")
      hemera:add({ topic = math, cmd = "add" }, sum)
      hemera:add({ topic = foo .. ".*", cmd = "add" }, sum)
      hemera:add({ topic = order, cmd = "create" }, function() end)
      local _, err = hemera:act { topic = math, cmd = "add" }
      assert.is_nil(err)
      hemera:removeAll()
      assert.equal(0, #hemera.topics)
      assert.equal(0, #hemera:list())
    end)
  end)

  it("unsubscribes the pending request of an act by its sid", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, sum)
      local got, calls = testing.future(), 0
      local ctx
      ctx = hemera:act({ topic = topic, cmd = "add", maxMessages_ = -1, timeout_ = 100 }, function(err, res)
        calls = calls + 1
        if calls == 1 then got:set(err, res) end
      end)
      local err, res = got:wait(2000)
      assert.is_nil(err)
      assert.equal(0, res.result)
      assert.is_true(hemera:remove(ctx.sid))
      -- Removed: no idle-timeout error follows.
      Hemera.sleep(200)
      assert.equal(1, calls)
    end)
  end)

  it("removes the pattern and the subscription after maxMessages$ 1", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add", maxMessages_ = 1 }, sum)
      local _, err = hemera:act { topic = topic, cmd = "add" }
      assert.is_nil(err)
      assert.is_false(has(hemera.topics, topic))
      assert.equal(0, #hemera:list())
      _, err = hemera:act { topic = topic, cmd = "add", timeout_ = 100 }
      assert.equal("TimeoutError", err.name)
    end)
  end)

  it("removes the pattern and the subscription after maxMessages$ 2", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add", maxMessages_ = 2 }, sum)
      local _, err = hemera:act { topic = topic, cmd = "add" }
      assert.is_nil(err)
      assert.truthy(has(hemera.topics, topic))
      assert.equal(1, #hemera:list())
      _, err = hemera:act { topic = topic, cmd = "add" }
      assert.is_nil(err)
      assert.is_false(has(hemera.topics, topic))
      assert.equal(0, #hemera:list())
    end)
  end)
end)

describe("transport-options.spec.js", function()
  local function collides(first, second)
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      first.topic, first.cmd = topic, "send"
      second.topic, second.cmd = topic, "send"
      hemera:add(first, function() end)
      local err = raises(function() hemera:add(second, function() end) end)
      assert.equal("HemeraError", err.name)
      assert.equal("Topic is already registered with special transport options", err.message)
      assert.equal(1, #hemera:list())
    end)
  end

  it("refuses pubsub and request mode on the same topic / 1", function()
    collides({ pubsub_ = true }, {})
  end)
  it("refuses pubsub and request mode on the same topic / 2", function()
    collides({}, { pubsub_ = true })
  end)
  it("refuses a custom queue and the default queue on the same topic / 1", function()
    collides({ queue_ = "test" }, {})
  end)
  it("refuses a custom queue and the default queue on the same topic / 2", function()
    collides({}, { queue_ = "test" })
  end)
  it("refuses a custom maxMessages and the default on the same topic / 1", function()
    collides({ maxMessages_ = 10 }, {})
  end)
  it("refuses a custom maxMessages and the default on the same topic / 2", function()
    collides({}, { maxMessages_ = 10 })
  end)

  it("registers server methods with the same transport options", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local p = { topic = topic, cmd = "send", maxMessages_ = 100, pubsub_ = true, queue_ = "test" }
      hemera:add(p, function() end)
      hemera:add(p, function() end)
      assert.equal(2, #hemera:list())
    end)
  end)
end)

describe("custom-queues.spec.js", function()
  it("distributes each message to every queue group of the same topic", function()
    testing.run(function()
      local topic = testing.topic("email")
      local a, b = 0, 0
      local both = testing.future()
      local function check() if a >= 1 and b >= 1 then both:set() end end
      local hemera = testing.new()
      hemera:add({ topic = topic, cmd = "send", queue_ = "A" }, function() a = a + 1; check() end)
      hemera:ready()
      local hemera2 = testing.new()
      hemera2:add({ topic = topic, cmd = "send", queue_ = "B" }, function() b = b + 1; check() end)
      hemera2:ready()
      hemera2:act { topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
      assert.is_nil(select(2, both:wait(2000)))
      Hemera.sleep(50)
      assert.equal(1, a)
      assert.equal(1, b)
    end)
  end)
end)

describe("pub-sub.spec.js", function()
  it("publishes one message to one subscriber (1 to 1 without reply)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      hemera:ready()
      local got = testing.future()
      local calls = 0
      hemera:add({ topic = topic, cmd = "send" }, function(req)
        calls = calls + 1
        got:set(req.email)
      end)
      -- In a coroutine a pubsub act returns at once with no result and no error.
      local res, err = hemera:act {
        pubsub_ = true, topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!",
      }
      assert.is_nil(res)
      assert.is_nil(err)
      assert.equal("foobar@gmail.com", (got:wait(2000)))
      assert.equal(1, calls)
    end)
  end)

  it("publishes even with a callback", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      hemera:ready()
      local got, cb = testing.future(), testing.future()
      hemera:add({ topic = topic, cmd = "send" }, function() got:set(true) end)
      hemera:act({ pubsub_ = true, topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" },
        function(err, res) cb:set(err == nil, res) end)
      assert.is_true((got:wait(2000)))
      local ok, res = cb:wait(2000)
      assert.is_true(ok)
      assert.is_nil(res)
    end)
  end)

  it("uses normal publish/subscribe behaviour (1 to many)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local counter = 0
      local all = testing.future()
      local function called()
        counter = counter + 1
        if counter == 2 then all:set() end
      end
      local hemera1 = testing.new()
      hemera1:add({ pubsub_ = true, topic = topic, cmd = "send" }, called)
      hemera1:ready()
      local hemera2 = testing.new()
      hemera2:add({ pubsub_ = true, topic = topic, cmd = "send" }, called)
      hemera2:ready()
      hemera2:act { pubsub_ = true, topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
      assert.is_nil(select(2, all:wait(2000)))
      Hemera.sleep(50)
      assert.equal(2, counter)
    end)
  end)
end)
