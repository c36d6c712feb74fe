-- Requests/s of a Hemera client against a Hemera service, full Hemera
-- envelope, service and client in separate processes (bench/run.sh runs it
-- against the Lua service and against the Node one in bench/node/).
--
--   hemera bench/rps.lua serve [topic]
--       a service: {topic, cmd:"add"} returns a + b; {topic, cmd:"stop"}
--       replies true, then closes the instance (the process then exits 0).
--       Prints "ready" once the server has its subscription.
--   hemera bench/rps.lua client <topic> <seconds> <warmup-s> <inflight>...
--       N workers per level, each acting {topic, cmd:"add", a, b} and
--       acting again when the reply arrives, for <seconds> per level, after
--       an unreported warm-up of <warmup-s> at the last level. One line per
--       level, the same as every client in bench/:
--         inflight  128:     40000 req/s  p50    3000 us  p99    6000 us  errors 0
--       then `client_hwm_kb <peak RSS of this process>`.
--   hemera bench/rps.lua stop [topic]
--       acts {topic, cmd:"stop"}.
--   hemera bench/rps.lua [seconds] [inflight...]
--       the old form: client against topic "bench", then stop.
-- The server is $HEMERA_NATS_URL. GCMODE=incremental|generational picks
-- the collector (default: the interpreter's).
if os.getenv("GCMODE") then collectgarbage(os.getenv("GCMODE")) end
local Hemera = require "hemera"
local core = require "hemera.core"

local mode = arg[1]

if mode == "serve" then
  local topic = arg[2] or "bench"
  local s = Hemera.new { name = "bench-service" }
  s:add({ topic = topic, cmd = "add" }, function(req) return req.a + req.b end)
  s:add({ topic = topic, cmd = "stop" }, function()
    core.spawn(function() s:close() end)
    return true
  end)
  s:ready(function() io.stdout:write("ready\n"); io.stdout:flush() end)
  return
end

local function hwm_kb()
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

if mode == "stop" then
  local c = Hemera.new { name = "bench-stop", timeout = 2000 }
  c:ready(function()
    local _, err = c:act { topic = arg[2] or "bench", cmd = "stop" }
    if err then io.stderr:write("stop: ", tostring(err), "\n") end
    c:close()
  end)
  return
end

local topic, seconds, warmup, first
if mode == "client" then
  topic, seconds, warmup, first = arg[2], tonumber(arg[3]), tonumber(arg[4]), 5
else
  topic, seconds, warmup, first = "bench", tonumber(arg[1]) or 3, 0, 2
end
local levels = {}
for k = first, #arg do levels[#levels + 1] = tonumber(arg[k]) end
if #levels == 0 then levels = { 1, 16, 128 } end

local c = Hemera.new { name = "bench-client", timeout = 10000 }
c:ready(function()
  local function run(inflight, secs, report)
    local stop_at = core.hrtime() + secs * 1000
    local done, errors, lat = 0, 0, {}
    local finished = core.future()
    local workers = inflight
    for w = 1, inflight do
      Hemera.spawn(function()
        while core.hrtime() < stop_at do
          local t0 = core.hrtime()
          local _, err = c:act { topic = topic, cmd = "add", a = w, b = done }
          if err then
            errors = errors + 1
          else
            lat[#lat + 1] = core.hrtime() - t0
            done = done + 1
          end
        end
        workers = workers - 1
        if workers == 0 then finished:set() end
      end)
    end
    local t0 = core.hrtime()
    finished:wait()
    local elapsed = (core.hrtime() - t0) / 1000
    if not report then return end
    table.sort(lat)
    local function pct(p) return (lat[math.max(1, math.floor(#lat * p))] or 0) * 1000 end
    print(("inflight %4d: %9.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d"):format(
      inflight, done / elapsed, pct(0.50), pct(0.99), errors))
    io.stdout:flush()
  end
  if warmup and warmup > 0 then run(levels[#levels], warmup, false) end
  for _, n in ipairs(levels) do run(n, seconds, true) end
  if mode == "client" then
    print("client_hwm_kb " .. hwm_kb())
  else
    c:act { topic = topic, cmd = "stop" }
  end
  c:close()
end)
