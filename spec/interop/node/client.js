'use strict'
// A nats-hemera 7.0.2 client for the Lua interop specs: runs one scenario
// and prints one JSON line with everything it saw.
//
//   node client.js <natsUrl> <scenario> '<args as JSON>'
//
// Scenarios:
//   act    args.pattern (object or tinysonic string), one act
//   acts   args.acts = [{pattern, collect, settleMs}, ...], run one after the
//          other on the same root instance (so root-level state carries over)
// Per act: `collect` (default 1) is how many callbacks to wait for; a
// TimeoutError also ends it, and `deadlineMs` (default 10000) gives up with
// "incomplete": true. `settleMs` then keeps listening that long, so a spec
// can assert that nothing else arrived (only for where "nothing more" is the
// behaviour under test; the current specs count replies on the wire instead).
// Other args: name (app name), maxRecursion, timeout, registerErrors
// (createError names whose instanceof is reported), resultSubject (the line
// is also published there, which is how the Lua specs wait for it).
//
// Output: {"scenario", "ok": true, "acts": [{"sent": <request message>,
// "sentRaw": <its JSON text>, "calls": [{t_ms, error, hasResult, result,
// resultJson, replyRaw, context}], "incomplete"?}]}
const { Hemera, connect, watchParent, plain, describeError, describeContext } = require('./common')

const [url, scenario, argsJson] = process.argv.slice(2)
if (!url || !scenario) {
  console.error("usage: node client.js <natsUrl> <act|acts> '<args json>'")
  process.exit(2)
}
const args = argsJson ? JSON.parse(argsJson) : {}
watchParent()

const nc = connect(url, args.name || 'interop-node-client')
nc.on('error', e => {
  console.error('nats error', e && e.message)
  process.exit(5)
})

const config = { name: args.name || 'interop-node-client', logLevel: 'silent', timeout: args.timeout || 2000 }
if (args.maxRecursion) config.maxRecursion = args.maxRecursion
const hemera = new Hemera(nc, config)
const registered = {}
for (const n of args.registerErrors || []) registered[n] = Hemera.createError(n)

// The request message as it went on the wire (built by the built-in onAct).
let lastSent = null
hemera.ext('onAct', (ctx, next) => {
  lastSent = plain(ctx._message)
  next()
})
// Hemera's default client decoder (JSON.parse), keeping the raw reply text.
let lastReplyRaw = null
hemera.setClientDecoder(data => {
  lastReplyRaw = data
  try {
    return { value: JSON.parse(data) }
  } catch (error) {
    return { error }
  }
})

function runAct(spec, done) {
  const collect = spec.collect || 1
  const out = { sent: null, calls: [] }
  const t0 = process.hrtime.bigint()
  let finished = false
  lastSent = null
  lastReplyRaw = null
  const deadline = setTimeout(() => {
    out.incomplete = true
    finish()
  }, spec.deadlineMs || 10000)
  function finish() {
    if (finished) return
    finished = true
    clearTimeout(deadline)
    setTimeout(() => done(out), spec.settleMs || 0)
  }
  hemera.act(spec.pattern, function (err, result) {
    out.calls.push({
      t_ms: Number(process.hrtime.bigint() - t0) / 1e6,
      error: describeError(err, registered),
      hasResult: result !== undefined,
      result: plain(result),
      resultJson: result === undefined ? null : JSON.stringify(result),
      replyRaw: lastReplyRaw,
      context: describeContext(this)
    })
    lastReplyRaw = null
    if (out.sent === null) out.sent = lastSent
    if (out.sentRaw === undefined && this.request && typeof this.request.payload === 'string') {
      out.sentRaw = this.request.payload
    }
    if (out.calls.length >= collect || (err && err.name === 'TimeoutError')) finish()
  })
  if (out.sent === null) out.sent = lastSent
}

function report(acts) {
  const line = JSON.stringify({ scenario, ok: true, acts })
  process.stdout.write(line + '\n')
  const end = () => hemera.close(() => process.exit(0))
  if (args.resultSubject) nc.publish(args.resultSubject, line, end)
  else end()
}

hemera.ready(err => {
  if (err) {
    console.error('ready failed', err)
    process.exit(6)
  }
  let list
  if (scenario === 'act') list = [Object.assign({}, args, { pattern: args.pattern })]
  else if (scenario === 'acts') list = args.acts
  else {
    console.error('unknown scenario ' + scenario)
    process.exit(2)
  }
  const results = []
  const step = i => {
    if (i >= list.length) return report(results)
    runAct(list[i], r => {
      results.push(r)
      step(i + 1)
    })
  }
  step(0)
})
