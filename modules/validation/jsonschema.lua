--- JSON Schema (a draft-07 subset) for Hemera payloads.
--
-- The Lua counterpart of hemera-ajv:
--
--     local J = require "validation.jsonschema"
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
-- Lua values as JSON: a number is an "integer" when it has no fraction
-- (`3.0` too, returned as the Lua integer 3); NaN and infinities are not
-- numbers; `core.null` is null; a table marked with `core.array` or a
-- non-empty sequence is an array, other tables are objects, and a plain `{}`
-- is both. JSON null object members never reach Lua (the decoder drops
-- them), so they count as absent.
--
-- Validation returns a new value (defaults inserted, types coerced when
-- asked); the input is never modified. It stops at the first error, a
-- `ValidationError` with `field` (a JSON pointer, "" for the whole value,
-- array indices from 0), `path` (its segments), `keyword` (also as `rule`),
-- `value`, `limit` and `schemaPath`; its message reads
-- `"/a" must be >= 0 (keyword minimum, got -1)`.
--
-- @module validation.jsonschema

local core = require "hemera.core"
local errors = require "hemera.errors"
local values = require "validation.values"
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
  error(errors.HemeraError("validation.jsonschema: " .. fmt:format(...)), 2)
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

-- A regex is parsed into alternatives of token sequences. A token is an
-- atom (one character or class, written as a Lua pattern atom, with its
-- repeat counts lo..hi), a multi-byte literal, an anchor, or a group. Groups
-- are expanded away: `^(GET|POST)/x$` becomes the two sequences `^GET/x$`
-- and `^POST/x$`, and the regex matches when either does. Each sequence is
-- then matched by a small backtracking matcher that remembers failed
-- (token, position) pairs, so counted repeats like `[a-z]{3,64}` never
-- take exponential time (Lua's own `x?x?x?...` would).

local ANCHOR_START, ANCHOR_END = {}, {}
local MAX_ALTERNATIVES = 64 -- sequences after expansion
local MAX_REPEAT = 1000     -- largest {n,m} bound

local MAGIC = "^$()%.[]*+-?"

-- One character as a Lua pattern literal (outside a set).
local function lua_literal(c)
  if MAGIC:find(c, 1, true) then return "%" .. c end
  return c
end

-- One byte as a literal inside a Lua set.
local function set_literal(c)
  if c == "]" or c == "^" or c == "-" or c == "%" or c == "[" then return "%" .. c end
  return c
end

local CLASS_ESCAPES = { d = "%d", D = "%D", w = "[%w_]", W = "[^%w_]", s = "%s", S = "%S" }
local SET_ESCAPES = { d = "%d", D = "%D", w = "%w_", s = "%s", S = "%S" }
local CHAR_ESCAPES = { n = "\n", r = "\r", t = "\t", f = "\f", v = "\v" }

local Parser = {}
Parser.__index = Parser

-- Raises a translation error naming the character where the construct
-- being parsed starts.
function Parser:fail(what)
  error({ regex_error = ("%s (at character %d)"):format(what, self.start or self.i) }, 0)
end

function Parser:peek(k)
  k = k or 0
  return self.src:sub(self.i + k, self.i + k)
end

-- A code point written as \xHH or \uHHHH, as the UTF-8 text it stands for.
function Parser:hex_escape(letter, digits)
  local hex = self.src:sub(self.i + 2, self.i + 1 + digits)
  if #hex ~= digits or not hex:match("^%x+$") then self:fail("invalid \\" .. letter .. " escape") end
  local cp = tonumber(hex, 16)
  if cp >= 0xD800 and cp <= 0xDFFF then self:fail("surrogate code points are not supported") end
  self.i = self.i + 2 + digits
  return utf8.char(cp)
end

-- An escape at self.i (the backslash): returns kind, text where kind is
-- "class" (text: a Lua class) or "char" (text: the literal character).
function Parser:escape(in_set)
  local c = self:peek(1)
  if c == "" then self:fail("pattern ends with '\\'") end
  if c == "x" then return "char", self:hex_escape("x", 2) end
  if c == "u" then
    if self:peek(2) == "{" then self:fail("\\u{...} escapes are not supported") end
    return "char", self:hex_escape("u", 4)
  end
  self.i = self.i + 2
  if in_set and c == "b" then return "char", "\b" end
  if in_set and SET_ESCAPES[c] then return "class", SET_ESCAPES[c] end
  if in_set and c == "W" then self:fail("\\W inside a character class is not supported") end
  if not in_set and CLASS_ESCAPES[c] then return "class", CLASS_ESCAPES[c] end
  if CHAR_ESCAPES[c] then return "char", CHAR_ESCAPES[c] end
  if c == "0" and not self:peek():match("%d") then return "char", "\0" end
  if c:match("%d") then self:fail("backreferences are not supported") end
  if c == "b" or c == "B" then self:fail("word boundaries (\\b, \\B) are not supported") end
  if c:match("%w") then self:fail("unsupported escape \\" .. c) end
  if c:byte() >= 0x80 then self:fail("escaped non-ASCII characters are not supported") end
  return "char", c -- an escaped punctuation character stands for itself
end

-- A character class [...] at self.i, as a Lua set.
function Parser:class()
  self.i = self.i + 1
  local out = { "[" }
  if self:peek() == "^" then
    out[2] = "^"
    self.i = self.i + 1
  end
  local first = #out
  -- One member: returns "char", c or "class", text.
  local function member()
    self.start = self.i
    local c = self:peek()
    if c == "\\" then return self:escape(true) end
    if c:byte() >= 0x80 then self:fail("non-ASCII characters in a character class are not supported") end
    self.i = self.i + 1
    return "char", c
  end
  while true do
    local c = self:peek()
    if c == "" then self:fail("unterminated character class") end
    if c == "]" then break end
    local kind, a = member()
    if kind == "char" and #a > 1 then self:fail("non-ASCII characters in a character class are not supported") end
    if kind == "char" and self:peek() == "-" and self:peek(1) ~= "]" and self:peek(1) ~= "" then
      self.i = self.i + 1
      local kind2, b = member()
      if kind2 ~= "char" or #b > 1 then self:fail("invalid range in a character class") end
      if a:byte() > b:byte() then self:fail("range out of order in a character class") end
      if a:match("%w") and b:match("%w") then
        out[#out + 1] = a .. "-" .. b
      else
        for byte = a:byte(), b:byte() do out[#out + 1] = set_literal(string.char(byte)) end
      end
    elseif kind == "char" then
      out[#out + 1] = set_literal(a)
    else
      out[#out + 1] = a
    end
  end
  self.i = self.i + 1
  if #out == first then self:fail("empty character classes ([] and [^]) are not supported") end
  out[#out + 1] = "]"
  return table.concat(out)
end

-- A quantifier at self.i: returns min, max (max nil: unbounded), or nil.
function Parser:quantifier()
  local c = self:peek()
  local lo, hi, len
  if c == "*" then lo, len = 0, 1
  elseif c == "+" then lo, len = 1, 1
  elseif c == "?" then lo, hi, len = 0, 1, 1
  elseif c == "{" then
    local a, comma, b = self.src:match("^{(%d+)(,?)(%d*)}", self.i)
    if not a then return nil end -- a literal '{', as in JavaScript
    lo = tonumber(a)
    hi = comma == "" and lo or (b ~= "" and tonumber(b) or nil)
    if hi and hi < lo then self:fail("numbers out of order in {} quantifier") end
    if lo > MAX_REPEAT or (hi or 0) > MAX_REPEAT then
      self:fail("{} quantifier bounds above " .. MAX_REPEAT .. " are not supported")
    end
    len = #a + #comma + #b + 2
  else
    return nil
  end
  self.i = self.i + len
  if self:peek() == "?" then self.i = self.i + 1 end -- lazy: same matches
  return lo, hi
end

-- Parses alternatives until ')' or the end: a list of token lists.
function Parser:alternation(depth)
  local alts, seq = {}, {}
  alts[1] = seq
  while true do
    local c = self:peek()
    if c == "" then
      self.start = self.i
      if depth > 0 then self:fail("missing ')'") end
      return alts
    end
    if c == ")" then
      self.start = self.i
      if depth == 0 then self:fail("unmatched ')'") end
      return alts
    end
    if c == "|" then
      self.i = self.i + 1
      seq = {}
      alts[#alts + 1] = seq
    else
      self:item(seq, depth)
    end
  end
end

-- Parses one atom and its quantifier into `seq`.
function Parser:item(seq, depth)
  self.start = self.i
  local c = self:peek()
  local atom -- a quantifiable Lua atom, or nil
  if c == "^" or c == "$" then
    self.i = self.i + 1
    seq[#seq + 1] = c == "^" and ANCHOR_START or ANCHOR_END
    if self:quantifier() then self:fail("quantifier after an anchor") end
    return
  elseif c == "(" then
    return self:group(seq, depth)
  elseif c == "*" or c == "+" or c == "?" then
    self:fail("nothing to repeat")
  elseif c == "[" then
    atom = self:class()
  elseif c == "." then
    self.i = self.i + 1
    atom = "[^\n\r]"
  elseif c == "\\" then
    local kind, text = self:escape(false)
    if kind == "class" then
      atom = text
    elseif #text == 1 then
      atom = lua_literal(text)
    else
      return self:multibyte(seq, text)
    end
  elseif c:byte() >= 0x80 then
    local len = c:byte() >= 0xF0 and 4 or c:byte() >= 0xE0 and 3 or 2
    local text = self.src:sub(self.i, self.i + len - 1)
    self.i = self.i + len
    return self:multibyte(seq, text)
  else
    self.i = self.i + 1
    atom = lua_literal(c)
  end
  local lo, hi = self:quantifier()
  if lo == nil then lo, hi = 1, 1 end
  seq[#seq + 1] = { atom = atom, lo = lo, hi = hi }
end

-- A non-ASCII character: a literal byte sequence, which cannot be repeated.
function Parser:multibyte(seq, text)
  seq[#seq + 1] = { lit = text }
  if self:quantifier() then self:fail("quantifiers on non-ASCII characters are not supported") end
end

-- A group (...) or (?:...). Unquantified, it is expanded in place; with `?`
-- it becomes two alternatives; a group of one atom takes any quantifier.
function Parser:group(seq, depth)
  local at = self.i
  if depth >= 32 then self:fail("groups nested too deeply") end
  if self:peek(1) == "?" then
    if self:peek(2) ~= ":" then self:fail("lookarounds and named groups are not supported") end
    self.i = self.i + 3
  else
    self.i = self.i + 1
  end
  local alts = self:alternation(depth + 1)
  self.i = self.i + 1 -- ')'
  self.start = at
  local lo, hi = self:quantifier()
  if lo == nil or (lo == 1 and hi == 1) then
    seq[#seq + 1] = { group = alts }
    return
  end
  local only = #alts == 1 and #alts[1] == 1 and alts[1][1]
  if type(only) == "table" and only.atom and only.lo == 1 and only.hi == 1 then
    seq[#seq + 1] = { atom = only.atom, lo = lo, hi = hi }
  elseif lo == 0 and hi == 1 then
    alts[#alts + 1] = {}
    seq[#seq + 1] = { group = alts }
  else
    self:fail("quantifiers on groups are not supported (except '?')")
  end
end

-- Every way through a token list, as lists of pieces.
local expand_alts

local function expand_seq(seq)
  local results = { {} }
  for _, tok in ipairs(seq) do
    local options = tok.group and expand_alts(tok.group) or { { tok } }
    local nextr = {}
    for _, r in ipairs(results) do
      for _, o in ipairs(options) do
        local joined = table.move(r, 1, #r, 1, {})
        table.move(o, 1, #o, #joined + 1, joined)
        nextr[#nextr + 1] = joined
        if #nextr > MAX_ALTERNATIVES then
          error({ regex_error = "too many alternatives (more than " .. MAX_ALTERNATIVES .. " after expansion)" }, 0)
        end
      end
    end
    results = nextr
  end
  return results
end

function expand_alts(alts)
  local out = {}
  for _, seq in ipairs(alts) do
    for _, r in ipairs(expand_seq(seq)) do
      out[#out + 1] = r
      if #out > MAX_ALTERNATIVES then
        error({ regex_error = "too many alternatives (more than " .. MAX_ALTERNATIVES .. " after expansion)" }, 0)
      end
    end
  end
  return out
end

-- Splits the anchors off an expanded sequence: returns the tokens between
-- them, whether it starts with '^' and whether it ends with '$'.
local function unanchor(pieces)
  local tokens, first, last = {}, false, false
  for i, p in ipairs(pieces) do
    if p == ANCHOR_START then
      if i ~= 1 then error({ regex_error = "'^' is only supported at the start" }, 0) end
      first = true
    elseif p == ANCHOR_END then
      if i ~= #pieces then error({ regex_error = "'$' is only supported at the end" }, 0) end
      last = true
    else
      tokens[#tokens + 1] = p
    end
  end
  return tokens, first, last
end

-- Parses and expands `source`: a list of {tokens, first, last}, or raises
-- {regex_error = why}.
local function parse(source)
  local parser = setmetatable({ src = source, i = 1 }, Parser)
  local out = {}
  for i, pieces in ipairs(expand_alts(parser:alternation(0))) do
    out[i] = table.pack(unanchor(pieces))
  end
  return out
end

-- Runs parse(source), turning a regex error into nil, why.
local function try_parse(source)
  if type(source) ~= "string" then return nil, "pattern must be a string" end
  local ok, res = pcall(parse, source)
  if ok then return res end
  if type(res) == "table" and res.regex_error then return nil, res.regex_error end
  error(res, 0)
end

-- A token as Lua pattern text.
local function render(tok)
  if tok.lit then return tok.lit end
  local a, lo, hi = tok.atom, tok.lo, tok.hi
  if lo == 1 and hi == 1 then return a end
  if lo == 0 and hi == nil then return a .. "*" end
  if lo == 1 and hi == nil then return a .. "+" end
  if lo == 0 and hi == 1 then return a .. "?" end
  return a:rep(lo) .. (hi and (a .. "?"):rep(hi - lo) or (a .. "*"))
end

--- Translates an ECMAScript regular expression (the subset JSON Schema
-- patterns commonly use) into equivalent Lua patterns, for inspection: the
-- regex matches a string when any of them does (`regex` matches the same
-- strings without Lua's backtracking blow-up on long `x?x?...` chains).
-- Supported: literals, `.`, `^` at the start and `$` at the end, classes
-- `[a-z_]` `[^...]`, `\d \D \w \W \s \S`, escapes (`\. \n \t \xHH \uHHHH`
-- ...), quantifiers `* + ? {n} {n,} {n,m}` (lazy too) on single atoms,
-- groups `(...)`/`(?:...)` with `|` alternatives, optional groups `(...)?`.
-- Not supported: backreferences, lookarounds, `\b`, quantified groups other
-- than `?` and one-atom groups, quantified non-ASCII characters. Characters
-- match bytes: `.` or `[^a]` match one byte of a multi-byte UTF-8 character.
-- @string source
-- @treturn table|nil the Lua patterns, or nil and why
-- @treturn string
function M.translate(source)
  local alts, err = try_parse(source)
  if not alts then return nil, err end
  local patterns = {}
  for i, alt in ipairs(alts) do
    local tokens, first, last = alt[1], alt[2], alt[3]
    local parts = { first and "^" or "" }
    for _, tok in ipairs(tokens) do parts[#parts + 1] = render(tok) end
    parts[#parts + 1] = last and "$" or ""
    patterns[i] = table.concat(parts)
  end
  return patterns
end

-- The bytes a Lua pattern atom matches, as a set indexed by byte value.
local function byte_set(atom)
  local set, pat = {}, "^" .. atom .. "$"
  for b = 0, 255 do
    if string.find(string.char(b), pat) then set[b] = true end
  end
  return set
end

-- A matcher for one expanded sequence. Repeats are greedy, as in
-- JavaScript; a (token, position) pair that failed once is never retried.
local function sequence_matcher(tokens, first, last)
  local n = #tokens
  for _, tok in ipairs(tokens) do
    if tok.atom then tok.set = byte_set(tok.atom) end
  end
  return function(s)
    local len, failed = #s, {}
    local function at(i, pos)
      if i > n then return not last or pos == len + 1 end
      local key = i * (len + 2) + pos
      if failed[key] then return false end
      local tok = tokens[i]
      if tok.lit then
        local e = pos + #tok.lit
        if s:sub(pos, e - 1) == tok.lit and at(i + 1, e) then return true end
      else
        local set, hi, k = tok.set, tok.hi or len, 0
        while k < hi do
          local b = s:byte(pos + k)
          if not b or not set[b] then break end
          k = k + 1
        end
        for count = k, tok.lo, -1 do
          if at(i + 1, pos + count) then return true end
        end
      end
      failed[key] = true
      return false
    end
    if first then return at(1, 1) end
    for start = 1, len + 1 do
      if at(1, start) then return true end
    end
    return false
  end
end

--- A matcher for an ECMAScript regex (the subset of `translate`).
-- @string source
-- @treturn function|nil `match(s) -> boolean`, or nil and why
-- @treturn string
function M.regex(source)
  local alts, err = try_parse(source)
  if not alts then return nil, err end
  local matchers = {}
  for i, alt in ipairs(alts) do matchers[i] = sequence_matcher(alt[1], alt[2], alt[3]) end
  return function(s)
    for i = 1, #matchers do
      if matchers[i](s) then return true end
    end
    return false
  end
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
    local match, err = M.regex(source)
    if not match then bad("%s/pattern %s: %s", spath, quote(source), err) end
    local text = "must match pattern " .. quote(source)
    steps[#steps + 1] = function(v, node, ctx)
      if type(v) ~= "string" or match(v) then return v end
      return nil, fail(ctx, node, "pattern", text, v, source, spath .. "/pattern")
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
      local x, err = v[i], nil
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
