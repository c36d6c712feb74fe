--- Joi-style payload schemas for Hemera, written the Lua way.
--
-- The Lua counterpart of hemera-joi. Build a schema with a constructor, refine
-- it with chainable rules, then validate:
--
--     local S = require "hemera.validation.schema"
--     local check = S.compile {
--       a = S.number():required(),
--       b = S.number():min(0):default(0),
--       tags = S.array(S.string():pattern("^%l+$")):max(3),
--     }
--     local req, err = check { a = 1 }   --> { a = 1, b = 0 }, nil
--
-- Every rule returns a new schema: a schema is never changed once built, so
-- `local id = S.integer():min(1)` can be shared and refined freely.
--
-- Validation returns a new value (defaults applied, coerced) or `nil, err`;
-- the input is never modified. `err` is a `ValidationError` whose message
-- names the field, the rule, the value given and the limit, e.g.
-- `"a" must be >= 0 (rule min, got -1)`, and whose fields are `field`
-- (the path as text), `path` (its segments), `rule`, `value` and `limit`.
-- Paths read like Lua: `items[2].name` (array indices count from 1); the
-- whole value is called `value`. Validation stops at the first error, and
-- the fields of a table are checked in sorted key order, so the error
-- reported for a given input is always the same.
--
-- Schema mistakes (a rule that does not apply, a malformed pattern) raise a
-- `HemeraError` when the schema is built, never at validation time.
--
-- @module hemera.validation.schema

local core = require "hemera.core"
local errors = require "hemera.errors"
local values = require "hemera.validation.values"
local core_copy = core.copy
local shape, array_length, count_keys, deep_copy, finite, quote, plural, child, segments = values.shape, values.array_length, values.count_keys, values.deep_copy, values.finite, values.quote, values.plural, values.child, values.segments

local M = {}

--- The error class of failed validations (shared with `validation.jsonschema`
-- and with `Hemera.createError("ValidationError")`).
M.ValidationError = errors.registry.ValidationError or errors.class("ValidationError")
local ValidationError = M.ValidationError

--- JSON null (`core.null`), for `:allow(S.null)` and `:valid(S.null)`.
M.null = core.null

local NULL = core.null
local ARRAY_MT = core.array_mt
local math_type, utf8_len = math.type, utf8.len

-- Raises a schema-definition error (a programming mistake, not bad data).
local function usage(fmt, ...)
  error(errors.HemeraError("hemera.validation.schema: " .. fmt:format(...)), 2)
end

------------------------------------------------------------------------------
-- Values
------------------------------------------------------------------------------








-- A short human rendering of any value, for messages.
local function show(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if v == NULL then return "null" end
  if t == "table" then
    local sh = shape(v)
    if sh == "array" then return "an array of " .. plural(array_length(v), "item") end
    return sh == "empty" and "an empty table" or "a table"
  end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return "a " .. t
end

local function list_text(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = show(v) end
  return table.concat(parts, ", ")
end

local function contains(list, v)
  for i = 1, #list do
    if list[i] == v then return true end
  end
  return false
end

-- Orders table keys of mixed types: by type name, then by value.
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, key_less)
  return keys
end

------------------------------------------------------------------------------
-- Paths and errors
------------------------------------------------------------------------------



-- "items[2].name", prefixed by the label; the root is the label or "value".
local function path_text(segs, label)
  local s = label or ""
  for _, k in ipairs(segs) do
    if math_type(k) == "integer" then
      s = s .. "[" .. k .. "]"
    elseif type(k) == "string" and k:match("^[%a_][%w_]*%$?$") then
      s = (s == "" and k) or (s .. "." .. k)
    else
      s = s .. "[" .. (type(k) == "string" and quote(k) or tostring(k)) .. "]"
    end
  end
  return s == "" and "value" or s
end

-- A ValidationError for the value at `node`.
local function fail(ctx, node, rule, text, value, limit)
  local segs = segments(node)
  local field = path_text(segs, ctx.label)
  return ValidationError(('"%s" %s (rule %s, got %s)'):format(field, text, rule, show(value)), {
    field = field,
    path = core.array(segs),
    rule = rule,
    value = value,
    limit = limit,
  })
end

------------------------------------------------------------------------------
-- Lua patterns
------------------------------------------------------------------------------

-- The index of the ']' closing the set that opens at p[i] (Lua's classEnd).
local function set_end(p, i)
  local j = i + 1
  if p:sub(j, j) == "^" then j = j + 1 end
  repeat
    if j > #p then return nil end
    local c = p:sub(j, j)
    j = j + 1
    if c == "%" then
      if j > #p then return nil end
      j = j + 1
    end
  until p:sub(j, j) == "]"
  return j
end

-- Why `p` is not a valid Lua pattern, or nil when it is. string.find only
-- reports a malformed pattern when the matcher reaches the bad part, so the
-- whole pattern is checked once, when the schema is built.
local function pattern_problem(p)
  local i, n, open, closed = 1, #p, 0, 0
  if p:sub(1, 1) == "^" then i = 2 end
  while i <= n do
    local c = p:sub(i, i)
    if c == "%" then
      local d = p:sub(i + 1, i + 1)
      if d == "" then return "ends with '%'" end
      if d == "b" then
        if i + 3 > n then return "missing arguments to '%b'" end
        i = i + 4
      elseif d == "f" then
        if p:sub(i + 2, i + 2) ~= "[" then return "missing '[' after '%f' in pattern" end
        local j = set_end(p, i + 2)
        if not j then return "malformed set (missing ']')" end
        i = j + 1
      elseif d:match("%d") then
        local k = tonumber(d)
        if k == 0 or k > closed then return "invalid capture index %" .. d end
        i = i + 2
      else
        i = i + 2
      end
    elseif c == "[" then
      local j = set_end(p, i)
      if not j then return "malformed set (missing ']')" end
      i = j + 1
    elseif c == "(" then
      open = open + 1
      i = i + 1
    elseif c == ")" then
      if open == 0 then return "invalid pattern capture (unmatched ')')" end
      open, closed = open - 1, closed + 1
      i = i + 1
    else
      i = i + 1
    end
  end
  if open > 0 then return "unfinished capture" end
  if closed > 32 then return "too many captures" end
  return nil
end

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------


local function to_number(v, coerce)
  if coerce and type(v) == "string" then v = tonumber(v) end
  if finite(v) then return v end
  return nil
end

-- Each type: value, coerce -> the accepted (maybe converted) value, or nil.
local TYPES = {
  any = function(v) return v end,
  string = function(v)
    if type(v) == "string" then return v end
    return nil
  end,
  number = to_number,
  integer = function(v, coerce)
    v = to_number(v, coerce)
    if v == nil or math_type(v) == "integer" then return v end
    if v ~= math.floor(v) then return nil end
    return math.tointeger(v) or v -- integral floats become Lua integers
  end,
  boolean = function(v, coerce)
    if type(v) == "boolean" then return v end
    if coerce then
      if v == "true" then return true end
      if v == "false" then return false end
    end
    return nil
  end,
  object = function(v)
    if type(v) == "table" and shape(v) ~= "array" then return v end
    return nil
  end,
  array = function(v)
    if type(v) == "table" and shape(v) ~= "object" then return v end
    return nil
  end,
}

local TYPE_TEXT = {
  string = "a string", number = "a number", integer = "an integer",
  boolean = "a boolean", object = "a table", array = "an array",
}

-- What min/max/length measure, per type.
local UNIT = { string = "character", array = "item", object = "key" }

local function size(kind, v)
  if kind == "string" then return utf8_len(v) or #v end
  if kind == "array" then return array_length(v) end
  return count_keys(v)
end

------------------------------------------------------------------------------
-- Schemas
------------------------------------------------------------------------------

local Schema = {}
Schema.__index = Schema
Schema.__name = "hemera.validation.schema"

--- Whether `v` is a schema built by this module.
-- @param v any value
-- @treturn boolean
function M.is_schema(v)
  return getmetatable(v) == Schema
end

local function new(kind)
  return setmetatable({ kind = kind, rules = {} }, Schema)
end

-- A copy to refine: rules are copied, everything else is never mutated.
local function clone(s)
  local c = {}
  for k, v in next, s do c[k] = v end
  c.rules = table.move(s.rules, 1, #s.rules, 1, {})
  return setmetatable(c, Schema)
end

-- A copy of `s` with rule `name` added (or replaced, keeping its place).
local function with_rule(s, name, arg, test)
  local c = clone(s)
  local rule = { name = name, arg = arg, test = test }
  for i, r in ipairs(c.rules) do
    if r.name == name then
      c.rules[i] = rule
      return c
    end
  end
  c.rules[#c.rules + 1] = rule
  return c
end

local to_schema -- forward: a schema, or a plain table of fields as an object

local function build_fields(fields, where)
  if type(fields) ~= "table" or getmetatable(fields) ~= nil then
    usage("%s expects a table of field schemas, got %s", where, show(fields))
  end
  local out = {}
  for k, v in next, fields do
    out[k] = to_schema(v, ("field %s"):format(path_text({ k })))
  end
  return out, sorted_keys(out)
end

function to_schema(v, where)
  if getmetatable(v) == Schema then return v end
  if type(v) == "table" and getmetatable(v) == nil then
    local s = new("object")
    s.fields, s.order = build_fields(v, where)
    return s
  end
  usage("%s is not a schema (got %s)", where, show(v))
end

--- A string. `:min`, `:max` and `:length` count UTF-8 characters (bytes when
-- the string is not valid UTF-8). An empty string is a valid string.
function M.string() return new("string") end

--- A finite number (integer or float).
function M.number() return new("number") end

--- An integer; integral floats (`3.0`) are accepted and returned as Lua
-- integers.
function M.integer() return new("integer") end

--- `true` or `false`.
function M.boolean() return new("boolean") end

--- Any value except nil (null included).
function M.any() return new("any") end

--- A table with the given fields (`name -> schema`; a plain nested table is
-- read as `S.object` of it). Without `fields`, any table, with any keys.
-- Unknown keys follow `:unknown()`, else the validation's `unknown` option.
-- @tparam[opt] table fields
function M.object(fields)
  local s = new("object")
  if fields ~= nil then s.fields, s.order = build_fields(fields, "S.object") end
  return s
end

--- Alias of `S.object`.
M.table = M.object

--- An array (a sequence, or a table marked with `core.array`); every element
-- must match `item` when given. The validated copy is marked as an array,
-- so an empty one encodes as `[]`.
-- @param[opt] item schema of each element (a plain table reads as `S.object`)
function M.array(item)
  local s = new("array")
  if item ~= nil then s.items = to_schema(item, "S.array item") end
  return s
end

--- The value must be present (not nil).
function Schema:required()
  local c = clone(self)
  c.presence = "required"
  return c
end

--- The value may be absent (the default).
function Schema:optional()
  local c = clone(self)
  c.presence = "optional"
  return c
end

--- When the value is absent, use `v` instead (a function is called for each
-- validation; a table is copied). The default is then validated like a
-- given value, so nested defaults apply too. A required value gets no default.
function Schema:default(v)
  if v == nil then usage("default needs a value") end
  local c = clone(self)
  c.has_default, c.default_value = true, v
  return c
end

local function fresh_default(s)
  local d = s.default_value
  if type(d) == "function" then return d() end
  return deep_copy(d)
end

-- The values given as varargs, or as one plain table.
local function value_list(name, ...)
  local n = select("#", ...)
  local list = { ... }
  if n == 1 and type(list[1]) == "table" and getmetatable(list[1]) == nil then
    list = table.move(list[1], 1, #list[1], 1, {})
    n = #list
  end
  if n == 0 then usage("%s needs at least one value", name) end
  for i = 1, n do
    if list[i] == nil then usage("%s values cannot be nil", name) end
  end
  return list
end

--- Only these values are valid (compared with `==`, after coercion).
-- Takes values, or one list: `:valid("a", "b")`, `:valid{"a", "b"}`.
function Schema:valid(...)
  local c = clone(self)
  c.valids = value_list("valid", ...)
  return c
end

--- These values are accepted as they are, whatever the other rules say
-- (Joi's `allow`): `S.string():allow(S.null)`.
function Schema:allow(...)
  local c = clone(self)
  c.allows = value_list("allow", ...)
  return c
end

-- min, max and length: numbers compare the value, strings, arrays and
-- tables their size.
local BOUNDS = {
  min = { ok = function(a, n) return a >= n end, num = ">=", size = "at least" },
  max = { ok = function(a, n) return a <= n end, num = "<=", size = "at most" },
  length = { ok = function(a, n) return a == n end, size = "exactly" },
}

local function bound(s, name, n)
  local b = BOUNDS[name]
  if (s.kind == "number" or s.kind == "integer") and b.num then
    if not finite(n) then usage("%s expects a number, got %s", name, show(n)) end
    local text = ("must be %s %s"):format(b.num, tostring(n))
    return with_rule(s, name, n, function(v)
      if not b.ok(v, n) then return text end
    end)
  end
  local unit = UNIT[s.kind]
  if not unit then usage("%s does not apply to %s schemas", name, s.kind) end
  if math_type(n) ~= "integer" or n < 0 then
    usage("%s expects an integer >= 0, got %s", name, show(n))
  end
  local text = ("must have %s %s"):format(b.size, plural(n, unit))
  return with_rule(s, name, n, function(v, kind)
    if not b.ok(size(kind, v), n) then return text end
  end)
end

--- Numbers: the value must be >= n. Strings, arrays, tables: at least n
-- characters, items or keys.
function Schema:min(n) return bound(self, "min", n) end

--- Numbers: the value must be <= n. Strings, arrays, tables: at most n
-- characters, items or keys.
function Schema:max(n) return bound(self, "max", n) end

--- Strings, arrays, tables: exactly n characters, items or keys.
function Schema:length(n) return bound(self, "length", n) end

--- Strings: must match the Lua pattern `p` (string.find: anywhere in the
-- string unless anchored with `^`/`$`). `name` replaces the pattern in
-- messages. A malformed pattern raises now.
-- @string p a Lua pattern, e.g. `"^%d+$"`
-- @string[opt] name
function Schema:pattern(p, name)
  if self.kind ~= "string" then usage("pattern does not apply to %s schemas", self.kind) end
  if type(p) ~= "string" then usage("pattern expects a Lua pattern string, got %s", show(p)) end
  local problem = pattern_problem(p)
  if problem then usage("invalid Lua pattern %s: %s", quote(p), problem) end
  local text = "must match the pattern " .. quote(name or p)
  return with_rule(self, "pattern", p, function(v)
    if not v:find(p) then return text end
  end)
end

--- A check of your own: `fn(value)` returns true, or false/nil and a
-- message. `name` is the rule name in errors (default "custom").
function Schema:custom(fn, name)
  if type(fn) ~= "function" then usage("custom expects a function, got %s", show(fn)) end
  name = name or "custom"
  return with_rule(self, name, nil, function(v)
    local ok, msg = fn(v)
    if not ok then return msg and tostring(msg) or ("must pass the " .. name .. " check") end
  end)
end

--- Numbers, integers, booleans: accept strings too (`"42"`, `"1e3"`,
-- `"true"`, `"false"`) and convert them. `false` turns it off.
function Schema:coerce(flag)
  if self.kind ~= "number" and self.kind ~= "integer" and self.kind ~= "boolean" then
    usage("coerce applies to number, integer and boolean schemas, not %s", self.kind)
  end
  local c = clone(self)
  c.coerce_flag = flag ~= false
  return c
end

--- Tables: whether keys without a schema are allowed (`true`, the default
-- argument) or rejected (`false`), overriding the validation's option.
-- Under the `strip` option, rejected keys are removed instead.
function Schema:unknown(flag)
  if self.kind ~= "object" then usage("unknown applies to object schemas, not %s", self.kind) end
  local c = clone(self)
  c.unknown_flag = flag ~= false
  return c
end

--- Tables: these fields added to (or replacing) the schema's fields.
function Schema:keys(fields)
  if self.kind ~= "object" then usage("keys applies to object schemas, not %s", self.kind) end
  local add = build_fields(fields, "keys")
  local merged = {}
  for k, v in next, self.fields or {} do merged[k] = v end
  for k, v in next, add do merged[k] = v end
  local c = clone(self)
  c.fields, c.order = merged, sorted_keys(merged)
  return c
end

local function describe_value(v)
  if type(v) == "function" then return "[function]" end
  return deep_copy(v)
end

--- A plain-table description, JSON-encodable (Joi's `describe()` shape):
-- `{type, flags = {presence, default, coerce, unknown}, rules = {{name, arg}},
-- valid, allow, children = {field = description}, items = description}`.
-- @treturn table
function Schema:describe()
  local d = { type = self.kind }
  local flags = {}
  flags.presence = self.presence
  if self.has_default then flags.default = describe_value(self.default_value) end
  flags.coerce = self.coerce_flag
  flags.unknown = self.unknown_flag
  if next(flags) then d.flags = flags end
  if #self.rules > 0 then
    d.rules = core.array()
    for i, r in ipairs(self.rules) do d.rules[i] = { name = r.name, arg = r.arg } end
  end
  if self.valids then d.valid = core.array(deep_copy(self.valids)) end
  if self.allows then d.allow = core.array(deep_copy(self.allows)) end
  if self.fields then
    d.children = {}
    for k, f in next, self.fields do d.children[k] = f:describe() end
  end
  if self.items then d.items = self.items:describe() end
  return d
end

------------------------------------------------------------------------------
-- Validation
------------------------------------------------------------------------------

local check -- forward

-- The path of the value under `key` of the value at `node`.
local function here(node, key)
  if key == nil then return node end
  return child(node, key)
end

-- Whether an unknown key of `s` is kept ("allow"), dropped or an error.
local function unknown_policy(s, ctx)
  if s.unknown_flag == true then return "allow" end
  if s.unknown_flag == false then
    return ctx.unknown == "strip" and "strip" or "reject"
  end
  return ctx.unknown
end

local function check_object(s, t, ctx, node)
  local mt = getmetatable(t)
  local fields = s.fields
  local policy = fields and unknown_policy(s, ctx)
  -- Every key kept: the copy is made whole, at its size (core.copy), and
  -- the fields' values go over it.
  local all = not fields or policy == "allow"
  local out = all and core_copy(t) or {}
  if mt then setmetatable(out, mt) end
  if not fields then return out end
  local order = s.order
  for j = 1, #order do
    local k = order[j]
    local v, err = check(fields[k], t[k], ctx, node, k)
    if err then return nil, err end
    out[k] = v
  end
  if all then return out end
  local first -- the first rejected key, in key order
  for k, v in next, t do
    if fields[k] == nil then
      if node == nil and ctx.pass and ctx.pass(k) then
        out[k] = v
      elseif policy == "reject" and (first == nil or key_less(k, first)) then
        first = k
      end
    end
  end
  if first ~= nil then
    return nil, fail(ctx, child(node, first), "unknown", "is not allowed", t[first])
  end
  return out
end

local function check_array(s, t, ctx, node)
  local out = setmetatable({}, ARRAY_MT)
  for i = 1, array_length(t) do
    local v, err = t[i]
    if s.items then
      v, err = check(s.items, v, ctx, node, i)
      if err then return nil, err end
    end
    out[i] = v
  end
  return out
end

-- Validates `v` against `s`: returns the new value, or nil and the error.
-- `node` is the path of v's parent and `key` v's key in it (nil at the
-- root): the path of v itself is made only when an error or a nested
-- table needs it.
function check(s, v, ctx, node, key)
  if v == nil then
    if s.presence == "required" then
      return nil, fail(ctx, here(node, key), "required", "is required", nil)
    end
    if not s.has_default then return nil end
    v = fresh_default(s)
  end
  if s.allows and contains(s.allows, v) then return v end
  local coerce = s.coerce_flag
  if coerce == nil then coerce = ctx.coerce end
  local typed = TYPES[s.kind](v, coerce)
  if typed == nil then
    return nil, fail(ctx, here(node, key), "type", "must be " .. TYPE_TEXT[s.kind], v, s.kind)
  end
  v = typed
  if s.valids and not contains(s.valids, v) then
    return nil, fail(ctx, here(node, key), "valid", "must be one of " .. list_text(s.valids), v,
      core.array(deep_copy(s.valids)))
  end
  local rules = s.rules
  for j = 1, #rules do
    local r = rules[j]
    local text = r.test(v, s.kind)
    if text then return nil, fail(ctx, here(node, key), r.name, text, v, r.arg) end
  end
  if s.kind == "object" then return check_object(s, v, ctx, here(node, key)) end
  if s.kind == "array" then return check_array(s, v, ctx, here(node, key)) end
  return v
end

local UNKNOWN = { allow = true, reject = true, strip = true }

-- The validation context from the options (checked once, then read-only).
local function context(opts)
  if opts == nil then return { unknown = "reject" } end
  if type(opts) ~= "table" then usage("options must be a table, got %s", show(opts)) end
  local unknown = opts.unknown or "reject"
  if not UNKNOWN[unknown] then
    usage("option unknown must be 'allow', 'reject' or 'strip', got %s", show(unknown))
  end
  if opts.label ~= nil and type(opts.label) ~= "string" then
    usage("option label must be a string, got %s", show(opts.label))
  end
  if opts.pass ~= nil and type(opts.pass) ~= "function" then
    usage("option pass must be a function, got %s", show(opts.pass))
  end
  return { unknown = unknown, coerce = opts.coerce and true or false, label = opts.label, pass = opts.pass }
end

--- Validates `value`.
-- @param value
-- @tparam[opt] table opts `unknown`: what to do with table keys that have no
--   schema: `"reject"` (default, as Joi), `"allow"` or `"strip"`;
--   `coerce`: coerce every number/integer/boolean schema without its own
--   `:coerce()` setting; `label`: the name of the whole value in errors
--   (prefixes every path); `pass(key)`: top-level keys left alone when it
--   returns true.
-- @return the new value, or nil and a ValidationError (a valid absent value
--   also gives nil: check the error)
function Schema:validate(value, opts)
  local v, err = check(self, value, context(opts), nil)
  if err then return nil, err end
  return v
end

--- Compiles `spec` (a schema, or a table of `field -> schema` read as
-- `S.object`) into `function(value) -> value | nil, err`.
-- @param spec
-- @tparam[opt] table opts as for `schema:validate`
-- @treturn function
function M.compile(spec, opts)
  local s = to_schema(spec, "S.compile spec")
  local ctx = context(opts)
  return function(value)
    local v, err = check(s, value, ctx, nil)
    if err then return nil, err end
    return v
  end
end

------------------------------------------------------------------------------
-- Hemera compilers (hemera-joi)
------------------------------------------------------------------------------

local function is_dollar(k)
  return type(k) == "string" and k:sub(-1) == "$"
end

-- The schema-valued fields of an action schema: `$` keys, scalars (routing
-- values) and values with a metatable other than ours (regex) are left out.
local function action_fields(schema)
  local fields
  for k, v in next, schema do
    if not is_dollar(k) and (getmetatable(v) == Schema or (type(v) == "table" and getmetatable(v) == nil)) then
      fields = fields or {}
      fields[k] = v
    end
  end
  return fields
end

-- `spec` with the fields of `base` it does not define itself.
local function with_base(s, base)
  if base == nil or s.kind ~= "object" then return s end
  local missing = {}
  for k, v in next, base do
    if not (s.fields and s.fields[k]) then missing[k] = v end
  end
  if next(missing) == nil then return s end
  return s:keys(missing)
end

local function merge(defaults, given)
  local out = {}
  for k, v in next, defaults do out[k] = v end
  for k, v in next, given or {} do out[k] = v end
  return out
end

--- Makes a pair of Hemera compilers with options (hemera-joi's, in Lua form).
-- @tparam[opt] table opts
--   `patternKeys = {default = "joi$", pre = "preJoi$", post = "postJoi$"}`;
--   `basePreSchema`, `basePostSchema`: tables of field schemas added to every
--   request (response) object schema, the action's own fields winning;
--   `pre = {unknown = "allow"}`, `post = {unknown = "strip", label = "response"}`:
--   validation options; `coerce`: coerce everywhere (default false).
-- @treturn function compiler(actionSchema) -> validator | nil
-- @treturn function response_compiler(actionSchema) -> validator | nil
function M.compilers(opts)
  opts = opts or {}
  local keys = merge({ default = "joi$", pre = "preJoi$", post = "postJoi$" }, opts.patternKeys)
  local pre = merge({ unknown = "allow", coerce = opts.coerce, pass = is_dollar }, opts.pre)
  local post = merge({ unknown = "strip", coerce = opts.coerce, label = "response" }, opts.post)
  local base_pre = opts.basePreSchema and build_fields(opts.basePreSchema, "basePreSchema")
  local base_post = opts.basePostSchema and build_fields(opts.basePostSchema, "basePostSchema")
  context(pre)
  context(post)

  local function compiler(schema)
    if type(schema) ~= "table" then return nil end
    local spec = schema[keys.default] or schema[keys.pre] or action_fields(schema)
    if spec == nil then
      if not base_pre then return nil end
      spec = {}
    end
    return M.compile(with_base(to_schema(spec, "request schema"), base_pre), pre)
  end

  local function response_compiler(schema)
    if type(schema) ~= "table" then return nil end
    local spec = schema[keys.post]
    if spec == nil then
      if not base_post then return nil end
      spec = {}
    end
    return M.compile(with_base(to_schema(spec, keys.post), base_post), post)
  end

  return compiler, response_compiler
end

--- The request compiler for `hemera:setSchemaCompiler`: `compiler(schema)`
-- takes an action's schema (the table-valued keys of its pattern) and returns
-- `function(request) -> request | nil, err`, or nil when the action has no
-- schema. The request schema is `joi$`, else `preJoi$` (a schema or a table
-- of field schemas), else the action's own field schemas. Only the fields
-- the schema names are checked: other keys (topic, cmd, `$` keys) pass
-- through, as with Joi's `allowUnknown`.
-- @function compiler
--- The response compiler for `hemera:setResponseSchemaCompiler`: validates
-- a handler's result against `postJoi$`; unknown keys of tables are
-- removed (Joi's `stripUnknown`) and errors name the value `response`.
-- @function response_compiler
M.compiler, M.response_compiler = M.compilers()

--- The Hemera plugin: `hemera:use(S.plugin, opts)`, `opts` as for
-- `S.compilers`. Not scoped: the compilers apply to the whole instance.
M.plugin = {
  name = "hemera-schema",
  scoped = false,
  register = function(hemera, opts)
    local compiler, response_compiler = M.compiler, M.response_compiler
    if opts ~= nil and next(opts) ~= nil then compiler, response_compiler = M.compilers(opts) end
    hemera:setSchemaCompiler(compiler)
    hemera:setResponseSchemaCompiler(response_compiler)
  end,
}

return M
