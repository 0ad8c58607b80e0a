# riffle in a container: docker build -t riffle . && docker run --rm riffle --help
# The build stage needs what scripts/build-deps.sh installs (a C toolchain,
# make, pkg-config, OpenSSL headers) for the bundled librdkafka.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist --bin riffle

# The binary needs glibc, OpenSSL (Kafka over TLS/SASL) and zlib at run time.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/dist/riffle /usr/local/bin/riffle
USER 65532:65532
ENTRYPOINT ["riffle"]
