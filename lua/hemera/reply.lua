-- hemera.reply: the server's reply to one request.
--
--   reply:send(value)        the result (an error value takes the error path)
--   reply:send(nil, err)     an error reply
--   reply:next(value)        one more reply for a stream (maxMessages$ callers)
--   reply.payload, reply.error, reply.sent, reply.isError
--
-- Only one send counts: a second one logs "Reply already sent" and is
-- ignored; `next` is the way to send several replies.

local errors = require "hemera.errors"

local Reply = {}
Reply.__index = Reply
-- Defaults for a reply that has none of its own. Reply.new sets sent and
-- count, which every request reads several times (a read through the
-- metatable costs more than the field); isError is read rarely.
Reply.sent = false
Reply.count = 0
Reply.isError = false

-- deliver(owner, ctx, reply) does the sending (hooks, encode, publish);
-- it may yield. (One function for all replies: no closure per request.)
function Reply.new(deliver, owner, ctx, log)
  -- The nil fields size the table for what a reply sets (no rehash).
  return setmetatable({ _deliver = deliver, _owner = owner, _ctx = ctx, log = log, sent = false,
                        count = 0, payload = nil, error = nil, _def = nil, _published = nil }, Reply)
end

function Reply:send(value, err)
  if self.sent then
    self.log:warn("Reply already sent", { error = tostring(errors.HemeraError("Reply already sent")) })
    return false
  end
  if err == nil and type(value) == "table" and errors.is_error(value) then value, err = nil, value end
  if err ~= nil then
    self.error = errors.from_value(err)
    self.isError = true
    self.payload = nil
  else
    self.payload = value
  end
  self.sent = true
  self.count = self.count + 1
  self._deliver(self._owner, self._ctx, self)
  return true
end

function Reply:next(value, err)
  self.sent = false
  self.error = nil
  self.isError = false
  return self:send(value, err)
end

return Reply
