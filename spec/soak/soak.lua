-- Soak: N requests (default 100,000) from a Lua client to a Lua service in
-- one process, 64 in flight. Prints the RSS at the half and at the end and
-- fails (exit 1) when any request failed or when RSS grew between the two
-- by more than SOAK_RSS_SLACK_KB (default 512 KB: allocator noise).
--   hemera spec/soak/soak.lua [N]
local Hemera = require "hemera"
local core = require "hemera.core"

local N = tonumber(arg and arg[1]) or 100000
local INFLIGHT = 64
local slack = (tonumber(os.getenv("SOAK_RSS_SLACK_KB")) or 512) * 1024

local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4096
end

local service = Hemera.new { name = "soak-service" }
service:add({ topic = "soak", cmd = "echo" }, function(req, ctx)
  return { n = req.n, text = req.text, meta = ctx.meta.k }
end)
local client = Hemera.new { name = "soak-client", timeout = 30000 }

local failures, done, sent = 0, 0, 0
local rss_half, rss_end
local finished = core.future()

local function worker()
  while sent < N do
    sent = sent + 1
    local n = sent
    local res, err = client:act { topic = "soak", cmd = "echo", n = n, text = "payload " .. n, meta_ = { k = n } }
    if err or res.n ~= n or res.meta ~= n then failures = failures + 1 end
    done = done + 1
    if done == N // 2 then
      collectgarbage("collect")
      rss_half = rss()
    end
    if done == N then finished:set() end
  end
end

service:ready(function()
  client:ready(function()
    for _ = 1, INFLIGHT do Hemera.spawn(worker) end
    finished:wait()
    collectgarbage("collect")
    rss_end = rss()
    local grew = rss_end - rss_half
    print(("soak: %d requests, %d failed; rss at %d: %d KB, at %d: %d KB (%+d KB)"):format(
      N, failures, N // 2, rss_half // 1024, N, rss_end // 1024, grew // 1024))
    local ok = failures == 0 and grew <= slack
    Hemera.closeAll()
    if not ok then
      io.stderr:write("soak: FAILED\n")
      os.exit(1, true)
    end
  end)
end)
