-- Faults: a slow handler under a flood, with bounded pending limits
-- (nats = {maxPendingMsgs = N}). A private nats-server (hemera.testing).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local N = 50        -- maxPendingMsgs of the slow side
local FLOOD = 20000 -- messages in the flood

-- A Hemera request envelope, as a Node caller sends it.
local function envelope(topic, k, type_)
  return core.encode {
    pattern = { topic = topic, k = k },
    meta = {}, delegate = {},
    trace = { traceId = "t" .. k, spanId = "s" .. k, service = topic, method = "topic:" .. topic },
    request = { id = "r" .. k, type = type_ or "pubsub" },
  }
end

-- Publishes the flood from a raw connection in one go (the loop does not
-- run meanwhile, so it piles up in front of the service), then waits for
-- the server to have taken all of it.
local function flood(url, topic, count)
  local raw = testing.raw(url)
  for k = 1, count do assert(raw:publish(topic, envelope(topic, k))) end
  assert.is_true(raw:flush(10000))
  raw:close()
end

-- The service has taken in or dropped every message of the flood and
-- finished its handlers: no event says so, so poll its counters (bounded).
local function settle(s, count)
  local st
  for _ = 1, 1000 do
    st = s:stats()
    if st.msgs_in + st.slow_dropped >= count and s._i.inflight == 0 then return end
    Hemera.sleep(10)
  end
  error(("the service did not settle: %d taken in, %d dropped, %d running"):format(
    st.msgs_in, st.slow_dropped, s._i.inflight))
end

local function is_slow_consumer(rec)
  return (rec.level == "warn" or rec.level == "error" or rec.level == "fatal")
    and rec.text:lower():find("slow consumer", 1, true) ~= nil
end

describe("faults: a slow handler under a flood", function()
  local srv
  setup(function() srv = testing.start_server() end)
  teardown(function() testing.stop_all() end)

  it("logs the slow consumer and recovers when the flood stops (handlers that yield)", function()
    testing.run(function()
      local slog = testing.logger()
      local topic = testing.topic("flood")
      local s = Hemera.new { servers = srv.url, logger = slog, nats = { maxPendingMsgs = N },
                             maxConcurrency = N }
      local running, peak, handled = 0, 0, 0
      s:add({ topic = topic }, function(req)
        running = running + 1
        if running > peak then peak = running end
        Hemera.sleep(20) -- slow: waits on I/O
        running = running - 1
        handled = handled + 1
        return req.k
      end)
      assert(s:ready())
      collectgarbage()
      flood(srv.url, topic, FLOOD)
      local rec = slog:wait(is_slow_consumer, 10000)
      assert(rec, "no slow-consumer log line:\n" .. slog:text())

      -- The flood is over: once the backlog is worked off, a normal act is
      -- served again.
      settle(s, FLOOD)
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local res, err = c:act { topic = topic, k = -1, timeout_ = 5000 }
      assert.is_nil(err, "a normal act after the flood was not served")
      assert.equal(-1, res)
      -- Dropped, not queued without end: fewer handled than sent.
      assert.is_true(handled < FLOOD)
      -- The inbound queue is bounded: never more than N messages taken in
      -- and not yet answered.
      assert(peak <= N, ("%d handlers ran at once with maxConcurrency = %d"):format(peak, N))
      assert.equal(0, s._i.inflight)
    end, 30000)
  end)

  it("logs the slow consumer and recovers when the flood stops (handlers that block the loop)", function()
    testing.run(function()
      local slog = testing.logger()
      local topic = testing.topic("flood-cpu")
      local s = Hemera.new { servers = srv.url, logger = slog, nats = { maxPendingMsgs = N } }
      local handled = 0
      s:add({ topic = topic }, function(req)
        local t = os.clock()
        while os.clock() - t < 0.0005 do end -- slow: burns CPU
        handled = handled + 1
        return req.k
      end)
      assert(s:ready())
      flood(srv.url, topic, FLOOD)
      assert(slog:wait(is_slow_consumer, 10000), "no slow-consumer log line:\n" .. slog:text())
      settle(s, FLOOD)
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local res, err = c:act { topic = topic, k = -1, timeout_ = 5000 }
      assert.is_nil(err, "a normal act after the flood was not served")
      assert.equal(-1, res)
      assert.is_true(handled < FLOOD)
    end, 30000)
  end)

  it("names the slow subscription's subject in the slow-consumer log line", function()
    testing.run(function()
      local slog = testing.logger()
      local topic = testing.topic("flood-name")
      local s = Hemera.new { servers = srv.url, logger = slog, nats = { maxPendingMsgs = N } }
      s:add({ topic = topic }, function() Hemera.sleep(20) end)
      assert(s:ready())
      flood(srv.url, topic, FLOOD // 4)
      local rec = assert(slog:wait(is_slow_consumer, 10000))
      assert(rec.text:find(topic, 1, true), "the slow-consumer log line does not name the subscription: " .. rec.text)
    end, 30000)
  end)

  it("a caller whose reply inbox overflows keeps receiving replies afterwards", function()
    testing.run(function()
      local clog = testing.logger()
      local topic = testing.topic("reply-flood")
      local s = Hemera.new { servers = srv.url }
      s:add({ topic = topic }, function(req) return req.k end)
      assert(s:ready())
      -- The caller's inbox holds at most N replies between two reads.
      local c = Hemera.new { servers = srv.url, logger = clog, nats = { maxPendingMsgs = N } }
      assert(c:ready())
      local M, ended, all = 2000, 0, testing.future()
      local outcome = { ok = 0, timeout = 0, other = 0, extra = 0 }
      local calls = {}
      for k = 1, M do
        c:act({ topic = topic, k = k, timeout_ = 2000 }, function(err, res)
          calls[k] = (calls[k] or 0) + 1
          if calls[k] > 1 then outcome.extra = outcome.extra + 1; return end
          if err == nil then outcome.ok = outcome.ok + 1
          elseif Hemera.errors.TimeoutError:is(err) then outcome.timeout = outcome.timeout + 1
          else outcome.other = outcome.other + 1 end
          ended = ended + 1
          if ended == M then all:set() end
        end)
      end
      assert.is_nil(select(2, all:wait(20000)))
      assert.equal(0, outcome.extra)
      assert.equal(0, outcome.other)
      assert.equal(0, c:stats().pending)
      -- Whether or not replies were dropped, the next acts are answered.
      local res, err = c:act { topic = topic, k = -1, timeout_ = 3000 }
      assert.is_nil(err, "a normal act after the flood was not served")
      assert.equal(-1, res)
    end, 30000)
  end)
end)
