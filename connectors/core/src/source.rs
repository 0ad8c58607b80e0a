//! The source connector contract.

use crate::chunks::{ChunkDone, SnapshotProgress};
use crate::error::SourceError;
use crate::event::ChangeEvent;
use crate::position::{Offset, Position};
use crate::schema::TableId;
use std::future::Future;
use tokio::sync::{mpsc, watch};

/// The most bytes of row data a source puts in one batch (besides at most
/// a thousand or so events): with the pipeline's queue of 16 batches, what a
/// source has in flight stays near 100 MB whatever the rows' size.
pub const BATCH_BYTES: usize = 4 << 20;

/// What a source hands the pipeline, in log order.
#[derive(Debug)]
pub enum SourceItem {
    Event(ChangeEvent),
    /// Every event sent so far forms a complete prefix of the log (it ends
    /// on a transaction boundary), and resuming from `offset` yields exactly
    /// the events after it. Only here may the pipeline commit its sinks and
    /// save `offset`.
    Checkpoint(Offset),
    /// The source created what the snapshot depends on (Postgres: the slot,
    /// whose consistent point `offset` is). The pipeline records it, so a
    /// run after a crash knows which slot is its own to drop and recreate.
    SnapshotStarted(Offset),
    /// The snapshot starts copying a table; `estimated_rows` comes from the
    /// source's statistics and is only a guide for progress display.
    SnapshotTable {
        table: TableId,
        estimated_rows: u64,
    },
    /// The snapshot's plan: every table and key range it will read (a
    /// resumed snapshot: the ranges still to read). Sent before the first
    /// chunk; the pipeline saves it with the offset at each commit.
    SnapshotPlan(SnapshotProgress),
    /// Every row of one chunk has been sent. Recorded in the plan at the
    /// next commit, together with the offset of the checkpoint that follows.
    ChunkDone(ChunkDone),
    /// The snapshot finished: every table was copied.
    SnapshotDone,
    /// An event an earlier run delivered, read again only so the pipeline
    /// rebuilds its copy of an enrichment's reference table after a
    /// restart (a source without a snapshot: Kafka). It goes to no sink.
    Reference(ChangeEvent),
}

/// What every source is built from: the pipeline's `[source]` table and
/// the pipeline-wide settings a source reads. Options particular to one
/// system travel in the URL's query (`?sslmode=…`, `?server_id=…`), parsed
/// and documented by that system's connector.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub url: String,
    /// The pipeline's name; sources name what they create on the server
    /// after it (a slot, a publication, a replica id).
    pub name: String,
    /// Table globs, `schema.table`.
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    /// Emit a heartbeat this often while streaming (sources that need one
    /// to keep their log moving while the selected tables are idle).
    pub heartbeat: Option<std::time::Duration>,
    /// Refuse tables whose updates and deletes would carry only the key.
    pub full_before_images: bool,
    pub snapshot: SnapshotOptions,
    /// Tables (`schema.table`) a snapshot reads whole before any other
    /// starts ([`crate::parallel`]): the reference tables of an enrichment,
    /// so the rows joined to them find them.
    pub read_first: Vec<String>,
}

/// How a snapshot reads its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Connections reading chunks at once; `None`: the source picks from
    /// the machine's cores and the server's free connections.
    pub workers: Option<usize>,
    /// Rows per chunk (a chunk is the unit of progress saved); `None`: the
    /// source's own default ([`SnapshotOptions::rows_per_chunk`]).
    pub chunk_rows: Option<u64>,
    /// How long one round of a snapshot read while streaming (a resume, an
    /// added table) reads chunks before the stream goes on.
    pub round: std::time::Duration,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions { workers: None, chunk_rows: None, round: std::time::Duration::from_secs(5) }
    }
}

impl SnapshotOptions {
    /// Rows per chunk: as asked, else the source's `default` (each source
    /// knows what a query of its own costs).
    pub fn rows_per_chunk(&self, default: u64) -> u64 {
        self.chunk_rows.unwrap_or(default)
    }
}

/// One pipeline as the state store holds it, for a source's `riffle status`
/// and `riffle check`.
#[derive(Debug, Clone)]
pub struct SavedPipeline {
    pub name: String,
    pub offset: Option<Offset>,
    /// Where its state lives, for messages that tell the user what to remove.
    pub location: String,
}

/// What a source says about one pipeline in `riffle status`: a JSON object
/// under `key` for `--json`, and the same as lines for people.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// `slot`, `binlog`: names the object in `--json` output.
    pub key: &'static str,
    pub json: serde_json::Value,
    /// `(label, text)` lines, e.g. `("slot", "riffle_x (active), …")`.
    pub lines: Vec<(&'static str, String)>,
}

/// Where a run starts: what the pipeline's saved state says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// `riffle sync`: one consistent copy of the tables, nothing left
    /// behind on the server (no slot), then [`RunEnd::SnapshotComplete`].
    Copy,
    /// `riffle verify`: like [`StartMode::Copy`], at an exact log position
    /// sent first as [`SourceItem::SnapshotStarted`]: the copy holds every
    /// change before it and none after. Nothing is left on the server.
    Verify,
    /// No saved position: take the initial snapshot, then stream.
    Snapshot,
    /// An earlier run began a snapshot at this offset (Postgres: created
    /// its slot there) and did not finish it: what it left on the server is
    /// this pipeline's own to clean up before the snapshot starts again.
    ResumeSnapshot(Offset),
    /// Stream from a saved offset: every change before it is in every sink.
    Resume(Offset),
    /// Stream from a saved offset, and read the chunks of `progress` still
    /// left (a snapshot interrupted after some chunks were committed) while
    /// catching up. With `previous_tables`, the selection changed since the
    /// pipeline last saved: it was those globs. Tables the new selection
    /// adds are snapshotted the same way (added to the plan the source
    /// sends); tables it drops stop being captured.
    ResumeChunks { offset: Offset, progress: SnapshotProgress, previous_tables: Option<Vec<String>> },
}

/// Where a replicate run stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Until {
    /// Stream until stopped.
    Never,
    /// The source's log position when the run started.
    Now,
    /// A given position (parsed by the source, which knows its form).
    At(Offset),
}

/// Why a source's `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The snapshot of a one-shot `sync` is complete.
    SnapshotComplete,
    /// The stream reached the requested `--until` position.
    ReachedUntil,
    /// The pipeline asked the source to stop (a signal, or the pipeline ended).
    Stopped,
}

/// A source of change events: a database's snapshot and log.
///
/// Contract:
/// - events are sent in position order, and a [`SourceItem::Checkpoint`]
///   follows each transaction; a source never sends a checkpoint inside a
///   transaction;
/// - delivery is at-least-once: after a crash the source resumes from the last
///   offset the pipeline saved and may send again events that sinks already
///   hold, with the same positions as the first time;
/// - the source tells its server it may discard log only up to the offset
///   it receives on `durable`, which the pipeline sends only after every sink
///   made the events before it durable;
/// - when `stop` turns true, the source finishes the transaction it is in
///   (or abandons a snapshot), sends its last checkpoint and returns
///   [`RunEnd::Stopped`].
pub trait Source: Send {
    /// Sets where the next [`Source::run`] starts and stops; the pipeline
    /// calls it before every run (a retry resumes from the newest saved
    /// offset). An `Until::Now` a previous run already resolved to a
    /// position keeps that position, so retries stop at the same place.
    fn prepare(&mut self, start: StartMode, until: Until) -> Result<(), SourceError>;

    /// The newest position the pipeline's sinks hold or may hold (what the
    /// state saved and what each sink committed), told before every run. A
    /// source whose reads may sit at the same log point as earlier ones (a
    /// MySQL snapshot round on a server that wrote nothing since the last)
    /// numbers them after it, so no position is used twice.
    fn sinks_hold(&mut self, _through: Option<Position>) {}

    /// Live figures about the server for lag, status and health.
    fn stats(&self) -> std::sync::Arc<SourceStats>;

    fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<RunEnd, SourceError>> + Send;
}

/// What a source reports about its server while it runs, read by the
/// pipeline for lag, status and health. Lock-free: the source updates it on
/// every message.
#[derive(Debug, Default)]
pub struct SourceStats {
    server_position: std::sync::atomic::AtomicU64,
    last_message_ms: std::sync::atomic::AtomicI64,
    session: std::sync::atomic::AtomicU64,
}

impl SourceStats {
    /// The server's log position (Postgres: the walsender's WAL end) as of
    /// its latest message.
    pub fn saw(&self, server_position: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.server_position.fetch_max(server_position, Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        self.last_message_ms.store(now, Relaxed);
    }

    pub fn server_position(&self) -> u64 {
        self.server_position.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server-side session the source streams on (Postgres: the
    /// walsender's pid; MySQL/MariaDB: the binlog dump's connection id),
    /// saved with the pipeline's state.
    pub fn set_session(&self, id: u64) {
        self.session.store(id, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn session(&self) -> u64 {
        self.session.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the session an earlier run left (0: none): a run whose
    /// connection was lost, or, through the saved state, a process that
    /// died. The server may still hold it for a while (a walsender holding
    /// the slot, a dump registered under riffle's server id); the next run
    /// ends it, as its own, instead of waiting or taking it for another
    /// reader. Only a pipeline's lease holder may hand one over.
    pub fn take_session(&self) -> u64 {
        self.session.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// When the source last heard from its server (ms since the epoch; 0 never).
    pub fn last_message_ms(&self) -> i64 {
        self.last_message_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}
