# riffle in a container: docker build -t riffle . && docker run --rm riffle --help
# The build stage needs what scripts/build-deps.sh installs (a C toolchain,
# make, perl, pkg-config) for the bundled librdkafka and OpenSSL.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config perl make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist --features vendored --bin riffle

# OpenSSL and zlib are built in: the binary needs glibc only (and CA
# certificates for TLS to Kafka, object stores and databases).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/dist/riffle /usr/local/bin/riffle
USER 65532:65532
ENTRYPOINT ["riffle"]
