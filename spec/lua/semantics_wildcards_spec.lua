-- Hemera v7 behaviour, ported from nats-hemera's test/hemera/wildcards.spec.js
-- (and the wildcard cases of index.spec.js), plus the subject cases of
-- unit/util.spec.js's natsWildcardToRegex. Our decision: topic wildcards
-- follow NATS rules exactly (Node converts them to a case-insensitive RegExp
-- of [a-zA-Z0-9-] tokens); the cases below are those where both agree, then
-- the NATS-only ones.
local testing = require "hemera.testing"

describe("wildcards.spec.js", function()
  it("uses the > wildcard in a topic declaration", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      local seen
      hemera:add({ topic = base .. ".a.>", cmd = "info" }, function(req)
        seen = req.topic
        return true
      end)
      local res, err = hemera:act { topic = base .. ".a.info.details", cmd = "info" }
      assert.is_nil(err)
      assert.equal(true, res)
      assert.equal(base .. ".a.info.details", seen)
    end)
  end)

  it("uses the * wildcard in a topic declaration", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      local seen
      hemera:add({ topic = base .. ".a.*", cmd = "info" }, function(req)
        seen = req.topic
        return true
      end)
      local res, err = hemera:act { topic = base .. ".a.info", cmd = "info" }
      assert.is_nil(err)
      assert.equal(true, res)
      assert.equal(base .. ".a.info", seen)
    end)
  end)

  -- Hemera: both messages go to the first added pattern, so its handler
  -- runs twice. Here each subscription routes among its own patterns (a
  -- deliberate difference, docs/api.md): each handler runs once.
  it("runs each subscription's own handler when two wildcard topics overlap", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      local calls, calls2 = 0, 0
      local both = testing.future()
      local function seen()
        if calls + calls2 == 2 then both:set() end
        return true
      end
      hemera:add({ topic = base .. ".a.>", cmd = "info" }, function()
        calls = calls + 1
        return seen()
      end)
      hemera:add({ topic = base .. ".a.*", cmd = "info" }, function()
        calls2 = calls2 + 1
        return seen()
      end)
      local res, err = hemera:act { topic = base .. ".a.info", cmd = "info" }
      assert.is_nil(err)
      assert.equal(true, res)
      assert.is_nil(select(2, both:wait(2000)))
      assert.equal(1, calls)
      assert.equal(1, calls2)
    end)
  end)

  it("uses the > wildcard in pubsub mode", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      local got = testing.future()
      hemera:add({ topic = base .. ".a.>", cmd = "info" }, function(req) got:set(req.topic) end)
      hemera:act({ topic = base .. ".a.info.details", cmd = "info", pubsub_ = true }, function() end)
      assert.equal(base .. ".a.info.details", (got:wait(2000)))
    end)
  end)

  it("uses the * wildcard in pubsub mode", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      local got = testing.future()
      hemera:add({ topic = base .. ".a.*", cmd = "info" }, function(req) got:set(req.topic) end)
      hemera:act({ topic = base .. ".a.info", cmd = "info", pubsub_ = true }, function() end)
      assert.equal(base .. ".a.info", (got:wait(2000)))
    end)
  end)

  it("does not convert a topic without wildcard tokens", function()
    testing.run(function()
      local base = testing.topic("systems-europe")
      local hemera = testing.new()
      hemera:ready()
      hemera:add({ topic = base .. ".a", cmd = "info" }, function() return true end)
      local def = hemera.router:lookup { topic = base .. ".a", cmd = "info" }
      assert.equal(base .. ".a", def.pattern.topic)
      assert.is_nil(hemera.router:lookup { topic = base .. ".ab", cmd = "info" })
      assert.is_nil(hemera.router:lookup { topic = base .. ".a.b", cmd = "info" })
    end)
  end)
end)

describe("unit/util.spec.js natsWildcardToRegex subjects (routed by NATS rules)", function()
  local function routes(subject_pattern, subject)
    local hemera = testing.new()
    hemera:add({ topic = subject_pattern }, function() end)
    return hemera.router:lookup { topic = subject } ~= nil
  end

  it("matches * and > in the documented positions", function()
    testing.run(function()
      assert.is_true(routes("europe-system.*.foo-bar", "europe-system.test.foo-bar"))
      assert.is_false(routes("europe-system.*.foo-bar", "europe-system.test.foo"))
      assert.is_true(routes("europe-system.>", "europe-system.foo-bar"))
      assert.is_true(routes("a.*.b", "a.foo.b"))
      assert.is_false(routes("a.*.b", "a.foo.b.c"))
      assert.is_true(routes("a.>", "a.foo.b.bar"))
      assert.is_true(routes("a.>", "a.foo.b.bar.c"))
      assert.is_true(routes("a.*.b.*", "a.foo.b.bar"))
      assert.is_false(routes("a.*.b.*", "a.b.bar"))
    end)
  end)

  it("follows NATS, not Node's RegExp, where they differ", function()
    testing.run(function()
      -- > needs at least one token; * exactly one.
      assert.is_false(routes("a.>", "a"))
      assert.is_false(routes("a.*", "a"))
      assert.is_false(routes("a.*", "a.b.c"))
      -- Any token characters (Node's RegExp only takes [a-zA-Z0-9-]).
      assert.is_true(routes("a.*", "a.b_c"))
      assert.is_true(routes("a.>", "a.b_c.d$e"))
      -- Case-sensitive (Node's RegExp has the i flag).
      assert.is_false(routes("a.*", "A.b"))
      -- A literal '.' in the pattern is a token separator, not "any character".
      assert.is_false(routes("a.*", "aXb"))
    end)
  end)

  it("routes a request whose subject only NATS rules accept", function()
    testing.run(function()
      local base = testing.topic("wild")
      local hemera = testing.new()
      hemera:add({ topic = base .. ".*" }, function(req) return req.topic end)
      hemera:ready()
      local res, err = hemera:act { topic = base .. ".under_score" }
      assert.is_nil(err)
      assert.equal(base .. ".under_score", res)
    end)
  end)
end)
