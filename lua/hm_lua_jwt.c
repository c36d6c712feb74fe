/*
** hm_lua_jwt.c: the cryptography under hemera.jwt (modules/hemera/jwt.lua),
** all of it OpenSSL's libcrypto: HMAC, RSA and ECDSA verification, base64
** decoding, PEM and JWK key import, constant-time comparison. The token's
** JSON is the project's codec (core.decode), read by jwt.lua.
**
** Why OpenSSL through this small binding, and not libjwt or luaossl:
** - the algorithm must come from the service's configuration, never from
**   the token. Debian's libjwt (1.10) verifies with the algorithm the
**   token's header names and has no JWKS; here the Lua side picks the
**   algorithm from its allow-list and the key, and verify() is told both;
** - libjwt would bring a second JSON parser (jansson) beside core.decode;
** - luaossl has no ECDSA signature conversion (JWS sends r||s, OpenSSL
**   wants DER) and no constant-time compare, which we would then write;
** - libcrypto is already in the process (cnats' TLS), so nothing new.
**
** core.jwt.b64url(s) -> bytes | nil, why
**   RFC 4648 base64url without padding (RFC 7515 section 2), strict: any
**   byte outside the alphabet, '=' included, is refused by position.
** core.jwt.pem(text, is_certificate) -> key | nil, why
**   A public key (SubjectPublicKeyInfo or PKCS#1) or an X.509 certificate.
** core.jwt.rsa(n, e) -> key | nil, why
**   A JWK's RSA public key from its modulus and exponent (big-endian).
** core.jwt.ec(crv, x, y) -> key | nil, why
**   A JWK's EC public key, crv "P-256", "P-384" or "P-521"; x and y at the
**   curve's full size (RFC 7518 section 6.2.1.2); the point must be on it.
** key:info() -> "RSA", bits | "EC", bits, crv | type name, bits
** core.jwt.verify(alg, key | secret, signing_input, signature)
**     -> true | false, why
**   alg is HS256/384/512 (secret: a string), RS256/384/512 (an RSA key)
**   or ES256/384/512 (an EC key on the algorithm's curve). HMACs are
**   compared with CRYPTO_memcmp.
**
** A key is a userdata owning one EVP_PKEY, freed by its __gc (or __close).
** Every other OpenSSL object lives within one call and is freed on every
** path before anything that can raise; OpenSSL's error queue is cleared
** before and after each call, so no stale reason leaks into cnats' TLS.
** All of it runs on the thread of the Lua state calling it.
*/
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hm_lua_private.h"

#define HM_JWT_KEY_MT "hemera.jwt.Key"

typedef struct {
  EVP_PKEY *pkey; /* owned; NULL before import succeeds and after __gc */
} hm_jwt_key;

/* nil and why, with OpenSSL's reason for the last failure when it has one. */
static int fail(lua_State *L, const char *why) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  lua_pushnil(L);
  if (reason)
    lua_pushfstring(L, "%s (%s)", why, reason);
  else
    lua_pushstring(L, why);
  ERR_clear_error();
  return 2;
}

/* {====================================================================
** base64url
** ===================================================================== */

static int is_b64url(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int l_b64url(lua_State *L) {
  size_t n, padded, i;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char *in, *out;
  luaL_Buffer b;
  int got;
  if (n > (size_t)INT_MAX / 2) {
    lua_pushnil(L);
    lua_pushfstring(L, "%I bytes is too long", (lua_Integer)n);
    return 2;
  }
  if (n % 4 == 1) {
    lua_pushnil(L);
    lua_pushfstring(L, "%d characters is not a base64url length", (int)n);
    return 2;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!is_b64url(c)) {
      char shown[8];
      if (c > 32 && c < 127)
        snprintf(shown, sizeof shown, "'%c'", c);
      else
        snprintf(shown, sizeof shown, "0x%02X", c);
      lua_pushnil(L);
      lua_pushfstring(L, "invalid character %s at byte %d", shown, (int)i + 1);
      return 2;
    }
  }
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  /* OpenSSL decodes the standard alphabet with padding: translate the two
  ** URL characters and pad; the output then holds 3 bytes per 4 chars,
  ** of which the padding's are dropped. */
  padded = (n + 3) / 4 * 4;
  in = lua_newuserdatauv(L, padded, 0);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    in[i] = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  for (; i < padded; i++) in[i] = '=';
  out = (unsigned char *)luaL_buffinitsize(L, &b, padded / 4 * 3);
  ERR_clear_error();
  got = EVP_DecodeBlock(out, in, (int)padded);
  if (got < 0) {
    luaL_pushresultsize(&b, 0);
    return fail(L, "not base64url");
  }
  luaL_pushresultsize(&b, (size_t)got - (padded - n));
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Keys
** ===================================================================== */

static hm_jwt_key *new_key(lua_State *L) {
  hm_jwt_key *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->pkey = NULL;
  luaL_setmetatable(L, HM_JWT_KEY_MT);
  return k;
}

static int k_gc(lua_State *L) {
  hm_jwt_key *k = luaL_checkudata(L, 1, HM_JWT_KEY_MT);
  EVP_PKEY_free(k->pkey);
  k->pkey = NULL;
  return 0;
}

static hm_jwt_key *check_key(lua_State *L, int idx) {
  hm_jwt_key *k = luaL_checkudata(L, idx, HM_JWT_KEY_MT);
  if (!k->pkey) luaL_argerror(L, idx, "the key was freed");
  return k;
}

/* An encrypted key must never prompt on a terminal. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  return 0;
}

static int l_pem(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int cert = lua_toboolean(L, 2);
  hm_jwt_key *k;
  if (n > (size_t)INT_MAX) return luaL_argerror(L, 1, "too long");
  k = new_key(L);
  ERR_clear_error();
  if (cert) {
    BIO *bio = BIO_new_mem_buf(s, (int)n);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, no_password, NULL) : NULL;
    if (x) k->pkey = X509_get_pubkey(x);
    X509_free(x);
    BIO_free(bio);
    if (!k->pkey) return fail(L, "not a PEM certificate with a public key");
  } else {
    const unsigned char *p = (const unsigned char *)s;
    size_t left = n;
    /* SubjectPublicKeyInfo ("PUBLIC KEY") and PKCS#1 ("RSA PUBLIC KEY"). */
    OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(
        &k->pkey, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    int ok = d && OSSL_DECODER_from_data(d, &p, &left) == 1;
    OSSL_DECODER_CTX_free(d);
    if (!ok || !k->pkey) {
      EVP_PKEY_free(k->pkey);
      k->pkey = NULL;
      return fail(L, "not a PEM public key");
    }
  }
  ERR_clear_error();
  return 1;
}

/* Builds k->pkey of `type` from params; returns 1 on success. */
static int from_params(hm_jwt_key *k, const char *type, OSSL_PARAM_BLD *bld) {
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *pc = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
  int ok = pc && EVP_PKEY_fromdata_init(pc) == 1 &&
           EVP_PKEY_fromdata(pc, &k->pkey, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(pc);
  OSSL_PARAM_free(params);
  return ok && k->pkey;
}

static int l_rsa(lua_State *L) {
  size_t nl, el;
  const unsigned char *n = (const unsigned char *)luaL_checklstring(L, 1, &nl);
  const unsigned char *e = (const unsigned char *)luaL_checklstring(L, 2, &el);
  hm_jwt_key *k;
  BIGNUM *bn = NULL, *be = NULL;
  OSSL_PARAM_BLD *bld = NULL;
  int ok;
  if (nl == 0 || el == 0 || nl > 2048 || el > 2048) {
    lua_pushnil(L);
    lua_pushfstring(L, "n of %d bytes and e of %d bytes is not an RSA key",
                    (int)nl, (int)el);
    return 2;
  }
  k = new_key(L);
  ERR_clear_error();
  bn = BN_bin2bn(n, (int)nl, NULL);
  be = BN_bin2bn(e, (int)el, NULL);
  bld = OSSL_PARAM_BLD_new();
  ok = bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
       OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
       from_params(k, "RSA", bld);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn);
  BN_free(be);
  if (!ok) return fail(L, "not a valid RSA public key");
  ERR_clear_error();
  return 1;
}

/* JOSE's curve names, OpenSSL's, and the size of a coordinate. */
static const struct curve {
  const char *crv, *group;
  size_t size;
} CURVES[] = {{"P-256", "prime256v1", 32},
              {"P-384", "secp384r1", 48},
              {"P-521", "secp521r1", 66},
              {NULL, NULL, 0}};

static const struct curve *curve_by(const char *name, int jose) {
  for (const struct curve *c = CURVES; c->crv; c++)
    if (strcmp(jose ? c->crv : c->group, name) == 0) return c;
  return NULL;
}

static int l_ec(lua_State *L) {
  size_t xl, yl;
  const char *crv = luaL_checkstring(L, 1);
  const char *x = luaL_checklstring(L, 2, &xl);
  const char *y = luaL_checklstring(L, 3, &yl);
  const struct curve *c = curve_by(crv, 1);
  unsigned char pub[1 + 2 * 66];
  hm_jwt_key *k;
  OSSL_PARAM_BLD *bld;
  int ok;
  if (!c) {
    lua_pushnil(L);
    lua_pushfstring(L, "curve '%s' is not P-256, P-384 or P-521", crv);
    return 2;
  }
  if (xl != c->size || yl != c->size) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s coordinates are %d bytes, got x of %d and y of %d",
                    c->crv, (int)c->size, (int)xl, (int)yl);
    return 2;
  }
  pub[0] = 0x04; /* uncompressed point */
  memcpy(pub + 1, x, xl);
  memcpy(pub + 1 + xl, y, yl);
  k = new_key(L);
  ERR_clear_error();
  bld = OSSL_PARAM_BLD_new();
  ok = bld &&
       OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, c->group, 0) &&
       OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + xl + yl) &&
       from_params(k, "EC", bld);
  OSSL_PARAM_BLD_free(bld);
  if (ok) {
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    ok = pc && EVP_PKEY_public_check(pc) == 1;
    EVP_PKEY_CTX_free(pc);
  }
  if (!ok) return fail(L, "not a valid EC public key (is the point on the curve?)");
  ERR_clear_error();
  return 1;
}

/* The key's group name as JOSE calls it, or OpenSSL's, or NULL. */
static const char *group_of(EVP_PKEY *pkey, char *buf, size_t size) {
  size_t len = 0;
  const struct curve *c;
  if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, buf,
                                     size, &len) != 1) {
    ERR_clear_error();
    return NULL;
  }
  c = curve_by(buf, 0);
  return c ? c->crv : buf;
}

static int k_info(lua_State *L) {
  hm_jwt_key *k = check_key(L, 1);
  char group[80];
  if (EVP_PKEY_is_a(k->pkey, "RSA")) {
    lua_pushliteral(L, "RSA");
    lua_pushinteger(L, EVP_PKEY_get_bits(k->pkey));
    return 2;
  }
  if (EVP_PKEY_is_a(k->pkey, "EC")) {
    const char *g = group_of(k->pkey, group, sizeof group);
    lua_pushliteral(L, "EC");
    lua_pushinteger(L, EVP_PKEY_get_bits(k->pkey));
    if (g)
      lua_pushstring(L, g);
    else
      lua_pushnil(L);
    return 3;
  }
  lua_pushstring(L, EVP_PKEY_get0_type_name(k->pkey));
  lua_pushinteger(L, EVP_PKEY_get_bits(k->pkey));
  return 2;
}

static int k_tostring(lua_State *L) {
  hm_jwt_key *k = luaL_checkudata(L, 1, HM_JWT_KEY_MT);
  if (!k->pkey)
    lua_pushliteral(L, HM_JWT_KEY_MT ": freed");
  else
    lua_pushfstring(L, HM_JWT_KEY_MT ": %s %d", EVP_PKEY_get0_type_name(k->pkey),
                    EVP_PKEY_get_bits(k->pkey));
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Verification
** ===================================================================== */

static const struct alg {
  const char *name;
  char family; /* 'H'MAC, 'R'SA PKCS#1 v1.5, 'E'CDSA */
  const EVP_MD *(*md)(void);
  const char *crv; /* ECDSA: the curve the key must be on */
  size_t half;     /* ECDSA: bytes of r (and of s) in the JWS signature */
} ALGS[] = {{"HS256", 'H', EVP_sha256, NULL, 0},
            {"HS384", 'H', EVP_sha384, NULL, 0},
            {"HS512", 'H', EVP_sha512, NULL, 0},
            {"RS256", 'R', EVP_sha256, NULL, 0},
            {"RS384", 'R', EVP_sha384, NULL, 0},
            {"RS512", 'R', EVP_sha512, NULL, 0},
            {"ES256", 'E', EVP_sha256, "P-256", 32},
            {"ES384", 'E', EVP_sha384, "P-384", 48},
            {"ES512", 'E', EVP_sha512, "P-521", 66},
            {NULL, 0, NULL, NULL, 0}};

/* 1: valid, 0: not, -1: OpenSSL failed (its reason is queued). */
static int digest_verify(const EVP_MD *md, EVP_PKEY *pkey,
                         const unsigned char *sig, size_t siglen,
                         const unsigned char *tbs, size_t tbslen) {
  EVP_MD_CTX *m = EVP_MD_CTX_new();
  int rc = -1;
  if (m && EVP_DigestVerifyInit(m, NULL, md, NULL, pkey) == 1)
    rc = EVP_DigestVerify(m, sig, siglen, tbs, tbslen);
  EVP_MD_CTX_free(m);
  return rc;
}

static int invalid(lua_State *L, const char *why) {
  lua_pushboolean(L, 0);
  lua_pushstring(L, why);
  ERR_clear_error();
  return 2;
}

static int l_verify(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  size_t inl, sigl;
  const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 3, &inl);
  const unsigned char *sig = (const unsigned char *)luaL_checklstring(L, 4, &sigl);
  const struct alg *a = ALGS;
  int rc;
  while (a->name && strcmp(a->name, name) != 0) a++;
  if (!a->name) return luaL_argerror(L, 1, "not a supported JWS algorithm");
  ERR_clear_error();
  if (a->family == 'H') {
    size_t kl;
    const char *secret;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int macl = 0;
    if (lua_type(L, 2) != LUA_TSTRING)
      return invalid(L, "an HMAC algorithm needs a secret, not a public key");
    secret = lua_tolstring(L, 2, &kl);
    if (kl > (size_t)INT_MAX) return invalid(L, "the secret is too long");
    if (!HMAC(a->md(), secret, (int)kl, in, inl, mac, &macl))
      return invalid(L, "HMAC failed");
    /* The length is public (the algorithm's); the bytes are compared in
    ** constant time. */
    rc = sigl == macl && CRYPTO_memcmp(mac, sig, macl) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    if (!rc) return invalid(L, "the HMAC does not match");
  } else {
    hm_jwt_key *k;
    if (lua_type(L, 2) == LUA_TSTRING)
      return invalid(L, "a public-key algorithm needs a public key, not a secret");
    k = check_key(L, 2);
    if (a->family == 'R') {
      if (!EVP_PKEY_is_a(k->pkey, "RSA")) return invalid(L, "the key is not an RSA key");
      rc = digest_verify(a->md(), k->pkey, sig, sigl, in, inl);
    } else {
      char group[80];
      const char *g;
      ECDSA_SIG *es;
      BIGNUM *r, *s;
      unsigned char *der = NULL;
      int derl = -1;
      if (!EVP_PKEY_is_a(k->pkey, "EC")) return invalid(L, "the key is not an EC key");
      g = group_of(k->pkey, group, sizeof group);
      if (!g || strcmp(g, a->crv) != 0) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "%s needs a %s key, this one is on %s", a->name,
                        a->crv, g ? g : "an unknown curve");
        return 2;
      }
      if (sigl != 2 * a->half) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "%s signatures are %d bytes, got %d", a->name,
                        (int)(2 * a->half), (int)sigl);
        return 2;
      }
      /* JWS carries r||s (RFC 7518 section 3.4); OpenSSL verifies DER. */
      es = ECDSA_SIG_new();
      r = BN_bin2bn(sig, (int)a->half, NULL);
      s = BN_bin2bn(sig + a->half, (int)a->half, NULL);
      if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* es owns them now */
        derl = i2d_ECDSA_SIG(es, &der);
      }
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(es);
      rc = derl > 0 ? digest_verify(a->md(), k->pkey, der, (size_t)derl, in, inl) : -1;
      OPENSSL_free(der);
    }
    if (rc != 1) return invalid(L, "the signature does not match");
  }
  ERR_clear_error();
  lua_pushboolean(L, 1);
  return 1;
}

/* }==================================================================== */

void hm_lua_open_jwt(lua_State *L) {
  static const luaL_Reg funcs[] = {{"b64url", l_b64url}, {"pem", l_pem},
                                   {"rsa", l_rsa},       {"ec", l_ec},
                                   {"verify", l_verify}, {NULL, NULL}};
  static const luaL_Reg methods[] = {{"info", k_info}, {NULL, NULL}};
  static const luaL_Reg metamethods[] = {{"__gc", k_gc},
                                         {"__close", k_gc},
                                         {"__tostring", k_tostring},
                                         {NULL, NULL}};
  luaL_newmetatable(L, HM_JWT_KEY_MT);
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "jwt"); /* core.jwt */
}
