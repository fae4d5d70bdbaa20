#!/usr/bin/env bash
# Side-by-side fan-out comparison of two Worker builds in one run:
#   scripts/fanout-compare.sh BUILD_DIR_A BUILD_DIR_B [RUNS]
# Each BUILD_DIR is a copy of build/ (the output of scripts/build.sh). Both are
# served by their own wrangler dev at once (started by scripts/server.mjs);
# tests/perf/fanout-check.mjs then runs against A and B in turn (A B A B ...),
# so machine drift hits both alike.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$(realpath "$1"); b=$(realpath "$2"); runs=${3:-3}
source scripts/server.sh
trap servers_stop EXIT
toml_for() { # a copy of the dev config without [build], serving the given build
  local out; out=$(mktemp --suffix=.toml)
  sed -e '/^\[build\]/,/^$/d' -e "s|^main = .*|main = \"$1/worker/shim.mjs\"|" \
      -e "s|^directory = \"public\"|directory = \"$PWD/public\"|" wrangler.dev.toml > "$out"
  echo "$out"
}
toml_a=$(toml_for "$a"); toml_b=$(toml_for "$b")
SERVER_DIRS+=("$toml_a" "$toml_b") # removed with the servers' directories
server_start A --config "$toml_a" --var AUTH_ENABLED:false
server_start B --config "$toml_b" --var AUTH_ENABLED:false
for i in $(seq 1 "$runs"); do
  for side in A B; do
    url_var="${side}_URL"
    printf '%s run %s: ' "$side" "$i"
    node tests/perf/fanout-check.mjs --base-url "${!url_var}" | tail -n 1
  done
done
