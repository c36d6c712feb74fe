--- hemera.jwt: JWT authentication for Hemera services, the Lua counterpart
-- of hemera-jwt-auth 6.0.2.
--
--     hemera:use(require "hemera.jwt", { secret = os.getenv("JWT_SECRET") })
--     hemera:add({ topic = "math", cmd = "add", ["auth$"] = { scope = { "math" } } }, handler)
--
-- A `preHandler` verifies the request's `meta.jwtToken` and puts the
-- decoded claims in `ctx.auth`. Per action, `auth$ = { enabled = false }`
-- skips it and `auth$ = { scope = ... }` requires every listed scope of the
-- token's `scope` claim. With `enforceAuth = false`, only actions with an
-- `auth$` table are checked.
--
-- What the caller sees on failure is what a Node service with
-- hemera-jwt-auth answers (names and messages of jsonwebtoken 9, which it
-- uses, and its own `JwtError`): `JsonWebTokenError` ("jwt malformed",
-- "invalid signature", ...), `TokenExpiredError` ("jwt expired",
-- `expiredAt`), `NotBeforeError` ("jwt not active", `date`), `JwtError`
-- ("Invalid scope", "Invalid auth$ options"). Where jsonwebtoken's message
-- is terse, the error also has a `reason` naming what failed.
--
-- Verification follows jsonwebtoken's `verify` step by step, with two
-- rules it leaves to its caller made fixed here: the algorithm comes from
-- the configured list (never from the token alone: `alg: none` and an
-- HS256 token against a public key fail), and the key must be of the kind
-- the algorithm needs (the RS/HS confusion attack fails twice over).
-- The cryptography is OpenSSL's (lua/hm_lua_jwt.c, `core.jwt`); the
-- token's JSON is read by the project's codec (`core.decode`).
--
-- @module hemera.jwt

local core = require "hemera.core"
local errors = require "hemera.errors"
local json_type = require("hemera.util").json_type

local jc = core.jwt
local decode, null, array_mt = core.decode, core.null, core.array_mt
local floor = math.floor

local M = {
  name = "hemera-jwt-auth",
  scoped = false, -- as hemera-jwt-auth: its hook guards the whole instance
  options = { enforceAuth = true },
}

-- {==================================================================
-- Errors
-- ===================================================================

--- hemera-jwt-auth's own error (scope and auth$ failures); the parent of
-- the others here, so `JwtError:is(err)` tells any authentication failure.
M.JwtError = errors.registry.JwtError or errors.class("JwtError")
--- jsonwebtoken's errors, by their Node names.
M.JsonWebTokenError = errors.registry.JsonWebTokenError or errors.class("JsonWebTokenError", M.JwtError)
M.TokenExpiredError = errors.registry.TokenExpiredError or errors.class("TokenExpiredError", M.JsonWebTokenError)
M.NotBeforeError = errors.registry.NotBeforeError or errors.class("NotBeforeError", M.JsonWebTokenError)

local JwtError, JWTError = M.JwtError, M.JsonWebTokenError

-- A configuration mistake: raised when the plugin (or a verifier) is set up.
local function config_error(option, msg, level)
  error(errors.HemeraError(("hemera.jwt: invalid option '%s': %s"):format(option, msg), { option = option }),
        (level or 1) + 1)
end

local function bad(msg, reason, fields)
  fields = fields or {}
  fields.reason = reason
  return nil, JWTError(msg, fields)
end

-- JavaScript's `new Date(s * 1000)` as JSON writes it, for expiredAt/date.
local function js_date(s)
  local ok, text = pcall(os.date, "!%Y-%m-%dT%H:%M:%S", floor(s))
  if not ok or not text then return nil end
  return ("%s.%03dZ"):format(text, floor(s * 1000) % 1000)
end

-- }==================================================================

-- {==================================================================
-- Keys
-- ===================================================================

-- The algorithms, by family: H (secret), R (RSA key), E (EC key, on the
-- algorithm's curve).
local ALGS = {
  HS256 = "H", HS384 = "H", HS512 = "H",
  RS256 = "R", RS384 = "R", RS512 = "R",
  ES256 = "E", ES384 = "E", ES512 = "E",
}
local ORDER = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512" }
local CURVE_OF = { ES256 = "P-256", ES384 = "P-384", ES512 = "P-521" }
local OSSL_CURVE = { ["P-256"] = "prime256v1", ["P-384"] = "secp384r1", ["P-521"] = "secp521r1" }
local FAMILY_ALGS = { H = "HS256, HS384, HS512", R = "RS256, RS384, RS512", E = "ES256, ES384, ES512" }
local MIN_RSA_BITS = 2048 -- what jsonwebtoken 9 signs with at least

-- Whether key entry k can verify alg (its family, and an EC key's curve).
local function fits(k, alg)
  local fam = ALGS[alg]
  if fam ~= k.family then return false end
  return fam ~= "E" or k.crv == CURVE_OF[alg]
end

-- A key entry from an imported OpenSSL key; nil, why when it is unusable.
local function asymmetric(key, what)
  local kind, bits, crv = key:info()
  if kind == "RSA" then
    if bits < MIN_RSA_BITS then
      return nil, ("%s is an RSA key of %d bits; at least %d are needed"):format(what, bits, MIN_RSA_BITS)
    end
    return { family = "R", key = key, kind = "RSA", bits = bits }
  elseif kind == "EC" then
    if not OSSL_CURVE[crv] then
      return nil, ("%s is on curve %s; P-256, P-384 and P-521 are supported"):format(what, tostring(crv))
    end
    return { family = "E", key = key, kind = "EC", crv = crv, bits = bits }
  end
  return nil, ("%s is a %s key; RSA and EC keys are supported"):format(what, tostring(kind))
end

-- The key entry of a `secret` option: a PEM public key or certificate, or
-- the bytes of an HMAC secret.
local function from_secret(secret)
  local label = secret:match("%-%-%-%-%-BEGIN ([%u ]+)%-%-%-%-%-")
  if not label then
    if secret == "" then config_error("secret", "an empty HMAC secret protects nothing", 4) end
    return { family = "H", key = secret, kind = "secret" }
  end
  if label:find("PRIVATE", 1, true) then
    config_error("secret", ("a PEM %s: give the public key (openssl pkey -pubout), a service only verifies"):format(label), 4)
  end
  if label ~= "PUBLIC KEY" and label ~= "RSA PUBLIC KEY" and label ~= "CERTIFICATE" then
    config_error("secret", ("a PEM %s is not a public key or a certificate"):format(label), 4)
  end
  local key, why = jc.pem(secret, label == "CERTIFICATE")
  if not key then config_error("secret", why, 4) end
  local k, kwhy = asymmetric(key, "the PEM " .. label:lower())
  if not k then config_error("secret", kwhy, 4) end
  return k
end

local function jwk_field(jwk, i, name)
  local v = jwk[name]
  if type(v) ~= "string" or v == "" then
    return nil, ("keys[%d] (kid %s) has no '%s'"):format(i, tostring(jwk.kid), name)
  end
  local bytes, why = jc.b64url(v)
  if not bytes then return nil, ("keys[%d].%s is not base64url: %s"):format(i, name, why) end
  return bytes
end

-- The key entries of a JWKS (RFC 7517): the signature keys it can use, by
-- kid. Keys for encryption and of other types are skipped (a provider's
-- set often holds them); `skipped` lists them with why.
local function from_jwks(set, source)
  if type(set) ~= "table" or type(set.keys) ~= "table" then
    config_error("jwks", ("%s is not a JWKS (an object with a 'keys' array)"):format(source), 4)
  end
  local list, by_kid, skipped, skipped_kid = {}, {}, {}, {}
  for i, jwk in ipairs(set.keys) do
    local k, why
    if type(jwk) ~= "table" then
      why = ("keys[%d] is not an object"):format(i)
    elseif jwk.use ~= nil and jwk.use ~= "sig" then
      why = ("keys[%d] (kid %s) is for use '%s', not 'sig'"):format(i, tostring(jwk.kid), tostring(jwk.use))
    elseif jwk.kty == "RSA" then
      local n, e
      n, why = jwk_field(jwk, i, "n")
      if n then e, why = jwk_field(jwk, i, "e") end
      if e then
        local key
        key, why = jc.rsa(n, e)
        if key then k, why = asymmetric(key, ("keys[%d] (kid %s)"):format(i, tostring(jwk.kid))) end
      end
    elseif jwk.kty == "EC" then
      local x, y
      x, why = jwk_field(jwk, i, "x")
      if x then y, why = jwk_field(jwk, i, "y") end
      if y then
        local key
        key, why = jc.ec(tostring(jwk.crv), x, y)
        if key then k, why = asymmetric(key, ("keys[%d] (kid %s)"):format(i, tostring(jwk.kid))) end
      end
    else
      why = ("keys[%d] (kid %s) has kty '%s'; RSA and EC are supported"):format(i, tostring(jwk.kid), tostring(jwk.kty))
    end
    if k then
      if jwk.kid ~= nil and type(jwk.kid) ~= "string" then
        config_error("jwks", ("keys[%d].kid must be a string, got %s"):format(i, type(jwk.kid)), 4)
      end
      if jwk.alg ~= nil then
        if not ALGS[jwk.alg] or not fits(k, jwk.alg) then
          config_error("jwks", ("keys[%d] (kid %s) says alg '%s', which a %s key cannot verify"):format(
            i, tostring(jwk.kid), tostring(jwk.alg), k.kind), 4)
        end
        k.alg = jwk.alg
      end
      k.kid = jwk.kid
      if k.kid then
        if by_kid[k.kid] then config_error("jwks", ("two keys have kid '%s'"):format(k.kid), 4) end
        by_kid[k.kid] = k
      end
      list[#list + 1] = k
    else
      skipped[#skipped + 1] = why
      if type(jwk) == "table" and type(jwk.kid) == "string" then skipped_kid[jwk.kid] = why end
    end
  end
  if #list == 0 then
    config_error("jwks", ("%s has no key this verifier can use%s"):format(source,
      #skipped > 0 and (": " .. table.concat(skipped, "; ")) or ""), 4)
  end
  return list, by_kid, skipped, skipped_kid
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then config_error("jwks", ("cannot read %s: %s"):format(path, tostring(err)), 5) end
  local text = f:read("a")
  f:close()
  return text
end

-- }==================================================================

-- {==================================================================
-- Options
-- ===================================================================

-- jsonwebtoken's verify options this verifier has, and ours (secret,
-- jwks, enforceAuth). value -> error text or nil.
local function is_bool(v) return type(v) ~= "boolean" and "expected a boolean" end
local function is_seconds(v)
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then return "expected a number of seconds >= 0" end
end
local function is_names(v)
  if type(v) == "string" then return v == "" and "expected a non-empty string" end
  if type(v) ~= "table" or #v == 0 then return "expected a string or a non-empty list of strings" end
  for i, s in ipairs(v) do
    if type(s) ~= "string" or s == "" then return ("item %d: expected a non-empty string, got %s"):format(i, type(s)) end
  end
end

local OPTIONS = {
  enforceAuth = is_bool,
  secret = function(v) return type(v) ~= "string" and "expected a string (an HMAC secret or a PEM public key)" end,
  jwks = function(v) return type(v) ~= "string" and type(v) ~= "table" and "expected a JWKS file's path or a JWKS table" end,
  algorithms = function(v) return (type(v) ~= "table" or #v == 0) and "expected a non-empty list of algorithm names" end,
  issuer = is_names,
  audience = is_names,
  subject = function(v) return (type(v) ~= "string" or v == "") and "expected a non-empty string" end,
  clockTolerance = is_seconds,
  clockTimestamp = function(v) return type(v) ~= "number" and "expected a number (seconds since the epoch)" end,
  ignoreExpiration = is_bool,
  ignoreNotBefore = is_bool,
  -- not (v > 0), not v <= 0: NaN must fail too.
  maxAge = function(v) return (type(v) ~= "number" or not (v > 0) or v == math.huge) -- luacheck: ignore 581
     and "expected a number of seconds > 0" end,
  jwt = function(v) return type(v) ~= "table" and "expected a table { secret = ..., options = {...} }" end,
}

local function known_options()
  local names = {}
  for k in pairs(OPTIONS) do names[#names + 1] = k end
  table.sort(names)
  return table.concat(names, ", ")
end

-- hemera-jwt-auth's shape, { jwt = { secret, options = {...} } }, flattened
-- into ours (so a Node service's options carry over as they are).
local function flatten(opts)
  local out = {}
  for k, v in pairs(opts) do out[k] = v end
  local node = out.jwt
  if node == nil then return out end
  out.jwt = nil
  local err = OPTIONS.jwt(node)
  if err then config_error("jwt", err, 4) end
  for k, v in pairs(node) do
    if k == "secret" then
      -- hemera-jwt-auth's default is `secret: false`.
      if v ~= false then
        if out.secret ~= nil then config_error("jwt.secret", "'secret' is given twice", 4) end
        out.secret = v
      end
    elseif k == "options" then
      if type(v) ~= "table" then config_error("jwt.options", "expected a table of verify options", 4) end
      for ok, ov in pairs(v) do
        if ok == "secret" or ok == "jwks" or ok == "enforceAuth" or ok == "jwt" or not OPTIONS[ok] then
          config_error("jwt.options." .. tostring(ok), "not a verify option this verifier has (known: algorithms, audience, clockTimestamp, clockTolerance, ignoreExpiration, ignoreNotBefore, issuer, maxAge, subject)", 4)
        end
        if out[ok] ~= nil then config_error("jwt.options." .. ok, ("'%s' is given twice"):format(ok), 4) end
        out[ok] = ov
      end
    else
      config_error("jwt." .. tostring(k), "unknown key (known: secret, options)", 4)
    end
  end
  return out
end

-- The checked configuration of a verifier. `level` is the error level of
-- the caller's caller.
local function configure(opts)
  if type(opts) ~= "table" then
    error(errors.HemeraError("hemera.jwt: options must be a table, got " .. type(opts)), 3)
  end
  opts = flatten(opts)
  for k, v in pairs(opts) do
    local check = OPTIONS[k]
    if not check then config_error(tostring(k), "unknown key (known: " .. known_options() .. ")", 3) end
    local err = check(v)
    if err then config_error(k, ("%s, got %s (%s)"):format(err, type(v), tostring(v)), 3) end
  end
  local cfg = {
    issuer = opts.issuer, audience = opts.audience, subject = opts.subject,
    clockTolerance = opts.clockTolerance or 0, clockTimestamp = opts.clockTimestamp,
    ignoreExpiration = opts.ignoreExpiration == true, ignoreNotBefore = opts.ignoreNotBefore == true,
    maxAge = opts.maxAge,
  }
  if type(cfg.issuer) == "string" then cfg.issuer = { cfg.issuer } end
  if type(cfg.audience) == "string" then cfg.audience = { cfg.audience } end

  if (opts.secret == nil) == (opts.jwks == nil) then
    config_error(opts.secret and "jwks" or "secret",
      "give exactly one of 'secret' (an HMAC secret or a PEM public key) and 'jwks' (a JWKS file or table)", 3)
  end
  local keys, skipped
  if opts.secret ~= nil then
    keys = { from_secret(opts.secret) }
    cfg.single = keys[1]
  else
    local set, source = opts.jwks, "the JWKS table"
    if type(set) == "string" then
      source = set
      local text = read_file(set)
      local v, why = decode(text)
      if v == nil then config_error("jwks", ("%s is not JSON: %s"):format(set, tostring(why)), 3) end
      set = v
    end
    keys, cfg.by_kid, skipped, cfg.skipped_kid = from_jwks(set, source)
  end
  cfg.keys, cfg.skipped = keys, skipped or {}

  -- The allow-list: as given, or jsonwebtoken's default for the keys
  -- (the algorithms of their kinds). Every algorithm in it must have a key
  -- that can verify it, so a list that admits HS256 beside an RSA public
  -- key (the confusion attack's door) fails here, at setup.
  local allowed, list = {}, {}
  if opts.algorithms then
    for i, alg in ipairs(opts.algorithms) do
      if alg == "none" or (type(alg) == "string" and alg:lower() == "none") then
        config_error("algorithms", "'none' is refused: an unsigned token proves nothing", 3)
      end
      if not ALGS[alg] then
        config_error("algorithms", ("item %d, %s, is not supported (supported: %s)"):format(
          i, tostring(alg), table.concat(ORDER, ", ")), 3)
      end
      local usable = false
      for _, k in ipairs(keys) do
        if fits(k, alg) then usable = true break end
      end
      if not usable then
        local have = {}
        for _, k in ipairs(keys) do have[#have + 1] = k.kind == "EC" and ("EC " .. k.crv) or k.kind end
        config_error("algorithms", ("%s needs %s, and the configured keys are: %s"):format(
          alg, ALGS[alg] == "H" and "an HMAC secret" or ALGS[alg] == "R" and "an RSA public key"
            or ("an EC public key on " .. CURVE_OF[alg]), table.concat(have, ", ")), 3)
      end
      if not allowed[alg] then allowed[alg] = true; list[#list + 1] = alg end
    end
  else
    for _, alg in ipairs(ORDER) do
      for _, k in ipairs(keys) do
        if ALGS[alg] == k.family and not allowed[alg] then allowed[alg] = true; list[#list + 1] = alg end
      end
    end
  end
  cfg.allowed, cfg.algorithms = allowed, list
  return cfg, opts
end

-- }==================================================================

-- {==================================================================
-- Verification (jsonwebtoken 9's verify, in its order)
-- ===================================================================

-- The key for a token's header, or nil, err.
local function pick_key(cfg, header, alg)
  local k = cfg.single
  if not k then
    local kid = header.kid
    if kid ~= nil then
      if type(kid) ~= "string" then return bad("invalid token", "the header's kid is " .. json_type(kid) .. ", not a string") end
      k = cfg.by_kid[kid]
      if not k then
        local skipped = cfg.skipped_kid[kid]
        return nil, JWTError(("no key in the JWKS has kid '%s'"):format(kid),
          { kid = kid, reason = skipped and ("it was skipped: " .. skipped) or nil })
      end
    else
      local found, n = nil, 0
      for _, c in ipairs(cfg.keys) do
        if fits(c, alg) and (c.alg == nil or c.alg == alg) then found, n = c, n + 1 end
      end
      if n ~= 1 then
        return nil, JWTError(n == 0 and ("no key in the JWKS can verify %s"):format(alg)
          or ("the token has no kid, and %d keys of the JWKS can verify %s"):format(n, alg))
      end
      k = found
    end
    if k.alg and k.alg ~= alg then
      return bad("invalid algorithm", ("the key with kid '%s' is for %s, the token says %s"):format(k.kid, k.alg, alg))
    end
  end
  -- jsonwebtoken's key-kind checks, in its words.
  local fam = ALGS[alg]
  if fam == "H" and k.family ~= "H" then
    return bad(("secretOrPublicKey must be a symmetric key when using %s"):format(alg),
      ("the %s token would be checked against an %s public key"):format(alg, k.kind))
  elseif fam ~= "H" and k.family == "H" then
    return bad(("secretOrPublicKey must be an asymmetric key when using %s"):format(alg))
  elseif fam ~= k.family then
    return bad(('"alg" parameter for "%s" key type must be one of: %s.'):format(k.kind:lower(), FAMILY_ALGS[k.family]))
  elseif fam == "E" and k.crv ~= CURVE_OF[alg] then
    return bad(('"alg" parameter "%s" requires curve "%s".'):format(alg, OSSL_CURVE[CURVE_OF[alg]]),
      ("the key is on %s"):format(k.crv))
  end
  return k
end

local function list_has(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

-- Checks the registered claims; returns nil or the error.
local function check_claims(cfg, p, now)
  local tol = cfg.clockTolerance
  if p.nbf ~= nil and not cfg.ignoreNotBefore then
    if type(p.nbf) ~= "number" then return JWTError("invalid nbf value", { reason = "nbf is " .. json_type(p.nbf) }) end
    if p.nbf > now + tol then
      return M.NotBeforeError("jwt not active", { date = js_date(p.nbf) })
    end
  end
  if p.exp ~= nil and not cfg.ignoreExpiration then
    if type(p.exp) ~= "number" then return JWTError("invalid exp value", { reason = "exp is " .. json_type(p.exp) }) end
    if now >= p.exp + tol then
      return M.TokenExpiredError("jwt expired", { expiredAt = js_date(p.exp) })
    end
  end
  if cfg.audience then
    local aud = p.aud
    local target = (type(aud) == "table" and getmetatable(aud) == array_mt) and aud or { aud }
    local match = false
    for _, a in ipairs(target) do
      if list_has(cfg.audience, a) then match = true break end
    end
    if not match then
      return JWTError("jwt audience invalid. expected: " .. table.concat(cfg.audience, " or "))
    end
  end
  if cfg.issuer and not list_has(cfg.issuer, p.iss) then
    -- Node prints an array option with its commas (String(array)).
    return JWTError("jwt issuer invalid. expected: " .. table.concat(cfg.issuer, ","))
  end
  if cfg.subject and p.sub ~= cfg.subject then
    return JWTError("jwt subject invalid. expected: " .. cfg.subject)
  end
  if cfg.maxAge then
    if type(p.iat) ~= "number" then return JWTError("iat required when maxAge is specified") end
    local limit = p.iat + cfg.maxAge
    if now >= limit + tol then
      return M.TokenExpiredError("maxAge exceeded", { expiredAt = js_date(limit) })
    end
  end
  return nil
end

local function verify(cfg, token, now)
  if token == nil or token == false or token == null or token == "" or token == 0 then
    return bad("jwt must be provided")
  end
  if type(token) ~= "string" then return bad("jwt must be a string", "it is " .. json_type(token)) end
  local d1 = token:find(".", 1, true)
  local d2 = d1 and token:find(".", d1 + 1, true)
  local d3 = d2 and token:find(".", d2 + 1, true)
  if not d2 or d3 then
    local n = 1
    for _ in token:gmatch("%.") do n = n + 1 end
    return bad("jwt malformed", ("a JWT has 3 parts separated by '.', this one has %d"):format(n))
  end
  local h64, p64, s64 = token:sub(1, d1 - 1), token:sub(d1 + 1, d2 - 1), token:sub(d2 + 1)
  if h64 == "" then return bad("invalid token", "the header is empty") end
  if p64 == "" then return bad("invalid token", "the payload is empty") end
  local hbytes, why = jc.b64url(h64)
  if not hbytes then return bad("invalid token", "the header is not base64url: " .. why) end
  local pbytes
  pbytes, why = jc.b64url(p64)
  if not pbytes then return bad("invalid token", "the payload is not base64url: " .. why) end
  local sig
  sig, why = jc.b64url(s64)
  if not sig then return bad("invalid token", "the signature is not base64url: " .. why) end
  local header
  header, why = decode(hbytes)
  if header == nil then return bad("invalid token", "the header is not JSON: " .. tostring(why)) end
  if type(header) ~= "table" or getmetatable(header) == array_mt then
    return bad("invalid token", "the header is " .. json_type(header) .. ", not an object")
  end
  if sig == "" then return bad("jwt signature is required", "the token is unsigned (alg " .. tostring(header.alg) .. ")") end
  local alg = header.alg
  if type(alg) ~= "string" or not cfg.allowed[alg] then
    return bad("invalid algorithm", (type(alg) ~= "string" and "the header has no alg"
      or ("alg '%s' is not one of the allowed %s"):format(alg, table.concat(cfg.algorithms, ", "))))
  end
  local k, kerr = pick_key(cfg, header, alg)
  if not k then return nil, kerr end
  local ok, vwhy = jc.verify(alg, k.key, token:sub(1, d2 - 1), sig)
  if not ok then return bad("invalid signature", vwhy) end
  -- The payload is read only once its signature holds.
  local payload
  payload, why = decode(pbytes)
  if payload == nil then return bad("invalid token", "the payload is not JSON: " .. tostring(why)) end
  if type(payload) ~= "table" or getmetatable(payload) == array_mt then
    return bad("invalid token", "the payload is " .. json_type(payload) .. ", not an object of claims")
  end
  local cerr = check_claims(cfg, payload, now or cfg.clockTimestamp or os.time())
  if cerr then return nil, cerr end
  return payload, nil, header
end

--- A verifier: `verify(token [, now]) -> claims, nil, header | nil, err`.
-- `opts` are the plugin's key and verify options (`enforceAuth` aside);
-- mistakes in them raise a `HemeraError` naming the option. `now` (seconds)
-- defaults to `clockTimestamp`, else the system clock.
function M.verifier(opts)
  local cfg = configure(opts)
  return function(token, now) return verify(cfg, token, now) end, cfg
end

-- }==================================================================

-- {==================================================================
-- The plugin
-- ===================================================================

-- An action's required scopes, from its auth$ table (memoised: the table
-- belongs to the definition and does not change while it serves).
local required = setmetatable({}, { __mode = "k" })

local function required_scopes(auth)
  local r = required[auth]
  if r ~= nil then return r end
  local s = auth.scope
  if s == nil then
    r = false
  elseif type(s) == "string" then
    r = { s }
  elseif type(s) == "table" then
    r = {}
    for i, v in ipairs(s) do
      if type(v) ~= "string" then
        return nil, ("auth$.scope[%d] is %s, not a string"):format(i, type(v))
      end
      r[i] = v
    end
  else
    return nil, "auth$.scope is " .. type(s) .. ", not a string or a list of strings"
  end
  required[auth] = r
  return r
end

-- The token's scopes as a set: an array of strings, or a string of
-- space-separated scopes (the OAuth form, RFC 8693 section 4.2).
local function granted(claim)
  local set = {}
  if type(claim) == "string" then
    for s in claim:gmatch("%S+") do set[s] = true end
  elseif type(claim) == "table" then
    for _, s in ipairs(claim) do
      if type(s) == "string" then set[s] = true end
    end
  end
  return set
end

function M.register(scope, opts)
  local enforce = opts.enforceAuth
  if enforce == nil then enforce = true end
  if type(enforce) ~= "boolean" then
    config_error("enforceAuth", ("expected a boolean, got %s (%s)"):format(type(enforce), tostring(enforce)), 2)
  end
  local vopts = {}
  for k, v in pairs(opts) do
    if k ~= "enforceAuth" then vopts[k] = v end
  end
  local cfg = configure(vopts)
  for _, why in ipairs(cfg.skipped) do
    scope.log:debug("hemera.jwt: JWKS key skipped", { reason = why })
  end

  scope:decorate("jwtErrors", {
    JwtError = M.JwtError, JsonWebTokenError = M.JsonWebTokenError,
    TokenExpiredError = M.TokenExpiredError, NotBeforeError = M.NotBeforeError,
  })

  scope:ext("preHandler", function(ctx)
    local def = ctx.matchedAction
    local auth = def and def.schema and def.schema["auth$"]
    if auth and auth.enabled == false then return end
    if not auth and not enforce then return end
    local claims, err = verify(cfg, ctx.meta.jwtToken)
    if not claims then return nil, err end
    ctx.auth = claims
    -- hemera-jwt-auth: without an auth$ object there is nothing to grant.
    if not auth then
      return nil, JwtError("Invalid auth$ options",
        { reason = "the action has no auth$ table; give auth$ = {} to require only a valid token" })
    end
    local need, why = required_scopes(auth)
    if need == nil then return nil, JwtError("Invalid auth$ options", { reason = why }) end
    if need then
      local have = granted(claims.scope)
      local missing = {}
      for _, s in ipairs(need) do
        if not have[s] then missing[#missing + 1] = s end
      end
      if #missing > 0 then
        return nil, JwtError("Invalid scope", { missing = core.array(missing) })
      end
    end
  end)
end

-- }==================================================================

return M
