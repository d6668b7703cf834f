# Starts a BigQuery emulator for the BigQuery-target tests: bqemulator 1.4.0 from PyPI (REST
# API on DuckDB + sqlglot), in its own venv under $RAINBOW_SVC_DIR (its duckdb pin, 1.5.5,
# differs from the dbt peers'). It starts offline only with duckdb-extension-spatial 1.5.5's
# extension file copied where DuckDB looks for it (otherwise it downloads it), and numpy. Its
# GCS root is a scratch directory. Stops it when the calling script exits. Sourced by test.sh.
# Sets RAINBOW_TEST_BIGQUERY_ENDPOINT and RAINBOW_TEST_BIGQUERY_GCS_ROOT.

RAINBOW_SVC_DIR="${RAINBOW_SVC_DIR:-$HOME/.cache/rainbow-services}"
BQ_VENV="$RAINBOW_SVC_DIR/bq-venv"
if [ ! -x "$BQ_VENV/bin/bqemulator" ]; then
  echo "==> installing bqemulator 1.4.0 (duckdb 1.5.5, spatial, numpy) into $BQ_VENV"
  mkdir -p "$RAINBOW_SVC_DIR"
  python3 -m venv "$BQ_VENV"
  "$BQ_VENV/bin/pip" install -q --disable-pip-version-check bqemulator==1.4.0 duckdb==1.5.5 \
    duckdb-extension-spatial==1.5.5 numpy >/dev/null
fi

BQ_HOME="$(mktemp -d /tmp/rainbow-bqemu.XXXXXX)"
mkdir -p "$BQ_HOME/.duckdb/extensions/v1.5.5/linux_amd64" "$BQ_HOME/gcs"
cp "$("$BQ_VENV/bin/python" -c 'import duckdb_extension_spatial as m, os; print(os.path.dirname(m.__file__))')/extensions/v1.5.5/spatial.duckdb_extension" \
  "$BQ_HOME/.duckdb/extensions/v1.5.5/linux_amd64/"
BQ_PORT="${BQ_PORT:-19050}"
BQ_LOG="$BQ_HOME/emulator.log"
# shellcheck source=service.sh
source "$(dirname "${BASH_SOURCE[0]}")/service.sh"
start_service bqemulator "$BQ_LOG" env HOME="$BQ_HOME" BQEMU_GCS_LOCAL_ROOT="$BQ_HOME/gcs" \
  "$BQ_VENV/bin/bqemulator" start --rest-port "$BQ_PORT" --grpc-port "$((BQ_PORT + 10))" \
  --project rainbow-test --log-level warning
wait_for_port bqemulator "$BQ_PORT" "$BQ_LOG"
RAINBOW_CLEANUPS="${RAINBOW_CLEANUPS:-} cleanup_bq_home"
cleanup_bq_home() { rm -rf "$BQ_HOME"; }
echo "==> BigQuery emulator (bqemulator 1.4.0) on 127.0.0.1:$BQ_PORT"
export RAINBOW_TEST_BIGQUERY_ENDPOINT="http://127.0.0.1:$BQ_PORT"
# The emulator reads gs://<bucket>/<path> from here: a lake written under it is BigQuery's too.
export RAINBOW_TEST_BIGQUERY_GCS_ROOT="$BQ_HOME/gcs"
