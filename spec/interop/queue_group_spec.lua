-- Node and Lua instances sharing one queue group: topic `math`, Hemera's
-- default group `queue.math`. 2,000 requests from one client must each be
-- answered exactly once, and both kinds of instance must get work.
--
-- `math` is a real, shared topic name (examples/demo.lua serves it, and
-- lua.interpreter runs the demo against the test server at the same time
-- under `ctest -j`). So this spec re-runs itself on a private nats-server
-- (tools/with-nats.sh) and the outer test just checks that run.
-- See interop_spec.lua for how to run the interop specs alone; this one:
--   HEMERA_SRC=$PWD HEMERA_BUILD=$PWD/build \
--   LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/lib/?.so;;" \
--     lua5.4 /usr/bin/busted spec/interop/queue_group_spec.lua
local S = require "interop.support"

if not S.private then
  describe("a shared queue group (topic math)", function()
    it("passes on a private nats-server", function()
      S.setup()
      local ok, out = S.rerun_private("spec/interop/queue_group_spec.lua")
      assert(ok, "the private run failed:\n" .. out)
      assert.matches("1 success / 0 failures / 0 errors / 0 pending", out)
    end)
  end)
  return
end

local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local N = 2000

describe("a shared queue group (topic math, private server)", function()
  setup(function() S.setup() end)
  teardown(function() S.kill_all() end)

  it("2,000 requests from one client: each answered exactly once, by Node and by Lua instances", function()
    S.run(function()
      -- Two Node instances and two Lua instances, all in queue.math.
      local prefixes = { "qg." .. core.nuid() .. ".n1", "qg." .. core.nuid() .. ".n2" }
      for k, pre in ipairs(prefixes) do S.start_service("node-math-" .. k, pre, { "queueTopic=math" }) end
      local handled = { {}, {} }
      for k = 1, 2 do
        local s = testing.new { name = "lua-math-" .. k }
        s:add({ topic = "math", cmd = "add" }, function(req, ctx)
          local ids = handled[k]
          ids[#ids + 1] = ctx.request.id
          return { sum = req.a + req.b, by = "lua", app = "lua-math-" .. k }
        end)
        s:ready()
      end

      local c = testing.new { name = "qg-client" }
      c:ready()
      local sent, answers, wrong, finished = {}, {}, {}, 0
      local all = testing.future()
      for n = 1, N do
        Hemera.spawn(function()
          local res, err, ctx = c:act { topic = "math", cmd = "add", a = n, b = n, timeout_ = 10000 }
          sent[n] = ctx.request.id
          if err or type(res) ~= "table" or res.sum ~= 2 * n then
            wrong[#wrong + 1] = ("%d: %s"):format(n, err and tostring(err) or Hemera.encode(res))
          else
            answers[ctx.request.id] = res
          end
          finished = finished + 1
          if finished == N then all:set() end
        end)
      end
      assert.is_nil(select(2, all:wait(20000)))
      assert.same({}, wrong)

      -- Every request id the client sent, served exactly once somewhere.
      local served, by_kind, by_app = {}, { node = 0, lua = 0 }, {}
      local function count(id, app, kind)
        served[id] = (served[id] or 0) + 1
        by_app[app] = (by_app[app] or 0) + 1
        by_kind[kind] = by_kind[kind] + 1
      end
      for k = 1, 2 do
        for _, id in ipairs(handled[k]) do count(id, "lua-math-" .. k, "lua") end
      end
      for k, pre in ipairs(prefixes) do
        local ids = assert(c:act { topic = pre .. ".ctl", cmd = "handled" })
        for _, id in ipairs(ids) do count(id, "node-math-" .. k, "node") end
      end
      local distinct, twice, missing = 0, {}, {}
      for id, times in pairs(served) do
        distinct = distinct + 1
        if times ~= 1 then twice[#twice + 1] = id end
      end
      for n = 1, N do
        if not served[sent[n]] then missing[#missing + 1] = sent[n] end
      end
      assert.same({}, twice)
      assert.same({}, missing)
      assert.equal(N, distinct)
      assert.equal(N, by_kind.node + by_kind.lua)
      assert.is_true(by_kind.node > 0, "no request went to a Node instance")
      assert.is_true(by_kind.lua > 0, "no request went to a Lua instance")
      -- The reply the client got names the instance that did the work.
      for id, res in pairs(answers) do
        assert.equal(res.by, res.app:match("^node") and "node" or "lua")
        assert.is_true(by_app[res.app] ~= nil, "answer from an instance that did not count it: " .. id)
      end
      -- No second reply reached the client (it would count as late).
      assert.equal(0, c:stats().late_replies)
      io.stdout:write(("\nqueue.math: node %d, lua %d (%s)\n"):format(by_kind.node, by_kind.lua,
        Hemera.encode(by_app)))
    end, 40000)
  end)
end)
