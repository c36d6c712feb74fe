// Real HTTP clients against hemera.web, for spec/lua/web_gateway_spec.lua:
//   node spec/web/probe.js <port> <topic> <case>
// Prints one JSON object with what the client saw. Node 20's built-in
// fetch (undici) and its http and net modules; nothing from npm.
'use strict'
const http = require('http')
const net = require('net')

const [port, topic, which] = process.argv.slice(2)
const base = `http://127.0.0.1:${port}`

// Sends raw bytes and resolves with everything the server sent back
// before it closed the connection.
function raw(bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), '127.0.0.1', () => s.end(bytes))
    let got = ''
    s.on('data', (d) => { got += d })
    s.on('close', () => resolve(got))
    s.on('error', reject)
  })
}

function statusOf(text) {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
  return m ? Number(m[1]) : null
}

const cases = {
  // hemera-web's routes through fetch.
  async fetch() {
    const out = {}
    let r = await fetch(`${base}/${topic}/add?a=1&b=2`)
    out.query = { status: r.status, type: r.headers.get('content-type'), body: await r.json() }
    r = await fetch(`${base}/${topic}/add`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: 40, b: 2 }) })
    out.json = { status: r.status, body: await r.json() }
    r = await fetch(`${base}/${topic}/add`, { method: 'POST', body: new URLSearchParams({ a: '3', b: '4' }) })
    out.form = { status: r.status, body: await r.json() }
    r = await fetch(`${base}/${topic}/custom`)
    out.custom = { status: r.status, body: await r.json() }
    r = await fetch(`${base}/${topic}/echo`, {
      headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } })
    out.trace = { status: r.status, body: await r.json() }
    return out
  },

  // Many requests on one kept-alive connection: one socket, every answer.
  async keepalive() {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const ports = new Set()
    let ok = 0
    for (let k = 0; k < 200; k++) {
      const body = await new Promise((resolve, reject) => {
        http.get(`${base}/${topic}/add?a=${k}&b=1`, { agent }, (res) => {
          ports.add(res.socket.localPort)
          let b = ''
          res.on('data', (d) => { b += d })
          res.on('end', () => resolve({ status: res.statusCode, b }))
        }).on('error', reject)
      })
      if (body.status === 200 && JSON.parse(body.b).result === k + 1) ok++
    }
    agent.destroy()
    return { ok, sockets: ports.size }
  },

  // One byte a second of a request line: the gateway serves others
  // meanwhile and answers the slow one 408 when requestTimeout is up.
  async slowloris() {
    const line = `GET /${topic}/add?a=1&b=2 HTTP/1.1\r\nHost: x\r\n\r\n`
    const events = []
    const slow = new Promise((resolve, reject) => {
      const s = net.connect(Number(port), '127.0.0.1')
      let got = ''
      let at = 0
      let timer
      s.on('connect', () => {
        const one = () => { if (at < line.length) s.write(line[at++]) }
        one()
        timer = setInterval(one, 1000)
      })
      s.on('data', (d) => { got += d })
      s.on('close', () => {
        clearInterval(timer)
        events.push('slow answered')
        resolve({ status: statusOf(got), sent: at })
      })
      s.on('error', reject)
    })
    let served = 0
    for (let k = 0; k < 20; k++) {
      const r = await fetch(`${base}/${topic}/add?a=${k}&b=1`)
      if (r.status === 200 && (await r.json()).result === k + 1) served++
    }
    events.push('others served')
    const s = await slow
    return { served, slow: s, events }
  },

  // 10 MB, announced and chunked: 413 either way, before it is all read.
  async bigbody() {
    const big = Buffer.alloc(10 * 1024 * 1024, 0x61)
    const out = {}
    const r = await fetch(`${base}/${topic}/add`, {
      method: 'POST', headers: { 'content-type': 'text/plain' }, body: big })
    out.announced = r.status
    const c = await new Promise((resolve, reject) => {
      const req = http.request(`${base}/${topic}/add`, {
        method: 'POST', headers: { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume()
        resolve(res.statusCode)
      })
      req.on('error', reject)
      req.end(big)
    })
    out.chunked = c
    return out
  },

  // Bytes that are not HTTP: 400, and the connection closes.
  async malformed() {
    return {
      garbage: statusOf(await raw('GARBAGE\r\n\r\n')),
      header: statusOf(await raw('GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n')),
      version: statusOf(await raw('GET / HTTP/9.9\r\n\r\n')),
      length: statusOf(await raw('POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc')),
    }
  },

  // maxConnections=4 in the fixture: a fifth connection gets 503 and is
  // closed; once one of the four has gone, a new one is served.
  async connlimit() {
    const held = []
    for (let k = 0; k < 4; k++) {
      held.push(await new Promise((resolve, reject) => {
        const s = net.connect(Number(port), '127.0.0.1', () => resolve(s))
        s.on('error', reject)
      }))
    }
    // The four are accepted first: one request each is answered.
    for (const s of held) {
      const got = await new Promise((resolve) => {
        let b = ''
        s.on('data', (d) => {
          b += d
          if (b.includes('\r\n\r\n') && b.endsWith('}')) resolve(b)
        })
        s.write(`GET /${topic}/add?a=1&b=1 HTTP/1.1\r\nHost: x\r\n\r\n`)
      })
      if (statusOf(got) !== 200) throw new Error('a held connection was not served: ' + got)
    }
    const fifth = statusOf(await raw(''))
    // One of the four leaves (its request asks the server to close it).
    await new Promise((resolve) => {
      held[0].on('close', resolve)
      held[0].write(`GET /${topic}/add?a=1&b=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    })
    const r = await fetch(`${base}/${topic}/add?a=2&b=2`, { headers: { connection: 'close' } })
    const after = r.status
    await r.text()
    for (const s of held.slice(1)) s.destroy()
    return { fifth, after }
  },

  // A request in flight when the service closes is still answered.
  async closing() {
    const r = await fetch(`${base}/${topic}/closer`)
    return { status: r.status, body: await r.json() }
  },
}

cases[which]().then(
  (v) => { process.stdout.write(JSON.stringify(v) + '\n') },
  (e) => { process.stdout.write(JSON.stringify({ failed: String(e && e.stack || e) }) + '\n'); process.exitCode = 1 },
)
