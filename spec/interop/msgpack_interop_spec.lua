-- MessagePack interop: nats-hemera 7.0.2 with hemera-msgpack 6.0.2's codec
-- (msgpack5 4.5.1, spec/interop/node/hemera_msgpack.js) and hemera-lua with
-- hemera:use(require "hemera.msgpack"), calling each other both ways on
-- the one nats-server of the test run.
--
--   tools/with-nats.sh ctest --test-dir build -R 'lua\.msgpack_interop' --output-on-failure
--
-- The Node service (node/msgpack_service.js) publishes {"ready":...} once
-- its subscriptions are live; the Node client (node/msgpack_client.js)
-- publishes its one JSON line on a subject we subscribed to first. Both
-- are awaited through NATS, never by sleeping (interop/support.lua).
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"
local S = require "interop.support"

local MathError = Hemera.createError("MathError")
local P -- topic prefix of this run
local NODE = "node-mp-svc"

local function is_array(v) return getmetatable(v) == core.array_mt end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- A Lua instance speaking MessagePack.
local function new(opts)
  opts = opts or {}
  opts.pluginTimeout = opts.pluginTimeout or 2000
  local hemera = testing.new(opts)
  hemera:use(require "hemera.msgpack")
  return hemera
end

local function start_node_service()
  local conn = S.raw()
  local ready = S.expect_message(conn, P .. ".ready")
  local proc = S.spawn_node("msgpack_service.js", { S.url, NODE, P }, "msgpack-service")
  local data, why = ready:wait(20000)
  assert(data, ("node msgpack service did not get ready (%s); log:\n%s"):format(tostring(why), S.read_log(proc)))
end

-- Runs node/msgpack_client.js over `acts`; returns its list of outcomes.
local function node_acts(acts)
  local conn = S.raw()
  local subject = "interop.result." .. core.nuid()
  local res = S.expect_message(conn, subject)
  local proc = S.spawn_node("msgpack_client.js", { S.url, Hemera.encode { acts = acts, resultSubject = subject } },
    "msgpack-client")
  local line, why = res:wait(20000)
  assert(line, ("node msgpack client gave no result (%s); log:\n%s"):format(tostring(why), S.read_log(proc)))
  return S.strip_nulls(assert(Hemera.decode(line))).acts
end

-- What a Lua value is, deeply, in the words of hemera_msgpack.js's kinds().
local function kinds(v)
  if v == Hemera.null then return "null" end
  local t = type(v)
  if t == "number" then return math.type(v) == "integer" and "int" or "float" end
  if t == "table" then
    local out = is_array(v) and Hemera.array() or {}
    for k, x in pairs(v) do out[k] = kinds(x) end
    return out
  end
  return t
end

-- The Lua service on P.lua.
local function lua_service()
  local s = new { name = "lua-mp-svc" }
  local L = P .. ".lua"
  s:add({ topic = L, cmd = "add" }, function(req) return req.a + req.b end)
  s:add({ topic = L, cmd = "echo" }, function(req, ctx)
    return { v = req.v, kinds = kinds(req.v), blob = ctx.meta.blob }
  end)
  s:add({ topic = L, cmd = "sample" }, function()
    return { bin = "\0\255\128", i = 42, neg = -5, big = 1 << 40, max = math.maxinteger, f = 1.5,
             whole = 2.0, nul = Hemera.null, arr = Hemera.array(), obj = {}, s = "héllo ✓",
             nested = { list = { 1, "a", Hemera.null, true } } }
  end)
  s:add({ topic = L, cmd = "fail" }, function(req)
    return nil, MathError("division by zero", { code = "E_DIV_ZERO", operands = { a = req.a, b = 0 } })
  end)
  assert(s:ready())
  return s
end

describe("MessagePack interop with nats-hemera 7.0.2 + hemera-msgpack (msgpack5 4.5.1)", function()
  setup(function()
    S.setup()
    P = "interop.mp." .. core.nuid()
    S.run(start_node_service)
  end)

  teardown(function() S.kill_all() end)
  after_each(function() S.kill_all("msgpack_client.js") end)

  describe("Lua client -> Node service", function()
    it("request/reply", function()
      S.run(function()
        local c = new()
        assert(c:ready())
        local res, err, ctx = c:act { topic = P .. ".mp", cmd = "add", a = 1, b = 2 }
        assert.is_nil(err)
        assert.equal(3, res)
        assert.equal("integer", math.type(res))
        assert.equal(P .. ".mp", ctx.trace.service)
        assert.equal("request", ctx.request.type)
      end)
    end)

    it("Node sees each Lua value as it should", function()
      S.run(function()
        local c = new()
        assert(c:ready())
        local v = { bin = "\0\255\128", s = "héllo ✓", i = 7, big = 1 << 40, f = 2.5, whole = 2.0,
                    nul = Hemera.null, arr = Hemera.array(), obj = {}, list = { 1, "x", true } }
        local res, err = c:act { topic = P .. ".mp", cmd = "echo", v = v, ["meta$"] = { blob = "\1\255" } }
        assert.is_nil(err)
        local k = res.kinds
        assert.equal("buffer:00ff80", k.bin)
        assert.equal("string", k.s)
        assert.equal("int", k.i)
        assert.equal("int", k.big)
        assert.equal("float", k.f)
        assert.equal("int", k.whole) -- float64 2.0 is the JavaScript number 2
        assert.equal("null", k.nul)
        assert.same({}, k.arr)
        assert.is_true(is_array(k.arr))
        assert.same({}, k.obj)
        assert.is_false(is_array(k.obj))
        assert.same({ "int", "string", "boolean" }, { k.list[1], k.list[2], k.list[3] })
        assert.equal("buffer:01ff", res.meta.blob)
        -- and Node's msgpack5 sends them back as Lua values again
        local back = res.v
        assert.equal("\0\255\128", back.bin)
        assert.equal("héllo ✓", back.s)
        assert.equal(1 << 40, back.big)
        assert.equal("integer", math.type(back.big))
        assert.equal(2.5, back.f)
        assert.equal("float", math.type(back.f))
        assert.equal(Hemera.null, back.nul)
        assert.is_true(is_array(back.arr))
        assert.is_false(is_array(back.obj))
      end)
    end)

    it("Node's values arrive as Lua values", function()
      S.run(function()
        local c = new()
        assert(c:ready())
        local r, err = c:act { topic = P .. ".mp", cmd = "sample" }
        assert.is_nil(err)
        assert.equal("\0\255\128", r.buf)
        assert.equal(42, r.i)
        assert.equal("integer", math.type(r.i))
        assert.equal(-5, r.neg)
        assert.equal(1 << 40, r.big)
        assert.equal("integer", math.type(r.big))
        assert.equal(1.5, r.f) -- msgpack5 wrote float32
        assert.equal("float", math.type(r.f))
        assert.equal(0.1, r.tenth)
        assert.equal(Hemera.null, r.nul)
        assert.is_true(is_array(r.arr))
        assert.equal(0, #r.arr)
        assert.is_false(is_array(r.obj))
        assert.equal("héllo ✓", r.s)
        local l = r.nested.list
        assert.same({ 1, "a", Hemera.null, true }, { l[1], l[2], l[3], l[4] })
        assert.is_true(is_array(l))
      end)
    end)

    it("a Node error keeps name, message, code and fields", function()
      S.run(function()
        local c = new()
        assert(c:ready())
        local res, err = c:act { topic = P .. ".mp", cmd = "fail", a = 3 }
        assert.is_nil(res)
        assert.is_true(MathError:is(err))
        assert.equal("division by zero", err.message)
        assert.equal("E_DIV_ZERO", err.code)
        assert.same({ a = 3, b = 0 }, err.operands)
        assert.equal(NODE, err.hops[1].app)
      end)
    end)
  end)

  describe("Node client -> Lua service", function()
    it("request/reply, Lua values as Node sees them, errors", function()
      S.run(function()
        lua_service()
        local L = P .. ".lua"
        local acts = node_acts {
          { topic = L, cmd = "add", a = 1, b = 2 },
          { topic = L, cmd = "sample" },
          { topic = L, cmd = "echo", v = { buf = { ["$hex"] = "00ff80" }, f = 0.5, i = 9, big = 1099511627776,
                                          nul = Hemera.null, arr = Hemera.array(), obj = {}, s = "héllo" },
            ["meta$"] = { blob = { ["$hex"] = "01ff" } } },
          { topic = L, cmd = "fail", a = 3 },
        }
        -- add
        assert.is_nil(acts[1].error)
        assert.equal(3, acts[1].result)
        assert.equal("int", acts[1].kinds)
        assert.is_true(acts[1].replyIsObject)
        -- sample: what JavaScript makes of each Lua value
        local k, r = acts[2].kinds, acts[2].result
        assert.equal("buffer:00ff80", k.bin)
        assert.equal("int", k.i)
        assert.equal(-5, r.neg)
        assert.equal(1099511627776, r.big)
        assert.equal("float", k.f)
        assert.equal(1.5, r.f)
        assert.equal("int", k.whole)
        assert.equal("null", k.nul)
        assert.is_true(is_array(k.arr))
        assert.equal(0, #k.arr)
        assert.is_false(is_array(k.obj))
        assert.equal("string", k.s)
        assert.equal("héllo ✓", r.s)
        assert.same({ "int", "string", "null", "boolean" },
          { k.nested.list[1], k.nested.list[2], k.nested.list[3], k.nested.list[4] })
        -- echo: what Lua made of each JavaScript value
        local seen = acts[3].result.kinds
        assert.equal("string", seen.buf) -- a Buffer is a Lua string
        assert.equal("float", seen.f)
        assert.equal("int", seen.i)
        assert.equal("int", seen.big)
        assert.equal("null", seen.nul)
        assert.is_true(is_array(seen.arr))
        assert.is_false(is_array(seen.obj))
        assert.equal("string", seen.s)
        -- the bytes went through untouched, and came back as a Buffer
        assert.equal("00ff80", acts[3].result.v.buf["$hex"])
        assert.equal("buffer:00ff80", acts[3].kinds.v.buf)
        assert.equal("01ff", acts[3].result.blob["$hex"])
        -- fail
        local e = acts[4].error
        assert.equal("MathError", e.name)
        assert.equal("division by zero", e.message)
        assert.equal("E_DIV_ZERO", e.code)
        assert.same({ a = 3, b = 0 }, e.operands)
      end)
    end)
  end)

  it("Lua's bytes are msgpack5's bytes for the same values", function()
    -- msgpack5 writes 1.5 as float32 and we always float64, so the sample
    -- has no fraction; keys in byte order on both sides.
    local v = { a = 1, b = "x", c = Hemera.array { 1, 2 }, d = Hemera.null, e = {}, f = -200, g = 70000 }
    local node = assert(io.popen(("NODE_PATH=%s node -e %s"):format(S.shell_quote(S.modules), S.shell_quote(
      "process.stdout.write(require('msgpack5')().encode({a:1,b:'x',c:[1,2],d:null,e:{},f:-200,g:70000}).toString('hex'))"))))
    local theirs = node:read("a")
    node:close()
    assert.equal("87a16101a162a178a1639201" .. "02a164c0a16580a166d1ff38a167ce00011170", theirs)
    assert.equal(theirs, hex(assert(core.msgpack_encode(v))))
  end)
end)
