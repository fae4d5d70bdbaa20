#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: static checks, host unit and
# property tests, the Worker build, the production config dry run, then the
# integration tests against real `wrangler dev` servers of its own (one with
# auth off, one with auth on), which are stopped even when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
step() { printf '\n== %s\n' "$*"; }

step bootstrap
scripts/bootstrap.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (host: routing, wasm32: worker)"
cargo clippy -p routing --all-targets -- -D warnings
cargo clippy -p animation-gateway --target wasm32-unknown-unknown -- -D warnings

step "cargo test (routing, host)"
cargo test -p routing

step build
scripts/build.sh

step "wrangler deploy --dry-run (production config)"
dry=$(mktemp -d)
node_modules/.bin/wrangler deploy --dry-run -c wrangler.prod.toml --outdir "$dry" >"$dry.log" 2>&1 || { cat "$dry.log"; exit 1; }
tail -n 3 "$dry.log"
rm -rf "$dry" "$dry.log"

step "integration tests (node --test against wrangler dev)"
source scripts/devserver.sh
trap stop_dev_servers EXIT
start_dev_server OPEN
# Batching on, and say rules replaced by configuration.
export TEST_SAY_RULES='{"rules":[{"name":"beep","pattern":"(?i)\\bbeep\\b","commands":[{"name":"beep_boop","topic":"face","duration_ms":100}]}]}'
start_dev_server BATCHED --var BATCH_WINDOW_MS:100 --var "SAY_RULES:$TEST_SAY_RULES"
# Auth on, with a small history so the KV archive is exercised.
export TEST_JWT_SECRET="test-secret-$(date +%s)-$RANDOM" TEST_API_KEYS="key-one,key-two"
start_dev_server AUTH --var AUTH_ENABLED:true --var "JWT_SECRET:$TEST_JWT_SECRET" \
  --var "API_KEYS:$TEST_API_KEYS" --var HISTORY_LIMIT:10
# GATEWAY_LOG: suites that check what the server logged (aborts.test.mjs) read it.
export GATEWAY_URL="$OPEN_URL" GATEWAY_BATCH_URL="$BATCHED_URL" GATEWAY_AUTH_URL="$AUTH_URL" GATEWAY_LOG="$OPEN_LOG"
node --test --test-concurrency=1 --test-timeout=120000 tests/integration/*.test.mjs
# Durability: SIGKILL mid-stream and restart on the same state; reconnect storm.
# These start wrangler dev servers of their own.
STORM_SUBSCRIBERS=1000 node --test --test-concurrency=1 --test-timeout=300000 tests/reliability/*.test.mjs
GATEWAY_URL="$OPEN_URL" ARTIFACTS_DIR=artifacts \
  node --test --test-concurrency=1 --test-timeout=120000 tests/browser/*.test.mjs

step "API sweep: schemathesis over docs/openapi.yaml (auth off)"
.tools/venv/bin/python scripts/api-sweep.py --base-url "$OPEN_URL"

step "itest: scripts/animation-test.mjs (auth off, then auth on with credentials)"
node scripts/animation-test.mjs --base-url "$OPEN_URL" > "${TMPDIR:-/tmp}/itest-open.log" 2>&1 || { cat "${TMPDIR:-/tmp}/itest-open.log"; exit 1; }
tail -n 3 "${TMPDIR:-/tmp}/itest-open.log"
ITEST_API_KEY="${TEST_API_KEYS%%,*}" ITEST_JWT_SECRET="$TEST_JWT_SECRET" \
  node scripts/animation-test.mjs --base-url "$AUTH_URL" > "${TMPDIR:-/tmp}/itest-auth.log" 2>&1 || { cat "${TMPDIR:-/tmp}/itest-auth.log"; exit 1; }
tail -n 3 "${TMPDIR:-/tmp}/itest-auth.log"
