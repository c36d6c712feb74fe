-- Durable actions: a failing handler is nak'ed with the configured
-- back-off and delivered again; after maxDeliver attempts the message is
-- terminated, logged once and counted.
local Hemera = require "hemera"
local durable = require "hemera.durable"
local testing = require "hemera.testing"
local jsproc = require "jsproc"

describe("durable actions that fail", function()
  local srv
  setup(function() srv = jsproc.start() end)
  teardown(function() jsproc.stop_all() end)

  it("are delivered again after the back-off, and succeed on the 4th attempt", function()
    testing.run(function()
      local lg = testing.logger()
      local w = Hemera.new { servers = srv.url, logger = lg }
      local seen, done = {}, Hemera.future()
      local backoff = { 100, 200, 300 }
      w:add({ topic = "pay", cmd = "charge",
              ["durable$"] = { stream = "PAY", consumer = "payers", backoff = backoff, maxDeliver = 6 } },
        function(req, ctx)
          seen[#seen + 1] = { count = ctx.delivery.count, seq = ctx.delivery.stream_seq,
                              at = require("hemera.core").hrtime() }
          if ctx.delivery.count <= 3 then error("declined " .. ctx.delivery.count) end
          done:set(true)
          return { charged = req.amount }
        end)
      assert(w:ready())
      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      local ack, err = p:act { topic = "pay", cmd = "charge", amount = 7, ["durable$"] = { stream = "PAY" } }
      assert.is_nil(err)
      assert.same({ stream = "PAY", seq = 1, duplicate = false }, ack)
      assert.is_true(done:wait(10000))
      assert.equal(4, #seen)
      for k = 1, 4 do
        assert.equal(k, seen[k].count)
        assert.equal(1, seen[k].seq)
      end
      -- Each attempt came no sooner than its nak's delay.
      for k = 1, 3 do
        local gap = seen[k + 1].at - seen[k].at
        assert.is_true(gap >= backoff[k], ("attempt %d came %.1f ms after the failure, back-off %d ms"):format(k + 1, gap, backoff[k]))
      end
      -- close waits for running messages until their ack is confirmed.
      local closed = Hemera.future()
      w:close(function() closed:set(true) end)
      assert.is_true(closed:wait(10000))
      local st = durable.stats(w)
      assert.equal(1, st.acked)
      assert.equal(3, st.nacked)
      assert.equal(0, st.terminated)
      assert.equal(3, st.redelivered)
      assert.equal(3, lg:count(function(r) return r.level == "warn" and r.msg:find("Durable handler failed", 1, true) end))
      assert.equal(0, lg:count(function(r) return r.level == "error" end))
      p:close()
    end, 30000)
  end)

  it("run past ackWait without being delivered again: progress goes out by itself", function()
    testing.run(function()
      local lg = testing.logger()
      local w = Hemera.new { servers = srv.url, logger = lg, timeout = 1000 }
      local ackWait = 1500
      -- The +WPI publishes go to the message's ack subject, which any
      -- subscriber sees: the handler is held until two ackWaits' worth
      -- (every third of ackWait) went out, so a missing one would have
      -- let JetStream deliver the message again meanwhile.
      local watch = testing.raw(srv.url)
      local wpi, enough = 0, Hemera.future()
      assert(watch:subscribe("$JS.ACK.SLOW.>", nil, 0, function(_, _, data)
        if data == "+WPI" then
          wpi = wpi + 1
          if wpi == 6 then enough:set(true) end
        end
      end))
      assert(watch:flush(5000))
      local runs, finished = 0, Hemera.future()
      w:add({ topic = "slow", cmd = "job", ["durable$"] = { stream = "SLOW", ackWait = ackWait, maxDeliver = 5 } },
        function()
          runs = runs + 1
          assert(enough:wait(20000), "no progress went out")
          finished:set(true)
          return { done = true }
        end)
      assert(w:ready())
      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      assert(p:act { topic = "slow", cmd = "job", ["durable$"] = true })
      local closed = Hemera.future()
      assert.is_true(finished:wait(20000))
      w:close(function() closed:set(true) end)
      assert.is_true(closed:wait(10000))
      assert.equal(1, runs)
      local info = assert(durable.api(p._i, "CONSUMER.INFO.SLOW.hemera-slow"))
      assert.equal(1, info.delivered.consumer_seq)
      assert.equal(0, info.num_redelivered)
      assert.equal(0, info.num_ack_pending)
      local st = durable.stats(w)
      assert.equal(1, st.acked)
      assert.is_true(st.progress >= 6)
      -- Its ack timer restarted at the last progress: the ack is not late.
      assert.equal(0, st.ack_late)
      assert.equal(0, lg:count(function(r) return r.level == "warn" end))
      p:close()
    end, 30000)
  end)

  it("are terminated after maxDeliver attempts, with one error log and a counter", function()
    testing.run(function()
      local lg = testing.logger()
      local w = Hemera.new { servers = srv.url, logger = lg }
      local attempts = 0
      w:add({ topic = "mail", cmd = "send",
              ["durable$"] = { stream = "MAIL", backoff = 50, maxDeliver = 3 } },
        function()
          attempts = attempts + 1
          return nil, Hemera.createError("BounceError")("mailbox full")
        end)
      assert(w:ready())
      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      local ack, err = p:act { topic = "mail", cmd = "send", to = "x", ["durable$"] = true }
      assert.is_nil(err)
      assert.equal(1, ack.seq)
      local rec = lg:wait(function(r) return r.level == "error" end, 10000)
      assert.truthy(rec, "no error log")
      assert.matches("terminated after 3 attempts", rec.msg, 1, true)
      assert.equal(1, rec.fields.seq)
      assert.equal("BounceError", rec.fields.error.name)
      -- Terminated: JetStream holds nothing pending or unacked for it any
      -- more, so no 4th attempt can come.
      local info = assert(durable.api(w._i, "CONSUMER.INFO.MAIL.hemera-mail"))
      assert.equal(0, info.num_ack_pending)
      assert.equal(0, info.num_pending)
      assert.equal(3, attempts)
      assert.equal(1, lg:count(function(r) return r.level == "error" end))
      local st = durable.stats(w)
      assert.equal(1, st.terminated)
      assert.equal(2, st.nacked)
      p:close()
      w:close()
    end, 30000)
  end)
end)
