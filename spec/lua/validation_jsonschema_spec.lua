-- validation.jsonschema: a draft-07 subset, the regex translator and the
-- hemera-ajv compilers.
local J = require "validation.jsonschema"
local core = require "hemera.core"
local errors = require "hemera.errors"

local function failure(fn, value)
  local v, err = fn(value)
  assert.is_nil(v)
  assert.is_true(J.ValidationError:is(err), "expected a ValidationError, got " .. tostring(err))
  return err
end

-- Asserts the error of validating `value` against `schema`.
local function rejects(schema, value, expect, opts)
  local err = failure(J.compile(schema, opts), value)
  assert.equal("ValidationError", err.name)
  if expect.message then assert.equal(expect.message, err.message) end
  if expect.field then assert.equal(expect.field, err.field) end
  if expect.keyword then
    assert.equal(expect.keyword, err.keyword)
    assert.equal(expect.keyword, err.rule)
  end
  if expect.limit ~= nil then assert.same(expect.limit, err.limit) end
  if expect.value ~= nil then assert.same(expect.value, err.value) end
  if expect.schemaPath then assert.equal(expect.schemaPath, err.schemaPath) end
  return err
end

local function accepts(schema, value, expected, opts)
  local v, err = J.compile(schema, opts)(value)
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

describe("validation.jsonschema", function()
  describe("regex translation", function()
    local cases = {
      { "^[a-z]+$", { "^[a-z]+$" } },
      { "abc", { "abc" } },
      { "a.b", { "a[^\n\r]b" } },
      { "^\\d{3}-\\d{2,4}$", { "^%d%d%d%-%d%d%d?%d?$" } },
      { "^\\w+\\s*\\S?$", { "^[%w_]+%s*%S?$" } },
      { "\\W\\D", { "[^%w_]%D" } },
      { "x{2,}", { "xxx*" } },
      { "x{0,}y{1,}", { "x*y+" } },
      { "a+?b*?c??", { "a+b*c?" } },
      { "^[\\w.-]+@[\\w-]+\\.[a-z]{2,}$", { "^[%w_.%-]+@[%w_%-]+%.[a-z][a-z][a-z]*$" } },
      { "[^\\s]", { "[^%s]" } },
      { "[\\d\\s_]", { "[%d%s_]" } },
      { "[!-/]", { "[!\"#$%%&'()*+,%-./]" } },
      { "[\\]\\^]", { "[%]%^]" } },
      { "[a-]", { "[a%-]" } },
      { "\\$\\(\\)\\*\\+\\.\\?\\[\\]\\^\\{\\}\\|\\/", { "%$%(%)%*%+%.%?%[%]%^{}|/" } },
      { "%", { "%%" } },
      { "\\x41\\u0042\\t", { "AB\t" } },
      { "\\u00e9t\\u00e9", { "été" } },
      { "^é$", { "^é$" } },
      { "a{,2}", { "a{,2}" } },
      { "^(GET|POST) /x$", { "^GET /x$", "^POST /x$" } },
      { "^(a|b)(c|d)$", { "^ac$", "^ad$", "^bc$", "^bd$" } },
      { "^v(?:\\d+)?$", { "^v%d+$", "^v$" } },
      { "(\\d)+x", { "%d+x" } },
      { "([ab]){2}", { "[ab][ab]" } },
      { "(abc)", { "abc" } },
      { "a|b$", { "a", "b$" } },
      { "(^a|b)", { "^a", "b" } },
      { "x(|y)", { "x", "xy" } },
    }
    for _, case in ipairs(cases) do
      it(("translates %s"):format(case[1]), function()
        local patterns, err = J.translate(case[1])
        assert.is_nil(err)
        assert.same(case[2], patterns)
      end)
    end

    it("matches like the ECMAScript regex", function()
      local function check(source, yes, no)
        local m = assert(J.regex(source))
        for _, s in ipairs(yes) do assert.is_true(m(s), source .. " should match " .. s) end
        for _, s in ipairs(no) do assert.is_false(m(s), source .. " should not match " .. s) end
      end
      check("^(GET|POST) /x$", { "GET /x", "POST /x" }, { "PUT /x", "GET /xy", "xGET /x" })
      check("^\\d{3}-\\d{2,4}$", { "123-45", "123-4567" }, { "123-4", "123-45678", "12-45" })
      check("a.c", { "abc", "xa-cx" }, { "a\nc", "ac" })
      check("^v(?:\\d+)?$", { "v", "v12" }, { "vx", "v1x" })
      check("^[^\\s]+$", { "abc" }, { "a b", "" })
      check("colou?r", { "color", "the colour" }, { "colr" })
      check("^[\\w.-]+@[\\w-]+\\.[a-z]{2,}$", { "a.b-c@d-e.org" }, { "a@b.c", "a b@c.de" })
      check("^(a|b)?c$", { "c", "ac", "bc" }, { "abc" })
      check("^$", { "" }, { "x" })
      check("^[a-z]{3,5}$", { "abc", "abcde" }, { "ab", "abcdef", "abC" })
      check("x{2}", { "axxb" }, { "axb" })
    end)

    it("matches counted repeats without exponential backtracking", function()
      local m = assert(J.regex("^a{0,100}b{0,40}$"))
      local t = os.clock()
      assert.is_false(m(("a"):rep(101)))
      assert.is_true(m(("a"):rep(100) .. ("b"):rep(40)))
      assert.is_false(m(("a"):rep(60) .. "c"))
      m = assert(J.regex("[a-z]{1,64}@x"))
      assert.is_false(m(("a"):rep(5000)))
      assert.is_true(os.clock() - t < 2, "took " .. (os.clock() - t) .. " s")
    end)

    it("rejects constructs it cannot translate, with the reason", function()
      local cases = {
        { "\\bword", "word boundaries (\\b, \\B) are not supported (at character 1)" },
        { "(a)\\1", "backreferences are not supported (at character 4)" },
        { "(?=a)", "lookarounds and named groups are not supported (at character 1)" },
        { "(?<n>a)", "lookarounds and named groups are not supported" },
        { "(ab)+", "quantifiers on groups are not supported (except '?') (at character 1)" },
        { "é+", "quantifiers on non-ASCII characters are not supported" },
        { "[é]", "non-ASCII characters in a character class are not supported" },
        { "x^", "'^' is only supported at the start" },
        { "$x", "'$' is only supported at the end" },
        { "*a", "nothing to repeat" },
        { "a**", "nothing to repeat" },
        { "x{3,1}", "numbers out of order in {} quantifier" },
        { "x{1,5000}", "{} quantifier bounds above 1000 are not supported" },
        { "(a", "missing ')'" },
        { "a)", "unmatched ')'" },
        { "[a", "unterminated character class" },
        { "[]", "empty character classes" },
        { "[z-a]", "range out of order" },
        { "[\\W]", "\\W inside a character class is not supported" },
        { "\\p{L}", "unsupported escape \\p" },
        { "\\xZZ", "invalid \\x escape" },
        { "\\ud800", "surrogate code points are not supported" },
        { "\\", "pattern ends with '\\'" },
        { "^$^", "'$' is only supported at the end" },
        { "(a|b)(c|d)(e|f)(g|h)(i|j)(k|l)(m|n)", "too many alternatives" },
      }
      for _, case in ipairs(cases) do
        local patterns, err = J.translate(case[1])
        assert.is_nil(patterns, case[1])
        assert.matches(case[2], err, 1, true)
      end
      assert.same({ nil, "pattern must be a string" }, { J.translate(5) })
    end)
  end)

  describe("type", function()
    it("checks each JSON type", function()
      accepts({ type = "string" }, "x", "x")
      accepts({ type = "number" }, 1.5, 1.5)
      accepts({ type = "boolean" }, false, false)
      accepts({ type = "null" }, core.null, core.null)
      accepts({ type = "object" }, { a = 1 }, { a = 1 })
      accepts({ type = "array" }, { 1, 2 }, { 1, 2 })
      rejects({ type = "string" }, 1, {
        message = '"value" must be of type string (keyword type, got 1)',
        field = "", keyword = "type", limit = "string", value = 1, schemaPath = "#/type",
      })
      rejects({ type = "number" }, "1", { message = '"value" must be of type number (keyword type, got "1")' })
      rejects({ type = "number" }, 0 / 0, { keyword = "type" })
      rejects({ type = "boolean" }, 0, { keyword = "type" })
      rejects({ type = "null" }, false, { message = '"value" must be of type null (keyword type, got false)' })
      rejects({ type = "object" }, { 1 }, { message = '"value" must be of type object (keyword type, got an array of 1 item)' })
      rejects({ type = "array" }, { a = 1 }, { message = '"value" must be of type array (keyword type, got an object)' })
      rejects({ type = "object" }, nil, { message = '"value" must be of type object (keyword type, got nil)' })
    end)

    it("integer accepts integral floats, as JSON does, returning Lua integers", function()
      local v = accepts({ type = "integer" }, 2.0, 2)
      assert.equal("integer", math.type(v))
      accepts({ type = "number" }, 2, 2)
      rejects({ type = "integer" }, 2.5, { message = '"value" must be of type integer (keyword type, got 2.5)' })
    end)

    it("accepts a list of types", function()
      local s = { type = { "string", "null" } }
      accepts(s, "a")
      accepts(s, core.null)
      local err = rejects(s, 1, { message = '"value" must be of type string or null (keyword type, got 1)' })
      assert.same({ "string", "null" }, err.limit)
    end)

    it("a plain {} is both an object and an array; arrays come back marked", function()
      accepts({ type = "object" }, {}, {})
      local v = accepts({ type = "array" }, {})
      assert.equal("[]", core.encode(v))
      v = accepts({ type = "object" }, {})
      assert.equal("{}", core.encode(v))
      assert.equal("[]", core.encode(accepts({ items = { type = "number" } }, {})))
    end)

    it("without type, other types pass the type-specific keywords", function()
      accepts({ minimum = 3, minLength = 2, required = { "a" }, minItems = 1 }, true, true)
      accepts({ minimum = 3 }, "x")
      accepts({ maxLength = 1 }, 10)
      accepts({ required = { "a" } }, { 1 })
    end)
  end)

  describe("enum and const", function()
    it("enum compares JSON values", function()
      local s = { enum = { "a", 1, { x = 1 }, core.null } }
      accepts(s, "a")
      accepts(s, 1.0)
      accepts(s, { x = 1 })
      accepts(s, core.null)
      local err = rejects(s, "b", {
        message = '"value" must be one of "a", 1, an object, null (keyword enum, got "b")', keyword = "enum",
      })
      assert.same({ "a", 1, { x = 1 }, core.null }, err.limit)
      rejects(s, { x = 2 }, { keyword = "enum" })
    end)

    it("const requires one value", function()
      accepts({ const = 5 }, 5)
      accepts({ const = { 1, 2 } }, { 1, 2 })
      rejects({ const = 5 }, 6, {
        message = '"value" must be equal to 5 (keyword const, got 6)', keyword = "const", limit = 5,
      })
      rejects({ const = { 1, 2 } }, { 2, 1 }, { keyword = "const" })
      rejects({ const = false }, true, { keyword = "const" })
    end)
  end)

  describe("numbers", function()
    it("minimum and maximum are inclusive", function()
      local s = { type = "number", minimum = 0, maximum = 10 }
      accepts(s, 0)
      accepts(s, 10)
      rejects(s, -1, {
        message = '"value" must be >= 0 (keyword minimum, got -1)', keyword = "minimum", limit = 0,
        value = -1, schemaPath = "#/minimum",
      })
      rejects(s, 10.5, { message = '"value" must be <= 10 (keyword maximum, got 10.5)', limit = 10 })
    end)

    it("exclusiveMinimum and exclusiveMaximum (draft-07 numbers)", function()
      local s = { exclusiveMinimum = 0, exclusiveMaximum = 1 }
      accepts(s, 0.5)
      rejects(s, 0, { message = '"value" must be > 0 (keyword exclusiveMinimum, got 0)', limit = 0 })
      rejects(s, 1, { message = '"value" must be < 1 (keyword exclusiveMaximum, got 1)', limit = 1 })
    end)

    it("exclusiveMinimum and exclusiveMaximum (draft-04 booleans)", function()
      local s = { minimum = 0, exclusiveMinimum = true, maximum = 1, exclusiveMaximum = true }
      accepts(s, 0.5)
      rejects(s, 0, { message = '"value" must be > 0 (keyword minimum, got 0)' })
      rejects(s, 1, { message = '"value" must be < 1 (keyword maximum, got 1)' })
      accepts({ minimum = 0, exclusiveMinimum = false }, 0)
    end)

    it("multipleOf", function()
      accepts({ multipleOf = 3 }, 9)
      accepts({ multipleOf = 0.1 }, 0.3)
      accepts({ multipleOf = 0.5 }, 2)
      rejects({ multipleOf = 3 }, 10, {
        message = '"value" must be a multiple of 3 (keyword multipleOf, got 10)', limit = 3,
      })
      rejects({ multipleOf = 0.1 }, 0.35, { keyword = "multipleOf" })
    end)
  end)

  describe("strings", function()
    it("minLength and maxLength count UTF-8 characters", function()
      local s = { type = "string", minLength = 2, maxLength = 4 }
      accepts(s, "éé") -- 2 characters, 4 bytes
      accepts(s, "ñaña")
      rejects(s, "é", {
        message = '"value" must have at least 2 characters (keyword minLength, got "é")',
        keyword = "minLength", limit = 2,
      })
      rejects(s, "ñañaña", { message = '"value" must have at most 4 characters (keyword maxLength, got "ñañaña")' })
      rejects({ minLength = 1 }, "", { message = '"value" must have at least 1 character (keyword minLength, got "")' })
    end)

    it("pattern matches anywhere unless anchored", function()
      accepts({ pattern = "\\d" }, "ab1")
      accepts({ pattern = "^(GET|POST)$" }, "POST")
      rejects({ pattern = "^[a-z]+$" }, "abC", {
        message = '"value" must match pattern "^[a-z]+$" (keyword pattern, got "abC")',
        keyword = "pattern", limit = "^[a-z]+$", schemaPath = "#/pattern",
      })
    end)

    it("an untranslatable pattern raises at compile time", function()
      raises(function() J.compile { properties = { a = { pattern = "(?!x)" } } } end,
        '#/properties/a/pattern "(?!x)": lookarounds and named groups are not supported')
    end)
  end)

  describe("arrays", function()
    it("items validates every element, with 0-based pointers", function()
      local s = { type = "array", items = { type = "integer", minimum = 0 } }
      accepts(s, { 1, 2.0 }, { 1, 2 })
      local err = rejects(s, { 1, -2 }, {
        message = '"/1" must be >= 0 (keyword minimum, got -2)', field = "/1",
        schemaPath = "#/items/minimum",
      })
      assert.same({ 1 }, err.path)
      accepts(s, core.decode("[3,4]"), { 3, 4 })
    end)

    it("minItems and maxItems", function()
      local s = { minItems = 1, maxItems = 2 }
      accepts(s, { 1 })
      rejects(s, {}, {
        message = '"value" must have at least 1 item (keyword minItems, got an empty table)', keyword = "minItems",
      })
      rejects(s, { 1, 2, 3 }, {
        message = '"value" must have at most 2 items (keyword maxItems, got an array of 3 items)', limit = 2,
      })
    end)

    it("uniqueItems compares JSON values", function()
      accepts({ uniqueItems = true }, { 1, 2, { a = 1 }, "1", true })
      accepts({ uniqueItems = false }, { 1, 1 })
      rejects({ uniqueItems = true }, { "a", 1, 2, 1.0 }, {
        message = '"value" must not contain duplicate items (items 1 and 3 are equal) (keyword uniqueItems, got an array of 4 items)',
        keyword = "uniqueItems",
      })
      rejects({ uniqueItems = true }, { false, false }, { keyword = "uniqueItems" })
      rejects({ uniqueItems = true }, { 1, { a = 1 }, { a = 1 } }, {
        message = '"value" must not contain duplicate items (items 1 and 2 are equal) (keyword uniqueItems, got an array of 3 items)',
      })
    end)

    it("tuple items and additionalItems", function()
      local s = { items = { { type = "string" }, { type = "number" } }, additionalItems = false }
      accepts(s, { "a", 1 })
      accepts(s, { "a" })
      rejects(s, { 1, 1 }, { field = "/0", keyword = "type", schemaPath = "#/items/0/type" })
      rejects(s, { "a", 1, true }, { field = "/2", keyword = "false" })
      s.additionalItems = { type = "boolean" }
      accepts(s, { "a", 1, true, false })
      rejects(s, { "a", 1, "x" }, { field = "/2", keyword = "type" })
      accepts({ items = { { type = "string" } } }, { "a", 1 })
    end)
  end)

  describe("objects", function()
    local person = {
      type = "object",
      properties = {
        name = { type = "string" },
        age = { type = "integer", minimum = 0 },
        address = {
          type = "object",
          properties = { city = { type = "string" } },
          required = { "city" },
        },
      },
      required = { "name" },
    }

    it("validates properties and returns a new table", function()
      local input = { name = "ann", age = 3, extra = true }
      local v = accepts(person, input, { name = "ann", age = 3, extra = true })
      assert.are_not.equal(input, v)
    end)

    it("required names the missing property", function()
      local err = rejects(person, { age = 1 }, {
        message = '"/name" is required (keyword required, got nil)', field = "/name",
        keyword = "required", limit = "name", schemaPath = "#/required",
      })
      assert.same({ "name" }, err.path)
      rejects(person, { name = "a", address = {} }, {
        message = '"/address/city" is required (keyword required, got nil)',
        schemaPath = "#/properties/address/required",
      })
    end)

    it("names nested failures with a JSON pointer", function()
      rejects(person, { name = "a", address = { city = 5 } }, {
        message = '"/address/city" must be of type string (keyword type, got 5)', field = "/address/city",
        schemaPath = "#/properties/address/properties/city/type",
      })
      rejects({ properties = { ["a/b~c"] = { type = "number" } } }, { ["a/b~c"] = "x" }, { field = "/a~1b~0c" })
      local deep = { properties = { items = { items = { properties = { name = { type = "string" } } } } } }
      rejects(deep, { items = { { name = "a" }, { name = 1 } } }, { field = "/items/1/name" })
    end)

    it("additionalProperties false rejects other keys, in key order", function()
      local s = { properties = { a = {} }, additionalProperties = false }
      accepts(s, { a = 1 })
      rejects(s, { a = 1, z = 1, b = 2 }, {
        message = '"/b" is not allowed (keyword additionalProperties, got 2)', field = "/b",
        keyword = "additionalProperties", value = 2, limit = false,
      })
      accepts({ additionalProperties = true }, { x = 1 })
    end)

    it("additionalProperties as a schema validates the other keys", function()
      local s = { properties = { a = {} }, additionalProperties = { type = "number" } }
      accepts(s, { a = "x", b = 1 })
      rejects(s, { a = "x", b = "y" }, { field = "/b", keyword = "type" })
    end)

    it("minProperties and maxProperties", function()
      rejects({ minProperties = 2 }, { a = 1 }, {
        message = '"value" must have at least 2 properties (keyword minProperties, got an object)',
      })
      rejects({ maxProperties = 1 }, { a = 1, b = 2 }, {
        message = '"value" must have at most 1 property (keyword maxProperties, got an object)', limit = 1,
      })
      accepts({ minProperties = 1, maxProperties = 1 }, { a = 1 })
    end)

    it("keeps the metatable of the validated table", function()
      local mt = { __jsonorder = { "b", "a" } }
      local v = accepts({ type = "object" }, setmetatable({ a = 1, b = 2 }, mt))
      assert.equal(mt, getmetatable(v))
    end)
  end)

  describe("defaults", function()
    local s = {
      type = "object",
      properties = {
        page = {
          type = "object",
          default = {},
          properties = { size = { type = "integer", default = 20 }, tags = { default = { "a" } } },
        },
        name = { type = "string", default = "anon" },
      },
      required = { "name" },
    }

    it("fill absent properties, nested ones too, and satisfy required", function()
      accepts(s, {}, { page = { size = 20, tags = { "a" } }, name = "anon" })
      accepts(s, { page = { size = 5 }, name = "x" }, { page = { size = 5, tags = { "a" } }, name = "x" })
    end)

    it("are copied for each validation", function()
      local check = J.compile(s)
      local one, two = check {}, check {}
      assert.are_not.equal(one.page.tags, two.page.tags)
      one.page.tags[2] = "b"
      assert.same({ "a" }, check({}).page.tags)
    end)

    it("are validated like given values", function()
      rejects({ properties = { n = { type = "integer", default = "x" } } }, {}, { field = "/n", keyword = "type" })
    end)

    it("are left out with useDefaults = false", function()
      rejects(s, {}, { field = "/name", keyword = "required" }, { useDefaults = false })
      accepts({ properties = { a = { default = 1 } } }, {}, {}, { useDefaults = false })
    end)
  end)

  describe("coerceTypes", function()
    local s = {
      properties = {
        n = { type = "number" }, i = { type = "integer" }, b = { type = "boolean" }, s = { type = "string" },
      },
    }

    it("converts scalars to the schema's type", function()
      local v = accepts(s, { n = "1.5", i = "7", b = "false", s = 12 }, { n = 1.5, i = 7, b = false, s = "12" },
        { coerceTypes = true })
      assert.equal("integer", math.type(v.i))
      accepts(s, { s = true }, { s = "true" }, { coerceTypes = true })
      accepts(s, { s = 1.5 }, { s = "1.5" }, { coerceTypes = true })
      accepts({ type = { "integer", "boolean" } }, "true", true, { coerceTypes = true })
      accepts({ type = "array", items = { type = "number" } }, { "1", "2" }, { 1, 2 }, { coerceTypes = true })
    end)

    it("fails values that cannot be converted", function()
      rejects(s, { n = "abc" }, { field = "/n", keyword = "type" }, { coerceTypes = true })
      rejects(s, { i = "1.5" }, { field = "/i", keyword = "type" }, { coerceTypes = true })
      rejects(s, { b = "yes" }, { field = "/b", keyword = "type" }, { coerceTypes = true })
      rejects(s, { n = "" }, { field = "/n" }, { coerceTypes = true })
      rejects({ type = "number", minimum = 5 }, "3", {
        message = '"value" must be >= 5 (keyword minimum, got 3)', value = 3,
      }, { coerceTypes = true })
    end)

    it("is off by default", function()
      rejects(s, { n = "1" }, { field = "/n", keyword = "type" })
    end)
  end)

  describe("removeAdditional", function()
    local s = { properties = { a = {}, b = { type = "number" } }, additionalProperties = false }

    it("true removes what additionalProperties false rejects", function()
      accepts(s, { a = 1, x = 2 }, { a = 1 }, { removeAdditional = true })
      accepts({ properties = { a = {} } }, { a = 1, x = 2 }, { a = 1, x = 2 }, { removeAdditional = true })
    end)

    it('"all" removes every property not listed', function()
      accepts({ properties = { a = {} } }, { a = 1, x = 2 }, { a = 1 }, { removeAdditional = "all" })
      accepts({ type = "object" }, { x = 1 }, { x = 1 }, { removeAdditional = "all" })
    end)

    it('"failing" removes properties failing an additionalProperties schema', function()
      local t = { properties = { a = {} }, additionalProperties = { type = "number" } }
      accepts(t, { a = 1, x = 2, y = "z" }, { a = 1, x = 2 }, { removeAdditional = "failing" })
    end)
  end)

  describe("combinators and boolean schemas", function()
    it("allOf applies every schema in turn", function()
      local s = { allOf = { { type = "number" }, { minimum = 2 } } }
      accepts(s, 3)
      rejects(s, 1, { keyword = "minimum", schemaPath = "#/allOf/1/minimum" })
    end)

    it("anyOf needs one match and returns its value", function()
      local s = { anyOf = { { type = "string" }, { type = "integer" } } }
      accepts(s, "a")
      accepts(s, 2.0, 2)
      local err = rejects(s, true, {
        message = '"value" must match at least one schema in anyOf (keyword anyOf, got true)', keyword = "anyOf",
      })
      assert.same({
        '"value" must be of type string (keyword type, got true)',
        '"value" must be of type integer (keyword type, got true)',
      }, err.causes)
    end)

    it("oneOf needs exactly one match", function()
      local s = { oneOf = { { type = "integer" }, { minimum = 10 } } }
      accepts(s, 3)
      accepts(s, 10.5)
      rejects(s, 12, { message = '"value" must match exactly one schema in oneOf (matched 2) (keyword oneOf, got 12)' })
      rejects(s, 1.5, { message = '"value" must match exactly one schema in oneOf (matched 0) (keyword oneOf, got 1.5)' })
    end)

    it("not inverts a schema", function()
      accepts({ ["not"] = { type = "string" } }, 1)
      rejects({ ["not"] = { type = "string" } }, "x", {
        message = '"value" must not match the schema in not (keyword not, got "x")', keyword = "not",
      })
    end)

    it("true accepts anything, false nothing", function()
      accepts(true, 5, 5)
      rejects(false, 5, { message = '"value" is not allowed (keyword false, got 5)', keyword = "false" })
      rejects({ properties = { secret = false } }, { secret = 1 }, { field = "/secret", keyword = "false" })
      accepts({ properties = { secret = false } }, {})
    end)
  end)

  describe("schema checks at compile time", function()
    it("rejects keywords it cannot honour", function()
      for _, k in ipairs { "$ref", "patternProperties", "dependencies", "propertyNames", "contains", "if", "then", "else" } do
        raises(function() J.compile { [k] = {} } end, ('keyword "%s" is not supported'):format(k))
      end
      raises(function() J.compile { properties = { a = { ["$ref"] = "#" } } } end, '#/properties/a: keyword "$ref"')
    end)

    it("rejects malformed keywords", function()
      raises(function() J.compile { type = "text" } end, 'unknown type "text"')
      raises(function() J.compile { type = {} } end, "type must be a type name or a list")
      raises(function() J.compile { minimum = "1" } end, "#/minimum must be a number")
      raises(function() J.compile { minLength = -1 } end, "#/minLength must be an integer >= 0")
      raises(function() J.compile { enum = {} } end, "#/enum must be a non-empty array")
      raises(function() J.compile { required = "a" } end, "#/required must be an array")
      raises(function() J.compile { required = { 1 } } end, "#/required must list property names")
      raises(function() J.compile { properties = 1 } end, "#/properties must be an object")
      raises(function() J.compile { additionalProperties = 1 } end, "additionalProperties must be a boolean or a schema")
      raises(function() J.compile { multipleOf = 0 } end, "#/multipleOf must be > 0")
      raises(function() J.compile { uniqueItems = 1 } end, "uniqueItems must be a boolean")
      raises(function() J.compile { pattern = 1 } end, "#/pattern must be a string")
      raises(function() J.compile { items = 5 } end, "#/items: a schema must be an object or a boolean")
      raises(function() J.compile { anyOf = {} } end, "#/anyOf must be a non-empty array")
      raises(function() J.compile({}, { removeAdditional = "some" }) end, "option removeAdditional")
    end)

    it("ignores annotations and unknown keywords, format included", function()
      accepts({ title = "T", description = "d", format = "email", examples = { 1 }, ["$id"] = "x",
        ["$schema"] = "http://json-schema.org/draft-07/schema#", definitions = {}, foo = 1, type = "string" }, "nope")
    end)
  end)

  describe("immutability", function()
    it("never modifies the input, even when validation fails", function()
      local s = {
        type = "object",
        properties = {
          n = { type = "integer" },
          d = { default = "x" },
          list = { type = "array", items = { type = "object", properties = { v = { default = 1 } } } },
        },
        additionalProperties = false,
      }
      local input = { n = "5", list = { {}, { v = 2 } }, extra = { 1 } }
      local v = accepts(s, input, nil, { coerceTypes = true, removeAdditional = true })
      assert.same({ n = "5", list = { {}, { v = 2 } }, extra = { 1 } }, input)
      assert.same({ n = 5, d = "x", list = { { v = 1 }, { v = 2 } } }, v)
      assert.are_not.equal(input.list[1], v.list[1])
      local bad = { n = "x", list = { {} } }
      assert.equal("/n", failure(J.compile(s, { coerceTypes = true }), bad).field)
      assert.same({ n = "x", list = { {} } }, bad)
    end)

    it("never modifies the schema", function()
      local s = { schema = { response = { properties = { a = { type = "number" } } } } }
      J.response_compiler(s)
      assert.is_nil(s.schema.response.type)
    end)
  end)

  describe("errors", function()
    it("use the label option and go on the wire", function()
      local check = J.compile({ properties = { a = { maximum = 1 } } }, { label = "pattern" })
      local err = failure(check, { a = 2 })
      assert.equal('"pattern/a" must be <= 1 (keyword maximum, got 2)', err.message)
      assert.equal("/a", err.field)
      local wire = core.decode(core.encode(errors.to_wire(err)))
      assert.equal("ValidationError", wire.name)
      assert.equal("maximum", wire.keyword)
      assert.equal(1, wire.limit)
      assert.equal("#/properties/a/maximum", wire.schemaPath)
    end)
  end)

  describe("Hemera compilers", function()
    it("compile properties (+ required, additionalProperties) as the request schema", function()
      local check = J.compiler {
        properties = { a = { type = "number" }, b = { type = "number", default = 0 } },
        required = { "a" },
      }
      local req = { topic = "math", cmd = "add", a = "1" }
      local v, err = check(req)
      assert.is_nil(err)
      assert.same({ topic = "math", cmd = "add", a = 1, b = 0 }, v) -- coerceTypes on, as hemera-ajv
      assert.same({ topic = "math", cmd = "add", a = "1" }, req)
      local e = failure(check, { topic = "math", cmd = "add" })
      assert.equal('"/a" is required (keyword required, got nil)', e.message)
      e = failure(check, { topic = "math", a = "x" })
      assert.equal('"/a" must be of type number (keyword type, got "x")', e.message)
    end)

    it("prefer schema.request", function()
      local check = J.compiler {
        properties = { a = { type = "string" } },
        schema = { request = { type = "object", properties = { a = { type = "number" } } } },
      }
      assert.same({ a = 1 }, (check { a = 1 }))
    end)

    it("leave routing keys and $ keys alone under additionalProperties false", function()
      local check = J.compiler {
        schema = { request = { properties = { a = { type = "number" } }, additionalProperties = false } },
      }
      assert.same({ topic = "t", cmd = "c", a = 1, ["meta$"] = { x = 1 } },
        (check { topic = "t", cmd = "c", a = 1, ["meta$"] = { x = 1 }, junk = 1 }))
      local strict = J.compilers { removeAdditional = false }
      local e = failure(strict { properties = { a = {} }, additionalProperties = false }, { topic = "t", a = 1, junk = 1 })
      assert.equal('"/junk" is not allowed (keyword additionalProperties, got 1)', e.message)
    end)

    it("return nil without a request or response schema", function()
      assert.is_nil(J.compiler {})
      assert.is_nil(J.compiler { schema = { response = { type = "number" } } })
      assert.is_nil(J.compiler(nil))
      assert.is_nil(J.response_compiler { properties = {} })
      assert.is_nil(J.response_compiler { schema = {} })
      assert.is_nil(J.response_compiler(nil))
    end)

    it("validate responses against schema.response, naming the value response", function()
      local check = J.response_compiler { schema = { response = { type = "number", maximum = 10 } } }
      assert.equal(3, check(3))
      assert.equal(3, check("3"))
      local e = failure(check, 11)
      assert.equal('"response" must be <= 10 (keyword maximum, got 11)', e.message)
      check = J.response_compiler { schema = { response = { type = "object", properties = { n = { type = "integer" } } } } }
      assert.equal('"response/n" must be of type integer (keyword type, got 1.5)', failure(check, { n = 1.5 }).message)
    end)

    it("infer the response type from object and array keywords, as hemera-ajv", function()
      local check = J.response_compiler { schema = { response = { properties = { a = {} } } } }
      assert.equal('"response" must be of type object (keyword type, got 5)', failure(check, 5).message)
      assert.equal('"response" must be of type object (keyword type, got nil)', failure(check, nil).message)
      check = J.response_compiler { schema = { response = { items = { type = "number" } } } }
      assert.equal('"response" must be of type array (keyword type, got "x")', failure(check, "x").message)
    end)

    it("the plugin sets both compilers on the instance", function()
      assert.equal(false, J.plugin.scoped)
      assert.is_string(J.plugin.name)
      local set = {}
      local fake = {
        setSchemaCompiler = function(self, fn) set.pre = fn end,
        setResponseSchemaCompiler = function(self, fn) set.post = fn end,
      }
      J.plugin.register(fake)
      assert.equal(J.compiler, set.pre)
      assert.equal(J.response_compiler, set.post)
      J.plugin.register(fake, { coerceTypes = false })
      assert.equal("/a", failure(set.pre { properties = { a = { type = "number" } } }, { a = "1" }).field)
    end)
  end)
end)
