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

-- xpcall message handler: keeps the error value and the traceback of the
-- coroutine where it was raised.
function M.capture(e)
  return { err = e, trace = traceback(type(e) == "string" and e or nil, 2) }
end

-- Calls fn(...) protected. Returns ok, r1, r2: a raise, or a `nil, err`
-- (or `false, err`) return, becomes ok = false and an error value in r1.
function M.call(fn, ...)
  local ok, r, e = xpcall(fn, M.capture, ...)
  if not ok then return false, errors.from_value(r.err, r.trace) end
  if (r == nil or r == false) and e ~= nil then return false, errors.from_value(e) end
  return true, r, e
end

-- Runs hooks in order; the first failure stops the chain and is returned.
function M.run_hooks(list, ...)
  local n = list and #list or 0
  if n == 0 then return nil end
  for k = 1, n do
    local ok, err = M.call(list[k], ...)
    if not ok then return err end
  end
  return nil
end

-- Runs every hook, logging failures instead of stopping (onError,
-- onResponse, onClose collect their errors).
function M.run_all(list, on_error, ...)
  if not list then return end
  for k = 1, #list do
    local ok, err = M.call(list[k], ...)
    if not ok then on_error(err) end
  end
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

-- The metatable that makes a context inherit from `scope`, made once per
-- scope (contexts are made for every message and act).
function M.inherit(scope)
  local mt = rawget(scope, "_inherit")
  if not mt then
    mt = { __index = scope }
    rawset(scope, "_inherit", mt)
  end
  return mt
end

return M
