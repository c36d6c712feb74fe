-- hemera.metrics inside one process: the cardinality cap, user metrics,
-- the exposition text and the errors for bad input (the scrape by a real
-- Prometheus is metrics_prometheus_spec).
local testing = require "hemera.testing"
local metrics = require "hemera.metrics"

local function capture()
  local lg = testing.logger()
  return lg
end

local function count_lines(text, prefix)
  local n = 0
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

describe("hemera.metrics", function()
  it("caps label sets at maxSeries: the rest go to one 'other' set, with one warning", function()
    testing.run(function()
      local lg = capture()
      local topic = testing.topic("mcap")
      local s = testing.new { logger = lg }
      s:use(metrics, { listen = "127.0.0.1:0", maxSeries = 2 })
      for k = 1, 4 do s:add({ topic = topic, n = k }, function() return k end) end
      s:ready()
      for k = 1, 4 do
        for _ = 1, 2 do assert.are.equal(k, (s:act { topic = topic, n = k })) end
      end
      local text = s.metrics:render()
      local p = ('hemera_requests_total{topic="%s",pattern="n:%%d,topic:%s",outcome="ok"} 2'):format(topic, topic)
      assert.is_truthy(text:find(p:format(1), 1, true))
      assert.is_truthy(text:find(p:format(2), 1, true))
      assert.is_falsy(text:find(('pattern="n:3,topic:%s"'):format(topic), 1, true))
      -- Patterns 3 and 4, two requests each, in the one other set.
      assert.is_truthy(text:find('hemera_requests_total{topic="other",pattern="other",outcome="ok"} 4\n', 1, true))
      assert.is_truthy(text:find('hemera_request_duration_seconds_count{topic="other",pattern="other"} 4\n', 1, true))
      assert.are.equal(3, count_lines(text, "hemera_request_duration_seconds_count{"))
      local warnings = 0
      for _, r in ipairs(lg.records) do
        local f = r.fields or {}
        if type(r.msg) == "string" and r.msg:find("over its series limit", 1, true)
          and f.metric == "hemera_requests_total" then
          warnings = warnings + 1
          assert.are.equal(2, f.limit)
        end
      end
      assert.are.equal(1, warnings)
      s:close()
    end)
  end)

  it("gives handlers counters, gauges and histograms, with clear errors", function()
    testing.run(function()
      local topic = testing.topic("muser")
      local s = testing.new {}
      s:use(metrics, { listen = "127.0.0.1:0" })
      local seen
      s:add({ topic = topic, cmd = "x" }, function(req, ctx)
        seen = ctx.metrics
        return true
      end)
      s:ready()
      assert.is_true((s:act { topic = topic, cmd = "x" }))
      assert.are.equal(s.metrics, seen)
      local m = s.metrics
      local c = m:counter("jobs_total", "Jobs done", { "kind" })
      c:inc(nil, { kind = "a" })
      c:inc(2, { kind = "a" })
      c:labels("b\"\n\\"):inc()
      local g = m:gauge("queue_depth", "Jobs waiting")
      g:set(7)
      g:add(-2)
      local h = m:histogram("job_seconds", "Job time", {}, { 0.1, 1 })
      h:observe(0.05)
      h:observe(0.5)
      h:observe(5)
      local text = m:render()
      assert.is_truthy(text:find('# HELP jobs_total Jobs done\n# TYPE jobs_total counter\n', 1, true))
      assert.is_truthy(text:find('jobs_total{kind="a"} 3\n', 1, true))
      assert.is_truthy(text:find('jobs_total{kind="b\\"\\n\\\\"} 1\n', 1, true))
      assert.is_truthy(text:find('queue_depth 5\n', 1, true))
      assert.is_truthy(text:find('job_seconds_bucket{le="0.1"} 1\njob_seconds_bucket{le="1"} 2\n'
        .. 'job_seconds_bucket{le="+Inf"} 3\njob_seconds_sum 5.55\njob_seconds_count 3\n', 1, true))

      local function fails(pat, fn)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find(pat, 1, true), tostring(err))
      end
      fails("metric 'jobs_total' is already registered", function() m:counter("jobs_total", "again") end)
      fails("invalid metric name '2x'", function() m:counter("2x", "bad") end)
      fails("invalid label name 'a-b'", function() m:gauge("g2", "bad", { "a-b" }) end)
      fails("label 'kind' has no value", function() c:inc(1, {}) end)
      fails("metric 'jobs_total' has no label 'kinds'", function() c:inc(1, { kind = "a", kinds = "x" }) end)
      fails("a counter only goes up", function() c:inc(-1, { kind = "a" }) end)
      fails("bucket 2 must be a finite number above the one before it",
        function() m:histogram("h2", "bad", {}, { 1, 1 }) end)
      fails("set is for gauges, not counters", function() c:labels("a"):set(1) end)
      s:close()
    end)
  end)

  it("refuses bad options naming them", function()
    testing.run(function()
      local s = testing.new {}
      s:use(metrics, { listen = "localhost" })
      local ok, err = s:ready()
      assert.is_nil(ok)
      assert.is_truthy(err.message:find("Invalid option 'listen' of hemera.metrics", 1, true), err.message)
      s:close()
      local s2 = testing.new {}
      s2:use(metrics, { listen = "127.0.0.1:0", maxSeries = 0 })
      ok, err = s2:ready()
      assert.is_nil(ok)
      assert.is_truthy(err.message:find("Invalid option 'maxSeries' of hemera.metrics: expected an integer >= 1, got 0",
        1, true), err.message)
      s2:close()
    end)
  end)
end)
