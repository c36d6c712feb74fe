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

-- Builds the act context and the message to send. Returns actx, envelope,
-- or nil, err (request not to be sent).
local function prepare(self, p)
  local i = self._i
  local idgen = self._idGenerator or core.nuid
  local method = pattern.method(p)
  local meta = copy(self.meta)
  if type(p["meta$"]) == "table" then
    for k, v in pairs(p["meta$"]) do meta[k] = v end
  end
  local parent = self.trace or {}
  local tr = p["trace$"]
  local trace = setmetatable({}, wire.TRACE_MT)
  if type(tr) == "table" then
    trace.spanId = given(tr.spanId) or idgen()
    trace.traceId = given(tr.traceId) or idgen()
    trace.parentSpanId = given(tr.parentSpanId) or given(parent.spanId)
  else
    -- Hemera's rule, kept for the wire: a nested call reuses its parent's
    -- spanId as its own spanId and as parentSpanId.
    trace.spanId = given(parent.spanId) or idgen()
    trace.traceId = given(parent.traceId) or idgen()
    trace.parentSpanId = given(parent.spanId)
  end
  trace.timestamp = hrtime()
  trace.service = p.topic
  trace.method = method
  local pubsub = p["pubsub$"] == true
  local request = setmetatable({ id = p["requestId$"] or idgen(), type = pubsub and "pubsub" or "request",
                                 service = p.topic, method = method }, wire.REQINFO_MT)
  local delegate = obj(p["delegate$"]) or {}
  local clean = pattern.clean(p)
  local actx = setmetatable({
    meta = meta, trace = trace, delegate = delegate, request = request,
    context = p["context$"] or self.context, pattern = clean, method = method,
    transport = { topic = p.topic, pubsub = pubsub, timeout = p["timeout$"] or i.config.timeout,
                  maxMessages = p["maxMessages$"], expectedMessages = p["expectedMessages$"] },
  }, util.inherit(self))
  if i.config.traceLog then
    actx.log = self.log:child { tag = i.config.tag, requestId = request.id, traceId = trace.traceId,
                                spanId = trace.spanId, parentSpanId = trace.parentSpanId }
  end
  local maxr = i.config.maxRecursion
  if maxr > 1 then
    local ok, count = core.recursion(meta, trace.traceId .. ":" .. method, maxr)
    if not ok then
      -- Like Node Hemera, the caller's meta loses its referrers too.
      if self.meta then self.meta.referrers = nil end
      return actx, nil, errors.MaxRecursionError({ count = count })
    end
  end
  return actx, setmetatable({ pattern = clean, meta = meta, delegate = delegate,
                              trace = trace, request = request }, wire.REQUEST_MT)
end

-- Turns one reply (or the end of the request) into result, err, running
-- onActFinished. `st` is nil, "timeout", "closed" or "failed".
local function finish_reply(self, actx, st, data)
  local i = self._i
  local result, err
  if st == "timeout" then
    err = errors.TimeoutError("Client timeout", { app = i.config.name, isServer = false, pattern = actx.method })
  elseif st == "failed" then
    return nil, errors.HemeraError("Request could not be sent: " .. tostring(data),
      { app = i.config.name, isServer = false, pattern = actx.method })
  elseif st ~= nil then
    err = errors.HemeraError("NATS connection closed before the reply",
      { app = i.config.name, isServer = false, pattern = actx.method, code = st })
  else
    local decode = self._clientDecoder or core.decode
    local ok, msg, derr = util.codec_call(decode, core.decode, data)
    if not ok or msg == nil then
      -- A decode failure goes to the caller as is, without hooks.
      return nil, util.codec_error("Client payload decoding", ok, msg, derr)
    end
    if type(msg) ~= "table" or getmetatable(msg) == core.array_mt then
      return nil, errors.ParseError("Client payload decoding: expected a JSON object, got "
        .. util.json_type(msg))
    end
    if obj(msg.meta) then actx.meta = msg.meta end
    if obj(msg.request) then actx.request = setmetatable(msg.request, wire.REQINFO_MT) end
    local trace = obj(msg.trace)
    if trace then
      setmetatable(trace, wire.TRACE_MT)
      if type(trace.timestamp) == "number" then trace.duration = hrtime() - trace.timestamp end
      actx.trace = trace
    end
    actx.response = msg
    if msg.error ~= nil and msg.error ~= false and msg.error ~= null then
      -- A null name or message (kept by the decoder) means none: from_wire
      -- then fills in "Error" and "" as for an absent one.
      local e = msg.error
      if type(e) == "table" then
        if e.name == null then e.name = nil end
        if e.message == null then e.message = nil end
      end
      err = errors.from_wire(e)
    else
      result = msg.result
    end
  end
  actx.responseError = err
  local herr = run_hooks(self._ext.onActFinished, actx)
  if herr then return nil, herr end
  if i.log_requests then
    actx.log:info("Request completed", { topic = actx.transport.topic, requestId = actx.request.id,
                                         pattern = actx.method, responseTime = actx.trace.duration })
  end
  return result, err
end

-- The act behind hemera:act and hemera:stream. `on_reply(err, result, actx,
-- done)` runs once per reply (in a coroutine); without it the running
-- coroutine waits for the single reply and the outcome is returned.
function M.act(self, p, on_reply)
  local i = self._i
  local actx, env, perr = prepare(self, p)
  local function deliver(result, err, done)
    if on_reply then
      spawn(on_reply, err, result, actx, done ~= false)
      return actx
    end
    return result, err, actx
  end
  if perr then return deliver(nil, perr) end
  local herr = run_hooks(self._ext.onAct, actx)
  if herr then return deliver(nil, herr) end
  if i.log_requests then
    actx.log:info("Request started", { topic = p.topic, requestId = actx.request.id, pattern = actx.method })
  end
  local encode = self._clientEncoder or core.encode
  local ok, payload, eerr = util.codec_call(encode, core.encode, env)
  if not ok or payload == nil then
    return deliver(nil, util.codec_error("Client payload encoding", ok, payload, eerr))
  end
  if actx.transport.pubsub then
    local sent, serr = i.conn:publish(p.topic, payload)
    if not sent then return deliver(nil, errors.HemeraError("Publish failed: " .. tostring(serr))) end
    return deliver(nil, nil)
  end
  local max = max_replies(p)
  local timeout = actx.transport.timeout
  if on_reply then
    local id, rerr = i.conn:request(p.topic, payload, timeout, max, function(st, data, done)
      local result, err = finish_reply(self, actx, st, data)
      return on_reply(err, result, actx, done)
    end)
    if not id then return deliver(nil, errors.HemeraError("Request could not be sent: " .. tostring(rerr))) end
    actx.sid = id
    return actx
  end
  if max ~= 1 then
    return deliver(nil, errors.HemeraError(
      "maxMessages$ and expectedMessages$ need a callback or hemera:stream"))
  end
  local st, data = i.conn:request(p.topic, payload, timeout, 1)
  local result, err = finish_reply(self, actx, st, data)
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
