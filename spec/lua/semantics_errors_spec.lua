-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/error-handling.spec.js,
-- error-propagation.spec.js and error-serialization.spec.js.
--
-- Where we differ from Node on purpose (docs/api.md):
-- * a handler that gives a non-error value as its error (Node's cb('test'))
--   still sends an error reply, named "Error" for a string (Node times out);
-- * a server-side encode failure is an error reply, not a timeout;
-- * codec failures reach the caller as HemeraParseError (Node passes the raw
--   codec error on): a custom codec returns `nil, err` (or raises) to fail.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local errors = Hemera.errors
local Unauthorized = Hemera.createError("Unauthorized")

-- One instance serving `handler` on a fresh topic; returns it and the topic.
local function serve(handler, opts)
  local topic = testing.topic("email")
  local hemera = testing.new(opts)
  hemera:ready()
  hemera:add({ topic = topic, cmd = "send" }, handler)
  return hemera, topic
end

local function send(hemera, topic)
  return hemera:act { topic = topic, cmd = "send", email = "foobar@gmail.com", msg = "Hi!" }
end

describe("error-handling.spec.js", function()
  it("exposes all hemera error classes", function()
    for name, wire in pairs {
      HemeraError = "HemeraError", ParseError = "HemeraParseError", TimeoutError = "TimeoutError",
      ResponseError = "ResponseError", PatternNotFound = "PatternNotFound",
      MaxRecursionError = "MaxRecursionError", ProcessLoadError = "ProcessLoadError",
    } do
      assert.is_table(errors[name], name)
      local e = errors[name]("m")
      assert.equal(wire, e.name)
      assert.equal("m", e.message)
      assert.is_true(errors[name]:is(e))
      assert.is_true(errors.Error:is(e))
    end
  end)

  it("passes a custom super error", function()
    testing.run(function()
      local hemera, topic = serve(function()
        local err = Unauthorized("Unauthorized action")
        err.code = 444
        return nil, err
      end)
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("Unauthorized", err.name)
      assert.equal("Unauthorized action", err.message)
      assert.equal(444, err.code)
      assert.is_true(Unauthorized:is(err))
    end)
  end)

  it("compares hemera errors by class", function()
    testing.run(function()
      local hemera, topic = serve(function() return nil, errors.ResponseError("test") end)
      local _, err = send(hemera, topic)
      assert.equal("ResponseError", err.name)
      assert.equal("test", err.message)
      assert.is_true(errors.ResponseError:is(err))
    end)
  end)

  it("replies an error named Error when the handler gives a string as its error (Node: timeout)", function()
    testing.run(function()
      local hemera, topic = serve(function() return nil, "test" end, { timeout = 200 })
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
      -- Any other non-error value too.
      local hemera2, topic2 = serve(function() return nil, 42 end, { timeout = 200 })
      local res2, err2 = send(hemera2, topic2)
      assert.is_nil(res2)
      assert.equal("Error", err2.name)
      assert.equal("42", err2.message)
    end)
  end)

  it("compares custom hemera errors by class", function()
    testing.run(function()
      local FooBarError = Hemera.createError("FooBarError")
      local hemera, topic = serve(function() return nil, FooBarError("test") end)
      local _, err = send(hemera, topic)
      assert.equal("FooBarError", err.name)
      assert.equal("test", err.message)
      assert.is_true(FooBarError:is(err))
    end)
  end)

  it("serializes and deserializes an error back to the caller", function()
    testing.run(function()
      local hemera, topic = serve(function() return nil, errors.Error("Uups") end)
      local _, err = send(hemera, topic)
      assert.equal("Error", err.name)
      assert.equal("Uups", err.message)
      assert.is_nil(err.stack) -- Hemera sends it; errio.stack is off here by default
    end)
  end)

  it("transfers the error code", function()
    testing.run(function()
      local hemera, topic = serve(function()
        local a = errors.Error("Uups")
        a.code = 444
        a.test = "hallo"
        return nil, a
      end)
      local _, err = send(hemera, topic)
      assert.equal("Error", err.name)
      assert.equal("Uups", err.message)
      assert.equal(444, err.code)
    end)
  end)

  it("transfers additional error data", function()
    testing.run(function()
      local hemera, topic = serve(function()
        local a = errors.Error("Uups")
        a.code = 444
        a.test = "hallo"
        return nil, a
      end)
      local _, err = send(hemera, topic)
      assert.equal("hallo", err.test)
      assert.equal("Error", err.name)
      assert.equal("Uups", err.message)
      assert.equal(444, err.code)
    end)
  end)

  it("also transfers a plain table with name, message and fields", function()
    testing.run(function()
      local hemera, topic = serve(function() return nil, { name = "Custom", message = "m", code = 7 } end)
      local _, err = send(hemera, topic)
      assert.equal("Custom", err.name)
      assert.equal("m", err.message)
      assert.equal(7, err.code)
    end)
  end)

  it("handles a client decoding error", function()
    testing.run(function()
      local hemera, topic = serve(function() end)
      hemera:setClientDecoder(function() return nil, "TEST" end)
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Client payload decoding: TEST", err.message)
    end)
  end)

  it("handles a server decoding error (error handler called once, error replied)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      local handled = {}
      hemera:setErrorHandler(function(ctx, err) handled[#handled + 1] = err end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      hemera:setServerDecoder(function() return nil, "TEST" end)
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Invalid request: TEST", err.message)
      assert.equal(1, #handled)
      assert.equal("HemeraParseError", handled[1].name)
      assert.equal("Invalid request: TEST", handled[1].message)
    end)
  end)

  it("replies an error when the server encoder fails (Node: timeout)", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new { timeout = 200 }
      hemera:setServerEncoder(function() return nil, "TEST" end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() end)
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Server encoding: TEST", err.message)
    end)
  end)

  it("replies an error when the default encoder cannot encode the result (Node: timeout)", function()
    testing.run(function()
      local hemera, topic = serve(function() return function() end end, { timeout = 200 })
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Server encoding: cannot encode a function at result", err.message)
    end)
  end)

  it("leaves a function inside the result out, as JSON.stringify does (issue 11)", function()
    testing.run(function()
      local hemera, topic = serve(function() return { f = function() end, a = 1 } end, { timeout = 200 })
      local res, err = send(hemera, topic)
      assert.is_nil(err)
      assert.same({ a = 1 }, res)
    end)
  end)

  it("handles a client encoding error", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      local called = false
      hemera:setClientEncoder(function() return nil, "TEST" end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "send" }, function() called = true end)
      local res, err = send(hemera, topic)
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Client payload encoding: TEST", err.message)
      assert.is_false(called)
    end)
  end)

  it("answers an act whose meta or delegate JSON cannot hold with a ParseError, sends nothing, and the next act goes out", function()
    testing.run(function()
      local topic = testing.topic("email")
      local hemera = testing.new()
      hemera:ready()
      local calls = 0
      hemera:add({ topic = topic, cmd = "send" }, function(req) calls = calls + 1; return req.n end)
      local res, err = hemera:act { topic = topic, cmd = "send", meta_ = { f = print } }
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Client payload encoding: cannot encode a function at meta.f", err.message)
      local got = testing.future()
      hemera:act({ topic = topic, cmd = "send", delegate_ = { f = print } }, function(e) got:set(e) end)
      local cerr = got:wait(2000)
      assert.equal("Client payload encoding: cannot encode a function at delegate.f", cerr and cerr.message)
      assert.equal(0, calls)
      -- After the failed acts, acts go out as usual.
      assert.equal(7, hemera:act { topic = topic, cmd = "send", n = 7 })
      assert.equal(1, calls)
    end)
  end)

  it("handles business errors (raised in the handler)", function()
    testing.run(function()
      local hemera, topic = serve(function() error(errors.Error("Shit!")) end)
      local _, err = send(hemera, topic)
      assert.equal("Error", err.name)
      assert.equal("Shit!", err.message)
      assert.is_nil(err.stack) -- Hemera sends it; errio.stack is off here by default
    end)
  end)

  it("handles business errors with super errors", function()
    testing.run(function()
      local hemera, topic = serve(function() error(Unauthorized("Shit!")) end)
      local _, err = send(hemera, topic)
      assert.equal("Unauthorized", err.name)
      assert.equal("Shit!", err.message)
      assert.is_true(Unauthorized:is(err))
    end)
  end)

  it("replies PatternNotFound with its fields", function()
    testing.run(function()
      local hemera, topic = serve(function() end)
      local res, err = hemera:act { topic = topic, test = "senddedede" }
      assert.is_nil(res)
      assert.equal("PatternNotFound", err.name)
      assert.equal("test:senddedede,topic:" .. topic, err.pattern)
      assert.equal(hemera.config.name, err.app)
      assert.is_true(err.isServer)
      assert.equal("No action found for this pattern", err.message)
      assert.is_true(errors.PatternNotFound:is(err))
    end)
  end)
end)

describe("error-propagation.spec.js", function()
  it("propagates an error, depth 1", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "a" }, function() return nil, errors.Error("B Error") end)
      local _, err = hemera:act { topic = topic, cmd = "a" }
      assert.equal("Error", err.name)
      assert.equal("B Error", err.message)
      assert.equal(1, #err.hops)
    end)
  end)

  it("propagates a super error, depth 1", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "a" }, function()
        local a = Unauthorized("test")
        a.test = 444
        return nil, a
      end)
      local _, err = hemera:act { topic = topic, cmd = "a" }
      assert.equal("Unauthorized", err.name)
      assert.equal("test", err.message)
      assert.equal(444, err.test)
    end)
  end)

  local function chain(make_b_error)
    local A, B, C = testing.topic("a"), testing.topic("b"), testing.topic("c")
    local hemera = testing.new { name = "chain-app" }
    hemera:ready()
    hemera:add({ topic = A, cmd = "a" }, function(req, ctx)
      local _, err, actx = ctx:act { topic = B, cmd = "b" }
      assert(err, "b must fail")
      local res, err2 = actx:act { topic = C, cmd = "c" }
      return res, err2
    end)
    hemera:add({ topic = B, cmd = "b" }, function() return nil, make_b_error() end)
    hemera:add({ topic = C, cmd = "c" }, function(req, ctx)
      local res, err = ctx:act { topic = B, cmd = "b" }
      return res, err
    end)
    local _, err = hemera:act { topic = A, cmd = "a" }
    assert.equal(3, #err.hops)
    for k, t in ipairs { { B, "b" }, { C, "c" }, { A, "a" } } do
      local hop = err.hops[k]
      assert.equal("cmd:" .. t[2] .. ",topic:" .. t[1], hop.method)
      assert.equal(t[1], hop.service)
      assert.equal("chain-app", hop.app)
      assert.is_number(hop.ts)
    end
    return err
  end

  it("propagates an error over three hops, each adding its hop", function()
    testing.run(function()
      local err = chain(function() return errors.Error("B Error") end)
      assert.equal("Error", err.name)
      assert.equal("B Error", err.message)
    end)
  end)

  it("propagates a super error over three hops, fields kept", function()
    testing.run(function()
      local err = chain(function()
        local a = Unauthorized("test")
        a.test = 444
        return a
      end)
      assert.equal("Unauthorized", err.name)
      assert.equal("test", err.message)
      assert.equal(444, err.test)
      assert.is_true(Unauthorized:is(err))
    end)
  end)
end)

describe("error-serialization.spec.js", function()
  it("compares errors by class across instances (createError by the same name)", function()
    testing.run(function()
      local UnauthorizedError1 = Hemera.createError("CustomUnauthorized")
      local UnauthorizedError2 = Hemera.createError("CustomUnauthorized")
      assert.equal(UnauthorizedError1, UnauthorizedError2)
      local topic = testing.topic("a")
      local hemera = testing.new()
      hemera:add({ topic = topic, cmd = "a" }, function() return nil, UnauthorizedError1("test") end)
      hemera:ready()
      local hemera2 = testing.new()
      hemera2:ready()
      local _, err = hemera2:act { topic = topic, cmd = "a" }
      assert.equal("CustomUnauthorized", err.name)
      assert.is_true(UnauthorizedError2:is(err))
    end)
  end)

  it("keeps an unregistered error name and its fields", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic }, function() return nil, { name = "Unregistered" .. topic, message = "x", n = 1 } end)
      local _, err = hemera:act { topic = topic }
      assert.equal("Unregistered" .. topic, err.name)
      assert.equal("x", err.message)
      assert.equal(1, err.n)
      assert.is_true(errors.Error:is(err))
    end)
  end)
end)
