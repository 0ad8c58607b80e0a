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

# Free space where the build and the servers write: the S3 stand-in turns
# read-only under 256 MiB, the databases fail when the disk is full.
free_disk() { df -Pk "$RIFFLE_RUN_DIR" target 2>/dev/null | awk 'NR > 1 { printf "%s: %d MiB free\n", $6, $4 / 1024 }' | sort -u; }
mkdir -p "$RIFFLE_RUN_DIR" target
echo "== disk"
free_disk

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
if ! cargo test --workspace --locked --features failpoints; then
    echo "== tests failed; disk and the servers' last log lines:"
    free_disk
    for f in "$RIFFLE_RUN_DIR"/*.log; do
        echo "-- $f"
        tail -n 5 "$f"
    done
    exit 1
fi
echo "== all tests passed"
