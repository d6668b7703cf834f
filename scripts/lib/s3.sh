# Starts an S3 emulator for the remote-lake tests: moto's server (PyPI `moto[server]` 5.2.5: put
# with If-None-Match, head, copy, list and multipart behave as S3's, which object_store's S3
# client relies on), installed into the services venv under $RAINBOW_SVC_DIR. No GCS emulator
# speaks object_store's XML API, so the lake's object-store path is tested on S3. Stops it when
# the calling script exits. Sourced by test.sh. Sets RAINBOW_TEST_S3_ENDPOINT.

RAINBOW_SVC_DIR="${RAINBOW_SVC_DIR:-$HOME/.cache/rainbow-services}"
if [ ! -x "$RAINBOW_SVC_DIR/venv/bin/python" ]; then
  echo "==> creating the services venv in $RAINBOW_SVC_DIR"
  mkdir -p "$RAINBOW_SVC_DIR"
  python3 -m venv "$RAINBOW_SVC_DIR/venv"
fi
if [ ! -x "$RAINBOW_SVC_DIR/venv/bin/moto_server" ]; then
  echo "==> installing moto[server] 5.2.5 into $RAINBOW_SVC_DIR/venv"
  "$RAINBOW_SVC_DIR/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5' >/dev/null
fi

S3_PORT="${S3_PORT:-15000}"
MOTO_LOG="$(mktemp /tmp/rainbow-moto.XXXXXX)"
# shellcheck source=service.sh
source "$(dirname "${BASH_SOURCE[0]}")/service.sh"
start_service moto "$MOTO_LOG" "$RAINBOW_SVC_DIR/venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
wait_for_port moto "$S3_PORT" "$MOTO_LOG"
echo "==> S3 emulator (moto $("$RAINBOW_SVC_DIR/venv/bin/python" -c 'import moto; print(moto.__version__)')) on 127.0.0.1:$S3_PORT"
export RAINBOW_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
