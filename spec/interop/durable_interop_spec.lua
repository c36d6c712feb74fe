-- Durable work beside Node Hemera 7 (nats-hemera 7.0.2): a Node client
-- still reaches a durable action over plain NATS, and what a durable act
-- stores is the envelope a plain act sends, the one Node's client sends.
-- On a private JetStream server (jsproc), which the Node client uses too.
local Hemera = require "hemera"
local core = require "hemera.core"
local jsproc = require "jsproc"
local S = require "interop.support"

-- The keys of a JSON object, sorted.
local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("durable work and Node Hemera 7", function()
  local srv
  setup(function()
    S.setup()
    srv = jsproc.start { name = "js-interop" }
    -- S's raw connections and Node processes go to this server.
    S.url = srv.url
  end)
  teardown(function()
    S.kill_all()
    jsproc.stop_all()
  end)

  it("a Node client reaches a durable action over plain NATS; a durable act stores the same envelope", function()
    S.run(function()
      local w = Hemera.new { servers = srv.url }
      local durable_seen = Hemera.future()
      w:add({ topic = "dnode", cmd = "put", ["durable$"] = { stream = "DNODE" } }, function(req, ctx)
        if ctx.delivery then durable_seen:set(req.k, ctx.delivery.stream_seq) end
        return { k = req.k, durable = ctx.delivery ~= nil }
      end)
      assert(w:ready())

      local calls, sent = S.node_act({ topic = "dnode", cmd = "put", k = 5 })
      assert.equal(1, #calls)
      assert.is_nil(calls[1].error)
      assert.same({ k = 5, durable = false }, calls[1].result)

      local p = Hemera.new { servers = srv.url }
      assert(p:ready())
      local ack = assert(p:act { topic = "dnode", cmd = "put", k = 6, ["durable$"] = true })
      local k, seq = durable_seen:wait(10000)
      assert.equal(6, k)
      assert.equal(ack.seq, seq)
      local stored
      for item in p:replay { stream = "DNODE", from_seq = ack.seq } do stored = core.decode(item.data) end
      assert.same({ topic = "dnode", cmd = "put", k = 6 }, stored.pattern)
      assert.same(keys(sent), keys(stored))
      assert.same(keys(sent.trace), keys(stored.trace))
      assert.same(keys(sent.request), keys(stored.request))
      assert.equal(sent.request.type, stored.request.type)
      p:close()
      w:close()
    end)
  end)
end)
