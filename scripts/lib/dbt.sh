# Installs dbt-core with dbt-duckdb, and sqlglot, from PyPI into a venv under $RAINBOW_SVC_DIR:
# the peers tests compare Rainbow's results with — a public dbt project built by dbt-duckdb, and
# the Rainbow SQL project transpiled by sqlglot and built by DuckDB (`rainbow bench warehouse`'s
# peer). Sourced by test.sh. Sets RAINBOW_TEST_DBT_VENV and RAINBOW_BENCH_PYTHON.

RAINBOW_SVC_DIR="${RAINBOW_SVC_DIR:-$HOME/.cache/rainbow-services}"
DBT_VENV="$RAINBOW_SVC_DIR/dbt-venv"
if [ ! -x "$DBT_VENV/bin/dbt" ] || ! "$DBT_VENV/bin/python" -c 'import sqlglot' 2>/dev/null; then
  echo "==> installing dbt-core 1.10 + dbt-duckdb 1.10 + duckdb 2.0 + sqlglot 30.30 into $DBT_VENV"
  python3 -m venv "$DBT_VENV"
  "$DBT_VENV/bin/pip" install -q --disable-pip-version-check \
    'dbt-core==1.10.23' 'dbt-duckdb==1.10.1' 'duckdb==2.0.1' 'sqlglot==30.30.0' >/dev/null
fi
echo "==> dbt peer: $("$DBT_VENV/bin/dbt" --version 2>/dev/null | grep -m1 -i 'installed' | tr -s ' ')"
export RAINBOW_TEST_DBT_VENV="$DBT_VENV"
export RAINBOW_BENCH_PYTHON="$DBT_VENV/bin/python"
