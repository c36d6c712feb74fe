-- The CLI (hemera.cli) against real services in other processes, on a
-- private nats-server (so `hemera ls` sees exactly the services started
-- here): two Lua instances (spec/fixtures/micro_service.lua) and one nats.js
-- reference service (spec/natsjs/service.js). Every command runs to its
-- exit; services are awaited by the "ready" line they print.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"
local N = require "natsjs_support"

local BIN = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set: run the specs through ctest")
local SRC = os.getenv("HEMERA_SRC") or "."
local BUILD = assert(os.getenv("HEMERA_BUILD"))

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns its exit status, stdout and stderr.
local function sh(cmd)
  local errf = os.tmpname()
  local p = assert(io.popen(cmd .. " 2>" .. shq(errf)))
  local stdout = p:read("a")
  local _, _, code = p:close()
  local f = io.open(errf)
  local stderr = f:read("a")
  f:close()
  os.remove(errf)
  return code, stdout, stderr
end

-- A long-running process whose first line on stdout is "ready <id>".
local procs = {}
local function start(cmd)
  local p = assert(io.popen("echo $$; exec " .. cmd .. " 2>&1", "r"))
  local pid = assert(tonumber(p:read("l")), "no pid")
  local line = p:read("l")
  procs[#procs + 1] = { pid = pid, pipe = p }
  if not (line and line:match("^ready ")) then
    error("not ready: " .. tostring(line) .. "\n" .. (p:read("a") or ""))
  end
  return line:match("^ready (%S+)")
end

local function stop_all()
  for _, p in ipairs(procs) do os.execute("kill -TERM " .. p.pid .. " 2>/dev/null") end
  for _, p in ipairs(procs) do p.pipe:close() end
  procs = {}
end

describe("the hemera CLI", function()
  local srv, url, cli
  local topic = "clitest" .. core.nuid()
  local ids = {}

  setup(function()
    N.setup()
    srv = testing.start_server {}
    url = srv.url
    cli = function(args) return sh(("%s %s --server %s"):format(shq(BIN), args, shq(url))) end
    local svc = ("env HEMERA_NATS_URL=%s %s %s"):format(shq(url), shq(BIN), shq(SRC .. "/spec/fixtures/micro_service.lua"))
    ids.lua1 = start(svc .. " lua-one " .. topic)
    ids.lua2 = start(svc .. " lua-two " .. topic)
    ids.js = start(("env NODE_PATH=%s node %s %s js-ref %s"):format(shq(BUILD .. "/natsjs/node_modules"),
      shq(SRC .. "/spec/natsjs/service.js"), shq(url), shq("natsjs.ready." .. core.nuid())))
  end)

  teardown(function()
    stop_all()
    testing.stop_all()
  end)

  -- act PATTERN [flags] exits 1, prints nothing on stdout and why on stderr.
  local function act_fails(pattern, flags, why)
    local code, out, err = cli(("act %s %s"):format(shq(pattern), flags))
    assert.equal(1, code, err)
    assert.equal("", out)
    assert.matches(why, err)
  end

  it("ls --json lists the two Lua instances and the nats.js service", function()
    local code, out, err = cli("ls --json --timeout 300")
    assert.equal(0, code, err)
    local list = assert(Hemera.decode(out))
    local by = {}
    for _, s in ipairs(list) do by[s.id] = s end
    assert.equal(3, #list, out)
    assert.equal("lua-one", by[ids.lua1].name)
    assert.equal("lua-two", by[ids.lua2].name)
    assert.equal("js-ref", by[ids.js].name)
    assert.equal("1.0.0", by[ids.js].version)
    assert.equal("js-ref.echo", by[ids.js].endpoints[1].subject)
    local ep = by[ids.lua1].endpoints[1]
    assert.equal(topic, ep.subject)
    assert.equal("queue." .. topic, ep.queue_group)
    assert.equal("lua", by[ids.lua1].metadata["hemera.lang"])
    -- The text table has a row per service.
    code, out = cli("ls --timeout 300")
    assert.equal(0, code)
    assert.matches("NAME%s+ID%s+VERSION%s+ENDPOINTS%s+REQUESTS%s+ERRORS", out)
    for _, id in pairs(ids) do assert.matches(id, out, 1, true) end
  end)

  it("act prints the result, and exits 1 on an error reply or a timeout", function()
    local code, out, err = cli(("act %s"):format(shq("topic:" .. topic .. ",cmd:add,a:1,b:2")))
    assert.equal(0, code, err)
    assert.equal("3\n", out)
    code, out = cli(("act %s --json"):format(shq(('{"topic":"%s","cmd":"add","a":40,"b":2}'):format(topic))))
    assert.equal(0, code)
    assert.same({ result = 42 }, Hemera.decode(out))
    act_fails("topic:" .. topic .. ",cmd:fail", "", "Conflict: it conflicts %(code 409%)")
    code, out = cli(("act %s --json"):format(shq("topic:" .. topic .. ",cmd:fail")))
    assert.equal(1, code)
    assert.same({ name = "Conflict", message = "it conflicts", code = 409 }, Hemera.decode(out).error)
    act_fails("topic:nobody" .. core.nuid() .. ",cmd:x", "--timeout 200", "Timeout")
  end)

  it("act --meta prints the reply's meta, --stream every reply", function()
    local code, out, err = cli(("act %s --meta"):format(shq("topic:" .. topic .. ",cmd:add,a:1,b:2")))
    assert.equal(0, code, err)
    local o = Hemera.decode(out)
    assert.equal(3, o.result)
    -- Either instance of the queue group may have served it.
    assert.truthy(({ ["lua-one"] = true, ["lua-two"] = true })[o.meta.servedBy], out)
    code, out = cli(("act %s --meta"):format(shq("topic:" .. topic .. ",cmd:fail")))
    assert.equal(1, code)
    assert.equal(409, Hemera.decode(out).error.code)
    -- The stream ends when replies stop coming for --timeout ms.
    code, out, err = cli(("act %s --stream --timeout 500"):format(shq("topic:" .. topic .. ",cmd:count,n:3")))
    assert.equal(0, code, err)
    assert.equal("1\n2\n3\n", out)
    code, out = cli(("act %s --stream --json --timeout 500"):format(shq("topic:" .. topic .. ",cmd:count,n:2")))
    assert.equal(0, code)
    assert.equal('{"result":1}\n{"result":2}\n', out)
    act_fails("topic:" .. topic .. ",cmd:fail", "--stream --timeout 500", "Conflict: it conflicts %(code 409%)")
    act_fails("topic:nobody" .. core.nuid() .. ",cmd:x", "--stream --timeout 200", "Timeout")
  end)

  it("exits 1 when the server cannot be reached", function()
    -- Nothing listens on port 1.
    for _, args in ipairs { "ls", "ping", "stats", "watch x", "act 'topic:x'" } do
      local code, out, err = sh(("%s %s --server nats://127.0.0.1:1"):format(shq(BIN), args))
      assert.equal(1, code, args)
      assert.equal("", out, args)
      assert.truthy(err:find("could not connect to NATS (nats://127.0.0.1:1)", 1, true), args .. ": " .. err)
    end
  end)

  it("exits 2 on usage errors, naming what is wrong", function()
    local code, _, err = cli("act")
    assert.equal(2, code)
    assert.matches("act takes one PATTERN", err)
    code, _, err = cli("act 'topic:x,' --stream --bogus")
    assert.equal(2, code)
    assert.matches("unknown option '%-%-bogus'", err)
    code, _, err = cli("act 'a:1'")
    assert.equal(2, code)
    assert.matches("PATTERN needs a topic", err)
    code, _, err = cli("ls --timeout soon")
    assert.equal(2, code)
    assert.matches("%-%-timeout must be an integer.*'soon'", err)
    code, _, err = cli("ping --meta")
    assert.equal(2, code)
    assert.matches("%-%-meta is an option of act, not of ping", err)
  end)

  it("ping and stats find services by name and id, exit 1 when none answers", function()
    local code, out, err = cli("ping lua-one --json --timeout 300")
    assert.equal(0, code, err)
    local l = Hemera.decode(out)
    assert.equal(1, #l)
    assert.equal(ids.lua1, l[1].id)
    assert.is_true(l[1].rtt_ms > 0)
    -- Without a name: every service, as a table.
    code, out = cli("ping --timeout 300")
    assert.equal(0, code)
    assert.matches("NAME%s+ID%s+VERSION%s+RTT", out)
    for _, sid in pairs(ids) do assert.matches(sid, out, 1, true) end
    code, out, err = cli("ping nobody --timeout 200")
    assert.equal("", out)
    assert.equal(1, code)
    assert.matches("no service answered as 'nobody'", err)
    -- A known mix: the two Lua instances share the queue group, so their
    -- counters add up to it exactly.
    local function totals()
      local c, o = cli("stats --json --timeout 300")
      assert.equal(0, c)
      local n, e, seen = 0, 0, 0
      for _, r in ipairs(Hemera.decode(o)) do
        for _, ep in ipairs(r.endpoints) do
          if ep.subject == topic then n, e, seen = n + ep.num_requests, e + ep.num_errors, seen + 1 end
        end
      end
      assert.equal(2, seen)
      return n, e
    end
    local n0, e0 = totals()
    for _ = 1, 3 do assert.equal(0, (cli(("act %s"):format(shq("topic:" .. topic .. ",cmd:add,a:1,b:1"))))) end
    for _ = 1, 2 do assert.equal(1, (cli(("act %s"):format(shq("topic:" .. topic .. ",cmd:fail"))))) end
    local n1, e1 = totals()
    assert.equal(5, n1 - n0)
    assert.equal(2, e1 - e0)
    code, out = cli("stats lua-two " .. ids.lua2 .. " --json --timeout 300")
    assert.equal(0, code)
    local st = Hemera.decode(out)
    assert.equal(1, #st)
    assert.equal(ids.lua2, st[1].id)
    assert.equal("io.nats.micro.v1.stats_response", st[1].type)
    code, out = cli("stats lua-two " .. ids.lua2 .. " --timeout 300")
    assert.equal(0, code)
    assert.matches("ENDPOINT%s+SUBJECT%s+REQUESTS%s+ERRORS%s+AVERAGE%s+LAST ERROR", out)
    code = cli("stats lua-two " .. core.nuid() .. " --timeout 200")
    assert.equal(1, code)
  end)

  it("watch prints each message of a topic with its pattern", function()
    local p = assert(io.popen(("%s watch %s --json --timeout 5000 --server %s 2>&1"):format(
      shq(BIN), shq(topic), shq(url))))
    assert.matches("^watching " .. topic, p:read("l"))
    local code = cli(("act %s"):format(shq("topic:" .. topic .. ",cmd:add,a:5,b:6")))
    assert.equal(0, code)
    local seen = Hemera.decode(p:read("l"))
    assert.equal(topic, seen.subject)
    assert.same({ topic = topic, cmd = "add", a = 5, b = 6 }, seen.pattern)
    assert.equal("request", seen.type)
    local _, _, status = p:close()
    assert.equal(0, status)
    -- As text: the subject and the pattern, pubsub marked; Ctrl-C ends it
    -- with status 0.
    p = assert(io.popen(("echo $$; exec %s watch %s --server %s 2>&1"):format(shq(BIN), shq(topic), shq(url))))
    local pid = assert(tonumber(p:read("l")))
    assert.matches("^watching " .. topic, p:read("l"))
    assert.equal(0, (cli(("act %s"):format(shq("topic:" .. topic .. ",cmd:add,a:1,b:1")))))
    local line = p:read("l")
    assert.matches(" " .. topic .. " ", line, 1, true)
    assert.same({ topic = topic, cmd = "add", a = 1, b = 1 }, Hemera.decode(line:match("{.*}")))
    assert.equal(0, (cli(("act %s"):format(shq(('{"topic":"%s","cmd":"note","pubsub$":true}'):format(topic))))))
    line = p:read("l")
    assert.matches('{"topic":"' .. topic .. '","cmd":"note"} (pubsub)', line, 1, true)
    os.execute("kill -INT " .. pid)
    _, _, status = p:close()
    assert.equal(0, status)
  end)

  it("runs ./act as a script, act as the verb, and prints --version", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. shq(dir)))
    local f = assert(io.open(dir .. "/act", "w"))
    f:write('print("the script named act")\n')
    f:close()
    local code, out = sh(("cd %s && %s ./act"):format(shq(dir), shq(BIN)))
    assert.equal(0, code)
    assert.equal("the script named act\n", out)
    code = sh(("cd %s && %s act"):format(shq(dir), shq(BIN)))
    assert.equal(2, code)
    os.execute("rm -rf " .. shq(dir))
    code, out = sh(shq(BIN) .. " --version")
    assert.equal(0, code)
    assert.matches("^hemera " .. Hemera.VERSION:gsub("%.", "%%.") .. "\nLua 5%.4%.%d+\ncnats %d+%.%d+%.%d+\nlibuv %d+%.%d+%.%d+\n$", out)
  end)
end)
