---@meta hemera.metrics
-- Prometheus metrics (docs/api.md).

---@class Hemera.MetricsPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
---@param opts? table
function M.register(hemera, opts) end

return M
