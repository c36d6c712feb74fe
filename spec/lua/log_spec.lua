-- log_spec.lua: hemera.log, the pino-shaped structured logger.
local log = require "hemera.log"
local core = require "hemera.core"
local errors = require "hemera.errors"

local T = 1795860000123 -- 2026-11-28 10:00:00.123 UTC

-- A fake stream: keeps every write, counts flushes.
local function sink()
  local s = { writes = {}, flushes = 0 }
  function s:write(...)
    for i = 1, select("#", ...) do self.writes[#self.writes + 1] = tostring((select(i, ...))) end
    return self
  end
  function s:flush() self.flushes = self.flushes + 1 end
  function s:text() return table.concat(self.writes) end
  function s:lines()
    local out = {}
    for line in self:text():gmatch("([^\n]*)\n") do out[#out + 1] = line end
    return out
  end
  return s
end

local function new(opts)
  local s = sink()
  opts = opts or {}
  opts.stream = s
  if opts.clock == nil then opts.clock = function() return T end end
  if opts.level == nil and opts.logLevel == nil then opts.level = "trace" end
  return log.new(opts), s
end

local function raises(f, pattern)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.HemeraError:is(e), "expected a HemeraError, got " .. tostring(e))
  assert.matches(pattern, e.message, 1, true)
  return e
end

describe("hemera.log JSON lines", function()
  it("writes pino's shape: level, time, msg, app, then fields in key order", function()
    local l, s = new { app = "svc" }
    l:info("Connected!")
    l:warn("Dropped a message", { topic = "math", count = 2, ok = true, ratio = 0.5 })
    assert.same({
      '{"level":30,"time":1795860000123,"msg":"Connected!","app":"svc"}',
      '{"level":40,"time":1795860000123,"msg":"Dropped a message","app":"svc","count":2,"ok":true,"ratio":0.5,"topic":"math"}',
    }, s:lines())
  end)

  it("uses the level numbers of pino for each method", function()
    local l, s = new()
    for _, name in ipairs { "fatal", "error", "warn", "info", "debug", "trace" } do l[name](l, name) end
    assert.same({
      '{"level":60,"time":1795860000123,"msg":"fatal"}',
      '{"level":50,"time":1795860000123,"msg":"error"}',
      '{"level":40,"time":1795860000123,"msg":"warn"}',
      '{"level":30,"time":1795860000123,"msg":"info"}',
      '{"level":20,"time":1795860000123,"msg":"debug"}',
      '{"level":10,"time":1795860000123,"msg":"trace"}',
    }, s:lines())
    assert.same({ fatal = 60, error = 50, warn = 40, info = 30, debug = 20, trace = 10, silent = math.huge }, log.LEVELS)
  end)

  it("stamps records with the wall clock in epoch milliseconds by default", function()
    local s = sink()
    local l = log.new { level = "info", stream = s }
    local before = os.time() * 1000
    l:info("hi")
    local line = s:lines()[1]
    local t = assert(tonumber(line:match('^{"level":30,"time":(%d+),"msg":"hi"}$')), line)
    assert.is_true(t >= before - 1000 and t <= os.time() * 1000 + 1000)
  end)

  it("writes one record per write call and flushes after each", function()
    local l, s = new()
    l:info("a", { x = 1 })
    l:info("b")
    assert.equal(2, #s.writes)
    assert.equal(2, s.flushes)
    assert.equal('{"level":30,"time":1795860000123,"msg":"b"}\n', s.writes[2])
  end)

  it("accepts pino's call shapes", function()
    local l, s = new { app = "a" }
    l:info { topic = "t" }                 -- fields only: no msg key
    l:info({ topic = "t" }, "hello")       -- (fields, msg)
    l:info { msg = "from fields", n = 1 }  -- msg among the fields
    l:info("explicit", { msg = "ignored" })
    l:info()
    l:info(42)
    l:info("count", 3)
    assert.same({
      '{"level":30,"time":1795860000123,"app":"a","topic":"t"}',
      '{"level":30,"time":1795860000123,"msg":"hello","app":"a","topic":"t"}',
      '{"level":30,"time":1795860000123,"msg":"from fields","app":"a","n":1}',
      '{"level":30,"time":1795860000123,"msg":"explicit","app":"a"}',
      '{"level":30,"time":1795860000123,"app":"a"}',
      '{"level":30,"time":1795860000123,"msg":"42","app":"a"}',
      '{"level":30,"time":1795860000123,"msg":"count 3","app":"a"}',
    }, s:lines())
  end)

  it("keeps level and time, and lets a field replace a binding", function()
    local l, s = new { app = "svc" }
    l:info("x", { level = 99, time = 1, app = "other", z = core.null })
    assert.same({ '{"level":30,"time":1795860000123,"msg":"x","app":"other","z":null}' }, s:lines())
  end)

  it("escapes strings as JSON.stringify does and writes nested tables", function()
    local l, s = new()
    l:info('say "hi"\n', { list = { 1, 2, 3 }, obj = { b = 2, a = "é" }, empty = core.array() })
    assert.same({
      '{"level":30,"time":1795860000123,"msg":"say \\"hi\\"\\n","empty":[],"list":[1,2,3],"obj":{"a":"é","b":2}}',
    }, s:lines())
  end)

  it("does not change the caller's fields table", function()
    local l = new { app = "svc" }
    local err = errors.HemeraError("boom")
    local fields = { error = err, app = "x", msg = "m" }
    l:error(fields)
    assert.equal(err, fields.error)
    assert.equal("x", fields.app)
    assert.equal("m", fields.msg)
    assert.is_nil(rawget(fields, "level"))
  end)
end)

describe("hemera.log levels", function()
  it("writes only the records at or above the level", function()
    local l, s = new { level = "warn" }
    l:trace("t") l:debug("d") l:info("i") l:warn("w") l:error("e") l:fatal("f")
    local msgs = {}
    for _, line in ipairs(s:lines()) do msgs[#msgs + 1] = core.decode(line).msg end
    assert.same({ "w", "e", "f" }, msgs)
    assert.is_false(l:enabled("info"))
    assert.is_true(l:enabled("warn"))
    assert.is_true(l:enabled("fatal"))
    assert.is_false(l:enabled("silent"))
    assert.is_false(l:enabled("nope"))
    assert.equal("warn", l.level)
  end)

  it("makes disabled levels empty functions that do not look at their arguments", function()
    local l, s = new { level = "info" }
    assert.equal(l.trace, l.debug)
    local touched = false
    local spy = setmetatable({}, { __index = function() touched = true end, __pairs = function() touched = true end })
    l:debug("x", spy)
    l:trace(spy)
    assert.is_false(touched)
    assert.equal("", s:text())
  end)

  it("writes nothing when silent, the default level", function()
    local s = sink()
    local l = log.new { stream = s, app = "x" }
    for _, name in ipairs { "fatal", "error", "warn", "info", "debug", "trace" } do
      l[name](l, "m", { a = 1 })
      assert.is_false(l:enabled(name))
    end
    assert.equal("", s:text())
    assert.equal("silent", l.level)
  end)

  it("changes the level with set_level, for the whole family", function()
    local l, s = new { level = "error" }
    local c = l:child { plugin = "p" }
    c:info("before")
    c:set_level("info")
    l:info("parent")
    c:info("child")
    l:set_level("silent")
    c:fatal("gone")
    assert.same({
      '{"level":30,"time":1795860000123,"msg":"parent"}',
      '{"level":30,"time":1795860000123,"msg":"child","plugin":"p"}',
    }, s:lines())
    assert.equal("silent", c.level)
  end)

  it("rejects an invalid level naming the option, the allowed values and the value", function()
    local e = raises(function() log.new { level = "verbose" } end,
      "Invalid option 'level': must be one of fatal, error, warn, info, debug, trace, silent; got \"verbose\"")
    assert.equal("HemeraError", e.name)
    raises(function() log.new { logLevel = "loud" } end,
      "Invalid option 'logLevel': must be one of fatal, error, warn, info, debug, trace, silent; got \"loud\"")
    raises(function() log.new { level = 30 } end, "got 30 (a number)")
    local l = new()
    raises(function() l:set_level("INFO") end, "Invalid option 'level': must be one of")
    assert.equal("trace", l.level)
  end)

  it("rejects a stream without write and a bad pretty option", function()
    raises(function() log.new { stream = {} } end, "Invalid option 'stream': must have a write method")
    raises(function() log.new { pretty = "yes" } end, "Invalid option 'pretty'")
  end)
end)

describe("hemera.log children", function()
  it("adds bindings after app, in the order they were bound, child values winning", function()
    local l, s = new { app = "svc", bindings = { zone = "eu" } }
    local c = l:child { plugin = "math", b = 1 }
    local g = c:child { plugin = "math2", a = true }
    l:info("root")
    c:info("child", { x = 1 })
    g:info("grandchild")
    assert.same({
      '{"level":30,"time":1795860000123,"msg":"root","app":"svc","zone":"eu"}',
      '{"level":30,"time":1795860000123,"msg":"child","app":"svc","zone":"eu","b":1,"plugin":"math","x":1}',
      '{"level":30,"time":1795860000123,"msg":"grandchild","app":"svc","zone":"eu","b":1,"plugin":"math2","a":true}',
    }, s:lines())
  end)

  it("snapshots the bindings when the child is made", function()
    local l, s = new()
    local b = { requestId = "r1" }
    local c = l:child(b)
    b.requestId = "r2"
    c:info("x")
    assert.same({ '{"level":30,"time":1795860000123,"msg":"x","requestId":"r1"}' }, s:lines())
  end)

  it("shares the stream and rejects bad bindings", function()
    local l, s = new()
    l:child():child({}):info("x")
    assert.equal(1, #s:lines())
    raises(function() l:child { level = "debug" } end, "reserved key 'level'")
    raises(function() l:child { [1] = "x" } end, "keys must be strings")
    raises(function() l:child "x" end, "must be a table")
  end)

  it("is recognised by is_logger", function()
    local l = new()
    assert.is_true(log.is_logger(l))
    assert.is_true(log.is_logger(l:child { a = 1 }))
    assert.is_false(log.is_logger({ info = function() end }))
    assert.is_false(log.is_logger("x"))
  end)
end)

describe("hemera.log errors", function()
  it("serializes an error field like pino's err serializer", function()
    local l, s = new { app = "svc" }
    local e = errors.ParseError("Server encoding", { code = "E_ENC", stack = "HemeraParseError: Server encoding\n\tat x" })
    l:error("Server encoding", { error = e, topic = "t" })
    assert.same({
      '{"level":50,"time":1795860000123,"msg":"Server encoding","app":"svc",'
        .. '"error":{"type":"HemeraParseError","message":"Server encoding","stack":"HemeraParseError: Server encoding\\n\\tat x","code":"E_ENC"},'
        .. '"topic":"t"}',
    }, s:lines())
  end)

  it("serializes plain tables with name and message, other fields and nested errors too", function()
    local l, s = new()
    local cause = { name = "Error", message = "root", code = 7 }
    local e = { name = "BusinessError", message = "nope", hops = { { app = "a" } }, cause = cause, fn = print }
    e.self = e
    l:warn("failed", { err = e })
    local rec = core.decode(s:lines()[1])
    assert.same({ type = "BusinessError", message = "nope", hops = { { app = "a" } },
                  cause = { type = "Error", message = "root", code = 7 }, self = "[Circular]" }, rec.err)
    assert.matches('"err":{"type":"BusinessError","message":"nope","cause":{', s:lines()[1], 1, true)
  end)

  it("puts an error given on its own under err, its message as msg", function()
    local l, s = new()
    local e = errors.TimeoutError("Timeout", { stack = "st" })
    l:error(e)
    l:error("Request failed", e)
    l:error(e, { topic = "t" })
    l:error { err = e }
    assert.same({
      '{"level":50,"time":1795860000123,"msg":"Timeout","err":{"type":"TimeoutError","message":"Timeout","stack":"st"}}',
      '{"level":50,"time":1795860000123,"msg":"Request failed","err":{"type":"TimeoutError","message":"Timeout","stack":"st"}}',
      '{"level":50,"time":1795860000123,"msg":"Timeout","err":{"type":"TimeoutError","message":"Timeout","stack":"st"},"topic":"t"}',
      '{"level":50,"time":1795860000123,"msg":"Timeout","err":{"type":"TimeoutError","message":"Timeout","stack":"st"}}',
    }, s:lines())
  end)

  it("keeps a name that differs from the type and the traceback of from_value", function()
    local l, s = new()
    local e = errors.from_value("kaput", "stack traceback:\n\tx.lua:1")
    l:error("x", { error = e })
    local rec = core.decode(s:lines()[1])
    assert.equal("Error", rec.error.type)
    assert.equal("kaput", rec.error.message)
    assert.equal("Error: kaput\nstack traceback:\n\tx.lua:1", rec.error.stack)
    assert.is_nil(rec.error.name)
  end)
end)

describe("hemera.log unencodable records", function()
  it("still writes the line, with the values made printable and a logError", function()
    local l, s = new { app = "svc" }
    l:info("handler", { fn = print, co = coroutine.create(print), bad = "a\255b", ok = 1 })
    local line = s:lines()[1]
    assert.equal('{"level":30,"time":1795860000123,"msg":"handler","app":"svc",'
      .. '"bad":"a\u{FFFD}b","co":"[thread]","fn":"[function]",'
      .. '"logError":"the record could not be encoded: invalid UTF-8 at bad byte 1","ok":1}', line)
  end)

  it("fixes an invalid UTF-8 message, unencodable keys and bindings", function()
    local l, s = new()
    local c = l:child { f = print }
    c:info("caf\233", { [true] = 1 })
    local rec = assert(core.decode(s:lines()[1]))
    assert.equal("caf\u{FFFD}", rec.msg)
    assert.equal("[function]", rec.f)
    assert.equal(1, rec["true"])
    assert.matches("cannot encode a boolean key", rec.logError, 1, true)
  end)

  it("writes cycles as [Circular]", function()
    local l, s = new()
    local t = { a = 1 }
    t.me = t
    l:info("c", { t = t })
    assert.same({ '{"level":30,"time":1795860000123,"msg":"c","t":{"a":1,"me":"[Circular]"}}' }, s:lines())
  end)
end)

describe("hemera.log pretty", function()
  local STAMP = "[2026-11-28 10:00:00.123]"

  it("writes one human line per record", function()
    local l, s = new { app = "svc", pretty = { utc = true }, colors = false }
    l:info("Connected!")
    l:warn("Invalid request", { topic = "math", count = 2, text = "two words", empty = "", ratio = 0.5, t = { 1, 2 } })
    l:child({ plugin = "p" }):debug { n = core.null }
    assert.same({
      STAMP .. " INFO (svc): Connected!",
      STAMP .. ' WARN (svc): Invalid request count=2 empty="" ratio=0.5 t=[1,2] text="two words" topic=math',
      STAMP .. " DEBUG (svc): plugin=p n=null",
    }, s:lines())
  end)

  it("labels every level and leaves out the app when there is none", function()
    local l, s = new { pretty = { utc = true, colors = false } }
    l:fatal("f") l:error("e") l:trace("t")
    assert.same({ STAMP .. " FATAL: f", STAMP .. " ERROR: e", STAMP .. " TRACE: t" }, s:lines())
  end)

  it("writes errors inline and their stacks below, indented (tabs as 2 spaces)", function()
    local l, s = new { app = "svc", pretty = true, colors = false, clock = function() return T end }
    l:set_level("info")
    local e = errors.HemeraError("boom", { code = "E1", stack = "HemeraError: boom\nstack traceback:\n\tfile.lua:3: in f" })
    l:error("Internal error", { error = e })
    local lines = s:lines()
    assert.equal(4, #lines)
    assert.matches('^%[%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.123%] ERROR %(svc%): Internal error error="HemeraError: boom %(code E1%)"$', lines[1])
    assert.same({ "    HemeraError: boom", "    stack traceback:", "      file.lua:3: in f" }, { lines[2], lines[3], lines[4] })
  end)

  it("uses local time unless utc is asked for", function()
    local l, s = new { pretty = true, colors = false }
    l:info("x")
    assert.equal("[" .. os.date("%Y-%m-%d %H:%M:%S", T // 1000) .. ".123] INFO: x", s:lines()[1])
  end)

  it("colours the level and message only when colours are on", function()
    local l, s = new { pretty = { utc = true }, colors = true }
    l:error("bad")
    assert.equal(STAMP .. " \27[31mERROR\27[39m: \27[36mbad\27[39m", s:lines()[1])
    local l2, s2 = new { pretty = { utc = true } } -- a fake stream is not a terminal
    l2:error("bad")
    assert.equal(STAMP .. " ERROR: bad", s2:lines()[1])
  end)

  it("indents the continuation lines of a message", function()
    local l, s = new { pretty = { utc = true, colorize = false } }
    l:info("one\ntwo")
    assert.same({ STAMP .. " INFO: one", "    two" }, s:lines())
  end)
end)

describe("hemera.log wrap", function()
  local function custom()
    local c = { calls = {} }
    for _, name in ipairs { "fatal", "error", "warn", "info", "debug", "trace" } do
      c[name] = function(self, msg, fields) self.calls[#self.calls + 1] = { name, msg, fields } end
    end
    return c
  end

  it("returns Hemera loggers and complete custom loggers as they are", function()
    local l = new()
    assert.equal(l, log.wrap(l))
    local c = custom()
    c.child = function(self) return self end
    c.enabled = function() return true end
    assert.equal(c, log.wrap(c))
  end)

  it("forwards the level methods and adds enabled and child", function()
    local c = custom()
    local w = log.wrap(c)
    assert.is_true(log.is_logger(w))
    w:info("hello", { a = 1 })
    assert.same({ { "info", "hello", { a = 1 } } }, c.calls)
    assert.is_true(w:enabled("trace"))
    c.level = "warn"
    assert.is_false(w:enabled("info"))
    assert.is_true(w:enabled("error"))
    w:set_level("debug")
    assert.equal("debug", c.level)

    local ch = w:child { plugin = "p" }
    local gc = ch:child { requestId = "r", plugin = "q" }
    ch:warn("m", { a = 1, plugin = "override" })
    gc:error { x = 1 }
    gc:debug("only msg")
    assert.same({ "warn", "m", { a = 1, plugin = "override" } }, c.calls[2])
    assert.same({ "error", { plugin = "q", requestId = "r", x = 1 } }, c.calls[3])
    assert.same({ "debug", "only msg", { plugin = "q", requestId = "r" } }, c.calls[4])
  end)

  it("uses the custom child and isLevelEnabled when there are", function()
    local c = custom()
    c.isLevelEnabled = function(_, name) return name == "info" end
    c.child = function(self, b)
      local k = custom()
      k.bindings = b
      k.parent = self
      return k
    end
    local w = log.wrap(c)
    assert.is_true(w:enabled("info"))
    assert.is_false(w:enabled("debug"))
    local ch = w:child { plugin = "p" }
    ch:info("x")
    assert.same({ plugin = "p" }, ch._custom.bindings)
    assert.same({ { "info", "x" } }, ch._custom.calls)
  end)

  it("rejects what has not the level methods, naming the missing ones", function()
    local c = custom()
    c.trace, c.fatal = nil, nil
    raises(function() log.wrap(c) end,
      "Invalid option 'logger': must have the methods fatal, error, warn, info, debug and trace; missing fatal, trace")
    raises(function() log.wrap("stdout") end, "got a string")
  end)
end)
