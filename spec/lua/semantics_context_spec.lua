-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/metadata.spec.js,
-- delegate.spec.js, context.spec.js and tracing.spec.js.
-- Node's `this` in an act callback is the act context: here the third value
-- act returns (ctx), whose ctx:act makes the nested call.
local testing = require "hemera.testing"

describe("metadata.spec.js", function()
  it("passes metadata", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local inner = {}
      hemera:add({ topic = topic, cmd = "sub" }, function(req) return { result = req.a - req.b } end)
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        inner.a_in_handler = ctx.meta.a
        local resp, err, actx = ctx:act { topic = topic, cmd = "sub", a = 1, b = 2, meta_ = { b = 33 } }
        inner.err = err
        inner.a, inner.b = actx.meta.a, actx.meta.b
        return { result = resp.result }
      end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "add", a = 1, b = 2, meta_ = { a = "test" } }
      assert.is_nil(err)
      assert.equal("test", inner.a_in_handler)
      assert.is_nil(inner.err)
      assert.equal("test", inner.a)
      assert.equal(33, inner.b)
      assert.equal("test", ctx.meta.a)
      local _, err2, ctx2 = ctx:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err2)
      assert.equal("test", ctx2.meta.a)
    end)
  end)

  it("updates metadata", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "sub" }, function(req) return { result = req.a - req.b } end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "sub", a = 2, b = 1, meta_ = { a = "test" } }
      assert.is_nil(err)
      assert.equal("test", ctx.meta.a)
      local _, err2, ctx2 = ctx:act { topic = topic, cmd = "sub", a = 1, b = 2, meta_ = { a = "different" } }
      assert.is_nil(err2)
      assert.equal("different", ctx2.meta.a)
    end)
  end)

  it("sends back the handler's changes to meta", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic }, function(req, ctx) ctx.meta.fromServer = true end)
      local _, err, ctx = hemera:act { topic = topic, meta_ = { a = 1 } }
      assert.is_nil(err)
      assert.same({ a = 1, fromServer = true }, ctx.meta)
    end)
  end)

  it("does not keep meta$ of one root act for later root acts (our decision)", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local seen = {}
      hemera:add({ topic = topic }, function(req, ctx) seen[#seen + 1] = ctx.meta.token end)
      assert.is_nil(select(2, hemera:act { topic = topic, meta_ = { token = "abc" } }))
      assert.is_nil(select(2, hemera:act { topic = topic }))
      assert.equal("abc", seen[1])
      assert.is_nil(seen[2])
    end)
  end)
end)

describe("delegate.spec.js", function()
  it("passes delegate$ data only to the next hop", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local inner = {}
      hemera:add({ topic = topic, cmd = "sub" }, function(req, ctx) inner.sub = ctx.delegate.name end)
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        inner.add = ctx.delegate.name
        -- Hemera's test acts from the root instance here; from ctx:act the
        -- delegate is not inherited either.
        local _, err, actx = hemera:act { topic = topic, cmd = "sub", a = 1, b = 2 }
        inner.err, inner.root_delegate = err, actx.delegate.name
        local _, err2, actx2 = ctx:act { topic = topic, cmd = "sub" }
        inner.err2, inner.ctx_delegate = err2, actx2.delegate.name
      end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "add", a = 1, b = 2, delegate_ = { name = "test" } }
      assert.is_nil(err)
      assert.equal("test", ctx.delegate.name)
      assert.equal("test", inner.add)
      assert.is_nil(inner.err)
      assert.is_nil(inner.root_delegate)
      assert.is_nil(inner.err2)
      assert.is_nil(inner.ctx_delegate)
      assert.is_nil(inner.sub)
    end)
  end)
end)

describe("context.spec.js", function()
  it("creates a context$ inherited by nested acts and never sent", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local server_context = {}
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        server_context[#server_context + 1] = ctx.context
        return { result = req.a + req.b }
      end)
      local res, err, ctx = hemera:act { topic = topic, cmd = "add", a = 1, b = 2, context_ = "test" }
      assert.is_nil(err)
      assert.equal("test", ctx.context)
      assert.equal(3, res.result)
      local res2, err2, ctx2 = ctx:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err2)
      assert.equal("test", ctx2.context)
      assert.equal(3, res2.result)
      -- Local only: the server never sees it.
      assert.are_not.equal("test", server_context[1])
      assert.are_not.equal("test", server_context[2])
    end)
  end)
end)

describe("tracing.spec.js", function()
  it("sets the correct trace$ context along a call chain", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      hemera:ready()
      local traceId
      local inner = {}
      hemera:add({ topic = topic, cmd = "add" }, function(req, ctx)
        assert.is_string(ctx.trace.traceId)
        assert.is_string(ctx.trace.spanId)
        return req.a + req.b
      end)
      hemera:add({ topic = topic, cmd = "sub" }, function(req, ctx)
        local r1 = ctx.trace.spanId
        inner.traceId, inner.spanId, inner.parentSpanId = ctx.trace.traceId, ctx.trace.spanId, ctx.trace.parentSpanId
        ctx:act({ topic = topic, cmd = "add", a = 1, b = 2 }, function() end)
        local _, err, actx = ctx:act { topic = topic, cmd = "add", a = 1, b = 2 }
        local r2 = actx.trace.spanId
        inner.e1, inner.p1, inner.t1, inner.s1, inner.ts1 = err, actx.trace.parentSpanId, actx.trace.traceId,
          actx.trace.spanId, actx.trace.timestamp
        local _, err2, actx2 = actx:act { topic = topic, cmd = "add", a = 10, b = 2 }
        inner.e2, inner.p2, inner.t2, inner.s2, inner.ts2 = err2, actx2.trace.parentSpanId, actx2.trace.traceId,
          actx2.trace.spanId, actx2.trace.timestamp
        inner.r1, inner.r2 = r1, r2
        return req.a - req.b
      end)
      local resp, err, ctx = hemera:act { topic = topic, cmd = "add", a = 1, b = 2 }
      assert.is_nil(err)
      local r1 = ctx.trace.spanId
      assert.is_string(ctx.trace.traceId)
      assert.is_string(ctx.trace.spanId)
      assert.is_number(ctx.trace.timestamp)
      traceId = ctx.trace.traceId
      local _, err2, ctx2 = ctx:act { topic = topic, cmd = "sub", a = 1, b = resp }
      assert.is_nil(err2)
      assert.equal(r1, ctx2.trace.parentSpanId)
      assert.equal(traceId, ctx2.trace.traceId)
      assert.is_string(ctx2.trace.spanId)
      assert.is_number(ctx2.trace.timestamp)
      -- Inside math.sub.
      assert.is_string(inner.traceId)
      assert.is_string(inner.spanId)
      assert.is_string(inner.parentSpanId)
      assert.is_nil(inner.e1)
      assert.equal(inner.r1, inner.p1)
      assert.equal(traceId, inner.t1)
      assert.is_string(inner.s1)
      assert.is_number(inner.ts1)
      assert.is_nil(inner.e2)
      assert.equal(inner.r2, inner.p2)
      assert.is_string(inner.p2)
      assert.equal(traceId, inner.t2)
      assert.is_string(inner.s2)
      assert.is_number(inner.ts2)
    end)
  end)

  it("gives the correct tracing information to the hooks", function()
    testing.run(function()
      local topic = testing.topic("math")
      local hemera = testing.new()
      local seen = {}
      local method = "a:1,b:2,cmd:add,topic:" .. topic
      hemera:ext("onRequest", function(ctx)
        seen.onRequest = { ctx.trace.service, ctx.trace.method, ctx.trace.traceId, ctx.trace.parentSpanId,
                           ctx.trace.spanId }
      end)
      hemera:ext("onSend", function(ctx) seen.onSend = { ctx.trace.service, ctx.trace.method } end)
      hemera:ext("onAct", function(ctx)
        seen.onAct = { ctx.trace.service, ctx.trace.method, ctx.trace.traceId, ctx.trace.parentSpanId,
                       ctx.trace.spanId }
      end)
      hemera:ext("onActFinished", function(ctx) seen.onActFinished = { ctx.trace.service, ctx.trace.method } end)
      hemera:ready()
      hemera:add({ cmd = "add", topic = topic }, function(req) return req.a + req.b end)
      local res, err = hemera:act { cmd = "add", topic = topic, a = 1, b = 2 }
      assert.is_nil(err)
      assert.equal(3, res)
      for _, name in ipairs { "onRequest", "onAct" } do
        local s = seen[name]
        assert.equal(topic, s[1])
        assert.equal(method, s[2])
        assert.is_not_nil(s[3])
        assert.is_nil(s[4])
        assert.is_not_nil(s[5])
      end
      for _, name in ipairs { "onSend", "onActFinished" } do
        assert.equal(topic, seen[name][1])
        assert.equal(method, seen[name][2])
      end
    end)
  end)

  it("extracts the trace method from the pattern", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "CMD" }, function() end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "CMD", a = { b = 1 } }
      assert.is_nil(err)
      assert.equal("cmd:CMD,topic:" .. topic, ctx.trace.method)
    end)
  end)

  it("gets the duration from trace$", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "CMD" }, function() end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "CMD", a = { b = 1 } }
      assert.is_nil(err)
      assert.is_number(ctx.trace.duration)
      assert.is_true(ctx.trace.duration >= 0)
    end)
  end)

  it("gives the reply's parts to a context whose onAct hook read them first", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ext("onAct", function(ctx)
        assert.is_nil(ctx.trace.duration)
        assert.is_nil(ctx.meta.fromServer)
      end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "CMD" }, function(_, ctx) ctx.meta.fromServer = 1 end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "CMD" }
      assert.is_nil(err)
      assert.is_number(ctx.trace.duration)
      assert.equal(1, ctx.meta.fromServer)
    end)
  end)

  it("passes requestId$ from the pattern in concurrent calls", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      local server_ids = {}
      hemera:add({ topic = topic, cmd = "CMD" }, function(req, ctx) server_ids[ctx.request.id] = true end)
      local a, b = testing.future(), testing.future()
      hemera:act({ topic = topic, cmd = "CMD", requestId_ = "123456789" }, function(err, _, ctx) a:set(err, ctx) end)
      hemera:act({ topic = topic, cmd = "CMD", requestId_ = "123456" }, function(err, _, ctx) b:set(err, ctx) end)
      local erra, ctxa = a:wait(2000)
      local errb, ctxb = b:wait(2000)
      assert.is_nil(erra)
      assert.is_nil(errb)
      assert.equal("123456789", ctxa.request.id)
      assert.equal("123456", ctxb.request.id)
      assert.is_true(server_ids["123456789"])
      assert.is_true(server_ids["123456"])
    end)
  end)

  it("overwrites trace$ information with the pattern", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      local seen
      hemera:ext("onAct", function(ctx)
        seen = { ctx.trace.spanId, ctx.trace.traceId, ctx.trace.parentSpanId }
      end)
      hemera:ready()
      hemera:add({ topic = topic, cmd = "CMD" }, function() end)
      local _, err, ctx = hemera:act {
        topic = topic, cmd = "CMD", trace_ = { parentSpanId = 22, spanId = 1, traceId = 2 },
      }
      assert.is_nil(err)
      assert.same({ 1, 2, 22 }, seen)
      assert.equal(22, ctx.trace.parentSpanId)
      assert.equal("cmd:CMD,topic:" .. topic, ctx.trace.method)
    end)
  end)

  it("takes only spanId, traceId and parentSpanId from trace$", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      local server_trace
      hemera:add({ topic = topic }, function(req, ctx) server_trace = ctx.trace end)
      local _, err = hemera:act { topic = topic, trace_ = { spanId = "S", traceId = "T", extra = "x" } }
      assert.is_nil(err)
      assert.equal("S", server_trace.spanId)
      assert.equal("T", server_trace.traceId)
      assert.is_nil(server_trace.extra)
      assert.is_nil(server_trace.parentSpanId)
    end)
  end)

  it("gets the correct parentSpanId information", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = topic, cmd = "CMD" }, function() end)
      local _, err, ctx = hemera:act { topic = topic, cmd = "CMD" }
      assert.is_nil(err)
      local parent = ctx.trace
      local _, err2, ctx2 = ctx:act { topic = topic, cmd = "CMD" }
      assert.is_nil(err2)
      assert.equal(parent.spanId, ctx2.trace.parentSpanId)
    end)
  end)

  it("gets the correct tracing information inside add", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      local inner = {}
      hemera:add({ topic = topic, cmd = "CMD2" }, function(req, ctx)
        local parent = ctx.trace
        inner.service, inner.method = parent.service, parent.method
        local _, err, actx = ctx:act { topic = topic, cmd = "CMD" }
        inner.err = err
        inner.n_service, inner.n_method = actx.trace.service, actx.trace.method
        inner.same_span = actx.trace.spanId == parent.spanId
        inner.same_trace = actx.trace.traceId == parent.traceId
        inner.parent_is_span = actx.trace.parentSpanId == parent.spanId
        return { spanId = actx.trace.spanId, traceId = actx.trace.traceId }
      end)
      hemera:add({ topic = topic, cmd = "CMD" }, function() end)
      local resp, err, ctx = hemera:act { topic = topic, cmd = "CMD2" }
      assert.is_nil(err)
      assert.equal(topic, inner.service)
      assert.equal("cmd:CMD2,topic:" .. topic, inner.method)
      assert.is_nil(inner.err)
      assert.equal(topic, inner.n_service)
      assert.equal("cmd:CMD,topic:" .. topic, inner.n_method)
      assert.is_true(inner.same_span)
      assert.is_true(inner.same_trace)
      assert.is_true(inner.parent_is_span)
      assert.equal(topic, ctx.trace.service)
      assert.equal("cmd:CMD2,topic:" .. topic, ctx.trace.method)
      assert.equal(resp.spanId, ctx.trace.spanId)
      assert.equal(resp.traceId, ctx.trace.traceId)
      assert.is_nil(ctx.trace.parentSpanId)
      assert.is_number(ctx.trace.duration)
    end)
  end)
end)
