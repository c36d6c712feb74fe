#!/usr/bin/env bash
# The memory soak: SOAK_N requests (default 100,000) through a Lua client
# and service, once natively (RSS must not grow from the half to the end)
# and once under valgrind memcheck (no definite or indirect leak, no
# memory error). Needs HEMERA_NATS_URL (run it under tools/with-nats.sh).
#   tools/soak.sh [build-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
n=${SOAK_N:-100000}
cd "$here"
echo "soak: native, $n requests"
"$build/hemera" spec/soak/soak.lua "$n"
if command -v valgrind >/dev/null; then
  echo "soak: valgrind memcheck, $n requests"
  SOAK_RSS_SLACK_KB=1000000 valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=3 \
    "$build/hemera" spec/soak/soak.lua "$n"
  echo "soak: valgrind clean"
else
  echo "soak: valgrind not installed, skipped (make deps installs it)"
fi
