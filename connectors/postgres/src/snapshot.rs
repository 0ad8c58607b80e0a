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
//! else until the copy is done. A copy interrupted by a crash cannot be
//! resumed (its snapshot is gone with the connection): the next run drops
//! the slot and starts again, and the file sink never showed the partial
//! copy because snapshot files are committed only when the copy completes.
//!
//! `riffle sync` needs no slot: one `REPEATABLE READ, READ ONLY` transaction
//! is consistent across tables on its own, and positions use the WAL
//! location at its start.

use crate::catalog::SelectedTable;
use crate::error::PgError;
use crate::types::{decode_text, TypeCache};
use crate::{quote_ident, quote_literal};
use bytes::Bytes;
use futures_util::StreamExt;
use riffle_core::source::RunEnd;
use riffle_core::{BeforeImage, DataType};
use riffle_core::{ChangeEvent, Lsn, Offset, Op, PgPosition, Phase, Position, SourceInfo, SourceItem, TableSchema, Value};
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
}

pub const BATCH: usize = 1024;

pub(crate) fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn copy_err(table: &SelectedTable, e: tokio_postgres::Error) -> PgError {
    PgError::query(format!("copying {}", table.id), e, || format!("grant it: GRANT SELECT ON {} TO CURRENT_USER's role", table.qualified()))
}

/// Copies `tables` in one transaction. With `exported = Some((snapshot,
/// consistent_point))` the transaction imports the slot's snapshot and a
/// checkpoint at the consistent point follows the copy.
pub async fn copy_tables(
    client: &Client,
    ctx: &Context,
    tables: &[SelectedTable],
    exported: Option<(&str, Lsn)>,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<RunEnd, PgError> {
    let begin = |e: tokio_postgres::Error| PgError::session("starting the snapshot transaction")(e);
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(begin)?;
    let at = match exported {
        Some((name, lsn)) => {
            client.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", quote_literal(name))).await.map_err(begin)?;
            lsn
        }
        None => crate::catalog::current_lsn(client).await?,
    };
    let started_us = now_us();
    let mut types = TypeCache::default();
    let mut seq = 0u64;
    for table in tables {
        let schema = Arc::new(crate::catalog::load_schema(client, &mut types, table.oid).await?);
        let sent = out.send(vec![SourceItem::SnapshotTable { table: table.id.clone(), estimated_rows: table.estimated_rows }]).await;
        if sent.is_err() {
            return Ok(RunEnd::Stopped);
        }
        tracing::info!(table = %table.id, estimated_rows = table.estimated_rows, "snapshot of table started");
        let cols: Vec<String> = schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
        // A partitioned table is copied through a query over all its partitions.
        let sql = if table.partitioned {
            format!("COPY (SELECT {} FROM {}) TO STDOUT", cols.join(", "), table.qualified())
        } else {
            format!("COPY {} ({}) TO STDOUT", table.qualified(), cols.join(", "))
        };
        let stream = client.copy_out(&sql).await.map_err(|e| copy_err(table, e))?;
        futures_util::pin_mut!(stream);
        let mut reader = CopyReader::new(schema.clone(), ctx, at, started_us);
        let mut batch = Vec::with_capacity(BATCH);
        let mut rows = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| copy_err(table, e))?;
            reader.feed(chunk, &mut seq, &mut batch)?;
            if batch.len() >= BATCH {
                rows += batch.len() as u64;
                ctx.stats.saw(at.0);
                if *stop.borrow() || out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                    return Ok(RunEnd::Stopped);
                }
            }
        }
        reader.finish()?;
        rows += batch.len() as u64;
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return Ok(RunEnd::Stopped);
        }
        tracing::info!(table = %table.id, rows, "snapshot of table done");
    }
    client.batch_execute("COMMIT").await.map_err(PgError::session("ending the snapshot transaction"))?;
    let mut last = vec![SourceItem::SnapshotDone];
    if exported.is_some() {
        last.push(SourceItem::Checkpoint(Offset::Postgres { lsn: at }));
    }
    if out.send(last).await.is_err() {
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
    /// When riffle read the current chunk (the events' `ts_ms`).
    now_ms: i64,
}

impl<'a> CopyReader<'a> {
    pub(crate) fn new(schema: Arc<TableSchema>, ctx: &'a Context, at: Lsn, started_us: i64) -> Self {
        CopyReader { schema, ctx, at, started_us, partial: Vec::new(), now_ms: now_us() / 1000 }
    }

    pub(crate) fn feed(&mut self, chunk: Bytes, seq: &mut u64, batch: &mut Vec<SourceItem>) -> Result<(), PgError> {
        // One clock read per chunk, not per row.
        self.now_ms = now_us() / 1000;
        // Postgres sends one row per CopyData message; still, rows are
        // split on newlines so any chunking works.
        let mut data: &[u8] = &chunk;
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(data);
            let joined = std::mem::take(&mut self.partial);
            return self.feed(Bytes::from(joined), seq, batch);
        }
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let row = parse_copy_row(&self.schema, &data[..nl])?;
            *seq += 1;
            batch.push(SourceItem::Event(self.event(row, *seq)));
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn finish(&self) -> Result<(), PgError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(PgError::CopyTruncated { table: self.schema.id.clone() })
        }
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
        values.push(copy_field(&column.data_type, field)?);
    }
    Ok(values)
}

fn copy_field(ty: &DataType, field: &[u8]) -> Result<Value, PgError> {
    if field == b"\\N" {
        return Ok(Value::Null);
    }
    let text = if field.contains(&b'\\') { unescape(field) } else { field.to_vec() };
    let text = String::from_utf8(text).map_err(|_| PgError::NotUtf8 { what: "COPY returned text" })?;
    decode_text(ty, &text)
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
        let col = |name: &str, data_type| Column { name: name.into(), source_type: String::new(), data_type, nullable: true };
        let schema = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("a", DataType::Int32), col("b", DataType::String), col("c", DataType::String)],
            key: vec![0],
            full_before_image: false,
        };
        let row = parse_copy_row(&schema, b"7\tline\\none\\ttab\\\\\t\\N").unwrap();
        assert_eq!(row, vec![Value::Int(7), Value::Text("line\none\ttab\\".into()), Value::Null]);
    }
}
