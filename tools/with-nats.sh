#!/usr/bin/env bash
# Runs a command with a private nats-server on a free loopback port and
# HEMERA_NATS_URL pointing at it; the server stops on every exit path.
set -euo pipefail
command -v nats-server >/dev/null || { echo "nats-server is not installed (run: make deps)" >&2; exit 2; }

free_port() {
  python3 - <<'PY' 2>/dev/null || shuf -i 20000-60000 -n 1
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/hemera-nats.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for attempt in 1 2 3 4 5; do
  port=$(free_port)
  nats-server -a 127.0.0.1 -p "$port" -l "$dir/nats.log" &
  pid=$!
  # Ready when the port accepts connections; give up if the server died
  # (port taken between our probe and its bind) and try another port.
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export HEMERA_NATS_URL="nats://127.0.0.1:$port"
      echo "with-nats: nats-server on $HEMERA_NATS_URL (pid $pid)" >&2
      set +e
      "$@"
      status=$?
      set -e
      exit $status
    fi
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
done
echo "with-nats: could not start nats-server; log:" >&2
cat "$dir/nats.log" >&2 || true
exit 2
