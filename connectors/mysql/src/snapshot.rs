//! The initial snapshot of MySQL/MariaDB tables.
//!
//! # Why the hand-off to the binlog loses nothing and duplicates nothing
//!
//! The snapshot reads every table inside one InnoDB transaction started
//! `WITH CONSISTENT SNAPSHOT`, so all tables are read as of one instant. It
//! needs the binlog position of that same instant: a transaction committed
//! before it is in the snapshot, one committed after is in the binlog after
//! that position. MariaDB reports exactly that position, without any lock,
//! in the session status `binlog_snapshot_file` / `binlog_snapshot_position`
//! (the binlog and InnoDB commit together under group commit). MySQL has no
//! such status: riffle takes `FLUSH TABLES WITH READ LOCK` just long enough
//! to start the transaction and read `SHOW MASTER STATUS`, then unlocks. The
//! stream then starts at that position.
//!
//! A table is read in chunks of its primary key's order (`WHERE key > last
//! ORDER BY key LIMIT n`, composite keys written out column by column), all
//! inside the same transaction, and each chunk is reported done and
//! followed by a checkpoint at the snapshot's position, so the pipeline
//! saves progress: an interrupted snapshot resumes with the chunks left,
//! read inside a new consistent read once the binlog stream has reached its
//! position (`MySource::catch_up`). A table without a primary key, or with
//! one a literal cannot bound exactly (binary, ENUM, floating point), is
//! read whole in one streamed `SELECT`, as one chunk. Rows flow through in
//! batches either way, so memory stays flat whatever the table size.

use crate::catalog::{load_columns, quote_ident, schema_of, SelectedTable};
use crate::error::MyError;
use crate::types::{from_text, MyColumn};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use riffle_core::chunks::Resumed;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{BeforeImage, BinlogCoords, ChangeEvent, MyPosition, Offset, Op, Phase, Position, SourceInfo, SourceItem};
use riffle_core::{ChunkDone, DataType, KeyRange, SnapshotProgress, TableProgress, TableSchema, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub const BATCH: usize = 1024;

/// Rows per chunk unless `--snapshot-chunk-rows` says otherwise: rows are
/// streamed whatever the chunk's size, and a query per chunk costs a few
/// milliseconds here (8192-row chunks read 1M rows 20 % slower).
pub const CHUNK_ROWS: u64 = 100_000;

/// The binlog file's sequence number: `mysql-bin.000042` → 42.
pub fn file_seq(file: &str) -> u32 {
    file.rsplit('.').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub struct Context {
    pub name: Arc<str>,
    pub connector: &'static str,
    pub server_id: u32,
    pub stats: Arc<SourceStats>,
}

/// A consistent read and the binlog position that matches it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
}

impl Snapshot {
    pub fn offset(&self) -> Offset {
        Offset::Mysql { file: self.file.clone(), pos: self.pos, gtid: self.gtid.clone() }
    }
}

/// Starts a consistent read on `conn` and returns its binlog position (see
/// the module's documentation for why the two match).
pub async fn begin(conn: &mut Conn, mariadb: bool) -> Result<Snapshot, MyError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| MyError::query("starting the snapshot", e))?;
    let (file, pos, gtid) = if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await.map_err(|e| MyError::query("starting the snapshot", e))?;
        let rows: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| MyError::query("reading the snapshot's binlog position", e))?;
        let get = |k: &str| rows.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone()).unwrap_or_default();
        let file = get("binlog_snapshot_file");
        let pos: u64 = get("binlog_snapshot_position").parse().unwrap_or(0);
        let gtid: Option<String> = conn
            .exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
            .await
            .ok()
            .flatten()
            .flatten()
            .filter(|g| !g.is_empty());
        (file, pos, gtid)
    } else {
        // FLUSH TABLES WITH READ LOCK waits for running statements, and every
        // write on the server waits behind it: give up after 10 s (a
        // transient error, retried) rather than stall the server.
        conn.query_drop("SET SESSION lock_wait_timeout = 10").await.map_err(|e| MyError::query("limiting the snapshot's lock wait", e))?;
        conn.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|e| MyError::query("locking for the snapshot", e))?;
        let started = conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT").await;
        // MySQL 8.4 renamed SHOW MASTER STATUS.
        let status: Result<Option<mysql_async::Row>, _> = match conn.query_first("SHOW BINARY LOG STATUS").await {
            Ok(row) => Ok(row),
            Err(_) => conn.query_first("SHOW MASTER STATUS").await,
        };
        conn.query_drop("UNLOCK TABLES").await.map_err(|e| MyError::query("unlocking after the snapshot started", e))?;
        started.map_err(|e| MyError::query("starting the snapshot", e))?;
        let row = status.map_err(|e| MyError::query("reading the binlog position", e))?.ok_or(MyError::NoMasterStatus)?;
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or(0);
        let gtid: Option<String> = row.get_opt::<String, _>(4).and_then(|g| g.ok()).filter(|g| !g.is_empty());
        (file, pos, gtid)
    };
    if file.is_empty() {
        return Err(MyError::NoSnapshotPosition);
    }
    Ok(Snapshot { file, pos, gtid })
}

/// One table of a snapshot plan.
pub struct PlannedTable {
    pub selected: SelectedTable,
    pub columns: Vec<MyColumn>,
    pub schema: Arc<TableSchema>,
    /// Indexes (into `columns`) of the key chunks are ordered by, in the
    /// key's order. Empty: read whole.
    pub key: Vec<usize>,
    pub progress: TableProgress,
}

/// Can a chunk bound on this column be written as a literal the server
/// compares exactly as it orders the column? Integers, decimals, dates and
/// times, and text in a character set (not binary, not ENUM, whose order
/// is its labels' declaration order).
fn boundable(c: &MyColumn) -> bool {
    match &c.column.data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt64 | DataType::Decimal { .. } => true,
        DataType::Date | DataType::Timestamp | DataType::TimestampTz | DataType::Time => true,
        DataType::String => c.charset.is_some(),
        _ => false,
    }
}

/// The primary key's columns in the key's own order (so chunk queries walk
/// its index); empty when a column cannot bound a chunk.
async fn chunk_key(conn: &mut Conn, t: &SelectedTable, columns: &[MyColumn]) -> Result<Vec<usize>, MyError> {
    let names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (&t.id.schema, &t.id.name),
        )
        .await
        .map_err(|e| MyError::query(format!("reading the primary key of {}", t.id), e))?;
    let mut key = Vec::with_capacity(names.len());
    for n in names {
        match columns.iter().position(|c| c.column.name == n) {
            Some(i) if boundable(&columns[i]) => key.push(i),
            _ => return Ok(Vec::new()),
        }
    }
    Ok(key)
}

/// Plans a snapshot of `tables`: what `resumed` has left of each, or, for
/// a table it does not hold, the whole key range. A table `resumed` has
/// left to read and `tables` does not hold leaves the plan, with a warning.
pub async fn plan(
    conn: &mut Conn,
    tables: &[SelectedTable],
    resumed: Option<&SnapshotProgress>,
) -> Result<(SnapshotProgress, Vec<PlannedTable>), MyError> {
    let mut progress = resumed.cloned().unwrap_or_default();
    let mut planned = Vec::new();
    for t in tables {
        let name = t.id.to_string();
        if resumed.and_then(|p| p.table(&name)).is_some_and(TableProgress::is_done) {
            continue;
        }
        let columns = load_columns(conn, &t.id).await?;
        let schema = Arc::new(schema_of(&t.id, &columns));
        let key = chunk_key(conn, t, &columns).await?;
        if key.is_empty() {
            tracing::info!(
                table = %t.id,
                "no primary key a chunk can follow (none, or a binary, ENUM or floating-point column in it): read whole, in one piece \
                 (an interrupted read starts it over)"
            );
        }
        let names: Vec<String> = key.iter().map(|i| columns[*i].column.name.clone()).collect();
        let table_progress = match riffle_core::chunks::resume(resumed, &name, &names) {
            Err(saved) => return Err(MyError::ChunkKeyChanged { table: name, saved, now: names }),
            Ok(Resumed::Ranges(p)) => p,
            Ok(Resumed::Fresh { again }) => {
                let p = TableProgress { table: name, key: names, left: vec![KeyRange::all()], rows: 0, chunks: 0, again };
                progress.add(p.clone());
                p
            }
        };
        planned.push(PlannedTable { selected: t.clone(), columns, schema, key, progress: table_progress });
    }
    progress.keep_planned(|name| planned.iter().any(|t| t.progress.table == name));
    Ok((progress, planned))
}

/// A string literal the server reads back as `text`: `_utf8mb4'…'`, which
/// takes the compared column's collation; backslashes are doubled unless
/// the session's sql_mode has NO_BACKSLASH_ESCAPES.
fn literal(text: &str, backslash_escapes: bool) -> String {
    let mut out = String::with_capacity(text.len() + 12);
    out.push_str("_utf8mb4'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if backslash_escapes => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `key > values` (or `>=`-free `<=` for an upper bound), written out
/// column by column so every MySQL and MariaDB version uses the key's index.
fn bound(key: &[String], values: &[String], upper: bool, escapes: bool) -> String {
    let lits: Vec<String> = values.iter().map(|v| literal(v, escapes)).collect();
    let mut ors = Vec::with_capacity(key.len());
    for i in 0..key.len() {
        let mut ands: Vec<String> = (0..i).map(|j| format!("{} = {}", key[j], lits[j])).collect();
        let last = i + 1 == key.len();
        let op = match (upper, last) {
            (false, _) => ">",
            (true, false) => "<",
            (true, true) => "<=",
        };
        ands.push(format!("{} {op} {}", key[i], lits[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// The SELECT reading the next `limit` rows of `range`, or the whole table.
fn chunk_sql(t: &PlannedTable, cols: &[String], range: &KeyRange, limit: u64, escapes: bool) -> String {
    if t.key.is_empty() {
        return format!("SELECT {} FROM {}", cols.join(", "), t.selected.qualified());
    }
    let key: Vec<String> = t.key.iter().map(|i| quote_ident(&t.columns[*i].column.name)).collect();
    let mut filters = Vec::new();
    if let Some(after) = &range.after {
        filters.push(bound(&key, after, false, escapes));
    }
    if let Some(upto) = &range.upto {
        filters.push(bound(&key, upto, true, escapes));
    }
    let filter = if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) };
    format!("SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}", cols.join(", "), t.selected.qualified(), key.join(", "))
}

/// Reads every range `tables` have left, inside the consistent read open on
/// `conn` at `snap`, chunk by chunk; after each chunk its [`ChunkDone`] and,
/// with `checkpoints`, a checkpoint at the snapshot's position, so the
/// pipeline saves progress. Returns `Stopped` if asked to stop.
/// With `until`, no chunk starts after it (a round of a snapshot read while
/// streaming); the plan with every chunk read recorded is returned.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    conn: &mut Conn,
    ctx: &Context,
    snap: &Snapshot,
    tables: &[PlannedTable],
    chunk_rows: u64,
    checkpoints: bool,
    until: Option<tokio::time::Instant>,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, SnapshotProgress), MyError> {
    let mut progress = SnapshotProgress { tables: tables.iter().map(|t| t.progress.clone()).collect(), requested: Vec::new() };
    let over = || until.is_some_and(|d| tokio::time::Instant::now() >= d);
    let modes: Option<String> = conn.query_first("SELECT @@SESSION.sql_mode").await.map_err(|e| MyError::query("reading sql_mode", e))?;
    let escapes = !modes.unwrap_or_default().to_uppercase().contains("NO_BACKSLASH_ESCAPES");
    let file_name: Arc<str> = Arc::from(snap.file.as_str());
    let started_us = now_us();
    let mut seq = 0u64;
    for t in tables {
        if out
            .send(vec![SourceItem::SnapshotTable { table: t.selected.id.clone(), estimated_rows: t.selected.estimated_rows }])
            .await
            .is_err()
        {
            return Ok((RunEnd::Stopped, progress));
        }
        // The text protocol prints FLOAT with 6 digits; as a double (exact
        // for every float) it keeps them all.
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| match c.column.data_type {
                DataType::Float32 => format!("({} + 0e0)", quote_ident(&c.column.name)),
                _ => quote_ident(&c.column.name),
            })
            .collect();
        for range in &t.progress.left {
            let mut range = range.clone();
            loop {
                // The round is over: the ranges left go on in the next one.
                if over() {
                    return Ok((RunEnd::SnapshotComplete, progress));
                }
                let sql = chunk_sql(t, &cols, &range, chunk_rows, escapes);
                let mut rows_in_chunk = 0u64;
                let mut last_key: Vec<Vec<u8>> = vec![Vec::new(); t.key.len()];
                let mut batch = Vec::with_capacity(BATCH);
                let mut batch_bytes = 0usize;
                let copying = || format!("copying {}", t.selected.id);
                let mut result = match conn.query_iter(sql).await {
                    Ok(r) => r,
                    // ER_NO_SUCH_TABLE: dropped during its snapshot.
                    Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
                        tracing::warn!(table = %t.selected.id, "table dropped during its snapshot; its snapshot ends here");
                        let done = ChunkDone { table: t.progress.table.clone(), range: range.clone(), next_after: None, rows: 0 };
                        progress.record(&done);
                        let mut items = vec![SourceItem::ChunkDone(done)];
                        if checkpoints {
                            items.push(SourceItem::Checkpoint(snap.offset()));
                        }
                        if out.send(items).await.is_err() {
                            return Ok((RunEnd::Stopped, progress));
                        }
                        break;
                    }
                    Err(e) => return Err(MyError::query(copying(), e)),
                };
                while let Some(row) = result.next().await.map_err(|e| MyError::query(copying(), e))? {
                    let values = row.unwrap();
                    batch_bytes += values.iter().map(|v| if let mysql_async::Value::Bytes(b) = v { b.len() } else { 8 }).sum::<usize>();
                    for (slot, k) in last_key.iter_mut().zip(&t.key) {
                        if let Some(mysql_async::Value::Bytes(b)) = values.get(*k) {
                            slot.clear();
                            slot.extend_from_slice(b);
                        }
                    }
                    let mut after = Vec::with_capacity(values.len());
                    for (v, c) in values.into_iter().zip(&t.columns) {
                        after.push(from_text(c, v)?);
                    }
                    rows_in_chunk += 1;
                    seq += 1;
                    batch.push(SourceItem::Event(read_event(ctx, &t.schema, after, &file_name, snap.pos, seq, started_us)));
                    if batch.len() >= BATCH || batch_bytes >= riffle_core::source::BATCH_BYTES {
                        batch_bytes = 0;
                        ctx.stats.saw(snap.pos);
                        if *stop.borrow() || out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                            return Ok((RunEnd::Stopped, progress));
                        }
                    }
                }
                drop(result);
                let next_after = if !t.key.is_empty() && rows_in_chunk >= chunk_rows {
                    let texts: Result<Vec<String>, _> = last_key.into_iter().map(String::from_utf8).collect();
                    Some(texts.map_err(|_| MyError::KeyNotText { table: t.selected.id.clone() })?)
                } else {
                    None
                };
                let done = ChunkDone {
                    table: t.progress.table.clone(),
                    range: range.clone(),
                    next_after: next_after.clone(),
                    rows: rows_in_chunk,
                };
                progress.record(&done);
                batch.push(SourceItem::ChunkDone(done));
                if checkpoints {
                    batch.push(SourceItem::Checkpoint(snap.offset()));
                }
                if out.send(batch).await.is_err() {
                    return Ok((RunEnd::Stopped, progress));
                }
                match next_after {
                    Some(after) => range.after = Some(after),
                    None => break,
                }
            }
        }
    }
    Ok((RunEnd::SnapshotComplete, progress))
}

fn read_event(
    ctx: &Context,
    schema: &Arc<TableSchema>,
    after: Vec<Value>,
    file: &Arc<str>,
    pos: u64,
    seq: u64,
    started_us: i64,
) -> ChangeEvent {
    ChangeEvent {
        op: Op::Read,
        table: schema.clone(),
        before: None,
        after: Some(after),
        before_image: BeforeImage::None,
        source: SourceInfo {
            connector: ctx.connector,
            name: ctx.name.clone(),
            db: Arc::from(schema.id.schema.as_str()),
            tx_id: None,
            ts_ms: started_us / 1000,
            ts_us: started_us,
            lsn: None,
            binlog: Some(BinlogCoords { file: file.clone(), pos, row: 0, server_id: ctx.server_id, gtid: None }),
            snapshot: riffle_core::SnapshotMark::True,
        },
        position: Position::Mysql(MyPosition { file: file_seq(file), pos, phase: Phase::Snapshot, seq }),
        ts_ms: now_us() / 1000,
    }
}

/// Copies `tables` in one consistent read (`riffle sync`, or the initial
/// snapshot of `replicate`, with a checkpoint after each chunk and at the
/// end); returns the binlog offset that matches it.
#[allow(clippy::too_many_arguments)]
pub async fn copy_tables(
    conn: &mut Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    checkpoints: bool,
    chunk_rows: u64,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    let snap = begin(conn, mariadb).await?;
    copy_in(conn, ctx, snap, tables, checkpoints, chunk_rows, out, stop).await
}

/// [`copy_tables`] for `riffle verify`: the read's exact binlog offset is
/// sent first ([`SourceItem::SnapshotStarted`]).
pub async fn copy_tables_at(
    conn: &mut Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    chunk_rows: u64,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    let snap = begin(conn, mariadb).await?;
    if out.send(vec![SourceItem::SnapshotStarted(snap.offset())]).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    copy_in(conn, ctx, snap, tables, false, chunk_rows, out, stop).await
}

#[allow(clippy::too_many_arguments)]
async fn copy_in(
    conn: &mut Conn,
    ctx: &Context,
    snap: Snapshot,
    tables: &[SelectedTable],
    checkpoints: bool,
    chunk_rows: u64,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    let (progress, planned) = plan(conn, tables, None).await?;
    if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    if copy(conn, ctx, &snap, &planned, chunk_rows, checkpoints, None, out, stop).await?.0 != RunEnd::SnapshotComplete {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    conn.query_drop("COMMIT").await.map_err(|e| MyError::query("ending the snapshot", e))?;
    let mut last = vec![SourceItem::SnapshotDone];
    if checkpoints {
        last.push(SourceItem::Checkpoint(snap.offset()));
    }
    if out.send(last).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    Ok((RunEnd::SnapshotComplete, snap.offset()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_written_out_column_by_column() {
        let key = vec!["`a`".to_string(), "`b`".to_string()];
        let vals = vec!["1".to_string(), "it's \\ x".to_string()];
        assert_eq!(bound(&key, &vals, false, true), "((`a` > _utf8mb4'1') OR (`a` = _utf8mb4'1' AND `b` > _utf8mb4'it''s \\\\ x'))");
        assert_eq!(bound(&key, &vals, true, false), "((`a` < _utf8mb4'1') OR (`a` = _utf8mb4'1' AND `b` <= _utf8mb4'it''s \\ x'))");
    }
}
