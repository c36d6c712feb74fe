-- One version string: CMakeLists.txt's project(VERSION) is compiled into
-- hemera.core; everything else that names a version must agree with it.
local Hemera = require "hemera"
local core = require "hemera.core"
local src = assert(os.getenv("HEMERA_SRC"), "HEMERA_SRC is not set")
local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")

local function slurp(path)
  local f = assert(io.open(path))
  local t = f:read("a")
  f:close()
  return t
end

describe("the version", function()
  local cmake_version = slurp(src .. "/CMakeLists.txt"):match("\nproject%(hemera_lua VERSION ([%d.]+)")

  it("is CMake's project version, in hemera.core and Hemera.VERSION", function()
    assert.is_string(cmake_version)
    assert.equal(cmake_version, core.VERSION)
    assert.equal(cmake_version, Hemera.VERSION)
  end)

  it("is the rockspec's file name and version", function()
    local rockspec = ("%s/hemera-%s-1.rockspec"):format(src, cmake_version)
    local text = slurp(rockspec)
    assert.equal(cmake_version .. "-1", text:match('\nversion = "([^"]+)"'))
    local p = assert(io.popen("ls " .. src .. "/*.rockspec"))
    local names = p:read("a")
    p:close()
    assert.equal(rockspec .. "\n", names, "one rockspec, for this version")
  end)

  it("heads CHANGELOG.md", function()
    local first = slurp(src .. "/CHANGELOG.md"):match("\n## %[?([%d.]+)")
    assert.equal(cmake_version, first)
  end)

  it("is the first line of hemera --version", function()
    local p = assert(io.popen(bin .. " --version"))
    local out = p:read("a")
    p:close()
    assert.equal("hemera " .. cmake_version, out:match("^[^\n]+"))
  end)
end)
