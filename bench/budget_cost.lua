-- The cost of the CPU budget's count hook (core.budget_call), for
-- bench/budget_cost.sh, which runs this under callgrind:
--
--   hemera bench/budget_cost.lua <requests> on|strict|off|none|count [empty|work [paired]]
--
-- Each "request" is a handler-sized piece of Lua (a few thousand VM
-- instructions: read a decoded request, loop over its items, format
-- strings, build a reply table), run in a Hemera coroutine inside
-- core.budget_call with a budget ("on": the default, watchdog-armed hook;
-- "strict": core.budget_strict(true), the hook for the whole call), inside
-- core.budget_call without one ("off"), or under a plain pcall ("none").
-- "count" prints how many VM instructions one request takes. With
-- "empty" the handler does nothing, which leaves the call's own cost.
local core = require "hemera.core"

local n = tonumber(arg[1]) or 10000
local mode = arg[2] or "on"

local request = { topic = "orders", cmd = "total", currency = "EUR", items = {} }
for k = 1, 200 do
  request.items[k] = { sku = "sku-" .. k, qty = k % 3 + 1, price = 1.25 * k }
end

local function handler(req)
  if type(req.items) ~= "table" then return nil, "items missing" end
  local total, lines = 0, {}
  for k = 1, #req.items do
    local it = req.items[k]
    local sum = it.qty * it.price
    total = total + sum
    if sum > 50 then lines[#lines + 1] = it.sku end
  end
  return { total = total, currency = req.currency, big = #lines,
           label = ("%s %.2f"):format(req.currency, total) }
end

if arg[3] == "empty" then
  local reply = { big = 0 }
  handler = function() return reply end
end

if mode == "count" then
  local count = 0
  debug.sethook(function() count = count + 1 end, "", 1)
  handler(request)
  debug.sethook()
  print(("one request: %d Lua VM instructions"):format(count))
  return
end

if mode == "strict" then core.budget_strict(true) end
local budget = (mode == "on" or mode == "strict") and 1000 or nil
if arg[4] == "paired" then
  -- Each request twice, once under pcall and once under budget_call, in
  -- one process: both see the same string hash seed and table layouts, so
  -- callgrind's inclusive costs of luaB_pcall and l_budget_call compare
  -- exactly.
  core.spawn(function()
    for _ = 1, n do
      pcall(handler, request)
      core.budget_call(budget, handler, request)
    end
  end)
  core.run()
  return
end
core.spawn(function()
  local sink = 0
  if mode == "none" then
    for _ = 1, n do
      local ok, r = pcall(handler, request)
      if ok then sink = sink + r.big end
    end
  else
    for _ = 1, n do
      local ok, r = core.budget_call(budget, handler, request)
      if ok then sink = sink + r.big end
    end
  end
  assert(sink == n * select(2, pcall(handler, request)).big)
end)
core.run()
