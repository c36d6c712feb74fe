#!/usr/bin/env bash
# Makes sure the real HTTP clients of the hemera.web specs are here: curl
# (Debian's) and Node 18 or later (its built-in fetch). Installs curl as
# root when missing. Exit 0: ready; exit 2: cannot (the message says why;
# the spec then skips with it).
set -uo pipefail
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "web-setup: curl missing and not root; install with: sudo apt-get install -y curl" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends curl >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends curl >&2; } || {
    echo "web-setup: apt-get could not install curl" >&2
    exit 2
  }
fi
command -v node >/dev/null 2>&1 || { echo "web-setup: node is not installed (tools/deps.sh)" >&2; exit 2; }
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$major" -ge 18 ] || { echo "web-setup: node $major has no built-in fetch (18 or later needed)" >&2; exit 2; }
