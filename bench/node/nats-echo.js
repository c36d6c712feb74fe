'use strict'
// Raw nats.js 1.2.6 echo service (the reference for Node's transport): each
// request is published back, unchanged, to its reply subject. Same queue
// group as bench_transport's echo. Prints "ready"; exits 0 on SIGTERM.
//
//   node nats-echo.js <natsUrl> <subject>
const NATS = require('nats')
const { watchParent } = require('./common')

const [url, subject] = process.argv.slice(2)
if (!url || !subject) {
  console.error('usage: node nats-echo.js <natsUrl> <subject>')
  process.exit(2)
}
watchParent()
const nc = NATS.connect({ url, name: 'bench-node-echo', reconnect: false })
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
nc.subscribe(subject, { queue: 'queue.bench' }, (msg, reply) => {
  if (reply) nc.publish(reply, msg)
})
nc.flush(() => console.log('ready'))
process.on('SIGTERM', () => process.exit(0))
