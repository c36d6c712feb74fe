-- hemera.micro: every Hemera instance is one service of NATS' Service API
-- (ADR-32, revision 6), so `nats micro ls`, nats.js' and nats.go's service
-- clients, and `hemera ls` find it with no configuration.
--
-- The service:
--   name      the instance's name with every character outside A-Za-z0-9_-
--             made "_" ("math.v2" -> "math_v2")
--   id        a NUID, new for each instance
--   version   the option micro.version (SemVer), else Hemera.VERSION
--   metadata  the option micro.metadata (string -> string) plus
--             hemera.lang = "lua" and hemera.version = Hemera.VERSION
--   endpoints one per subscribed topic: subject = the topic, queue_group =
--             its queue group (none for pubsub$), metadata.patterns = the
--             topic's patterns as JSON text; topics added or removed
--             after ready come and go
-- It answers <prefix>.PING|INFO|STATS, <prefix>.<VERB>.<name> and
-- <prefix>.<VERB>.<name>.<id> (prefix "$SRV" unless micro.prefix says
-- otherwise) on plain subscriptions, as every instance must answer them.
-- The counters of STATS are kept in C on the request path
-- (hm_lua_micro.c); each endpoint's `data` is the process' load sample.

local core = require "hemera.core"
local errors = require "hemera.errors"

local M = {}

M.PING_TYPE = "io.nats.micro.v1.ping_response"
M.INFO_TYPE = "io.nats.micro.v1.info_response"
M.STATS_TYPE = "io.nats.micro.v1.stats_response"

local encode, array = core.encode, core.array

-- A name ADR-32 accepts: A-Za-z0-9, "-" and "_"; anything else becomes "_"
-- (byte by byte: a two-byte UTF-8 letter becomes "__").
function M.service_name(name)
  local s = tostring(name):gsub("[^A-Za-z0-9_-]", "_")
  if s == "" then s = "_" end
  return s
end

-- SemVer 2.0.0 (the grammar of semver.org's regular expression).
local function numeric_id(s) return s == "0" or s:match("^[1-9]%d*$") ~= nil end
local function pre_id(s)
  if s:match("^%d+$") then return numeric_id(s) end
  return s:match("^[0-9A-Za-z-]+$") ~= nil
end
function M.is_semver(v)
  if type(v) ~= "string" then return false end
  local core_part, rest = v:match("^(%d+%.%d+%.%d+)(.*)$")
  if not core_part then return false end
  for n in core_part:gmatch("%d+") do
    if not numeric_id(n) then return false end
  end
  local pre, build = rest:match("^%-([^+]+)(.*)$")
  if pre then
    for id in (pre .. "."):gmatch("([^.]*)%.") do
      if not pre_id(id) then return false end
    end
    rest = build
  end
  if rest ~= "" then
    local b = rest:match("^%+(.+)$")
    if not b then return false end
    for id in (b .. "."):gmatch("([^.]*)%.") do
      if not id:match("^[0-9A-Za-z-]+$") then return false end
    end
  end
  return true
end

local function rfc3339(ms)
  return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. (".%03dZ"):format(ms % 1000)
end

-- Checks the option micro (config.lua has its shape) and returns the
-- service's fixed parts. `version` is the library's.
function M.describe(cfg, version, level)
  local m = cfg.micro
  local function fail(path, msg)
    error(errors.HemeraError("Invalid option 'micro." .. path .. "': " .. msg, { option = "micro." .. path }), level + 1)
  end
  local v = m.version or version
  if not M.is_semver(v) then fail("version", "must be a SemVer version (like 1.2.3), got " .. tostring(v)) end
  if m.prefix == "" or m.prefix:find("[%s%*>]") or m.prefix:find("^%.") or m.prefix:find("%.$")
     or m.prefix:find("%.%.") then
    fail("prefix", "must be a subject prefix without wildcards or spaces, got '" .. m.prefix .. "'")
  end
  local meta = {}
  for k, val in pairs(m.metadata) do
    if type(k) ~= "string" or type(val) ~= "string" then
      fail("metadata", ("keys and values must be strings, got %s = %s"):format(tostring(k), tostring(val)))
    end
    meta[k] = val
  end
  meta["hemera.lang"] = "lua"
  meta["hemera.version"] = version
  return {
    name = M.service_name(cfg.name),
    version = v,
    description = m.description,
    metadata = meta,
    prefix = m.prefix,
  }
end

-- {==================================================================
-- Responses
-- ===================================================================

local function base(svc, kind)
  return { type = kind, name = svc.name, id = svc.id, version = svc.version, metadata = svc.metadata }
end

-- The topics in name order, each with its patterns.
local function topics_of(i)
  local byt = {}
  for _, def in ipairs(i.router:list()) do
    local p = def.pattern
    local l = byt[p.topic]
    if not l then l = {}; byt[p.topic] = l end
    l[#l + 1] = p
  end
  local names = {}
  for topic, t in pairs(i.topics) do
    if t.sub then names[#names + 1] = topic end
  end
  table.sort(names)
  return names, byt
end

local function queue_of(t)
  if t.pubsub then return nil end
  return t.queue or ("queue." .. t.topic)
end

local function endpoint(t, patterns)
  local ok, text = pcall(encode, array(patterns or {}))
  return {
    name = M.service_name(t.topic),
    subject = t.topic,
    queue_group = queue_of(t),
    metadata = { patterns = ok and text or "[]" },
  }
end

function M.ping(i)
  return base(i.micro, M.PING_TYPE)
end

function M.info(i)
  local r = base(i.micro, M.INFO_TYPE)
  r.description = i.micro.description
  local eps = array {}
  local names, byt = topics_of(i)
  for k, topic in ipairs(names) do eps[k] = endpoint(i.topics[topic], byt[topic]) end
  r.endpoints = eps
  return r
end

function M.stats(i)
  local r = base(i.micro, M.STATS_TYPE)
  r.started = rfc3339(i.micro.started)
  local eps = array {}
  local load = core.load()
  local names = topics_of(i)
  for k, topic in ipairs(names) do
    local t = i.topics[topic]
    local e = t.ep and t.ep:stats() or {
      num_requests = 0, num_errors = 0, last_error = "", processing_time = 0, average_processing_time = 0 }
    e.name = M.service_name(topic)
    e.subject = topic
    e.queue_group = queue_of(t)
    e.data = { rss = load.rss, heapUsed = load.heapUsed, eventLoopDelay = load.eventLoopDelay }
    eps[k] = e
  end
  r.endpoints = eps
  return r
end

-- }==================================================================

-- {==================================================================
-- Lifecycle (init.lua calls these)
-- ===================================================================

-- Counters for topic t of instance i, once it is subscribed.
function M.attach(i, t)
  if not i.micro_on or not t.sub then return end
  t.ep = t.ep or core.endpoint()
  core.endpoint_attach(t.sub, t.ep)
end

local VERBS = { PING = M.ping, INFO = M.info, STATS = M.stats }

-- Starts answering: nil, or an error message naming the subject.
function M.start(i)
  if not i.micro_on or i.micro_subs then return nil end
  local svc = i.micro
  svc.id = core.nuid()
  svc.started = core.now()
  local conn, subs = i.conn, {}
  i.micro_subs = subs
  for verb, build in pairs(VERBS) do
    local function answer(_, reply)
      if not reply or i.closing then return end
      local ok, text = pcall(encode, build(i))
      if not ok then
        i.root.log:error("Service API response could not be encoded", { verb = verb, error = text })
        return
      end
      conn:publish(reply, text)
    end
    local p = svc.prefix .. "." .. verb
    for _, subj in ipairs { p, p .. "." .. svc.name, p .. "." .. svc.name .. "." .. svc.id } do
      local sub, err = conn:subscribe(subj, nil, 0, answer)
      if not sub then
        M.stop(i)
        return ("Could not subscribe the Service API subject '%s': %s"):format(subj, tostring(err))
      end
      subs[#subs + 1] = sub
    end
  end
  return nil
end

-- Stops answering (close: a closing instance is no longer a service).
function M.stop(i)
  local subs = i.micro_subs
  if not subs then return end
  i.micro_subs = false
  for _, s in ipairs(subs) do s:unsubscribe() end
end

-- hemera:reset(): every endpoint's counters back to zero, and `started`
-- now (as nats.go's Reset does).
function M.reset(i)
  for _, t in pairs(i.topics) do
    if t.ep then t.ep:reset() end
  end
  if i.micro then i.micro.started = core.now() end
end

-- }==================================================================

return M
