# Helpers for the test services (sourced by the scripts/lib/*.sh that start one).

# start_service NAME LOG COMMAND [ARGS…]: runs COMMAND in the background with its output in
# LOG, and registers `stop_NAME` (kill, wait, remove LOG) to run when the calling script exits.
start_service() {
  local name="$1" log="$2"
  shift 2
  "$@" >"$log" 2>&1 &
  local pid=$!
  eval "stop_$name() { kill $pid >/dev/null 2>&1 || true; wait $pid 2>/dev/null || true; rm -f '$log'; }"
  RAINBOW_CLEANUPS="${RAINBOW_CLEANUPS:-} stop_$name"
  trap 'for f in $RAINBOW_CLEANUPS; do "$f"; done' EXIT
}

# wait_for_port NAME PORT LOG: waits up to 20 s for a listener on 127.0.0.1:PORT; otherwise
# prints LOG and exits.
wait_for_port() {
  local name="$1" port="$2" log="$3"
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start:"
  cat "$log"
  exit 1
}
