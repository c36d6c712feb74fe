-- Security: every subject, reply subject and queue group is checked before
-- it reaches NATS (finding 3). A topic with CR/LF used to inject protocol,
-- a space or an overlong one dropped the connection. Now each comes back
-- as nil, message, "HM_SUBJECT" and the connection stays up. Also here:
-- sub:drain (finding 5) and maxPendingBytes (finding 7), through
-- hemera.core directly against the test run's nats-server.
local core = require "hemera.core"
local testing = require "hemera.testing"

local KB10 = ("x"):rep(10240)

-- name, value, what the message must say. Bad for publish and request.
local BAD_PUBLISH = {
  { "CR/LF injection", "a\r\nPUB x 1\r\n", 'invalid subject "a\\r\\nPUB x 1\\r\\n": contains a carriage return (CR) at byte 2' },
  { "an UNSUB of our own inbox", "a\r\nUNSUB 1\r\n", "carriage return (CR) at byte 2" },
  { "a space", "a b", 'invalid subject "a b": contains a space at byte 2 (NATS subjects have no whitespace)' },
  { "a tab", "a\tb", 'invalid subject "a\\tb": contains a tab at byte 2' },
  { "a line feed", "a\nb", "a line feed (LF) at byte 2" },
  { "a NUL", "a\0b", 'invalid subject "a\\0b": contains a NUL byte at byte 2 (NATS subjects have no control bytes)' },
  { "a NUL at the end", "ab\0", "a NUL byte at byte 3" },
  { "10 KB", KB10, "... (10240 bytes): is 10240 bytes, over the limit of 4032" },
  { "an empty token", "a..b", "has two dots in a row at byte 2 (NATS subjects have no empty tokens)" },
  { "a leading dot", ".a", "starts with a dot" },
  { "a trailing dot", "a.", "ends with a dot" },
  { "a wildcard token", "a.*", 'has the wildcard token "*" at byte 3' },
  { "a full wildcard", ">", 'has the wildcard token ">" at byte 1' },
  { "nothing", "", "is empty" },
}

-- Bad for subscribe (wildcards are fine there, '>' only last).
local BAD_SUBSCRIBE = {
  { "CR/LF injection", "a\r\nPUB x 1\r\n", "carriage return (CR) at byte 2" },
  { "a space", "a b", "a space at byte 2" },
  { "a tab", "a\tb", "a tab at byte 2" },
  { "a NUL", "a\0b", "a NUL byte at byte 2" },
  { "10 KB", KB10, "over the limit of 4032" },
  { "an empty token", "a..b", "two dots in a row" },
  { "a leading dot", ".a", "starts with a dot" },
  { "a trailing dot", "a.", "ends with a dot" },
  { "'>' before the last token", "a.>.b", '">" may only be the last token' },
}

local function find(hay, needle)
  return type(hay) == "string" and hay:find(needle, 1, true) ~= nil
end

-- An echo service on its own connection, so the connection under test
-- proves itself with a request through the server.
local function echo_service()
  local svc = assert(testing.raw(testing.url()))
  local topic = testing.topic("echo")
  assert(svc:subscribe(topic, nil, 0, function(_, reply, data)
    if reply then svc:publish(reply, data) end
  end))
  assert.is_true(svc:flush())
  return svc, topic
end

local function assert_up(conn, echo)
  assert.is_false(conn:is_closed())
  local data, st = conn:request(echo, "still here", 5000, 1)
  assert.is_nil(st, "request after a refused name: " .. tostring(st) .. " " .. tostring(data))
  assert.equal("still here", data)
end

describe("security: subjects are checked before they reach NATS", function()
  it("refuses each bad publish subject with a clear message and stays connected", function()
    testing.run(function()
      local _, echo = echo_service()
      local conn = assert(testing.raw(testing.url()))
      for _, case in ipairs(BAD_PUBLISH) do
        local name, subject, says = case[1], case[2], case[3]
        local ok, err, code = conn:publish(subject, "payload")
        assert.is_nil(ok, name)
        assert.equal("HM_SUBJECT", code, name)
        assert.is_true(find(err, says), name .. ": " .. tostring(err))
        assert.is_true(#err < 400, name .. ": the message echoes too much")
        -- request, suspending
        local st, msg, rcode = conn:request(subject, "payload", 1000, 1)
        assert.is_nil(st, name)
        assert.equal("HM_SUBJECT", rcode, name)
        assert.is_true(find(msg, says), name .. ": " .. tostring(msg))
        -- request with a callback: refused at once, the callback never runs
        local id, cerr, ccode = conn:request(subject, "payload", 1000, 1, function()
          error("callback of a refused request ran")
        end)
        assert.is_nil(id, name)
        assert.equal("HM_SUBJECT", ccode, name)
        assert.is_true(find(cerr, says), name .. ": " .. tostring(cerr))
        assert_up(conn, echo)
      end
      assert.equal(0, conn:stats().pending)
    end)
  end)

  it("refuses a bad reply subject", function()
    testing.run(function()
      local _, echo = echo_service()
      local conn = assert(testing.raw(testing.url()))
      for _, reply in ipairs { "r\r\nPUB x 1\r\n", "r s", "r\0s", "r.*", "r..s", KB10 } do
        local ok, err, code = conn:publish(testing.topic("reply"), "x", reply)
        assert.is_nil(ok)
        assert.equal("HM_SUBJECT", code)
        assert.is_true(find(err, "invalid reply subject"), err)
      end
      assert_up(conn, echo)
    end)
  end)

  it("refuses each bad subscribe subject and queue group and stays connected", function()
    testing.run(function()
      local _, echo = echo_service()
      local conn = assert(testing.raw(testing.url()))
      local function never() error("a refused subscription delivered") end
      for _, case in ipairs(BAD_SUBSCRIBE) do
        local name, subject, says = case[1], case[2], case[3]
        local sub, err, code = conn:subscribe(subject, nil, 0, never)
        assert.is_nil(sub, name)
        assert.equal("HM_SUBJECT", code, name)
        assert.is_true(find(err, says), name .. ": " .. tostring(err))
        assert_up(conn, echo)
      end
      for _, queue in ipairs { "q 1", "q\t1", "q\r\nSUB x 1", "q\0b", "", KB10 } do
        local sub, err, code = conn:subscribe(testing.topic("q"), queue, 0, never)
        assert.is_nil(sub, queue)
        assert.equal("HM_SUBJECT", code)
        assert.is_true(find(err, "invalid queue group"), err)
        assert.is_true(#err < 400)
        assert_up(conn, echo)
      end
      -- Each fits alone; the SUB line with both would pass max_control_line.
      local s2100 = ("s"):rep(2100)
      local sub, err, code = conn:subscribe(s2100, s2100, 0, never)
      assert.is_nil(sub)
      assert.equal("HM_SUBJECT", code)
      assert.is_true(find(err, "with its queue group (2100 bytes) that is 4200, over the limit of 4032"), err)
      -- Wildcards are fine in a subscription.
      local ok = assert(conn:subscribe(testing.topic("wild") .. ".*.>", nil, 0, never))
      ok:unsubscribe()
      assert_up(conn, echo)
    end)
  end)

  it("lets no injected command reach a subscriber of the injected subject", function()
    testing.run(function()
      local target = testing.topic("admin")
      local watcher = assert(testing.raw(testing.url()))
      local got, good = {}, testing.future()
      local wsub = assert(watcher:subscribe(target, nil, 0, function(_, _, data)
        got[#got + 1] = data
        if data == "good" then good:set(true) end
      end))
      assert.is_true(watcher:flush())
      local conn = assert(testing.raw(testing.url()))
      for _, subject in ipairs {
        "a 0\r\n\r\nPUB " .. target .. " 6\r\ninject",
        "a\r\nPUB " .. target .. " 6\r\ninject\r\n",
        "a\nPUB " .. target .. " 6\ninject\n",
        "a\0\r\nPUB " .. target .. " 6\r\ninject\r\n",
      } do
        local ok, err, code = conn:publish(subject, "x")
        assert.is_nil(ok)
        assert.equal("HM_SUBJECT", code, err)
        local st, _, rcode = conn:request(subject, "x", 1000, 1)
        assert.is_nil(st)
        assert.equal("HM_SUBJECT", rcode)
      end
      -- A good message after them: the only one the watcher may see. The
      -- server keeps one connection's messages in order, so anything
      -- injected would have come before it.
      assert(conn:publish(target, "good"))
      assert.is_true(conn:flush())
      assert.is_true(good:wait(5000))
      assert.same({ "good" }, got)
      assert.equal(1, wsub:delivered())
      assert.is_false(conn:is_closed())
    end)
  end)

  it("core.subject_check applies the same rules with the caller's field name", function()
    assert.is_true(core.subject_check("math.add", "publish"))
    assert.is_true(core.subject_check("math.*", "subscribe"))
    local ok, err, code = core.subject_check("r.eu west", "publish", "topic")
    assert.is_nil(ok)
    assert.equal("HM_SUBJECT", code)
    assert.equal('invalid topic "r.eu west": contains a space at byte 5 (NATS subjects have no whitespace)', err)
    ok, err = core.subject_check("math.*", "publish", "topic")
    assert.is_nil(ok)
    assert.is_true(find(err, "a publish subject must be literal"))
    assert.is_nil((core.subject_check("q\r", "queue")))
    assert.is_true(core.subject_check("queue.math.add", "queue"))
    assert.is_nil((core.subject_check("a\0b", "reply")))
    assert.has_error(function() core.subject_check("a", "nope") end)
  end)
end)

describe("sub:drain", function()
  it("delivers every message waiting behind one credit before its callback", function()
    testing.run(function()
      local conn = assert(testing.raw(testing.url()))
      conn:credits(1)
      local topic = testing.topic("drain")
      local N = 40
      local got, after, drained = 0, 0, false
      local sub = assert(conn:subscribe(topic, nil, 0, function()
        got = got + 1
        if drained then after = after + 1 end
        core.sleep(2) -- holds the one credit: the rest waits in cnats
        conn:done()
      end))
      assert.is_true(conn:flush())
      for k = 1, N do assert(conn:publish(topic, "m" .. k)) end
      local fin = testing.future()
      local got_at_done
      assert.is_true(sub:drain(function(err)
        drained = true
        got_at_done = got
        fin:set(err or "ok")
      end))
      assert.is_true(sub:draining())
      local again, aerr = sub:drain(function() end)
      assert.is_nil(again)
      assert.equal("already draining", aerr)
      assert.equal("ok", fin:wait(10000))
      assert.equal(N, got_at_done)
      assert.is_false(sub:draining())
      -- Unsubscribed from the server: nothing published now arrives.
      for k = 1, 10 do assert(conn:publish(topic, "late" .. k)) end
      -- The flush's reply comes after anything the server sent before it,
      -- and deliveries are counted as they are taken, not when their
      -- callbacks run.
      assert.is_true(conn:flush())
      assert.equal(N, sub:delivered())
      assert.equal(0, conn:stats().dropped) -- nor taken in and dropped
      assert.equal(N, got)
      assert.equal(0, after)
      sub:unsubscribe()
      assert.is_false(sub:active())
      local r, rerr = sub:drain()
      assert.is_nil(r)
      assert.equal("closed", rerr)
    end)
  end)

  it("delivers what another connection's flood had sent before the drain", function()
    testing.run(function()
      local conn = assert(testing.raw(testing.url()))
      local pub = assert(testing.raw(testing.url()))
      local topic = testing.topic("drainflood")
      local N = 3000
      local got, after, drained = 0, 0, false
      local sub = assert(conn:subscribe(topic, nil, 0, function()
        got = got + 1
        if drained then after = after + 1 end
      end))
      assert.is_true(conn:flush())
      for k = 1, N do assert(pub:publish(topic, "m" .. k)) end
      assert.is_true(pub:flush()) -- the server routed all of them to conn
      local fin = testing.future()
      assert(sub:drain(function(err) drained = true; fin:set(err or "ok", got) end, 5000))
      local st, at_done = fin:wait(10000)
      assert.equal("ok", st)
      assert.equal(N, at_done)
      for k = 1, 10 do assert(pub:publish(topic, "late" .. k)) end
      assert.is_true(pub:flush())
      assert.is_true(conn:flush())
      assert.equal(N, got)
      assert.equal(0, after)
      sub:unsubscribe()
    end)
  end)

  it("tells the callback 'closed' when the connection closes first", function()
    testing.run(function()
      local conn = assert(testing.raw(testing.url()))
      conn:credits(1)
      local topic = testing.topic("drainclose")
      local sub = assert(conn:subscribe(topic, nil, 0, function() end)) -- never gives its credit back
      assert.is_true(conn:flush())
      for k = 1, 5 do assert(conn:publish(topic, "m" .. k)) end
      assert.is_true(conn:flush())
      local fin = testing.future()
      assert(sub:drain(function(err) fin:set(err) end))
      conn:close()
      assert.equal("closed", fin:wait(5000))
    end)
  end)
end)

describe("maxPendingBytes", function()
  it("drops a flood of large messages over the bound as a slow consumer, and the connection stays up", function()
    testing.run(function()
      local svc, echo = echo_service()
      local conn = assert(testing.raw { servers = testing.url(), maxPendingBytes = 64 * 1024 })
      conn:credits(1)
      local topic = testing.topic("bytes")
      local held = 0
      assert(conn:subscribe(topic, nil, 0, function() held = held + 1 end)) -- keeps its credit
      assert.is_true(conn:flush())
      local big = ("b"):rep(16 * 1024)
      for _ = 1, 64 do assert(svc:publish(topic, big)) end
      assert.is_true(svc:flush())
      assert.is_true(conn:flush()) -- replies need no credit: the flood is read
      local st = conn:stats()
      assert.equal(1, held)
      -- 64 x 16 KiB against 64 KiB: most were dropped, few wait.
      assert.is_true(st.slow_dropped >= 50, "dropped " .. st.slow_dropped)
      assert.is_true(st.slow_dropped <= 63, "dropped " .. st.slow_dropped)
      assert_up(conn, echo)
    end)
  end)

  it("refuses a value out of range", function()
    assert.has_error(function() core.connect { servers = testing.url(), maxPendingBytes = -2 } end)
    assert.has_error(function() core.connect { servers = testing.url(), maxPendingBytes = 2 ^ 31 } end)
    assert.has_error(function() core.connect { servers = testing.url(), maxPendingBytes = "1MB" } end)
  end)
end)
