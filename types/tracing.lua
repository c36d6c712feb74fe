---@meta hemera.tracing
-- Spans per act and per request served, exported as OTLP/HTTP JSON and/or
-- Zipkin v2 JSON, and the W3C trace context over NATS headers.

---@class Hemera.TracingOptions
---@field otlp? string OTLP/HTTP JSON endpoint, http://HOST:PORT/PATH
---@field zipkin? string Zipkin v2 JSON endpoint
---@field sampler? "ratio"|"always"|"never"
---@field ratio? number default 0.1
---@field parentBased? boolean default true
---@field maxQueue? integer default 2048
---@field batchSize? integer default 512
---@field interval? integer ms, default 1000
---@field timeout? integer ms, default 5000
---@field maxBackoff? integer ms, default 30000

---@class Hemera.TracingPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
---@param opts Hemera.TracingOptions
function M.register(hemera, opts) end
--- A W3C `traceparent` header: trace id, span id, sampled; nil when invalid.
---@param tp string
---@return string? trace_id, string? span_id, boolean? sampled
function M.parse_traceparent(tp) end

return M
