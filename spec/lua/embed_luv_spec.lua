-- Embedding: luv and Hemera in one plain lua5.4 process. Each case runs in
-- a process of its own (busted's own process has Hemera open already).
local shell_quote = require("shell").quote

local function lua54(args)
  -- Sanitizer builds need their runtimes preloaded into a plain lua5.4.
  local preload = os.getenv("HEMERA_LUA_PRELOAD") or ""
  if preload ~= "" then
    preload = "LD_PRELOAD=" .. shell_quote(preload) .. " ASAN_OPTIONS=detect_leaks=0 "
  end
  -- A Hemera left off luv's loop never finishes: bound the wait.
  local p = io.popen(preload .. "timeout 60 lua5.4 " .. args .. " 2>&1")
  local text = p:read("a")
  local ok, _, code = p:close()
  return ok, code, text
end

describe("embedding: luv", function()
  it("require 'luv' then 'hemera': uv.run() drives a TCP echo, a timer and Hemera", function()
    local ok, code, text = lua54("spec/fixtures/luv_host.lua")
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("luv and hemera shared one loop", 1, true), text)
  end)

  it("a script that ends with Hemera and luv handles open exits cleanly", function()
    local ok, code, text = lua54("spec/fixtures/luv_exit.lua")
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("leaving with everything open", 1, true), text)
  end)

  it("Hemera.run() on luv's loop is uv.run(): it drives luv's handles too", function()
    local ok, code, text = lua54("-e " .. shell_quote([[
      local uv = require "luv"
      local Hemera = require "hemera"
      local ticks, slept, t = 0, false, uv.new_timer()
      t:start(1, 1, function() ticks = ticks + 1; if ticks == 3 then t:close() end end)
      Hemera.spawn(function() Hemera.sleep(1); slept = true end)
      Hemera.run()
      assert(ticks == 3 and slept, ticks)
      print("ran " .. ticks)
    ]]))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("ran 3", 1, true), text)
  end)

  it("Hemera.handleSignals on luv's loop: SIGINT closes every instance and ends Hemera.run() though a luv timer repeats", function()
    local ok, code, text = lua54("-e " .. shell_quote([[
      local uv = require "luv"
      local Hemera = require "hemera"
      Hemera.handleSignals { "SIGINT", "SIGTERM" }
      local hemera = Hemera.new { servers = os.getenv("HEMERA_NATS_URL") }
      hemera:add({ topic = "luv.signal" }, function() return 1 end)
      local ticks, t = 0, uv.new_timer()
      t:start(1, 1, function() ticks = ticks + 1 end)
      hemera:ready(function()
        hemera:ext("onClose", function() print("closed, luv ticked " .. tostring(ticks > 0)) end)
        uv.kill(uv.os_getpid(), "sigint")
      end)
      Hemera.run()
      print("Hemera.run returned")
    ]]))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("SIGINT: closing every instance", 1, true), text)
    assert.truthy(text:find("closed, luv ticked true", 1, true), text)
    assert.truthy(text:find("Hemera.run returned", 1, true), text)
  end)

  it("hemera opened before luv keeps its own loop", function()
    local ok, code, text = lua54("-e " .. shell_quote([[
      local core = require "hemera.core"
      require "luv"
      print("loop " .. core.stats().loop)
    ]]))
    assert.is_true(ok, text)
    assert.equal(0, code)
    assert.truthy(text:find("loop own", 1, true), text)
  end)
end)
