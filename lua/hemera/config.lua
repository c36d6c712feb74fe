-- hemera.config: Hemera's options (spec §4) with their defaults, checked
-- at Hemera.new: an unknown key or a wrong type fails with the key, the
-- expected type and the value given.
local errors = require "hemera.errors"

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
  servers = { types = { "string", "table" } },
  nats = { types = { "table" }, default = {} },
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
    if msg then fail(path, ("%s, got %s"):format(msg, tostring(v)), level + 1) end
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
