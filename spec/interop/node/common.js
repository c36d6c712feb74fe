'use strict'
// Shared by service.js and client.js: the NATS connection, the parent
// watch, and a JSON-safe picture of errors and contexts.
//
// Modules come from <build>/interop/node_modules (tools/interop-setup.sh);
// the Lua specs put that directory on NODE_PATH.

const fs = require('fs')
const NATS = require('nats')
const Hemera = require('nats-hemera')

// nats 1.x connection; no reconnect, so the process ends with the server.
function connect(url, name) {
  return NATS.connect({ url, name, reconnect: false, maxReconnectAttempts: 0 })
}

// Exit when the Lua spec that started us is gone (HEMERA_INTEROP_PARENT), so
// a crashed or killed test run never leaves Node processes behind; and in
// any case after a hard limit.
function watchParent(limitMs) {
  const parent = Number(process.env.HEMERA_INTEROP_PARENT || 0)
  if (parent > 0) {
    // Gone, or a zombie nobody reaped yet (state Z/X in /proc/<pid>/stat).
    const alive = () => {
      try {
        const stat = fs.readFileSync(`/proc/${parent}/stat`, 'utf8')
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
        return state !== 'Z' && state !== 'X'
      } catch (e) {
        return false
      }
    }
    setInterval(() => {
      if (!alive()) process.exit(3)
    }, 250).unref()
  }
  setTimeout(() => process.exit(4), limitMs || 120000).unref()
}

// A plain copy that survives JSON (undefined -> absent, NaN -> null).
function plain(v) {
  if (v === undefined) return undefined
  return JSON.parse(JSON.stringify(v))
}

// Everything a Node peer can observe about an error it received.
function describeError(err, registered) {
  if (!err) return null
  const own = {}
  for (const k of Object.keys(err)) own[k] = err[k]
  const out = {
    name: err.name,
    message: err.message,
    stack: typeof err.stack === 'string' ? err.stack : null,
    keys: Object.keys(err),
    props: plain(own),
    isError: err instanceof Error,
    ctor: err.constructor ? err.constructor.name : null,
    instanceOf: {}
  }
  for (const n of Object.keys(Hemera.errors)) {
    out.instanceOf[n] = err instanceof Hemera.errors[n]
  }
  // registered: name -> the class made once by Hemera.createError (each
  // call makes a new class, so it must be the one errio rebuilds with)
  for (const n of Object.keys(registered || {})) {
    out.instanceOf[n] = err instanceof registered[n]
  }
  return out
}

function describeContext(ctx) {
  return {
    trace$: plain(ctx.trace$),
    meta$: plain(ctx.meta$),
    request$: plain(ctx.request$),
    delegate$: plain(ctx.delegate$),
    durationType: ctx.trace$ ? typeof ctx.trace$.duration : 'undefined',
    durationIsNaN: ctx.trace$ ? Number.isNaN(ctx.trace$.duration) : true
  }
}

// What a value looks like to JavaScript, for the number/string/table specs.
function describeValue(v) {
  return {
    json: JSON.stringify(v),
    type: v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v,
    negZero: Object.is(v, -0),
    isInteger: Number.isInteger(v),
    isSafeInteger: Number.isSafeInteger(v),
    keys: v && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v) : null,
    length: Array.isArray(v) || typeof v === 'string' ? v.length : null
  }
}

module.exports = { NATS, Hemera, connect, watchParent, plain, describeError, describeContext, describeValue }
