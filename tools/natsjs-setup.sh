#!/usr/bin/env bash
# Installs what the Service API specs with nats.js need (spec/natsjs/):
# nats 2.29.3 (nats.js, a real ADR-32 client and service library) into
# <build>/natsjs/node_modules, exactly as spec/natsjs/package-lock.json pins
# it (npm ci). node and npm come from tools/interop-setup.sh's check.
# Idempotent: when the installed tree matches the lock file it returns at
# once, without the network. Safe to run concurrently (ctest -j).
#
#   usage: tools/natsjs-setup.sh <build-dir>
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/spec/natsjs"
mkdir -p "$1"
build=$(cd "$1" && pwd)
dest="$build/natsjs"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "natsjs-setup: node and npm are needed; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y nodejs npm" >&2
  exit 1
fi

want_nats=2.29.3
lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.natsjs-installed"

version_of() {
  sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$dest/node_modules/$1/package.json" 2>/dev/null | head -n 1
}

installed_ok() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] && [ "$(version_of nats)" = "$want_nats" ]
}

installed_ok && exit 0

mkdir -p "$dest"
exec 9>"$build/.natsjs-setup.lock"
flock 9
installed_ok && exit 0

echo "natsjs-setup: installing nats@$want_nats into $dest" >&2
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
(cd "$dest" && npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$lock_sum" >"$stamp"
if ! installed_ok; then
  echo "natsjs-setup: installed tree does not have nats@$want_nats" >&2
  exit 1
fi
echo "natsjs-setup: done" >&2
