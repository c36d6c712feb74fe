#!/usr/bin/env bash
# make bench: every benchmark in one run, against the one nats-server of
# tools/with-nats.sh ($HEMERA_NATS_URL), and one report with the ratios the
# targets are stated in (absolute numbers drift 2-3x over minutes on a
# shared machine; only ratios from one run count).
#
#   tools/with-nats.sh bench/run.sh <build-dir>
#
# What runs (client -> service, each its own process):
#   Lua -> Lua            hemera bench/rps.lua client -> hemera bench/rps.lua serve
#   Node -> Lua           bench/node/hemera-client.js -> the same Lua service
#   Node -> Node          bench/node/hemera-client.js -> bench/node/hemera-service.js
#   Lua -> Node           hemera bench/rps.lua client -> the same Node service
#   Lua -> Lua (hooks)    hemera bench/rps.lua client -> rps.lua serve ... hooks
#                         (an onRequest and a preHandler hook, hemera.validation.schema)
#   Lua -> Lua (metrics)  hemera bench/rps.lua client -> rps.lua serve ... metrics
#                         (hemera.metrics on: its hooks and its HTTP server)
#   Lua -> Lua (idle)     hemera bench/rps.lua client -> rps.lua serve ... idle=5000
#                         (5,000 other topics subscribed; 1 in flight only)
#   Lua -> Lua (msgpack)  hemera bench/rps.lua client ... msgpack -> rps.lua serve ... msgpack
#                         (hemera.msgpack on both sides instead of JSON)
#   raw cnats (C)         bench_transport client cnats -> bench_transport echo cnats
#                         (cnats' own libuv adapter, SendAsap)
#   raw hm_conn (C)       bench_transport client hm -> bench_transport echo hm
#                         (core/hm_conn.h: our transport without Lua)
#   raw nats.js           bench/node/nats-client.js -> bench/node/nats-echo.js
# each at 1, 16 and 128 requests in flight; the services stay up for the
# whole run and the client runs are interleaved in rounds, so drift hits
# every configuration alike. Every client also reports, per level, its own
# CPU and its service's (/proc/<pid>/stat, the pid in $BENCH_SVC_PID) over
# that level alone, for CPU per request on each side. Then: start-up time
# of the Lua and the Node service to their first answered request
# (bench_transport startup), their idle and peak RSS, their clean exit;
# the router against bloomrun; and the cost of the security guards (topic
# churn, the handler budget's instructions per request, the jsonschema
# pattern checks).
#
# Environment:
#   BENCH_SECONDS  measured seconds per client, service and level (default
#                  3), split over BENCH_ROUNDS interleaved rounds (default
#                  3); the report gives the median over rounds
#   BENCH_WARMUP   unreported warm-up per client run, seconds (default 0.3)
#   BENCH_LEVELS   requests in flight (default "1 16 128")
#   BENCH_STARTUPS start-up measurements per service (default 5)
#   BENCH_ROUTER   0 skips the router benchmark
#   BENCH_NODE     0 skips everything Node
#   BENCH_BUDGET   0 skips the handler budget's cost (callgrind, ~1 min)
#   BENCH_METRICS  0 skips hemera.metrics' cost (callgrind, ~2 min)
#   BENCH_MICRO    0 skips the Service API counters' cost (callgrind, ~30 s)
#   BENCH_TRACING  0 skips hemera.tracing's cost (callgrind and a down
#                  collector's latency, ~3 min)
#   BENCH_IDLE_TOPICS  idle topics of the "idle" Lua service (default 5000)
#   BENCH_WEB      0 skips hemera.web (bench/web.sh); BENCH_WEB_LEVELS in flight ("64")
#   BENCH_DURABLE  0 skips durable work (JetStream); BENCH_DURABLE_N acts (20000)
#   BENCH_KEEP     1 keeps the work directory (raw outputs) and prints it
# Node parts need node and npm; tools/bench-setup.sh installs nats-hemera
# 7.0.2, nats 1.2.6 and bloomrun 4.1.1 into <build-dir>/bench-node from
# bench/package-lock.json. Without node they are skipped, with a note.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd) || { echo "bench: no build directory ${1:-build}" >&2; exit 2; }
cd "$root" || exit 2
url=${HEMERA_NATS_URL:?run under tools/with-nats.sh (HEMERA_NATS_URL is not set)}
hemera="$build/hemera"
transport="$build/bench_transport"
for f in "$hemera" "$transport"; do
  [ -x "$f" ] || { echo "bench: $f is missing (build first)" >&2; exit 2; }
done

SECONDS_TOTAL=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-0.3}
LEVELS=${BENCH_LEVELS:-1 16 128}
STARTUPS=${BENCH_STARTUPS:-5}
IDLE_TOPICS=${BENCH_IDLE_TOPICS:-5000}
# The clients turn the services' /proc/<pid>/stat ticks into microseconds.
BENCH_CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
export BENCH_CLK_TCK
slice=$(awk -v s="$SECONDS_TOTAL" -v r="$ROUNDS" 'BEGIN { printf "%.3f", s / r }')

work=$(mktemp -d "${TMPDIR:-/tmp}/hemera-bench.XXXXXX")
results="$work/results.txt"
: >"$results"
pids=()

cleanup() {
  local p
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p" 2>/dev/null
      wait "$p" 2>/dev/null
    fi
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: raw outputs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "bench: $*" >&2; }
put() { echo "$*" >>"$results"; }

kb_of() { # kb_of <pid> <VmRSS|VmHWM>
  sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null || echo -1
}

# {------------------------------------------------------------------ Node
node_ok=0
if [ "${BENCH_NODE:-1}" != 0 ]; then
  if tools/bench-setup.sh "$build/bench-node"; then
    node_ok=1
    export NODE_PATH="$build/bench-node/node_modules"
  else
    note "Node comparisons skipped (see above)"
  fi
else
  note "Node comparisons skipped (BENCH_NODE=0)"
fi
# }

put "meta seconds $SECONDS_TOTAL"
put "meta rounds $ROUNDS"
put "meta slice $slice"
put "meta warmup $WARMUP"
put "meta levels $LEVELS"
put "meta idle_topics $IDLE_TOPICS"
put "meta nats $(nats-server --version 2>/dev/null | head -1)"
put "meta node $([ $node_ok = 1 ] && node --version || echo none)"
put "meta cpus $(nproc 2>/dev/null || echo ?)"
put "meta load $(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')"

# {------------------------------------------------------------ services
# start_service <name> <command...>: runs it in the background and waits
# for its "ready" line; svc_pid[name] is its pid, or 0 if it never got ready.
declare -A svc_pid
start_service() {
  local name=$1 pid i
  shift
  "$@" >"$work/svc-$name.out" 2>"$work/svc-$name.err" &
  pid=$!
  pids+=("$pid")
  svc_pid[$name]=0
  for i in $(seq 1 300); do
    if grep -q '^ready' "$work/svc-$name.out" 2>/dev/null; then
      svc_pid[$name]=$pid
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  note "service $name did not become ready:"
  cat "$work/svc-$name.err" >&2
  return 1
}

services=(lua lua_hooks lua_metrics lua_idle lua_mp cecho hecho)
[ $node_ok = 1 ] && services+=(node jsecho)
start_service lua "$hemera" bench/rps.lua serve bench_lua
start_service lua_hooks "$hemera" bench/rps.lua serve bench_lua_hooks hooks
start_service lua_metrics "$hemera" bench/rps.lua serve bench_lua_metrics metrics
start_service lua_idle "$hemera" bench/rps.lua serve bench_lua_idle "idle=$IDLE_TOPICS"
start_service lua_mp "$hemera" bench/rps.lua serve bench_lua_mp msgpack
start_service cecho "$transport" echo cnats bench.raw.cnats
start_service hecho "$transport" echo hm bench.raw.hm
if [ $node_ok = 1 ]; then
  start_service node node bench/node/hemera-service.js "$url" bench_node
  start_service jsecho node bench/node/nats-echo.js "$url" bench.raw.node
fi
sleep 0.5
for s in "${services[@]}"; do
  [ "${svc_pid[$s]}" != 0 ] && put "svc_idle $s $(kb_of "${svc_pid[$s]}" VmRSS)"
done
# }

# {-------------------------------------------------------------- clients
# pair name, the service it needs, the client command (seconds, warm-up
# and levels are appended). pair_levels[name] overrides LEVELS for a pair
# whose target needs one level only.
pairs=()
declare -A pair_svc pair_levels
add_pair() {
  local name=$1
  pairs+=("$name")
  pair_svc[$name]=$2
  shift 2
  declare -g -a "pair_cmd_$name"
  local -n cmdref="pair_cmd_$name"
  # shellcheck disable=SC2034 # a nameref: sets pair_cmd_<name>
  cmdref=("$@")
}
# run_pair <pair> <round>: one client run, its lines into the results.
run_pair() {
  local pair=$1 round=$2 rc
  local -n runcmd="pair_cmd_$pair"
  local out="$work/$pair.r$round.out" err="$work/$pair.r$round.err"
  local levels=${pair_levels[$pair]:-$LEVELS}
  # The client samples its service's CPU around each level it measures.
  # shellcheck disable=SC2086 # levels is a list of words
  BENCH_SVC_PID=${svc_pid[${pair_svc[$pair]}]} \
    timeout --kill-after=5 "$limit" "${runcmd[@]}" "$slice" "$WARMUP" $levels >"$out" 2>"$err"
  rc=$?
  [ $rc = 0 ] || note "$pair round $round: exit $rc ($(tail -1 "$err"))"
  # The CPU fields are found by name: a client without them adds no cpu
  # record, and the report shows "-" for it.
  awk -v p="$pair" -v r="$round" '
    $1 == "inflight" {
      sub(":", "", $2); print "rpc", p, r, $2, $3, $6, $9, $12
      n = c = s = ""
      for (i = 13; i < NF; i++) {
        if ($i == "requests") n = $(i + 1)
        else if ($i == "cpu_us") c = $(i + 1)
        else if ($i == "svc_cpu_us") s = $(i + 1)
      }
      if (n != "" && c != "" && s != "") print "cpu", p, r, $2, n, c, s
    }
    $1 == "client_hwm_kb" { print "client_hwm", p, r, $2 }' "$out" >>"$results"
}
add_pair lua_lua lua "$hemera" bench/rps.lua client bench_lua
add_pair lua_hooks lua_hooks "$hemera" bench/rps.lua client bench_lua_hooks
add_pair lua_metrics lua_metrics "$hemera" bench/rps.lua client bench_lua_metrics
add_pair lua_idle lua_idle "$hemera" bench/rps.lua client bench_lua_idle
add_pair lua_mp lua_mp "$hemera" bench/rps.lua client bench_lua_mp msgpack
# Its target is sequential latency: the first (lowest) level only.
# shellcheck disable=SC2086 # LEVELS is a list of words
pair_levels[lua_idle]=$(set -- $LEVELS; echo "$1")
if [ $node_ok = 1 ]; then
  add_pair node_lua lua node bench/node/hemera-client.js "$url" bench_lua
  add_pair node_node node node bench/node/hemera-client.js "$url" bench_node
  add_pair lua_node node "$hemera" bench/rps.lua client bench_node
fi
add_pair raw_cnats cecho "$transport" client cnats bench.raw.cnats
add_pair raw_hm hecho "$transport" client hm bench.raw.hm
[ $node_ok = 1 ] && add_pair raw_js jsecho node bench/node/nats-client.js "$url" bench.raw.node

nlevels=$(echo $LEVELS | wc -w)
limit=$(awk -v s="$slice" -v w="$WARMUP" -v n="$nlevels" 'BEGIN { printf "%d", (s * n + w) + 60 }')
t_rpc=$(date +%s)
note "requests/s: ${#pairs[@]} client/service pairs x levels ($LEVELS) x $ROUNDS rounds of ${slice}s"
for round in $(seq 1 "$ROUNDS"); do
  n=${#pairs[@]}
  for k in $(seq 0 $((n - 1))); do
    # Rotate the order each round, so no pair always runs first or last.
    pair=${pairs[$(((k + round - 1) % n))]}
    [ "${svc_pid[${pair_svc[$pair]}]:-0}" != 0 ] || continue
    run_pair "$pair" "$round"
  done
done
put "meta rpc_seconds $(($(date +%s) - t_rpc))"
# }

# {---------------------------------------------- peak RSS, clean exit
for s in "${services[@]}"; do
  [ "${svc_pid[$s]}" != 0 ] && put "svc_hwm $s $(kb_of "${svc_pid[$s]}" VmHWM)"
done
# stop_service <name> <how>: "hemera <topic>" (act {topic, cmd:"stop"}) or
# "term"; records its exit status (124: did not exit within 10 s). A 4th
# word goes to rps.lua stop after the topic (msgpack).
stop_service() {
  local name=$1 how=$2 topic=${3:-} opt=${4:-} p=${svc_pid[$1]:-0} rc
  [ "$p" != 0 ] || return 0
  if [ "$how" = hemera ]; then
    "$hemera" bench/rps.lua stop "$topic" $opt >/dev/null 2>>"$work/svc-$name.err" || true
  else
    kill -TERM "$p" 2>/dev/null
  fi
  for _ in $(seq 1 200); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$p" 2>/dev/null; then
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    rc=124
  else
    wait "$p"
    rc=$?
  fi
  put "svc_exit $name $rc"
}
stop_service lua hemera bench_lua
stop_service lua_hooks hemera bench_lua_hooks
stop_service lua_metrics hemera bench_lua_metrics
stop_service lua_idle hemera bench_lua_idle
stop_service lua_mp hemera bench_lua_mp msgpack
stop_service cecho term
stop_service hecho term
if [ $node_ok = 1 ]; then
  stop_service node hemera bench_node
  stop_service jsecho term
fi
# }

# {------------------------------------------------------------- start-up
startup() { # startup <name> <topic> <command...>
  local name=$1 topic=$2 i line
  shift 2
  for i in $(seq 1 "$STARTUPS"); do
    # prints: startup_ms X idle_rss_kb Y hwm_kb Z exit E requests N
    line=$(timeout 30 "$transport" startup "$topic" 300 15000 "$@" 2>>"$work/startup-$name.err")
    echo "$line" | awk -v n="$name" -v i="$i" '$1 == "startup_ms" { print "startup", n, i, $2, $4, $8 }' >>"$results"
  done
}
note "start-up: $STARTUPS runs per service"
startup lua bench_lua "$hemera" bench/rps.lua serve bench_lua
[ $node_ok = 1 ] && startup node bench_node "$(command -v node)" bench/node/hemera-service.js "$url" bench_node
# }

# {---------------------------------------------------------------- router
if [ "${BENCH_ROUTER:-1}" != 0 ] && [ -x "$build/bench_router" ]; then
  note "router: hm_router and the naive reference$([ $node_ok = 1 ] && echo ", then bloomrun 4.1.1") on the same pattern sets"
  mkdir -p "$work/router"
  "$build/bench_router" --export "$work/router" >"$work/router.out" 2>&1 || note "bench_router failed"
  awk '$1 ~ /^[0-9]+$/ && ($2 == "hit" || $2 == "miss") {
         sub("x$", "", $5); print "router", $1, $2, $3, $4, $6, $7 }' "$work/router.out" >>"$results"
  if [ $node_ok = 1 ]; then
    node --expose-gc bench/node/bloomrun-bench.js "$work/router" 1 10 1000 10000 100000 \
      >"$work/bloomrun.out" 2>"$work/bloomrun.err" || note "bloomrun-bench failed: $(tail -3 "$work/bloomrun.err")"
    awk '$1 == "bloomrun" { print "bloomrun", $3, $5, $7, $9, $11 }' "$work/bloomrun.out" >>"$results"
  fi
fi
# }

"$hemera" bench/bench_jsonschema.lua || note "bench_jsonschema failed"
# {---------------------------------------------------------------- guards
# The costs of the security guards, each a line of its own in the report.
note "topic churn: 10,000 topics added, removed, and closed"
"$hemera" bench/topics.lua 10000 2>"$work/topics.err" | grep '^topics ' >>"$results" \
  || note "topics failed: $(tail -3 "$work/topics.err")"
if [ "${BENCH_BUDGET:-1}" != 0 ] && command -v valgrind >/dev/null; then
  note "handler budget: instructions per request with and without it (callgrind)"
  bench/budget_cost.sh "$build" 1000 >"$work/budget.out" 2>&1 || note "budget_cost failed: $(tail -3 "$work/budget.out")"
  # The request-sized handler, budget on (the default mode).
  awk '/^work handler/ { w = 1 } w && /budget \(default\)/ {
         print "budget", $(NF-3), $(NF-2), $NF; exit }' "$work/budget.out" | tr -d '%+' >>"$results"
fi
if [ "${BENCH_METRICS:-1}" != 0 ] && command -v valgrind >/dev/null; then
  note "hemera.metrics: the service's instructions per request with and without it (callgrind)"
  bench/metrics_cost.sh "$build" >"$work/metrics_cost.out" 2>&1 || note "metrics_cost failed: $(tail -3 "$work/metrics_cost.out")"
  grep '^metrics_cost ' "$work/metrics_cost.out" >>"$results"
fi
if [ "${BENCH_MICRO:-1}" != 0 ] && command -v valgrind >/dev/null; then
  note "Service API (ADR-32) counters: the service's instructions per request with and without them (callgrind)"
  bench/micro_cost.sh "$build" >"$work/micro_cost.out" 2>&1 || note "micro_cost failed: $(tail -3 "$work/micro_cost.out")"
  grep '^micro_cost ' "$work/micro_cost.out" >>"$results"
fi
if [ "${BENCH_TRACING:-1}" != 0 ] && command -v valgrind >/dev/null; then
  note "hemera.tracing: instructions per request with and without it, and latency with the collector down"
  bench/tracing_cost.sh "$build" >"$work/tracing_cost.out" 2>&1 || note "tracing_cost failed: $(tail -3 "$work/tracing_cost.out")"
  grep -E '^tracing_(cost|down) ' "$work/tracing_cost.out" >>"$results"
fi
# }

# {---------------------------------------------------------------- web
# hemera.web: HTTP through the gateway against direct acts, same service.
if [ "${BENCH_WEB:-1}" != 0 ] && [ "${BENCH_NODE:-1}" != 0 ] && command -v node >/dev/null; then
  note "hemera.web: HTTP req/s through the gateway (Node keep-alive client) vs direct acts, ${BENCH_WEB_LEVELS:-64} in flight"
  BENCH_SECONDS=$SECONDS_TOTAL BENCH_WARMUP=$WARMUP bench/web.sh "$build" 2>"$work/web.err" | grep '^web ' >>"$results" \
    || note "web failed: $(tail -3 "$work/web.err")"
fi
# }

# {---------------------------------------------------------------- durable
# JetStream: its own server with a temporary store (the shared one has no -js).
if [ "${BENCH_DURABLE:-1}" != 0 ]; then
  note "durable work: ${BENCH_DURABLE_N:-20000} durable acts, then consumed by 1 and by 3 worker processes"
  "$hemera" bench/durable.lua "${BENCH_DURABLE_N:-20000}" 2>"$work/durable.err" | grep '^durable ' >>"$results" \
    || note "durable failed: $(tail -3 "$work/durable.err")"
fi
# }

# The report is plain Lua: any Lua 5.4 runs it (the hemera interpreter too).
if command -v lua5.4 >/dev/null 2>&1; then lua5.4 bench/report.lua "$results"
else "$hemera" bench/report.lua "$results"; fi
