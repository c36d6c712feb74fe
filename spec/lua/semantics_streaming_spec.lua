-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/streaming.spec.js
-- and timeouts.spec.js, plus our documented decisions: a maxMessages$ -1
-- stream ends when replies stop for timeout$ ms (idle timeout, one
-- TimeoutError), and hemera:stream{...} iterates over the replies.
-- Times are scaled down from Hemera's (250/100/150 ms) to keep the file fast.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local function ten_replies(req, ctx)
  for i = 0, 9 do ctx.reply:next(i) end
end

-- Collects the callbacks of an act: results, errors and their order.
local function collector(expected)
  local c = { results = {}, errors = {}, all = {}, done = testing.future() }
  c.cb = function(err, res, ctx)
    c.ctx = ctx
    if res == nil then res = "nil" end -- keep the count of replies without result
    if err then c.errors[#c.errors + 1] = err else c.results[#c.results + 1] = res end
    c.all[#c.all + 1] = err and ("err:" .. err.name) or res
    if #c.all == expected then c.done:set() end
  end
  return c
end

describe("streaming.spec.js", function()
  it("receives lots of messages from the INBOX (maxMessages$ 10)", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, ten_replies)
      local c = collector(10)
      hemera:act({ topic = topic, cmd = "add", maxMessages_ = 10, timeout_ = 100 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, c.results)
      assert.same({}, c.errors)
      -- Closed after ten: no timeout follows.
      Hemera.sleep(150)
      assert.equal(10, #c.all)
    end)
  end)

  it("receives an unlimited count of messages with maxMessages$ -1 until the sid is removed", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, ten_replies)
      local c = collector(10)
      local removed
      hemera:act({ topic = topic, cmd = "add", maxMessages_ = -1, timeout_ = 100 }, function(err, res, ctx)
        c.cb(err, res, ctx)
        if #c.all == 10 then removed = hemera:remove(ctx.sid) end
      end)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, c.results)
      assert.same({}, c.errors)
      assert.is_true(removed)
      Hemera.sleep(150)
      assert.equal(10, #c.all)
    end)
  end)

  it("responds multiple errors with reply:next", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        for _ = 1, 10 do ctx.reply:next(Hemera.errors.Error("test")) end
      end)
      local c = collector(10)
      hemera:act({ topic = topic, cmd = "add", maxMessages_ = 10 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.equal(10, #c.errors)
      assert.equal(0, #c.results)
      for _, err in ipairs(c.errors) do
        assert.equal("Error", err.name)
        assert.equal("test", err.message)
      end
    end)
  end)

  it("ends a maxMessages$ -1 stream with one TimeoutError when replies stop (our decision)", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, ten_replies)
      local c = collector(11)
      hemera:act({ topic = topic, cmd = "add", maxMessages_ = -1, timeout_ = 100 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "err:TimeoutError" }, c.all)
      assert.equal("Client timeout", c.errors[1].message)
      Hemera.sleep(150)
      assert.equal(11, #c.all)
    end)
  end)

  it("times a maxMessages$ -1 stream out on idleness, not from its start (our decision)", function()
    testing.run(function()
      local topic = testing.topic("slow")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic }, function(req, ctx)
        for i = 1, 5 do
          Hemera.sleep(50)
          ctx.reply:next(i)
        end
      end)
      local c = collector(6)
      -- 5 replies 50 ms apart: 250 ms in all, more than timeout$.
      hemera:act({ topic = topic, maxMessages_ = -1, timeout_ = 200 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.same({ 1, 2, 3, 4, 5, "err:TimeoutError" }, c.all)
    end)
  end)

  it("iterates over the replies with hemera:stream", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, ten_replies)
      local got = {}
      for res, err in hemera:stream { topic = topic, cmd = "add", maxMessages_ = 10 } do
        assert.is_nil(err)
        got[#got + 1] = res
      end
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, got)
      -- Open-ended: ten results, then the idle TimeoutError as `false, err`, then the end.
      local items, last_err = {}, nil
      for res, err in hemera:stream { topic = topic, cmd = "add", timeout_ = 100 } do
        if res == false then last_err = err else items[#items + 1] = res end
      end
      assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, items)
      assert.equal("TimeoutError", last_err.name)
      -- Leaving the loop early ends the request.
      local n = 0
      for _ in hemera:stream { topic = topic, cmd = "add", timeout_ = 100 } do
        n = n + 1
        if n == 3 then break end
      end
      assert.equal(3, n)
    end)
  end)

  it("refuses maxMessages$ on a waiting act without callback", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, ten_replies)
      local res, err = hemera:act { topic = topic, cmd = "add", maxMessages_ = 10 }
      assert.is_nil(res)
      assert.equal("HemeraError", err.name)
      assert.equal("maxMessages$ and expectedMessages$ need a callback or hemera:stream", err.message)
    end)
  end)
end)

describe("timeouts.spec.js", function()
  -- A answers after 150 ms; B acts A with timeout$ 50 and passes the error on.
  -- `server_a`, `server_b`, `client`: the instances serving A, B and acting.
  local function nested_timeouts(server_a, server_b, client)
    -- One topic per server: instances share the queue group of a topic.
    local topic, topicB = testing.topic("test"), testing.topic("test")
    local aError, bError, aResult, bResult = 0, 0, 0, 0
    server_a:add({ topic = topic, cmd = "A" }, function()
      Hemera.sleep(150)
      return { ok = true }
    end)
    server_b:add({ topic = topicB, cmd = "B" }, function(req, ctx)
      local res, err = ctx:act { topic = topic, cmd = "A", timeout_ = 50 }
      if err then
        aError = aError + 1
        return nil, err
      end
      aResult = aResult + 1
      return res
    end)
    for _, inst in ipairs { server_a, server_b, client } do assert(inst:flush()) end
    local first = testing.future()
    client:act({ topic = topicB, cmd = "B", timeout_ = 100 }, function(err)
      if err then bError = bError + 1 else bResult = bResult + 1 end
      if not first:is_set() then first:set(err) end
    end)
    local err = first:wait(2000)
    -- B passed A's timeout on.
    assert.equal("TimeoutError", err.name)
    -- A's late answer (at 150 ms) must not reach anyone.
    Hemera.sleep(200)
    assert.equal(1, aError)
    assert.equal(0, aResult)
    assert.equal(1, bError)
    assert.equal(0, bResult)
  end

  it("does not receive more messages when the INBOX times out", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      nested_timeouts(hemera, hemera, hemera)
    end)
  end)

  it("does not receive more messages when multiple participants time out", function()
    testing.run(function()
      local a, b, c = testing.new(), testing.new(), testing.new()
      a:ready(); b:ready(); c:ready()
      nested_timeouts(a, b, c)
    end)
  end)

  it("receives a timeout when the expected count of messages could not be received", function()
    testing.run(function()
      local topic = testing.topic("test")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "A" }, function() end)
      local c = collector(2)
      hemera:act({ topic = topic, cmd = "A", timeout_ = 100, expectedMessages_ = 2 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      assert.equal(1, #c.errors)
      assert.equal(1, #c.results)
      assert.equal("TimeoutError", c.errors[1].name)
      Hemera.sleep(150)
      assert.equal(2, #c.all)
    end)
  end)

  it("does not time out when more messages than expected are sent (the INBOX closes)", function()
    testing.run(function()
      local topic = testing.topic("test")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "A" }, ten_replies)
      local c = collector(5)
      hemera:act({ topic = topic, cmd = "A", expectedMessages_ = 5, timeout_ = 100 }, c.cb)
      assert.is_nil(select(2, c.done:wait(2000)))
      Hemera.sleep(200)
      assert.equal(0, #c.errors)
      assert.equal(5, #c.results)
    end)
  end)

  it("gives a timeout error when the handler never replies", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new { timeout = 100 }
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() Hemera.sleep(200) end)
      local res, err = hemera:act { topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
      assert.is_nil(res)
      assert.equal("TimeoutError", err.name)
      assert.equal("Client timeout", err.message)
      assert.is_false(err.isServer)
      assert.equal(hemera.config.name, err.app)
      assert.equal("cmd:send,email:foobar@gmail.com,msg:Hi!,topic:" .. topic, err.pattern)
    end)
  end)

  it("sees the client timeout in onActFinished", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new { timeout = 100 }
      local event
      hemera:ext("onActFinished", function(ctx)
        -- Node reads ctx.response.error; the Lua act context holds it as responseError.
        event = ctx.responseError
      end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() Hemera.sleep(200) end)
      local res, err = hemera:act { topic = topic, cmd = "send" }
      assert.is_nil(res)
      assert.equal("TimeoutError", err.name)
      assert.equal("Client timeout", err.message)
      assert.is_table(event)
      assert.equal("TimeoutError", event.name)
      assert.equal("Client timeout", event.message)
    end)
  end)

  it("handles a super error in the onActFinished extension", function()
    testing.run(function()
      local topic = testing.topic("email")
      local Unauthorized = Hemera.createError("Unauthorized")
      local hemera = testing.new { timeout = 150 }
      hemera:ext("onActFinished", function() return nil, Unauthorized("test") end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      local _, err = hemera:act { topic = topic, cmd = "send" }
      assert.equal("Unauthorized", err.name)
      assert.equal("test", err.message)
      assert.is_true(Unauthorized:is(err))
    end)
  end)

  it("handles an error in the onActFinished extension", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new { timeout = 150 }
      hemera:ext("onActFinished", function() error(Hemera.errors.Error("test")) end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      local _, err = hemera:act { topic = topic, cmd = "send" }
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
    end)
  end)

  it("gives a timeout error when the pattern is not served on the network", function()
    testing.run(function()
      local hemera = testing.new { timeout = 20 }
      hemera:ready()
      local res, err = hemera:act { topic = testing.topic("math"), cmd = "add", a = 1, b = 2 }
      assert.is_nil(res)
      assert.equal("TimeoutError", err.name)
      assert.equal("Client timeout", err.message)
    end)
  end)
end)
