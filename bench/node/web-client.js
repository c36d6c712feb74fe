'use strict'
// HTTP load for hemera.web (bench/web.sh): each worker GETs
// /<topic>/add?a=<seq>&b=1 from the gateway and goes again when the
// answer is in, over an http.Agent with keep-alive and one socket per
// worker, so <inflight> is also the number of connections. Node's own http
// module; nothing from npm. Output: see common.js.
//
//   node web-client.js <gateway URL> <topic> <seconds> <warmup-s> <inflight>...
const http = require('http')
const { clientArgs, runLevels, watchParent } = require('./common')

const args = clientArgs('web-client.js')
watchParent()
const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(...args.levels) })
const base = new URL(args.url)

function send(w, seq, done) {
  const req = http.get({ agent, host: base.hostname, port: base.port, path: `/${args.target}/add?a=${seq}&b=1` },
    res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => { body += d })
      res.on('end', () => done(res.statusCode === 200 && body === String(seq + 1) ? null : new Error(body)))
    })
  req.on('error', done)
}

runLevels(args, send, () => {
  agent.destroy()
  process.exit(0)
})
