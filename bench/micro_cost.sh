#!/usr/bin/env bash
# The CPU cost of the Service API's counters (ADR-32, on by default) per
# request, in instructions counted by callgrind (stable on a busy machine):
#
#   tools/with-nats.sh bench/micro_cost.sh [build-dir] [n1] [n2]
#
# 1. The service with the Service API off (rps.lua serve nomicro) and on
#    (the default), as bench/service_cost.sh counts it (MICRO_COST_ROUNDS
#    interleaved rounds, default 3; medians). The difference is within the
#    few hundred instructions a process's hash seed moves the count by.
# 2. So also the counting functions alone (hm_micro_arrived and
#    hm_micro_replied, inclusive, callgrind_annotate), over the same n2 - n1
#    requests of the last round's service with them on: exact.
# Prints one line per variant and round, then
#   micro_cost <off instr/req> <on instr/req> <extra %> <counting instr/req>
set -euo pipefail
. "$(dirname "$0")/service_cost.sh"
service_cost_init micro_cost "$@"
trap '[ -n "${MICRO_COST_KEEP:-}" ] || rm -rf "$work"' EXIT

# The inclusive instructions of the counting functions in a callgrind file.
counting() {
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" |
    awk '/:hm_micro_(arrived|replied) / { gsub(",", "", $1); s += $1 } END { print s + 0 }'
}

# service_cost's "plain" is the default service, the one with the
# counters: its line is turned round to read off -> on.
service_cost micro_cost "${MICRO_COST_ROUNDS:-3}" "$n1" "$n2" nomicro nomicro >"$work/cost.out"
grep -v '^micro_cost ' "$work/cost.out"
a=$(counting "$work/cg.plain.$n1")
b=$(counting "$work/cg.plain.$n2")
awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" '$1 == "micro_cost" {
  printf "micro_cost %d %d %.2f %.0f\n", $3, $2, ($2 - $3) * 100 / $3, (b - a) / (n2 - n1) }' "$work/cost.out"
