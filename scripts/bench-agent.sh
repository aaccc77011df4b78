#!/usr/bin/env bash
# ops-agent throughput on 127.0.0.1 with wrk (bounded: DURATION seconds per
# run). Baseline in the same run: GET /healthz (no auth). Limits are raised so
# the handlers, not the limiter, are measured; one last run keeps the default
# limits to show what a flood of wrong tokens meets in production.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
command -v wrk >/dev/null || scripts/setup.sh
cargo build --release -p ops-agent -q
D=$(mktemp -d /tmp/vigil-bench-agent.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=bench-token-0123456789abcdef
start() {
  env -i PATH="$PATH" OPS_AGENT_TOKEN=$TOKEN COMPOSE_PROJECT=bench OPS_AGENT_LISTEN=127.0.0.1:$PORT \
    OPS_AGENT_ACTIONS=actions.toml OPS_AGENT_AUDIT_LOG=$D/audit.jsonl RUST_LOG=warn DOCKER_HOST=unix://$D/none.sock "$@" \
    target/release/ops-agent >"$D/agent.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.05; done
  echo "agent did not start" >&2; cat "$D/agent.log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }
rps() { wrk -t2 -c32 -d"${DURATION}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
trap 'kill $PID 2>/dev/null; rm -rf "$D"' EXIT

start OPS_AGENT_RATE_PER_MIN=100000000 OPS_AGENT_RATE_BURST=100000000 \
      OPS_AGENT_AUTH_FAIL_PER_MIN=100000000 OPS_AGENT_AUTH_FAIL_BURST=100000000
base=$(rps "http://127.0.0.1:$PORT/healthz")
good=$(rps -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/actions")
bad=$(rps -H "Authorization: Bearer wrong-token-wrong-token" "http://127.0.0.1:$PORT/v1/actions")
stop
start
limited=$(rps -H "Authorization: Bearer wrong-token-wrong-token" "http://127.0.0.1:$PORT/v1/actions")
stop
printf '| request | requests/s | ratio to /healthz |\n|---|---|---|\n'
for row in "GET /healthz (baseline)|$base" "GET /v1/actions, valid token|$good" "GET /v1/actions, wrong token (401)|$bad" "GET /v1/actions, wrong token, default limits (429)|$limited"; do
  name=${row%|*}; v=${row#*|}
  printf '| %s | %.0f | %.2f |\n' "$name" "$v" "$(echo "$v / $base" | bc -l)"
done
