-- hemera.util: small helpers shared by the library's parts.
local core = require "hemera.core"
local errors = require "hemera.errors"

local M = {}

local array_mt = core.array_mt
local traceback = debug.traceback

function M.copy(t)
  local o = {}
  if t then for k, v in pairs(t) do o[k] = v end end
  return o
end

-- The table itself when it is a JSON object (not an array), else nil.
function M.obj(v)
  return type(v) == "table" and getmetatable(v) ~= array_mt and v or nil
end

local CAPTURED = {}

local getinfo = debug.getinfo

-- The position Lua put in front of a raised string ("file.lua:12"), found
-- by asking the functions that can have raised it (the failing one, or the
-- caller of error() up to level 2); nil when the text merely looks like one.
local function position(e)
  if type(e) ~= "string" then return nil end
  for level = 3, 5 do
    local info = getinfo(level, "Sl")
    if not info then return nil end
    if info.currentline and info.currentline > 0 then
      local where = info.short_src .. ":" .. info.currentline
      if e:sub(1, #where + 2) == where .. ": " then return where end
    end
  end
  return nil
end

-- xpcall message handler: keeps the error value, the traceback of the
-- coroutine where it was raised, and the position Lua prefixed it with.
function M.capture(e)
  return setmetatable({ err = e, trace = traceback(type(e) == "string" and e or nil, 2),
                        where = position(e) }, CAPTURED)
end

-- The error value of a failed xpcall(fn, M.capture, ...) that gave ok, r,
-- e: a raise (ok false), or a `nil, err` / `false, err` return.
function M.failure(ok, r, e)
  if not ok then
    -- Lua runs no message handler for a memory error (nor when the handler
    -- itself failed): r is then the bare error, "not enough memory".
    if getmetatable(r) ~= CAPTURED then return errors.from_value(r) end
    return errors.from_value(r.err, r.trace, r.where)
  end
  return errors.from_value(e)
end

-- Calls fn(...) protected. Returns ok, r1, r2: a raise, or a `nil, err`
-- (or `false, err`) return, becomes ok = false and an error value in r1.
function M.call(fn, ...)
  local ok, r, e = xpcall(fn, M.capture, ...)
  if not ok or ((r == nil or r == false) and e ~= nil) then return false, M.failure(ok, r, e) end
  return true, r, e
end

-- Runs hooks in order; the first failure stops the chain and is returned.
function M.run_hooks(list, ...)
  local n = list and #list or 0
  for k = 1, n do
    -- M.call inlined: hooks run for every request.
    local ok, r, e = xpcall(list[k], M.capture, ...)
    if not ok or ((r == nil or r == false) and e ~= nil) then return M.failure(ok, r, e) end
  end
  return nil
end

-- The error of a failed codec call (pcall(codec, x) gave ok, v, err): a
-- custom codec's own error value goes on as it is, as Node Hemera passes
-- the raw codec error; anything else becomes a HemeraParseError whose
-- message starts with `what`.
function M.codec_error(what, ok, v, err)
  local e = not ok and v or err
  if errors.is_error(e) then return e end
  return errors.ParseError(what .. ": " .. tostring(e or "no value"))
end

-- Calls a codec with x. The built-in codec never raises on bad data, so
-- it skips pcall; a custom one is protected. Returns ok, value, err.
function M.codec_call(fn, builtin, x)
  if fn == builtin then return true, fn(x) end
  return pcall(fn, x)
end

-- What a decoded value is, in JSON's words, for error messages.
function M.json_type(v)
  if v == nil then return "nothing" end
  if v == core.null then return "null" end
  if type(v) == "table" then
    return getmetatable(v) == array_mt and "an array" or "an object"
  end
  if type(v) == "number" then return "a number" end
  if type(v) == "string" then return "a string" end
  if type(v) == "boolean" then return "a boolean" end
  return type(v)
end

-- The metatable of a lazy context that inherits from `scope`, made once per
-- scope and kind (`slot` names it; contexts are made for every message and
-- act): a missing key with a builder gets builders[key](ctx, scope), kept
-- in the context; any other key is the scope's (core.lazy_index).
function M.lazy(scope, slot, builders)
  local mt = rawget(scope, slot)
  if not mt then
    mt = { __index = core.lazy_index(scope, builders) }
    rawset(scope, slot, mt)
  end
  return mt
end

-- One served message less (a handler, a durable delivery, an HTTP request
-- of hemera.web): the last one wakes close, which waits for none to run.
function M.served(i)
  i.inflight = i.inflight - 1
  if i.inflight == 0 and i.on_drained then
    local f = i.on_drained
    i.on_drained = nil
    f()
  end
end

-- "host:port" or "[v6]:port" (numeric host; "" means 127.0.0.1) -> host,
-- port; nil when s is not one.
function M.parse_listen(s)
  if type(s) ~= "string" then return nil end
  local host, port = s:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port > 65535 then return nil end
  if host == "" then host = "127.0.0.1" end
  return host, math.tointeger(port)
end

-- A plugin's HTTP server (core.http_listen) on host:port with the limits
-- in opts.http, closed by the instance's close. Returns the server and its
-- base URL; raises a HemeraError naming the plugin when it cannot listen.
function M.serve_http(scope, plugin, host, port, opts, handler)
  local http = M.copy(opts.http)
  http.host, http.port = host, port
  local server, err = core.http_listen(http, handler)
  if not server then
    error(errors.HemeraError(plugin .. ": " .. tostring(err), { listen = opts.listen }), 0)
  end
  scope:ext("onClose", function() server:close() end)
  return server, ("http://%s:%d"):format(host:find(":") and "[" .. host .. "]" or host, server:port())
end

return M
