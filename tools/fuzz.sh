#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (coverage in the core too) and
# runs each over its corpus in fuzz/corpus: for FUZZ_SECONDS (default 20),
# or, with FUZZ_RUNS=1 (make test), a fixed number of inputs from a fixed
# seed, so a CI run explores the same inputs every time. New inputs go to
# a scratch directory, never into the repository.
#   tools/fuzz.sh [build-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-fuzz}
mkdir -p "$build"
build=$(cd "$build" && pwd) # the fuzzers run from a scratch directory
seconds=${FUZZ_SECONDS:-20}
if ! command -v clang >/dev/null; then
  echo "fuzz: clang is not installed (make deps installs it)" >&2
  exit 2
fi
CC=clang cmake -S "$here" -B "$build" -DHM_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null
cmake --build "$build" -j "$(nproc)" --target fuzz_router fuzz_codec fuzz_subject fuzz_msgpack >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
runs_router=60000
runs_codec=300000
runs_subject=300000
runs_msgpack=200000
for target in router codec subject msgpack; do
  mkdir -p "$scratch/$target"
  if [ "${FUZZ_RUNS:-0}" = 1 ]; then
    runs_var=runs_$target
    limit="-runs=${!runs_var} -seed=1"
    echo "fuzz: $target, ${!runs_var} inputs from seed 1"
  else
    limit="-max_total_time=$seconds"
    echo "fuzz: $target for ${seconds}s"
  fi
  # shellcheck disable=SC2086
  if ! (cd "$scratch" && "$build/fuzz_$target" $limit -print_final_stats=1 \
        -max_len=4096 "$scratch/$target" "$here/fuzz/corpus/$target" 2>"$scratch/$target.log"); then
    echo "fuzz: $target FAILED; its log:" >&2
    tail -n 60 "$scratch/$target.log" >&2
    cp "$scratch"/crash-* "$scratch"/leak-* "$here/fuzz/" 2>/dev/null || true
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$scratch/$target.log" | sed "s/^/fuzz: $target /"
  fi
done
exit $status
