//! riffle's core model: what a change is, what a value is, where a change sits
//! in the source's log, and what sources and sinks promise each other.
//!
//! # Layout
//!
//! - [`value`]: the lossless [`Value`] a column holds in an event.
//! - [`schema`]: tables, columns and their [`DataType`]s.
//! - [`position`]: typed, totally ordered [`Position`]s of events and the
//!   [`Offset`] a source resumes from.
//! - [`event`]: the [`ChangeEvent`] (Debezium's envelope: `op`, `before`,
//!   `after`, `source`, `ts_ms`, `transaction`).
//! - [`source`] and [`sink`]: the connector traits and their delivery contracts.
//! - [`error`]: errors sorted by what to do about them: retry or stop.
//! - [`check`]: readiness checks every connector reports in one shape.
//! - [`lease`]: one writer per pipeline on this machine.
//! - [`chunks`]: a chunked snapshot's saved progress.
//! - [`parallel`]: parallel chunk reads handed on one chunk at a time.
//! - [`fail`]: fail points the test suite crashes riffle at.

pub mod check;
pub mod chunks;
pub mod error;
pub mod event;
pub mod fail;
pub mod glob;
pub mod lease;
pub mod parallel;
pub mod position;
pub mod schema;
pub mod sink;
pub mod source;
pub mod url;
pub mod value;

pub use check::{human_bytes, Check, Problem, Report};
pub use chunks::{ChunkDone, KeyRange, SnapshotProgress, TableProgress};
pub use error::{ErrorKind, SinkError, SourceError};
pub use event::{BeforeImage, BinlogCoords, ChangeEvent, Op, SnapshotMark, SourceInfo};
pub use glob::glob_match;
pub use position::{kafka_lane, KafkaPosition, Lsn, MyPosition, Offset, PgPosition, Phase, Position};
pub use schema::{Column, DataType, TableId, TableSchema};
pub use sink::Sink;
pub use source::{SavedPipeline, SnapshotOptions, Source, SourceItem, SourceSpec, StartMode, StatusReport, Until};
pub use value::Value;

/// Runs a future to completion from synchronous code such as the sink
/// methods, which the pipeline calls where blocking is allowed
/// (`block_in_place` on the multi-threaded runtime); without a runtime, on
/// a current-thread one made for the call.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
        Err(_) => tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(f),
    }
}
