'use strict'
// Shared by the Node clients of bench/ (hemera-client.js, nats-client.js):
// the worker loop, the latency percentiles and the output line, which are
// the same as bench/rps.lua's and bench_transport's so bench/run.sh parses
// every client alike:
//   inflight  128:     40000 req/s  p50    3000 us  p99    6000 us  errors 0
//   client_hwm_kb 54000
//
// Modules come from <build>/bench-node/node_modules (tools/bench-setup.sh);
// bench/run.sh puts that directory on NODE_PATH.
const fs = require('fs')

function hwmKb(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid || 'self'}/status`, 'utf8')
    const m = /VmHWM:\s*(\d+)/.exec(s)
    return m ? Number(m[1]) : -1
  } catch (e) {
    return -1
  }
}

// <url> <target> <seconds> <warmup-s> <inflight>...
function clientArgs(usage) {
  const [url, target, seconds, warmup, ...levels] = process.argv.slice(2)
  if (!url || !target || !seconds || levels.length === 0) {
    console.error(`usage: node ${usage} <natsUrl> <subject-or-topic> <seconds> <warmup-s> <inflight>...`)
    process.exit(2)
  }
  return { url, target, seconds: Number(seconds), warmup: Number(warmup) || 0, levels: levels.map(Number) }
}

function pct(sorted, p) {
  if (sorted.length === 0) return 0
  return sorted[Math.max(1, Math.floor(sorted.length * p)) - 1]
}

// One level: `inflight` workers, each calling send(worker, seq, done) again
// as soon as done(err) is called, until `seconds` have passed.
function runLevel(send, inflight, seconds, cb) {
  const lat = []
  let done = 0
  let errors = 0
  let workers = inflight
  const t0 = process.hrtime.bigint()
  const stopAt = t0 + BigInt(Math.round(seconds * 1e9))
  function worker(w) {
    const start = process.hrtime.bigint()
    if (start >= stopAt) {
      if (--workers === 0) {
        const elapsed = Number(process.hrtime.bigint() - t0) / 1e9
        lat.sort((a, b) => a - b)
        cb({ inflight, rps: done / elapsed, p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors })
      }
      return
    }
    send(w, done, err => {
      if (err) errors++
      else {
        lat.push(Number(process.hrtime.bigint() - start) / 1e3)
        done++
      }
      worker(w)
    })
  }
  for (let w = 1; w <= inflight; w++) worker(w)
}

// The warm-up (unreported, at the last level), then every level; then
// prints the peak RSS and calls finish().
function runLevels(args, send, finish) {
  const levels = args.levels.slice()
  function next() {
    const n = levels.shift()
    if (n === undefined) {
      console.log(`client_hwm_kb ${hwmKb()}`)
      return finish()
    }
    runLevel(send, n, args.seconds, r => {
      console.log(
        `inflight ${String(r.inflight).padStart(4)}: ${r.rps.toFixed(0).padStart(9)} req/s  ` +
          `p50 ${r.p50.toFixed(0).padStart(7)} us  p99 ${r.p99.toFixed(0).padStart(7)} us  errors ${r.errors}`
      )
      setImmediate(next)
    })
  }
  if (args.warmup > 0) runLevel(send, args.levels[args.levels.length - 1], args.warmup, () => setImmediate(next))
  else next()
}

// Exit when the bench script that started us is gone, and in any case
// after a hard limit, so no Node process outlives a broken run.
function watchParent(limitMs) {
  const parent = process.ppid
  setInterval(() => {
    try {
      process.kill(parent, 0)
    } catch (e) {
      process.exit(3)
    }
  }, 500).unref()
  setTimeout(() => process.exit(4), limitMs || 600000).unref()
}

module.exports = { hwmKb, clientArgs, runLevels, watchParent }
