-- hemera.errors: error values, Hemera's error classes, and their wire form
-- (errio-style: name, message, stack, then every other field).
--
-- An error is a table with `name`, `message` and any other fields (`code`,
-- `hops`, ...) whose metatable is its class. `tostring(err)` reads
-- "Name: message". `Class:is(err)` tests the class (subclasses included).

local core = require "hemera.core"

local M = {}

local registry = {} -- name -> class

-- The wire order of an error's first keys.
local ERROR_ORDER = { "name", "message", "stack" }

local Base = {}
Base.__index = Base
Base.__name = "Error"
Base.__jsonorder = ERROR_ORDER
Base.name = "Error"

function Base.__tostring(e)
  local s = tostring(rawget(e, "name") or e.name)
  local msg = rawget(e, "message")
  if msg ~= nil and msg ~= "" then s = s .. ": " .. tostring(msg) end
  if rawget(e, "code") ~= nil then s = s .. " (code " .. tostring(e.code) .. ")" end
  return s
end

-- Class(message [, fields]) or Class(fields): a new error of this class.
local function construct(class, message, fields)
  if type(message) == "table" and fields == nil then
    message, fields = message.message, message
  end
  local e = {}
  if fields then
    for k, v in pairs(fields) do e[k] = v end
  end
  e.name = rawget(class, "name")
  e.message = message ~= nil and tostring(message) or ""
  return setmetatable(e, class)
end

function Base:is(err)
  local mt = type(err) == "table" and getmetatable(err)
  while mt do
    if mt == self then return true end
    mt = rawget(mt, "__parent")
  end
  return false
end

-- A subclass `name` of `parent` (the base Error when nil), registered so
-- errors of that name coming off the wire are rebuilt as this class.
function M.class(name, parent)
  assert(type(name) == "string", "Error name must be a string")
  parent = parent or Base
  local class = {
    name = name,
    __name = name,
    __parent = parent,
    __tostring = Base.__tostring,
    __jsonorder = ERROR_ORDER,
    is = Base.is,
  }
  class.__index = class
  setmetatable(class, { __index = parent, __call = construct })
  registry[name] = class
  return class
end

setmetatable(Base, { __call = construct })
registry.Error = Base
M.Error = Base

M.HemeraError = M.class("HemeraError")
-- Hemera's ParseError travels under the name HemeraParseError.
M.ParseError = M.class("HemeraParseError", M.HemeraError)
M.TimeoutError = M.class("TimeoutError", M.HemeraError)
M.ResponseError = M.class("ResponseError", M.HemeraError)
M.PatternNotFound = M.class("PatternNotFound", M.HemeraError)
M.MaxRecursionError = M.class("MaxRecursionError", M.HemeraError)
M.ProcessLoadError = M.class("ProcessLoadError", M.HemeraError)
M.HandlerBudgetError = M.class("HandlerBudgetError", M.HemeraError)

function M.is_error(v)
  local mt = type(v) == "table" and getmetatable(v)
  while mt do
    if mt == Base then return true end
    mt = rawget(mt, "__parent")
  end
  return false
end

-- Turns whatever a handler returned or raised as its error into an error
-- value. Anything at all becomes an error: a string, a plain table with a
-- name and a message, or even a number. `trace` is a traceback string for
-- the stack field when the value carries none; `where` the script
-- position a raised string starts with.
function M.from_value(v, trace, where)
  local e
  if M.is_error(v) then
    e = v
  elseif type(v) == "table" then
    local class = registry[v.name] or Base
    e = construct(class, v.message, v)
    if v.name ~= nil then e.name = tostring(v.name) end
  else
    e = construct(Base, v == nil and "unknown error" or tostring(v))
    -- A string raised by error() starts with the raiser's chunk and line
    -- (`where`, found by util.capture): kept for the local log, left out
    -- on the wire (see to_wire).
    if where and type(v) == "string" then e._where = where end
  end
  if rawget(e, "stack") == nil then
    e.stack = tostring(e) .. (trace and ("\n" .. trace) or "")
  end
  return e
end

-- Rebuilds an error decoded from the wire: registered names become their
-- class; unknown names stay a generic error that keeps every field.
function M.from_wire(obj)
  if type(obj) ~= "table" then
    return construct(Base, tostring(obj))
  end
  local class = registry[obj.name] or Base
  local e = {}
  for k, v in pairs(obj) do e[k] = v end
  if e.name == nil then e.name = "Error" end
  if e.message == nil then e.message = "" end
  return setmetatable(e, class)
end

-- The root cause goes on the wire (Hemera sends rootCause or cause).
function M.root(e)
  local r = rawget(e, "rootCause") or rawget(e, "cause")
  if type(r) == "table" then return M.from_value(r) end
  return e
end

-- A copy of the error as a plain object for the encoder (functions and
-- private fields left out), with the hop appended. Unless `stack` is true
-- (errio.stack), the stack stays home and so does the script position a
-- raised string starts with: a remote caller learns what failed, not the
-- service's file layout.
function M.to_wire(e, hop, stack)
  -- errio's order: name, message, stack, the other fields, and hops last
  -- (Node appends it to an error that already has its fields).
  local order = { "name", "message", "stack" }
  local out = setmetatable({}, { __jsonorder = order })
  local others = {}
  for k, v in pairs(e) do
    if type(k) == "string" and type(v) ~= "function" and type(v) ~= "thread"
       and type(v) ~= "userdata" and k:sub(1, 1) ~= "_" and k:sub(-1) ~= "_" then
      out[k] = v
      if k ~= "name" and k ~= "message" and k ~= "stack" and k ~= "hops" then
        others[#others + 1] = k
      end
    end
  end
  table.sort(others)
  for _, k in ipairs(others) do order[#order + 1] = k end
  order[#order + 1] = "hops"
  out.name = e.name
  out.message = e.message
  if not stack then
    out.stack = nil
    local where = rawget(e, "_where")
    local msg = out.message
    if where and type(msg) == "string" and msg:sub(1, #where + 2) == where .. ": " then
      out.message = msg:sub(#where + 3)
    end
  end
  if hop then
    local hops = {}
    if type(e.hops) == "table" then
      for i, h in ipairs(e.hops) do hops[i] = h end
    end
    hops[#hops + 1] = hop
    out.hops = core.array(hops)
  end
  return out
end

M.registry = registry

return M
