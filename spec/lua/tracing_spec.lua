-- hemera.tracing against real parts: spans POSTed to a Node collector on
-- loopback (spec/tracing/receiver.js) that decodes OTLP with the protobuf
-- definitions of @opentelemetry/otlp-transformer 0.212 and compares Zipkin
-- v2 spans with npm zipkin 0.22's encoder; W3C trace context to and from
-- nats.js 2.x (spec/tracing/natsjs.js); a collector that is down.
local Hemera = require "hemera"
local core = require "hemera.core"
local helper = require "hemera.testing"
local S = require "interop.support"
local N = require "natsjs_support"
local tracing = require "hemera.tracing"
local metrics = require "hemera.metrics"

local setup_done = false
local function setup()
  if setup_done then return end
  N.setup() -- nats.js, and the log directory
  local log = os.tmpname()
  local ok = os.execute(("%s/tools/tracing-setup.sh %s >%s 2>&1"):format(S.shell_quote(S.src),
    S.shell_quote(S.build), S.shell_quote(log)))
  local f = io.open(log)
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  assert(ok, "tools/tracing-setup.sh failed:\n" .. text)
  setup_done = true
end

local function node(script, args, label)
  local saved_dir, saved_modules = S.node_dir, S.modules
  S.node_dir = S.src .. "/spec/tracing"
  S.modules = S.build .. "/tracing/node_modules:" .. S.build .. "/natsjs/node_modules"
  local ok, proc = pcall(S.spawn_node, script, args, label)
  S.node_dir, S.modules = saved_dir, saved_modules
  assert(ok, proc)
  return proc
end

-- Starts the receiver; returns its base URL and spans(n), which waits
-- until n spans have come (in any number of batches) and returns them.
local function receiver()
  local conn = S.raw()
  local subject, ready_subject = "tracing.batch." .. core.nuid(), "tracing.ready." .. core.nuid()
  local spans, problems, want, waiter = {}, {}, math.huge, nil
  conn:subscribe(subject, nil, 0, function(_, _, data)
    local b = Hemera.decode(data)
    for _, p in ipairs(b.problems) do problems[#problems + 1] = p end
    for _, s in ipairs(b.spans) do s.format = b.format; spans[#spans + 1] = s end
    if waiter and #spans >= want then waiter:set(true) end
  end)
  local ready = S.expect_message(conn, ready_subject)
  local proc = node("receiver.js", { S.url, subject, ready_subject }, "tracing-receiver")
  local data, why = ready:wait(30000)
  assert(data, ("receiver did not start (%s):\n%s"):format(tostring(why), S.read_log(proc)))
  local base = ("http://127.0.0.1:%d"):format(Hemera.decode(data).port)
  local function wait_spans(n)
    if #spans < n then
      want, waiter = n, core.future()
      local ok, werr = waiter:wait(20000)
      assert(ok, ("%d of %d spans came (%s); receiver log:\n%s"):format(#spans, n, tostring(werr), S.read_log(proc)))
    end
    assert.are.same({}, problems)
    return spans
  end
  return base, wait_spans
end

local function by_name_kind(spans)
  local t = {}
  for _, s in ipairs(spans) do
    local kind = s.kind or ("SPAN_KIND_" .. s.kind)
    t[s.name .. "/" .. kind] = s
  end
  return t
end

-- A Lua client -> service A -> service B, B failing on one of two calls.
-- Returns the topics of A and B.
local function chain(opts_of)
  local topic, btopic = helper.topic("trc"), helper.topic("trcb")
  local a = helper.new { name = "tr-a" }
  local b = helper.new { name = "tr-b" }
  local c = helper.new { name = "tr-client" }
  for _, h in ipairs { a, b, c } do h:use(tracing, opts_of()) end
  a:add({ topic = topic, cmd = "a" }, function(_, ctx)
    local r = assert(ctx:act { topic = btopic, cmd = "ok" })
    local _, e = ctx:act { topic = btopic, cmd = "boom" }
    return { r = r, e = e and e.name }
  end)
  b:add({ topic = btopic, cmd = "ok" }, function() return 1 end)
  b:add({ topic = btopic, cmd = "boom" }, function()
    return nil, Hemera.createError("BoomError")("it broke")
  end)
  a:ready(); b:ready(); c:ready()
  local r = assert(c:act { topic = topic, cmd = "a" })
  assert.are.same({ r = 1, e = "BoomError" }, r)
  c:close(); a:close(); b:close()
  return topic, btopic
end

describe("hemera.tracing", function()
  after_each(function() S.kill_all() end)

  it("exports one OTLP trace across client -> service -> service, parents right, the error marked", function()
    setup()
    S.run(function()
      local base, wait_spans = receiver()
      local topic, btopic = chain(function() return { otlp = base .. "/v1/traces", sampler = "always", interval = 20 } end)
      local spans = wait_spans(6)
      assert.are.equal(6, #spans)
      local t = by_name_kind(spans)
      local m = function(cmd) return ("cmd:%s,topic:%s"):format(cmd, cmd == "a" and topic or btopic) end
      local root = t[m("a") .. "/SPAN_KIND_CLIENT"]
      local sa = t[m("a") .. "/SPAN_KIND_SERVER"]
      local cok, sok = t[m("ok") .. "/SPAN_KIND_CLIENT"], t[m("ok") .. "/SPAN_KIND_SERVER"]
      local cboom, sboom = t[m("boom") .. "/SPAN_KIND_CLIENT"], t[m("boom") .. "/SPAN_KIND_SERVER"]
      for _, s in ipairs { root, sa, cok, sok, cboom, sboom } do
        assert.are.equal(root.traceId, s.traceId)
        assert.are.equal(32, #s.traceId)
        assert.are.equal(s.name:match("topic:(.*)$"), s.attributes["hemera.topic"])
        assert.are.equal(s.name, s.attributes["hemera.pattern"])
        assert.are.equal(false, s.attributes["hemera.pubsub"])
        assert.are.equal("hemera", s.attributes["rpc.system"])
        assert.are.equal("nats", s.attributes["messaging.system"])
      end
      assert.are.equal(Hemera.null, root.parentSpanId)
      assert.are.equal(root.spanId, sa.parentSpanId)
      assert.are.equal(sa.spanId, cok.parentSpanId)
      assert.are.equal(cok.spanId, sok.parentSpanId)
      assert.are.equal(sa.spanId, cboom.parentSpanId)
      assert.are.equal(cboom.spanId, sboom.parentSpanId)
      assert.are.equal("tr-client", root.service)
      assert.are.equal("tr-a", sa.service)
      assert.are.equal("tr-a", cok.service)
      assert.are.equal("tr-b", sboom.service)
      -- Hemera's own trace id, kept for finding the trace from a log line.
      assert.are.equal(core.trace_hex(root.attributes["hemera.trace_id"], 32), root.traceId)
      for _, s in ipairs { sboom, cboom } do
        assert.are.equal(2, s.status.code) -- STATUS_CODE_ERROR
        assert.are.equal("BoomError: it broke", s.status.message)
        assert.are.equal("BoomError", s.attributes["error.type"])
      end
      for _, s in ipairs { root, sa, cok, sok } do
        assert.are.equal(Hemera.null, s.status)
      end
    end)
  end)

  it("sends Zipkin v2 spans that match npm zipkin 0.22's encoding of the same spans", function()
    setup()
    S.run(function()
      local base, wait_spans = receiver()
      local topic, btopic = chain(function() return { zipkin = base .. "/api/v2/spans", sampler = "always", interval = 20 } end)
      local spans = wait_spans(6) -- the receiver compares each span with npm zipkin's
      local ids, kinds = {}, {}
      for _, s in ipairs(spans) do
        ids[s.id] = s
        kinds[s.kind] = (kinds[s.kind] or 0) + 1
        assert.is_truthy(s.tags["hemera.topic"] == topic or s.tags["hemera.topic"] == btopic)
      end
      assert.are.same({ CLIENT = 3, SERVER = 3 }, kinds)
      local errors = 0
      for _, s in ipairs(spans) do
        if s.tags.error then
          errors = errors + 1
          assert.are.equal("BoomError: it broke", s.tags.error)
        end
        if s.parentId then assert.is_truthy(ids[s.parentId], "parent of " .. s.name .. " is exported") end
      end
      assert.are.equal(2, errors)
    end)
  end)

  it("continues the trace of a nats.js request's traceparent header, into nested acts with its tracestate", function()
    setup()
    S.run(function()
      local base, wait_spans = receiver()
      local topic, btopic = helper.topic("trw3c"), helper.topic("trw3cb")
      local a = helper.new { name = "tr-w3c-a" }
      local b = helper.new { name = "tr-w3c-b" }
      for _, h in ipairs { a, b } do h:use(tracing, { otlp = base .. "/v1/traces", interval = 20, ratio = 0 }) end
      a:add({ topic = topic, cmd = "a" }, function(_, ctx) return ctx:act { topic = btopic, cmd = "b" } end)
      -- The tracestate that came with the request goes on with nested acts.
      b:add({ topic = btopic, cmd = "b" }, function(_, ctx) return { n = 42, ts = rawget(ctx, "_tracestate") } end)
      a:ready(); b:ready()
      local tid, psid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
      local conn = S.raw()
      local res_subject = "tracing.result." .. core.nuid()
      local res = S.expect_message(conn, res_subject)
      -- Sampled by the caller: followed although this service's ratio is 0.
      local proc = node("natsjs.js", { "request", S.url, topic, Hemera.encode { pattern = { topic = topic, cmd = "a" } },
                                       ("00-%s-%s-01"):format(tid, psid), res_subject }, "tracing-natsjs")
      local data, why = res:wait(20000)
      assert(data, ("nats.js request failed (%s):\n%s"):format(tostring(why), S.read_log(proc)))
      assert.are.same({ n = 42, ts = "vendor=natsjs" }, Hemera.decode(data).reply.result)
      a:close(); b:close()
      local t = by_name_kind(wait_spans(3))
      local sa = t[("cmd:a,topic:%s/SPAN_KIND_SERVER"):format(topic)]
      local cb = t[("cmd:b,topic:%s/SPAN_KIND_CLIENT"):format(btopic)]
      local sb = t[("cmd:b,topic:%s/SPAN_KIND_SERVER"):format(btopic)]
      for _, s in ipairs { sa, cb, sb } do assert.are.equal(tid, s.traceId) end
      assert.are.equal(psid, sa.parentSpanId)
      assert.are.equal(sa.spanId, cb.parentSpanId)
      assert.are.equal(cb.spanId, sb.parentSpanId)
    end)
  end)

  it("sends traceparent with every act, read by a nats.js subscriber (no tracestate at the root)", function()
    setup()
    S.run(function()
      local base, wait_spans = receiver()
      local subject = helper.topic("trsub")
      local conn = S.raw()
      local ready_subject, res_subject = "tracing.ready." .. core.nuid(), "tracing.result." .. core.nuid()
      local ready, res = S.expect_message(conn, ready_subject), S.expect_message(conn, res_subject)
      local proc = node("natsjs.js", { "listen", S.url, subject, ready_subject, res_subject }, "tracing-natsjs")
      assert(ready:wait(20000), S.read_log(proc))
      local c = helper.new { name = "tr-act" }
      c:use(tracing, { otlp = base .. "/v1/traces", sampler = "always", interval = 20 })
      c:ready()
      local r, err, actx = c:act { topic = subject, cmd = "x" }
      assert.is_nil(err)
      assert.is_true(r)
      local got = Hemera.decode(assert(res:wait(20000)))
      c:close()
      local span = wait_spans(1)[1]
      assert.are.equal(("00-%s-%s-01"):format(span.traceId, span.spanId), got.traceparent)
      assert.are.equal(core.trace_hex(actx.trace.traceId, 32), span.traceId)
      assert.are.equal(Hemera.null, got.tracestate)
    end)
  end)
end)

describe("hemera.tracing, unsampled", function()
  it("still sends traceparent (flag 00) and exports nothing", function()
    helper.run(function()
      local topic = helper.topic("trnever")
      local url = "http://127.0.0.1:9/v1/traces" -- never reached: nothing is sampled
      local s = helper.new { name = "tr-never-s" }
      local c = helper.new { name = "tr-never-c" }
      s:use(tracing, { otlp = url, sampler = "never" })
      c:use(tracing, { otlp = url, sampler = "never" })
      s:add({ topic = topic }, function(_, ctx) return rawget(ctx, "_traceparent") end)
      s:ready(); c:ready()
      local tp, err, actx = c:act { topic = topic }
      assert.is_nil(err)
      local tid = core.trace_hex(actx.trace.traceId, 32)
      assert.is_truthy(tp:match("^00%-" .. tid .. "%-%x+%-00$"), tp)
      for _, h in ipairs { s, c } do
        local st = h.tracing.stats()
        assert.are.equal(0, st.queued + st.exported + st.dropped)
      end
      s:close(); c:close()
    end)
  end)
end)

describe("hemera.tracing with the collector down", function()
  it("serves every request, drops and counts the spans, and closes", function()
    helper.run(function()
      -- A port nothing listens on: take a free one and give it back.
      local probe = core.http_listen({ port = 0 }, function() return 200 end)
      local port = probe:port()
      probe:close()
      local topic = helper.topic("trdown")
      local s = helper.new { name = "tr-down" }
      s:use(metrics, { listen = "127.0.0.1:0" })
      s:use(tracing, { otlp = ("http://127.0.0.1:%d/v1/traces"):format(port), sampler = "always",
                       maxQueue = 4, batchSize = 2, interval = 5, timeout = 200 })
      s:add({ topic = topic }, function(req) return req.n end)
      s:ready()
      for k = 1, 50 do assert.are.equal(k, (s:act { topic = topic, n = k })) end
      local st = s.tracing.stats()
      -- 100 spans (a client and a server span per act): at most maxQueue
      -- wait, the rest were dropped, counted, or failed to go out.
      assert.is_true(st.dropped > 0)
      assert.is_true(st.dropped + st.queued + st.exported <= 100)
      assert.are.equal(0, st.exported)
      local text = s.metrics:render()
      local n = tonumber(text:match("\nhemera_spans_dropped_total (%d+)\n"))
      assert.is_true(n ~= nil and n > 0, text)
      s:close()
    end)
  end)

  it("refuses bad options, naming the option and the value", function()
    helper.run(function()
      local function fails(opts, pattern)
        local s = helper.new {}
        s:use(tracing, opts)
        local ok, err = s:ready()
        s:close()
        assert.is_nil(ok)
        assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
      end
      fails({ otlp = "https://collector:4318/v1/traces" }, "no https")
      fails({ otlp = "http://collector.example:4318/v1/traces" }, "numeric IP address")
      fails({ zipkin = "http://127.0.0.1:99999/api/v2/spans" }, "port must be from 1 to 65535")
      fails({}, "give 'otlp'")
      fails({ otlp = "http://127.0.0.1:4318/v1/traces", ratio = 2 }, "'ratio' of hemera.tracing: expected a number from 0 to 1, got 2")
      fails({ otlp = "http://127.0.0.1:4318/v1/traces", sampler = "some" }, "'sampler'")
      fails({ otlp = "http://127.0.0.1:4318/v1/traces", maxQueue = 0 }, "'maxQueue' must be an integer from 1")
      fails({ otlp = "http://127.0.0.1:4318/v1/traces", batchSize = 10, maxQueue = 5 }, "'batchSize' (10) must not be over 'maxQueue' (5)")
    end)
  end)
end)
