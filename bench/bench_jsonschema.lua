-- Time of hemera.validation.jsonschema's `pattern` keyword on the inputs of
-- security finding 10 (regexes that backtrack catastrophically) and on a
-- 1 MB subject, through the public API (J.compile), so it measures what a
-- service pays per request.
--
--   hemera bench/bench_jsonschema.lua [case=bytes ...]
--   (or lua5.4 with LUA_PATH/LUA_CPATH set as in CMakeLists.txt's specs)
--
-- One line per case:
--   jsonschema <case> <bytes> B <ms> ms <outcome>
-- where outcome is "match", "no-match" or why the value failed otherwise
-- (e.g. `pattern check exceeded the match limit for "..."`). `case=bytes` shortens or lengthens a case's subject,
-- e.g. `redos_star=2000` (the old Lua matcher needed minutes at 20 KB).
local J = require "hemera.validation.jsonschema"

local clock = os.clock

local cases = {
  { name = "redos_plus", pattern = "^[a-z]+[a-z]*$", bytes = 8192,
    subject = function(n) return ("a"):rep(n - 1) .. "!" end },
  { name = "redos_star", pattern = "a*a*a*a*a*a*a*b", bytes = 20480,
    subject = function(n) return ("a"):rep(n) end },
  { name = "redos_class", pattern = "a*a*a*a*a*a*a*[bc]", bytes = 20480,
    subject = function(n) return ("a"):rep(n) end },
  { name = "simple_1mb", pattern = "^[a-z]+$", bytes = 1024 * 1024,
    subject = function(n) return ("a"):rep(n) end },
  { name = "unanchored_1mb", pattern = "\\d{3}-\\d{4}", bytes = 1024 * 1024,
    subject = function(n) return ("x"):rep(n - 8) .. "555-1234" end },
}

local sizes = {}
for i = 1, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(%d+)$")
  if not k then error("usage: bench_jsonschema.lua [case=bytes ...]", 0) end
  sizes[k] = tonumber(v)
end

for _, c in ipairs(cases) do
  local n = sizes[c.name] or c.bytes
  local s = c.subject(n)
  local check = J.compile { type = "string", pattern = c.pattern }
  local t0 = clock()
  local v, err = check(s)
  local ms = (clock() - t0) * 1000
  local outcome = "match"
  if not v then
    -- The message without its field and value: `pattern check exceeded
    -- the match limit for "..."`, or "must match pattern ..." (no match).
    local text = tostring(err and err.message)
    outcome = text:match('^"[^"]*" (.-) %(keyword ') or text
    if outcome:find("^must match pattern") then outcome = "no-match" end
  end
  io.write(("jsonschema %-15s %8d B %10.2f ms %s\n"):format(c.name, n, ms, outcome:sub(1, 100)))
  io.stdout:flush()
end
