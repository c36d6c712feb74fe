-- The version here must be CMakeLists.txt's project(VERSION) (lua.version
-- checks it, and the file name).
rockspec_format = "3.0"
package = "hemera"
version = "0.1.0-1"
-- No published repository yet: `luarocks make` builds the checkout it runs
-- in and never fetches this.
source = {
  url = "git+file://.",
}
description = {
  summary = "Microservices for NATS in Lua 5.4, wire-compatible with nats-hemera 7",
  detailed = [[
    hemera.core (C: cnats and libuv) and the hemera Lua library: pattern
    routing, add/act/stream, plugins, extension points, the NATS Service
    API, durable work on JetStream, and the plugins hemera.validation.*,
    hemera.jwt, hemera.stats, hemera.metrics, hemera.tracing,
    hemera.msgpack, hemera.web (an HTTP gateway) and hemera.testing (test
    helpers).
  ]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
-- Found by CMake through pkg-config (libnats, libuv, libpcre2-8, libcrypto,
-- lua5.4); llhttp is compiled from Debian's node-llhttp sources
-- (/usr/share/llhttp); msgpuck is its header (libmsgpuck-dev). Debian:
-- tools/deps.sh.
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    HM_LIBRARY_ONLY = "ON",
    HM_INSTALL_LUADIR = "$(LUADIR)",
    HM_INSTALL_LIBDIR = "$(LIBDIR)",
  },
}
