#!/usr/bin/env bash
# Validates what can be validated here of deploy/: the compose file
# (docker-compose config), the nginx snippet (nginx -t, with a throwaway
# certificate), the systemd units (systemd-analyze verify, when present), the
# example edge configuration (vigil-edge --check) and the allowlist
# (ops-agent check), and deploy/wrangler.toml (wrangler deploy --dry-run).
# Terraform is not validated: no registry this project
# reaches ships terraform or tofu.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/vigil-deploy.XXXXXX)
trap 'rm -rf "$T"' EXIT
ok() { echo "deploy: ok: $*"; }

COMPOSE_PROJECT_NAME=myapp OPS_AGENT_TOKEN=dummy-token-0123456789 DOCKER_GID=999 \
  docker-compose -f deploy/docker-compose.yml -p myapp config -q
ok "docker-compose config"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ops.example.com \
  -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
sed -e "s#/etc/ssl/vigil/ops.example.com.pem#$T/cert.pem#" \
    -e "s#/etc/ssl/vigil/ops.example.com.key#$T/key.pem#" deploy/nginx/ops-agent.conf > "$T/ops-agent.conf"
cat > "$T/nginx.conf" <<CONF
pid $T/nginx.pid;
error_log $T/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $T/body;
    proxy_temp_path $T/proxy;
    include $T/ops-agent.conf;
}
CONF
nginx -t -q -c "$T/nginx.conf" -p "$T"
ok "nginx -t with deploy/nginx/ops-agent.conf"

if command -v systemd-analyze >/dev/null 2>&1; then
  cargo build -q -p edge -p ops-agent
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug"
  for unit in deploy/systemd/*.service; do
    sed -e "s#/usr/local/bin/vigil-edge#$BIN/vigil-edge#" \
        -e "s#/usr/local/bin/ops-agent#$BIN/ops-agent#" "$unit" > "$T/$(basename "$unit")"
  done
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$T"/*.service 2>&1 | grep -v -e 'docker.socket' -e 'docker.service' || true)
  if [ -n "$out" ]; then echo "$out"; exit 1; fi
  ok "systemd-analyze verify deploy/systemd/*.service"
else
  echo "deploy: skipped: systemd-analyze is not installed"
fi

if [ -x deploy/node_modules/.bin/wrangler ]; then
  (cd deploy && PATH="$PWD/node_modules/.bin:$PATH" CI=true WRANGLER_SEND_METRICS=false \
    CLOUDFLARE_CF_FETCH_ENABLED=false wrangler deploy --dry-run --outdir "$T/worker" >"$T/wrangler.log" 2>&1) \
    || { cat "$T/wrangler.log"; exit 1; }
  ok "wrangler deploy --dry-run (deploy/wrangler.toml builds and bundles)"
else
  echo "deploy: skipped: wrangler is not installed (scripts/worker-toolchain.sh)"
fi

cargo run -q -p edge -- --config deploy/edge.example.toml --check >/dev/null
ok "vigil-edge --check deploy/edge.example.toml"
OPS_AGENT_TOKEN=dummy-token-0123456789 COMPOSE_PROJECT=myapp OPS_AGENT_ACTIONS=actions.toml \
  cargo run -q -p ops-agent -- check >/dev/null
ok "ops-agent check actions.toml"
