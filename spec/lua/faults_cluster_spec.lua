-- Faults: a three-node nats-server cluster on loopback loses the node a
-- service (or a caller) is connected to. Real processes (hemera.testing).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local RECONNECT = { reconnectWait = 50, maxReconnect = -1 }

-- Acts until one succeeds. Interest crosses the cluster's routes
-- asynchronously and no client-side event says it has arrived, so this is
-- a bounded retry; each try is a real act with a short timeout.
local function until_served(c, p, tries)
  for _ = 1, tries or 50 do
    local q = {}
    for k, v in pairs(p) do q[k] = v end
    q.timeout_ = 200
    local res, err = c:act(q)
    if err == nil then return res end
  end
  error("never served: " .. core.encode(p))
end

-- W workers act in a loop, each act tagged with the phase it started in.
-- Returns the load object: load.phase (set by the test), load:stop() ->
-- waits for every worker to end.
local function start_load(c, topic, W)
  local load = {
    phase = "before", issued = {}, ok = {}, timeouts = {}, errors = {}, extra = 0,
    calls = {}, running = W, finished = testing.future(), stopping = false, first_after = testing.future(),
    inflight = 0, inflight_at_kill = nil,
  }
  local n = 0
  for w = 1, W do
    Hemera.spawn(function()
      while not load.stopping do
        n = n + 1
        local id, phase = n, load.phase
        load.issued[phase] = (load.issued[phase] or 0) + 1
        load.inflight = load.inflight + 1
        local done = testing.future()
        -- A timeout longer than the failover: a worker has at most one
        -- act in flight across the outage.
        c:act({ topic = topic, w = w, id = id, timeout_ = 3000 }, function(err, res)
          load.calls[id] = (load.calls[id] or 0) + 1
          if load.calls[id] > 1 then load.extra = load.extra + 1; return end
          load.inflight = load.inflight - 1
          if err == nil and res == id then
            load.ok[phase] = (load.ok[phase] or 0) + 1
            local t = load.target
            if t and t.phase == phase and load.ok[phase] >= t.n then
              load.target = nil
              t.future:set()
            end
            if phase == "failover" and not load.first_after:is_set() then load.first_after:set() end
          elseif Hemera.errors.TimeoutError:is(err) then
            load.timeouts[phase] = (load.timeouts[phase] or 0) + 1
          else
            load.errors[#load.errors + 1] = phase .. ": " .. tostring(err) .. " " .. tostring(res)
          end
          done:set()
        end)
        done:wait()
      end
      load.running = load.running - 1
      if load.running == 0 then load.finished:set() end
    end)
  end
  -- Returns once `n` acts started in `phase` have succeeded.
  function load:wait_ok(phase, want)
    if (self.ok[phase] or 0) >= want then return end
    self.target = { phase = phase, n = want, future = testing.future() }
    assert.is_nil(select(2, self.target.future:wait(15000)))
  end
  function load:stop()
    self.stopping = true
    assert.is_nil(select(2, self.finished:wait(10000)))
    if os.getenv("HEMERA_SPEC_DEBUG") then
      io.stderr:write(("\nload: in flight at kill %s; issued %s; ok %s; timeouts %s\n"):format(
        tostring(self.inflight_at_kill), core.encode(self.issued), core.encode(self.ok), core.encode(self.timeouts)))
    end
  end
  return load
end

describe("faults: a three-node cluster", function()
  local cl
  before_each(function() cl = testing.start_cluster(3) end)
  after_each(function() testing.stop_all() end)

  it("kill the node the service is connected to: it fails over and keeps serving; "
     .. "callers see at most the in-flight failures", function()
    testing.run(function()
      local slog = testing.logger()
      local name = "svc-failover-" .. core.nuid()
      local topic = testing.topic("failover")
      local s = Hemera.new { servers = cl.urls, name = name, logger = slog, nats = RECONNECT }
      s:add({ topic = topic }, function(req) return req.id end)
      assert(s:ready())
      local node = assert(cl:node_of(name), "the service is on no node")
      -- The caller sits on a node that survives.
      local c = Hemera.new { servers = cl:running_urls(node)[1], nats = RECONNECT }
      assert(c:ready())
      until_served(c, { topic = topic, id = 0 })

      local W = 4
      local load = start_load(c, topic, W)
      -- Let the load run: wait until some acts have succeeded.
      load:wait_ok("before", 200)
      load.inflight_at_kill = load.inflight
      load.phase = "failover"
      node:kill()
      assert(slog:wait("NATS disconnected!", 10000))
      assert(slog:wait("NATS reconnected!", 10000), "the service did not fail over:\n" .. slog:text())
      assert(s:flush())
      -- Served again through the cluster: from now on nothing may fail.
      assert.is_nil(select(2, load.first_after:wait(10000)))
      load.phase = "after"
      load:wait_ok("after", 200)
      load:stop()

      assert.equal(0, load.extra)               -- every act ended exactly once
      assert.same({}, load.errors)              -- failures are timeouts only
      assert.is_nil(load.timeouts.after)         -- after the failover nothing fails
      assert.equal(load.issued.after, load.ok.after)
      -- Only acts in flight across the outage may fail: at most one per
      -- worker, since each has one act in flight at a time.
      assert.is_true((load.timeouts.before or 0) <= load.inflight_at_kill)
      assert.is_true((load.timeouts.before or 0) + (load.timeouts.failover or 0) <= W)
      -- The service now runs on another node, and says so in its log.
      local now = assert(cl:node_of(name))
      assert.are_not.equal(node, now)
      assert.equal(0, c:stats().pending)
      assert.equal(0, s:stats().pending)
    end, 25000)
  end)

  it("a caller given one node's URL fails over through the URLs the cluster advertises", function()
    testing.run(function()
      local clog = testing.logger()
      local topic = testing.topic("caller-failover")
      local cname = "cli-failover-" .. core.nuid()
      local s = Hemera.new { servers = cl.nodes[2].url, nats = RECONNECT }
      s:add({ topic = topic }, function(req) return req.id end)
      assert(s:ready())
      local c = Hemera.new { servers = cl.nodes[1].url, name = cname, logger = clog, nats = RECONNECT }
      assert(c:ready())
      until_served(c, { topic = topic, id = 0 })
      assert.equal(cl.nodes[1], cl:node_of(cname))

      local W = 4
      local load = start_load(c, topic, W)
      load:wait_ok("before", 200)
      load.inflight_at_kill = load.inflight
      load.phase = "failover"
      cl.nodes[1]:kill()
      assert(clog:wait("NATS reconnected!", 10000), "the caller did not fail over:\n" .. clog:text())
      assert.is_nil(select(2, load.first_after:wait(10000)))
      load.phase = "after"
      load:wait_ok("after", 200)
      load:stop()
      assert.equal(0, load.extra)
      assert.same({}, load.errors)
      assert.is_nil(load.timeouts.after)
      assert.is_true((load.timeouts.before or 0) <= load.inflight_at_kill)
      assert.is_true((load.timeouts.before or 0) + (load.timeouts.failover or 0) <= W)
      assert.is_not_nil(cl:node_of(cname))
      assert.equal(0, c:stats().pending)
    end, 25000)
  end)

  it("keeps serving when a node the service is not connected to dies", function()
    testing.run(function()
      local name = "svc-bystander-" .. core.nuid()
      local topic = testing.topic("bystander")
      local s = Hemera.new { servers = cl.urls, name = name, nats = RECONNECT }
      s:add({ topic = topic }, function(req) return req.id end)
      assert(s:ready())
      local node = assert(cl:node_of(name))
      local survivors = cl:running_urls(node)
      local c = Hemera.new { servers = survivors[1], nats = RECONNECT }
      assert(c:ready())
      until_served(c, { topic = topic, id = 0 })
      -- Kill the third node: neither the service's nor the caller's.
      for _, n in ipairs(cl.nodes) do
        if n ~= node and n.url ~= survivors[1] then n:kill() end
      end
      for k = 1, 100 do
        local res, err = c:act { topic = topic, id = k }
        assert.is_nil(err)
        assert.equal(k, res)
      end
    end, 25000)
  end)
end)
