'use strict'
// hemera-msgpack 6.0.2 as the interop specs use it. The package is not on
// the registry this machine reaches, so this is its index.js's behaviour
// (hemerajs/hemera, packages/hemera-msgpack) restated: msgpack5(opts)
// behind the four codec hooks, each returning {value} or {error}, in an
// unscoped plugin (hemera-plugin's `scoped: false`), named hemera-msgpack.
// msgpack5 is the version its "^4.2.1" resolves to (spec/interop/package.json).
const msgpack5 = require('msgpack5')

function hemeraMsgpack(hemera, opts, done) {
  const msgpack = msgpack5(opts)
  const guarded = fn => msg => {
    try {
      return { value: fn(msg) }
    } catch (error) {
      return { error }
    }
  }
  const decode = guarded(m => msgpack.decode(m))
  const encode = guarded(m => msgpack.encode(m))
  hemera.setClientDecoder(decode)
  hemera.setClientEncoder(encode)
  hemera.setServerDecoder(decode)
  hemera.setServerEncoder(encode)
  done()
}

hemeraMsgpack[Symbol.for('plugin-scoped')] = false
hemeraMsgpack[Symbol.for('plugin-meta')] = { name: 'hemera-msgpack' }

// What a decoded value is to JavaScript, deeply, for the specs: Buffers as
// "buffer:<hex>", numbers as "int" or "float", null, arrays and objects
// kept as such.
function kinds(v) {
  if (v === null) return 'null'
  if (Buffer.isBuffer(v)) return 'buffer:' + v.toString('hex')
  if (Array.isArray(v)) return v.map(kinds)
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float'
  if (typeof v === 'object') {
    const out = {}
    for (const k of Object.keys(v)) out[k] = kinds(v[k])
    return out
  }
  return typeof v
}

// A JSON-safe copy: Buffers as {"$hex": ...}.
function plain(v) {
  if (v === undefined) return undefined
  return JSON.parse(JSON.stringify(v, (k, x) => {
    if (x && x.type === 'Buffer' && Array.isArray(x.data)) return { $hex: Buffer.from(x.data).toString('hex') }
    return x
  }))
}

module.exports = { hemeraMsgpack, kinds, plain }
