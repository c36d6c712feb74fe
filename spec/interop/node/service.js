'use strict'
// A nats-hemera 7.0.2 service for the Lua interop specs.
//
//   node service.js <natsUrl> <name> <topicPrefix> [maxRecursion=N] [queueTopic=T]
//
// Serves, with P = <topicPrefix>:
//   P.math  cmd:add        a + b
//           cmd:noresult   cb() (the reply has no "result" key)
//           cmd:fail       MathError (Hemera.createError) 'division by zero', code, operands
//           cmd:failcb     cb(new Error('plain callback error'))
//           cmd:slow       replies 'late' after req.ms
//           cmd:context    what the server saw (meta$, delegate$, trace$, request$); adds meta$.handledBy
//           cmd:leaf       same as context, without touching meta$
//           cmd:echo       req.v back, with how JavaScript sees it
//           cmd:forward    this.act(req.to) (a nested call, e.g. to a Lua service); an error is passed on
//   P.stream cmd:numbers   this.reply.next(0 .. req.count-1)
//   P.events (pubsub$)     publishes what it received on P.observed (plain NATS)
//   P.loop  cmd:ping       nested act {topic: req.peer, cmd:'ping', peer: P.loop, state} until
//                          state.left reaches 0 (maxRecursion across processes)
//   P.ctl   cmd:handled    request ids served on queueTopic; cmd:quit ends the process
//   <queueTopic> cmd:add   {sum, by:'node', app} in the default queue group queue.<queueTopic>
//
// Prints "ready" and publishes {"ready":name,"pid":pid} on P.ready once NATS has
// confirmed every subscription.
const { Hemera, connect, watchParent, plain, describeValue } = require('./common')

const [url, name, P, ...rest] = process.argv.slice(2)
if (!url || !name || !P) {
  console.error('usage: node service.js <natsUrl> <name> <topicPrefix> [maxRecursion=N] [queueTopic=T]')
  process.exit(2)
}
const opts = {}
for (const kv of rest) {
  const i = kv.indexOf('=')
  opts[kv.slice(0, i)] = kv.slice(i + 1)
}

watchParent()
const nc = connect(url, name)
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})
nc.on('close', () => process.exit(0))

const config = { name, logLevel: 'silent', timeout: 2000 }
if (opts.maxRecursion) config.maxRecursion = Number(opts.maxRecursion)
const hemera = new Hemera(nc, config)
const MathError = Hemera.createError('MathError')

function seen(ctx) {
  return {
    meta$: plain(ctx.meta$),
    delegate$: plain(ctx.delegate$),
    trace$: plain(ctx.trace$),
    request$: plain(ctx.request$)
  }
}

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  const math = P + '.math'

  hemera.add({ topic: math, cmd: 'add' }, (req, cb) => cb(null, req.a + req.b))
  hemera.add({ topic: math, cmd: 'noresult' }, (req, cb) => cb())
  hemera.add({ topic: math, cmd: 'fail' }, (req, cb) => {
    const e = new MathError('division by zero')
    e.code = req.code !== undefined ? req.code : 'E_DIV_ZERO'
    e.operands = { a: req.a, b: 0 }
    cb(e)
  })
  hemera.add({ topic: math, cmd: 'failcb' }, (req, cb) => cb(new Error('plain callback error')))
  hemera.add({ topic: math, cmd: 'slow' }, (req, cb) => {
    setTimeout(() => cb(null, 'late'), req.ms)
  })
  hemera.add({ topic: math, cmd: 'context' }, function (req, cb) {
    const s = seen(this)
    this.meta$.handledBy = name
    cb(null, s)
  })
  hemera.add({ topic: math, cmd: 'leaf' }, function (req, cb) {
    cb(null, Object.assign(seen(this), { app: name }))
  })
  hemera.add({ topic: math, cmd: 'echo' }, function (req, cb) {
    cb(null, { v: req.v, seen: describeValue(req.v), wire: JSON.stringify(this.request.payload.pattern) })
  })
  hemera.add({ topic: math, cmd: 'forward' }, function (req, cb) {
    const server = seen(this)
    this.act(Object.assign({}, req.to), function (err, res) {
      if (err) return cb(err)
      cb(null, {
        result: res,
        app: name,
        server,
        child: { trace$: plain(this.trace$), request$: plain(this.request$), meta$: plain(this.meta$) }
      })
    })
  })

  hemera.add({ topic: P + '.stream', cmd: 'numbers' }, function (req) {
    for (let i = 0; i < req.count; i++) this.reply.next(i)
  })

  hemera.add({ topic: P + '.events', pubsub$: true }, function (req) {
    nc.publish(P + '.observed', JSON.stringify(Object.assign({ pattern: req }, seen(this))))
  })

  hemera.add({ topic: P + '.loop', cmd: 'ping' }, function (req, cb) {
    const left = req.state.left
    if (left <= 0) return cb(null, { done: true, app: name, meta$: plain(this.meta$) })
    this.act({ topic: req.peer, cmd: 'ping', peer: P + '.loop', state: { left: left - 1 } }, (e, res) => {
      if (e) return cb(e)
      cb(null, res)
    })
  })

  const handled = []
  if (opts.queueTopic) {
    hemera.add({ topic: opts.queueTopic, cmd: 'add' }, function (req, cb) {
      handled.push(this.request$.id)
      cb(null, { sum: req.a + req.b, by: 'node', app: name })
    })
  }
  hemera.add({ topic: P + '.ctl', cmd: 'handled' }, (req, cb) => cb(null, handled))
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
