'use strict'
// bloomrun 4.1.1 (the pattern index of nats-hemera 7) on exactly the pattern
// sets and request mixes of bench_router: `bench_router --export DIR`
// writes DIR/router-<n>.json, this loads each file into bloomrun with
// insertion indexing (Hemera's default; pattern i gets payload i + 1, so the
// payloads are the routes bench_router recorded) and measures lookups/s the
// way bench_router does: round-robin over the 4,096 requests for a time
// budget. It also reports heap bytes per stored pattern (the pattern
// objects plus bloomrun's index, after a full GC) and how many of the first
// 256 routes agree with hm_router's.
//
//   node --expose-gc bloomrun-bench.js <dir> [budget-s] <patterns>...
// Output, one line per size and mix:
//   bloomrun patterns 10000 mix hit lookups/s 123456 bytes/pattern 789 agree 256/256
const fs = require('fs')
const path = require('path')
const Bloomrun = require('bloomrun')

const [dir, budgetArg, ...sizes] = process.argv.slice(2)
if (!dir || sizes.length === 0) {
  console.error('usage: node --expose-gc bloomrun-bench.js <dir> <budget-s> <patterns>...')
  process.exit(2)
}
const budget = Number(budgetArg) || 1

function gc() {
  if (global.gc) {
    global.gc()
    global.gc()
  }
}

function toPattern(o) {
  const p = {}
  for (const k of Object.keys(o)) {
    const v = o[k]
    p[k] = v !== null && typeof v === 'object' && typeof v.$re === 'string' ? new RegExp(v.$re) : v
  }
  return p
}

function measure(bloom, reqs, seconds, min) {
  const n = reqs.length
  let done = 0
  let hits = 0
  const t0 = process.hrtime.bigint()
  const limit = BigInt(Math.round(seconds * 1e9))
  let t
  do {
    for (let i = 0; i < 64; i++) {
      if (bloom.lookup(reqs[done % n]) !== null) hits++
      done++
    }
    t = process.hrtime.bigint() - t0
  } while (t < limit || done < min)
  return { rate: done / (Number(t) / 1e9), hits }
}

// In a function of its own, so no interpreter register still holds the
// file's text when the heap is measured.
function load(size) {
  return JSON.parse(fs.readFileSync(path.join(dir, `router-${size}.json`), 'utf8'))
}

for (const size of sizes) {
  const data = load(size)
  const count = data.patterns.length
  gc()
  const before = process.memoryUsage().heapUsed
  const bloom = Bloomrun({ indexing: 'insertion' })
  for (let i = 0; i < count; i++) bloom.add(toPattern(data.patterns[i]), i + 1)
  gc()
  const bytes = Math.round((process.memoryUsage().heapUsed - before) / count)
  for (const mix of ['hit', 'miss']) {
    const reqs = data[mix]
    const routes = data[mix + 'Route']
    let agree = 0
    const checked = Math.min(256, reqs.length)
    for (let i = 0; i < checked; i++) {
      const got = bloom.lookup(reqs[i])
      if ((got === null ? 0 : got) === routes[i]) agree++
    }
    // A short unreported pass first, so V8 has optimized the lookup path.
    measure(bloom, reqs, Math.min(0.2, budget / 4), 64)
    const r = measure(bloom, reqs, budget, count >= 100000 ? 64 : 512)
    console.log(
      `bloomrun patterns ${count} mix ${mix} lookups/s ${r.rate.toFixed(0)} bytes/pattern ${bytes} agree ${agree}/${checked}`
    )
  }
}
