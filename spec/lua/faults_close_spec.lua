-- Faults: close() under load drains. In-flight handlers finish (bounded by
-- closeTimeout), their replies are sent, then the connection closes.
local Hemera = require "hemera"
local core = require "hemera.core"
local testing = require "hemera.testing"

local function gate()
  local g = { open = false, waiting = {} }
  function g:wait()
    if self.open then return end
    local f = testing.future()
    self.waiting[#self.waiting + 1] = f
    f:wait()
  end
  function g:release()
    self.open = true
    for _, f in ipairs(self.waiting) do f:set() end
    self.waiting = {}
  end
  return g
end

-- Errors no handler caught (the scheduler's last resort) are collected
-- instead of printed.
local uncaught
local saved_on_error
local function catch_uncaught()
  uncaught = {}
  saved_on_error = core.on_error
  core.on_error = function(err) uncaught[#uncaught + 1] = tostring(err) end
end

describe("faults: close() under load", function()
  local srv
  setup(function() srv = testing.start_server() end)
  teardown(function() testing.stop_all() end)
  before_each(catch_uncaught)
  after_each(function() core.on_error = saved_on_error end)

  it("lets in-flight handlers finish, sends their replies, then closes", function()
    testing.run(function()
      local topic = testing.topic("drain")
      local s = Hemera.new { servers = srv.url, closeTimeout = 10000 }
      local hold = gate()
      local M, entered, all_in = 30, 0, testing.future()
      s:add({ topic = topic }, function(req)
        entered = entered + 1
        if entered == M then all_in:set() end
        hold:wait()
        return req.k * 10
      end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local results, ended, all_done = {}, 0, testing.future()
      local calls = {}
      for k = 1, M do
        c:act({ topic = topic, k = k, timeout_ = 10000 }, function(err, res)
          calls[k] = (calls[k] or 0) + 1
          results[k] = err or res
          ended = ended + 1
          if ended == M then all_done:set() end
        end)
      end
      assert.is_nil(select(2, all_in:wait(10000)))

      local closed = testing.future()
      local finished_at_close
      s:close(function(err)
        finished_at_close = ended
        closed:set(err)
      end)
      -- Closing has begun: the handlers still run and hold the close.
      assert.is_false(closed:is_set())
      -- The topic is unsubscribed at once (drained: what the server sent
      -- before is still served): once the server has the UNSUB, a new
      -- request is not taken.
      assert.is_true(s._i.conn:flush(5000))
      local _, lerr = c:act { topic = topic, k = 0, timeout_ = 300 }
      assert.is_true(Hemera.errors.TimeoutError:is(lerr))
      assert.equal(M, entered)
      assert.is_false(closed:is_set())

      hold:release()
      assert.is_nil(select(2, closed:wait(15000)))
      assert.is_nil(select(2, all_done:wait(10000)))
      for k = 1, M do
        assert.equal(1, calls[k])
        assert.equal(k * 10, results[k])
      end
      assert.is_true(s._i.conn:is_closed())
      assert.is_number(finished_at_close)
      assert.same({}, uncaught)
    end, 25000)
  end)

  it("in-flight handlers may still act while the instance drains", function()
    testing.run(function()
      local topic = testing.topic("drain-nested")
      local backend = Hemera.new { servers = srv.url }
      backend:add({ topic = topic .. ".backend" }, function(req) return req.x + 1 end)
      assert(backend:ready())
      local s = Hemera.new { servers = srv.url, closeTimeout = 10000 }
      local hold = gate()
      local entered = testing.future()
      s:add({ topic = topic }, function(req, ctx)
        entered:set()
        hold:wait()
        local r, err = ctx:act { topic = topic .. ".backend", x = req.x }
        if err then return nil, err end
        return r * 2
      end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local got = testing.future()
      c:act({ topic = topic, x = 4, timeout_ = 10000 }, function(err, res) got:set(err, res) end)
      entered:wait(10000)
      local closed = testing.future()
      s:close(function() closed:set(true) end)
      hold:release()
      local err, res = got:wait(10000)
      assert.is_nil(err)
      assert.equal(10, res)
      assert.is_true(closed:wait(10000))
      assert.same({}, uncaught)
    end, 25000)
  end)

  it("waits at most closeTimeout for handlers that do not finish, logs it, and their callers end once", function()
    testing.run(function()
      local slog = testing.logger()
      local topic = testing.topic("stuck")
      local s = Hemera.new { servers = srv.url, closeTimeout = 200, logger = slog }
      local hold = gate()
      local M, entered, all_in = 5, 0, testing.future()
      s:add({ topic = topic }, function(req)
        entered = entered + 1
        if entered == M then all_in:set() end
        hold:wait()
        return "too late"
      end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local calls, ended, all_done, outcomes = {}, 0, testing.future(), {}
      for k = 1, M do
        c:act({ topic = topic, k = k, timeout_ = 1000 }, function(err, res)
          calls[k] = (calls[k] or 0) + 1
          if calls[k] == 1 then
            outcomes[k] = err
            ended = ended + 1
            if ended == M then all_done:set() end
          end
        end)
      end
      assert.is_nil(select(2, all_in:wait(10000)))
      local closed = testing.future()
      s:close(function() closed:set(true) end)
      assert.is_true(closed:wait(10000))
      local rec = assert(slog:find("Closing with handlers still running"), slog:text())
      assert.equal("warn", rec.level)
      assert.equal(M, rec.fields.running)
      -- The handlers finish after the connection is gone: nothing crashes,
      -- nothing is raised to the scheduler, no reply goes out.
      hold:release()
      assert.is_nil(select(2, all_done:wait(10000)))
      for k = 1, M do
        assert.equal(1, calls[k])
        assert.is_true(Hemera.errors.TimeoutError:is(outcomes[k]))
      end
      -- A probe round trip on the caller: no stray reply came in.
      local probe = Hemera.new { servers = srv.url }
      probe:add({ topic = topic .. ".probe" }, function() return 1 end)
      assert(probe:ready())
      assert(c:act { topic = topic .. ".probe" })
      assert.equal(1, calls[1])
      assert.same({}, uncaught)
      local internal = slog:find("Internal error")
      assert(not internal, "a handler that finished after close() logged an internal error: "
        .. (internal and internal.text:sub(1, 300) or ""))
    end, 25000)
  end)

  it("ends the instance's own pending acts with an error, once each", function()
    testing.run(function()
      local topic = testing.topic("own")
      local s = Hemera.new { servers = srv.url }
      local hold = gate()
      local M, entered, all_in = 10, 0, testing.future()
      s:add({ topic = topic }, function()
        entered = entered + 1
        if entered == M then all_in:set() end
        hold:wait()
        return 1
      end)
      assert(s:ready())
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      local calls, errs, ended, all_done = {}, {}, 0, testing.future()
      for k = 1, M do
        c:act({ topic = topic, timeout_ = 60000 }, function(err)
          calls[k] = (calls[k] or 0) + 1
          if calls[k] == 1 then
            errs[k] = err
            ended = ended + 1
            if ended == M then all_done:set() end
          end
        end)
      end
      assert.is_nil(select(2, all_in:wait(10000)))
      local closed = testing.future()
      c:close(function() closed:set(true) end)
      assert.is_nil(select(2, all_done:wait(10000)))
      assert.is_true(closed:wait(10000))
      for k = 1, M do
        assert.equal(1, calls[k])
        assert.is_table(errs[k])
        assert.is_false(Hemera.errors.TimeoutError:is(errs[k]))
        assert.matches("closed", tostring(errs[k]))
      end
      hold:release()
      assert.same({}, uncaught)
    end, 25000)
  end)

  it("close() with no handler running closes at once and a second close() still calls back", function()
    testing.run(function()
      local s = Hemera.new { servers = srv.url, closeTimeout = 60000 }
      s:add({ topic = testing.topic("idle") }, function() return 1 end)
      assert(s:ready())
      local first, second = testing.future(), testing.future()
      s:close(function() first:set(true) end)
      s:close(function() second:set(true) end)
      assert.is_true(first:wait(10000))
      assert.is_true(second:wait(10000))
      local third = testing.future()
      s:close(function() third:set(true) end)
      assert.is_true(third:wait(10000))
    end, 25000)
  end)
  it("the hemera interpreter drains on SIGTERM: in-flight handlers finish and reply, then it exits 0", function()
    local bin = assert(os.getenv("HEMERA_BIN"), "HEMERA_BIN is not set")
    local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/hemera-sigterm.XXXXXX\"")):read("l")
    local topic = testing.topic("sigterm")
    local script = dir .. "/service.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
local Hemera = require "hemera"
local pid = io.open("/proc/self/stat"):read("l"):match("^(%%d+)")
local hemera = Hemera.new { closeTimeout = 10000 }
hemera:add({ topic = %q }, function(req)
  -- Tell the spec this handler runs (and our pid), then work slowly.
  hemera:act { topic = %q, pubsub_ = true, pid = pid }
  Hemera.sleep(300)
  return req.k * 2
end)
hemera:ready()
]]):format(topic, topic .. ".entered"))
    f:close()
    -- The wrapper shell records the exit status; `timeout` is a safety net
    -- should the service never exit.
    local status_file = dir .. "/status"
    os.execute(("sh -c 'timeout -s KILL 60 %s --server %s %s >%s/out.txt 2>&1; echo $? >%s' &")
      :format(bin, srv.url, script, dir, status_file))
    local pid
    local ok, err = pcall(testing.run, function()
      local M = 8
      local entered, all_in = 0, testing.future()
      local watcher = Hemera.new { servers = srv.url }
      watcher:add({ topic = topic .. ".entered", pubsub_ = true }, function(req)
        pid = req.pid
        entered = entered + 1
        if entered == M then all_in:set() end
      end)
      assert(watcher:ready())
      local c = Hemera.new { servers = srv.url }
      assert(c:ready())
      -- The service may still be starting: a first act waits for it.
      local ready_probe
      for _ = 1, 100 do
        ready_probe = c:act { topic = topic, k = 0, timeout_ = 2000 }
        if ready_probe == 0 then break end
      end
      assert.equal(0, ready_probe, "the service script did not start:\n"
        .. (io.open(dir .. "/out.txt") and io.open(dir .. "/out.txt"):read("a") or ""))
      entered = 0
      local results, ended, all_done = {}, 0, testing.future()
      for k = 1, M do
        c:act({ topic = topic, k = k, timeout_ = 10000 }, function(err, res)
          results[k] = err or res
          ended = ended + 1
          if ended == M then all_done:set() end
        end)
      end
      assert.is_nil(select(2, all_in:wait(10000)))
      os.execute("kill -TERM " .. pid)
      assert.is_nil(select(2, all_done:wait(15000)))
      for k = 1, M do assert.equal(k * 2, results[k]) end
      -- The process exit is no event we can await (not our child): poll.
      local status
      for _ = 1, 1000 do
        local sf = io.open(status_file)
        status = sf and sf:read("l")
        if sf then sf:close() end
        if status and status ~= "" then break end
        Hemera.sleep(10)
      end
      local out = io.open(dir .. "/out.txt")
      local text = out and out:read("a") or ""
      if out then out:close() end
      assert.equal("0", status, text)
    end, 25000)
    if pid and testing.alive(pid) then os.execute("kill -KILL " .. pid) end
    os.execute("rm -rf '" .. dir .. "'")
    if not ok then error(err, 0) end
  end)
end)
