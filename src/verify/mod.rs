//! `riffle verify`: is the copy exact? The source is read at one exact
//! position P (Postgres: a temporary slot's exported snapshot and its
//! consistent point; MySQL/MariaDB: a consistent read and its binlog
//! position), and each sink (files; Kafka topics in JSON or Avro, read from their
//! start) is replayed as of P: the last event per key
//! among those before P, in position order. Both sides go through the same
//! table rules, and the source's rows are written through the sink's own
//! format and read back, so a value is compared as the file holds it (a
//! Parquet decimal against a Postgres numeric: every digit).
//!
//! While the source is live, changes after P are left out of the sink's
//! replay, so writers cause no false difference; the sink must hold
//! everything before P: verify waits for a running pipeline to get there,
//! catches up itself for `replicate --until now --verify`, and otherwise
//! compares the sink as it stands and says how far behind it is (its
//! differences are then changes not yet replicated).
//!
//! Memory is bounded: both sides are reduced to (key, 64-bit digest of the
//! canonical cells; the cells themselves only with `--show-values`), sorted
//! by key in an external sort that spills past a budget to temporary files
//! ([`spill`]), then merged key by key.

mod spill;

use crate::config::Config;
use crate::connectors::sinks::SinkTarget;
use crate::connectors::AnySource;
use crate::state::StateStore;
use crate::transform::Transformer;
use anyhow::{anyhow, bail, Context as _, Result};
use riffle_core::source::{RunEnd, StartMode};
use riffle_core::{ChangeEvent, Offset, Source, SourceItem, TableSchema, Until};
use riffle_files::object::Target;
use riffle_formats::file::FileFormat;
use riffle_formats::read::{digest, read_rows, Cells, Shape};
use serde::Serialize;
use spill::{Rec, Sorter};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The exit code when the copy differs from the source.
pub const DIFFERENCES_EXIT: u8 = 3;

/// The copy differs from the source (exit [`DIFFERENCES_EXIT`]).
#[derive(Debug, thiserror::Error)]
#[error("riffle verify found differences (listed on standard output)")]
pub struct Differences;

/// How to verify.
#[derive(Debug, Clone)]
pub struct Options {
    pub json: bool,
    pub show_values: bool,
    /// How long to wait for a running pipeline to reach the verify position.
    pub wait: Duration,
    /// Catch the sink up to the verify position by running the pipeline
    /// (`replicate --until now --verify`).
    pub catch_up: bool,
}

/// Source rows sent through the sink's format in batches this large (a
/// Parquet file, an Avro container each: large enough to pay their set-up
/// once per many rows); `RIFFLE_VERIFY_BATCH` overrides it.
const BATCH: usize = 16384;

fn batch() -> usize {
    std::env::var("RIFFLE_VERIFY_BATCH").ok().and_then(|b| b.parse().ok()).filter(|&b| b > 0).unwrap_or(BATCH)
}
/// Keys listed per kind of difference (all of them with `--json`).
const LISTED: usize = 20;

/// A sink row as of P: its digest, and its cells when they are needed
/// (`--show-values`, or a row some change sent only part of).
struct Entry {
    digest: u64,
    cells: Option<Cells>,
    /// Only the columns in `cells` are known (a change sent part of the
    /// row, and the rest was not kept): only those are compared.
    partial: bool,
    /// Copies of this row (keyless tables; 1 otherwise).
    copies: u32,
}

/// One table of one sink: its events as of P and the source's rows, each
/// sorted by key in bounded memory ([`spill`]), then merged. The sink's
/// events are read on a thread of their own while the source's rows come.
struct TableCheck {
    shape: Shape,
    report: TableReport,
    /// Source rows waiting to be written through the format.
    pending: Vec<ChangeEvent>,
    schema: Option<Arc<TableSchema>>,
    sink: SinkLoad,
    source: Sorter,
    /// Source rows keep their cells (`--show-values`, or a pass that found
    /// sink rows known only in part).
    cells: bool,
    /// Some source rows were sorted without their cells.
    bare: bool,
}

/// The sink's side of a table: being read, or read.
enum SinkLoad {
    Reading(tokio::task::JoinHandle<Result<SinkRows>>),
    Read(SinkRows),
}

/// What a sink holds of one table as of P.
struct SinkRows {
    sorter: Sorter,
    /// The place of the last truncate among the sink's events (0: none).
    truncated: u64,
    /// Some event sent only part of its row: source rows need their cells.
    partial: bool,
    /// Positions of events the sink holds more than once.
    duplicated: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub source_rows: u64,
    pub sink_rows: u64,
    pub matching: u64,
    pub differing: Vec<String>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    /// Positions of events the sink holds more than once.
    pub duplicated: Vec<String>,
    /// With `--show-values`: key → (source row, sink row), as the format writes them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, (Option<String>, Option<String>)>,
}

impl TableReport {
    fn differs(&self) -> bool {
        !(self.differing.is_empty() && self.missing.is_empty() && self.extra.is_empty() && self.duplicated.is_empty())
    }
}

#[derive(Debug, Serialize)]
pub struct SinkReport {
    pub sink: String,
    /// Where the pipeline's saved position stood against the verify position.
    pub behind: Option<String>,
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The source position the copy was compared at.
    pub position: String,
    pub matches: bool,
    pub sinks: Vec<SinkReport>,
}

/// Memory the sorters of all tables may hold before they spill to disk
/// (`RIFFLE_VERIFY_SORT_BUDGET`, bytes, overrides it).
const SORT_BUDGET: usize = 16 << 20;

fn sort_budget() -> usize {
    std::env::var("RIFFLE_VERIFY_SORT_BUDGET").ok().and_then(|b| b.parse().ok()).unwrap_or(SORT_BUDGET)
}

/// Where a sink's events are read back from.
enum Store {
    Files(Target),
    /// Topics (JSON; Avro decoded), read from their start (at-least-once: an event may be
    /// there twice, which the replay takes as one).
    Kafka(Box<riffle_kafka::KafkaOptions>),
}

/// A sink as verify reads it.
struct SinkSide {
    name: String,
    store: Arc<Store>,
    /// The format the source's rows are written through to meet the
    /// sink's in one canonical form, and its reader's extension.
    format: Arc<dyn FileFormat>,
    ext: &'static str,
    index: usize,
    tables: BTreeMap<String, TableCheck>,
    behind: Option<String>,
}

fn shown(cells: &Cells) -> String {
    let cells: Vec<String> = cells.iter().map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("null"))).collect();
    format!("{{{}}}", cells.join(", "))
}

impl SinkSide {
    /// The check of `table`, its sink's rows being read as of `at` on a
    /// thread of their own ([`load_sink`]); the source's rows keep their
    /// cells when `cells`.
    fn check(&self, table: &str, shape: Shape, at: &str, sorting: &Sorting, db: &str, cells: bool) -> TableCheck {
        let (store, ext, name, sorter) = (self.store.clone(), self.ext, self.name.clone(), sorting.sorter());
        let (owned, at, db, read_shape) = (table.to_string(), at.to_string(), db.to_string(), shape.clone());
        let reading = tokio::task::spawn_blocking(move || {
            let (table, shape) = (owned, read_shape);
            let started = std::time::Instant::now();
            let rows = load_sink(&store, ext, &table, &shape, &at, sorter, &db)?;
            tracing::info!(sink = name, table, seconds = started.elapsed().as_secs_f32(), "read the sink's events");
            Ok(rows)
        });
        TableCheck {
            report: TableReport { table: table.to_string(), ..Default::default() },
            pending: Vec::new(),
            schema: None,
            sink: SinkLoad::Reading(reading),
            source: sorting.sorter(),
            cells,
            bare: false,
            shape,
        }
    }
}

/// The sink's rows of `table` as of `at` (every event before it, in
/// position order; all of them for files without positions), sorted by key.
fn load_sink(store: &Store, ext: &str, table: &str, shape: &Shape, at: &str, sorter: Sorter, db: &str) -> Result<SinkRows> {
    let id = riffle_core::TableId::parse(table).ok_or_else(|| anyhow!("table {table:?}: expected schema.table"))?;
    let mut rows = SinkRows { sorter, truncated: 0, partial: false, duplicated: Vec::new() };
    let mut seq = 0u64;
    let mut failed: Option<std::io::Error> = None;
    // One event, in position order, onto the sink's sorter.
    let mut take = |rows: &mut SinkRows, row: riffle_formats::read::ReadRow| {
        seq += 1;
        let op = row.op.bytes().next().unwrap_or(b'r');
        if op == b't' {
            rows.truncated = seq;
            return;
        }
        rows.partial |= row.partial;
        let rec = Rec { key: row.key, seq, op, partial: row.partial, digest: row.digest, cells: row.cells };
        if let Err(e) = rows.sorter.push(rec) {
            failed.get_or_insert(e);
        }
    };
    match store {
        Store::Files(target) => {
            let dir = riffle_files::table_dir(&id.schema, &id.name);
            let mut files: Vec<String> =
                target.list_under(&dir).map_err(|e| anyhow!("{e}"))?.into_iter().filter(|p| p.ends_with(&format!(".{ext}"))).collect();
            // Files are named by their first and last positions: by name
            // is in position order (partition folders aside).
            files.sort_by(|a, b| a.rsplit('/').next().cmp(&b.rsplit('/').next()));
            // Positions only grow along the files in name order: one that
            // does not is an event held twice (a file copied or written twice).
            let mut last: Option<String> = None;
            for file in files {
                let bytes = target.get(&file).map_err(|e| anyhow!("{e}"))?.unwrap_or_default();
                read_rows(ext, bytes.into(), shape, &mut |row| {
                    if let Some(p) = &row.position {
                        if p.as_str() >= at {
                            return;
                        }
                        if last.as_ref().is_some_and(|l| p <= l) {
                            rows.duplicated.push(format!("{p} ({file})"));
                            return;
                        }
                        last = Some(p.clone());
                    }
                    take(&mut rows, row);
                })
                .map_err(|e| anyhow!("{}/{file}: {e}", target.shown))?;
            }
        }
        Store::Kafka(opts) => {
            let topic = opts.topic_for(&id, db);
            let mut bad = None;
            // A key's events are in one partition, in order.
            opts.read_topic(&topic, &mut |m| {
                let Some(value) = m.value else { return };
                let read = read_rows("jsonl", value.into(), shape, &mut |mut row| {
                    // riffle's header (a decoded Avro event has no position of its own).
                    row.position = m.position.clone().or(row.position);
                    if row.position.as_deref().is_some_and(|p| p >= at) {
                        return;
                    }
                    take(&mut rows, row);
                });
                if let Err(e) = read {
                    bad.get_or_insert(e);
                }
            })
            .map_err(|e| anyhow!("{e}"))?;
            if let Some(e) = bad {
                return Err(anyhow!("Kafka topic {topic}: {e}"));
            }
        }
    }
    if let Some(e) = failed {
        return Err(anyhow!(e).context("sorting the sink's rows (temporary files)"));
    }
    Ok(rows)
}

/// The sorters' shared budget and where they spill.
struct Sorting {
    used: Arc<AtomicUsize>,
    budget: usize,
    dir: std::path::PathBuf,
}

impl Sorting {
    fn sorter(&self) -> Sorter {
        Sorter::new(self.used.clone(), self.budget, self.dir.clone())
    }
}

/// The spilled runs go with the pass, however it ends (a stop included).
/// A sorter still running on a blocking thread then cannot spill (its
/// directory is gone); one that created a file while the directory was
/// being emptied is caught by the second try.
impl Drop for Sorting {
    fn drop(&mut self) {
        for _ in 0..3 {
            if std::fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
        }
    }
}

/// The sink's row for one key as of P: its events (in position order)
/// replayed.
fn replay(events: Vec<Rec>, keyless: bool) -> Option<Entry> {
    let mut entry: Option<Entry> = None;
    for ev in events {
        entry = match (ev.op, entry) {
            (b'd', Some(mut e)) if keyless && e.copies > 1 => {
                e.copies -= 1;
                Some(e)
            }
            (b'd', _) => None,
            (_, Some(mut e)) if keyless => {
                e.copies += 1;
                Some(e)
            }
            (_, old) if ev.partial => {
                // Columns the change did not send keep their earlier value.
                let sent = ev.cells.unwrap_or_default();
                match old {
                    Some(Entry { cells: Some(mut cells), partial, .. }) => {
                        for (c, v) in sent {
                            match cells.iter_mut().find(|(o, _)| *o == c) {
                                Some(cell) => cell.1 = v,
                                None => cells.push((c, v)),
                            }
                        }
                        Some(Entry { digest: digest(&cells), cells: Some(cells), partial, copies: 1 })
                    }
                    _ => Some(Entry { digest: 0, cells: Some(sent), partial: true, copies: 1 }),
                }
            }
            _ => Some(Entry { digest: ev.digest, cells: ev.cells, partial: false, copies: 1 }),
        };
    }
    entry
}

/// The next run of records with one key.
fn group(it: &mut std::iter::Peekable<spill::Merged>) -> Result<Option<(String, Vec<Rec>)>> {
    let first = match it.next() {
        None => return Ok(None),
        Some(r) => r.context("reading back sorted rows (temporary files)")?,
    };
    let key = first.key.clone();
    let mut all = vec![first];
    while let Some(Ok(next)) = it.peek() {
        if next.key != key {
            break;
        }
        all.push(it.next().expect("peeked")?);
    }
    if let Some(Err(_)) = it.peek() {
        it.next().expect("peeked").context("reading back sorted rows (temporary files)")?;
    }
    Ok(Some((key, all)))
}

impl TableCheck {
    /// Takes the sink's rows once read: at once when `wait`, else only if
    /// their thread is done.
    async fn settle(&mut self, wait: bool) -> Result<()> {
        if let SinkLoad::Reading(handle) = &mut self.sink {
            if wait || handle.is_finished() {
                let rows = handle.await.context("the thread reading the sink")??;
                self.report.duplicated.clone_from(&rows.duplicated);
                self.sink = SinkLoad::Read(rows);
            }
        }
        Ok(())
    }

    /// Puts the source rows waiting into the source's sorter in the form
    /// the sink's rows are read in: for Parquet made from the values
    /// directly ([`riffle_formats::read::parquet_rows`], the same cells as
    /// the round trip, proven by its test), else written through `format`
    /// and read back.
    fn take_pending(&mut self, format: &Arc<dyn FileFormat>, ext: &str) -> Result<()> {
        let Some(schema) = self.schema.clone().filter(|_| !self.pending.is_empty()) else { return Ok(()) };
        // Cells too where a sink row is known only in part.
        let partial = matches!(&self.sink, SinkLoad::Read(rows) if rows.partial);
        let shape = Shape { keep_cells: self.cells || partial, ..self.shape.clone() };
        self.bare |= !shape.keep_cells;
        let (mut rows, mut failed) = (0u64, None);
        let source = &mut self.source;
        let mut take = |row: riffle_formats::read::ReadRow| {
            rows += 1;
            let rec = Rec { key: row.key, seq: 0, op: b'r', partial: false, digest: row.digest, cells: row.cells };
            if let Err(e) = source.push(rec) {
                failed.get_or_insert(e);
            }
        };
        let direct = ext == "parquet"
            && riffle_formats::read::parquet_rows(&schema, &self.pending, &shape, &mut take)
                .map_err(|e| anyhow!("the source's rows: {e}"))?;
        if direct {
            self.pending.clear();
        } else {
            let mut writer = format.writer(&schema, "riffle.verify").map_err(|e| anyhow!("{e}"))?;
            for ev in self.pending.drain(..) {
                writer.write(&ev).map_err(|e| anyhow!("{e}"))?;
            }
            let mut bytes = Vec::new();
            writer.finish(&mut bytes).map_err(|e| anyhow!("{e}"))?;
            read_rows(ext, bytes.into(), &shape, &mut take).map_err(|e| anyhow!("reading back the source's rows: {e}"))?;
        }
        if let Some(e) = failed {
            return Err(anyhow!(e).context("sorting the source's rows (temporary files)"));
        }
        self.report.source_rows += rows;
        Ok(())
    }

    /// Merges the two sides key by key into the report, once the sink's
    /// rows are read ([`TableCheck::settle`]). `None`: the sink holds rows
    /// known only in part, and some source rows were sorted without the
    /// cells they are compared on: the table needs another pass.
    fn finish(mut self, format: &Arc<dyn FileFormat>, ext: &str, show_values: bool) -> Result<Option<TableReport>> {
        self.take_pending(format, ext)?;
        let SinkLoad::Read(rows) = self.sink else { bail!("the sink's rows compared before they were read; this is a bug in riffle") };
        if rows.partial && self.bare {
            return Ok(None);
        }
        let keyless = self.shape.key.is_empty();
        let truncated = rows.truncated;
        tracing::info!(table = self.report.table, spilled_runs = rows.sorter.runs() + self.source.runs(), "comparing, key by key");
        let mut sink = rows.sorter.finish().context("sorting the sink's rows (temporary files)")?.peekable();
        let mut source = self.source.finish().context("sorting the source's rows (temporary files)")?.peekable();
        let mut r = self.report;
        let (mut s_next, mut o_next) = (group(&mut sink)?, group(&mut source)?);
        loop {
            let order = match (&s_next, &o_next) {
                (None, None) => break,
                (Some((sk, _)), Some((ok, _))) => sk.cmp(ok),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            let (sink_key, sink_entry) = if order.is_le() {
                let (key, events) = s_next.take().expect("a sink group");
                s_next = group(&mut sink)?;
                (Some(key), replay(events.into_iter().filter(|e| e.seq > truncated).collect(), keyless))
            } else {
                (None, None)
            };
            let source_rows = if order.is_ge() {
                let (_, rows) = o_next.take().expect("a source group");
                o_next = group(&mut source)?;
                rows
            } else {
                Vec::new()
            };
            let Some(key) = source_rows.first().map(|row| row.key.clone()).or(sink_key) else { continue };
            let sink_copies = sink_entry.as_ref().map_or(0, |e| e.copies as usize);
            r.sink_rows += sink_copies as u64;
            let Some(e) = sink_entry else {
                for row in source_rows {
                    if show_values {
                        r.values.insert(row.key.clone(), (row.cells.as_ref().map(shown), None));
                    }
                    r.missing.push(row.key);
                }
                continue;
            };
            let Some(row) = source_rows.first() else {
                if show_values {
                    r.values.insert(key.clone(), (None, e.cells.as_ref().map(shown)));
                }
                for _ in 0..sink_copies {
                    r.extra.push(key.clone());
                }
                continue;
            };
            let same = if e.partial {
                let have = row.cells.as_deref().unwrap_or_default();
                e.cells.iter().flatten().all(|(c, v)| have.iter().any(|(hc, hv)| hc == c && hv == v))
            } else {
                e.digest == row.digest
            };
            let matched = if same { sink_copies.min(source_rows.len()) } else { 0 };
            r.matching += matched as u64;
            if !same {
                if show_values {
                    r.values.insert(key.clone(), (row.cells.as_ref().map(shown), e.cells.as_ref().map(shown)));
                }
                r.differing.push(key.clone());
                continue;
            }
            for _ in matched..source_rows.len() {
                r.missing.push(key.clone());
            }
            for _ in matched..sink_copies {
                r.extra.push(key.clone());
            }
        }
        Ok(Some(r))
    }
}

/// The sinks of `cfg` verify can read back (files, Kafka topics).
fn sink_sides(cfg: &Config) -> Result<Vec<SinkSide>> {
    let mut sides = Vec::new();
    for (index, s) in cfg.sinks.iter().enumerate() {
        match &s.target {
            SinkTarget::Files(opts) => {
                let target = riffle_files::object::open_target(&opts.url, &opts.store).map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                // Compressing the source's rows only to decompress them was
                // a tenth of verify's time.
                let format = riffle_formats::file::read_back_format(s.encoder);
                let ext = format.extension();
                sides.push(SinkSide {
                    name: s.name.clone(),
                    store: Arc::new(Store::Files(target)),
                    format,
                    ext,
                    index,
                    tables: BTreeMap::new(),
                    behind: None,
                });
            }
            SinkTarget::Kafka(opts) => {
                // JSON messages carry the envelope JSON lines files do, in
                // Debezium's encodings or riffle's: the source's rows are
                // written the same way to be compared. Avro messages are
                // decoded into riffle's envelope, and the source's rows
                // encoded in the sink's Avro and decoded alike.
                let format: Arc<dyn riffle_formats::file::FileFormat> = match (&opts.format, opts.encoding) {
                    (riffle_kafka::ValueFormat::Avro { .. }, _) => Arc::new(riffle_kafka::avro_lines((**opts).clone())),
                    (_, riffle_kafka::ValueEncoding::Debezium(modes)) => Arc::new(riffle_kafka::debezium::debezium_lines(modes)),
                    (_, riffle_kafka::ValueEncoding::Riffle) => {
                        let encoder = riffle_formats::Encoder { format: riffle_formats::Format::Jsonl, metadata: true };
                        riffle_formats::file::file_format(encoder, None).map_err(|e| anyhow!("sink {}: {e}", s.name))?
                    }
                };
                let store = Arc::new(Store::Kafka(opts.clone()));
                sides.push(SinkSide { name: s.name.clone(), store, format, ext: "jsonl", index, tables: BTreeMap::new(), behind: None });
            }
            SinkTarget::Stdout => {
                bail!("sink {}: standard output cannot be read back; riffle verify compares file sinks and Kafka topics", s.name)
            }
        }
    }
    if sides.is_empty() {
        bail!("riffle verify needs a sink to compare: files (--sink DIR or an object-store URL) or a Kafka topic");
    }
    Ok(sides)
}

/// Makes sure the sinks hold every change before `at`: waits for a running
/// pipeline, catches up when asked, or says how far behind they are.
async fn reach(cfg: &Config, at: &Offset, opts: &Options, sides: &mut [SinkSide], stop: &watch::Receiver<bool>) -> Result<()> {
    let store = StateStore::new(&cfg.state_dir)?;
    let saved = || -> Result<Option<Offset>> { Ok(store.load(&cfg.name)?.and_then(|s| s.offset)) };
    let behind = |o: &Option<Offset>| o.as_ref().is_none_or(|o| o.is_before(at));
    let mut offset = saved()?;
    if behind(&offset) && opts.catch_up {
        tracing::info!(at = %at, "catching the sinks up to the verify position");
        let summary =
            crate::pipeline::run(cfg, crate::pipeline::Job::Replicate { until: Until::Now, standby: false }, true, stop.clone()).await?;
        if summary.end == RunEnd::Stopped {
            bail!("stopped while catching up");
        }
        offset = saved()?;
    } else if behind(&offset) && store.lease_held(&cfg.name) {
        tracing::info!(at = %at, wait = ?opts.wait, "waiting for the running pipeline to reach the verify position");
        let deadline = tokio::time::Instant::now() + opts.wait;
        while behind(&offset) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            offset = saved()?;
        }
    }
    if behind(&offset) {
        let saved = offset.map_or_else(|| "nothing".to_string(), |o| o.to_string());
        let note = format!("the pipeline's saved position ({saved}) is before the verify position ({at}): changes in between not replicated yet show as differences");
        tracing::info!("{note}");
        for side in sides {
            side.behind = Some(note.clone());
        }
    }
    Ok(())
}

/// Verifies `cfg`'s sinks against its source; the report, printed.
///
/// The sink's rows of a table are read beside the source's, so whether
/// the sink holds rows known only in part (whose source rows must keep
/// their cells to be compared) is known only once both are read. When it
/// does and source rows went by without their cells, the whole read is
/// done once more, those tables keeping their cells from the start.
pub async fn run(cfg: &Config, opts: &Options, quiet: bool, stop: watch::Receiver<bool>) -> Result<Report> {
    let mut cells_for = std::collections::BTreeSet::new();
    loop {
        match pass(cfg, opts, quiet, stop.clone(), &cells_for).await? {
            Pass::Done(report) => {
                print(&report, opts);
                return Ok(report);
            }
            Pass::Again(tables) if !tables.iter().all(|t| cells_for.contains(t)) => {
                tracing::info!(
                    tables = tables.join(", "),
                    "the sink holds rows known only in part; reading again, keeping the cells they are compared on"
                );
                cells_for.extend(tables);
            }
            Pass::Again(_) => bail!("a table needed its cells though it kept them; this is a bug in riffle"),
        }
    }
}

/// How one read of source and sinks ended.
enum Pass {
    Done(Report),
    /// These tables need another pass, keeping their source rows' cells.
    Again(Vec<String>),
}

async fn pass(
    cfg: &Config,
    opts: &Options,
    quiet: bool,
    stop: watch::Receiver<bool>,
    cells_for: &std::collections::BTreeSet<String>,
) -> Result<Pass> {
    let mut sides = sink_sides(cfg)?;
    let mut source = AnySource::new(&cfg.source_spec())?;
    source.prepare(StartMode::Verify, Until::Never)?;
    let (tx, mut rx) = mpsc::channel::<Vec<SourceItem>>(4);
    let (_durable_tx, durable_rx) = watch::channel(None);
    let source_stop = stop.clone();
    let task = tokio::spawn(async move { source.run(tx, durable_rx, source_stop).await });
    let mut transformer = Transformer::new(cfg.rules.clone(), cfg.mask_salt.clone());
    let dir = std::env::temp_dir().join(format!("riffle-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("making {} for the external sort", dir.display()))?;
    let sorting = Sorting { used: Arc::new(AtomicUsize::new(0)), budget: sort_budget(), dir };
    let mut at: Option<(Offset, String)> = None;
    // The source's database, for topic names that hold it.
    let mut db: Option<String> = None;
    // Bars on a terminal (rows read from the source, per table), log lines elsewhere.
    let mut progress = crate::progress::Progress::new(quiet);
    let mut chunks: Option<riffle_core::SnapshotProgress> = None;
    let mut planned: Vec<(String, Vec<String>)> = Vec::new();
    let batch = batch();
    // Rows read of one table not shown yet (counted per run of events, not per event).
    let mut unshown: Option<(riffle_core::TableId, u64)> = None;
    let show = |progress: &mut crate::progress::Progress, unshown: &mut Option<(riffle_core::TableId, u64)>| {
        if let Some((table, n)) = unshown.take() {
            progress.snapshot_rows(&table, n);
        }
    };
    // The last event's table and its name (made once per run of its events).
    let mut named: Option<(riffle_core::TableId, String)> = None;
    while let Some(items) = rx.recv().await {
        for item in items {
            if !matches!(item, SourceItem::Event(_)) {
                show(&mut progress, &mut unshown);
            }
            match item {
                SourceItem::SnapshotStarted(offset) => {
                    reach(cfg, &offset, opts, &mut sides, &stop).await?;
                    at = Some((offset.clone(), offset.boundary().key()));
                }
                SourceItem::SnapshotPlan(plan) => {
                    progress.plan(plan.pending().count());
                    planned = plan.tables.iter().map(|t| (t.table.clone(), t.key.clone())).collect();
                    chunks = Some(plan);
                }
                SourceItem::SnapshotTable { table, estimated_rows } => progress.start_table(&table, estimated_rows),
                SourceItem::ChunkDone(done) => {
                    if let Some(plan) = chunks.as_mut() {
                        if plan.record(&done) && plan.table(&done.table).is_some_and(|t| t.is_done()) {
                            progress.finish_table(&done.table);
                        }
                    }
                }
                SourceItem::SnapshotDone => progress.finish_all(),
                // Only a source without a snapshot (Kafka) sends these; verify refuses it.
                SourceItem::Reference(_) => {}
                SourceItem::Event(ev) => {
                    let Some((_, at_key)) = &at else { bail!("the source sent rows before its position; this is a bug in riffle") };
                    match &mut unshown {
                        Some((table, n)) if *table == ev.table.id => *n += 1,
                        _ => {
                            show(&mut progress, &mut unshown);
                            unshown = Some((ev.table.id.clone(), 1));
                        }
                    }
                    let routed = transformer.apply(ev).map_err(|e| anyhow!("{e}"))?;
                    let Some(ev) = routed.event else { continue };
                    if named.as_ref().is_none_or(|(id, _)| *id != ev.table.id) {
                        named = Some((ev.table.id.clone(), ev.table.id.to_string()));
                    }
                    let table = &named.as_ref().expect("named above").1;
                    let takers = sides.iter().filter(|s| routed.sinks.as_ref().is_none_or(|only| only.contains(&s.index))).count();
                    let mut ev = Some(ev);
                    for (n, side) in
                        sides.iter_mut().filter(|s| routed.sinks.as_ref().is_none_or(|only| only.contains(&s.index))).enumerate()
                    {
                        // The last sink takes the event itself, the others a copy.
                        let ev = if n + 1 == takers { ev.take().expect("taken once") } else { ev.clone().expect("still here") };
                        if !side.tables.contains_key(table) {
                            let shape = Shape {
                                key: ev.table.key.iter().map(|&i| ev.table.columns[i].name.clone()).collect(),
                                columns: ev.table.columns.len(),
                                keep_cells: opts.show_values,
                            };
                            db.get_or_insert_with(|| ev.source.db.to_string());
                            let db = db.as_deref().unwrap_or_default();
                            let cells = opts.show_values || cells_for.contains(table);
                            let check = side.check(table, shape, at_key, &sorting, db, cells);
                            side.tables.insert(table.clone(), check);
                        }
                        let check = side.tables.get_mut(table).expect("inserted above");
                        check.schema.get_or_insert_with(|| ev.table.clone());
                        check.pending.push(ev);
                        if check.pending.len() >= batch {
                            check.settle(false).await?;
                            tokio::task::block_in_place(|| check.take_pending(&side.format, side.ext))?;
                        }
                    }
                }
                _ => {}
            }
        }
        show(&mut progress, &mut unshown);
    }
    match task.await.context("the source task")? {
        Ok(RunEnd::SnapshotComplete) => {}
        Ok(_) => bail!("stopped before the source was read whole"),
        Err(e) => return Err(anyhow!(e)),
    }
    let Some((offset, at_key)) = at else { bail!("the source ended without a position; this is a bug in riffle") };
    let mut sinks = Vec::new();
    let mut again = Vec::new();
    for mut side in sides {
        // Tables without a row in the source: whatever the sink holds is extra.
        for (table, key) in &planned {
            if !side.tables.contains_key(table) {
                let shape = Shape { key: key.clone(), columns: 0, keep_cells: opts.show_values };
                let db = db.as_deref().unwrap_or_default();
                let check = side.check(table, shape, &at_key, &sorting, db, opts.show_values);
                side.tables.insert(table.clone(), check);
            }
        }
        let mut tables = Vec::new();
        for (table, mut check) in std::mem::take(&mut side.tables) {
            check.settle(true).await?;
            match tokio::task::block_in_place(|| check.finish(&side.format, side.ext, opts.show_values))? {
                Some(report) => tables.push(report),
                None => again.push(table),
            }
        }
        sinks.push(SinkReport { sink: side.name, behind: side.behind, tables });
    }
    drop(sorting);
    if !again.is_empty() {
        again.sort();
        again.dedup();
        return Ok(Pass::Again(again));
    }
    let matches = sinks.iter().all(|s| s.tables.iter().all(|t| !t.differs()));
    Ok(Pass::Done(Report { position: offset.to_string(), matches, sinks }))
}

fn print(report: &Report, opts: &Options) {
    if opts.json {
        out!("{}", serde_json::to_string_pretty(report).expect("a report serializes"));
        return;
    }
    out!("verified at source position {}", report.position);
    for s in &report.sinks {
        out!("");
        out!("sink {}", s.sink);
        if let Some(b) = s.behind.as_ref().filter(|_| s.tables.iter().any(TableReport::differs)) {
            out!("  note: {b}");
        }
        out!(
            "  {:<32} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8} {:>10}",
            "table",
            "source",
            "sink",
            "matching",
            "differing",
            "missing",
            "extra",
            "duplicated"
        );
        for t in &s.tables {
            out!(
                "  {:<32} {:>10} {:>10} {:>10} {:>9} {:>8} {:>8} {:>10}",
                t.table,
                t.source_rows,
                t.sink_rows,
                t.matching,
                t.differing.len(),
                t.missing.len(),
                t.extra.len(),
                t.duplicated.len()
            );
        }
        for t in s.tables.iter().filter(|t| t.differs()) {
            for (what, keys) in [
                ("differing", &t.differing),
                ("missing in the sink", &t.missing),
                ("extra in the sink", &t.extra),
                ("held twice", &t.duplicated),
            ] {
                if keys.is_empty() {
                    continue;
                }
                let more =
                    if keys.len() > LISTED { format!(" … and {} more (--json lists all)", keys.len() - LISTED) } else { String::new() };
                let listed: Vec<&str> = keys.iter().take(LISTED).map(String::as_str).collect();
                out!("  {} {what}: {}{more}", t.table, listed.join("; "));
            }
            for (key, (source, sink)) in &t.values {
                out!("  {} {key}: source {} sink {}", t.table, source.as_deref().unwrap_or("(none)"), sink.as_deref().unwrap_or("(none)"));
            }
        }
    }
    out!("");
    out!("{}", if report.matches { "the copy matches the source" } else { "the copy differs from the source" });
}
