-- Driving nats.js 2.x (spec/natsjs/) from the specs: the install, the
-- client (its result comes back over NATS, so the Lua services in this
-- process keep serving while we wait) and the reference service. Built on
-- interop.support's process handling (spawn, logs, kill by pid).
local Hemera = require "hemera"
local core = require "hemera.core"
local S = require "interop.support"

local N = {}

local shq = S.shell_quote
local dir = S.src .. "/spec/natsjs"
local modules = S.build .. "/natsjs/node_modules"

local setup_done = false
-- Runs tools/natsjs-setup.sh <build> once per process (offline and fast
-- once installed).
function N.setup()
  if setup_done then return end
  local log = os.tmpname()
  local ok = os.execute(("%s/tools/natsjs-setup.sh %s >%s 2>&1"):format(shq(S.src), shq(S.build), shq(log)))
  local f = io.open(log)
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  assert(ok, "tools/natsjs-setup.sh failed:\n" .. text)
  os.execute(("mkdir -p %s"):format(shq(S.logs)))
  setup_done = true
end

local function spawn(script, args, label)
  local saved_dir, saved_modules = S.node_dir, S.modules
  S.node_dir, S.modules = dir, modules
  local ok, proc = pcall(S.spawn_node, script, args, label)
  S.node_dir, S.modules = saved_dir, saved_modules
  assert(ok, proc)
  return proc
end

-- Runs client.js with args (see its header) and returns its decoded
-- result. Must run inside S.run.
function N.client(args, wait_ms)
  local conn = S.raw()
  args.resultSubject = "natsjs.result." .. core.nuid()
  local res = S.expect_message(conn, args.resultSubject)
  local proc = spawn("client.js", { S.url, Hemera.encode(args) }, "natsjs-client")
  local line, why = res:wait(wait_ms or 30000)
  assert(line, ("nats.js client gave no result (%s); log:\n%s"):format(tostring(why), S.read_log(proc)))
  return assert(Hemera.decode(line)), line
end

-- Starts service.js (a nats.js reference service named `name`) and waits
-- until its subscriptions are live. Returns {pid, log, id}.
function N.service(name)
  local conn = S.raw()
  local ready_subject = "natsjs.ready." .. core.nuid()
  local ready = S.expect_message(conn, ready_subject)
  local proc = spawn("service.js", { S.url, name, ready_subject }, "natsjs-service")
  local data, why = ready:wait(30000)
  assert(data, ("nats.js service did not get ready (%s); log:\n%s"):format(tostring(why), S.read_log(proc)))
  proc.id = Hemera.decode(data).id
  return proc
end

N.run = S.run
N.kill_all = S.kill_all
N.raw = S.raw

return N
