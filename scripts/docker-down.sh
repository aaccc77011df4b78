#!/usr/bin/env bash
# Stops the private daemon that docker-up.sh started in DIR and removes DIR.
# Containers and user networks go first: a network's Linux bridge outlives
# the daemon that made it, and leftover bridges take address pools from the
# next run.
set -uo pipefail
D=${1:?usage: docker-down.sh DIR}
[ -d "$D" ] || exit 0
export DOCKER_HOST="unix://$D/docker.sock"
if [ -f "$D/dockerd.pid" ]; then
  pid=$(cat "$D/dockerd.pid")
  # Containers first, so nothing is left holding mounts.
  ids=$(docker ps -aq 2>/dev/null || true)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  docker network prune -f >/dev/null 2>&1
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
fi
umount "$D/exec/netns/default" 2>/dev/null || true
grep -o " $D/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || true; done
rm -rf "$D"
