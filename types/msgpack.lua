---@meta hemera.msgpack
-- hemera-msgpack: MessagePack on the wire, and the codec alone.

---@class Hemera.MsgpackPlugin: Hemera.Plugin
local M = {}
---@param hemera Hemera
function M.register(hemera) end
---@param v any
---@return string? bytes, string? err
function M.encode(v) end
---@param bytes string
---@return any value, string? err
function M.decode(bytes) end

return M
