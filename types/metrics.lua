---@meta hemera.metrics
-- Prometheus metrics: `/metrics` and `/healthz`, and user metrics through
-- `hemera.metrics` (the decoration) and `ctx.metrics`.

---@class Hemera.Metric
local Metric = {}
--- Counters and gauges; a counter refuses a negative `n`.
---@param n? number default 1
---@param labels? table<string, string>
function Metric:inc(n, labels) end
--- The metric with these label values, in the declared order.
---@param ... string
---@return Hemera.Metric
function Metric:labels(...) end
--- Gauges.
---@param v number
---@param labels? table<string, string>
function Metric:set(v, labels) end
--- Gauges.
---@param n number
---@param labels? table<string, string>
function Metric:add(n, labels) end
--- Histograms, in seconds.
---@param v number
---@param labels? table<string, string>
function Metric:observe(v, labels) end

---@class Hemera.MetricsRegistry
---@field port integer the port /metrics listens on
local Registry = {}
---@param name string
---@param help string
---@param labels? string[]
---@return Hemera.Metric
function Registry:counter(name, help, labels) end
---@param name string
---@param help string
---@param labels? string[]
---@return Hemera.Metric
function Registry:gauge(name, help, labels) end
---@param name string
---@param help string
---@param labels? string[]
---@param buckets? number[] upper bounds, seconds
---@return Hemera.Metric
function Registry:histogram(name, help, labels, buckets) end
--- `fn()` runs before each scrape.
---@param fn fun()
function Registry:collector(fn) end
--- The exposition text as a scrape would see it.
---@return string
function Registry:render() end

---@class Hemera.MetricsPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
---@param opts? {listen?: string, maxSeries?: integer, buckets?: number[], http?: table}
function M.register(hemera, opts) end

return M
