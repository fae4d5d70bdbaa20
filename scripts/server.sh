# Sourced by scripts/test.sh, scripts/bench.sh and scripts/fanout-compare.sh:
# bash's handle on the one launcher, scripts/server.mjs. Servers started here
# run in the background, each in its own process group; servers_stop (set it
# as the EXIT trap) stops them all, shows the tails of their logs when the
# script is failing, and removes their throwaway directories.
SERVER_PIDS=()
SERVER_LOGS=()
SERVER_DIRS=() # removed by servers_stop; callers may add their own temporary files
SERVER_MJS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/server.mjs"
# SERVER_CPUS (a taskset CPU list, e.g. 1): servers started from then on run
# only on those CPUs (their processes inherit the launcher's affinity).
SERVER_CPUS=${SERVER_CPUS:-}

# server_start NAME [scripts/server.mjs start options...] [-- EXTRA...]
# Sets ${NAME}_URL, ${NAME}_PORT, ${NAME}_PID, ${NAME}_LOG, ${NAME}_STATE and
# ${NAME}_INSPECTOR_PORT. The launcher prints the log's tail itself if the
# server does not come up.
server_start() {
  local name=$1 out key value
  shift
  local pin=()
  [ -z "$SERVER_CPUS" ] || pin=(taskset -c "$SERVER_CPUS")
  out=$("${pin[@]}" node "$SERVER_MJS" start --name "$name" "$@") || return 1
  while IFS='=' read -r key value; do
    case $key in
      url | port | pid | log | state | inspector_port) printf -v "${name}_${key^^}" '%s' "$value" ;;
      dir) [ -z "$value" ] || SERVER_DIRS+=("$value") ;;
    esac
  done <<<"$out"
  local pid_var="${name}_PID" log_var="${name}_LOG" url_var="${name}_URL"
  SERVER_PIDS+=("${!pid_var}")
  SERVER_LOGS+=("${!log_var}")
  echo "server $name up at ${!url_var} (process group ${!pid_var})"
}

servers_stop() {
  local status=$? log
  if [ "${#SERVER_PIDS[@]}" -gt 0 ]; then node "$SERVER_MJS" stop "${SERVER_PIDS[@]}" || true; fi
  if [ "$status" -ne 0 ]; then
    for log in "${SERVER_LOGS[@]}"; do echo "--- $log (tail)"; tail -n 40 "$log" 2>/dev/null || true; done
  fi
  if [ "${#SERVER_DIRS[@]}" -gt 0 ]; then rm -rf "${SERVER_DIRS[@]}"; fi
  SERVER_PIDS=() SERVER_LOGS=() SERVER_DIRS=()
  return "$status"
}

# server_start_build NAME BUILD_DIR [server_start options...] [-- EXTRA...]
# server_start NAME serving a copy of BUILD_DIR (a copy of build/), for
# comparing builds side by side: the copy and a copy of the dev config
# without [build] whose `main` points at it go to .serve-local/ (ignored by
# git; the local runtimes snapshot `main` relative to their config) and are
# removed with the servers.
server_start_build() {
  local name=$1 build=$2 root dir
  shift 2
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$root/.serve-local/build-$$-$name"
  rm -rf "$dir"; mkdir -p "$dir"; cp -a "$build" "$dir/build"
  SERVER_DIRS+=("$dir")
  sed -e '/^\[build\]/,/^$/d' -e 's|^main = .*|main = "build/worker/shim.mjs"|' \
      -e "s|^directory = \"public\"|directory = \"$root/public\"|" "$root/wrangler.dev.toml" > "$dir/wrangler.toml"
  server_start "$name" --config "$dir/wrangler.toml" "$@"
}
