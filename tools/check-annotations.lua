-- Annotation coverage (ctest lint.annotations), after luv's docs check:
-- every public function of the modules below must have a LuaLS annotation
-- in types/, every annotated one must exist, and docs/api.md and the
-- annotations must name the same functions.
--
--   lua5.4 tools/check-annotations.lua [--types DIR] [--docs FILE]
--
-- Needs LUA_PATH/LUA_CPATH that load hemera and its plugins (ctest sets
-- them). Prints one line per disagreement and exits 1 when there is any.

local types_dir, docs_file = "types", "docs/api.md"
do
  local i = 1
  while arg[i] do
    if arg[i] == "--types" then types_dir = assert(arg[i + 1], "--types needs a directory")
    elseif arg[i] == "--docs" then docs_file = assert(arg[i + 1], "--docs needs a file")
    else error("check-annotations: unknown argument " .. arg[i]) end
    i = i + 2
  end
end

-- The public modules. `doc`: how docs/api.md names their functions (a Lua
-- pattern capturing the name, with the separator `.` or `:` as second
-- capture where methods and functions share the table); `internal`: a
-- module whose other functions back Hemera's own methods, so only the
-- annotated ones are public.
local MODULES = {
  { name = "hemera", file = "hemera.lua",
    doc = { "`Hemera(%.)([%a_][%w_]*)", "[^%w_]hemera(:)([%a_][%w_]*)" },
    objects = { ["Hemera.Future"] = function(H) return H.future() end } },
  { name = "hemera.testing", file = "testing.lua", doc = { "testing(%.)([%a_][%w_]*)[(`]" } },
  { name = "hemera.jwt", file = "jwt.lua", doc = { "jwt(%.)([%a_][%w_]*)[(`]" } },
  { name = "hemera.msgpack", file = "msgpack.lua", doc = { "msgpack(%.)([%a_][%w_]*)[(`]" } },
  { name = "hemera.metrics", file = "metrics.lua", doc = {} },
  { name = "hemera.stats", file = "stats.lua", doc = {} },
  { name = "hemera.web", file = "web.lua", doc = {} },
  { name = "hemera.tracing", file = "tracing.lua",
    doc = { "require%(\"hemera%.tracing\"%)(%.)([%a_][%w_]*)" } },
  { name = "hemera.durable", file = "durable.lua", internal = true,
    doc = { "require%(\"hemera%.durable\"%)(%.)([%a_][%w_]*)" } },
  { name = "hemera.validation.schema", file = "validation_schema.lua", doc = { "`S(%.)([%a_][%w_]*)[(`]" } },
  { name = "hemera.validation.jsonschema", file = "validation_jsonschema.lua",
    doc = { "`J(%.)([%a_][%w_]*)[(`]" } },
}

-- Every other module of the library, and why it has no definitions: the
-- check below fails on a module file in neither list, so a new plugin
-- cannot land without them.
local INTERNAL = {
  ["hemera.cli"] = "the hemera interpreter's command line",
  ["hemera.client"] = "act, behind Hemera:act",
  ["hemera.server"] = "the request path, behind Hemera:add",
  ["hemera.config"] = "Hemera.new's option checks (Hemera.Options)",
  ["hemera.errors"] = "public as Hemera.errors and Hemera.createError",
  ["hemera.log"] = "the built-in logger (the logger option)",
  ["hemera.micro"] = "public as Hemera:service and Hemera:reset",
  ["hemera.pattern"] = "public as Hemera.parsePattern",
  ["hemera.reply"] = "public as ctx.reply (Hemera.Reply)",
  ["hemera.util"] = "helpers of the library",
  ["hemera.wire"] = "the envelope",
  ["hemera.validation.values"] = "helpers of the two validation modules",
}

local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end

local function read(path)
  local f, err = io.open(path, "r")
  if not f then error("check-annotations: " .. err, 0) end
  local s = f:read("a")
  f:close()
  return s
end

-- One definition file: its classes (`---@class Name` followed by
-- `local V = {}`), each with its functions (name -> "." or ":") and
-- fields, and the class the file returns.
local function parse_types(path)
  local classes, by_local, pending, returned = {}, {}, nil, nil
  local n = 0
  for line in (read(path) .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    local cname = line:match("^%-%-%-@class%s+([%w_.]+)")
    if cname then
      pending = { name = cname, fns = {}, fields = {}, line = n }
      classes[cname] = pending
    elseif pending and line:match("^%-%-%-@field") then
      local fname = line:match("^%-%-%-@field%s+([%a_][%w_]*)")
      if fname then pending.fields[fname] = true end
    elseif line:match("^local%s+[%a_][%w_]*%s*=%s*{}") then
      if pending then by_local[line:match("^local%s+([%a_][%w_]*)")] = pending end
      pending = nil
    elseif not line:match("^%-%-%-") then
      pending = nil
    end
    local v, sep, fname = line:match("^function%s+([%a_][%w_]*)([.:])([%a_][%w_]*)%s*%(")
    if v then
      local c = by_local[v]
      if not c then problem("%s:%d: function %s%s%s on a local that is not a ---@class", path, n, v, sep, fname)
      else c.fns[fname] = sep end
    end
    local r = line:match("^return%s+([%a_][%w_]*)%s*$")
    if r then returned = by_local[r] end
  end
  return classes, returned
end

-- Function names documented in docs/api.md for the module, name -> sep.
local function doc_names(docs, patterns)
  local names = {}
  for _, pat in ipairs(patterns) do
    for sep, name in docs:gmatch(pat) do names[name] = sep end
  end
  return names
end

local function sorted(t)
  local r = {}
  for k in pairs(t) do r[#r + 1] = k end
  table.sort(r)
  return r
end

-- The public functions of a live table: its own function fields, and for
-- userdata or tables with an __index table, those too. `_` names are private.
local function functions_of(v)
  local r, seen = {}, {}
  local function scan(t)
    if type(t) ~= "table" or seen[t] then return end
    seen[t] = true
    for k, x in pairs(t) do
      if type(k) == "string" and not k:match("^_") and type(x) == "function" then r[k] = true end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then scan(mt.__index) end
  end
  if type(v) == "userdata" then
    local mt = getmetatable(v)
    if type(mt) == "table" then scan(mt.__index) end
  else
    scan(v)
  end
  return r
end

-- The library's module files, as module names.
do
  local known = {}
  for _, m in ipairs(MODULES) do known[m.name] = true end
  local p = assert(io.popen("find lua/hemera modules/hemera -name '*.lua' | sort"))
  local found = 0
  for path in p:lines() do
    found = found + 1
    local name = path:gsub("^lua/", ""):gsub("^modules/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    if not known[name] and not INTERNAL[name] then
      problem("%s: %s is neither a public module with definitions nor listed as internal", name, path)
    end
  end
  p:close()
  if found == 0 then problem("no module files under lua/hemera and modules/hemera (run from the source tree)") end
end

local docs = read(docs_file)
for _, m in ipairs(MODULES) do
  local path = types_dir .. "/" .. m.file
  local classes, class = parse_types(path)
  local ok, mod = pcall(require, m.name)
  if not ok then
    problem("%s: require failed: %s", m.name, tostring(mod))
  elseif not class then
    problem("%s: does not end with `return <local of a ---@class>`", path)
  else
    local live = functions_of(mod)
    -- A plugin's register is the plugin protocol, documented once under
    -- "Plugins and decorators", not per plugin.
    local is_plugin = type(mod) == "table" and type(mod.register) == "function"
    if not m.internal then
      for _, name in ipairs(sorted(live)) do
        if not class.fns[name] and not class.fields[name] then
          problem("%s: %s.%s has no annotation in %s", m.name, m.name, name, path)
        end
      end
    end
    for _, name in ipairs(sorted(class.fns)) do
      if not live[name] then
        problem("%s: %s annotates %s%s%s, which %s does not have", m.name, path, class.name, class.fns[name], name, m.name)
      end
    end
    local documented = doc_names(docs, m.doc)
    for _, name in ipairs(sorted(documented)) do
      local sep = documented[name]
      if class.fns[name] then
        if class.fns[name] ~= sep then
          problem("%s: %s documents %s with '%s' but %s annotates it with '%s'",
                  m.name, docs_file, name, sep, path, class.fns[name])
        end
      elseif not class.fields[name] then
        problem("%s: %s documents %s%s, which %s does not annotate", m.name, docs_file, name == "" and "?" or sep, name, path)
      end
    end
    for _, name in ipairs(sorted(class.fns)) do
      if not documented[name] and not (is_plugin and name == "register") then
        problem("%s: %s annotates %s%s%s, which %s does not document", m.name, path, class.name, class.fns[name], name, docs_file)
      end
    end
    for cname, make in pairs(m.objects or {}) do
      local c = classes[cname]
      if not c then
        problem("%s: no ---@class %s in %s", m.name, cname, path)
      else
        local obj_fns = functions_of(make(mod))
        for _, name in ipairs(sorted(obj_fns)) do
          if not c.fns[name] then problem("%s: %s:%s has no annotation in %s", m.name, cname, name, path) end
        end
        for _, name in ipairs(sorted(c.fns)) do
          if not obj_fns[name] then problem("%s: %s annotates %s:%s, which it does not have", m.name, path, cname, name) end
        end
      end
    end
  end
end

if #problems > 0 then
  io.stderr:write(table.concat(problems, "\n"), "\n")
  io.stderr:write(string.format("check-annotations: %d problem(s)\n", #problems))
  os.exit(1)
end
print("check-annotations: annotations, code and " .. docs_file .. " agree")
