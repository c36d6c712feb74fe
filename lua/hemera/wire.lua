-- hemera.wire: the envelope shapes of Hemera v7, key order included.
local core = require "hemera.core"

local M = {}

-- Key orders on the wire, as Node Hemera writes them.
M.TRACE_MT = { __jsonorder = { "spanId", "traceId", "parentSpanId", "timestamp", "service", "method" } }
M.REQINFO_MT = { __jsonorder = { "id", "type", "service", "method" } }
-- An instance's own request$ before any request: Node writes {type, id}.
M.ROOT_REQINFO_MT = { __jsonorder = { "type", "id" } }
M.REQUEST_MT = { __jsonorder = { "pattern", "meta", "delegate", "trace", "request" } }
M.REPLY_MT = { __jsonorder = { "meta", "trace", "request", "result", "error" } }
M.HOP_MT = { __jsonorder = { "service", "method", "app", "ts" } }

-- The hop a server appends to an error it sends on.
function M.hop(app, trace, topic)
  -- Fields the request's trace lacks stay out, as they do in Node's hops.
  return setmetatable({ service = trace.service, method = trace.method,
                        app = app, ts = core.hrtime() }, M.HOP_MT)
end

-- A reply envelope. `err`: the error member (errors.to_wire), which wins
-- over `result`.
function M.reply(meta, trace, request, result, err)
  local out = setmetatable({ meta = meta or {}, trace = trace or {}, request = request or {} }, M.REPLY_MT)
  if err ~= nil then
    out.result = core.null
    out.error = err
  else
    out.result = result
    out.error = core.null
  end
  return out
end

-- The reply of last resort: built from the request id the message came
-- with and a fresh error, nothing a handler could have touched, so that
-- it encodes, fits any max_payload and the caller hears back (invariant 2:
-- every request is answered).
function M.last_resort(id, rtype, name, message)
  return core.encode(setmetatable({
    meta = {}, trace = {},
    request = setmetatable({ id = id, type = rtype }, M.REQINFO_MT),
    result = core.null,
    error = setmetatable({ name = name, message = message }, { __jsonorder = { "name", "message" } }),
  }, M.REPLY_MT))
end

return M
