#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs PostgreSQL (with wal2json), chromium
# and chromium-driver from Debian's packages if they are missing and the tansu Kafka-protocol
# broker, moto's S3 emulator and the bqemulator BigQuery emulator from PyPI, starts a
# throw-away PostgreSQL cluster (logical decoding on), chromedriver, the broker and the two
# emulators on loopback, and dbt-core +
# dbt-duckdb, duckdb and sqlglot from PyPI (the peers), runs rustfmt,
# clippy and the whole test suite against them (SQLite and PostgreSQL; the UI in a real
# browser; CDC through Kafka; a public dbt project against dbt-duckdb), and stops them
# whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rainbow-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# shellcheck source=lib/pg.sh
source scripts/lib/pg.sh
# shellcheck source=lib/chromium.sh
source scripts/lib/chromium.sh
# shellcheck source=lib/kafka.sh
source scripts/lib/kafka.sh
# shellcheck source=lib/s3.sh
source scripts/lib/s3.sh
# shellcheck source=lib/bigquery.sh
source scripts/lib/bigquery.sh
# shellcheck source=lib/dbt.sh
source scripts/lib/dbt.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> the workspace-hack crate is current (cargo hakari)"
# One feature set per dependency whatever is built: the demo's `--no-default-features` build
# and the full one share every compiled dependency (BENCHMARKS.md, time to first result).
command -v cargo-hakari >/dev/null || cargo install cargo-hakari --locked --version 0.9.39 --quiet
cargo hakari generate --diff
cargo hakari manage-deps --dry-run
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo clippy, the README's demo build (--no-default-features)"
cargo clippy --bin rainbow --no-default-features --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
