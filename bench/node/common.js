'use strict'
// Shared by the Node clients of bench/ (hemera-client.js, nats-client.js):
// the worker loop, the latency percentiles and the output line, which are
// the same as bench/rps.lua's and bench_transport's so bench/run.sh parses
// every client alike:
//   inflight  128:     40000 req/s  p50    3000 us  p99    6000 us  errors 0  requests 120000  cpu_us 2900000  svc_cpu_us 2500000
//   client_hwm_kb 54000
// requests: answered in the level; cpu_us: this process's CPU over the
// level (process.cpuUsage(), user + system, every thread); svc_cpu_us: the
// service's utime + stime from /proc/$BENCH_SVC_PID/stat over the level,
// -1 without it.
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

const tickUs = 1e6 / (Number(process.env.BENCH_CLK_TCK) || 100)
const svcPid = Number(process.env.BENCH_SVC_PID) || 0

// utime + stime (fields 14 and 15, clock ticks) of /proc/<pid>/stat in
// microseconds, or -1. Fields are counted after the last ')', since the
// command name before it may hold spaces.
function procCpuUs(pid) {
  if (!pid) return -1
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 1).trim().split(/\s+/)
    const ut = Number(f[11])
    const st = Number(f[12])
    return Number.isFinite(ut) && Number.isFinite(st) ? (ut + st) * tickUs : -1
  } catch (e) {
    return -1
  }
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
  // CPU is read around the level alone (the warm-up is a level of its own).
  const cpu0 = process.cpuUsage()
  const svc0 = procCpuUs(svcPid)
  const t0 = process.hrtime.bigint()
  const stopAt = t0 + BigInt(Math.round(seconds * 1e9))
  function worker(w) {
    const start = process.hrtime.bigint()
    if (start >= stopAt) {
      if (--workers === 0) {
        const elapsed = Number(process.hrtime.bigint() - t0) / 1e9
        const cpu = process.cpuUsage(cpu0)
        const svc1 = procCpuUs(svcPid)
        lat.sort((a, b) => a - b)
        cb({
          inflight,
          rps: done / elapsed,
          p50: pct(lat, 0.5),
          p99: pct(lat, 0.99),
          errors,
          requests: done,
          cpuUs: cpu.user + cpu.system,
          svcCpuUs: svc0 >= 0 && svc1 >= 0 ? svc1 - svc0 : -1
        })
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
          `p50 ${r.p50.toFixed(0).padStart(7)} us  p99 ${r.p99.toFixed(0).padStart(7)} us  errors ${r.errors}  ` +
          `requests ${r.requests}  cpu_us ${r.cpuUs.toFixed(0)}  svc_cpu_us ${r.svcCpuUs.toFixed(0)}`
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
