'use strict'
// A nats-hemera 7.0.2 service speaking MessagePack (hemera_msgpack.js), for
// spec/interop/msgpack_interop_spec.lua.
//
//   node msgpack_service.js <natsUrl> <name> <topicPrefix>
//
// Serves, with P = <topicPrefix>:
//   P.mp cmd:add      a + b
//        cmd:echo     {v: req.v, kinds: what JavaScript saw in req.v, meta: kinds of meta$}
//        cmd:sample   values of every kind: a Buffer, ints, floats, null,
//                     empty array and object, a non-ASCII string
//        cmd:fail     MathError (Hemera.createError) with code and operands
//   P.ctl cmd:quit    ends the process
// Publishes {"ready":name} (JSON, plain NATS) on P.ready once NATS has
// confirmed every subscription.
const { Hemera, NATS, watchParent } = require('./common')
const { hemeraMsgpack, kinds } = require('./hemera_msgpack')

const [url, name, P] = process.argv.slice(2)
if (!url || !name || !P) {
  console.error('usage: node msgpack_service.js <natsUrl> <name> <topicPrefix>')
  process.exit(2)
}
watchParent()
// hemera-msgpack's README: the NATS driver must hand Buffers over as they are.
const nc = NATS.connect({ url, name, reconnect: false, maxReconnectAttempts: 0, preserveBuffers: true })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
nc.on('close', () => process.exit(0))

const hemera = new Hemera(nc, { name, logLevel: 'silent', timeout: 2000 })
const MathError = Hemera.createError('MathError')
hemera.use(hemeraMsgpack)

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  const T = P + '.mp'
  hemera.add({ topic: T, cmd: 'add' }, (req, cb) => cb(null, req.a + req.b))
  hemera.add({ topic: T, cmd: 'echo' }, function (req, cb) {
    cb(null, { v: req.v, kinds: kinds(req.v), meta: kinds(this.meta$) })
  })
  hemera.add({ topic: T, cmd: 'sample' }, (req, cb) => {
    cb(null, {
      buf: Buffer.from([0, 255, 128]),
      i: 42,
      neg: -5,
      big: 2 ** 40,
      f: 1.5,
      tenth: 0.1,
      nul: null,
      arr: [],
      obj: {},
      s: 'héllo ✓',
      nested: { list: [1, 'a', null, true] }
    })
  })
  hemera.add({ topic: T, cmd: 'fail' }, (req, cb) => {
    const e = new MathError('division by zero')
    e.code = 'E_DIV_ZERO'
    e.operands = { a: req.a, b: 0 }
    cb(e)
  })
  hemera.add({ topic: P + '.ctl', cmd: 'quit' }, (req, cb) => {
    cb(null, true)
    setImmediate(() => hemera.close(() => process.exit(0)))
  })
  nc.flush(() => {
    console.log('ready')
    nc.publish(P + '.ready', JSON.stringify({ ready: name, pid: process.pid }))
  })
})

process.on('SIGTERM', () => process.exit(0))
