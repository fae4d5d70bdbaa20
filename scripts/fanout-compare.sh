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
server_start_build A "$a" --var AUTH_ENABLED:false
server_start_build B "$b" --var AUTH_ENABLED:false
for i in $(seq 1 "$runs"); do
  for side in A B; do
    url_var="${side}_URL"
    printf '%s run %s: ' "$side" "$i"
    node tests/perf/fanout-check.mjs --base-url "${!url_var}" | tail -n 1
  done
done
