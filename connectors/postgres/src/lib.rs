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
//! - [`stream`]: pgoutput changes to events, keepalives, flush confirmation.
//! - [`replication`]: the walsender protocol client and pgoutput decoder.
//! - [`report`]: what `riffle check` and `riffle status` show of the server.
//! - [`slots`]: listing and dropping riffle's slots (`riffle slots`).

pub mod catalog;
pub mod checks;
pub mod connect;
pub mod replication;
pub mod report;
pub mod slots;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod types;

use catalog::SelectedTable;
use connect::ConnectParams;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{Lsn, Offset, Source, SourceError, SourceItem, SourceSpec, StartMode, Until};
use std::sync::Arc;
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
    /// `riffle replicate`: snapshot through a new slot unless `resume` is
    /// set, then stream.
    Replicate {
        resume: Option<Offset>,
        /// A previous run created the slot at this consistent point and
        /// stopped before its copy completed: a slot still at that point is
        /// ours to drop and recreate.
        snapshot_interrupted: Option<Lsn>,
        until: StopAt,
    },
}

/// `--until` for Postgres: an LSN such as `0/16B3748`.
pub fn parse_position(text: &str) -> Result<Offset, SourceError> {
    let lsn: Lsn = text.parse().map_err(|e| SourceError::definite(format!("--until: expected `now` or a Postgres LSN; {e}")))?;
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
    ) -> Result<RunEnd, SourceError> {
        let client = self.params.connect().await?;
        tracing::info!(source = %self.params.redacted(), "connected");
        let tables = catalog::resolve_tables(&client, &self.config.tables, &self.config.exclude).await?;
        let db: Arc<str> = Arc::from(self.params.dbname.as_str());
        let ctx = snapshot::Context { name: self.name.clone(), db: db.clone(), stats: self.stats.clone() };
        match self.mode.clone() {
            Mode::Sync => snapshot::copy_tables(&client, &ctx, &tables, None, &out, &stop).await,
            Mode::Replicate { resume, snapshot_interrupted, until } => {
                checks::require_replication_ready(&client, &self.params, &tables, self.config.full_before_images).await?;
                let slot = object_name(&self.config.name);
                let until_lsn = match until {
                    StopAt::Never => None,
                    StopAt::Now => {
                        let now = catalog::current_lsn(&client).await?;
                        tracing::info!(until = %now, "replicating until the current position");
                        self.mode = Mode::Replicate { resume: resume.clone(), snapshot_interrupted, until: StopAt::Lsn(now) };
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
                    Some(other) => {
                        return Err(SourceError::definite(format!(
                            "the saved position ({other}) is not a Postgres position: this state belongs to another source; use another --name or --state"
                        )))
                    }
                };
                if until_lsn.is_some_and(|u| start >= u) {
                    return Ok(RunEnd::ReachedUntil);
                }
                let mut stream = stream::Stream::new(client, ctx, until_lsn, self.stats.clone(), self.config.heartbeat);
                stream.run(&self.params, &slot, start, out, durable, stop).await
            }
        }
    }

    async fn check_slot_for_resume(&self, client: &tokio_postgres::Client, slot: &str, lsn: Lsn) -> Result<(), SourceError> {
        match catalog::slot_info(client, slot).await? {
            None => Err(SourceError::definite(format!(
                "the saved position is {lsn} in replication slot {slot:?}, but the slot no longer exists, so the changes since then are gone from the server; \
                 take a new snapshot: remove this pipeline's state file (see `riffle status`) and run riffle again"
            ))),
            Some(info) => {
                self.check_slot_owner(slot, &info)?;
                let confirmed = info.confirmed_flush.as_deref().and_then(|c| c.parse::<Lsn>().ok());
                if confirmed.is_some_and(|c| c > lsn) {
                    return Err(SourceError::definite(format!(
                        "replication slot {slot:?} has confirmed {} but this pipeline's saved position is {lsn}: the changes in between were \
                         consumed by someone else (another riffle with the same --name?) and are gone; take a new snapshot: remove this \
                         pipeline's state file (see `riffle status`) and drop the slot",
                        confirmed.map(|c| c.to_string()).unwrap_or_default()
                    )));
                }
                Ok(())
            }
        }
    }

    fn check_slot_owner(&self, slot: &str, info: &catalog::SlotInfo) -> Result<(), SourceError> {
        if info.database.as_deref() != Some(self.params.dbname.as_str()) || info.plugin.as_deref() != Some("pgoutput") {
            return Err(SourceError::definite(format!(
                "replication slot {slot:?} belongs to database {:?} with plugin {:?}, but this pipeline reads database {:?} with pgoutput; \
                 give this pipeline another --name",
                info.database.as_deref().unwrap_or("(physical)"),
                info.plugin.as_deref().unwrap_or("(none)"),
                self.params.dbname
            )));
        }
        if info.active {
            return Err(SourceError::transient(format!(
                "replication slot {slot:?} is in use by another connection (another riffle with the same --name?)"
            )));
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
    ) -> Result<Option<Lsn>, SourceError> {
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
                return Err(SourceError::definite(format!(
                    "replication slot {slot:?} already exists but this pipeline has no saved position for it (wrong --state, or another pipeline uses --name {:?}); \
                     point --state at this pipeline's state, choose another --name, or drop the slot: SELECT pg_drop_replication_slot('{slot}');",
                    self.config.name
                )));
            }
            tracing::info!(slot, "dropping the slot of an interrupted snapshot to take a new one");
            catalog::drop_slot(client, slot).await?;
        }
        let mut repl = replication::client::ReplicationClient::connect(&self.params).await?;
        let rows = repl.simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", quote_ident(slot))).await?;
        let row = rows.first().ok_or_else(|| SourceError::definite("CREATE_REPLICATION_SLOT returned no row"))?;
        let consistent: Lsn = row
            .get(1)
            .cloned()
            .flatten()
            .unwrap_or_default()
            .parse()
            .map_err(|e| SourceError::typed(riffle_core::ErrorKind::Definite, e))?;
        let snapshot_name =
            row.get(2).cloned().flatten().ok_or_else(|| SourceError::definite("CREATE_REPLICATION_SLOT exported no snapshot"))?;
        tracing::info!(slot, consistent_point = %consistent, "created replication slot");
        if out.send(vec![SourceItem::SnapshotStarted(Offset::Postgres { lsn: consistent })]).await.is_err() {
            return Ok(None);
        }
        // The exported snapshot lives while `repl` stays open and idle.
        let end = snapshot::copy_tables(client, ctx, tables, Some((&snapshot_name, consistent)), out, stop).await?;
        drop(repl);
        if end == RunEnd::Stopped {
            return Ok(None);
        }
        Ok(Some(consistent))
    }
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
            Until::At(other) => return Err(SourceError::definite(format!("--until {other}: a Postgres pipeline stops at an LSN"))),
        };
        self.mode = match start {
            StartMode::Copy => Mode::Sync,
            StartMode::Snapshot => Mode::Replicate { resume: None, snapshot_interrupted: None, until },
            StartMode::ResumeSnapshot(Offset::Postgres { lsn }) => Mode::Replicate { resume: None, snapshot_interrupted: Some(lsn), until },
            StartMode::ResumeSnapshot(_) => Mode::Replicate { resume: None, snapshot_interrupted: None, until },
            StartMode::Resume(offset) => Mode::Replicate { resume: Some(offset), snapshot_interrupted: None, until },
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
        self.run_inner(out, durable, stop).await
    }
}
