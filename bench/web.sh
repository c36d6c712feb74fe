#!/usr/bin/env bash
# hemera.web's throughput: HTTP requests through the gateway against the
# same acts made directly, one service, at BENCH_WEB_LEVELS in flight
# (default 64; for HTTP, also 64 keep-alive connections).
#
#   tools/with-nats.sh bench/web.sh [build-dir]
#
# Processes: the service (bench/rps.lua serve), the gateway (`hemera web`,
# the CLI: hemera.web with no Lua of ours), and the clients one after the
# other: bench/node/web-client.js (Node's http, keep-alive agent) through
# the gateway, bench/rps.lua client acting directly. Each client runs
# BENCH_SECONDS (default 3) after BENCH_WARMUP (0.3). Prints, per level,
#   web gateway <inflight> <req/s> <p50 us> <p99 us> <errors>
#   web direct  <inflight> <req/s> <p50 us> <p99 us> <errors>
# (bench/run.sh adds them to its report, with the ratio).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
url=${HEMERA_NATS_URL:?run under tools/with-nats.sh}
hemera="$build/hemera"
[ -x "$hemera" ] || { echo "web: $hemera is missing (build first)" >&2; exit 2; }
command -v node >/dev/null || { echo "web: node is missing" >&2; exit 2; }
cd "$root"
seconds=${BENCH_SECONDS:-3}
warmup=${BENCH_WARMUP:-0.3}
read -r -a levels <<<"${BENCH_WEB_LEVELS:-64}"
topic="webbench_$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/hemera-web-bench.XXXXXX")
svc_pid= gw_pid=
cleanup() {
  [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Each process says when it is ready on a pipe; reading it waits for that.
mkfifo "$work/svc.fifo" "$work/gw.fifo"
"$hemera" bench/rps.lua serve "$topic" >"$work/svc.fifo" 2>"$work/svc.err" &
svc_pid=$!
exec 3<"$work/svc.fifo"
read -r line <&3 || { echo "web: the service did not start: $(cat "$work/svc.err")" >&2; exit 1; }
[ "$line" = ready ] || { echo "web: the service said '$line'" >&2; exit 1; }
"$hemera" web --listen 127.0.0.1:0 --server "$url" --timeout 10000 2>"$work/gw.fifo" >/dev/null &
gw_pid=$!
exec 4<"$work/gw.fifo"
gw=
while read -r line <&4; do
  gw=$(printf '%s\n' "$line" | sed -n 's#^hemera web: listening on \(http://[^ ]*\)/ .*#\1#p')
  [ -n "$gw" ] && break
done
[ -n "$gw" ] || { echo "web: the gateway did not start" >&2; exit 1; }
# The gateway's stderr stays open on fd 4: drain it so it never blocks.
cat <&4 >"$work/gw.err" &

row() { # <kind> <client output>: the rows of one client run
  awk -v k="$1" '$1 == "inflight" { sub(":", "", $2); print "web", k, $2, $3, $6, $9, $12 }' "$2"
}
BENCH_SVC_PID=$svc_pid node bench/node/web-client.js "$gw" "$topic" "$seconds" "$warmup" "${levels[@]}" \
  >"$work/gateway.out" 2>"$work/gateway.err" || { echo "web: the HTTP client failed: $(tail -3 "$work/gateway.err")" >&2; exit 1; }
row gateway "$work/gateway.out"
BENCH_SVC_PID=$svc_pid "$hemera" bench/rps.lua client "$topic" "$seconds" "$warmup" "${levels[@]}" \
  >"$work/direct.out" 2>"$work/direct.err" || { echo "web: the direct client failed: $(tail -3 "$work/direct.err")" >&2; exit 1; }
row direct "$work/direct.out"
"$hemera" bench/rps.lua stop "$topic" >/dev/null 2>&1 || true
wait "$svc_pid" 2>/dev/null || true
svc_pid=
kill -TERM "$gw_pid" 2>/dev/null || true
wait "$gw_pid" 2>/dev/null || true
gw_pid=
