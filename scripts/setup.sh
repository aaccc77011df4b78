#!/usr/bin/env bash
# Installs what the tests need on a fresh machine of this kind (idempotent):
# Debian's Docker Engine, a static busybox for the test image, static libc
# for the stand-in service, docker-compose, nginx and openssl to validate
# deploy/ and run it in tests, systemd for systemd-analyze (the units' checks;
# nothing is started), wrk, bc and curl for the benchmarks, Prometheus
# (promtool) and headless Chromium with a font for the metrics and status
# page tests; and the Rust musl target (with musl-tools) for the agent's
# static binary.
set -euo pipefail
need=()
for pkg in docker.io busybox-static libc6-dev docker-compose nginx-light openssl musl-tools systemd wrk bc curl \
  prometheus chromium chromium-driver fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing (this machine kind ships Rust through rustup)" >&2; exit 1; }
rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
  || { echo "setup: rustup target add x86_64-unknown-linux-musl"; rustup target add x86_64-unknown-linux-musl; }
