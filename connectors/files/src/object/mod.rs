//! The file sink over a store: local directories, S3 (and S3-compatible
//! stores), Azure Blob / ADLS Gen2, GCS and HDFS, all through `object_store`
//! (and `hdfs-native-object-store`), so one commit protocol serves them all.
//!
//! # Layout
//!
//! ```text
//! <root>/<schema>.<table>/[dt=YYYY-MM-DD/[hour=HH/]]<first position>_<last position>.<ext>
//! <root>/_riffle/<pipeline>.json                       the commit manifest
//! <root>/_riffle/<pipeline>.lease                      who writes here (not on local disk: a lock there)
//! <root>/_riffle/tmp/<pipeline>/…                      files being written
//! ```
//!
//! # Commit protocol
//!
//! Object stores have no rename that readers could rely on being atomic
//! across a whole commit, but a single object appears whole or not at all
//! (a PUT, or a multipart upload's completion). So each file is written to
//! a temporary key under `_riffle/tmp/<pipeline>/` (multipart for large
//! files), and a commit (1) completes the uploads, (2) writes the manifest:
//! the committed position and the (temporary, final) keys, (3) copies each
//! file to its final key and deletes the temporary one. On start the sink
//! re-applies the manifest's renames (finishing a commit a crash
//! interrupted) and deletes every other temporary object of the pipeline:
//! events never committed, which the source replays. The manifest's
//! position lets the pipeline skip replayed events the sink already holds,
//! so a crash neither loses nor duplicates a change and never leaves a torn
//! or uncommitted object under a final key.
//!
//! # Modules
//!
//! - `store.rs`: [`Target`], [`open_target`] and [`split_url`]: building a
//!   store from a URL, single-object reads and writes, store errors.
//! - `upload.rs`: where a file's bytes go while it is written (a local
//!   file, or a multipart upload).
//! - `lease.rs`: [`lease::BucketLease`], one writer per pipeline in a
//!   bucket (conditional writes, renewals, fencing before each commit).
//! - `partition.rs`: [`Partitioning`], the time partitions of file names.
//! - `sink.rs`: [`ObjectSink`], which writes through the formats'
//!   `FileFormat` / `FileWriter` (`riffle_formats::file`); the manifest and
//!   the commit protocol above.

pub mod lease;
mod partition;
mod sink;
mod store;
mod upload;

pub use object_store::UpdateVersion;
pub use partition::Partitioning;
pub use sink::ObjectSink;
pub use store::{open_target, split_url, Target};
