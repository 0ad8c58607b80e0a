#!/usr/bin/env bash
# Installs what building riffle needs beyond Rust itself, when missing
# (idempotent): a C toolchain, make and pkg-config for the bundled
# librdkafka, OpenSSL's headers for Kafka over TLS/SASL, and perl, which
# building OpenSSL from source (`--features vendored`) runs.
set -euo pipefail

missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
perl -MFindBin -MIPC::Cmd -e 1 2>/dev/null || missing+=(perl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-deps: installing ${missing[*]} (apt-get)" >&2
    run=()
    [ "$(id -u)" = 0 ] || run=(sudo)
    "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
