-- Hemera v7 behaviour, ported from nats-hemera's
-- test/hemera/pattern-matching.spec.js and test/hemera/unit/util.spec.js.
-- util.spec.js's natsWildcardToRegex cases are in semantics_wildcards_spec.lua
-- (Lua routes topics by NATS rules instead of converting them to a RegExp).
local Hemera = require "hemera"
local core = require "hemera.core"
local pattern = require "hemera.pattern"
local testing = require "hemera.testing"

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return err
end

local function add_three(hemera, topic)
  local noop = function() end
  hemera:add({ topic = topic, cmd = "CMD" }, noop)
  hemera:add({ topic = topic, cmd = "CMD", type = "TYPE1" }, noop)
  hemera:add({ topic = topic, cmd = "CMD", type = "TYPE2" }, noop)
end

describe("pattern-matching.spec.js", function()
  it("throws when the pattern is already defined (lookupBeforeAdd)", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new { bloomrun = { lookupBeforeAdd = true } }
      hemera:ready()
      local err = raises(function() add_three(hemera, topic) end)
      assert.equal("HemeraError", err.name)
      assert.equal("Pattern is already in use", err.message)
      -- The superset {topic, cmd, type:TYPE1} already matches {topic, cmd}.
      assert.equal(1, #hemera:list())
    end)
  end)

  it("does not throw when a pattern is a subset of another", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      add_three(hemera, topic)
      assert.equal(3, #hemera:list())
    end)
  end)

  it("matches in insertion order", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new { bloomrun = { indexing = "insertion" } }
      hemera:ready()
      add_three(hemera, topic)
      local a = hemera.router:lookup { topic = topic, cmd = "CMD", type = "TYPE2" }
      assert.same({ topic = topic, cmd = "CMD" }, a.pattern)
    end)
  end)

  it("does not send the $ options", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new()
      hemera:ready()
      local seen
      hemera:add({ topic = topic, cmd = "CMD" }, function(req) seen = req end)
      local _, err = hemera:act { topic = topic, cmd = "CMD", a = { b = 1 }, timeout_ = 5000, ["meta$"] = { x = 1 } }
      assert.is_nil(err)
      assert.same({ topic = topic, cmd = "CMD", a = { b = 1 } }, seen)
    end)
  end)

  it("matches in depth order", function()
    testing.run(function()
      local topic = testing.topic("TOPIC")
      local hemera = testing.new { bloomrun = { lookupBeforeAdd = false, indexing = "depth" } }
      hemera:ready()
      add_three(hemera, topic)
      local a = hemera.router:lookup { topic = topic, cmd = "CMD", type = "TYPE2" }
      assert.same({ topic = topic, cmd = "CMD", type = "TYPE2" }, a.pattern)
    end)
  end)

  it("routes the act to the pattern the order picks (insertion and depth, over the wire)", function()
    testing.run(function()
      for _, indexing in ipairs { "insertion", "depth" } do
        local topic = testing.topic("TOPIC")
        local hemera = testing.new { bloomrun = { indexing = indexing } }
        hemera:add({ topic = topic, cmd = "a" }, function() return "short" end)
        hemera:add({ topic = topic, cmd = "a", foo = "bar" }, function() return "long" end)
        hemera:ready()
        local res, err = hemera:act { topic = topic, cmd = "a", foo = "bar" }
        assert.is_nil(err)
        assert.equal(indexing == "insertion" and "short" or "long", res)
      end
    end)
  end)
end)

describe("unit/util.spec.js", function()
  it("extracts the schema (object values) of a pattern", function()
    local schema = pattern.schema { topic = "foo", fn = function() end, a = { b = 1 } }
    assert.same({ a = { b = 1 } }, schema)
  end)

  it("generates random ids (NUID: 22 characters of [0-9A-Z])", function()
    local id = core.nuid()
    assert.is_string(id)
    assert.equal(22, #id)
    assert.truthy(id:match("^[0-9A-Z]+$"))
    assert.not_equal(id, core.nuid())
  end)

  it("cleans an add pattern to its routing pattern (no $ keys, no objects, no functions; regexes kept)", function()
    testing.run(function()
      local hemera = testing.new()
      local re = Hemera.regex(".")
      local def = hemera:add({ topic = testing.topic("foo"), ["test$"] = "a", regex = re, a = { b = 1 } }, function() end)
      assert.same({ topic = def.transport.topic, regex = re }, def.pattern)
      assert.same({ a = { b = 1 } }, def.schema)
    end)
  end)

  it("cleans a pattern from special variables without touching the original", function()
    local obj = { topic = "foo", ["test$"] = "a", a = { b = 1 } }
    assert.same({ topic = "foo", a = { b = 1 } }, pattern.clean(obj))
    assert.same({ topic = "foo", ["test$"] = "a", a = { b = 1 } }, obj)
  end)

  it("gets a pattern in string form", function()
    assert.equal("topic:foo", pattern.method { topic = "foo", ["test$"] = "a", a = { b = 1 }, fn = function() end })
    assert.equal("topic:/./", pattern.method { topic = Hemera.regex(".") })
    -- JavaScript String() formatting and sorting of the pairs.
    assert.equal("a:1,b:2.5,c:true,topic:math", pattern.method { topic = "math", c = true, b = 2.5, a = 1 })
  end)

  it("sorts the pairs as whole strings, for narrow, wide and long patterns", function()
    -- The reference: every "key:value" sorted bytewise, joined with ",".
    local function reference(p)
      local pairs_ = {}
      for k, v in pairs(p) do
        if type(v) == "table" then v = "/" .. v.source .. "/" end
        pairs_[#pairs_ + 1] = k .. ":" .. tostring(v)
      end
      table.sort(pairs_)
      return table.concat(pairs_, ",")
    end
    -- Keys that are prefixes of each other, and values that decide.
    local prefixes = { a = "z", ab = "1", ["a:"] = "x", abc = Hemera.regex("q"), b = 7, ba = true }
    assert.equal(reference(prefixes), pattern.method(prefixes))
    assert.equal("a::x,a:z,ab:1,abc:/q/,b:7,ba:true", pattern.method(prefixes))
    -- 40 keys: more than fit the pairs kept on the C stack.
    local wide = {}
    for k = 1, 40 do wide[("k%02d"):format((k * 7) % 41)] = k end
    assert.equal(reference(wide), pattern.method(wide))
    -- Longer than the stack buffer the string is built in.
    local long = { topic = ("t"):rep(300), cmd = ("c"):rep(20), x = 1 }
    assert.equal(reference(long), pattern.method(long))
    assert.equal(#reference(long), #pattern.method(long))
  end)
end)

describe("pattern.normalize", function()
  it("renames name_ options to name$ in a copy, and leaves every other pattern as it is", function()
    local plain = { topic = "math", a = 1, [1] = "x" }
    assert.equal(plain, pattern.normalize(plain))
    -- A key of the caller's own that ends in "_" is not an option.
    local own = { topic = "math", note_ = 1 }
    assert.equal(own, pattern.normalize(own))
    local aliased = { topic = "math", timeout_ = 50, maxMessages_ = 2, note_ = 1 }
    local n = pattern.normalize(aliased)
    assert.are_not.equal(aliased, n)
    assert.same({ topic = "math", ["timeout$"] = 50, ["maxMessages$"] = 2, note_ = 1 }, n)
    assert.same({ topic = "math", timeout_ = 50, maxMessages_ = 2, note_ = 1 }, aliased)
    assert.is_false(core.key_ends({ [1] = "_", x = 1 }, "_"))
    assert.is_true(core.key_ends({ ["_"] = 1 }, "_"))
  end)

  it("normalize_act gives the same pattern and its method string, with one pass over the keys", function()
    local plain = { topic = "math", a = 1, [1] = "x" }
    local p, m = pattern.normalize_act(plain)
    assert.equal(plain, p)
    assert.equal(pattern.method(plain), m)
    local own = { topic = "math", note_ = 1 }
    p, m = pattern.normalize_act(own)
    assert.equal(own, p)
    assert.equal("note_:1,topic:math", m)
    local aliased = { topic = "math", timeout_ = 50, note_ = 1 }
    p, m = pattern.normalize_act(aliased)
    assert.same({ topic = "math", ["timeout$"] = 50, note_ = 1 }, p)
    -- The method of the renamed copy: timeout$ is not in it.
    assert.equal("note_:1,topic:math", m)
    p, m = pattern.normalize_act("topic:math,cmd:add")
    assert.same({ topic = "math", cmd = "add" }, p)
    assert.equal("cmd:add,topic:math", m)
    -- core.method's second value is core.key_ends', over every string key
    -- (those ending in $ and those whose values it leaves out too).
    assert.same({ "a:1", false }, { core.method({ a = 1, [1] = "_" }, "_") })
    assert.same({ "a:1,x_:2", true }, { core.method({ a = 1, x_ = 2 }, "_") })
    assert.same({ "a:1", true }, { core.method({ a = 1, f_ = {} }, "_") })
    assert.same({ "", true }, { core.method({ ["w$"] = 1 }, "$") })
    assert.equal(1, select("#", core.method({ a = 1 })))
    assert.has_error(function() core.method({}, "ab") end)
  end)
end)
