#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts the test
# servers (scripts/servers.sh), checks formatting and lints, runs unit and
# integration tests, and stops the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export RIFFLE_RUN_DIR=${RIFFLE_RUN_DIR:-/tmp/riffle-servers}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}

command -v cargo >/dev/null || { echo "test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }
scripts/build-deps.sh

# Reuse servers a developer already started; otherwise start them and stop
# them (only them) on exit.
if scripts/servers.sh running; then
    echo "== reusing the test servers in $RIFFLE_RUN_DIR"
else
    scripts/servers.sh start
    trap 'scripts/servers.sh stop' EXIT
fi
# shellcheck disable=SC1091
source "$RIFFLE_RUN_DIR/env"

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked --features failpoints -- -D warnings
echo "== tests"
cargo test --workspace --locked --features failpoints
echo "== all tests passed"
