-- jsproc: a private nats-server with JetStream and a temporary store, for
-- the durable specs (the shared test server runs without -js).
--
--   local srv = jsproc.start()   -- a hemera.testing server; srv.store is its store
--   jsproc.stop_all()            -- every server stopped, stores removed
local testing = require "hemera.testing"

local M = {}

local stores = {}

function M.start(opts)
  opts = opts or {}
  local p = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-js.XXXXXX\""))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "jsproc: mktemp -d failed")
  stores[#stores + 1] = dir
  local srv = testing.start_server { name = opts.name or "js", args = "-js -sd '" .. dir .. "'", config = opts.config }
  srv.store = dir
  return srv
end

function M.stop_all()
  testing.stop_all()
  for _, d in ipairs(stores) do os.execute("rm -rf '" .. d .. "'") end
  stores = {}
end

return M
