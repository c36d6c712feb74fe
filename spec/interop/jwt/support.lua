-- Support for the JWT specs: installs jsonwebtoken 9 (tools/jwt-setup.sh)
-- and has spec/interop/jwt/tokens.js make fresh keys and tokens for this
-- run, in a directory of the build tree removed by cleanup().
local core = require "hemera.core"

local S = {}

S.src = os.getenv("HEMERA_SRC") or "."
S.build = assert(os.getenv("HEMERA_BUILD"), "HEMERA_BUILD is not set: run the specs through ctest (make test)")
S.modules = S.build .. "/jwt/node_modules"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
S.shell_quote = shq

-- Runs a shell command; returns its output, or raises with it.
local function run(cmd, what)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error(what .. " failed:\n" .. out, 2) end
  return out
end
S.run = run

S.read = require("shell").read

local fixtures, dir

-- {t0, now, secret, files = {name = path}, tokens = {name = token}, dir}
function S.fixtures()
  if fixtures then return fixtures end
  run(("%s/tools/jwt-setup.sh %s"):format(shq(S.src), shq(S.build)), "tools/jwt-setup.sh")
  dir = ("%s/jwt/run-%s"):format(S.build, core.nuid())
  local out = run(("NODE_PATH=%s node %s %s"):format(shq(S.modules), shq(S.src .. "/spec/interop/jwt/tokens.js"), shq(dir)),
    "spec/interop/jwt/tokens.js")
  local line
  for l in out:gmatch("[^\n]+") do line = l end
  fixtures = assert(line and core.decode(line), "tokens.js printed no JSON:\n" .. out)
  fixtures.dir = dir
  return fixtures
end

-- A file of this run's directory (made by the caller, e.g. with openssl).
function S.path(name)
  return dir .. "/" .. name
end

function S.cleanup()
  if dir then os.execute("rm -rf " .. shq(dir)) end
  fixtures, dir = nil, nil
end

return S
