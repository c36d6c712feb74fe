-- The rules of ADR-32's JSON schemas (nats-io/jsm.go, schemas/micro/v1:
-- ping_response.json, info_response.json, stats_response.json), written out
-- as checks. check(kind, response) -> true | nil, "path: what is wrong".
-- kind: "ping" | "info" | "stats". Only the rules are copied, not the files.
local M = {}

local NAME = "^[a-zA-Z0-9_-]+$"
local INT64_MAX = math.maxinteger
local INT64_MIN = -math.maxinteger -- the schemas' minimum: -(2^63 - 1)

-- SemVer 2.0.0, as the schemas' "version" pattern (semver.org's regex).
local function numeric(s) return s == "0" or s:match("^[1-9]%d*$") ~= nil end
local function semver(v)
  local a, b, c, rest = v:match("^(%d+)%.(%d+)%.(%d+)(.*)$")
  if not a or not numeric(a) or not numeric(b) or not numeric(c) then return false end
  local pre, build = rest:match("^%-([^+]+)(.*)$")
  if pre then
    for id in (pre .. "."):gmatch("([^.]*)%.") do
      if id:match("^%d+$") then
        if not numeric(id) then return false end
      elseif not id:match("^[0-9A-Za-z-]+$") then
        return false
      end
    end
    rest = build
  end
  if rest == "" then return true end
  local bld = rest:match("^%+(.+)$")
  if not bld then return false end
  for id in (bld .. "."):gmatch("([^.]*)%.") do
    if not id:match("^[0-9A-Za-z-]+$") then return false end
  end
  return true
end
M.semver = semver

local function fail(path, msg) error({ path = path, msg = msg }, 0) end

local function string_field(t, k, path, opts)
  local v = t[k]
  if v == nil then
    if opts.required then fail(path .. k, "is required") end
    return
  end
  if type(v) ~= "string" then fail(path .. k, "must be a string, got " .. type(v)) end
  if opts.min and #v < opts.min then fail(path .. k, "must have at least " .. opts.min .. " characters") end
  if opts.pattern and not v:match(opts.pattern) then fail(path .. k, "must match " .. opts.pattern .. ", got " .. v) end
end

local function int_field(t, k, path)
  local v = t[k]
  if v == nil then fail(path .. k, "is required") end
  if math.type(v) ~= "integer" then fail(path .. k, "must be an integer, got " .. tostring(v)) end
  if v > INT64_MAX or v < INT64_MIN then fail(path .. k, "is outside the int64 range") end
end

-- metadata: an object of strings, or null (absent is fine too).
local function metadata(t, path, null)
  local m = t.metadata
  if m == nil or m == null then return end
  if type(m) ~= "table" or (m[1] ~= nil) then fail(path .. "metadata", "must be an object of strings") end
  for k, v in pairs(m) do
    if type(k) ~= "string" or type(v) ~= "string" then
      fail(path .. "metadata." .. tostring(k), "must be a string, got " .. type(v))
    end
  end
end

local TYPES = {
  ping = "io.nats.micro.v1.ping_response",
  info = "io.nats.micro.v1.info_response",
  stats = "io.nats.micro.v1.stats_response",
}

local function standard(kind, r, null)
  if type(r) ~= "table" then fail("", "must be an object") end
  string_field(r, "type", "", { required = true })
  if r.type ~= TYPES[kind] then fail("type", "must be " .. TYPES[kind] .. ", got " .. tostring(r.type)) end
  string_field(r, "name", "", { required = true, min = 1, pattern = NAME })
  string_field(r, "id", "", { required = true, min = 1 })
  string_field(r, "version", "", { required = true, min = 5 })
  if not semver(r.version) then fail("version", "must be SemVer, got " .. r.version) end
  metadata(r, "", null)
end

-- RFC 3339 date-time (JSON Schema's "date-time" format).
local function date_time(s)
  return s:match("^%d%d%d%d%-%d%d%-%d%d[Tt]%d%d:%d%d:%d%d%.?%d*[Zz]$") ~= nil
      or s:match("^%d%d%d%d%-%d%d%-%d%d[Tt]%d%d:%d%d:%d%d%.?%d*[+-]%d%d:%d%d$") ~= nil
end

local function endpoints(r, kind, null)
  local eps = r.endpoints
  if eps == nil then
    if kind == "stats" then fail("endpoints", "is required") end
    return
  end
  if type(eps) ~= "table" then fail("endpoints", "must be an array") end
  for k, e in ipairs(eps) do
    local p = ("endpoints[%d]."):format(k - 1)
    if type(e) ~= "table" then fail(p, "must be an object") end
    string_field(e, "name", p, { required = true, min = 1, pattern = NAME })
    string_field(e, "subject", p, { required = true, min = 1 })
    string_field(e, "queue_group", p, {})
    if kind == "info" then
      metadata(e, p, null)
    else
      int_field(e, "num_requests", p)
      int_field(e, "num_errors", p)
      string_field(e, "last_error", p, { required = true })
      int_field(e, "processing_time", p)
      int_field(e, "average_processing_time", p)
      -- data: optional, an object when present.
      if e.data ~= nil and (type(e.data) ~= "table" or e.data[1] ~= nil) then
        fail(p .. "data", "must be an object, got " .. type(e.data))
      end
    end
  end
end

function M.check(kind, r, null)
  local ok, e = pcall(function()
    standard(kind, r, null)
    if kind == "info" then
      string_field(r, "description", "", { required = true })
      endpoints(r, kind, null)
    elseif kind == "stats" then
      string_field(r, "started", "", { required = true })
      if not date_time(r.started) then fail("started", "must be an RFC 3339 date-time, got " .. r.started) end
      endpoints(r, kind, null)
    end
  end)
  if ok then return true end
  if type(e) == "table" then return nil, (e.path ~= "" and e.path .. ": " or "") .. e.msg end
  error(e, 0)
end

return M
