-- Foundation: add/act over a real nats-server (issue 2).
local Hemera = require "hemera"
local testing = require "hemera.testing"

describe("add and act", function()
  it("round-trips a request", function()
    testing.run(function()
      local topic = testing.topic("math")
      local s = testing.new { name = "svc" }
      s:add({ topic = topic, cmd = "add" }, function(req) return req.a + req.b end)
      s:ready()
      local c = testing.new()
      c:ready()
      local res, err, ctx = c:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err)
      assert.equal(3, res)
      assert.equal("integer", math.type(res))
      assert.equal(topic, ctx.trace.service)
      assert.equal("a:1,b:2,cmd:add,topic:" .. topic, ctx.trace.method)
      assert.is_number(ctx.trace.duration)
    end)
  end)

  it("answers 1,000 concurrent acts from 1,000 coroutines, each with its own result", function()
    testing.run(function()
      local topic = testing.topic("conc")
      local s = testing.new()
      s:add({ topic = topic, cmd = "double" }, function(req) return req.n * 2 end)
      s:ready()
      local c = testing.new()
      c:ready()
      local N, finished, wrong = 1000, 0, {}
      local all = testing.future()
      for n = 1, N do
        Hemera.spawn(function()
          local res, err = c:act { topic = topic, cmd = "double", n = n, timeout_ = 10000 }
          if err or res ~= 2 * n then wrong[#wrong + 1] = n end
          finished = finished + 1
          if finished == N then all:set() end
        end)
      end
      all:wait()
      assert.equal(N, finished)
      assert.same({}, wrong)
    end)
  end)

  it("runs a nested chain a -> b -> c keeping the trace and meta", function()
    testing.run(function()
      local base = testing.topic("chain")
      local s = testing.new { name = "chain" }
      local seen = {}
      s:add({ topic = base .. ".c" }, function(req, ctx)
        seen.c = ctx.trace
        return { from = "c", token = ctx.meta.token }
      end)
      s:add({ topic = base .. ".b" }, function(req, ctx)
        seen.b = ctx.trace
        local r = assert(ctx:act { topic = base .. ".c" })
        return { from = "b", inner = r }
      end)
      s:add({ topic = base .. ".a" }, function(req, ctx)
        seen.a = ctx.trace
        local r = assert(ctx:act { topic = base .. ".b" })
        return { from = "a", inner = r }
      end)
      s:ready()
      local c = testing.new()
      c:ready()
      local res = assert(c:act { topic = base .. ".a", meta_ = { token = "abc" } })
      assert.same({ from = "a", inner = { from = "b", inner = { from = "c", token = "abc" } } }, res)
      assert.equal(seen.a.traceId, seen.b.traceId)
      assert.equal(seen.b.traceId, seen.c.traceId)
      assert.is_nil(seen.a.parentSpanId)
      -- Hemera's rule: a nested call's spanId and parentSpanId are both the parent's spanId.
      assert.equal(seen.a.spanId, seen.b.parentSpanId)
      assert.equal(seen.a.spanId, seen.b.spanId)
    end)
  end)
end)

describe("pub/sub and queue groups", function()
  it("fans a pubsub act out to every plain subscriber", function()
    testing.run(function()
      local topic = testing.topic("news")
      local got, all = {}, testing.future()
      local insts = {}
      for k = 1, 3 do
        local s = testing.new()
        s:add({ topic = topic, pubsub_ = true }, function(req)
          got[#got + 1] = k
          if #got == 3 then all:set() end
        end)
        s:ready()
        insts[k] = s
      end
      local c = testing.new()
      c:ready()
      local res, err = c:act { topic = topic, pubsub_ = true, n = 1 }
      assert.is_nil(err)
      assert.is_nil(res)
      local _, why = all:wait(5000)
      assert.is_nil(why)
      assert.equal(3, #insts)
      table.sort(got)
      assert.same({ 1, 2, 3 }, got)
    end)
  end)

  it("gives a request on a queue-group topic to exactly one instance", function()
    testing.run(function()
      local topic = testing.topic("work")
      local calls = { 0, 0, 0 }
      for k = 1, 3 do
        local s = testing.new()
        s:add({ topic = topic }, function() calls[k] = calls[k] + 1; return k end)
        s:ready()
      end
      local c = testing.new()
      c:ready()
      for _ = 1, 30 do assert(c:act { topic = topic }) end
      -- Every request was answered once: 30 handler calls in all.
      assert.equal(30, calls[1] + calls[2] + calls[3])
    end)
  end)

  it("acts with a callback outside a coroutine without yielding", function()
    testing.run(function()
      local topic = testing.topic("cb")
      local s = testing.new()
      s:add({ topic = topic }, function(req) return req.x end)
      s:ready()
      local c = testing.new()
      c:ready()
      local f = testing.future()
      local calls = 0
      -- A plain function call chain, no coroutine involved in the act itself.
      local returned = c:act({ topic = topic, x = "y" }, function(err, res)
        calls = calls + 1
        f:set(err, res)
      end)
      -- It returns the act's context at once (ctx.sid ends it early).
      assert.is_number(returned.sid)
      local err, res = f:wait(5000)
      assert.is_nil(err)
      assert.equal("y", res)
      assert.equal(1, calls)
    end)
  end)
end)

describe("errors", function()
  it("gives TimeoutError after timeout$ and nothing after it", function()
    testing.run(function()
      local topic = testing.topic("slow")
      local s = testing.new()
      local release = testing.future()
      s:add({ topic = topic }, function() release:wait(5000); return "late" end)
      s:ready()
      local c = testing.new()
      c:ready()
      local calls, first = 0, testing.future()
      c:act({ topic = topic, ["timeout$"] = 50 }, function(err, res)
        calls = calls + 1
        if calls == 1 then first:set(err, res) end
      end)
      local err, res = first:wait(5000)
      assert.is_nil(res)
      assert.is_true(Hemera.errors.TimeoutError:is(err))
      assert.equal("Client timeout", err.message)
      assert.is_false(err.isServer)
      -- Let the late reply happen, then prove it was dropped and counted.
      release:set()
      local probe = testing.new()
      s:add({ topic = topic .. ".probe" }, function() return 1 end)
      probe:ready()
      local late
      for _ = 1, 100 do
        assert(c:act { topic = topic .. ".probe" })
        late = c:stats().late_replies
        if late == 1 then break end
      end
      assert.equal(1, late)
      assert.equal(1, calls)
    end)
  end)

  it("turns a handler error into an error reply with name, message and code", function()
    testing.run(function()
      local topic = testing.topic("err")
      local s = testing.new { name = "svc-err" }
      s:add({ topic = topic, cmd = "returned" }, function()
        return nil, { name = "Unauthorized", message = "nope", code = 401 }
      end)
      s:add({ topic = topic, cmd = "raised" }, function()
        error(Hemera.createError("Forbidden")("no way", { code = 403 }))
      end)
      s:add({ topic = topic, cmd = "string" }, function() error("plain failure", 0) end)
      s:add({ topic = topic, cmd = "bug" }, function() local x = nil; return x.y end)
      s:ready()
      local c = testing.new()
      c:ready()
      local _, e1 = c:act { topic = topic, cmd = "returned" }
      assert.equal("Unauthorized", e1.name)
      assert.equal("nope", e1.message)
      assert.equal(401, e1.code)
      assert.equal("svc-err", e1.hops[1].app)
      assert.equal("Unauthorized: nope (code 401)", tostring(e1))
      local _, e2 = c:act { topic = topic, cmd = "raised" }
      assert.equal("Forbidden", e2.name)
      assert.equal(403, e2.code)
      assert.is_true(Hemera.createError("Forbidden"):is(e2))
      local _, e3 = c:act { topic = topic, cmd = "string" }
      assert.equal("Error", e3.name)
      assert.equal("plain failure", e3.message)
      local _, e4 = c:act { topic = topic, cmd = "bug" }
      -- Stacks and script positions stay home by default (errio.stack).
      assert.equal("attempt to index a nil value (local 'x')", e4.message)
      assert.is_nil(e4.stack)
    end)
  end)

  it("sends stacks and script positions only with errio.stack = true", function()
    testing.run(function()
      local topic = testing.topic("errstack")
      local s = testing.new { errio = { stack = true } }
      s:add({ topic = topic, cmd = "bug" }, function() local x = nil; return x.y end)
      s:ready()
      local c = testing.new()
      c:ready()
      local _, e = c:act { topic = topic, cmd = "bug" }
      assert.matches("foundation_spec.lua:%d+: attempt to index", e.message)
      assert.matches("stack traceback", e.stack)
    end)
  end)

  it("gives PatternNotFound for an unknown pattern", function()
    testing.run(function()
      local topic = testing.topic("nf")
      local s = testing.new { name = "svc-nf" }
      s:add({ topic = topic, cmd = "here" }, function() return 1 end)
      s:ready()
      local c = testing.new()
      c:ready()
      local res, err = c:act { topic = topic, cmd = "nothere" }
      assert.is_nil(res)
      assert.is_true(Hemera.errors.PatternNotFound:is(err))
      assert.equal("No action found for this pattern", err.message)
      assert.equal("svc-nf", err.app)
      assert.is_true(err.isServer)
      assert.equal("cmd:nothere,topic:" .. topic, err.pattern)
    end)
  end)
end)

describe("numbers", function()
  it("round-trips 2^53, -2^53, 0.1+0.2 and 1e300 exactly", function()
    testing.run(function()
      local topic = testing.topic("num")
      local s = testing.new()
      s:add({ topic = topic }, function(req) return req.v end)
      s:ready()
      local c = testing.new()
      c:ready()
      for _, v in ipairs { 2^53, -2^53, 9007199254740992, -9007199254740992, 0.1 + 0.2, 1e300,
                           math.maxinteger, math.mininteger, 123456789012345, -0.0, 5e-324 } do
        local res = assert(c:act { topic = topic, v = v })
        assert.equal(v, res)
        -- JSON has one number type: only integral floats may come back as integers.
        if math.type(v) == "integer" or v ~= math.floor(v) then
          assert.equal(math.type(v), math.type(res))
        end
      end
    end)
  end)
end)

describe("options and lifecycle", function()
  it("accepts $ options as written on the wire and as name_", function()
    testing.run(function()
      local topic = testing.topic("opts")
      local s = testing.new()
      s:add({ topic = topic }, function(req, ctx) return { meta = ctx.meta, delegate = ctx.delegate, req = req } end)
      s:ready()
      local c = testing.new()
      c:ready()
      local r1 = assert(c:act { topic = topic, ["meta$"] = { a = 1 }, ["delegate$"] = { d = 2 } })
      local r2 = assert(c:act { topic = topic, meta_ = { a = 1 }, delegate_ = { d = 2 } })
      assert.same(r1, r2)
      assert.same({ a = 1 }, r1.meta)
      assert.same({ d = 2 }, r1.delegate)
      assert.same({ topic = topic }, r1.req) -- no $ key on the wire
      local r3 = assert(c:act(("topic:%s,timeout$:500"):format(topic)))
      assert.same({ topic = topic }, r3.req)
    end)
  end)

  it("removes a topic and lists actions", function()
    testing.run(function()
      local topic = testing.topic("rm")
      local s = testing.new()
      s:add({ topic = topic, cmd = "a" }, function() return "a" end)
      s:add({ topic = topic, cmd = "b" }, function() return "b" end)
      s:ready()
      assert.equal(2, #s:list())
      assert.equal(1, #s:list { topic = topic, cmd = "a" })
      assert.is_true(s:remove(topic))
      assert.is_false(s:remove(topic))
      assert.equal(0, #s:list())
      local c = testing.new()
      c:ready()
      local _, err = c:act { topic = topic, cmd = "a", timeout_ = 100 }
      assert.is_true(Hemera.errors.TimeoutError:is(err))
    end)
  end)

  it("refuses act outside a coroutine without a callback, and a second ready", function()
    local c = testing.new()
    assert.has_error(function() c:act { topic = "x" } end)
    local ok, err = pcall(c.add, c, { cmd = "x" }, function() end)
    assert.is_false(ok)
    assert.equal("Topic is required and must be from type string", err.message)
    testing.run(function()
      c:ready()
      local rok, rerr = pcall(c.ready, c)
      assert.is_false(rok)
      assert.equal("Hemera was already bootstraped", rerr.message)
    end)
  end)

  it("fails ready with a clear error when NATS is not there", function()
    testing.run(function()
      local c = Hemera.new { servers = "nats://127.0.0.1:1" }
      local ok, err = c:ready()
      assert.is_nil(ok)
      assert.equal("CONN_ERR", err.code)
      assert.matches("could not connect to NATS %(nats://127.0.0.1:1%)", err.message)
    end)
  end)

  it("validates options with the key, the expected type and the value", function()
    local ok, err = pcall(Hemera.new, { timeout = "soon" })
    assert.is_false(ok)
    assert.matches("timeout", err.message)
    assert.matches("expected integer, got string %(soon%)", err.message)
    ok, err = pcall(Hemera.new, { tiemout = 1 })
    assert.is_false(ok)
    assert.matches("tiemout", err.message)
  end)

  it("close lets a running handler finish and send its reply", function()
    testing.run(function()
      local topic = testing.topic("drain")
      local s = testing.new()
      local started = testing.future()
      s:add({ topic = topic }, function()
        started:set()
        Hemera.sleep(50)
        return "finished"
      end)
      s:ready()
      local c = testing.new()
      c:ready()
      local got = testing.future()
      c:act({ topic = topic }, function(err, res) got:set(err, res) end)
      started:wait(5000)
      local closed = testing.future()
      s:close(function() closed:set(true) end)
      local err, res = got:wait(5000)
      assert.is_nil(err)
      assert.equal("finished", res)
      assert.is_true(closed:wait(5000))
    end)
  end)
end)
