'use strict'
// Shared by client.js and service.js: exit when the Lua spec that started
// us is gone (HEMERA_INTEROP_PARENT), and in any case after a hard limit,
// so no run leaves Node processes behind. Modules come from
// <build>/natsjs/node_modules (tools/natsjs-setup.sh), on NODE_PATH.
const fs = require('fs')

function watchParent(limitMs) {
  const parent = Number(process.env.HEMERA_INTEROP_PARENT || 0)
  if (parent > 0) {
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

module.exports = { watchParent }
