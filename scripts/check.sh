#!/usr/bin/env bash
# The developer loop, `make check`: formatting, clippy with -D warnings on the
# host (routing/ and bench/, all targets) and on wasm32-unknown-unknown (the
# Worker), the host tests of routing/ and a type check of the client's
# declarations (public/client.d.ts). No build of the Worker, no servers;
# under a minute once target/ is warm. `make test` runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
step() { printf '\n== %s\n' "$*"; }

step bootstrap
scripts/bootstrap.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (host: routing, bench)"
cargo clippy -p routing -p bench --all-targets -- -D warnings

step "clippy (wasm32: animation-gateway)"
cargo clippy -p animation-gateway --target wasm32-unknown-unknown -- -D warnings

step "cargo test (routing, host)"
cargo test -p routing

step "tsc (public/client.d.ts against tests/types/client-usage.ts)"
node_modules/.bin/tsc -p tests/types
