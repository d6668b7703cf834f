#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs PostgreSQL from Debian's packages if it
# is missing, starts a throw-away cluster on loopback, runs rustfmt, clippy and the whole test
# suite against it (SQLite and PostgreSQL), and stops the cluster whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rainbow-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# shellcheck source=lib/pg.sh
source scripts/lib/pg.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
