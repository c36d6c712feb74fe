-- Hemera v7 decorate / expose (test/hemera/decorator.spec.js and
-- expose.spec.js): decorate puts a member on the root instance, visible to
-- every scope; expose puts it on the current scope and its children only.
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

local function check_raises(fn, name, message)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.is_table(err)
  assert.equal(name, err.name)
  if message then assert.equal(message, err.message) end
  return err
end

describe("Root Decorator", function()
  it("Should be able add a decorator", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:decorate("d", function() return true end)
      assert.is_function(s.d)
      assert.is_true(s.d())
    end)
  end)

  it("Should be able to access decorator inside plugins", function()
    testing.run(function()
      local s = new()
      s:decorate("test", 1)
      local seen
      s:use { name = "myPlugin", register = function(hemera) seen = hemera.test end }
      local ok, err = s:ready()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal(1, seen)
    end)
  end)

  it("Should throw error because could not resolve all decorate deps", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      check_raises(function() s:decorate("b", 1, { "a" }) end, "HemeraError", "Missing member dependency 'a'")
      assert.is_nil(s.b)
    end)
  end)

  it("Should satisfy all decorate deps", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:decorate("a", 2)
      s:decorate("b", 1, { "a" })
      assert.equal(2, s.a)
      assert.equal(1, s.b)
    end)
  end)

  it("Should not be possible to override a decoration", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:decorate("d", 1)
      check_raises(function() s:decorate("d", 2) end, "HemeraError", "Decoration has been already added")
      assert.equal(1, s.d)
    end)
  end)

  it("Should not be possible to override a built-in member", function()
    testing.run(function()
      local s = new()
      check_raises(function() s:decorate("act", 1) end, "HemeraError", "Decoration has been already added")
      assert.is_function(s.act)
    end)
  end)

  it("Should be able to check if a decorator exists", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:decorate("d", function() return true end)
      assert.is_true(s:hasDecorator("d"))
      assert.is_false(s:hasDecorator("unknown"))
    end)
  end)

  it("Should not extend the prototype", function()
    testing.run(function()
      local s1 = new()
      s1:decorate("fooBar", 1)
      local s2 = new()
      assert.is_false(s2:hasDecorator("fooBar"))
      assert.is_nil(s2.fooBar)
    end)
  end)
end)

describe("Expose", function()
  it("Should be able add a exposition", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:expose("d", function() return true end)
      assert.is_function(s.d)
    end)
  end)

  it("Should be able to access expositions inside plugins", function()
    testing.run(function()
      local s = new()
      s:expose("test", 1)
      local seen
      s:use { name = "myPlugin", register = function(hemera) seen = hemera.test end }
      local ok, err = s:ready()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal(1, seen)
    end)
  end)

  it("Expositions are encapsulated inside plugins", function()
    testing.run(function()
      local s = new()
      local seen = {}
      s:use {
        name = "myPlugin",
        register = function(hemera)
          hemera:expose("test", 1)
          seen.own = hemera.test
          hemera:use { name = "myPlugin2", register = function(inner) seen.child = inner.test end }
        end,
      }
      s:use { name = "sibling", register = function(hemera) seen.sibling = hemera.test end }
      local ok, err = s:ready()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal(1, seen.own)
      assert.equal(1, seen.child)
      assert.is_nil(seen.sibling)
      assert.is_nil(s.test)
      assert.is_false(s:hasDecorator("test"))
    end)
  end)

  it("Should satisfy all expose deps", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:expose("a", 2)
      s:expose("b", 1, { "a" })
      assert.equal(2, s.a)
      assert.equal(1, s.b)
    end)
  end)

  it("Should not be possible to override an exposition", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      s:expose("d", 1)
      check_raises(function() s:expose("d", 1) end, "HemeraError", "Exposition has been already added")
    end)
  end)

  it("Should throw error because could not resolve all expose deps", function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      check_raises(function() s:expose("b", 1, { "a" }) end, "HemeraError", "Missing member dependency 'a'")
    end)
  end)
end)
