'use strict'
// The nats-hemera 7.0.2 client of the benchmark, the counterpart of
// `hemera bench/rps.lua client`: N workers per level, each acting
// {topic, cmd:'add', a, b} and acting again when the reply arrives.
// Output: see common.js.
//
//   node hemera-client.js <natsUrl> <topic> <seconds> <warmup-s> <inflight>...
const NATS = require('nats')
const Hemera = require('nats-hemera')
const { clientArgs, runLevels, watchParent } = require('./common')

const args = clientArgs('hemera-client.js')
watchParent()

const nc = NATS.connect({ url: args.url, name: 'bench-node-client', reconnect: false })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
const hemera = new Hemera(nc, { name: 'bench-node-client', logLevel: 'silent', timeout: 10000 })
const topic = args.target

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  const send = (w, seq, done) => hemera.act({ topic, cmd: 'add', a: w, b: seq }, err => done(err))
  runLevels(args, send, () => hemera.close(() => process.exit(0)))
})
