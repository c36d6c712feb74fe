-- Hemera v7 setErrorHandler (test/hemera/error-handler.spec.js): the
-- handler fn(ctx, err, reply) runs for every error reply of the topics its
-- scope owns, before onError; it may yield (Node: return a promise), and
-- its own failure is only logged.
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

-- A stream logger that keeps the decoded records.
local function log_stream()
  local records = {}
  local stream = { write = function(_, line) records[#records + 1] = Hemera.decode(line) end }
  return stream, records
end

describe("Error handler", function()
  it("Should be possible to define an errorHandler", function()
    testing.run(function()
      local s = new()
      local root = spy()
      s:setErrorHandler(function(ctx, err, reply) root(ctx, err, reply) end)
      assert(s:ready())
      local user = testing.topic("user")
      s:add({ topic = user, cmd = "get" }, function() return nil, Error("root") end)
      -- A client timeout is not a server error: the handler is not called.
      local _, terr = s:act { topic = testing.topic("math"), cmd = "add", timeout_ = 200 }
      assert.equal("TimeoutError", terr.name)
      assert.equal(0, root.n)
      local res, err = s:act { topic = user, cmd = "get" }
      assert.is_nil(res)
      assert.equal("root", err.message)
      assert.equal(1, root.n)
      local ctx, herr, reply = table.unpack(root.args[1], 1, 3)
      assert.is_function(ctx.act)
      assert.equal("root", herr.message)
      assert.is_table(reply)
      assert.equal(herr, reply.error)
    end)
  end)

  it("Should handle fullfilled promise in errorHandler (a handler that yields)", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = new { logger = stream, logLevel = "error" }
      local root = spy()
      s:setErrorHandler(function(_, err)
        root(err)
        Hemera.sleep(200)
      end)
      assert(s:ready())
      local topic = testing.topic("user")
      s:add({ topic = topic, cmd = "get" }, function() return nil, Error("root") end)
      local _, err = s:act { topic = topic, cmd = "get" }
      assert.equal("root", err.message)
      assert.same({}, records)
      assert.equal(1, root.n)
    end)
  end)

  it("Should handle rejected promise in errorHandler (a handler that yields, then fails)", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = new { logger = stream, logLevel = "error" }
      local root = spy()
      s:setErrorHandler(function(_, err)
        root(err)
        Hemera.sleep(1)
        return nil, Error("error handler")
      end)
      assert(s:ready())
      local topic = testing.topic("user")
      s:add({ topic = topic, cmd = "get" }, function() return nil, Error("root") end)
      local _, err = s:act { topic = topic, cmd = "get", timeout_ = 200 }
      -- The handler's failure is logged; the reply keeps the original error.
      assert.equal("root", err.message)
      assert.equal(1, root.n)
      assert.is_true(#records >= 1)
      local rec = records[1]
      assert.equal(50, rec.level)
      local logged = rec.msg == "error handler" and rec
        or (type(rec.err) == "table" and rec.err) or (type(rec.error) == "table" and rec.error)
      assert.is_table(logged)
      assert.equal("error handler", logged.message or logged.msg)
    end)
  end)

  it("Should be able to define a custom errorHandler in plugins", function()
    testing.run(function()
      local s = new()
      local root, plugin = spy(), spy()
      local math_topic, user_topic = testing.topic("math"), testing.topic("user")
      s:setErrorHandler(function(_, err) root(err) end)
      s:use {
        name = "myPlugin",
        options = { a = 1 },
        register = function(hemera)
          hemera:setErrorHandler(function(_, err) plugin(err) end)
          hemera:add({ topic = math_topic, cmd = "add" }, function() return nil, Error("plugin") end)
        end,
      }
      assert(s:ready())
      s:add({ topic = user_topic, cmd = "get" }, function() return nil, Error("root") end)
      local _, err = s:act { topic = math_topic, cmd = "add" }
      assert.equal("plugin", err.message)
      assert.equal(1, plugin.n)
      assert.equal(0, root.n)
      local _, err2 = s:act { topic = user_topic, cmd = "get" }
      assert.equal("root", err2.message)
      assert.equal(1, root.n)
      assert.equal(1, plugin.n)
    end)
  end)

  it("Should not be able to define an error handler for a topic which is hosted by a plugin", function()
    testing.run(function()
      local s = new()
      local root, plugin = spy(), spy()
      local topic = testing.topic("math")
      -- Never called: the plugin subscribed the topic first, so it owns it.
      s:setErrorHandler(function(_, err) root(err) end)
      s:use {
        name = "myPlugin",
        options = { a = 1 },
        register = function(hemera)
          hemera:setErrorHandler(function(_, err) plugin(err) end)
          hemera:add({ topic = topic, cmd = "add" }, function() return nil, Error("plugin") end)
        end,
      }
      assert(s:ready())
      s:add({ topic = topic, cmd = "sub" }, function() return nil, Error("root") end)
      local _, err = s:act { topic = topic, cmd = "add" }
      assert.equal("plugin", err.message)
      local _, err2 = s:act { topic = topic, cmd = "sub" }
      assert.equal("root", err2.message)
      assert.equal(2, plugin.n)
      assert.equal(0, root.n)
    end)
  end)

  it("Should be possible to define a global errorHandler", function()
    testing.run(function()
      local s = new()
      local root = spy()
      local math_topic, user_topic = testing.topic("math"), testing.topic("user")
      s:setErrorHandler(function(_, err) root(err) end)
      s:use {
        name = "myPlugin",
        options = { a = 1 },
        register = function(hemera)
          hemera:add({ topic = math_topic, cmd = "add" }, function() return nil, Error("plugin") end)
        end,
      }
      assert(s:ready())
      s:add({ topic = user_topic, cmd = "get" }, function() return nil, Error("root") end)
      local _, err = s:act { topic = math_topic, cmd = "add" }
      assert.equal("plugin", err.message)
      local _, err2 = s:act { topic = user_topic, cmd = "get" }
      assert.equal("root", err2.message)
      assert.equal(2, root.n)
    end)
  end)

  it("ErrorHandler must be from type function", function()
    testing.run(function()
      local s = new()
      local ok, err = pcall(s.setErrorHandler, s, nil)
      assert.is_false(ok)
      assert.equal("HemeraError", err.name)
      assert.equal("ErrorHandler handler must be a function", err.message)
    end)
  end)
end)
