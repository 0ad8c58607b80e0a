//! The source connector contract.

use crate::error::SourceError;
use crate::event::ChangeEvent;
use crate::position::Offset;
use crate::schema::TableId;
use std::future::Future;
use tokio::sync::{mpsc, watch};

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
    /// The snapshot finished: every table was copied.
    SnapshotDone,
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

    /// When the source last heard from its server (ms since the epoch; 0 never).
    pub fn last_message_ms(&self) -> i64 {
        self.last_message_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}
