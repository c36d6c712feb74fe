-- Topic churn: CPU seconds to add N topics to a connected instance (one
-- NATS subscription each), to remove them one by one, and to close an
-- instance that holds N topics. One line for bench/run.sh:
--   topics <N> <add s> <remove s> <close s>
--   hemera bench/topics.lua [N]
-- The server is $HEMERA_NATS_URL.
local Hemera = require "hemera"
local core = require "hemera.core"

local N = tonumber(arg[1]) or 10000
local base = "bench-topics." .. core.nuid()

local function add_all(s, tag)
  for k = 1, N do s:add({ topic = base .. tag .. k, cmd = "x" }, function() return k end) end
end

local function clean_up()
  collectgarbage()
  collectgarbage()
end

Hemera.spawn(function()
  local s = Hemera.new { name = "bench-topics" }
  assert(s:ready())
  clean_up()
  local t0 = os.clock()
  add_all(s, ".a.")
  local t_add = os.clock() - t0
  assert(s:flush())
  clean_up()
  t0 = os.clock()
  for k = 1, N do assert(s:remove(base .. ".a." .. k)) end
  local t_remove = os.clock() - t0
  assert(#s.topics == 0)
  add_all(s, ".b.")
  assert(s:flush())
  clean_up()
  local closed = core.future()
  t0 = os.clock()
  s:close(function() closed:set(true) end)
  closed:wait()
  local t_close = os.clock() - t0
  print(("topics %d %.3f %.3f %.3f"):format(N, t_add, t_remove, t_close))
end)
