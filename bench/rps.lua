-- Requests/s of a Lua client against a Lua service (full Hemera envelope),
-- at 1 and 128 requests in flight, service and client in separate
-- processes. Run: make bench (or HEMERA_NATS_URL=... hemera bench/rps.lua).
--   hemera bench/rps.lua [seconds-per-run] [inflight...]
collectgarbage(os.getenv("GCMODE") or "incremental")
local Hemera = require "hemera"
local core = require "hemera.core"

local mode = arg[1]
if mode == "serve" then
  local s = Hemera.new { name = "bench-service" }
  s:add({ topic = "bench", cmd = "add" }, function(req) return req.a + req.b end)
  s:add({ topic = "bench", cmd = "stop" }, function()
    core.spawn(function() s:close() end)
    return true
  end)
  s:ready(function() io.stdout:write("ready\n"); io.stdout:flush() end)
  return
end

local seconds = tonumber(arg[1]) or 3
local levels = {}
for k = 2, #arg do levels[#levels + 1] = tonumber(arg[k]) end
if #levels == 0 then levels = { 1, 16, 128 } end

local c = Hemera.new { name = "bench-client", timeout = 10000 }
c:ready(function()
  local function run(inflight)
    local stop_at = core.hrtime() + seconds * 1000
    local done, errors, lat = 0, 0, {}
    local finished = core.future()
    local workers = inflight
    for w = 1, inflight do
      Hemera.spawn(function()
        while core.hrtime() < stop_at do
          local t0 = core.hrtime()
          local res, err = c:act { topic = "bench", cmd = "add", a = w, b = done }
          if err then errors = errors + 1 end
          lat[#lat + 1] = core.hrtime() - t0
          done = done + 1
        end
        workers = workers - 1
        if workers == 0 then finished:set() end
      end)
    end
    local t0 = core.hrtime()
    finished:wait()
    local elapsed = (core.hrtime() - t0) / 1000
    table.sort(lat)
    local function pct(p) return lat[math.max(1, math.floor(#lat * p))] * 1000 end
    print(("inflight %4d: %9.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d"):format(
      inflight, done / elapsed, pct(0.50), pct(0.99), errors))
  end
  for _, n in ipairs(levels) do run(n) end
  c:act { topic = "bench", cmd = "stop" }
  c:close()
end)
