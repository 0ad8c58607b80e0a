//! The initial snapshot: every selected table copied in one consistent read.
//!
//! # Why the hand-off to the stream loses nothing and duplicates nothing
//!
//! `CREATE_REPLICATION_SLOT … LOGICAL pgoutput EXPORT_SNAPSHOT` returns two
//! things that describe the same instant: the slot's *consistent point* (an
//! LSN) and an exported snapshot. A transaction that committed before the
//! consistent point is visible in the snapshot and will not be decoded from
//! the slot; a transaction that commits after it is invisible to the
//! snapshot and will be decoded. The snapshot session imports the exported
//! snapshot (`SET TRANSACTION SNAPSHOT` as the first statement of a
//! `REPEATABLE READ` transaction) and reads every table with
//! `COPY … TO STDOUT`, so all tables are read as of that instant, however
//! long the copy takes and whatever writers do meanwhile. The stream then
//! starts at the consistent point. Every change is thus either in the copy
//! or in the stream, never both and never neither.
//!
//! The exported snapshot is valid only while the replication connection
//! that created it stays open and idle, so that connection runs nothing
//! else until the copy is done. The copy is read in key-range chunks by
//! parallel workers that all import the snapshot, and each committed chunk
//! is saved as progress ([`crate::chunked`]). A copy interrupted by a crash
//! loses its snapshot with the connection: the next run streams from the
//! consistent point and reads the chunks left inside a new exported
//! snapshot, at the point where the stream reaches it (`PgSource::catch_up`).
//! When no chunk had been committed yet, it drops the slot and starts over.
//!
//! `riffle sync` needs no slot: one `REPEATABLE READ, READ ONLY` transaction
//! is consistent across tables on its own and exports its snapshot to the
//! workers (`pg_export_snapshot()`); positions use the WAL location at its
//! start.

use crate::catalog::SelectedTable;
use crate::chunked::{self, Chunking, CopyJob, KeyColumn, PlannedTable};
use crate::connect::ConnectParams;
use crate::error::{Col, PgError};
use crate::types::{decode_text, TypeCache};
use bytes::Bytes;
use riffle_core::chunks::Resumed;
use riffle_core::source::RunEnd;
use riffle_core::KeyRange;
use riffle_core::{BeforeImage, DataType, SnapshotOptions, SnapshotProgress, TableProgress};
use riffle_core::{ChangeEvent, Lsn, Op, PgPosition, Phase, Position, SourceInfo, SourceItem, TableSchema, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

/// Names shared by every event of a pipeline.
#[derive(Debug, Clone)]
pub struct Context {
    pub name: Arc<str>,
    pub db: Arc<str>,
    /// Marked on every batch so a long copy counts as progress.
    pub stats: Arc<riffle_core::source::SourceStats>,
    /// Tables (`schema.table`) read whole before the others
    /// ([`riffle_core::source::SourceSpec::read_first`]).
    pub read_first: Arc<[String]>,
}

pub const BATCH: usize = 1024;

/// The longest COPY row riffle keeps while waiting for its end: Postgres
/// rows are at most 1 GiB, escaped text a little longer.
const MAX_ROW: usize = (1 << 30) + (1 << 24);

pub(crate) fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Plans a snapshot of `tables`: each table's schema, chunk key and key
/// ranges: what `resumed` has left of it, or, for a table it does not
/// hold, a fresh plan (large integer-keyed tables split for `workers`).
/// Each plan is read inside one exported snapshot (a round's, while
/// streaming), so large keyless tables none of whose chunks was committed
/// are split into block ranges; a keyless table `resumed` holds block
/// ranges of, some committed, is reloaded whole ([`PlannedTable::reload`]). A
/// table `resumed` has left to read and `tables` does not hold (dropped, or
/// no longer selected) leaves the plan, with a warning.
pub async fn plan(
    client: &Client,
    tables: &[SelectedTable],
    resumed: Option<&SnapshotProgress>,
    chunk_rows: u64,
    workers: usize,
) -> Result<(SnapshotProgress, Vec<PlannedTable>), PgError> {
    let mut types = TypeCache::default();
    let mut progress = resumed.cloned().unwrap_or_default();
    let mut planned = Vec::new();
    for t in tables {
        let name = t.id.to_string();
        let saved = resumed.and_then(|p| p.table(&name));
        if saved.is_some_and(TableProgress::is_done) {
            continue;
        }
        let schema = Arc::new(crate::catalog::load_schema(client, &mut types, t.oid).await?);
        let reload = saved.filter(|s| s.reloads());
        if let Some(saved) = reload {
            tracing::warn!(
                table = %t.id,
                committed_rows = saved.rows,
                "a table without a key was read in part, by block ranges of a snapshot that is gone: \
                 reloading it (a truncate event, then the whole table)"
            );
        }
        // A reload reads the table as it was read (by blocks, or whole),
        // whatever key it may have gained since.
        let key = if reload.is_some() { Vec::new() } else { chunked::chunk_key(client, t, &schema).await? };
        // Block ranges only for a table none of whose chunks was committed
        // (or that is read again whole): all its ranges are read inside the
        // one snapshot of this plan (a round reads every positional range it
        // started, past its deadline).
        let fresh = reload.is_some() || saved.is_none_or(|s| s.chunks == 0);
        let blocks = if key.is_empty() && fresh { chunked::block_ranges(client, t, chunk_rows).await? } else { None };
        let (chunking, names) = match (key.is_empty(), &blocks) {
            (false, _) => {
                let names = key.iter().map(|k| k.name.clone()).collect();
                (Chunking::Key(key), names)
            }
            (true, Some(ranges)) => {
                tracing::info!(table = %t.id, ranges = ranges.len(), "no key to chunk by: split into block ranges (ctid)");
                (Chunking::Blocks, vec![chunked::BLOCKS.to_string()])
            }
            (true, None) => {
                tracing::info!(
                    table = %t.id,
                    "no primary key or unique NOT NULL index (without floating-point columns) to chunk by: read whole, in one piece \
                     (an interrupted read starts it over)"
                );
                (Chunking::Whole, Vec::new())
            }
        };
        if let Some(saved) = reload {
            // Its committed counts go on; its ranges start over.
            let p = TableProgress { left: blocks.unwrap_or_else(|| vec![KeyRange::all()]), ..saved.clone() };
            progress.add(p.clone());
            planned.push(PlannedTable { selected: t.clone(), schema, chunking, progress: p, reload: true });
            continue;
        }
        let table_progress = match riffle_core::chunks::resume(resumed, &name, &names) {
            Err(saved) => return Err(PgError::ChunkKeyChanged { table: name, saved, now: names }),
            Ok(Resumed::Ranges(p)) => p,
            Ok(Resumed::Fresh { again }) => {
                let left = match (&chunking, blocks) {
                    (Chunking::Key(key), _) => chunked::first_ranges(client, t, key, chunk_rows, workers * 4).await?,
                    (_, Some(ranges)) => ranges,
                    _ => vec![KeyRange::all()],
                };
                let positional = matches!(chunking, Chunking::Blocks);
                let p = TableProgress { table: name, key: names, left, rows: 0, chunks: 0, again, positional };
                progress.add(p.clone());
                p
            }
        };
        planned.push(PlannedTable { selected: t.clone(), schema, chunking, progress: table_progress, reload: false });
    }
    progress.keep_planned(|name| planned.iter().any(|t| t.progress.table == name));
    Ok((progress, planned))
}

/// `riffle sync`: every table in one consistent read, no slot. One
/// `REPEATABLE READ, READ ONLY` transaction exports its snapshot for the
/// workers and stays open until they are done; positions use the WAL
/// location at its start.
pub async fn sync_copy(
    client: &Client,
    params: &ConnectParams,
    ctx: &Context,
    tables: &[SelectedTable],
    options: SnapshotOptions,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<RunEnd, PgError> {
    let begin = |e: tokio_postgres::Error| PgError::session("starting the snapshot transaction")(e);
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(begin)?;
    let at = crate::catalog::current_lsn(client).await?;
    let row = client.query_one("SELECT pg_export_snapshot()", &[]).await.map_err(PgError::session("exporting the snapshot"))?;
    let snapshot: String = row.col(0)?;
    let workers = chunked::workers(client, options.workers).await?;
    let (progress, planned) = plan(client, tables, None, options.rows_per_chunk(crate::chunked::CHUNK_ROWS), workers).await?;
    if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
        return Ok(RunEnd::Stopped);
    }
    let job = CopyJob {
        params,
        ctx,
        snapshot: &snapshot,
        at,
        workers,
        chunk_rows: options.rows_per_chunk(crate::chunked::CHUNK_ROWS),
        checkpoints: false,
        until: None,
    };
    let (end, _) = chunked::copy(job, planned, out, stop).await?;
    client.batch_execute("COMMIT").await.map_err(PgError::session("ending the snapshot transaction"))?;
    if end != RunEnd::SnapshotComplete || out.send(vec![SourceItem::SnapshotDone]).await.is_err() {
        return Ok(RunEnd::Stopped);
    }
    Ok(RunEnd::SnapshotComplete)
}

/// Splits `COPY … TO STDOUT` text output into rows and rows into values.
pub(crate) struct CopyReader<'a> {
    schema: Arc<TableSchema>,
    ctx: &'a Context,
    at: Lsn,
    started_us: i64,
    partial: Vec<u8>,
    /// The last row read, as COPY sent it: where the next chunk starts
    /// (a slice of the message that held it: no copy per row).
    last_line: Bytes,
    /// The longest row kept while its end has not come.
    max_row: usize,
    /// When riffle read the current rows (the events' `ts_ms`).
    now_ms: i64,
    /// Messages fed: the clock is read once every [`CLOCK_EVERY`].
    fed: u32,
}

/// Postgres sends each row in a message of its own: reading the clock for
/// each was 2 % of a snapshot's CPU. A row's `ts_ms` is at most this many
/// rows stale.
const CLOCK_EVERY: u32 = 256;

impl<'a> CopyReader<'a> {
    pub(crate) fn new(schema: Arc<TableSchema>, ctx: &'a Context, at: Lsn, started_us: i64) -> Self {
        CopyReader {
            schema,
            ctx,
            at,
            started_us,
            partial: Vec::new(),
            last_line: Bytes::new(),
            max_row: MAX_ROW,
            now_ms: now_us() / 1000,
            fed: 0,
        }
    }

    pub(crate) fn feed(&mut self, chunk: Bytes, seq: &mut u64, batch: &mut Vec<SourceItem>) -> Result<(), PgError> {
        if self.fed.is_multiple_of(CLOCK_EVERY) {
            self.now_ms = now_us() / 1000;
        }
        self.fed = self.fed.wrapping_add(1);
        // Postgres sends one row per CopyData message; still, rows are
        // split on newlines so any chunking works, and a row split across
        // messages is searched for its end in the new bytes only.
        let mut start = 0;
        if !self.partial.is_empty() {
            let Some(nl) = chunk.iter().position(|b| *b == b'\n') else { return self.keep(&chunk) };
            self.keep(&chunk[..nl])?;
            let line = Bytes::from(std::mem::take(&mut self.partial));
            self.row(line, seq, batch)?;
            start = nl + 1;
        }
        while let Some(nl) = chunk[start..].iter().position(|b| *b == b'\n') {
            self.row(chunk.slice(start..start + nl), seq, batch)?;
            start += nl + 1;
        }
        self.keep(&chunk[start..])
    }

    fn row(&mut self, line: Bytes, seq: &mut u64, batch: &mut Vec<SourceItem>) -> Result<(), PgError> {
        let row = parse_copy_row(&self.schema, &line)?;
        self.last_line = line;
        *seq += 1;
        batch.push(SourceItem::Event(self.event(row, *seq)));
        Ok(())
    }

    /// Keeps the start of a row whose end has not come yet, up to the
    /// largest row Postgres can send: a server that never ends one cannot
    /// make riffle hold unbounded memory.
    fn keep(&mut self, data: &[u8]) -> Result<(), PgError> {
        if self.partial.len() + data.len() > self.max_row {
            return Err(PgError::Malformed {
                what: format!(
                    "COPY of {} sent a row of more than {} bytes without its end; a Postgres row is at most 1 GiB",
                    self.schema.id, self.max_row
                ),
            });
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// The key of the last row read, in the server's text form.
    pub(crate) fn last_key(&self, key: &[KeyColumn]) -> Result<Vec<String>, PgError> {
        let fields: Vec<&[u8]> = self.last_line.split(|b| *b == b'\t').collect();
        key.iter()
            .map(|k| {
                let field = fields.get(k.index).ok_or_else(|| PgError::CopyColumns { table: self.schema.id.clone() })?;
                let text = if field.contains(&b'\\') { unescape(field) } else { field.to_vec() };
                String::from_utf8(text).map_err(|_| PgError::NotUtf8 { what: "COPY returned text" })
            })
            .collect()
    }

    pub(crate) fn finish(&self) -> Result<(), PgError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(PgError::CopyTruncated { table: self.schema.id.clone() })
        }
    }

    /// A truncate event of the table, at the rows' position (the
    /// forwarder numbers it among them).
    pub(crate) fn truncate(&self) -> SourceItem {
        SourceItem::Event(ChangeEvent { op: Op::Truncate, after: None, ..self.event(Vec::new(), 0) })
    }

    fn event(&self, row: Vec<Value>, seq: u64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Read,
            table: self.schema.clone(),
            before: None,
            after: Some(row),
            before_image: BeforeImage::None,
            source: SourceInfo {
                connector: "postgresql",
                name: self.ctx.name.clone(),
                db: self.ctx.db.clone(),
                tx_id: None,
                ts_ms: self.started_us / 1000,
                ts_us: self.started_us,
                lsn: Some(self.at),
                binlog: None,
                snapshot: riffle_core::SnapshotMark::True,
            },
            position: Position::Postgres(PgPosition { lsn: self.at, phase: Phase::Snapshot, seq }),
            ts_ms: self.now_ms,
        }
    }
}

/// Parses one line of COPY text format: tab-separated, `\N` for NULL,
/// backslash escapes.
fn parse_copy_row(schema: &TableSchema, line: &[u8]) -> Result<Vec<Value>, PgError> {
    let mut values = Vec::with_capacity(schema.columns.len());
    let mut fields = line.split(|b| *b == b'\t');
    for column in &schema.columns {
        let field = fields.next().ok_or_else(|| PgError::CopyColumns { table: schema.id.clone() })?;
        let value = copy_field(&column.data_type, field).map_err(|e| PgError::CopyValue {
            table: schema.id.clone(),
            column: column.name.clone(),
            source: Box::new(e),
        })?;
        values.push(value);
    }
    if fields.next().is_some() {
        return Err(PgError::CopyColumns { table: schema.id.clone() });
    }
    Ok(values)
}

fn copy_field(ty: &DataType, field: &[u8]) -> Result<Value, PgError> {
    if field == b"\\N" {
        return Ok(Value::Null);
    }
    let unescaped;
    let bytes = if field.contains(&b'\\') {
        unescaped = unescape(field);
        &unescaped[..]
    } else {
        field
    };
    let text = std::str::from_utf8(bytes).map_err(|_| PgError::NotUtf8 { what: "COPY returned text" })?;
    decode_text(ty, text)
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 1 < field.len() {
            let c = field[i + 1];
            i += 2;
            out.push(match c {
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 11,
                b'0'..=b'7' => {
                    let mut v = u32::from(c - b'0');
                    let mut n = 1;
                    while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        v = v * 8 + u32::from(field[i] - b'0');
                        i += 1;
                        n += 1;
                    }
                    v as u8
                }
                other => other,
            });
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::{Column, TableId};

    #[test]
    fn copy_rows_unescape_and_keep_nulls() {
        let col =
            |name: &str, data_type| Column { name: name.into(), source_type: String::new(), data_type, nullable: true, labels: Vec::new() };
        let schema = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("a", DataType::Int32), col("b", DataType::String), col("c", DataType::String)],
            key: vec![0],
            full_before_image: false,
        };
        let row = parse_copy_row(&schema, b"7\tline\\none\\ttab\\\\\t\\N").unwrap();
        assert_eq!(row, vec![Value::Int(7), Value::Text("line\none\ttab\\".into()), Value::Null]);
        // Too few or too many fields, and a value that does not decode,
        // are errors that name the table (and the column), not the value.
        let err = |line: &[u8]| parse_copy_row(&schema, line).unwrap_err().to_string();
        let columns = "COPY of public.t returned a row with another number of columns than the table has";
        assert_eq!(err(b"7\tx"), columns);
        assert_eq!(err(b"7\tx\ty\tz"), columns);
        assert_eq!(err(b"7\tx\xff\t\\N"), "cannot read column b of public.t from its COPY: COPY returned text that is not UTF-8");
        assert!(err(b"seven\tx\t\\N").starts_with("cannot read column a of public.t from its COPY: "));
    }

    #[test]
    fn rows_split_across_messages_are_joined_and_bounded() {
        let col = |name: &str| Column {
            name: name.into(),
            source_type: String::new(),
            data_type: DataType::Int32,
            nullable: true,
            labels: Vec::new(),
        };
        let schema = Arc::new(TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("a"), col("b")],
            key: vec![0],
            full_before_image: false,
        });
        let ctx = Context { name: Arc::from("p"), db: Arc::from("d"), stats: Arc::default(), read_first: Arc::default() };
        let mut r = CopyReader::new(schema, &ctx, Lsn(1), 0);
        let (mut seq, mut batch) = (0, Vec::new());
        for part in ["1\t", "2\n3", "\t4\n5\t6", "\n"] {
            r.feed(Bytes::from(part), &mut seq, &mut batch).unwrap();
        }
        r.finish().unwrap();
        let rows: Vec<_> = batch
            .iter()
            .map(|i| match i {
                SourceItem::Event(e) => e.after.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(rows, vec![vec![Value::Int(1), Value::Int(2)], vec![Value::Int(3), Value::Int(4)], vec![Value::Int(5), Value::Int(6)]]);
        // A row that never ends is refused once it passes the bound.
        r.max_row = 64;
        r.feed(Bytes::from("7\t"), &mut seq, &mut batch).unwrap();
        let endless = (0..100).try_for_each(|_| r.feed(Bytes::from(vec![b'8'; 16]), &mut seq, &mut batch));
        assert!(matches!(endless, Err(PgError::Malformed { .. })), "{endless:?}");
    }
}
