#!/usr/bin/env bash
# Builds the edge Worker (edge/build/) with worker-build kept off the network
# (WASM_BINDGEN_BIN, WASM_OPT_BIN, ESBUILD_BIN), size-optimised: release
# profile overrides for this build only, then one more wasm-opt pass: -Oz, GUFA's
# whole-program flow analysis, -Oz again (1.8 KB gzip less, BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$(scripts/worker-toolchain.sh | tail -n1)
NODE_BIN=$PWD/deploy/node_modules/.bin
export PATH="$TOOLS/bin:$NODE_BIN:$PATH"
export WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen" WASM_OPT_BIN="$NODE_BIN/wasm-opt" ESBUILD_BIN="$NODE_BIN/esbuild"
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${VIGIL_WASM_OPT_LEVEL:-z} CARGO_PROFILE_RELEASE_LTO=true \
       CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort
# Panics keep their message but not their file, line and column: every
# `unwrap`, `expect` and index check carried a location (4.3 KB gzip,
# BENCHMARKS.md). A -Z flag needs RUSTC_BOOTSTRAP on the stable
# toolchain (a nightly with a wasm32 std is not assumed); this build only.
export RUSTC_BOOTSTRAP=1 RUSTFLAGS="${RUSTFLAGS:-} -Zlocation-detail=none"
(cd edge && worker-build --release)
"$NODE_BIN/wasm-opt" -Oz --gufa -Oz --strip-debug --strip-producers --enable-bulk-memory \
  --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals \
  edge/build/index_bg.wasm -o edge/build/index_bg.wasm
echo "worker: edge/build/index_bg.wasm $(stat -c %s edge/build/index_bg.wasm) bytes, $(gzip -9 -c edge/build/index_bg.wasm | wc -c) gzip -9"
