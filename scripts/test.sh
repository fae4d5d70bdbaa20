#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: the checks of `make check`
# (bootstrap, fmt, clippy, host tests of routing/), the Worker build, the
# production config dry run, then everything that needs a server: the
# integration, reliability and browser suites, the API sweep and the itest.
# Servers come from the one launcher (scripts/server.mjs, through
# scripts/server.sh): `wrangler dev` on free ports with throwaway state, stopped
# whether or not the tests pass. README.md ("What `make test` runs") lists the
# steps.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
step() { printf '\n== %s\n' "$*"; }

scripts/check.sh

step build
scripts/build.sh

step "wrangler deploy --dry-run (production config)"
dry=$(mktemp -d)
node_modules/.bin/wrangler deploy --dry-run -c wrangler.prod.toml --outdir "$dry" >"$dry.log" 2>&1 || { cat "$dry.log"; exit 1; }
tail -n 3 "$dry.log"
rm -rf "$dry" "$dry.log"

step "servers: wrangler dev with auth off, batched, auth on"
source scripts/server.sh
trap servers_stop EXIT
# Every server says AUTH_ENABLED (the dev config ships with auth on).
server_start OPEN --var AUTH_ENABLED:false
# Batching on, and say rules replaced by configuration.
export TEST_SAY_RULES='{"rules":[{"name":"beep","pattern":"(?i)\\bbeep\\b","commands":[{"name":"beep_boop","topic":"face","duration_ms":100}]}]}'
server_start BATCHED --var AUTH_ENABLED:false --var BATCH_WINDOW_MS:100 --var "SAY_RULES:$TEST_SAY_RULES"
# Auth on, with a small history so the KV archive is exercised.
export TEST_JWT_SECRET="test-secret-$(date +%s)-$RANDOM" TEST_API_KEYS="key-one,key-two"
server_start AUTH --var AUTH_ENABLED:true --secret "JWT_SECRET:$TEST_JWT_SECRET" \
  --secret "API_KEYS:$TEST_API_KEYS" --var HISTORY_LIMIT:10
# GATEWAY_LOG: suites that check what the server logged (aborts.test.mjs) read it.
export GATEWAY_URL="$OPEN_URL" GATEWAY_BATCH_URL="$BATCHED_URL" GATEWAY_AUTH_URL="$AUTH_URL" GATEWAY_LOG="$OPEN_LOG"

step "integration tests (tests/integration, node --test)"
node --test --test-concurrency=1 --test-timeout=120000 tests/integration/*.test.mjs

step "abuse suite (tests/abuse: bounds and guarantees under hostile or unlucky use)"
node --test --test-concurrency=1 --test-timeout=300000 tests/abuse/*.test.mjs

step "reliability tests (tests/reliability: SIGKILL and restart, reconnect storm, hibernation)"
# These start and kill wrangler dev servers of their own (scripts/server.mjs).
STORM_SUBSCRIBERS=1000 node --test --test-concurrency=1 --test-timeout=300000 tests/reliability/*.test.mjs

step "browser tests (tests/browser: Chromium against the auth-off server)"
GATEWAY_URL="$OPEN_URL" ARTIFACTS_DIR=artifacts \
  node --test --test-concurrency=1 --test-timeout=120000 tests/browser/*.test.mjs

step "API sweep (tests/api: schemathesis over docs/openapi.yaml, auth off)"
.tools/venv/bin/python tests/api/api-sweep.py --base-url "$OPEN_URL"

step "itest (tests/e2e/animation-test.mjs: auth off, then auth on with credentials)"
itest_log=$(mktemp -t itest-open.XXXXXX)
node tests/e2e/animation-test.mjs --base-url "$OPEN_URL" >"$itest_log" 2>&1 || { cat "$itest_log"; exit 1; }
tail -n 3 "$itest_log"
rm -f "$itest_log"
itest_log=$(mktemp -t itest-auth.XXXXXX)
ITEST_API_KEY="${TEST_API_KEYS%%,*}" ITEST_JWT_SECRET="$TEST_JWT_SECRET" \
  node tests/e2e/animation-test.mjs --base-url "$AUTH_URL" >"$itest_log" 2>&1 || { cat "$itest_log"; exit 1; }
tail -n 3 "$itest_log"
rm -f "$itest_log"
