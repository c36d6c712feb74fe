-- require "hemera.stats": hemera-stats 1.0.23's processInfo and
-- registeredActions, answered by every instance (pubsub$), with its field
-- names. On a private nats-server: the topic is hemera-stats' fixed
-- "stats", which another spec file's instances must not answer.
local Hemera = require "hemera"
local testing = require "hemera.testing"
-- Not use(require "hemera.stats"): require returns a second value.
local stats = require "hemera.stats"

local function instance(srv, name, opts)
  return Hemera.new(setmetatable({ name = name, servers = srv.url }, { __index = opts }))
end

describe("hemera.stats (hemera-stats' actions)", function()
  local srv
  setup(function() srv = testing.start_server {} end)
  teardown(function() testing.stop_all() end)

  it("answers processInfo from every instance with hemera-stats' fields", function()
    testing.run(function()
      local a = instance(srv, "stats-a")
      local b = instance(srv, "stats-b")
      a:use(stats)
      b:use(stats)
      assert(a:ready())
      assert(b:ready())
      local caller = instance(srv, "stats-caller")
      assert(caller:ready())
      local seen = {}
      local before = require("hemera.core").now()
      for r, err in caller:stream { topic = "stats", cmd = "processInfo", ["maxMessages$"] = 2 } do
        assert.is_nil(err)
        seen[r.app] = r
      end
      for _, app in ipairs { "stats-a", "stats-b" } do
        local r = assert(seen[app], app .. " did not answer")
        local keys = {}
        for k in pairs(r) do keys[#keys + 1] = k end
        table.sort(keys)
        -- nodeEnv is absent: NODE_ENV is unset here, and Node leaves an
        -- undefined member out too.
        assert.same({ "app", "eventLoopDelay", "heapUsed", "rss", "ts", "uptime" }, keys)
        assert.is_true(r.heapUsed > 0)
        assert.is_true(r.rss > 0)
        assert.is_true(r.uptime >= 0)
        assert.is_true(r.ts >= before - 1000)
      end
      -- The actions are pubsub$: no queue group in the Service API either.
      local info = a:service()
      local stats_ep
      for _, e in ipairs(info.endpoints) do
        if e.subject == "stats" then stats_ep = e end
      end
      assert.is_nil(stats_ep.queue_group)
      caller:close()
      a:close()
      b:close()
    end)
  end)

  it("lists the registered actions with their plugin", function()
    testing.run(function()
      local a = instance(srv, "stats-actions")
      a:add({ topic = "math", cmd = "add" }, function(r) return r.a + r.b end)
      a:use { name = "calc", register = function(p)
        p:add({ topic = "math", cmd = "mul" }, function(r) return r.a * r.b end)
      end }
      a:use(stats)
      assert(a:ready())
      local r = assert(a:act { topic = "stats", cmd = "registeredActions" })
      assert.equal("stats-actions", r.app)
      assert.is_number(r.ts)
      local by = {}
      for _, x in ipairs(r.actions) do by[x.pattern.topic .. "/" .. x.pattern.cmd] = x end
      assert.same({ pattern = { topic = "math", cmd = "add" }, schema = {}, plugin = "core" }, by["math/add"])
      assert.equal("calc", by["math/mul"].plugin)
      assert.equal("hemera-stats", by["stats/processInfo"].plugin)
      assert.equal("hemera-stats", by["stats/registeredActions"].plugin)
      a:close()
    end)
  end)

  it("refuses a bad topic option, naming it", function()
    testing.run(function()
      local a = instance(srv, "stats-bad")
      a:use(stats, { topic = 5 })
      local ok, err = a:ready()
      assert.is_nil(ok)
      assert.matches("option 'topic' must be a non%-empty string, got 5", tostring(err))
      a:close()
    end)
  end)
end)
