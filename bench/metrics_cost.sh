#!/usr/bin/env bash
# The CPU cost of hemera.metrics per request, in instructions counted by
# callgrind (stable on a busy machine):
#
#   tools/with-nats.sh bench/metrics_cost.sh [build-dir] [n1] [n2]
#
# The service (bench/rps.lua serve, without and with `metrics`) runs under
# callgrind; a client (rps.lua count) makes n1 requests to one instance,
# n2 to another, and the difference of the two totals over n2 - n1 is the
# service's instructions per request, start-up and shutdown cancelled out.
# A process's count moves by a few percent with its string hash seed
# (clock and addresses), so this runs METRICS_COST_ROUNDS (default 3)
# interleaved rounds and takes the median per variant.
# Prints one line per variant and round, then
#   metrics_cost <plain instr/req> <metrics instr/req> <extra %>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
n1=${2:-200}
n2=${3:-1200}
hemera="$build/hemera"
: "${HEMERA_NATS_URL:?run under tools/with-nats.sh}"
[ -x "$hemera" ] || { echo "metrics_cost: $hemera is missing (build first)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "metrics_cost: valgrind is missing" >&2; exit 2; }
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/metrics_cost.XXXXXX")
trap '[ -n "${METRICS_COST_KEEP:-}" ] || rm -rf "$work"' EXIT

total() { # the service's total Ir for <variant> <n>
  local variant=$1 n=$2 topic="mcost_$1_$2_$$" pid i opt=()
  [ "$variant" = metrics ] && opt=(metrics)
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$variant.$n" \
    "$hemera" bench/rps.lua serve "$topic" "${opt[@]}" >"$work/svc.out" 2>"$work/svc.err" &
  pid=$!
  for i in $(seq 1 600); do
    grep -q '^ready' "$work/svc.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/svc.err" >&2; return 1; }
    sleep 0.1
  done
  if ! "$hemera" bench/rps.lua count "$topic" "$n"; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "metrics_cost: the client's requests failed ($variant, $n)" >&2
    return 1
  fi
  "$hemera" bench/rps.lua stop "$topic"
  wait "$pid"
  awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.$variant.$n"
}

rounds=${METRICS_COST_ROUNDS:-3}
declare -A all
for r in $(seq 1 "$rounds"); do
  for variant in plain metrics; do
    a=$(total "$variant" "$n1") || exit 1
    b=$(total "$variant" "$n2") || exit 1
    v=$(awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    all[$variant]="${all[$variant]:-} $v"
    echo "round $r, service $variant: $a Ir at $n1 requests, $b at $n2: $v Ir/request"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
p=$(echo "${all[plain]}" | median)
m=$(echo "${all[metrics]}" | median)
awk -v p="$p" -v m="$m" 'BEGIN { printf "metrics_cost %d %d %.2f\n", p, m, (m - p) * 100 / p }'
