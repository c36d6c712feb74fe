#!/usr/bin/env bash
# The instructions each side of a Lua request costs, counted by callgrind
# (stable on a busy machine, where make bench's CPU figures are not):
#
#   tools/with-nats.sh bench/request_cost.sh [build-dir] [n1] [n2]
#
# As bench/service_cost.sh counts a service: the totals of one process at
# n1 and at n2 sequential requests (rps.lua count), differenced over
# n2 - n1, so start-up and shutdown cancel out. Three processes are
# counted: the plain service, the `hooks` service (the row of issue 10's
# 1.6x target) and the client (rps.lua count itself, against the plain
# service). One round each: a process's count moves by a few percent with
# its string hash seed, so compare changes larger than that. Prints
#   request_cost <service instr/req> <hooks service instr/req> <client instr/req>
# REQUEST_COST_KEEP=1 keeps the callgrind files (the path is printed).
set -euo pipefail
. "$(dirname "$0")/service_cost.sh"
service_cost_init request_cost "$@"
trap '[ -n "${REQUEST_COST_KEEP:-}" ] && echo "callgrind files in $work" >&2 || rm -rf "$work"' EXIT

# Each total in a variable of its own, so that set -e stops at a failed run.
per() { awk -v a="$1" -v b="$2" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }'; }
a=$(service_total request_cost plain "$n1")
b=$(service_total request_cost plain "$n2")
s=$(per "$a" "$b")
a=$(service_total request_cost hooks "$n1" hooks)
b=$(service_total request_cost hooks "$n2" hooks)
h=$(per "$a" "$b")
a=$(side_total client request_cost client "$n1")
b=$(side_total client request_cost client "$n2")
c=$(per "$a" "$b")
echo "request_cost $s $h $c"
