-- Durable work throughput (bench/run.sh): starts its own nats-server with
-- JetStream and a temporary store, then measures
--   durable act <n> <seconds>            n durable acts, 256 in flight, each
--                                        returning at its publish ack
--   durable work <workers> <n> <seconds> n stored acts consumed by that many
--                                        worker processes (a trivial handler),
--                                        until the consumer has every ack
--   hemera bench/durable.lua [n]
--   hemera bench/durable.lua worker <url> <consumer>   (started by the above)
local Hemera = require "hemera"
local core = require "hemera.core"
local durable = require "hemera.durable"

if arg[1] == "worker" then
  local w = Hemera.new { servers = arg[2] }
  w:add({ topic = "bench.orders", cmd = "create",
          ["durable$"] = { stream = "BENCH", consumer = arg[3], concurrency = 128 } },
    function(req) return { k = req.k } end)
  w:ready()
  return
end

local N = tonumber(arg[1]) or 20000
local bin = arg[-1] or "hemera"

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/hemera-bench-js.XXXXXX\""):gsub("%s+$", "")
local log = dir .. "/nats.log"
local spid = tonumber(sh(("nats-server -js -sd %s -a 127.0.0.1 -p -1 -l %s >/dev/null 2>&1 & echo $!"):format(dir, log)))
local url
for _ = 1, 500 do -- the server's log says when it is up: poll it (a benchmark, not a test)
  local f = io.open(log)
  local text = f and f:read("a") or ""
  if f then f:close() end
  local port = text:match("Listening for client connections on [%d%.]+:(%d+)")
  if port and text:find("Server is ready", 1, true) then url = "nats://127.0.0.1:" .. port; break end
  os.execute("sleep 0.02")
end
assert(url, "bench/durable: nats-server did not start")
local workers = {}
local function cleanup()
  for _, p in ipairs(workers) do os.execute("kill -KILL " .. p .. " 2>/dev/null") end
  os.execute("kill -TERM " .. spid .. " 2>/dev/null")
  os.execute("sleep 0.2; rm -rf '" .. dir .. "'")
end

Hemera.spawn(function()
  local ok, err = pcall(function()
    local p = Hemera.new { servers = url, timeout = 10000 }
    assert(p:ready())
    assert(durable.api(p._i, "STREAM.CREATE.BENCH", { name = "BENCH", subjects = core.array { "hemera.durable.bench.>" } }))
    local function fill(n)
      local sent, done, all = 0, 0, Hemera.future()
      local send
      local function on_ack(e)
        assert(not e, e)
        done = done + 1
        if done == n then all:set(true) else send() end
      end
      send = function()
        if sent == n then return end
        sent = sent + 1
        p:act({ topic = "bench.orders", cmd = "create", k = sent, ["durable$"] = true }, on_ack)
      end
      local t0 = core.hrtime()
      for _ = 1, 256 do send() end
      assert(all:wait(120000))
      return (core.hrtime() - t0) / 1000
    end
    print(("durable act %d %.3f"):format(N, fill(N)))
    for _, nw in ipairs { 1, 3 } do
      local consumer = "w" .. nw
      -- The consumer exists before the clock starts: it holds all N.
      assert(durable.api(p._i, ("CONSUMER.DURABLE.CREATE.BENCH.%s"):format(consumer), { stream_name = "BENCH",
        config = { durable_name = consumer, ack_policy = "explicit", ack_wait = 30000 * 1000000, max_deliver = 5,
                   filter_subject = "hemera.durable.bench.orders", deliver_policy = "all",
                   max_ack_pending = 2048, replay_policy = "instant" } }))
      local t0 = core.hrtime()
      for k = 1, nw do
        workers[#workers + 1] = tonumber(sh(("%s bench/durable.lua worker %s %s >/dev/null 2>&1 & echo $!")
          :format(bin, url, consumer)))
      end
      while true do
        local info = assert(durable.api(p._i, ("CONSUMER.INFO.BENCH.%s"):format(consumer)))
        if info.ack_floor.stream_seq >= N then break end
        Hemera.sleep(20)
      end
      print(("durable work %d %d %.3f"):format(nw, N, (core.hrtime() - t0) / 1000))
      for _, w in ipairs(workers) do os.execute("kill -KILL " .. w .. " 2>/dev/null") end
      workers = {}
    end
    p:close()
  end)
  if not ok then io.stderr:write(tostring(err), "\n") end
  cleanup()
  if not ok then os.exit(1) end
end)
