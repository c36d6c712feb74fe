---@meta hemera.stats
-- hemera-stats' actions (docs/api.md).

---@class Hemera.StatsPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
---@param opts? table
function M.register(hemera, opts) end

return M
