-- hemera.testing's own spec: servers and clusters it starts are gone by
-- pid on every exit path (an error in the test, os.exit, SIGKILL of the
-- Lua process), a cluster of 3 routes requests, run() fails a body that
-- does not finish, and the log captures see what Hemera logs.
local testing = require "hemera.testing"
local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local shell = require "shell"

-- Runs `script` in a child interpreter; returns what it wrote (stdout and
-- stderr) and its exit code.
local function child(script, env)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(script)
  f:close()
  local _, code, out = shell.run(("%s timeout -s KILL 60 %s %s"):format(env or "", bin, shell.quote(path)))
  os.remove(path)
  return out, code
end

-- A process the spec did not start as its child ends without an event we
-- could await: the bound is a failure deadline, not a measurement.
local function gone(pid) return testing.wait_gone(pid, 10000) end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- The watchdog removes the directory right after it signals the server.
local function dir_removed(dir)
  for _ = 1, 1000 do
    if not exists(dir) then return true end
    os.execute("sleep 0.01")
  end
  return false
end

describe("hemera.testing servers", function()
  after_each(testing.stop_all)

  it("starts a server on a free loopback port and stops it: the process is gone", function()
    local srv = testing.start_server()
    assert.matches("^nats://127%.0%.0%.1:%d+$", srv.url)
    assert.is_true(testing.alive(srv.pid))
    testing.run(function()
      local h = testing.new { servers = srv.url }
      assert(h:ready())
      local topic = testing.topic("testing")
      h:add({ topic = topic }, function(req) return req.a + 1 end)
      assert.equal(2, h:act { topic = topic, a = 1 })
    end)
    srv:stop()
    assert.is_false(testing.alive(srv.pid))
    assert.is_false(testing.alive(srv.wrapper))
  end)

  it("with_server stops the server when the test body raises", function()
    local pid
    local ok, err = pcall(testing.with_server, function(srv)
      pid = srv.pid
      assert.is_true(testing.alive(pid))
      error("boom in the test")
    end)
    assert.is_false(ok)
    assert.matches("boom in the test", err)
    assert.is_false(testing.alive(pid))
  end)

  it("with_server returns what the body returns", function()
    local a, b = testing.with_server({ name = "ret" }, function(srv) return srv.name, 2 end)
    assert.equal("ret", a)
    assert.equal(2, b)
  end)

  it("restarts on the same port", function()
    local srv = testing.start_server()
    local port, pid = srv.port, srv.pid
    srv:restart()
    assert.equal(port, srv.port)
    assert.are_not.equal(pid, srv.pid)
    assert.is_false(testing.alive(pid))
  end)

  it("refuses bad options with the option's name and value", function()
    assert.has_error(function() testing.start_server { monitr = true } end,
      'hemera.testing.start_server: unknown option "monitr"')
    assert.has_error(function() testing.start_server { port = "4222" } end,
      "hemera.testing.start_server: option port must be a number, got string (4222)")
    assert.has_error(function() testing.start_cluster(0) end,
      "hemera.testing.start_cluster: n must be an integer >= 1, got 0")
  end)

  it("raises with the server's log when nats-server refuses its config", function()
    local ok, err = pcall(testing.start_server, { config = "no_such_option_here: 1" })
    assert.is_false(ok)
    assert.matches("did not start", err)
    assert.matches("no_such_option_here", err)
  end)

  local LEAVE = [[
    local testing = require "hemera.testing"
    local srv = testing.start_server()
    io.stdout:write("NATSPID=", srv.pid, "\nNATSDIR=", srv.dir, "\n"); io.stdout:flush()
    %s
  ]]

  it("no server outlives the Lua process: the state closes (the finalizer stops it before exit)", function()
    local out, code = child(LEAVE:format(""))
    assert.equal(0, code, out)
    local pid = assert(tonumber(out:match("NATSPID=(%d+)")), out)
    -- Not awaited: the finalizer returns only once the server is gone.
    assert.is_false(testing.alive(pid))
    assert.is_false(exists(out:match("NATSDIR=(%S+)")))
  end)

  -- The child leaves without closing its Lua state (no finalizer runs) or
  -- is killed: the watchdog ends the server.
  for _, case in ipairs {
    { "os.exit without closing the state", "os.exit(3)" },
    { "SIGKILL of the Lua process", "os.execute('kill -KILL ' .. io.open('/proc/self/stat'):read('n'))" },
  } do
    it("no server outlives the Lua process: " .. case[1], function()
      local out = child(LEAVE:format(case[2]))
      local pid = assert(tonumber(out:match("NATSPID=(%d+)")), out)
      assert.is_true(gone(pid), "nats-server " .. pid .. " outlived its test process")
      assert.is_true(dir_removed(out:match("NATSDIR=(%S+)")), out)
    end)
  end

  it("url() starts a private server when HEMERA_NATS_URL is not set, and exit stops it", function()
    local out, code = child([[
      local testing = require "hemera.testing"
      local url = testing.url()
      assert(url == testing.url(), "one shared server")
      local srv = assert(testing.shared_server())
      io.stdout:write("URL=", url, "\nNATSPID=", srv.pid, "\n")
      testing.run(function()
        local h = testing.new()
        assert(h:ready())
        local topic = testing.topic("private")
        h:add({ topic = topic }, function() return "served" end)
        assert(h:act { topic = topic } == "served")
      end)
    ]], "env -u HEMERA_NATS_URL")
    assert.equal(0, code, out)
    assert.matches("URL=nats://127%.0%.0%.1:%d+", out)
    assert.is_true(gone(assert(tonumber(out:match("NATSPID=(%d+)")), out)))
  end)
end)

describe("hemera.testing clusters", function()
  after_each(testing.stop_all)

  it("starts 3 routed servers; a request crosses from node 1 to a service on node 3", function()
    local cl = testing.start_cluster(3)
    assert.equal(3, #cl.urls)
    testing.run(function()
      local topic = testing.topic("cluster")
      local svc = testing.new { name = "svc-" .. topic, servers = cl.urls[3] }
      local cli = testing.new { name = "cli-" .. topic, servers = cl.urls[1] }
      assert(svc:ready())
      assert(cli:ready())
      svc:add({ topic = topic }, function(req) return "from node 3: " .. req.n end)
      -- The subscription's interest reaches node 1 through the route
      -- asynchronously and no client-side event says it has arrived: a
      -- bounded retry, each try a real act with a short timeout.
      local res, err
      for _ = 1, 50 do
        res, err = cli:act { topic = topic, n = 7, timeout_ = 200 }
        if res then break end
      end
      assert.equal("from node 3: 7", res, tostring(err))
      assert.equal(cl.nodes[3], cl:node_of("svc-" .. topic))
      assert.equal(cl.nodes[1], cl:node_of("cli-" .. topic))
    end, 30000)
    local pids = {}
    for k, node in ipairs(cl.nodes) do pids[k] = node.pid end
    cl:stop()
    for _, pid in ipairs(pids) do assert.is_false(testing.alive(pid)) end
  end)
end)

describe("hemera.testing.run", function()
  it("fails a body that does not finish in time, with the limit in the message", function()
    local ok, err = pcall(testing.run, function()
      testing.raw(testing.url()) -- an open connection must not keep the loop alive
      testing.future():wait()
    end, 200)
    assert.is_false(ok)
    assert.equal("hemera.testing.run: the test body did not finish within 200 ms", err)
  end)

  it("raises the body's error with its traceback and closes its instances", function()
    local closed = false
    local ok, err = pcall(testing.run, function()
      local h = testing.new()
      h:ext("onClose", function() closed = true end)
      assert(h:ready())
      error("body failed")
    end)
    assert.is_false(ok)
    assert.matches("body failed", err)
    assert.matches("stack traceback", err)
    assert.is_true(closed)
  end)

  it("refuses a body that is not a function", function()
    assert.has_error(function() testing.run("x") end, "hemera.testing.run: body must be a function, got string")
  end)
end)

describe("hemera.testing log capture", function()
  it("logger() records Hemera's log calls and awaits one", function()
    testing.run(function()
      local lg = testing.logger()
      local h = testing.new { logger = lg, logLevel = "debug" }
      assert(h:ready())
      local topic = testing.topic("log")
      h:add({ topic = topic }, function() return 1 end)
      assert.equal("debug", lg:find("Server action added").level)
      assert.equal(1, h:act { topic = topic })
      local rec = assert(lg:wait(function(r) return r.msg == "Request completed" end, 5000))
      assert.equal("info", rec.level)
      assert.equal(topic, rec.fields.topic)
      assert.equal(1, lg:count("Request completed"))
      assert.matches("Request received", lg:text())
    end)
  end)

  it("stream() collects the built-in logger's lines", function()
    testing.run(function()
      local st = testing.stream()
      local h = testing.new { name = "stream-spec", logger = st, logLevel = "info" }
      assert(h:ready())
      h.log:info("hello from the spec")
      local found
      for _, rec in ipairs(st:records()) do
        if rec.msg == "hello from the spec" then found = rec end
      end
      assert(found, st:text())
      assert.equal("stream-spec", found.app)
    end)
  end)
end)
