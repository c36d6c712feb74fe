-- Shared by the specs that run processes through a shell.
local M = {}

-- s as one shell word.
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs cmd in a shell: ok, its exit code, and what it wrote (stdout and
-- stderr together).
function M.run(cmd)
  local out = os.tmpname()
  local ok, _, code = os.execute(cmd .. " >" .. out .. " 2>&1")
  local f = assert(io.open(out))
  local text = f:read("a")
  f:close()
  os.remove(out)
  return ok, code, text
end

-- A whole file's text, and a file written with text.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

return M
