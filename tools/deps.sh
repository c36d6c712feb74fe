#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# As root it runs apt-get (refreshing the package lists when a package is
# not found); otherwise it prints the exact command and stops.
set -euo pipefail
pkgs=(gcc make cmake pkg-config libnats-dev libuv1-dev liblua5.4-dev lua5.4
      lua-cjson lua-busted nats-server libpcre2-dev clang libclang-rt-14-dev valgrind openssl
      node-llhttp)
pkgs+=(libssl-dev) # hemera.jwt: libcrypto (lua/hm_lua_jwt.c)
pkgs+=(lua-luv lua-luv-dev) # the luv embedding test (nothing links libluv)
pkgs+=(libmsgpuck-dev) # hemera.msgpack: msgpuck's header (lua/hm_lua_msgpack.c)
pkgs+=(lua-check luarocks) # lint.luacheck, the rockspec test
pkgs+=(cppcheck) # lint.cppcheck
pkgs+=(curl) # the metrics and hemera.web specs: a real HTTP client
# lua-check and luarocks pull in lua5.1, whose lua-interpreter alternative
# outranks 5.4's: /usr/bin/lua, and busted through its `#!/usr/bin/env lua`,
# would silently become 5.1. Pin 5.4 on every run (also after an install
# by hand); lint.lua_version fails when it is not.
keep_lua54() {
  [ "$(id -u)" -eq 0 ] || return 0
  if [ "$(readlink -f /usr/bin/lua 2>/dev/null)" != /usr/bin/lua5.4 ] && [ -x /usr/bin/lua5.4 ]; then
    update-alternatives --set lua-interpreter /usr/bin/lua5.4 >&2
  fi
}
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then keep_lua54; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]}" >&2
  echo "install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q "${missing[@]}"; then
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi
keep_lua54
