-- hemera.server: one incoming message, from decode to onResponse, in the
-- order of Hemera v7 (spec §5.2). It runs in its own coroutine, so every
-- hook, the middleware and the handler may yield (act, sleep, ...).

local core = require "hemera.core"
local errors = require "hemera.errors"
local pattern = require "hemera.pattern"
local Reply = require "hemera.reply"
local util = require "hemera.util"
local wire = require "hemera.wire"

local M = {}

local obj, call, run_hooks = util.obj, util.call, util.run_hooks
local capture, failure = util.capture, util.failure
local budget_call, budget_xpcall, traceback = core.budget_call, core.budget_xpcall, debug.traceback
local msg_route, msg_member, msg_reply, msg_data = core.msg_route, core.msg_member, core.msg_reply, core.msg_data
local skipped_buf = {} -- paths core.encode left out of the reply being sent

-- {==================================================================
-- The context of a message
-- ===================================================================
-- The core makes it ({topic, _msg}, hm_lua_conn.c) with the message still
-- undecoded. Its parts materialise the first time they are read, so a
-- handler that reads none of them pays for none; the reply sends back the
-- request's own bytes for every part nobody read or set.

local TRACE_MT, REQINFO_MT = wire.TRACE_MT, wire.REQINFO_MT

-- A part read or changed goes out re-encoded: meta and delegate keep the
-- key order they came in (what the handler adds goes after, in byte order;
-- the codec remembers where each decoded object came from), trace and
-- request get Hemera's.
local function part(name, mt)
  return function(ctx)
    local msg = rawget(ctx, "_msg")
    local v = msg and msg_member(msg, name) or {}
    if mt then setmetatable(v, mt) end
    return v
  end
end

local BUILDERS = {
  meta = part("meta"),
  trace = part("trace", TRACE_MT),
  request = part("request", REQINFO_MT),
  delegate = part("delegate"),
  replyTo = function(ctx)
    local msg = rawget(ctx, "_msg")
    return msg and msg_reply(msg)
  end,
  auth = function() return {} end,
}

-- The metatable of scope's message contexts (one per scope).
function M.context_mt(scope)
  return util.lazy(scope, "_ctx_mt", BUILDERS)
end

-- The request's id and type for the reply of last resort: from the bytes
-- as they came, which no handler can have changed.
local function request_ids(ctx, reply)
  if reply._rid ~= nil or reply._rtype ~= nil then return reply._rid, reply._rtype end
  local msg = rawget(ctx, "_msg")
  local rq = msg and not reply._custom and msg_member(msg, "request")
  if not rq then return nil, nil end
  local id, rtype = rq.id, rq.type
  return type(id) == "string" and id or nil, type(rtype) == "string" and rtype or nil
end

-- }==================================================================

-- A validator per (action, compiler), compiled on first use.
local function validator(def, compiler, slot)
  local cache = def[slot]
  if cache and cache.compiler == compiler then return cache.fn end
  local ok, fn = call(compiler, def.schema, def)
  if not ok then return nil, fn end
  def[slot] = { compiler = compiler, fn = fn or false }
  return fn or false
end

local function check_load(i)
  local policy = i.config.load.policy
  local s = core.load()
  local fields = { eventLoopDelay = s.eventLoopDelay, heapUsed = s.heapUsed, rss = s.rss }
  if policy.maxEventLoopDelay > 0 and s.eventLoopDelay > policy.maxEventLoopDelay then
    return errors.ProcessLoadError("Server under heavy load (event loop)", fields)
  elseif policy.maxHeapUsedBytes > 0 and s.heapUsed > policy.maxHeapUsedBytes then
    return errors.ProcessLoadError("Server under heavy load (heap)", fields)
  elseif policy.maxRssBytes > 0 and s.rss > policy.maxRssBytes then
    return errors.ProcessLoadError("Server under heavy load (rss)", fields)
  end
end

-- The error member of an error reply, with the hop this service adds.
local function error_wire(i, ctx, reply)
  local hop = wire.hop(i.config.name, ctx.trace, ctx.topic)
  return errors.to_wire(errors.root(reply.error), hop, i.config.errio.stack)
end

-- Sends the reply through a custom encoder (the envelope as tables):
-- the outcomes of conn:reply. ew: the error member, or nil.
local function publish_encoded(conn, ctx, reply, encode, ew)
  local to = ctx.replyTo
  if not to then return "noreply" end
  if conn:is_closed() then return nil, "closed", "HM_CLOSED" end
  local out = wire.reply(ctx.meta, ctx.trace, ctx.request, reply.payload, ew)
  local ok, payload, err = util.codec_call(encode, core.encode, out)
  if not ok or payload == nil then return nil, ok and err or payload end
  local sent, perr, code = conn:publish(to, payload)
  if not sent then return nil, perr, code end
  core.msg_count(rawget(ctx, "_msg"), ew) -- the Service API's counters
  return "sent"
end

-- Warns once per action about values the lenient encoder left out.
local function warn_skipped(owner, ctx, log)
  -- One buffer for every reply (no table per request): emptied here.
  local paths = {}
  for k = 1, #skipped_buf do paths[k] = skipped_buf[k]; skipped_buf[k] = nil end
  local def = ctx.matchedAction or owner
  if not rawget(def, "_warned_unencodable") then
    rawset(def, "_warned_unencodable", true)
    log:warn("Reply values JSON cannot hold were left out", { topic = ctx.topic, paths = paths })
  end
end

-- Sends the reply of last resort (see wire.last_resort) for error e.
local function last_resort(i, ctx, reply, e)
  local to = ctx.replyTo
  if not to then return false end
  local rid, rtype = request_ids(ctx, reply)
  local sent = i.conn:publish(to, wire.last_resort(rid, rtype, e.name, e.message))
  if sent then core.msg_count(rawget(ctx, "_msg"), e) end -- the Service API's counters
  return sent
end

-- Sends what the reply holds: error handler and onError for errors, the
-- onSend chain (response validation first), encode, publish, onResponse.
local function deliver(owner, ctx, reply)
  local i = owner._i
  local log = rawget(ctx, "log") or owner.log
  -- Read again after hooks, which may change it.
  local rerr = reply.error
  if rerr then
    local eh = owner._errorHandler
    if eh then
      local ok, e = call(eh, ctx, rerr, reply)
      if not ok then log:error("errorHandler", { error = e }) end
    end
    -- The chain stops at a failing hook, whose error is only logged: the
    -- reply keeps its own error.
    local herr = run_hooks(owner._ext.onError, ctx, reply.error, reply)
    if herr then log:error("onError extension", { error = herr }) end
    rerr = reply.error
  end
  local send_err
  local rc = owner._responseSchemaCompiler
  if not rerr and rc and ctx.matchedAction then
    local fn, cerr = validator(ctx.matchedAction, rc, "_response_validator")
    if fn == nil then
      send_err = cerr
    elseif fn then
      local ok, v = call(fn, reply.payload, ctx)
      if not ok then send_err = v elseif v ~= nil then reply.payload = v end
    end
  end
  if not send_err and owner._ext.onSend[1] then
    send_err = run_hooks(owner._ext.onSend, ctx, ctx.pattern, reply)
    rerr = reply.error
  end
  if send_err then
    log:error("onSend extension", { error = send_err })
    -- The first error wins: an onSend failure replaces only a success,
    -- and the error path (error handler, onError, onSend) runs once more.
    if not rerr and not reply._resent then
      reply._resent = true
      reply.error = send_err
      reply.isError = true
      reply.payload = nil
      return deliver(owner, ctx, reply)
    end
  end
  if i.log_requests then
    log:info("Request responded", { topic = ctx.topic, requestId = ctx.request.id, pattern = ctx.trace.method })
  end
  local conn = i.conn
  if conn then
    local why, ew, st, perr, code
    if rerr then
      local ok, w = pcall(error_wire, i, ctx, reply)
      if ok then ew = w else why = w end
    end
    if not why then
      local encode = owner._serverEncoder
      if not encode or encode == core.encode then
        -- The envelope is written in C, with the request's own bytes for
        -- each part nobody read or set (hm_lua_envelope.c). A result JSON
        -- has no word for is an error ("cannot encode a function at
        -- result"); inside it, as JSON.stringify, such values are left
        -- out and listed.
        st, perr, code = conn:reply(ctx, reply.payload, ew, skipped_buf)
        if skipped_buf[1] then warn_skipped(owner, ctx, log) end
      else
        st, perr, code = publish_encoded(conn, ctx, reply, encode, ew)
      end
      -- No code: the reply could not be encoded (nothing reached NATS).
      if st == nil and code == nil then why = perr end
    end
    if st == "sent" then
      reply._published = true
    elseif st == "noreply" then
      -- A durable message (ctx.delivery) is answered by its ack or nak.
      if rerr and not rawget(ctx, "delivery") then
        log:warn("Request failed, and it has no reply subject to tell", { topic = ctx.topic, error = reply.error })
      end
    elseif code == "HM_CLOSED" then
      -- The handler outlived close(): nobody can be answered any more.
      log:warn("Reply dropped: the connection is closed", { topic = ctx.topic })
    elseif why then
      -- Node Hemera logs and sends nothing, leaving the caller to time
      -- out; we tell the caller what went wrong instead, in a reply built
      -- from nothing the handler touched (its meta or trace may be what
      -- failed to encode).
      local e = errors.ParseError("Server encoding: " .. tostring(why))
      log:error("Server encoding", { error = e })
      if last_resort(i, ctx, reply, e) then reply._published = true end
    elseif not conn:is_closed() then
      local e = errors.HemeraError("Reply could not be sent: " .. tostring(perr))
      log:error("Reply could not be sent", { error = e })
      if last_resort(i, ctx, reply, e) then reply._published = true end
    end
  end
  local on_response = owner._ext.onResponse
  for k = 1, #on_response do
    -- util.call inlined, as in util.run_hooks: a metrics plugin runs one
    -- for every request.
    local ok, r, e = xpcall(on_response[k], capture, ctx, reply)
    if not ok or ((r == nil or r == false) and e ~= nil) then
      log:error("onResponse extension", { error = failure(ok, r, e) })
    end
  end
end

-- A request that cannot be read is answered with error e. It has no
-- request info of its own: the reply carries the instance's, as Node
-- Hemera's does ({"type":"request","id":""}).
local function unreadable(owner, ctx, reply, e)
  ctx.log:warn("Invalid request", { topic = ctx.topic, error = e })
  local r = owner.request
  ctx.request = setmetatable({ type = r.type, id = r.id }, getmetatable(r))
  return reply:send(nil, e)
end

-- Everything up to the handler. Returns when the reply has been sent (or
-- there is none to send).
local function process(owner, t, ctx, reply)
  local i = owner._i
  local decode = owner._serverDecoder
  local msg = ctx._msg
  -- Only the patterns of the subscription that delivered the message take
  -- part: NATS permissions on subjects then hold for handlers too (Hemera
  -- looks in the whole router, so a message on `pub` could name `admin`).
  local p, pubsub, def
  if not decode or decode == core.decode then
    local kind, detail
    p, kind, detail = msg_route(msg, i.router, t.topic)
    if not p then
      if kind == "pattern" then
        return reply:send(nil, errors.ParseError("Invalid request: 'pattern' must be an object, got " .. detail))
      end
      return unreadable(owner, ctx, reply, errors.ParseError(kind == "json" and "Invalid request: " .. detail
        or "Invalid request: expected a JSON object, got " .. detail))
    end
    pubsub, def = kind, detail
  else
    -- A custom codec: the whole message as tables, as it decodes it.
    reply._custom = true
    local ok, m, derr = util.codec_call(decode, core.decode, msg_data(msg))
    if not ok or m == nil then
      return unreadable(owner, ctx, reply, util.codec_error("Invalid request", ok, m, derr))
    end
    if type(m) ~= "table" or getmetatable(m) == core.array_mt then
      return unreadable(owner, ctx, reply, errors.ParseError("Invalid request: expected a JSON object, got "
        .. util.json_type(m)))
    end
    ctx.meta = obj(m.meta) or {}
    ctx.trace = setmetatable(obj(m.trace) or {}, TRACE_MT)
    ctx.request = setmetatable(obj(m.request) or {}, REQINFO_MT)
    -- For the reply of last resort, before any handler code runs.
    local rid, rtype = ctx.request.id, ctx.request.type
    reply._rid = type(rid) == "string" and rid or nil
    reply._rtype = type(rtype) == "string" and rtype or nil
    ctx.delegate = obj(m.delegate) or {}
    p = obj(m.pattern)
    if not p then
      return reply:send(nil, errors.ParseError("Invalid request: 'pattern' must be an object, got "
        .. util.json_type(m.pattern)))
    end
    pubsub = rtype == "pubsub"
    def = i.router:lookup(p, t.topic)
  end
  ctx.pattern = p
  if t.last then owner:_cleanTopic(t.topic) end
  if not def and owner._notFoundPattern then def = i.router:lookup(owner._notFoundPattern) end
  ctx.matchedAction = def
  reply._def = def -- for a budget error, whatever the handler does to ctx
  if i.trace_log then
    ctx.log = ctx.log:child { tag = i.config.tag, requestId = ctx.request.id, traceId = ctx.trace.traceId,
                              spanId = ctx.trace.spanId, parentSpanId = ctx.trace.parentSpanId }
  end
  if i.log_requests then
    ctx.log:info("Request received", { topic = ctx.topic, requestId = ctx.request.id, pattern = ctx.trace.method })
  end
  local sc = owner._schemaCompiler
  if def and sc then
    local fn, cerr = validator(def, sc, "_request_validator")
    if fn == nil then return reply:send(nil, cerr) end
    if fn then
      local vok, v = call(fn, p, ctx)
      if not vok then return reply:send(nil, v) end
      if v ~= nil then p = v; ctx.pattern = v end
    end
  end
  if i.check_load then
    local lerr = check_load(i)
    if lerr then return reply:send(nil, lerr) end
  end
  local ext = owner._ext
  local err = ext.onRequest[1] and run_hooks(ext.onRequest, ctx, p, reply)
  if err then return reply:send(nil, err) end
  if not def then
    return reply:send(nil, errors.PatternNotFound("No action found for this pattern",
      { app = i.config.name, isServer = true, pattern = ctx.trace.method }))
  end
  err = ext.preHandler[1] and run_hooks(ext.preHandler, ctx, p, reply)
  if err then
    if not reply.sent then reply:send(nil, err) end
    return
  end
  if reply.sent then return end
  for k = 1, #def.middleware do
    local mok, merr = call(def.middleware[k], p, reply, ctx)
    if not mok then
      if not reply.sent then reply:send(nil, merr) end
      return
    end
    if reply.sent then return end
  end
  -- util.call inlined: the handler runs for every request.
  local aok, r, e = xpcall(def.action, capture, p, ctx)
  if not aok or ((r == nil or r == false) and e ~= nil) then aok, r = false, failure(aok, r, e) end
  if pubsub then
    if not aok then ctx.log:error("Pubsub action failed", { error = r }) end
    if not reply.sent then reply:send() end
    return
  end
  if not aok then
    if reply.count > 0 then reply:next(nil, r) else reply:send(nil, r) end
  elseif reply.count > 0 then
    -- The handler streamed with reply:next; a final value is one more.
    if r ~= nil then reply:next(r) end
  elseif not reply.sent then
    reply:send(r)
  end
end

-- Answers a request that failed outside the normal reply path with error
-- e: through that path if nothing was sent yet (its error hooks under a
-- budget of their own), else, or if that fails too, with the reply of
-- last resort. The caller always hears back.
local function answer_anyway(owner, ctx, reply, e)
  local i = owner._i
  if not reply.sent then
    local sok, serr = budget_call(i.config.handlerBudget, reply.send, reply, nil, e)
    if not sok then owner.log:error("The error reply failed", { error = serr, reply = e }) end
  end
  if not reply._published and i.conn and not i.conn:is_closed() then last_resort(i, ctx, reply, e) end
end

-- Hemera's own code failed serving a message (a hook or handler left
-- something that broke it). The traceback is logged here and goes out
-- only as the error's stack (errio.stack).
local function internal_error(owner, ctx, reply, err)
  owner.log:error("Internal error while serving a request", { error = err })
  local text = tostring(err)
  local first = text:match("^[^\n]*")
  answer_anyway(owner, ctx, reply, errors.HemeraError(
    "Internal error: " .. (first:match("^[^\n]-:%d+: (.*)$") or first), { stack = text }))
end

-- The request used up its CPU budget: core.budget_call stopped it where it
-- was, hooks and handler alike. The caller gets a HandlerBudgetError
-- naming the pattern.
local function over_budget(owner, ctx, reply, b, budget)
  local def = reply._def
  local method = def and pattern.method(def.pattern) or "(no pattern matched yet)"
  local used = type(b) == "table" and b.used or budget
  local e = errors.HandlerBudgetError(("Handler exceeded its CPU budget of %d ms: %s"):format(budget, method),
                                      { pattern = method, budget = budget, used = used })
  owner.log:error("Handler over its CPU budget", { error = e })
  answer_anyway(owner, ctx, reply, e)
end

-- One message of topic t, owned by scope `owner`: ctx is its context,
-- made by the core with the message in it (context_mt).
function M.serve(owner, t, ctx)
  local i = owner._i
  if t.maxMessages then
    t.count = t.count + 1
    -- NATS already ends the subscription after maxMessages; the topic's
    -- patterns leave the router with the last message.
    if t.count >= t.maxMessages and i.topics[t.topic] == t then t.last = true end
  end
  i.inflight = i.inflight + 1
  local reply = Reply.new(deliver, owner, ctx, owner.log)
  ctx.reply = reply
  local budget = i.budget
  local ok, err, over = budget_xpcall(budget, traceback, process, owner, t, ctx, reply)
  if over then
    over_budget(owner, ctx, reply, err, budget)
  elseif not ok then
    internal_error(owner, ctx, reply, err)
  end
  if t.last and i.topics[t.topic] == t then owner:_cleanTopic(t.topic) end
  -- Its delivery credit goes back (maxConcurrency): waiting messages may
  -- come in now.
  if i.conn then i.conn:done() end
  util.served(i)
end

return M
