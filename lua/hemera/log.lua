-- hemera.log: a small structured logger. One JSON object per line, pino's
-- shape ({"level":30,"time":...,"msg":...,"app":...} plus fields), written
-- to an output stream (default io.stderr). Levels: fatal, error, warn,
-- info, debug, trace, silent.

local core = require "hemera.core"

local M = {}

M.LEVELS = { trace = 10, debug = 20, info = 30, warn = 40, error = 50, fatal = 60, silent = math.huge }
local NAMES = { "fatal", "error", "warn", "info", "debug", "trace" }

local Logger = {}
Logger.__index = Logger

local ORDER = { __jsonorder = { "level", "time", "msg", "app" } }

local function emit(self, level, msg, fields)
  local rec = setmetatable({}, ORDER)
  if type(msg) == "table" and fields == nil then msg, fields = nil, msg end
  if fields then
    for k, v in pairs(fields) do rec[k] = v end
  end
  for k, v in pairs(self.bindings) do rec[k] = v end
  rec.level = M.LEVELS[level]
  rec.time = core.now()
  rec.msg = msg ~= nil and tostring(msg) or rec.msg
  local line, err = core.encode(rec)
  if not line then
    line = core.encode { level = rec.level, time = rec.time, msg = tostring(msg),
                         logError = "fields could not be encoded: " .. err }
  end
  self.stream:write(line, "\n")
  if self.stream.flush then self.stream:flush() end
end

for _, name in ipairs(NAMES) do
  local lv = M.LEVELS[name]
  Logger[name] = function(self, msg, fields)
    if lv >= self.threshold then emit(self, name, msg, fields) end
  end
end

function Logger:child(bindings)
  local b = {}
  for k, v in pairs(self.bindings) do b[k] = v end
  for k, v in pairs(bindings or {}) do b[k] = v end
  return setmetatable({ threshold = self.threshold, stream = self.stream, bindings = b }, Logger)
end

function Logger:enabled(level)
  return (M.LEVELS[level] or 0) >= self.threshold
end

-- M.new{level = "info", stream = io.stderr, app = "name"}
function M.new(opts)
  local level = opts.level or "silent"
  local threshold = M.LEVELS[level]
  if not threshold then
    error(("logLevel must be one of fatal, error, warn, info, debug, trace, silent; got %q"):format(tostring(level)), 2)
  end
  return setmetatable({ threshold = threshold, stream = opts.stream or io.stderr,
                        bindings = { app = opts.app } }, Logger)
end

return M
