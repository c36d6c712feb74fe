-- Hemera v7 ext() checks and client hook errors
-- (test/hemera/extension-errors.spec.js, onAct-extension-errors.spec.js,
-- onActFinished-extension-errors.spec.js). A client hook is fn(ctx); Node's
-- next(err) is `return nil, err` (or raising), a promise is a hook that
-- yields first.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local Unauthorized = Hemera.createError("Unauthorized")

local function spy()
  return setmetatable({ n = 0 }, { __call = function(self) self.n = self.n + 1 end })
end

-- A ready instance serving {topic, cmd = "add"}; `served` counts requests.
local function setup()
  local s = testing.new()
  assert(s:ready())
  local topic = testing.topic("math")
  local served = spy()
  s:add({ cmd = "add", topic = topic }, function(req) served(); return req.a + req.b end)
  return s, topic, served
end

describe("Extension error", function()
  it("Invalid extension type", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local fn = function() end
      local ok, err = pcall(s.ext, s, "test", fn)
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("Extension type is unknown", err.message)
      assert.equal("test", err.type)
      assert.equal(fn, err.handler)
    end)
  end)

  it("Invalid extension handler type", function()
    testing.run(function()
      local s = testing.new()
      assert(s:ready())
      local ok, err = pcall(s.ext, s, "preHandler", "foo")
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("Extension handler must be a function", err.message)
    end)
  end)

  it("Accepts every v7 hook name", function()
    testing.run(function()
      local s = testing.new()
      for _, name in ipairs { "onAct", "onActFinished", "onRequest", "preHandler", "onSend",
                              "onResponse", "onError", "onAdd", "onClose" } do
        assert.equal(s, s:ext(name, function() end))
      end
    end)
  end)
end)

describe("onAct extension error handling", function()
  it("Should be able to pass a custom super error", function()
    testing.run(function()
      local s, topic, served = setup()
      s:ext("onAct", function() return nil, Unauthorized("test") end)
      local res, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(res)
      assert.equal("Unauthorized", err.name)
      assert.equal("test", err.message)
      assert.is_true(Unauthorized:is(err))
      assert.equal(0, served.n)
    end)
  end)

  it("Should be able to pass an error (the request is not sent)", function()
    testing.run(function()
      local s, topic, served = setup()
      s:ext("onAct", function(ctx)
        assert(ctx.trace.method)
        return nil, Hemera.errors.Error("test")
      end)
      local done = testing.future()
      s:act({ topic = topic, cmd = "add", a = 1, b = 2 }, function(err, res) done:set(err, res) end)
      local err, res = done:wait(2000)
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
      -- Node: this.request.error is set and nothing was sent.
      assert.equal(0, served.n)
    end)
  end)

  it("Should be able to pass an error from a hook that yields (rejected promise)", function()
    testing.run(function()
      local s, topic, served = setup()
      s:ext("onAct", function() Hemera.sleep(1); error(Hemera.errors.Error("test")) end)
      local res, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
      assert.equal(0, served.n)
    end)
  end)

  it("Should stop at the first failing onAct hook", function()
    testing.run(function()
      local s, topic = setup()
      local second = spy()
      s:ext("onAct", function() return nil, Hemera.errors.Error("first") end)
      s:ext("onAct", function() second() end)
      local _, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.equal("first", err.message)
      assert.equal(0, second.n)
    end)
  end)
end)

describe("onActFinished extension error handling", function()
  it("Should be able to pass a super error", function()
    testing.run(function()
      local s, topic, served = setup()
      s:ext("onActFinished", function() return nil, Unauthorized("test") end)
      local res, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(res)
      assert.equal("Unauthorized", err.name)
      assert.equal("test", err.message)
      -- The request went out; the hook's error replaces the reply.
      assert.equal(1, served.n)
    end)
  end)

  it("Should be able to pass an error", function()
    testing.run(function()
      local s, topic = setup()
      s:ext("onActFinished", function() return nil, Hemera.errors.Error("test") end)
      local done = testing.future()
      s:act({ topic = topic, cmd = "add", a = 1, b = 2 }, function(err, res) done:set(err, res) end)
      local err, res = done:wait(2000)
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
    end)
  end)

  it("Should be able to pass an error from a hook that yields (rejected promise)", function()
    testing.run(function()
      local s, topic = setup()
      s:ext("onActFinished", function() Hemera.sleep(1); return nil, Hemera.errors.Error("test") end)
      local res, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
    end)
  end)

  it("Should run onActFinished with the reply in the context", function()
    testing.run(function()
      local s, topic = setup()
      local seen
      s:ext("onActFinished", function(ctx) seen = ctx.response end)
      local res, err = s:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err)
      assert.equal(3, res)
      assert.is_table(seen)
      assert.equal(3, seen.result)
    end)
  end)
end)
