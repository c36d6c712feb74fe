-- hemera: pattern-matching RPC over NATS, wire-compatible with nats-hemera 7.
--
--   local Hemera = require "hemera"
--   local hemera = Hemera.new{ name = "math" }
--   hemera:add({ topic = "math", cmd = "add" }, function(req) return req.a + req.b end)
--   hemera:ready(function()
--     local sum, err = hemera:act{ topic = "math", cmd = "add", a = 1, b = 2 }
--   end)
--   Hemera.run()   -- the `hemera` interpreter does this for you
--
-- Handlers and callbacks run in coroutines; `act` without a callback
-- suspends the coroutine until the reply or the timeout.

local core = require "hemera.core"
local errors = require "hemera.errors"
local pattern = require "hemera.pattern"
local log = require "hemera.log"

local encode, decode, null, array_mt = core.encode, core.decode, core.null, core.array_mt
local hrtime, spawn, nuid = core.hrtime, core.spawn, core.nuid
local traceback = debug.traceback

local Hemera = {}
Hemera.__index = Hemera
Hemera.VERSION = "0.1.0"

Hemera.errors = errors
Hemera.null = null
Hemera.array = core.array
Hemera.regex = pattern.regex
Hemera.parsePattern = pattern.parse
Hemera.run = core.run
Hemera.spawn = core.spawn
Hemera.sleep = core.sleep
Hemera.encode = core.encode
Hemera.decode = core.decode

function Hemera.createError(name)
  if type(name) ~= "string" then
    error(errors.HemeraError("Error name must be a string"), 2)
  end
  return errors.registry[name] or errors.class(name)
end

-- Key orders on the wire, as Node Hemera writes them.
local TRACE_MT = { __jsonorder = { "spanId", "traceId", "parentSpanId", "timestamp", "service", "method" } }
local REQINFO_MT = { __jsonorder = { "id", "type", "service", "method" } }
local REQUEST_MT = { __jsonorder = { "pattern", "meta", "delegate", "trace", "request" } }
local REPLY_MT = { __jsonorder = { "meta", "trace", "request", "result", "error" } }
local HOP_MT = { __jsonorder = { "service", "method", "app", "ts" } }

local open_instances = {} -- instance -> true while connected

-- {==================================================================
-- Options
-- ===================================================================

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or os.getenv("HOSTNAME") or "localhost"
end

-- key -> expected Lua type(s)
local OPTION_TYPES = {
  servers = { string = true, table = true },
  name = { string = true },
  timeout = { number = true },
  logLevel = { string = true },
  logger = { table = true },
  bloomrun = { table = true },
  nats = { table = true },
  closeTimeout = { number = true },
}

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      error(errors.HemeraError(("Invalid option '%s': unknown key (known: bloomrun, closeTimeout, logLevel, logger, name, nats, servers, timeout)"):format(tostring(k))), 3)
    end
    if not want[type(v)] then
      local names = {}
      for t in pairs(want) do names[#names + 1] = t end
      table.sort(names)
      error(errors.HemeraError(("Invalid option '%s': expected %s, got %s (%s)"):format(
        k, table.concat(names, " or "), type(v), tostring(v))), 3)
    end
  end
  if opts.timeout and (opts.timeout < 0 or math.type(opts.timeout) ~= "integer") then
    error(errors.HemeraError(("Invalid option 'timeout': expected an integer >= 0 (ms), got %s"):format(tostring(opts.timeout))), 3)
  end
  local b = opts.bloomrun
  if b then
    if b.indexing ~= nil and b.indexing ~= "insertion" and b.indexing ~= "depth" then
      error(errors.HemeraError(("Invalid option 'bloomrun.indexing': expected 'insertion' or 'depth', got %s"):format(tostring(b.indexing))), 3)
    end
  end
end

-- }==================================================================

-- Hemera.new([opts]): a new instance; nothing connects before ready().
--   servers   NATS URL or list (default: $HEMERA_NATS_URL or nats://127.0.0.1:4222)
--   name      app name, sent in error hops (default hemera-<host>-<id>)
--   timeout   act timeout in ms (default 2000)
--   logLevel  fatal|error|warn|info|debug|trace|silent (default silent)
--   logger    a table with the level methods, replacing the built-in one
--   bloomrun  { indexing = "insertion"|"depth", lookupBeforeAdd = false }
--   nats      connection options: user, password, token, tls = {ca, cert,
--             key, verify}, reconnect, maxReconnect, reconnectWait,
--             connectTimeout, maxPendingMsgs
--   closeTimeout  ms close() waits for running handlers (default 2000)
function Hemera.new(opts)
  opts = opts or {}
  check_options(opts)
  local bloomrun = opts.bloomrun or {}
  local name = opts.name or ("hemera-" .. hostname() .. "-" .. nuid())
  local i = {
    config = {
      timeout = opts.timeout or 2000,
      name = name,
      logLevel = opts.logLevel or "silent",
      closeTimeout = opts.closeTimeout or 2000,
      bloomrun = {
        indexing = bloomrun.indexing or "insertion",
        lookupBeforeAdd = bloomrun.lookupBeforeAdd or false,
      },
    },
    servers = opts.servers or os.getenv("HEMERA_NATS_URL") or "nats://127.0.0.1:4222",
    nats = opts.nats or {},
    topics = {},   -- topic -> { topic, pubsub, queue, maxMessages, sub, count }
    inflight = 0,  -- handlers running now
    idgen = nuid,
  }
  i.router = core.router(i.config.bloomrun.indexing)
  i.log = opts.logger or log.new { level = i.config.logLevel, app = name }
  local self = setmetatable({
    _i = i,
    meta = {},
    trace = {},
    delegate = {},
    context = {},
    request = setmetatable({ type = "request", id = "" }, REQINFO_MT),
    log = i.log,
  }, Hemera)
  i.root = self
  return self
end

-- {==================================================================
-- Server side
-- ===================================================================

local function hop(i, trace, topic)
  return setmetatable({ service = trace.service or topic, method = trace.method,
                        app = i.config.name, ts = hrtime() }, HOP_MT)
end

local function send_reply(i, reply, out, topic)
  local payload, err = encode(out)
  if not payload then
    -- Node Hemera logs and sends nothing, leaving the caller to time out;
    -- we tell the caller what went wrong instead.
    i.log:error("Server encoding", { error = err })
    out.result = null
    out.error = errors.to_wire(errors.ParseError("Server encoding: " .. err), hop(i, out.trace, topic))
    payload = assert(encode(out))
  end
  local ok, perr = i.conn and i.conn:publish(reply, payload)
  if not ok and i.conn and not i.conn:is_closed() then
    i.log:error("Could not send the reply", { error = perr })
    out.result = null
    out.error = errors.to_wire(errors.HemeraError("Reply could not be sent: " .. tostring(perr)), hop(i, out.trace, topic))
    i.conn:publish(reply, assert(encode(out)))
  end
end

local function reply_error(i, reply, topic, err, meta, trace, request)
  if not reply then
    i.log:warn("Dropped a message without reply subject", { topic = topic, error = tostring(err) })
    return
  end
  local out = setmetatable({ meta = meta or {}, trace = trace or {}, request = request or {} }, REPLY_MT)
  out.result = null
  out.error = errors.to_wire(errors.root(err), hop(i, out.trace, topic))
  send_reply(i, reply, out, topic)
end

-- Captures the error value and the traceback of the failing coroutine.
local function capture(e)
  return { err = e, trace = traceback(type(e) == "string" and e or nil, 2) }
end

local function obj(v)
  return type(v) == "table" and getmetatable(v) ~= array_mt and v or nil
end

local function clean_topic(i, topic)
  local t = i.topics[topic]
  if not t then return false end
  if t.sub then t.sub:unsubscribe() end
  i.router:remove_topic(topic)
  i.topics[topic] = nil
  return true
end

local function handler_done(i)
  i.inflight = i.inflight - 1
  if i.inflight == 0 and i.on_drained then
    local f = i.on_drained
    i.on_drained = nil
    f()
  end
end

-- One incoming message, in its own coroutine.
local function serve_message(self, t, subject, reply, data)
  local i = self._i
  if t.maxMessages then
    t.count = t.count + 1
    -- The NATS subscription already ends itself after maxMessages; the
    -- topic's patterns leave the router with the last one.
    if t.count >= t.maxMessages and i.topics[t.topic] == t then
      t.last = true
    end
  end
  local msg, derr = decode(data)
  if type(msg) ~= "table" or getmetatable(msg) == array_mt then
    local e = msg == nil
      and errors.ParseError("Invalid request: " .. tostring(derr))
      or errors.ParseError("Invalid request: expected a JSON object, got " .. (type(msg) == "table" and "an array" or type(msg)))
    i.log:warn("Invalid request", { topic = subject, error = e.message })
    if t.last then clean_topic(i, t.topic) end
    return reply_error(i, reply, subject, e)
  end
  local meta = obj(msg.meta) or {}
  local trace = setmetatable(obj(msg.trace) or {}, TRACE_MT)
  local request = setmetatable(obj(msg.request) or {}, REQINFO_MT)
  local delegate = obj(msg.delegate) or {}
  local p = obj(msg.pattern)
  if not p then
    if t.last then clean_topic(i, t.topic) end
    return reply_error(i, reply, subject,
      errors.ParseError("Invalid request: 'pattern' must be an object, got " .. type(msg.pattern)),
      meta, trace, request)
  end
  local def = i.router:lookup(p)
  if t.last then clean_topic(i, t.topic) end
  local ctx = setmetatable({ meta = meta, trace = trace, delegate = delegate, request = request,
                             context = self.context, matchedAction = def, topic = subject },
                           { __index = self })
  local result, err
  if not def then
    err = errors.PatternNotFound("No action found for this pattern",
      { app = i.config.name, isServer = true, pattern = trace.method or pattern.method(p) })
  else
    local ok, r, e = xpcall(def.action, capture, p, ctx)
    if not ok then
      err = errors.from_value(r.err, r.trace)
    elseif e ~= nil then
      err = errors.from_value(e)
    else
      result = r
    end
  end
  if err then
    i.log:debug("Request failed", { topic = subject, error = tostring(err) })
  end
  if not reply then return end
  local out = setmetatable({ meta = ctx.meta, trace = trace, request = request }, REPLY_MT)
  if err then
    out.result = null
    out.error = errors.to_wire(errors.root(err), hop(i, trace, subject))
  else
    out.result = result
    out.error = null
  end
  send_reply(i, reply, out, subject)
  i.log:debug("Request responded", { topic = subject })
end

-- Counted while it runs (reply included), so close() can wait for it.
local function serve(self, t, subject, reply, data)
  local i = self._i
  i.inflight = i.inflight + 1
  local ok, err = xpcall(serve_message, traceback, self, t, subject, reply, data)
  if not ok then i.log:error("Internal error while serving a request", { error = err }) end
  handler_done(i)
end

local function subscribe(self, t)
  local i = self._i
  local queue = nil
  if not t.pubsub then queue = t.queue or ("queue." .. t.topic) end
  local sub, err = i.conn:subscribe(t.topic, queue, t.maxMessages or 0, function(subject, reply, data)
    return serve(self, t, subject, reply, data)
  end)
  if not sub then
    error(errors.HemeraError(("Could not subscribe to topic '%s': %s"):format(t.topic, tostring(err))), 3)
  end
  t.sub = sub
end

-- hemera:add(pattern, handler) -> the action definition
-- handler(req, ctx): return the result; `return nil, err` or error(err)
-- for an error reply. `ctx:act{...}` is a nested act.
function Hemera:add(p, handler)
  local i = self._i
  if p == nil then error(errors.HemeraError("Pattern is required to define a server action"), 2) end
  if type(p) ~= "table" and type(p) ~= "string" then
    error(errors.HemeraError("Pattern must be a table or a string, got " .. type(p)), 2)
  end
  p = pattern.normalize(p)
  if type(p.topic) ~= "string" or p.topic == "" then
    error(errors.HemeraError("Topic is required and must be from type string"), 2)
  end
  if type(handler) ~= "function" then
    error(errors.HemeraError("Action handler must be a function, got " .. type(handler)), 2)
  end
  local transport = {
    topic = p.topic,
    pubsub = p["pubsub$"] == true or nil,
    queue = p["queue$"],
    maxMessages = p["maxMessages$"],
  }
  local t = i.topics[p.topic]
  if t and (t.pubsub ~= transport.pubsub or t.queue ~= transport.queue or t.maxMessages ~= transport.maxMessages) then
    error(errors.HemeraError("Topic is already registered with special transport options",
      { topic = p.topic }), 2)
  end
  if i.config.bloomrun.lookupBeforeAdd and i.router:lookup(p) then
    error(errors.HemeraError("Pattern is already in use", { pattern = pattern.method(p) }), 2)
  end
  local def = {
    pattern = pattern.clean(p),
    schema = pattern.schema(p),
    transport = transport,
    action = handler,
  }
  local id, err = i.router:add(p, def)
  if not id then error(errors.HemeraError("Invalid pattern: " .. tostring(err)), 2) end
  def.id = id
  if not t then
    t = { topic = p.topic, pubsub = transport.pubsub, queue = transport.queue,
          maxMessages = transport.maxMessages, count = 0 }
    i.topics[p.topic] = t
    if i.conn then subscribe(self, t) end
  end
  i.log:debug("Server action added", { pattern = pattern.method(p) })
  return def
end

-- hemera:remove(topic) -> true, or false when the topic is unknown.
function Hemera:remove(topic)
  if topic == nil then error(errors.HemeraError("The sid or topic name is required"), 2) end
  if type(topic) ~= "string" then
    error(errors.HemeraError(("Topic must be from type string or number but got '%s'"):format(type(topic))), 2)
  end
  return clean_topic(self._i, topic)
end

function Hemera:removeAll()
  for topic in pairs(self._i.topics) do clean_topic(self._i, topic) end
end

-- hemera:list([pattern]) -> the action definitions (matching `pattern`).
function Hemera:list(p)
  if p ~= nil then p = pattern.normalize(p) end
  return self._i.router:list(p)
end

-- }==================================================================

-- {==================================================================
-- Client side
-- ===================================================================

local function copy(t)
  local o = {}
  if t then for k, v in pairs(t) do o[k] = v end end
  return o
end

-- Turns the outcome of a request into result, err (and updates actx).
local function complete(i, actx, method, st, data)
  if st == "timeout" then
    return nil, errors.TimeoutError("Client timeout", { app = i.config.name, isServer = false, pattern = method })
  elseif st == "failed" then
    return nil, errors.HemeraError("Request could not be sent: " .. tostring(data),
      { app = i.config.name, isServer = false, pattern = method })
  elseif st ~= nil then
    return nil, errors.HemeraError("NATS connection closed before the reply",
      { app = i.config.name, isServer = false, pattern = method, code = st })
  end
  local msg, derr = decode(data)
  if type(msg) ~= "table" or getmetatable(msg) == array_mt then
    return nil, errors.ParseError("Client payload decoding: " .. tostring(derr or "expected a JSON object"))
  end
  if obj(msg.meta) then actx.meta = msg.meta end
  if obj(msg.request) then actx.request = setmetatable(msg.request, REQINFO_MT) end
  local trace = obj(msg.trace)
  if trace then
    setmetatable(trace, TRACE_MT)
    if type(trace.timestamp) == "number" then trace.duration = hrtime() - trace.timestamp end
    actx.trace = trace
  end
  if msg.error ~= nil and msg.error ~= false then
    return nil, errors.from_wire(msg.error)
  end
  return msg.result, nil
end

-- hemera:act(pattern [, cb])
--   In a Hemera coroutine without cb: returns result, err, ctx.
--   With cb: returns at once; cb(err, result, ctx) runs once in a coroutine.
function Hemera:act(p, cb)
  local i = self._i
  if p == nil then error(errors.HemeraError("Pattern is required to start a request"), 2) end
  if type(p) ~= "table" and type(p) ~= "string" then
    error(errors.HemeraError("Pattern must be a table or a string, got " .. type(p)), 2)
  end
  if cb ~= nil and type(cb) ~= "function" then
    error(errors.HemeraError("act callback must be a function, got " .. type(cb)), 2)
  end
  p = pattern.normalize(p)
  if type(p.topic) ~= "string" or p.topic == "" then
    error(errors.HemeraError("Topic is required and must be from type string"), 2)
  end
  if not i.conn then
    error(errors.HemeraError("Not connected: call hemera:ready() first"), 2)
  end
  if not cb and not core.in_coroutine() then
    error(errors.HemeraError("act outside a Hemera coroutine needs a callback: hemera:act(pattern, function(err, result) ... end)"), 2)
  end
  local method = pattern.method(p)
  local meta = copy(self.meta)
  if type(p["meta$"]) == "table" then
    for k, v in pairs(p["meta$"]) do meta[k] = v end
  end
  local parent = self.trace or {}
  local tr = p["trace$"]
  local trace = setmetatable({}, TRACE_MT)
  if type(tr) == "table" then
    trace.spanId = tr.spanId or i.idgen()
    trace.traceId = tr.traceId or i.idgen()
    trace.parentSpanId = tr.parentSpanId or parent.spanId
  else
    -- Hemera quirk kept for the wire: a nested call reuses its parent's
    -- spanId as its own.
    trace.spanId = parent.spanId or i.idgen()
    trace.traceId = parent.traceId or i.idgen()
    trace.parentSpanId = parent.spanId
  end
  trace.timestamp = hrtime()
  trace.service = p.topic
  trace.method = method
  local pubsub = p["pubsub$"] == true
  local request = setmetatable({ id = p["requestId$"] or i.idgen(), type = pubsub and "pubsub" or "request",
                                 service = p.topic, method = method }, REQINFO_MT)
  local delegate = obj(p["delegate$"]) or {}
  local actx = setmetatable({ meta = meta, trace = trace, delegate = delegate, request = request,
                              context = p["context$"] or self.context }, { __index = i.root })
  local payload, eerr = encode(setmetatable({ pattern = pattern.clean(p), meta = meta, delegate = delegate,
                                              trace = trace, request = request }, REQUEST_MT))
  local function finish(result, err)
    if cb then
      spawn(cb, err, result, actx)
      return
    end
    return result, err, actx
  end
  if not payload then
    return finish(nil, errors.ParseError("Client payload encoding: " .. eerr))
  end
  if pubsub then
    local ok, perr = i.conn:publish(p.topic, payload)
    if not ok then return finish(nil, errors.HemeraError("Publish failed: " .. tostring(perr))) end
    return finish(nil, nil)
  end
  local timeout = p["timeout$"] or i.config.timeout
  if cb then
    local id, rerr = i.conn:request(p.topic, payload, timeout, 1, function(st, data)
      local result, err = complete(i, actx, method, st, data)
      return cb(err, result, actx)
    end)
    if not id then return finish(nil, errors.HemeraError("Request failed: " .. tostring(rerr))) end
    return
  end
  local st, data = i.conn:request(p.topic, payload, timeout, 1)
  return finish(complete(i, actx, method, st, data))
end

-- }==================================================================

-- {==================================================================
-- Lifecycle
-- ===================================================================

-- hemera:ready([fn]): connects to NATS and subscribes the topics added so
-- far; then fn(hemera) runs in a coroutine (so it may act). Raises when
-- NATS cannot be reached.
function Hemera:ready(fn)
  local i = self._i
  if i.readied then error(errors.HemeraError("Hemera was already bootstraped"), 2) end
  if fn ~= nil and type(fn) ~= "function" then
    error(errors.HemeraError("ready callback must be a function, got " .. type(fn)), 2)
  end
  i.readied = true
  local copts = copy(i.nats)
  copts.servers = i.servers
  copts.name = copts.name or i.config.name
  local conn, err = core.connect(copts, function(event, text)
    if event == "disconnected" then
      if not i.closing then i.log:warn("NATS disconnected!") end
    elseif event == "reconnected" then i.log:info("NATS reconnected!")
    elseif event == "closed" then i.log:info("NATS connection closed")
    else i.log:error("NATS error", { error = text }) end
  end)
  if not conn then
    i.log:fatal("Could not connect to NATS!", { error = err })
    error(errors.HemeraError(err, { code = "CONN_ERR" }), 2)
  end
  i.conn = conn
  open_instances[self] = true
  i.log:info("Connected!")
  for _, t in pairs(i.topics) do subscribe(self, t) end
  -- Ready means the server has our subscriptions: a round trip proves it.
  if not fn and core.in_coroutine() then
    local st = conn:flush(i.config.timeout)
    if st then error(errors.HemeraError("NATS did not confirm the subscriptions: " .. st), 2) end
    return true
  end
  conn:flush(i.config.timeout, function(st)
    if st then i.log:error("NATS did not confirm the subscriptions", { error = st }) end
    if fn then fn(self) end
  end)
  return true
end

-- hemera:flush(): in a Hemera coroutine, returns once the server has
-- processed everything this instance sent (e.g. subscriptions of adds made
-- after ready). Returns true, or nil and "timeout" / "closed".
function Hemera:flush()
  local i = self._i
  if not i.conn then error(errors.HemeraError("Not connected: call hemera:ready() first"), 2) end
  local st = i.conn:flush(i.config.timeout)
  if st then return nil, st end
  return true
end

-- hemera:close([fn]): stops taking requests, lets running handlers finish
-- (at most closeTimeout ms), then closes the connection; fn() runs after.
function Hemera:close(fn)
  local i = self._i
  if i.closing then
    if fn then
      if i.closed then spawn(fn) else i.close_waiters[#i.close_waiters + 1] = fn end
    end
    return
  end
  i.closing = true
  i.close_waiters = { fn }
  local function finish()
    i.closed = true
    open_instances[self] = nil
    for _, f in ipairs(i.close_waiters) do spawn(f) end
  end
  for _, t in pairs(i.topics) do
    if t.sub then t.sub:unsubscribe() end
    t.sub = nil
  end
  if not i.conn then return finish() end
  local done = false
  local function shut()
    if done then return end
    done = true
    i.on_drained = nil
    i.conn:close(finish)
  end
  if i.inflight == 0 then return shut() end
  i.on_drained = shut
  spawn(function()
    core.sleep(i.config.closeTimeout)
    if not done then
      i.log:warn("Closing with handlers still running", { running = i.inflight })
      shut()
    end
  end)
end

-- Closes every connected instance (the interpreter calls this on SIGINT).
function Hemera.closeAll()
  for inst in pairs(open_instances) do inst:close() end
end

-- Read-only views.
function Hemera:config() return self._i.config end
function Hemera:topics()
  local out = {}
  for k in pairs(self._i.topics) do out[#out + 1] = k end
  table.sort(out)
  return out
end
function Hemera:stats() return self._i.conn and self._i.conn:stats() end

-- }==================================================================

return Hemera
