-- Bad input by size: payloads over the server's max_payload, and 10 MB
-- strings. Private nats-servers with their own max_payload (hemera.testing).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local SMALL = 65536         -- max_payload of the small server
local BIG = 32 * 1024 * 1024 -- max_payload of the big one
local TEN_MB = 10 * 1024 * 1024

local function env(pattern_json, reply_type)
  return '{"pattern":' .. pattern_json .. ',"meta":{},"trace":{},"request":{"id":"r1","type":"'
    .. (reply_type or "request") .. '"},"delegate":{}}'
end

local function service(url, topic)
  local lg = testing.logger()
  -- The handler budget runs on the wall clock: reading 10 MB under ASan on
  -- a busy machine can take longer than its default second, and what is
  -- checked here is the error reply, not the budget (security_budget_spec).
  local s = Hemera.new { servers = url, logger = lg, handlerBudget = 20000 }
  s:add({ topic = topic, cmd = "len" }, function(req)
    local s_ = req.data and req.data.text or req.s
    return #s_
  end)
  s:add({ topic = topic, cmd = "echo" }, function(req) return req.data.text end)
  s:add({ topic = topic, cmd = "big" }, function(req) return ("x"):rep(req.n) end)
  s:add({ topic = topic, cmd = "ok" }, function() return "ok" end)
  assert(s:ready())
  return s, lg
end

local function still_serves(c, topic)
  local res, err = c:act { topic = topic, cmd = "ok" }
  assert.is_nil(err)
  assert.equal("ok", res)
end

describe("payloads over the server's max_payload", function()
  local srv
  setup(function() srv = testing.start_server { config = "max_payload: " .. SMALL } end)
  teardown(function() testing.stop_all() end)

  it("an act over max_payload ends once with a HemeraError naming both sizes", function()
    testing.run(function()
      local topic = testing.topic("over")
      service(srv.url, topic)
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local calls, done = 0, testing.future()
      c:act({ topic = topic, cmd = "len", data = { text = ("a"):rep(SMALL * 2) } }, function(err, res)
        calls = calls + 1
        done:set(err, res)
      end)
      local err, res = done:wait(10000)
      assert.is_nil(res)
      assert.is_true(Hemera.errors.HemeraError:is(err), tostring(err))
      assert.matches("max_payload", err.message)
      assert.matches(tostring(SMALL), err.message)
      local size = tonumber(err.message:match("payload of (%d+) bytes"))
      assert.is_true(size ~= nil and size > SMALL, err.message)
      assert(c:flush())
      assert.equal(1, calls)
      assert.equal(0, c:stats().pending)
      still_serves(c, topic)
    end)
  end)

  it("a pubsub act over max_payload returns a HemeraError", function()
    testing.run(function()
      local topic = testing.topic("overpub")
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local res, err = c:act { topic = topic, pubsub_ = true, data = { text = ("a"):rep(SMALL * 2) } }
      assert.is_nil(res)
      assert.is_true(Hemera.errors.HemeraError:is(err), tostring(err))
      assert.matches("max_payload", err.message)
    end)
  end)

  it("a raw publish over max_payload fails with a message naming both sizes", function()
    testing.run(function()
      local raw = testing.raw(srv.url)
      assert.equal(SMALL, raw:max_payload())
      local ok, err = raw:publish(testing.topic("rawover"), ("z"):rep(SMALL + 1))
      assert.is_nil(ok)
      assert.matches(tostring(SMALL + 1), err)
      assert.matches(tostring(SMALL), err)
      -- The connection is still usable.
      assert.is_true(raw:flush(5000))
      assert.is_true(raw:publish(testing.topic("rawover"), ("z"):rep(SMALL)))
      assert.is_true(raw:flush(5000))
    end)
  end)

  it("a message of exactly max_payload bytes reaches the service and is answered", function()
    testing.run(function()
      local topic = testing.topic("exact")
      service(srv.url, topic)
      local raw = testing.raw(srv.url)
      -- Pad the string so that the whole message is SMALL bytes.
      local msg = env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("p"):rep(SMALL) .. '"}')
      local pad = SMALL - (#msg - SMALL)
      msg = env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("p"):rep(pad) .. '"}')
      assert.equal(SMALL, #msg)
      local data, st = raw:request(topic, msg, 5000)
      assert.is_nil(st)
      local reply = core.decode(data)
      assert.equal(pad, reply.result)
    end)
  end)

  it("a result over max_payload becomes an error reply naming both sizes, and is logged", function()
    testing.run(function()
      local topic = testing.topic("bigres")
      local s, lg = service(srv.url, topic)
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local res, err = c:act { topic = topic, cmd = "big", n = SMALL * 2 }
      assert.is_nil(res)
      assert.is_table(err)
      assert.matches("max_payload", err.message)
      assert.matches(tostring(SMALL), err.message)
      local rec = lg:find("max_payload")
      assert.is_table(rec)
      assert.is_true(rec.level == "error" or rec.level == "warn")
      still_serves(c, topic)
      assert.equal(0, s._i.inflight)
      assert.equal(0, c:stats().pending)
    end)
  end)
end)

describe("10 MB strings", function()
  local srv
  setup(function()
    srv = testing.start_server { config = ("max_payload: %d\nmax_pending: %d"):format(BIG, 4 * BIG) }
  end)
  teardown(function() testing.stop_all() end)

  it("an act carrying a 10 MB string is served, and a 10 MB result comes back intact", function()
    testing.run(function()
      local topic = testing.topic("ten")
      local s = service(srv.url, topic)
      local c = Hemera.new { servers = srv.url, timeout = 20000 }
      assert(c:ready())
      local text = ("0123456789abcdef"):rep(TEN_MB // 16)
      local res, err = c:act { topic = topic, cmd = "len", data = { text = text } }
      assert.is_nil(err)
      assert.equal(TEN_MB, res)
      res, err = c:act { topic = topic, cmd = "echo", data = { text = text } }
      assert.is_nil(err)
      assert.equal(TEN_MB, #res)
      assert.is_true(res == text)
      still_serves(c, topic)
      assert.equal(0, s._i.inflight)
      assert.equal(0, c:stats().pending)
    end, 30000)
  end)

  local RAW10 = {
    { "an unterminated 10 MB string", function(topic)
        return env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("y"):rep(TEN_MB))
      end, "JSON" },
    { "a 10 MB string that ends in invalid UTF-8", function(topic)
        return env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("y"):rep(TEN_MB) .. '\255"}')
      end, "UTF-8" },
    { "a 10 MB string of escapes with a bad escape at the end", function(topic)
        return env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("\\n"):rep(TEN_MB // 2) .. '\\x"}')
      end, "JSON" },
    { "10 MB of opening brackets", function(topic)
        return env('{"topic":"' .. topic .. '","v":' .. ("["):rep(TEN_MB) .. "}")
      end, "nesting" },
  }
  for _, case in ipairs(RAW10) do
    it("answers " .. case[1] .. " with a clear error reply", function()
      testing.run(function()
        local topic = testing.topic("ten-bad")
        local s = service(srv.url, topic)
        local raw = testing.raw(srv.url)
        local data, st = raw:request(topic, case[2](topic), 20000)
        assert.is_nil(st, "no reply: " .. tostring(st))
        local msg = core.decode(data)
        assert.is_table(msg.error, data:sub(1, 300))
        assert.equal("HemeraParseError", msg.error.name)
        -- The error says what is wrong, without echoing megabytes back.
        assert.is_truthy(msg.error.message:lower():find(case[3]:lower(), 1, true), msg.error.message)
        assert.is_true(#data < 64 * 1024, "the error reply is " .. #data .. " bytes")
        local c = Hemera.new { servers = srv.url }
        assert(c:ready())
        still_serves(c, topic)
        assert.equal(0, s._i.inflight)
      end, 30000)
    end)
  end

  it("a 10 MB string published without a reply subject is handled, then the service serves on", function()
    testing.run(function()
      local topic = testing.topic("ten-pub")
      local s, lg = service(srv.url, topic)
      local raw = testing.raw(srv.url)
      assert(raw:publish(topic, env('{"topic":"' .. topic .. '","cmd":"len","s":"' .. ("y"):rep(TEN_MB), "pubsub")))
      assert.is_true(raw:flush(20000))
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      still_serves(c, topic)
      local rec = lg:find("Invalid request")
      assert.is_table(rec)
      assert.equal("warn", rec.level)
      -- The log line does not carry the 10 MB either.
      assert.is_true(#rec.text < 64 * 1024, "the log record is " .. #rec.text .. " bytes")
      assert.equal(0, s._i.inflight)
    end, 30000)
  end)
end)
