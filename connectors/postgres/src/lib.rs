//! riffle's PostgreSQL source.
//!
//! # Layout
//!
//! - [`connect`]: `postgres://` URLs and connection errors with their fixes.
//! - [`catalog`]: table selection, schemas, the publication and the slot.
//! - [`checks`]: the server settings riffle needs, checked before anything starts.
//! - [`types`]: Postgres types to riffle's lossless values.
//! - [`snapshot`]: the consistent initial copy (and why the hand-off to the
//!   stream loses and duplicates nothing).
//! - [`chunked`]: snapshot reads in key-range chunks by parallel workers,
//!   and why a resumed snapshot is exact.
//! - [`stream`]: pgoutput changes to events, keepalives, flush confirmation.
//! - [`replication`]: the walsender protocol client and pgoutput decoder.
//! - [`report`]: what `riffle check` and `riffle status` show of the server.
//! - [`slots`]: listing and dropping riffle's slots (`riffle slots`).

pub mod catalog;
pub mod checks;
pub mod chunked;
pub mod connect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod replication;
pub mod report;
pub mod slots;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod types;

use catalog::SelectedTable;
use connect::ConnectParams;
use error::PgError;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{Lsn, Offset, SnapshotProgress, Source, SourceError, SourceItem, SourceSpec, StartMode, Until};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Settings every riffle session runs with, on both the snapshot and the
/// replication connection, so values have one text form (see [`types`]).
pub const SESSION_OPTIONS: &str =
    "-c datestyle=ISO -c intervalstyle=iso_8601 -c timezone=UTC -c extra_float_digits=1 -c bytea_output=hex -c client_encoding=UTF8";

/// Quotes an identifier for SQL: `"my ""table"""`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Where a replicate run stops, in LSNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopAt {
    Never,
    /// The server's WAL position when the run starts, resolved then.
    Now,
    Lsn(Lsn),
}

/// What the next run does.
#[derive(Debug, Clone)]
enum Mode {
    /// `riffle sync`: copy the tables in one consistent read, no slot.
    Sync,
    /// `riffle verify`: copy the tables at a temporary slot's consistent
    /// point (exact: the snapshot holds every transaction committed before
    /// it), sent first.
    Verify,
    /// `riffle replicate`: snapshot through a new slot unless `resume` is
    /// set, then stream.
    Replicate {
        resume: Option<Offset>,
        /// A previous run created the slot at this consistent point and
        /// stopped before its copy completed: a slot still at that point is
        /// ours to drop and recreate.
        snapshot_interrupted: Option<Lsn>,
        /// Chunks a snapshot has left to read, caught up with before
        /// streaming on; and the selection before it changed, if it did.
        chunks: Option<(SnapshotProgress, Option<Vec<String>>)>,
        until: StopAt,
    },
}

/// `--until` for Postgres: an LSN such as `0/16B3748`.
pub fn parse_position(text: &str) -> Result<Offset, SourceError> {
    let lsn: Lsn = text.parse().map_err(PgError::InvalidUntil)?;
    Ok(Offset::Postgres { lsn })
}

/// Slot and publication names: `[a-z0-9_]`, at most 63 bytes.
pub fn object_name(pipeline: &str) -> String {
    let mut s: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    s.truncate(63);
    s
}

pub struct PgSource {
    config: SourceSpec,
    mode: Mode,
    params: ConnectParams,
    name: Arc<str>,
    stats: Arc<SourceStats>,
}

impl PgSource {
    pub fn new(spec: &SourceSpec) -> Result<Self, SourceError> {
        let params = ConnectParams::from_url(&spec.url)?;
        let name: Arc<str> = Arc::from(spec.name.as_str());
        Ok(PgSource { config: spec.clone(), mode: Mode::Sync, params, name, stats: Arc::default() })
    }

    pub fn params(&self) -> &ConnectParams {
        &self.params
    }

    async fn run_inner(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, PgError> {
        let client = self.params.connect().await?;
        tracing::info!(source = %self.params.redacted(), "connected");
        let tables = catalog::resolve_tables(&client, &self.config.tables, &self.config.exclude).await?;
        let db: Arc<str> = Arc::from(self.params.dbname.as_str());
        let ctx = snapshot::Context {
            name: self.name.clone(),
            db: db.clone(),
            stats: self.stats.clone(),
            read_first: self.config.read_first.as_slice().into(),
        };
        match self.mode.clone() {
            Mode::Sync => snapshot::sync_copy(&client, &self.params, &ctx, &tables, self.config.snapshot, &out, &stop).await,
            Mode::Verify => {
                // Temporary: the server drops it when this session ends.
                let name = format!("riffle_verify_{}_{:x}", std::process::id(), snapshot::now_us() & 0xffff_ffff);
                let mut temp = replication::client::ReplicationClient::connect(&self.params).await?;
                let rows = temp
                    .simple_query(&format!("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT", quote_ident(&name)))
                    .await?;
                let (at, snapshot_name) = created_slot(&rows)?;
                tracing::info!(at = %at, "reading the tables at a consistent point");
                if out.send(vec![SourceItem::SnapshotStarted(Offset::Postgres { lsn: at })]).await.is_err() {
                    return Ok(RunEnd::Stopped);
                }
                // The exported snapshot lives while `temp` stays open and idle.
                let done = self.copy_chunks(&client, &ctx, &snapshot_name, at, &tables, None, &out, &stop).await?;
                drop(temp);
                Ok(if done { RunEnd::SnapshotComplete } else { RunEnd::Stopped })
            }
            Mode::Replicate { resume, snapshot_interrupted, chunks, until } => {
                checks::require_replication_ready(&client, &self.params, &tables, self.config.full_before_images).await?;
                let slot = object_name(&self.config.name);
                let until_lsn = match until {
                    StopAt::Never => None,
                    StopAt::Now => {
                        let now = catalog::current_lsn(&client).await?;
                        tracing::info!(until = %now, "replicating until the current position");
                        self.mode = Mode::Replicate {
                            resume: resume.clone(),
                            snapshot_interrupted,
                            chunks: chunks.clone(),
                            until: StopAt::Lsn(now),
                        };
                        Some(now)
                    }
                    StopAt::Lsn(l) => Some(l),
                };
                let start = match resume {
                    Some(Offset::Postgres { lsn }) => {
                        self.check_slot_for_resume(&client, &slot, lsn).await?;
                        lsn
                    }
                    None => match self.take_snapshot(&client, &ctx, &slot, &tables, snapshot_interrupted, &out, &stop).await? {
                        Some(lsn) => lsn,
                        None => return Ok(RunEnd::Stopped),
                    },
                    Some(other) => return Err(PgError::NotAPostgresPosition { offset: other.to_string() }),
                };
                let mut stream = stream::Stream::new(client, ctx.clone(), until_lsn, self.stats.clone(), self.config.heartbeat);
                let start = match chunks {
                    Some((progress, previous)) => {
                        let (progress, pending) = self.replan(stream.catalog(), &slot, progress, previous.as_deref(), &tables).await?;
                        if pending.is_empty() {
                            // Nothing to read: the plan records the new selection.
                            if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
                                return Ok(RunEnd::Stopped);
                            }
                            start
                        } else {
                            match self.catch_up(&mut stream, &ctx, &slot, start, &progress, &pending, &out, &durable, &stop).await? {
                                Some(lsn) => lsn,
                                None => return Ok(RunEnd::Stopped),
                            }
                        }
                    }
                    None => start,
                };
                if until_lsn.is_some_and(|u| start >= u) {
                    return Ok(RunEnd::ReachedUntil);
                }
                stream.run(&self.params, &slot, start, None, out, durable, stop).await
            }
        }
    }

    /// Ends the walsender this pipeline streamed from last (its session,
    /// see [`SourceStats::take_session`]) when it still holds the slot: its
    /// connection was lost (a silently dropped network path, a killed
    /// process) and the server has not noticed yet. Any other walsender is
    /// left alone: that is another reader, and refused.
    async fn end_own_walsender(&self, client: &tokio_postgres::Client, slot: &str) -> Result<(), PgError> {
        let Ok(ours) = i32::try_from(self.stats.take_session()) else { return Ok(()) };
        if ours == 0 {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Some(info) = catalog::slot_info(client, slot).await? {
            if !info.active || info.active_pid != Some(ours) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tracing::info!(slot, pid = ours, "ending this pipeline's previous walsender, whose connection was lost");
            client.execute("SELECT pg_terminate_backend($1)", &[&ours]).await.map_err(PgError::session("ending the previous walsender"))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn check_slot_for_resume(&self, client: &tokio_postgres::Client, slot: &str, lsn: Lsn) -> Result<(), PgError> {
        self.end_own_walsender(client, slot).await?;
        match catalog::slot_info(client, slot).await? {
            None => Err(PgError::SlotMissing { slot: slot.to_string(), saved: lsn }),
            Some(info) => {
                self.check_slot_owner(slot, &info)?;
                let confirmed = info.confirmed_flush.as_deref().and_then(|c| c.parse::<Lsn>().ok());
                if let Some(confirmed) = confirmed.filter(|c| *c > lsn) {
                    return Err(PgError::SlotAdvanced { slot: slot.to_string(), confirmed, saved: lsn });
                }
                Ok(())
            }
        }
    }

    fn check_slot_owner(&self, slot: &str, info: &catalog::SlotInfo) -> Result<(), PgError> {
        if info.database.as_deref() != Some(self.params.dbname.as_str()) || info.plugin.as_deref() != Some("pgoutput") {
            return Err(PgError::SlotOfAnotherDatabase {
                slot: slot.to_string(),
                slot_database: info.database.clone(),
                plugin: info.plugin.clone(),
                database: self.params.dbname.clone(),
            });
        }
        if info.active {
            return Err(PgError::SlotInUse { slot: slot.to_string() });
        }
        Ok(())
    }

    /// Creates the publication and the slot, then copies the tables inside
    /// the slot's exported snapshot. Returns the slot's consistent point, or
    /// `None` when stopped before the copy finished.
    #[allow(clippy::too_many_arguments)]
    async fn take_snapshot(
        &self,
        client: &tokio_postgres::Client,
        ctx: &snapshot::Context,
        slot: &str,
        tables: &[SelectedTable],
        interrupted: Option<Lsn>,
        out: &mpsc::Sender<Vec<SourceItem>>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Lsn>, PgError> {
        let existing = catalog::slot_info(client, slot).await?;
        if let Some(info) = &existing {
            self.check_slot_owner(slot, info)?;
        }
        catalog::ensure_publication(client, slot, tables).await?;
        if let Some(info) = existing {
            // Only a slot this pipeline created for a snapshot that never
            // completed, and that nobody has advanced since, may be dropped.
            let ours = interrupted.is_some_and(|lsn| info.confirmed_flush.as_deref().and_then(|c| c.parse::<Lsn>().ok()) == Some(lsn));
            if !ours {
                return Err(PgError::SlotWithoutPosition { slot: slot.to_string(), pipeline: self.config.name.clone() });
            }
            tracing::info!(slot, "dropping the slot of an interrupted snapshot to take a new one");
            catalog::drop_slot(client, slot).await?;
        }
        let mut repl = replication::client::ReplicationClient::connect(&self.params).await?;
        let rows = repl.simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", quote_ident(slot))).await?;
        let (consistent, snapshot_name) = created_slot(&rows)?;
        tracing::info!(slot, consistent_point = %consistent, "created replication slot");
        if out.send(vec![SourceItem::SnapshotStarted(Offset::Postgres { lsn: consistent })]).await.is_err() {
            return Ok(None);
        }
        // The exported snapshot lives while `repl` stays open and idle.
        let end = self.copy_chunks(client, ctx, &snapshot_name, consistent, tables, None, out, stop).await?;
        drop(repl);
        Ok(end.then_some(consistent))
    }

    /// Reads the chunks of `tables` (a fresh plan, or what `resumed` has
    /// left) inside the exported snapshot `snapshot` whose consistent point
    /// is `at`, then ends the snapshot with a checkpoint at `at`. False when
    /// stopped first.
    #[allow(clippy::too_many_arguments)]
    async fn copy_chunks(
        &self,
        client: &tokio_postgres::Client,
        ctx: &snapshot::Context,
        snapshot: &str,
        at: Lsn,
        tables: &[SelectedTable],
        resumed: Option<&SnapshotProgress>,
        out: &mpsc::Sender<Vec<SourceItem>>,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, PgError> {
        let options = self.config.snapshot;
        let workers = chunked::workers(client, options.workers).await?;
        let (progress, planned) =
            snapshot::plan(client, tables, resumed, options.rows_per_chunk(crate::chunked::CHUNK_ROWS), workers).await?;
        if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
            return Ok(false);
        }
        let job = chunked::CopyJob {
            params: &self.params,
            ctx,
            snapshot,
            at,
            workers,
            chunk_rows: options.rows_per_chunk(crate::chunked::CHUNK_ROWS),
            checkpoints: true,
            until: None,
        };
        if chunked::copy(job, planned, out, stop).await?.0 != RunEnd::SnapshotComplete {
            return Ok(false);
        }
        Ok(out.send(vec![SourceItem::SnapshotDone, SourceItem::Checkpoint(Offset::Postgres { lsn: at })]).await.is_ok())
    }

    /// The snapshot plan of a resumed run, the tables it has to read, and
    /// those of them whose changes before the catch-up point are left out:
    /// the chunks an interrupted snapshot left; when the selection changed
    /// since `previous`, the tables it adds (published from now on, planned
    /// whole); and the tables `riffle snapshot` asked to read again (planned
    /// whole; their changes are all delivered, since consumers have seen
    /// their rows). Tables the selection removes leave the publication:
    /// their changes stop.
    async fn replan(
        &self,
        client: &tokio_postgres::Client,
        publication: &str,
        mut progress: SnapshotProgress,
        previous: Option<&[String]>,
        tables: &[SelectedTable],
    ) -> Result<(SnapshotProgress, Vec<SelectedTable>), PgError> {
        chunked::mark_positional(&mut progress);
        let mut pending: Vec<SelectedTable> =
            tables.iter().filter(|t| progress.table(&t.id.to_string()).is_some_and(|p| !p.is_done())).cloned().collect();
        if let Some(previous) = previous {
            let before = catalog::resolve_tables_lenient(client, previous, &self.config.exclude).await?;
            let added: Vec<SelectedTable> = tables.iter().filter(|t| !before.iter().any(|b| b.oid == t.oid)).cloned().collect();
            let published = catalog::publication_tables(client, publication).await?;
            let removed: Vec<String> = published.iter().filter(|p| !tables.iter().any(|t| t.id.to_string() == **p)).cloned().collect();
            catalog::alter_publication(client, publication, &added, &removed).await?;
            for t in &removed {
                tracing::warn!(table = %t, "table removed from the selection: its changes are no longer captured");
                progress.tables.retain(|p| p.table != *t);
            }
            for t in added {
                tracing::info!(table = %t.id, "table added to the selection: it is snapshotted while the others stream on");
                progress.tables.retain(|p| p.table != t.id.to_string());
                if !pending.iter().any(|p| p.oid == t.oid) {
                    pending.push(t);
                }
            }
        }
        for glob in std::mem::take(&mut progress.requested) {
            let pattern = if glob.contains('.') { glob.clone() } else { format!("public.{glob}") };
            let matched: Vec<&SelectedTable> = tables.iter().filter(|t| riffle_core::glob_match(&pattern, &t.id.to_string())).collect();
            if matched.is_empty() {
                tracing::warn!(tables = glob, "riffle snapshot asked for tables this pipeline does not capture; nothing to read for them");
            }
            for t in matched {
                tracing::info!(table = %t.id, "snapshotting the table again, as riffle snapshot asked");
                progress.read_again(t.id.to_string());
                if !pending.iter().any(|p| p.oid == t.oid) {
                    pending.push(t.clone());
                }
            }
        }
        Ok((progress, pending))
    }

    /// Reads the chunks an interrupted snapshot left (and tables added or
    /// asked for again), exactly, in rounds interleaved with the stream.
    ///
    /// Each round creates a temporary slot, which exports a snapshot
    /// consistent with its point `at` (Postgres guarantees it: a transaction
    /// that commits before `at` is visible in it, one that commits at or
    /// after is not). The stream runs from where it is up to `at` and stops
    /// before the first transaction at or after it; chunks are then read
    /// inside that snapshot for up to `--snapshot-round`, positioned at `at`, and the
    /// next round goes on from `at`. So each row read sits in the output
    /// exactly where its state is current (after every change it includes,
    /// before every change it does not), and the other tables' changes wait
    /// at most one round. Returns where the stream goes on, or `None` when
    /// stopped.
    #[allow(clippy::too_many_arguments)]
    async fn catch_up(
        &self,
        stream: &mut stream::Stream,
        ctx: &snapshot::Context,
        slot: &str,
        mut from: Lsn,
        progress: &SnapshotProgress,
        tables: &[SelectedTable],
        out: &mpsc::Sender<Vec<SourceItem>>,
        durable: &watch::Receiver<Option<Offset>>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Lsn>, PgError> {
        let options = self.config.snapshot;
        let workers = chunked::workers(stream.catalog(), options.workers).await?;
        let mut progress = progress.clone();
        let mut pending: Vec<SelectedTable> = tables.to_vec();
        for round in 1.. {
            // A name of its own each round: the server drops the last
            // round's temporary slot when that session has ended, which
            // may be after this round begins.
            let name = format!("{}_c{}_{round}", &slot[..slot.len().min(44)], std::process::id());
            let mut temp = replication::client::ReplicationClient::connect(&self.params).await?;
            let rows = temp
                .simple_query(&format!("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT", quote_ident(&name)))
                .await?;
            let (at, snapshot_name) = created_slot(&rows)?;
            tracing::info!(
                from = %from,
                at = %at,
                round,
                tables = pending.len(),
                "snapshot round: streaming up to a new consistent point, then reading chunks there"
            );
            if at > from {
                // Tables whose output starts with their snapshot, or over
                // with a reload: their changes before it are left out.
                let whole =
                    pending.iter().filter(|t| progress.table(&t.id.to_string()).is_none_or(|p| p.starts_with_snapshot() || p.reloads()));
                stream.skip_before_pause(whole.map(|t| t.id.clone()).collect());
                let end = stream.run(&self.params, slot, from, Some(at), out.clone(), durable.clone(), stop.clone()).await?;
                if end == RunEnd::Stopped {
                    return Ok(None);
                }
                wait_inactive(stream.catalog(), slot).await?;
            }
            let (mut plan, planned) =
                snapshot::plan(stream.catalog(), &pending, Some(&progress), options.rows_per_chunk(crate::chunked::CHUNK_ROWS), workers)
                    .await?;
            if out.send(vec![SourceItem::SnapshotPlan(plan.clone())]).await.is_err() {
                return Ok(None);
            }
            let job = chunked::CopyJob {
                params: &self.params,
                ctx,
                snapshot: &snapshot_name,
                at,
                workers,
                chunk_rows: options.rows_per_chunk(crate::chunked::CHUNK_ROWS),
                checkpoints: true,
                until: Some(tokio::time::Instant::now() + options.round),
            };
            let (end, read) = chunked::copy(job, planned, out, stop).await?;
            drop(temp);
            if end == RunEnd::Stopped {
                return Ok(None);
            }
            for t in read.tables {
                plan.add(t);
            }
            progress = plan;
            from = at;
            pending.retain(|t| progress.table(&t.id.to_string()).is_some_and(|p| !p.is_done()));
            if pending.is_empty() {
                let done = vec![SourceItem::SnapshotDone, SourceItem::Checkpoint(Offset::Postgres { lsn: at })];
                return Ok(out.send(done).await.is_ok().then_some(at));
            }
        }
        unreachable!("the rounds end when no table is left")
    }
}

/// Waits (up to 10 s) for the walsender of a stream just closed to let go
/// of the slot, so the stream can start on it again.
async fn wait_inactive(client: &tokio_postgres::Client, slot: &str) -> Result<(), PgError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while catalog::slot_info(client, slot).await?.is_some_and(|s| s.active) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The consistent point and exported snapshot `CREATE_REPLICATION_SLOT` returned.
fn created_slot(rows: &[Vec<Option<String>>]) -> Result<(Lsn, String), PgError> {
    let row = rows.first().ok_or_else(|| PgError::Unexpected("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let consistent: Lsn = row
        .get(1)
        .cloned()
        .flatten()
        .unwrap_or_default()
        .parse()
        .map_err(|source| PgError::ServerLsn { what: "the consistent point CREATE_REPLICATION_SLOT returned", source })?;
    let snapshot =
        row.get(2).cloned().flatten().ok_or_else(|| PgError::Unexpected("CREATE_REPLICATION_SLOT exported no snapshot".into()))?;
    Ok((consistent, snapshot))
}

impl Source for PgSource {
    /// An `--until now` already resolved by an earlier run keeps its LSN.
    fn prepare(&mut self, start: StartMode, until: Until) -> Result<(), SourceError> {
        let until = match until {
            Until::Never => StopAt::Never,
            Until::Now => match &self.mode {
                Mode::Replicate { until: StopAt::Lsn(l), .. } => StopAt::Lsn(*l),
                _ => StopAt::Now,
            },
            Until::At(Offset::Postgres { lsn }) => StopAt::Lsn(lsn),
            Until::At(other) => return Err(PgError::UntilNotAnLsn { until: other.to_string() }.into()),
        };
        self.mode = match start {
            StartMode::Copy => Mode::Sync,
            StartMode::Verify => Mode::Verify,
            StartMode::Snapshot => Mode::Replicate { resume: None, snapshot_interrupted: None, chunks: None, until },
            StartMode::ResumeSnapshot(Offset::Postgres { lsn }) => {
                Mode::Replicate { resume: None, snapshot_interrupted: Some(lsn), chunks: None, until }
            }
            StartMode::ResumeSnapshot(_) => Mode::Replicate { resume: None, snapshot_interrupted: None, chunks: None, until },
            StartMode::Resume(offset) => Mode::Replicate { resume: Some(offset), snapshot_interrupted: None, chunks: None, until },
            StartMode::ResumeChunks { offset, progress, previous_tables } => {
                Mode::Replicate { resume: Some(offset), snapshot_interrupted: None, chunks: Some((progress, previous_tables)), until }
            }
        };
        Ok(())
    }

    /// Live figures about the server (position, last message) for lag and health.
    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        Ok(self.run_inner(out, durable, stop).await?)
    }
}
