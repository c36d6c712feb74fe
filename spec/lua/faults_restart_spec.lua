-- Faults: the nats-server restarts (or goes away) while a service and its
-- callers are busy. Real nats-server processes on loopback (hemera.testing).
local Hemera = require "hemera"
local testing = require "hemera.testing"

-- Fast reconnects so the outage is short; retry for ever.
local RECONNECT = { reconnectWait = 50, maxReconnect = -1 }

-- A gate many coroutines can wait on (a future has one waiter).
local function gate()
  local g = { open = false, waiting = {} }
  function g:wait()
    if self.open then return end
    local f = testing.future()
    self.waiting[#self.waiting + 1] = f
    f:wait()
  end
  function g:release()
    self.open = true
    for _, f in ipairs(self.waiting) do f:set() end
    self.waiting = {}
  end
  return g
end

-- Counts callbacks per act; `all` is set once `n` acts have ended.
local function tracker(n)
  local t = { calls = {}, failed = {}, ended = 0, ok = 0, timeouts = 0, errors = {}, extra = 0, all = testing.future() }
  function t:cb(k)
    return function(err, res)
      local c = (t.calls[k] or 0) + 1
      t.calls[k] = c
      if c > 1 then t.extra = t.extra + 1; return end
      t.failed[k] = err ~= nil
      if err == nil then
        t.ok = t.ok + 1
      elseif Hemera.errors.TimeoutError:is(err) then
        t.timeouts = t.timeouts + 1
      else
        t.errors[#t.errors + 1] = tostring(err)
      end
      t.ended = t.ended + 1
      if t.ended == n then t.all:set() end
    end
  end
  return t
end

describe("faults: the nats-server restarts", function()
  local srv
  setup(function() srv = testing.start_server() end)
  teardown(function() testing.stop_all() end)
  before_each(function()
    if not srv.running then srv:restart() end
  end)

  for _, sig in ipairs { "KILL", "TERM" } do
    it("under load (SIG" .. sig .. "): in-flight acts end exactly once, the service resubscribes, "
       .. "new acts succeed, no pending record is left", function()
      testing.run(function()
        local slog, clog = testing.logger(), testing.logger()
        local topic = testing.topic("restart")
        local s = Hemera.new { servers = srv.url, name = "svc-restart", logger = slog, nats = RECONNECT }
        local hold = gate()
        local N = 40
        local entered, all_in = 0, testing.future()
        s:add({ topic = topic, cmd = "hold" }, function(req)
          entered = entered + 1
          if entered == N then all_in:set() end
          hold:wait()
          return req.k
        end)
        s:add({ topic = topic, cmd = "echo" }, function(req) return req.k end)
        assert(s:ready())
        local c = Hemera.new { servers = srv.url, name = "cli-restart", logger = clog, nats = RECONNECT }
        assert(c:ready())

        -- N acts held by the service: in flight when the server goes.
        local held = tracker(N)
        for k = 1, N do
          c:act({ topic = topic, cmd = "hold", k = k, timeout_ = 1500 }, held:cb(k))
        end
        assert.is_nil(select(2, all_in:wait(10000)))

        -- Load that keeps going across the outage: M more acts, issued
        -- while the server dies, is down and comes back.
        local M = 60
        local load = tracker(M)
        local issued = 0
        local function issue(k)
          issued = issued + 1
          c:act({ topic = topic, cmd = "echo", k = k, timeout_ = 1500 }, load:cb(k))
        end
        for k = 1, M // 3 do issue(k) end

        srv:stop(sig)
        assert(slog:wait("NATS disconnected!", 10000), "service did not log the disconnect")
        assert(clog:wait("NATS disconnected!", 10000), "client did not log the disconnect")
        for k = M // 3 + 1, 2 * M // 3 do issue(k) end

        srv:restart()
        assert(slog:wait("NATS reconnected!", 10000), "service did not log the reconnect")
        assert(clog:wait("NATS reconnected!", 10000), "client did not log the reconnect")
        -- The service's subscriptions are back on the server once a round
        -- trip on its connection has come back.
        assert(s:flush())
        for k = 2 * M // 3 + 1, M do issue(k) end
        assert.equal(M, issued)

        -- Every held act ends exactly once (their handlers still wait).
        assert.is_nil(select(2, held.all:wait(10000)))
        assert.equal(N, held.ended)
        assert.equal(0, held.ok)
        assert.same({}, held.errors)
        assert.equal(N, held.timeouts)

        -- Every load act ends exactly once; those issued after the
        -- reconnect succeed.
        assert.is_nil(select(2, load.all:wait(10000)))
        assert.equal(M, load.ended)
        assert.same({}, load.errors)
        for k = 2 * M // 3 + 1, M do assert.is_false(load.failed[k], "act " .. k .. " failed") end

        -- New acts succeed after the reconnect.
        for k = 1, 20 do
          local res, err = c:act { topic = topic, cmd = "echo", k = k }
          assert.is_nil(err)
          assert.equal(k, res)
        end

        -- The held handlers finish now: their replies come too late and
        -- are dropped and counted, never delivered a second time. The
        -- probe's reply is published after them on the same connection,
        -- so once it is back they have all arrived.
        hold:release()
        assert(c:act { topic = topic, cmd = "echo", k = 0 })
        assert.equal(N, c:stats().late_replies)
        assert.equal(0, held.extra)
        assert.equal(0, load.extra)
        assert.equal(0, c:stats().pending)
        assert.equal(0, s:stats().pending)
        assert.equal(0, s._i.inflight)
        -- Reconnect events were logged at the expected levels.
        assert.equal("warn", slog:find("NATS disconnected!").level)
        assert.equal("info", slog:find("NATS reconnected!").level)
      end, 25000)
    end)
  end

  it("an act made while the server is down ends exactly once, and the next one after the reconnect succeeds", function()
    testing.run(function()
      local slog, clog = testing.logger(), testing.logger()
      local topic = testing.topic("down")
      local s = Hemera.new { servers = srv.url, logger = slog, nats = RECONNECT }
      s:add({ topic = topic }, function(req) return "up" end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url, logger = clog, nats = RECONNECT }
      assert(c:ready())
      srv:kill()
      assert(clog:wait("NATS disconnected!", 10000))
      -- Buffered by the client while disconnected; nobody answers it in
      -- time, so it times out, once.
      local calls, done = 0, testing.future()
      c:act({ topic = topic, timeout_ = 300 }, function(err, res)
        calls = calls + 1
        done:set(err, res)
      end)
      local err = done:wait(10000)
      assert.is_true(Hemera.errors.TimeoutError:is(err))
      srv:restart()
      assert(slog:wait("NATS reconnected!", 10000))
      assert(clog:wait("NATS reconnected!", 10000))
      assert(s:flush())
      local res, aerr = c:act { topic = topic }
      assert.is_nil(aerr)
      assert.equal("up", res)
      assert.equal(1, calls)
      assert.equal(0, c:stats().pending)
    end, 20000)
  end)

  it("when reconnecting gives up, pending acts end at once with a clear error and the close is logged", function()
    testing.run(function()
      local slog, clog = testing.logger(), testing.logger()
      local topic = testing.topic("giveup")
      local s = Hemera.new { servers = srv.url, logger = slog }
      local hold = gate()
      local entered = testing.future()
      s:add({ topic = topic }, function() entered:set(); hold:wait(); return 1 end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url, logger = clog, nats = { maxReconnect = 2, reconnectWait = 20 } }
      assert(c:ready())
      local calls, done = 0, testing.future()
      -- A long timeout: the act must end because the connection closed,
      -- not because its deadline passed.
      c:act({ topic = topic, timeout_ = 60000 }, function(err, res)
        calls = calls + 1
        if calls == 1 then done:set(err, res) end
      end)
      entered:wait(10000)
      srv:kill()
      assert(clog:wait("NATS connection closed", 10000), "the client did not log the close:\n" .. clog:text())
      local err, res = done:wait(10000)
      assert.is_nil(res)
      assert.is_table(err)
      assert.is_false(Hemera.errors.TimeoutError:is(err))
      assert.matches("closed", tostring(err))
      assert.equal(1, calls)
      hold:release()
    end, 20000)
  end)

  it("an act on an instance whose connection is gone returns an error instead of raising", function()
    testing.run(function()
      local clog = testing.logger()
      local c = Hemera.new { servers = srv.url, logger = clog, nats = { reconnect = false } }
      assert(c:ready())
      srv:kill()
      assert(clog:wait("NATS connection closed", 10000))
      local ok, res, err = pcall(c.act, c, { topic = testing.topic("gone"), timeout_ = 200 })
      assert(ok, "hemera:act after the NATS connection closed raised: " .. tostring(res))
      assert.is_nil(res)
      assert.is_table(err)
      local sok, stats = pcall(c.stats, c)
      assert(sok, "hemera:stats() after the NATS connection closed raised: " .. tostring(stats))
      assert.equal(0, stats.pending)
    end, 20000)
  end)
end)
