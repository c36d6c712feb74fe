-- Shared by the specs: run a test body as a Hemera coroutine against the
-- nats-server the test run started (HEMERA_NATS_URL), with a watchdog.
local Hemera = require "hemera"
local core = require "hemera.core"

local M = {}

M.url = os.getenv("HEMERA_NATS_URL")
assert(M.url and M.url ~= "", "HEMERA_NATS_URL is not set: run the specs through 'make test'")

-- A Hemera instance on the test server; options merged in.
function M.new(opts)
  opts = opts or {}
  if opts.servers == nil then opts.servers = M.url end
  return Hemera.new(opts)
end

-- Runs body() in a Hemera coroutine and the loop until it returns and every
-- instance it opened is closed. Fails when body raises or does not finish
-- within `limit_ms` (default 20 s).
function M.run(body, limit_ms)
  local done = core.future()
  local failure
  Hemera.spawn(function()
    local ok, err = xpcall(body, debug.traceback)
    done:set(ok, err)
  end)
  Hemera.spawn(function()
    local ok, err = done:wait(limit_ms or 20000)
    if ok == nil and err == "timeout" then
      failure = "test did not finish within " .. (limit_ms or 20000) .. " ms"
    elseif not ok then
      failure = err
    end
    Hemera.closeAll()
  end)
  Hemera.run()
  if failure then error(failure, 0) end
end

-- Unique topic names keep specs independent on one server.
local n = 0
function M.topic(base)
  n = n + 1
  return ("%s.%s.%d"):format(base or "spec", core.nuid(), n)
end

M.future = core.future

return M
