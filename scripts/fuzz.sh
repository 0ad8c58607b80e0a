#!/usr/bin/env bash
# Run riffle's cargo-fuzz targets (fuzz/). Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# SECONDS defaults to 60 per target; with no TARGET, every target listed by
# `cargo fuzz list` runs (Postgres and MySQL decoders alike). Needs a nightly
# toolchain; installs cargo-fuzz if it is missing.
set -euo pipefail

cd "$(dirname "$0")/.."

secs=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== fuzzing $t for ${secs}s ===" >&2
    if ! cargo +nightly fuzz run "$t" -- -max_total_time="$secs"; then
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets with crashes: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} fuzz targets ran ${secs}s without crashes" >&2
