-- json_fidelity_spec.lua: JSON that survives a Lua hop (issue 11). A Lua
-- echo service gives back what it got, null members, empty tables and
-- numbers included; null in an envelope means what it means in Node
-- Hemera; values JSON has no word for are left out with one warning per
-- action; `d:null` is null, and the router and the validators treat null
-- as JSON null.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local null = Hemera.null

-- Payloads the echo must give back as the very same text: a decoded object
-- keeps its key order (insertion order, as in Node), at every depth.
local TEXTS = {
  '{"z":1,"a":2,"m":3}',
  '{"z":{"y":[{"x":1,"b":2}],"a":null},"a":{}}',
  '{"a":[1,2,{"b":null}]}',
  '{"a":null,"b":{"c":null,"d":{"e":[null,{"f":null}]}}}',
  '{"a":[null,null],"b":[[null]],"c":[]}',
  '{"e":{},"f":[],"g":[{}],"h":[[]]}',
  '{"k\\u00e9y":"v\\u00e4l","\\u65e5\\u672c":"\\ud83d\\ude00"}',
  '{"big":9007199254740992,"neg0":-0,"huge":1e300,"tiny":5e-324,"min":-9007199254740992}',
}

local function hundred()
  local parts = {}
  for k = 1, 100 do parts[#parts + 1] = ('"k%03d":%s'):format(k, k % 3 == 0 and "null" or tostring(k)) end
  return "{" .. table.concat(parts, ",") .. "}"
end
TEXTS[#TEXTS + 1] = hundred()

-- What the echo should give back: the payload as Node writes it.
local EXPECT = {
  ['{"k\\u00e9y":"v\\u00e4l","\\u65e5\\u672c":"\\ud83d\\ude00"}'] = '{"kéy":"väl","日本":"😀"}',
  ['{"big":9007199254740992,"neg0":-0,"huge":1e300,"tiny":5e-324,"min":-9007199254740992}'] =
    '{"big":9007199254740992,"neg0":0,"huge":1e+300,"tiny":5e-324,"min":-9007199254740992}',
}

local function echo_service(topic, lg)
  local s = testing.new { logger = lg }
  s:add({ topic = topic, cmd = "echo" }, function(req) return req.v end)
  s:add({ topic = topic, cmd = "drop" }, function(req)
    req.v.b = nil -- a handler drops a member by setting it to nil
    return req.v
  end)
  s:add({ topic = topic, cmd = "isnull" }, function(req)
    return { null = req.b == Hemera.null, truthy = req.b and true or false, absent = req.c == nil }
  end)
  s:add({ topic = topic, cmd = "fn" }, function() return { f = print, a = 1, l = { 1, print } } end)
  s:add({ topic = topic, cmd = "fn2" }, function() return { g = print } end)
  s:add({ topic = topic, cmd = "nullresult" }, function() return Hemera.null end)
  assert(s:ready())
  return s
end

describe("a Lua echo, from a Lua client", function()
  it("gives back null members at any depth, empty tables, unicode keys and numbers", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = echo_service(topic, testing.logger())
      local c = testing.new()
      assert(c:ready())
      for _, text in ipairs(TEXTS) do
        local v = assert(core.decode(text))
        local res, err = c:act { topic = topic, cmd = "echo", v = v }
        assert.is_nil(err)
        local want = EXPECT[text] or text
        assert.are.equal(want, core.encode(res), text)
      end
      s:close()
      c:close()
    end)
  end)

  it("tests null with ==, and drops a member set to nil", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = echo_service(topic, testing.logger())
      local c = testing.new()
      assert(c:ready())
      local res = assert(c:act { topic = topic, cmd = "isnull", b = null })
      assert.same({ null = true, truthy = true, absent = true }, res)
      res = assert(c:act { topic = topic, cmd = "drop", v = core.decode('{"a":null,"b":null}') })
      assert.are.equal('{"a":null}', core.encode(res))
      s:close()
      c:close()
    end)
  end)

  it("a null result comes back as Hemera.null, with no error", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = echo_service(topic, testing.logger())
      local c = testing.new()
      assert(c:ready())
      local res, err = c:act { topic = topic, cmd = "nullresult" }
      assert.is_nil(err)
      assert.are.equal(null, res)
      s:close()
      c:close()
    end)
  end)

  it("leaves functions out of a result, with one warning per action naming the paths", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local lg = testing.logger()
      local s = echo_service(topic, lg)
      local c = testing.new()
      assert(c:ready())
      for _ = 1, 3 do
        local res, err = c:act { topic = topic, cmd = "fn" }
        assert.is_nil(err)
        assert.are.equal('{"a":1,"l":[1,null]}', core.encode(res))
      end
      assert.is_nil(select(2, c:act { topic = topic, cmd = "fn2" }))
      local warned = lg:count(function(r) return r.msg == "Reply values JSON cannot hold were left out" end)
      assert.are.equal(2, warned)
      local rec = lg:find(function(r)
        return r.msg == "Reply values JSON cannot hold were left out" and r.fields.paths[1] ~= "result.g"
      end)
      local paths = rec.fields.paths
      table.sort(paths)
      assert.same({ "result.f", "result.l[2]" }, paths)
      s:close()
      c:close()
    end)
  end)
end)

-- A well-formed envelope from a raw connection, with `extra` members.
local function envelope(topic, extra)
  return '{"pattern":{"topic":"' .. topic .. '","cmd":"echo","v":1}' .. extra .. '}'
end

describe("null in an envelope", function()
  it("means none for meta, trace, request and delegate", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = echo_service(topic, testing.logger())
      local raw = testing.raw(testing.url())
      local data, st = raw:request(topic, envelope(topic,
        ',"meta":null,"trace":null,"request":null,"delegate":null'), 5000)
      assert.is_nil(st)
      local msg = assert(core.decode(data))
      assert.are.equal(null, msg.error)
      assert.are.equal(1, msg.result)
      assert.are.equal("{}", core.encode(msg.meta))
      raw:close()
      s:close()
    end)
  end)

  it("a null pattern is a clear error", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = echo_service(topic, testing.logger())
      local raw = testing.raw(testing.url())
      local data, st = raw:request(topic, '{"pattern":null,"meta":{}}', 5000)
      assert.is_nil(st)
      local msg = assert(core.decode(data))
      assert.are.equal("HemeraParseError", msg.error.name)
      assert.matches("got null", msg.error.message, 1, true)
      raw:close()
      s:close()
    end)
  end)

  it("on the client: error null or false is success, result null a null result, null trace ids none", function()
    testing.run(function()
      local topic = testing.topic("fidraw")
      local raw = testing.raw(testing.url())
      local replies = {
        '{"meta":null,"trace":null,"request":null,"result":null,"error":null}',
        '{"meta":{},"trace":{"traceId":null,"spanId":null},"request":{},"result":5,"error":false}',
        '{"result":{"a":null},"error":null}',
        '{"result":1,"error":{"name":null,"message":null}}',
        '{"result":6,"error":null}',
      }
      local n, got = 0, {}
      raw:subscribe(topic, nil, 0, function(_, reply, data)
        n = n + 1
        got[n] = core.decode(data)
        raw:publish(reply, replies[n])
      end)
      assert.is_true(raw:flush(5000))
      local c = testing.new()
      assert(c:ready())
      local res, err = c:act { topic = topic, cmd = "x" }
      assert.is_nil(err)
      assert.are.equal(null, res)
      local res2, err2, ctx = c:act { topic = topic, cmd = "x" }
      assert.is_nil(err2)
      assert.are.equal(5, res2)
      assert.are.equal(null, ctx.trace.traceId)
      local res3, err3 = c:act { topic = topic, cmd = "x" }
      assert.is_nil(err3)
      assert.are.equal('{"a":null}', core.encode(res3))
      local res4, err4 = c:act { topic = topic, cmd = "x" }
      assert.is_nil(res4)
      assert.are.equal("Error", err4.name)
      assert.are.equal("", err4.message)
      -- an act from that context makes fresh ids instead of sending nulls
      assert.are.equal(6, (ctx:act { topic = topic, cmd = "x" }))
      assert.is_string(got[5].trace.traceId)
      assert.is_string(got[5].trace.spanId)
      raw:close()
      c:close()
    end)
  end)
end)

describe("string patterns and the router with null", function()
  it("d:null is Hemera.null, d:undefined no key", function()
    local pattern = require "hemera.pattern"
    local p = pattern.parse("topic:x,d:null,e:undefined,f:{g:null}")
    assert.are.equal(null, p.d)
    assert.is_nil(p.e)
    assert.are.equal(null, p.f.g)
    assert.are.equal('{"topic":"x","d":null,"f":{"g":null}}', core.encode(p))
  end)

  it("a stored null never matches; a request null equals no plain value; a regex sees \"null\"", function()
    local r = core.router()
    r:add({ topic = "x", d = null }, "stored-null")
    r:add({ topic = "x", s = "null" }, "plain-null-string")
    r:add({ topic = "x", s = core.regex("^nu") }, "regex")
    r:add({ topic = "y", s = core.regex("^nu") }, "other-topic")
    assert.is_nil(r:lookup { topic = "x", d = null })
    assert.is_nil(r:lookup { topic = "x", d = "null" })
    assert.are.equal("plain-null-string", r:lookup { topic = "x", s = "null" })
    assert.are.equal("regex", r:lookup { topic = "x", s = null })
    assert.are.equal("regex", r:lookup({ topic = "x", s = null }, "x"))
    assert.is_nil(r:lookup({ topic = "y", s = null }, "x"))
    assert.are.equal("other-topic", r:lookup { topic = "y", s = null })
    assert.are.equal(1, #r:list { topic = "x", s = null })
    assert.are.equal(2, #r:list { topic = "x", s = "null" })
    assert.are.equal(4, #r:list())
    -- insertion order still decides among the routes that do match
    r:add({ topic = "x", t = core.regex("l") }, "regex2")
    assert.are.equal("regex", r:lookup { topic = "x", s = null, t = null })
  end)

  it("a request with a null value reaches a service over NATS", function()
    testing.run(function()
      local topic = testing.topic("fid")
      local s = testing.new()
      -- As Hemera's cleanPattern: a null in an added pattern is no
      -- condition at all, so this is {topic, cmd = "n"}.
      s:add("topic:" .. topic .. ",cmd:n,d:null", function(req) return req.d == nil and "absent" or req.d end)
      s:add({ topic = topic, cmd = "a", d = Hemera.regex("^null$") }, function(req) return req.d == null end)
      s:add({ topic = topic, cmd = "b" }, function(req) return req.d == null end)
      assert(s:ready())
      assert.same({ { topic = topic, cmd = "n" } }, s:list({ topic = topic, cmd = "n" }, { patterns = true }))
      local c = testing.new()
      assert(c:ready())
      assert.equal("absent", (c:act { topic = topic, cmd = "n" }))
      assert.equal("x", (c:act { topic = topic, cmd = "n", d = "x" }))
      assert.is_true((c:act { topic = topic, cmd = "a", d = null }))
      assert.is_true((c:act("topic:" .. topic .. ",cmd:b,d:null")))
      s:close()
      c:close()
    end)
  end)
end)

describe("validators see a null member as JSON null", function()
  local S = require "hemera.validation.schema"
  local J = require "hemera.validation.jsonschema"

  local function check(fn, text)
    return fn(core.decode(text))
  end

  it("schema.lua: null fails a type unless allowed, and is no default's hole", function()
    local plain = S.compile(S.object { a = S.string() })
    local allowed = S.compile(S.object { a = S.string():allow(S.null) })
    local default = S.compile(S.object { a = S.string():default("x") })
    local v, err = check(plain, '{"a":null}')
    assert.is_nil(v)
    assert.matches("got null", err.message, 1, true)
    assert.are.equal('{"a":null}', core.encode((check(allowed, '{"a":null}'))))
    assert.is_nil((check(default, '{"a":null}')))
    assert.are.equal('{"a":"x"}', core.encode((check(default, '{}'))))
  end)

  it("jsonschema.lua: type null, required satisfied by null, defaults only for absent keys", function()
    local str = J.compile { type = "object", properties = { a = { type = "string" } } }
    local either = J.compile { type = "object", properties = { a = { type = { "string", "null" } } }, required = { "a" } }
    local isnull = J.compile { type = "object", properties = { a = { type = "null" } } }
    local default = J.compile { type = "object", properties = { a = { type = "string", default = "x" } } }
    local v, err = check(str, '{"a":null}')
    assert.is_nil(v)
    assert.matches("got null", err.message, 1, true)
    assert.are.equal('{"a":null}', core.encode((check(either, '{"a":null}'))))
    assert.is_nil((check(either, '{}')))
    assert.are.equal('{"a":null}', core.encode((check(isnull, '{"a":null}'))))
    assert.is_nil((check(default, '{"a":null}')))
    assert.are.equal('{"a":"x"}', core.encode((check(default, '{}'))))
  end)
end)
