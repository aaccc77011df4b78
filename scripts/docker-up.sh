#!/usr/bin/env bash
# Starts a private Docker daemon for the tests (no iptables, no bridge: the
# host's network is left as it was) and imports the test image from a static
# busybox. Prints the environment to use it, as shell assignments.
# Its user networks take their subnets from a pool of its own
# (10.213.0.0/16, /24 each: 256 networks), so bridges that other daemons left
# on the host cannot exhaust the default pools it would otherwise share.
#   usage: scripts/docker-up.sh DIR      (scripts/docker-down.sh DIR stops it)
set -euo pipefail
D=${1:?usage: docker-up.sh DIR}
mkdir -p "$D"
D=$(cd "$D" && pwd)
SOCK="$D/docker.sock"

dockerd --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
  -H "unix://$SOCK" --storage-driver overlay2 \
  --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
  --default-address-pool base=10.213.0.0/16,size=24 \
  >"$D/dockerd.log" 2>&1 &

export DOCKER_HOST="unix://$SOCK"
for _ in $(seq 1 100); do
  docker version >/dev/null 2>&1 && break
  sleep 0.1
done
docker version >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -20 "$D/dockerd.log" >&2; exit 1; }

# The test image: static busybox, a web root with /www/healthz = "ok", and
# the stand-in web service (tests/standin) built statically with rustc.
R="$D/rootfs"
rm -rf "$R"; mkdir -p "$R/bin" "$R/etc" "$R/www" "$R/tmp"
cp "$(command -v busybox)" "$R/bin/busybox"
HERE=$(cd "$(dirname "$0")/.." && pwd)
rustc --edition 2021 -O -C target-feature=+crt-static "$HERE/tests/standin/main.rs" -o "$R/bin/standin"
for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$R/etc/passwd"
echo ok > "$R/www/healthz"
echo ok > "$R/www/index.html"
tar -C "$R" -cf - . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - local/busybox:latest >/dev/null

echo "export DOCKER_HOST=unix://$SOCK"
echo "export VIGIL_TEST_IMAGE=local/busybox:latest"
