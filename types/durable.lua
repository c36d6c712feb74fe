---@meta hemera.durable
-- The public part of hemera.durable: the rest backs `durable$` acts and adds.

---@class Hemera.Durable
local M = {}
--- Counters: acked, nacked, terminated, ack_unconfirmed, ack_late, progress,
--- redelivered, lost_pulls, published, duplicates, retries.
---@param hemera Hemera
---@return table<string, integer>
function M.stats(hemera) end

return M
