-- hemera.metrics: Prometheus metrics of a Hemera instance, served over HTTP
-- on the instance's own loop.
--
--   hemera:use(require "hemera.metrics", { listen = "127.0.0.1:9464" })
--
--   GET /metrics  the text exposition format 0.0.4
--   GET /healthz  200 "ok" once ready, 503 "starting" before, 503
--                 "closing" from close() on
--
-- Options: listen ("host:port", numeric host, "[::1]:9464" for IPv6; port
-- 0 takes a free one, see hemera.metrics.port), maxSeries (label sets per
-- metric, default 1000; the rest are counted in one series whose labels
-- are all "other", with one warning), buckets (histogram bounds in
-- seconds), http (limits for core.http_listen).
--
-- The counting: one onResponse hook (server) and one onActFinished hook
-- (client), both C functions (core.metrics_hooks) doing a table lookup and
-- two additions per request; the series live in C (hm_lua_metrics.c). Everything else is
-- read when Prometheus scrapes. The plugin is unscoped: its hooks go to the
-- scope that uses it, so use it on the root instance before the plugins
-- whose actions it should count (scopes made earlier keep their own hook
-- lists).
--
-- User metrics, on every scope and handler context (`scope.metrics`,
-- `ctx.metrics`):
--   local c = hemera.metrics:counter("orders_total", "Orders placed", { "kind" })
--   c:inc()                   -- no labels: the metric has none
--   c:inc(2, { kind = "book" })
--   c:labels("book"):inc()    -- the series of those values, to keep
--   hemera.metrics:gauge(name, help, labels):set(v [, labels]) / :add(v [, labels])
--   hemera.metrics:histogram(name, help, labels [, buckets]):observe(v [, labels])

local core = require "hemera.core"
local errors = require "hemera.errors"
local pattern = require "hemera.pattern"
local util = require "hemera.util"


local DEFAULT_BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local TEXT = { ["Content-Type"] = "text/plain; charset=utf-8" }
local EXPOSITION = { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }

local function bad_option(name, expected, got)
  error(errors.HemeraError(("Invalid option '%s' of hemera.metrics: expected %s, got %s")
    :format(name, expected, tostring(got)), { option = name }), 4)
end

local function parse_listen(s)
  local host, port = util.parse_listen(s)
  if host then return host, port end
  if type(s) ~= "string" then bad_option("listen", "a string \"host:port\"", s) end
  bad_option("listen", "\"host:port\" with a numeric host and a port from 0 to 65535", ("%q"):format(s))
end

-- {==================================================================
-- User metrics
-- ===================================================================

local Metric = {}
Metric.__index = Metric

-- The label values of t (a table by label name), in the metric's order.
local function values_of(m, t)
  local names = m.labelnames
  local n = #names
  if t == nil then
    if n == 0 then return m.family:series() end
    error(("metric '%s' has labels (%s): give their values"):format(m.name, table.concat(names, ", ")), 3)
  end
  if type(t) ~= "table" then
    error(("metric '%s': labels must be a table, got %s"):format(m.name, type(t)), 3)
  end
  local vals = {}
  for k = 1, n do
    local v = t[names[k]]
    if v == nil then error(("metric '%s': label '%s' has no value"):format(m.name, names[k]), 3) end
    vals[k] = v
  end
  for k in pairs(t) do
    if not m.known[k] then error(("metric '%s' has no label '%s'"):format(m.name, tostring(k)), 3) end
  end
  return m:labels(table.unpack(vals, 1, n))
end

-- m:labels(v1, ...) -> the series of those label values (a C object with
-- inc/set/add/observe), capped at maxSeries.
function Metric:labels(...)
  local s, over = self.family:series(...)
  if over then self.warn(self.name) end
  return s
end

function Metric:inc(n, labels) values_of(self, labels):inc(n) end
function Metric:set(v, labels) values_of(self, labels):set(v) end
function Metric:add(v, labels) values_of(self, labels):add(v) end
function Metric:observe(v, labels) values_of(self, labels):observe(v) end

local Registry = {}
Registry.__index = Registry

local function define(self, kind, name, help, labels, buckets)
  if type(name) ~= "string" then error("metric name must be a string, got " .. type(name), 3) end
  if type(help) ~= "string" then error(("metric '%s': help must be a string, got %s"):format(name, type(help)), 3) end
  if labels ~= nil and type(labels) ~= "table" then
    error(("metric '%s': labels must be a list of names, got %s"):format(name, type(labels)), 3)
  end
  labels = labels or {}
  if kind == "histogram" and buckets ~= nil and type(buckets) ~= "table" then
    error(("metric '%s': buckets must be a list of numbers, got %s"):format(name, type(buckets)), 3)
  end
  local ok, fam = pcall(self._reg.family, self._reg, kind, name, help, labels, self._max, buckets or self._buckets)
  if not ok then error(fam, 3) end
  local known = {}
  for _, l in ipairs(labels) do known[l] = true end
  return setmetatable({ family = fam, name = name, labelnames = labels, known = known, warn = self._warn }, Metric)
end

function Registry:counter(name, help, labels) return define(self, "counter", name, help, labels) end
function Registry:gauge(name, help, labels) return define(self, "gauge", name, help, labels) end
function Registry:histogram(name, help, labels, buckets) return define(self, "histogram", name, help, labels, buckets) end

-- fn() runs before each scrape, for plugins whose counters live elsewhere
-- (hemera.tracing's dropped spans) to bring their series up to date.
function Registry:collector(fn)
  if type(fn) ~= "function" then error("collector must be a function, got " .. type(fn), 2) end
  local list = self._collectors
  list[#list + 1] = fn
end

-- The exposition text as a scrape would see it (for tests and debugging).
function Registry:render()
  self._collect()
  return self._reg:render()
end

-- }==================================================================

local function register(scope, opts)
  local i = scope._i
  local host, port = parse_listen(opts.listen)
  local max = opts.maxSeries
  if math.type(max) ~= "integer" or max < 1 then bad_option("maxSeries", "an integer >= 1", max) end
  local buckets = opts.buckets
  if type(buckets) ~= "table" then bad_option("buckets", "a list of numbers", buckets) end
  local log = scope.log
  local reg = core.metrics_registry()

  local warned = {}
  local function warn(name)
    if warned[name] then return end
    warned[name] = true
    log:warn("Metric over its series limit: further label sets are counted in one 'other' series",
      { metric = name, limit = max })
  end

  -- The request metrics are capped per label set by cell() below; the C
  -- cap (one series per outcome) is only the backstop.
  local function family(kind, name, help, labels, b)
    return reg:family(kind, name, help, labels, 3 * max + 3, b)
  end
  local requests = family("counter", "hemera_requests_total",
    "Requests served, by topic, pattern (the action's method string) and outcome (ok, error).",
    { "topic", "pattern", "outcome" })
  local duration = family("histogram", "hemera_request_duration_seconds",
    "Time from a request's arrival to its reply, server side.", { "topic", "pattern" }, buckets)
  local acts = family("counter", "hemera_acts_total",
    "Acts (client requests) finished, by topic, pattern and outcome (ok, error, timeout).",
    { "topic", "pattern", "outcome" })
  local act_duration = family("histogram", "hemera_act_duration_seconds",
    "Time from an act to its reply (or timeout), client side.", { "topic", "pattern" }, buckets)
  local inflight = family("gauge", "hemera_inflight_requests", "Requests being served now.", {}):series()
  local late = family("counter", "hemera_late_replies_total",
    "Replies that came after their act had ended (timed out or cancelled).", {}):series()
  local slow = family("counter", "hemera_slow_consumer_drops_total",
    "Messages the NATS client dropped because a subscription was over its pending limits.", {}):series()
  local reconnects = family("counter", "hemera_nats_reconnects_total", "Reconnections to NATS.", {}):series()
  local heap = family("gauge", "hemera_lua_heap_bytes", "Memory in use by the Lua heap.", {}):series()
  local rss = family("gauge", "process_resident_memory_bytes", "Resident memory size in bytes.", {}):series()
  local cpu = family("counter", "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", {}):series()
  local fds = family("gauge", "process_open_fds", "Number of open file descriptors.", {}):series()
  local start = family("gauge", "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.", {}):series()

  -- {---------------------------------------------- the request path
  -- Series per action (weak: a removed action takes its cell along), per
  -- unmatched topic and per act method, each capped at maxSeries entries
  -- so that a flood of new names cannot grow these tables either.
  local cells = setmetatable({}, { __mode = "k" })
  local topic_cells, ntopic = {}, 0
  local act_cells, nact = {}, 0

  -- A cell: the series of one (topic, pattern) label set, one per outcome
  -- and the histogram. Past maxSeries label sets a metric counts the rest
  -- in one cell labelled topic="other", pattern="other" (outcomes kept).
  local ncells, others = {}, {}
  local function cell(fam_count, hist, topic, pat, outcomes)
    local n = ncells[fam_count] or 0
    if n >= max then
      local o = others[fam_count]
      if o then return o, true end
      topic, pat = "other", "other"
      warn(fam_count == requests and "hemera_requests_total" or "hemera_acts_total")
    end
    ncells[fam_count] = n + 1
    local c = {}
    for k = 1, #outcomes do c[k] = fam_count:series(topic, pat, outcomes[k]) end
    c[#outcomes + 1] = hist:series(topic, pat)
    if n >= max then
      others[fam_count] = c
      return c, true
    end
    return c, false
  end
  local SERVER, CLIENT = { "ok", "error" }, { "ok", "error", "timeout" }

  -- The hooks are C closures (core.metrics_hooks: no Lua runs per
  -- request); these make a label set's cell the first time it is seen.
  local function server_cell(def, ctx)
    if def then
      local p = def.pattern
      local c = cell(requests, duration, p.topic, pattern.method(p), SERVER)
      cells[def] = c
      return c
    end
    local topic = ctx.topic
    local c = topic_cells[topic]
    if c then return c end
    local other
    c, other = cell(requests, duration, topic, "(none)", SERVER)
    if not other and ntopic < max then
      ntopic = ntopic + 1
      topic_cells[topic] = c
    end
    return c
  end
  local function act_cell(method, actx)
    local c, other = cell(acts, act_duration, actx._p.topic, method, CLIENT)
    if not other and nact < max then
      nact = nact + 1
      act_cells[method] = c
    end
    return c
  end
  local on_response, on_act_finished = core.metrics_hooks(cells, server_cell, act_cells, act_cell)
  scope:ext("onResponse", on_response)
  scope:ext("onActFinished", on_act_finished)
  -- }

  -- {---------------------------------------------- read at scrape time
  local seen = { late = 0, slow = 0, reconnects = 0, cpu = 0 }
  local collectors = {}
  local function grow(series, key, now)
    if now > seen[key] then
      series:inc(now - seen[key])
      seen[key] = now
    end
  end
  local function collect()
    inflight:set(i.inflight)
    heap:set(collectgarbage("count") * 1024)
    local conn = i.conn
    if conn and not conn:is_closed() then
      local st = conn:stats()
      grow(late, "late", st.late_replies)
      grow(slow, "slow", st.slow_dropped)
    end
    grow(reconnects, "reconnects", i.reconnects or 0)
    local p = core.process_stats()
    rss:set(p.rss)
    grow(cpu, "cpu", p.cpu)
    fds:set(p.fds)
    start:set(p.start)
    for k = 1, #collectors do collectors[k]() end
  end
  -- }

  local function handler(req)
    local path = req.path
    if path ~= "/metrics" and path ~= "/healthz" then return 404, TEXT, "not found\n" end
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return 405, { ["Content-Type"] = TEXT["Content-Type"], Allow = "GET, HEAD" }, "method not allowed\n"
    end
    if path == "/healthz" then
      if i.closing then return 503, TEXT, "closing\n" end
      if not i.is_ready then return 503, TEXT, "starting\n" end
      return 200, TEXT, "ok\n"
    end
    collect()
    return 200, EXPOSITION, reg:render()
  end

  local server, url = util.serve_http(scope, "hemera.metrics", host, port, opts, handler)
  local api = setmetatable({ _reg = reg, _max = max, _buckets = buckets, _warn = warn, _collect = collect,
                             _collectors = collectors,
                             port = server:port(), host = host }, Registry)
  scope:decorate("metrics", api)
  log:info("Metrics listening", { url = url .. "/metrics" })
end

return {
  name = "hemera-metrics",
  scoped = false,
  options = { listen = "127.0.0.1:9464", maxSeries = 1000, buckets = DEFAULT_BUCKETS },
  register = register,
}
