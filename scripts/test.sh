#!/usr/bin/env bash
# Every test of Vigil: installs what is missing, starts a private Docker
# daemon (removed again on exit, pass or fail), builds the workspace, runs
# every test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

D=$(mktemp -d /tmp/vigil-docker.XXXXXX)
trap 'scripts/docker-down.sh "$D"' EXIT
eval "$(scripts/docker-up.sh "$D")"
echo "test: private Docker daemon at $DOCKER_HOST"

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# The Worker runs in workerd under wrangler dev: install its toolchain
# (pinned, cached) and build it.
scripts/worker-build.sh
# The integration tests start the binaries: build them first.
cargo build --workspace --all-targets
# The agent's image for the deploy tests: static musl binary, FROM scratch.
scripts/agent-image.sh
scripts/validate-deploy.sh
cargo test --workspace "$@"
