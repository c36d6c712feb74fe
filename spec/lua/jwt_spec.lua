-- hemera.jwt: the verifier against tokens jsonwebtoken 9 made (fresh keys
-- each run, spec/interop/jwt/tokens.js), and the plugin on a real service.
-- Time claims are checked at a fixed clock (clockTimestamp = t0) except in
-- the "live" cases, whose margins are an hour.
local Hemera = require "hemera"
local core = require "hemera.core"
local errors = require "hemera.errors"
local jwt = require "hemera.jwt"
local testing = require "hemera.testing"
local S = require "interop.jwt.support"

local F = S.fixtures()
local T = F.tokens
local function file(name) return S.read(F.files[name]) end

local function hs(extra)
  local o = { secret = F.secret, clockTimestamp = F.t0 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return (jwt.verifier(o))
end

-- The error a verifier gives for token; asserts there is one.
local function refused(verify, token)
  local claims, err = verify(token)
  assert.is_nil(claims, "token was accepted")
  assert.is_true(errors.is_error(err))
  return err
end

-- The HemeraError a bad configuration raises.
local function config_fails(opts)
  local ok, err = pcall(jwt.verifier, opts)
  assert.is_false(ok, "the configuration was accepted")
  assert.equal("HemeraError", err.name)
  return err
end

teardown(S.cleanup)

describe("hemera.jwt verifier", function()
  it("accepts HS256, HS384 and HS512 tokens and returns their claims", function()
    local v = hs()
    for _, name in ipairs { "hs256", "hs384", "hs512" } do
      local claims, err, header = v(T[name])
      assert.is_nil(err)
      assert.same({ "math", "a" }, claims.scope)
      assert.equal("ada", claims.sub)
      assert.equal(name:upper(), header.alg)
    end
  end)

  it("accepts RS256/384/512 with a PEM public key, PKCS#1 or a certificate", function()
    local cert = S.path("rsa.cert.pem")
    S.run(("openssl req -new -x509 -key %s -subj /CN=hemera-jwt-spec -days 2 -out %s"):format(
      S.shell_quote(F.files["rsa.key.pem"]), S.shell_quote(cert)), "openssl req")
    for _, pem in ipairs { file("rsa.pub.pem"), file("rsa.pkcs1.pem"), S.read(cert) } do
      local v = jwt.verifier { secret = pem, clockTimestamp = F.t0 }
      for _, name in ipairs { "rs256", "rs384", "rs512" } do
        local claims, err = v(T[name])
        assert.is_nil(err, name)
        assert.equal("ada", claims.sub)
      end
    end
  end)

  it("accepts ES256 with a PEM key and ES256/ES384 through a JWKS, choosing by kid", function()
    local v = jwt.verifier { secret = file("ec256.pub.pem"), clockTimestamp = F.t0 }
    assert.equal("ada", (v(T.es256)).sub)
    local j = jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }
    for _, name in ipairs { "rs256", "es256", "es384" } do
      local claims, err = j(T[name])
      assert.is_nil(err, name)
      assert.equal("ada", claims.sub)
    end
    -- A JWKS of one key serves tokens without a kid.
    local one = jwt.verifier { jwks = F.files["jwks-one.json"], clockTimestamp = F.t0 }
    assert.is_nil(select(2, one(T.rs512)))
  end)

  it("refuses expired and not-yet-valid tokens with jsonwebtoken's errors", function()
    local v = hs()
    local e = refused(v, T.expired)
    assert.equal("TokenExpiredError", e.name)
    assert.equal("jwt expired", e.message)
    assert.equal(os.date("!%Y-%m-%dT%H:%M:%S.000Z", F.t0 - 100), e.expiredAt)
    assert.is_true(jwt.JwtError:is(e) and jwt.JsonWebTokenError:is(e))
    local n = refused(v, T.not_before)
    assert.equal("NotBeforeError", n.name)
    assert.equal("jwt not active", n.message)
    assert.equal(os.date("!%Y-%m-%dT%H:%M:%S.000Z", F.t0 + 100), n.date)
    -- exp == now is expired already (jsonwebtoken: now >= exp).
    assert.equal("TokenExpiredError", refused(jwt.verifier { secret = F.secret, clockTimestamp = F.t0 + 600 }, T.hs256).name)
    assert.is_nil(select(2, jwt.verifier { secret = F.secret, clockTimestamp = F.t0 + 599 }(T.hs256)))
  end)

  it("allows clock skew up to clockTolerance, and can ignore exp and nbf", function()
    assert.equal("TokenExpiredError", refused(hs(), T.expired_30s).name)
    assert.equal("NotBeforeError", refused(hs(), T.not_before_30s).name)
    local skew = hs { clockTolerance = 60 }
    assert.is_nil(select(2, skew(T.expired_30s)))
    assert.is_nil(select(2, skew(T.not_before_30s)))
    assert.equal("TokenExpiredError", refused(skew, T.expired).name)
    assert.is_nil(select(2, hs { ignoreExpiration = true }(T.expired)))
    assert.is_nil(select(2, hs { ignoreNotBefore = true }(T.not_before)))
    assert.equal("invalid exp value", refused(hs(), T.exp_string).message)
    assert.equal("exp is a string", refused(hs(), T.exp_string).reason)
  end)

  it("uses the system clock when no clockTimestamp is given", function()
    local v = jwt.verifier { secret = F.secret }
    assert.same({ "math", "a" }, (v(T.live)).scope)
    assert.equal("TokenExpiredError", refused(v, T.live_expired).name)
    -- t0 is years ago: the fixed-clock tokens are expired now.
    assert.equal("TokenExpiredError", refused(v, T.hs256).name)
  end)

  it("refuses a wrong key, a wrong secret and a changed payload: invalid signature", function()
    for _, case in ipairs {
      { hs(), "hs256_wrong_secret" }, { hs(), "tampered" },
      { jwt.verifier { secret = file("rsa.pub.pem"), clockTimestamp = F.t0 }, "rs256_wrong_key" },
      { jwt.verifier { secret = file("rsa2.pub.pem"), clockTimestamp = F.t0 }, "rs256" },
      { jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }, "rs256_wrong_key" },
      { jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }, "es256_wrong_key" },
    } do
      local e = refused(case[1], T[case[2]])
      assert.equal("JsonWebTokenError", e.name, case[2])
      assert.equal("invalid signature", e.message, case[2])
      assert.is_string(e.reason)
    end
  end)

  it("takes the algorithm from the configured list, never from the token", function()
    local e = refused(hs(), T.rs256)
    assert.equal("invalid algorithm", e.message)
    assert.equal("alg 'RS256' is not one of the allowed HS256, HS384, HS512", e.reason)
    local only = hs { algorithms = { "HS256" } }
    assert.is_nil(select(2, only(T.hs256)))
    assert.equal("invalid algorithm", refused(only, T.hs512).message)
    local rs = jwt.verifier { secret = file("rsa.pub.pem"), clockTimestamp = F.t0, algorithms = { "RS256" } }
    assert.equal("invalid algorithm", refused(rs, T.rs384).message)
    assert.equal("the header has no alg", refused(hs(), T.no_alg).reason)
    -- A JWK's own alg binds its key.
    local j = jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }
    local k = refused(j, T.rs384)
    assert.equal("invalid algorithm", k.message)
    assert.equal("the key with kid 'rsa-1' is for RS256, the token says RS384", k.reason)
    -- ES256 on a P-384 key: jsonwebtoken's curve rule.
    assert.equal('"alg" parameter "ES256" requires curve "prime256v1".', refused(j, T.es256_on_p384).message)
  end)

  it("refuses alg none, signed or not, and will not be configured for it", function()
    local v = hs()
    local e = refused(v, T.none)
    assert.equal("jwt signature is required", e.message)
    assert.equal("invalid algorithm", refused(v, T.none_signed).message)
    assert.equal("invalid algorithm", refused(v, T.none_lower).message)
    local j = jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }
    assert.equal("jwt signature is required", refused(j, T.none).message)
    assert.matches("'none' is refused", config_fails { secret = F.secret, algorithms = { "HS256", "none" } }.message)
    assert.matches("'none' is refused", config_fails { secret = F.secret, algorithms = { "None" } }.message)
  end)

  it("defeats the RS/HS confusion attack (HS256 keyed with the RSA public key)", function()
    local pem = file("rsa.pub.pem")
    local rs = jwt.verifier { secret = pem, clockTimestamp = F.t0 }
    local e = refused(rs, T.confusion)
    assert.equal("invalid algorithm", e.message)
    assert.equal("alg 'HS256' is not one of the allowed RS256, RS384, RS512", e.reason)
    local j = jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }
    assert.equal("invalid algorithm", refused(j, T.confusion).message)
    -- An allow-list that would let HS256 meet the public key fails at setup.
    local c = config_fails { secret = pem, algorithms = { "RS256", "HS256" } }
    assert.equal("hemera.jwt: invalid option 'algorithms': HS256 needs an HMAC secret, and the configured keys are: RSA",
      c.message)
    assert.matches("HS256 needs an HMAC secret", config_fails { jwks = F.files["jwks.json"], algorithms = { "HS256" } }.message)
    -- And the C layer refuses a key of the wrong kind on its own.
    local key = assert(core.jwt.pem(pem))
    local ok, why = core.jwt.verify("HS256", key, "a.b", "x")
    assert.is_false(ok)
    assert.equal("an HMAC algorithm needs a secret, not a public key", why)
    ok, why = core.jwt.verify("RS256", pem, "a.b", "x")
    assert.is_false(ok)
    assert.equal("a public-key algorithm needs a public key, not a secret", why)
  end)

  it("checks iss, aud, sub and maxAge with jsonwebtoken's messages", function()
    assert.is_nil(select(2, hs { issuer = "issuer-1", audience = "svc", subject = "ada" }(T.hs256)))
    assert.is_nil(select(2, hs { issuer = { "x", "issuer-1" } }(T.hs256)))
    assert.equal("jwt issuer invalid. expected: issuer-1", refused(hs { issuer = "issuer-1" }, T.iss_other).message)
    assert.equal("jwt issuer invalid. expected: a,b", refused(hs { issuer = { "a", "b" } }, T.hs256).message)
    assert.equal("jwt audience invalid. expected: svc", refused(hs { audience = "svc" }, T.aud_other).message)
    assert.equal("jwt audience invalid. expected: a or b", refused(hs { audience = { "a", "b" } }, T.hs256).message)
    assert.is_nil(select(2, hs { audience = "svc" }(T.aud_list)))
    assert.equal("jwt subject invalid. expected: bob", refused(hs { subject = "bob" }, T.hs256).message)
    assert.is_nil(select(2, hs { maxAge = 60 }(T.hs256)))
    local m = refused(jwt.verifier { secret = F.secret, clockTimestamp = F.t0 + 60, maxAge = 60 }, T.hs256)
    assert.equal("TokenExpiredError", m.name)
    assert.equal("maxAge exceeded", m.message)
  end)

  it("names what is wrong with a malformed token", function()
    local v = hs()
    local cases = {
      { nil, "jwt must be provided" }, { "", "jwt must be provided" }, { Hemera.null, "jwt must be provided" },
      { 42, "jwt must be a string", "it is a number" },
      { "foobar", "jwt malformed", "a JWT has 3 parts separated by '.', this one has 1" },
      { "a.b", "jwt malformed", "a JWT has 3 parts separated by '.', this one has 2" },
      { "a.b.c.d", "jwt malformed", "a JWT has 3 parts separated by '.', this one has 4" },
      { ".eyJ9.abc", "invalid token", "the header is empty" },
      { "eyJhbGciOiJIUzI1NiJ9..abc", "invalid token", "the payload is empty" },
      { "eyJhb+ciOiJIUzI1NiJ9.eyJ9.abc", "invalid token", "the header is not base64url: invalid character '+' at byte 6" },
      { "eyJhbGciOiJIUzI1NiJ9.e.abc", "invalid token", "the payload is not base64url: 1 characters is not a base64url length" },
      { "eyJhbGciOiJIUzI1NiJ9.eyJ9.ab=c", "invalid token", "the signature is not base64url: invalid character '=' at byte 3" },
      { T.header_text, "invalid token" },
      { T.payload_array, "invalid token", "the payload is an array, not an object of claims" },
      { T.payload_text, "invalid token" },
    }
    for _, c in ipairs(cases) do
      local e = refused(v, c[1])
      assert.equal("JsonWebTokenError", e.name)
      assert.equal(c[2], e.message, tostring(c[1]))
      if c[3] then assert.equal(c[3], e.reason, tostring(c[1])) end
    end
    assert.matches("^the header is not JSON: ", refused(v, T.header_text).reason)
    assert.matches("^the payload is not JSON: ", refused(v, T.payload_text).reason)
  end)

  it("selects JWKS keys by kid and says which one it could not find", function()
    local j = jwt.verifier { jwks = F.files["jwks.json"], clockTimestamp = F.t0 }
    local e = refused(j, T.rs256_kid_unknown)
    assert.equal("no key in the JWKS has kid 'nope'", e.message)
    assert.equal("nope", e.kid)
    local enc = refused(j, T.rs256_kid_enc)
    assert.equal("it was skipped: keys[4] (kid rsa-enc) is for use 'enc', not 'sig'", enc.reason)
    -- Two keys could verify a token without kid: refuse to guess.
    local set = assert(core.decode(file("jwks.json")))
    local a, b = {}, {}
    for k, v in pairs(set.keys[1]) do a[k] = v; b[k] = v end
    a.kid, b.kid, a.alg, b.alg = "one", "two", nil, nil
    local two = jwt.verifier { jwks = { keys = { a, b } }, clockTimestamp = F.t0 }
    assert.equal("the token has no kid, and 2 keys of the JWKS can verify RS512", refused(two, T.rs512).message)
    assert.equal("no key in the JWKS has kid 'rsa-1'", refused(two, T.rs256).message)
  end)

  it("refuses bad configurations, naming the option", function()
    assert.equal("hemera.jwt: invalid option 'secret': give exactly one of 'secret' (an HMAC secret or a PEM public key) and 'jwks' (a JWKS file or table)",
      config_fails {}.message)
    assert.matches("give exactly one of", config_fails { secret = "x", jwks = F.files["jwks.json"] }.message)
    assert.matches("invalid option 'algoritms': unknown key %(known: ", config_fails { secret = "x", algoritms = { "HS256" } }.message)
    assert.matches("an empty HMAC secret", config_fails { secret = "" }.message)
    assert.matches("a PEM PRIVATE KEY: give the public key", config_fails { secret = file("rsa.key.pem") }.message)
    assert.matches("not a PEM public key", config_fails { secret = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" }.message)
    assert.matches("'algorithms': item 1, PS256, is not supported", config_fails { secret = "x", algorithms = { "PS256" } }.message)
    assert.matches("'clockTolerance': expected a number of seconds >= 0", config_fails { secret = "x", clockTolerance = -1 }.message)
    assert.matches("'issuer': expected a string or a non%-empty list", config_fails { secret = "x", issuer = 3 }.message)
    assert.matches("'jwks': cannot read /nonexistent/jwks.json", config_fails { jwks = "/nonexistent/jwks.json" }.message)
    assert.matches("'jwks': .* is not JSON", config_fails { jwks = F.files["rsa.pub.pem"] }.message)
    assert.matches("has no key this verifier can use", config_fails { jwks = { keys = { { kty = "OKP", kid = "e" } } } }.message)
    local small = S.path("rsa1024.pub.pem")
    S.run(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null | openssl pkey -pubout -out %s"):format(
      S.shell_quote(small)), "openssl genpkey")
    assert.matches("RSA key of 1024 bits; at least 2048", config_fails { secret = S.read(small) }.message)
    local bad_ec = config_fails { jwks = { keys = { { kty = "EC", crv = "P-256", x = ("A"):rep(43), y = ("A"):rep(43) } } } }
    assert.matches("is the point on the curve", bad_ec.message)
  end)

  it("takes hemera-jwt-auth's option shape, jwt = { secret, options }", function()
    local v = jwt.verifier { jwt = { secret = F.secret, options = { algorithms = { "HS256" }, issuer = "issuer-1",
                                                                  clockTimestamp = F.t0 } } }
    assert.equal("ada", (v(T.hs256)).sub)
    assert.equal("invalid algorithm", refused(v, T.hs384).message)
    assert.matches("'jwt.options.complete': not a verify option", config_fails { jwt = { secret = "x", options = { complete = true } } }.message)
  end)

  it("decodes base64url strictly (core.jwt.b64url)", function()
    local b = core.jwt.b64url
    assert.equal('{"alg":"HS256"}', b("eyJhbGciOiJIUzI1NiJ9"))
    assert.equal("\255\254", b("__4"))
    assert.equal("", b(""))
    local none, why = b("QQ==")
    assert.is_nil(none)
    assert.equal("invalid character '=' at byte 3", why)
    assert.equal("invalid character 0x0A at byte 2", select(2, b("Q\nQ")))
    assert.equal("5 characters is not a base64url length", select(2, b("QUJDR")))
  end)
end)

-- {==================================================================
-- The plugin on a service
-- ===================================================================

-- A service with the plugin and actions of each kind on topic; returns it
-- and a client.
local function service(topic, opts)
  local s = testing.new { pluginTimeout = 2000 }
  s:use(jwt, opts or { secret = F.secret })
  assert(s:ready())
  local function answer(_, ctx) return { sub = ctx.auth.sub, scope = ctx.auth.scope } end
  s:add({ topic = topic, cmd = "scoped", ["auth$"] = { scope = { "math", "a" } } }, answer)
  s:add({ topic = topic, cmd = "one", ["auth$"] = { scope = "math" } }, answer)
  s:add({ topic = topic, cmd = "admin", ["auth$"] = { scope = { "math", "admin" } } }, answer)
  s:add({ topic = topic, cmd = "open", ["auth$"] = { enabled = false } }, function() return "open" end)
  s:add({ topic = topic, cmd = "any", ["auth$"] = {} }, answer)
  s:add({ topic = topic, cmd = "plain" }, answer)
  s:add({ topic = topic, cmd = "badscope", ["auth$"] = { scope = { 1 } } }, answer)
  -- A nested act inherits the caller's meta, token included.
  s:add({ topic = topic, cmd = "nested", ["auth$"] = { scope = "math" } }, function(_, ctx)
    local r, err = ctx:act { topic = topic, cmd = "scoped" }
    if err then return nil, err end
    return r
  end)
  local c = testing.new()
  assert(c:ready())
  return s, c
end

local function act(c, topic, cmd, token)
  return c:act { topic = topic, cmd = cmd, meta_ = { jwtToken = token } }
end

describe("hemera.jwt plugin", function()
  it("lets a valid token through and gives the handler its claims as ctx.auth", function()
    testing.run(function()
      local topic = testing.topic("jwt")
      local s, c = service(topic)
      local r, err = act(c, topic, "scoped", T.live)
      assert.is_nil(err)
      assert.same({ "math", "a" }, r.scope)
      assert.equal("math", act(c, topic, "one", T.live).scope[1])
      assert.is_nil(select(2, act(c, topic, "any", T.live)))
      assert.same({ "math", "a" }, (act(c, topic, "nested", T.live)).scope)
      assert.is_table(s.jwtErrors)
      assert.equal(jwt.JwtError, s.jwtErrors.JwtError)
    end)
  end)

  it("answers each failure with hemera-jwt-auth's error", function()
    testing.run(function()
      local topic = testing.topic("jwt")
      local _, c = service(topic)
      local _, e = act(c, topic, "scoped", nil)
      assert.equal("JsonWebTokenError", e.name)
      assert.equal("jwt must be provided", e.message)
      _, e = act(c, topic, "scoped", "foobar")
      assert.equal("jwt malformed", e.message)
      _, e = act(c, topic, "scoped", T.live_expired)
      assert.equal("TokenExpiredError", e.name)
      assert.is_string(e.expiredAt)
      -- Rebuilt by name on the client: the classes of this module.
      assert.is_true(jwt.TokenExpiredError:is(e))
      _, e = act(c, topic, "scoped", T.none)
      assert.equal("jwt signature is required", e.message)
      _, e = act(c, topic, "scoped", T.live_rs256)
      assert.equal("invalid algorithm", e.message)
      _, e = act(c, topic, "admin", T.live)
      assert.equal("JwtError", e.name)
      assert.equal("Invalid scope", e.message)
      assert.same({ "admin" }, e.missing)
      _, e = act(c, topic, "plain", T.live)
      assert.equal("JwtError", e.name)
      assert.equal("Invalid auth$ options", e.message)
      _, e = act(c, topic, "badscope", T.live)
      assert.equal("Invalid auth$ options", e.message)
      assert.equal("auth$.scope[1] is number, not a string", e.reason)
      -- The handler never ran: nothing but the error came back.
      assert.equal("open", (act(c, topic, "open", nil)))
    end)
  end)

  it("checks only actions with auth$ when enforceAuth is false", function()
    testing.run(function()
      local topic = testing.topic("jwt")
      local _, c = service(topic, { secret = F.secret, enforceAuth = false })
      local r, err = act(c, topic, "plain", nil)
      assert.is_nil(err)
      assert.same({}, r) -- ctx.auth is the empty table nobody filled
      local _, e = act(c, topic, "scoped", nil)
      assert.equal("jwt must be provided", e.message)
      assert.is_nil(select(2, act(c, topic, "scoped", T.live)))
    end)
  end)

  it("verifies RS256 and ES256 through a JWKS file, with scope as a space-separated string", function()
    testing.run(function()
      local topic = testing.topic("jwt")
      local _, c = service(topic, { jwks = F.files["jwks.json"], issuer = "issuer-1", audience = "svc" })
      assert.same({ "math", "a" }, (act(c, topic, "scoped", T.live_rs256)).scope)
      local _, e = act(c, topic, "scoped", T.live)
      assert.equal("invalid algorithm", e.message)
      local topic2 = testing.topic("jwt")
      local _, c2 = service(topic2, { secret = F.secret, clockTimestamp = F.t0 })
      assert.equal("math a", (act(c2, topic2, "scoped", T.scope_string)).scope)
      local _, e2 = act(c2, topic2, "scoped", T.scope_math)
      assert.same({ "a" }, e2.missing)
      local _, e3 = act(c2, topic2, "scoped", T.no_scope)
      assert.equal("Invalid scope", e3.message)
    end)
  end)

  it("fails ready with the option a bad configuration names", function()
    testing.run(function()
      local s = testing.new { pluginTimeout = 2000 }
      s:use(jwt, { secret = F.secret, enforceAuth = "yes" })
      local ok, err = s:ready()
      assert.is_falsy(ok)
      assert.equal("hemera.jwt: invalid option 'enforceAuth': expected a boolean, got string (yes)", err.message)
      s:close()
    end)
  end)
end)
