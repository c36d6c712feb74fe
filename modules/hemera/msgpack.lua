--- MessagePack on the wire: the Lua counterpart of hemera-msgpack.
--
--     local hemera = Hemera.new { name = "math" }
--     hemera:use(require "hemera.msgpack")
--
-- Like hemera-msgpack 6 (msgpack5 behind Hemera's client and server
-- encoder/decoder hooks), the plugin is not scoped: the four codecs are
-- set on the scope that uses it, so its acts and its handlers speak
-- MessagePack, and so do the plugins registered after it in that scope.
-- Every peer on those topics must use MessagePack too (a Node service
-- with `hemera.use(require('hemera-msgpack'))` over a NATS connection made
-- with `preserveBuffers: true`).
--
-- The codec is C (core.msgpack_encode / core.msgpack_decode, on msgpuck)
-- and follows the JSON codec's value rules: integers exact, floats as
-- float64, Hemera.null as nil, arrays marked by core.array_mt, strings
-- that are not valid UTF-8 as `bin`. See docs/api.md, "MessagePack".
--
-- @module hemera.msgpack

local core = require "hemera.core"

local encode, decode = core.msgpack_encode, core.msgpack_decode

local M = {
  name = "hemera-msgpack",
  -- hemera-plugin's `scoped: false`.
  scoped = false,
  --- The codec itself, for a message a service handles by hand.
  encode = encode,
  decode = decode,
}

function M.register(hemera)
  hemera:setClientEncoder(encode)
  hemera:setClientDecoder(decode)
  hemera:setServerEncoder(encode)
  hemera:setServerDecoder(decode)
end

return M
