//! The pipeline's own logic (commits, replays, retries) driven by in-memory
//! test doubles of a source, a sink and a state store. They stand in only
//! for the pipeline's collaborators here; every connector is tested against
//! its real server in `tests/`.

use super::committer::{Committer, Parts};
use super::supervisor::{supervise, Retries};
use super::{Job, Summary};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::state::{PipelineState, SnapshotState, StateError, StateSave};
use crate::transform::Transformer;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{
    BeforeImage, ChangeEvent, Column, DataType, ErrorKind, Lsn, Offset, Op, PgPosition, Phase, Position, Sink, SinkError, Source,
    SourceError, SourceInfo, SourceItem, StartMode, TableId, TableSchema, Until, Value,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

fn table() -> Arc<TableSchema> {
    table_named("t")
}

pub(super) fn table_named(name: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: TableId::new("public", name),
        columns: vec![Column {
            name: "id".into(),
            source_type: "int8".into(),
            data_type: DataType::Int64,
            nullable: false,
            labels: Vec::new(),
        }],
        key: vec![0],
        full_before_image: false,
    })
}

pub(super) fn event(table: &Arc<TableSchema>, position: Position) -> ChangeEvent {
    ChangeEvent {
        op: Op::Create,
        table: table.clone(),
        before: None,
        after: Some(vec![Value::Int(position.seq() as i64)]),
        before_image: BeforeImage::None,
        source: SourceInfo {
            connector: "postgresql",
            name: "p".into(),
            db: "db".into(),
            tx_id: None,
            ts_ms: 1,
            ts_us: 1000,
            lsn: None,
            binlog: None,
            snapshot: riffle_core::SnapshotMark::False,
        },
        position,
        ts_ms: 1,
    }
}

/// Transaction `tx` (1-based) commits at LSN `tx * 100` and holds
/// `EVENTS_PER_TX` events; resuming from its offset starts after it.
const EVENTS_PER_TX: u64 = 2;

pub(super) fn position(tx: u64, seq: u64) -> Position {
    Position::Postgres(PgPosition { lsn: Lsn(tx * 100), phase: Phase::Stream, seq })
}

pub(super) fn offset(tx: u64) -> Offset {
    Offset::Postgres { lsn: Lsn(tx * 100 + 1) }
}

fn all_positions(txs: u64) -> Vec<Position> {
    (1..=txs).flat_map(|tx| (0..EVENTS_PER_TX).map(move |s| position(tx, s))).collect()
}

/// Test double of a source: a log of `txs` transactions. A planned failure
/// sends the first event of transaction `tx` and then fails, once.
struct ScriptedSource {
    txs: u64,
    fail_in_tx: Option<(u64, ErrorKind)>,
    start: Option<StartMode>,
    starts: Arc<Mutex<Vec<StartMode>>>,
    stats: Arc<SourceStats>,
}

impl ScriptedSource {
    fn new(txs: u64) -> (Self, Arc<Mutex<Vec<StartMode>>>) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        (ScriptedSource { txs, fail_in_tx: None, start: None, starts: starts.clone(), stats: Arc::default() }, starts)
    }
}

impl Source for ScriptedSource {
    fn prepare(&mut self, start: StartMode, _until: Until) -> Result<(), SourceError> {
        self.starts.lock().unwrap().push(start.clone());
        self.start = Some(start);
        Ok(())
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        _durable: watch::Receiver<Option<Offset>>,
        _stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        let first = match self.start.clone() {
            Some(StartMode::Resume(Offset::Postgres { lsn })) => lsn.0 / 100 + 1,
            _ => 1,
        };
        let t = table();
        for tx in first..=self.txs {
            let mut batch: Vec<SourceItem> = (0..EVENTS_PER_TX).map(|s| SourceItem::Event(event(&t, position(tx, s)))).collect();
            if let Some((fail_tx, kind)) = self.fail_in_tx.filter(|(f, _)| *f == tx) {
                batch.truncate(1);
                let _ = out.send(batch).await;
                self.fail_in_tx = None;
                return Err(SourceError::typed(kind, format!("planned failure inside transaction {fail_tx}")));
            }
            batch.push(SourceItem::Checkpoint(offset(tx)));
            if out.send(batch).await.is_err() {
                return Ok(RunEnd::Stopped);
            }
        }
        Ok(RunEnd::ReachedUntil)
    }
}

#[derive(Default)]
struct SinkLog {
    /// What the sink made durable, in order.
    durable: Vec<Position>,
    staged: Vec<Position>,
    committed: Option<Position>,
    /// Commits still to fail, and how.
    failing_commits: Vec<ErrorKind>,
}

/// Test double of a sink that keeps its watermark like the file sinks.
struct MemorySink(Arc<Mutex<SinkLog>>);

impl Sink for MemorySink {
    fn describe(&self) -> String {
        "memory (test double)".into()
    }

    fn committed(&self) -> Option<Position> {
        self.0.lock().unwrap().committed
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        self.0.lock().unwrap().staged.push(event.position);
        Ok(())
    }

    fn commit(&mut self, through: Option<Position>) -> Result<(), SinkError> {
        let mut log = self.0.lock().unwrap();
        if !log.failing_commits.is_empty() {
            let kind = log.failing_commits.remove(0);
            return Err(SinkError::typed(kind, "planned commit failure"));
        }
        let staged = std::mem::take(&mut log.staged);
        log.durable.extend(staged);
        if through.is_some() {
            log.committed = through;
        }
        Ok(())
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        self.0.lock().unwrap().staged.clear();
        Ok(())
    }
}

/// Test double of the state store: one state in memory; saves can be
/// made to fail.
#[derive(Clone, Default)]
struct MemoryStore {
    state: Arc<Mutex<Option<PipelineState>>>,
    failing_saves: Arc<Mutex<u32>>,
}

impl StateSave for MemoryStore {
    fn load(&self, _name: &str) -> Result<Option<PipelineState>, StateError> {
        Ok(self.state.lock().unwrap().clone())
    }

    fn save(&self, state: &PipelineState) -> Result<(), StateError> {
        let mut failing = self.failing_saves.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            let source = SinkError::transient("the bucket did not answer");
            return Err(StateError::Store { what: "saving state", source });
        }
        *self.state.lock().unwrap() = Some(state.clone());
        Ok(())
    }
}

fn fresh_state() -> PipelineState {
    PipelineState::new("p", "postgres://u@h/db".into(), vec!["public.t".into()])
}

struct Run {
    result: anyhow::Result<Summary>,
    metrics: Arc<Metrics>,
}

async fn replicate(source: ScriptedSource, sink: &Arc<Mutex<SinkLog>>, store: &MemoryStore) -> Run {
    let state = store.load("p").unwrap().unwrap_or_else(fresh_state);
    let metrics = Metrics::new(Arc::default(), Duration::from_secs(90));
    let (durable_tx, durable_rx) = watch::channel(state.offset.clone());
    let (_stop_tx, stop) = watch::channel(false);
    let selection = state.tables.clone();
    let mut committer = Committer::new(Parts {
        sinks: vec![Box::new(MemorySink(sink.clone()))],
        sink_names: vec!["sink0".into()],
        transformer: Transformer::new(Vec::new(), String::new()),
        store: Some(Box::new(store.clone())),
        state,
        durable: durable_tx,
        // Every checkpoint commits.
        interval: Duration::ZERO,
        sync: false,
        progress: Progress::new(true),
        metrics: metrics.clone(),
        selection,
        fence: None,
        signal: None,
    });
    let job = Job::Replicate { until: Until::Now, standby: false };
    let retries = Retries { max: 3, scale: 0.001 };
    let result = supervise(source, &mut committer, &job, retries, durable_rx, stop, &metrics).await;
    Run { result, metrics }
}

fn saved_offset(store: &MemoryStore) -> Option<Offset> {
    store.state.lock().unwrap().as_ref().and_then(|s| s.offset.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_source_error_resumes_from_the_saved_offset_losing_and_duplicating_nothing() {
    let (mut source, starts) = ScriptedSource::new(5);
    source.fail_in_tx = Some((3, ErrorKind::Transient));
    let sink = Arc::new(Mutex::new(SinkLog::default()));
    let store = MemoryStore::default();
    let run = replicate(source, &sink, &store).await;
    assert!(run.result.is_ok(), "{:?}", run.result.err());
    assert_eq!(sink.lock().unwrap().durable, all_positions(5));
    assert_eq!(saved_offset(&store), Some(offset(5)));
    assert_eq!(*starts.lock().unwrap(), [StartMode::Snapshot, StartMode::Resume(offset(2))]);
    assert_eq!(run.metrics.with(|c| c.retries), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_source_error_ends_the_run_with_its_message_and_keeps_what_was_committed() {
    let (mut source, starts) = ScriptedSource::new(5);
    source.fail_in_tx = Some((3, ErrorKind::Definite));
    let sink = Arc::new(Mutex::new(SinkLog::default()));
    let store = MemoryStore::default();
    let run = replicate(source, &sink, &store).await;
    let err = run.result.expect_err("a definite error ends the run");
    assert!(format!("{err:#}").contains("planned failure inside transaction 3"), "{err:#}");
    assert_eq!(sink.lock().unwrap().durable, all_positions(2), "the half transaction is never committed");
    assert_eq!(saved_offset(&store), Some(offset(2)));
    assert_eq!(starts.lock().unwrap().len(), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_sink_already_holds_are_not_written_again() {
    // A crash after the sink committed transaction 3 and before the state
    // saved it: the state says 2, the sink holds through 3.
    let sink =
        Arc::new(Mutex::new(SinkLog { durable: all_positions(3), committed: Some(position(3, EVENTS_PER_TX - 1)), ..SinkLog::default() }));
    let store = MemoryStore::default();
    *store.state.lock().unwrap() =
        Some(PipelineState { offset: Some(offset(2)), snapshot: SnapshotState::Done, events: 4, ..fresh_state() });
    let (source, starts) = ScriptedSource::new(5);
    let run = replicate(source, &sink, &store).await;
    assert!(run.result.is_ok(), "{:?}", run.result.err());
    assert_eq!(*starts.lock().unwrap(), [StartMode::Resume(offset(2))]);
    assert_eq!(sink.lock().unwrap().durable, all_positions(5), "transaction 3 replayed but written once");
    assert_eq!(saved_offset(&store), Some(offset(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_state_store_error_is_retried_not_fatal() {
    let sink = Arc::new(Mutex::new(SinkLog::default()));
    let store = MemoryStore::default();
    *store.failing_saves.lock().unwrap() = 1;
    let (source, starts) = ScriptedSource::new(4);
    let run = replicate(source, &sink, &store).await;
    assert!(run.result.is_ok(), "{:?}", run.result.err());
    // The sink committed transaction 1, the save failed: the retry starts
    // over, and the sink's watermark keeps transaction 1 from doubling.
    assert_eq!(*starts.lock().unwrap(), [StartMode::Snapshot, StartMode::Snapshot]);
    assert_eq!(sink.lock().unwrap().durable, all_positions(4));
    assert_eq!(saved_offset(&store), Some(offset(4)));
    assert_eq!(run.metrics.with(|c| c.retries), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_sink_error_saves_nothing_past_the_last_commit() {
    let sink = Arc::new(Mutex::new(SinkLog::default()));
    sink.lock().unwrap().failing_commits = vec![ErrorKind::Definite];
    let store = MemoryStore::default();
    let (source, _) = ScriptedSource::new(3);
    let run = replicate(source, &sink, &store).await;
    let err = run.result.expect_err("a definite sink error ends the run");
    assert!(format!("{err:#}").contains("planned commit failure"), "{err:#}");
    assert!(sink.lock().unwrap().durable.is_empty());
    assert_eq!(saved_offset(&store), None, "no offset saved for events no sink made durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_out_with_a_hint() {
    let sink = Arc::new(Mutex::new(SinkLog::default()));
    sink.lock().unwrap().failing_commits = vec![ErrorKind::Transient; 10];
    let store = MemoryStore::default();
    let (source, starts) = ScriptedSource::new(2);
    let run = replicate(source, &sink, &store).await;
    let err = run.result.expect_err("gives up");
    assert!(format!("{err:#}").contains("gave up after 3 retries"), "{err:#}");
    assert_eq!(starts.lock().unwrap().len(), 4);
    assert!(sink.lock().unwrap().durable.is_empty());
}
