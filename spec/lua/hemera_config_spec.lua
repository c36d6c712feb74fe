-- Hemera v7 configuration (test/hemera/default-config.spec.js, spec §4):
-- hemera.config holds every option with its default; invalid options fail
-- at Hemera.new (Node: a Joi ValidationError; here a HemeraError naming
-- the key, the expected type and the value).
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- A test of a behaviour the library once got wrong; `symptom` records what
-- it was, and the test now runs like any other.
local function fixed_bug(_symptom, body)
  return function() testing.run(body) end
end

-- Hemera v7's defaults (errio apart, see below), name given.
local DEFAULTS = {
  timeout = 2000,
  pluginTimeout = 10,
  tag = "",
  prettyLog = false,
  name = "test",
  logLevel = "silent",
  childLogger = false,
  maxRecursion = 0,
  traceLog = false,
  bloomrun = { indexing = "insertion", lookupBeforeAdd = false },
  load = {
    checkPolicy = true,
    process = { sampleInterval = 0 },
    policy = { maxHeapUsedBytes = 0, maxRssBytes = 0, maxEventLoopDelay = 0 },
  },
}

-- Options of this port beyond Hemera's (docs/api.md).
local OURS = { servers = true, micro = true, nats = true, closeTimeout = true, maxConcurrency = true, logger = true,
               handlerBudget = true }

local function new_raises(opts)
  local ok, err = pcall(Hemera.new, opts)
  assert.is_false(ok)
  assert.is_table(err)
  return err
end

describe("Hemera default config", function()
  it("Should check default config", function()
    testing.run(function()
      local s = testing.new { name = "test" }
      local cfg = s.config
      for k, v in pairs(DEFAULTS) do
        assert.same(v, cfg[k], "config." .. k)
      end
      for k in pairs(cfg) do
        assert.is_true(DEFAULTS[k] ~= nil or OURS[k] or k == "errio", "unexpected config key " .. k)
      end
      assert.equal(2000, cfg.closeTimeout)
      assert.equal(1000, cfg.maxConcurrency)
      assert.equal(1000, cfg.handlerBudget)
      assert.same({}, cfg.nats)
      assert.equal("integer", math.type(cfg.timeout))
    end)
  end)

  it("Should default the name to hemera-<hostname>-<id>", function()
    testing.run(function()
      local s1, s2 = testing.new(), testing.new()
      assert.matches("^hemera%-.+%-.+$", s1.config.name)
      assert.are_not.equal(s1.config.name, s2.config.name)
    end)
  end)

  -- Hemera's errio defaults but for stack, which is off: stacks stay home
  -- (a deliberate difference, docs/api.md).
  it("Should default errio as Hemera does, stacks off", fixed_bug(
    "config.errio defaults to {} instead of Hemera's {recursive = true, inherited = true, stack = true, private = false, exclude = [], include = []} (config.lua SCHEMA.errio)",
    function()
      local s = testing.new { name = "test" }
      assert.same({ recursive = true, inherited = true, stack = false, private = false, exclude = {}, include = {} },
        s.config.errio)
    end))

  it("Should keep given values and fill nested defaults", function()
    testing.run(function()
      local s = testing.new { name = "x", timeout = 150, bloomrun = { indexing = "depth" }, load = { checkPolicy = false } }
      assert.equal(150, s.config.timeout)
      assert.same({ indexing = "depth", lookupBeforeAdd = false }, s.config.bloomrun)
      assert.is_false(s.config.load.checkPolicy)
      assert.same({ sampleInterval = 0 }, s.config.load.process)
    end)
  end)

  it("Should throw error because invalid config values", function()
    testing.run(function()
      local err = new_raises { servers = testing.url(), logLevel = "foo" }
      assert.equal("HemeraError", err.name)
      assert.matches("logLevel", err.message, 1, true)
      assert.matches("foo", err.message, 1, true)
    end)
  end)

  it("Should throw error because of a wrong type, naming the key, the type and the value", function()
    testing.run(function()
      local err = new_raises { servers = testing.url(), timeout = "soon" }
      assert.equal("HemeraError", err.name)
      assert.matches("timeout", err.message, 1, true)
      assert.matches("integer", err.message, 1, true)
      assert.matches("soon", err.message, 1, true)
    end)
  end)

  it("Should throw error because of an unknown key", function()
    testing.run(function()
      local err = new_raises { servers = testing.url(), crashOnFatal = true }
      assert.equal("HemeraError", err.name)
      assert.matches("crashOnFatal", err.message, 1, true)
    end)
  end)

  it("Should throw error because of an invalid nested value", function()
    testing.run(function()
      local err = new_raises { servers = testing.url(), bloomrun = { indexing = "inserting" } }
      assert.equal("HemeraError", err.name)
      assert.matches("bloomrun.indexing", err.message, 1, true)
    end)
  end)

  it("Should require a sample interval when a load policy limit is set", function()
    testing.run(function()
      local err = new_raises { servers = testing.url(), load = { policy = { maxRssBytes = 1 } } }
      assert.equal("HemeraError", err.name)
      assert.matches("Load sample interval must be set to enable load limits", err.message, 1, true)
    end)
  end)
end)
