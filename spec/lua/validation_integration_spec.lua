-- The validation modules plugged into a real service over NATS.
local S = require "hemera.validation.schema"
local J = require "hemera.validation.jsonschema"
local testing = require "hemera.testing"

describe("hemera.validation.schema as a plugin", function()
  it("validates and coerces requests, and names the field, rule and value on failure", function()
    testing.run(function()
      local topic = testing.topic("math")
      local s = testing.new { pluginTimeout = 2000 }
      s:use(S.plugin)
      s:add({ topic = topic, cmd = "add", a = S.number():required(), b = S.number():min(0):default(5) },
        function(req) return req.a + req.b end)
      assert(s:ready())
      local c = testing.new()
      assert(c:ready())
      assert.equal(6, (c:act { topic = topic, cmd = "add", a = 1 }))
      local _, err = c:act { topic = topic, cmd = "add", a = 1, b = -2 }
      assert.equal("ValidationError", err.name)
      assert.equal("b", err.field)
      assert.equal("min", err.rule)
      assert.equal(-2, err.value)
      local _, missing = c:act { topic = topic, cmd = "add", b = 1 }
      assert.equal("required", missing.rule)
    end)
  end)
end)

describe("hemera.validation.jsonschema as a plugin", function()
  it("applies defaults and reports the keyword", function()
    testing.run(function()
      local topic = testing.topic("greet")
      local s = testing.new { pluginTimeout = 2000 }
      s:use(J.plugin)
      s:add({ topic = topic, cmd = "hello",
              schema = { request = { type = "object", required = { "name" },
                                     properties = { name = { type = "string", minLength = 2 },
                                                    greeting = { type = "string", default = "hello" } } } } },
        function(req) return req.greeting .. " " .. req.name end)
      assert(s:ready())
      local c = testing.new()
      assert(c:ready())
      assert.equal("hello ada", (c:act { topic = topic, cmd = "hello", name = "ada" }))
      local _, err = c:act { topic = topic, cmd = "hello", name = "a" }
      assert.equal("ValidationError", err.name)
      assert.equal("minLength", err.rule)
    end)
  end)
end)
