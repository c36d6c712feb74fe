'use strict'
// Makes the keys and tokens of the JWT specs with jsonwebtoken 9, the
// library hemera-jwt-auth uses, so the Lua verifier is tested against
// tokens a Node issuer really makes. Fresh keys every run: nothing secret
// is committed.
//
//   node tokens.js <out-dir>
//
// Writes PEM files and a JWKS into <out-dir> and prints one JSON line:
// {t0, now, secret, files: {...}, tokens: {name: token}}. Tokens stamped
// around t0 are verified with clockTimestamp = t0 (no wall clock in the
// outcome); the "live" ones around the real time.
const fs = require('fs')
const path = require('path')
const crypto = require('crypto')
const jwt = require('jsonwebtoken')

const out = process.argv[2]
if (!out) {
  console.error('usage: node tokens.js <out-dir>')
  process.exit(2)
}
fs.mkdirSync(out, { recursive: true })

const t0 = 1700000000
const now = Math.floor(Date.now() / 1000)
const secret = 'hemera-lua jwt spec secret'

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
const rsa2 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
const ec256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ec384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' })
const ed = crypto.generateKeyPairSync('ed25519')

const files = {}
function write(name, text) {
  const p = path.join(out, name)
  fs.writeFileSync(p, text)
  files[name] = p
  return p
}
const pub = k => k.publicKey.export({ type: 'spki', format: 'pem' })
write('rsa.pub.pem', pub(rsa))
write('rsa.pkcs1.pem', rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }))
write('rsa.key.pem', rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }))
write('rsa2.pub.pem', pub(rsa2))
write('ec256.pub.pem', pub(ec256))
write('ec384.pub.pem', pub(ec384))

const jwk = (k, extra) => Object.assign(k.publicKey.export({ format: 'jwk' }), extra)
write('jwks.json', JSON.stringify({
  keys: [
    jwk(rsa, { kid: 'rsa-1', use: 'sig', alg: 'RS256' }),
    jwk(ec256, { kid: 'ec-1', use: 'sig' }),
    jwk(ec384, { kid: 'ec-384' }),
    // What a real identity provider's set may also hold: keys this
    // verifier cannot use (encryption, Ed25519) are skipped, not fatal.
    jwk(rsa2, { kid: 'rsa-enc', use: 'enc' }),
    jwk(ed, { kid: 'ed-1' })
  ]
}))
write('jwks-one.json', JSON.stringify({ keys: [jwk(rsa, {})] }))

const claims = { scope: ['math', 'a'], iss: 'issuer-1', aud: 'svc', sub: 'ada', iat: t0, exp: t0 + 600 }
const at = extra => Object.assign({}, claims, extra)
const b64 = v => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

const tokens = {
  hs256: jwt.sign(at({}), secret, { algorithm: 'HS256' }),
  hs384: jwt.sign(at({}), secret, { algorithm: 'HS384' }),
  hs512: jwt.sign(at({}), secret, { algorithm: 'HS512' }),
  rs256: jwt.sign(at({}), rsa.privateKey, { algorithm: 'RS256', keyid: 'rsa-1' }),
  rs384: jwt.sign(at({}), rsa.privateKey, { algorithm: 'RS384', keyid: 'rsa-1' }),
  rs512: jwt.sign(at({}), rsa.privateKey, { algorithm: 'RS512' }),
  es256: jwt.sign(at({}), ec256.privateKey, { algorithm: 'ES256', keyid: 'ec-1' }),
  es384: jwt.sign(at({}), ec384.privateKey, { algorithm: 'ES384', keyid: 'ec-384' }),
  // ES256 header on the P-384 key's kid: the curve does not fit the alg.
  es256_on_p384: jwt.sign(at({}), ec256.privateKey, { algorithm: 'ES256', keyid: 'ec-384' }),
  rs256_kid_unknown: jwt.sign(at({}), rsa.privateKey, { algorithm: 'RS256', keyid: 'nope' }),
  rs256_kid_enc: jwt.sign(at({}), rsa2.privateKey, { algorithm: 'RS256', keyid: 'rsa-enc' }),
  // Signed by another key under the right kid.
  rs256_wrong_key: jwt.sign(at({}), rsa2.privateKey, { algorithm: 'RS256', keyid: 'rsa-1' }),
  es256_wrong_key: jwt.sign(at({}), crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    { algorithm: 'ES256', keyid: 'ec-1' }),
  hs256_wrong_secret: jwt.sign(at({}), 'not the secret', { algorithm: 'HS256' }),
  expired: jwt.sign(at({ exp: t0 - 100 }), secret, { algorithm: 'HS256' }),
  expired_30s: jwt.sign(at({ exp: t0 - 30 }), secret, { algorithm: 'HS256' }),
  not_before: jwt.sign(at({ nbf: t0 + 100 }), secret, { algorithm: 'HS256' }),
  not_before_30s: jwt.sign(at({ nbf: t0 + 30 }), secret, { algorithm: 'HS256' }),
  iss_other: jwt.sign(at({ iss: 'someone-else' }), secret, { algorithm: 'HS256' }),
  aud_other: jwt.sign(at({ aud: ['web', 'mobile'] }), secret, { algorithm: 'HS256' }),
  aud_list: jwt.sign(at({ aud: ['web', 'svc'] }), secret, { algorithm: 'HS256' }),
  no_scope: jwt.sign(at({ scope: undefined }), secret, { algorithm: 'HS256' }),
  scope_string: jwt.sign(at({ scope: 'math a' }), secret, { algorithm: 'HS256' }),
  scope_math: jwt.sign(at({ scope: ['math'] }), secret, { algorithm: 'HS256' }),
  // alg "none" as jsonwebtoken makes it (no signature), and with one.
  none: jwt.sign(at({}), undefined, { algorithm: 'none' }),
  // The RS/HS confusion attack: HS256 keyed with the RSA public key's PEM,
  // which the attacker knows.
  confusion: (() => {
    const input = b64({ alg: 'HS256', typ: 'JWT', kid: 'rsa-1' }) + '.' + b64(at({}))
    return input + '.' + crypto.createHmac('sha256', pub(rsa)).update(input).digest('base64url')
  })(),
  live: jwt.sign({ scope: ['math', 'a'], iss: 'issuer-1', aud: 'svc' }, secret, { algorithm: 'HS256', expiresIn: 3600 }),
  live_expired: jwt.sign({ scope: ['math', 'a'], iat: now - 7200, exp: now - 3600 }, secret, { algorithm: 'HS256' }),
  live_rs256: jwt.sign({ scope: ['math', 'a'], iss: 'issuer-1', aud: 'svc' }, rsa.privateKey, { algorithm: 'RS256', keyid: 'rsa-1', expiresIn: 3600 })
}
{
  const [h, p, s] = tokens.hs256.split('.')
  tokens.none_signed = b64({ alg: 'none', typ: 'JWT' }) + '.' + p + '.' + s
  tokens.none_lower = b64({ alg: 'NONE', typ: 'JWT' }) + '.' + p + '.' + s
  const input = h + '.' + b64(at({ exp: 'tomorrow' }))
  tokens.exp_string = input + '.' + crypto.createHmac('sha256', secret).update(input).digest('base64url')
  const arr = h + '.' + b64([1, 2, 3])
  tokens.payload_array = arr + '.' + crypto.createHmac('sha256', secret).update(arr).digest('base64url')
  const nojson = h + '.' + b64('not json')
  tokens.payload_text = nojson + '.' + crypto.createHmac('sha256', secret).update(nojson).digest('base64url')
  tokens.no_alg = b64({ typ: 'JWT' }) + '.' + p + '.' + s
  tokens.header_text = b64('hello') + '.' + p + '.' + s
  tokens.tampered = h + '.' + b64(at({ scope: ['math', 'a', 'admin'] })) + '.' + s
}

process.stdout.write(JSON.stringify({ t0, now, secret, files, tokens }) + '\n')
