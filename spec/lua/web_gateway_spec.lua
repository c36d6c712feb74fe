-- hemera.web with real clients: the gateway and its service run in their
-- own process (spec/fixtures/web_gateway.lua, the hemera interpreter);
-- curl and Node's fetch, http and net modules (spec/web/probe.js) talk to
-- it. Each client runs to completion while this spec waits on its output:
-- no sleeps, every step waits for an answer or a close.
local testing = require "hemera.testing"
local Hemera = require "hemera"
local shell = require "shell"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")
local src = os.getenv("HEMERA_SRC") or "."
local q = shell.quote

local setup_ok, _, setup_out = shell.run(q(src .. "/tools/web-setup.sh"))

-- Starts the fixture; returns {port, pid, out (its stdout), err (a file)}.
local function start(topic, limits)
  local err = os.tmpname()
  local cmd = ("HEMERA_NATS_URL=%s sh -c 'echo $$; exec \"$@\"' sh %s %s %s %s 2>%s"):format(
    q(testing.url()), q(bin), q(src .. "/spec/fixtures/web_gateway.lua"), q(topic),
    limits and q(Hemera.encode(limits)) or "", q(err))
  local out = assert(io.popen(cmd, "r"))
  local pid = tonumber(out:read("l"))
  local line = out:read("l") or ""
  local port = tonumber(line:match("^port (%d+)$"))
  if not port then
    local f = io.open(err)
    error("the gateway did not start: " .. line .. "\n" .. (f and f:read("a") or ""))
  end
  return { port = port, pid = pid, out = out, err = err, base = "http://127.0.0.1:" .. port }
end

-- Stops the fixture (SIGTERM: the interpreter closes the instance) and
-- waits for it to exit; returns its exit status and stderr.
local function stop(g, signal)
  if signal then os.execute(("kill -%s %d 2>/dev/null"):format(signal, g.pid)) end
  local _, _, code = g.out:close()
  local f = io.open(g.err)
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(g.err)
  return code, text
end

local function probe(g, topic, case)
  local ok, code, out = shell.run(("node %s %d %s %s"):format(q(src .. "/spec/web/probe.js"), g.port, q(topic), case))
  local v = Hemera.decode(out:match("[^\n]*\n?$") or out)
  assert(ok and type(v) == "table", ("probe %s failed (%s): %s"):format(case, tostring(code), out))
  return v
end

-- curl -s: body, status (and what -w added after a newline).
local function curl(args)
  local ok, code, out = shell.run("curl -s -m 10 -w '\\n%{http_code}' " .. args)
  assert(ok, ("curl %s failed (%s): %s"):format(args, tostring(code), out))
  local body, status = out:match("^(.*)\n(%d+)$")
  return body, tonumber(status)
end

-- Runs body(g) against a fresh gateway, then stops it (SIGTERM, or
-- nothing when body makes it close itself) and checks it exited cleanly.
local function with_gateway(topic, limits, body, signal)
  local g = start(topic, limits)
  local ok, err = pcall(body, g)
  local code, errtext = stop(g, signal == nil and "TERM" or signal or nil)
  if not ok then error(tostring(err) .. "\ngateway stderr:\n" .. errtext, 0) end
  assert.are.equal(0, code, errtext)
end

describe("hemera.web with curl and Node's fetch", function()
  if not setup_ok then
    pending("skipped: the HTTP clients cannot be installed here: " .. setup_out:gsub("%s+$", ""))
    return
  end

  it("maps hemera-web's routes, query, JSON, form and trace headers to patterns (curl)", function()
    local topic = testing.topic("webcurl")
    with_gateway(topic, nil, function(g)
      local body, status = curl(q(g.base .. "/" .. topic .. "/add?a=1&b=2"))
      assert.are.equal(200, status)
      assert.are.same({ result = 3 }, Hemera.decode(body))
      body, status = curl(q(g.base .. "/?topic=" .. topic .. "&cmd=add&a=5&b=6"))
      assert.are.same({ 200, { result = 11 } }, { status, Hemera.decode(body) })
      body, status = curl(q(g.base .. "/" .. topic .. "?cmd=add&a=1&b=1"))
      assert.are.same({ 200, { result = 2 } }, { status, Hemera.decode(body) })
      body, status = curl("-H 'content-type: application/json' -d '{\"a\":40,\"b\":2}' "
        .. q(g.base .. "/" .. topic .. "/add"))
      assert.are.same({ 200, { result = 42 } }, { status, Hemera.decode(body) })
      body, status = curl("-d 'a=3&b=4' " .. q(g.base .. "/" .. topic .. "/add"))
      assert.are.same({ 200, { result = 7 } }, { status, Hemera.decode(body) })
      -- Query values stay strings (Express's, as hemera-web passes them);
      -- a repeated key is an array; the body wins over the query.
      body = curl("-H 'x-request-trace-id: 1' -H 'x-request-span-id: 2' -H 'content-type: application/json' "
        .. "-d '{\"n\":1}' " .. q(g.base .. "/" .. topic .. "/echo?x=1&x=2&y&n=0&s=a+b%21"))
      local e = Hemera.decode(body)
      assert.are.same({ cmd = "echo", topic = topic, x = { "1", "2" }, y = "", n = 1, s = "a b!" }, e.pattern)
      assert.are.equal("1", e.traceId)
      assert.are.equal("2", e.parentSpanId)
      -- The path's topic wins over the query's.
      body = curl(q(g.base .. "/" .. topic .. "/echo?topic=other"))
      assert.are.equal(topic, Hemera.decode(body).pattern.topic)

      -- Errors: statusCode, 500, 404 for PatternNotFound, 504 for a
      -- timeout, the stack never sent.
      body, status = curl(q(g.base .. "/" .. topic .. "/custom"))
      assert.are.equal(418, status)
      e = Hemera.decode(body).error
      assert.are.same({ "CustomError", "teapot", "E_TEA" }, { e.name, e.message, e.code })
      assert.is_nil(e.stack)
      body, status = curl(q(g.base .. "/" .. topic .. "/fail"))
      assert.are.same({ 500, "refused" }, { status, Hemera.decode(body).error.message })
      body, status = curl(q(g.base .. "/" .. topic .. "/nothing"))
      assert.are.same({ 404, "PatternNotFound" }, { status, Hemera.decode(body).error.name })
      body, status = curl(q(g.base .. "/" .. topic .. "/slow"))
      assert.are.same({ 504, "TimeoutError" }, { status, Hemera.decode(body).error.name })
      assert.is_nil(Hemera.decode(body).error.stack)

      -- Bad requests, each named.
      body, status = curl(q(g.base .. "/a/b/c"))
      assert.are.equal(404, status)
      assert.is_truthy(body:find("no route for /a/b/c", 1, true), body)
      body, status = curl("-X PUT " .. q(g.base .. "/" .. topic))
      assert.are.equal(405, status)
      assert.is_truthy(body:find("method PUT is not served", 1, true), body)
      body, status = curl("-H 'content-type: application/json' -d '[1]' " .. q(g.base .. "/" .. topic .. "/add"))
      assert.are.equal(400, status)
      assert.is_truthy(body:find("request body must be a JSON object, got an array", 1, true), body)
      body, status = curl("-H 'content-type: application/json' -d '{x' " .. q(g.base .. "/" .. topic .. "/add"))
      assert.are.equal(400, status)
      assert.is_truthy(body:find("request body is not JSON", 1, true), body)
      body, status = curl("-H 'content-type: image/png' -d 'x' " .. q(g.base .. "/" .. topic .. "/add"))
      assert.are.equal(415, status)
      assert.is_truthy(body:find("Content-Type image/png is not served", 1, true), body)
      body, status = curl(q(g.base .. "/"))
      assert.are.equal(400, status)
      assert.is_truthy(body:find("Topic is required", 1, true), body)

      -- Keep-alive: 50 requests, one connection (curl counts its connects).
      local urls = {}
      for k = 1, 50 do urls[k] = q(("%s/%s/add?a=%d&b=1"):format(g.base, topic, k)) end
      local sok, _, out = shell.run("curl -s -m 20 -w ' %{http_code} %{num_connects}\\n' " .. table.concat(urls, " "))
      assert.is_true(sok, out)
      local k, connects = 0, 0
      for res, code, n in out:gmatch('{"result":(%d+)} (%d+) (%d+)\n') do
        k = k + 1
        assert.are.same({ k + 1, 200 }, { tonumber(res), tonumber(code) })
        connects = connects + tonumber(n)
      end
      assert.are.equal(50, k, out)
      assert.are.equal(1, connects)

      -- 10 MB: refused with 413, with Expect: 100-continue (curl's
      -- default) and without it (the gateway reads and drops the body it
      -- refused, so curl reads the answer, not a reset).
      local big = os.tmpname()
      assert(os.execute("head -c 10485760 /dev/zero >" .. q(big)))
      body, status = curl("-H 'content-type: text/plain' --data-binary @" .. q(big) .. " " .. q(g.base .. "/" .. topic))
      assert.are.equal(413, status)
      assert.is_truthy(body:find("request body over the limit of 1048576 bytes", 1, true), body)
      _, status = curl("-H 'Expect:' -H 'content-type: text/plain' --data-binary @" .. q(big) .. " "
        .. q(g.base .. "/" .. topic))
      assert.are.equal(413, status)
      os.remove(big)
    end)
  end)

  it("serves Node's fetch, keeps a connection alive, refuses 10 MB and malformed HTTP", function()
    local topic = testing.topic("webnode")
    with_gateway(topic, nil, function(g)
      local f = probe(g, topic, "fetch")
      assert.are.same({ 200, { result = 3 } }, { f.query.status, f.query.body })
      assert.are.equal("application/json; charset=utf-8", f.query.type)
      assert.are.same({ 200, { result = 42 } }, { f.json.status, f.json.body })
      assert.are.same({ 200, { result = 7 } }, { f.form.status, f.form.body })
      assert.are.same({ 418, "teapot" }, { f.custom.status, f.custom.body.error.message })
      assert.are.equal("4bf92f3577b34da6a3ce929d0e0e4736", f.trace.body.traceId)
      assert.are.equal("00f067aa0ba902b7", f.trace.body.parentSpanId)

      local ka = probe(g, topic, "keepalive")
      assert.are.same({ ok = 200, sockets = 1 }, ka)

      local bb = probe(g, topic, "bigbody")
      assert.are.same({ announced = 413, chunked = 413 }, bb)

      local m = probe(g, topic, "malformed")
      assert.are.same({ garbage = 400, header = 400, version = 400, length = 400 }, m)
    end)
  end)

  it("is not held by a slowloris client: others are served, the slow one gets 408", function()
    local topic = testing.topic("webslow")
    with_gateway(topic, { requestTimeout = 1500 }, function(g)
      local s = probe(g, topic, "slowloris")
      assert.are.equal(20, s.served)
      assert.are.equal(408, s.slow.status)
      -- The 20 were answered while the slow request was still arriving.
      assert.are.same({ "others served", "slow answered" }, s.events)
    end)
  end)

  it("bounds its connections: one over maxConnections gets 503, a freed slot is used again", function()
    local topic = testing.topic("webconn")
    with_gateway(topic, { maxConnections = 4 }, function(g)
      assert.are.same({ fifth = 503, after = 200 }, probe(g, topic, "connlimit"))
    end)
  end)

  it("answers 503 once close has begun, and 200 to the request then in flight", function()
    local topic = testing.topic("webhold")
    with_gateway(topic, nil, function(g)
      -- A: in flight; its action starts close and waits to be released.
      local a = assert(io.popen("curl -s -m 20 -w '\\n%{http_code}' " .. q(g.base .. "/" .. topic .. "/hold"), "r"))
      assert.are.equal("closing", g.out:read("l"))
      local body, status = curl(q(g.base .. "/" .. topic .. "/add?a=1&b=2"))
      assert.are.equal(503, status)
      assert.are.equal("the gateway is closing", Hemera.decode(body).error.message)
      testing.run(function()
        local c = testing.new {}
        c:ready()
        assert(c.transport:publish(topic .. ".release", ""))
        assert(c:flush())
        c:close()
      end)
      local out = a:read("a")
      a:close()
      assert.are.equal('{"answered":"after close began"}\n200', out)
    end, false)
  end)

  it("answers a request in flight when the service closes, then exits", function()
    local topic = testing.topic("webclose")
    with_gateway(topic, nil, function(g)
      -- The action starts hemera:close() and answers once it has begun.
      assert.are.same({ status = 200, body = { answered = "after close began" } }, probe(g, topic, "closing"))
    end, false)
  end)
end)

describe("hemera.web options", function()
  it("refuses bad options naming them", function()
    testing.run(function()
      local web = require "hemera.web"
      for _, case in ipairs {
        { { listen = "localhost" }, "Invalid option 'listen' of hemera.web: expected \"host:port\" with a numeric host"
          .. " and a port from 0 to 65535, got \"localhost\"" },
        { { pattern = "x" }, "Invalid option 'pattern' of hemera.web: expected a table or a function(req), got string" },
        { { errors = {} }, "Invalid option 'errors.propBlacklist' of hemera.web: expected a list of field names, got nil" },
        { { listen = "127.0.0.1:0", http = { maxConnections = 0 } },
          "option 'maxConnections' must be an integer from 1 to 100000, got 0" },
      } do
        local s = testing.new {}
        s:use(web, case[1])
        local ok, err = s:ready()
        assert.is_nil(ok)
        assert.is_truthy(tostring(err.message):find(case[2], 1, true), err.message)
        s:close()
      end
    end)
  end)
end)

describe("hemera web (the CLI)", function()
  if not setup_ok then
    pending("skipped: " .. setup_out:gsub("%s+$", ""))
    return
  end

  it("runs a gateway with no Lua written for it, until SIGTERM", function()
    local topic = testing.topic("webcli")
    with_gateway(topic, nil, function()
      local cmd = ("sh -c 'echo $$; exec \"$@\"' sh %s web --listen 127.0.0.1:0 --server %s --timeout 3000 2>&1")
        :format(q(bin), q(testing.url()))
      local p = assert(io.popen(cmd, "r"))
      local pid = tonumber(p:read("l"))
      local url
      local lines = {}
      repeat
        local line = p:read("l")
        lines[#lines + 1] = line
        url = line and line:match("^hemera web: listening on (http://127%.0%.0%.1:%d+)/ %(Ctrl%-C to stop%)$")
      until url or line == nil
      local ok, err = pcall(function()
        assert(url, "no URL in: " .. table.concat(lines, "\n"))
        local body, status = curl(q(url .. "/" .. topic .. "/add?a=20&b=22"))
        assert.are.same({ 200, { result = 42 } }, { status, Hemera.decode(body) })
        body, status = curl(q(url .. "/" .. topic .. "/nothing"))
        assert.are.same({ 404, "PatternNotFound" }, { status, Hemera.decode(body).error.name })
      end)
      os.execute(("kill -TERM %d 2>/dev/null"):format(pid))
      local rest = p:read("a")
      local _, _, code = p:close()
      if not ok then error(tostring(err) .. "\n" .. rest, 0) end
      assert.are.equal(0, code, rest)
    end)
  end)

  it("refuses a bad --listen as a usage error", function()
    local ok, code, out = shell.run(q(bin) .. " web --listen localhost:x")
    assert.is_falsy(ok)
    assert.are.equal(2, code)
    assert.is_truthy(out:find("--listen needs HOST:PORT with a numeric host and a port from 0 to 65535, got "
      .. "'localhost:x'", 1, true), out)
  end)
end)
