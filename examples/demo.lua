-- `make demo`: the math service and its client in one process, talking
-- over NATS (the shared local nats-server when none is configured, see
-- the README). The client closes every instance when it is done, so the
-- demo ends by itself. In two terminals, run math_service.lua in one and
-- math_client.lua in the other.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "examples"
dofile(dir .. "/math_service.lua")
dofile(dir .. "/math_client.lua")
