'use strict'
// A nats-hemera 7.0.2 client speaking MessagePack (hemera_msgpack.js): runs
// the acts of args.acts one after the other and publishes one JSON line on
// args.resultSubject (plain NATS, JSON) with what each callback saw:
//   {"ok": true, "acts": [{"error": {name, message, code, operands} | null,
//     "result": <JSON-safe copy, Buffers as {$hex}>, "kinds": <kinds(result)>,
//     "replyIsObject": the client decoder gave Hemera an object}]}
//
//   node msgpack_client.js <natsUrl> '<args as JSON>'
const { Hemera, NATS, watchParent } = require('./common')
const { hemeraMsgpack, kinds, plain } = require('./hemera_msgpack')

const [url, argsJson] = process.argv.slice(2)
if (!url || !argsJson) {
  console.error("usage: node msgpack_client.js <natsUrl> '<args json>'")
  process.exit(2)
}
const args = JSON.parse(argsJson)
watchParent()
const nc = NATS.connect({ url, name: 'interop-msgpack-client', reconnect: false, maxReconnectAttempts: 0,
                          preserveBuffers: true })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})

const hemera = new Hemera(nc, { name: 'node-mp-client', logLevel: 'silent', timeout: 2000 })
hemera.use(hemeraMsgpack)

// Buffers in a pattern are written {"$hex": "..."} in the JSON args.
function revive(v) {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    if (typeof v.$hex === 'string') return Buffer.from(v.$hex, 'hex')
    for (const k of Object.keys(v)) v[k] = revive(v[k])
  } else if (Array.isArray(v)) {
    return v.map(revive)
  }
  return v
}

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  const out = []
  const step = i => {
    if (i >= args.acts.length) {
      const line = JSON.stringify({ ok: true, acts: out })
      process.stdout.write(line + '\n')
      nc.publish(args.resultSubject, line, () => hemera.close(() => process.exit(0)))
      return
    }
    hemera.act(revive(args.acts[i]), function (e, result) {
      const reply = this.response && this.response.payload
      out.push({
        error: e ? { name: e.name, message: e.message, code: e.code, operands: plain(e.operands) } : null,
        result: plain(result),
        kinds: result === undefined ? null : kinds(result),
        replyIsObject: reply !== null && typeof reply === 'object'
      })
      step(i + 1)
    })
  }
  step(0)
})
