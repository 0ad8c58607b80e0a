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
//! A table with a single integer primary key is read in key order, [`CHUNK`]
//! rows per query (`WHERE key > last ORDER BY key LIMIT n`), all inside the
//! same transaction; other tables in one streamed `SELECT`. Either way rows
//! flow through in batches, so memory stays flat whatever the table size.

use crate::catalog::{load_columns, quote_ident, schema_of, SelectedTable};
use crate::error::MyError;
use crate::types::from_text;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{BeforeImage, BinlogCoords, ChangeEvent, MyPosition, Offset, Op, Phase, Position, SourceInfo, SourceItem};
use riffle_core::{DataType, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub const BATCH: usize = 1024;

/// Rows per query when a table is read in primary-key chunks.
pub const CHUNK: usize = 100_000;

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

/// Copies `tables` in one consistent read; returns the binlog offset that
/// matches it (a checkpoint there follows the rows when `replicate`).
pub async fn copy_tables(
    conn: &mut Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    emit_checkpoint: bool,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
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
    let file_name: Arc<str> = Arc::from(file.as_str());
    let started_us = now_us();
    let mut seq = 0u64;
    for table in tables {
        let columns = load_columns(conn, &table.id).await?;
        let schema = Arc::new(schema_of(&table.id, &columns));
        if out.send(vec![SourceItem::SnapshotTable { table: table.id.clone(), estimated_rows: table.estimated_rows }]).await.is_err() {
            return Ok((RunEnd::Stopped, Offset::Mysql { file, pos, gtid }));
        }
        // The text protocol prints FLOAT with 6 digits; as a double (exact
        // for every float) it keeps them all.
        let cols: Vec<String> = columns
            .iter()
            .map(|c| match c.column.data_type {
                riffle_core::DataType::Float32 => format!("({} + 0e0)", quote_ident(&c.column.name)),
                _ => quote_ident(&c.column.name),
            })
            .collect();
        // A single integer primary key: read in key order, CHUNK rows per
        // query, so the server never holds a huge result; all chunks read the
        // same consistent snapshot.
        let int_key = match schema.key.as_slice() {
            [k] if matches!(columns[*k].column.data_type, DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt64) => {
                Some(*k)
            }
            _ => None,
        };
        let mut last_key: Option<String> = None;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let sql = match (int_key, &last_key) {
                (Some(k), None) => {
                    let kc = quote_ident(&columns[k].column.name);
                    format!("SELECT {} FROM {} ORDER BY {kc} LIMIT {CHUNK}", cols.join(", "), table.qualified())
                }
                (Some(k), Some(last)) => {
                    let kc = quote_ident(&columns[k].column.name);
                    format!("SELECT {} FROM {} WHERE {kc} > {last} ORDER BY {kc} LIMIT {CHUNK}", cols.join(", "), table.qualified())
                }
                (None, _) => format!("SELECT {} FROM {}", cols.join(", "), table.qualified()),
            };
            let mut rows_in_chunk = 0usize;
            let mut result = conn.query_iter(sql).await.map_err(|e| MyError::query(format!("copying {}", table.id), e))?;
            while let Some(row) = result.next().await.map_err(|e| MyError::query(format!("copying {}", table.id), e))? {
                let values = row.unwrap();
                let mut after = Vec::with_capacity(values.len());
                for (v, c) in values.into_iter().zip(&columns) {
                    after.push(from_text(c, v)?);
                }
                if let Some(k) = int_key {
                    last_key = match &after[k] {
                        Value::Int(i) => Some(i.to_string()),
                        Value::UInt(u) => Some(u.to_string()),
                        _ => None,
                    };
                }
                rows_in_chunk += 1;
                seq += 1;
                batch.push(SourceItem::Event(ChangeEvent {
                    op: Op::Read,
                    table: schema.clone(),
                    before: None,
                    after: Some(after),
                    before_image: BeforeImage::None,
                    source: SourceInfo {
                        connector: ctx.connector,
                        name: ctx.name.clone(),
                        db: Arc::from(table.id.schema.as_str()),
                        tx_id: None,
                        ts_ms: started_us / 1000,
                        ts_us: started_us,
                        lsn: None,
                        binlog: Some(BinlogCoords { file: file_name.clone(), pos, row: 0, server_id: ctx.server_id, gtid: None }),
                    },
                    position: Position::Mysql(MyPosition { file: file_seq(&file), pos, phase: Phase::Snapshot, seq }),
                    ts_ms: now_us() / 1000,
                }));
                if batch.len() >= BATCH {
                    ctx.stats.saw(pos);
                    if *stop.borrow() || out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                        drop(result);
                        return Ok((RunEnd::Stopped, Offset::Mysql { file, pos, gtid }));
                    }
                }
            }
            drop(result);
            if int_key.is_none() || rows_in_chunk < CHUNK || last_key.is_none() {
                break;
            }
        }
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return Ok((RunEnd::Stopped, Offset::Mysql { file, pos, gtid }));
        }
        tracing::info!(table = %table.id, rows = seq, "snapshot of table done");
    }
    conn.query_drop("COMMIT").await.map_err(|e| MyError::query("ending the snapshot", e))?;
    let offset = Offset::Mysql { file, pos, gtid };
    let mut last = vec![SourceItem::SnapshotDone];
    if emit_checkpoint {
        last.push(SourceItem::Checkpoint(offset.clone()));
    }
    if out.send(last).await.is_err() {
        return Ok((RunEnd::Stopped, offset));
    }
    Ok((RunEnd::SnapshotComplete, offset))
}
