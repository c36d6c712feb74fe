-- hemera.config: Hemera's options (spec §4) with their defaults, checked
-- at Hemera.new: an unknown key or a wrong type fails with the key, the
-- expected type and the value given.
local errors = require "hemera.errors"
local core = require "hemera.core"

local M = {}

local LEVELS = { fatal = true, error = true, warn = true, info = true, debug = true, trace = true, silent = true }

-- key -> { types = {...}, default = v | function, check = fn(v) -> msg? , fields = nested schema }
local SCHEMA = {
  timeout = { types = { "integer" }, default = 2000, check = function(v) return v < 0 and "must be >= 0" end },
  pluginTimeout = { types = { "integer" }, default = 10, check = function(v) return v < 0 and "must be >= 0" end },
  tag = { types = { "string" }, default = "" },
  prettyLog = { types = { "boolean", "table" }, default = false },
  name = { types = { "string" } },
  logLevel = { types = { "string" }, default = "silent",
               check = function(v) return not LEVELS[v] and "must be one of fatal, error, warn, info, debug, trace, silent" end },
  childLogger = { types = { "boolean" }, default = false },
  maxRecursion = { types = { "integer" }, default = 0, check = function(v) return v < 0 and "must be >= 0" end },
  logger = { types = { "table", "userdata" } },
  traceLog = { types = { "boolean" }, default = false },
  errio = { types = { "table" }, fields = {
    recursive = { types = { "boolean" }, default = true },
    inherited = { types = { "boolean" }, default = true },
    stack = { types = { "boolean" }, default = false }, -- Hemera: true; stacks stay home by default
    private = { types = { "boolean" }, default = false },
    exclude = { types = { "table" }, default = {} },
    include = { types = { "table" }, default = {} },
  } },
  bloomrun = { types = { "table" }, fields = {
    indexing = { types = { "string" }, default = "insertion",
                 check = function(v) return v ~= "insertion" and v ~= "depth" and "must be 'insertion' or 'depth'" end },
    lookupBeforeAdd = { types = { "boolean" }, default = false },
  } },
  load = { types = { "table" }, fields = {
    checkPolicy = { types = { "boolean" }, default = true },
    process = { types = { "table" }, fields = {
      sampleInterval = { types = { "integer" }, default = 0, check = function(v) return v < 0 and "must be >= 0" end },
    } },
    policy = { types = { "table" }, fields = {
      maxHeapUsedBytes = { types = { "number" }, default = 0 },
      maxRssBytes = { types = { "number" }, default = 0 },
      maxEventLoopDelay = { types = { "number" }, default = 0 },
    } },
  } },
  -- Ours, beyond Hemera's.
  -- A URL, a comma-separated list of URLs (NATS' own convention), or a
  -- list of either; each checked as a connect would (the message shows
  -- the bad one with its credentials masked, so not the value).
  servers = { types = { "string", "table" }, quiet = true,
              check = function(v) local ok, err = core.servers(v, "servers"); return not ok and err end },
  -- The NATS connection (hm_lua_conn.c's core.connect). Unset: the core's
  -- defaults (see docs/api.md).
  nats = { types = { "table" }, fields = {
    name = { types = { "string" } },
    user = { types = { "string" } },
    password = { types = { "string" } },
    token = { types = { "string" } },
    tls = { types = { "table" }, quiet = true, check = function(t)
      for k, v in pairs(t) do
        if k ~= "ca" and k ~= "cert" and k ~= "key" and k ~= "verify" then
          return "unknown key '" .. tostring(k) .. "' (known: ca, cert, key, verify)"
        end
        if (k == "verify" and type(v) ~= "boolean") or (k ~= "verify" and type(v) ~= "string") then
          return ("'%s' must be a %s, got %s"):format(k, k == "verify" and "boolean" or "file name", type(v))
        end
      end
    end },
    reconnect = { types = { "boolean" } },
    maxReconnect = { types = { "integer" }, check = function(v) return v < -1 and "must be -1 (for ever) or >= 0" end },
    reconnectWait = { types = { "integer" }, check = function(v) return v < 0 and "must be >= 0 (ms)" end },
    connectTimeout = { types = { "integer" }, check = function(v) return v < 0 and "must be >= 0 (ms)" end },
    -- A failed first connect is tried again like a reconnect: maxReconnect
    -- more passes over the servers, reconnectWait apart.
    retryOnFailedConnect = { types = { "boolean" } },
    maxPendingMsgs = { types = { "integer" }, check = function(v) return v < 0 and "must be >= 0" end },
    maxPendingBytes = { types = { "integer" },
                        check = function(v) return (v < -1 or v > 2147483647) and "must be -1 (no limit) or 0..2147483647 bytes" end },
  } },
  closeTimeout = { types = { "integer" }, default = 2000, check = function(v) return v < 0 and "must be >= 0" end },
  maxConcurrency = { types = { "integer" }, default = 1000, check = function(v) return v < 1 and "must be >= 1" end },
  -- NATS' Service API (ADR-32, hemera.micro): on unless enabled = false.
  micro = { types = { "table" }, fields = {
    enabled = { types = { "boolean" }, default = true },
    prefix = { types = { "string" }, default = "$SRV" },
    version = { types = { "string" } }, -- default: Hemera.VERSION
    description = { types = { "string" }, default = "" },
    metadata = { types = { "table" }, default = {} },
  } },
  -- CPU ms one request may use in this instance (hooks, handler); 0: no
  -- limit. Below the default act timeout, so the caller hears why.
  handlerBudget = { types = { "integer" }, default = 1000, check = function(v) return v < 0 and "must be >= 0 (0: no budget)" end },
}

local function type_of(v)
  local t = type(v)
  if t == "number" then return math.type(v) == "integer" and "integer" or "float" end
  return t
end

local function accepts(types, v)
  local t = type_of(v)
  for _, want in ipairs(types) do
    if want == t or (want == "number" and type(v) == "number") then return true end
  end
  return false
end

local function fail(path, msg, level)
  error(errors.HemeraError("Invalid option '" .. path .. "': " .. msg, { option = path }), level)
end

local function build(schema, given, prefix, level)
  local out = {}
  for k, v in pairs(given) do
    local path = prefix .. tostring(k)
    local rule = schema[k]
    if not rule then
      local known = {}
      for name in pairs(schema) do known[#known + 1] = name end
      table.sort(known)
      fail(path, "unknown key (known: " .. table.concat(known, ", ") .. ")", level + 1)
    end
    if not accepts(rule.types, v) then
      fail(path, ("expected %s, got %s (%s)"):format(table.concat(rule.types, " or "), type_of(v), tostring(v)), level + 1)
    end
    local msg = rule.check and rule.check(v)
    if msg then fail(path, rule.quiet and msg or ("%s, got %s"):format(msg, tostring(v)), level + 1) end
    if rule.fields then v = build(rule.fields, v, path .. ".", level + 1) end
    out[k] = v
  end
  for k, rule in pairs(schema) do
    if out[k] == nil then
      if rule.fields then
        out[k] = build(rule.fields, {}, prefix .. k .. ".", level + 1)
      elseif type(rule.default) == "table" then
        out[k] = {}
      else
        out[k] = rule.default
      end
    end
  end
  return out
end

-- The full configuration from the options given (defaults filled in).
-- `level` is the error level of the caller's caller.
function M.build(opts, level)
  if type(opts) ~= "table" then
    error(errors.HemeraError("Options must be a table, got " .. type(opts)), level + 1)
  end
  local cfg = build(SCHEMA, opts, "", level + 1)
  local p = cfg.load.policy
  if (p.maxHeapUsedBytes > 0 or p.maxRssBytes > 0 or p.maxEventLoopDelay > 0)
     and cfg.load.process.sampleInterval == 0 then
    fail("load.process.sampleInterval", "Load sample interval must be set to enable load limits", level + 1)
  end
  return cfg
end

M.SCHEMA = SCHEMA

return M
