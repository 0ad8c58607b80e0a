//! riffle's file sink: one commit protocol for a local directory and every
//! object store (S3, Azure Blob / ADLS Gen2, GCS, HDFS), in any of the four
//! file formats; and standard output.
//!
//! # Layout
//!
//! ```text
//! <root>/<schema>.<table>/[dt=YYYY-MM-DD/[hour=HH/]]<first position>_<last position>.<csv|jsonl|avro|parquet>
//! <root>/_riffle/<pipeline>.json          the commit manifest
//! <root>/_riffle/tmp/<pipeline>/…         files being written
//! ```
//!
//! One folder per table; a file holds a run of events of one table with one
//! schema, and is named by the positions of its first and last event, so
//! names sort in log order. Files roll when they reach `max_rows` or
//! `max_bytes`, when the table's schema changes, and at every commit (the
//! pipeline commits every `--commit-interval`, which bounds a file's age).
//! The commit protocol is in [`object`].
//!
//! # Modules
//!
//! - [`options`]: a file sink's URL and options ([`FileSinkOptions`]).
//! - [`object`]: the sink over a store: local disk or any object store.
//! - [`check`]: readiness of a directory or a bucket.
//! - [`stdout`]: standard output.

pub mod check;
mod manifest;
pub mod object;
pub mod options;
pub mod stdout;

pub use check::check;
pub use options::{FileSinkOptions, OptionError, STORE_SCHEMES};
pub use stdout::StdoutSink;

use riffle_core::{Position, SinkError};
use riffle_formats::Encoder;

/// When a file is closed and a new one started.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy { max_rows: 1_000_000, max_bytes: 128 * 1024 * 1024 }
    }
}

/// Opens the file sink `opts` for pipeline `pipeline`: finishes a commit a
/// crash interrupted and removes what was never committed.
pub fn open(opts: &FileSinkOptions, pipeline: &str, encoder: Encoder, roll: RollPolicy) -> Result<object::ObjectSink, SinkError> {
    let target = object::open_target(&opts.url, &opts.store)?;
    let format = riffle_formats::file::file_format(encoder, opts.compression.as_deref())
        .map_err(|e| SinkError::definite(format!("{}: {e}", opts.url)))?;
    object::ObjectSink::open(target, pipeline, format, roll, opts.partitioning)
}

/// The position a commit records: the last event written when it is past
/// what is committed; else the committed position again when files are
/// waiting (events skipped as replays still close files); else nothing to do.
pub(crate) fn commit_point(committed: Option<Position>, through: Option<Position>, pending: bool) -> Option<Position> {
    match through {
        Some(t) if committed.is_none_or(|c| t > c) => Some(t),
        _ if pending => Some(committed.or(through).expect("pending files hold events with positions")),
        _ => None,
    }
}

/// The folder of a table's files under a sink's root (`schema.table`, kept
/// to safe characters).
pub fn table_dir(schema: &str, table: &str) -> String {
    format!("{}.{}", sanitize(schema), sanitize(table))
}

/// Keeps table folder names to safe characters.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || matches!(c, '_' | '-' | '$') { c } else { '_' }).collect()
}
