-- A math service. Run it with `hemera examples/math_service.lua`; it serves
-- until Ctrl-C (which drains: requests in flight are answered). Start as
-- many as you like: NATS balances requests across them (queue group
-- "queue.math", the same as Node Hemera's).
-- HEMERA_LOG=info shows a log line per request.
local Hemera = require "hemera"

local hemera = Hemera.new { name = "math-service", logLevel = os.getenv("HEMERA_LOG") or "warn" }

hemera:add({ topic = "math", cmd = "add" }, function(req)
  return req.a + req.b
end)

hemera:add({ topic = "math", cmd = "div" }, function(req)
  if req.b == 0 then
    return nil, { name = "DivisionByZero", message = "cannot divide by zero", code = 400 }
  end
  return req.a / req.b
end)

-- A nested call: the trace and meta travel on to `math.add`.
hemera:add("topic:math,cmd:sum", function(req, ctx)
  local total = 0
  for _, n in ipairs(req.numbers) do
    total = assert(ctx:act { topic = "math", cmd = "add", a = total, b = n })
  end
  return total
end)

hemera:ready()
return hemera
