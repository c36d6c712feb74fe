-- Hemera v7 schema compilers (test/hemera/schemaCompiler.spec.js,
-- async-schemaCompiler.spec.js, responseSchemaCompiler.spec.js,
-- async-responseSchemaCompiler.spec.js). In Lua a compiler is
-- fn(schema, definition) -> validator (or nil), and a validator is
-- fn(value, ctx) -> newValue | nil, err. Node's `{value}` is returning the
-- value, `{error}` is `return nil, err`, a promise is a validator that
-- yields.
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- Node's avvio never times out a plugin that completes synchronously; here
-- the default 10 ms pluginTimeout can fire for one when the loop clock is
-- stale (see the known bug in hemera_plugin_spec.lua, "Plugin timeout"), so
-- specs that are not about the timeout give plugins room.
local function new(opts)
  opts = opts or {}
  if opts.pluginTimeout == nil then opts.pluginTimeout = 2000 end
  return testing.new(opts)
end

local Error = Hemera.errors.Error

local function spy()
  return setmetatable({ n = 0, args = {} }, {
    __call = function(self, ...)
      self.n = self.n + 1
      self.args[self.n] = table.pack(...)
    end,
  })
end

-- A ready instance with `compiler` set by `setter`, serving {topic, cmd =
-- "add", a = <schema>} with an adder returning {result = a + b}.
local function setup(setter, compiler, schema, opts)
  local topic = testing.topic("math")
  local s = new(opts)
  s[setter](s, compiler)
  assert(s:ready())
  s:add({ topic = topic, cmd = "add", a = schema }, function(req) return { result = req.a + req.b } end)
  return s, topic
end

local function act_add(s, topic)
  return s:act { topic = topic, cmd = "add", a = 1, b = 2 }
end

describe("Schema Compiler", function()
  it("Should be able to use a schema compiler function", function()
    testing.run(function()
      local compiled, validated = spy(), spy()
      local s, topic = setup("setSchemaCompiler", function(schema, def)
        compiled(schema, def)
        return function(pattern, ctx)
          validated(pattern, ctx)
          return { a = 5, b = 10 }
        end
      end, {})
      local res, err = act_add(s, topic)
      assert.is_nil(err)
      assert.equal(15, res.result)
      assert.equal(1, compiled.n)
      assert.same({ a = {} }, compiled.args[1][1])
      assert.same({ a = {} }, compiled.args[1][2].schema)
      assert.equal(1, validated.n)
      assert.same({ topic = topic, cmd = "add", a = 1, b = 2 }, validated.args[1][1])
      assert.is_table(validated.args[1][2].meta)
    end)
  end)

  it("Should compile the schema once per action", function()
    testing.run(function()
      local compiled, validated = spy(), spy()
      local s, topic = setup("setSchemaCompiler", function(schema)
        compiled(schema)
        return function() validated() end
      end, {})
      for _ = 1, 3 do
        local res, err = act_add(s, topic)
        assert.is_nil(err)
        assert.equal(3, res.result)
      end
      assert.equal(1, compiled.n)
      assert.equal(3, validated.n)
    end)
  end)

  it("Should be able to return an error from schema compiler function", function()
    testing.run(function()
      local compiled = spy()
      local handler = spy()
      local topic = testing.topic("math")
      local s = new()
      s:setSchemaCompiler(function(schema)
        compiled(schema)
        return function() return nil, Error("test") end
      end)
      assert(s:ready())
      s:add({ topic = topic, cmd = "add", a = {} }, function() handler() end)
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("test", err.message)
      assert.same({ a = {} }, compiled.args[1][1])
      assert.equal(0, handler.n)
    end)
  end)

  it("Should be able to raise an error from a validator", function()
    testing.run(function()
      local s, topic = setup("setSchemaCompiler", function()
        return function() error(Error("test")) end
      end, {})
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("Error", err.name)
      assert.equal("test", err.message)
    end)
  end)

  it("SchemaCompiler must be from type function", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      local ok, err = pcall(s.setSchemaCompiler, s, nil)
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("SchemaCompiler handler must be a function", err.message)
    end)
  end)

  it("ResponseSchemaCompiler must be from type function", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      local ok, err = pcall(s.setResponseSchemaCompiler, s, nil)
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("ResponseSchemaCompiler handler must be a function", err.message)
    end)
  end)
end)

describe("Async Schema Compiler", function()
  it("Should be able to modify request pattern with fulfilled promise value", function()
    testing.run(function()
      local validated = spy()
      local s, topic = setup("setSchemaCompiler", function()
        return function(pattern)
          validated(pattern)
          Hemera.sleep(5)
          return { a = 5, b = 10 }
        end
      end, {})
      local res, err = act_add(s, topic)
      assert.is_nil(err)
      assert.equal(15, res.result)
      assert.same({ topic = topic, cmd = "add", a = 1, b = 2 }, validated.args[1][1])
    end)
  end)

  it("Should be able to rejecte the request with reject promise", function()
    testing.run(function()
      local s, topic = setup("setSchemaCompiler", function()
        return function()
          Hemera.sleep(1)
          return nil, Error("test")
        end
      end, {})
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("test", err.message)
    end)
  end)

  it("Should return a timeout error when schema compiler takes too long", function()
    testing.run(function()
      local s, topic = setup("setSchemaCompiler", function()
        return function() Hemera.sleep(200) end
      end, {}, { timeout = 150 })
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("TimeoutError", err.name)
    end)
  end)

  it("Should not be able to define a seperator schema compiler for a topic which is hosted by a plugin", function()
    testing.run(function()
      local topic = testing.topic("math")
      local s = new()
      local root, plugin = spy(), spy()
      s:setSchemaCompiler(function()
        return function() root(); Hemera.sleep(1) end
      end)
      s:use {
        name = "myPlugin",
        register = function(hemera)
          hemera:setSchemaCompiler(function()
            return function() plugin(); Hemera.sleep(1) end
          end)
          hemera:add({ topic = topic, cmd = "add" }, function() end)
        end,
      }
      assert(s:ready())
      s:add({ topic = topic, cmd = "sub" }, function() end)
      local res, err = s:act { topic = topic, cmd = "sub" }
      assert.is_nil(err)
      assert.is_nil(res)
      assert.equal(0, root.n)
      assert.equal(1, plugin.n)
    end)
  end)
end)

describe("Response Schema Compiler", function()
  it("Should be able to use a schema compiler function", function()
    testing.run(function()
      local compiled, validated = spy(), spy()
      local s, topic = setup("setResponseSchemaCompiler", function(schema)
        compiled(schema)
        return function(payload)
          validated(payload)
          return 15
        end
      end, { foo = "bar" })
      local res, err = act_add(s, topic)
      assert.is_nil(err)
      assert.equal(15, res)
      assert.same({ a = { foo = "bar" } }, compiled.args[1][1])
      assert.same({ result = 3 }, validated.args[1][1])
    end)
  end)

  it("Should be able to return an error from schema compiler function", function()
    testing.run(function()
      local validated = spy()
      local s, topic = setup("setResponseSchemaCompiler", function(schema)
        assert.same({ a = { foo = "bar" } }, schema)
        return function(payload)
          validated(payload)
          return nil, Error("test")
        end
      end, { foo = "bar" })
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("test", err.message)
      assert.same({ result = 3 }, validated.args[1][1])
    end)
  end)

  it("Should not validate an error reply", function()
    testing.run(function()
      local validated = spy()
      local topic = testing.topic("math")
      local s = new()
      s:setResponseSchemaCompiler(function() return function() validated() end end)
      assert(s:ready())
      s:add({ topic = topic, cmd = "add" }, function() return nil, Error("handler") end)
      local _, err = s:act { topic = topic, cmd = "add" }
      assert.equal("handler", err.message)
      assert.equal(0, validated.n)
    end)
  end)
end)

describe("Async Response Schema Compiler", function()
  it("Should be able to use a schema compiler function", function()
    testing.run(function()
      local validated = spy()
      local s, topic = setup("setResponseSchemaCompiler", function()
        return function(payload)
          validated(payload)
          Hemera.sleep(5)
          return 15
        end
      end, { foo = "bar" })
      local res, err = act_add(s, topic)
      assert.is_nil(err)
      assert.equal(15, res)
      assert.same({ result = 3 }, validated.args[1][1])
    end)
  end)

  it("Should be able to return an error from schema compiler function", function()
    testing.run(function()
      local s, topic = setup("setResponseSchemaCompiler", function()
        return function()
          Hemera.sleep(1)
          error(Error("test"))
        end
      end, { foo = "bar" })
      local res, err = act_add(s, topic)
      assert.is_nil(res)
      assert.equal("test", err.message)
    end)
  end)

  it("Should not be able to define a seperator schema compiler for a topic which is hosted by a plugin", function()
    testing.run(function()
      local topic = testing.topic("math")
      local s = new()
      local root, plugin = spy(), spy()
      s:setResponseSchemaCompiler(function()
        return function() root(); Hemera.sleep(1); return true end
      end)
      s:use {
        name = "myPlugin",
        register = function(hemera)
          hemera:setResponseSchemaCompiler(function()
            return function() plugin(); Hemera.sleep(1); return true end
          end)
          hemera:add({ topic = topic, cmd = "add" }, function() end)
        end,
      }
      assert(s:ready())
      s:add({ topic = topic, cmd = "sub" }, function() end)
      local res, err = s:act { topic = topic, cmd = "sub" }
      assert.is_nil(err)
      assert.is_true(res)
      assert.equal(0, root.n)
      assert.equal(1, plugin.n)
    end)
  end)
end)
