-- hemera.stats: hemera-stats 1.0.23's actions, so a fleet mixing Node and
-- Lua services answers one stats call alike.
--
--   local stats = require "hemera.stats"
--   hemera:use(stats)     -- or hemera:use(require "hemera.stats")
--
--   {topic = "stats", cmd = "processInfo", pubsub$ = true}
--     -> {app, eventLoopDelay, heapUsed, rss, nodeEnv, uptime, ts}
--   {topic = "stats", cmd = "registeredActions", pubsub$ = true}
--     -> {app, ts, actions = [{pattern, schema, plugin}]}
--
-- Field names and meanings are hemera-stats': app is config.name;
-- eventLoopDelay (ms), heapUsed (the Lua heap, bytes) and rss (bytes) are
-- the load sampler's last sample (load.process.sampleInterval), else taken
-- at the call (eventLoopDelay 0); nodeEnv is $NODE_ENV (absent when unset, as
-- Node's undefined is); uptime is the process' age in seconds; ts is epoch
-- ms. In registeredActions, schema is {} (hemera-stats describes only Joi
-- schemas) and plugin is the name of the plugin that added the action, or
-- "core" for the root instance (the root plugin's name in the Hemera
-- hemera-stats was written for).
--
-- The topics are pubsub$ (no queue group), so every instance receives a
-- call; a caller that wants every answer acts with maxMessages$.
local core = require "hemera.core"

local M = {
  name = "hemera-stats",
  options = { topic = "stats" },
}

-- Seconds since the process started, from /proc (USER_HZ is 100 on Linux),
-- else since this module was loaded.
local loaded_ms = core.hrtime()
local function uptime()
  local f = io.open("/proc/self/stat")
  local stat = f and f:read("a")
  if f then f:close() end
  local u = io.open("/proc/uptime")
  local up = u and u:read("n")
  if u then u:close() end
  -- Field 22 (starttime), counted after the command name's ")".
  local rest = stat and stat:match("%)%s+(.*)$")
  if rest and up then
    local k, start = 3, nil
    for field in rest:gmatch("%S+") do
      if k == 22 then start = tonumber(field) break end
      k = k + 1
    end
    if start then return math.max(0, up - start / 100) end
  end
  return (core.hrtime() - loaded_ms) / 1000
end

function M.register(hemera, opts)
  local topic = opts.topic
  if type(topic) ~= "string" or topic == "" then
    error(("hemera-stats: option 'topic' must be a non-empty string, got %s"):format(tostring(topic)), 2)
  end

  hemera:add({ topic = topic, cmd = "processInfo", ["pubsub$"] = true }, function()
    local load = core.load() -- the sampler's last, else one taken now
    return {
      app = hemera.config.name,
      eventLoopDelay = load.eventLoopDelay,
      heapUsed = load.heapUsed,
      rss = load.rss,
      nodeEnv = os.getenv("NODE_ENV"),
      uptime = uptime(),
      ts = core.now(),
    }
  end)

  hemera:add({ topic = topic, cmd = "registeredActions", ["pubsub$"] = true }, function()
    local actions = core.array {}
    for k, def in ipairs(hemera:list()) do
      actions[k] = { pattern = def.pattern, schema = {}, plugin = def.scope._plugin or "core" }
    end
    return { app = hemera.config.name, ts = core.now(), actions = actions }
  end)
end

return M
