//! Parallel chunk reads handed on one chunk at a time: the engine both
//! sources' snapshots run on.
//!
//! Workers (each a connection inside the same consistent read: Postgres'
//! exported snapshot, MariaDB's consistent snapshots at one binlog
//! position) take key ranges off a shared queue and read them chunk by
//! chunk, streaming each chunk's rows in [`Piece`]s on their own channel and
//! saying on a shared queue when a chunk starts. The forwarder takes chunks
//! in that order and hands each one on whole, followed by its [`ChunkDone`]
//! and (for a replicate run) a checkpoint, before the next: a checkpoint
//! never commits part of another chunk, so a resumed snapshot re-reads only
//! chunks that were not committed, and none twice. Meanwhile the other
//! workers read ahead into their channels (about one chunk each), so memory
//! stays bounded by the worker count. The forwarder numbers the rows in the
//! order it hands them on: their positions follow the output's order.
//!
//! In a round of a snapshot read while streaming (a deadline), no key
//! range starts after the deadline, but each worker reads at least one
//! range per round, and every range of a table whose ranges are positions
//! in this snapshot's storage ([`TableProgress::positional`]) is read in the
//! round, whatever the deadline. A worker starting a chunk learns whether it
//! is its table's first in the phase, in the order the forwarder hands
//! chunks on (a reloaded table's truncate event goes there).
//!
//! Tables marked [`Planned::first`] (the reference tables of an
//! enrichment) are read in a phase of their own: every chunk of theirs is
//! handed on before any chunk of another table starts, whatever the worker
//! count, so rows joined to them downstream find them whole.

use crate::chunks::{ChunkDone, KeyRange, SnapshotProgress, TableProgress};
use crate::position::{Offset, Position};
use crate::schema::TableId;
use crate::source::{RunEnd, SourceItem};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// What a worker hands the forwarder, on its own channel.
pub enum Piece {
    /// Rows of the chunk (or whole table) being read, at most a batch.
    Rows(Vec<SourceItem>),
    /// The chunk is complete: `next_after` is where its range goes on
    /// (`None`: the range is exhausted, or the table read whole is done).
    End { table: usize, range: KeyRange, next_after: Option<Vec<String>>, rows: u64 },
}

/// The ranges left to read: (table index, range).
pub type Queue = Arc<Mutex<VecDeque<(usize, KeyRange)>>>;

/// A worker's way to the forwarder.
pub struct Lane {
    pub index: usize,
    pieces: mpsc::Sender<Piece>,
    /// (worker, table) as each chunk starts.
    starts: mpsc::UnboundedSender<(usize, usize)>,
    /// Start no chunk after this (a round of a snapshot read while streaming).
    until: Option<tokio::time::Instant>,
    queue: Queue,
    /// Per table: its ranges are places in this snapshot's storage
    /// ([`TableProgress::positional`]), which hold in no other snapshot.
    positional: Arc<[bool]>,
    /// This worker has taken a range in this phase.
    took: std::sync::atomic::AtomicBool,
    /// Per table: a chunk of it has started in this phase.
    started: Arc<[std::sync::atomic::AtomicBool]>,
}

impl Lane {
    /// The next range to read; `None` when the queue is empty, or when the
    /// round is over and no positional range is left: those are all read
    /// in the round that started them, whatever its deadline (in the next
    /// round's snapshot their places name other rows). A worker's first
    /// range is never held back, so every round reads something however
    /// long it took to start.
    pub fn next_range(&self) -> Option<(usize, KeyRange)> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let first = !self.took.swap(true, std::sync::atomic::Ordering::Relaxed);
        if first || !self.over() {
            return queue.pop_front();
        }
        let i = queue.iter().position(|(t, _)| self.positional.get(*t).copied().unwrap_or(false))?;
        queue.remove(i)
    }

    /// The round is over: start no further chunk of a key range (it goes
    /// on in the next round).
    pub fn over(&self) -> bool {
        self.until.is_some_and(|d| tokio::time::Instant::now() >= d)
    }

    /// A chunk of `table` starts: `Some(true)` for the table's first chunk
    /// of this phase (the first the forwarder hands on), `None` if the
    /// forwarder is gone.
    pub fn start(&self, table: usize) -> Option<bool> {
        // Under the queue's lock: the chunk told it is first is the first
        // the forwarder hears of.
        let _order = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let first = self.started.get(table).is_some_and(|s| !s.swap(true, std::sync::atomic::Ordering::Relaxed));
        self.starts.send((self.index, table)).ok()?;
        Some(first)
    }

    /// Hands on a piece of the chunk started last; false if the forwarder is gone.
    pub async fn send(&self, piece: Piece) -> bool {
        self.pieces.send(piece).await.is_ok()
    }

    /// Ends `range` of `table` without rows (its table was dropped); false
    /// if the forwarder is gone.
    pub async fn empty_chunk(&self, table: usize, range: KeyRange) -> bool {
        self.start(table).is_some() && self.send(Piece::End { table, range, next_after: None, rows: 0 }).await
    }
}

/// What the forwarder needs to know of a planned table.
pub struct Planned {
    pub id: TableId,
    pub estimated_rows: u64,
    pub progress: TableProgress,
    /// Read in a first phase, whole, before any other table starts.
    pub first: bool,
}

/// How the forwarder numbers rows and checkpoints.
pub struct Forwarding {
    pub workers: usize,
    /// Rows per chunk, for the channels' depth.
    pub chunk_rows: u64,
    /// Rows per piece a worker sends (the channels hold about one chunk).
    pub batch: usize,
    /// A checkpoint after each chunk (replicate), or none (sync, verify).
    pub checkpoint: Option<Offset>,
    /// The position of the `seq`-th row handed on.
    pub position: Box<dyn Fn(u64) -> Position + Send + Sync>,
    /// Start no chunk after this.
    pub until: Option<tokio::time::Instant>,
}

/// Reads every range the tables have left with `workers` workers, made by
/// `spawn(lane, resource)` from the `resources` given (one each: a
/// connection in the snapshot), and hands the rows to the pipeline, one
/// chunk after another. Returns how it ended, the plan with every chunk
/// handed on recorded, and the resources the workers gave back.
/// `unexpected` makes the source's error for a worker that died.
pub async fn forward<R, E, F, Fut>(
    tables: &[Planned],
    opts: Forwarding,
    resources: Vec<R>,
    spawn: F,
    unexpected: fn(String) -> E,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, SnapshotProgress, Vec<R>), E>
where
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(Lane, R) -> Fut,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let mut fwd = Forward {
        tables,
        seq: 0,
        started: vec![false; tables.len()],
        checkpoint: opts.checkpoint,
        position: opts.position,
        progress: SnapshotProgress { tables: tables.iter().map(|t| t.progress.clone()).collect(), requested: Vec::new() },
    };
    let mut resources = resources;
    let mut read = false;
    for first in [true, false] {
        let work = ranges(tables, |t| t.first == first);
        if work.is_empty() {
            continue;
        }
        // The round ended inside the first phase (which read something): the
        // others wait for the next.
        if read && opts.until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        read = true;
        let phase = Phase { work, workers: opts.workers, chunk_rows: opts.chunk_rows, batch: opts.batch, until: opts.until };
        let (end, back) = fwd.phase(phase, resources, &spawn, unexpected, out, stop).await?;
        if end != RunEnd::SnapshotComplete {
            return Ok((end, fwd.progress, Vec::new()));
        }
        resources = back;
    }
    Ok((RunEnd::SnapshotComplete, fwd.progress, resources))
}

/// The ranges the tables `keep` selects have left; ranges of different
/// tables alternate, so workers spread over tables.
fn ranges(tables: &[Planned], keep: impl Fn(&Planned) -> bool) -> VecDeque<(usize, KeyRange)> {
    let mut work = VecDeque::new();
    let most = tables.iter().map(|t| t.progress.left.len()).max().unwrap_or(0);
    for i in 0..most {
        for (ti, t) in tables.iter().enumerate() {
            if let Some(r) = t.progress.left.get(i).filter(|_| keep(t)) {
                work.push_back((ti, r.clone()));
            }
        }
    }
    work
}

/// One phase of a snapshot: the ranges it reads and how.
struct Phase {
    work: VecDeque<(usize, KeyRange)>,
    workers: usize,
    chunk_rows: u64,
    batch: usize,
    until: Option<tokio::time::Instant>,
}

/// Numbers the rows and adds the progress items and checkpoints.
struct Forward<'a> {
    tables: &'a [Planned],
    seq: u64,
    started: Vec<bool>,
    checkpoint: Option<Offset>,
    position: Box<dyn Fn(u64) -> Position + Send + Sync>,
    /// The plan with every chunk handed on recorded.
    progress: SnapshotProgress,
}

impl Forward<'_> {
    /// Reads the phase's ranges with its workers, made by `spawn` from the
    /// `resources` given, and hands the rows on one chunk after another.
    /// Returns how it ended and the resources the workers gave back.
    async fn phase<R, E, F, Fut>(
        &mut self,
        phase: Phase,
        resources: Vec<R>,
        spawn: &F,
        unexpected: fn(String) -> E,
        out: &mpsc::Sender<Vec<SourceItem>>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(RunEnd, Vec<R>), E>
    where
        R: Send + 'static,
        E: Send + 'static,
        F: Fn(Lane, R) -> Fut,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let Phase { work, workers, chunk_rows, batch, until } = phase;
        let workers = workers.clamp(1, work.len().max(1)).min(resources.len().max(1));
        tracing::info!(tables = self.tables.len(), ranges = work.len(), workers, chunk_rows, "snapshot plan");
        let queue: Queue = Arc::new(Mutex::new(work));
        let positional: Arc<[bool]> = self.tables.iter().map(|t| t.progress.positional).collect();
        let started: Arc<[std::sync::atomic::AtomicBool]> = self.tables.iter().map(|_| false.into()).collect();
        let (starts_tx, mut starts) = mpsc::unbounded_channel::<(usize, usize)>();
        let (failed_tx, mut failed) = mpsc::unbounded_channel::<E>();
        // About a chunk read ahead per worker, at most 16 pieces (a piece is
        // at most a batch of rows or a few MiB), so wide rows stay bounded.
        let depth = (chunk_rows as usize).div_ceil(batch.max(1)).clamp(2, 16);
        let mut channels = Vec::with_capacity(workers);
        let mut set = tokio::task::JoinSet::new();
        let mut spare = Vec::new();
        for (w, resource) in resources.into_iter().enumerate() {
            if w >= workers {
                spare.push(resource);
                continue;
            }
            let (tx, rx) = mpsc::channel(depth);
            channels.push(rx);
            // Held until a failed worker's error is sent: its channel must not
            // close first, or the forwarder would see a chunk cut short instead
            // of the error (a retryable one made definite).
            let open = tx.clone();
            let lane = Lane {
                index: w,
                pieces: tx,
                starts: starts_tx.clone(),
                until,
                queue: queue.clone(),
                positional: positional.clone(),
                took: false.into(),
                started: started.clone(),
            };
            let task = spawn(lane, resource);
            let failed_tx = failed_tx.clone();
            set.spawn(async move {
                let r = match task.await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let _ = failed_tx.send(e);
                        None
                    }
                };
                drop(open);
                r
            });
        }
        drop((starts_tx, failed_tx));
        let mut stop = stop.clone();
        loop {
            let next = tokio::select! {
                biased;
                Some(e) = failed.recv() => return Err(e),
                _ = stop.changed() => return Ok((RunEnd::Stopped, Vec::new())),
                w = starts.recv() => w,
            };
            let Some((w, table)) = next else { break };
            if let Some(item) = self.announce(table) {
                if out.send(vec![item]).await.is_err() {
                    return Ok((RunEnd::Stopped, Vec::new()));
                }
            }
            // Hand on worker `w`'s chunk, up to its end.
            loop {
                let piece = tokio::select! {
                    biased;
                    Some(e) = failed.recv() => return Err(e),
                    _ = stop.changed() => return Ok((RunEnd::Stopped, Vec::new())),
                    p = channels[w].recv() => p,
                };
                let Some(piece) = piece else {
                    return Err(unexpected("a snapshot worker stopped in the middle of a chunk".into()));
                };
                let end = matches!(piece, Piece::End { .. });
                if *stop.borrow() || out.send(self.items(piece)).await.is_err() {
                    return Ok((RunEnd::Stopped, Vec::new()));
                }
                if end {
                    break;
                }
            }
        }
        let mut back = spare;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Some(r)) => back.push(r),
                Ok(None) => {}
                Err(e) => return Err(unexpected(format!("a snapshot worker failed: {e}"))),
            }
        }
        if let Ok(e) = failed.try_recv() {
            return Err(e);
        }
        Ok((RunEnd::SnapshotComplete, back))
    }

    fn items(&mut self, piece: Piece) -> Vec<SourceItem> {
        match piece {
            Piece::Rows(mut rows) => {
                for item in &mut rows {
                    if let SourceItem::Event(ev) = item {
                        self.seq += 1;
                        ev.position = (self.position)(self.seq);
                    }
                }
                rows
            }
            Piece::End { table, range, next_after, rows } => {
                let done = ChunkDone { table: self.tables[table].progress.table.clone(), range, next_after, rows };
                self.progress.record(&done);
                let mut items = vec![SourceItem::ChunkDone(done)];
                if let Some(offset) = &self.checkpoint {
                    items.push(SourceItem::Checkpoint(offset.clone()));
                }
                items
            }
        }
    }

    /// The item that announces `table`, the first time one of its chunks is handed on.
    fn announce(&mut self, table: usize) -> Option<SourceItem> {
        if std::mem::replace(&mut self.started[table], true) {
            return None;
        }
        let t = &self.tables[table];
        Some(SourceItem::SnapshotTable { table: t.id.clone(), estimated_rows: t.estimated_rows })
    }
}

/// Splits one key range of an integer key between `lo` and `hi` into at
/// most `parts` ranges, so several workers can read one table.
pub fn integer_ranges(lo: i64, hi: i64, parts: u64) -> Vec<KeyRange> {
    if parts < 2 || hi <= lo {
        return vec![KeyRange::all()];
    }
    let span = i128::from(hi) - i128::from(lo);
    let mut bounds: Vec<i64> = (1..parts as i128).map(|i| (i128::from(lo) + span * i / parts as i128) as i64).collect();
    bounds.dedup();
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut after = None;
    for b in bounds {
        let upto = Some(vec![b.to_string()]);
        ranges.push(KeyRange { after: after.clone(), upto: upto.clone() });
        after = upto;
    }
    ranges.push(KeyRange { after, upto: None });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{KafkaPosition, Position};

    fn planned(name: &str, ranges: usize, first: bool) -> Planned {
        let left = integer_ranges(0, 100, ranges as u64);
        assert_eq!(left.len(), ranges);
        let progress =
            TableProgress { table: format!("s.{name}"), key: vec!["id".into()], left, rows: 0, chunks: 0, again: false, positional: false };
        Planned { id: TableId { schema: "s".into(), name: name.into() }, estimated_rows: 0, progress, first }
    }

    /// Chunks of 10 rows, no checkpoints, rows numbered from 0.
    fn forwarding(workers: usize, until: Option<tokio::time::Instant>) -> Forwarding {
        Forwarding {
            workers,
            chunk_rows: 10,
            batch: 10,
            checkpoint: None,
            position: Box::new(|seq| Position::Kafka(KafkaPosition { lane: 0, offset: seq })),
            until,
        }
    }

    /// A stand-in worker (no database): reads each range as one empty
    /// chunk, the first-phase table's slowly, so without the phase the
    /// others' chunks would start beside it.
    async fn worker(lane: Lane, (): ()) -> Result<(), String> {
        while let Some((table, range)) = lane.next_range() {
            if lane.start(table).is_none() {
                break;
            }
            if table == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            lane.send(Piece::End { table, range, next_after: None, rows: 0 }).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn read_first_tables_are_handed_on_whole_before_any_other_starts() {
        let tables = [planned("orders", 4, false), planned("products", 3, true), planned("users", 2, false)];
        let opts = forwarding(3, None);
        let (out, mut rx) = mpsc::channel(64);
        let (_stop_tx, stop) = watch::channel(false);
        let (end, progress, back) = forward(&tables, opts, vec![(); 3], worker, |e| e, &out, &stop).await.unwrap();
        drop(out);
        assert_eq!((end, back.len()), (RunEnd::SnapshotComplete, 3));
        assert!(progress.is_done());
        let mut order = Vec::new();
        while let Some(items) = rx.recv().await {
            for item in items {
                match item {
                    SourceItem::SnapshotTable { table, .. } => order.push(format!("start {}", table.name)),
                    SourceItem::ChunkDone(done) => order.push(format!("done {}", done.table)),
                    _ => {}
                }
            }
        }
        let products_done = order.iter().rposition(|o| o == "done s.products").unwrap();
        let others_start = order.iter().position(|o| o == "start orders" || o == "start users").unwrap();
        assert_eq!(order.iter().filter(|o| o.as_str() == "done s.products").count(), 3);
        assert!(products_done < others_start, "{order:?}");
        assert_eq!(order.len(), 3 + 4 + 2 + 3, "every chunk once, every table announced once: {order:?}");
    }

    /// Past a round's deadline no key range starts, but every positional
    /// range of the round still does: it would name other rows in the next.
    /// And a round whose deadline passed before its workers began still
    /// reads a range with each (or short rounds would read nothing, ever).
    #[tokio::test]
    async fn a_round_past_its_deadline_reads_all_its_positional_ranges_and_no_more_key_ranges() {
        for (deadline_ms, most_orders) in [(30, 3), (-1, 2)] {
            let mut heap = planned("heap", 3, false);
            heap.progress.positional = true;
            let tables = [planned("orders", 4, false), heap];
            let now = tokio::time::Instant::now();
            let until = if deadline_ms < 0 { now } else { now + std::time::Duration::from_millis(deadline_ms as u64) };
            let opts = forwarding(2, Some(until));
            // Every chunk takes 20 ms.
            let slow = |lane: Lane, (): ()| async move {
                while let Some((table, range)) = lane.next_range() {
                    if lane.start(table).is_none() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    lane.send(Piece::End { table, range, next_after: None, rows: 0 }).await;
                }
                Ok::<(), String>(())
            };
            let (out, mut rx) = mpsc::channel(64);
            let (_stop_tx, stop) = watch::channel(false);
            let (end, progress, _) = forward(&tables, opts, vec![(); 2], slow, |e| e, &out, &stop).await.unwrap();
            drop(out);
            assert_eq!(end, RunEnd::SnapshotComplete);
            let mut done = Vec::new();
            while let Some(items) = rx.recv().await {
                done.extend(items.into_iter().filter_map(|i| if let SourceItem::ChunkDone(d) = i { Some(d.table) } else { None }));
            }
            assert_eq!(done.iter().filter(|t| *t == "s.heap").count(), 3, "{deadline_ms} ms: {done:?}");
            assert!(progress.table("s.heap").unwrap().is_done());
            let orders = done.iter().filter(|t| *t == "s.orders").count();
            assert!((1..=most_orders).contains(&orders), "{deadline_ms} ms: the key ranges stop at the deadline: {done:?}");
            assert_eq!(progress.table("s.orders").unwrap().left.len(), 4 - orders);
        }
    }

    /// Exactly one chunk of a table is told it is the table's first, and it
    /// is the first of that table the forwarder hands on (a reload puts its
    /// truncate event there).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_chunk_told_first_of_its_table_is_handed_on_first() {
        for _ in 0..20 {
            let tables = [planned("orders", 8, false), planned("users", 5, false)];
            let firsts = Arc::new(Mutex::new(Vec::new()));
            let told = firsts.clone();
            let work = move |lane: Lane, (): ()| {
                let told = told.clone();
                async move {
                    while let Some((table, range)) = lane.next_range() {
                        let Some(first) = lane.start(table) else { break };
                        if first {
                            told.lock().unwrap().push((table, range.clone()));
                        }
                        tokio::task::yield_now().await;
                        lane.send(Piece::End { table, range, next_after: None, rows: 0 }).await;
                    }
                    Ok::<(), String>(())
                }
            };
            let (out, mut rx) = mpsc::channel(64);
            let (_stop_tx, stop) = watch::channel(false);
            forward(&tables, forwarding(3, None), vec![(); 3], work, |e| e, &out, &stop).await.unwrap();
            drop(out);
            let mut handed = Vec::new();
            while let Some(items) = rx.recv().await {
                handed.extend(items.into_iter().filter_map(|i| if let SourceItem::ChunkDone(d) = i { Some(d) } else { None }));
            }
            let mut firsts = firsts.lock().unwrap().clone();
            firsts.sort_by_key(|(t, _)| *t);
            assert_eq!(firsts.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [0, 1], "one first chunk per table");
            for (t, range) in firsts {
                let first_handed = handed.iter().find(|d| d.table == tables[t].progress.table).unwrap();
                assert_eq!(first_handed.range, range, "{}", tables[t].progress.table);
            }
        }
    }

    #[test]
    fn integer_ranges_cover_the_keys_without_overlap() {
        let r = integer_ranges(1, 100, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], KeyRange { after: None, upto: Some(vec!["25".into()]) });
        assert_eq!(r[1].after, r[0].upto);
        assert_eq!(r[3], KeyRange { after: Some(vec!["75".into()]), upto: None });
        assert_eq!(integer_ranges(5, 5, 4), vec![KeyRange::all()]);
        assert_eq!(integer_ranges(i64::MIN, i64::MAX, 2).len(), 2);
    }
}
