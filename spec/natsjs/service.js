'use strict'
// A nats.js 2.x reference ADR-32 service (nc.services.add):
//
//   node service.js <natsUrl> <name> <readySubject>
//
// One endpoint, <name>.echo, that answers with the request's data. Once
// the server has its subscriptions it publishes {"id"} on readySubject and
// prints "ready <id>"; it runs until killed or its parent is gone.
const { connect, StringCodec } = require('nats')
const { watchParent } = require('./common')

const [url, name, ready] = process.argv.slice(2)
watchParent()

async function main() {
  const nc = await connect({ servers: url, name: 'natsjs-service', reconnect: false })
  const srv = await nc.services.add({ name, version: '1.0.0', description: 'nats.js reference service' })
  srv.addEndpoint('echo', { subject: `${name}.echo`, handler: (err, msg) => msg.respond(msg.data) })
  await nc.flush()
  nc.publish(ready, StringCodec().encode(JSON.stringify({ id: srv.info().id })))
  console.log('ready ' + srv.info().id)
  await nc.closed()
}

main().catch(e => {
  console.error('service failed:', e && e.stack)
  process.exit(1)
})
