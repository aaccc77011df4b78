#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, each bounded in time, on 127.0.0.1 only.
# The MTTR benchmark needs real containers: a private Docker daemon is
# started and removed, as for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "# ops-agent throughput"; scripts/bench-agent.sh
echo; cargo bench -p edge --bench edge
D=$(mktemp -d /tmp/vigil-docker.XXXXXX)
trap 'scripts/docker-down.sh "$D"' EXIT
eval "$(scripts/docker-up.sh "$D")"
cargo build --release --workspace
echo; cargo bench -p vigil-testkit --bench mttr
