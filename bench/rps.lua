-- Requests/s of a Hemera client against a Hemera service, full Hemera
-- envelope, service and client in separate processes (bench/run.sh runs it
-- against the Lua service and against the Node one in bench/node/).
--
--   hemera bench/rps.lua serve [topic] [hooks] [idle=N] [msgpack]
--       a service: {topic, cmd:"add"} returns a + b; {topic, cmd:"stop"}
--       replies true, then closes the instance (the process then exits 0).
--       Prints "ready" once the server has its subscription.
--       `hooks`: also one onRequest and one preHandler hook (each counts)
--       and hemera.validation.schema's plugin checking a and b on the add action,
--       the cost of a service that uses Hemera's extension points.
--       `idle=N`: also N other topics of one pattern each, never called
--       (N more NATS subscriptions and router entries), for the latency of
--       a service that has many.
--       `metrics`: also hemera.metrics (on a free port), the cost of a
--       service with the plugin on. `msgpack`: the service speaks
--       MessagePack (hemera:use(require "hemera.msgpack")); its clients and
--       `stop` must be given `msgpack` too. `tracing=<url>`: also
--       hemera.tracing, every request sampled, spans POSTed as OTLP to url.
--       `nomicro`: the Service API (ADR-32) off, whose counters every
--       other variant pays for (bench/micro_cost.sh).
--   hemera bench/rps.lua sink
--       a collector that answers every POST 200 and drops the body;
--       prints "port <n>" (bench/tracing_cost.sh). Runs until killed.
--   hemera bench/rps.lua client <topic> [msgpack] <seconds> <warmup-s> <inflight>...
--       N workers per level, each acting {topic, cmd:"add", a, b} and
--       acting again when the reply arrives, for <seconds> per level, after
--       an unreported warm-up of <warmup-s> at the last level. One line per
--       level, the same as every client in bench/:
--         inflight  128:     40000 req/s  p50    3000 us  p99    6000 us  errors 0  requests 120000  cpu_us 2900000  svc_cpu_us 2500000
--       (requests: answered in the level; cpu_us: this process's CPU over
--       the level, os.clock(); svc_cpu_us: the service's utime + stime from
--       /proc/$BENCH_SVC_PID/stat over the level, -1 without it), then
--       `client_hwm_kb <peak RSS of this process>`.
--   hemera bench/rps.lua count <topic> <n>
--       n acts {topic, cmd:"add"}, one after the other, then exits
--       (bench/metrics_cost.sh: a known number of requests).
--   hemera bench/rps.lua stop [topic] [msgpack]
--       acts {topic, cmd:"stop"}.
--   hemera bench/rps.lua [seconds] [inflight...]
--       the old form: client against topic "bench", then stop.
-- The server is $HEMERA_NATS_URL. GCMODE=incremental|generational picks
-- the collector (default: the interpreter's).
if os.getenv("GCMODE") then collectgarbage(os.getenv("GCMODE")) end
local Hemera = require "hemera"
local core = require "hemera.core"

local mode = arg[1]

-- `msgpack` after the topic (client, stop) or among serve's options: the
-- instance speaks MessagePack. Taken out of arg, so the numbers that
-- follow keep their places.
local msgpack = false
for k = #arg, 2, -1 do
  if arg[k] == "msgpack" then
    msgpack = true
    table.remove(arg, k)
  end
end
local function codec(hemera)
  if msgpack then hemera:use(require "hemera.msgpack") end
  return hemera
end

if mode == "serve" then
  local topic = arg[2] or "bench"
  local hooks, idle, with_metrics, tracing_url, micro = false, 0, false, nil, true
  for k = 3, #arg do
    if arg[k] == "hooks" then hooks = true
    elseif arg[k] == "metrics" then with_metrics = true
    elseif arg[k] == "nomicro" then micro = false
    elseif arg[k]:match("^tracing=") then tracing_url = arg[k]:match("^tracing=(.*)$")
    elseif arg[k]:match("^idle=%d+$") then idle = tonumber(arg[k]:match("%d+"))
    else error("rps.lua serve: unknown option " .. arg[k]) end
  end
  -- pluginTimeout: the default 10 ms can expire for a plugin that
  -- completes at once when the loop clock is stale (hemera_plugin_spec).
  local s = codec(Hemera.new { name = "bench-service", pluginTimeout = 2000, micro = { enabled = micro } })
  if with_metrics then s:use(require "hemera.metrics", { listen = "127.0.0.1:0" }) end
  if tracing_url then s:use(require "hemera.tracing", { otlp = tracing_url, sampler = "always" }) end
  if hooks then
    -- Trivial on purpose: what is measured is the cost of the extension
    -- points and of the validator, not of work done in them.
    local S = require "hemera.validation.schema"
    local seen_request, seen_pre = 0, 0
    s:use(S.plugin)
    s:ext("onRequest", function() seen_request = seen_request + 1 end)
    s:ext("preHandler", function() seen_pre = seen_pre + 1 end)
    s:add({ topic = topic, cmd = "add", a = S.number():required(), b = S.number():required() },
      function(req) return req.a + req.b end)
  else
    s:add({ topic = topic, cmd = "add" }, function(req) return req.a + req.b end)
  end
  for k = 1, idle do
    s:add({ topic = topic .. "_idle." .. k, cmd = "x" }, function() return k end)
  end
  s:add({ topic = topic, cmd = "stop" }, function()
    core.spawn(function() s:close() end)
    return true
  end)
  s:ready(function() io.stdout:write("ready\n"); io.stdout:flush() end)
  return
end

if mode == "sink" then
  local srv = assert(core.http_listen({ port = 0, maxBodyBytes = 64 * 1024 * 1024 }, function()
    return 200, { ["Content-Type"] = "application/json" }, "{}"
  end))
  io.stdout:write("port ", srv:port(), "\n")
  io.stdout:flush()
  return
end

-- utime + stime of process <pid> in microseconds (all its threads), or
-- -1: fields 14 and 15 of /proc/<pid>/stat, in clock ticks. The fields are
-- counted after the ")" that ends the command name, which may hold spaces.
local tick_us = 1e6 / (tonumber(os.getenv("BENCH_CLK_TCK")) or 100)
local svc_pid = tonumber(os.getenv("BENCH_SVC_PID") or "")
local function cpu_us_of(pid)
  if not pid then return -1 end
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  local rest = s and s:match("%)%s+(.*)$")
  if not rest then return -1 end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- rest starts at field 3 (state), so field n is fields[n - 2].
  local ut, st = tonumber(fields[12]), tonumber(fields[13])
  if not ut or not st then return -1 end
  return (ut + st) * tick_us
end

local function hwm_kb()
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

if mode == "count" then
  local c = Hemera.new { name = "bench-count", timeout = 10000 }
  local n = assert(tonumber(arg[3]), "rps.lua count <topic> <n>")
  c:ready(function()
    for k = 1, n do
      local _, err = c:act { topic = arg[2], cmd = "add", a = k, b = 1 }
      if err then io.stderr:write("count: ", tostring(err), "\n"); os.exit(1) end
    end
    c:close()
  end)
  return
end

if mode == "stop" then
  local c = codec(Hemera.new { name = "bench-stop", timeout = 2000, pluginTimeout = 2000 })
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

local c = codec(Hemera.new { name = "bench-client", timeout = 10000, pluginTimeout = 2000 })
c:ready(function()
  local function run(inflight, secs, report)
    -- CPU is read around the level alone (warm-up and other levels are
    -- outside it); os.clock() is this process's CPU, every thread.
    local cpu0, svc0 = os.clock(), cpu_us_of(svc_pid)
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
    local cpu, svc1 = (os.clock() - cpu0) * 1e6, cpu_us_of(svc_pid)
    if not report then return end
    table.sort(lat)
    local function pct(p) return (lat[math.max(1, math.floor(#lat * p))] or 0) * 1000 end
    print(("inflight %4d: %9.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d"
      .. "  requests %d  cpu_us %.0f  svc_cpu_us %.0f"):format(
      inflight, done / elapsed, pct(0.50), pct(0.99), errors, done, cpu,
      (svc0 >= 0 and svc1 >= 0) and svc1 - svc0 or -1))
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
