#!/usr/bin/env bash
# make install's C API from a fresh install: examples/c_host/host.c builds
# with `pkg-config --cflags --libs hemera` alone and runs a service and a
# client against $HEMERA_NATS_URL.
# Usage: pkgconfig_host.sh BUILD_DIR CC [EXTRA_FLAGS]
set -euo pipefail
build=$1 cc=$2 extra=${3:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
: "${HEMERA_NATS_URL:?HEMERA_NATS_URL is not set (tools/with-nats.sh)}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/hemera-pc.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cmake --install "$build" --prefix "$dir/prefix" >/dev/null
export PKG_CONFIG_PATH="$dir/prefix/lib/pkgconfig"
[ "$(pkg-config --modversion hemera)" = "$(sed -n 's/^#define HM_VERSION "\(.*\)"$/\1/p' "$build/generated/hm_version.h")" ] \
  || { echo "hemera.pc's version is not HM_VERSION" >&2; exit 1; }
# shellcheck disable=SC2046,SC2086 # pkg-config's output is meant to split
"$cc" -o "$dir/host" "$src/examples/c_host/host.c" $(pkg-config --cflags --libs hemera) $extra
out=$(env -u LUA_PATH -u LUA_CPATH ASAN_OPTIONS="${ASAN_OPTIONS:-}" \
  LUA_PATH="$dir/prefix/share/lua/5.4/?.lua;$dir/prefix/share/lua/5.4/?/init.lua" HEMERA_LOG=silent \
  timeout 60 "$dir/host" 2>&1) || { echo "host failed: $out" >&2; exit 1; }
[ "$out" = "1 + 2 = 3" ] || { echo "host printed: $out" >&2; exit 1; }
echo "ok: $out"
