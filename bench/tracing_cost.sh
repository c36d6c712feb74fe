#!/usr/bin/env bash
# The cost of hemera.tracing, every request sampled:
#
#   tools/with-nats.sh bench/tracing_cost.sh [build-dir] [n1] [n2]
#
# 1. CPU: the service's instructions per request without the plugin and
#    with it, its spans POSTed to a live collector (rps.lua sink, another
#    process), counted by callgrind as bench/service_cost.sh does (n1 and
#    n2 requests to two instances, the difference over n2 - n1; the median
#    of TRACING_COST_ROUNDS, default 3, interleaved rounds). Rendering and
#    POSTing the batches count: they run on the service's loop.
# 2. Latency with the collector down: rps.lua client (16 in flight, 3 s)
#    against the service without the plugin, with it exporting to the live
#    collector, and with it pointed at a port nothing listens on. "A down
#    collector never slows requests" compares the last two: the plugin's
#    own cost per sampled request is row 1's.
# Prints one line per measurement, then
#   tracing_cost <plain instr/req> <tracing instr/req> <extra %>
#   tracing_down <plain p50 us> <plain p99 us> <down p50 us> <down p99 us> <down errors> <up p50 us> <up p99 us>
set -euo pipefail
. "$(dirname "$0")/service_cost.sh"
service_cost_init tracing_cost "$@"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${TRACING_COST_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

"$hemera" bench/rps.lua sink >"$work/sink.out" 2>"$work/sink.err" &
pids+=($!)
wait_line "$work/sink.out" '^port ' "$!" || { cat "$work/sink.err" >&2; exit 1; }
sink="http://127.0.0.1:$(awk '/^port / { print $2; exit }' "$work/sink.out")/v1/traces"
# A port nothing listens on: a second sink's, once it is stopped.
"$hemera" bench/rps.lua sink >"$work/gone.out" 2>"$work/gone.err" &
gone=$!
wait_line "$work/gone.out" '^port ' "$gone" || { cat "$work/gone.err" >&2; exit 1; }
kill "$gone"
wait "$gone" 2>/dev/null || true
down="http://127.0.0.1:$(awk '/^port / { print $2; exit }' "$work/gone.out")/v1/traces"

service_cost tracing_cost "${TRACING_COST_ROUNDS:-3}" "$n1" "$n2" tracing "tracing=$sink" || exit 1

latency() { # <variant>: the client's line at 16 in flight
  local variant=$1 topic="tdown_$1_$$" pid opt=()
  [ "$variant" = down ] && opt=("tracing=$down")
  [ "$variant" = up ] && opt=("tracing=$sink")
  "$hemera" bench/rps.lua serve "$topic" "${opt[@]}" >"$work/lat.out" 2>"$work/lat.err" &
  pid=$!
  wait_line "$work/lat.out" '^ready' "$pid" || { cat "$work/lat.err" >&2; return 1; }
  BENCH_SVC_PID=$pid "$hemera" bench/rps.lua client "$topic" 3 0.5 16 | grep '^inflight'
  "$hemera" bench/rps.lua stop "$topic"
  wait "$pid"
}
lp=$(latency plain) || exit 1
lu=$(latency up) || exit 1
ld=$(latency down) || exit 1
echo "service plain:          $lp"
echo "service, collector up:   $lu"
echo "service, collector down: $ld"

field() { echo "$1" | awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }'; }
echo "tracing_down $(field "$lp" p50) $(field "$lp" p99) $(field "$ld" p50) $(field "$ld" p99) $(field "$ld" errors)" \
  "$(field "$lu" p50) $(field "$lu" p99)"
