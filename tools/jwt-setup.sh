#!/usr/bin/env bash
# Installs what the JWT specs (spec/lua/jwt_spec.lua,
# spec/interop/jwt_interop_spec.lua) need from npm:
#   - node, npm and the Node Hemera tree, through tools/interop-setup.sh;
#   - jsonwebtoken 9.0.3 (makes the test tokens) and hemera-jwt-auth 6.0.2
#     (the reference service) into <build>/jwt/node_modules, exactly as
#     spec/interop/jwt/package-lock.json pins them (npm ci).
# Idempotent and quiet when the installed tree matches the lock; safe to
# run concurrently (ctest -j): one install at a time.
#
#   usage: tools/jwt-setup.sh <build-dir>
#
# Network: npm's configured registry and Debian's mirrors only.
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/interop-setup.sh" "$1"
src="$root/spec/interop/jwt"
build=$(cd "$1" && pwd)
dest="$build/jwt"

want_jwt=9.0.3
want_auth=6.0.2
lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.jwt-installed"

version_of() {
  sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$dest/node_modules/$1/package.json" 2>/dev/null | head -n 1
}

installed_ok() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] || return 1
  [ "$(version_of jsonwebtoken)" = "$want_jwt" ] && [ "$(version_of hemera-jwt-auth)" = "$want_auth" ]
}

installed_ok && exit 0

mkdir -p "$dest"
exec 9>"$build/.jwt-setup.lock"
flock 9
installed_ok && exit 0

echo "jwt-setup: installing jsonwebtoken@$want_jwt and hemera-jwt-auth@$want_auth into $dest" >&2
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
# None of these packages needs an install script.
(cd "$dest" && npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$lock_sum" >"$stamp"
if ! installed_ok; then
  echo "jwt-setup: installed tree does not have jsonwebtoken@$want_jwt and hemera-jwt-auth@$want_auth" >&2
  exit 1
fi
echo "jwt-setup: done" >&2
