#!/usr/bin/env bash
# Installs the edge Worker's toolchain, from the registries only, at pinned
# versions (see ../shared/WORKER-TOOLCHAIN.md): the wasm32 target, worker-build
# and wasm-bindgen-cli (equal to the wasm-bindgen in Cargo.lock) from
# crates.io into .tools/, and wrangler, esbuild, binaryen and Node 22 from npm
# into deploy/node_modules. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${VIGIL_TOOLS:-$HOME/.cache/vigil-tools}
mkdir -p "$TOOLS"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
BINDGEN=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
have() { [ -x "$TOOLS/bin/$1" ] && "$TOOLS/bin/$1" --version 2>/dev/null | grep -q "$2"; }
have worker-build 0.8.7 || cargo install --quiet worker-build --version 0.8.7 --root "$TOOLS"
have wasm-bindgen "$BINDGEN" || cargo install --quiet wasm-bindgen-cli --version "$BINDGEN" --root "$TOOLS"
if [ ! -x deploy/node_modules/.bin/wrangler ] || ! cmp -s deploy/package-lock.json deploy/node_modules/.vigil-lock; then
  (cd deploy && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.vigil-lock)
fi
echo "$TOOLS"
