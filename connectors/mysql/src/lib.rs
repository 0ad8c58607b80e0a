//! riffle's MySQL and MariaDB source.
//!
//! # Layout
//!
//! - [`connect`]: `mysql://`/`mariadb://` URLs and connecting.
//! - [`error`]: [`MyError`], what failed and whether retrying can help.
//! - [`checks`]: binlog settings and privileges riffle needs.
//! - [`catalog`]: table selection and columns.
//! - [`types`]: MySQL types to riffle's lossless values, from text and binlog.
//! - [`snapshot`]: the consistent initial copy and its binlog position.
//! - [`stream`]: binlog rows to change events.
//! - [`json`]: MySQL's binary JSON to JSON text.
//! - [`report`]: what `riffle check` and `riffle status` show of the server.

pub mod catalog;
pub mod checks;
pub mod connect;
pub mod error;
pub mod fuzzing;
pub mod gtid;
pub mod json;
pub mod report;
pub mod rows;
pub mod snapshot;
pub mod stream;
pub mod types;

use connect::ConnectParams;
pub use error::MyError;
use mysql_async::prelude::Queryable;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{MyPosition, Offset, Phase, Position, SnapshotProgress, Source, SourceError, SourceItem, SourceSpec, StartMode, Until};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What the next run does.
#[derive(Debug, Clone)]
enum Mode {
    /// `riffle sync`: copy the tables in one consistent read.
    Sync,
    /// `riffle verify`: the same, its exact binlog position sent first.
    Verify,
    /// Snapshot unless `resume` is set, then stream the binlog;
    /// `until_now` stops at the end of the binlog. `chunks`: what an
    /// interrupted snapshot has left, read while catching up, and the
    /// selection before it changed, if it did.
    Replicate { resume: Option<Offset>, chunks: Option<(SnapshotProgress, Option<Vec<String>>)>, until_now: bool },
}

/// `--until` for MySQL/MariaDB: only `now` (the end of the binlog when
/// the run starts) is supported.
pub fn parse_position(text: &str) -> Result<Offset, SourceError> {
    Err(MyError::Until { text: text.to_string() }.into())
}

pub struct MySource {
    config: SourceSpec,
    mode: Mode,
    params: ConnectParams,
    stats: Arc<SourceStats>,
    /// The newest position the sinks hold ([`Source::sinks_hold`]).
    held: Option<MyPosition>,
}

/// A replica server id derived from the pipeline name, so two pipelines on
/// one server do not collide (override with `?server_id=N`).
pub fn default_server_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    1_000_000 + h % 1_000_000_000
}

impl MySource {
    pub fn new(spec: &SourceSpec) -> Result<Self, SourceError> {
        let params = ConnectParams::from_url(&spec.url, default_server_id(&spec.name))?;
        Ok(MySource { config: spec.clone(), mode: Mode::Sync, params, stats: Arc::default(), held: None })
    }

    pub fn params(&self) -> &ConnectParams {
        &self.params
    }

    async fn run_inner(&mut self, out: mpsc::Sender<Vec<SourceItem>>, stop: watch::Receiver<bool>) -> Result<RunEnd, MyError> {
        let mut conn = self.params.connect().await?;
        tracing::info!(source = %self.params.redacted(), "connected");
        let mariadb = checks::is_mariadb(&mut conn).await?;
        let tables = catalog::resolve_tables(&mut conn, &self.params.database, &self.config.tables, &self.config.exclude).await?;
        let ctx = snapshot::Context {
            name: Arc::from(self.config.name.as_str()),
            connector: if mariadb { "mariadb" } else { "mysql" },
            server_id: self.params.server_id,
            stats: self.stats.clone(),
            read_first: self.config.read_first.as_slice().into(),
        };
        let options = self.config.snapshot;
        let params = &self.params;
        match self.mode.clone() {
            Mode::Sync => Ok(snapshot::copy_tables(params, conn, &ctx, &tables, mariadb, false, None, options, &out, &stop).await?.0),
            Mode::Verify => Ok(snapshot::copy_tables_at(params, conn, &ctx, &tables, mariadb, options, &out, &stop).await?.0),
            Mode::Replicate { resume, chunks, until_now } => {
                // The binlog dump this pipeline streamed from last, which the
                // server may still hold (see SourceStats::take_session).
                let previous = self.stats.take_session();
                if previous != 0 {
                    checks::end_own_dump(&mut conn, previous).await?;
                }
                checks::require_replication_ready(&mut conn, &self.params).await?;
                checks::require_supported_charsets(&mut conn, &tables).await?;
                let mut stream = stream::Stream { params: &self.params, ctx: &ctx, selected: &tables, mariadb, skipped: Vec::new() };
                let Some(start) = resume else {
                    let (end, offset) =
                        snapshot::copy_tables(params, conn, &ctx, &tables, mariadb, true, self.held, options, &out, &stop).await?;
                    if end == RunEnd::Stopped {
                        return Ok(RunEnd::Stopped);
                    }
                    return stream.run(offset, until_now, None, out, stop).await;
                };
                let start = match chunks {
                    Some((progress, previous)) => {
                        let (progress, pending) = self.replan(&mut conn, progress, previous.as_deref(), &tables).await?;
                        if pending.is_empty() {
                            drop(conn);
                            // Nothing to read: the plan records the new selection.
                            if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
                                return Ok(RunEnd::Stopped);
                            }
                            start
                        } else {
                            match catch_up(conn, &mut stream, start, self.held, &progress, &pending, self.config.snapshot, &out, &stop)
                                .await?
                            {
                                Some(offset) => offset,
                                None => return Ok(RunEnd::Stopped),
                            }
                        }
                    }
                    None => {
                        // The stream has connections of its own.
                        drop(conn);
                        start
                    }
                };
                stream.run(start, until_now, None, out, stop).await
            }
        }
    }
}

/// Reads the chunks an interrupted snapshot left (and tables added or asked
/// for again), exactly, in rounds interleaved with the binlog stream.
///
/// Each round opens a new consistent read on `conn` with its binlog
/// position `at` (the same way as the first snapshot's). The stream runs
/// from where it is and stops before the first transaction that starts at
/// or after `at`: every transaction before it is in the read, none after.
/// Chunks are read in that transaction for up to `round`, positioned at
/// `at`, and the next round goes on from `at`. So each row read sits in the
/// output where its state is current, nothing is read twice, and the other
/// tables' changes wait at most one round. Tables read whole at `at` (no
/// chunk committed) start there: their earlier changes are left out.
/// A server that wrote nothing since an earlier read (this run's last
/// round, or a run before whose rows the sinks hold: `held`) gives the same
/// `at` again: the round's rows are numbered after the earlier ones there.
/// Returns where the stream goes on, or `None` when stopped.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    mut conn: mysql_async::Conn,
    stream: &mut stream::Stream<'_>,
    mut from: Offset,
    mut held: Option<MyPosition>,
    progress: &SnapshotProgress,
    pending: &[catalog::SelectedTable],
    options: riffle_core::SnapshotOptions,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Offset>, MyError> {
    let mut progress = progress.clone();
    let mut pending = pending.to_vec();
    for round in 1.. {
        let mut snap = snapshot::begin(&mut conn, stream.mariadb).await?;
        let at = (snapshot::file_seq(&snap.file), snap.pos);
        snap.follow(held);
        tracing::info!(
            from = %from,
            at = %snap.offset(),
            round,
            tables = pending.len(),
            "snapshot round: streaming up to a new consistent read's position, then reading chunks there"
        );
        let behind = match &from {
            Offset::Mysql { file, pos, .. } => (snapshot::file_seq(file), *pos) < at,
            _ => return Err(MyError::NotMysqlPosition),
        };
        if behind {
            stream.skipped = pending
                .iter()
                .filter(|t| progress.table(&t.id.to_string()).is_none_or(|p| p.starts_with_snapshot()))
                .map(|t| t.id.clone())
                .collect();
            let end = stream.run(from.clone(), false, Some(at), out.clone(), stop.clone()).await;
            stream.skipped.clear();
            if end? == RunEnd::Stopped {
                return Ok(None);
            }
        }
        let (mut plan, planned) = snapshot::plan(&mut conn, &pending, Some(&progress)).await?;
        if out.send(vec![SourceItem::SnapshotPlan(plan.clone())]).await.is_err() {
            return Ok(None);
        }
        let until = Some(tokio::time::Instant::now() + options.round);
        let chunk_rows = options.rows_per_chunk(snapshot::CHUNK_ROWS);
        let (end, read, mut back) = snapshot::copy(vec![conn], stream.ctx, &mut snap, planned, chunk_rows, true, until, out, stop).await?;
        if end != RunEnd::SnapshotComplete {
            return Ok(None);
        }
        held = Some(MyPosition { file: at.0, pos: at.1, phase: Phase::Snapshot, seq: snap.read_through });
        conn = back.pop().ok_or_else(|| MyError::Unexpected("the snapshot round's connection was not given back".into()))?;
        conn.query_drop("COMMIT").await.map_err(|e| MyError::query("ending the snapshot", e))?;
        for t in read.tables {
            plan.add(t);
        }
        progress = plan;
        from = snap.offset();
        pending.retain(|t| progress.table(&t.id.to_string()).is_some_and(|p| !p.is_done()));
        if pending.is_empty() {
            let done = vec![SourceItem::SnapshotDone, SourceItem::Checkpoint(snap.offset())];
            return Ok(out.send(done).await.is_ok().then_some(snap.offset()));
        }
    }
    unreachable!("the rounds end when no table is left")
}

impl MySource {
    /// The snapshot plan of a resumed run and the tables it reads: the
    /// chunks an interrupted snapshot left; when the selection changed since
    /// `previous`, the tables it adds (planned whole; their changes before
    /// the read are left out); and the tables `riffle snapshot` asked to
    /// read again (planned whole; all their changes delivered). Tables the
    /// selection removes are no longer captured (the stream reads only the
    /// selection).
    async fn replan(
        &self,
        conn: &mut mysql_async::Conn,
        mut progress: SnapshotProgress,
        previous: Option<&[String]>,
        tables: &[catalog::SelectedTable],
    ) -> Result<(SnapshotProgress, Vec<catalog::SelectedTable>), MyError> {
        let db = &self.params.database;
        let mut pending: Vec<catalog::SelectedTable> =
            tables.iter().filter(|t| progress.table(&t.id.to_string()).is_some_and(|p| !p.is_done())).cloned().collect();
        if let Some(previous) = previous {
            let before = catalog::resolve_tables_lenient(conn, db, previous, &self.config.exclude).await?;
            for t in before.iter().filter(|b| !tables.iter().any(|t| t.id == b.id)) {
                tracing::warn!(table = %t.id, "table removed from the selection: its changes are no longer captured");
                progress.tables.retain(|p| p.table != t.id.to_string());
            }
            for t in tables.iter().filter(|t| !before.iter().any(|b| b.id == t.id)) {
                tracing::info!(table = %t.id, "table added to the selection: it is snapshotted, then streamed");
                progress.tables.retain(|p| p.table != t.id.to_string());
                if !pending.iter().any(|p| p.id == t.id) {
                    pending.push(t.clone());
                }
            }
        }
        for glob in std::mem::take(&mut progress.requested) {
            let pattern = if glob.contains('.') { glob.clone() } else { format!("{db}.{glob}") };
            let matched: Vec<&catalog::SelectedTable> =
                tables.iter().filter(|t| riffle_core::glob_match(&pattern, &t.id.to_string())).collect();
            if matched.is_empty() {
                tracing::warn!(tables = glob, "riffle snapshot asked for tables this pipeline does not capture; nothing to read for them");
            }
            for t in matched {
                tracing::info!(table = %t.id, "snapshotting the table again, as riffle snapshot asked");
                progress.read_again(t.id.to_string());
                if !pending.iter().any(|p| p.id == t.id) {
                    pending.push(t.clone());
                }
            }
        }
        Ok((progress, pending))
    }
}

impl Source for MySource {
    fn sinks_hold(&mut self, through: Option<Position>) {
        self.held = match through {
            Some(Position::Mysql(p)) => Some(p),
            _ => None,
        };
    }

    /// An interrupted snapshot that committed no chunk left nothing on the
    /// server: it starts again.
    fn prepare(&mut self, start: StartMode, until: Until) -> Result<(), SourceError> {
        let until_now = match until {
            Until::Never => false,
            Until::Now => true,
            Until::At(o) => return parse_position(&o.to_string()).map(|_| ()),
        };
        self.mode = match start {
            StartMode::Copy => Mode::Sync,
            StartMode::Verify => Mode::Verify,
            StartMode::Snapshot | StartMode::ResumeSnapshot(_) => Mode::Replicate { resume: None, chunks: None, until_now },
            StartMode::Resume(offset) => Mode::Replicate { resume: Some(offset), chunks: None, until_now },
            StartMode::ResumeChunks { offset, progress, previous_tables } => {
                Mode::Replicate { resume: Some(offset), chunks: Some((progress, previous_tables)), until_now }
            }
        };
        Ok(())
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        _durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        // The binlog needs no acknowledgement: the server keeps it by time
        // (binlog_expire_logs_seconds), not by reader.
        Ok(self.run_inner(out, stop).await?)
    }
}
