--- JSON Schema (a draft-07 subset) for Hemera payloads.
--
-- The Lua counterpart of hemera-ajv:
--
--     local J = require "hemera.validation.jsonschema"
--     local check = J.compile({
--       type = "object",
--       properties = {
--         a = { type = "integer", minimum = 0 },
--         name = { type = "string", pattern = "^[a-z]+$", default = "anon" },
--       },
--       required = { "a" },
--     }, { coerceTypes = true })
--     local v, err = check { a = "3" }   --> { a = 3, name = "anon" }, nil
--
-- Keywords: type (string, number, integer, boolean, object, array, null, or
-- a list), enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum
-- (draft-07 numbers, or draft-04 booleans), multipleOf, minLength,
-- maxLength (UTF-8 characters), pattern, items (one schema, or a list for
-- tuples) with additionalItems, minItems, maxItems, uniqueItems, properties,
-- required, additionalProperties, minProperties, maxProperties, default,
-- allOf, anyOf, oneOf, not, and the boolean schemas `true` and `false`.
-- Annotations (title, description, format, examples, $id, $schema,
-- definitions, ...) are accepted and ignored; `format` is not checked.
-- Keywords this module cannot honour ($ref, patternProperties,
-- dependencies, propertyNames, contains, if/then/else) raise at compile
-- time rather than pass silently.
--
-- `pattern` is an ECMA-262 regex, compiled once (at `compile`) by PCRE2
-- with ECMAScript's `u`-flag reading: it matches code points of UTF-8
-- text, `$` only at the very end, `\d \w \b` are ASCII. Matching is
-- bounded (a match limit, and a depth/heap or JIT stack limit): a pattern
-- that would backtrack for seconds fails the value instead, with the
-- message `"/a" pattern check exceeded the match limit for "^(a+)+$"`, and
-- a value that is not UTF-8 (only Lua code can pass one: the JSON decoder
-- refuses such bytes) fails with `must be valid UTF-8 to be checked
-- against pattern ...`. An invalid pattern raises at compile time with
-- PCRE2's reason. Still unlike ECMAScript: `.` matches U+2028 and U+2029,
-- `\s` is ASCII white space only, `\v` is PCRE2's vertical-space class,
-- surrogate escapes (`\uD83D\uDE00`) are refused (write `\u{1F600}`),
-- lookbehinds must have a fixed length per alternative, a repeated group
-- (`^(a|b)*$`) runs out of backtracking frames after some 50,000
-- iterations (a repeated class, `^[ab]*$`, takes none per iteration), and
-- PCRE2-only syntax (`a++`, `(?i)`, `\A`, `[[:alpha:]]`, ...) is accepted.
--
-- Lua values as JSON: a number is an "integer" when it has no fraction
-- (`3.0` too, returned as the Lua integer 3); NaN and infinities are not
-- numbers; `core.null` is null; a table marked with `core.array` or a
-- non-empty sequence is an array, other tables are objects, and a plain `{}`
-- is both. A JSON null member is `core.null` (the decoder keeps it): it is
-- present (it satisfies `required`, gets no `default`) and of type "null".
--
-- Validation returns a new value (defaults inserted, types coerced when
-- asked); the input is never modified. It stops at the first error, a
-- `ValidationError` with `field` (a JSON pointer, "" for the whole value,
-- array indices from 0), `path` (its segments), `keyword` (also as `rule`),
-- `value`, `limit` and `schemaPath`; its message reads
-- `"/a" must be >= 0 (keyword minimum, got -1)`.
--
-- @module hemera.validation.jsonschema

local core = require "hemera.core"
local errors = require "hemera.errors"
local values = require "hemera.validation.values"
local shape, array_length, count_keys, deep_copy, finite, quote, plural, child, segments = values.shape, values.array_length, values.count_keys, values.deep_copy, values.finite, values.quote, values.plural, values.child, values.segments

local M = {}

--- The error class of failed validations (shared with `validation.schema`).
M.ValidationError = errors.registry.ValidationError or errors.class("ValidationError")
local ValidationError = M.ValidationError

local NULL = core.null
local ARRAY_MT = core.array_mt
local math_type, utf8_len = math.type, utf8.len

-- Raises a schema error (compile time).
local function bad(fmt, ...)
  error(errors.HemeraError("hemera.validation.jsonschema: " .. fmt:format(...)), 2)
end

------------------------------------------------------------------------------
-- Values
------------------------------------------------------------------------------



local function is_list(v)
  return type(v) == "table" and shape(v) ~= "object"
end



-- JSON equality: numbers by value (1 == 1.0), tables member by member.
local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  local sa, sb = shape(a), shape(b)
  if sa ~= sb and sa ~= "empty" and sb ~= "empty" then return false end
  for k, v in next, a do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in next, b do
    if a[k] == nil then return false end
  end
  return true
end


local function is_integral(v)
  return math_type(v) == "integer" or (finite(v) and v == math.floor(v))
end




local function show(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if v == NULL then return "null" end
  if t == "table" then
    local sh = shape(v)
    if sh == "array" then return "an array of " .. plural(array_length(v), "item") end
    return sh == "empty" and "an empty table" or "an object"
  end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return "a " .. t
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

------------------------------------------------------------------------------
-- ECMAScript regular expressions
------------------------------------------------------------------------------

-- A `pattern` is an ECMA-262 regex. core.ecma_regex (C, PCRE2) compiles
-- each source once, with the JIT when the library has it, and matches with
-- a match limit and a depth/heap (JIT stack) limit, so a pattern that
-- backtracks catastrophically (`^(a+)+$`, `^[a-z]+[a-z]*$` on 8 KB) costs
-- milliseconds and a validation error instead of stalling the service.
-- lua/hm_lua_pattern.c lists the compile options and where PCRE2 still
-- reads a pattern differently from ECMAScript.

-- Compiled regexes by source, shared by every schema that uses one; an
-- entry lives as long as some compiled schema holds its regex.
local regexes = setmetatable({}, { __mode = "v" })

-- The compiled regex of `source`, or nil and PCRE2's reason.
local function compile_regex(source)
  if type(source) ~= "string" then return nil, "pattern must be a string" end
  local re = regexes[source]
  if re then return re end
  local err
  re, err = core.ecma_regex(source)
  if not re then return nil, err end
  regexes[source] = re
  return re
end

--- A matcher for an ECMAScript regex (the engine of `pattern`).
-- @string source
-- @treturn function|nil `match(s) -> true | false | nil, why, code`: nil
--   when the match could not be decided, code `"limit"` (a match limit was
--   exceeded) or `"utf"` (`s` is not UTF-8); or nil and why the source is
--   not a valid regex
-- @treturn string
function M.regex(source)
  local re, err = compile_regex(source)
  if not re then return nil, err end
  return function(s) return re:test(s) end
end

------------------------------------------------------------------------------
-- Paths and errors
------------------------------------------------------------------------------



-- The JSON pointer of a path (RFC 6901; array indices from 0).
local function pointer(segs)
  local parts = {}
  for i, k in ipairs(segs) do
    parts[i] = "/" .. tostring(k):gsub("~", "~0"):gsub("/", "~1")
  end
  return table.concat(parts)
end

local function fail(ctx, node, keyword, text, value, limit, spath)
  local segs = segments(node)
  local field = pointer(segs)
  local shown = (ctx.label or "") .. field
  if shown == "" then shown = "value" end
  return ValidationError(('"%s" %s (keyword %s, got %s)'):format(shown, text, keyword, show(value)), {
    field = field,
    path = core.array(segs),
    keyword = keyword,
    rule = keyword,
    value = value,
    limit = limit,
    schemaPath = spath,
  })
end

------------------------------------------------------------------------------
-- Compilation
------------------------------------------------------------------------------

-- A compiled schema is a function(value, node, ctx) -> value | nil, err made
-- of steps run in order; each step returns the (maybe new) value or an error.

local TYPE_NAMES = { string = true, number = true, integer = true, boolean = true,
  object = true, array = true, null = true }

local UNSUPPORTED = { "$ref", "patternProperties", "dependencies", "propertyNames",
  "contains", "if", "then", "else" }

local OBJECT_KEYWORDS = { "properties", "required", "additionalProperties",
  "minProperties", "maxProperties" }
local ARRAY_KEYWORDS = { "items", "additionalItems", "minItems", "maxItems", "uniqueItems" }

local function has_any(schema, keywords)
  for _, k in ipairs(keywords) do
    if schema[k] ~= nil then return true end
  end
  return false
end

local function includes(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

local function has_type(name, v)
  if name == "string" then return type(v) == "string" end
  if name == "number" then return finite(v) end
  if name == "integer" then return is_integral(v) end
  if name == "boolean" then return type(v) == "boolean" end
  if name == "null" then return v == NULL end
  if name == "object" then return type(v) == "table" and shape(v) ~= "array" end
  return type(v) == "table" and shape(v) ~= "object" -- array
end

-- ajv's coerceTypes for scalars: the value converted to type `name`, or nil.
local COERCE = {
  number = function(v)
    if type(v) == "string" then
      local n = tonumber(v)
      if finite(n) then return n end
    end
  end,
  integer = function(v)
    if type(v) == "string" then
      local n = tonumber(v)
      if is_integral(n) then return math.tointeger(n) or n end
    end
  end,
  boolean = function(v)
    if v == "true" then return true end
    if v == "false" then return false end
  end,
  string = function(v)
    if math_type(v) == "integer" or type(v) == "boolean" then return tostring(v) end
    if finite(v) then return core.jsnum(v) end
  end,
}

local compile_schema -- forward

local function check_number(schema, key, spath)
  local v = schema[key]
  if v ~= nil and not finite(v) then bad("%s/%s must be a number, got %s", spath, key, show(v)) end
  return v
end

local function check_count(schema, key, spath)
  local v = schema[key]
  if v ~= nil and not (is_integral(v) and v >= 0) then
    bad("%s/%s must be an integer >= 0, got %s", spath, key, show(v))
  end
  return v
end

local function check_list(schema, key, spath, nonempty)
  local v = schema[key]
  if v ~= nil and not (is_list(v) and (not nonempty or array_length(v) > 0)) then
    bad("%s/%s must be a%s array, got %s", spath, key, nonempty and " non-empty" or "n", show(v))
  end
  return v
end

local function type_step(schema, spath, steps)
  local t = schema.type
  if t == nil then return nil end
  local types = type(t) == "string" and { t } or t
  if not is_list(types) or #types == 0 then bad("%s/type must be a type name or a list of them", spath) end
  for _, name in ipairs(types) do
    if not TYPE_NAMES[name] then bad("%s/type: unknown type %s", spath, show(name)) end
  end
  local limit = type(t) == "string" and t or core.array(deep_copy(types))
  local text = "must be of type " .. table.concat(types, " or ")
  local kpath = spath .. "/type"
  steps[#steps + 1] = function(v, node, ctx)
    for _, name in ipairs(types) do
      if has_type(name, v) then
        if name == "integer" and math_type(v) == "float" then return math.tointeger(v) or v end
        return v
      end
    end
    if ctx.coerceTypes then
      for _, name in ipairs(types) do
        local c = COERCE[name] and COERCE[name](v)
        if c ~= nil then return c end
      end
    end
    return nil, fail(ctx, node, "type", text, v, limit, kpath)
  end
  return types
end

local function value_steps(schema, spath, steps)
  local enum = check_list(schema, "enum", spath, true)
  if enum then
    local shown = {}
    for i = 1, array_length(enum) do shown[i] = show(enum[i]) end
    local text = "must be one of " .. table.concat(shown, ", ")
    steps[#steps + 1] = function(v, node, ctx)
      for i = 1, array_length(enum) do
        if deep_equal(v, enum[i]) then return v end
      end
      return nil, fail(ctx, node, "enum", text, v, deep_copy(enum), spath .. "/enum")
    end
  end
  if schema.const ~= nil then
    local const = schema.const
    local text = "must be equal to " .. show(const)
    steps[#steps + 1] = function(v, node, ctx)
      if deep_equal(v, const) then return v end
      return nil, fail(ctx, node, "const", text, v, deep_copy(const), spath .. "/const")
    end
  end
end

-- A numeric bound: ok(v, limit) must hold, else `text limit`.
local function number_bound(steps, spath, keyword, limit, ok, op)
  local text = ("must be %s %s"):format(op, tostring(limit))
  local kpath = spath .. "/" .. keyword
  steps[#steps + 1] = function(v, node, ctx)
    if type(v) ~= "number" or ok(v, limit) then return v end
    return nil, fail(ctx, node, keyword, text, v, limit, kpath)
  end
end

local function ge(a, b) return a >= b end
local function le(a, b) return a <= b end
local function gt(a, b) return a > b end
local function lt(a, b) return a < b end

local function number_steps(schema, spath, steps)
  local min, max = check_number(schema, "minimum", spath), check_number(schema, "maximum", spath)
  local xmin, xmax = schema.exclusiveMinimum, schema.exclusiveMaximum
  -- draft-04: exclusiveMinimum = true makes minimum exclusive
  if type(xmin) == "boolean" then
    if xmin and min then number_bound(steps, spath, "minimum", min, gt, ">") min = nil end
    xmin = nil
  end
  if type(xmax) == "boolean" then
    if xmax and max then number_bound(steps, spath, "maximum", max, lt, "<") max = nil end
    xmax = nil
  end
  if min then number_bound(steps, spath, "minimum", min, ge, ">=") end
  if max then number_bound(steps, spath, "maximum", max, le, "<=") end
  if xmin ~= nil then
    number_bound(steps, spath, "exclusiveMinimum", check_number(schema, "exclusiveMinimum", spath), gt, ">")
  end
  if xmax ~= nil then
    number_bound(steps, spath, "exclusiveMaximum", check_number(schema, "exclusiveMaximum", spath), lt, "<")
  end
  local m = check_number(schema, "multipleOf", spath)
  if m then
    if m <= 0 then bad("%s/multipleOf must be > 0", spath) end
    number_bound(steps, spath, "multipleOf", m, function(v)
      if math_type(v) == "integer" and math_type(m) == "integer" then return v % m == 0 end
      local q = v / m
      return math.abs(q - math.floor(q + 0.5)) <= 1e-9 * math.max(1, math.abs(q))
    end, "a multiple of")
  end
end

-- A size bound on strings, arrays or objects: measure(v) compared to n.
local function size_bound(steps, spath, keyword, n, applies, measure, at_least, unit)
  local text = ("must have %s %s"):format(at_least and "at least" or "at most", plural(n, unit))
  local kpath = spath .. "/" .. keyword
  steps[#steps + 1] = function(v, node, ctx)
    if not applies(v) then return v end
    local size = measure(v)
    if (at_least and size >= n) or (not at_least and size <= n) then return v end
    return nil, fail(ctx, node, keyword, text, v, n, kpath)
  end
end

local function is_string(v) return type(v) == "string" end
local function string_length(s) return utf8_len(s) or #s end

local function string_steps(schema, spath, steps)
  local n = check_count(schema, "minLength", spath)
  if n then size_bound(steps, spath, "minLength", n, is_string, string_length, true, "character") end
  n = check_count(schema, "maxLength", spath)
  if n then size_bound(steps, spath, "maxLength", n, is_string, string_length, false, "character") end
  local source = schema.pattern
  if source ~= nil then
    if type(source) ~= "string" then bad("%s/pattern must be a string, got %s", spath, show(source)) end
    local re, err = compile_regex(source)
    if not re then bad("%s/pattern %s is not a valid regular expression: %s", spath, quote(source), err) end
    local shown, kpath = quote(source), spath .. "/pattern"
    local text = "must match pattern " .. shown
    steps[#steps + 1] = function(v, node, ctx)
      if type(v) ~= "string" then return v end
      local ok, why, code = re:test(v)
      if ok then return v end
      if ok == false then return nil, fail(ctx, node, "pattern", text, v, source, kpath) end
      -- Undecided: the value fails, saying why, so a client can tell a
      -- pathological pattern or bad bytes from a plain mismatch.
      local undecided
      if code == "utf" then
        undecided = ("must be valid UTF-8 to be checked against pattern %s: %s"):format(shown, why)
      else
        undecided = ("pattern check %s for %s"):format(why, shown)
      end
      return nil, fail(ctx, node, "pattern", undecided, v, source, kpath)
    end
  end
end

-- Sub-schema or boolean, compiled; nil stays nil.
local function sub(schema, key, spath)
  local v = schema[key]
  if v == nil then return nil end
  return compile_schema(v, spath .. "/" .. key)
end

-- The first pair of equal items among list[1..n] (indices i < j), or nil.
-- Scalars are found through a table (1 and 1.0 are one key); tables are
-- compared with each other only.
local function first_duplicate(list, n)
  local seen, tables = {}, {}
  for j = 1, n do
    local x = list[j]
    if type(x) == "table" then
      for _, i in ipairs(tables) do
        if deep_equal(list[i], x) then return i, j end
      end
      tables[#tables + 1] = j
    elseif x ~= nil and x == x then
      if seen[x] then return seen[x], j end
      seen[x] = j
    end
  end
  return nil
end

local function array_step(schema, spath, steps, empty_as)
  local n = check_count(schema, "minItems", spath)
  local function applies(v)
    if type(v) ~= "table" then return false end
    local sh = shape(v)
    return sh == "array" or (sh == "empty" and empty_as == "array")
  end
  if n then size_bound(steps, spath, "minItems", n, applies, array_length, true, "item") end
  n = check_count(schema, "maxItems", spath)
  if n then size_bound(steps, spath, "maxItems", n, applies, array_length, false, "item") end
  local items, tuple = nil, nil
  if is_list(schema.items) and next(schema.items) ~= nil then
    tuple = {}
    for i = 1, array_length(schema.items) do
      tuple[i] = compile_schema(schema.items[i], ("%s/items/%d"):format(spath, i - 1))
    end
  else
    items = sub(schema, "items", spath)
  end
  local additional = tuple and sub(schema, "additionalItems", spath)
  local unique = schema.uniqueItems
  if unique ~= nil and type(unique) ~= "boolean" then bad("%s/uniqueItems must be a boolean", spath) end
  steps[#steps + 1] = function(v, node, ctx)
    if not applies(v) then return v end
    local out = setmetatable({}, ARRAY_MT)
    for i = 1, array_length(v) do
      local x, err = v[i]
      local check = items
      if tuple then check = tuple[i] or additional end
      if check then
        x, err = check(x, child(node, i - 1), ctx)
        if err then return nil, err end
      end
      out[i] = x
    end
    if unique then
      local i, j = first_duplicate(out, array_length(v))
      if i then
        return nil, fail(ctx, node, "uniqueItems",
          ("must not contain duplicate items (items %d and %d are equal)"):format(i - 1, j - 1),
          v, true, spath .. "/uniqueItems")
      end
    end
    return out
  end
end

local function properties(n)
  return n == 1 and "1 property" or n .. " properties"
end

local function object_step(schema, spath, steps, empty_as)
  local props = schema.properties
  if props ~= nil and (type(props) ~= "table" or shape(props) == "array") then
    bad("%s/properties must be an object, got %s", spath, show(props))
  end
  local required = check_list(schema, "required", spath)
  if required then
    for i = 1, array_length(required) do
      if type(required[i]) ~= "string" then bad("%s/required must list property names", spath) end
    end
  end
  local names, checks, defaults = {}, {}, {}
  for _, name in ipairs(sorted_keys(props or {})) do
    local ps = props[name]
    names[#names + 1] = name
    checks[name] = compile_schema(ps, spath .. "/properties/" .. tostring(name))
    if type(ps) == "table" and ps.default ~= nil then defaults[#defaults + 1] = { name, ps.default } end
  end
  local addl = schema.additionalProperties
  local addl_check
  if type(addl) == "table" then addl_check = compile_schema(addl, spath .. "/additionalProperties")
  elseif addl ~= nil and type(addl) ~= "boolean" then
    bad("%s/additionalProperties must be a boolean or a schema", spath)
  end
  local minp, maxp = check_count(schema, "minProperties", spath), check_count(schema, "maxProperties", spath)
  -- Whether keys outside `properties` need a look: when they have a rule,
  -- or when removeAdditional = "all" drops them.
  local extra_rule = addl == false or addl_check ~= nil
  local listed = props ~= nil or addl ~= nil

  steps[#steps + 1] = function(v, node, ctx)
    if type(v) ~= "table" then return v end
    local sh = shape(v)
    if sh == "array" or (sh == "empty" and empty_as ~= "object") then return v end
    local out = setmetatable({}, getmetatable(v))
    for k, x in next, v do out[k] = x end
    if ctx.useDefaults then
      for _, d in ipairs(defaults) do
        if out[d[1]] == nil then out[d[1]] = deep_copy(d[2]) end
      end
    end
    if required then
      for i = 1, array_length(required) do
        local name = required[i]
        if out[name] == nil then
          return nil, fail(ctx, child(node, name), "required", "is required", nil, name, spath .. "/required")
        end
      end
    end
    if minp or maxp then
      local n = count_keys(out)
      if minp and n < minp then
        return nil, fail(ctx, node, "minProperties", "must have at least " .. properties(minp),
          v, minp, spath .. "/minProperties")
      end
      if maxp and n > maxp then
        return nil, fail(ctx, node, "maxProperties", "must have at most " .. properties(maxp),
          v, maxp, spath .. "/maxProperties")
      end
    end
    for _, name in ipairs(names) do
      local x = out[name]
      if x ~= nil then
        local nx, err = checks[name](x, child(node, name), ctx)
        if err then return nil, err end
        out[name] = nx
      end
    end
    if extra_rule or (listed and ctx.removeAdditional == "all") then
      for _, k in ipairs(sorted_keys(out)) do
        if checks[k] == nil and not (node == nil and ctx.ignore and ctx.ignore(k)) then
          if ctx.removeAdditional == "all" or (addl == false and ctx.removeAdditional) then
            out[k] = nil
          elseif addl == false then
            return nil, fail(ctx, child(node, k), "additionalProperties", "is not allowed", out[k], false,
              spath .. "/additionalProperties")
          elseif addl_check then
            local nx, err = addl_check(out[k], child(node, k), ctx)
            if err and ctx.removeAdditional == "failing" then
              out[k] = nil
            elseif err then
              return nil, err
            else
              out[k] = nx
            end
          end
        end
      end
    end
    return out
  end
end

local function combinator_steps(schema, spath, steps)
  for _, key in ipairs({ "allOf", "anyOf", "oneOf" }) do
    local list = check_list(schema, key, spath, true)
    if list then
      local subs = {}
      for i = 1, array_length(list) do subs[i] = compile_schema(list[i], ("%s/%s/%d"):format(spath, key, i - 1)) end
      local kpath = spath .. "/" .. key
      if key == "allOf" then
        steps[#steps + 1] = function(v, node, ctx)
          for _, check in ipairs(subs) do
            local err
            v, err = check(v, node, ctx)
            if err then return nil, err end
          end
          return v
        end
      else
        steps[#steps + 1] = function(v, node, ctx)
          local result, matched, causes = nil, 0, core.array()
          for _, check in ipairs(subs) do
            local nv, err = check(v, node, ctx)
            if err then
              causes[#causes + 1] = err.message
            else
              matched = matched + 1
              if matched == 1 then result = nv end
              if key == "anyOf" then return nv end
            end
          end
          if matched == 1 then return result end
          local text = key == "anyOf" and "must match at least one schema in anyOf"
            or ("must match exactly one schema in oneOf (matched %d)"):format(matched)
          local e = fail(ctx, node, key, text, v, #subs, kpath)
          e.causes = causes
          return nil, e
        end
      end
    end
  end
  if schema["not"] ~= nil then
    local check = compile_schema(schema["not"], spath .. "/not")
    steps[#steps + 1] = function(v, node, ctx)
      local _, err = check(v, node, ctx)
      if err then return v end
      return nil, fail(ctx, node, "not", "must not match the schema in not", v, nil, spath .. "/not")
    end
  end
end

local function accept(v) return v end

local function run_steps(steps)
  if #steps == 0 then return accept end
  if #steps == 1 then return steps[1] end
  return function(v, node, ctx)
    for i = 1, #steps do
      local err
      v, err = steps[i](v, node, ctx)
      if err then return nil, err end
    end
    return v
  end
end

function compile_schema(schema, spath)
  if schema == true then return accept end
  if schema == false then
    return function(v, node, ctx)
      return nil, fail(ctx, node, "false", "is not allowed", v, false, spath)
    end
  end
  if type(schema) ~= "table" or shape(schema) == "array" then
    bad("%s: a schema must be an object or a boolean, got %s", spath, show(schema))
  end
  for _, k in ipairs(UNSUPPORTED) do
    if schema[k] ~= nil then bad("%s: keyword %s is not supported", spath, quote(k)) end
  end
  local steps = {}
  local types = type_step(schema, spath, steps)
  -- A plain {} is an array for array-only schemas, else an object.
  local empty_as = "object"
  if types then
    if includes(types, "array") and not includes(types, "object") then empty_as = "array" end
  elseif has_any(schema, ARRAY_KEYWORDS) and not has_any(schema, OBJECT_KEYWORDS) then
    empty_as = "array"
  end
  value_steps(schema, spath, steps)
  number_steps(schema, spath, steps)
  string_steps(schema, spath, steps)
  if has_any(schema, ARRAY_KEYWORDS) or (types and includes(types, "array")) then
    array_step(schema, spath, steps, empty_as)
  end
  if has_any(schema, OBJECT_KEYWORDS) or (types and includes(types, "object")) then
    object_step(schema, spath, steps, empty_as)
  end
  combinator_steps(schema, spath, steps)
  return run_steps(steps)
end

local REMOVE = { [false] = true, [true] = true, all = true, failing = true }

local function context(opts)
  opts = opts or {}
  if type(opts) ~= "table" then bad("options must be a table, got %s", show(opts)) end
  local remove = opts.removeAdditional or false
  if not REMOVE[remove] then bad("option removeAdditional must be true, false, 'all' or 'failing'") end
  if opts.ignore ~= nil and type(opts.ignore) ~= "function" then bad("option ignore must be a function") end
  if opts.label ~= nil and type(opts.label) ~= "string" then bad("option label must be a string") end
  return {
    coerceTypes = opts.coerceTypes and true or false,
    useDefaults = opts.useDefaults ~= false,
    removeAdditional = remove,
    ignore = opts.ignore,
    label = opts.label,
  }
end

--- Compiles a JSON Schema into a validator.
-- @tparam table|boolean schema
-- @tparam[opt] table opts
--   `coerceTypes` (false): convert scalars to the schema's type as ajv does
--   (numeric strings to numbers/integers, "true"/"false" to booleans,
--   numbers and booleans to strings);
--   `useDefaults` (true): insert the `default` of absent properties (then
--   validated like given values);
--   `removeAdditional` (false): `true` removes properties that
--   `additionalProperties: false` rejects, `"all"` removes every property not
--   in `properties`, `"failing"` also those failing an
--   `additionalProperties` schema;
--   `ignore(key)`: top-level keys that additionalProperties leaves alone;
--   `label`: prefix of paths in messages.
-- @treturn function `validate(value) -> value | nil, err` (a valid nil
--   value also gives nil: check the error)
function M.compile(schema, opts)
  local ctx = context(opts)
  local check = compile_schema(schema, "#")
  return function(value)
    local v, err = check(value, nil, ctx)
    if err then return nil, err end
    return v
  end
end

------------------------------------------------------------------------------
-- Hemera compilers (hemera-ajv)
------------------------------------------------------------------------------

-- Request keys that are not payload: the routing keys and `$` options.
local function routing_key(k)
  return k == "topic" or k == "cmd" or (type(k) == "string" and k:sub(-1) == "$")
end

-- hemera-ajv: a response schema using object (array) keywords without a
-- type still requires an object (array).
local function with_inferred_type(schema)
  if type(schema) ~= "table" or schema.type ~= nil then return schema end
  local t = has_any(schema, OBJECT_KEYWORDS) and "object" or has_any(schema, ARRAY_KEYWORDS) and "array"
  if not t then return schema end
  local copy = {}
  for k, v in next, schema do copy[k] = v end
  copy.type = t
  return copy
end

local function merge(defaults, given)
  local out = {}
  for k, v in next, defaults do out[k] = v end
  for k, v in next, given or {} do out[k] = v end
  return out
end

--- Makes a pair of Hemera compilers. `opts` are `compile` options; the
-- defaults are hemera-ajv's: `coerceTypes = true, useDefaults = true,
-- removeAdditional = true`.
-- @tparam[opt] table opts
-- @treturn function compiler(actionSchema) -> validator | nil
-- @treturn function response_compiler(actionSchema) -> validator | nil
function M.compilers(opts)
  local base = merge({ coerceTypes = true, useDefaults = true, removeAdditional = true }, opts)
  local pre = merge(base, { ignore = routing_key })
  local post = merge(base, { label = "response" })
  context(pre)

  local function compiler(action)
    if type(action) ~= "table" then return nil end
    local s = type(action.schema) == "table" and action.schema.request or nil
    if s == nil then
      if type(action.properties) ~= "table" then return nil end
      s = {
        type = "object",
        properties = action.properties,
        required = action.required,
        additionalProperties = action.additionalProperties,
      }
    end
    return M.compile(s, pre)
  end

  local function response_compiler(action)
    if type(action) ~= "table" or type(action.schema) ~= "table" then return nil end
    local s = action.schema.response
    if s == nil then return nil end
    return M.compile(with_inferred_type(s), post)
  end

  return compiler, response_compiler
end

--- The request compiler for `hemera:setSchemaCompiler`: compiles
-- `actionSchema.schema.request` when present, else `actionSchema.properties`
-- (with `required` and `additionalProperties`) as an object schema. The
-- routing keys `topic`, `cmd` and `$` keys are never rejected or removed as
-- additional properties. Returns nil when the action has no such schema.
-- @function compiler
--- The response compiler for `hemera:setResponseSchemaCompiler`: compiles
-- `actionSchema.schema.response` (errors name the value `response`).
-- @function response_compiler
M.compiler, M.response_compiler = M.compilers()

--- The Hemera plugin: `hemera:use(J.plugin, opts)`, `opts` as for
-- `J.compilers`. Not scoped: the compilers apply to the whole instance.
M.plugin = {
  name = "hemera-jsonschema",
  scoped = false,
  register = function(hemera, opts)
    local compiler, response_compiler = M.compiler, M.response_compiler
    if opts ~= nil and next(opts) ~= nil then compiler, response_compiler = M.compilers(opts) end
    hemera:setSchemaCompiler(compiler)
    hemera:setResponseSchemaCompiler(response_compiler)
  end,
}

return M
