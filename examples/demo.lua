-- `make demo`: the math service and its client in one process, talking
-- over NATS (a private nats-server when none is configured). The client
-- closes every instance when it is done, so the demo ends by itself.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "examples"
dofile(dir .. "/math_service.lua")
dofile(dir .. "/math_client.lua")
