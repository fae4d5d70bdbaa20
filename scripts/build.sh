#!/usr/bin/env bash
# Builds the Worker into build/ with the local wasm-bindgen and wasm-opt, so
# nothing is fetched from a code host. Skips the build when build/ is newer
# than every source file. Used by make and by wrangler's [build] command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
out=build/worker/shim.mjs
if [ -f "$out" ] && [ -z "${FORCE_BUILD:-}" ] && \
   [ -z "$(find src routing/src routing/Cargo.toml Cargo.toml Cargo.lock rules -newer "$out" -type f 2>/dev/null | head -n 1)" ]; then
  exit 0
fi
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
[ -x "$WASM_OPT_BIN" ] || { echo "build: $WASM_OPT_BIN missing; run scripts/bootstrap.sh" >&2; exit 1; }
worker-build --release
touch "$out"
