# Sourced by scripts/test.sh: starts throwaway `wrangler dev` servers on free
# ports with their own state directory, waits until /healthz answers, and
# stops them all on exit.
DEV_PIDS=()
DEV_DIRS=()

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# start_dev_server NAME [wrangler dev args...]: sets ${NAME}_URL and ${NAME}_LOG.
start_dev_server() {
  local name=$1; shift
  local port inspector dir
  port=$(free_port); inspector=$(free_port)
  dir=$(mktemp -d -t gateway-dev-XXXXXX)
  DEV_DIRS+=("$dir")
  node_modules/.bin/wrangler dev -c wrangler.dev.toml --ip 127.0.0.1 --port "$port" \
    --inspector-port "$inspector" --persist-to "$dir/state" --show-interactive-dev-session=false \
    --log-level "${DEV_LOG_LEVEL:-warn}" "$@" >"$dir/wrangler.log" 2>&1 &
  DEV_PIDS+=($!)
  printf -v "${name}_URL" 'http://127.0.0.1:%s' "$port"
  printf -v "${name}_LOG" '%s' "$dir/wrangler.log"
  local url="http://127.0.0.1:$port/healthz" i
  for i in $(seq 1 120); do
    if curl -fsS "$url" >/dev/null 2>&1; then echo "wrangler dev ($name) up on port $port"; return 0; fi
    if ! kill -0 "${DEV_PIDS[-1]}" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "wrangler dev ($name) did not come up; its log:" >&2
  cat "$dir/wrangler.log" >&2
  return 1
}

stop_dev_servers() {
  local status=$? pid
  for pid in "${DEV_PIDS[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${DEV_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for dir in "${DEV_DIRS[@]}"; do echo "--- $dir/wrangler.log (tail)"; tail -n 40 "$dir/wrangler.log" 2>/dev/null || true; done
  fi
  rm -rf "${DEV_DIRS[@]}"
  return "$status"
}
