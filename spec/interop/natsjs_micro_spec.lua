-- The Service API (ADR-32) as a client no one here wrote sees it: nats.js
-- 2.29.3's nc.services.client() (spec/natsjs/client.js) finds a plain Lua
-- service with no discovery configuration, by name and by id; its answers
-- follow the rules of ADR-32's schemas (spec/micro_schema.lua); STATS
-- counts a known mix exactly; an error reply carries both service error
-- headers for nats.js, and Node Hemera 7 (nats 1.x, no headers) still gets
-- the bare reply.
--
-- Needs node and npm; tools/natsjs-setup.sh (run by the spec) installs
-- nats.js from spec/natsjs/package-lock.json into <build>/natsjs.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"
local S = require "interop.support"
local N = require "natsjs_support"
local schema = require "micro_schema"

local Boom = Hemera.createError("Boom")

local function valid(kind, r)
  local ok, why = schema.check(kind, r, Hemera.null)
  assert(ok, why)
  return r
end

-- A Hemera request envelope, as any client could write it.
local function envelope(p)
  return Hemera.encode { pattern = p, meta = {}, trace = {}, request = { id = core.nuid(), type = "request" } }
end

describe("nats.js 2.x service client against a Lua service", function()
  setup(function() N.setup() end)
  teardown(function() N.kill_all() end)

  it("finds it by name and id, lists its topics, counts a known mix", function()
    N.run(function()
      local name = "lua-micro-" .. core.nuid()
      local math_t, events_t = testing.topic("math"), testing.topic("events")
      local service = testing.new { name = name } -- no discovery configuration
      service:add({ topic = math_t, cmd = "add" }, function(r) return r.a + r.b end)
      service:add({ topic = math_t, cmd = "fail" }, function()
        local e = Boom("no such luck")
        e.code = 418
        return nil, e
      end)
      service:add({ topic = events_t, cmd = "seen", ["pubsub$"] = true }, function() end)
      assert(service:ready())
      local client = testing.new { name = name .. "-client", micro = { enabled = false } }
      assert(client:ready())
      for k = 1, 4 do assert.equal(k + 1, (client:act { topic = math_t, cmd = "add", a = k, b = 1 })) end
      for _ = 1, 2 do assert.is_nil((client:act { topic = math_t, cmd = "fail" })) end

      local out = N.client {
        name = name,
        errorRequest = { subject = math_t, body = envelope { topic = math_t, cmd = "fail" } },
      }
      -- The error headers, as nats.js reads them.
      assert.is_true(out.error.isServiceError)
      assert.equal(418, out.error.code)
      assert.equal("no such luck", out.error.message)
      assert.equal("no such luck", out.error.headerError)
      assert.equal("418", out.error.headerCode)
      local body = Hemera.decode(out.error.body)
      assert.equal("Boom", body.error.name)

      local id = service:service().id
      for _, k in ipairs { "pingByName", "pingById", "infoByName", "infoById", "statsByName", "statsById" } do
        assert.equal(1, #out[k], k)
        assert.equal(id, out[k][1].id, k)
        assert.equal(name, out[k][1].name, k)
      end
      valid("ping", out.pingByName[1])
      valid("ping", out.pingById[1])
      for _, info in ipairs { out.infoByName[1], out.infoById[1] } do
        valid("info", info)
        assert.equal("lua", info.metadata["hemera.lang"])
        local by = {}
        for _, e in ipairs(info.endpoints) do by[e.subject] = e end
        assert.equal(2, #info.endpoints)
        assert.equal("queue." .. math_t, by[math_t].queue_group)
        assert.is_nil(by[events_t].queue_group)
        assert.matches('"cmd":"seen"', by[events_t].metadata.patterns)
      end
      for _, stats in ipairs { out.statsByName[1], out.statsById[1] } do
        valid("stats", stats)
        local by = {}
        for _, e in ipairs(stats.endpoints) do by[e.subject] = e end
        local m = by[math_t]
        -- 4 adds, 2 failures from Lua, 1 failure from nats.js.
        assert.equal(7, m.num_requests)
        assert.equal(3, m.num_errors)
        assert.equal("418:no such luck", m.last_error)
        assert.equal("integer", math.type(m.processing_time))
        assert.is_true(m.processing_time > 0)
        assert.is_true(m.average_processing_time > 0)
        assert.equal(m.processing_time // 7, m.average_processing_time)
        assert.equal(0, by[events_t].num_requests)
      end
      client:close()
      service:close()
    end, 60000)
  end)
end)

describe("Node Hemera 7 (nats 1.x) against an error reply with headers", function()
  setup(function() S.setup() end)
  teardown(function() S.kill_all() end)

  it("gets the bare reply: the server strips the headers", function()
    S.run(function()
      local topic = testing.topic("hdr")
      local service = testing.new { name = "lua-hdr-" .. core.nuid() }
      service:add({ topic = topic, cmd = "fail" }, function()
        local e = Boom("headers stay home")
        e.code = 409
        return nil, e
      end)
      assert(service:ready())
      -- The reply is published with HPUB; nats 1.x connects without
      -- header support, so the server delivers it as a plain MSG (a
      -- header block would break the client's parser or show in the text).
      local calls, sent, act = S.node_act({ topic = topic, cmd = "fail" })
      assert.equal(1, #calls)
      local e = calls[1].error
      assert.equal("Boom", e.name)
      assert.equal("headers stay home", e.message)
      assert.equal(409, e.props.code)
      -- The reply Node read is our envelope's JSON text, nothing before it.
      local raw = calls[1].replyRaw
      assert.equal("{", raw:sub(1, 1))
      local reply = assert(Hemera.decode(raw))
      assert.equal(sent.request.id, reply.request.id)
      assert.equal("headers stay home", reply.error.message)
      assert.is_nil(act.incomplete)
      service:close()
    end, 60000)
  end)
end)
