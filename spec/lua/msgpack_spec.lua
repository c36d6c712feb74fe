-- hemera.msgpack: the MessagePack codec (core.msgpack_encode/decode, C on
-- msgpuck) and the plugin that puts it behind the four codec hooks, as
-- hemera-msgpack does. Byte-level expectations are msgpack5's encodings
-- of the same JavaScript values (the interop spec checks them against
-- msgpack5 itself).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"
local msgpack = require "hemera.msgpack"

local E, D = core.msgpack_encode, core.msgpack_decode
local null, array_mt = core.null, core.array_mt

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(s)
  return (s:gsub("%s", ""):gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

local function enc(v)
  local s, err = E(v)
  assert(s, err)
  return hex(s)
end

local function is_array(v) return getmetatable(v) == array_mt end

describe("core.msgpack_encode / core.msgpack_decode", function()
  describe("numbers", function()
    it("writes integers exactly, in the smallest form", function()
      assert.equal("00", enc(0))
      assert.equal("7f", enc(127))
      assert.equal("cc80", enc(128))
      assert.equal("cd0100", enc(256))
      assert.equal("ce00010000", enc(65536))
      assert.equal("cf0000000100000000", enc(4294967296))
      assert.equal("ff", enc(-1))
      assert.equal("e0", enc(-32))
      assert.equal("d0df", enc(-33))
      assert.equal("cf7fffffffffffffff", enc(math.maxinteger))
      assert.equal("d38000000000000000", enc(math.mininteger))
    end)

    it("writes every float as float64, integral ones too", function()
      assert.equal("cb3ff8000000000000", enc(1.5))
      assert.equal("cb4008000000000000", enc(3.0))
      assert.equal("cb3fb999999999999a", enc(0.1))
      assert.equal("cb8000000000000000", enc(-0.0))
      assert.equal("cb7ff0000000000000", enc(math.huge))
      assert.equal("cbfff0000000000000", enc(-math.huge))
    end)

    it("decodes ints that fit int64 as integers, the rest as floats", function()
      for _, v in ipairs { 0, 1, -1, 127, -32, -33, 300, -300, 70000, math.maxinteger, math.mininteger } do
        local d = D(E(v))
        assert.equal("integer", math.type(d))
        assert.equal(v, d)
      end
      -- signed forms holding a positive value (other encoders use them)
      assert.same(5, D(unhex "d3 0000000000000005"))
      assert.equal("integer", math.type(D(unhex "d0 05")))
      -- uint64 above int64: a float, as JSON's 18446744073709551615 is
      local big = D(unhex "cf ffffffffffffffff")
      assert.equal("float", math.type(big))
      assert.equal(2.0 ^ 64, big)
    end)

    it("decodes float32 and float64 as floats, 3.0 staying a float", function()
      local x = D(unhex "ca 3fc00000") -- float32 1.5, as msgpack5 writes it
      assert.equal("float", math.type(x))
      assert.equal(1.5, x)
      local y = D(E(3.0))
      assert.equal("float", math.type(y))
      assert.equal(3.0, y)
      assert.equal(0.1, D(E(0.1)))
      local nan = D(E(0 / 0))
      assert.is_true(nan ~= nan)
    end)
  end)

  describe("nil and Hemera.null", function()
    it("writes nil and Hemera.null as nil", function()
      assert.equal("c0", enc(nil))
      assert.equal("c0", enc(Hemera.null))
    end)

    it("decodes nil to Hemera.null, at the top, in maps and in arrays", function()
      assert.equal(null, D(unhex "c0"))
      local m = D(unhex "81 a1 61 c0") -- {a: null}
      assert.equal(null, m.a)
      local a = D(unhex "93 01 c0 03") -- [1, null, 3]
      assert.equal(3, #a)
      assert.equal(null, a[2])
    end)

    it("writes array holes as nil", function()
      assert.equal("9301c003", enc(Hemera.array { 1, nil, 3 }))
      assert.equal("9301c003", enc { 1, nil, 3 })
    end)
  end)

  describe("tables", function()
    it("tells an empty array from an empty map", function()
      assert.equal("80", enc {})
      assert.equal("90", enc(Hemera.array()))
      local a, m = D(unhex "90"), D(unhex "80")
      assert.is_true(is_array(a))
      assert.is_false(is_array(m))
      -- and they go back out as they came
      assert.equal("90", enc(a))
      assert.equal("80", enc(m))
    end)

    it("gives decoded arrays, and only them, the array metatable", function()
      local v = D(E { list = { 1, 2 }, obj = { x = 1 } })
      assert.is_true(is_array(v.list))
      assert.is_nil(getmetatable(v.obj))
      assert.is_nil(getmetatable(v))
    end)

    it("decides array or map as the JSON codec does", function()
      -- a plain table of positive integer keys is an array; too sparse, a
      -- map with the keys as strings, as Hemera.encode writes {"1000":x}
      assert.equal("93010203", enc { 1, 2, 3 })
      assert.equal(Hemera.encode { [1000] = 1 }, '{"1000":1}')
      assert.equal("81a431303030" .. "01", enc { [1000] = 1 })
      assert.equal("82a13101a178" .. "02", enc { [1] = 1, x = 2 })
      -- float keys as JavaScript prints them
      assert.equal("81a3312e35" .. "01", enc { [1.5] = 1 })
    end)

    it("writes map keys in byte order, after those __jsonorder lists", function()
      assert.equal("83a16101a16202a16303", enc { c = 3, a = 1, b = 2 })
      local t = setmetatable({ a = 1, b = 2, c = 3 }, { __jsonorder = { "c", "a" } })
      assert.equal("83a16303a16101a16202", enc(t))
    end)

    it("encodes a map wider than the values it keeps on the stack", function()
      local t = {}
      for i = 1, 1000 do t["k" .. i] = i end
      local d = D(E(t))
      for i = 1, 1000 do assert.equal(i, d["k" .. i]) end
    end)

    it("decodes str, bin and number map keys to strings", function()
      local m = D(unhex "84 a1 61 01 c4 01 62 02 07 03 cb 3ff8000000000000 04")
      assert.same({ a = 1, b = 2, ["7"] = 3, ["1.5"] = 4 }, m)
      -- the last of repeated keys wins, as in JavaScript
      assert.same({ a = 2 }, D(unhex "82 a1 61 01 a1 61 02"))
    end)
  end)

  describe("strings", function()
    it("writes valid UTF-8 as str and anything else as bin", function()
      assert.equal("a3616263", enc "abc")
      assert.equal("a2c3a9", enc "é")
      assert.equal("c402fffe", enc "\xff\xfe")
      assert.equal("c402c0af", enc "\xc0\xaf") -- an overlong '/'
      assert.equal("c403eda080", enc "\xed\xa0\x80") -- a UTF-16 surrogate
      assert.equal("d920" .. ("61"):rep(32), enc(("a"):rep(32)))
    end)

    it("decodes str and bin to Lua strings, bytes unchanged", function()
      assert.equal("abc", D(unhex "a3 616263"))
      assert.equal("\0\1\255", D(unhex "c4 03 0001ff"))
      assert.equal("abc", D(unhex "c4 03 616263"))
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      assert.equal(all, D(E(all)))
      assert.equal(all, D(E { k = all }).k)
    end)

    it("writes a key that is not UTF-8 as bin, and reads it back", function()
      assert.equal("81c401ff01", enc { ["\xff"] = 1 })
      assert.same({ ["\xff"] = 1 }, D(E { ["\xff"] = 1 }))
    end)
  end)

  describe("errors", function()
    local function encode_error(v)
      local s, err = E(v)
      assert.is_nil(s)
      return err
    end

    it("names the path of a value it cannot encode", function()
      assert.equal("cannot encode a function at meta.x", encode_error { meta = { x = print } })
      assert.equal("cannot encode a function at list[2]", encode_error { list = { 1, print } })
      assert.equal("cannot encode a thread at result.co",
        encode_error { result = { co = coroutine.create(print) } })
      assert.equal("cannot encode a userdata at f", encode_error { f = io.stdout })
      assert.equal("cannot encode a function", encode_error(print))
      assert.equal("cannot encode a boolean key at meta", encode_error { meta = { [true] = 1 } })
      local t = {}
      t.self = t
      assert.equal("cannot encode a circular reference at a.self", encode_error { a = t })
    end)

    it("refuses nesting deeper than 1000 levels, both ways", function()
      local ok = {}
      local c = ok
      for _ = 1, 999 do c.x = {}; c = c.x end
      assert.is_string(E(ok)) -- 1000 levels
      c.x = {}
      assert.matches("^nesting deeper than 1000 levels at x%.x%.", encode_error(ok))
      assert.is_table(D(("\x91"):rep(1000) .. "\x01"))
      local v, err = D(("\x91"):rep(1001) .. "\x01")
      assert.is_nil(v)
      assert.equal("msgpack error at byte 1000: nesting deeper than 1000 levels", err)
    end)

    it("names the byte and the fault of bad input, never raising", function()
      local cases = {
        { "", "msgpack error at byte 0: unexpected end of input" },
        { "c1", "msgpack error at byte 0: invalid byte 0xC1" },
        { "01 02", "msgpack error at byte 1: unexpected data after the value" },
        { "a5 6162", "msgpack error at byte 0: truncated str (5 bytes, 2 left)" },
        { "c4 05 61", "msgpack error at byte 0: truncated bin (5 bytes, 1 left)" },
        { "da 00", "msgpack error at byte 0: truncated str header" },
        { "cd 01", "msgpack error at byte 0: truncated uint header" },
        { "cb 0000", "msgpack error at byte 0: truncated float64 header" },
        { "92 01", "msgpack error at byte 0: truncated array (2 elements, 1 bytes left)" },
        -- a huge count in five bytes fails before anything is allocated
        { "dd ffffffff", "msgpack error at byte 0: truncated array (4294967295 elements, 0 bytes left)" },
        { "df ffffffff", "msgpack error at byte 0: truncated map (4294967295 pairs, 0 bytes left)" },
        { "82 a1 61 01", "msgpack error at byte 0: truncated map (2 pairs, 3 bytes left)" },
        { "92 91 01", "msgpack error at byte 3: unexpected end of input" },
        { "82 a1 61 01 a1", "msgpack error at byte 4: truncated str (1 bytes, 0 left)" },
        { "a2 c3 28", "msgpack error at byte 1: invalid UTF-8 in a str" },
        { "81 a1 61 a2 61 ff", "msgpack error at byte 5: invalid UTF-8 in a str" },
        { "81 90 01", "msgpack error at byte 1: a map key must be a string or a number, got an array" },
        { "81 c0 01", "msgpack error at byte 1: a map key must be a string or a number, got nil" },
        { "d6 ff 00000000", "msgpack error at byte 0: extension type -1 is not supported" },
        { "81 a1 74 c7 01 05 00", "msgpack error at byte 3: extension type 5 is not supported" },
      }
      for _, c in ipairs(cases) do
        local v, err = D(unhex(c[1]))
        assert.is_nil(v, c[1])
        assert.equal(c[2], err)
      end
    end)

    it("raises only on misuse", function()
      assert.has_error(function() D({}) end)
      assert.has_error(function() E() end)
    end)
  end)

  it("round-trips an envelope as Hemera builds it", function()
    local env = {
      pattern = { topic = "math", cmd = "add", a = 1, b = 2.5, list = Hemera.array(), tags = { "x", "y" } },
      meta = { token = "\0\1binary\255" }, delegate = {},
      trace = { traceId = "abc", spanId = "def", timestamp = 1700000000000 },
      request = { id = "id1", type = "request" },
    }
    local d = D(E(env))
    assert.same(env.pattern.tags, { d.pattern.tags[1], d.pattern.tags[2] })
    assert.equal(2.5, d.pattern.b)
    assert.equal("integer", math.type(d.pattern.a))
    assert.is_true(is_array(d.pattern.list))
    assert.equal(env.meta.token, d.meta.token)
    assert.equal(1700000000000, d.trace.timestamp)
    assert.equal(E(env), E(d))
  end)
end)

describe("hemera.msgpack plugin", function()
  local function new(opts)
    opts = opts or {}
    opts.pluginTimeout = opts.pluginTimeout or 2000
    return testing.new(opts)
  end

  it("is hemera-msgpack's plugin: named, not scoped, the codec beside it", function()
    assert.equal("hemera-msgpack", msgpack.name)
    assert.is_false(msgpack.scoped)
    assert.equal(E, msgpack.encode)
    assert.equal(D, msgpack.decode)
  end)

  it("sets the four codecs of the scope that uses it", function()
    testing.run(function()
      local s = new()
      -- As written in the docs: a first require also returns the file
      -- name, which use() must not take for options.
      package.loaded["hemera.msgpack"] = nil
      s:use(require "hemera.msgpack")
      assert(s:ready())
      assert.equal(E, rawget(s, "_clientEncoder"))
      assert.equal(D, rawget(s, "_clientDecoder"))
      assert.equal(E, rawget(s, "_serverEncoder"))
      assert.equal(D, rawget(s, "_serverDecoder"))
    end)
  end)

  it("carries requests and replies as MessagePack, values intact", function()
    testing.run(function()
      local topic = testing.topic("mp")
      local s = new { name = "mp-service" }
      s:use(msgpack)
      local seen
      s:add({ topic = topic, cmd = "echo" }, function(req, ctx)
        seen = { meta = ctx.meta.blob, n = req.n, f = req.f, null = req.z, empty = req.e }
        return { v = req.v, n = req.n, f = req.f, blob = ctx.meta.blob, empty = req.e,
                 map = {}, z = Hemera.null }
      end)
      assert(s:ready())
      local c = new { name = "mp-client" }
      c:use(msgpack)
      assert(c:ready())
      local blob = "\0\255\128 not utf-8"
      local res, err = c:act { topic = topic, cmd = "echo", v = { 1, "two", 3.5 }, n = math.maxinteger,
                               f = 2.0, z = Hemera.null, e = Hemera.array(), ["meta$"] = { blob = blob } }
      assert.is_nil(err)
      assert.equal(blob, seen.meta)
      assert.equal(math.maxinteger, seen.n)
      assert.equal("float", math.type(seen.f))
      assert.equal(Hemera.null, seen.null)
      assert.is_true(is_array(seen.empty))
      assert.same({ 1, "two", 3.5 }, { res.v[1], res.v[2], res.v[3] })
      assert.equal(math.maxinteger, res.n)
      assert.equal("integer", math.type(res.n))
      assert.equal("float", math.type(res.f))
      assert.equal(blob, res.blob)
      assert.is_true(is_array(res.empty))
      assert.is_false(is_array(res.map))
      assert.equal(Hemera.null, res.z)
    end)
  end)

  it("puts MessagePack on the wire, both ways", function()
    testing.run(function()
      local topic = testing.topic("mp")
      local s = new()
      s:use(msgpack)
      s:add({ topic = topic, cmd = "add" }, function(req) return req.a + req.b end)
      assert(s:ready())
      local conn = assert(core.connect { servers = testing.url() })
      assert(conn:wait_connected())
      local request = E {
        pattern = { topic = topic, cmd = "add", a = 1, b = 2 }, meta = {}, delegate = {},
        trace = { traceId = "t", spanId = "s", timestamp = 1 }, request = { id = "r1", type = "request" },
      }
      local data, st = conn:request(topic, request, 5000)
      conn:close()
      assert.is_nil(st)
      local reply = assert(D(data))
      assert.equal(3, reply.result)
      assert.equal(Hemera.null, reply.error)
      assert.equal("r1", reply.request.id)
    end)
  end)

  it("answers a request it cannot read with the decoder's message", function()
    testing.run(function()
      local topic = testing.topic("mp")
      local s = new()
      s:use(msgpack)
      s:add({ topic = topic, cmd = "add" }, function() return 1 end)
      assert(s:ready())
      local conn = assert(core.connect { servers = testing.url() })
      assert(conn:wait_connected())
      local data, st = conn:request(topic, "\x81\xa1p\xc1", 5000)
      conn:close()
      assert.is_nil(st)
      local reply = assert(D(data))
      assert.equal("HemeraParseError", reply.error.name)
      assert.equal("Invalid request: msgpack error at byte 3: invalid byte 0xC1",
        reply.error.message)
    end)
  end)

  it("gives the client the encoder's message for a value it cannot send", function()
    testing.run(function()
      local c = new()
      c:use(msgpack)
      assert(c:ready())
      local res, err = c:act { topic = testing.topic("mp"), cmd = "x", ["meta$"] = { cb = print } }
      assert.is_nil(res)
      assert.equal("HemeraParseError", err.name)
      assert.equal("Client payload encoding: cannot encode a function at meta.cb", err.message)
    end)
  end)

  it("carries a handler's error to a MessagePack client", function()
    testing.run(function()
      local topic = testing.topic("mp")
      local MathError = Hemera.createError("MathError")
      local s = new()
      s:use(msgpack)
      s:add({ topic = topic, cmd = "div" }, function(req)
        return nil, MathError("division by zero", { code = "E_DIV", operands = { a = req.a, b = 0 } })
      end)
      assert(s:ready())
      local res, err = s:act { topic = topic, cmd = "div", a = 4 }
      assert.is_nil(res)
      assert.equal("MathError", err.name)
      assert.equal("division by zero", err.message)
      assert.equal("E_DIV", err.code)
      assert.equal(4, err.operands.a)
    end)
  end)

  it("is found by the interpreter without LUA_PATH", function()
    local bin = assert(os.getenv("HEMERA_BIN"))
    local cmd = ("env -u LUA_PATH -u LUA_CPATH %s -e %s 2>&1"):format(bin,
      [['local m = require "hemera.msgpack"; io.write(m.name, " ", tostring(m.encode == require("hemera.core").msgpack_encode))']])
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    assert.equal("hemera-msgpack true", out)
  end)
end)
