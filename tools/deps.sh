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
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
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
