-- hemera.durable: durable work over JetStream (docs/api.md, "Durable work").
--
--   hemera:add({ topic = "orders", cmd = "create",
--                ["durable$"] = { stream = "ORDERS", consumer = "order-workers" } }, handler)
--   hemera:act{ topic = "orders", cmd = "create", ..., ["durable$"] = true }
--   for item, err in hemera:replay{ stream = "ORDERS", from_seq = 1 } do ... end
--   local kv = hemera:kv("state"); kv:put("k", "v"); kv:get("k"); kv:watch(">", fn)
--
-- How the loop stays free: nothing here calls cnats' js_* functions (they
-- block on request/response). Every JetStream API call is an ordinary
-- asynchronous request on the connection's request multiplexer (JSON to
-- `$JS.API.*`), a durable act is one more such request with the
-- Nats-Msg-Id header (core.js_request), and consumers are pull consumers
-- read through a plain subscription on a private inbox: the pull request
-- (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`) names that inbox as
-- its reply subject, JetStream delivers the messages there with their
-- own subjects and its ack subject as reply subject. Each message then
-- runs in its own coroutine like any request, and the ack (`+ACK`, with a
-- reply so that it is confirmed), the nak with delay, the progress (`+WPI`)
-- and the termination (`+TERM`) are plain publishes to that ack subject.
--
-- The stored message is the JSON envelope a plain act sends (built by
-- core.act_payload, request type "request"), published to
-- `hemera.durable.<topic>`, never to the topic itself: a stream on the
-- topic would capture plain requests and answer them with publish acks.

local core = require "hemera.core"
local errors = require "hemera.errors"
local util = require "hemera.util"
local wire = require "hemera.wire"
local server = require "hemera.server"
local client = require "hemera.client"

local M = {}

local encode, decode, spawn, hrtime, nuid = core.encode, core.decode, core.spawn, core.hrtime, core.nuid
local future = core.future
local js_request, js_msg, act_payload = core.js_request, core.js_msg, core.act_payload
local run_hooks = util.run_hooks

M.PREFIX = "hemera.durable."
local API_TIMEOUT = 5000 -- ms for one JetStream API call
local ATTEMPT_MS = 1000  -- ms one publish attempt of a durable act waits for its ack
local MS = 1000000       -- nanoseconds in a millisecond (JetStream durations)

local function hemera_error(msg, fields, level)
  error(errors.HemeraError(msg, fields), (level or 1) + 1)
end

-- The subject durable acts of `topic` are published to.
function M.subject(topic) return M.PREFIX .. topic end

-- The instance's durable state, made on first use.
local function state(i)
  local d = i.durable
  if not d then
    d = { consumers = {}, readers = {},
          stats = { acked = 0, nacked = 0, terminated = 0, ack_unconfirmed = 0, ack_late = 0, progress = 0,
                    redelivered = 0, lost_pulls = 0, published = 0, duplicates = 0, retries = 0 } }
    i.durable = d
  end
  return d
end

-- hemera.durable.stats(hemera) -> counters of this instance: acked, nacked,
-- terminated, ack_unconfirmed, ack_late, progress, redelivered, lost_pulls
-- (worker side); published, duplicates, retries (producer side).
function M.stats(hemera) return util.copy(state(hemera._i).stats) end

-- {==================================================================
-- JetStream API over plain requests
-- ===================================================================

-- One `$JS.API.<what>` request. Returns the decoded response, or nil, a
-- message and the API error table (code, err_code, description) if any.
local function api(i, what, body)
  local conn = i.conn
  if not conn or conn:is_closed() then return nil, "the connection is closed" end
  local data, st, code = conn:request("$JS.API." .. what, body and encode(body) or "", API_TIMEOUT)
  if code == "HM_TIMEOUT" then
    return nil, ("JetStream did not answer %s within %d ms (does the server run with JetStream, -js?)")
      :format(what, API_TIMEOUT)
  elseif data == nil then
    return nil, ("JetStream request %s failed: %s"):format(what, tostring(st))
  end
  local ok, r = pcall(decode, data)
  if not ok or type(r) ~= "table" then
    return nil, ("JetStream answered %s with something else than a JSON object: %.200s"):format(what, data)
  end
  if type(r.error) == "table" then
    return nil, tostring(r.error.description or "error " .. tostring(r.error.code)), r.error
  end
  return r
end
M.api = api

local NAME_OK = "^[%w_%-]+$"

local function check_name(v, field, level)
  if type(v) ~= "string" or not v:match(NAME_OK) then
    hemera_error(("Invalid durable$ option '%s': expected a name of letters, digits, '_' and '-', got %s")
      :format(field, type(v) == "string" and ("%q"):format(v:sub(1, 64)) or type(v)), { option = field }, level + 1)
  end
end

-- }==================================================================

-- {==================================================================
-- Options of durable$ on add
-- ===================================================================

-- option -> { kind, JetStream stream config key (and the factor to it) }
local STREAM_OPTS = {
  retention = { "enum", "retention", values = { limits = true, workqueue = true, interest = true } },
  storage = { "enum", "storage", values = { file = true, memory = true } },
  maxMsgs = { "int", "max_msgs" },
  maxBytes = { "int", "max_bytes" },
  maxAge = { "int", "max_age", factor = MS },
  replicas = { "int", "num_replicas" },
  duplicateWindow = { "int", "duplicate_window", factor = MS },
}
local CONSUMER_OPTS = {
  stream = true, consumer = true, create = true, subjects = true,
  maxDeliver = true, backoff = true, ackWait = true, concurrency = true, pullExpires = true,
}

local function int_opt(d, k, default, min, level)
  local v = d[k]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < min then
    hemera_error(("Invalid durable$ option '%s': expected an integer >= %d, got %s")
      :format(k, min, tostring(v)), { option = k }, level + 1)
  end
  return v
end

-- Checks add's durable$ (level: the caller's caller) and returns the
-- normalized settings.
function M.check_add(scope, p, level)
  level = level + 1
  local d = p["durable$"]
  if type(d) ~= "table" then
    hemera_error("durable$ on add must be a table with at least a stream name, got " .. type(d),
      { topic = p.topic }, level)
  end
  if p["pubsub$"] or p["maxMessages$"] ~= nil then
    hemera_error("durable$ cannot go with pubsub$ or maxMessages$ (a durable action is a work queue)",
      { topic = p.topic }, level)
  end
  for k in pairs(d) do
    if not CONSUMER_OPTS[k] and not STREAM_OPTS[k] then
      hemera_error(("Unknown durable$ option '%s'"):format(tostring(k)), { option = k }, level)
    end
  end
  check_name(d.stream, "stream", level)
  local consumer = d.consumer
  if consumer == nil then consumer = "hemera-" .. p.topic:gsub("[^%w_%-]", "_") end
  check_name(consumer, "consumer", level)
  local cfg = {
    topic = p.topic, stream = d.stream, consumer = consumer, subject = M.subject(p.topic),
    create = d.create ~= false, stream_opts = {},
  }
  if d.subjects ~= nil then
    if type(d.subjects) ~= "table" or #d.subjects == 0 then
      hemera_error("Invalid durable$ option 'subjects': expected a list of subjects", { option = "subjects" }, level)
    end
    for k, s in ipairs(d.subjects) do
      local ok, err = core.subject_check(tostring(s), "subscribe", "subjects[" .. k .. "]")
      if not ok then hemera_error("Invalid durable$ option 'subjects': " .. err, { option = "subjects" }, level) end
    end
    cfg.subjects = d.subjects
  end
  for k, spec in pairs(STREAM_OPTS) do
    local v = d[k]
    if v ~= nil then
      if spec[1] == "enum" and not spec.values[v] then
        local names = {}
        for name in pairs(spec.values) do names[#names + 1] = name end
        table.sort(names)
        hemera_error(("Invalid durable$ option '%s': expected one of %s, got %s")
          :format(k, table.concat(names, ", "), tostring(v)), { option = k }, level)
      elseif spec[1] == "int" then
        int_opt(d, k, nil, k == "replicas" and 1 or -1, level)
      end
      cfg.stream_opts[k] = v
    end
  end
  local timeout = scope._i.config.timeout
  cfg.maxDeliver = int_opt(d, "maxDeliver", 5, 1, level)
  cfg.ackWait = int_opt(d, "ackWait", math.max(30000, 2 * timeout), 1, level)
  if cfg.ackWait <= timeout then
    hemera_error(("Invalid durable$ option 'ackWait': %d ms must be longer than the handler's timeout (%d ms): "
      .. "JetStream would deliver the message again while it runs"):format(cfg.ackWait, timeout),
      { option = "ackWait" }, level)
  end
  cfg.concurrency = int_opt(d, "concurrency", math.min(64, math.max(1, scope._i.config.maxConcurrency)), 1, level)
  cfg.pullExpires = int_opt(d, "pullExpires", 5000, 100, level)
  local backoff = d.backoff
  if backoff == nil then backoff = { 1000 } end
  if type(backoff) == "number" then backoff = { backoff } end
  if type(backoff) ~= "table" or #backoff == 0 then
    hemera_error("Invalid durable$ option 'backoff': expected ms or a list of ms", { option = "backoff" }, level)
  end
  for k, v in ipairs(backoff) do
    if math.type(v) ~= "integer" or v < 0 then
      hemera_error(("Invalid durable$ option 'backoff': [%d] must be an integer >= 0 (ms), got %s")
        :format(k, tostring(v)), { option = "backoff" }, level)
    end
  end
  cfg.backoff = backoff
  return cfg
end

-- }==================================================================

-- {==================================================================
-- Streams and consumers
-- ===================================================================

-- Whether NATS subject pattern `pat` (with * and >) takes subject `s`.
local function subject_matches(pat, s)
  local pt, st = {}, {}
  for tok in pat:gmatch("[^.]+") do pt[#pt + 1] = tok end
  for tok in s:gmatch("[^.]+") do st[#st + 1] = tok end
  for k = 1, #pt do
    if pt[k] == ">" then return #st >= k end
    if st[k] == nil or (pt[k] ~= "*" and pt[k] ~= st[k]) then return false end
  end
  return #pt == #st
end
M.subject_matches = subject_matches

local function list_text(l)
  local out = {}
  for k, v in ipairs(l or {}) do out[k] = ("%q"):format(tostring(v)) end
  return "[" .. table.concat(out, ", ") .. "]"
end

-- The stream config JetStream is asked to create.
local function stream_config(cfg)
  local sc = { name = cfg.stream, subjects = core.array(util.copy(cfg.subjects or { cfg.subject })) }
  for k, v in pairs(cfg.stream_opts) do
    local spec = STREAM_OPTS[k]
    sc[spec[2]] = spec.factor and v * spec.factor or v
  end
  return sc
end

-- What differs between the stream's config and the options given (only
-- those: an option left out is whatever the stream has). Empty when none.
local function differences(cfg, have)
  local diffs = {}
  if cfg.subjects then
    local want, got = {}, {}
    for _, s in ipairs(cfg.subjects) do want[s] = true end
    for _, s in ipairs(have.subjects or {}) do got[s] = true end
    local same = true
    for s in pairs(want) do if not got[s] then same = false end end
    for s in pairs(got) do if not want[s] then same = false end end
    if not same then
      diffs[#diffs + 1] = ("subjects is %s there, %s here"):format(list_text(have.subjects), list_text(cfg.subjects))
    end
  end
  local keys = {}
  for k in pairs(cfg.stream_opts) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local spec, v = STREAM_OPTS[k], cfg.stream_opts[k]
    local want = spec.factor and v * spec.factor or v
    local got = have[spec[2]]
    if got ~= want then
      local function show(x)
        if spec.factor and math.type(x) == "integer" then return ("%d ms"):format(x // spec.factor) end
        return type(x) == "string" and ("%q"):format(x) or tostring(x)
      end
      diffs[#diffs + 1] = ("%s (%s) is %s there, %s here"):format(k, spec[2], show(got), show(want))
    end
  end
  local covered = false
  for _, s in ipairs(have.subjects or {}) do
    if subject_matches(s, cfg.subject) then covered = true end
  end
  if not covered then
    diffs[#diffs + 1] = ("its subjects %s do not take %q, where durable acts of topic %q go")
      :format(list_text(have.subjects), cfg.subject, cfg.topic)
  end
  return diffs
end

-- Creates the stream when missing (cfg.create), else checks it against
-- the options given. Raises a HemeraError naming every difference.
local function ensure_stream(i, cfg)
  local info, err, jerr = api(i, "STREAM.INFO." .. cfg.stream)
  if not info then
    if not (jerr and jerr.code == 404) then
      hemera_error(("Durable stream %q: %s"):format(cfg.stream, err), { stream = cfg.stream }, 2)
    end
    if not cfg.create then
      hemera_error(("Durable stream %q does not exist, and durable$.create is false"):format(cfg.stream),
        { stream = cfg.stream }, 2)
    end
    local _, cerr = api(i, "STREAM.CREATE." .. cfg.stream, stream_config(cfg))
    if cerr then
      hemera_error(("Durable stream %q could not be created: %s"):format(cfg.stream, cerr), { stream = cfg.stream }, 2)
    end
    return
  end
  local diffs = differences(cfg, info.config or {})
  if diffs[1] then
    hemera_error(("Durable stream %q exists with another config (it is left as it is): %s")
      :format(cfg.stream, table.concat(diffs, "; ")), { stream = cfg.stream, differences = diffs }, 2)
  end
end

local function ensure_consumer(i, cfg)
  local _, err = api(i, ("CONSUMER.DURABLE.CREATE.%s.%s"):format(cfg.stream, cfg.consumer), {
    stream_name = cfg.stream,
    config = {
      durable_name = cfg.consumer, deliver_policy = "all", ack_policy = "explicit",
      ack_wait = cfg.ackWait * MS, max_deliver = cfg.maxDeliver, filter_subject = cfg.subject,
      max_ack_pending = math.max(1000, cfg.concurrency * 16), replay_policy = "instant",
    },
  })
  if err then
    hemera_error(("Durable consumer %q on stream %q: %s"):format(cfg.consumer, cfg.stream, err),
      { stream = cfg.stream, consumer = cfg.consumer }, 2)
  end
end

-- }==================================================================

-- {==================================================================
-- Pulling: one subscription on a private inbox per reader, one pull
-- request at a time
-- ===================================================================

-- Delivery metadata from the ack subject:
-- $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>,
-- or the longer form with domain and account hash (and a random token).
local function parse_ack(reply)
  local t, n = {}, 0
  for tok in reply:gmatch("[^.]+") do n = n + 1; t[n] = tok end
  local b
  if n == 9 then b = 3 elseif n >= 11 then b = 5 else return nil end
  if t[1] ~= "$JS" or t[2] ~= "ACK" then return nil end
  local ts = math.tointeger(tonumber(t[b + 5]))
  return {
    stream = t[b], consumer = t[b + 1], count = math.tointeger(tonumber(t[b + 2])),
    stream_seq = math.tointeger(tonumber(t[b + 3])), consumer_seq = math.tointeger(tonumber(t[b + 4])),
    timestamp = ts, time = ts and ts / 1e6, pending = math.tointeger(tonumber(t[b + 6])),
  }
end
M.parse_ack = parse_ack

-- A reader pulls from stream/consumer into on_msg(subject, reply, data)
-- (each in its own coroutine) while it has room: r.room() says how many
-- more it takes now. r:stop() ends it.
local Reader = {}
Reader.__index = Reader

local function wake(f, ...)
  if f and not f:is_set() then f:set(...) end
end

function Reader:stop()
  if self.stopped then return end
  self.stopped = true
  if self.sub then self.sub:unsubscribe(); self.sub = nil end
  wake(self.slot)
  wake(self.pull_end)
  self.d.readers[self] = nil
end

-- A message or a status (no reply subject) arrived on the inbox.
function Reader:_arrived(subject, reply, data)
  if reply == nil then
    -- A status (408 the pull expired, 409 it was refused or cut): the
    -- pull named in the subject is over.
    if subject == self.inbox .. "." .. self.gen then wake(self.pull_end, "status") end
    return false
  end
  if self.pending > 0 then
    self.pending = self.pending - 1
    if self.pending == 0 then wake(self.pull_end, "full") end
  end
  return true
end

-- A handler finished: a pull may go out.
function Reader:freed() wake(self.slot) end

function Reader:_loop()
  local i, conn = self.i, self.i.conn
  local quick = 0
  while not self.stopped and not i.closing and not conn:is_closed() do
    local n = self.room()
    if n <= 0 then
      self.slot = future()
      self.slot:wait()
      self.slot = nil
    else
      self.gen = self.gen + 1
      self.pending = n
      self.pull_end = future()
      local body = { batch = n, expires = self.expires * MS }
      if self.no_wait then body.no_wait = true end
      local ok = conn:publish(self.next_subject, encode(body), self.inbox .. "." .. self.gen)
      local started = hrtime()
      local how = ok and self.pull_end:wait(self.expires + 1000)
      self.pull_end = nil
      self.pending = 0
      if not ok or how == nil then
        -- The pull went to a server that is gone (a restart) or JetStream
        -- is not back yet: pull again.
        self.d.stats.lost_pulls = self.d.stats.lost_pulls + 1
        if self.on_idle and self.on_idle("lost") then break end
      elseif how == "status" then
        if self.on_idle and self.on_idle("status") then break end
        -- A pull refused at once (409, e.g. too many waiting pulls) must
        -- not spin: the usual end is the expiry, a whole `expires` later.
        if hrtime() - started < self.expires / 2 then
          quick = math.min(quick + 1, 5)
          local pause = future()
          self.slot = pause
          pause:wait(100 * quick)
          self.slot = nil
        else
          quick = 0
        end
      end
    end
  end
end

-- new_reader(i, stream, consumer, opts): opts.room() -> n, opts.on_msg,
-- opts.expires (ms), opts.no_wait, opts.on_idle(why) -> true to stop.
local function new_reader(i, stream, consumer, opts)
  local d = state(i)
  local r = setmetatable({
    i = i, d = d, room = opts.room, expires = opts.expires, no_wait = opts.no_wait, on_idle = opts.on_idle,
    next_subject = ("$JS.API.CONSUMER.MSG.NEXT.%s.%s"):format(stream, consumer),
    inbox = "_INBOX." .. nuid() .. ".pull", gen = 0, pending = 0,
  }, Reader)
  local on_msg = opts.on_msg
  local sub, err = i.conn:subscribe(r.inbox .. ".*", nil, 0, function(subject, reply, data)
    if r:_arrived(subject, reply, data) and not r.stopped then
      on_msg(subject, reply, data)
    else
      i.conn:done() -- the delivery credit of a status or a late message
      if reply and r.stopped and opts.on_late then opts.on_late(reply) end
    end
  end)
  if not sub then return nil, err end
  r.sub = sub
  d.readers[r] = true
  return r
end

-- }==================================================================

-- {==================================================================
-- Durable actions
-- ===================================================================

-- Sends +WPI for every message running longer than a third of ackWait,
-- while any runs.
local function progress(c)
  local i, every = c.i, c.cfg.ackWait // 3
  while c.inflight > 0 and not c.stopped do
    c.tick = future()
    c.tick:wait(every)
    c.tick = nil
    local conn = i.conn
    if conn:is_closed() then break end
    local now = hrtime()
    for e in pairs(c.running) do
      if now - e.last >= every then
        e.last = now
        conn:publish(e.reply, "+WPI")
        c.d.stats.progress = c.d.stats.progress + 1
      end
    end
  end
  c.ticking = false
end

-- One stored message: the usual request path (server.serve: validators,
-- hooks, middleware, handler, error hooks), then the ack or the nak.
local function handle(c, subject, reply, data)
  local i, d, cfg = c.i, c.d, c.cfg
  local conn = i.conn
  local delivery = parse_ack(reply)
  if not delivery or i.closing then
    -- Not ours to run now: back to the stream for another worker.
    conn:publish(reply, "-NAK")
    conn:done()
    return
  end
  delivery.subject = subject
  if delivery.count > 1 then d.stats.redelivered = d.stats.redelivered + 1 end
  local t = i.topics[c.topic]
  if not t then
    -- The topic was removed: nobody here can run it.
    conn:publish(reply, "-NAK")
    conn:done()
    return
  end
  -- last: when JetStream's ack timer last (re)started, as far as we know.
  local e = { reply = reply, last = hrtime() }
  c.running[e] = true
  c.inflight = c.inflight + 1
  -- Counted as running until the ack is out: close waits for it.
  i.inflight = i.inflight + 1
  if not c.ticking then
    c.ticking = true
    spawn(progress, c)
  end
  local owner = t.owner
  local ctx = setmetatable({ topic = c.topic, _msg = js_msg(data), delivery = delivery }, server.context_mt(owner))
  server.serve(owner, t, ctx)
  local r = ctx.reply
  local failed = r == nil or r.error ~= nil
  c.running[e] = nil
  if not conn:is_closed() then
    if not failed then
      -- Acked with a reply: JetStream confirms it has the ack, so a
      -- message whose ack got lost (a server restart) is known.
      local confirmed, st = conn:request(reply, "+ACK", API_TIMEOUT)
      if not confirmed then
        d.stats.ack_unconfirmed = d.stats.ack_unconfirmed + 1
        owner.log:warn("Durable ack not confirmed: the message may run again",
          { topic = c.topic, stream = delivery.stream, seq = delivery.stream_seq, error = st })
      elseif hrtime() - e.last > cfg.ackWait / 2 then
        -- JetStream's ack timer (re)started before the message got here or
        -- at the last progress: an ack confirmed this late may have lost
        -- the race with a redelivery to another worker.
        d.stats.acked = d.stats.acked + 1
        d.stats.ack_late = d.stats.ack_late + 1
        owner.log:warn("Durable ack confirmed late: the message may run again",
          { topic = c.topic, stream = delivery.stream, seq = delivery.stream_seq,
            ms = math.floor(hrtime() - e.last), ackWait = cfg.ackWait })
      else
        d.stats.acked = d.stats.acked + 1
        local log = owner.log
        if log:enabled("trace") then
          log:trace("Durable message acked", { topic = c.topic, stream = delivery.stream, seq = delivery.stream_seq,
                                               count = delivery.count })
        end
      end
    elseif delivery.count >= cfg.maxDeliver then
      -- Confirmed like an ack: once logged, JetStream has let it go.
      local confirmed, st = conn:request(reply, "+TERM", API_TIMEOUT)
      if not confirmed then
        owner.log:warn("Durable termination not confirmed", { topic = c.topic, seq = delivery.stream_seq, error = st })
      end
      d.stats.terminated = d.stats.terminated + 1
      owner.log:error(("Durable message terminated after %d attempts"):format(delivery.count),
        { topic = c.topic, stream = delivery.stream, seq = delivery.stream_seq, error = r and r.error })
    else
      local b = cfg.backoff
      local delay = b[math.min(delivery.count, #b)]
      conn:publish(reply, "-NAK " .. encode { delay = delay * MS })
      d.stats.nacked = d.stats.nacked + 1
      owner.log:warn(("Durable handler failed (attempt %d of %d), to run again in %d ms")
        :format(delivery.count, cfg.maxDeliver, delay),
        { topic = c.topic, stream = delivery.stream, seq = delivery.stream_seq, error = r and r.error })
    end
  end
  c.inflight = c.inflight - 1
  if c.inflight == 0 then wake(c.tick) end
  if c.reader then c.reader:freed() end
  util.served(i)
end

local function start_consumer(c)
  local i = c.i
  ensure_stream(i, c.cfg)
  ensure_consumer(i, c.cfg)
  if c.stopped or i.closing then return end
  local cfg = c.cfg
  local half = math.max(1, cfg.concurrency // 2)
  local reader, err = new_reader(i, cfg.stream, cfg.consumer, {
    expires = cfg.pullExpires,
    -- Pull when half the slots are free (or all): one pull per message
    -- would cost a round trip each.
    room = function()
      local free = cfg.concurrency - c.inflight
      if free >= half or c.inflight == 0 then return free end
      return 0
    end,
    on_msg = function(subject, reply, data) handle(c, subject, reply, data) end,
    on_late = function(reply) i.conn:publish(reply, "-NAK") end,
  })
  if not reader then
    hemera_error(("Durable consumer %q: could not subscribe its inbox: %s"):format(cfg.consumer, tostring(err)), nil, 2)
  end
  c.reader = reader
  spawn(function() reader:_loop() end)
end

local function stop_all(i)
  local d = i.durable
  if not d then return end
  for _, c in pairs(d.consumers) do
    c.stopped = true
    wake(c.tick)
  end
  for r in pairs(d.readers) do r:stop() end
end

local function hook_close(i)
  local d = state(i)
  if d.hooked then return end
  d.hooked = true
  i.root:ext("onClose", function() stop_all(i) end)
end

-- Called by hemera:add for a pattern with durable$ (cfg from check_add),
-- once the topic t exists. Binds now when connected, else when ready()
-- loads the plugins (a stream or consumer error then fails ready).
function M.add(scope, t, cfg, level)
  local i = scope._i
  local d = state(i)
  local c = d.consumers[t.topic]
  if c then
    local o = c.cfg
    if o.stream ~= cfg.stream or o.consumer ~= cfg.consumer then
      hemera_error(("Topic %q is already durable on stream %q, consumer %q"):format(t.topic, o.stream, o.consumer),
        { topic = t.topic }, level + 1)
    end
    return c
  end
  c = { i = i, d = d, cfg = cfg, topic = t.topic, inflight = 0, running = {} }
  d.consumers[t.topic] = c
  hook_close(i)
  local function bind()
    local ok, err = pcall(start_consumer, c)
    if not ok then
      d.consumers[t.topic] = nil
      error(err, 0)
    end
  end
  if i.conn and i.plugins_loaded then
    spawn(function()
      local ok, err = pcall(bind)
      if not ok then scope.log:error("Durable action could not bind", { error = err, topic = t.topic }) end
    end)
  else
    scope:after(bind)
  end
  return c
end

-- }==================================================================

-- {==================================================================
-- Durable acts
-- ===================================================================

local function encode_act(self, actx, p)
  local enc = self._clientEncoder
  if not enc or enc == core.encode then
    local payload, err = act_payload(actx, p, self.meta, actx.method, actx._rid, actx._sid, actx._tid,
                                     actx._psid, actx._ts, false)
    if payload == nil then return nil, errors.ParseError("Client payload encoding: " .. tostring(err)) end
    return payload
  end
  local env = setmetatable({ pattern = actx.pattern, meta = actx.meta, delegate = actx.delegate,
                             trace = actx.trace, request = actx.request }, wire.REQUEST_MT)
  local ok, payload, err = util.codec_call(enc, core.encode, env)
  if not ok or payload == nil then return nil, util.codec_error("Client payload encoding", ok, payload, err) end
  return payload
end

-- Publishes until JetStream acks (retrying with the same Nats-Msg-Id,
-- which the stream's duplicate window removes) or the act's timeout.
local function durable_act(self, p)
  local i = self._i
  local d = state(i)
  local dopt = p["durable$"]
  local expect
  if type(dopt) == "table" then
    for k in pairs(dopt) do
      if k ~= "stream" then hemera_error(("Unknown durable$ option on act '%s'"):format(tostring(k)), nil, 3) end
    end
    if dopt.stream ~= nil then check_name(dopt.stream, "stream", 3) end
    expect = dopt.stream
  elseif dopt ~= true then
    hemera_error("durable$ on act must be true or {stream = name}, got " .. tostring(dopt), nil, 3)
  end
  if p["pubsub$"] or p["maxMessages$"] ~= nil or p["expectedMessages$"] ~= nil then
    hemera_error("durable$ cannot go with pubsub$, maxMessages$ or expectedMessages$", nil, 3)
  end
  local actx, perr = client.prepare(self, p)
  if perr then return nil, perr, actx end
  local on_act = self._ext.onAct
  local herr = on_act[1] and run_hooks(on_act, actx)
  if herr then return nil, herr, actx end
  local payload, eerr = encode_act(self, actx, p)
  if not payload then return nil, eerr, actx end
  local subject = M.subject(p.topic)
  local hdrs = { ["Nats-Msg-Id"] = actx._rid, ["Nats-Expected-Stream"] = expect }
  local timeout = p["timeout$"] or i.config.timeout
  local deadline = hrtime() + timeout
  local result, err
  local attempts = 0
  while true do
    attempts = attempts + 1
    local left = math.floor(deadline - hrtime())
    local st, data, status = js_request(i.conn, subject, payload, hdrs, math.max(1, math.min(left, ATTEMPT_MS)))
    if st == nil and status == nil then
      local ok, ack = pcall(decode, data)
      if not ok or type(ack) ~= "table" then
        err = errors.HemeraError("JetStream answered a durable act with something else than a publish ack: "
          .. tostring(data):sub(1, 200), { topic = p.topic })
      elseif type(ack.error) == "table" then
        err = errors.HemeraError("JetStream did not store the durable act: " .. tostring(ack.error.description),
          { topic = p.topic, code = ack.error.err_code, subject = subject })
      else
        result = { stream = ack.stream, seq = ack.seq, duplicate = ack.duplicate == true }
        d.stats.published = d.stats.published + 1
        if result.duplicate then d.stats.duplicates = d.stats.duplicates + 1 end
      end
      break
    elseif st == "timeout" or status ~= nil then
      -- No ack in time (a restart, or no stream for the subject), or no
      -- responders: again, with the same message id.
      if deadline - hrtime() < 1 then
        err = errors.TimeoutError(("No publish ack from JetStream within %d ms (%d attempts): is there a stream "
          .. "taking subject %q?"):format(timeout, attempts, subject), { topic = p.topic, subject = subject })
        break
      end
      d.stats.retries = d.stats.retries + 1
      if status ~= nil then
        local pause = future()
        pause:wait(math.max(1, math.min(100, math.floor(deadline - hrtime()))))
      end
    elseif st == "closed" then
      err = errors.HemeraError("NATS connection closed before the publish ack", { topic = p.topic, code = st })
      break
    else
      err = errors.HemeraError("Durable act could not be sent: " .. tostring(data), { topic = p.topic })
      break
    end
  end
  if err ~= nil then actx.responseError = err end
  local finished = self._ext.onActFinished
  local ferr = finished[1] and run_hooks(finished, actx)
  if ferr then return nil, ferr, actx end
  return result, err, actx
end

-- hemera:act with durable$: result {stream, seq, duplicate}, err, ctx.
function M.act(self, p, cb)
  if cb then
    local actx
    spawn(function()
      local result, err, a = durable_act(self, p)
      actx = a
      cb(err, result, a)
    end)
    return actx
  end
  return durable_act(self, p)
end

-- }==================================================================

-- {==================================================================
-- Replay
-- ===================================================================

-- RFC 3339 text from ns since the epoch (an integer: exact).
local function rfc3339_ns(ns)
  return os.date("!%Y-%m-%dT%H:%M:%S", ns // 1000000000) .. (".%09dZ"):format(ns % 1000000000)
end

-- RFC 3339 from ms since the epoch (a double: to the microsecond, rounded
-- down so that a message stamped at `ms` is in). A double near 1.7e12 ms
-- is only good to about 0.13 us, so ms * 1000 can land just past the
-- stamp's microsecond: a quarter microsecond off first keeps the start at
-- or before the stamp (and at most ~1.4 us before it).
local function rfc3339(ms)
  return rfc3339_ns(math.floor(ms * 1000 - 0.25) * 1000)
end
M.rfc3339, M.rfc3339_ns = rfc3339, rfc3339_ns

-- An ephemeral consumer with no acks; returns its name and how many
-- messages it has to give.
local function ephemeral(i, stream, config, level)
  config.ack_policy = "none"
  config.replay_policy = "instant"
  config.inactive_threshold = 30000 * MS
  config.mem_storage = true
  local info, err = api(i, "CONSUMER.CREATE." .. stream, { stream_name = stream, config = config })
  if not info then
    hemera_error(("Replay of stream %q: %s"):format(stream, err), { stream = stream }, level + 1)
  end
  return info.name, info.num_pending or 0
end

-- hemera:replay{stream, from_seq | from_time, filter, batch}: see docs.
function M.replay(self, opts)
  local i = self._i
  if type(opts) ~= "table" then hemera_error("replay needs a table {stream, from_seq | from_time, filter}", nil, 2) end
  for k in pairs(opts) do
    if k ~= "stream" and k ~= "from_seq" and k ~= "from_time" and k ~= "filter" and k ~= "batch" then
      hemera_error(("Unknown replay option '%s'"):format(tostring(k)), { option = k }, 2)
    end
  end
  check_name(opts.stream, "stream", 2)
  if not i.conn then hemera_error("Not connected: call hemera:ready() first", nil, 2) end
  if not core.in_coroutine() then hemera_error("replay must run in a Hemera coroutine", nil, 2) end
  local config = {}
  if opts.from_seq ~= nil and opts.from_time ~= nil then
    hemera_error("replay takes from_seq or from_time, not both", nil, 2)
  elseif opts.from_seq ~= nil then
    if math.type(opts.from_seq) ~= "integer" or opts.from_seq < 1 then
      hemera_error("Invalid replay option 'from_seq': expected an integer >= 1, got " .. tostring(opts.from_seq),
        { option = "from_seq" }, 2)
    end
    config.deliver_policy = "by_start_sequence"
    config.opt_start_seq = opts.from_seq
  elseif opts.from_time ~= nil then
    local t = opts.from_time
    if type(t) == "number" then t = rfc3339(t)
    elseif type(t) ~= "string" then
      hemera_error("Invalid replay option 'from_time': expected ms since the epoch or an RFC 3339 string, got "
        .. type(t), { option = "from_time" }, 2)
    end
    config.deliver_policy = "by_start_time"
    config.opt_start_time = t
  else
    config.deliver_policy = "all"
  end
  if opts.filter ~= nil then
    if type(opts.filter) ~= "string" then
      hemera_error("Invalid replay option 'filter': expected a subject or a topic, got " .. type(opts.filter),
        { option = "filter" }, 2)
    end
    -- A topic means its durable acts' subject.
    local f = opts.filter
    if f:sub(1, #M.PREFIX) ~= M.PREFIX and f:sub(1, 4) ~= "$KV." then f = M.subject(f) end
    local ok, err = core.subject_check(f, "subscribe", "filter")
    if not ok then hemera_error("Invalid replay option 'filter': " .. err, { option = "filter" }, 2) end
    config.filter_subject = f
  end
  local batch = opts.batch or 256
  local stream = opts.stream
  local name, total = ephemeral(i, stream, config, 2)
  local items, head, tail = {}, 1, 0
  local given, finished, waiter = 0, total == 0, nil
  local reader
  local function push(item)
    tail = tail + 1
    items[tail] = item
    if waiter then local w = waiter; waiter = nil; w:set() end
  end
  local function finish(item)
    if finished then return end
    finished = true
    if item then push(item) elseif waiter then local w = waiter; waiter = nil; w:set() end
    if reader then reader:stop() end
    spawn(api, i, ("CONSUMER.DELETE.%s.%s"):format(stream, name))
  end
  if not finished then
    local rerr
    reader, rerr = new_reader(i, stream, name, {
      expires = 2000,
      room = function()
        local want = total - given
        return want < batch and want or batch
      end,
      on_msg = function(subject, reply, data)
        i.conn:done()
        if finished then return end
        local m = parse_ack(reply) or {}
        given = given + 1
        push({ seq = m.stream_seq, time = m.time, timestamp = m.timestamp,
               rfc3339 = m.timestamp and rfc3339_ns(m.timestamp), subject = subject, data = data,
               topic = subject:sub(1, #M.PREFIX) == M.PREFIX and subject:sub(#M.PREFIX + 1) or nil })
        if given >= total then finish() end
      end,
      on_idle = function(why)
        -- Every message was there when the replay began: a pull that
        -- ends empty means the rest was deleted meanwhile.
        if why == "status" then finish(); return true end
      end,
    })
    if not reader then hemera_error("Replay could not subscribe its inbox: " .. tostring(rerr), nil, 2) end
    spawn(function() reader:_loop() end)
  else
    spawn(api, i, ("CONSUMER.DELETE.%s.%s"):format(stream, name))
  end
  local function iter()
    while head > tail do
      if finished then return nil end
      waiter = future()
      waiter:wait()
    end
    local item = items[head]
    items[head] = nil
    head = head + 1
    return item
  end
  local closer = setmetatable({}, { __close = function() finish() end })
  return iter, nil, nil, closer
end

-- }==================================================================

-- {==================================================================
-- KV
-- ===================================================================

local KV = {}
KV.__index = KV

local function check_key(key, level)
  if type(key) ~= "string" or key == "" or not key:match("^[%w_%-/=%.]+$") or key:sub(1, 1) == "."
      or key:sub(-1) == "." or key:find("..", 1, true) then
    hemera_error(("Invalid KV key: expected letters, digits and - _ / = . (not at either end), got %s")
      :format(type(key) == "string" and ("%q"):format(key:sub(1, 64)) or type(key)), { key = key }, level + 1)
  end
end

-- kv:put(key, value) -> revision | nil, err
function KV:put(key, value)
  check_key(key, 2)
  if type(value) ~= "string" then
    hemera_error("KV values are strings (encode tables with Hemera.encode), got " .. type(value), { key = key }, 2)
  end
  local data, st = self.i.conn:request(("$KV.%s.%s"):format(self.bucket, key), value, API_TIMEOUT)
  if data == nil then return nil, errors.HemeraError("KV put: " .. tostring(st), { bucket = self.bucket, key = key }) end
  local ok, ack = pcall(decode, data)
  if not ok or type(ack) ~= "table" or ack.error then
    return nil, errors.HemeraError("KV put refused: " .. tostring(ok and type(ack) == "table" and ack.error
      and ack.error.description or data), { bucket = self.bucket, key = key })
  end
  return ack.seq
end

-- kv:get(key) -> value | nil (no such key) | nil, err
function KV:get(key)
  check_key(key, 2)
  local st, data, status = js_request(self.i.conn, ("$JS.API.DIRECT.GET.KV_%s.$KV.%s.%s"):format(self.bucket,
    self.bucket, key), "", nil, API_TIMEOUT)
  if st then return nil, errors.HemeraError("KV get: " .. tostring(st), { bucket = self.bucket, key = key }) end
  if status == 404 then return nil end
  if status ~= nil then
    return nil, errors.HemeraError("KV get: status " .. status, { bucket = self.bucket, key = key })
  end
  return data
end

-- kv:watch(keys, fn) -> watcher: fn(key, value, revision) runs (in a
-- coroutine, in order) for the last value of every matching key, then for
-- each put. keys: a key or a pattern with * and >. watcher:stop().
function KV:watch(keys, fn)
  if type(fn) ~= "function" then hemera_error("kv:watch needs a function", nil, 2) end
  local i = self.i
  local filter = ("$KV.%s.%s"):format(self.bucket, keys)
  local ok, err = core.subject_check(filter, "subscribe", "keys")
  if not ok then hemera_error("Invalid KV watch keys: " .. err, { keys = keys }, 2) end
  local name = ephemeral(i, "KV_" .. self.bucket, { deliver_policy = "last_per_subject", filter_subject = filter }, 2)
  local prefix = #("$KV." .. self.bucket .. ".") + 1
  local queue, running = {}, false
  local w = {}
  local reader
  reader = new_reader(i, "KV_" .. self.bucket, name, {
    expires = 5000,
    room = function() return 64 end,
    on_msg = function(subject, reply, data)
      i.conn:done()
      local m = parse_ack(reply) or {}
      queue[#queue + 1] = { subject:sub(prefix), data, m.stream_seq }
      if running then return end
      running = true
      -- One coroutine at a time calls fn, so updates keep their order.
      while queue[1] and not w.stopped do
        local u = table.remove(queue, 1)
        local cok, cerr = util.call(fn, u[1], u[2], u[3])
        if not cok then i.root.log:error("KV watch callback", { error = cerr, bucket = self.bucket }) end
      end
      running = false
    end,
  })
  function w.stop()
    if w.stopped then return end
    w.stopped = true
    reader:stop()
    spawn(api, i, ("CONSUMER.DELETE.KV_%s.%s"):format(self.bucket, name))
  end
  spawn(function() reader:_loop() end)
  return setmetatable(w, { __index = { stop = w.stop } })
end

-- hemera:kv(bucket [, {history, maxAge}]) -> kv, creating the bucket when
-- missing. In a Hemera coroutine.
function M.kv(self, bucket, opts)
  local i = self._i
  check_name(bucket, "bucket", 2)
  if not i.conn then hemera_error("Not connected: call hemera:ready() first", nil, 2) end
  if not core.in_coroutine() then hemera_error("kv must run in a Hemera coroutine", nil, 2) end
  opts = opts or {}
  local stream = "KV_" .. bucket
  local info, err, jerr = api(i, "STREAM.INFO." .. stream)
  if not info then
    if not (jerr and jerr.code == 404) then hemera_error(("KV bucket %q: %s"):format(bucket, err), nil, 2) end
    local _, cerr = api(i, "STREAM.CREATE." .. stream, {
      name = stream, subjects = core.array { ("$KV.%s.>"):format(bucket) },
      max_msgs_per_subject = opts.history or 1, max_age = (opts.maxAge or 0) * MS,
      discard = "new", allow_rollup_hdrs = true, deny_delete = true, allow_direct = true,
      num_replicas = 1, storage = "file", max_bytes = -1, max_msgs = -1, max_msg_size = -1,
    })
    if cerr then hemera_error(("KV bucket %q could not be created: %s"):format(bucket, cerr), nil, 2) end
  end
  return setmetatable({ i = i, bucket = bucket }, KV)
end

-- }==================================================================

return M
