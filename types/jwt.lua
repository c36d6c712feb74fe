---@meta hemera.jwt
-- hemera-jwt-auth: JWT authentication plugin.

---@class Hemera.JwtPlugin: Hemera.Plugin
---@field JwtError Hemera.ErrorClass
---@field JsonWebTokenError Hemera.ErrorClass
---@field TokenExpiredError Hemera.ErrorClass
---@field NotBeforeError Hemera.ErrorClass
local M = {}
---@param hemera Hemera
---@param opts table see docs/api.md "JWT authentication"
function M.register(hemera, opts) end
--- The verification alone, for tokens that do not come in `meta`.
---@param opts table
---@return fun(token: string, now?: number): (table?, any, table?) verify, table config
function M.verifier(opts) end

return M
