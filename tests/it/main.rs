//! riffle's integration tests, one binary, against the real servers
//! `scripts/servers.sh` starts (run them with `scripts/test.sh`). Each test
//! makes its own database, so they run in parallel.

mod kafka_support;
mod net_proxy;
mod objects_support;
mod snapshot_support;
mod support;

mod pg_before_images;
mod pg_consistency;
mod pg_crash;
mod pg_errors;
mod pg_snapshot;
mod pg_tls;
mod pg_types;

mod my_snapshot;
mod my_stream;
mod my_tls;
mod my_types;

mod kafka;
mod kafka_debezium;
mod kafka_source;

mod demo;
mod enrich;
mod objects;

mod ops_big_values;
mod ops_check;
mod ops_crash_windows;
mod ops_disk_full;
mod ops_metrics;
mod ops_network;
mod ops_ownership;
mod ops_resilience;
mod ops_transforms;

mod snapshot_signal;

mod verify;
