-- hemera.metrics with real parts: a Lua service (its own process, the
-- hemera interpreter) serves /metrics and /healthz; curl reads them,
-- promtool lints the text, and a real Prometheus (Debian's, installed by
-- tools/metrics-setup.sh when missing) scrapes the service and answers a
-- query with the counts a known mix of calls produced.
local testing = require "hemera.testing"
local Hemera = require "hemera"
local core = require "hemera.core"

local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")
local src = os.getenv("HEMERA_SRC") or "."

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function mkdtemp()
  return (run("mktemp -d " .. sh_quote((os.getenv("TMPDIR") or "/tmp") .. "/hemera-metrics.XXXXXX")):gsub("%s+$", ""))
end

-- Polls fn() every 100 ms (Hemera.sleep: the loop runs meanwhile) until
-- it returns a value, at most `tries` times.
local function await(what, tries, fn)
  for _ = 1, tries do
    local v = fn()
    if v then return v end
    Hemera.sleep(100)
  end
  error("gave up waiting for " .. what, 2)
end

-- A free loopback port: bound by the kernel for us, then released.
local function free_port()
  local s = assert(core.http_listen({ port = 0 }, function() return 500 end))
  local p = s:port()
  s:close()
  return p
end

local function http_get(url)
  local out = run("curl -s -m 5 -w '\\n%{http_code}' " .. sh_quote(url))
  local body, code = out:match("^(.*)\n(%d+)$")
  return body, tonumber(code)
end

local setup_out, setup_rc = run(src .. "/tools/metrics-setup.sh 2>&1")

describe("hemera.metrics scraped by Prometheus", function()
  if setup_rc ~= 0 then
    pending("skipped: Prometheus cannot be installed here: " .. setup_out:gsub("%s+$", ""))
    return
  end

  it("counts a known mix of calls, lints clean, and reports health", function()
    local dir = mkdtemp()
    local topic = testing.topic("metrics")
    -- The service, in its own process; its exit status lands in svc.rc.
    os.execute(("(HEMERA_NATS_URL=%s sh -c 'echo $$ >%s; exec \"$@\"' sh %s %s %s >%s 2>%s; echo $? >%s) &"):format(
      sh_quote(testing.url()), dir .. "/svc.pid", sh_quote(bin), sh_quote(src .. "/spec/fixtures/metrics_service.lua"),
      sh_quote(topic), sh_quote(dir .. "/svc.out"), sh_quote(dir .. "/svc.err"), sh_quote(dir .. "/svc.rc")))
    local prom_pid
    local ok, err = pcall(testing.run, function()
      local port = await("the service's port", 150, function()
        local out = read_file(dir .. "/svc.out")
        return out and tonumber(out:match("port (%d+)"))
      end)
      local base = "http://127.0.0.1:" .. port
      local body, code = http_get(base .. "/healthz")
      assert.are.equal(200, code)
      assert.are.equal("ok\n", body)

      local c = testing.new { timeout = 3000 }
      c:ready()
      for k = 1, 5 do
        local r, e = c:act { topic = topic, cmd = "add", a = k, b = 1 }
        assert.is_nil(e)
        assert.are.equal(k + 1, r)
      end
      for _ = 1, 2 do
        local _, e = c:act { topic = topic, cmd = "fail" }
        assert.are.equal("refused", e.message)
      end
      local _, nf = c:act { topic = topic, cmd = "nothing" }
      assert.are.equal("PatternNotFound", nf.name)

      -- The text, as Prometheus will read it.
      body, code = http_get(base .. "/metrics")
      assert.are.equal(200, code)
      local function has(line) assert.is_truthy(body:find(line, 1, true), "missing: " .. line .. "\n" .. body) end
      local p_add = ('topic="%s",pattern="cmd:add,topic:%s"'):format(topic, topic)
      local p_fail = ('topic="%s",pattern="cmd:fail,topic:%s"'):format(topic, topic)
      has(("hemera_requests_total{%s,outcome=\"ok\"} 5\n"):format(p_add))
      has(("hemera_requests_total{%s,outcome=\"error\"} 0\n"):format(p_add))
      has(("hemera_requests_total{%s,outcome=\"error\"} 2\n"):format(p_fail))
      has(("hemera_requests_total{topic=\"%s\",pattern=\"(none)\",outcome=\"error\"} 1\n"):format(topic))
      has(("hemera_request_duration_seconds_count{%s} 5\n"):format(p_add))
      has(("hemera_request_duration_seconds_bucket{%s,le=\"+Inf\"} 5\n"):format(p_add))
      has('fixture_adds_total{parity="odd"} 3\n')
      has('fixture_adds_total{parity="even"} 2\n')
      has("# TYPE hemera_request_duration_seconds histogram\n")
      for _, name in ipairs { "hemera_inflight_requests", "hemera_late_replies_total",
                              "hemera_slow_consumer_drops_total", "hemera_nats_reconnects_total",
                              "hemera_lua_heap_bytes", "process_resident_memory_bytes",
                              "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds" } do
        assert.is_truthy(body:find("\n" .. name .. " %d"), "missing " .. name)
      end
      local f = assert(io.open(dir .. "/scrape.txt", "w"))
      f:write(body)
      f:close()
      local lint, lrc = run("promtool check metrics <" .. sh_quote(dir .. "/scrape.txt") .. " 2>&1")
      assert.are.equal(0, lrc, lint)
      assert.are.equal("", lint)

      -- A real Prometheus scrapes it, and its query API has our counts.
      local pport = free_port()
      f = assert(io.open(dir .. "/prometheus.yml", "w"))
      f:write(([[
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: hemera
    static_configs:
      - targets: ["127.0.0.1:%d"]
]]):format(port))
      f:close()
      prom_pid = tonumber((run(("prometheus --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d"
        .. " >%s 2>&1 & echo $!"):format(sh_quote(dir .. "/prometheus.yml"), sh_quote(dir .. "/data"), pport,
        sh_quote(dir .. "/prometheus.log")))))
      local query = ("http://127.0.0.1:%d/api/v1/query?query=hemera_requests_total"):format(pport)
      local results = await("Prometheus' first scrape", 300, function()
        local qb, qc = http_get(query)
        if qc ~= 200 then return nil end
        local d = Hemera.decode(qb)
        local r = d and d.data and d.data.result
        return r and #r > 0 and r or nil
      end)
      local got = {}
      for _, s in ipairs(results) do
        local m = s.metric
        assert.are.equal("hemera", m.job)
        got[m.topic .. "|" .. m.pattern .. "|" .. m.outcome] = s.value[2]
      end
      assert.are.equal("5", got[topic .. "|cmd:add,topic:" .. topic .. "|ok"])
      assert.are.equal("0", got[topic .. "|cmd:add,topic:" .. topic .. "|error"])
      assert.are.equal("2", got[topic .. "|cmd:fail,topic:" .. topic .. "|error"])
      assert.are.equal("1", got[topic .. "|(none)|error"])
      local up = Hemera.decode((http_get(("http://127.0.0.1:%d/api/v1/query?query=up"):format(pport))))
      assert.are.equal("1", up.data.result[1].value[2])

      -- Closing: /healthz says 503 while a slow request is still served
      -- (one connection, one subscriber: NATS delivers slow before stop).
      c:act({ topic = topic, cmd = "slow" }, function() end)
      c:act { topic = topic, cmd = "stop" }
      local closing = await("/healthz to report closing", 50, function()
        local hb, hc = http_get(base .. "/healthz")
        return hc == 503 and hb
      end)
      assert.are.equal("closing\n", closing)
      -- The service exits cleanly (under ASan: no leak either).
      local rc = await("the service to exit", 100, function() return read_file(dir .. "/svc.rc") end)
      assert.are.equal("0", rc:gsub("%s+$", ""), read_file(dir .. "/svc.err"))
      c:close()
    end, 60000)
    -- Whatever happened, nothing of this test keeps running.
    local function stop(pid)
      if not pid then return end
      os.execute(("kill %d 2>/dev/null; for i in $(seq 100); do kill -0 %d 2>/dev/null || exit 0; sleep 0.05; done;"
        .. " kill -9 %d 2>/dev/null"):format(pid, pid, pid))
    end
    stop(prom_pid)
    if not read_file(dir .. "/svc.rc") then stop(tonumber(read_file(dir .. "/svc.pid") or "")) end
    if not ok then
      io.stderr:write("service stderr:\n", read_file(dir .. "/svc.err") or "", "\n")
      error(err, 0)
    end
    os.execute("rm -rf " .. sh_quote(dir))
  end)
end)
