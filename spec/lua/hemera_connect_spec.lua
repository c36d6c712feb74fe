-- Connecting (issue 12): the first connect runs off the loop, so other
-- instances keep serving while one waits for an unreachable server; a
-- comma-separated server list; the Conn methods' one convention; what an
-- instance says once it is closed. Nothing listens on 127.0.0.1:1 or :2
-- (closed loopback ports: refused at once).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local DEAD1, DEAD2 = "nats://127.0.0.1:1", "nats://127.0.0.1:2"

local shell_quote = require("shell").quote

local run = require("shell").run

-- A service answering { topic, cmd = "echo" } with req.n, and a client.
local function service_and_client()
  local topic = testing.topic("connect")
  local s = testing.new()
  s:add({ topic = topic, cmd = "echo" }, function(req) return req.n end)
  assert(s:ready())
  local c = testing.new()
  assert(c:ready())
  return s, c, topic
end

describe("connecting without holding the loop", function()
  it("serves sequential requests while another instance's ready waits for an unreachable server", function()
    testing.run(function()
      local _, c, topic = service_and_client()
      -- Retrying for ever: a connect that held the loop would never give
      -- it back, and no act below could complete.
      local dead = Hemera.new { servers = DEAD1, nats = { retryOnFailedConnect = true, maxReconnect = -1, reconnectWait = 5 } }
      local outcome, answered_then = testing.future(), nil
      local answered = 0
      dead:ready(function(err)
        answered_then = answered
        outcome:set(err)
      end)
      for n = 1, 20 do
        local r, err = c:act { topic = topic, cmd = "echo", n = n }
        assert.is_nil(err)
        assert.equal(n, r)
        answered = answered + 1
        assert.is_false(outcome:is_set(), "ready of the unreachable instance ended early")
      end
      assert.equal(20, answered)
      -- Closing it ends its ready with CONN_CLOSED.
      dead:close()
      local err = outcome:wait(5000)
      assert.equal(20, answered_then)
      assert.equal("CONN_CLOSED", err.code)
      assert.matches("closed before NATS connected", err.message)
    end)
  end)

  it("fails ready with CONN_ERR naming every URL tried, after the configured attempts, while the others serve", function()
    testing.run(function()
      local _, c, topic = service_and_client()
      local lg = testing.logger()
      local dead = Hemera.new { servers = { DEAD1, DEAD2 }, logger = lg,
                                nats = { retryOnFailedConnect = true, maxReconnect = 2, reconnectWait = 20 } }
      local outcome = testing.future()
      dead:ready(function(err) outcome:set(err) end)
      local n = 0
      while not outcome:is_set() do
        n = n + 1
        local r, err = c:act { topic = topic, cmd = "echo", n = n }
        assert.is_nil(err)
        assert.equal(n, r)
      end
      local err = outcome:wait()
      assert.is_true(Hemera.errors.HemeraError:is(err), tostring(err))
      assert.equal("CONN_ERR", err.code)
      assert.truthy(err.message:find("could not connect to NATS (" .. DEAD1 .. ", " .. DEAD2 .. ")", 1, true), err.message)
      assert.truthy(err.message:find("(3 attempts, 20 ms apart)", 1, true), err.message)
      assert(lg:wait("Could not connect to NATS!", 5000))
      -- The failed instance closed itself (as Node Hemera's does).
      local closed = testing.future()
      dead:close(function() closed:set(true) end)
      assert.is_true(closed:wait(5000))
      -- One pass by default: two dead URLs fail at once, both named.
      local once = Hemera.new { servers = DEAD1 .. "," .. DEAD2 }
      local ok, e = once:ready()
      assert.is_nil(ok)
      assert.equal("CONN_ERR", e.code)
      assert.truthy(e.message:find("(" .. DEAD1 .. ", " .. DEAD2 .. ")", 1, true), e.message)
      assert.is_nil(e.message:find("attempts", 1, true), e.message)
    end)
  end)

  it("outside a coroutine, a ready without callback that cannot connect fails loudly", function()
    local ok, code, text = run(("%s --server %s -e %s"):format(os.getenv("HEMERA_BIN"), shell_quote(DEAD1),
      shell_quote("require('hemera').new():ready()")))
    assert.truthy(text:find("could not connect to NATS (" .. DEAD1 .. ")", 1, true), text)
    assert.truthy(text:find("CONN_ERR", 1, true), text)
    -- An uncaught error: printed, and the process ends with status 1.
    assert.is_falsy(ok)
    assert.equal(1, code)
  end)

  it("a close while connecting ends ready quietly: no uncaught error, status 0", function()
    local script = "local H = require 'hemera'; local a = H.new { servers = '" .. DEAD1 .. "', " ..
      "nats = { retryOnFailedConnect = true, maxReconnect = -1, reconnectWait = 5 } }; " ..
      "a:ready(); H.spawn(function() a:close(function() print('closed') end) end)"
    local ok, code, text = run(("%s -e %s"):format(os.getenv("HEMERA_BIN"), shell_quote(script)))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("closed", 1, true), text)
    assert.is_nil(text:find("uncaught", 1, true), text)
  end)

  it("readies instances in the order ready was called, so a client acts on a service readied before it", function()
    -- Outside a coroutine, as a script does it: nothing waits between the
    -- two ready calls.
    local topic = testing.topic("order")
    local s = testing.new()
    s:add({ topic = topic }, function() return "served" end)
    s:ready()
    local c = testing.new()
    local got = testing.future()
    c:ready(function(err)
      assert.is_nil(err)
      local r, aerr = c:act { topic = topic, timeout_ = 5000 }
      got:set(r, aerr)
    end)
    testing.run(function()
      local r, err = got:wait(10000)
      assert.is_nil(err)
      assert.equal("served", r)
    end)
  end)
end)

describe("a comma-separated server list", function()
  it("connects to the live server of the list (option and raw core.connect)", function()
    testing.run(function()
      local _, _, topic = service_and_client()
      local c = Hemera.new { servers = DEAD1 .. " , " .. testing.url() }
      assert(c:ready())
      local r, err = c:act { topic = topic, cmd = "echo", n = 7 }
      assert.is_nil(err)
      assert.equal(7, r)
      local raw = assert(testing.raw(DEAD1 .. "," .. testing.url()))
      assert.is_true(raw:flush())
    end)
  end)

  it("is taken from --server (HEMERA_NATS_URL) by the interpreter", function()
    local ok, code, text = run(("HEMERA_LOG=silent %s --server %s -e %s"):format(os.getenv("HEMERA_BIN"),
      shell_quote(DEAD1 .. "," .. testing.url()),
      shell_quote("local H = require 'hemera'; local a = H.new(); a:ready(function(err) " ..
        "print(err == nil and 'connected' or tostring(err)); a:close() end)")))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("connected", 1, true), text)
  end)

  it("refuses a malformed entry with an error naming it (credentials masked)", function()
    local ok, err = pcall(Hemera.new, { servers = "nats://127.0.0.1:4222,nats//x:1" })
    assert.is_false(ok)
    assert.truthy(err.message:find("Invalid option 'servers'", 1, true), err.message)
    assert.truthy(err.message:find('URL 2: invalid NATS server URL "nats//x:1"', 1, true), err.message)
    ok, err = pcall(Hemera.new, { servers = { testing.url(), "nats://user:secret@host:port" } })
    assert.is_false(ok)
    assert.truthy(err.message:find('"nats://***@host:port": has the port \'port\'', 1, true), err.message)
    assert.is_nil(err.message:find("secret", 1, true))
    ok, err = pcall(Hemera.new, { servers = testing.url() .. "," })
    assert.is_false(ok)
    assert.truthy(err.message:find('URL 2: invalid NATS server URL "": is empty', 1, true), err.message)
    ok, err = pcall(Hemera.new, { servers = { testing.url(), 4222 } })
    assert.is_false(ok)
    assert.truthy(err.message:find("servers[2] must be a URL string, got number", 1, true), err.message)
    -- core.servers: the same rules, as values.
    assert.same({ "nats://a:1", "b:2" }, core.servers(" nats://a:1 ,\tb:2 "))
    local list, msg = core.servers("nats://a:1,http://b:2", "HEMERA_NATS_URL")
    assert.is_nil(list)
    assert.truthy(msg:find("HEMERA_NATS_URL: URL 2: invalid NATS server URL \"http://b:2\": has the scheme 'http'", 1, true), msg)
    -- A raw connect raises on it too.
    assert.has_error(function() core.connect { servers = "a:1,,b:2" } end)
  end)

  it("refuses a malformed HEMERA_NATS_URL (via --server) naming the entry and the variable", function()
    local ok, code, text = run(("%s --server %s -e %s"):format(os.getenv("HEMERA_BIN"),
      shell_quote(testing.url() .. ",nats://h:99999"), shell_quote("require('hemera').new():ready()")))
    assert.is_falsy(ok)
    assert.equal(1, code)
    assert.truthy(text:find('HEMERA_NATS_URL: URL 2: invalid NATS server URL "nats://h:99999": has the port 99999', 1, true), text)
  end)

  it("refuses unknown or mistyped nats options with the key", function()
    local ok, err = pcall(Hemera.new, { nats = { maxReconnectAttempts = 5 } })
    assert.is_false(ok)
    assert.truthy(err.message:find("Invalid option 'nats.maxReconnectAttempts': unknown key", 1, true), err.message)
    ok, err = pcall(Hemera.new, { nats = { retryOnFailedConnect = "yes" } })
    assert.is_false(ok)
    assert.truthy(err.message:find("nats.retryOnFailedConnect': expected boolean", 1, true), err.message)
    ok, err = pcall(Hemera.new, { nats = { tls = { cafile = "x" } } })
    assert.is_false(ok)
    assert.truthy(err.message:find("unknown key 'cafile'", 1, true), err.message)
  end)
end)

describe("Conn methods: value | nil, message, code; misuse raises", function()
  it("before its first connect is over, a Conn refuses use (raises) and answers queries", function()
    testing.run(function()
      local conn = core.connect { servers = testing.url() }
      assert.is_false(conn:is_closed())
      assert.equal(0, conn:stats().requests)
      assert.has_error(function() conn:publish("a", "b") end,
        "the connection is not up yet: call conn:wait_connected() first")
      assert.is_true(conn:wait_connected())
      assert.is_true(conn:wait_connected()) -- over: answers at once
      assert.is_true(conn:publish("spec.connect.x", "y"))
      assert.is_true(conn:close())
    end)
  end)

  it("a failed first connect: nil, message naming the URLs, HM_CONNECT, as often as asked", function()
    testing.run(function()
      local conn = core.connect { servers = { DEAD1, "nats://user:pw@127.0.0.1:2" } }
      for _ = 1, 2 do
        local ok, msg, code = conn:wait_connected()
        assert.is_nil(ok)
        assert.equal("HM_CONNECT", code)
        assert.truthy(msg:find("could not connect to NATS (" .. DEAD1 .. ", nats://***@127.0.0.1:2)", 1, true), msg)
      end
      assert.is_true(conn:is_closed())
      assert.same({ nil, "closed", "HM_CLOSED" }, { conn:publish("a", "b") })
      assert.is_true(conn:close())
    end)
  end)

  it("one waiter at a time, and only in a Hemera coroutine", function()
    local conn = core.connect { servers = DEAD1, retryOnFailedConnect = true, maxReconnect = -1, reconnectWait = 5 }
    assert.has_error(function() conn:wait_connected() end)
    testing.run(function()
      local first = testing.future()
      Hemera.spawn(function() first:set(conn:wait_connected()) end)
      Hemera.sleep(1)
      local ok, err = pcall(conn.wait_connected, conn)
      assert.is_false(ok)
      assert.matches("already waits", err)
      conn:close()
      local r, msg, code = first:wait(5000)
      assert.is_nil(r)
      assert.equal("closed", msg)
      assert.equal("HM_CLOSED", code)
    end)
  end)

  it("once closed, every operation returns nil, 'closed', 'HM_CLOSED' and queries answer", function()
    testing.run(function()
      local conn = assert(testing.raw(testing.url()))
      assert.is_true(conn:credits(10))
      assert(conn:request("spec.connect.nobody", "x", 5000, 1, function() end))
      local sub = assert(conn:subscribe("spec.connect.sub", nil, 0, function() end))
      assert.is_true(conn:flush())
      local closed = testing.future()
      assert.is_true(conn:close(function() closed:set(true) end))
      assert.is_true(closed:wait(5000))
      local CLOSED = { nil, "closed", "HM_CLOSED" }
      assert.same(CLOSED, { conn:publish("a", "b") })
      assert.same(CLOSED, { conn:subscribe("a", nil, 0, function() end) })
      assert.same(CLOSED, { conn:request("a", "b", 100, 1) })
      assert.same(CLOSED, { conn:request("a", "b", 100, 1, function() end) })
      assert.same(CLOSED, { conn:flush() })
      assert.same(CLOSED, { conn:flush(100, function() end) })
      assert.same(CLOSED, { conn:credits(1) })
      assert.same(CLOSED, { conn:max_payload() })
      assert.same(CLOSED, { sub:drain() })
      assert.is_false(conn:cancel(1))
      assert.is_true(conn:done())
      assert.is_true(conn:is_closed())
      assert.is_false(sub:active())
      assert.is_true(sub:unsubscribe())
      local st = conn:stats()
      assert.equal(1, st.requests)
      assert.equal(0, st.pending)
      -- close again: the callback still runs, once
      local again = testing.future()
      assert.is_true(conn:close(function() again:set(true) end))
      assert.is_true(again:wait(5000))
      -- misuse still raises
      assert.has_error(function() conn:publish(1) end)
      assert.has_error(function() conn:request("a", "b", -1, 1) end)
    end)
  end)

  it("success values: flush true, request data, publish true", function()
    testing.run(function()
      local svc = assert(testing.raw(testing.url()))
      local topic = testing.topic("conv")
      assert(svc:subscribe(topic, nil, 0, function(_, reply, data) svc:publish(reply, data .. "!") end))
      assert.is_true(svc:flush())
      local conn = assert(testing.raw(testing.url()))
      assert.equal("hi!", conn:request(topic, "hi", 5000, 1))
      assert.same({ nil, "timeout", "HM_TIMEOUT" }, { conn:request(topic .. ".none", "hi", 20, 1) })
      local done = testing.future()
      assert.is_true(conn:flush(5000, function(err) done:set(err == nil) end))
      assert.is_true(done:wait(5000))
      assert.is_true(conn:max_payload() > 0)
    end)
  end)
end)

describe("after close", function()
  it("act says the instance is closed (CONN_CLOSED), not 'before the reply'; stats() gives the last counters", function()
    testing.run(function()
      local _, c, topic = service_and_client()
      assert.equal(1, c:act { topic = topic, cmd = "echo", n = 1 })
      local closed = testing.future()
      c:close(function() closed:set(true) end)
      assert.is_true(closed:wait(5000))
      local r, err = c:act { topic = topic, cmd = "echo", n = 2 }
      assert.is_nil(r)
      assert.is_true(Hemera.errors.HemeraError:is(err), tostring(err))
      assert.equal("CONN_CLOSED", err.code)
      assert.equal("Hemera is closed: act after close()", err.message)
      -- with a callback, the same error reaches it
      local cb = testing.future()
      c:act({ topic = topic, cmd = "echo", n = 3 }, function(e) cb:set(e) end)
      local e = cb:wait(5000)
      assert.equal("CONN_CLOSED", e.code)
      -- pubsub too
      local _, perr = c:act { topic = topic, cmd = "echo", pubsub_ = true }
      assert.equal("CONN_CLOSED", perr.code)
      local ok, st = pcall(c.stats, c)
      assert.is_true(ok, tostring(st))
      assert.equal(1, st.requests) -- the refused acts sent nothing
      assert.equal(0, st.pending)
      assert.equal(0, st.late_replies)
    end)
  end)

  it("stats() is nil before ready, counters from ready on", function()
    local c = testing.new()
    assert.is_nil(c:stats())
    testing.run(function()
      assert(c:ready())
      assert.equal(0, c:stats().requests)
    end)
  end)
end)
