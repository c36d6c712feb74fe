-- hemera.client: act and stream, in the order of Hemera v7 (spec §5.1):
-- build the message (meta, trace, request, recursion guard), onAct hooks,
-- encode, send; on each reply decode, onActFinished hooks, then the result.

local core = require "hemera.core"
local errors = require "hemera.errors"
local pattern = require "hemera.pattern"
local util = require "hemera.util"
local wire = require "hemera.wire"

local M = {}

local obj, copy, run_hooks = util.obj, util.copy, util.run_hooks
local hrtime, spawn, null = core.hrtime, core.spawn, core.null

-- A decoded trace may hold nulls (Hemera.null is truthy): none means
-- absent, as `null || x` is x in Node.
local function given(v) if v ~= null then return v end end

-- Replies to accept (nats 1.x `max`): expectedMessages$ or a numeric
-- maxMessages$; 0 means open-ended (-1 or 0 in Hemera's spelling).
local function max_replies(p)
  local expected, maxm = p["expectedMessages$"], p["maxMessages$"]
  if type(expected) == "number" and expected > 0 then return math.tointeger(expected) or 1 end
  if type(maxm) == "number" then
    if maxm <= 0 then return 0 end
    return math.tointeger(maxm) or 1
  end
  return 1
end

local msg_result, msg_member, msg_arrived, msg_data =
  core.msg_result, core.msg_member, core.msg_arrived, core.msg_data
local TRACE_MT, REQINFO_MT = wire.TRACE_MT, wire.REQINFO_MT

-- {==================================================================
-- The act context
-- ===================================================================
-- One table per act, {method, _p (the pattern), _rid, _sid, _tid, _psid
-- (false for none), _ts, _pubsub} until its reply (_reply, a core Msg); every other part is
-- built the first time it is read. conn:act writes the request from the
-- same fields, so an act nobody inspects builds no table at all.

-- A reply's trace (a decoded object) with the round trip's duration, the
-- reply having come at `arrived` (core.hrtime).
local function timed(t, arrived)
  setmetatable(t, TRACE_MT)
  if type(t.timestamp) == "number" then t.duration = arrived - t.timestamp end
  return t
end

local function reply_trace(r)
  local t = msg_member(r, "trace")
  return t and timed(t, msg_arrived(r))
end

local BUILDERS = {
  meta = function(a, scope)
    local r = rawget(a, "_reply")
    local m = r and msg_member(r, "meta")
    if m then return m end
    m = copy(scope.meta)
    local mp = a._p["meta$"]
    if type(mp) == "table" then
      for k, v in pairs(mp) do m[k] = v end
    end
    return m
  end,
  trace = function(a)
    local r = rawget(a, "_reply")
    return r and reply_trace(r) or setmetatable({
      spanId = a._sid, traceId = a._tid, parentSpanId = a._psid or nil, timestamp = a._ts,
      service = a._p.topic, method = a.method }, TRACE_MT)
  end,
  request = function(a)
    local r = rawget(a, "_reply")
    local q = r and msg_member(r, "request")
    if q then return setmetatable(q, REQINFO_MT) end
    return setmetatable({ id = a._rid, type = a._pubsub and "pubsub" or "request",
                          service = a._p.topic, method = a.method }, REQINFO_MT)
  end,
  delegate = function(a) return obj(a._p["delegate$"]) or {} end,
  pattern = function(a) return pattern.clean(a._p) end,
  context = function(a, scope) return a._p["context$"] or scope.context end,
  transport = function(a, scope)
    local p = a._p
    return { topic = p.topic, pubsub = a._pubsub, timeout = p["timeout$"] or scope._i.config.timeout,
             maxMessages = p["maxMessages$"], expectedMessages = p["expectedMessages$"] }
  end,
  response = function(a)
    local r = rawget(a, "_reply")
    return r and core.decode(msg_data(r)) or nil
  end,
}

local NO_PARENT = {} -- read only: the trace of an act outside a handler

-- Builds the act context. Returns actx, or actx, nil, err (request not to
-- be sent). method: pattern.method(p), when the caller has it.
local function prepare(self, p, method)
  local i = self._i
  local idgen = self._idGenerator or core.nuid
  method = method or pattern.method(p)
  local parent = self.trace or NO_PARENT
  local tr = p["trace$"]
  local sid, tid, psid
  if type(tr) == "table" then
    sid = given(tr.spanId) or idgen()
    tid = given(tr.traceId) or idgen()
    psid = given(tr.parentSpanId) or given(parent.spanId)
  else
    -- Hemera's rule, kept for the wire: a nested call reuses its parent's
    -- spanId as its own spanId and as parentSpanId. (given() inlined: this
    -- runs for every act.)
    psid = parent.spanId
    if psid == null then psid = nil end
    tid = parent.traceId
    if tid == null then tid = nil end
    sid = psid or idgen()
    tid = tid or idgen()
  end
  -- util.lazy makes the act metatable once per scope; after that its call
  -- is the whole cost, so the one made is read here first.
  local actx = setmetatable({
    method = method, _p = p, _rid = p["requestId$"] or idgen(), _sid = sid, _tid = tid, _psid = psid or false,
    _ts = hrtime(), _pubsub = p["pubsub$"] == true,
    -- Set later; listed so the table is made big enough for them.
    _reply = nil, responseError = nil, sid = nil,
  }, rawget(self, "_act_mt") or util.lazy(self, "_act_mt", BUILDERS))
  if i.trace_log then
    actx.log = self.log:child { tag = i.config.tag, requestId = actx._rid, traceId = tid,
                                spanId = sid, parentSpanId = psid }
  end
  local maxr = i.config.maxRecursion
  if maxr > 1 then
    local meta = actx.meta
    local ok, count = core.recursion(meta, tid .. ":" .. method, maxr)
    if not ok then
      -- Like Node Hemera, the caller's meta loses its referrers too.
      if self.meta then self.meta.referrers = nil end
      return actx, errors.MaxRecursionError({ count = count })
    end
  end
  return actx
end

-- Turns one reply (or the end of the request) into result, err, running
-- onActFinished. `st` is nil, "timeout", "closed" or "failed"; msg the
-- reply (a core Msg).
local function finish_reply(self, actx, st, msg)
  local i = self._i
  local result, err
  if st == "timeout" then
    err = errors.TimeoutError("Client timeout", { app = i.config.name, isServer = false, pattern = actx.method })
  elseif st == "failed" then
    return nil, errors.HemeraError("Request could not be sent: " .. tostring(msg),
      { app = i.config.name, isServer = false, pattern = actx.method })
  elseif st ~= nil then
    err = errors.HemeraError("NATS connection closed before the reply",
      { app = i.config.name, isServer = false, pattern = actx.method, code = st })
  else
    local decode = self._clientDecoder
    local e
    if not decode or decode == core.decode then
      -- msg_result also makes msg the context's _reply: one C call.
      local ok, r, detail, seen = msg_result(msg, actx)
      if not ok then
        -- A decode failure goes to the caller as is, without hooks.
        return nil, errors.ParseError(r == "json" and "Client payload decoding: " .. detail
          or "Client payload decoding: expected a JSON object, got " .. detail)
      end
      result, e = r, detail
      if seen then
        -- Parts read before the reply (hooks, the recursion guard) now are
        -- the reply's, where it has them.
        if rawget(actx, "meta") ~= nil then
          local m = msg_member(msg, "meta")
          if m then actx.meta = m end
        end
        if rawget(actx, "request") ~= nil then
          local q = msg_member(msg, "request")
          if q then actx.request = setmetatable(q, REQINFO_MT) end
        end
        if rawget(actx, "trace") ~= nil then
          local t = reply_trace(msg)
          if t then actx.trace = t end
        end
      end
    else
      local ok, m, derr = util.codec_call(decode, core.decode, msg_data(msg))
      if not ok or m == nil then
        return nil, util.codec_error("Client payload decoding", ok, m, derr)
      end
      if type(m) ~= "table" or getmetatable(m) == core.array_mt then
        return nil, errors.ParseError("Client payload decoding: expected a JSON object, got "
          .. util.json_type(m))
      end
      if obj(m.meta) then actx.meta = m.meta end
      if obj(m.request) then actx.request = setmetatable(m.request, REQINFO_MT) end
      local trace = obj(m.trace)
      if trace then actx.trace = timed(trace, msg_arrived(msg)) end
      actx.response = m
      if m.error ~= nil and m.error ~= false and m.error ~= null then e = m.error else result = m.result end
    end
    if e ~= nil then
      -- A null name or message (kept by the decoder) means none: from_wire
      -- then fills in "Error" and "" as for an absent one.
      if type(e) == "table" then
        if e.name == null then e.name = nil end
        if e.message == null then e.message = nil end
      end
      err = errors.from_wire(e)
      result = nil
    end
  end
  if err ~= nil then actx.responseError = err end
  local finished = self._ext.onActFinished
  local herr = finished[1] and run_hooks(finished, actx)
  if herr then return nil, herr end
  if i.log_requests then
    actx.log:info("Request completed", { topic = actx._p.topic, requestId = actx.request.id,
                                         pattern = actx.method, responseTime = actx.trace.duration })
  end
  return result, err
end

M.prepare = prepare -- for hemera.durable, whose acts are built the same way

-- The outcome of an act that ends before a request goes out: to the
-- callback (in a coroutine) or returned.
local function outcome(actx, on_reply, result, err)
  if on_reply then
    spawn(on_reply, err, result, actx, true)
    return actx
  end
  return result, err, actx
end

-- The act behind hemera:act and hemera:stream. `on_reply(err, result, actx,
-- done)` runs once per reply (in a coroutine); without it the running
-- coroutine waits for the single reply and the outcome is returned.
-- method: pattern.method(p), when the caller has it.
function M.act(self, p, on_reply, method)
  local i = self._i
  local actx, perr = prepare(self, p, method)
  if perr then return outcome(actx, on_reply, nil, perr) end
  local on_act = self._ext.onAct
  local herr = on_act[1] and run_hooks(on_act, actx)
  if herr then return outcome(actx, on_reply, nil, herr) end
  if i.log_requests then
    actx.log:info("Request started", { topic = p.topic, requestId = actx.request.id, pattern = actx.method })
  end
  local conn = i.conn
  if conn:is_closed() then
    -- Nothing goes out: say whose close it was, not "before the reply".
    return outcome(actx, on_reply, nil, errors.HemeraError(i.closing and "Hemera is closed: act after close()"
      or "NATS connection is closed: the act was not sent",
      { app = i.config.name, isServer = false, pattern = actx.method, code = "CONN_CLOSED" }))
  end
  local pubsub = actx._pubsub
  -- Without either stream option max_replies answers 1: an act spares the call.
  local max = 1
  if p["expectedMessages$"] ~= nil or p["maxMessages$"] ~= nil then max = max_replies(p) end
  if max ~= 1 and not on_reply and not pubsub then
    return outcome(actx, on_reply, nil, errors.HemeraError(
      "maxMessages$ and expectedMessages$ need a callback or hemera:stream"))
  end
  local timeout = p["timeout$"] or i.config.timeout
  local cb = on_reply and not pubsub and function(st, data, done)
    local result, err = finish_reply(self, actx, st, data)
    return on_reply(err, result, actx, done)
  end or nil
  -- _hdrs: NATS headers an onAct hook asked for (hemera.tracing's traceparent).
  local hdrs = rawget(actx, "_hdrs")
  local encode = self._clientEncoder
  local r, rerr, code
  if not encode or encode == core.encode then
    -- Written and sent in one C call, from the context's fields: the
    -- request never becomes a Lua string.
    r, rerr, code = conn:act(actx, p, self.meta, actx.method, actx._rid, actx._sid, actx._tid, actx._psid,
                             actx._ts, pubsub, timeout, max, cb, hdrs)
    if code == "HM_ENCODE" then
      return outcome(actx, on_reply, nil, errors.ParseError("Client payload encoding: " .. tostring(rerr)))
    end
  else
    local env = setmetatable({ pattern = actx.pattern, meta = actx.meta, delegate = actx.delegate,
                               trace = actx.trace, request = actx.request }, wire.REQUEST_MT)
    local ok, payload, eerr = util.codec_call(encode, core.encode, env)
    if not ok or payload == nil then
      return outcome(actx, on_reply, nil, util.codec_error("Client payload encoding", ok, payload, eerr))
    end
    if pubsub then
      r, rerr, code = conn:publish(p.topic, payload, nil, hdrs)
    else
      r, rerr, code = conn:request(p.topic, payload, timeout, max, cb, true, hdrs)
    end
  end
  if pubsub then
    if not r then return outcome(actx, on_reply, nil, errors.HemeraError("Publish failed: " .. tostring(rerr))) end
    return outcome(actx, on_reply, nil, nil)
  end
  if on_reply then
    if not r then
      return outcome(actx, on_reply, nil, errors.HemeraError("Request could not be sent: " .. tostring(rerr)))
    end
    actx.sid = r
    return actx
  end
  local st = r == nil and (code == "HM_TIMEOUT" and "timeout" or code == "HM_CLOSED" and "closed" or "failed") or nil
  local result, err = finish_reply(self, actx, st, st == "failed" and rerr or r)
  return result, err, actx
end

-- hemera:stream(pattern): an iterator over several replies.
--   for result, err in hemera:stream{ topic = "feed", maxMessages_ = 10 } do ... end
-- Without maxMessages$/expectedMessages$ the stream is open-ended. It ends
-- when the expected replies have come, when the loop is left (break,
-- return or error: the request is cancelled), or after one TimeoutError
-- when replies stop coming for timeout$ ms. An error reply comes as
-- `false, err`, a reply without result as `Hemera.null`, so the loop never
-- stops on them.
function M.stream(self, p)
  if p["maxMessages$"] == nil and p["expectedMessages$"] == nil then
    p = copy(p)
    p["maxMessages$"] = -1
  end
  local i = self._i
  local items, head, tail = {}, 1, 0
  local finished, waiter = false, nil
  local actx = M.act(self, p, function(err, result, _, done)
    if finished then return end
    tail = tail + 1
    items[tail] = { result = result, err = err }
    if done then finished = true end
    if waiter then
      local w = waiter
      waiter = nil
      w:set()
    end
  end)
  local function iter()
    while head > tail do
      if finished then return nil end
      waiter = core.future()
      waiter:wait()
    end
    local item = items[head]
    items[head] = nil
    head = head + 1
    if item.err ~= nil then return false, item.err end
    if item.result == nil then return null, nil end
    return item.result, nil
  end
  local closer = setmetatable({}, { __close = function()
    if not finished then
      finished = true
      if actx and actx.sid and i.conn then i.conn:cancel(actx.sid) end
    end
  end })
  return iter, nil, nil, closer
end

return M
