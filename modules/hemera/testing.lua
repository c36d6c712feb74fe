-- hemera.testing: helpers for busted suites that test Hemera services
-- against a real nats-server (the counterpart of hemera-testsuite).
--
--   local testing = require "hemera.testing"
--   local srv = testing.start_server { config = "max_payload: 65536" }
--   srv.url, srv.port, srv.pid, srv.dir
--   srv:stop() / srv:kill() / srv:restart([config])
--   local cl = testing.start_cluster(3)     -- cl.nodes[k], cl.urls[k]
--   testing.with_server(opts, function(srv) ... end)  -- stopped on any exit
--   testing.url()                -- the suite's shared server
--   testing.new(opts)            -- Hemera.new on testing.url()
--   testing.run(body [, ms])     -- body as a Hemera coroutine, with a limit
--   testing.raw(url | opts)      -- a raw hemera.core connection run() closes
--   testing.logger(), testing.stream(), testing.topic(), testing.dump(v)
--
-- docs/api.md, "Testing helpers", is the reference. Every server gets its
-- own temporary directory with its config file, its pid file and one log
-- file per start. The first start binds a random free port (port -1: no
-- probe/bind race) and reads the port back from the log; a restart binds
-- the same port again.
--
-- Readiness is an event: we follow the log file (`tail -F`, which wakes on
-- inotify) and return at the "Server is ready" line (plus, for a cluster
-- node, the "Listening for route connections" line). A process exit is not
-- an event we can await (the server is not our child: Lua cannot wait for
-- it), so stop/kill poll /proc/<pid> in a bounded loop that yields with
-- core.sleep(10) inside a Hemera coroutine.
--
-- No server outlives the Lua process: stop_all() runs from a finalizer when
-- the state closes, and a watchdog per server (a shell waiting on the Lua
-- process with `tail --pid`) ends it when the process exits without
-- closing its state (os.exit, a signal, a crash). Each server also runs
-- under `timeout` (HEMERA_TESTING_MAX_S, default 900 s) as a last resort.
local Hemera = require "hemera"
local core = require "hemera.core"

local M = {}

local MAX_LIFETIME = tonumber(os.getenv("HEMERA_TESTING_MAX_S") or "") or 900
local READY_S = 15 -- how long a start may take before it is an error
local STOP_MS = 5000 -- how long a signal may take before the next one

local all = {} -- every server started, stopped or not
-- Set while the finalizer runs: hemera.core may already be shut down then
-- (its own finalizer can run first), so nothing may call into it.
local finalizing = false

-- {==================================================================
-- Processes and files
-- ===================================================================

-- s as one shell word.
local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local function mkdtemp(prefix)
  local d = capture("mktemp -d " .. sh_quote((os.getenv("TMPDIR") or "/tmp") .. "/" .. prefix .. ".XXXXXX"))
    :gsub("%s+$", "")
  assert(d ~= "", "hemera.testing: mktemp -d failed")
  return d
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- True while the process exists and is not a zombie.
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z"
end
M.alive = alive

-- Waits (bounded) for a process we did not start as a child to be gone.
local function wait_gone(pid, limit_ms)
  local waited = 0
  while alive(pid) do
    if waited >= limit_ms then return false end
    -- No event exists for the exit of a non-child process: poll.
    if not finalizing and core.in_coroutine() then core.sleep(10) else os.execute("sleep 0.01") end
    waited = waited + 10
  end
  return true
end
M.wait_gone = wait_gone

-- Follows `path` from its first line and calls on_line(line) for each line
-- until it returns true (-> true), the process `pid` dies or READY_S
-- passes (-> false). Blocks the caller (and so the Lua process) meanwhile.
local function follow(path, pid, on_line)
  -- io.popen's shell prints its pid, then becomes `timeout`.
  local cmd = ("echo $$; exec timeout %d tail -n +1 -F -s 0.05 --pid=%d %s 2>/dev/null")
    :format(READY_S, pid, sh_quote(path))
  local p = assert(io.popen(cmd, "r"))
  local tail_pid = p:read("l")
  local ok = false
  for line in p:lines() do
    if on_line(line) then ok = true; break end
  end
  os.execute("kill " .. tail_pid .. " 2>/dev/null")
  p:close()
  return ok
end

-- }==================================================================

-- {==================================================================
-- One server
-- ===================================================================

local Server = {}
Server.__index = Server

local function config_text(self)
  local parts = {
    ("listen: 127.0.0.1:%d"):format(self.port or -1),
  }
  if self.monitor then
    parts[#parts + 1] = ("http: 127.0.0.1:%d"):format(self.http_port or -1)
  end
  if self.cluster then
    local c = self.cluster
    local routes = {}
    for _, r in ipairs(c.routes or {}) do routes[#routes + 1] = ("%q"):format(r) end
    parts[#parts + 1] = ("cluster {\n  name: %s\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}")
      :format(c.name, self.route_port or -1, table.concat(routes, ", "))
  end
  if self.extra and self.extra ~= "" then parts[#parts + 1] = self.extra end
  return table.concat(parts, "\n") .. "\n"
end

-- Starts the process and returns once it is ready. Raises with the log on
-- failure.
function Server:_launch()
  self.gen = self.gen + 1
  self.log = ("%s/nats-%d.log"):format(self.dir, self.gen)
  self.conf = self.dir .. "/nats.conf"
  write_file(self.conf, config_text(self))
  -- tail -F waits about 100 ms more for a file that does not exist yet;
  -- nats-server appends to one that does.
  write_file(self.log, "")
  os.remove(self.pidfile)
  -- $PPID is the Lua process (io.popen's shell is its child). The watchdog
  -- sends TERM to `timeout`, which passes it on to nats-server, and removes
  -- the directory once the Lua process is gone; TERM to the watchdog
  -- itself (stop) ends it without touching the server. Its output goes to
  -- /dev/null so that it does not hold io.popen's pipe open.
  local cleanup = os.getenv("HEMERA_TESTING_KEEP") and ":" or "rm -rf " .. sh_quote(self.dir)
  local cmd = ("timeout -s KILL %d nats-server -c %s -l %s -P %s %s >>%s 2>&1 </dev/null & s=$!; "
    .. "(trap 'kill $t 2>/dev/null; exit 0' TERM; tail --pid=$PPID -s 0.1 -f /dev/null & t=$!; wait $t; "
    .. "kill -TERM $s 2>/dev/null; %s) >/dev/null 2>&1 </dev/null & echo $s $!")
    :format(MAX_LIFETIME, sh_quote(self.conf), sh_quote(self.log), sh_quote(self.pidfile),
            self.args or "", sh_quote(self.dir .. "/stderr.txt"), cleanup)
  local wrapper, watchdog = capture(cmd):match("(%d+) (%d+)")
  assert(wrapper, "hemera.testing: could not start nats-server")
  self.wrapper, self.watchdog = tonumber(wrapper), tonumber(watchdog)
  local ready, routes, failed = false, not self.cluster, nil
  local ok = follow(self.log, self.wrapper, function(line)
    local port = line:match("Listening for client connections on [%d%.]+:(%d+)")
    if port then self.port = tonumber(port) end
    port = line:match("Starting http monitor on [%d%.]+:(%d+)")
    if port then self.http_port = tonumber(port) end
    port = line:match("Listening for route connections on [%d%.]+:(%d+)")
    if port then self.route_port = tonumber(port); routes = true end
    if line:find("Server is ready", 1, true) then ready = true end
    if line:find("[FTL]", 1, true) then failed = line; return true end
    return ready and routes
  end)
  self.pid = tonumber((read_file(self.pidfile) or ""):match("%d+"))
  if not ok or failed or not self.pid then
    local log = (read_file(self.log) or "") .. (read_file(self.dir .. "/stderr.txt") or "")
    self:_signal("KILL")
    self:_end_watchdog()
    error(("hemera.testing: nats-server %s did not start (config %s):\n%s"):format(self.name, self.conf, log), 0)
  end
  self.running = true
  local scheme = self.scheme or "nats"
  self.url = ("%s://127.0.0.1:%d"):format(scheme, self.port)
  self.host_port = ("127.0.0.1:%d"):format(self.port)
end

function Server:_signal(sig)
  for _, pid in ipairs { self.pid, self.wrapper } do
    if pid and alive(pid) then os.execute(("kill -%s %d 2>/dev/null"):format(sig, pid)) end
  end
end

function Server:_end_watchdog()
  if self.watchdog and alive(self.watchdog) then
    os.execute(("kill -TERM %d 2>/dev/null"):format(self.watchdog))
  end
  self.watchdog = nil
end

-- Ends the process with `sig` (default TERM) and returns once it is gone
-- (KILL after 5 s of TERM).
function Server:stop(sig)
  if not self.running then return end
  self.running = false
  sig = sig or "TERM"
  if self.pid then os.execute(("kill -%s %d 2>/dev/null"):format(sig, self.pid)) end
  self.forced = false
  if not (self.pid and wait_gone(self.pid, STOP_MS)) then
    -- Whatever the server had not written yet is lost (JetStream's acks,
    -- say): srv.forced tells a test that it had to be killed.
    self.forced = sig ~= "KILL"
    self:_signal("KILL")
    if self.pid then wait_gone(self.pid, STOP_MS) end
  end
  -- The `timeout` wrapper exits with its child.
  if self.wrapper then wait_gone(self.wrapper, STOP_MS) end
  self:_end_watchdog()
end

function Server:kill() return self:stop("KILL") end

-- Starts it again on the same ports, with the same config (or a new extra
-- config when given).
function Server:restart(extra)
  self:stop()
  if extra ~= nil then self.extra = extra end
  self:_launch()
  return self
end

function Server:log_text()
  return read_file(self.log) or ""
end

-- Blocks until `count` lines of the current log contain `text` (plain).
function Server:wait_log(text, count)
  count = count or 1
  local n = 0
  return follow(self.log, self.pid, function(line)
    if line:find(text, 1, true) then n = n + 1 end
    return n >= count
  end)
end

-- A GET on the monitoring port with bash's /dev/tcp (no curl needed);
-- returns the body.
local function http_get(port, path)
  local script = ('exec 3<>/dev/tcp/127.0.0.1/%d && printf "GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" >&3 && timeout 5 cat <&3')
    :format(port, path)
  local resp = capture("bash -c " .. sh_quote(script))
  return resp:match("\r\n\r\n(.*)$") or ""
end

local function monitor_port(self)
  if not self.http_port then
    error("hemera.testing: server " .. self.name .. " has no monitoring port: start it with monitor = true", 3)
  end
  return self.http_port
end

-- The server's /connz (needs monitor = true), decoded.
function Server:connz()
  return core.decode(http_get(monitor_port(self), "/connz?limit=1000"))
end

function Server:routez()
  return core.decode(http_get(monitor_port(self), "/routez"))
end

-- True when a client connection named `name` is on this server.
function Server:has_client(name)
  local cz = self:connz()
  for _, c in ipairs(cz and cz.connections or {}) do
    if c.name == name then return true end
  end
  return false
end

local START_OPTS = { config = "string", monitor = "boolean", scheme = "string", name = "string",
                     args = "string", cluster = "table", port = "number" }

-- testing.start_server{ config = "extra config text", monitor = bool,
--   scheme = "nats" | "tls", name = "label", args = "extra CLI args",
--   cluster = { name = ..., routes = {url...} }, port = n }
function M.start_server(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("hemera.testing.start_server: options must be a table, got " .. type(opts), 2)
  end
  for k, v in pairs(opts) do
    local want = START_OPTS[k]
    if not want then
      error(("hemera.testing.start_server: unknown option %q"):format(tostring(k)), 2)
    elseif type(v) ~= want then
      error(("hemera.testing.start_server: option %s must be a %s, got %s (%s)")
        :format(k, want, type(v), tostring(v)), 2)
    end
  end
  local self = setmetatable({
    name = opts.name or ("nats" .. (#all + 1)),
    extra = opts.config,
    monitor = opts.monitor,
    scheme = opts.scheme,
    args = opts.args,
    cluster = opts.cluster,
    port = opts.port,
    gen = 0,
  }, Server)
  self.dir = mkdtemp("hemera-testing")
  self.pidfile = self.dir .. "/nats.pid"
  all[#all + 1] = self
  self:_launch()
  return self
end

-- testing.with_server(opts, fn): fn(srv) with a fresh server, stopped
-- whatever fn does; returns what fn returns, raises what it raises.
function M.with_server(opts, fn)
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  local srv = M.start_server(opts)
  local res = table.pack(xpcall(fn, debug.traceback, srv))
  srv:stop()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- }==================================================================

-- {==================================================================
-- Clusters
-- ===================================================================

local Cluster = {}
Cluster.__index = Cluster

-- The node a client named `name` is connected to, or nil.
function Cluster:node_of(name)
  for _, n in ipairs(self.nodes) do
    if n.running and n:has_client(name) then return n end
  end
  return nil
end

-- URLs of the running nodes, optionally without `except`.
function Cluster:running_urls(except)
  local out = {}
  for _, n in ipairs(self.nodes) do
    if n.running and n ~= except then out[#out + 1] = n.url end
  end
  return out
end

function Cluster:stop()
  for _, n in ipairs(self.nodes) do n:stop() end
end

-- testing.start_cluster(n [, {config = ...}]): n nodes routed on loopback,
-- every node monitored; returns once each node has a route to every other.
function M.start_cluster(n, opts)
  n = n or 3
  if math.type(n) ~= "integer" or n < 1 then
    error(("hemera.testing.start_cluster: n must be an integer >= 1, got %s"):format(tostring(n)), 2)
  end
  opts = opts or {}
  local name = "c" .. core.nuid():sub(1, 8)
  local cl = setmetatable({ nodes = {}, urls = {} }, Cluster)
  local seed = M.start_server { name = name .. "-1", monitor = true, config = opts.config, cluster = { name = name } }
  cl.nodes[1] = seed
  local seed_route = ("nats-route://127.0.0.1:%d"):format(seed.route_port)
  for k = 2, n do
    cl.nodes[k] = M.start_server { name = name .. "-" .. k, monitor = true, config = opts.config,
                                   cluster = { name = name, routes = { seed_route } } }
  end
  -- Full mesh: every node logs one "Route connection created" per peer
  -- (a duplicate route logs more, never fewer); routez confirms it.
  for _, node in ipairs(cl.nodes) do
    if n > 1 and not node:wait_log("Route connection created", n - 1) then
      cl:stop()
      error("hemera.testing: cluster did not form:\n" .. node:log_text(), 2)
    end
  end
  for k, node in ipairs(cl.nodes) do
    cl.urls[k] = node.url
    local rz = node:routez()
    if not (rz and rz.num_routes >= n - 1) then
      cl:stop()
      error(("hemera.testing: cluster node %d has %s routes, wants %d"):format(k, tostring(rz and rz.num_routes), n - 1), 2)
    end
  end
  return cl
end

-- }==================================================================

-- {==================================================================
-- The shared server and Hemera instances on it
-- ===================================================================

local shared_url, shared_server

-- The URL of the suite's server: HEMERA_NATS_URL when set (a server the
-- test run started, as tools/with-nats.sh does), else a private server
-- this module starts on first use and stops at exit (M.shared_server()).
function M.url()
  if not shared_url then
    local env = os.getenv("HEMERA_NATS_URL")
    if env and env ~= "" then
      shared_url = env
    else
      shared_server = M.start_server { name = "shared" }
      shared_url = shared_server.url
    end
  end
  return shared_url
end

-- The private server url() started, or nil (HEMERA_NATS_URL was set, or
-- url() has not run).
function M.shared_server() return shared_server end

-- A Hemera instance on testing.url() unless opts.servers says otherwise.
function M.new(opts)
  opts = opts or {}
  if opts.servers == nil then opts.servers = M.url() end
  return Hemera.new(opts)
end

-- Unique topic names keep specs independent on one server.
local n_topics = 0
function M.topic(base)
  n_topics = n_topics + 1
  return ("%s.%s.%d"):format(base or "spec", core.nuid(), n_topics)
end

M.future = core.future

-- }==================================================================

-- {==================================================================
-- Raw connections and the test runner
-- ===================================================================

local raws = {}

-- A raw hemera.core connection, closed by M.run (or M.close_raw) whatever
-- happens: an open raw connection would keep the loop, and so the spec,
-- running for ever.
function M.raw(opts, on_event)
  if type(opts) == "string" then opts = { servers = opts } end
  local conn = core.connect(opts, on_event)
  raws[#raws + 1] = conn
  local ok, err = conn:wait_connected()
  if not ok then return nil, err end
  return conn
end

function M.close_raw()
  for _, c in ipairs(raws) do
    if not c:is_closed() then c:close() end
  end
  raws = {}
end

-- testing.run(body [, limit_ms]): runs body() in a Hemera coroutine and the
-- loop until it returns and every Hemera instance and raw connection is
-- closed (run closes them when the body ends, fails or times out). Raises
-- the body's error with its traceback, or a timeout message after limit_ms
-- (default 20 s).
function M.run(body, limit_ms)
  if type(body) ~= "function" then
    error("hemera.testing.run: body must be a function, got " .. type(body), 2)
  end
  limit_ms = limit_ms or 20000
  if math.type(limit_ms) ~= "integer" or limit_ms <= 0 then
    error(("hemera.testing.run: limit_ms must be a positive integer, got %s"):format(tostring(limit_ms)), 2)
  end
  local done = core.future()
  local failure
  Hemera.spawn(function()
    local ok, err = xpcall(body, debug.traceback)
    done:set(ok, err)
  end)
  Hemera.spawn(function()
    local ok, err = done:wait(limit_ms)
    if ok == nil and err == "timeout" then
      failure = ("hemera.testing.run: the test body did not finish within %d ms"):format(limit_ms)
    elseif not ok then
      failure = err
    end
    M.close_raw()
    Hemera.closeAll()
  end)
  Hemera.run()
  if failure then error(failure, 0) end
end

-- }==================================================================

-- {==================================================================
-- Log capture
-- ===================================================================

-- Everything in a value as text, for "does this secret appear" checks.
local function dump(v, seen)
  local t = type(v)
  if t ~= "table" then return tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = dump(k, seen) .. "=" .. dump(x, seen) end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__index) == "table" and not seen[mt.__index] then
    parts[#parts + 1] = dump(mt.__index, seen)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
M.dump = dump

-- testing.logger(): a custom logger (Hemera.new{logger = lg}) that records
-- every call:
--   lg.records[k] = {level = name, msg = msg, fields = fields, text = all of it}
--   lg:find(pred) -> first record for which pred(rec) (or whose text
--     contains the string pred, case-insensitively)
--   lg:wait(pred, ms) -> the record, awaited (a future set by the logger
--     call itself), or nil, "timeout"
--   lg:count(pred), lg:text() (every record, one a line)
function M.logger()
  local lg = { records = {}, waiting = {} }
  local function matcher(pred)
    if type(pred) == "string" then
      local needle = pred:lower()
      return function(rec) return rec.text:lower():find(needle, 1, true) ~= nil end
    end
    return pred
  end
  for _, level in ipairs { "fatal", "error", "warn", "info", "debug", "trace" } do
    lg[level] = function(self, msg, fields)
      local rec = { level = level, msg = msg, fields = fields }
      rec.text = level .. " " .. dump(msg) .. " " .. dump(fields)
      self.records[#self.records + 1] = rec
      for k = #self.waiting, 1, -1 do
        local w = self.waiting[k]
        if w.pred(rec) then
          table.remove(self.waiting, k)
          w.future:set(rec)
        end
      end
    end
  end
  function lg:find(pred)
    pred = matcher(pred)
    for _, rec in ipairs(self.records) do
      if pred(rec) then return rec end
    end
  end
  function lg:count(pred)
    pred = matcher(pred)
    local n = 0
    for _, rec in ipairs(self.records) do
      if pred(rec) then n = n + 1 end
    end
    return n
  end
  function lg:wait(pred, ms)
    pred = matcher(pred)
    local rec = self:find(pred)
    if rec then return rec end
    local f = core.future()
    self.waiting[#self.waiting + 1] = { pred = pred, future = f }
    return f:wait(ms or 10000)
  end
  function lg:text()
    local out = {}
    for _, rec in ipairs(self.records) do out[#out + 1] = rec.text end
    return table.concat(out, "\n")
  end
  return lg
end

-- testing.stream(): a stream for the built-in logger (Hemera.new{logger =
-- st, logLevel = "trace"}): st.lines holds what it wrote, st:text() all
-- of it, st:records() each line decoded (JSON lines, pretty = false).
function M.stream()
  local st = { lines = {} }
  function st:write(s) self.lines[#self.lines + 1] = s end
  function st:text() return table.concat(self.lines) end
  function st:records()
    local out = {}
    for _, l in ipairs(self.lines) do out[#out + 1] = core.decode(l) end
    return out
  end
  return st
end

-- }==================================================================

-- Kills every server this module started and removes their directories
-- (unless HEMERA_TESTING_KEEP is set).
function M.stop_all()
  for _, s in ipairs(all) do
    if s.running then s:kill() else s:_signal("KILL") end
    s:_end_watchdog()
    if s.dir and not os.getenv("HEMERA_TESTING_KEEP") then
      os.execute("rm -rf " .. sh_quote(s.dir))
      s.dir = nil
    end
  end
  all = {}
  shared_url, shared_server = nil, nil
end

-- Finalizer: runs when the Lua state closes, whatever the spec did.
M._guard = setmetatable({}, { __gc = function()
  finalizing = true
  pcall(M.stop_all)
end })

return M
