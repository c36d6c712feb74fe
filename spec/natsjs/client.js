'use strict'
// nats.js 2.x as a third-party ADR-32 client of a Lua service:
//
//   node client.js <natsUrl> '<args as JSON>'
//
// args: name (the service), resultSubject (where the one JSON result line
// goes; the Lua spec waits for it there), errorRequest = {subject, body}
// (one request whose reply should carry the service error headers).
// The result: {pingByName, pingById, infoByName, infoById, statsByName,
// statsById} (each the list of responses nats.js' service client gave),
// and error = {isServiceError, code, message, headerError, headerCode,
// body} for errorRequest.
const { connect, ServiceError, StringCodec, RequestStrategy } = require('nats')
const { watchParent } = require('./common')

const [url, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')
watchParent()

async function all(iter) {
  const out = []
  for await (const r of await iter) out.push(r)
  return out
}

async function main() {
  const nc = await connect({ servers: url, name: 'natsjs-client', reconnect: false })
  const sc = StringCodec()
  const out = {}
  if (args.errorRequest) {
    const m = await nc.request(args.errorRequest.subject, sc.encode(args.errorRequest.body), { timeout: 5000 })
    const se = ServiceError.toServiceError(m)
    out.error = {
      isServiceError: ServiceError.isServiceError(m),
      code: se ? se.code : null,
      message: se ? se.message : null,
      headerError: m.headers ? m.headers.get('Nats-Service-Error') : null,
      headerCode: m.headers ? m.headers.get('Nats-Service-Error-Code') : null,
      body: sc.decode(m.data)
    }
  }
  if (args.name) {
    // Each name is unique to its test: the answers end once they stop
    // coming for a while (jitter), not after a fixed wait.
    const svc = nc.services.client({ strategy: RequestStrategy.JitterTimer, maxWait: 5000, jitter: 300 })
    out.pingByName = await all(svc.ping(args.name))
    const id = out.pingByName.length ? out.pingByName[0].id : 'none'
    out.pingById = await all(svc.ping(args.name, id))
    out.infoByName = await all(svc.info(args.name))
    out.infoById = await all(svc.info(args.name, id))
    out.statsByName = await all(svc.stats(args.name))
    out.statsById = await all(svc.stats(args.name, id))
  }
  const line = JSON.stringify(out)
  console.log(line)
  if (args.resultSubject) nc.publish(args.resultSubject, sc.encode(line))
  await nc.drain()
}

main().catch(e => {
  console.error('client failed:', e && e.stack)
  process.exit(1)
})
