-- hemera.validation.schema: Joi-style schemas and the hemera-joi compilers.
local S = require "hemera.validation.schema"
local core = require "hemera.core"
local errors = require "hemera.errors"

-- The error of a failed validation, checked to be a ValidationError.
local function failure(fn, value)
  local v, err = fn(value)
  assert.is_nil(v)
  assert.is_true(S.ValidationError:is(err), "expected a ValidationError, got " .. tostring(err))
  return err
end

local function validator(schema, opts)
  return function(value) return schema:validate(value, opts) end
end

-- Asserts the error fields and message of validating `value`.
local function rejects(schema, value, expect, opts)
  local err = failure(validator(schema, opts), value)
  assert.equal("ValidationError", err.name)
  if expect.message then assert.equal(expect.message, err.message) end
  if expect.field then assert.equal(expect.field, err.field) end
  if expect.rule then assert.equal(expect.rule, err.rule) end
  if expect.limit ~= nil then assert.same(expect.limit, err.limit) end
  if expect.value ~= nil then assert.same(expect.value, err.value) end
  return err
end

local function accepts(schema, value, expected, opts)
  local v, err = schema:validate(value, opts)
  assert.is_nil(err)
  if expected ~= nil then assert.same(expected, v) end
  return v
end

local function raises(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.is_true(errors.HemeraError:is(err), tostring(err))
  if text then assert.matches(text, err.message, 1, true) end
end

describe("hemera.validation.schema", function()
  describe("types", function()
    it("string accepts strings, including the empty string", function()
      accepts(S.string(), "abc", "abc")
      accepts(S.string(), "", "")
      rejects(S.string(), 5, {
        message = '"value" must be a string (rule type, got 5)',
        field = "value", rule = "type", limit = "string", value = 5,
      })
    end)

    it("number accepts integers and floats, not NaN or infinities", function()
      assert.equal("integer", math.type(accepts(S.number(), 3, 3)))
      accepts(S.number(), 1.5, 1.5)
      rejects(S.number(), "3", { message = '"value" must be a number (rule type, got "3")' })
      rejects(S.number(), 0 / 0, { rule = "type" })
      rejects(S.number(), math.huge, { message = '"value" must be a number (rule type, got inf)' })
    end)

    it("integer accepts integral floats and returns Lua integers", function()
      local v = accepts(S.integer(), 4.0, 4)
      assert.equal("integer", math.type(v))
      accepts(S.integer(), -7, -7)
      rejects(S.integer(), 1.5, {
        message = '"value" must be an integer (rule type, got 1.5)', limit = "integer",
      })
    end)

    it("boolean accepts true and false only", function()
      accepts(S.boolean(), false, false)
      accepts(S.boolean(), true, true)
      rejects(S.boolean(), "true", { message = '"value" must be a boolean (rule type, got "true")' })
    end)

    it("object accepts tables that are not arrays", function()
      accepts(S.object(), { a = 1 }, { a = 1 })
      accepts(S.object(), {}, {})
      rejects(S.object(), { 1, 2 }, {
        message = '"value" must be a table (rule type, got an array of 2 items)', limit = "object",
      })
      rejects(S.object(), core.array(), { rule = "type" })
      rejects(S.object(), "x", { rule = "type" })
      assert.equal(S.object, S.table)
    end)

    it("array accepts sequences, core.array tables and {}", function()
      accepts(S.array(), { 1, "a" }, { 1, "a" })
      accepts(S.array(), {}, {})
      accepts(S.array(), core.decode("[1,2]"), { 1, 2 })
      rejects(S.array(), { a = 1 }, { message = '"value" must be an array (rule type, got a table)' })
      rejects(S.array(), "x", { rule = "type" })
    end)

    it("array results are marked as arrays, so an empty one encodes as []", function()
      local v = accepts(S.array(S.number()), {})
      assert.equal(core.array_mt, getmetatable(v))
      assert.equal("[]", core.encode(v))
      assert.equal('{"a":[]}', core.encode(accepts(S.object { a = S.array() }, { a = {} })))
    end)

    it("any accepts every value but nil, null included", function()
      accepts(S.any(), 1, 1)
      accepts(S.any(), S.null, S.null)
      accepts(S.any(), nil, nil)
      rejects(S.any():required(), nil, { message = '"value" is required (rule required, got nil)' })
    end)

    it("null is not a value of the typed schemas", function()
      rejects(S.string(), S.null, { message = '"value" must be a string (rule type, got null)' })
      assert.equal(core.null, S.null)
    end)
  end)

  describe("presence and defaults", function()
    it("values are optional unless required", function()
      local v, err = S.number():validate(nil)
      assert.is_nil(v)
      assert.is_nil(err)
      accepts(S.number():required():optional(), nil)
      rejects(S.number():required(), nil, {
        message = '"value" is required (rule required, got nil)', rule = "required", field = "value",
      })
    end)

    it("default fills an absent value; present values are kept", function()
      accepts(S.number():default(10), nil, 10)
      accepts(S.number():default(10), 3, 3)
      accepts(S.boolean():default(false), nil, false)
    end)

    it("a required value gets no default (as Joi)", function()
      rejects(S.number():required():default(1), nil, { rule = "required" })
    end)

    it("table defaults are copied for each validation", function()
      local schema = S.object { tags = S.array():default({ "a" }) }
      local one = accepts(schema, {})
      local two = accepts(schema, {})
      assert.same({ "a" }, one.tags)
      assert.are_not.equal(one.tags, two.tags)
      one.tags[2] = "b"
      assert.same({ "a" }, accepts(schema, {}).tags)
    end)

    it("function defaults are called for each validation", function()
      local n = 0
      local schema = S.integer():default(function() n = n + 1 return n end)
      accepts(schema, nil, 1)
      accepts(schema, nil, 2)
    end)

    it("defaults are validated, so nested defaults apply", function()
      local schema = S.object {
        page = S.object { size = S.integer():default(20), from = S.integer():default(0) }:default({}),
      }
      accepts(schema, {}, { page = { size = 20, from = 0 } })
      accepts(schema, { page = { size = 5 } }, { page = { size = 5, from = 0 } })
      rejects(S.integer():min(5):default(1), nil, { rule = "min", value = 1 })
    end)
  end)

  describe("min, max and length", function()
    it("bound numbers by value", function()
      local n = S.number():min(0):max(10)
      accepts(n, 0, 0)
      accepts(n, 10, 10)
      rejects(n, -1, {
        message = '"value" must be >= 0 (rule min, got -1)', rule = "min", limit = 0, value = -1,
      })
      rejects(n, 10.5, { message = '"value" must be <= 10 (rule max, got 10.5)', rule = "max", limit = 10 })
      rejects(S.integer():min(1), 0, { message = '"value" must be >= 1 (rule min, got 0)' })
    end)

    it("bound strings by UTF-8 characters", function()
      local s = S.string():min(2):max(5)
      accepts(s, "héllo", "héllo") -- 5 characters, 6 bytes
      rejects(s, "a", {
        message = '"value" must have at least 2 characters (rule min, got "a")', limit = 2,
      })
      rejects(s, "héllo!", { message = '"value" must have at most 5 characters (rule max, got "héllo!")' })
      accepts(S.string():length(1), "é")
      rejects(S.string():length(3), "ab", {
        message = '"value" must have exactly 3 characters (rule length, got "ab")', rule = "length", limit = 3,
      })
      rejects(S.string():min(1), "", { message = '"value" must have at least 1 character (rule min, got "")' })
    end)

    it("bound arrays by items and tables by keys", function()
      accepts(S.array():min(1):max(2), { 1, 2 })
      rejects(S.array():min(1), {}, {
        message = '"value" must have at least 1 item (rule min, got an empty table)', rule = "min",
      })
      rejects(S.array():max(2), { 1, 2, 3 }, {
        message = '"value" must have at most 2 items (rule max, got an array of 3 items)',
      })
      rejects(S.array():length(2), { 1 }, { message = '"value" must have exactly 2 items (rule length, got an array of 1 item)' })
      accepts(S.object():max(1), { a = 1 })
      rejects(S.object():min(2), { a = 1 }, { message = '"value" must have at least 2 keys (rule min, got a table)' })
    end)

    it("a later call replaces the earlier bound", function()
      local s = S.number():min(5):min(1)
      accepts(s, 2, 2)
      assert.same({ { name = "min", arg = 1 } }, s:describe().rules)
    end)
  end)

  describe("pattern", function()
    it("matches Lua patterns anywhere unless anchored", function()
      accepts(S.string():pattern("%d"), "ab1", "ab1")
      accepts(S.string():pattern("^%l+$"), "abc")
      rejects(S.string():pattern("^%l+$"), "abC", {
        message = '"value" must match the pattern "^%l+$" (rule pattern, got "abC")',
        rule = "pattern", limit = "^%l+$",
      })
    end)

    it("names the pattern in messages when given a name", function()
      rejects(S.string():pattern("^%x+$", "hex"), "xyz", {
        message = '"value" must match the pattern "hex" (rule pattern, got "xyz")', limit = "^%x+$",
      })
    end)

    it("rejects malformed patterns when the schema is built", function()
      raises(function() S.string():pattern("ab%") end, "ends with '%'")
      raises(function() S.string():pattern("a[b") end, "missing ']'")
      raises(function() S.string():pattern("(a") end, "unfinished capture")
      raises(function() S.string():pattern("a)") end, "unmatched ')'")
      raises(function() S.string():pattern("%1(a)") end, "invalid capture index")
      raises(function() S.string():pattern("%f") end, "missing '['")
      raises(function() S.string():pattern(5) end, "Lua pattern string")
      raises(function() S.number():pattern("x") end, "pattern does not apply to number")
    end)

    it("accepts well-formed patterns with sets, frontiers, balances and captures", function()
      accepts(S.string():pattern("^[%]%-]+$"), "]-")
      accepts(S.string():pattern("%f[%w]%w+"), "x")
      accepts(S.string():pattern("%b()"), "(a)")
      accepts(S.string():pattern("(a)%1"), "aa")
    end)
  end)

  describe("valid and allow", function()
    it("valid restricts to a set of values", function()
      local s = S.string():valid("red", "green")
      accepts(s, "red", "red")
      local err = rejects(s, "blue", {
        message = '"value" must be one of "red", "green" (rule valid, got "blue")', rule = "valid",
      })
      assert.same({ "red", "green" }, err.limit)
      accepts(S.number():valid { 1, 2 }, 2, 2)
      rejects(S.number():valid { 1, 2 }, 3, { message = '"value" must be one of 1, 2 (rule valid, got 3)' })
    end)

    it("valid compares after coercion", function()
      accepts(S.integer():coerce():valid(1, 2), "2", 2)
    end)

    it("allow accepts extra values as they are", function()
      local s = S.string():min(3):allow(S.null, "")
      accepts(s, S.null, S.null)
      accepts(s, "", "")
      rejects(s, "ab", { rule = "min" })
    end)

    it("needs at least one non-nil value", function()
      raises(function() S.string():valid() end, "at least one value")
      raises(function() S.string():valid("a", nil) end, "cannot be nil")
    end)
  end)

  describe("coercion", function()
    it("turns numeric strings into numbers when asked", function()
      accepts(S.number():coerce(), "42", 42)
      accepts(S.number():coerce(), "1e3", 1000.0)
      accepts(S.number():coerce(), " 2.5 ", 2.5)
      rejects(S.number():coerce(), "abc", { rule = "type" })
      rejects(S.number():coerce(), "", { rule = "type" })
      rejects(S.number():coerce(), "inf", { rule = "type" })
      rejects(S.number():coerce():min(50), "42", {
        message = '"value" must be >= 50 (rule min, got 42)', value = 42,
      })
    end)

    it("turns integral strings into integers", function()
      local v = accepts(S.integer():coerce(), "7", 7)
      assert.equal("integer", math.type(v))
      rejects(S.integer():coerce(), "7.5", { rule = "type" })
    end)

    it('turns "true" and "false" into booleans', function()
      accepts(S.boolean():coerce(), "true", true)
      accepts(S.boolean():coerce(), "false", false)
      rejects(S.boolean():coerce(), "yes", { rule = "type" })
    end)

    it("does nothing unless asked", function()
      rejects(S.number(), "42", { rule = "type" })
    end)

    it("the coerce option applies to schemas without their own setting", function()
      local s = S.object { a = S.number(), b = S.number():coerce(false) }
      accepts(s, { a = "1" }, { a = 1 }, { coerce = true })
      rejects(s, { b = "1" }, { field = "b", rule = "type" }, { coerce = true })
    end)

    it("applies to number, integer and boolean schemas only", function()
      raises(function() S.string():coerce() end, "coerce applies to number, integer and boolean")
    end)
  end)

  describe("tables", function()
    local user = S.object {
      name = S.string():required(),
      age = S.integer():min(0),
    }

    it("validates fields and returns a new table", function()
      local input = { name = "ann", age = 3 }
      local v = accepts(user, input, { name = "ann", age = 3 })
      assert.are_not.equal(input, v)
    end)

    it("rejects unknown keys by default, naming the key", function()
      rejects(user, { name = "ann", x = 1 }, {
        message = '"x" is not allowed (rule unknown, got 1)', field = "x", rule = "unknown", value = 1,
      })
    end)

    it("allows or strips unknown keys with the unknown option", function()
      accepts(user, { name = "ann", x = 1 }, { name = "ann", x = 1 }, { unknown = "allow" })
      accepts(user, { name = "ann", x = 1 }, { name = "ann" }, { unknown = "strip" })
    end)

    it(":unknown() overrides the option, :unknown(false) still strips under strip", function()
      local open = user:unknown()
      accepts(open, { name = "a", x = 1 }, { name = "a", x = 1 })
      accepts(open, { name = "a", x = 1 }, { name = "a", x = 1 }, { unknown = "strip" })
      local closed = user:unknown(false)
      rejects(closed, { name = "a", x = 1 }, { rule = "unknown" }, { unknown = "allow" })
      accepts(closed, { name = "a", x = 1 }, { name = "a" }, { unknown = "strip" })
    end)

    it("S.object() without fields takes any keys", function()
      accepts(S.object(), { x = 1, [2] = "b" }, { x = 1, [2] = "b" })
      accepts(S.object(), { x = 1 }, { x = 1 }, { unknown = "strip" })
    end)

    it("reports the first failing field in key order", function()
      local s = S.object { b = S.number(), a = S.number(), c = S.number() }
      rejects(s, { a = "x", b = "x", c = "x" }, { field = "a" })
      rejects(S.object { a = S.number() }, { z = 1, y = 2, a = 1 }, { field = "y" })
    end)

    it("reads plain nested tables as objects", function()
      local s = S.object { address = { city = S.string():required() } }
      accepts(s, { address = { city = "x" } })
      rejects(s, { address = {} }, { message = '"address.city" is required (rule required, got nil)' })
    end)

    it("names nested fields with dotted paths and 1-based indices", function()
      local s = S.object {
        items = S.array(S.object { name = S.string():required() }),
      }
      local err = rejects(s, { items = { { name = "a" }, { name = 5 } } }, {
        message = '"items[2].name" must be a string (rule type, got 5)', field = "items[2].name",
      })
      assert.same({ "items", 2, "name" }, err.path)
      rejects(s, { items = { {} } }, { field = "payload.items[1].name" }, { label = "payload" })
      rejects(S.object { ["a-b"] = S.number() }, { ["a-b"] = "x" }, { field = '["a-b"]' })
      rejects(S.number(), "x", { field = "payload" }, { label = "payload" })
    end)

    it("keys() adds and replaces fields", function()
      local s = user:keys { age = S.integer():max(10), email = S.string() }
      accepts(s, { name = "a", age = 9, email = "e" })
      rejects(s, { name = "a", age = 11 }, { field = "age", rule = "max" })
      accepts(user, { name = "a", age = 11 }) -- the original is unchanged
    end)

    it("returns a new table under every policy, the input left as it was", function()
      local input = { a = "1", b = 2, [1] = "x", [2] = "y" }
      for _, policy in ipairs { "allow", "strip" } do
        local v = accepts(S.object { a = S.number():coerce() }, input, nil, { unknown = policy })
        assert.are_not.equal(input, v)
        assert.equal(1, v.a)
        assert.same({ a = "1", b = 2, [1] = "x", [2] = "y" }, input)
        if policy == "allow" then
          assert.same({ a = 1, b = 2, [1] = "x", [2] = "y" }, v)
        else
          assert.same({ a = 1 }, v)
        end
      end
      -- core.copy, under the allow policy: a shallow copy at the table's size.
      local inner = {}
      local c = core.copy { 1, 2, x = inner, [10] = true }
      assert.same({ 1, 2, x = inner, [10] = true }, c)
      assert.equal(inner, c.x)
      assert.same({}, core.copy {})
      assert.is_nil(getmetatable(core.copy(setmetatable({}, { __index = {} }))))
    end)

    it("copies the metatable of the validated table", function()
      local mt = { __jsonorder = { "b", "a" } }
      local v = accepts(S.object { a = S.number() }, setmetatable({ a = 1, b = 2 }, mt), nil, { unknown = "allow" })
      assert.equal(mt, getmetatable(v))
    end)
  end)

  describe("arrays", function()
    it("validates every item against the item schema", function()
      local s = S.array(S.integer():min(0))
      accepts(s, { 1, 2.0, 3 }, { 1, 2, 3 })
      rejects(s, { 1, -2 }, { message = '"[2]" must be >= 0 (rule min, got -2)', field = "[2]" })
      rejects(s, { 1, "x" }, { field = "[2]", rule = "type" })
    end)

    it("reads a plain table item as an object schema", function()
      local s = S.array { id = S.integer():required() }
      accepts(s, { { id = 1 } })
      rejects(s, { { id = 1 }, {} }, { field = "[2].id", rule = "required" })
    end)

    it("walks core.array holes as absent items", function()
      local v = accepts(S.array(S.number():default(0)), core.array { 1, nil, 3 })
      assert.same({ 1, 0, 3 }, v)
      rejects(S.array(S.number():required()), core.array { [2] = 1 }, { field = "[1]", rule = "required" })
    end)
  end)

  describe("custom", function()
    it("runs a check of your own", function()
      local even = S.integer():custom(function(v) return v % 2 == 0, "must be even" end, "even")
      accepts(even, 4, 4)
      rejects(even, 3, { message = '"value" must be even (rule even, got 3)', rule = "even" })
      rejects(S.any():custom(function() return false end), 1, {
        message = '"value" must pass the custom check (rule custom, got 1)',
      })
    end)
  end)

  describe("describe", function()
    it("gives a plain, encodable description", function()
      local s = S.object {
        a = S.number():required():min(0):default(1),
        tags = S.array(S.string():valid("x", "y")):max(3),
      }:unknown(false)
      assert.same({
        type = "object",
        flags = { unknown = false },
        children = {
          a = { type = "number", flags = { presence = "required", default = 1 }, rules = { { name = "min", arg = 0 } } },
          tags = {
            type = "array",
            rules = { { name = "max", arg = 3 } },
            items = { type = "string", valid = { "x", "y" } },
          },
        },
      }, s:describe())
      assert.is_string(core.encode(s:describe()))
      assert.same({ type = "integer", flags = { coerce = true, default = "[function]" }, allow = { "n" } },
        S.integer():coerce():default(function() end):allow("n"):describe())
    end)
  end)

  describe("immutability", function()
    it("rules return new schemas and leave the original alone", function()
      local base = S.number()
      local strict = base:min(0):required()
      assert.are_not.equal(base, strict)
      accepts(base, -5, -5)
      accepts(base, nil)
      rejects(strict, -5, { rule = "min" })
      assert.same({ type = "number" }, base:describe())
    end)

    it("validation never modifies its input", function()
      local schema = S.object {
        n = S.integer():coerce(),
        d = S.string():default("x"),
        list = S.array(S.object { v = S.number():default(1) }),
      }
      local input = { n = "5", list = { {}, { v = 2 } }, extra = { 1 } }
      local snapshot = { n = "5", list = { {}, { v = 2 } }, extra = { 1 } }
      local v = accepts(schema, input, nil, { unknown = "strip" })
      assert.same(snapshot, input)
      assert.same({ n = 5, d = "x", list = { { v = 1 }, { v = 2 } } }, v)
      assert.are_not.equal(input.list, v.list)
      assert.are_not.equal(input.list[1], v.list[1])
      -- nor when it fails after filling defaults in the copy
      local bad = { n = "x", list = { {} } }
      assert.equal("n", failure(validator(schema), bad).field)
      assert.same({ n = "x", list = { {} } }, bad)
    end)
  end)

  describe("schema mistakes raise HemeraError when built", function()
    it("names the misuse", function()
      raises(function() S.boolean():min(1) end, "min does not apply to boolean schemas")
      raises(function() S.string():min(-1) end, "min expects an integer >= 0")
      raises(function() S.string():max(1.5) end, "max expects an integer >= 0")
      raises(function() S.number():min("1") end, "min expects a number")
      raises(function() S.number():length(2) end, "length does not apply to number schemas")
      raises(function() S.string():unknown() end, "unknown applies to object schemas")
      raises(function() S.number():keys {} end, "keys applies to object schemas")
      raises(function() S.number():default(nil) end, "default needs a value")
      raises(function() S.number():custom("x") end, "custom expects a function")
      raises(function() S.object { a = 5 } end, 'field a is not a schema (got 5)')
      raises(function() S.array(5) end, "S.array item is not a schema")
      raises(function() S.compile(5) end, "S.compile spec is not a schema")
      raises(function() S.number():validate(1, { unknown = "maybe" }) end, "option unknown must be")
    end)
  end)

  describe("S.compile", function()
    it("compiles a table of fields into a validator", function()
      local check = S.compile { a = S.number():required(), b = S.number():min(0):default(0) }
      local v, err = check { a = 1 }
      assert.is_nil(err)
      assert.same({ a = 1, b = 0 }, v)
      local e = failure(check, { a = 1, b = -1 })
      assert.equal('"b" must be >= 0 (rule min, got -1)', e.message)
      assert.equal('ValidationError: "b" must be >= 0 (rule min, got -1)', tostring(e))
    end)

    it("compiles a schema, with options", function()
      local check = S.compile(S.number():coerce(), { label = "n" })
      assert.equal(5, check("5"))
      assert.equal('"n" must be a number (rule type, got "x")', failure(check, "x").message)
    end)
  end)

  describe("errors", function()
    it("are the shared ValidationError class and go on the wire", function()
      assert.equal(errors.registry.ValidationError, S.ValidationError)
      assert.equal(require("hemera.validation.jsonschema").ValidationError, S.ValidationError)
      local err = failure(S.compile { a = S.array():max(1) }, { a = { 1, 2 } })
      local wire = core.decode(core.encode(errors.to_wire(err)))
      assert.equal("ValidationError", wire.name)
      assert.equal("a", wire.field)
      assert.equal("max", wire.rule)
      assert.equal(1, wire.limit)
      assert.same({ 1, 2 }, wire.value)
      assert.same({ "a" }, wire.path)
    end)

    it("quote and cut long strings in messages", function()
      local err = failure(validator(S.string():max(3)), ("x"):rep(100) .. "\n")
      assert.equal('"value" must have at most 3 characters (rule max, got "' .. ("x"):rep(57) .. '...")', err.message)
      err = failure(validator(S.number()), 'a"b\n')
      assert.equal([["value" must be a number (rule type, got "a\"b\n")]], err.message)
    end)
  end)

  describe("Hemera compilers", function()
    -- The schema Hemera passes: the table-valued keys of the add pattern.
    local function action(pattern)
      local schema = {}
      for k, v in pairs(pattern) do
        if type(v) == "table" then schema[k] = v end
      end
      return schema
    end

    local pattern = {
      topic = "math", cmd = "add",
      a = S.number():required(),
      b = S.number():default(0),
      ["auth$"] = { scope = "math" },
    }

    it("validates the fields the action names and keeps every other key", function()
      local check = S.compiler(action(pattern))
      local req = { topic = "math", cmd = "add", a = 1, extra = { 1 }, ["meta$"] = { x = 1 } }
      local v, err = check(req)
      assert.is_nil(err)
      assert.same({ topic = "math", cmd = "add", a = 1, b = 0, extra = { 1 }, ["meta$"] = { x = 1 } }, v)
      assert.is_nil(req.b)
      local e = failure(check, { topic = "math", cmd = "add", a = "1" })
      assert.equal('"a" must be a number (rule type, got "1")', e.message)
      e = failure(check, { topic = "math", cmd = "add" })
      assert.equal('"a" is required (rule required, got nil)', e.message)
    end)

    it("ignores routing keys and $ keys of the schema table itself", function()
      -- the whole pattern given, scalars included
      local check = S.compiler(pattern)
      assert.same({ topic = "math", cmd = "add", a = 2, b = 0 }, (check { topic = "math", cmd = "add", a = 2 }))
      assert.same({ topic = "x", a = 1, b = 0 }, (check { topic = "x", a = 1 }))
    end)

    it("returns nil for actions without a schema", function()
      assert.is_nil(S.compiler {})
      assert.is_nil(S.compiler { ["auth$"] = { scope = "x" } })
      assert.is_nil(S.compiler(nil))
      assert.is_nil(S.response_compiler { a = S.number() })
      assert.is_nil(S.response_compiler(nil))
    end)

    it("uses joi$ or preJoi$ as the request schema", function()
      local check = S.compiler { ["joi$"] = S.object { c = S.number():required() }, a = S.string() }
      assert.equal('"c" is required (rule required, got nil)', failure(check, { topic = "t", a = 1 }).message)
      check = S.compiler { ["preJoi$"] = { c = S.number():default(100) } }
      assert.same({ topic = "t", c = 100 }, (check { topic = "t" }))
      check = S.compiler { ["joi$"] = { a = S.number() }, ["preJoi$"] = { a = S.string() } }
      assert.same({ a = 1 }, (check { a = 1 }))
    end)

    it("validates the request even when the action has a postJoi$", function()
      local check = S.compiler { a = S.number():required(), ["postJoi$"] = S.number() }
      assert.equal("a", failure(check, { topic = "t" }).field)
    end)

    it("validates responses against postJoi$, naming the value response", function()
      local check = S.response_compiler(action { topic = "math", ["postJoi$"] = S.number():required() })
      assert.equal(3, check(3))
      local e = failure(check, "string")
      assert.equal('"response" must be a number (rule type, got "string")', e.message)
      assert.equal("response", e.field)
      assert.equal('"response" is required (rule required, got nil)', failure(check, nil).message)
      local v, err = S.response_compiler { ["postJoi$"] = S.number() }(nil)
      assert.is_nil(v)
      assert.is_nil(err)
    end)

    it("strips unknown keys of responses, at every level", function()
      local check = S.response_compiler {
        ["postJoi$"] = { result = S.number():required(), inner = { x = S.number() } },
      }
      local out = { result = 3, test = 1, inner = { x = 1, y = 2 } }
      assert.same({ result = 3, inner = { x = 1 } }, (check(out)))
      assert.same({ result = 3, test = 1, inner = { x = 1, y = 2 } }, out)
      assert.equal('"response.result" is required (rule required, got nil)', failure(check, {}).message)
    end)

    it("compilers(opts): base schemas, pattern keys, options, coercion", function()
      local compiler, response_compiler = S.compilers {
        basePreSchema = { topic = S.string():required() },
        basePostSchema = { userId = S.number():required() },
        patternKeys = { post = "out$" },
        pre = { unknown = "reject" },
        coerce = true,
      }
      local check = compiler { a = S.number():required() }
      assert.same({ topic = "t", a = 1, ["x$"] = 1 }, (check { topic = "t", a = "1", ["x$"] = 1 }))
      assert.equal("topic", failure(check, { a = 1 }).field)
      assert.equal("cmd", failure(check, { topic = "t", cmd = "x", a = 1 }).field)
      -- a base schema alone validates every action
      assert.equal("topic", failure(compiler {}, {}).field)
      local respond = response_compiler {}
      assert.equal('"response.userId" must be a number (rule type, got "x")', failure(respond, { userId = "x" }).message)
      assert.same({ userId = 1 }, (respond { userId = "1", other = 2 }))
      respond = response_compiler { ["out$"] = { n = S.number() } }
      assert.same({ n = 2, userId = 3 }, (respond { n = 2, userId = 3, z = 1 }))
      -- the action's own fields win over the base ones
      check = compiler { topic = S.string():valid("only") }
      assert.equal("valid", failure(check, { topic = "t" }).rule)
    end)

    it("the plugin sets both compilers on the instance", function()
      assert.equal(false, S.plugin.scoped)
      assert.is_string(S.plugin.name)
      local set = {}
      local fake = {
        setSchemaCompiler = function(self, fn) set.pre = fn end,
        setResponseSchemaCompiler = function(self, fn) set.post = fn end,
      }
      S.plugin.register(fake, {})
      assert.equal(S.compiler, set.pre)
      assert.equal(S.response_compiler, set.post)
      S.plugin.register(fake, { coerce = true })
      assert.are_not.equal(S.compiler, set.pre)
      assert.same({ a = 1 }, (set.pre { a = S.number() } { a = "1" }))
    end)
  end)
end)
