-- Hemera v7 app-level hooks (test/hemera/onAdd-extension.spec.js,
-- onClose-extension.spec.js, onClose-extension-errors.spec.js): onAdd gets
-- the action definition, onClose gets the instance; close(fn) gets the
-- first onClose error.
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

-- A test of a behaviour the library once got wrong; `symptom` records what
-- it was, and the test now runs like any other.
local function fixed_bug(_symptom, body)
  return function() testing.run(body) end
end

local function spy()
  return setmetatable({ n = 0, args = {} }, {
    __call = function(self, ...)
      self.n = self.n + 1
      self.args[self.n] = table.pack(...)
    end,
  })
end

local function check_definition(def, topic, cmd)
  assert.same({ topic = topic, cmd = cmd }, def.pattern)
  assert.is_function(def.action)
  assert.is_table(def.transport)
  assert.equal(topic, def.transport.topic)
  assert.is_table(def.schema)
end

describe("Extension onAdd", function()
  it('Should be able to listen for "onAdd" events', function()
    testing.run(function()
      local topic = testing.topic("email")
      local s = new()
      assert(s:ready())
      local ext = spy()
      s:ext("onAdd", function(def) ext(def) end)
      local def = s:add({ topic = topic, cmd = "send" }, function() end)
      assert.equal(1, ext.n)
      assert.equal(def, ext.args[1][1])
      check_definition(ext.args[1][1], topic, "send")
    end)
  end)

  it('Should call "onAdd" extension for each add registration', function()
    testing.run(function()
      local topic = testing.topic("email")
      local s = new()
      assert(s:ready())
      local ext = spy()
      s:ext("onAdd", function(def) ext(def) end)
      for i = 0, 9 do
        s:add({ topic = topic, cmd = "send_" .. i }, function() end)
      end
      assert.equal(10, ext.n)
      for i = 0, 9 do check_definition(ext.args[i + 1][1], topic, "send_" .. i) end
    end)
  end)

  it('Should throw when an "onAdd" handler is not a function', function()
    testing.run(function()
      local s = new()
      assert(s:ready())
      local ok, err = pcall(s.ext, s, "onAdd", "")
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("Extension handler must be a function", err.message)
    end)
  end)

  it('Should be able to add "onAdd" events inside plugins', function()
    testing.run(function()
      local topic = testing.topic("email")
      local s = new()
      local ext = spy()
      s:ext("onAdd", function(def) ext(def) end)
      s:use {
        name = "myPlugin",
        register = function(hemera) hemera:add({ topic = topic, cmd = "send" }, function() end) end,
      }
      local ok, err = s:ready()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal(1, ext.n)
      check_definition(ext.args[1][1], topic, "send")
    end)
  end)

  it('Should be able to listen for "onAdd" events inside plugins', function()
    testing.run(function()
      local topic = testing.topic("email")
      local s = new()
      local ext = spy()
      s:use {
        name = "myPlugin",
        register = function(hemera)
          hemera:ext("onAdd", function(def) ext(def) end)
          hemera:add({ topic = topic, cmd = "send" }, function() end)
        end,
      }
      local ok, err = s:ready()
      assert.is_nil(err)
      assert.is_true(ok)
      assert.equal(1, ext.n)
      check_definition(ext.args[1][1], topic, "send")
      -- The plugin's onAdd hook stays in its scope.
      s:add({ topic = testing.topic("other"), cmd = "x" }, function() end)
      assert.equal(1, ext.n)
    end)
  end)

  it("Should keep the object-valued keys of the pattern as the schema, out of the pattern", fixed_bug(
    "definition.pattern keeps object-valued keys (payload = {a = 1}); Hemera's Add.pattern is the routing pattern {topic, cmd} (init.lua Hemera:add uses pattern.clean, which only drops $ keys and functions)",
    function()
      local topic = testing.topic("math")
      local s = new()
      local ext = spy()
      s:ext("onAdd", function(def) ext(def) end)
      s:add({ topic = topic, cmd = "info", queue_ = "q", maxMessages_ = 10, payload = { a = 1 } }, function() end)
      local def = ext.args[1][1]
      assert.same({ topic = topic, cmd = "info" }, def.pattern)
      assert.same({ payload = { a = 1 } }, def.schema)
      assert.equal("q", def.transport.queue)
      assert.equal(10, def.transport.maxMessages)
    end))
end)

describe("onClose extension", function()
  it("Should be able to add onClose extension handler (root and plugin)", fixed_bug(
    "onClose hooks added inside a scoped plugin never run: close() only runs the root scope's list (init.lua Hemera:close uses root._ext.onClose; child_scope copies the hook lists)",
    function()
      local s = new()
      local first, second = spy(), spy()
      s:ext("onClose", function(hemera) first(hemera) end)
      s:use(function(hemera) hemera:ext("onClose", function() second() end) end)
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      assert.is_false(closed:wait(3000))
      assert.equal(1, first.n)
      assert.equal(s, first.args[1][1])
      assert.equal(1, second.n)
    end))

  it("Should run the root onClose handlers last added first, once", function()
    testing.run(function()
      local s = new()
      local order = {}
      s:ext("onClose", function() order[#order + 1] = 1 end)
      s:ext("onClose", function() order[#order + 1] = 2 end)
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      assert.is_false(closed:wait(3000))
      assert.same({ 2, 1 }, order)
    end)
  end)

  it("Should run onClose handlers of an unscoped plugin", function()
    testing.run(function()
      local s = new()
      local ext = spy()
      s:use { scoped = false, register = function(hemera) hemera:ext("onClose", function() ext() end) end }
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      assert.is_false(closed:wait(3000))
      assert.equal(1, ext.n)
    end)
  end)

  it("Should let an onClose handler yield", function()
    testing.run(function()
      local s = new()
      local ext = spy()
      s:ext("onClose", function() Hemera.sleep(5); ext() end)
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      assert.is_false(closed:wait(3000))
      assert.equal(1, ext.n)
    end)
  end)
end)

describe("onClose extension error handling", function()
  it("Should be able to pass an error to onClose extension handler (root and plugin)", fixed_bug(
    "onClose hooks added inside a scoped plugin never run, so their error never reaches close(fn) (init.lua Hemera:close uses root._ext.onClose)",
    function()
      local s = new()
      local first, second = spy(), spy()
      s:ext("onClose", function() first() end)
      s:use(function(hemera)
        hemera:ext("onClose", function()
          second()
          return nil, Hemera.errors.Error("test")
        end)
      end)
      local ok, rerr = s:ready()
      assert.is_nil(rerr)
      assert.is_true(ok)
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      local err = closed:wait(3000)
      assert.is_table(err)
      assert.equal("test", err.message)
      assert.equal(1, second.n)
      assert.equal(1, first.n)
    end))

  it("Should pass a root onClose error to close and still run the other handlers", function()
    testing.run(function()
      local s = new()
      local first, second = spy(), spy()
      s:ext("onClose", function() first() end)
      s:ext("onClose", function()
        second()
        return nil, Hemera.errors.Error("test")
      end)
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      local err = closed:wait(3000)
      assert.is_table(err)
      assert.equal("test", err.message)
      assert.equal(1, first.n)
      assert.equal(1, second.n)
    end)
  end)
end)
