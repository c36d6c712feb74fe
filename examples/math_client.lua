-- A client of the math service: `hemera examples/math_client.lua` while
-- `hemera examples/math_service.lua` runs in another terminal (with no
-- server configured, both use the shared local nats-server). Alone, its
-- first assert fails on a TimeoutError: the interpreter prints it with its
-- traceback and exits 1.
local Hemera = require "hemera"

local hemera = Hemera.new { name = "math-client" }

hemera:ready(function()
  local sum = assert(hemera:act { topic = "math", cmd = "add", a = 1, b = 2 })
  print("1 + 2 = " .. sum)

  local quotient = assert(hemera:act("topic:math,cmd:div,a:10,b:4"))
  print("10 / 4 = " .. quotient)

  local total = assert(hemera:act { topic = "math", cmd = "sum", numbers = { 1, 2, 3, 4 } })
  print("sum of 1..4 = " .. total)

  local _, err = hemera:act { topic = "math", cmd = "div", a = 1, b = 0 }
  print("1 / 0 fails: " .. tostring(err))

  local _, missing = hemera:act { topic = "math", cmd = "sqrt", a = 4 }
  print("math.sqrt: " .. tostring(missing))

  local _, timeout = hemera:act { topic = "physics", cmd = "g", timeout_ = 200 }
  print("nobody serves physics: " .. tostring(timeout))

  -- Done: close every Hemera instance of this process (just this client
  -- when run alone; the service too in `make demo`), so the process ends.
  Hemera.closeAll()
end)

return hemera
