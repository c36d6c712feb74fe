-- hemera.tracing: one span per act (CLIENT) and per served request
-- (SERVER), exported as OTLP/HTTP JSON and/or Zipkin v2 JSON, and the W3C
-- trace context carried in NATS headers.
--
--   hemera:use(require "hemera.tracing", { otlp = "http://127.0.0.1:4318/v1/traces" })
--   hemera:use(require "hemera.tracing", { zipkin = "http://127.0.0.1:9411/api/v2/spans" })
--
-- Options: otlp, zipkin (URLs, one or both), sampler ("ratio" (default),
-- "always", "never"), ratio (0.1, hemera-zipkin's), parentBased (true: a
-- request whose traceparent says sampled or not is followed), maxQueue,
-- batchSize, interval, timeout, maxBackoff (core.tracer, hm_lua_tracing.c).
--
-- Ids (docs/architecture.md, "Tracing"): a Hemera traceId becomes the
-- 32-hex trace id as it is when it already is one (a trace that came in as
-- W3C), else its FNV-1a hash; span ids are our own, since Hemera reuses a
-- parent's spanId for its nested calls: CLIENT = hash("c:" .. requestId),
-- SERVER = hash("s:" .. requestId). The Hemera ids travel as the
-- attributes hemera.trace_id, hemera.span_id, hemera.parent_span_id and
-- hemera.request_id, so a span can be found from a Hemera log line.
--
-- The request path: four Lua hooks (onRequest, onResponse, onAct,
-- onActFinished) that compute ids and hand one finished span to C
-- (tracer:span); rendering and POSTing run on the loop, off the path. A
-- down collector only fills the buffer: spans are then dropped and
-- counted (hemera_spans_dropped_total when hemera.metrics is used first).

local core = require "hemera.core"
local errors = require "hemera.errors"

local trace_hex, trace_now, trace_sampled, hrtime = core.trace_hex, core.trace_now, core.trace_sampled, core.hrtime
local msg_arrived, trace_parts, floor = core.msg_arrived, core.trace_parts, math.floor

local function bad_option(name, expected, got)
  error(errors.HemeraError(("Invalid option '%s' of hemera.tracing: expected %s, got %s")
    :format(name, expected, type(got) == "string" and ("%q"):format(got) or tostring(got)), { option = name }), 4)
end

-- "00-<32 hex>-<16 hex>-<2 hex>" -> trace id, span id, sampled; nil for
-- anything else (W3C: such a header is ignored, the trace starts anew).
local function parse_traceparent(tp)
  local v, tid, sid, flags = tp:match("^(%x%x)%-(%x+)%-(%x+)%-(%x%x)")
  if not v or v == "ff" or #tid ~= 32 or #sid ~= 16 then return nil end
  tid, sid = tid:lower(), sid:lower()
  if tid == ("0"):rep(32) or sid == ("0"):rep(16) then return nil end
  return tid, sid, (tonumber(flags, 16) & 1) == 1
end

local function err_parts(e)
  if e == nil then return nil, nil end
  if type(e) == "table" then
    return tostring(e.name or "Error"), e.message ~= nil and tostring(e.message) or nil
  end
  return "Error", tostring(e)
end

local function register(scope, opts)
  local i = scope._i
  local sampler = opts.sampler
  if sampler ~= "ratio" and sampler ~= "always" and sampler ~= "never" then
    bad_option("sampler", '"ratio", "always" or "never"', sampler)
  end
  local ratio = opts.ratio
  if type(ratio) ~= "number" or ratio < 0 or ratio > 1 then bad_option("ratio", "a number from 0 to 1", ratio) end
  if sampler == "always" then ratio = 1 elseif sampler == "never" then ratio = 0 end
  local parent_based = opts.parentBased
  if type(parent_based) ~= "boolean" then bad_option("parentBased", "a boolean", parent_based) end
  local ok, tracer = pcall(core.tracer, { service = i.config.name, otlp = opts.otlp, zipkin = opts.zipkin,
    maxQueue = opts.maxQueue, batchSize = opts.batchSize, interval = opts.interval, timeout = opts.timeout,
    maxBackoff = opts.maxBackoff })
  if not ok then error(errors.HemeraError(tostring(tracer)), 3) end
  i.conn:trace_headers(true)

  -- Microseconds since the epoch of a core.hrtime() value.
  local offset = trace_now() - hrtime() * 1000
  local function epoch_us(ms) return floor(ms * 1000 + offset) end

  -- The server spans being served, by the Hemera spanId their nested acts
  -- name as parent (client.lua: a nested act's parentSpanId is its
  -- parent's spanId): {span id, sampled, tracestate}.
  local active = {}

  scope:ext("onRequest", function(ctx)
    -- The request's own ids, read without the context holding its trace
    -- and request (a held part is re-encoded into the reply, the others
    -- are copied from the request's bytes).
    local held = rawget(ctx, "trace")
    local htid, hsid, hpsid, method, rid, rtype
    local msg = rawget(ctx, "_msg")
    if held == nil and msg then
      htid, hsid, hpsid, method, rid, rtype = trace_parts(msg)
    else
      -- A custom codec (or a hook before us) made the parts already.
      local rq = ctx.request
      held = held or ctx.trace
      htid, hsid, hpsid, method = held.traceId, held.spanId, held.parentSpanId, held.method
      rid, rtype = rq.id, rq.type
    end
    if type(rid) ~= "string" then rid = nil end
    local sid = trace_hex(rid or core.nuid(), 16, "s:")
    local tp = rawget(ctx, "_traceparent")
    local ptid, pspan, psampled
    if tp then ptid, pspan, psampled = parse_traceparent(tp) end
    local tid, psid, sampled
    if type(htid) ~= "string" then
      if not ptid then return end
      -- A W3C trace and no Hemera one (a nats.js client, say): continue
      -- it, and let nested acts carry it in Hemera's ids as well.
      tid, psid = ptid, pspan
      local tr = ctx.trace
      tr.traceId, tr.spanId, tr.parentSpanId = ptid, sid, pspan
      htid, hsid, hpsid = ptid, sid, pspan
    else
      tid = trace_hex(htid, 32)
      -- The caller's CLIENT span has the same request id.
      psid = pspan or (rid and trace_hex(rid, 16, "c:")) or nil
      if ptid and ptid ~= tid then psampled = nil end
    end
    if parent_based and psampled ~= nil then sampled = psampled else sampled = trace_sampled(tid, ratio) end
    local a = { sid = sid, sampled = sampled, state = rawget(ctx, "_tracestate"), tid = tid, psid = psid,
                rid = rid, htid = htid, hsid = type(hsid) == "string" and hsid or nil,
                hpsid = type(hpsid) == "string" and hpsid or nil, method = method, pubsub = rtype == "pubsub" }
    rawset(ctx, "_tr", a)
    if a.hsid then active[a.hsid] = a end
  end)

  scope:ext("onResponse", function(ctx, reply)
    local a = rawget(ctx, "_tr")
    if not a then return end
    local key = a.hsid
    if key and active[key] == a then active[key] = nil end
    if not a.sampled then return end
    local msg = rawget(ctx, "_msg")
    local start = msg and msg_arrived(msg) or hrtime()
    local ename, emsg = err_parts(reply.error)
    local name = a.method
    if type(name) ~= "string" then
      local def = ctx.matchedAction
      name = def and core.method(def.pattern) or ctx.topic
    end
    tracer:span("server", name, ctx.topic, a.pubsub, a.tid, a.sid, a.psid,
      epoch_us(start), epoch_us(hrtime()), a.rid, a.htid, a.hsid, a.hpsid, ename, emsg)
  end)

  scope:ext("onAct", function(actx)
    local tid = trace_hex(actx._tid, 32)
    local sid = trace_hex(actx._rid, 16, "c:")
    local psid, sampled, state
    local up = actx._psid and active[actx._psid]
    if up then
      psid, sampled, state = up.sid, up.sampled, up.state
    else
      psid = actx._psid and trace_hex(actx._psid, 16) or nil
      sampled = trace_sampled(tid, ratio)
    end
    rawset(actx, "_tr", { tid = tid, sid = sid, psid = psid, sampled = sampled })
    rawset(actx, "_hdrs", { traceparent = ("00-%s-%s-%s"):format(tid, sid, sampled and "01" or "00"),
                            tracestate = state })
  end)

  scope:ext("onActFinished", function(actx)
    local a = rawget(actx, "_tr")
    if not a or not a.sampled then return end
    local ename, emsg = err_parts(actx.responseError)
    tracer:span("client", actx.method, actx._p.topic, actx._pubsub, a.tid, a.sid, a.psid,
      epoch_us(actx._ts), epoch_us(hrtime()), actx._rid, actx._tid, actx._sid, actx._psid or nil, ename, emsg)
  end)

  local metrics = scope.metrics
  if metrics and metrics.collector then
    local dropped = metrics:counter("hemera_spans_dropped_total",
      "Spans the tracing plugin dropped: its buffer was full, or a collector refused or missed their batch.")
    local seen = 0
    metrics:collector(function()
      local n = tracer:stats().dropped
      if n > seen then dropped:inc(n - seen); seen = n end
    end)
  end

  scope:ext("onClose", function()
    local done = core.future()
    tracer:close(function() done:set(true) end)
    done:wait((opts.timeout or 5000) + 1000)
  end)
  scope:decorate("tracing", { stats = function() return tracer:stats() end })
end

return {
  name = "hemera-tracing",
  scoped = false,
  options = { sampler = "ratio", ratio = 0.1, parentBased = true },
  register = register,
  parse_traceparent = parse_traceparent,
}
