#!/usr/bin/env bash
# make bench: every benchmark, against the nats-server of tools/with-nats.sh.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
echo "== Lua client -> Lua service, full Hemera envelope (separate processes)"
coproc SERVICE { exec "$build/hemera" bench/rps.lua serve; }
service_pid=$SERVICE_PID
read -r _ <&"${SERVICE[0]}"   # the service prints "ready" once subscribed
"$build/hemera" bench/rps.lua "${BENCH_SECONDS:-3}" 1 16 128
wait "$service_pid" 2>/dev/null || true
if [ -x "$build/bench_router" ]; then
  echo
  echo "== Router"
  "$build/bench_router"
fi
