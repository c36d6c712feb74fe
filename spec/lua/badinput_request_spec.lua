-- Bad input on the service side: raw bytes sent to a Hemera service's
-- topic from a raw connection. Each gets a clear error reply where there is
-- a reply subject and a log line where there is not; nothing crashes,
-- stalls or leaks, and the service answers a normal act afterwards.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

-- A well-formed envelope around a raw pattern text.
local function env(pattern_json)
  return '{"pattern":' .. pattern_json
    .. ',"meta":{},"trace":{},"request":{"id":"r1","type":"request"},"delegate":{}}'
end

local DEEP = 10000

-- name, bytes (topic substituted for %TOPIC%), what the error message must say
local BAD = {
  { "malformed JSON", '{"pattern":{"topic":"%TOPIC%"', "JSON" },
  { "an empty message", "", "JSON" },
  { "trailing garbage", env('{"topic":"%TOPIC%"}') .. "}}", "JSON" },
  { "a JSON array", "[1,2]", "array" },
  { "a JSON string", '"hello"', "string" },
  { "a JSON number", "42", "number" },
  { "JSON true", "true", "boolean" },
  { "JSON null", "null", "null" },
  { "an envelope without pattern", '{"meta":{},"trace":{},"request":{"id":"r1","type":"request"}}', "pattern" },
  { "an empty object", "{}", "pattern" },
  { "a pattern that is a number", '{"pattern":5}', "pattern" },
  { "a pattern that is a string", '{"pattern":"topic:%TOPIC%"}', "pattern" },
  { "a pattern that is an array", '{"pattern":[1]}', "array" },
  { "nesting 10,000 deep (arrays)", env('{"topic":"%TOPIC%","v":' .. ("["):rep(DEEP) .. ("]"):rep(DEEP) .. "}"), "nesting" },
  { "nesting 10,000 deep (objects)", ('{"a":'):rep(DEEP) .. "1" .. ("}"):rep(DEEP), "nesting" },
  { "nesting 10,000 deep in meta", '{"pattern":{"topic":"%TOPIC%"},"meta":' .. ("["):rep(DEEP) .. ("]"):rep(DEEP) .. "}", "nesting" },
  { "invalid UTF-8 in a value", env('{"topic":"%TOPIC%","s":"ab\255\254"}'), "UTF-8" },
  { "invalid UTF-8 in a key", env('{"topic":"%TOPIC%","\195":1}'), "UTF-8" },
  { "a truncated UTF-8 sequence at the end", env('{"topic":"%TOPIC%","s":"\226\130"}'), "UTF-8" },
  { "NaN", env('{"topic":"%TOPIC%","v":NaN}'), "JSON" },
  { "Infinity", env('{"topic":"%TOPIC%","v":Infinity}'), "JSON" },
  { "-Infinity", env('{"topic":"%TOPIC%","v":-Infinity}'), "JSON" },
  { "a NUL byte outside strings", env('{"topic":"%TOPIC%"}\0'), "JSON" },
}

local function fill(s, topic) return (s:gsub("%%TOPIC%%", topic)) end

-- A service on `topic` with a capturing logger; answers {cmd = "ok"}.
local function service(topic, opts)
  local lg = testing.logger()
  local o = { logger = lg }
  for k, v in pairs(opts or {}) do o[k] = v end
  local s = testing.new(o)
  s:add({ topic = topic, cmd = "ok" }, function(req) return { ok = true, v = req.v } end)
  s:add({ topic = topic, cmd = "echo" }, function(req) return req.s end)
  assert(s:ready())
  return s, lg
end

local function still_serves(topic)
  local c = testing.new()
  assert(c:ready())
  local res, err = c:act { topic = topic, cmd = "ok", v = 7 }
  assert.is_nil(err)
  assert.same({ ok = true, v = 7 }, res)
end

local function decode_reply(data)
  assert.is_string(data)
  local msg = core.decode(data)
  assert.is_table(msg, "the reply is not a JSON object: " .. tostring(data))
  return msg
end

describe("bad input to a service, with a reply subject", function()
  for _, case in ipairs(BAD) do
    local name, bytes, says = case[1], case[2], case[3]
    it("answers " .. name .. " with a clear error reply", function()
      testing.run(function()
        local topic = testing.topic("badreq")
        local s = service(topic)
        local raw = testing.raw(testing.url())
        local data, st = raw:request(topic, fill(bytes, topic), 5000)
        assert.is_nil(st, "no reply: " .. tostring(st))
        local msg = decode_reply(data)
        assert.is_table(msg.error, "not an error reply: " .. data)
        assert.equal("HemeraParseError", msg.error.name)
        assert.is_string(msg.error.message)
        still_serves(topic)
        assert.equal(0, s._i.inflight)
        assert.equal(0, raw:stats().pending)
        raw:close()
        assert(msg.error.message:lower():find(says:lower(), 1, true),
          ("the error reply to %s does not mention '%s': %q"):format(name, says, msg.error.message))
      end)
    end)
  end
end)

describe("bad input to a service, without a reply subject", function()
  for _, case in ipairs(BAD) do
    local name, bytes = case[1], case[2]
    it("logs " .. name, function()
      testing.run(function()
        local topic = testing.topic("badpub")
        local s, lg = service(topic)
        local raw = testing.raw(testing.url())
        assert(raw:publish(topic, fill(bytes, topic)))
        -- Once the server has it (flush), it reaches the service before the
        -- act below, and its processing ends before the act's reply: then
        -- any log line about it has been written.
        assert.is_true(raw:flush(5000))
        still_serves(topic)
        local rec = lg:find(function(r)
          return r.level == "warn" or r.level == "error" or r.level == "fatal"
        end)
        assert.equal(0, s._i.inflight)
        raw:close()
        assert(rec, name .. " published without a reply subject left no warn/error log line: "
          .. lg:text():gsub("\n", " | "):sub(1, 300))
      end)
    end)
  end
end)

describe("odd but harmless envelope fields", function()
  local ODD = {
    { "meta, trace, request and delegate of the wrong types",
      '{"pattern":{"topic":"%TOPIC%","cmd":"ok","v":1},"meta":5,"trace":"x","request":[],"delegate":true}' },
    { "trace fields of the wrong types",
      '{"pattern":{"topic":"%TOPIC%","cmd":"ok","v":1},"trace":{"traceId":{},"spanId":[1],"timestamp":"x",'
      .. '"parentSpanId":false},"request":{"id":{},"type":5}}' },
    { "null everywhere",
      '{"pattern":{"topic":"%TOPIC%","cmd":"ok","v":1},"meta":null,"trace":null,"request":null,"delegate":null}' },
    { "unknown top-level fields", '{"pattern":{"topic":"%TOPIC%","cmd":"ok","v":1},"x$":1,"__proto__":{"a":1}}' },
    { "duplicate keys (the last wins)", env('{"topic":"%TOPIC%","cmd":"ok","v":0,"v":1}') },
    { "a number beyond the double range (decoded as JavaScript does)", env('{"topic":"%TOPIC%","cmd":"ok","v":1}') },
  }
  for _, case in ipairs(ODD) do
    it("serves a request with " .. case[1], function()
      testing.run(function()
        local topic = testing.topic("odd")
        local s = service(topic)
        local raw = testing.raw(testing.url())
        local data, st = raw:request(topic, fill(case[2], topic), 5000)
        assert.is_nil(st)
        local msg = decode_reply(data)
        assert.is_true(msg.error == nil or msg.error == Hemera.null, data)
        assert.same({ ok = true, v = 1 }, msg.result)
        assert.equal(0, s._i.inflight)
        raw:close()
      end)
    end)
  end

  it("answers a pattern whose topic is not a string with PatternNotFound", function()
    testing.run(function()
      local topic = testing.topic("odd")
      service(topic)
      local raw = testing.raw(testing.url())
      local data, st = raw:request(topic, env('{"topic":5,"cmd":"ok"}'), 5000)
      assert.is_nil(st)
      local msg = decode_reply(data)
      assert.equal("PatternNotFound", msg.error.name)
      still_serves(topic)
      raw:close()
    end)
  end)

  it("turns 1e400 into Infinity and sends it back as null, as JavaScript does", function()
    testing.run(function()
      local topic = testing.topic("odd")
      service(topic)
      local raw = testing.raw(testing.url())
      local data, st = raw:request(topic, env('{"topic":"' .. topic .. '","cmd":"ok","v":1e400}'), 5000)
      assert.is_nil(st)
      local msg = decode_reply(data)
      assert.is_true(msg.error == nil or msg.error == Hemera.null, data)
      assert.is_true(msg.result.ok)
      -- null, kept as Hemera.null since issue 11
      assert.equal(Hemera.null, msg.result.v)
      assert.matches('"v":null', data, 1, true)
      raw:close()
    end)
  end)

  it("takes a lone UTF-16 surrogate escape and answers with valid JSON", function()
    testing.run(function()
      local topic = testing.topic("odd")
      service(topic)
      local raw = testing.raw(testing.url())
      local data, st = raw:request(topic, env('{"topic":"' .. topic .. '","cmd":"echo","s":"a\\ud800b"}'), 5000)
      assert.is_nil(st)
      assert.is_truthy(utf8.len(data), "the reply is not valid UTF-8")
      local msg = decode_reply(data)
      assert.is_not_nil(msg.result ~= nil or msg.error ~= nil)
      still_serves(topic)
      raw:close()
    end)
  end)
end)

describe("bad values a handler returns", function()
  local RESULTS = {
    { "NaN and infinities (sent as null, as JavaScript does)", function() return { a = 0 / 0, b = math.huge, c = -math.huge } end,
      function(msg) assert.same({ a = Hemera.null, b = Hemera.null, c = Hemera.null }, msg.result) end },
    { "a table nested 10,000 deep", function()
        local root = {}
        local t = root
        for _ = 1, DEEP do t.a = {}; t = t.a end
        return root
      end, function(msg) assert.equal("HemeraParseError", msg.error.name); assert.matches("nesting", msg.error.message) end },
    { "invalid UTF-8", function() return "ab\255" end,
      function(msg) assert.equal("HemeraParseError", msg.error.name); assert.matches("UTF%-8", msg.error.message) end },
    -- Issue 11: left out, as JSON.stringify does; a result that is a
    -- function is still an error.
    { "a function inside the result", function() return { f = print, a = { 1, print } } end,
      function(msg) assert.equal(Hemera.null, msg.error); assert.same({ a = { 1, Hemera.null } }, msg.result) end },
    { "a function", function() return print end,
      function(msg) assert.equal("HemeraParseError", msg.error.name); assert.matches("function", msg.error.message) end },
    { "a cycle (written as \"[Circular]\", as Node Hemera's safe stringify does)",
      function() local t = {}; t.self = t; return t end,
      function(msg)
        if type(msg.error) == "table" then
          assert.equal("HemeraParseError", msg.error.name)
        else
          assert.same({ self = "[Circular]" }, msg.result)
        end
      end },
    { "an error whose message is invalid UTF-8", function() return nil, { name = "Bad", message = "x\255" } end,
      function(msg) assert.is_table(msg.error) end },
  }
  for _, case in ipairs(RESULTS) do
    it("answers with a clear error or a JavaScript-compatible value when a handler returns " .. case[1], function()
      testing.run(function()
        local topic = testing.topic("badres")
        local lg = testing.logger()
        local s = testing.new { logger = lg }
        s:add({ topic = topic, cmd = "bad" }, case[2])
        s:add({ topic = topic, cmd = "ok" }, function(req) return { ok = true, v = req.v } end)
        assert(s:ready())
        local raw = testing.raw(testing.url())
        local data, st = raw:request(topic, env('{"topic":"' .. topic .. '","cmd":"bad"}'), 5000)
        assert.is_nil(st, "no reply")
        assert.is_truthy(utf8.len(data), "the reply is not valid UTF-8")
        case[3](decode_reply(data))
        still_serves(topic)
        assert.equal(0, s._i.inflight)
        raw:close()
      end)
    end)
  end
end)
