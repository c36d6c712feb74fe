-- Support for the interop specs: installing and driving Node Hemera
-- processes, raw NATS connections, and a run() that closes everything.
--
-- Synchronisation never sleeps. A Node service publishes {"ready":...} on
-- <prefix>.ready once NATS has confirmed its subscriptions (it also prints
-- "ready"); a Node client publishes its one-line JSON result on a subject we
-- subscribed to before starting it. Both are awaited with futures.
--
-- Every Node process started here is recorded (by pid) and killed by
-- kill_all() in the specs' teardown (clients also in after_each); the
-- processes also exit by themselves when this Lua process is gone or a
-- zombie (HEMERA_INTEROP_PARENT), and when their NATS connection closes.
-- Their output goes to <build>/interop/logs/ and is shown when a start or a
-- scenario fails.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local S = {}

S.url = testing.url()
S.src = os.getenv("HEMERA_SRC") or "."
S.build = assert(os.getenv("HEMERA_BUILD"), "HEMERA_BUILD is not set: run the specs through ctest (make test)")
S.node_dir = S.src .. "/spec/interop/node"
S.modules = S.build .. "/interop/node_modules"
S.logs = S.build .. "/interop/logs"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
S.shell_quote = shq

local function my_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end
S.pid = my_pid()

-- {==================================================================
-- Set-up
-- ===================================================================

local setup_done = false
-- Runs tools/interop-setup.sh <build> once per process (fast when the
-- tree is already installed).
function S.setup()
  if setup_done then return end
  local log = os.tmpname()
  local ok = os.execute(("%s/tools/interop-setup.sh %s >%s 2>&1"):format(shq(S.src), shq(S.build), shq(log)))
  local f = io.open(log)
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  assert(ok, "tools/interop-setup.sh failed:\n" .. text)
  -- Node logs of earlier runs: keep the last two hours' worth.
  os.execute(("mkdir -p %s && find %s -name '*.log' -mmin +120 -delete 2>/dev/null"):format(shq(S.logs), shq(S.logs)))
  setup_done = true
end

-- }==================================================================

-- {==================================================================
-- Processes
-- ===================================================================

local procs = {} -- pid -> { name, log, script }

-- Starts `node <script> <args...>` in the background; returns {pid, log}.
function S.spawn_node(script, args, label)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = shq(a) end
  local log = ("%s/%s-%s.log"):format(S.logs, label or script:gsub("%.js$", ""), core.nuid())
  local cmd = ("env HEMERA_INTEROP_PARENT=%d NODE_PATH=%s node %s %s >%s 2>&1 </dev/null & echo $!"):format(
    S.pid, shq(S.modules), shq(S.node_dir .. "/" .. script), table.concat(parts, " "), shq(log))
  local p = assert(io.popen(cmd))
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start node " .. script)
  procs[pid] = { name = label or script, log = log, script = script }
  return { pid = pid, log = log }
end

function S.read_log(proc)
  local f = io.open(proc.log)
  if not f then return "(no log)" end
  local text = f:read("a")
  f:close()
  return text
end

function S.kill(proc)
  if proc and procs[proc.pid] then
    os.execute(("kill -TERM %d 2>/dev/null"):format(proc.pid))
    procs[proc.pid] = nil
  end
end

-- Kills the Node processes started by this spec file (by pid): all of
-- them, or only those running `script`.
function S.kill_all(script)
  local pids = {}
  for pid, p in pairs(procs) do
    if script == nil or p.script == script then
      pids[#pids + 1] = tostring(pid)
      procs[pid] = nil
    end
  end
  if #pids > 0 then
    os.execute("kill -TERM " .. table.concat(pids, " ") .. " 2>/dev/null")
  end
end

-- Node clients end by themselves; this catches those a failed test left.
function S.kill_clients() S.kill_all("client.js") end

-- }==================================================================

-- {==================================================================
-- A test body in a Hemera coroutine, closing raw connections too
-- ===================================================================

-- A plain NATS connection (hemera.core), closed at the end of S.run.
function S.raw()
  return assert(testing.raw { servers = S.url, name = "interop-raw" })
end

-- testing.run with the interop scenarios' longer default limit.
function S.run(body, limit_ms)
  testing.run(body, limit_ms or 30000)
end

-- Subscribes `subject` on a raw connection; returns a future set with the
-- first message's data, after the server confirmed the subscription.
function S.expect_message(conn, subject)
  local f = core.future()
  conn:subscribe(subject, nil, 1, function(_, _, data) f:set(data) end)
  assert(conn:flush(5000))
  return f
end

-- }==================================================================

-- {==================================================================
-- Node Hemera service and client
-- ===================================================================

-- Starts service.js and waits until its subscriptions are live.
-- Must run inside S.run. Returns {pid, log, name, prefix}.
function S.start_service(name, prefix, extra)
  local conn = S.raw()
  local ready = S.expect_message(conn, prefix .. ".ready")
  local args = { S.url, name, prefix }
  for _, kv in ipairs(extra or {}) do args[#args + 1] = kv end
  local proc = S.spawn_node("service.js", args, "service-" .. name)
  local data, why = ready:wait(20000)
  assert(data, ("node service %s did not get ready (%s); log:\n%s"):format(name, tostring(why), S.read_log(proc)))
  proc.name, proc.prefix = name, prefix
  return proc
end

-- v without its null object members (arrays keep their nulls), in place.
function S.strip_nulls(v)
  if type(v) ~= "table" then return v end
  local arr = getmetatable(v) == core.array_mt
  for k, x in pairs(v) do
    if x == Hemera.null and not arr then v[k] = nil else S.strip_nulls(x) end
  end
  return v
end

-- Runs `node client.js <url> <scenario> <args>` and returns its decoded
-- result line (and the raw line). Must run inside S.run; the Lua services
-- the client talks to keep serving while we wait.
function S.node_client(scenario, args, wait_ms)
  args = args or {}
  local conn = S.raw()
  args.resultSubject = "interop.result." .. core.nuid()
  local res = S.expect_message(conn, args.resultSubject)
  local proc = S.spawn_node("client.js", { S.url, scenario, Hemera.encode(args) }, "client-" .. scenario)
  local line, why = res:wait(wait_ms or 20000)
  assert(line, ("node client %s gave no result (%s); log:\n%s"):format(scenario, tostring(why), S.read_log(proc)))
  -- The harness writes null for "none" (error = null: no error): its
  -- view leaves null members out, as the codec did before issue 11; tests
  -- of null itself read the raw line.
  local out = S.strip_nulls(assert(Hemera.decode(line)))
  return out, line
end

-- A Node client act; returns the list of callbacks ({error, result, hasResult,
-- context}) and the request message Node sent.
function S.node_act(pattern, opts)
  opts = opts or {}
  opts.pattern = pattern
  local out = S.node_client("act", opts)
  local a = out.acts[1]
  return a.calls, a.sent, a
end

-- }==================================================================

-- {==================================================================
-- Private nats-server
-- ===================================================================

-- True inside a run started by S.rerun_private.
S.private = os.getenv("HEMERA_INTEROP_PRIVATE_NATS") == "1"

-- Runs `spec` (a path under the source tree) again under busted, on a
-- private nats-server (tools/with-nats.sh), for specs that must use
-- Hemera's real topic names (`math`, `events`) that other specs and the
-- examples also use on the shared test server. Returns ok, output.
function S.rerun_private(spec)
  local lua = arg and arg[-1] or "lua5.4"
  local cmd = ("cd %s && tools/with-nats.sh env HEMERA_INTEROP_PRIVATE_NATS=1 %s /usr/bin/busted --output=plainTerminal %s 2>&1"):format(
    shq(S.src), shq(lua), shq(S.src .. "/" .. spec))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

-- }==================================================================

return S
