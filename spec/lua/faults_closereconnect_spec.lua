-- Faults: close() while the connection is reconnecting (server down, or
-- refusing the credentials). The scenario runs in a child interpreter
-- (HEMERA_BIN), so a crash shows up as its exit status instead of taking
-- the spec run down with it.
local testing = require "hemera.testing"
local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local SCRIPT = [=[
local Hemera = require "hemera"
local testing = require "hemera.testing"
local ROUNDS, INSTANCES = tonumber(arg[1]), tonumber(arg[2])
local srv = testing.start_server { config = 'authorization { user: "u", password: "p1" }' }
-- The parent kills what a crashed child leaves behind.
local function report_pid() io.stdout:write("NATSPID=", srv.pid, "\n"); io.stdout:flush() end
io.stdout:write("NATSDIR=", srv.dir, "\n")
report_pid()
for round = 1, ROUNDS do
  testing.run(function()
    local lg = testing.logger()
    local nats = { user = "u", password = "p1", reconnectWait = 20, maxReconnect = -1 }
    local insts = {}
    for k = 1, INSTANCES do
      insts[k] = Hemera.new { servers = srv.url, nats = nats, logger = k == 1 and lg or nil }
      assert(insts[k]:ready())
    end
    if round % 2 == 0 then
      -- Reconnects refused by authentication.
      srv:restart('authorization { user: "u", password: "other" }')
      report_pid()
      assert(lg:wait("violation", 15000), "no refused reconnect")
    else
      -- Reconnects refused by TCP.
      srv:kill()
      assert(lg:wait("NATS disconnected!", 15000), "no disconnect")
    end
    local n, all = 0, Hemera.future()
    for k = 1, INSTANCES do
      insts[k]:close(function()
        n = n + 1
        if n == INSTANCES then all:set(true) end
      end)
    end
    assert(all:wait(20000), "close() did not call back")
  end, 60000)
  srv:restart('authorization { user: "u", password: "p1" }')
  report_pid()
end
testing.stop_all()
print("ROUNDS DONE")
]=]

describe("faults: close() while reconnecting", function()
  it("closes every instance, calls back, and the process exits cleanly (10 rounds x 10 instances)", function()
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-closerec.XXXXXX\"")):read("l")
    local path = dir .. "/closerec.lua"
    local f = assert(io.open(path, "w"))
    f:write(SCRIPT)
    f:close()
    -- `timeout` bounds the child; its status comes back through the pipe.
    local p = assert(io.popen(("HEMERA_TESTING_MAX_S=150 timeout -s KILL 120 %s %s 10 10 2>&1; echo \"EXIT=$?\"")
      :format(bin, path)))
    local out = p:read("a")
    p:close()
    os.execute("rm -rf '" .. dir .. "'")
    -- A crashed child could not stop its nats-server: do it here.
    for pid in out:gmatch("NATSPID=(%d+)") do
      if testing.alive(tonumber(pid)) then os.execute("kill -KILL " .. pid) end
    end
    local ndir = out:match("NATSDIR=(%S+)")
    if ndir and ndir:match("hemera%-testing%.") then os.execute("rm -rf '" .. ndir .. "'") end
    local status = tonumber(out:match("EXIT=(%d+)%s*$"))
    -- A sanitizer report (sanitizer builds) is a failure of its own.
    assert.is_nil(out:find("Sanitizer", 1, true), out)
    assert.equal(0, status, out)
    assert.is_truthy(out:find("ROUNDS DONE", 1, true), out)
  end)
end)
