//! Drives the sinks for one pipeline: routes each event through its
//! table's rule to the sinks it goes to (skipping replays a sink already
//! holds), counts, and on a source checkpoint commits every sink, then
//! saves the offset, then tells the source it may release its log.

use super::ledger::{AtEnd, Delivery, Ledger};
use super::marks::Marks;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::state::{now_ms, PipelineState, SnapshotState, StateSave};
use crate::transform::{Routed, Transformer};
use riffle_core::{ChangeEvent, Offset, Op, Sink, SinkError, SourceItem, TableId, TableSchema};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const OPS: [Op; 5] = [Op::Read, Op::Create, Op::Update, Op::Delete, Op::Truncate];

fn op_index(op: Op) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

/// Per table, since the last flush into the metrics.
#[derive(Default)]
struct TableCounts {
    /// Events written, per sink and op.
    written: Vec<[u64; 5]>,
    /// Encoded bytes written, per sink.
    bytes: Vec<u64>,
    filtered: u64,
    snapshot_rows: u64,
}

pub struct Committer {
    pub(super) sinks: Vec<Box<dyn Sink>>,
    /// The pipeline's lease in a bucket, confirmed before each commit.
    fence: Option<riffle_files::object::lease::LeaseHandle>,
    /// In-band signals: inserts into this table; its rows go to no sink.
    signal: Option<riffle_core::TableId>,
    sink_names: Vec<String>,
    transformer: Transformer,
    /// `None` for a one-shot sync, which saves nothing.
    store: Option<Box<dyn StateSave>>,
    pub(super) state: PipelineState,
    durable: watch::Sender<Option<Offset>>,
    interval: Duration,
    last_commit: Instant,
    ledger: Ledger,
    /// Debezium's snapshot marks, for the current source run.
    marks: Marks,
    in_snapshot: bool,
    sync: bool,
    progress: Progress,
    metrics: Arc<Metrics>,
    counts: Vec<(TableId, TableCounts)>,
    /// The schema of the previous event and its index in `counts`:
    /// consecutive events of one table find their entry without comparing names.
    counted: Option<(Arc<TableSchema>, usize)>,
    /// A chunked snapshot's plan with every chunk received so far recorded;
    /// saved at the next commit (the saved one is `state.chunks`).
    chunks: Option<riffle_core::SnapshotProgress>,
    /// The table globs asked for now; saved once the source has planned
    /// for them (`selection_planned`): until then a restart still sees the
    /// selection as changed and plans again.
    selection: Vec<String>,
    selection_planned: bool,
    /// When a `riffle snapshot` request was last looked for.
    request_checked: Instant,
    /// A request was taken: the source must restart to read it (not a
    /// failure, and not counted as one).
    restart: bool,
}

/// How often a running pipeline looks for a `riffle snapshot` request.
const REQUEST_POLL: Duration = Duration::from_secs(2);

/// What a [`Committer`] is made of.
pub struct Parts {
    pub sinks: Vec<Box<dyn Sink>>,
    pub sink_names: Vec<String>,
    pub transformer: Transformer,
    pub store: Option<Box<dyn StateSave>>,
    pub state: PipelineState,
    pub durable: watch::Sender<Option<Offset>>,
    pub interval: Duration,
    pub sync: bool,
    pub progress: Progress,
    pub metrics: Arc<Metrics>,
    /// The table globs of this run.
    pub selection: Vec<String>,
    /// The pipeline's lease in a bucket, confirmed before each commit.
    pub fence: Option<riffle_files::object::lease::LeaseHandle>,
    /// In-band signals: inserts into this table.
    pub signal: Option<riffle_core::TableId>,
}

/// A state store error as the pipeline sorts errors: transient ones are
/// retried like a sink's.
fn state_error(e: crate::state::StateError) -> SinkError {
    SinkError::caused(e.kind(), "saving the pipeline's state", e)
}

impl Committer {
    pub fn new(p: Parts) -> Self {
        let chunks = p.state.chunks.clone();
        Committer {
            sinks: p.sinks,
            fence: p.fence,
            signal: p.signal,
            sink_names: p.sink_names,
            transformer: p.transformer,
            store: p.store,
            state: p.state,
            durable: p.durable,
            interval: p.interval,
            last_commit: Instant::now(),
            ledger: Ledger::default(),
            marks: Marks::default(),
            in_snapshot: false,
            sync: p.sync,
            progress: p.progress,
            metrics: p.metrics,
            counts: Vec::new(),
            counted: None,
            chunks,
            selection: p.selection,
            selection_planned: false,
            request_checked: Instant::now(),
            restart: false,
        }
    }

    /// The newest position the sinks hold or may hold: what the state
    /// saved, or what a sink committed after it (a run that stopped between
    /// the sinks' commit and the state's save).
    pub fn sinks_hold(&self) -> Option<riffle_core::Position> {
        self.sinks.iter().filter_map(|s| s.committed()).chain(self.state.last_position).max()
    }

    /// The table globs this run captures.
    pub fn selection(&self) -> &[String] {
        &self.selection
    }

    fn consume_batch(&mut self, batch: impl IntoIterator<Item = SourceItem>) -> Result<(), SinkError> {
        // Snapshot rows of one table in a row, counted for the progress display.
        let mut run: Option<(Arc<TableSchema>, u64)> = None;
        let mut streamed = 0;
        for item in batch {
            if !matches!(item, SourceItem::Event(_)) {
                self.count_run(run.take());
            }
            match item {
                SourceItem::Event(ev) if self.signal.as_ref() == Some(&ev.table.id) => {
                    if !self.in_snapshot && ev.op == riffle_core::Op::Create {
                        self.signal(&ev)?;
                    }
                }
                SourceItem::Event(ev) => {
                    self.ledger.event(ev.position, ev.source.ts_ms);
                    if self.in_snapshot {
                        match &mut run {
                            Some((t, n)) if Arc::ptr_eq(t, &ev.table) => *n += 1,
                            _ => {
                                self.count_run(run.take());
                                run = Some((ev.table.clone(), 1));
                            }
                        }
                    } else {
                        streamed += 1;
                    }
                    self.deliver(ev)?;
                }
                SourceItem::Checkpoint(offset) => {
                    self.ledger.checkpoint(offset);
                    if self.last_commit.elapsed() >= self.interval {
                        self.commit()?;
                    }
                }
                SourceItem::SnapshotStarted(offset) => {
                    if let Some(store) = &self.store {
                        self.state.snapshot = SnapshotState::InProgress;
                        self.state.snapshot_started = Some(offset);
                        self.state.updated_ms = now_ms();
                        store.save(&self.state).map_err(state_error)?;
                    }
                }
                SourceItem::SnapshotPlan(plan) => {
                    self.progress.plan(plan.pending().count());
                    self.chunks = Some(plan);
                    self.selection_planned = true;
                }
                SourceItem::ChunkDone(done) => {
                    if let Some(plan) = &mut self.chunks {
                        if !plan.record(&done) {
                            return Err(SinkError::definite(format!(
                                "the source reported a chunk of {} that its plan does not hold; this is a bug in riffle",
                                done.table
                            )));
                        }
                        if plan.table(&done.table).is_some_and(|t| t.is_done()) {
                            self.progress.finish_table(&done.table);
                        }
                    }
                }
                SourceItem::SnapshotTable { table, estimated_rows } => {
                    // A resumed snapshot, or a table added to the selection,
                    // adds to what the sinks hold by design.
                    if !self.in_snapshot && !self.sync && self.state.offset.is_none() {
                        self.warn_if_sinks_hold_history();
                    }
                    self.in_snapshot = true;
                    self.metrics.with(|c| c.snapshot_estimated.insert(table.to_string(), estimated_rows));
                    self.progress.start_table(&table, estimated_rows);
                }
                SourceItem::Reference(ev) => self.transformer.reload(&ev)?,
                SourceItem::SnapshotDone => {
                    self.progress.finish_all();
                    self.in_snapshot = false;
                    if self.sync {
                        self.ledger.copy_complete();
                        self.commit()?;
                    } else {
                        // Commit at the checkpoint that follows, whatever the interval.
                        self.last_commit = Instant::now() - self.interval;
                    }
                }
            }
        }
        self.count_run(run);
        if streamed > 0 {
            self.progress.streamed(streamed);
        }
        self.flush_counts();
        Ok(())
    }

    fn count_run(&mut self, run: Option<(Arc<TableSchema>, u64)>) {
        if let Some((table, n)) = run {
            self.progress.snapshot_rows(&table.id, n);
        }
    }

    /// The index in `counts` of the event's table.
    fn counts_for(&mut self, table: &Arc<TableSchema>) -> usize {
        if let Some((t, i)) = &self.counted {
            if Arc::ptr_eq(t, table) {
                return *i;
            }
        }
        let i = match self.counts.iter().position(|(id, _)| *id == table.id) {
            Some(i) => i,
            None => {
                let n = self.sinks.len();
                self.counts.push((table.id.clone(), TableCounts { written: vec![[0; 5]; n], bytes: vec![0; n], ..Default::default() }));
                self.counts.len() - 1
            }
        };
        self.counted = Some((table.clone(), i));
        i
    }

    /// Passes one event through its table's rule to the sinks it goes to.
    fn deliver(&mut self, ev: ChangeEvent) -> Result<(), SinkError> {
        let idx = self.counts_for(&ev.table);
        let counts = &mut self.counts[idx].1;
        if ev.op == Op::Read {
            counts.snapshot_rows += 1;
        }
        if self.transformer.is_empty() {
            return self.write(idx, &ev, None);
        }
        let Routed { event, sinks } = self.transformer.apply(ev)?;
        match event {
            Some(ev) => self.write(idx, &ev, sinks.as_deref()),
            None => {
                self.counts[idx].1.filtered += 1;
                Ok(())
            }
        }
    }

    /// Writes one event to the sinks (all, or those of `only`) that do not
    /// hold it yet; `idx`: its table's place in `counts`.
    fn write(&mut self, idx: usize, ev: &ChangeEvent, only: Option<&[usize]>) -> Result<(), SinkError> {
        let counts = &mut self.counts[idx].1;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if only.is_some_and(|s| !s.contains(&i)) {
                continue;
            }
            let committed = match ev.position.lane() {
                None => sink.committed(),
                Some(lane) => sink.committed_in(lane),
            };
            match super::ledger::delivery(committed, ev.position, ev.op, self.sync) {
                Delivery::Write => {}
                Delivery::Skip => continue,
                Delivery::Conflict(c) => {
                    return Err(SinkError::definite(format!(
                        "{} already holds this pipeline's events up to position {c}, but the new snapshot starts at {}; \
                         it was written from another server or an earlier history. Write to an empty directory, \
                         or use another --name",
                        sink.describe(),
                        ev.position
                    )))
                }
            }
            let before = sink.bytes_written();
            sink.write(ev)?;
            counts.written[i][op_index(ev.op)] += 1;
            counts.bytes[i] += sink.bytes_written() - before;
        }
        Ok(())
    }

    /// Enrichment reference tables not read since this process started.
    pub fn unloaded_references(&self) -> Vec<String> {
        self.transformer.unloaded_references()
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
        let misses = self.transformer.take_misses();
        self.counted = None;
        let names = &self.sink_names;
        let oldest = self.ledger.oldest_uncommitted_ms();
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
            for (table, n) in misses {
                *c.enrich_misses.entry(table.to_string()).or_default() += n;
            }
            c.oldest_uncommitted_ms = oldest;
        });
    }

    /// Commits every sink, then saves the offset, then releases the source.
    fn commit(&mut self) -> Result<(), SinkError> {
        // A process that lost its lease (frozen past its time to live while
        // a standby took over) stops before it writes anything more.
        if let Some(fence) = &self.fence {
            fence.confirm()?;
        }
        let record = self.ledger.to_commit();
        for sink in &mut self.sinks {
            sink.commit(record.through)?;
        }
        riffle_core::fail::point("pipeline.sinks_committed");
        self.last_commit = Instant::now();
        let mut saved = None;
        match (&self.store, record.offset) {
            (Some(store), Some(offset)) => {
                let mut next = self.state.clone();
                next.offset = Some(offset.clone());
                next.chunks = self.chunks.clone().filter(|p| !p.is_done());
                if self.selection_planned {
                    next.tables = self.selection.clone();
                }
                next.snapshot = if next.chunks.is_some() { SnapshotState::InProgress } else { SnapshotState::Done };
                next.last_position = record.through.or(next.last_position);
                next.last_source_ts_ms = record.last_ts_ms.or(next.last_source_ts_ms);
                next.events += record.events;
                next.updated_ms = now_ms();
                next.source_session = Some(self.metrics.source.session()).filter(|s| *s != 0).or(next.source_session);
                store.save(&next).map_err(state_error)?;
                riffle_core::fail::point("pipeline.state_saved");
                self.state = next;
                tracing::debug!(offset = %offset, events = record.events, "committed");
                saved = Some(offset);
            }
            (Some(_), None) => {}
            (None, _) => self.state.events += record.events,
        }
        self.ledger.committed();
        let snapshot_done = self.state.snapshot == SnapshotState::Done || self.sync;
        let in_snapshot = self.in_snapshot;
        let position = saved.as_ref().map(Offset::as_number);
        let plan = self.chunks.as_ref().map(|p| {
            let done = p.tables.iter().filter(|t| t.is_done()).count();
            (done, p.tables.len() - done, p.ranges_left())
        });
        self.metrics.with(|c| {
            c.snapshot_plan = plan.or(c.snapshot_plan);
            c.commits += 1;
            c.last_commit_ms = now_ms();
            c.oldest_uncommitted_ms = None;
            c.snapshot_done |= snapshot_done && !in_snapshot;
            if let Some(p) = position {
                c.committed_position = p;
            }
        });
        if let Some(offset) = saved {
            let _ = self.durable.send(Some(offset));
        }
        self.take_request()
    }

    /// An insert into the signal table (Debezium's shape: `id`, `type`,
    /// `data`): `execute-snapshot` with `{"data-collections": [...]}` asks
    /// for those tables again, as `riffle snapshot` does (the request is
    /// taken at the next commit). A signal seen again after a crash asks
    /// again; other types are logged and ignored.
    fn signal(&mut self, ev: &riffle_core::ChangeEvent) -> Result<(), SinkError> {
        let text = |name: &str| -> Option<String> {
            let i = ev.table.column_index(name)?;
            match ev.after.as_ref()?.get(i)? {
                riffle_core::Value::Text(s) | riffle_core::Value::Json(s) => Some(s.clone()),
                _ => None,
            }
        };
        let kind = text("type").unwrap_or_default();
        if kind != "execute-snapshot" {
            tracing::warn!(table = %ev.table.id, kind, "a signal riffle does not act on (it knows execute-snapshot); ignored");
            return Ok(());
        }
        let data: serde_json::Value = text("data").and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
        let globs: Vec<String> =
            data["data-collections"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
        if globs.is_empty() {
            tracing::warn!(table = %ev.table.id, "an execute-snapshot signal without data-collections; ignored");
            return Ok(());
        }
        let Some(store) = &self.store else { return Ok(()) };
        tracing::info!(tables = globs.join(","), "signal: reading tables again");
        store.add_request(&self.state.name, &globs).map_err(state_error)?;
        // Looked for at the next commit, not after the usual poll.
        self.request_checked = Instant::now().checked_sub(REQUEST_POLL).unwrap_or_else(Instant::now);
        Ok(())
    }

    /// A `riffle snapshot` request: taken into the saved plan, then the
    /// source is restarted (a transient error) to read those tables. Looked
    /// for only once the stream has a saved offset to catch up from.
    fn take_request(&mut self) -> Result<(), SinkError> {
        let Some(store) = &self.store else { return Ok(()) };
        if self.state.offset.is_none() || self.request_checked.elapsed() < REQUEST_POLL {
            return Ok(());
        }
        self.request_checked = Instant::now();
        let asked = store.request(&self.state.name).map_err(state_error)?;
        if asked.is_empty() {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.chunks = self.chunks.clone().filter(|p| !p.is_done());
        next.request_snapshot(&asked);
        next.updated_ms = now_ms();
        store.save(&next).map_err(state_error)?;
        store.clear_request(&self.state.name).map_err(state_error)?;
        self.chunks = next.chunks.clone();
        self.state = next;
        self.restart = true;
        Err(SinkError::transient(format!("riffle snapshot asked to read {} again: restarting the source to read them", asked.join(", "))))
    }

    /// Did the last run end to take a `riffle snapshot` request?
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    pub fn abort(&mut self) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.abort() {
                tracing::warn!(sink = sink.describe(), error = %e, "dropping uncommitted output failed");
            }
        }
        self.ledger.aborted();
        self.in_snapshot = false;
        self.chunks = self.state.chunks.clone();
        self.selection_planned = false;
    }

    /// Consumes one source run's items until the source closes its channel.
    pub async fn consume(&mut self, mut rx: mpsc::Receiver<Vec<SourceItem>>) -> Result<(), SinkError> {
        // A run that starts with no saved position takes the initial snapshot.
        self.marks = Marks::new(self.state.offset.is_none(), self.signal.clone());
        loop {
            // Commit a checkpoint that waits when the source goes quiet.
            // A quiet stream still looks for `riffle snapshot` requests.
            let wait = if self.ledger.checkpoint_waiting() {
                self.interval.saturating_sub(self.last_commit.elapsed())
            } else if self.store.is_some() {
                REQUEST_POLL
            } else {
                Duration::from_secs(3600)
            };
            let got = tokio::time::timeout(wait, rx.recv()).await;
            // A quiet pipeline whose lease was lost (its renewals found
            // another holder) stops as a committing one does.
            if let (Err(_), Some(fence)) = (&got, &self.fence) {
                fence.check()?;
            }
            match got {
                Ok(Some(batch)) => {
                    let batch = self.marks.pass(batch);
                    tokio::task::block_in_place(|| self.consume_batch(batch))?
                }
                Ok(None) => {
                    let rest = self.marks.flush();
                    tokio::task::block_in_place(|| self.consume_batch(rest))?;
                    break;
                }
                Err(_) if self.ledger.checkpoint_waiting() => tokio::task::block_in_place(|| self.commit())?,
                // Nothing uncommitted: restarting the source loses nothing.
                Err(_) if self.ledger.at_end() == AtEnd::Nothing => tokio::task::block_in_place(|| self.take_request())?,
                Err(_) => {}
            }
        }
        // The source ended: commit up to its last checkpoint; events after
        // it (an interrupted snapshot) are dropped.
        match self.ledger.at_end() {
            AtEnd::Commit => tokio::task::block_in_place(|| self.commit())?,
            AtEnd::Abort => tokio::task::block_in_place(|| self.abort()),
            AtEnd::Nothing => {}
        }
        Ok(())
    }
}
