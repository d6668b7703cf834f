# Installs Debian's chromium and chromium-driver if missing (one apt call, so their versions
# match), starts chromedriver on 127.0.0.1:$CHROMEDRIVER_PORT and stops it when the calling
# script exits. Sourced by test.sh. Sets RAINBOW_WEBDRIVER for the browser tests.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
  || ! command -v curl >/dev/null; then
  echo "==> installing chromium + chromium-driver (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver curl >/dev/null
fi

CHROMEDRIVER_PORT="${CHROMEDRIVER_PORT:-9515}"
CHROMEDRIVER_LOG="$(mktemp /tmp/rainbow-chromedriver.XXXXXX)"
chromedriver --port="$CHROMEDRIVER_PORT" --allowed-ips=127.0.0.1 >"$CHROMEDRIVER_LOG" 2>&1 &
CHROMEDRIVER_PID=$!
stop_chromedriver() {
  kill "$CHROMEDRIVER_PID" >/dev/null 2>&1 || true
  wait "$CHROMEDRIVER_PID" 2>/dev/null || true
  rm -f "$CHROMEDRIVER_LOG"
}
RAINBOW_CLEANUPS="${RAINBOW_CLEANUPS:-} stop_chromedriver"
trap 'for f in $RAINBOW_CLEANUPS; do "$f"; done' EXIT

for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$CHROMEDRIVER_PORT/status" | grep -q '"ready":true'; then
    break
  fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$CHROMEDRIVER_PORT/status" | grep -q '"ready":true' || {
  echo "chromedriver did not start:"; cat "$CHROMEDRIVER_LOG"; exit 1;
}
echo "==> chromedriver $(chromedriver --version | awk '{print $2}') on 127.0.0.1:$CHROMEDRIVER_PORT"
export RAINBOW_WEBDRIVER="http://127.0.0.1:$CHROMEDRIVER_PORT"
