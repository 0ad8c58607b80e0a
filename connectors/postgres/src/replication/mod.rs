//! The logical replication protocol: a small client for the walsender
//! ([`client`]) and a decoder for the `pgoutput` plugin's messages
//! ([`pgoutput`]). tokio-postgres does not speak the replication
//! sub-protocol (`CopyBoth`), so riffle carries its own, kept behind this
//! module boundary. Both read what the server sent through [`cursor`]'s
//! checked reads: no message, however malformed, panics.

pub mod client;
pub(crate) mod cursor;
pub mod pgoutput;

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
