#!/usr/bin/env bash
# The CPU cost of the handler budget (core.budget_call), in instructions
# counted by callgrind, which stay the same on a busy machine:
#
#   bench/budget_cost.sh [build-dir] [requests]
#
# bench/budget_cost.lua runs each request twice in one process, under a
# plain pcall and under core.budget_call, and callgrind gives the
# inclusive instruction counts of luaB_pcall and l_budget_call. One
# process per variant: budget_call without a budget, with a budget
# (default mode: the watchdog arms the hook only once a budget has run
# out) and with a budget in strict mode (the hook runs for the whole call).
# Two handlers: an empty one (the call's own cost) and one of ~2300 Lua VM
# instructions (a request's handler). Pairing within one process matters:
# Lua seeds its string hashes from the clock and from addresses, which
# moves a table-heavy workload's count by a few percent between processes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
n=${2:-5000}
hemera="$build/hemera"
[ -x "$hemera" ] || { echo "budget_cost: $hemera is missing (build first)" >&2; exit 2; }
for t in valgrind callgrind_annotate; do
  command -v $t >/dev/null || { echo "budget_cost: $t is missing (apt-get install valgrind)" >&2; exit 2; }
done
cd "$root"
out=$(mktemp "${TMPDIR:-/tmp}/budget_cost.XXXXXX")
trap 'rm -f "$out"' EXIT

inclusive() { # function -> inclusive Ir in $out
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null \
    | awk -v f=":$1 " '{ line = $0 " " } index(line, f) && !done { gsub(",", "", $1); print $1; done = 1 }'
}

"$hemera" bench/budget_cost.lua 0 count
for work in empty work; do
  echo
  printf '%-32s %14s %14s %9s %8s\n' "$work handler ($n requests)" "pcall/req" "budget/req" "extra" "cost"
  for mode in off on strict; do
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$hemera" bench/budget_cost.lua "$n" "$mode" "$work" paired >/dev/null 2>&1
    p=$(inclusive luaB_pcall)
    b=$(inclusive l_budget_call)
    case $mode in
      off) label="budget_call, no budget" ;;
      on) label="budget_call, budget (default)" ;;
      strict) label="budget_call, budget (strict)" ;;
    esac
    awk -v l="$label" -v p="$p" -v b="$b" -v n="$n" 'BEGIN {
      printf "%-32s %14.0f %14.0f %+9.0f %+7.2f%%\n", l, p / n, b / n, (b - p) / n, (b - p) * 100 / p }'
  done
done
