#!/usr/bin/env bash
# Makes sure Prometheus 2.x (Debian's `prometheus`, with promtool) and curl
# are here for the metrics specs: installs them as root when missing.
# Exit 0: ready; exit 2: cannot install (the message says why; the spec
# then skips with it).
set -uo pipefail
need=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "metrics-setup: ${need[*]} missing and not root; install with: sudo apt-get install -y ${need[*]}" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# The package's postinst may start a system Prometheus on :9090; the specs
# run their own on a free port, so that one is harmless.
if ! apt-get install -y -q --no-install-recommends "${need[@]}" >&2; then
  apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
    echo "metrics-setup: apt-get could not install ${need[*]}" >&2
    exit 2
  }
fi
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || {
  echo "metrics-setup: prometheus installed but prometheus/promtool not on PATH" >&2
  exit 2
}
