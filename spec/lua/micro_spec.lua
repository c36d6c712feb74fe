-- Every Hemera instance is an ADR-32 service (hemera.micro): its $SRV
-- answers, their shapes (checked against the rules of ADR-32's schemas,
-- spec/micro_schema.lua), the counters kept in C, and its options.
-- Other specs share the server: requests here address an instance by its
-- own name (unique per test) or by name and id, never $SRV.PING alone.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"
local schema = require "micro_schema"

local function uname(base) return (base or "micro") .. "-" .. core.nuid() end

-- One request on the instance's own connection: the decoded reply, or nil
-- and "timeout".
local function ask(hemera, subject, timeout)
  local data, err = hemera.transport:request(subject, "", timeout or 1000, 1)
  if data == nil then return nil, err end
  return Hemera.decode(data)
end

local function valid(kind, r)
  local ok, why = schema.check(kind, r, Hemera.null)
  assert(ok, why)
  return r
end

local Boom = Hemera.createError("Boom")

describe("hemera.micro: the Service API", function()
  it("answers PING, INFO and STATS by name and by name and id", function()
    testing.run(function()
      local name = uname()
      local hemera = testing.new { name = name }
      hemera:add({ topic = testing.topic("m"), cmd = "x" }, function() return 1 end)
      assert(hemera:ready())
      local ping = valid("ping", assert(ask(hemera, "$SRV.PING." .. name)))
      assert.equal(name, ping.name)
      assert.equal(Hemera.VERSION, ping.version)
      assert.same({ ["hemera.lang"] = "lua", ["hemera.version"] = Hemera.VERSION }, ping.metadata)
      for _, verb in ipairs { "PING", "INFO", "STATS" } do
        local r = valid(verb:lower(), assert(ask(hemera, ("$SRV.%s.%s.%s"):format(verb, name, ping.id))))
        assert.equal(ping.id, r.id)
        assert.equal("io.nats.micro.v1." .. verb:lower() .. "_response", r.type)
      end
      -- Another id under the same name: nobody answers.
      assert.same({ nil, "timeout" }, { ask(hemera, "$SRV.PING." .. name .. "." .. core.nuid(), 200) })
      -- The id is new for each instance.
      local other = testing.new { name = name }
      assert(other:ready())
      assert.are_not.equal(ping.id, other:service().id)
      hemera:close()
      other:close()
    end)
  end)

  it("lists each topic as an endpoint with its queue group and patterns", function()
    testing.run(function()
      local name = uname()
      local plain, pub, queued = testing.topic("plain"), testing.topic("pub"), testing.topic("queued")
      local hemera = testing.new { name = name }
      hemera:add({ topic = plain, cmd = "a" }, function() end)
      hemera:add({ topic = plain, cmd = "b", n = 1 }, function() end)
      hemera:add({ topic = pub, cmd = "e", ["pubsub$"] = true }, function() end)
      hemera:add({ topic = queued, ["queue$"] = "workers" }, function() end)
      assert(hemera:ready())
      local info = valid("info", assert(ask(hemera, "$SRV.INFO." .. name)))
      local by = {}
      for _, e in ipairs(info.endpoints) do by[e.subject] = e end
      assert.equal(3, #info.endpoints)
      assert.equal("queue." .. plain, by[plain].queue_group)
      assert.is_nil(by[pub].queue_group)
      assert.equal("workers", by[queued].queue_group)
      assert.equal(plain:gsub("%.", "_"), by[plain].name)
      local pats = Hemera.decode(by[plain].metadata.patterns)
      table.sort(pats, function(x, y) return x.cmd < y.cmd end)
      assert.same({ { topic = plain, cmd = "a" }, { topic = plain, cmd = "b", n = 1 } }, pats)
      -- Topics added after ready show up; removed ones go.
      local later = testing.topic("later")
      hemera:add({ topic = later, cmd = "z" }, function() end)
      hemera:remove(pub)
      assert(hemera:flush())
      info = valid("info", assert(ask(hemera, "$SRV.INFO." .. name)))
      by = {}
      for _, e in ipairs(info.endpoints) do by[e.subject] = e end
      assert.is_nil(by[pub])
      assert.equal("queue." .. later, by[later].queue_group)
      local stats = valid("stats", assert(ask(hemera, "$SRV.STATS." .. name)))
      assert.equal(3, #stats.endpoints)
      hemera:close()
    end)
  end)

  it("counts requests, errors and their time exactly, and resets", function()
    testing.run(function()
      local name = uname()
      local topic = testing.topic("count")
      local hemera = testing.new { name = name }
      hemera:add({ topic = topic, cmd = "ok" }, function() return true end)
      hemera:add({ topic = topic, cmd = "fail" }, function()
        local e = Boom("went\r\nwrong")
        e.code = 42
        return nil, e
      end)
      hemera:add({ topic = topic, cmd = "plain" }, function() return nil, Boom("no code") end)
      assert(hemera:ready())
      for _ = 1, 3 do assert(hemera:act { topic = topic, cmd = "ok" }) end
      assert.is_nil((hemera:act { topic = topic, cmd = "fail" }))
      assert.is_nil((hemera:act { topic = topic, cmd = "plain" }))
      assert.is_nil((hemera:act { topic = topic, cmd = "fail" }))
      -- Not found is an error reply too.
      assert.is_nil((hemera:act { topic = topic, cmd = "nothing" }))
      local stats = valid("stats", assert(ask(hemera, "$SRV.STATS." .. name)))
      local e = stats.endpoints[1]
      assert.equal(topic, e.subject)
      assert.equal(7, e.num_requests)
      assert.equal(4, e.num_errors)
      assert.matches("^500:", e.last_error)
      assert.is_true(e.processing_time > 0)
      assert.equal(e.processing_time // 7, e.average_processing_time)
      assert.is_true(e.average_processing_time > 0)
      assert.is_number(e.data.rss)
      assert.is_number(e.data.heapUsed)
      assert.is_number(e.data.eventLoopDelay)
      assert.is_true(e.data.rss > 0)
      assert(hemera:act { topic = topic, cmd = "fail" } == nil)
      e = valid("stats", assert(ask(hemera, "$SRV.STATS." .. name))).endpoints[1]
      -- Control characters of the message become spaces.
      assert.equal("42:went  wrong", e.last_error)
      local started = stats.started
      hemera:reset()
      stats = valid("stats", assert(ask(hemera, "$SRV.STATS." .. name)))
      e = stats.endpoints[1]
      assert.same({ 0, 0, "", 0, 0 }, { e.num_requests, e.num_errors, e.last_error, e.processing_time,
                                        e.average_processing_time })
      assert.is_true(stats.started >= started)
      hemera:close()
    end)
  end)

  it("counts a pubsub message as a request, and a streamed request once", function()
    testing.run(function()
      local name = uname()
      local pub, stream = testing.topic("pub"), testing.topic("stream")
      local got = testing.future()
      local hemera = testing.new { name = name }
      hemera:add({ topic = pub, ["pubsub$"] = true }, function() got:set(true) end)
      hemera:add({ topic = stream }, function(_, ctx)
        ctx.reply:next(1)
        ctx.reply:next(2)
        ctx.reply:next(3)
      end)
      assert(hemera:ready())
      hemera:act({ topic = pub, ["pubsub$"] = true }, function() end)
      assert(got:wait(2000))
      local n = 0
      for r in hemera:stream { topic = stream, ["maxMessages$"] = 3 } do n = n + 1; assert(r) end
      assert.equal(3, n)
      local by = {}
      for _, e in ipairs(valid("stats", assert(ask(hemera, "$SRV.STATS." .. name))).endpoints) do by[e.subject] = e end
      assert.equal(1, by[pub].num_requests)
      assert.equal(0, by[pub].num_errors)
      assert.equal(1, by[stream].num_requests)
      hemera:close()
    end)
  end)

  it("counts replies sent through a custom server encoder too", function()
    testing.run(function()
      local name = uname()
      local topic = testing.topic("enc")
      local hemera = testing.new { name = name }
      hemera:setServerEncoder(function(v) return Hemera.encode(v) end)
      hemera:add({ topic = topic, cmd = "ok" }, function() return 1 end)
      hemera:add({ topic = topic, cmd = "fail" }, function() return nil, Boom("custom") end)
      assert(hemera:ready())
      assert(hemera:act { topic = topic, cmd = "ok" })
      assert.is_nil((hemera:act { topic = topic, cmd = "fail" }))
      local e = valid("stats", assert(ask(hemera, "$SRV.STATS." .. name))).endpoints[1]
      assert.same({ 2, 1, "500:custom" }, { e.num_requests, e.num_errors, e.last_error })
      assert.is_true(e.processing_time > 0)
      hemera:close()
    end)
  end)

  it("maps the name, takes version, description, metadata and prefix", function()
    testing.run(function()
      local id = core.nuid()
      local hemera = testing.new {
        name = "math.v2 ü-" .. id,
        micro = { version = "2.1.0-rc.1+b7", description = "Math", metadata = { team = "core" }, prefix = "$ALT" },
      }
      assert(hemera:ready())
      local name = "math_v2___-" .. id
      assert.same({ nil, "timeout" }, { ask(hemera, "$SRV.PING." .. name, 200) })
      local info = valid("info", assert(ask(hemera, "$ALT.INFO." .. name)))
      assert.equal(name, info.name)
      assert.equal("2.1.0-rc.1+b7", info.version)
      assert.equal("Math", info.description)
      assert.same({ team = "core", ["hemera.lang"] = "lua", ["hemera.version"] = Hemera.VERSION }, info.metadata)
      assert.same({}, info.endpoints)
      hemera:close()
    end)
  end)

  it("stays silent when turned off, and once closing", function()
    testing.run(function()
      local name = uname()
      local off = testing.new { name = name, micro = { enabled = false } }
      assert(off:ready())
      assert.is_nil(off:service())
      assert.same({ nil, "timeout" }, { ask(off, "$SRV.PING." .. name, 200) })
      local on = testing.new { name = name .. "-on" }
      assert(on:ready())
      assert(ask(off, "$SRV.PING." .. name .. "-on"))
      local closed = testing.future()
      on:close(function() closed:set(true) end)
      assert.same({ nil, "timeout" }, { ask(off, "$SRV.PING." .. name .. "-on", 200) })
      assert(closed:wait(3000))
      off:close()
    end)
  end)

  it("has schema checks that refuse what ADR-32's schemas refuse", function()
    -- The checks above are evidence only if they can fail.
    local function ping() return { type = "io.nats.micro.v1.ping_response", name = "a", id = "x", version = "1.0.0" } end
    local function stats_of(e)
      local r = ping()
      r.type, r.started = "io.nats.micro.v1.stats_response", "2026-01-02T03:04:05.678Z"
      r.endpoints = { e }
      return r
    end
    local function ep()
      return { name = "e", subject = "s", num_requests = 1, num_errors = 0, last_error = "",
               processing_time = 5, average_processing_time = 5 }
    end
    assert.is_true(schema.check("ping", ping()))
    assert.is_true(schema.check("stats", stats_of(ep())))
    local function refused(kind, r, why)
      local ok, msg = schema.check(kind, r, Hemera.null)
      assert.is_nil(ok)
      assert.matches(why, msg, 1, true)
    end
    local r = ping(); r.type = "io.nats.micro.v1.info_response"
    refused("ping", r, "type: must be io.nats.micro.v1.ping_response")
    r = ping(); r.name = "a.b"
    refused("ping", r, "name: must match")
    r = ping(); r.version = "1.0"
    refused("ping", r, "version")
    r = ping(); r.metadata = { n = 1 }
    refused("ping", r, "metadata.n: must be a string")
    refused("info", ping(), "type:")
    r = ping(); r.type = "io.nats.micro.v1.info_response"
    refused("info", r, "description: is required")
    r = stats_of(ep()); r.started = "yesterday"
    refused("stats", r, "started: must be an RFC 3339 date-time")
    local e = ep(); e.processing_time = 1.5
    refused("stats", stats_of(e), "endpoints[0].processing_time: must be an integer")
    e = ep(); e.last_error = nil
    refused("stats", stats_of(e), "endpoints[0].last_error: is required")
    e = ep(); e.data = "load"
    refused("stats", stats_of(e), "endpoints[0].data: must be an object")
  end)

  it("refuses bad options, naming the field and the value", function()
    local function err_of(opts)
      local ok, e = pcall(Hemera.new, opts)
      assert.is_false(ok)
      return tostring(e.message or e)
    end
    assert.matches("micro.version.*SemVer.*1%.0", err_of { micro = { version = "1.0" } })
    assert.matches("micro.version.*01%.2%.3", err_of { micro = { version = "01.2.3" } })
    assert.matches("micro.metadata.*strings.*n = 1", err_of { micro = { metadata = { n = 1 } } })
    assert.matches("micro.prefix.*a%.>", err_of { micro = { prefix = "a.>" } })
    assert.matches("micro.enabled.*boolean", err_of { micro = { enabled = "yes" } })
    assert.matches("micro.*unknown key", err_of { micro = { nope = 1 } })
  end)
end)
