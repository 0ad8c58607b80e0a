//! The pipeline: runs a source, passes its events through the table rules
//! to the sinks, commits the sinks on source checkpoints, and only then saves
//! the offset and tells the source it may release its log.
//!
//! The source runs in its own task; the sinks are driven here, with their
//! blocking file I/O inside `block_in_place`, so reading and writing use
//! both cores. Transient errors restart the source from the saved offset
//! after dropping what the sinks had not committed, with exponential backoff
//! and jitter; definite errors end the run.

use crate::config::{Config, SinkTarget};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::source::AnySource;
use crate::state::{now_ms, PipelineState, SnapshotState, StateStore};
use crate::transform::Transformer;
use anyhow::{anyhow, bail, Result};
use rand::Rng;
use riffle_core::source::RunEnd;
use riffle_core::{ErrorKind, Offset, Op, Position, Sink, SinkError, Source, SourceItem, TableId};
use riffle_files::{DirSink, StdoutSink};
use riffle_kafka::KafkaSink;
use riffle_postgres::Until;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    Sync,
    Replicate { until: Until },
}

/// How a run ended, for the exit message.
#[derive(Debug)]
pub struct Summary {
    pub end: RunEnd,
    pub events: u64,
    pub offset: Option<Offset>,
}

pub fn open_sinks(cfg: &Config) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for s in &cfg.sinks {
        match &s.target {
            SinkTarget::Dir(path) => sinks
                .push(Box::new(DirSink::open(path, &cfg.name, s.encoder, cfg.roll).map_err(|e| anyhow!("sink {}: {e}", path.display()))?)),
            SinkTarget::Stdout => sinks.push(Box::new(StdoutSink::new(s.encoder))),
            SinkTarget::Kafka(opts) => {
                sinks.push(Box::new(KafkaSink::open((**opts).clone()).map_err(|e| anyhow!("sink {}: {e}", s.name))?))
            }
            SinkTarget::Object(opts) => {
                let target = riffle_files::object::open_target(&opts.url, &opts.store).map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                let format = crate::file_formats::file_format(s.encoder, opts.compression.as_deref())
                    .map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                let sink = riffle_files::object::ObjectSink::open(target, &cfg.name, format, cfg.roll, opts.partitioning)
                    .map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                sinks.push(Box::new(sink));
            }
        }
    }
    Ok(sinks)
}

const OPS: [Op; 5] = [Op::Read, Op::Create, Op::Update, Op::Delete, Op::Truncate];

fn op_index(op: Op) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

/// Drives the sinks for one source run.
struct Committer {
    sinks: Vec<Box<dyn Sink>>,
    sink_names: Vec<String>,
    transformer: Transformer,
    store: Option<StateStore>,
    state: PipelineState,
    durable: watch::Sender<Option<Offset>>,
    interval: Duration,
    last_commit: Instant,
    /// A checkpoint seen and not yet committed.
    pending: Option<Offset>,
    /// Events received since the last checkpoint (an open transaction or an
    /// unfinished snapshot): never committed.
    trailing: u64,
    last_position: Option<Position>,
    last_ts_ms: Option<i64>,
    /// `last_position`/`last_ts_ms` as of the last commit: what an abort
    /// goes back to, so a sink is never told it holds aborted events.
    committed_position: Option<Position>,
    committed_ts_ms: Option<i64>,
    uncommitted: u64,
    oldest_uncommitted_ms: Option<i64>,
    in_snapshot: bool,
    sync: bool,
    progress: Progress,
    metrics: Arc<Metrics>,
    /// Per table, since the last flush into `metrics`.
    counts: Vec<(TableId, TableCounts)>,
    /// The schema of the previous event and its index in `counts`:
    /// consecutive events of one table find their entry without comparing names.
    counted: Option<(Arc<riffle_core::TableSchema>, usize)>,
}

#[derive(Default)]
struct TableCounts {
    /// Events written, per sink and op.
    written: Vec<[u64; 5]>,
    /// Encoded bytes written, per sink.
    bytes: Vec<u64>,
    filtered: u64,
    snapshot_rows: u64,
}

impl Committer {
    fn consume_batch(&mut self, batch: Vec<SourceItem>) -> Result<(), SinkError> {
        let mut snapshot_rows = 0;
        let mut streamed = 0;
        for item in batch {
            match item {
                SourceItem::Event(ev) => {
                    self.last_position = Some(ev.position);
                    self.last_ts_ms = Some(ev.source.ts_ms);
                    self.oldest_uncommitted_ms.get_or_insert(ev.source.ts_ms);
                    self.trailing += 1;
                    self.uncommitted += 1;
                    if self.in_snapshot {
                        snapshot_rows += 1;
                    } else {
                        streamed += 1;
                    }
                    self.deliver(ev)?;
                }
                SourceItem::Checkpoint(offset) => {
                    self.pending = Some(offset);
                    self.trailing = 0;
                    if self.last_commit.elapsed() >= self.interval {
                        self.commit()?;
                    }
                }
                SourceItem::SnapshotStarted(offset) => {
                    if let Some(store) = &self.store {
                        self.state.snapshot = SnapshotState::InProgress;
                        self.state.snapshot_started = Some(offset);
                        self.state.updated_ms = now_ms();
                        store.save(&self.state).map_err(|e| SinkError::definite(format!("{e:#}")))?;
                    }
                }
                SourceItem::SnapshotTable { table, estimated_rows } => {
                    if !self.in_snapshot && !self.sync {
                        self.warn_if_sinks_hold_history();
                    }
                    self.progress.snapshot_rows(snapshot_rows);
                    snapshot_rows = 0;
                    self.in_snapshot = true;
                    self.metrics.with(|c| c.snapshot_estimated.insert(table.to_string(), estimated_rows));
                    self.progress.start_table(&table, estimated_rows);
                }
                SourceItem::SnapshotDone => {
                    self.progress.snapshot_rows(snapshot_rows);
                    snapshot_rows = 0;
                    self.progress.finish_table();
                    self.in_snapshot = false;
                    if self.sync {
                        self.trailing = 0;
                        self.commit()?;
                    } else {
                        // Commit at the checkpoint that follows, whatever the interval.
                        self.last_commit = Instant::now() - self.interval;
                    }
                }
            }
        }
        self.progress.snapshot_rows(snapshot_rows);
        if streamed > 0 {
            self.progress.streamed(streamed);
        }
        self.flush_counts();
        Ok(())
    }

    /// Passes one event through its table's rule to the sinks it goes to.
    fn deliver(&mut self, ev: riffle_core::ChangeEvent) -> Result<(), SinkError> {
        let idx = match &self.counted {
            Some((t, i)) if Arc::ptr_eq(t, &ev.table) => *i,
            _ => {
                let i = match self.counts.iter().position(|(id, _)| *id == ev.table.id) {
                    Some(i) => i,
                    None => {
                        let nsinks = self.sinks.len();
                        let fresh = TableCounts { written: vec![[0; 5]; nsinks], bytes: vec![0; nsinks], ..Default::default() };
                        self.counts.push((ev.table.id.clone(), fresh));
                        self.counts.len() - 1
                    }
                };
                self.counted = Some((ev.table.clone(), i));
                i
            }
        };
        let counts = &mut self.counts[idx].1;
        if ev.op == Op::Read {
            counts.snapshot_rows += 1;
        }
        let routed = if self.transformer.is_empty() {
            crate::transform::Routed { event: Some(ev), sinks: None }
        } else {
            self.transformer.apply(ev)?
        };
        let Some(ev) = routed.event else {
            counts.filtered += 1;
            return Ok(());
        };
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if routed.sinks.as_ref().is_some_and(|s| !s.contains(&i)) {
                continue;
            }
            // A sync never replays: it writes everything.
            match sink.committed() {
                Some(c) if ev.position <= c && !self.sync => {
                    if ev.op == Op::Read {
                        return Err(SinkError::definite(format!(
                            "{} already holds this pipeline's events up to position {c}, but the new snapshot starts at {}; \
                             it was written from another server or an earlier history. Write to an empty directory, \
                             or use another --name",
                            sink.describe(),
                            ev.position
                        )));
                    }
                    continue; // a replay this sink already holds
                }
                _ => {}
            }
            let before = sink.bytes_written();
            sink.write(&ev)?;
            counts.written[i][op_index(ev.op)] += 1;
            counts.bytes[i] += sink.bytes_written() - before;
        }
        Ok(())
    }

    fn warn_if_sinks_hold_history(&self) {
        for sink in &self.sinks {
            if let Some(c) = sink.committed() {
                tracing::warn!(
                    sink = sink.describe(),
                    committed = %c,
                    "this sink already holds events of an earlier run of this pipeline; the new snapshot follows them \
                     (read its `r` events as upserts, or write to an empty directory)"
                );
            }
        }
    }

    fn flush_counts(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let counts = std::mem::take(&mut self.counts);
        self.counted = None;
        let names = &self.sink_names;
        let oldest = self.oldest_uncommitted_ms;
        self.metrics.with(|c| {
            for (table, counts) in counts {
                let t = table.to_string();
                for (i, ops) in counts.written.iter().enumerate() {
                    for (k, n) in ops.iter().enumerate() {
                        if *n > 0 {
                            *c.events.entry((t.clone(), names[i].clone(), OPS[k].code())).or_default() += n;
                        }
                    }
                    if counts.bytes[i] > 0 {
                        *c.sink_bytes.entry((t.clone(), names[i].clone())).or_default() += counts.bytes[i];
                    }
                }
                if counts.snapshot_rows > 0 {
                    *c.snapshot_rows.entry(t.clone()).or_default() += counts.snapshot_rows;
                }
                if counts.filtered > 0 {
                    *c.filtered.entry(t).or_default() += counts.filtered;
                }
            }
            c.oldest_uncommitted_ms = oldest;
        });
    }

    /// Commits every sink, then saves the offset, then releases the source.
    fn commit(&mut self) -> Result<(), SinkError> {
        for sink in &mut self.sinks {
            sink.commit(self.last_position)?;
        }
        self.last_commit = Instant::now();
        self.committed_position = self.last_position;
        self.committed_ts_ms = self.last_ts_ms;
        let committed = std::mem::take(&mut self.uncommitted);
        self.oldest_uncommitted_ms = None;
        let mut offset_lsn = None;
        if let Some(store) = &self.store {
            if let Some(offset) = self.pending.take() {
                self.state.offset = Some(offset.clone());
                self.state.snapshot = SnapshotState::Done;
                self.state.last_position = self.last_position.or(self.state.last_position);
                self.state.last_source_ts_ms = self.last_ts_ms.or(self.state.last_source_ts_ms);
                self.state.events += committed;
                self.state.updated_ms = now_ms();
                store.save(&self.state).map_err(|e| SinkError::definite(format!("{e:#}")))?;
                tracing::debug!(offset = %offset, events = committed, "committed");
                offset_lsn = Some(offset.as_number());
                let _ = self.durable.send(Some(offset));
            }
        } else {
            self.state.events += committed;
        }
        let snapshot_done = self.state.snapshot == SnapshotState::Done || self.sync;
        self.metrics.with(|c| {
            c.commits += 1;
            c.last_commit_ms = now_ms();
            c.oldest_uncommitted_ms = None;
            c.snapshot_done |= snapshot_done && !self.in_snapshot;
            if let Some(l) = offset_lsn {
                c.committed_position = l;
            }
        });
        Ok(())
    }

    fn abort(&mut self) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.abort() {
                tracing::warn!(sink = sink.describe(), error = %e, "dropping uncommitted output failed");
            }
        }
        self.pending = None;
        self.trailing = 0;
        self.uncommitted = 0;
        self.oldest_uncommitted_ms = None;
        self.in_snapshot = false;
        self.last_position = self.committed_position;
        self.last_ts_ms = self.committed_ts_ms;
    }

    async fn consume(&mut self, mut rx: mpsc::Receiver<Vec<SourceItem>>) -> Result<(), SinkError> {
        loop {
            // Commit a checkpoint that waits when the source goes quiet.
            let wait = if self.pending.is_some() && self.trailing == 0 {
                self.interval.saturating_sub(self.last_commit.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(batch)) => tokio::task::block_in_place(|| self.consume_batch(batch))?,
                Ok(None) => break,
                Err(_) => tokio::task::block_in_place(|| self.commit())?,
            }
        }
        // The source ended: commit up to its last checkpoint; events after
        // it (an interrupted snapshot) are dropped.
        if self.trailing == 0 && (self.pending.is_some() || self.uncommitted > 0) {
            tokio::task::block_in_place(|| self.commit())?;
        } else if self.trailing > 0 {
            tokio::task::block_in_place(|| self.abort());
        }
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(7)).min(Duration::from_secs(60));
    let jitter = rand::rng().random_range(0.5..1.0);
    base.mul_f64(jitter)
}

pub async fn run(cfg: &Config, job: Job, quiet: bool, stop: watch::Receiver<bool>) -> Result<Summary> {
    let store = StateStore::new(&cfg.state_dir)?;
    let redacted = crate::config::redact_source_url(&cfg.source_url);
    let saved = match job {
        Job::Sync => None,
        Job::Replicate { .. } => store.load(&cfg.name)?,
    };
    if let Some(s) = &saved {
        if s.tables != cfg.tables {
            bail!(
                "pipeline {:?} was started with --tables {:?}, now {:?}; a new selection needs a new snapshot: pass another --name, or remove {} (and the old slot) to start over",
                cfg.name,
                s.tables,
                cfg.tables,
                store.location(&cfg.name)
            );
        }
    }
    let mut source = AnySource::new(cfg)?;
    // Sinks are checked before anything is read from the source.
    crate::check::require_sinks_ready(cfg)?;
    let sinks = tokio::task::block_in_place(|| open_sinks(cfg))?;
    for s in &sinks {
        tracing::info!(sink = s.describe(), "sink ready");
    }
    let state = saved.clone().unwrap_or(PipelineState {
        version: 1,
        name: cfg.name.clone(),
        source: redacted,
        tables: cfg.tables.clone(),
        snapshot: SnapshotState::InProgress,
        snapshot_started: None,
        offset: None,
        last_position: None,
        last_source_ts_ms: None,
        events: 0,
        updated_ms: now_ms(),
    });
    let sync = matches!(job, Job::Sync);
    let metrics = Metrics::new(source.stats(), cfg.stall_timeout);
    if let Some(offset) = &state.offset {
        let n = offset.as_number();
        metrics.with(|c| {
            c.committed_position = n;
            c.snapshot_done = true;
        });
    }
    if let Some(addr) = cfg.metrics_addr {
        crate::metrics::serve(addr, metrics.clone()).await?;
    }
    let status_line = (!sync && !quiet).then(|| crate::progress::spawn_status_line(metrics.clone()));
    let (durable_tx, durable_rx) = watch::channel(state.offset.clone());
    let mut committer = Committer {
        sink_names: cfg.sinks.iter().map(|s| s.name.clone()).collect(),
        sinks,
        transformer: Transformer::new(cfg.rules.clone(), cfg.mask_salt.clone()),
        store: (!sync).then_some(store),
        state: state.clone(),
        durable: durable_tx,
        interval: cfg.commit_interval,
        last_commit: Instant::now(),
        pending: None,
        trailing: 0,
        last_position: None,
        last_ts_ms: None,
        committed_position: None,
        committed_ts_ms: None,
        uncommitted: 0,
        oldest_uncommitted_ms: None,
        in_snapshot: false,
        sync,
        progress: Progress::new(quiet),
        metrics: metrics.clone(),
        counts: Vec::new(),
        counted: None,
    };
    let mut attempt = 0u32;
    let result = loop {
        let offset_before = committer.state.offset.clone();
        source.set_job(match job {
            Job::Sync => None,
            Job::Replicate { until } => {
                let interrupted = match (&committer.state.offset, &committer.state.snapshot_started) {
                    (None, Some(Offset::Postgres { lsn })) => Some(*lsn),
                    _ => None,
                };
                Some((committer.state.offset.clone(), interrupted, until))
            }
        })?;
        let (tx, rx) = mpsc::channel(16);
        let durable = durable_rx.clone();
        let stop_rx = stop.clone();
        let task = tokio::spawn(async move {
            let r = source.run(tx, durable, stop_rx).await;
            (source, r)
        });
        let consumed = committer.consume(rx).await;
        let (returned, result) = task.await.map_err(|e| anyhow!("source task failed: {e}"))?;
        source = returned;
        metrics.with(|c| c.retrying = None);
        let error = match (result, consumed) {
            (_, Err(sink_err)) => {
                tokio::task::block_in_place(|| committer.abort());
                (sink_err.kind, sink_err.message)
            }
            (Ok(end), Ok(())) => {
                break Ok(Summary { end, events: committer.state.events, offset: committer.state.offset.clone() });
            }
            (Err(src_err), Ok(())) => {
                tokio::task::block_in_place(|| committer.abort());
                (src_err.kind, src_err.message)
            }
        };
        let kind = if error.0 == ErrorKind::Definite { "definite" } else { "transient" };
        metrics.with(|c| *c.errors.entry(kind).or_default() += 1);
        if committer.state.offset != offset_before {
            attempt = 0;
        }
        if error.0 == ErrorKind::Definite {
            break Err(anyhow!("{}", error.1));
        }
        if *stop.borrow() {
            // Asked to stop: what is committed is saved; the error is moot.
            tracing::info!(error = %error.1, "stopping instead of retrying");
            break Ok(Summary { end: RunEnd::Stopped, events: committer.state.events, offset: committer.state.offset.clone() });
        }
        if attempt >= cfg.max_retries {
            break Err(anyhow!("{} (gave up after {} retries; raise --max-retries to keep trying longer)", error.1, cfg.max_retries));
        }
        attempt += 1;
        let wait = backoff(attempt);
        tracing::warn!(error = %error.1, attempt, max_retries = cfg.max_retries, retry_in_ms = wait.as_millis() as u64, "transient error, retrying");
        metrics.with(|c| {
            c.retries += 1;
            c.retrying = Some(error.1.clone());
        });
        let mut stop_wait = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_wait.changed() => {
                tracing::info!("stopped while waiting to retry");
                break Ok(Summary { end: RunEnd::Stopped, events: committer.state.events, offset: committer.state.offset.clone() });
            }
        }
    };
    if let Some(line) = status_line {
        line.abort();
    }
    result
}
