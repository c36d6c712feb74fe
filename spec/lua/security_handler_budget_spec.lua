-- The CPU budget of a served request (handlerBudget): a handler or hook
-- that spins is stopped with a HandlerBudgetError reply naming the
-- pattern, and the instance goes on serving.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local function service(opts, setup)
  local topic = testing.topic("budget")
  local lg = testing.logger()
  local o = { logger = lg, handlerBudget = 100 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local s = testing.new(o)
  s:add({ topic = topic, cmd = "ok" }, function() return "fine" end)
  setup(s, topic)
  assert(s:ready())
  local c = testing.new()
  assert(c:ready())
  return s, c, topic, lg
end

describe("handlerBudget", function()
  it("stops a spinning handler with a HandlerBudgetError naming the pattern; the next request is served", function()
    testing.run(function()
      local s, c, topic, lg = service(nil, function(s, topic)
        s:add({ topic = topic, cmd = "spin" }, function() while true do end end)
      end)
      local spin, ok = testing.future(), testing.future()
      c:act({ topic = topic, cmd = "spin", timeout_ = 10000 }, function(err, res) spin:set(err, res) end)
      c:act({ topic = topic, cmd = "ok", timeout_ = 10000 }, function(err, res) ok:set(err, res) end)
      local err = spin:wait(10000)
      assert.is_table(err)
      assert.equal("HandlerBudgetError", err.name)
      assert.equal(("Handler exceeded its CPU budget of 100 ms: cmd:spin,topic:%s"):format(topic), err.message)
      assert.equal(100, err.budget)
      assert.is_true(err.used >= 100)
      local oerr, res = ok:wait(10000)
      assert.is_nil(oerr)
      assert.equal("fine", res)
      assert.truthy(lg:find(function(r) return r.msg == "Handler over its CPU budget" end))
      assert.equal(0, s._i.inflight)
    end)
  end)

  it("cannot be swallowed by a pcall in the handler", function()
    testing.run(function()
      local _, c, topic = service(nil, function(s, topic)
        s:add({ topic = topic, cmd = "spin" }, function()
          for _ = 1, 1000 do pcall(function() while true do end end) end
          return "escaped"
        end)
      end)
      local res, err = c:act { topic = topic, cmd = "spin", timeout_ = 10000 }
      assert.is_nil(res)
      assert.equal("HandlerBudgetError", err.name)
    end)
  end)

  it("covers the hooks too: a spinning onRequest hook is stopped", function()
    testing.run(function()
      local _, c, topic = service(nil, function(s, topic)
        s:ext("onRequest", function(ctx, req)
          if req.cmd == "hook" then while true do end end
        end)
        s:add({ topic = topic, cmd = "hook" }, function() return "unreached" end)
      end)
      local _, err = c:act { topic = topic, cmd = "hook", timeout_ = 10000 }
      assert.equal("HandlerBudgetError", err.name)
      assert.equal("fine", (c:act { topic = topic, cmd = "ok" }))
    end)
  end)

  it("charges running time only: a handler that waits longer than its budget is not stopped", function()
    testing.run(function()
      local _, c, topic = service(nil, function(s, topic)
        s:add({ topic = topic, cmd = "slow" }, function(_, ctx)
          Hemera.sleep(250)
          local r = ctx:act { topic = topic, cmd = "ok" }
          return r .. " after a wait"
        end)
      end)
      assert.equal("fine after a wait", (c:act { topic = topic, cmd = "slow", timeout_ = 5000 }))
    end)
  end)

  it("handlerBudget = 0 sets no limit", function()
    testing.run(function()
      local _, c, topic = service({ handlerBudget = 0 }, function(s, topic)
        s:add({ topic = topic, cmd = "busy" }, function()
          local t = core.hrtime()
          while core.hrtime() - t < 300 do end
          return "done"
        end)
      end)
      assert.equal("done", (c:act { topic = topic, cmd = "busy", timeout_ = 5000 }))
    end)
  end)

  it("stops a spinning pubsub handler and logs it", function()
    testing.run(function()
      local topic2
      local _, c, topic, lg = service(nil, function(s, topic)
        topic2 = topic .. ".events"
        s:add({ topic = topic2, pubsub_ = true }, function() while true do end end)
      end)
      c:act { topic = topic2, pubsub_ = true }
      -- The event is handled before the act published after it.
      assert.equal("fine", (c:act { topic = topic, cmd = "ok", timeout_ = 5000 }))
      assert.truthy(lg:find(function(r) return r.msg == "Handler over its CPU budget" end))
    end)
  end)

  it("rejects a negative handlerBudget with the option's name", function()
    local ok, err = pcall(Hemera.new, { handlerBudget = -1 })
    assert.is_false(ok)
    assert.matches("handlerBudget", tostring(err.message))
  end)
end)
