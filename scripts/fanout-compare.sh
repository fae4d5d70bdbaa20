#!/usr/bin/env bash
# Side-by-side fan-out comparison of two Worker builds in one run:
#   scripts/fanout-compare.sh BUILD_DIR_A BUILD_DIR_B [RUNS]
# Each BUILD_DIR is a copy of build/ (the output of scripts/build.sh). Both are
# served by their own wrangler dev at once; scripts/fanout-check.mjs then runs
# against A and B in turn (A B A B ...), so machine drift hits both alike.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$(realpath "$1"); b=$(realpath "$2"); runs=${3:-3}
source scripts/devserver.sh
trap stop_dev_servers EXIT
toml_for() { # a copy of the dev config without [build], serving the given build
  local out; out=$(mktemp --suffix=.toml)
  sed -e '/^\[build\]/,/^$/d' -e "s|^main = .*|main = \"$1/worker/shim.mjs\"|" \
      -e "s|^directory = \"public\"|directory = \"$PWD/public\"|" wrangler.dev.toml > "$out"
  echo "$out"
}
start_dev_server_cfg() { # like start_dev_server, with another config
  local name=$1 cfg=$2 port inspector dir
  port=$(free_port); inspector=$(free_port); dir=$(mktemp -d)
  DEV_DIRS+=("$dir")
  node_modules/.bin/wrangler dev -c "$cfg" --ip 127.0.0.1 --port "$port" --inspector-port "$inspector" \
    --persist-to "$dir/state" --show-interactive-dev-session=false --log-level warn >"$dir/log" 2>&1 &
  DEV_PIDS+=($!)
  printf -v "${name}_URL" 'http://127.0.0.1:%s' "$port"
  for _ in $(seq 1 240); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0; sleep 0.5; done
  cat "$dir/log" >&2; return 1
}
start_dev_server_cfg A "$(toml_for "$a")"
start_dev_server_cfg B "$(toml_for "$b")"
for i in $(seq 1 "$runs"); do
  for side in A B; do
    url_var="${side}_URL"
    printf '%s run %s: ' "$side" "$i"
    node scripts/fanout-check.mjs --base-url "${!url_var}" | tail -n 1
  done
done
