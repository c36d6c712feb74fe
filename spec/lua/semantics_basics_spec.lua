-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/index.spec.js,
-- public-interface.spec.js, quick-syntax.spec.js and encoding.spec.js.
-- The wildcard cases of index.spec.js live in semantics_wildcards_spec.lua.
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- Runs fn, expects it to raise; returns the error value.
local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return err
end

local function hemera_error(err, message)
  assert.is_table(err)
  assert.equal("HemeraError", err.name)
  assert.equal(message, err.message)
end

describe("index.spec.js", function()
  it("throws when hemera is bootstraped twice", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      hemera_error(raises(function() hemera:ready() end), "Hemera was already bootstraped")
    end)
  end)

  it("adds handlers and acts them", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, function(req) return { result = req.a + req.b } end)
      hemera:add({ topic = topic, cmd = "multiply" }, function(req) return { result = req.a * req.b } end)
      local res, err = hemera:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err)
      assert.equal(3, res.result)
      res, err = hemera:act { topic = topic, cmd = "multiply", a = res.result, b = 2 }
      assert.is_nil(err)
      assert.equal(6, res.result)
    end)
  end)

  it("adds handlers and acts them with complex types", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, function(req) return { result = req.a.number + req.b.number } end)
      hemera:add({ topic = topic, cmd = "multiply" }, function(req) return { result = req.a.number * req.b.number } end)
      local res, err = hemera:act { topic = topic, cmd = "add", a = { number = 1 }, b = { number = 2 } }
      assert.is_nil(err)
      assert.equal(3, res.result)
      res, err = hemera:act { topic = topic, cmd = "multiply", a = { number = res.result }, b = { number = 2 } }
      assert.is_nil(err)
      assert.equal(6, res.result)
    end)
  end)

  it("defines a pattern with a regex value (depth indexing)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new { bloomrun = { indexing = "depth" } }
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send", id = Hemera.regex(".*") }, function() return "id" end)
      hemera:add({ topic = topic, cmd = "send", name = Hemera.regex(".*") }, function() return "name" end)
      local res, err = hemera:act { topic = topic, cmd = "send", id = 1 }
      assert.is_nil(err)
      assert.equal("id", res)
    end)
  end)

  it("acts without a callback (fire and forget)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      hemera:ready()
      local called = testing.future()
      hemera:add({ topic = topic, cmd = "send" }, function(req)
        if req.email then called:set(req.email, req.msg) end
        return nil
      end)
      -- Node's act(pattern) without callback; in Lua the callback form
      -- returns at once, and a waiting act of a reply without result gives nil.
      local ctx = hemera:act({ topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }, function() end)
      assert.is_table(ctx)
      local email, msg = called:wait(2000)
      assert.equal("foobar@gmail.com", email)
      assert.equal("Hi!", msg)
      local res, err = hemera:act { topic = topic, cmd = "send" }
      assert.is_nil(err)
      assert.is_nil(res)
    end)
  end)

  it("supports zero as a server response", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "multiply" }, function(req) return req.a * req.b end)
      local res, err = hemera:act { topic = topic, cmd = "multiply", a = 0, b = 0 }
      assert.is_nil(err)
      assert.equal(0, res)
    end)
  end)

  it("lists all patterns as an array", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      local result = hemera:list()
      assert.is_table(result)
      assert.equal(1, #result)
      assert.same({ topic = topic, cmd = "send" }, result[1].pattern)
      assert.same({ { topic = topic, cmd = "send" } }, hemera:list(nil, { patterns = true }))
    end)
  end)

  for _, case in ipairs {
    { "setIdGenerator", "IdGenerator must be a function" },
    { "setServerDecoder", "ServerDecoder must be a function" },
    { "setServerEncoder", "ServerEncoder must be a function" },
    { "setClientDecoder", "ClientDecoder must be a function" },
    { "setClientEncoder", "ClientEncoder must be a function" },
  } do
    it(case[1] .. " needs a function", function()
      testing.run(function()
        local hemera = testing.new()
        hemera:ready()
        hemera_error(raises(function() hemera[case[1]](hemera, nil) end), case[2])
      end)
    end)
  end

  it("needs a pattern to define an add", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      hemera_error(raises(function() hemera:add(nil, function() end) end),
        "Pattern is required to define a server action")
    end)
  end)

  it("needs a topic in an add", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      hemera_error(raises(function() hemera:add({ cmd = "send" }, function() end) end),
        "Topic is required and must be from type string")
    end)
  end)

  it("throws on duplicated patterns with lookupBeforeAdd", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new { bloomrun = { lookupBeforeAdd = true } }
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      hemera_error(raises(function() hemera:add({ topic = topic, cmd = "send" }, function() end) end),
        "Pattern is already in use")
      assert.equal(1, #hemera:list())
    end)
  end)

  it("gives access to the request and response context of an act", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      local res, err, ctx = hemera:act { topic = topic, cmd = "send", maxMessages_ = 1, expectedMessages_ = 1 }
      assert.is_nil(err)
      assert.is_nil(res)
      -- Node keeps the `$` keys in this.request.pattern; the Lua context
      -- holds the pattern as sent (without them) and the transport options.
      assert.same({ topic = topic, cmd = "send" }, ctx.pattern)
      assert.equal(1, ctx.transport.maxMessages)
      assert.is_falsy(ctx.transport.pubsub)
      assert.equal(topic, ctx.transport.topic)
      assert.equal(1, ctx.transport.expectedMessages)
      assert.is_table(ctx.response)
      assert.is_nil(ctx.responseError)
    end)
  end)

  it("gives access to the request, response and matchedAction context inside add", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local seen = {}
      hemera:add({ topic = topic, cmd = "send", schema = { foo = "bar" }, maxMessages_ = 1 }, function(req, ctx)
        local m = ctx.matchedAction
        seen.matched = type(m) == "table"
        seen.pubsub = m.transport.pubsub
        seen.maxMessages = m.transport.maxMessages
        seen.queue = m.transport.queue
        seen.topic = m.transport.topic
        seen.action = type(m.action)
        seen.pattern = m.pattern
        seen.schema = m.schema
        seen.payload = ctx.reply.payload
        seen.error = ctx.reply.error
        seen.replyTo = ctx.replyTo
        seen.request = ctx.request
      end)
      local _, err = hemera:act { topic = topic, cmd = "send" }
      assert.is_nil(err)
      assert.is_true(seen.matched)
      assert.is_nil(seen.pubsub)
      assert.equal(1, seen.maxMessages)
      assert.is_nil(seen.queue)
      assert.equal(topic, seen.topic)
      assert.equal("function", seen.action)
      assert.same({ topic = topic, cmd = "send" }, seen.pattern)
      assert.same({ schema = { foo = "bar" } }, seen.schema)
      assert.is_nil(seen.payload)
      assert.is_nil(seen.error)
      assert.is_string(seen.replyTo)
      assert.is_table(seen.request)
    end)
  end)

  it("needs a pattern in act", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      hemera_error(raises(function() hemera:act(nil, function() end) end), "Pattern is required to start a request")
    end)
  end)

  it("needs a topic in act", function()
    testing.run(function()
      local hemera = testing.new()
      hemera:ready()
      hemera_error(raises(function() hemera:act({ cmd = "send" }, function() end) end),
        "Topic is required and must be from type string")
    end)
  end)

  it("calls a handler by different patterns", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "add" }, function(req) return { result = req.a + req.b } end)
      hemera:add({ topic = topic, cmd = "sub" }, function(req) return { result = req.a - req.b } end)
      local res, err = hemera:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err)
      assert.equal(3, res.result)
      res, err = hemera:act { topic = topic, cmd = "sub", a = 2, b = 2 }
      assert.is_nil(err)
      assert.equal(0, res.result)
    end)
  end)

  it("calls the server function only one time (queue groups by default)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local calls = 0
      local hemera1 = testing.new()
      hemera1:add({ topic = topic, cmd = "send" }, function() calls = calls + 1 end)
      hemera1:ready()
      local hemera2 = testing.new()
      hemera2:add({ topic = topic, cmd = "send" }, function() calls = calls + 1 end)
      hemera2:ready()
      local _, err = hemera2:act { topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
      assert.is_nil(err)
      -- A second delivery would come right behind the first: give it a moment.
      Hemera.sleep(100)
      assert.equal(1, calls)
    end)
  end)

  it("uses a different id generator", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      hemera:setIdGenerator(function() return 100 end)
      hemera:ready()
      local server = {}
      hemera:add({ topic = topic, cmd = "send" }, function(req, ctx)
        server.spanId, server.traceId, server.id = ctx.trace.spanId, ctx.trace.traceId, ctx.request.id
      end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
      assert.is_nil(err)
      assert.equal(100, server.spanId)
      assert.equal(100, server.traceId)
      assert.equal(100, server.id)
      assert.equal(100, ctx.trace.spanId)
      assert.equal(100, ctx.trace.traceId)
      assert.equal(100, ctx.request.id)
    end)
  end)

  it("returns the Add object with all information", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local add = hemera:add({ topic = topic, cmd = "info", queue_ = "test", maxMessages_ = 1, payload = { a = 1 } },
        function() return true end)
      -- Node's add.sid (the NATS sid) has no counterpart on the Lua definition.
      assert.same({}, add.middleware)
      assert.equal(1, add.transport.maxMessages)
      assert.equal(topic, add.transport.topic)
      assert.equal("test", add.transport.queue)
      assert.is_function(add.action)
      assert.same({ topic = topic, cmd = "info" }, add.pattern)
      assert.same({ payload = { a = 1 } }, add.schema)
    end)
  end)
end)

describe("public-interface.spec.js", function()
  it("has the public getters", function()
    testing.run(function()
      local hemera = testing.new()
      assert.is_not_nil(hemera.topics)
      assert.is_not_nil(hemera.router)
      -- The Lua instance connects in ready(): the transport exists from then on.
      hemera:ready()
      assert.is_not_nil(hemera.transport)
      assert.is_not_nil(hemera.topics)
      assert.is_not_nil(hemera.router)
    end)
  end)
end)

describe("quick-syntax.spec.js", function()
  it("uses a string as pattern", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add("topic:" .. topic .. ",cmd:add", function(req) return { result = req.a + req.b } end)
      local res, err = hemera:act("topic:" .. topic .. ",cmd:add,a:1,b:2")
      assert.is_nil(err)
      assert.equal(3, res.result)
    end)
  end)
end)

describe("encoding.spec.js", function()
  it("handles circular references", function()
    testing.run(function()
      local topic = testing.topic("circular")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "test" }, function()
        local fixture = { name = "Tywin Lannister", child = { name = "Tyrion Lannister" } }
        fixture.child.dinklage = fixture.child
        return fixture
      end)
      local res, err = hemera:act { topic = topic, cmd = "test" }
      assert.is_nil(err)
      assert.same({ name = "Tywin Lannister", child = { name = "Tyrion Lannister", dinklage = "[Circular]" } }, res)
    end)
  end)
end)

describe("wire decisions (docs/api.md)", function()
  it("serves a message without `request` (Node's server never replies to it)", function()
    testing.run(function()
      local topic = testing.topic("raw")
      local hemera = testing.new()
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        return { sum = req.a + req.b, type = ctx.request.type }
      end)
      hemera:ready()
      local client = testing.new()
      client:ready()
      local payload = Hemera.encode { pattern = { topic = topic, cmd = "add", a = 1, b = 2 } }
      local data, st = client.transport:request(topic, payload, 1000, 1)
      assert.is_nil(st)
      assert.truthy(data:find('"error":null', 1, true))
      local msg = Hemera.decode(data)
      assert.equal(3, msg.result.sum)
      assert.is_table(msg.meta)
      assert.is_table(msg.trace)
    end)
  end)
end)

