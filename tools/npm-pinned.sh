#!/usr/bin/env bash
# Installs a spec's pinned npm packages: <src>/package.json and
# package-lock.json into <dest>/node_modules (npm ci), then checks that the
# named packages have the versions wanted. Idempotent: when the installed
# tree matches the lock file it returns at once, without the network. Safe
# to run concurrently (ctest -j): one install at a time per <dest>.
#
#   usage: tools/npm-pinned.sh <label> <src-dir> <dest-dir> name@version...
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 <label> <src-dir> <dest-dir> name@version..." >&2; exit 2; }
label=$1 src=$2
mkdir -p "$3"
dest=$(cd "$3" && pwd)
shift 3

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "$label: node and npm are needed; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y nodejs npm" >&2
  exit 1
fi

lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.npm-pinned-installed"

version_of() {
  sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$dest/node_modules/$1/package.json" 2>/dev/null | head -n 1
}

installed_ok() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] || return 1
  local want
  for want in "$@"; do
    [ "$(version_of "${want%@*}")" = "${want##*@}" ] || return 1
  done
}

installed_ok "$@" && exit 0

exec 9>"$dest/.npm-pinned.lock"
flock 9
installed_ok "$@" && exit 0

echo "$label: installing $* into $dest" >&2
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
(cd "$dest" && npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$lock_sum" >"$stamp"
if ! installed_ok "$@"; then
  echo "$label: installed tree does not have $*" >&2
  exit 1
fi
echo "$label: done" >&2
