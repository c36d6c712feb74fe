'use strict'
// Raw nats.js 1.2.6 request/reply client (the multiplexed `request` with
// max 1 and a timeout, as Hemera uses it) with a Hemera-sized payload: a
// real Hemera request envelope, as bench_transport sends. Output: see
// common.js.
//
//   node nats-client.js <natsUrl> <subject> <seconds> <warmup-s> <inflight>...
const NATS = require('nats')
const { clientArgs, runLevels, watchParent } = require('./common')

const args = clientArgs('nats-client.js')
watchParent()

// The envelope nats-hemera builds for {topic:'bench', cmd:'add', a:1, b:2}.
const id = () => require('nuid').next()
const method = 'a:1,b:2,cmd:add,topic:bench'
const payload = JSON.stringify({
  pattern: { topic: 'bench', cmd: 'add', a: 1, b: 2 },
  meta: {},
  delegate: {},
  trace: { spanId: id(), traceId: id(), timestamp: Number(process.hrtime.bigint()) / 1e6, service: 'bench', method },
  request: { id: id(), type: 'request', service: 'bench', method }
})

const nc = NATS.connect({ url: args.url, name: 'bench-node-raw-client', reconnect: false })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
nc.on('connect', () => {
  console.error(`nats-client: payload ${Buffer.byteLength(payload)} bytes`)
  const send = (w, seq, done) =>
    nc.request(args.target, payload, { max: 1, timeout: 10000 }, msg => done(msg instanceof NATS.NatsError ? msg : null))
  runLevels(args, send, () => {
    nc.close()
    process.exit(0)
  })
})
