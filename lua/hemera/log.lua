-- hemera.log: Hemera's structured logger, after pino (what Node Hemera uses).
--
-- Records are JSON lines by default, in pino's shape:
--
--   {"level":30,"time":1764324000123,"msg":"Connected!","app":"svc","topic":"math"}
--
-- keys in this order: level, time, msg (left out when there is none), the
-- bindings (app first, then those of each child in the order they were
-- added), then the call's fields in byte order of their keys. A field with
-- the name of a binding replaces it; level and time cannot be replaced; an
-- explicit msg wins over a `msg` field. Error values among the fields (a
-- table whose metatable is a hemera.errors class, or any table with a
-- string `name` and a `message`) are written as pino's err serializer does:
-- {"type":<name>,"message":...,"stack":...,"code":...,<other fields>}. A
-- record the codec cannot encode (a function, invalid UTF-8, ...) is still
-- written: with those values made printable and a `logError` field that
-- says why.
--
-- With `pretty` on, each record is one human line instead,
--
--   [2026-11-28 10:00:00.123] INFO (svc): Connected! topic=math
--
-- with error stacks on the following lines, indented by 4 spaces, and ANSI
-- colours when the output is a terminal.
--
-- API
--   M.LEVELS                 name -> number (fatal 60 ... trace 10, silent)
--   M.new(opts)              a logger; opts (all optional):
--     level    fatal|error|warn|info|debug|trace|silent (default silent);
--              `logLevel` is accepted as an alias (Hemera's option name),
--              and an invalid value raises a HemeraError naming the key used
--     app      the app name, the first binding
--     bindings more bindings of the root logger
--     stream   anything with :write(string) (default io.stderr); flushed
--              after each record when it has :flush()
--     pretty   true, or a table {colors = bool, colorize = bool, utc = bool}
--     colors   force ANSI colours on or off in pretty mode (default: on when
--              the stream is io.stdout/io.stderr, $TERM is set and not
--              "dumb", and $NO_COLOR is unset)
--     clock    function returning epoch milliseconds (default core.now)
--   logger:fatal/error/warn/info/debug/trace(msg, fields)
--              msg a string (other values are tostring'd), fields a table;
--              pino's shapes work too: (fields), (fields, msg), (err),
--              (msg, err), (err, fields) -- an error given on its own goes
--              under the key `err` and its message becomes msg when there
--              is none
--   logger:child(bindings)   a logger with these bindings added (child
--              values override); it shares the level and stream of its
--              family: set_level on any of them changes all
--   logger:enabled(name)     whether records of that level are written
--   logger:set_level(name)   change the level (validated as `level`)
--   logger.level             the current level name (read only)
--   M.wrap(custom)           a logger-like object for a custom logger that
--              has the six level methods but lacks child and/or enabled
--   M.is_logger(v)           true for loggers made by M.new/child/wrap
--
-- A disabled level method is an empty function: it costs a call, nothing
-- else. Callers who build costly fields can test logger:enabled first.

local core = require "hemera.core"
local errors = require "hemera.errors"

local encode, jsnum, null = core.encode, core.jsnum, core.null
local type, pairs, ipairs, next, tostring, rawget = type, pairs, ipairs, next, tostring, rawget
local getmetatable, setmetatable, error = getmetatable, setmetatable, error
local sub, byte, find, gsub, format = string.sub, string.byte, string.find, string.gsub, string.format
local concat, sort = table.concat, table.sort
local utf8len = utf8.len
local is_class_error = errors.is_error

local M = {}

local INF = math.huge
M.LEVELS = { trace = 10, debug = 20, info = 30, warn = 40, error = 50, fatal = 60, silent = INF }
local LEVELS = M.LEVELS
local NAMES = { "fatal", "error", "warn", "info", "debug", "trace" }
local ALLOWED = "fatal, error, warn, info, debug, trace, silent"
-- Levels a record can have (silent is only a threshold).
local RECORD = { trace = 10, debug = 20, info = 30, warn = 40, error = 50, fatal = 60 }

local RESERVED = { level = true, time = true, msg = true }

local function noop() end

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

local function fail(text)
  error(errors.HemeraError(text), 3)
end

local function check_level(name, option)
  if type(name) ~= "string" or LEVELS[name] == nil then
    local got = type(name) == "string" and format("%q", name) or tostring(name)
    if type(name) ~= "string" and name ~= nil then got = got .. " (a " .. type(name) .. ")" end
    fail(format("Invalid option '%s': must be one of %s; got %s", option, ALLOWED, got))
  end
  return LEVELS[name]
end

-- {==================================================================
-- Values
-- ===================================================================

-- pino's test for an error, in Lua: a hemera.errors value, or any table
-- with a string name and a message.
local function is_error(v)
  if is_class_error(v) then return true end
  return type(rawget(v, "name")) == "string" and rawget(v, "message") ~= nil
end

-- Replaces each byte that is not part of well-formed UTF-8 with U+FFFD.
local function valid_utf8(s)
  if utf8len(s) then return s end
  local out, i = {}, 1
  while true do
    local n, bad = utf8len(s, i)
    if n then
      out[#out + 1] = sub(s, i)
      break
    end
    out[#out + 1] = sub(s, i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return concat(out)
end

local MAXDEPTH = 100

-- A copy of v that the codec can encode: functions, threads and userdata
-- become strings, strings valid UTF-8, keys strings or numbers; tables
-- already on the path become "[Circular]". Order and array marks are kept.
local function printable(v, path, depth)
  local t = type(v)
  if t == "string" then return valid_utf8(v) end
  if t == "number" or t == "boolean" or t == "nil" or v == null then return v end
  if t == "function" then return "[function]" end
  if t == "thread" then return "[thread]" end
  if t ~= "table" then return valid_utf8(tostring(v)) end
  path = path or {}
  depth = depth or 0
  if path[v] then return "[Circular]" end
  if depth >= MAXDEPTH then return "[Too deep]" end
  path[v] = true
  local out = {}
  for k, x in pairs(v) do
    local kt = type(k)
    if kt == "string" then
      k = valid_utf8(k)
    elseif kt ~= "number" then
      k = printable(k, path, depth + 1)
      if type(k) ~= "string" then k = tostring(k) end
    end
    out[k] = printable(x, path, depth + 1)
  end
  path[v] = nil
  local mt = getmetatable(v)
  if mt == core.array_mt then
    setmetatable(out, mt)
  elseif type(mt) == "table" and type(rawget(mt, "__jsonorder")) == "table" then
    setmetatable(out, { __jsonorder = rawget(mt, "__jsonorder") })
  end
  return out
end

local ERR_MT = { __jsonorder = { "type", "message", "stack", "code" } }

-- pino's err serializer: type (the name), message, stack, then every other
-- field except functions; error values among them are serialized too.
local function serialize_error(e, seen)
  seen = seen or {}
  seen[e] = true
  local out = setmetatable({}, ERR_MT)
  local name = e.name
  out.type = name ~= nil and tostring(name) or "Error"
  local m = e.message
  out.message = m ~= nil and tostring(m) or ""
  for k, v in pairs(e) do
    local tv = type(v)
    if k == "type" or k == "message" or (k == "name" and tostring(v) == out.type)
       or tv == "function" or tv == "thread" then -- luacheck: ignore 542 (the cases left out read best named)
      -- left out
    elseif tv == "table" and is_error(v) then
      out[k] = seen[v] and "[Circular]" or serialize_error(v, seen)
    else
      out[k] = v
    end
  end
  seen[e] = nil
  return out
end

-- }==================================================================

-- {==================================================================
-- Loggers
-- ===================================================================

-- Every logger made by M.new and its children share a family table (the
-- level, the stream, the output mode, and the level methods, which are the
-- writers or noop); each logger holds its own bindings.
local Logger = { _is_hemera_logger = true }
local FamilyMT = { __index = Logger }

-- Builds what a logger writes with, on its first record: the merged
-- bindings (_keys in order, _map), their JSON text (_chind), the key order
-- of a full record (_order_mt) and the keys a field cannot simply add
-- (_reserved).
local function build(self)
  local keys, map
  local p = self._parent
  if p then
    if not p._chind then build(p) end
    keys, map = {}, {}
    for i, k in ipairs(p._keys) do keys[i] = k end
    for k, v in pairs(p._map) do map[k] = v end
  else
    keys, map = {}, {}
  end
  local own = self._own
  if own then
    local new = {}
    for k, v in pairs(own) do
      if map[k] == nil then new[#new + 1] = k end
      map[k] = v
    end
    sort(new, function(a, b)
      if a == "app" then return b ~= "app" end
      return b ~= "app" and a < b
    end)
    for _, k in ipairs(new) do keys[#keys + 1] = k end
  end
  local order = { "level", "time", "msg" }
  local reserved = { level = true, time = true, msg = true }
  local rec = setmetatable({}, { __jsonorder = keys })
  for _, k in ipairs(keys) do
    order[#order + 1] = k
    reserved[k] = true
    local v = map[k]
    if type(v) == "table" and is_error(v) then v = serialize_error(v) end
    rec[k] = v
  end
  local chind = ""
  if #keys > 0 then
    local s = encode(rec) or encode(printable(rec))
    chind = "," .. sub(s, 2, -2)
  end
  self._keys, self._map, self._order_mt, self._reserved = keys, map, { __jsonorder = order }, reserved
  self._parent, self._own = nil, nil
  self._chind = chind
  return chind
end

-- Sorts keys of any type: strings and numbers by their text.
local function keyless(a, b)
  return tostring(a) < tostring(b)
end

-- Brings a call to one shape: msg (nil, or a string unless it came from a
-- `msg` field), fields (nil or a table), err (an error given on its own).
local function normalize(msg, fields)
  local err
  if type(msg) == "table" then
    if type(fields) ~= "table" then
      msg, fields = fields, msg        -- (fields [, msg])
    elseif is_error(msg) then
      msg, err = nil, msg              -- (err, fields)
    else
      msg = printable(msg)             -- (table, table): the first one is odd
      msg = encode(msg) or tostring(msg)
    end
  end
  if fields ~= nil then
    if type(fields) ~= "table" then
      -- (msg, value): appended to the message, as console.log would
      msg = (msg ~= nil and tostring(msg) .. " " or "") .. tostring(fields)
      fields = nil
    elseif err == nil and is_error(fields) then
      err, fields = fields, nil        -- (err) or (msg, err)
    end
  end
  if msg ~= nil then
    if type(msg) ~= "string" then msg = tostring(msg) end
  elseif err ~= nil then
    msg = err.message ~= nil and tostring(err.message) or nil
  elseif fields ~= nil then
    msg = rawget(fields, "msg")
    if msg == nil then
      local e = rawget(fields, "err")
      if type(e) == "table" and is_error(e) and e.message ~= nil then msg = tostring(e.message) end
    end
  end
  return msg, fields, err
end

-- The full record as one table, for records the fast path cannot write.
local function record(self, lv, time, msg, fields, err)
  local rec = setmetatable({}, self._order_mt)
  for k, v in pairs(self._map) do rec[k] = v end
  if fields then
    for k, v in pairs(fields) do
      if type(v) == "table" and is_error(v) then v = serialize_error(v) end
      rec[k] = v
    end
  end
  if err then rec.err = serialize_error(err) end
  rec.level, rec.time, rec.msg = lv, time, msg
  return rec
end

local HEAD = {}
for _, lv in pairs(RECORD) do HEAD[lv] = '{"level":' .. lv .. ',"time":' end

local function out(self, line)
  local s = self._stream
  s:write(line)
  if self._flush then s:flush() end
end

-- The JSON text of recent messages: most are constant strings.
local MSGS, nmsgs, MAXMSGS = {}, 0, 256

local function write_json(self, lv, msg, fields)
  local chind = self._chind or build(self)
  local err
  msg, fields, err = normalize(msg, fields)
  local time = self._clock()
  local tail
  if err == nil then
    if fields == nil or next(fields) == nil then
      tail = "}\n"
    else
      local reserved, plain = self._reserved, true
      for k, v in pairs(fields) do
        if reserved[k] or (type(v) == "table" and is_error(v)) then
          plain = false
          break
        end
      end
      if plain then
        local s = encode(fields)
        if s and byte(s, 1) == 123 then tail = "," .. sub(s, 2) .. "\n" end
      end
    end
  end
  if tail then
    local m = ""
    if msg ~= nil then
      m = MSGS[msg]
      if not m then
        m = ',"msg":' .. (encode(msg) or encode(valid_utf8(msg)))
        if nmsgs < MAXMSGS then
          nmsgs = nmsgs + 1
          MSGS[msg] = m
        end
      end
    end
    return out(self, HEAD[lv] .. time .. m .. chind .. tail)
  end
  local rec = record(self, lv, time, msg, fields, err)
  local s, why = encode(rec)
  if not s then
    rec = printable(rec)
    rec.logError = "the record could not be encoded: " .. valid_utf8(why)
    setmetatable(rec, self._order_mt)
    s = encode(rec) or encode(setmetatable({ level = lv, time = time, msg = printable(tostring(msg)),
      logError = rec.logError }, self._order_mt))
  end
  return out(self, s .. "\n")
end

-- {------------------------------------------------------------------
-- Pretty
-- -------------------------------------------------------------------

local LABEL = { [60] = "FATAL", [50] = "ERROR", [40] = "WARN", [30] = "INFO", [20] = "DEBUG", [10] = "TRACE" }
local COLOR = {
  [60] = { "\27[41m", "\27[49m" }, [50] = { "\27[31m", "\27[39m" }, [40] = { "\27[33m", "\27[39m" },
  [30] = { "\27[32m", "\27[39m" }, [20] = { "\27[34m", "\27[39m" }, [10] = { "\27[90m", "\27[39m" },
}
local CYAN, GREY, FG = "\27[36m", "\27[90m", "\27[39m"

local function quote(s)
  return encode(s) or encode(valid_utf8(s))
end

-- A string stays bare unless it is empty or has spaces, quotes, '=' or
-- control characters, then it is written as a JSON string.
local function pretty_string(s)
  if s == "" or find(s, '[%s%c"=\\]') or not utf8len(s) then return quote(s) end
  return s
end

local function pretty_value(v, stacks, key)
  local t = type(v)
  if t == "string" then return pretty_string(v) end
  if t == "number" then return math.type(v) == "integer" and tostring(v) or jsnum(v) end
  if t == "boolean" then return tostring(v) end
  if v == nil or v == null then return "null" end
  if t == "table" then
    if is_error(v) then
      local e = serialize_error(v)
      local text = e.type
      if e.message ~= "" then text = text .. ": " .. e.message end
      if e.code ~= nil then text = text .. " (code " .. tostring(e.code) .. ")" end
      if type(e.stack) == "string" then stacks[#stacks + 1] = e.stack end
      return pretty_string(text)
    end
    return encode(v) or encode(printable(v))
  end
  return pretty_string(printable(v))
end

local function indent(text)
  return "    " .. gsub(gsub(text, "\t", "  "), "\n", "\n    ")
end

local function write_pretty(self, lv, msg, fields)
  if not self._chind then build(self) end
  local err
  msg, fields, err = normalize(msg, fields)
  local time = math.floor(self._clock())
  local secs = time // 1000
  local stamp = os.date(self._utc and "!%Y-%m-%d %H:%M:%S" or "%Y-%m-%d %H:%M:%S", secs)
  local colors = self._colors
  local label = LABEL[lv]
  if colors then label = COLOR[lv][1] .. label .. COLOR[lv][2] end
  local parts = { "[", stamp, format(".%03d", time - secs * 1000), "] ", label }
  local map = self._map
  local app = fields and rawget(fields, "app")
  if app == nil then app = map.app end
  if app ~= nil then parts[#parts + 1] = " (" .. tostring(app) .. ")" end
  parts[#parts + 1] = ":"
  local stacks = {}
  if msg ~= nil then
    local m = type(msg) == "string" and gsub(msg, "\n", "\n    ") or pretty_value(msg, stacks)
    parts[#parts + 1] = " " .. (colors and CYAN .. m .. FG or m)
  end
  for _, k in ipairs(self._keys) do
    if k ~= "app" and (fields == nil or rawget(fields, k) == nil) then
      parts[#parts + 1] = " " .. k .. "=" .. pretty_value(map[k], stacks)
    end
  end
  if fields then
    local ks = {}
    for k in pairs(fields) do
      if not RESERVED[k] and k ~= "app" then ks[#ks + 1] = k end
    end
    sort(ks, keyless)
    for _, k in ipairs(ks) do
      parts[#parts + 1] = " " .. pretty_string(tostring(k)) .. "=" .. pretty_value(fields[k], stacks)
    end
  end
  if err then parts[#parts + 1] = " err=" .. pretty_value(err, stacks) end
  parts[#parts + 1] = "\n"
  for _, s in ipairs(stacks) do
    local text = indent(valid_utf8(s))
    parts[#parts + 1] = (colors and GREY .. text .. FG or text) .. "\n"
  end
  return out(self, concat(parts))
end

-- }------------------------------------------------------------------

local JSON, PRETTY = {}, {}
for _, name in ipairs(NAMES) do
  local lv = LEVELS[name]
  JSON[name] = function(self, msg, fields) return write_json(self, lv, msg, fields) end
  PRETTY[name] = function(self, msg, fields) return write_pretty(self, lv, msg, fields) end
end

local function apply_level(family, name)
  local threshold = LEVELS[name]
  family._threshold = threshold
  family.level = name
  local writers = family._pretty and PRETTY or JSON
  for _, n in ipairs(NAMES) do
    family[n] = LEVELS[n] >= threshold and writers[n] or noop
  end
end

function Logger:enabled(name)
  local lv = RECORD[name]
  return lv ~= nil and lv >= self._threshold
end

function Logger:set_level(name)
  check_level(name, "level")
  apply_level(self._family, name)
end

local function check_bindings(b)
  if b == nil then return nil end
  if type(b) ~= "table" then fail("Logger bindings must be a table; got a " .. type(b)) end
  local copy = {}
  for k, v in pairs(b) do
    if type(k) ~= "string" then
      fail("Logger binding keys must be strings; got a " .. type(k))
    elseif RESERVED[k] then
      fail(format("Logger bindings cannot use the reserved key '%s' (reserved: level, time, msg)", k))
    end
    copy[k] = v
  end
  return copy
end

function Logger:child(bindings)
  local own = check_bindings(bindings)
  return setmetatable({ _parent = self, _own = own }, self._mt)
end

local function auto_colors(stream)
  if stream ~= io.stderr and stream ~= io.stdout then return false end
  if os.getenv("NO_COLOR") then return false end
  local term = os.getenv("TERM")
  return term ~= nil and term ~= "" and term ~= "dumb"
end

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("Logger options must be a table; got a " .. type(opts)) end
  local key = opts.level ~= nil and "level" or "logLevel"
  local level = opts[key]
  if level == nil then level = "silent" end
  check_level(level, key)
  local stream = opts.stream or io.stderr
  local okw, write = pcall(function() return stream.write end)
  if not okw or not callable(write) then
    fail("Invalid option 'stream': must have a write method; got " .. tostring(stream))
  end
  local pretty = opts.pretty
  if pretty ~= nil and type(pretty) ~= "boolean" and type(pretty) ~= "table" then
    fail("Invalid option 'pretty': must be a boolean or a table; got a " .. type(pretty))
  end
  local popts = type(pretty) == "table" and pretty or {}
  local colors = opts.colors
  if colors == nil then colors = popts.colors end
  if colors == nil then colors = popts.colorize end
  if colors == nil then colors = auto_colors(stream) end
  local clock = opts.clock or core.now
  local family = setmetatable({
    _stream = stream,
    _flush = callable(stream.flush),
    _pretty = pretty and true or false,
    _colors = colors and true or false,
    _utc = popts.utc and true or false,
    _clock = clock,
  }, FamilyMT)
  family._family = family
  family._mt = { __index = family }
  apply_level(family, level)
  local own = check_bindings(opts.bindings) or {}
  if opts.app ~= nil then own.app = opts.app end
  return setmetatable({ _own = own }, family._mt)
end

function M.is_logger(v)
  if type(v) ~= "table" then return false end
  local ok, r = pcall(function() return v._is_hemera_logger == true end)
  return ok and r
end

-- }==================================================================

-- {==================================================================
-- Custom loggers
-- ===================================================================

-- A wrapper forwards the level methods to the custom logger. When the
-- custom logger has no child method, a wrapper child merges its bindings
-- into the fields of each call (call fields win).
local Wrapper = { _is_hemera_logger = true }
Wrapper.__index = Wrapper

local function merged(b, msg, fields)
  if type(msg) == "table" and type(fields) ~= "table" then msg, fields = fields, msg end
  local m = {}
  for k, v in pairs(b) do m[k] = v end
  if type(fields) == "table" then
    if is_error(fields) then
      m.err = fields
    else
      for k, v in pairs(fields) do m[k] = v end
    end
  elseif fields ~= nil then
    msg = (msg ~= nil and tostring(msg) .. " " or "") .. tostring(fields)
  end
  return msg, m
end

for _, name in ipairs(NAMES) do
  Wrapper[name] = function(self, msg, fields)
    local c, b = self._custom, self._bindings
    if b == nil then return c[name](c, msg, fields) end
    msg, fields = merged(b, msg, fields)
    if msg == nil then return c[name](c, fields) end
    return c[name](c, msg, fields)
  end
end

local function wrapper(custom, bindings)
  return setmetatable({ _custom = custom, _bindings = bindings }, Wrapper)
end

function Wrapper:child(bindings)
  local c = self._custom
  local own = check_bindings(bindings) or {}
  if self._bindings == nil and callable(c.child) then
    return M.wrap(c:child(own))
  end
  local b = {}
  for k, v in pairs(self._bindings or {}) do b[k] = v end
  for k, v in pairs(own) do b[k] = v end
  return wrapper(c, b)
end

function Wrapper:enabled(name)
  local c = self._custom
  if callable(c.enabled) then return c:enabled(name) and true or false end
  if callable(c.isLevelEnabled) then return c:isLevelEnabled(name) and true or false end
  local lv = RECORD[name]
  if lv == nil then return false end
  local threshold = type(c.levelVal) == "number" and c.levelVal or LEVELS[c.level]
  return threshold == nil or lv >= threshold
end

function Wrapper:set_level(name)
  check_level(name, "level")
  local c = self._custom
  if callable(c.set_level) then return c:set_level(name) end
  if callable(c.setLevel) then return c:setLevel(name) end
  c.level = name
end

-- M.wrap(custom): `custom` as a logger. Hemera's loggers are returned as
-- they are, as is a custom logger that has child and enabled; otherwise a
-- wrapper adds the missing methods. Raises a HemeraError naming the missing
-- level methods.
function M.wrap(custom)
  if M.is_logger(custom) then return custom end
  if type(custom) ~= "table" then
    fail("Invalid option 'logger': must be a table with the methods fatal, error, warn, info, debug and trace; got a "
      .. type(custom))
  end
  local missing = {}
  for _, name in ipairs(NAMES) do
    if not callable(custom[name]) then missing[#missing + 1] = name end
  end
  if #missing > 0 then
    fail("Invalid option 'logger': must have the methods fatal, error, warn, info, debug and trace; missing "
      .. concat(missing, ", "))
  end
  if callable(custom.child) and callable(custom.enabled) then return custom end
  return wrapper(custom, nil)
end

-- }==================================================================

return M
