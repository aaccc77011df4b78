#!/usr/bin/env bash
# Installs what the tests need on a fresh machine of this kind (idempotent):
# Debian's Docker Engine, a static busybox for the test image, static libc
# for the stand-in service, docker-compose, nginx and openssl to validate
# deploy/, wrk, bc and curl for the benchmarks, and Prometheus (promtool) and
# headless Chromium with a font for the metrics and status page tests.
set -euo pipefail
need=()
for pkg in docker.io busybox-static libc6-dev docker-compose nginx-light openssl wrk bc curl \
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
