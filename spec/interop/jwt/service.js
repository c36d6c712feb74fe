'use strict'
// The reference: a nats-hemera 7.0.2 service guarded by hemera-jwt-auth
// 6.0.2 (as published, with its own jsonwebtoken), serving the same actions
// as the Lua service of spec/interop/jwt_interop_spec.lua, so the spec can
// compare what a Node client hears from each.
//
//   node service.js <natsUrl> <topic> <jwtModulesDir> <secret>
//
// Serves on <topic>: cmd:scoped (auth$ scope math), cmd:admin (auth$ scope
// admin), cmd:open (auth$ enabled false), cmd:plain (no auth$). Each
// answers {sub, scope} from this.auth$. Publishes {"ready":...} on
// <topic>.ready once NATS has confirmed the subscription.
const path = require('path')
const { Hemera, connect, watchParent } = require('../node/common')

const [url, topic, modules, secret] = process.argv.slice(2)
if (!url || !topic || !modules || !secret) {
  console.error('usage: node service.js <natsUrl> <topic> <jwtModulesDir> <secret>')
  process.exit(2)
}
const HemeraJwt = require(path.join(modules, 'hemera-jwt-auth'))

watchParent()
const nc = connect(url, 'interop-node-jwt')
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
nc.on('close', () => process.exit(0))

const hemera = new Hemera(nc, { name: 'interop-node-jwt', logLevel: 'silent', timeout: 2000 })
hemera.use(HemeraJwt, { enforceAuth: true, jwt: { secret } })

const answer = function (req, cb) {
  cb(null, { sub: this.auth$.sub, scope: this.auth$.scope })
}

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  hemera.add({ topic, cmd: 'scoped', auth$: { scope: ['math'] } }, answer)
  hemera.add({ topic, cmd: 'admin', auth$: { scope: ['admin'] } }, answer)
  hemera.add({ topic, cmd: 'open', auth$: { enabled: false } }, (req, cb) => cb(null, { open: true }))
  hemera.add({ topic, cmd: 'plain' }, answer)
  nc.flush(() => {
    console.log('ready')
    nc.publish(topic + '.ready', JSON.stringify({ ready: topic, pid: process.pid }))
  })
})

process.on('SIGTERM', () => process.exit(0))
