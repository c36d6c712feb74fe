-- hemera.cli: the `hemera` interpreter's verbs, in the style of `nats
-- micro` and hemera-cli.
--
--   hemera act PATTERN [--meta] [--stream]   call an action, print the result
--   hemera ls                                 every ADR-32 service on the bus
--   hemera ping [NAME]                        who answers, and how fast
--   hemera stats [NAME [ID]]                  per-endpoint counters
--   hemera watch TOPIC                        print each message of a topic
--   hemera web [--listen HOST:PORT]           an HTTP gateway (hemera.web)
--   hemera --version                          library, Lua, cnats, libuv
--
-- Every verb takes --server URL (else $HEMERA_NATS_URL, else the probe
-- address 127.0.0.1:4222 if it answers, else the interpreter's shared
-- server if one runs; the CLI never starts a server of its own),
-- --timeout MS and --json. Exit status: 0 on success, 1 on an error reply,
-- a timeout or no answer at all (ping, stats), or a connection failure, 2
-- on a usage error.
--
-- A verb wins over a script of the same name: `hemera act` is the verb,
-- `hemera ./act` runs the file named act (interpreter/main.c has the list of
-- verbs that start the CLI: these and --version).
--
-- PATTERN is a JSON object ('{"topic":"math","cmd":"add","a":1}') or
-- Hemera's short form ('topic:math,cmd:add,a:1,b:2'). --timeout is the
-- act's timeout (default 2000 ms); for ls, ping and stats, which cannot
-- know how many services will answer, it is how long to wait after the
-- last answer (default 1000 ms); watch runs until interrupted, or for
-- --timeout ms when given; web runs until interrupted, and --timeout is
-- the timeout of the acts it makes for HTTP requests (default 2000 ms).
local Hemera = require "hemera"
local core = require "hemera.core"
local micro = require "hemera.micro"
local util = require "hemera.util"

local M = {}

local VERBS = { act = true, ls = true, ping = true, stats = true, watch = true, web = true }

local USAGE = [==[
usage: hemera act PATTERN [--meta] [--stream]
       hemera ls
       hemera ping [NAME]
       hemera stats [NAME [ID]]
       hemera watch TOPIC
       hemera web [--listen HOST:PORT]
       hemera --version
options (every verb):
  --server URL   NATS server (else $HEMERA_NATS_URL, else 127.0.0.1:4222 if it
                 answers, else the interpreter's shared server if it runs)
  --timeout MS   act: the request's timeout (2000); ls, ping, stats: how long
                 to wait after the last answer (1000); watch: stop after MS
  --json         print JSON instead of text
web: an HTTP gateway, GET|POST /, /:topic, /:topic/:cmd (hemera-web's routes)
  --listen HOST:PORT  numeric host (default 127.0.0.1:3000; [::1]:3000 for IPv6)
PATTERN: '{"topic":"math","cmd":"add","a":1,"b":2}' or 'topic:math,cmd:add,a:1,b:2'
A verb wins over a script of the same name: run ./act for a file named act.
]==]

local out, err_out = io.stdout, io.stderr

local function say(...) out:write(...) end
local function complain(...) err_out:write("hemera: ", ...) err_out:write("\n") end

-- {==================================================================
-- Arguments
-- ===================================================================

local FLAGS = { json = true, meta = "act", stream = "act" }

-- Returns opts, positional | nil, message.
local function parse(argv)
  local opts, pos = {}, {}
  local k = 1
  while k <= #argv do
    local a = argv[k]
    if a == "--server" or a == "--timeout" or a == "--listen" then
      local v = argv[k + 1]
      if v == nil then return nil, a .. " needs a value" end
      if a == "--listen" then
        if not util.parse_listen(v) then
          return nil, ("--listen needs HOST:PORT with a numeric host and a port from 0 to 65535, got '%s'"):format(v)
        end
        opts.listen = v
      elseif a == "--server" then
        if v == "" then return nil, "--server needs a URL, got ''" end
        opts.server = v
      else
        local n = tonumber(v)
        if not n or n ~= math.floor(n) or n < 1 or n > 3600000 then
          return nil, ("--timeout must be an integer of 1..3600000 ms, got '%s'"):format(v)
        end
        opts.timeout = math.tointeger(n)
      end
      k = k + 2
    elseif a:sub(1, 2) == "--" and FLAGS[a:sub(3)] then
      opts[a:sub(3)] = true
      k = k + 1
    elseif a == "-h" or a == "--help" then
      opts.help = true
      k = k + 1
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, ("unknown option '%s'"):format(a)
    else
      pos[#pos + 1] = a
      k = k + 1
    end
  end
  return opts, pos
end

local function pattern_of(text)
  if text:match("^%s*{") then
    local p, e = Hemera.decode(text)
    if type(p) ~= "table" or getmetatable(p) == core.array_mt then
      return nil, "PATTERN is not a JSON object: " .. tostring(e or text)
    end
    return p
  end
  local ok, p = pcall(Hemera.parsePattern, text)
  if not ok then return nil, tostring(p) end
  return p
end

-- }==================================================================

-- {==================================================================
-- Output helpers
-- ===================================================================

local function json(v) return Hemera.encode(v) end

-- Rows as columns padded to their widest cell.
local function table_text(header, rows)
  local w = {}
  for c, h in ipairs(header) do w[c] = #h end
  for _, r in ipairs(rows) do
    for c, cell in ipairs(r) do w[c] = math.max(w[c], #tostring(cell)) end
  end
  local lines = {}
  local function line(r)
    local cells = {}
    for c = 1, #header do
      local s = tostring(r[c] == nil and "" or r[c])
      cells[c] = c < #header and s .. (" "):rep(w[c] - #s) or s
    end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
  return table.concat(lines, "\n") .. "\n"
end

local function duration(ns)
  if type(ns) ~= "number" then return "-" end
  if ns >= 1e9 then return ("%.2fs"):format(ns / 1e9) end
  if ns >= 1e6 then return ("%.2fms"):format(ns / 1e6) end
  return ("%.1fus"):format(ns / 1e3)
end

local function error_text(e)
  if type(e) ~= "table" then return tostring(e) end
  local s = tostring(e.name or "Error") .. ": " .. tostring(e.message)
  if e.code ~= nil and e.code ~= Hemera.null then s = s .. " (code " .. tostring(e.code) .. ")" end
  return s
end

local function error_wire(e)
  if type(e) ~= "table" then return { name = "Error", message = tostring(e) } end
  return { name = e.name, message = e.message, code = e.code }
end

-- }==================================================================

-- {==================================================================
-- The verbs (each runs in a Hemera coroutine and returns an exit status)
-- ===================================================================

-- Everything an ADR-32 verb subject answers, each decoded, until answers
-- stop for `idle` ms. rtt: ms from the request to each answer.
local function collect(conn, subject, idle)
  local got, done = {}, core.future()
  local t0 = core.hrtime()
  local id, e = conn:request(subject, "", idle, 0, function(_, data, fin)
    if data then
      local v = Hemera.decode(data)
      if type(v) == "table" then
        got[#got + 1] = v
        v._rtt = core.hrtime() - t0
      end
    end
    if fin then done:set(true) end
  end)
  if not id then return nil, e end
  done:wait()
  return got
end

local function by_name_id(a, b)
  if a.name ~= b.name then return tostring(a.name) < tostring(b.name) end
  return tostring(a.id) < tostring(b.id)
end

local function discovery_subject(prefix, verb, name, id)
  local s = prefix .. "." .. verb
  if name then s = s .. "." .. name end
  if id then s = s .. "." .. id end
  return s
end

local verbs = {}

function verbs.act(h, opts, pos)
  if #pos ~= 1 then return nil, "act takes one PATTERN" end
  local p, perr = pattern_of(pos[1])
  if not p then return nil, perr end
  if type(p.topic) ~= "string" or p.topic == "" then return nil, "PATTERN needs a topic" end
  if opts.stream then
    if p["maxMessages$"] == nil then p["maxMessages$"] = -1 end
    local n, failed = 0, false
    for res, e in h:stream(p) do
      if e and Hemera.errors.TimeoutError:is(e) and n > 0 then break end
      n = n + 1
      if e then
        failed = true
        if opts.json then say(json { error = error_wire(e) }, "\n") else complain(error_text(e)) end
        if Hemera.errors.TimeoutError:is(e) then break end
      elseif opts.json then
        say(json { result = res == nil and Hemera.null or res }, "\n")
      else
        say(json(res == nil and Hemera.null or res), "\n")
      end
    end
    return failed and 1 or 0
  end
  local res, e, ctx = h:act(p)
  if opts.json or opts.meta then
    local o = { result = res == nil and Hemera.null or res }
    if e then o.error = error_wire(e) end
    if opts.meta then o.meta = ctx and ctx.meta or {} end
    say(json(o), "\n")
  elseif not e then
    say(json(res == nil and Hemera.null or res), "\n")
  end
  if e then
    if not opts.json and not opts.meta then complain(error_text(e)) end
    return 1
  end
  return 0
end

function verbs.ls(h, opts, pos)
  if #pos ~= 0 then return nil, "ls takes no arguments" end
  local conn, idle = h.transport, opts.timeout or 1000
  local infos = assert(collect(conn, "$SRV.INFO", idle))
  local stats = assert(collect(conn, "$SRV.STATS", idle))
  local st_by = {}
  for _, s in ipairs(stats) do
    if s.type == micro.STATS_TYPE and type(s.id) == "string" then st_by[s.id] = s end
  end
  local list = {}
  for _, info in ipairs(infos) do
    if info.type == micro.INFO_TYPE and type(info.id) == "string" then
      local st = st_by[info.id]
      local counts = {}
      for _, e in ipairs(st and type(st.endpoints) == "table" and st.endpoints or {}) do
        counts[tostring(e.subject) .. "\0" .. tostring(e.name)] = e
      end
      local eps, req, errs = core.array {}, 0, 0
      for k, e in ipairs(type(info.endpoints) == "table" and info.endpoints or {}) do
        local c = counts[tostring(e.subject) .. "\0" .. tostring(e.name)] or {}
        local n, ne = math.tointeger(c.num_requests) or 0, math.tointeger(c.num_errors) or 0
        req, errs = req + n, errs + ne
        eps[k] = { name = e.name, subject = e.subject, queue_group = e.queue_group, metadata = e.metadata,
                   num_requests = n, num_errors = ne, average_processing_time = c.average_processing_time }
      end
      list[#list + 1] = {
        name = info.name, id = info.id, version = info.version, description = info.description,
        metadata = info.metadata, endpoints = eps, requests = req, errors = errs,
      }
    end
  end
  table.sort(list, by_name_id)
  if opts.json then
    say(json(core.array(list)), "\n")
    return 0
  end
  if #list == 0 then
    say("no services answered on ", h.transport and "$SRV.INFO" or "", "\n")
    return 0
  end
  local rows = {}
  for _, s in ipairs(list) do
    local subjects = {}
    for k, e in ipairs(s.endpoints) do
      subjects[k] = tostring(e.subject) .. (e.queue_group and e.queue_group ~= Hemera.null
        and (" (" .. tostring(e.queue_group) .. ")") or "")
    end
    rows[#rows + 1] = { s.name, s.id, s.version, table.concat(subjects, ", "), s.requests, s.errors }
  end
  say(table_text({ "NAME", "ID", "VERSION", "ENDPOINTS", "REQUESTS", "ERRORS" }, rows))
  return 0
end

function verbs.ping(h, opts, pos)
  if #pos > 1 then return nil, "ping takes at most a NAME" end
  local got = assert(collect(h.transport, discovery_subject("$SRV", "PING", pos[1]), opts.timeout or 1000))
  table.sort(got, by_name_id)
  if opts.json then
    local l = core.array {}
    for k, r in ipairs(got) do
      l[k] = { name = r.name, id = r.id, version = r.version, metadata = r.metadata, rtt_ms = r._rtt }
    end
    say(json(l), "\n")
  else
    local rows = {}
    for k, r in ipairs(got) do rows[k] = { r.name, r.id, r.version, ("%.2fms"):format(r._rtt) } end
    if #rows > 0 then say(table_text({ "NAME", "ID", "VERSION", "RTT" }, rows)) end
  end
  if #got == 0 then
    complain("no service answered", pos[1] and (" as '" .. pos[1] .. "'") or "")
    return 1
  end
  return 0
end

function verbs.stats(h, opts, pos)
  if #pos > 2 then return nil, "stats takes at most NAME and ID" end
  local got = assert(collect(h.transport, discovery_subject("$SRV", "STATS", pos[1], pos[2]), opts.timeout or 1000))
  table.sort(got, by_name_id)
  for _, r in ipairs(got) do r._rtt = nil end
  if opts.json then
    say(json(core.array(got)), "\n")
  else
    for _, r in ipairs(got) do
      say(("%s %s (version %s, started %s)\n"):format(tostring(r.name), tostring(r.id), tostring(r.version),
        tostring(r.started)))
      local rows = {}
      for k, e in ipairs(type(r.endpoints) == "table" and r.endpoints or {}) do
        local last = e.last_error
        rows[k] = { e.name, e.subject, e.num_requests, e.num_errors, duration(e.average_processing_time),
                    (last and last ~= Hemera.null and last ~= "") and last or "-" }
      end
      say(table_text({ "ENDPOINT", "SUBJECT", "REQUESTS", "ERRORS", "AVERAGE", "LAST ERROR" }, rows), "\n")
    end
  end
  if #got == 0 then
    complain("no service answered", pos[1] and (" as '" .. pos[1] .. (pos[2] and "." .. pos[2] or "") .. "'") or "")
    return 1
  end
  return 0
end

function verbs.watch(h, opts, pos)
  if #pos ~= 1 then return nil, "watch takes one TOPIC" end
  local topic = pos[1]
  local ok, serr = core.subject_check(topic, "subscribe", "TOPIC")
  if not ok then return nil, serr end
  -- A plain subscription: it sees every request of the topic without
  -- taking any from the services' queue group.
  local sub, e = h.transport:subscribe(topic, nil, 0, function(subject, reply, data)
    local msg = Hemera.decode(data)
    local p = type(msg) == "table" and msg.pattern or nil
    local rtype = type(msg) == "table" and type(msg.request) == "table" and msg.request.type or nil
    if opts.json then
      say(json { subject = subject, pattern = p or Hemera.null, type = rtype or Hemera.null,
                 reply = reply or Hemera.null }, "\n")
    else
      local shown = type(p) == "table" and json(p) or ("(not a Hemera message: " .. #data .. " bytes)")
      say(("%s %s %s%s\n"):format(os.date("!%H:%M:%S"), subject, shown,
        rtype == "pubsub" and " (pubsub)" or ""))
    end
    out:flush()
  end)
  if not sub then return nil, e end
  if not h:flush() then complain("the server did not confirm the subscription") return 1 end
  -- On stderr, also with --json: it says when messages will be seen.
  err_out:write("watching ", topic, " (Ctrl-C to stop)\n")
  -- Ctrl-C closes the instance (the interpreter's signal handling): the
  -- loop then ends with this coroutine still waiting, which is a success.
  opts.ok_if_interrupted = true
  local forever = core.future()
  forever:wait(opts.timeout)
  sub:unsubscribe()
  return 0
end

function verbs.web(h, opts, pos)
  if #pos ~= 0 then return nil, "web takes no arguments" end
  -- On stderr: the URL to use, once it answers.
  err_out:write("hemera web: listening on ", h.web.url, "/ (Ctrl-C to stop)\n")
  err_out:flush()
  -- Ctrl-C closes the instance, which answers the HTTP requests in flight
  -- first; the loop then ends with this coroutine still waiting.
  opts.ok_if_interrupted = true
  core.future():wait()
  return 0
end

-- }==================================================================

-- The library, Lua, cnats and libuv versions, one per line.
function M.version_text()
  local v = core.versions()
  return ("hemera %s\n%s\ncnats %s\nlibuv %s\n"):format(Hemera.VERSION, v.lua, v.nats, v.uv)
end

-- M.main(argv) -> exit status. argv: the arguments after the program
-- name. Runs the loop (Hemera.run) until the verb is done.
function M.main(argv)
  if argv[1] == "--version" then
    say(M.version_text())
    return 0
  end
  local verb = argv[1]
  if not VERBS[verb] then
    complain(("unknown verb '%s'"):format(tostring(verb)))
    err_out:write(USAGE)
    return 2
  end
  local rest = table.move(argv, 2, #argv, 1, {})
  local opts, pos = parse(rest)
  if not opts then
    complain(pos)
    err_out:write(USAGE)
    return 2
  end
  if opts.help then
    say(USAGE)
    return 0
  end
  for name, only in pairs(FLAGS) do
    if opts[name] and only ~= true and only ~= verb then
      complain(("--%s is an option of %s, not of %s"):format(name, only, verb))
      return 2
    end
  end
  if opts.listen and verb ~= "web" then
    complain(("--listen is an option of web, not of %s"):format(verb))
    return 2
  end
  local url = opts.server or os.getenv("HEMERA_NATS_URL")
  if url == nil or url == "" then
    -- The interpreter's shared server, when one runs (never started here).
    local ok, dev = pcall(require, "hemera.devserver")
    url = ok and dev.find and dev.find() or "nats://127.0.0.1:4222"
  end
  local status = 1
  Hemera.spawn(function()
    local h = Hemera.new {
      name = "hemera-cli",
      servers = url,
      timeout = (verb == "act" or verb == "web") and opts.timeout or 2000,
      micro = { enabled = false }, -- the CLI is not a service
      nats = { reconnect = false, connectTimeout = 2000 },
    }
    if verb == "web" then h:use(require "hemera.web", { listen = opts.listen or "127.0.0.1:3000" }) end
    local ok, rerr, cerr = pcall(h.ready, h)
    if not ok or not rerr then
      if ok then rerr = cerr end -- ready's nil, err
      complain(tostring(type(rerr) == "table" and rerr.message or rerr))
      h:close()
      return
    end
    local vok, code, uerr = xpcall(verbs[verb], debug.traceback, h, opts, pos)
    if not vok then
      complain(tostring(code))
    elseif code == nil then
      complain(uerr)
      err_out:write(USAGE)
      status = 2
    else
      status = code
    end
    h:close()
  end)
  Hemera.run()
  out:flush()
  if opts.ok_if_interrupted and status == 1 then status = 0 end
  return status
end

return M
