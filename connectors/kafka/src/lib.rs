//! riffle's Kafka sink: Debezium-compatible messages, so a consumer written
//! for Debezium reads riffle's topics unchanged.
//!
//! - **Topics**: one per table, `<prefix>.<schema>.<table>` (prefix = the
//!   pipeline name), or a `[[tables]] topic` rule; created through the admin
//!   API with the configured partitions and replication factor when missing.
//! - **Key**: the event's key columns (the primary key, or a unique index
//!   over NOT NULL columns without one); **value**: the envelope (`before`,
//!   `after`, `op`, `source`, `ts_ms`, `transaction`), then a tombstone (null
//!   value) after each delete. Headers carry `riffle.position` and `riffle.op`.
//! - **Encodings**: JSON, optionally wrapped in Kafka Connect's
//!   `{"schema","payload"}`, with Debezium's value forms and `source` block
//!   ([`debezium`], the default) or riffle's readable ones ([`connect`]);
//!   or Avro in the Confluent wire format with schemas registered in a
//!   Schema Registry ([`registry`]).
//! - **Delivery**: an idempotent producer (ordering per key kept across
//!   retries); [`Sink::commit`](riffle_core::Sink::commit) returns only when
//!   the broker acknowledged every message, so the pipeline never saves a
//!   position past an unacknowledged event. A full local queue blocks the
//!   pipeline (back-pressure) instead of buffering without bound.
//!
//! # Layout
//!
//! - `options.rs`: [`KafkaOptions`] and [`ValueFormat`], parsed from the URL
//!   and config; the librdkafka client settings.
//! - `topics.rs`: topic names and routes ([`legal_topic`]), topic creation.
//! - `encode.rs`: per-schema encodings, keys, envelopes, headers, tombstones.
//! - `txmeta.rs`: the transaction metadata topic (BEGIN/END markers).
//! - `sink.rs`: [`KafkaSink`], delivery tracking, the [`Sink`](riffle_core::Sink)
//!   implementation.
//! - [`connect`], [`registry`] (public): Kafka Connect JSON schemas, the Schema Registry client.
//! - [`source`] (public): Kafka as a source: topics written by riffle or
//!   Debezium read back into change events ([`source::decode`]).

pub mod connect;
pub mod connect_avro;
pub mod debezium;
mod encode;
mod options;
mod read;
pub mod registry;
mod sink;
pub mod source;
mod topics;
mod txmeta;

pub use options::{KafkaOptions, OptionError, ValueEncoding, ValueFormat};
pub use read::{avro_lines, TopicMessage};
pub use registry::RegistryError;
pub use sink::{check, KafkaSink};
pub use source::{KafkaSource, KafkaSourceOptions};
pub use topics::legal_topic;
