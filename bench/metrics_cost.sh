#!/usr/bin/env bash
# The CPU cost of hemera.metrics per request, in instructions counted by
# callgrind (stable on a busy machine):
#
#   tools/with-nats.sh bench/metrics_cost.sh [build-dir] [n1] [n2]
#
# The service without and with `metrics`, as bench/service_cost.sh counts
# it (METRICS_COST_ROUNDS interleaved rounds, default 3; medians).
# Prints one line per variant and round, then
#   metrics_cost <plain instr/req> <metrics instr/req> <extra %>
set -euo pipefail
. "$(dirname "$0")/service_cost.sh"
service_cost_init metrics_cost "$@"
trap '[ -n "${METRICS_COST_KEEP:-}" ] || rm -rf "$work"' EXIT
service_cost metrics_cost "${METRICS_COST_ROUNDS:-3}" "$n1" "$n2" metrics metrics
