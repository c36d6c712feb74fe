# Sourced by bench/metrics_cost.sh, bench/tracing_cost.sh,
# bench/micro_cost.sh and bench/request_cost.sh: the instructions per
# request of one side, counted by callgrind (stable on a busy machine).
#
# The side measured (usually the service, bench/rps.lua serve, without and
# with the plugin's serve options) runs under callgrind, the other natively;
# a client (rps.lua count) makes n1 requests to one instance, n2 to
# another, and the difference of the two totals over n2 - n1 is that
# side's instructions per request, start-up and shutdown cancelled out. A
# process's count moves by a few percent with its string hash seed (clock
# and addresses): the counted process gets a fixed clock (fixed_time.c,
# HM_FIXED_TIME=$cost_seed), so in one round every variant runs with the
# same seed; the rounds use different seeds, and each variant takes its
# median.
#
# service_cost_init <name> [build-dir] [n1] [n2] sets root, build, n1, n2,
# hemera and work (a scratch directory: the caller's trap removes it) and
# cd's to the repository root. Needs HEMERA_NATS_URL.
service_cost_init() {
  local name=$1
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  build=$(cd "${2:-$root/build}" && pwd)
  n1=${3:-200}
  n2=${4:-1200}
  hemera="$build/hemera"
  fixed_time="$build/libhm_fixed_time.so"
  cost_seed=1700000000
  : "${HEMERA_NATS_URL:?run under tools/with-nats.sh}"
  [ -x "$hemera" ] || { echo "$name: $hemera is missing (build first)" >&2; exit 2; }
  [ -f "$fixed_time" ] || { echo "$name: $fixed_time is missing (build first)" >&2; exit 2; }
  command -v valgrind >/dev/null || { echo "$name: valgrind is missing" >&2; exit 2; }
  cd "$root"
  work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
}

# wait_line <file> <regex> <pid>: until the file has the line, or the
# process is gone (status 1).
wait_line() {
  local i
  for i in $(seq 1 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# service_total <name> <variant> <n> [serve options...]: the service's total Ir.
service_total() {
  side_total service "$@"
}

# side_total service|client <name> <variant> <n> [serve options...]: the
# total Ir of one side (the other runs natively) for n requests.
side_total() {
  local side=$1 name=$2 variant=$3 n=$4 topic="cost_$1_$3_$4_$$" pid
  local svc=() cli=()
  shift 4
  local counted=(env LD_PRELOAD="$fixed_time" HM_FIXED_TIME="$cost_seed"
                 valgrind --tool=callgrind --callgrind-out-file="$work/cg.$variant.$n")
  if [ "$side" = service ]; then svc=("${counted[@]}"); else cli=("${counted[@]}"); fi
  "${svc[@]}" "$hemera" bench/rps.lua serve "$topic" "$@" >"$work/svc.out" 2>"$work/svc.err" &
  pid=$!
  wait_line "$work/svc.out" '^ready' "$pid" || { cat "$work/svc.err" >&2; return 1; }
  if ! "${cli[@]}" "$hemera" bench/rps.lua count "$topic" "$n" 2>"$work/cli.err"; then
    cat "$work/cli.err" >&2
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "$name: the client's requests failed ($variant, $n)" >&2
    return 1
  fi
  "$hemera" bench/rps.lua stop "$topic"
  wait "$pid"
  awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.$variant.$n"
}

# service_cost <name> <rounds> <n1> <n2> <variant> [serve options...]:
# prints one line per variant and round, then
#   <name> <plain instr/req> <variant instr/req> <extra %>
service_cost() {
  local name=$1 rounds=$2 n1=$3 n2=$4 variant=$5 r v a b p m
  shift 5
  local plain_all="" with_all=""
  for r in $(seq 1 "$rounds"); do
    cost_seed=$((1700000000 + r * 7919))
    for v in plain "$variant"; do
      if [ "$v" = plain ]; then
        a=$(service_total "$name" plain "$n1") || return 1
        b=$(service_total "$name" plain "$n2") || return 1
      else
        a=$(service_total "$name" "$v" "$n1" "$@") || return 1
        b=$(service_total "$name" "$v" "$n2" "$@") || return 1
      fi
      m=$(service_per "$a" "$b")
      if [ "$v" = plain ]; then plain_all="$plain_all $m"; else with_all="$with_all $m"; fi
      echo "round $r, service $v: $a Ir at $n1 requests, $b at $n2: $m Ir/request"
    done
  done
  p=$(echo "$plain_all" | service_median)
  m=$(echo "$with_all" | service_median)
  awk -v name="$name" -v p="$p" -v m="$m" 'BEGIN { printf "%s %d %d %.2f\n", name, p, m, (m - p) * 100 / p }'
}

# service_per <total at n1> <total at n2>: instructions per request.
service_per() {
  awk -v a="$1" -v b="$2" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }'
}

service_median() {
  tr ' ' '\n' | grep . | sort -n |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
