'use strict'
// The nats-hemera 7.0.2 service of the benchmark, the counterpart of
// `hemera bench/rps.lua serve`:
//   {topic, cmd:'add'}   a + b
//   {topic, cmd:'stop'}  replies true, closes Hemera, exits 0
// Prints "ready" once the server has confirmed the subscription.
//
//   node hemera-service.js <natsUrl> <topic>
const NATS = require('nats')
const Hemera = require('nats-hemera')
const { watchParent } = require('./common')

const [url, topic] = process.argv.slice(2)
if (!url || !topic) {
  console.error('usage: node hemera-service.js <natsUrl> <topic>')
  process.exit(2)
}
watchParent()

const nc = NATS.connect({ url, name: 'bench-node-service', reconnect: false })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
const hemera = new Hemera(nc, { name: 'bench-node-service', logLevel: 'silent' })

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  hemera.add({ topic, cmd: 'add' }, (req, cb) => cb(null, req.a + req.b))
  hemera.add({ topic, cmd: 'stop' }, (req, cb) => {
    cb(null, true)
    setImmediate(() => hemera.close(() => process.exit(0)))
  })
  nc.flush(() => console.log('ready'))
})

process.on('SIGTERM', () => process.exit(0))
