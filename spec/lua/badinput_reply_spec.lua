-- Bad input on the caller's side: a raw responder answers Hemera acts with
-- raw bytes. Each act ends exactly once with a clear error (or, for odd but
-- usable replies, with the result); nothing crashes, stalls or leaks.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local DEEP = 10000

-- A raw responder on `topic` that answers each request with
-- answers[pattern.case] (a string, or a list of strings sent in order).
local function responder(topic, answers)
  local raw = testing.raw(testing.url())
  raw:subscribe(topic, nil, 0, function(_, reply, data)
    local msg = core.decode(data)
    local a = answers[msg.pattern.case]
    if type(a) == "table" then
      for _, x in ipairs(a) do raw:publish(reply, x) end
    else
      raw:publish(reply, a)
    end
  end)
  assert.is_true(raw:flush(5000))
  return raw
end

-- case, reply bytes, what the ParseError message must say
local UNPARSABLE = {
  { "malformed JSON", '{"result":', "JSON" },
  { "an empty reply", "", "JSON" },
  { "a JSON array", "[1]", "array" },
  { "a JSON string", '"x"', "string" },
  { "JSON null", "null", "null" },
  { "invalid UTF-8", '{"result":"\255"}', "UTF-8" },
  { "NaN", '{"result":NaN}', "JSON" },
  { "Infinity", '{"result":Infinity}', "JSON" },
  { "nesting 10,000 deep", ("["):rep(DEEP) .. ("]"):rep(DEEP), "nesting" },
  { "nesting 10,000 deep inside the result", '{"result":' .. ('{"a":'):rep(DEEP) .. "1" .. ("}"):rep(DEEP) .. "}", "nesting" },
}

describe("bad replies to an act", function()
  for _, case in ipairs(UNPARSABLE) do
    it("ends the act once with a HemeraParseError when the reply is " .. case[1], function()
      testing.run(function()
        local topic = testing.topic("badreply")
        responder(topic, { x = case[2] })
        local c = testing.new { timeout = 5000 }
        assert(c:ready())
        local calls, done = 0, testing.future()
        c:act({ topic = topic, case = "x" }, function(err, res)
          calls = calls + 1
          done:set(err, res)
        end)
        local err, res = done:wait(10000)
        assert.is_nil(res)
        assert.is_true(Hemera.errors.ParseError:is(err), tostring(err))
        assert.equal("HemeraParseError", err.name)
        -- A round trip proves nothing else was pending for this act.
        assert(c:flush())
        assert.equal(1, calls)
        assert.equal(0, c:stats().pending)
        assert(err.message:lower():find(case[3]:lower(), 1, true),
          ("the HemeraParseError for a reply that is %s does not mention '%s': %q"):format(
            case[1], case[3], err.message))
      end)
    end)
  end

  local USABLE = {
    { "a reply with only a result", '{"result":1}', 1 },
    { "meta, trace and request of the wrong types", '{"result":2,"trace":"x","meta":5,"request":[]}', 2 },
    { "a trace whose timestamp is not a number", '{"result":3,"trace":{"timestamp":"x"}}', 3 },
    { "error null and a result", '{"result":4,"error":null}', 4 },
    { "error false and a result", '{"result":5,"error":false}', 5 },
  }
  for _, case in ipairs(USABLE) do
    it("returns the result of " .. case[1], function()
      testing.run(function()
        local topic = testing.topic("oddreply")
        responder(topic, { x = case[2] })
        local c = testing.new { timeout = 5000 }
        assert(c:ready())
        local res, err = c:act { topic = topic, case = "x" }
        assert.is_nil(err)
        assert.equal(case[3], res)
        assert.equal(0, c:stats().pending)
      end)
    end)
  end

  local ODD_ERRORS = {
    { "a string", '{"error":"boom"}', "boom" },
    { "a number", '{"error":5}', "5" },
    { "true", '{"error":true}', nil },
    { "an empty object", '{"error":{}}', nil },
    { "an array", '{"error":[1,2]}', nil },
    { "an object whose message is an object", '{"error":{"name":"E","message":{"a":1}}}', nil },
    { "an object named __index", '{"error":{"name":"__index","message":"m"}}', "m" },
    { "an object named __tostring", '{"error":{"name":"__tostring","message":"m"}}', "m" },
    { "an object whose name is a number", '{"error":{"name":5,"message":"m"}}', "m" },
  }
  for _, case in ipairs(ODD_ERRORS) do
    it("returns an error value when the reply's error is " .. case[1], function()
      testing.run(function()
        local topic = testing.topic("odderr")
        responder(topic, { x = case[2] })
        local c = testing.new { timeout = 5000 }
        assert(c:ready())
        local res, err = c:act { topic = topic, case = "x" }
        assert.is_nil(res)
        assert.is_table(err)
        local text = tostring(err)
        assert.is_string(text)
        if case[3] then assert.is_truthy(text:find(case[3], 1, true), text) end
        -- The error classes are untouched by what came over the wire.
        assert.equal("HemeraError", Hemera.errors.HemeraError("x").name)
        assert.is_true(Hemera.errors.TimeoutError:is(Hemera.errors.TimeoutError("t")))
        assert.equal(0, c:stats().pending)
      end)
    end)
  end

  it("takes the first of two replies and counts the second as late", function()
    testing.run(function()
      local topic = testing.topic("dup")
      responder(topic, { x = { '{"result":"first"}', '{"result":"second"}' } })
      local c = testing.new { timeout = 5000 }
      assert(c:ready())
      local calls, done = 0, testing.future()
      c:act({ topic = topic, case = "x" }, function(err, res)
        calls = calls + 1
        done:set(err, res)
      end)
      local err, res = done:wait(10000)
      assert.is_nil(err)
      assert.equal("first", res)
      -- The second reply was published right after the first: one more
      -- round trip through the responder's topic and it has arrived.
      local probe = testing.new()
      probe:add({ topic = topic .. ".probe" }, function() return 1 end)
      assert(probe:ready())
      assert(c:act { topic = topic .. ".probe" })
      assert.equal(1, calls)
      assert.equal(1, c:stats().late_replies)
      assert.equal(0, c:stats().pending)
    end)
  end)

  it("still acts normally after a run of bad replies", function()
    testing.run(function()
      local topic = testing.topic("after")
      local answers = { ok = '{"result":"fine"}' }
      for k, case in ipairs(UNPARSABLE) do answers["b" .. k] = case[2] end
      responder(topic, answers)
      local c = testing.new { timeout = 5000 }
      assert(c:ready())
      for k = 1, #UNPARSABLE do
        local _, err = c:act { topic = topic, case = "b" .. k }
        assert.is_true(Hemera.errors.ParseError:is(err))
      end
      local res, err = c:act { topic = topic, case = "ok" }
      assert.is_nil(err)
      assert.equal("fine", res)
      assert.equal(0, c:stats().pending)
    end)
  end)
end)
