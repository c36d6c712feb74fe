#!/usr/bin/env bash
# Installs what the tracing specs' span receiver needs (spec/tracing/):
# @opentelemetry/otlp-transformer 0.212.0 (the OTLP protobuf definitions)
# and zipkin 0.22.0 (the reference Zipkin v2 encoder) into
# <build>/tracing/node_modules, as spec/tracing/package-lock.json pins
# them. nats.js comes from tools/natsjs-setup.sh.
#
#   usage: tools/tracing-setup.sh <build-dir>
set -euo pipefail
[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/tools/npm-pinned.sh" tracing-setup "$root/spec/tracing" "$1/tracing" \
  @opentelemetry/otlp-transformer@0.212.0 zipkin@0.22.0
