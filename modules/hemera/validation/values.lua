-- hemera.validation.values: helpers on Lua values as JSON sees them, shared by
-- validation.schema and validation.jsonschema.
local core = require "hemera.core"

local M = {}

local ARRAY_MT = core.array_mt
local ESCAPES = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
local math_type = math.type

-- The shape of a table as JSON sees it: "array" (marked with core.array, or a
-- non-empty sequence), "object", or "empty" (a plain {}, which is either).
function M.shape(t)
  local mt = getmetatable(t)
  if mt == ARRAY_MT then return "array" end
  if next(t) == nil then return mt == nil and "empty" or "object" end
  local n = mt == nil and rawlen(t) or 0
  if n == 0 then return "object" end
  local count = 0
  for k in next, t do
    if math_type(k) ~= "integer" or k < 1 or k > n then return "object" end
    count = count + 1
  end
  return count == n and "array" or "object"
end

-- The length of an array: for a core.array table its largest positive integer
-- key (holes are JSON nulls, as the encoder sees them), else #t.
function M.array_length(t)
  if getmetatable(t) ~= ARRAY_MT then return rawlen(t) end
  local n = 0
  for k in next, t do
    if math_type(k) == "integer" and k > n then n = k end
  end
  return n
end

function M.count_keys(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  return n
end

-- A deep copy of a default value, so two validations never share a table.
function M.deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in next, v do out[k] = M.deep_copy(x) end
  return setmetatable(out, getmetatable(v))
end

function M.finite(v)
  -- x - x is 0 for every finite number, NaN for NaN and the infinities.
  return type(v) == "number" and v - v == 0
end

-- A string in double quotes, escaped, cut to about 60 characters.
function M.quote(s)
  if #s > 60 then
    local cut = 57 -- back to a UTF-8 character boundary
    while cut > 0 and (s:byte(cut + 1) & 0xC0) == 0x80 do cut = cut - 1 end
    s = s:sub(1, cut) .. "..."
  end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\%03d"):format(c:byte())
  end) .. '"'
end

function M.plural(n, unit)
  return ("%d %s%s"):format(n, unit, n == 1 and "" or "s")
end

-- A path is a chain of nodes {up = parent, key = k}; nil is the root. It is
-- only turned into text when an error is reported.
function M.child(node, key)
  return { up = node, key = key }
end

function M.segments(node)
  local segs = {}
  while node do
    table.insert(segs, 1, node.key)
    node = node.up
  end
  return segs
end

return M
