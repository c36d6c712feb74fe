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
-- Handlers, hooks, plugins and callbacks run in coroutines; `act` without
-- a callback suspends the coroutine until the reply or the timeout.
--
-- Scopes: a plugin gets a child of the instance that registered it
-- (setmetatable({}, {__index = parent})), with its own copy of the hook
-- lists; codecs, compilers, the error handler, the not-found pattern, the
-- id generator and exposed values set on it stay in it and its children.
-- A topic's settings belong to the scope that first subscribed it.

local core = require "hemera.core"
local errors = require "hemera.errors"
local pattern = require "hemera.pattern"
local log = require "hemera.log"
local util = require "hemera.util"
local wire = require "hemera.wire"
local server = require "hemera.server"
local client = require "hemera.client"
local config_mod = require "hemera.config"
local micro = require "hemera.micro"
local durable = require "hemera.durable"

local spawn, nuid = core.spawn, core.nuid
local copy, call = util.copy, util.call
local traceback, co_running = debug.traceback, coroutine.running

local Hemera = {}
-- CMake's project version, compiled into hemera.core (lua/hm_version.h.in).
Hemera.VERSION = core.VERSION

Hemera.__index = Hemera
-- Scope settings every message reads: unset is false here, so a lookup
-- ends at the class instead of missing twice.
Hemera._serverDecoder = false
Hemera._serverEncoder = false
Hemera._clientDecoder = false
Hemera._clientEncoder = false
Hemera._schemaCompiler = false
Hemera._responseSchemaCompiler = false
Hemera._notFoundPattern = false
Hemera._idGenerator = false
Hemera._errorHandler = false

Hemera.errors = errors
Hemera.null = core.null
Hemera.array = core.array
Hemera.regex = pattern.regex
Hemera.parsePattern = pattern.parse
Hemera.sleep = core.sleep
Hemera.future = core.future
Hemera.encode = core.encode
Hemera.decode = core.decode

function Hemera.createError(name)
  if type(name) ~= "string" then
    error(errors.HemeraError("Error name must be a string"), 2)
  end
  return errors.registry[name] or errors.class(name)
end

local HOOKS = {
  onAct = true, onActFinished = true, onRequest = true, preHandler = true, onSend = true,
  onResponse = true, onError = true, onAdd = true, onClose = true,
}

local open_instances = {} -- root instance -> true from ready() until closed

local function hemera_error(msg, fields, level)
  error(errors.HemeraError(msg, fields), (level or 1) + 1)
end

-- {==================================================================
-- Uncaught errors
-- ===================================================================
-- An error no Hemera code can answer for (a ready, act or close callback,
-- a function given to Hemera.spawn, a ready() without callback whose
-- plugins failed) goes to stderr with its traceback, whatever the log
-- level; then, by default ("exit"), every instance closes and Hemera.run()
-- raises, so the process ends with status 1. Hemera.onUncaughtError picks
-- "log" (keep serving) or a function of its own instead.

local uncaught_policy = "exit"
local failure -- the first uncaught error under "exit": Hemera.run raises it

-- A traceback ends where Hemera's frames begin: the first xpcall from the
-- top is the one that caught the error (guarded's, the trampoline's, or
-- util.call's for a plugin), and what lies below it says nothing about
-- the script.
local function trim(tb)
  local cut = tb:find("\n\t[C]: in function 'xpcall'", 1, true)
  return cut and tb:sub(1, cut - 1) or tb
end

-- xpcall message handler: the message (a table error by its __tostring)
-- with the traceback of where it was raised.
local function with_traceback(e)
  if type(e) ~= "string" then
    local ok, s = pcall(tostring, e)
    e = ok and type(s) == "string" and s or ("(error object is a " .. type(e) .. " value)")
  end
  return trim(traceback(e, 2))
end

-- An error value's text for the uncaught report: its message, with the
-- traceback it carries (a Hemera error keeps one in `stack`).
local function error_text(e)
  local stack = type(e) == "table" and rawget(e, "stack")
  local tb = type(stack) == "string" and stack:match("\nstack traceback:.*")
  return tostring(e) .. (tb and trim(tb) or "")
end

local function uncaught(text)
  local policy = uncaught_policy
  if type(policy) == "function" then
    local ok, perr = pcall(policy, text)
    if ok then return end
    text = text .. "\n(and Hemera.onUncaughtError's handler failed: " .. tostring(perr) .. ")"
    policy = "exit"
  end
  io.stderr:write("hemera: uncaught error: ", text, "\n")
  if policy == "log" then return end
  if failure == nil then failure = text end
  Hemera.shutdown()
end

-- The core's trampoline reports here what a coroutine started with
-- core.spawn raised: a string comes with its traceback (debug.traceback),
-- any other value as it is.
core.on_error = function(err)
  uncaught(type(err) == "string" and trim(err) or error_text(err))
end

-- Runs fn(...) and reports what it raises as uncaught, with the traceback
-- of where it was raised (the trampoline sees a table error only after
-- the stack has unwound). Through core.on_error, the one hook for every
-- uncaught error (a host or a spec may set its own).
local function report_uncaught(text)
  local h = core.on_error
  if h then h(text) else uncaught(text) end
end

local function guarded(fn, ...)
  local ok, err = xpcall(fn, with_traceback, ...)
  if not ok then report_uncaught(err) end
end

-- Hemera.onUncaughtError("exit" | "log" | fn): what an uncaught error does.
-- fn(message) gets the error's text with its traceback.
function Hemera.onUncaughtError(policy)
  if policy ~= "exit" and policy ~= "log" and type(policy) ~= "function" then
    hemera_error("Hemera.onUncaughtError: expected \"exit\", \"log\" or a function, got "
      .. tostring(policy), nil, 2)
  end
  uncaught_policy = policy
end

-- Hemera.spawn(fn, ...): runs fn(...) in a Hemera coroutine, soon.
function Hemera.spawn(fn, ...)
  if type(fn) ~= "function" then
    hemera_error("Hemera.spawn: expected a function, got " .. type(fn), nil, 2)
  end
  spawn(guarded, fn, ...)
end

-- An error or warning that must be seen: through the instance's logger
-- when it writes that level, else on stderr.
local function loud(logger, level, msg, fields)
  if logger.enabled == nil or logger:enabled(level) then
    logger[level](logger, msg, fields)
    return
  end
  local parts = {}
  for k, v in pairs(fields or {}) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  table.sort(parts)
  io.stderr:write("hemera: ", msg, #parts > 0 and (": " .. table.concat(parts, " ")) or "", "\n")
end

-- }==================================================================

-- {==================================================================
-- Creation
-- ===================================================================

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or os.getenv("HOSTNAME") or "localhost"
end

-- Hemera.new([options]) -> hemera. See docs/api.md for every option.
function Hemera.new(opts)
  local cfg = config_mod.build(opts or {}, 2)
  if cfg.name == nil then cfg.name = "hemera-" .. hostname() .. "-" .. nuid() end
  local i = {
    config = cfg,
    servers = cfg.servers, -- resolved at ready(): see server_urls
    topics = {},   -- topic -> { topic, pubsub, queue, maxMessages, sub, count, owner }
    topic_pos = {}, -- topic -> its index in the public hemera.topics list
    ntopics = 0,
    inflight = 0,  -- messages being served now
    -- coroutine -> the context it serves, false between messages (for
    -- close). Keyed by the pooled coroutine, not the context: the key is
    -- then already there, where a new key per message in this long-lived
    -- table cost about 700 instructions a request (hashing, rehashes of
    -- its dead keys). Weak: a coroutine the pool lets go is collected.
    running = setmetatable({}, { __mode = "k" }),
    on_close = {}, -- onClose hooks of every scope: { fn, scope }
  }
  i.router = core.router(cfg.bloomrun.indexing)
  i.micro_on = cfg.micro.enabled
  if i.micro_on then i.micro = micro.describe(cfg, Hemera.VERSION, 2) end
  local logger
  local given = cfg.logger
  if given ~= nil and type(given) == "table" and type(given.info) == "function" then
    logger = log.wrap(given)
  elseif given ~= nil and type(given.write) ~= "function" then
    hemera_error("Invalid option 'logger': expected a logger (a table with the level methods) "
      .. "or a stream (with a write method), got " .. tostring(given), { option = "logger" }, 2)
  else
    logger = log.new { level = cfg.logLevel, app = cfg.name, pretty = cfg.prettyLog or nil, stream = given }
  end
  -- Request logs cost tables on every message: decided once.
  i.log_requests = logger.enabled == nil or logger:enabled("info")
  local p = cfg.load.policy
  i.load_limits = p.maxHeapUsedBytes > 0 or p.maxRssBytes > 0 or p.maxEventLoopDelay > 0
  -- Read for every message: decided once (the configuration is fixed).
  i.check_load = cfg.load.checkPolicy and i.load_limits
  i.trace_log = cfg.traceLog
  i.budget = cfg.handlerBudget
  local self = setmetatable({
    _i = i,
    _ext = {},
    _queue = {},
    _plugins = {}, -- names of the plugins registered in this scope and above
    meta = {},
    trace = {},
    delegate = {},
    context = {},
    request = setmetatable({ type = "request", id = "" }, wire.ROOT_REQINFO_MT),
    log = logger,
    config = cfg,
    -- Hemera's read-only members, kept current as plain fields (a computed
    -- __index would slow every method call down).
    router = i.router,
    topics = {},          -- the subscribed topics, in no particular order
    load = core.load_table(), -- the last load sample
    transport = nil,      -- the NATS connection, once ready
    -- The scope settings above, here too: every message reads some, and
    -- a field of the root is found without the metatable (plugin scopes
    -- find it one step up).
    _serverDecoder = false, _serverEncoder = false, _clientDecoder = false, _clientEncoder = false,
    _schemaCompiler = false, _responseSchemaCompiler = false, _idGenerator = false,
  }, Hemera)
  -- onClose hooks live in i.on_close (every scope's run at close).
  for name in pairs(HOOKS) do
    if name ~= "onClose" then self._ext[name] = {} end
  end
  i.root = self
  return self
end

-- }==================================================================

-- {==================================================================
-- Server actions
-- ===================================================================

local Add = {}
Add.__index = Add

-- def:use(fn | {fn...}): middleware, run in order before the handler:
-- fn(req, reply, ctx) may reply (reply:send) to answer at once, or
-- return nil, err (or raise) to answer with that error.
function Add:use(fn)
  if type(fn) == "table" then
    for _, f in ipairs(fn) do self:use(f) end
    return self
  end
  if type(fn) ~= "function" then
    hemera_error("Middleware must be a function, got " .. type(fn), nil, 2)
  end
  self.middleware[#self.middleware + 1] = fn
  return self
end

-- def:end_(handler): sets the handler (`end` is a Lua keyword).
function Add:end_(handler)
  if type(handler) ~= "function" then
    hemera_error("Action handler must be a function, got " .. type(handler), nil, 2)
  end
  self.action = handler
  return self
end

local function no_handler()
  return nil, errors.HemeraError("No handler set for this action: call :end_(handler)")
end

local function subscribe(scope, t)
  local i = scope._i
  local queue = nil
  if not t.pubsub then queue = t.queue or ("queue." .. t.topic) end
  local owner = t.owner
  local running = i.running
  local sub, err = i.conn:subscribe(t.topic, queue, t.maxMessages or 0, function(ctx)
    -- Known while it runs, so that close can name what it abandons.
    local co = co_running()
    running[co] = ctx
    server.serve(owner, t, ctx)
    running[co] = false
  end, server.context_mt(owner))
  if not sub then
    -- The core's message names the topic, escaped and cut: a raw topic
    -- here could carry CR/LF or 10 KB into the caller's logs.
    hemera_error("Could not subscribe: " .. tostring(err), { topic = t.topic }, 3)
  end
  t.sub = sub
  micro.attach(i, t)
end

-- hemera.topics lists the subscribed topics in no particular order: a
-- topic joins at the end and leaves by moving the last one into its place,
-- so adding or removing one costs the same with ten topics or 10,000.
local function list_topic(i, topic)
  local n = i.ntopics + 1
  i.ntopics = n
  i.root.topics[n] = topic
  i.topic_pos[topic] = n
end

local function unlist_topic(i, topic)
  local list, pos = i.root.topics, i.topic_pos[topic]
  if not pos then return end
  local n = i.ntopics
  local last = list[n]
  list[pos] = last
  i.topic_pos[last] = pos
  list[n] = nil
  i.topic_pos[topic] = nil
  i.ntopics = n - 1
end

function Hemera:_cleanTopic(topic)
  local i = self._i
  local t = i.topics[topic]
  if not t then return false end
  if t.sub then t.sub:unsubscribe() end
  t.sub = nil
  i.router:remove_topic(topic)
  i.topics[topic] = nil
  unlist_topic(i, topic)
  return true
end

-- hemera:add(pattern [, handler]) -> the action definition (see Add).
function Hemera:add(p, handler)
  local i = self._i
  if p == nil then hemera_error("Pattern is required to define a server action", nil, 2) end
  if type(p) ~= "table" and type(p) ~= "string" then
    hemera_error("Pattern must be a table or a string, got " .. type(p), nil, 2)
  end
  p = pattern.without_nulls(pattern.normalize(p))
  if type(p.topic) ~= "string" or p.topic == "" then
    hemera_error("Topic is required and must be from type string", nil, 2)
  end
  if handler ~= nil and type(handler) ~= "function" then
    hemera_error("Action handler must be a function, got " .. type(handler), nil, 2)
  end
  -- Checked now, not when ready() subscribes: the error then points at
  -- this add. (The core checks every name again before it reaches NATS.)
  local sok, serr = core.subject_check(p.topic, "subscribe", "topic")
  if not sok then hemera_error(serr, { topic = p.topic }, 2) end
  local q = p["queue$"]
  if q ~= nil then
    if type(q) ~= "string" then hemera_error("queue$ must be a string, got " .. type(q), { topic = p.topic }, 2) end
    sok, serr = core.subject_check(q, "queue", "queue$")
    if not sok then hemera_error(serr, { topic = p.topic }, 2) end
  end
  local dcfg = p["durable$"] ~= nil and durable.check_add(self, p, 2) or nil
  local transport = {
    topic = p.topic,
    pubsub = p["pubsub$"] == true or nil,
    queue = p["queue$"],
    maxMessages = p["maxMessages$"],
  }
  local t = i.topics[p.topic]
  if t and (t.pubsub ~= transport.pubsub or t.queue ~= transport.queue or t.maxMessages ~= transport.maxMessages) then
    hemera_error("Topic is already registered with special transport options", { topic = p.topic }, 2)
  end
  if i.config.bloomrun.lookupBeforeAdd and i.router:lookup(p) then
    hemera_error("Pattern is already in use", { pattern = pattern.method(p) }, 2)
  end
  local def = setmetatable({
    pattern = pattern.routing(p),
    schema = pattern.schema(p),
    transport = transport,
    action = handler or no_handler,
    middleware = {},
    scope = self,
  }, Add)
  local id, err = i.router:add(p, def)
  if not id then hemera_error("Invalid pattern: " .. tostring(err), nil, 2) end
  def.id = id
  if not t then
    t = { topic = p.topic, pubsub = transport.pubsub, queue = transport.queue,
          maxMessages = transport.maxMessages, count = 0, owner = self }
    i.topics[p.topic] = t
    list_topic(i, p.topic)
    if i.conn then subscribe(self, t) end
  end
  if dcfg then durable.add(self, t, dcfg, 2) end
  for _, hook in ipairs(self._ext.onAdd) do
    local ok, herr = call(hook, def)
    if not ok then error(herr, 2) end
  end
  self.log:debug("Server action added", { pattern = pattern.method(p) })
  return def
end

-- hemera:remove(topic) -> true, or false when unknown. remove(sid) ends a
-- pending act (ctx.sid) without calling it back.
function Hemera:remove(topic)
  if topic == nil or topic == "" then hemera_error("The sid or topic name is required", nil, 2) end
  if type(topic) == "number" then
    return self._i.conn ~= nil and self._i.conn:cancel(topic)
  end
  if type(topic) ~= "string" then
    hemera_error(("Topic must be from type string or number but got '%s'"):format(type(topic)), nil, 2)
  end
  return self:_cleanTopic(topic)
end

function Hemera:removeAll()
  for topic in pairs(self._i.topics) do self:_cleanTopic(topic) end
end

-- hemera:list([pattern] [, {patterns = true}]) -> definitions, or their
-- patterns, in lookup order.
function Hemera:list(p, opts)
  if p ~= nil then p = pattern.normalize(p) end
  local defs = self._i.router:list(p)
  if opts and opts.patterns then
    for k, d in ipairs(defs) do defs[k] = d.pattern end
  end
  return defs
end

-- }==================================================================

-- {==================================================================
-- Client
-- ===================================================================

local function check_act(self, p, level)
  if p == nil then hemera_error("Pattern is required to start a request", nil, level + 1) end
  if type(p) ~= "table" and type(p) ~= "string" then
    hemera_error("Pattern must be a table or a string, got " .. type(p), nil, level + 1)
  end
  local method
  p, method = pattern.normalize_act(p)
  if type(p.topic) ~= "string" or p.topic == "" then
    hemera_error("Topic is required and must be from type string", nil, level + 1)
  end
  if not self._i.conn then
    hemera_error(self._i.connection and "Not connected yet: act once ready() is over (its callback, or its return in a coroutine)"
                 or "Not connected: call hemera:ready() first", nil, level + 1)
  end
  return p, method
end

-- hemera:act(pattern [, cb])
--   In a Hemera coroutine without cb: returns result, err, ctx.
--   With cb: returns the act context at once; cb(err, result, ctx) runs in
--   a coroutine once per reply (several with maxMessages$/expectedMessages$).
function Hemera:act(p, cb)
  if cb ~= nil and type(cb) ~= "function" then
    hemera_error("act callback must be a function, got " .. type(cb), nil, 2)
  end
  local method
  p, method = check_act(self, p, 2)
  if p["durable$"] ~= nil and p["durable$"] ~= false then
    if not cb and not core.in_coroutine() then
      hemera_error("A durable act outside a Hemera coroutine needs a callback", nil, 2)
    end
    return durable.act(self, p, cb)
  end
  if not cb and not core.in_coroutine() then
    hemera_error("act outside a Hemera coroutine needs a callback: hemera:act(pattern, function(err, result) ... end)", nil, 2)
  end
  if cb then
    return client.act(self, p, function(err, result, ctx) guarded(cb, err, result, ctx) end, method)
  end
  return client.act(self, p, nil, method)
end

-- hemera:stream(pattern) -> iterator over replies (see hemera.client).
function Hemera:stream(p)
  p = check_act(self, p, 2)
  if not core.in_coroutine() then
    hemera_error("stream must run in a Hemera coroutine", nil, 2)
  end
  return client.stream(self, p)
end

-- hemera:replay{stream, from_seq | from_time, filter} -> iterator over
-- stored messages (hemera.durable).
function Hemera:replay(opts) return durable.replay(self, opts) end

-- hemera:kv(bucket [, opts]) -> a JetStream KV bucket (hemera.durable).
function Hemera:kv(bucket, opts) return durable.kv(self, bucket, opts) end

-- }==================================================================

-- {==================================================================
-- Extension points and scope settings
-- ===================================================================

function Hemera:ext(name, fn)
  if not HOOKS[name] then
    error(errors.HemeraError("Extension type is unknown", { type = name, handler = fn }), 2)
  end
  if type(fn) ~= "function" then hemera_error("Extension handler must be a function", nil, 2) end
  if name == "onClose" then
    -- Every scope's onClose hooks run at close, last added first.
    local list = self._i.on_close
    list[#list + 1] = { fn = fn, scope = self }
    return self
  end
  local list = self._ext[name]
  list[#list + 1] = fn
  return self
end

local function setter(field, label)
  return function(self, fn)
    if type(fn) ~= "function" then hemera_error(label .. " must be a function", nil, 2) end
    rawset(self, field, fn)
    return self
  end
end

Hemera.setClientEncoder = setter("_clientEncoder", "ClientEncoder")
Hemera.setClientDecoder = setter("_clientDecoder", "ClientDecoder")
Hemera.setServerEncoder = setter("_serverEncoder", "ServerEncoder")
Hemera.setServerDecoder = setter("_serverDecoder", "ServerDecoder")
Hemera.setSchemaCompiler = setter("_schemaCompiler", "SchemaCompiler handler")
Hemera.setResponseSchemaCompiler = setter("_responseSchemaCompiler", "ResponseSchemaCompiler handler")
Hemera.setErrorHandler = setter("_errorHandler", "ErrorHandler handler")
Hemera.setIdGenerator = setter("_idGenerator", "IdGenerator")

-- hemera:setNotFoundPattern(pattern | string | nil): unmatched requests of
-- this scope's topics run that pattern's action with the original request.
function Hemera:setNotFoundPattern(p)
  if p == nil then
    -- false, not nil: a reset scope must not fall back to its parent's.
    rawset(self, "_notFoundPattern", false)
    rawset(self, "notFoundPattern", nil)
    local mt = getmetatable(self)
    if mt ~= Hemera and type(mt.__index) == "table" then
      -- A plugin scope reads nil here too, not its parent's pattern (a
      -- rare call: only such scopes pay for a function __index).
      local parent = mt.__index
      mt.__index = function(_, k)
        if k == "notFoundPattern" then return nil end
        return parent[k]
      end
    end
    return self
  end
  p = pattern.normalize(p)
  rawset(self, "_notFoundPattern", p)
  rawset(self, "notFoundPattern", p)
  return self
end

-- }==================================================================

-- {==================================================================
-- Plugins and decorators
-- ===================================================================

-- hemera:decorate(name, value [, deps]): a member on the root instance,
-- visible to every scope.
function Hemera:decorate(name, value, deps)
  local root = self._i.root
  if root[name] ~= nil then hemera_error("Decoration has been already added", { name = name }, 2) end
  for _, d in ipairs(deps or {}) do
    if root[d] == nil then hemera_error(("Missing member dependency '%s'"):format(d), nil, 2) end
  end
  rawset(root, name, value)
  return self
end

-- hemera:expose(name, value [, deps]): a member of this scope and its
-- children only.
function Hemera:expose(name, value, deps)
  if self[name] ~= nil then hemera_error("Exposition has been already added", { name = name }, 2) end
  for _, d in ipairs(deps or {}) do
    if self[d] == nil then hemera_error(("Missing member dependency '%s'"):format(d), nil, 2) end
  end
  rawset(self, name, value)
  return self
end

function Hemera:hasDecorator(name)
  return self[name] ~= nil
end

-- The plugin's description, whatever form it was given in.
local function plugin_meta(plugin)
  if type(plugin) == "function" then
    return { register = plugin, name = nil, options = {}, scoped = true }
  end
  if type(plugin) ~= "table" or type(plugin.register) ~= "function" then
    hemera_error("A plugin must be a function or a table with a register function, got " .. type(plugin), nil, 3)
  end
  return {
    register = plugin.register,
    name = plugin.name,
    options = plugin.options or {},
    dependencies = plugin.dependencies,
    decorators = plugin.decorators,
    scoped = plugin.scoped ~= false,
    plugin = plugin,
  }
end

-- hemera:use(plugin [, opts]): registers a plugin, loaded in order when
-- ready() runs; inside a plugin's register, after that plugin. Returns the
-- instance, so use/after chain.
function Hemera:use(plugin, opts)
  local meta = plugin_meta(plugin)
  -- hemera:use(require "hemera.msgpack"): Lua 5.4's require also returns
  -- its loader data (the file name) the first time, which is not options.
  if type(opts) == "string" then opts = nil end
  if opts ~= nil and type(opts) ~= "table" then hemera_error("The options object should be a table", nil, 2) end
  local q = rawget(self, "_queue") or self._queue
  q[#q + 1] = { meta = meta, opts = opts or {} }
  if self._i.plugins_loaded then
    hemera_error("Plugins must be registered before ready() (or inside another plugin)", nil, 2)
  end
  return self
end

-- hemera:after(fn): fn(hemera) runs once the plugins registered before it
-- have loaded.
function Hemera:after(fn)
  if type(fn) ~= "function" then hemera_error("after callback must be a function", nil, 2) end
  local q = rawget(self, "_queue") or self._queue
  q[#q + 1] = { after = fn }
  return self
end

local function check_plugin(scope, meta)
  local deps = meta.dependencies
  if deps ~= nil then
    if type(deps) ~= "table" then hemera_error("Plugin dependencies must be an array of strings", nil, 4) end
    local known = {}
    for _, n in ipairs(scope._plugins) do known[n] = true end
    for _, d in ipairs(deps) do
      if not known[d] then
        hemera_error(("The dependency '%s' is not registered"):format(tostring(d)), nil, 4)
      end
    end
  end
  for _, d in ipairs(meta.decorators or {}) do
    if scope[d] == nil then
      hemera_error(("The decorator dependency '%s' is not registered"):format(tostring(d)), nil, 4)
    end
  end
end

local function child_scope(parent, meta)
  local ext = {}
  for name, list in pairs(parent._ext) do ext[name] = copy(list) end
  local child = setmetatable({ _ext = ext, _queue = {}, _plugin = meta.name,
                               _plugins = copy(parent._plugins) }, { __index = parent })
  if meta.name and parent._i.config.childLogger and parent.log.child then
    child.log = parent.log:child { plugin = meta.name }
  end
  return child
end

-- Runs one plugin's register within pluginTimeout, then its own plugins.
local function load_plugin(scope, entry)
  local i = scope._i
  local meta = entry.meta
  local ok, err = pcall(check_plugin, scope, meta)
  if not ok then return err end
  -- A plugin is registered in the scope that uses it, before its register
  -- runs: it sees itself, its children see it, its parent's siblings not.
  if meta.name then
    local list = rawget(scope, "_plugins")
    list[#list + 1] = meta.name
  end
  local target = meta.scoped and child_scope(scope, meta) or scope
  local opts = copy(meta.options)
  for k, v in pairs(entry.opts) do opts[k] = v end
  -- Nested use() calls inside register land in a fresh queue, loaded right
  -- after this plugin (avvio's order), also for unscoped plugins.
  local saved = rawget(target, "_queue")
  rawset(target, "_queue", {})
  local done = core.future()
  spawn(function()
    done:set(call(meta.register, target, opts))
  end)
  local limit = i.config.pluginTimeout
  local rok, rerr = done:wait(limit > 0 and limit or nil)
  local nested = rawget(target, "_queue")
  rawset(target, "_queue", saved)
  if rok == nil and rerr == "timeout" then
    return errors.HemeraError("ERR_AVVIO_PLUGIN_TIMEOUT: plugin did not start in time: " .. tostring(meta.name or "anonymous"),
      { code = "ERR_AVVIO_PLUGIN_TIMEOUT", fn = meta.plugin or meta.register })
  end
  if not rok then return rerr end
  for _, e in ipairs(nested) do
    local nerr
    if e.after then
      local aok, a = call(e.after, target)
      if not aok then nerr = a end
    else
      nerr = load_plugin(target, e)
    end
    if nerr then return nerr end
  end
  return nil
end

local function load_plugins(self)
  local i = self._i
  local q = self._queue
  self._queue = {}
  for _, e in ipairs(q) do
    local err
    if e.after then
      local ok, a = call(e.after, self)
      if not ok then err = a end
    else
      err = load_plugin(self, e)
    end
    if err then return err end
  end
  i.plugins_loaded = true
  return nil
end

-- }==================================================================

-- {==================================================================
-- Lifecycle
-- ===================================================================

-- The servers to connect to, and where they come from (for messages): the
-- option, else $HEMERA_NATS_URL, else the bundled interpreter's choice
-- (127.0.0.1:4222, or a private server it starts on demand), else
-- nats://127.0.0.1:4222. Each may be a comma-separated list.
local function server_urls(i)
  if i.servers then return i.servers, "servers" end
  local env = os.getenv("HEMERA_NATS_URL")
  if env and env ~= "" then return env, "HEMERA_NATS_URL" end
  local ok, dev = pcall(require, "hemera.devserver")
  local url = ok and type(dev) == "table" and dev.url()
  return url or "nats://127.0.0.1:4222", "the default server"
end

-- Instances finish ready() in the order it was called, although their
-- connects run side by side: each, once its own connect is over (and the
-- server has its topics' subscriptions), waits for the connects of those
-- called before. A script that readies a service, then a client that acts
-- on it, works as it reads. The future of the last call still settling,
-- or nil.
local last_settled

local function on_nats_event(i, event, text)
  local l = i.root.log
  if event == "disconnected" then
    if not i.closing then l:warn("NATS disconnected!") end
  elseif event == "reconnected" then
    i.reconnects = (i.reconnects or 0) + 1 -- read by hemera.metrics
    l:info("NATS reconnected!")
  elseif event == "closed" then
    l:info("NATS connection closed")
  else
    l:error("NATS error", { error = text })
  end
end

-- hemera:ready([fn]): connects to NATS without holding the loop up,
-- subscribes the topics added so far, loads the plugins in order, and
-- confirms the subscriptions with the server. Then fn(err) runs in a
-- coroutine, err a HemeraError with code CONN_ERR when no server could be
-- reached (the message names every URL tried; the instance then closes,
-- as Node Hemera's does), or a plugin's failure. In a coroutine without
-- fn it returns true, or nil and the error; outside one without fn, a
-- failure is raised in the coroutine that connects. A server list that is
-- not one raises here.
function Hemera:ready(fn)
  local i = self._i
  if i.readied then hemera_error("Hemera was already bootstraped", nil, 2) end
  if fn ~= nil and type(fn) ~= "function" then
    hemera_error("ready callback must be a function, got " .. type(fn), nil, 2)
  end
  local given, source = server_urls(i)
  local servers, serr = core.servers(given, source)
  if not servers then hemera_error("Invalid NATS servers: " .. serr, nil, 2) end
  i.readied = true
  local copts = copy(i.config.nats)
  copts.servers = servers
  copts.name = copts.name or i.config.name
  local conn = core.connect(copts, function(event, text) on_nats_event(i, event, text) end)
  i.connection = conn -- from now on, whatever its state (close, stats)
  open_instances[self] = true
  local before, settled = last_settled, core.future()
  last_settled = settled
  local function connect()
    local ok, cerr, code = conn:wait_connected()
    if ok and i.closing then ok, code = nil, "HM_CLOSED" end
    if not ok then
      if code == "HM_CLOSED" then
        return errors.HemeraError("Hemera was closed before NATS connected", { code = "CONN_CLOSED" })
      end
      self.log:fatal("Could not connect to NATS!", { error = cerr })
      return errors.HemeraError(cerr, { code = "CONN_ERR" })
    end
    i.conn = conn
    conn:credits(i.config.maxConcurrency)
    rawset(self, "transport", conn)
    self.log:info("Connected!")
    local interval = i.config.load.process.sampleInterval
    if interval > 0 then core.load_start(interval) end
    local n = 0
    for _, t in pairs(i.topics) do
      subscribe(t.owner, t)
      n = n + 1
    end
    local merr = micro.start(i)
    if merr then self.log:error(merr) end
    -- Those readied after this one go on once the server has these
    -- subscriptions: sent first is not the same as seen first (another
    -- connection's request can overtake them inside the server).
    if n > 0 then conn:flush(i.config.timeout) end
    return nil
  end
  local function boot()
    local cerr = connect()
    if before then before:wait() end
    settled:set(true)
    if last_settled == settled then last_settled = nil end
    if cerr then
      self:close()
      return cerr
    end
    local perr = load_plugins(self)
    if perr then
      self.log:fatal("Plugin failed to load", { error = perr })
    end
    -- Ready means the server has our subscriptions: a round trip proves it.
    local fok, ferr = conn:flush(i.config.timeout)
    if not fok and not perr then perr = errors.HemeraError("NATS did not confirm the subscriptions: " .. tostring(ferr)) end
    if not perr then i.is_ready = true end -- read by hemera.metrics' /healthz
    return perr
  end
  if not fn and core.in_coroutine() then
    local perr = boot()
    if perr then return nil, perr end
    return true
  end
  spawn(function()
    local perr = boot()
    if fn then
      guarded(fn, perr)
    elseif perr then
      self:close()
      -- A close while connecting is no news to whoever closed.
      if type(perr) ~= "table" or perr.code ~= "CONN_CLOSED" then
        report_uncaught("hemera:ready() failed: " .. error_text(perr))
      end
    end
  end)
  return true
end

-- hemera:flush(): in a Hemera coroutine, returns once the server has
-- processed everything this instance sent (e.g. subscriptions of adds made
-- after ready). Returns true, or nil and "timeout" / "closed".
function Hemera:flush()
  local i = self._i
  if not i.conn then hemera_error("Not connected: call hemera:ready() first", nil, 2) end
  local ok, err = i.conn:flush(i.config.timeout)
  if not ok then return nil, err end
  return true
end

-- Ending Hemera.run() when the loop would not end by itself. A close that
-- abandoned handlers ends it as soon as every instance has closed: the
-- abandoned ones (a sleep, a wait) would keep it alive. A shutdown (a
-- signal, an uncaught error) ends it at most SHUTDOWN_GRACE ms after the
-- last instance closed: longer than the 2 s the core gives coroutines
-- that spin after a signal, so those finish or are abandoned (and named)
-- first. Once a shutdown is through, Hemera.run() returns at once.
local SHUTDOWN_GRACE = 3000
local stop_after -- ms, once a stop is due when the last instance has closed
local shut_down -- nil, "closing" (Hemera.shutdown ran), "done" (all closed)

local function end_run()
  if stop_after and next(open_instances) == nil then
    core.stop_run(stop_after)
    stop_after = nil
    if shut_down then shut_down = "done" end
  end
end

local function abandon(i, limit)
  local root = i.root
  i.abandoned = true
  root.log:warn("Closing with handlers still running", { running = i.inflight })
  for _, ctx in pairs(i.running) do
    if ctx then
      local def = rawget(ctx, "matchedAction")
      local p = def and def.pattern or rawget(ctx, "pattern")
      loud(root.log, "warn", "Abandoned a handler still running at closeTimeout", {
        pattern = p and pattern.method(p) or rawget(ctx, "topic"), closeTimeout = limit })
    end
  end
end

-- hemera:close([fn]): stops taking requests, lets running handlers finish
-- (at most closeTimeout ms) and send their replies, flushes and closes the
-- connection, runs the onClose hooks (last added first), then fn(err) with
-- the first onClose error, if any. Handlers still running at closeTimeout
-- are abandoned (each named with its pattern), and Hemera.run() then ends
-- once every instance has closed: nothing would ever wake them.
function Hemera:close(fn)
  local i = self._i
  local root = i.root
  if fn ~= nil and type(fn) ~= "function" then
    hemera_error("close callback must be a function, got " .. type(fn), nil, 2)
  end
  if i.closing then
    if fn then
      if i.closed then spawn(guarded, fn, i.close_error) else i.close_waiters[#i.close_waiters + 1] = fn end
    end
    return
  end
  i.closing = true
  i.close_waiters = { fn }
  micro.stop(i)
  local function finish()
    core.load_stop()
    local first
    local hooks = i.on_close
    for k = #hooks, 1, -1 do
      local ok, err = call(hooks[k].fn, hooks[k].scope)
      if not ok then
        root.log:error("onClose extension", { error = err })
        first = first or err
      end
    end
    i.closed = true
    i.close_error = first
    open_instances[root] = nil
    if i.abandoned then stop_after = 0 end
    for _, f in ipairs(i.close_waiters) do spawn(guarded, f, first) end
    -- After the callbacks (the ready queue is FIFO).
    spawn(end_run)
  end
  if not i.conn then
    -- Still connecting: ready ends with CONN_CLOSED.
    if i.connection then i.connection:close() end
    root:removeAll()
    spawn(finish)
    return
  end
  local limit = i.config.closeTimeout
  local started = core.hrtime()
  -- Stop taking requests without losing those NATS already sent here: each
  -- subscription drains (the server stops sending now, and every message
  -- it sent before is still served), and only then do the topics and their
  -- patterns go, so that no request of a rolling restart waits for nothing
  -- or meets PatternNotFound. cnats gives each draining subscription a
  -- short-lived thread: waves of 256 (the next when the last is over, so
  -- that each wave shares one round trip) keep 10,000 topics from starting
  -- 10,000 threads at once.
  local subs, n = {}, 0
  for _, t in pairs(i.topics) do
    if t.sub then n = n + 1; subs[n] = t.sub end
  end
  local left, next_sub, drained = 0, 1, core.future()
  local one_done
  local function start_more()
    if left > 0 then return end -- the wave is not over
    while left < 256 and next_sub <= n do
      local sub = subs[next_sub]
      subs[next_sub] = nil
      next_sub = next_sub + 1
      if sub:active() and sub:drain(one_done, limit) then left = left + 1 end
    end
    if left == 0 then drained:set(true) end
  end
  one_done = function()
    left = left - 1
    start_more()
  end
  start_more()
  spawn(function()
    if not drained:wait(limit) then
      root.log:warn("Closing before every subscription has drained", { draining = left })
    end
    root:removeAll()
    if i.inflight > 0 then
      local idle = core.future()
      i.on_drained = function() idle:set(true) end
      local rest = limit - math.floor(core.hrtime() - started)
      if not idle:wait(rest > 1 and rest or 1) then abandon(i, limit) end
      i.on_drained = nil
    end
    i.conn:close(finish)
  end)
end

-- hemera:fatal(): closes, then exits the process with status 1.
function Hemera:fatal()
  self:close(function() os.exit(1) end)
end

-- Closes every connected instance.
function Hemera.closeAll()
  for inst in pairs(open_instances) do inst:close() end
end

-- Hemera.shutdown(): closes every instance, then ends Hemera.run() (what
-- a handled signal does). From then on Hemera.run() returns at once.
function Hemera.shutdown()
  shut_down = shut_down or "closing"
  if stop_after ~= 0 then stop_after = SHUTDOWN_GRACE end
  Hemera.closeAll()
  spawn(end_run)
end

-- Hemera.run(): runs the loop until every instance is closed and nothing
-- is pending, or a shutdown ended it. Raises a HemeraError (code
-- UNCAUGHT) when an uncaught error ended it.
function Hemera.run()
  if shut_down ~= "done" then core.run() end
  if failure ~= nil then
    error(errors.HemeraError("Hemera.run ended by an uncaught error: " .. failure:match("^[^\n]*"),
      { code = "UNCAUGHT" }), 2)
  end
end

local function on_signal(name)
  io.stderr:write("hemera: ", name, ": closing every instance (again to exit at once)\n")
  Hemera.shutdown()
end

-- Hemera.handleSignals{ "SIGINT", "SIGTERM" }: on the first of these
-- signals, Hemera.shutdown(); a second one exits at once (status 128 +
-- the signal's number). See hm_lua_signal.c.
function Hemera.handleSignals(names)
  if type(names) ~= "table" then
    hemera_error("Hemera.handleSignals: expected a list of signal names such as "
      .. "{ \"SIGINT\", \"SIGTERM\" }, got " .. type(names), nil, 2)
  end
  core.handle_signals(names, on_signal)
end

-- The connection's counters from ready() on (the last ones once closed),
-- nil before.
function Hemera:stats() return self._i.connection and self._i.connection:stats() end

-- hemera:reset(): the Service API's counters (STATS) back to zero.
function Hemera:reset()
  micro.reset(self._i)
  return self
end

-- hemera:service() -> this instance's Service API INFO response (a table),
-- or nil when the Service API is off or the instance is not ready.
function Hemera:service()
  local i = self._i
  if not i.micro_subs then return nil end
  return micro.info(i)
end

-- The names of the plugins registered in this scope and its parents.
function Hemera:plugins() return copy(self._plugins) end

-- }==================================================================

return Hemera
