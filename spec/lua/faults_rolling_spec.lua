-- A rolling restart as a user runs one: two `hemera` service processes in
-- one queue group under load, one of them SIGTERMed mid-run. Every request
-- must be answered, by one instance or the other: the stopping instance
-- drains its subscription (the server stops sending, what it already sent
-- is served) before its patterns go.
local Hemera = require "hemera"
local testing = require "hemera.testing"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local N, WINDOW, STOP_AT = 3000, 64, 1000

local SERVICE = [[
local Hemera = require "hemera"
local pid = io.open("/proc/self/stat"):read("l"):match("^(%%d+)")
-- Few delivery credits: most of what NATS sends waits in the client's
-- queue, where an unsubscribe at close would drop it.
local hemera = Hemera.new { closeTimeout = 10000, maxConcurrency = 4 }
hemera:add({ topic = %q, cmd = "twice" }, function(req)
  Hemera.sleep(2)
  return { v = req.k * 2, pid = pid }
end)
hemera:ready()
]]

local function read_all(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

describe("a rolling restart under load", function()
  it("answers every request while one of two instances is SIGTERMed", function()
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-rolling.XXXXXX\"")):read("l")
    local topic = testing.topic("rolling")
    local script = dir .. "/service.lua"
    local f = assert(io.open(script, "w"))
    f:write(SERVICE:format(topic))
    f:close()
    for k = 1, 2 do
      os.execute(("sh -c 'HEMERA_LOG=silent timeout -s KILL 90 %s --server %s %s >%s/out%d.txt 2>&1; echo $? >%s/status%d' &")
        :format(bin, testing.url(), script, dir, k, dir, k))
    end
    local pids = {}
    local ok, err = pcall(testing.run, function()
      local c = testing.new()
      assert(c:ready())
      -- Both instances are up once both have answered.
      local seen, n = {}, 0
      for _ = 1, 2000 do
        local res = c:act { topic = topic, cmd = "twice", k = 0, timeout_ = 2000 }
        if res and not seen[res.pid] then
          seen[res.pid] = true
          n = n + 1
          pids[n] = res.pid
        end
        if n == 2 then break end
      end
      assert.equal(2, n, "the two service instances did not both answer:\n"
        .. tostring(read_all(dir .. "/out1.txt")) .. tostring(read_all(dir .. "/out2.txt")))

      local victim = pids[1]
      local results, by_pid, failures = {}, {}, {}
      local sent, answered, all_done = 0, 0, testing.future()
      local send
      local function on_reply(k)
        return function(e, res)
          answered = answered + 1
          if e then
            failures[#failures + 1] = ("%d: %s"):format(k, tostring(e))
          else
            results[k] = res.v
            by_pid[res.pid] = (by_pid[res.pid] or 0) + 1
          end
          if answered == STOP_AT then os.execute("kill -TERM " .. victim) end
          if answered == N then all_done:set() else send() end
        end
      end
      send = function()
        if sent == N then return end
        sent = sent + 1
        c:act({ topic = topic, cmd = "twice", k = sent, timeout_ = 10000 }, on_reply(sent))
      end
      for _ = 1, WINDOW do send() end
      assert.is_nil(select(2, all_done:wait(60000)))
      assert.same({}, failures)
      for k = 1, N do assert.equal(k * 2, results[k], "request " .. k) end
      -- Both took part, and the victim stopped taking requests.
      assert.is_true((by_pid[pids[1]] or 0) > 0)
      assert.is_true((by_pid[pids[2]] or 0) > 0)
      -- The victim's exit is no event we can await (not our child): poll.
      local status
      for _ = 1, 2000 do
        status = read_all(dir .. "/status1") or read_all(dir .. "/status2")
        if status and status ~= "" then break end
        Hemera.sleep(10)
      end
      assert.equal("0\n", status, "the SIGTERMed instance's exit status; its output:\n"
        .. tostring(read_all(dir .. "/out1.txt")) .. tostring(read_all(dir .. "/out2.txt")))
    end, 90000)
    for _, pid in ipairs(pids) do
      if testing.alive(tonumber(pid)) then os.execute("kill -KILL " .. pid) end
    end
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(err, 0) end
  end)
end)
