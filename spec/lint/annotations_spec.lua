-- The annotation checker itself (ctest lint.annotations_checker): it must
-- fail, naming the function, on each kind of disagreement, fed from a temp
-- copy of types/ and docs/api.md with one deliberate change.
local src = os.getenv("HEMERA_SRC") or "."
local lua = os.getenv("HEMERA_LUA") or "lua5.4"

local shell = require "shell"
local sh_quote, slurp, spit = shell.quote, shell.read, shell.write

local tmp

-- A fresh copy of types/ and the docs, `edit` applied to one of them
-- (plain-text find and replace, which must hit).
local function copy(edit)
  assert(os.execute("rm -rf " .. sh_quote(tmp) .. " && mkdir -p " .. sh_quote(tmp)
    .. " && cp -R " .. sh_quote(src .. "/types") .. " " .. sh_quote(tmp .. "/types")))
  spit(tmp .. "/api.md", slurp(src .. "/docs/api.md"))
  if edit then
    local path = tmp .. "/" .. edit.file
    local s = slurp(path)
    local i, j = s:find(edit.find, 1, true)
    assert(i, "the edit's text is not in " .. edit.file .. ": " .. edit.find)
    spit(path, s:sub(1, i - 1) .. edit.replace .. s:sub(j + 1))
  end
end

local function check()
  local _, code, out = shell.run("cd " .. sh_quote(src) .. " && " .. lua .. " tools/check-annotations.lua --types "
    .. sh_quote(tmp .. "/types") .. " --docs " .. sh_quote(tmp .. "/api.md"))
  return code, out
end

describe("tools/check-annotations.lua", function()
  setup(function() tmp = os.tmpname(); os.remove(tmp) end)
  teardown(function() os.execute("rm -rf " .. sh_quote(tmp)) end)

  it("passes on the tree as it is", function()
    copy()
    local rc, out = check()
    assert.equal(0, rc, out)
  end)

  it("fails on a public function without annotation", function()
    copy { file = "types/hemera.lua", find = "function Hemera:flush() end\n", replace = "" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("hemera.flush has no annotation", 1, true), out)
  end)

  it("fails on a plugin function without annotation", function()
    copy { file = "types/testing.lua", find = "function M.topic(base) end\n", replace = "" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("hemera.testing.topic has no annotation", 1, true), out)
  end)

  it("fails on an object method without annotation", function()
    copy { file = "types/hemera.lua", find = "function Future:is_set() end\n", replace = "" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("Hemera.Future:is_set has no annotation", 1, true), out)
  end)

  it("fails on an annotated function the code does not have", function()
    copy { file = "types/hemera.lua", find = "function Hemera:flush() end\n",
           replace = "function Hemera:flush() end\nfunction Hemera:flush2() end\n" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("annotates Hemera:flush2, which hemera does not have", 1, true), out)
  end)

  it("fails on a documented function that is not annotated", function()
    copy { file = "api.md", find = "## Utilities\n", replace = "## Utilities\n\n- `hemera:nothing()`: no such thing.\n" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("documents :nothing, which", 1, true), out)
  end)

  it("fails on an annotated function that is not documented", function()
    copy { file = "api.md", find = "- `Hemera.parsePattern(s)`", replace = "- `parsePattern(s)`" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("annotates Hemera.parsePattern, which", 1, true), out)
  end)

  it("fails when the docs call a method a function", function()
    copy { file = "api.md", find = "`hemera:fatal()`", replace = "`Hemera.fatal()`" }
    local rc, out = check()
    assert.equal(1, rc, out)
    assert.truthy(out:find("documents fatal with '.' but", 1, true), out)
  end)
end)
