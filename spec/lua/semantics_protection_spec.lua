-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/message-loops.spec.js,
-- load-policy.spec.js and process-stats.spec.js.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local MaxRecursionError = Hemera.errors.MaxRecursionError

describe("message-loops.spec.js", function()
  it("does not return a MaxRecursionError under the limit", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new { maxRecursion = 3 }
      hemera:ready()
      local n, max = 0, 2
      local errors, calls = {}, 0
      local finished = testing.future()
      -- 1 + 2 outbounds, 1 + 2 inbounds
      hemera:add({ topic = topic, cmd = "a" }, function(req, ctx)
        calls = calls + 1
        if n < max then
          ctx:act({ topic = topic, cmd = "a" }, function(err) if err then errors[#errors + 1] = err end end)
          n = n + 1
        else
          finished:set()
        end
      end)
      hemera:act({ topic = topic, cmd = "a" }, function(err) if err then errors[#errors + 1] = err end end)
      assert.is_nil(select(2, finished:wait(2000)))
      Hemera.sleep(50)
      assert.equal(3, calls)
      assert.same({}, errors)
    end)
  end)

  it("returns a MaxRecursionError", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new { maxRecursion = 2 }
      hemera:ready()
      local n, max = 0, 2
      local got = testing.future()
      hemera:add({ topic = topic, cmd = "a" }, function(req, ctx)
        if n < max then
          local _, err = ctx:act { topic = topic, cmd = "a" }
          if MaxRecursionError:is(err) and not got:is_set() then got:set(err) end
          n = n + 1
        end
      end)
      hemera:act({ topic = topic, cmd = "a" }, function() end)
      local err = got:wait(2000)
      assert.is_true(MaxRecursionError:is(err))
      assert.equal("MaxRecursionError", err.name)
      assert.equal("", err.message)
      assert.equal(2, err.count)
    end)
  end)

  it("returns a MaxRecursionError even on different instances", function()
    testing.run(function()
      local topic = testing.topic("a")
      local maxRecursion = 10
      local n, max = 0, 25
      local spy, spy_error = { 0, 0 }, { 0, 0 }
      local recursionError
      local insts = {}
      for k = 1, 2 do
        local hemera = testing.new { maxRecursion = maxRecursion }
        hemera:add({ topic = topic, cmd = "a" }, function(req, ctx)
          if n < max then
            local _, err = ctx:act { topic = topic, cmd = "a" }
            if err then
              spy_error[k] = spy_error[k] + 1
              recursionError = err
            end
            spy[k] = spy[k] + 1
            n = n + 1
          end
        end)
        hemera:ready()
        insts[k] = hemera
      end
      local _, err = insts[1]:act { topic = topic, cmd = "a" }
      assert.is_nil(err)
      assert.equal(1, spy_error[1] + spy_error[2])
      assert.is_true(MaxRecursionError:is(recursionError))
      assert.equal(maxRecursion, recursionError.count)
      assert.equal(maxRecursion, spy[1] + spy[2])
    end)
  end)

  it("returns a MaxRecursionError even on different instances, with error propagation", function()
    testing.run(function()
      local topic = testing.topic("a")
      local maxRecursion = 10
      local n, max = 0, 11
      local spy, spy_error = { 0, 0 }, { 0, 0 }
      local recursionError
      local insts = {}
      for k = 1, 2 do
        local hemera = testing.new { maxRecursion = maxRecursion }
        hemera:add({ topic = topic, cmd = "a" }, function(req, ctx)
          if n < max then
            local _, err = ctx:act { topic = topic, cmd = "a" }
            if err then
              spy_error[k] = spy_error[k] + 1
              recursionError = err
              n = n + 1
              return nil, err
            end
            spy[k] = spy[k] + 1
            n = n + 1
          end
        end)
        hemera:ready()
        insts[k] = hemera
      end
      local _, err = insts[1]:act { topic = topic, cmd = "a" }
      assert.is_true(MaxRecursionError:is(err))
      assert.equal(10, #err.hops)
      assert.equal(maxRecursion, recursionError.count)
      assert.equal(10, spy_error[1] + spy_error[2])
      assert.is_true(MaxRecursionError:is(recursionError))
      assert.equal(maxRecursion, recursionError.count)
      assert.equal(0, spy[1] + spy[2])
    end)
  end)

  it("can act again after a MaxRecursionError", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new { maxRecursion = 2 }
      hemera:ready()
      local n, max = 0, 2
      local out = testing.future()
      hemera:add({ topic = topic, cmd = "a" }, function(req, ctx)
        if req.a then
          return true
        elseif n < max then
          local _, err, actx = ctx:act { topic = topic, cmd = "a" }
          if MaxRecursionError:is(err) then
            local count, referrers = err.count, actx.meta.referrers
            n = 0
            local resp, err2 = actx:act { topic = topic, cmd = "a", a = true }
            out:set(count, referrers, err2, resp)
          end
          n = n + 1
        end
      end)
      hemera:act({ topic = topic, cmd = "a" }, function() end)
      local count, referrers, err2, resp = out:wait(2000)
      assert.equal(2, count)
      assert.is_nil(referrers)
      assert.is_nil(err2)
      assert.equal(true, resp)
    end)
  end)
end)

describe("load-policy.spec.js", function()
  it("replies a ProcessLoadError (Server under heavy load) without calling the handler or crashing", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new {
        load = { checkPolicy = true, process = { sampleInterval = 1 }, policy = { maxRssBytes = 5 } },
      }
      hemera:ready()
      local responded = false
      hemera:add({ topic = topic, cmd = "a" }, function() responded = true end)
      local _, err = hemera:act { topic = topic, cmd = "a" }
      assert.is_false(responded)
      assert.is_true(Hemera.errors.ProcessLoadError:is(err))
      assert.equal("ProcessLoadError", err.name)
      assert.equal("Server under heavy load (rss)", err.message)
      assert.is_number(err.heapUsed)
      assert.is_number(err.eventLoopDelay)
      assert.is_true(err.rss >= 5)
      -- The process goes on serving: another request gets the same answer.
      local _, err2 = hemera:act { topic = topic, cmd = "a" }
      assert.equal("ProcessLoadError", err2.name)
    end)
  end)

  it("serves normally with checkPolicy false", function()
    testing.run(function()
      local topic = testing.topic("a")
      local hemera = testing.new {
        load = { checkPolicy = false, process = { sampleInterval = 1 }, policy = { maxRssBytes = 5 } },
      }
      hemera:ready()
      hemera:add({ topic = topic, cmd = "a" }, function() return "ok" end)
      local res, err = hemera:act { topic = topic, cmd = "a" }
      assert.is_nil(err)
      assert.equal("ok", res)
    end)
  end)

  it("needs a sample interval to enable load limits", function()
    local ok, err = pcall(testing.new, { load = { policy = { maxRssBytes = 5 } } })
    assert.is_false(ok)
    assert.equal("HemeraError", err.name)
    assert.truthy(err.message:find("Load sample interval must be set to enable load limits", 1, true))
  end)
end)

describe("process-stats.spec.js", function()
  it("returns information about the current load of the running process", function()
    testing.run(function()
      local hemera = testing.new { load = { process = { sampleInterval = 1 } } }
      hemera:ready()
      local load = hemera.load
      assert.is_number(load.eventLoopDelay)
      assert.is_number(load.heapUsed)
      assert.is_number(load.rss)
      assert.is_true(load.rss > 0)
      assert.is_true(load.heapUsed > 0)
    end)
  end)
end)
