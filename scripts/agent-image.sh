#!/usr/bin/env bash
# Builds the ops-agent's image without a registry: the static musl binary
# with cargo on the host, then the runtime stage (FROM scratch) from it with
# deploy/Dockerfile.ops-agent.prebuilt on the Docker daemon of DOCKER_HOST.
#   usage: scripts/agent-image.sh [TAG]     (default vigil/ops-agent:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-vigil/ops-agent:latest}
TRIPLE=x86_64-unknown-linux-musl
cargo build --release --locked -p ops-agent --target "$TRIPLE" -j "${CARGO_BUILD_JOBS:-2}"
BIN="${CARGO_TARGET_DIR:-target}/$TRIPLE/release/ops-agent"
C=$(mktemp -d /tmp/vigil-agent-image.XXXXXX)
trap 'rm -rf "$C"' EXIT
# Stripped, as the multi-stage Dockerfile does (install -s): no debug symbols in the image.
install -s -m 0755 "$BIN" "$C/ops-agent"
cp actions.toml "$C/actions.toml"
mkdir "$C/audit"
# The legacy builder (no BuildKit here); its deprecation notice is noise.
DOCKER_BUILDKIT=0 docker build -q -f deploy/Dockerfile.ops-agent.prebuilt -t "$TAG" "$C" >/dev/null 2>"$C/build.log" \
  || { cat "$C/build.log" >&2; exit 1; }
echo "agent-image: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
