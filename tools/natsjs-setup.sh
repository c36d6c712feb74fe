#!/usr/bin/env bash
# Installs what the Service API specs with nats.js need (spec/natsjs/):
# nats 2.29.3 (nats.js, a real ADR-32 client and service library) into
# <build>/natsjs/node_modules, exactly as spec/natsjs/package-lock.json pins
# it (tools/npm-pinned.sh: npm ci, offline once installed, safe under
# ctest -j). node and npm come from tools/interop-setup.sh's check.
#
#   usage: tools/natsjs-setup.sh <build-dir>
set -euo pipefail
[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/tools/npm-pinned.sh" natsjs-setup "$root/spec/natsjs" "$1/natsjs" nats@2.29.3
