#!/usr/bin/env bash
# Installs the Node side of `make bench` (bench/node/*.js) into
# <dir>/node_modules, exactly as bench/package-lock.json pins it (npm ci):
#   nats-hemera 7.0.2, nats 1.2.6, bloomrun 4.1.1.
# Only when missing: when the installed tree matches the lock it returns at
# once. Safe to run concurrently (one install at a time, flock).
#
#   usage: tools/bench-setup.sh <dir>
#
# Exit status: 0 installed (or already there); 3 Node is not usable here
# (node or npm missing, or the install failed): a note is printed and the
# caller skips the Node parts; 2 usage. It never installs node itself.
# Network: npm's configured registry only.
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/bench"
mkdir -p "$1"
dest=$(cd "$1" && pwd)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "bench-setup: node or npm not found; the Node comparisons (nats-hemera, nats.js, bloomrun) are skipped." >&2
  echo "bench-setup: to include them: apt-get install -y nodejs npm (Node 20 was used for the baselines)" >&2
  exit 3
fi

want_hemera=7.0.2
want_nats=1.2.6
want_bloomrun=4.1.1
lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.bench-installed"

version_of() {
  sed -n 's/^  "version": "\(.*\)",$/\1/p' "$dest/node_modules/$1/package.json" 2>/dev/null
}

installed_ok() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] || return 1
  [ "$(version_of nats-hemera)" = "$want_hemera" ] || return 1
  [ "$(version_of nats)" = "$want_nats" ] || return 1
  [ "$(version_of bloomrun)" = "$want_bloomrun" ] || return 1
}

installed_ok && exit 0

exec 9>"$dest/.bench-setup.lock"
flock 9
installed_ok && exit 0

echo "bench-setup: installing nats-hemera@$want_hemera nats@$want_nats bloomrun@$want_bloomrun into $dest/node_modules" >&2
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
# npm ci installs exactly the lock (and fails if package.json disagrees);
# none of these packages needs an install script.
if ! (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2); then
  echo "bench-setup: npm ci failed (no registry access?); the Node comparisons are skipped." >&2
  exit 3
fi
echo "$lock_sum" >"$stamp"
if ! installed_ok; then
  echo "bench-setup: the installed tree does not match bench/package-lock.json; the Node comparisons are skipped." >&2
  exit 3
fi
echo "bench-setup: done" >&2
