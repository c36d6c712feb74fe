-- An order-preserving JSON reader for the byte-level fixture specs: keeps
-- every object's keys in text order and every value's raw text, so two
-- payloads can be compared on structure, key order and number formatting
-- rather than on decoded values alone.
--
--   local J = require "interop.json_text"
--   local node = J.parse('{"a":1,"b":[true,null]}')
--   node.t      --> "object"; also "array", "string", "number", "true", "false", "null"
--   node.keys   --> { "a", "b" }           (objects, in text order)
--   node.items  --> { <node a>, <node b> } (objects and arrays)
--   node.raw    --> the exact text of the value
--   node.value  --> the decoded string (strings) / the number text (numbers)
local M = {}

local byte, sub = string.byte, string.sub

local function fail(s, i, what)
  error(("json_text: %s at byte %d near %q"):format(what, i, sub(s, i, i + 20)), 0)
end

local function skip_ws(s, i)
  return (s:find("[^ \t\r\n]", i)) or #s + 1
end

local function utf8_of(cp)
  return utf8.char(cp)
end

local function parse_string(s, i)
  -- s[i] == '"'
  local out, j = {}, i + 1
  while true do
    local c = byte(s, j)
    if c == nil then fail(s, i, "unterminated string") end
    if c == 34 then break end
    if c == 92 then
      local e = sub(s, j + 1, j + 1)
      local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" })[e]
      if simple then
        out[#out + 1] = simple
        j = j + 2
      elseif e == "u" then
        local hex = sub(s, j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then fail(s, j, "bad \\u escape") end
        local cp = tonumber(hex, 16)
        j = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and sub(s, j, j + 1) == "\\u" then
          local lo = tonumber(sub(s, j + 2, j + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            j = j + 6
          end
        end
        out[#out + 1] = utf8_of(cp)
      else
        fail(s, j, "bad escape")
      end
    else
      local k = s:find('["\\]', j)
      if not k then fail(s, i, "unterminated string") end
      out[#out + 1] = sub(s, j, k - 1)
      j = k
    end
  end
  return { t = "string", value = table.concat(out), raw = sub(s, i, j) }, j + 1
end

local parse_value

local function parse_object(s, i)
  local node = { t = "object", keys = {}, items = {} }
  local j = skip_ws(s, i + 1)
  if sub(s, j, j) == "}" then
    node.raw = sub(s, i, j)
    return node, j + 1
  end
  while true do
    if sub(s, j, j) ~= '"' then fail(s, j, "expected a key") end
    local key
    key, j = parse_string(s, j)
    j = skip_ws(s, j)
    if sub(s, j, j) ~= ":" then fail(s, j, "expected ':'") end
    local v
    v, j = parse_value(s, skip_ws(s, j + 1))
    node.keys[#node.keys + 1] = key.value
    node.items[#node.items + 1] = v
    j = skip_ws(s, j)
    local c = sub(s, j, j)
    if c == "}" then
      node.raw = sub(s, i, j)
      return node, j + 1
    end
    if c ~= "," then fail(s, j, "expected ',' or '}'") end
    j = skip_ws(s, j + 1)
  end
end

local function parse_array(s, i)
  local node = { t = "array", items = {} }
  local j = skip_ws(s, i + 1)
  if sub(s, j, j) == "]" then
    node.raw = sub(s, i, j)
    return node, j + 1
  end
  while true do
    local v
    v, j = parse_value(s, j)
    node.items[#node.items + 1] = v
    j = skip_ws(s, j)
    local c = sub(s, j, j)
    if c == "]" then
      node.raw = sub(s, i, j)
      return node, j + 1
    end
    if c ~= "," then fail(s, j, "expected ',' or ']'") end
    j = skip_ws(s, j + 1)
  end
end

function parse_value(s, i)
  i = skip_ws(s, i)
  local c = sub(s, i, i)
  if c == "{" then return parse_object(s, i) end
  if c == "[" then return parse_array(s, i) end
  if c == '"' then return parse_string(s, i) end
  for _, lit in ipairs { "true", "false", "null" } do
    if sub(s, i, i + #lit - 1) == lit then
      return { t = lit, raw = lit }, i + #lit
    end
  end
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if num and num ~= "" and num ~= "-" then
    return { t = "number", value = num, raw = num }, i + #num
  end
  fail(s, i, "unexpected character")
end

function M.parse(s)
  local node, j = parse_value(s, 1)
  j = skip_ws(s, j)
  if j <= #s then fail(s, j, "trailing text") end
  return node
end

-- The child of an object node by key (nil when absent).
function M.get(node, key)
  if not node or node.t ~= "object" then return nil end
  for i, k in ipairs(node.keys) do
    if k == key then return node.items[i] end
  end
  return nil
end

-- Follows a dotted path of keys ("pattern.v"); array indexes are numbers.
function M.at(node, path)
  for part in path:gmatch("[^.]+") do
    if node == nil then return nil end
    if node.t == "array" then
      node = node.items[tonumber(part)]
    else
      node = M.get(node, part)
    end
  end
  return node
end

return M
