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
# service). One round each, every process with the same fixed clock and so
# the same string hash seed (service_cost.sh): two builds compare under one
# seed, whose own effect on a count is a few percent. Prints
#   request_cost <service instr/req> <hooks service instr/req> <client instr/req>
# REQUEST_COST_KEEP=1 keeps the callgrind files (the path is printed).
set -euo pipefail
. "$(dirname "$0")/service_cost.sh"
service_cost_init request_cost "$@"
trap '[ -n "${REQUEST_COST_KEEP:-}" ] && echo "callgrind files in $work" >&2 || rm -rf "$work"' EXIT

# cost <side> <variant> [serve options...]: that side's instructions per
# request, into $per. Not a command substitution of its own, so that set -e
# stops at a failed run.
cost() {
  local side=$1 variant=$2 a b
  shift 2
  a=$(side_total "$side" request_cost "$variant" "$n1" "$@")
  b=$(side_total "$side" request_cost "$variant" "$n2" "$@")
  per=$(service_per "$a" "$b")
}
cost service plain
s=$per
cost service hooks hooks
h=$per
cost client client
echo "request_cost $s $h $per"
