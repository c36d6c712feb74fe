-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/not-found-action.spec.js.
-- A plugin is function(scope, opts); it runs in ready() like Hemera's avvio
-- plugins (its `done` is the function returning).
local testing = require "hemera.testing"

-- Hemera's default pluginTimeout (10 ms) is too tight for a loaded test
-- machine; plugin loading itself is not under test here.
local function new() return testing.new { pluginTimeout = 2000 } end

-- Seen in every plugin case below (the routing itself works: checked with
-- rawget(scope, "_notFoundPattern") in place of the getter).
describe("not-found-action.spec.js", function()
  it("defines a notFound action", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = new()
      hemera:ready()
      hemera:setNotFoundPattern { topic = topic, cmd = "notFound" }
      hemera:add({ topic = topic, cmd = "notFound" }, function() return true end)
      local res, err = hemera:act { topic = topic, cmd = "dedede", timeout_ = 200 }
      assert.is_nil(err)
      assert.equal(true, res)
    end)
  end)

  it("accepts the notFound pattern as a string", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = new()
      hemera:ready()
      hemera:setNotFoundPattern("topic:" .. topic .. ",cmd:notFound")
      local seen
      hemera:add({ topic = topic, cmd = "notFound" }, function(req)
        seen = req
        return true
      end)
      local res, err = hemera:act { topic = topic, cmd = "dedede", timeout_ = 200 }
      assert.is_nil(err)
      assert.equal(true, res)
      -- The action runs with the original request.
      assert.same({ topic = topic, cmd = "dedede" }, seen)
    end)
  end)

  it("is encapsulated in a plugin", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = new()
      local inside
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = topic, cmd = "notFound" }
        inside = scope.notFoundPattern
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = topic, cmd = "notFound" }, inside)
      assert.is_nil(hemera.notFoundPattern)
    end)
  end)

  it("is encapsulated in a plugin from the root / 2", function()
    testing.run(function()
      local A, B = testing.topic("A"), testing.topic("B")
      local hemera = new()
      local inside, plugin_act = nil, testing.future()
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        inside = scope.notFoundPattern
        scope:add({ topic = A, cmd = "notFound" }, function() return true end)
        scope:act({ topic = A, cmd = "dedede", timeout_ = 200 }, function(err, res) plugin_act:set(err, res) end)
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = A, cmd = "notFound" }, inside)
      local err, res = plugin_act:wait(2000)
      assert.is_nil(err)
      assert.equal(true, res)
      assert.is_nil(hemera.notFoundPattern)
      local _, berr = hemera:act { topic = B, cmd = "dedede", timeout_ = 200 }
      assert.equal("TimeoutError", berr.name)
    end)
  end)

  it("is encapsulated in a plugin from the root / 3", function()
    testing.run(function()
      local A, B = testing.topic("A"), testing.topic("B")
      local hemera = new()
      local inside
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        inside = scope.notFoundPattern
        scope:add({ topic = A, cmd = "notFound" }, function() return "A" end)
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = A, cmd = "notFound" }, inside)
      hemera:setNotFoundPattern { topic = B, cmd = "notFound" }
      assert.same({ topic = B, cmd = "notFound" }, hemera.notFoundPattern)
      hemera:add({ topic = B, cmd = "notFound" }, function() return "B" end)
      local res, err = hemera:act { topic = A, cmd = "dedede", timeout_ = 200 }
      assert.is_nil(err)
      assert.equal("A", res)
      res, err = hemera:act { topic = B, cmd = "dedede", timeout_ = 200 }
      assert.is_nil(err)
      assert.equal("B", res)
    end)
  end)

  it("is encapsulated in a nested plugin from the root / 4", function()
    testing.run(function()
      local A, B, C = testing.topic("A"), testing.topic("B"), testing.topic("C")
      local hemera = new()
      local seen = {}
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        seen.A = scope.notFoundPattern
        scope:add({ topic = A, cmd = "notFound" }, function() return "A" end)
        scope:use(function(nested)
          nested:setNotFoundPattern { topic = B, cmd = "notFound" }
          seen.B = nested.notFoundPattern
          nested:add({ topic = B, cmd = "notFound" }, function() return "B" end)
        end)
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = A, cmd = "notFound" }, seen.A)
      assert.same({ topic = B, cmd = "notFound" }, seen.B)
      hemera:setNotFoundPattern { topic = C, cmd = "notFound" }
      assert.same({ topic = C, cmd = "notFound" }, hemera.notFoundPattern)
      hemera:add({ topic = C, cmd = "notFound" }, function() return "C" end)
      for _, t in ipairs { { A, "A" }, { B, "B" }, { C, "C" } } do
        local res, err = hemera:act { topic = t[1], cmd = "dedede", timeout_ = 200 }
        assert.is_nil(err)
        assert.equal(t[2], res)
      end
    end)
  end)

  it("is inherited by a nested plugin", function()
    testing.run(function()
      local A = testing.topic("A")
      local hemera = new()
      local seen = {}
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        seen.outer = scope.notFoundPattern
        scope:use(function(nested) seen.inner = nested.notFoundPattern end)
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = A, cmd = "notFound" }, seen.outer)
      assert.same({ topic = A, cmd = "notFound" }, seen.inner)
      assert.is_nil(hemera.notFoundPattern)
    end)
  end)

  it("can be reset inside a nested plugin", function()
    testing.run(function()
      local A = testing.topic("A")
      local hemera = new()
      local seen = { inner = "unset" }
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        seen.outer = scope.notFoundPattern
        scope:use(function(nested)
          nested:setNotFoundPattern(nil)
          seen.inner = nested.notFoundPattern
        end)
      end)
      assert.is_true((hemera:ready()))
      assert.same({ topic = A, cmd = "notFound" }, seen.outer)
      assert.is_nil(seen.inner)
    end)
  end)

  it("does not run the outer notFound action for a topic of a plugin that reset it", function()
    testing.run(function()
      local A, N = testing.topic("A"), testing.topic("N")
      local hemera = new()
      hemera:use(function(scope)
        scope:setNotFoundPattern { topic = A, cmd = "notFound" }
        scope:add({ topic = A, cmd = "notFound" }, function() return "A" end)
        scope:use(function(nested)
          nested:setNotFoundPattern(nil)
          nested:add({ topic = N, cmd = "known" }, function() return "N" end)
        end)
      end)
      assert.is_true((hemera:ready()))
      local _, err = hemera:act { topic = N, cmd = "dedede", timeout_ = 200 }
      assert.equal("PatternNotFound", err.name)
    end)
  end)

  it("reads nil after a reset on the root", function()
    testing.run(function()
      local hemera = new()
      hemera:setNotFoundPattern { topic = testing.topic("A"), cmd = "notFound" }
      assert.is_table(hemera.notFoundPattern)
      hemera:setNotFoundPattern(nil)
      assert.is_nil(hemera.notFoundPattern)
    end)
  end)
end)
