-- hemera.jwt against Node: a nats-hemera 7 client sends meta$.jwtToken to a
-- Lua service, and the same acts to a Node service guarded by the real
-- hemera-jwt-auth 6.0.2; the client must hear the same thing from both.
local core = require "hemera.core"
local jwt = require "hemera.jwt"
local testing = require "hemera.testing"
local IS = require "interop.support"
local JS = require "interop.jwt.support"

local F = JS.fixtures()
local T = F.tokens

teardown(function()
  IS.kill_all()
  JS.cleanup()
end)
after_each(IS.kill_clients)

-- The Lua twin of spec/interop/jwt/service.js.
local function lua_service(topic, opts)
  local s = testing.new { name = "interop-lua-jwt", pluginTimeout = 2000 }
  s:use(jwt, opts)
  assert(s:ready())
  local function answer(_, ctx) return { sub = ctx.auth.sub, scope = ctx.auth.scope } end
  s:add({ topic = topic, cmd = "scoped", ["auth$"] = { scope = { "math" } } }, answer)
  s:add({ topic = topic, cmd = "admin", ["auth$"] = { scope = { "admin" } } }, answer)
  s:add({ topic = topic, cmd = "open", ["auth$"] = { enabled = false } }, function() return { open = true } end)
  s:add({ topic = topic, cmd = "plain" }, answer)
  return s
end

local function node_service(topic)
  local conn = IS.raw()
  local ready = IS.expect_message(conn, topic .. ".ready")
  local proc = IS.spawn_node("../jwt/service.js", { IS.url, topic, JS.modules, F.secret }, "service-jwt")
  local data, why = ready:wait(20000)
  assert(data, ("node jwt service did not get ready (%s); log:\n%s"):format(tostring(why), IS.read_log(proc)))
  return proc
end

-- Each case: cmd and token (nil: no jwtToken at all).
local CASES = {
  { "scoped", T.live, "valid token" },
  { "scoped", "", "empty token" },
  { "scoped", "foobar", "malformed" },
  { "scoped", T.live_expired, "expired" },
  { "scoped", T.hs256, "expired, fixed clock" },
  { "scoped", T.tampered, "changed payload" },
  { "scoped", T.hs256_wrong_secret, "wrong secret" },
  { "scoped", T.none, "alg none, unsigned" },
  { "scoped", T.none_signed, "alg none, signed" },
  { "scoped", T.live_rs256, "RS256 against a secret" },
  { "scoped", T.header_text, "header not JSON" },
  { "admin", T.live, "missing scope" },
  { "open", "", "auth disabled" },
  { "plain", T.live, "no auth$" },
}

local function acts_for(topic)
  local list = {}
  for i, c in ipairs(CASES) do
    -- Every act sets jwtToken: Node Hemera keeps a root act's meta$ for
    -- the next ones (spec 1.7), so a case must overwrite the last token.
    list[i] = { pattern = { topic = topic, cmd = c[1], ["meta$"] = { jwtToken = c[2] } } }
  end
  return list
end

describe("hemera.jwt with Node Hemera", function()
  setup(IS.setup)

  it("answers a Node client's meta$.jwtToken as hemera-jwt-auth 6.0.2 does", function()
    IS.run(function()
      local lt, nt = "jwtlua." .. core.nuid(), "jwtnode." .. core.nuid()
      lua_service(lt, { secret = F.secret })
      node_service(nt)
      local out = IS.node_client("acts", { acts = acts_for(lt) })
      local ref = IS.node_client("acts", { acts = acts_for(nt) })
      for i, c in ipairs(CASES) do
        local got, want = out.acts[i].calls[1], ref.acts[i].calls[1]
        assert(got and want, c[3] .. ": no reply")
        if want.error then
          assert(got.error, c[3] .. ": Lua accepted what Node refused: " .. tostring(want.error.message))
          assert.equal(want.error.name, got.error.name, c[3])
          assert.equal(want.error.message, got.error.message, c[3])
          assert.equal(want.error.props.expiredAt, got.error.props.expiredAt, c[3])
        else
          assert.is_nil(got.error and got.error.message, c[3])
          assert.same(want.result, got.result, c[3])
        end
      end
      -- The cases are not vacuous: each kind of outcome is among them.
      assert.same({ "math", "a" }, out.acts[1].calls[1].result.scope)
      assert.equal("TokenExpiredError", out.acts[4].calls[1].error.name)
      assert.equal("JwtError", out.acts[12].calls[1].error.name)
      assert.equal("Invalid scope", out.acts[12].calls[1].error.message)
      assert.equal("invalid algorithm", out.acts[9].calls[1].error.message)
    end, 60000)
  end)

  it("verifies an RS256 token from a JWKS sent by a Node client", function()
    IS.run(function()
      local lt = "jwtlua." .. core.nuid()
      lua_service(lt, { jwks = F.files["jwks.json"], issuer = "issuer-1", audience = "svc" })
      local calls = IS.node_act({ topic = lt, cmd = "scoped", ["meta$"] = { jwtToken = T.live_rs256 } })
      assert.is_nil(calls[1].error and calls[1].error.message)
      assert.same({ "math", "a" }, calls[1].result.scope)
      calls = IS.node_act({ topic = lt, cmd = "scoped", ["meta$"] = { jwtToken = T.confusion } })
      assert.equal("JsonWebTokenError", calls[1].error.name)
      assert.equal("invalid algorithm", calls[1].error.message)
    end, 60000)
  end)
end)
