---@meta hemera.web
-- hemera-web, an HTTP gateway (docs/api.md).

---@class Hemera.WebPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
---@param opts? table
function M.register(hemera, opts) end

return M
