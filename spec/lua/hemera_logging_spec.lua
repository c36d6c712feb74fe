-- Hemera v7 logging (test/hemera/logging.spec.js, tracing-logs.spec.js).
-- `logger` is either a logger (a table with the level methods) or a
-- stream (a table with :write), as pino's destination in Node; records are
-- JSON lines.
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- A test of a behaviour the library once got wrong; `symptom` records what
-- it was, and the test now runs like any other.
local function fixed_bug(_symptom, body)
  return function() testing.run(body) end
end

-- A stream that keeps the decoded records.
local function log_stream()
  local records = {}
  local stream = { write = function(_, line) records[#records + 1] = Hemera.decode(line) end }
  return stream, records
end

-- The request logs of one act, in order, checked for `fields` (and for
-- `responseTime` on "Request completed"). Raises with every missing field.
local REQUEST_LOGS = { "Request started", "Request received", "Request responded", "Request completed" }

local function check_request_logs(records, fields)
  local found, k = {}, 1
  for _, rec in ipairs(records) do
    if rec.msg == REQUEST_LOGS[k] then
      found[k] = rec
      k = k + 1
    end
  end
  local problems = {}
  for i, msg in ipairs(REQUEST_LOGS) do
    local rec = found[i]
    if not rec then
      problems[#problems + 1] = ("no %q record (in order)"):format(msg)
    else
      for name, want in pairs(fields) do
        if rec[name] == nil or (want ~= true and rec[name] ~= want) then
          problems[#problems + 1] = ("%q lacks %s"):format(msg, name)
        end
      end
    end
  end
  if found[4] and type(found[4].responseTime) ~= "number" then
    problems[#problems + 1] = '"Request completed" lacks a numeric responseTime'
  end
  table.sort(problems)
  assert(#problems == 0, table.concat(problems, "; "))
end

-- Serves {topic, cmd = "add"} and acts it once with a callback; returns
-- the callback's context once it has run.
local function add_and_act(s)
  local topic = testing.topic("math")
  s:add({ topic = topic, cmd = "add" }, function(req)
    Hemera.sleep(1)
    return req.a + req.b
  end)
  local done = testing.future()
  s:act({ topic = topic, cmd = "add", a = 1, b = 2 }, function(err, res, ctx) done:set(err or false, res, ctx) end)
  local err, res, ctx = done:wait(2000)
  assert.is_false(err)
  assert.equal(3, res)
  return ctx
end

describe("Logging interface", function()
  it("Should be able to use custom logger", function()
    testing.run(function()
      local calls = {}
      local Logger = {}
      for _, level in ipairs { "info", "debug", "error", "warn", "fatal", "trace" } do
        Logger[level] = function(_, msg) calls[#calls + 1] = { level, msg } end
      end
      local s = testing.new { logger = Logger }
      s.log:info("test")
      assert.same({ "info", "test" }, calls[#calls])
      assert(s:ready())
      local closed = testing.future()
      s:close(function(err) closed:set(err or false) end)
      assert.is_false(closed:wait(3000))
    end)
  end)

  it("Should be able to log with default logger", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "info", logger = stream }
      assert(s:ready())
      assert.is_true(#records >= 1)
      assert.equal("Connected!", records[1].msg)
      assert.equal(30, records[1].level)
    end)
  end)

  it("Should be able to log with none pretty logger", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "silent", prettyLog = false, logger = stream }
      local called = 0
      local info = s.log.info
      s.log.info = function(...) called = called + 1; return info(...) end
      s.log:info("test")
      assert(s:ready())
      assert.is_true(called >= 1)
      assert.same({}, records)
    end)
  end)

  it("Should write one JSON object per line when prettyLog is false", function()
    testing.run(function()
      local lines = {}
      local s = testing.new { logLevel = "info", prettyLog = false,
                        logger = { write = function(_, l) lines[#lines + 1] = l end } }
      s.log:info("test", { foo = "bar" })
      assert.equal(1, #lines)
      assert.matches("\n$", lines[1])
      local rec = Hemera.decode(lines[1])
      assert.equal("test", rec.msg)
      assert.equal("bar", rec.foo)
    end)
  end)

  it("Should validate custom logger", function()
    testing.run(function()
      local ok, err = pcall(Hemera.new, { servers = testing.url(), logger = 42 })
      assert.is_false(ok)
      assert.is_table(err)
      assert.equal("HemeraError", err.name)
      assert.matches("logger", err.message, 1, true)
    end)
  end)

  it("Should attach trace context to each logs", fixed_bug(
    "the act context's log carries no trace context with traceLog: ctx.log:info in an act callback has no requestId/traceId/spanId (client.lua prepare: actx.log is the instance logger)",
    function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "debug", logger = stream, traceLog = true }
      assert(s:ready())
      local ctx = add_and_act(s)
      ctx.log:info("test", { foo = "bar" })
      local rec = records[#records]
      assert.equal("test", rec.msg)
      assert.equal("bar", rec.foo)
      local missing = {}
      for _, k in ipairs { "requestId", "traceId", "spanId" } do
        if rec[k] == nil then missing[#missing + 1] = k end
      end
      assert(#missing == 0, "missing: " .. table.concat(missing, ", "))
    end))
end)

describe("Tracing logs", function()
  it("Should log request and response logs", fixed_bug(
    "request logs lack Hemera's requestId and pattern fields: \"Request started\" has no requestId, \"Request received\"/\"Request responded\"/\"Request completed\" have neither (client.lua act/finish_reply, server.lua process/deliver)",
    function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "debug", logger = stream }
      assert(s:ready())
      add_and_act(s)
      check_request_logs(records, { requestId = true, pattern = true })
    end))

  it("Should log detailed request and response logs", fixed_bug(
    "with traceLog, \"Request started\" and \"Request completed\" carry no requestId/traceId/spanId/tag (client side has no trace child logger) and the server logs carry no pattern",
    function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "debug", logger = stream, traceLog = true, tag = "tag" }
      assert(s:ready())
      add_and_act(s)
      check_request_logs(records, { requestId = true, pattern = true, traceId = true, spanId = true, tag = "tag" })
    end))

  it("Should log the four request messages in order", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "debug", logger = stream }
      assert(s:ready())
      add_and_act(s)
      check_request_logs(records, {})
    end)
  end)

  it("Should carry the trace context on the server's request logs with traceLog", function()
    testing.run(function()
      local stream, records = log_stream()
      local s = testing.new { logLevel = "debug", logger = stream, traceLog = true, tag = "tag" }
      assert(s:ready())
      local ctx = add_and_act(s)
      local n = 0
      for _, rec in ipairs(records) do
        if rec.msg == "Request received" or rec.msg == "Request responded" then
          n = n + 1
          assert.equal(ctx.request.id, rec.requestId)
          assert.equal(ctx.trace.traceId, rec.traceId)
          assert.equal(ctx.trace.spanId, rec.spanId)
          assert.equal("tag", rec.tag)
        end
      end
      assert.equal(2, n)
    end)
  end)
end)
