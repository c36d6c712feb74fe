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

. bench/service_cost.sh
service_cost metrics_cost "${METRICS_COST_ROUNDS:-3}" "$n1" "$n2" metrics metrics
