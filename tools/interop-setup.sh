#!/usr/bin/env bash
# Installs what the interop specs (spec/interop/) need to run Node Hemera:
#   - node and npm, from Debian's packages, only when one is missing (as
#     root; otherwise prints the apt-get command and exits 1);
#   - nats-hemera 7.0.2 and nats 1.2.6 into <build>/interop/node_modules,
#     exactly as spec/interop/package-lock.json pins them (npm ci), with
#     msgpack5 4.5.1 (what hemera-msgpack 6.0.2's ^4.2.1 resolves to).
# Idempotent: when the installed tree matches the lock file it returns at
# once. Safe to run concurrently (ctest -j): one install at a time.
#
#   usage: tools/interop-setup.sh <build-dir>
#
# Prints nothing on the fast path; diagnostics go to stderr. Network: npm's
# configured registry and Debian's mirrors only.
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/spec/interop"
mkdir -p "$1"
build=$(cd "$1" && pwd)
dest="$build/interop"

# {------------------------------------------------------------------ node, npm
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "interop-setup: node and npm are needed for the interop specs; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y nodejs npm" >&2
    exit 1
  fi
  echo "interop-setup: installing nodejs and npm (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q nodejs npm >&2; then
    apt-get update -q >&2
    apt-get install -y -q nodejs npm >&2
  fi
fi
# }

# What the lock pins; the stamp records the lock the tree was installed from.
want_hemera=7.0.2
want_nats=1.2.6
want_msgpack5=4.5.1
lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.interop-installed"

# The "version" of an installed package (its package.json's first one).
version_of() {
  sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$dest/node_modules/$1/package.json" 2>/dev/null | head -n 1
}

installed_ok() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] || return 1
  [ "$(version_of nats-hemera)" = "$want_hemera" ] && [ "$(version_of nats)" = "$want_nats" ] &&
    [ "$(version_of msgpack5)" = "$want_msgpack5" ]
}

installed_ok && exit 0

mkdir -p "$dest"
exec 9>"$build/.interop-setup.lock"
flock 9
# Another run may have finished the install while we waited for the lock.
installed_ok && exit 0

echo "interop-setup: installing nats-hemera@$want_hemera and nats@$want_nats into $dest" >&2
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
# npm ci installs exactly the lock (and fails if package.json disagrees);
# none of these packages needs an install script.
(cd "$dest" && npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$lock_sum" >"$stamp"
if ! installed_ok; then
  echo "interop-setup: installed tree does not have nats-hemera@$want_hemera and nats@$want_nats" >&2
  exit 1
fi
echo "interop-setup: done" >&2
