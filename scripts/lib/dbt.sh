# Installs dbt-core with dbt-duckdb from PyPI into a venv under $RAINBOW_SVC_DIR: the peer the
# dbt-compatibility test compares Rainbow's results with (a public dbt project built by both).
# Sourced by test.sh. Sets RAINBOW_TEST_DBT_VENV.

RAINBOW_SVC_DIR="${RAINBOW_SVC_DIR:-$HOME/.cache/rainbow-services}"
DBT_VENV="$RAINBOW_SVC_DIR/dbt-venv"
if [ ! -x "$DBT_VENV/bin/dbt" ]; then
  echo "==> installing dbt-core 1.10 + dbt-duckdb 1.10 into $DBT_VENV"
  python3 -m venv "$DBT_VENV"
  "$DBT_VENV/bin/pip" install -q --disable-pip-version-check \
    'dbt-core==1.10.23' 'dbt-duckdb==1.10.1' >/dev/null
fi
echo "==> dbt peer: $("$DBT_VENV/bin/dbt" --version 2>/dev/null | grep -m1 -i 'installed' | tr -s ' ')"
export RAINBOW_TEST_DBT_VENV="$DBT_VENV"
