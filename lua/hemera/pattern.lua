-- hemera.pattern: patterns as Hemera reads them.
--
-- * String patterns in tinysonic syntax ("topic:math,cmd:add,a:1").
-- * `$` options: Hemera spells them `timeout$`; in Lua tables write
--   `["timeout$"] = 200` or the identifier form `timeout_ = 200` (only for
--   Hemera's own option names, listed in OPTIONS).
-- * The wire pattern (every `$` key removed), the routing pattern (scalars
--   only), the schema (table values) and the `trace.method` string.

local core = require "hemera.core"

local M = {}

-- Hemera's `$` options, all of which accept the `name_` spelling.
M.OPTIONS = {
  timeout = true, pubsub = true, maxMessages = true, expectedMessages = true,
  meta = true, delegate = true, trace = true, context = true, requestId = true,
  queue = true,
}

local regex_mt = core.regex_mt

-- {==================================================================
-- tinysonic
-- ===================================================================

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function scalar(s)
  s = trim(s)
  if s == "true" then return true end
  if s == "false" then return false end
  -- null is JSON null (a stored null never matches, spec section 2);
  -- undefined is no value at all (the key stays out).
  if s == "null" then return core.null end
  if s == "undefined" then return nil end
  if s:match("^[-+]?%d+%.?%d*[eE]?[-+]?%d*$") or s:match("^[-+]?%.%d+$") then
    local n = math.tointeger(tonumber(s)) or tonumber(s)
    if n ~= nil then return n end
  end
  return s
end

-- Parses "k:v,k:{k:v},..." from position i; returns the table and the
-- position after it.
local function parse_object(s, i, nested)
  -- The keys keep the order they were written in on the wire.
  local order = {}
  local t = setmetatable({}, { __jsonorder = order })
  local n = #s
  while i <= n do
    local colon = s:find(":", i, true)
    if not colon then
      local rest = trim(s:sub(i))
      if rest == "" or (nested and rest == "}") then break end
      error(("invalid pattern string %q: expected ':' after %q"):format(s, rest), 0)
    end
    local key = trim(s:sub(i, colon - 1))
    if key == "" then
      error(("invalid pattern string %q: empty key at byte %d"):format(s, i), 0)
    end
    local j = colon + 1
    while s:sub(j, j):match("%s") do j = j + 1 end
    local value
    if s:sub(j, j) == "{" then
      value, j = parse_object(s, j + 1, true)
      while s:sub(j, j):match("%s") do j = j + 1 end
    else
      local stop = j
      while stop <= n do
        local ch = s:sub(stop, stop)
        if ch == "," or (nested and ch == "}") then break end
        stop = stop + 1
      end
      value = scalar(s:sub(j, stop - 1))
      j = stop
    end
    if t[key] == nil then order[#order + 1] = key end
    t[key] = value
    local ch = s:sub(j, j)
    if ch == "," then
      i = j + 1
    elseif ch == "}" and nested then
      return t, j + 1
    elseif j > n then
      i = j
    else
      error(("invalid pattern string %q: unexpected %q at byte %d"):format(s, ch, j), 0)
    end
  end
  if nested then
    error(("invalid pattern string %q: missing '}'"):format(s), 0)
  end
  return t, i
end

function M.parse(s)
  return (parse_object(s, 1, false))
end

-- }==================================================================

-- A fresh table from a pattern (string or table), `name_` options renamed
-- to `name$`. The caller's table is never changed.
local ALIASES = {}
for name in pairs(M.OPTIONS) do ALIASES[name .. "_"] = name .. "$" end

local key_ends = core.key_ends

-- p with its `name_` options renamed, or p itself when it has none.
local function rename(p)
  local has = false
  for k in pairs(p) do
    if ALIASES[k] then has = true break end
  end
  if not has then return p end
  local out = {}
  for k, v in pairs(p) do out[ALIASES[k] or k] = v end
  return out
end

-- A pattern table with `name_` options renamed to `name$`. The caller's
-- table is never changed: it is copied only when it has such options.
function M.normalize(p)
  if type(p) == "string" then return M.parse(p) end
  if not key_ends(p, "_") then return p end
  return rename(p)
end

-- normalize(p) and its method string, for an act: core.method reads the
-- keys once for the method and for whether any of them ends in "_".
function M.normalize_act(p)
  if type(p) == "string" then
    p = M.parse(p)
    return p, type(p) == "table" and core.method(p) or nil
  end
  local method, underscored = core.method(p, "_")
  if underscored then
    local q = rename(p)
    if q ~= p then return q, core.method(q) end
  end
  return p, method
end

local DOLLAR = ("$"):byte()

local function is_special(k)
  return type(k) == "string" and k:byte(-1) == DOLLAR
end

-- The pattern without `$` keys and functions: what goes on the wire (the
-- table itself when it has none).
function M.clean(p)
  local dirty = false
  for k, v in pairs(p) do
    if is_special(k) or type(v) == "function" then dirty = true break end
  end
  if not dirty then return p end
  -- Same metatable: a parsed string pattern keeps its key order.
  local out = setmetatable({}, getmetatable(p))
  for k, v in pairs(p) do
    if not is_special(k) and type(v) ~= "function" then out[k] = v end
  end
  return out
end

-- Hemera's Util.pattern: scalar pairs as "key:value" with JavaScript's
-- String(), sorted, joined by "," (in C: it runs for every act).
M.method = core.method

-- The routing pattern of an add: keys not ending in `$` whose values are
-- scalars or regexes (Hemera's Util.cleanPattern).
function M.routing(p)
  local out = {}
  for k, v in pairs(p) do
    local t = type(v)
    if not is_special(k) and t ~= "function" and (t ~= "table" or getmetatable(v) == regex_mt) then
      out[k] = v
    end
  end
  return out
end

-- p without its null-valued keys (a copy only when it has one). Hemera's
-- cleanPattern leaves them out of an added pattern (typeof null is
-- "object" in JavaScript), so `add{..., d = Hemera.null}` puts no
-- condition on d.
function M.without_nulls(p)
  local out
  for k, v in pairs(p) do
    if v == core.null then
      if not out then
        out = {}
        for k2, v2 in pairs(p) do out[k2] = v2 end
      end
      out[k] = nil
    end
  end
  return out or p
end

-- Object-valued keys (schemas, `auth$`, ...) of an add pattern.
function M.schema(p)
  local out = {}
  for k, v in pairs(p) do
    if type(v) == "table" and getmetatable(v) ~= regex_mt then out[k] = v end
  end
  return out
end

function M.regex(source)
  assert(type(source) == "string", "regex source must be a string")
  return core.regex(source)
end

return M
