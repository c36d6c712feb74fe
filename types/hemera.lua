---@meta hemera
-- LuaLS (LuaCATS) definitions of the public API of `require "hemera"`.
-- Definitions only: nothing here runs. docs/api.md is the reference;
-- tools/check-annotations.lua keeps the two and the code in step.

---@alias Hemera.Pattern table|string  a table with `topic`, or Hemera's quick syntax "topic:math,cmd:add"
---@alias Hemera.Handler fun(req: table, ctx: Hemera.Context): any, any?
---@alias Hemera.Callback fun(err: Hemera.Error?, result: any, ctx: Hemera.Context?)
---@alias Hemera.HookName "onAct"|"onActFinished"|"onRequest"|"preHandler"|"onError"|"onSend"|"onResponse"|"onAdd"|"onClose"

---@class Hemera.NatsOptions
---@field user? string
---@field password? string
---@field token? string
---@field tls? {ca?: string, cert?: string, key?: string, verify?: boolean}
---@field reconnect? boolean default true
---@field maxReconnect? integer default 60; -1 for ever
---@field reconnectWait? integer ms, default 2000
---@field connectTimeout? integer ms per server, default 2000
---@field retryOnFailedConnect? boolean default false
---@field maxPendingMsgs? integer per subscription
---@field maxPendingBytes? integer per subscription, default 64 MiB; -1 for none

---@class Hemera.Options
---@field servers? string|string[] NATS URL(s); default $HEMERA_NATS_URL or nats://127.0.0.1:4222
---@field nats? Hemera.NatsOptions connection options
---@field closeTimeout? integer ms `close` waits for running handlers, default 2000
---@field handlerBudget? integer CPU ms per request, default 1000; 0: no limit
---@field maxConcurrency? integer handlers running at once, default 1000
---@field name? string app name, default hemera-<host>-<id>
---@field timeout? integer act timeout in ms, default 2000
---@field pluginTimeout? integer ms a plugin's register may take, default 10; 0 disables
---@field tag? string added to request logs with traceLog
---@field logLevel? "fatal"|"error"|"warn"|"info"|"debug"|"trace"|"silent"
---@field prettyLog? boolean|{colors?: boolean, utc?: boolean}
---@field childLogger? boolean named plugins log through log:child{plugin = name}
---@field logger? table a logger (level methods) or a stream (`write`)
---@field traceLog? boolean
---@field maxRecursion? integer loop protection, active when > 1
---@field bloomrun? {indexing?: "insertion"|"depth", lookupBeforeAdd?: boolean}
---@field load? {checkPolicy?: boolean, process?: {sampleInterval?: integer}, policy?: {maxHeapUsedBytes?: integer, maxRssBytes?: integer, maxEventLoopDelay?: integer}}
---@field micro? {enabled?: boolean, prefix?: string, version?: string, description?: string, metadata?: table<string, string>}
---@field errio? {stack?: boolean}

---@class Hemera.Error
---@field name string
---@field message string
---@field code? integer|string
---@field hops? {service: string, method: string, app: string, ts: integer}[]
---@field stack? string

---@class Hemera.ErrorClass
---@overload fun(message?: string, fields?: table): Hemera.Error
local ErrorClass = {}
--- Whether `err` is an error of this class.
---@param err any
---@return boolean
function ErrorClass:is(err) end

---@class Hemera.Errors
---@field Error Hemera.ErrorClass the base class
---@field HemeraError Hemera.ErrorClass
---@field ParseError Hemera.ErrorClass wire name HemeraParseError
---@field TimeoutError Hemera.ErrorClass
---@field ResponseError Hemera.ErrorClass
---@field PatternNotFound Hemera.ErrorClass
---@field MaxRecursionError Hemera.ErrorClass
---@field ProcessLoadError Hemera.ErrorClass
---@field HandlerBudgetError Hemera.ErrorClass

---@class Hemera.Reply
---@field payload any
---@field error? Hemera.Error
---@field sent boolean
---@field isError boolean
local Reply = {}
--- Sends the reply once; a second send logs "Reply already sent".
---@param value any
---@param err? any
function Reply:send(value, err) end
--- Sends one more reply of a stream.
---@param value any
function Reply:next(value) end

---@class Hemera.Context
---@field meta table changes travel back to the caller
---@field trace {traceId: string, spanId: string, parentSpanId?: string, duration?: number}
---@field delegate table
---@field request {id: string, type: string, service: string, method: string}
---@field context table local only
---@field matchedAction? Hemera.Definition
---@field reply Hemera.Reply
---@field response? table the whole reply (act side)
---@field responseError? Hemera.Error
---@field replyTo? string
---@field auth? table
---@field delivery? {count: integer, stream_seq: integer, consumer_seq: integer, stream: string, consumer: string, subject: string, timestamp: integer, time: integer, pending: integer}
---@field sid? integer
---@field metrics? Hemera.MetricsRegistry with hemera.metrics
local Context = {}
--- A nested act that keeps the trace and the meta chain.
---@param pattern Hemera.Pattern
---@param cb? Hemera.Callback
---@return any result, Hemera.Error? err, Hemera.Context? ctx
function Context:act(pattern, cb) end

---@class Hemera.Definition
---@field pattern table
---@field schema table
---@field transport {topic: string, pubsub?: boolean, queue?: string, maxMessages?: integer}
---@field action? Hemera.Handler
local Definition = {}
--- Adds middleware `fn(req, reply, ctx)` (or a list of them) before the handler.
---@param fn function|function[]
---@return Hemera.Definition
function Definition:use(fn) end
--- Sets the handler (`end` is a Lua keyword).
---@param handler Hemera.Handler
---@return Hemera.Definition
function Definition:end_(handler) end

---@class Hemera.Future
local Future = {}
--- Sets the value(s), once, from anywhere.
---@param ... any
function Future:set(...) end
--- Waits, in a Hemera coroutine, for the values given to `set`.
---@param timeout_ms? integer
---@return any ...
function Future:wait(timeout_ms) end
--- Whether `set` was called.
---@return boolean
function Future:is_set() end

---@class Hemera.KV
local KV = {}
---@param key string
---@param value string
---@return integer? revision
---@return table? err a HemeraError
function KV:put(key, value) end
---@param key string
---@return string? value nil: no such key, or an error
---@return table? err a HemeraError
function KV:get(key) end
---@param keys string subject-like filter (`*`, `>`)
---@param fn fun(key: string, value: string, revision: integer)
---@return {stop: fun(self)} watcher
function KV:watch(keys, fn) end

---@class Hemera.Plugin
---@field name? string
---@field options? table
---@field dependencies? string[]
---@field decorators? string[]
---@field scoped? boolean
---@field register fun(scope: Hemera, opts: table)

---@class Hemera
---@field VERSION string
---@field null lightuserdata JSON null
---@field errors Hemera.Errors
---@field topics table<string, table> subscribed topics
---@field config Hemera.Options the instance's resolved options
---@field log table the instance's logger
---@field meta table
---@field trace table
---@field request table
---@field delegate table
---@field context table
---@field metrics? Hemera.MetricsRegistry with hemera.metrics
local Hemera = {}

--- Makes an instance; nothing connects before `ready`.
---@param options? Hemera.Options
---@return Hemera
function Hemera.new(options) end
--- Runs the event loop until every instance is closed.
function Hemera.run() end
--- Closes every instance.
function Hemera.closeAll() end
--- Closes every instance, then ends `Hemera.run()`.
function Hemera.shutdown() end
--- Graceful shutdown on the given signals (default SIGINT, SIGTERM).
---@param signals? string[]
function Hemera.handleSignals(signals) end
--- What to do with an error nobody receives: "exit" (default), "log", or call `fn(message)`.
---@param mode "exit"|"log"|fun(message: string)
function Hemera.onUncaughtError(mode) end
--- Runs `fn(...)` in a Hemera coroutine.
---@param fn function
---@param ... any
function Hemera.spawn(fn, ...) end
--- Suspends the running Hemera coroutine.
---@param ms integer
function Hemera.sleep(ms) end
--- A one-shot value.
---@return Hemera.Future
function Hemera.future() end
--- Makes (or returns) an error class.
---@param name string
---@return Hemera.ErrorClass
function Hemera.createError(name) end
--- A pattern value that matches by regular expression.
---@param source string
---@return userdata
function Hemera.regex(source) end
--- Marks a table as a JSON array (empty when `t` is nil).
---@param t? table
---@return table
function Hemera.array(t) end
--- Encodes to JSON; lenient when `skipped` (a table) is given.
---@param v any
---@param skipped? table
---@return string? json, string? err
function Hemera.encode(v, skipped) end
--- Decodes JSON.
---@param s string
---@return any value, string? err
function Hemera.decode(s) end
--- Parses Hemera's quick pattern syntax into a table.
---@param s string
---@return table
function Hemera.parsePattern(s) end

--- Connects, subscribes, loads the plugins, then `fn(err)`.
---@param fn? fun(err: Hemera.Error?)
---@return Hemera.Error? err
function Hemera:ready(fn) end
--- Drains, flushes, closes, runs onClose hooks, then `fn(err)`.
---@param fn? fun(err: Hemera.Error?)
---@return Hemera.Error? err
function Hemera:close(fn) end
--- Closes, then exits the process with status 1.
function Hemera:fatal() end
--- Returns once the server has processed everything sent so far.
function Hemera:flush() end
--- Adds an action.
---@param pattern Hemera.Pattern
---@param handler? Hemera.Handler
---@return Hemera.Definition
function Hemera:add(pattern, handler) end
--- Sends a request.
---@param pattern Hemera.Pattern
---@param cb? Hemera.Callback
---@return any result, Hemera.Error? err, Hemera.Context? ctx
function Hemera:act(pattern, cb) end
--- Iterates over several replies: `for result, err in hemera:stream(p) do`.
---@param pattern Hemera.Pattern
---@return fun(): any, Hemera.Error?
function Hemera:stream(pattern) end
--- Removes a topic (or a subscription id); true when something was removed.
---@param topic string|integer
---@return boolean
function Hemera:remove(topic) end
--- Removes every topic.
function Hemera:removeAll() end
--- The definitions matching `pattern` (all without).
---@param pattern? Hemera.Pattern
---@return Hemera.Definition[]
function Hemera:list(pattern) end
--- Connection counters.
---@return table
function Hemera:stats() end
--- Registers a plugin.
---@param plugin Hemera.Plugin|fun(scope: Hemera, opts: table)
---@param opts? table
---@return Hemera
function Hemera:use(plugin, opts) end
--- Runs `fn(scope)` after the plugins registered so far.
---@param fn fun(scope: Hemera)
---@return Hemera
function Hemera:after(fn) end
--- The registered plugins.
---@return table[]
function Hemera:plugins() end
--- Adds a hook.
---@param name Hemera.HookName
---@param fn function
---@return Hemera
function Hemera:ext(name, fn) end
--- Adds a member to the root.
---@param name string
---@param value any
---@param deps? string[]
function Hemera:decorate(name, value, deps) end
--- Adds a member to this scope and its children.
---@param name string
---@param value any
---@param deps? string[]
function Hemera:expose(name, value, deps) end
---@param name string
---@return boolean
function Hemera:hasDecorator(name) end
---@param fn fun(ctx: Hemera.Context, err: Hemera.Error, reply: Hemera.Reply)
function Hemera:setErrorHandler(fn) end
---@param fn fun(schema: table, def: Hemera.Definition): (fun(value: any, ctx: Hemera.Context): any, any?)?
function Hemera:setSchemaCompiler(fn) end
---@param fn fun(schema: table, def: Hemera.Definition): (fun(value: any, ctx: Hemera.Context): any, any?)?
function Hemera:setResponseSchemaCompiler(fn) end
---@param fn fun(value: any): string?, any?
function Hemera:setClientEncoder(fn) end
---@param fn fun(s: string): any, any?
function Hemera:setClientDecoder(fn) end
---@param fn fun(value: any): string?, any?
function Hemera:setServerEncoder(fn) end
---@param fn fun(s: string): any, any?
function Hemera:setServerDecoder(fn) end
--- Trace and request ids.
---@param fn fun(): string
function Hemera:setIdGenerator(fn) end
--- An unmatched request runs this pattern's action.
---@param pattern Hemera.Pattern?
function Hemera:setNotFoundPattern(pattern) end
--- This instance's Service API (ADR-32) description.
---@return table
function Hemera:service() end
--- Zeroes every endpoint's counters.
function Hemera:reset() end
--- A JetStream KV bucket (created when missing).
---@param bucket string
---@param opts? {history?: integer, maxAge?: integer}
---@return Hemera.KV
function Hemera:kv(bucket, opts) end
--- Iterates over a stream's stored messages.
---@param opts {stream: string, from_seq?: integer, from_time?: number|string, filter?: string, batch?: integer}
---@return fun(): {seq: integer, subject: string, topic?: string, data: string, time: number, timestamp: integer, rfc3339: string}?
function Hemera:replay(opts) end

return Hemera
