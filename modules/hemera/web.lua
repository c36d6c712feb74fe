--- hemera.web: an HTTP gateway into Hemera, the Lua counterpart of
-- hemera-web 5 (Express there; core.http_listen, on the instance's own
-- loop, here).
--
--     hemera:use(require "hemera.web", { listen = "127.0.0.1:3000" })
--
--   GET|POST /              the pattern is the query string and the body
--   GET|POST /:topic        ... and topic
--   GET|POST /:topic/:cmd   ... and topic and cmd
--
-- The pattern, in hemera-web's order (later wins): the base `pattern`
-- option (a table, or a function(req) returning one), the query string,
-- trace$ from the headers, the path's topic and cmd, then the body (a JSON
-- object, or a form; a text/* body goes in `textData`). Query and form
-- values stay strings, as Express gives them to hemera-web; a key given
-- twice is an array. The reply is the result as JSON; an error is
-- `{"error": {...}}` (its fields but those in errors.propBlacklist, the
-- stack by default) with its statusCode, else 504 for a timeout, 404 for
-- PatternNotFound, 500 for the rest.
--
-- Tracing: `traceparent` (W3C) gives trace$.traceId and parentSpanId;
-- x-request-trace-id and x-request-span-id (hemera-web's) override them.
--
-- Closing: an HTTP request being served counts as a request in flight, so
-- hemera:close() answers it before the NATS connection goes; requests
-- that come after close began get 503. See docs/api.md, "HTTP gateway".
--
-- @module hemera.web

local core = require "hemera.core"
local errors = require "hemera.errors"
local util = require "hemera.util"

local encode, decode, array = core.encode, core.decode, core.array
local JSON = { ["Content-Type"] = "application/json; charset=utf-8" }

local function bad_option(name, expected, got)
  error(errors.HemeraError(("Invalid option '%s' of hemera.web: expected %s, got %s")
    :format(name, expected, tostring(got)), { option = name }), 3)
end

-- {==================================================================
-- Requests into patterns
-- ===================================================================

local function hex_byte(h) return string.char(tonumber(h, 16)) end

-- A path segment: %XX decoded, '+' kept (it is only a space in a query).
local function unescape_path(s) return (s:gsub("%%(%x%x)", hex_byte)) end

local function unescape_form(s) return (s:gsub("+", " "):gsub("%%(%x%x)", hex_byte)) end

-- "a=1&b=x+y&a=2" into t: {a = array{"1", "2"}, b = "x y"}. A key without
-- '=' has the value "" (as Express's qs gives it).
local function parse_form(s, t)
  for part in s:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    if not k then k, v = part, "" end
    k, v = unescape_form(k), unescape_form(v)
    if k ~= "" then
      local old = t[k]
      if old == nil then
        t[k] = v
      elseif getmetatable(old) == core.array_mt then
        old[#old + 1] = v
      else
        t[k] = array { old, v }
      end
    end
  end
  return t
end

-- topic, cmd of "/", "/a", "/a/b" (a trailing slash allowed, as Express
-- allows it); false for any other path.
local function route(path)
  if path == "/" then return nil, nil end
  local a, b = path:match("^/([^/]+)/([^/]+)/?$")
  if a then return unescape_path(a), unescape_path(b) end
  a = path:match("^/([^/]+)/?$")
  if a then return unescape_path(a), nil end
  return false
end

local ZEROS32, ZEROS16 = ("0"):rep(32), ("0"):rep(16)

-- traceparent "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>":
-- trace id, parent id, or nil for a header W3C says to ignore.
local function traceparent(v)
  if type(v) ~= "string" then return nil end
  local ver, tid, pid = v:match("^(%x%x)%-(%x+)%-(%x+)%-%x%x")
  if not ver or ver == "ff" or #tid ~= 32 or #pid ~= 16 or tid == ZEROS32 or pid == ZEROS16 then return nil end
  return tid:lower(), pid:lower()
end

-- The media type of a Content-Type value, lower case, without parameters.
local function media_type(v)
  if type(v) ~= "string" then return nil end
  return (v:match("^%s*([^;%s]+)") or ""):lower()
end

local function http_error(status, name, message)
  return status, JSON, encode { error = { name = name, message = message, statusCode = status } }
end

-- The pattern of req, or nil, status, headers, body to answer instead.
local function pattern_of(req, base)
  local method = req.method
  if method ~= "GET" and method ~= "POST" and method ~= "HEAD" then
    return nil, 405, { ["Content-Type"] = JSON["Content-Type"], Allow = "GET, HEAD, POST" },
      encode { error = { name = "HttpError", message = ("method %s is not served: use GET or POST"):format(method),
                         statusCode = 405 } }
  end
  local topic, cmd = route(req.path)
  if topic == false then
    return nil, http_error(404, "HttpError",
      ("no route for %s: use /, /:topic or /:topic/:cmd"):format(req.path))
  end
  local p = {}
  local b = base
  if type(b) == "function" then b = b(req) end
  if b ~= nil and type(b) ~= "table" then
    error(("hemera.web: the pattern function must return a table, got %s"):format(type(b)), 0)
  end
  if b then for k, v in pairs(b) do p[k] = v end end
  if req.query then parse_form(req.query, p) end
  local h = req.headers
  local tid, psid = traceparent(h.traceparent)
  tid, psid = h["x-request-trace-id"] or tid, h["x-request-span-id"] or psid
  if tid or psid then
    local tr = util.obj(p["trace$"])
    tr = tr and util.copy(tr) or {}
    if tid then tr.traceId = tid end
    if psid then tr.parentSpanId = psid end
    p["trace$"] = tr
  end
  if topic then p.topic = topic end
  if cmd then p.cmd = cmd end
  local body, ctype = req.body, media_type(h["content-type"])
  if ctype and body ~= "" then
    if ctype == "application/json" or ctype:match("^application/[%w.%-]+%+json$") then
      local v, err = decode(body)
      if util.obj(v) == nil then
        return nil, http_error(400, "HttpError", v == nil and ("request body is not JSON: " .. tostring(err))
          or ("request body must be a JSON object, got " .. util.json_type(v)))
      end
      for k, x in pairs(v) do p[k] = x end
    elseif ctype == "application/x-www-form-urlencoded" then
      parse_form(body, p)
    elseif ctype:match("^text/") then
      p.textData = body
    else
      return nil, http_error(415, "HttpError",
        ("Content-Type %s is not served: send application/json, application/x-www-form-urlencoded or text/*")
          :format(ctype))
    end
  end
  return p
end

-- }==================================================================

-- {==================================================================
-- Replies
-- ===================================================================

local function status_of(e)
  local s = math.tointeger(e.statusCode)
  if s and s >= 100 and s <= 599 then return s end
  if errors.TimeoutError:is(e) then return 504 end
  if errors.PatternNotFound:is(e) then return 404 end
  return 500
end

-- The error as hemera-web sends it: every field but the blacklisted ones.
local function error_body(e, blacklist)
  local o = {}
  if type(e) ~= "table" then
    o.name, o.message = "Error", tostring(e)
  else
    for k, v in pairs(e) do o[k] = v end
  end
  for _, k in ipairs(blacklist) do o[k] = nil end
  return encode { error = o }
end

-- }==================================================================

local function register(scope, opts)
  local i = scope._i
  local host, port = util.parse_listen(opts.listen)
  if not host then
    bad_option("listen", "\"host:port\" with a numeric host and a port from 0 to 65535", ("%q"):format(opts.listen))
  end
  local base = opts.pattern
  if type(base) ~= "table" and type(base) ~= "function" then
    bad_option("pattern", "a table or a function(req)", type(base))
  end
  local eopts = opts.errors
  local blacklist = type(eopts) == "table" and eopts.propBlacklist
  if type(blacklist) ~= "table" then
    bad_option("errors.propBlacklist", "a list of field names", type(blacklist))
  end
  local log = scope.log

  local function answer(req)
    local p, status, headers, body = pattern_of(req, base)
    if not p then return status, headers, body end
    local ok, res, err = pcall(scope.act, scope, p)
    if not ok then
      -- act raises for a pattern it cannot send (no topic, a bad $ option):
      -- the client's input.
      local e = util.obj(res) or { name = "Error", message = tostring(res) }
      return http_error(400, e.name or "Error", tostring(e.message))
    end
    if err then return status_of(err), JSON, error_body(err, blacklist) end
    if res == nil then res = core.null end
    return 200, JSON, encode(res)
  end

  local function handler(req)
    if i.closing then return http_error(503, "HttpError", "the gateway is closing") end
    i.inflight = i.inflight + 1
    local ok, status, headers, body = pcall(answer, req)
    util.served(i)
    if not ok then
      log:error("hemera.web: request failed", { path = req.path, error = status })
      return http_error(500, "Error", "internal error")
    end
    return status, headers, body
  end

  local server, url = util.serve_http(scope, "hemera.web", host, port, opts, handler)
  scope:decorate("web", { host = host, port = server:port(), url = url })
  log:info("HTTP gateway listening", { url = url .. "/" })
end

return {
  name = "hemera-web",
  options = { listen = "127.0.0.1:3000", pattern = {}, errors = { propBlacklist = { "stack" } } },
  register = register,
}
