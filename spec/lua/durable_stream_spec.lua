-- Durable work: streams made or checked, duplicate suppression, the
-- delivery in ctx, plain NATS still reaching a durable action, replay
-- from a sequence and from a time, KV.
local Hemera = require "hemera"
local core = require "hemera.core"
local durable = require "hemera.durable"
local testing = require "hemera.testing"
local jsproc = require "jsproc"

describe("durable work", function()
  local srv
  setup(function() srv = jsproc.start() end)
  teardown(function() jsproc.stop_all() end)

  local function raw_stream(c, name, config)
    config.name = name
    local r, err = durable.api(c._i, "STREAM.CREATE." .. name, config)
    assert(r, err)
  end

  it("refuses a stream that exists with another config, naming each difference", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      raw_stream(c, "CFG", { subjects = core.array { "hemera.durable.cfg" }, retention = "limits", max_msgs = -1 })
      local w = Hemera.new { servers = srv.url }
      w:add({ topic = "cfg", cmd = "x",
              ["durable$"] = { stream = "CFG", retention = "workqueue", maxMsgs = 100, storage = "file" } },
        function() return true end)
      local ok, err = w:ready()
      assert.is_nil(ok)
      assert.matches('Durable stream "CFG" exists with another config', err.message, 1, true)
      assert.matches('retention (retention) is "limits" there, "workqueue" here', err.message, 1, true)
      assert.matches("maxMsgs (max_msgs) is -1 there, 100 here", err.message, 1, true)
      assert.not_matches("storage", err.message, 1, true) -- the same on both sides
      assert.equal(2, #err.differences)
      -- Left as it was.
      local info = assert(durable.api(c._i, "STREAM.INFO.CFG"))
      assert.equal("limits", info.config.retention)
      w:close()

      -- A stream whose subjects do not take the topic's durable acts.
      local w2 = Hemera.new { servers = srv.url }
      w2:add({ topic = "other", cmd = "x", ["durable$"] = { stream = "CFG" } }, function() return true end)
      ok, err = w2:ready()
      assert.is_nil(ok)
      assert.matches('its subjects ["hemera.durable.cfg"] do not take "hemera.durable.other"', err.message, 1, true)
      w2:close()

      -- Missing, and not to be made.
      local w3 = Hemera.new { servers = srv.url }
      w3:add({ topic = "gone", cmd = "x", ["durable$"] = { stream = "NOPE", create = false } }, function() return true end)
      ok, err = w3:ready()
      assert.is_nil(ok)
      assert.matches('Durable stream "NOPE" does not exist, and durable$.create is false', err.message, 1, true)
      w3:close()
      c:close()
    end, 30000)
  end)

  it("creates a missing stream with the options given, and binds to it again when they agree", function()
    testing.run(function()
      local opts = { stream = "MADE", subjects = { "hemera.durable.made", "made.extra" }, retention = "workqueue",
                     storage = "memory", maxMsgs = 1000, maxBytes = 1048576, maxAge = 60000, replicas = 1,
                     duplicateWindow = 30000 }
      local w = Hemera.new { servers = srv.url }
      w:add({ topic = "made", cmd = "x", ["durable$"] = opts }, function() return true end)
      assert(w:ready())
      local info = assert(durable.api(w._i, "STREAM.INFO.MADE"))
      local cfg = info.config
      assert.same({ "hemera.durable.made", "made.extra" }, cfg.subjects)
      assert.equal("workqueue", cfg.retention)
      assert.equal("memory", cfg.storage)
      assert.equal(1000, cfg.max_msgs)
      assert.equal(1048576, cfg.max_bytes)
      assert.equal(60000 * 1000000, cfg.max_age)
      assert.equal(1, cfg.num_replicas)
      assert.equal(30000 * 1000000, cfg.duplicate_window)
      -- Another instance with the same options, and one with none: both
      -- bind, and the stream is one.
      local w2 = Hemera.new { servers = srv.url }
      w2:add({ topic = "made", cmd = "x", ["durable$"] = opts }, function() return true end)
      assert(w2:ready())
      local w3 = Hemera.new { servers = srv.url }
      w3:add({ topic = "made", cmd = "x", ["durable$"] = { stream = "MADE" } }, function() return true end)
      assert(w3:ready())
      local again = assert(durable.api(w._i, "STREAM.INFO.MADE"))
      assert.equal(info.created, again.created)
      w3:close()
      w2:close()
      w:close()
    end, 30000)
  end)

  it("keeps the loop free while a durable act waits for a publish ack", function()
    testing.run(function()
      local s = Hemera.new { servers = srv.url }
      s:add({ topic = "plain", cmd = "ping" }, function() return "pong" end)
      assert(s:ready())
      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      -- No stream takes hemera.durable.nostream: the act publishes again
      -- until its timeout, while a plain act of the same instance is
      -- answered.
      local order, durable_done = {}, Hemera.future()
      Hemera.spawn(function()
        local ack, err = p:act { topic = "nostream", cmd = "x", ["durable$"] = true, ["timeout$"] = 1500 }
        order[#order + 1] = "durable"
        durable_done:set(ack, err)
      end)
      local res = assert(p:act { topic = "plain", cmd = "ping" })
      order[#order + 1] = "plain"
      assert.equal("pong", res)
      local ack, err = durable_done:wait(10000)
      assert.is_nil(ack)
      assert.equal("TimeoutError", err.name)
      assert.matches('No publish ack from JetStream within 1500 ms', err.message, 1, true)
      assert.matches('is there a stream taking subject "hemera.durable.nostream"?', err.message, 1, true)
      assert.same({ "plain", "durable" }, order)
      p:close()
      s:close()
    end, 30000)
  end)

  it("checks durable$ options when the action is added", function()
    local w = Hemera.new { servers = srv.url, timeout = 2000 }
    local ok, e = pcall(w.add, w, { topic = "t", ["durable$"] = { stream = "A.B" } }, function() end)
    assert.is_false(ok)
    assert.equal([[Invalid durable$ option 'stream': expected a name of letters, digits, '_' and '-', got "A.B"]], e.message)
    assert.equal("stream", e.option)
    ok, e = pcall(w.add, w, { topic = "t", ["durable$"] = { stream = "A", ackWait = 1000 } }, function() end)
    assert.is_false(ok)
    assert.matches("'ackWait': 1000 ms must be longer than the handler's timeout (2000 ms)", e.message, 1, true)
    ok, e = pcall(w.add, w, { topic = "t", ["durable$"] = { stream = "A", retention = "forever" } }, function() end)
    assert.is_false(ok)
    assert.matches("'retention': expected one of interest, limits, workqueue, got forever", e.message, 1, true)
    ok, e = pcall(w.add, w, { topic = "t", ["durable$"] = { stream = "A", maxDeliverr = 3 } }, function() end)
    assert.is_false(ok)
    assert.matches("Unknown durable$ option 'maxDeliverr'", e.message, 1, true)
    ok, e = pcall(w.add, w, { topic = "t", ["pubsub$"] = true, ["durable$"] = { stream = "A" } }, function() end)
    assert.is_false(ok)
    assert.matches("durable$ cannot go with pubsub$", e.message, 1, true)
  end)

  it("stores an act once per request id, gives the handler its delivery, and still answers plain NATS", function()
    testing.run(function()
      local w = Hemera.new { servers = srv.url }
      local got, done = {}, Hemera.future()
      w:add({ topic = "dedup", cmd = "put", ["durable$"] = { stream = "DEDUP" } }, function(req, ctx)
        got[#got + 1] = { k = req.k, delivery = ctx.delivery, id = ctx.request.id, meta = ctx.meta.who }
        if req.k == 2 then done:set(true) end
        return { k = req.k }
      end)
      assert(w:ready())
      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      local a1 = assert(p:act { topic = "dedup", cmd = "put", k = 1, requestId_ = "order-1", meta_ = { who = "me" },
                                ["durable$"] = true })
      local a2 = assert(p:act { topic = "dedup", cmd = "put", k = 1, requestId_ = "order-1", ["durable$"] = true })
      assert.same({ stream = "DEDUP", seq = 1, duplicate = false }, a1)
      assert.same({ stream = "DEDUP", seq = 1, duplicate = true }, a2)
      assert(p:act { topic = "dedup", cmd = "put", k = 2, ["durable$"] = { stream = "DEDUP" } })
      -- The wrong stream expected: refused, nothing stored.
      local none, err = p:act { topic = "dedup", cmd = "put", k = 3, ["durable$"] = { stream = "ELSEWHERE" } }
      assert.is_nil(none)
      assert.matches("JetStream did not store the durable act", err.message, 1, true)
      assert.is_true(done:wait(10000))
      assert.equal(2, #got)
      assert.equal(1, got[1].k)
      assert.equal("order-1", got[1].id)
      assert.equal("me", got[1].meta)
      local d = got[1].delivery
      assert.equal(1, d.count)
      assert.equal(1, d.stream_seq)
      assert.equal("DEDUP", d.stream)
      assert.equal("hemera-dedup", d.consumer)
      assert.equal("hemera.durable.dedup", d.subject)
      assert.equal(2, got[2].delivery.stream_seq)
      -- A plain act (what a Node Hemera 7 client sends) reaches the same
      -- action over plain NATS, without a delivery.
      local res, perr = p:act { topic = "dedup", cmd = "put", k = 9 }
      assert.is_nil(perr)
      assert.same({ k = 9 }, res)
      assert.is_nil(got[3].delivery)
      local info = assert(durable.api(p._i, "STREAM.INFO.DEDUP"))
      assert.equal(2, info.state.messages)
      p:close()
      w:close()
    end, 30000)
  end)

  it("replays from a sequence and from a time exactly the stored messages, in order", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      raw_stream(c, "LOG", { subjects = core.array { "hemera.durable.log.>" } })
      local acks = {}
      for k = 1, 20 do
        local topic = k % 2 == 0 and "log.even" or "log.odd"
        acks[k] = assert(c:act { topic = topic, cmd = "line", k = k, ["durable$"] = true })
        assert.equal(k, acks[k].seq)
      end
      local function collect(opts)
        local out = {}
        for item in c:replay(opts) do out[#out + 1] = item end
        return out
      end
      local from11 = collect { stream = "LOG", from_seq = 11 }
      assert.equal(10, #from11)
      for n, item in ipairs(from11) do
        local k = 10 + n
        assert.equal(k, item.seq)
        assert.equal(k, core.decode(item.data).pattern.k)
        assert.equal(k % 2 == 0 and "log.even" or "log.odd", item.topic)
      end
      -- From the time of message 11 (its RFC 3339 stamp, to the ns): the
      -- same ten.
      local from_time = collect { stream = "LOG", from_time = from11[1].rfc3339 }
      assert.equal(10, #from_time)
      for n, item in ipairs(from_time) do assert.equal(10 + n, item.seq) end
      -- From ms (a double) it starts at most a microsecond before: message
      -- 10 is in only when it was stored within that microsecond.
      local from_ms = collect { stream = "LOG", from_time = from11[1].time }
      assert.equal(11, from_ms[#from_ms - 9].seq)
      assert.equal(20, from_ms[#from_ms].seq)
      -- With a filter (a topic).
      local evens = collect { stream = "LOG", from_time = from11[1].rfc3339, filter = "log.even" }
      assert.equal(5, #evens)
      for n, item in ipairs(evens) do assert.equal(10 + 2 * n, item.seq) end
      assert.same({}, collect { stream = "LOG", from_seq = 21 })
      -- Leaving the loop early ends the replay.
      local n = 0
      for _ in c:replay { stream = "LOG", from_seq = 1, batch = 4 } do
        n = n + 1
        if n == 6 then break end
      end
      assert.equal(6, n)
      c:close()
    end, 30000)
  end)

  it("keeps state in a KV bucket: get, put, watch", function()
    testing.run(function()
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local kv = c:kv("plugin-state")
      assert.is_nil(kv:get("count"))
      local r1 = assert(kv:put("count", "1"))
      assert.equal("1", kv:get("count"))
      local updates, two = {}, Hemera.future()
      local w = kv:watch(">", function(key, value, rev)
        updates[#updates + 1] = { key, value, rev }
        if value == "2" then two:set(true) end
      end)
      local r2 = assert(kv:put("count", "2"))
      assert.is_true(r2 > r1)
      assert.is_true(two:wait(5000))
      assert.same({ "count", "2", r2 }, updates[#updates])
      assert.equal("2", kv:get("count"))
      w:stop()
      assert.has_error(function() kv:put("bad key", "x") end)
      c:close()
    end, 30000)
  end)
end)
