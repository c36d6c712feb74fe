-- codec_spec.lua: the JSON codec of hemera.core (lua/hm_codec.h), checked
-- against JS semantics and against the payloads Node actually sent.
local core = require "hemera.core"

local SAMPLES = (os.getenv("HEMERA_SRC") and os.getenv("HEMERA_SRC") .. "/../shared/interop/wire-samples")
local function sampledir()
  for _, dir in ipairs({ "/work/shared/interop/wire-samples", SAMPLES or "" }) do
    local f = io.open(dir .. "/01-request-reply.json")
    if f then
      f:close()
      return dir
    end
  end
end

local function deepeq(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then
    return false, path .. ": " .. type(a) .. " vs " .. type(b)
  end
  if type(a) ~= "table" then
    if a == b or (a ~= a and b ~= b) then return true end
    return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  for k, v in pairs(a) do
    local ok, why = deepeq(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. " missing" end
  end
  return true
end

local function roundtrip(v)
  local s, err = core.encode(v)
  assert(s, err)
  local back, derr = core.decode(s)
  assert(back ~= nil, derr)
  return back, s
end

local function decode_error(text)
  local v, err = core.decode(text)
  assert.is_nil(v)
  assert.is_string(err)
  return err
end

describe("codec numbers", function()
  it("keeps integers exact and integer-typed", function()
    for _, n in ipairs({ 0, 1, -1, 1 << 53, -(1 << 53), 123456789012345,
                         math.maxinteger, math.mininteger }) do
      local back, s = roundtrip(n)
      assert.are.equal(string.format("%d", n), s)
      assert.are.equal(n, back)
      assert.are.equal("integer", math.type(back))
    end
  end)

  it("writes 2^53 and -2^53 as the digits JS prints", function()
    assert.are.equal("9007199254740992", core.encode(2 ^ 53))
    assert.are.equal("-9007199254740992", core.encode(-2 ^ 53))
    -- JSON has no int/float split: an integral float comes back equal
    assert.are.equal(2 ^ 53, core.decode(core.encode(2 ^ 53)))
  end)

  it("keeps floats exact and float-typed", function()
    for _, x in ipairs({ 0.1 + 0.2, 1e300, -1e300, 0.1, 322962.057579,
                         5e-324, 1.7976931348623157e308, 1.5e-7, 2.5 }) do
      local back = roundtrip(x)
      assert.are.equal(x, back)
      assert.are.equal("float", math.type(back))
    end
    assert.are.equal("0.30000000000000004", core.encode(0.1 + 0.2))
    assert.are.equal("1e+300", core.encode(1e300))
  end)

  it("writes integral floats without a fraction", function()
    assert.are.equal("3", core.encode(3.0))
    assert.are.equal("-250", core.encode(-250.0))
    assert.are.equal("0", core.encode(-0.0))
    assert.are.equal("100000000000000000000", core.encode(1e20))
    assert.are.equal("1e+21", core.encode(1e21))
  end)

  it("writes NaN and infinities as null", function()
    assert.are.equal("null", core.encode(0 / 0))
    assert.are.equal("null", core.encode(math.huge))
    assert.are.equal("null", core.encode(-math.huge))
    assert.are.equal('[1,null,null]', core.encode(core.array({ 1, 0 / 0, math.huge })))
  end)

  it("decodes numbers as JS does, int64 as integers", function()
    assert.are.equal("integer", math.type(core.decode("42")))
    assert.are.equal("integer", math.type(core.decode("-0")))
    assert.are.equal(math.maxinteger, core.decode("9223372036854775807"))
    assert.are.equal(math.mininteger, core.decode("-9223372036854775808"))
    assert.are.equal("float", math.type(core.decode("9223372036854775808")))
    assert.are.equal("float", math.type(core.decode("1e2")))
    assert.are.equal(100.0, core.decode("1e2"))
    assert.are.equal(1.5, core.decode("15e-1"))
    assert.are.equal(0.1, core.decode("0.1"))
    assert.are.equal(1576930.324352, core.decode("1576930.324352"))
    assert.are.equal(2.1643980001099408, core.decode("2.1643980001099408"))
    assert.are.equal(math.huge, core.decode("1e400"))
    assert.are.equal(1.2345678901234567e-300, core.decode("1.2345678901234567e-300"))
    assert.are.equal(0.1, core.decode("0.1000000000000000000000000000001"))
  end)

  it("formats numbers as JS String() does", function()
    assert.are.equal("1", core.jsnum(1))
    assert.are.equal("1", core.jsnum(1.0))
    assert.are.equal("0.30000000000000004", core.jsnum(0.1 + 0.2))
    assert.are.equal("1e-7", core.jsnum(1e-7))
    assert.are.equal("0.000001", core.jsnum(1e-6))
    assert.are.equal("NaN", core.jsnum(0 / 0))
    assert.are.equal("-Infinity", core.jsnum(-math.huge))
    assert.are.equal("9223372036854775807", core.jsnum(math.maxinteger))
  end)
end)

describe("codec tables", function()
  it("tells empty objects from empty arrays", function()
    assert.are.equal("{}", core.encode({}))
    assert.are.equal("[]", core.encode(core.array()))
    local arr = core.decode("[]")
    assert.are.equal(core.array_mt, getmetatable(arr))
    assert.are.equal("[]", core.encode(arr))
    assert.are.equal("{}", core.encode(core.decode("{}")))
    assert.are.equal('{"a":[],"b":{}}', core.encode(core.decode('{"a":[],"b":{}}')))
  end)

  it("core.array marks a given table", function()
    local t = { 1, 2 }
    assert.are.equal(t, core.array(t))
    assert.are.equal(core.array_mt, getmetatable(t))
    assert.are.equal("[1,2]", core.encode(t))
    local holes = core.array()
    holes[1] = 1
    holes[3] = 3
    assert.are.equal("[1,null,3]", core.encode(holes))
  end)

  it("writes sequences as arrays and other tables as objects", function()
    assert.are.equal("[1,2,3]", core.encode({ 1, 2, 3 }))
    assert.are.equal('{"1":"a","2":"b","x":1}', core.encode({ "a", "b", x = 1 }))
    assert.are.equal('{"1.5":1}', core.encode({ [1.5] = 1 }))
  end)

  it("sorts object keys by bytes", function()
    assert.are.equal('{"A":1,"a":2,"b":3,"bb":4,"c":5}',
      core.encode({ c = 5, bb = 4, b = 3, a = 2, A = 1 }))
    local wide = {}
    for i = 1, 600 do wide[string.format("k%04d", i)] = i end
    local s = core.encode(wide)
    assert.are.equal(1, s:find('{"k0001":1,"k0002":2,', 1, true))
    assert.is_truthy(s:find('"k0599":599,"k0600":600}', 1, true))
    assert.is_true(deepeq(wide, core.decode(s)))
  end)

  it("honours __jsonorder", function()
    local mt = { __jsonorder = { "topic", "cmd", "missing" } }
    local t = setmetatable({ z = 1, a = 2, cmd = "add", topic = "math" }, mt)
    assert.are.equal('{"topic":"math","cmd":"add","a":2,"z":1}', core.encode(t))
    local env = setmetatable({
      pattern = { topic = "math" }, meta = {}, delegate = {}, trace = {}, request = {},
    }, { __jsonorder = { "pattern", "meta", "delegate", "trace", "request" } })
    assert.are.equal('{"pattern":{"topic":"math"},"meta":{},"delegate":{},"trace":{},"request":{}}',
      core.encode(env))
  end)

  it("keeps a decoded object's key order, what is added after it in byte order", function()
    local text = '{"z":1,"a":{"y":[{"x":1,"b":2}],"c":null},"m":[]}'
    local v = core.decode(text)
    assert.are.equal(text, core.encode(v))
    v.b, v.zz, v.a.q = 2, 3, true
    v.m = nil
    assert.are.equal('{"z":1,"a":{"y":[{"x":1,"b":2}],"c":null,"q":true},"b":2,"zz":3}', core.encode(v))
    -- A repeated key keeps its first place (and its last value), as in Node.
    assert.are.equal('{"b":3,"a":2}', core.encode(core.decode('{"b":1,"a":2,"b":3}')))
    -- Tables made in Lua sort; __jsonorder still wins over a decoded order.
    local copy = {}
    for k, x in pairs(core.decode('{"z":1,"a":2}')) do copy[k] = x end
    assert.are.equal('{"a":2,"z":1}', core.encode(copy))
    local t = setmetatable(core.decode('{"z":1,"a":2}'), { __jsonorder = { "a" } })
    assert.are.equal('{"a":2,"z":1}', core.encode(t))
  end)

  it("round-trips nested tables", function()
    local v = {
      pattern = { topic = "math", cmd = "add", a = 1, b = 2.5 },
      list = core.array({ 1, "two", { three = 3 }, core.array({ core.null, false }) }),
      flag = true,
      deep = { a = { b = { c = { d = "e" } } } },
    }
    local back = roundtrip(v)
    assert.is_true(deepeq(v, back))
    assert.are.equal(core.null, back.list[4][1])
    assert.are.equal(2, #back.list[4])
  end)

  it("keeps null as core.null in objects and arrays alike", function()
    local v = core.decode('{"a":null,"b":[null,1,null]}')
    assert.are.equal(core.null, v.a)
    assert.are.equal(core.null, v.b[1])
    assert.are.equal(core.null, v.b[3])
    assert.are.equal('{"a":null,"b":[null,1,null]}', core.encode(v))
    assert.are.equal('{"x":null}', core.encode({ x = core.null }))
    assert.are.equal("null", core.encode(nil))
    assert.are.equal(core.null, core.decode("null"))
    -- a later duplicate wins, null or not
    assert.are.equal(core.null, core.decode('{"a":1,"a":null}').a)
    assert.are.equal(1, core.decode('{"a":null,"a":1}').a)
    -- a member set to nil is simply not there
    v.a = nil
    assert.are.equal('{"b":[null,1,null]}', core.encode(v))
  end)

  it("writes circular references as [Circular]", function()
    local t = { name = "t" }
    t.self = t
    t.child = { up = t, list = core.array({ t }) }
    assert.are.equal(
      '{"child":{"list":["[Circular]"],"up":"[Circular]"},"name":"t","self":"[Circular]"}',
      core.encode(t))
    -- a table met twice but not on its own path is no cycle
    local shared = { x = 1 }
    assert.are.equal('{"a":{"x":1},"b":{"x":1}}', core.encode({ a = shared, b = shared }))
  end)
end)

describe("codec strings", function()
  it("escapes as JSON.stringify does", function()
    assert.are.equal([["a\"b\\c/d"]], core.encode('a"b\\c/d'))
    assert.are.equal([["\b\f\n\r\t"]], core.encode("\b\f\n\r\t"))
    assert.are.equal([["\u0000\u0001\u001f"]], core.encode("\0\1\31"))
    assert.are.equal('"\127"', core.encode("\127"))
    assert.are.equal('"/"', core.encode("/"))
  end)

  it("writes non-ASCII text as raw UTF-8", function()
    local s = "héllo ✓ 😀 \u{2028}"
    assert.are.equal('"' .. s .. '"', core.encode(s))
    assert.are.equal(s, core.decode(core.encode(s)))
  end)

  it("decodes \\u escapes and surrogate pairs to UTF-8", function()
    assert.are.equal("é", core.decode('"\\u00e9"'))
    assert.are.equal("é", core.decode('"\\u00E9"'))
    assert.are.equal("😀", core.decode('"\\ud83d\\ude00"'))
    assert.are.equal("𝄞x", core.decode('"\\uD834\\uDD1Ex"'))
    assert.are.equal("\0", core.decode('"\\u0000"'))
    assert.are.equal("a\"b\\c/d\b\f\n\r\t", core.decode('"a\\"b\\\\c\\/d\\b\\f\\n\\r\\t"'))
    -- a lone surrogate has no UTF-8 form
    assert.are.equal("\u{FFFD}x", core.decode('"\\ud83dx"'))
    assert.are.equal("\u{FFFD}", core.decode('"\\ude00"'))
  end)

  it("keeps strings with escapes longer than a Lua buffer", function()
    local s = string.rep('a"\n😀', 2000)
    assert.are.equal(s, core.decode(core.encode(s)))
  end)
end)

describe("codec errors", function()
  it("reports malformed JSON with the byte offset", function()
    local cases = {
      { '', 0, "end of input" },
      { '   ', 3, "end of input" },
      { '{"a":1', 6, "end of input" },
      { '{"a" 1}', 5, "':'" },
      { '{"a":1 "b":2}', 7, "',' or '}'" },
      { '[1 2]', 3, "',' or ']'" },
      { '[1,]', 3, "']'" },
      { '{"a":1,}', 7, "trailing" },
      { '{a:1}', 1, "string key" },
      { '01', 0, "leading zero" },
      { '[-]', 2, "digit" },
      { '1.', 2, "digit" },
      { '1e+', 3, "exponent" },
      { '.5', 0, "'.'" },
      { 'tru', 3, "end of input" },
      { 'nul1', 3, "'1'" },
      { '"abc', 4, "unterminated" },
      { '"a\\x"', 2, "escape" },
      { '"\\u12G4"', 1, "\\u escape" },
      { '"a\tb"', 2, "control character" },
      { "'a'", 0, "'''" },
      { 'NaN', 0, "'N'" },
      { '\239\187\191{}', 0, "0xEF" },
    }
    for _, c in ipairs(cases) do
      local err = decode_error(c[1])
      local want = "JSON error at byte " .. c[2] .. ":"
      assert.are.equal(want, err:sub(1, #want), ("%q: %s"):format(c[1], err))
      assert.is_truthy(err:find(c[3], 1, true), ("%q: %s"):format(c[1], err))
    end
  end)

  it("rejects trailing garbage", function()
    local err = decode_error('{"a":1} x')
    assert.are.equal("JSON error at byte 8: unexpected data after the JSON value", err)
    decode_error('{"a":1}{}')
    decode_error('1 2')
    assert.are.equal(1, core.decode(' 1 \n\t'))
  end)

  it("refuses deep nesting with a clear error and no crash", function()
    local err = decode_error(string.rep("[", 10000) .. string.rep("]", 10000))
    assert.are.equal("JSON error at byte 1000: nesting deeper than 1000 levels", err)
    decode_error(string.rep('{"a":', 10000) .. "1" .. string.rep("}", 10000))
    -- exactly the limit is fine
    local ok = core.decode(string.rep("[", 1000) .. string.rep("]", 1000))
    assert.are.equal("table", type(ok))
    local deep = {}
    local cur = deep
    for _ = 1, 10000 do
      cur.x = {}
      cur = cur.x
    end
    local s, eerr = core.encode(deep)
    assert.is_nil(s)
    assert.is_truthy(eerr:find("^nesting deeper than 1000 levels at x%.x%.x"))
  end)

  it("rejects invalid UTF-8 on decode with its offset", function()
    for _, c in ipairs({
      { '"ab\255"', 3 }, { '"\192\128"', 1 }, { '"\237\160\128"', 1 },
      { '"\244\144\128\128"', 1 }, { '"\226\130"', 1 }, { '["ok","x\128"]', 8 },
    }) do
      local err = decode_error(c[1])
      assert.are.equal("JSON error at byte " .. c[2] .. ": invalid UTF-8 in string", err)
    end
  end)

  it("rejects invalid UTF-8 on encode, naming the path and byte", function()
    local s, err = core.encode({ pattern = { name = "ab\255" } })
    assert.is_nil(s)
    assert.are.equal("invalid UTF-8 at pattern.name byte 2", err)
    s, err = core.encode({ list = core.array({ "ok", "\192\128" }) })
    assert.is_nil(s)
    assert.are.equal("invalid UTF-8 at list[2] byte 0", err)
    s, err = core.encode({ ["k\255"] = 1 })
    assert.is_nil(s)
    -- the message itself stays valid UTF-8, so it can travel in a reply
    assert.are.equal("invalid UTF-8 at k? byte 1", err)
    assert.is_string(core.encode(err))
  end)

  it("refuses functions, userdata and threads, naming the path", function()
    local s, err = core.encode({ result = { cb = print } })
    assert.is_nil(s)
    assert.are.equal("cannot encode a function at result.cb", err)
    s, err = core.encode({ pattern = { cb = function() end } })
    assert.is_nil(s)
    assert.are.equal("cannot encode a function at pattern.cb", err)
    s, err = core.encode({ co = coroutine.create(print) })
    assert.is_nil(s)
    assert.are.equal("cannot encode a thread at co", err)
    s, err = core.encode({ f = io.stdout })
    assert.is_nil(s)
    assert.are.equal("cannot encode a userdata at f", err)
    s, err = core.encode(print)
    assert.is_nil(s)
    assert.are.equal("cannot encode a function", err)
    s, err = core.encode({ [{}] = 1 })
    assert.is_nil(s)
    assert.are.equal("cannot encode a table key", err)
  end)

  it("raises for a non-string argument to decode", function()
    assert.has_error(function() core.decode({}) end)
  end)
end)

describe("codec on captured Node payloads", function()
  local dir = sampledir()

  it("decodes every JSON payload and re-encodes it to an equal value", function()
    assert.is_not_nil(dir, "wire samples not found")
    local names = {}
    local p = io.popen('ls "' .. dir .. '"')
    for name in p:lines() do
      if name:match("^%d%d%-.*%.json$") then names[#names + 1] = name end
    end
    p:close()
    assert.is_true(#names >= 20)
    local checked = 0
    for _, name in ipairs(names) do
      local f = assert(io.open(dir .. "/" .. name, "rb"))
      local text = f:read("a")
      f:close()
      local sample, err = core.decode(text)
      assert(sample, name .. ": " .. tostring(err))
      for i, m in ipairs(sample.messages) do
        local where = name .. " message " .. i
        if m.json ~= nil and m.json ~= core.null then
          local v, derr = core.decode(m.raw)
          assert(v ~= nil, where .. ": " .. tostring(derr))
          local ok, why = deepeq(m.json, v)
          assert(ok, where .. ": " .. tostring(why))
          local back = roundtrip(v)
          ok, why = deepeq(v, back)
          assert(ok, where .. ": " .. tostring(why))
          -- the same bytes up to key order, null members included
          assert.are.equal(#m.raw, #core.encode(v), where)
          checked = checked + 1
        else
          assert.is_nil(core.decode(m.raw), where)
        end
      end
    end
    assert.is_true(checked > 20)
  end)
end)

-- {==================================================================
-- Issue 11: JSON that survives a Lua hop
-- ===================================================================

describe("codec null members (issue 11)", function()
  it("gives back the same JSON after decode then encode, at any depth", function()
    for _, text in ipairs({
      '{"a":[1,2,{"b":null}]}',
      '{"a":null}',
      '{"a":{"b":{"c":null,"d":[null,{"e":null}]}}}',
      '[null,{"a":null},[null]]',
      '{"a":[],"b":{},"c":null}',
    }) do
      assert.are.equal(text, core.encode(core.decode(text)))
    end
  end)

  it("Hemera.null is truthy: test it with ==", function()
    local req = core.decode('{"b":null}')
    assert.is_truthy(req.b)
    assert.is_true(req.b == core.null)
    assert.is_nil(req.c)
  end)
end)

describe("codec sparse arrays and empty tables (issue 11)", function()
  it("writes a table of positive integer keys as an array, holes as null", function()
    assert.are.equal("[1,null,3]", core.encode({ 1, nil, 3 }))
    assert.are.equal("[1,null,3]", core.encode({ [1] = 1, [3] = 3 }))
    assert.are.equal("[null,true]", core.encode({ [2] = true }))
    assert.are.equal("[null,null,null,null,null,null,null,null,null,1]", core.encode({ [10] = 1 }))
    -- 10 keys up to 20: ratio 2 is still fine
    local t = {}
    for k = 2, 20, 2 do t[k] = k end
    assert.are.equal("[null,2,null,4,null,6,null,8,null,10,null,12,null,14,null,16,null,18,null,20]",
      core.encode(t))
  end)

  it("writes an excessively sparse one as an object (cjson ratio 2, safe 10)", function()
    assert.are.equal('{"11":1}', core.encode({ [11] = 1 }))
    assert.are.equal('{"1000":"x"}', core.encode({ [1000] = "x" }))
    assert.are.equal('{"1":1,"11":1,"2":2,"3":3,"4":4}', core.encode({ 1, 2, 3, 4, [11] = 1 }))
    local t = {}
    for k = 2, 22, 2 do t[k] = k end
    t[23] = nil
    t[24] = 24 -- 12 keys up to 24: not over 2 * 12
    assert.are.equal("[", core.encode(t):sub(1, 1))
    t[25] = 25 -- 13 keys up to 25: still fine
    assert.are.equal("[", core.encode(t):sub(1, 1))
    t[100] = 1
    assert.are.equal("{", core.encode(t):sub(1, 1))
  end)

  it("keeps other tables objects: zero, negative, float or string keys", function()
    assert.are.equal('{"0":1}', core.encode({ [0] = 1 }))
    assert.are.equal('{"-1":1,"1":2}', core.encode({ [-1] = 1, [1] = 2 }))
    assert.are.equal('{"1":1,"1.5":2}', core.encode({ [1] = 1, [1.5] = 2 }))
    assert.are.equal('{"1":"a","x":1}', core.encode({ "a", x = 1 }))
  end)

  it("{} is an object, Hemera.array() an empty array; holes of an array never make it an object", function()
    assert.are.equal("{}", core.encode({}))
    assert.are.equal("[]", core.encode(core.array()))
    assert.are.equal('{"a":{},"b":[]}', core.encode({ a = {}, b = core.array() }))
    local a = core.array()
    a[12] = 1
    assert.are.equal("[null,null,null,null,null,null,null,null,null,null,null,1]", core.encode(a))
  end)
end)

describe("codec values JSON has no word for (issue 11)", function()
  it("are errors by default, naming the path", function()
    local s, err = core.encode({ a = { f = print } })
    assert.is_nil(s)
    assert.are.equal("cannot encode a function at a.f", err)
  end)

  it("with a list given: left out of objects, null in arrays, as JSON.stringify", function()
    local skipped = {}
    local s = core.encode({
      result = { f = print, co = coroutine.create(print), u = io.stdout, l = { 1, print, 3 },
                 n = core.null, k = "v", p = core.array({ print }) },
    }, skipped)
    assert.are.equal('{"result":{"k":"v","l":[1,null,3],"n":null,"p":[null]}}', s)
    table.sort(skipped)
    assert.same({ "result.co", "result.f", "result.l[2]", "result.p[1]", "result.u" }, skipped)
  end)

  it("with a list given: the value itself is still an error", function()
    for _, v in ipairs({ print, coroutine.create(print), io.stdout }) do
      local skipped = {}
      local s, err = core.encode(v, skipped)
      assert.is_nil(s)
      assert.matches("^cannot encode a ", err)
      assert.same({}, skipped)
    end
  end)

  it("with a list given: an object that loses every member is {}", function()
    assert.are.equal('{"a":{}}', core.encode({ a = { f = print, g = print } }, {}))
    assert.are.equal('{"a":1}', core.encode(setmetatable({ f = print, a = 1 },
      { __jsonorder = { "f", "a" } }), {}))
  end)

  it("lists at most 16 paths", function()
    local t = {}
    for k = 1, 40 do t["f" .. k] = print end
    local skipped = {}
    assert.are.equal("{}", core.encode(t, skipped))
    assert.are.equal(16, #skipped)
  end)

  it("NaN and infinities are null, as in Node", function()
    assert.are.equal('{"a":null,"b":null,"c":null}', core.encode({ a = 0 / 0, b = math.huge, c = -math.huge }))
    assert.are.equal("[null,null]", core.encode({ 0 / 0, -math.huge }))
  end)
end)

describe("codec numbers a Lua hop must keep (issue 11)", function()
  it("2^53, -0, 1e300 go back as JSON.stringify writes them", function()
    assert.are.equal("9007199254740992", core.encode(core.decode("9007199254740992")))
    assert.are.equal("integer", math.type(core.decode("9007199254740992")))
    -- JSON.stringify(-0) is "0"
    assert.are.equal("0", core.encode(core.decode("-0")))
    assert.are.equal("0", core.encode(core.decode("-0.0")))
    assert.are.equal("0", core.encode(-0.0))
    assert.are.equal("1e+300", core.encode(core.decode("1e300")))
    assert.are.equal('{"a":1e+300,"b":[-1e+300]}', core.encode(core.decode('{"a":1e300,"b":[-1e300]}')))
  end)

  it("a 100-key object with nulls comes back whole", function()
    local parts = {}
    for k = 0, 99 do parts[#parts + 1] = ('"k%02d":%s'):format(k, k % 2 == 0 and "null" or tostring(k)) end
    local text = "{" .. table.concat(parts, ",") .. "}"
    assert.are.equal(text, core.encode(core.decode(text)))
  end)
end)

describe("codec wide objects (issue 11)", function()
  it("keeps nulls and leaves functions out past the retained-slot limit", function()
    local t, want = {}, {}
    for k = 1, 600 do
      local key = ("k%03d"):format(k)
      if k % 3 == 0 then t[key] = print
      elseif k % 3 == 1 then t[key] = core.null; want[#want + 1] = '"' .. key .. '":null'
      else t[key] = k; want[#want + 1] = '"' .. key .. '":' .. k end
    end
    local skipped = {}
    assert.are.equal("{" .. table.concat(want, ",") .. "}", core.encode(t, skipped))
    assert.are.equal(16, #skipped)
    local s, err = core.encode(t)
    assert.is_nil(s)
    assert.matches("^cannot encode a function at k", err)
  end)
end)
