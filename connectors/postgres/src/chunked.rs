//! Chunked, parallel snapshot reads under one exported snapshot.
//!
//! # The algorithm, and why the copy is exact
//!
//! Every read of a snapshot happens inside one *exported* snapshot: the
//! slot's (`CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`, valid while that
//! replication connection stays idle), or, for `riffle sync`, one taken with
//! `pg_export_snapshot()` by a transaction kept open until the copy ends.
//! Each worker connection starts a `REPEATABLE READ` transaction and imports
//! it with `SET TRANSACTION SNAPSHOT`, as `pg_dump -j` does, so all workers
//! see the database as of the same instant, the snapshot's consistent point
//! `at`, however long they take and whatever writers do meanwhile.
//!
//! A table is read in chunks of its key order: `WHERE key > last ORDER BY
//! key LIMIT n`, the key being the primary key or, without one, a unique
//! index over NOT NULL columns. A large table with a one-column integer key
//! is first split into key ranges between its minimum and maximum so that
//! several workers read it at once; other tables are read by one worker each,
//! several tables at a time. Chunks are disjoint and together cover the
//! table, so every row is read exactly once.
//!
//! Workers stream their rows to one forwarder, which hands on one chunk at a
//! time (the other workers read ahead meanwhile), numbers the rows (their
//! positions are `at`, then read order) and follows each chunk with its
//! `ChunkDone` and, for a replicate run, a checkpoint at `at` (the shared
//! engine of `riffle_core::parallel`). The pipeline records the chunk in the plan it saves
//! with the offset, so after a crash the chunks committed are never read
//! again and the others are: by a later run, inside a new exported snapshot
//! at a later point, once the stream has caught up to that point (see
//! `PgSource::catch_up`), so each row read is as of the place it takes in the
//! output and no change is lost or shown out of order.
//!
//! A table without such a key cannot be walked in key order; it is split
//! into ranges of its heap blocks instead, all read inside one exported
//! snapshot (the first snapshot of a pipeline, `riffle sync`, or one round
//! of a snapshot read while streaming, which reads every block range it
//! started whatever its deadline) (`ctid > '(a,65535)' AND
//! ctid <= '(b,65535)'`, a TID range scan), each read whole as one chunk:
//! within one snapshot every row version has one place, so the ranges are
//! disjoint and cover the table. A row's block is not a stable name across
//! snapshots (an update, `VACUUM FULL` or `CLUSTER` moves it), so block
//! ranges are never resumed in another snapshot: when a run ends after some
//! of them were committed, the next run *reloads* the table (a truncate
//! event, then the whole table read at the new point, by new block ranges
//! when it is large, as AWS DMS reloads a table whose full load was
//! interrupted). A small or never-analyzed keyless table, or a partitioned
//! one, is read whole with one `COPY`, committed all at once or not at all.

use crate::catalog::SelectedTable;
use crate::connect::ConnectParams;
use crate::error::{Col, PgError};
use crate::snapshot::{Context, CopyReader, BATCH};
use crate::{quote_ident, quote_literal};
use futures_util::StreamExt;
use riffle_core::parallel::{Forwarding, Lane, Piece, Planned};
use riffle_core::source::RunEnd;
use riffle_core::{KeyRange, Lsn, Offset, PgPosition, Phase, Position, SnapshotProgress, SourceItem, TableProgress, TableSchema};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Rows per chunk unless `--snapshot-chunk-rows` says otherwise: each
/// worker holds about one chunk in flight.
pub const CHUNK_ROWS: u64 = 8192;

/// A chunk whose COPY output passes this many bytes halves the next
/// chunk's rows: wide rows keep a chunk's memory bounded, whatever
/// `chunk_rows` says.
const CHUNK_BYTES: usize = 32 << 20;

/// One key column: its name, place in the table's columns and type as SQL
/// spells it (for the literals of chunk bounds).
#[derive(Debug, Clone)]
pub struct KeyColumn {
    pub name: String,
    pub index: usize,
    pub type_sql: String,
}

/// The plan's key name for a table split into ranges of heap blocks: no
/// column can be named `ctid` (a system column), so it never names a key.
pub const BLOCKS: &str = "ctid";

/// Marks the block-range tables of a saved plan positional: plans saved
/// before the plan had that mark hold them by their key name only.
pub fn mark_positional(progress: &mut SnapshotProgress) {
    for t in progress.tables.iter_mut().filter(|t| t.key == [BLOCKS]) {
        t.positional = true;
    }
}

/// How a table's chunks are read.
#[derive(Debug, Clone)]
pub enum Chunking {
    /// In key order, `limit` rows at a time.
    Key(Vec<KeyColumn>),
    /// By ranges of heap blocks (bounds are block numbers), each range one
    /// chunk: only inside the one exported snapshot the plan was made in.
    Blocks,
    /// One `COPY` of the whole table, one chunk.
    Whole,
}

/// One table of a snapshot plan.
#[derive(Debug, Clone)]
pub struct PlannedTable {
    pub selected: SelectedTable,
    pub schema: Arc<TableSchema>,
    pub chunking: Chunking,
    pub progress: TableProgress,
    /// Read again whole, its output starting over with a truncate event:
    /// some of its block ranges were committed under a snapshot that is gone.
    pub reload: bool,
}

/// The key chunks are ordered by: the primary key, else the unique index
/// over NOT NULL columns with the fewest columns. Empty: none.
pub async fn chunk_key(client: &Client, table: &SelectedTable, schema: &TableSchema) -> Result<Vec<KeyColumn>, PgError> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY k.n), array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.n) \
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND k.n <= i.indnkeyatts \
             GROUP BY i.indexrelid, i.indisprimary \
             HAVING bool_and(a.attnotnull) AND NOT bool_or(a.atttypid IN ('float4'::regtype, 'float8'::regtype)) \
             ORDER BY i.indisprimary DESC, count(*), i.indexrelid LIMIT 1",
            &[&table.oid],
        )
        .await
        .map_err(|e| PgError::query(format!("reading the keys of {}", table.id), e, || "grant riffle's user SELECT on the table".into()))?;
    let Some(row) = rows.first() else { return Ok(Vec::new()) };
    let names: Vec<String> = row.col(0)?;
    let types: Vec<String> = row.col(1)?;
    let mut key = Vec::with_capacity(names.len());
    for (name, type_sql) in names.into_iter().zip(types) {
        // A key column riffle does not copy (generated) cannot bound a chunk.
        let Some(index) = schema.columns.iter().position(|c| c.name == name) else { return Ok(Vec::new()) };
        key.push(KeyColumn { name, index, type_sql });
    }
    Ok(key)
}

/// The first plan of a table: one range, or, for a large table with a
/// one-column integer key, `parts` ranges between its minimum and maximum
/// key, so several workers can read it.
pub async fn first_ranges(
    client: &Client,
    t: &SelectedTable,
    key: &[KeyColumn],
    chunk_rows: u64,
    parts: usize,
) -> Result<Vec<KeyRange>, PgError> {
    let integer = key.len() == 1 && matches!(key[0].type_sql.as_str(), "smallint" | "integer" | "bigint");
    let wanted = (t.estimated_rows / chunk_rows.max(1)).min(parts as u64);
    if !integer || wanted < 2 {
        return Ok(vec![KeyRange::all()]);
    }
    let k = quote_ident(&key[0].name);
    let row = client.query_one(&format!("SELECT min({k})::int8, max({k})::int8 FROM {}", from(t)), &[]).await.map_err(|e| {
        PgError::query(format!("reading the key range of {}", t.id), e, || "grant riffle's user SELECT on the table".into())
    })?;
    let (Some(lo), Some(hi)) = (row.col::<Option<i64>>(0)?, row.col::<Option<i64>>(1)?) else { return Ok(vec![KeyRange::all()]) };
    Ok(riffle_core::parallel::integer_ranges(lo, hi, wanted))
}

/// The most block ranges a keyless table is split into: the plan saved at
/// each commit holds them all.
const MAX_BLOCK_RANGES: u64 = 4096;

/// The block ranges of a keyless table read inside one exported snapshot,
/// about `chunk_rows` rows each (by the statistics' rows per block), or
/// `None` when it is small enough to read whole (or is partitioned, or has
/// no statistics yet).
pub async fn block_ranges(client: &Client, t: &SelectedTable, chunk_rows: u64) -> Result<Option<Vec<KeyRange>>, PgError> {
    let wanted = (t.estimated_rows / chunk_rows.max(1)).min(MAX_BLOCK_RANGES);
    if t.partitioned || wanted < 2 {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8 FROM pg_class c WHERE c.oid = $1", &[&t.oid])
        .await
        .map_err(|e| PgError::query(format!("reading the size of {}", t.id), e, || "grant riffle's user SELECT on the table".into()))?;
    let blocks: i64 = row.col(0)?;
    let step = (blocks as u64).div_ceil(wanted);
    if step == 0 || blocks as u64 <= step {
        return Ok(None);
    }
    let bound = |block: u64| Some(vec![(block - 1).to_string()]);
    let mut ranges: Vec<KeyRange> = (0..blocks as u64)
        .step_by(step as usize)
        .map(|first| KeyRange { after: (first > 0).then(|| bound(first)).flatten(), upto: bound(first + step) })
        .collect();
    // Rows past the statistics' last block are in the last range.
    if let Some(last) = ranges.last_mut() {
        last.upto = None;
    }
    Ok(Some(ranges))
}

/// `(a, b) > ('1'::int, 'x'::text)`: a bound of a key range.
fn bound(key: &[KeyColumn], values: &[String], op: &str) -> String {
    let cols: Vec<String> = key.iter().map(|k| quote_ident(&k.name)).collect();
    let lits: Vec<String> = key.iter().zip(values).map(|(k, v)| format!("{}::{}", quote_literal(v), k.type_sql)).collect();
    format!("({}) {op} ({})", cols.join(", "), lits.join(", "))
}

/// `ctid <= '(9,65535)'::tid`: a bound of a block range (blocks after
/// `after`, up to `upto` included; 65535 is past any tuple of a block).
fn block_bound(block: &[String], op: &str) -> String {
    let block = block.first().map_or("", String::as_str);
    format!("ctid {op} {}::tid", quote_literal(&format!("({block},65535)")))
}

/// The COPY reading the next `limit` rows of `range` (a block range whole;
/// without a key, the whole table).
fn chunk_sql(t: &PlannedTable, range: &KeyRange, limit: u64) -> String {
    let cols: Vec<String> = t.schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let mut filters = Vec::new();
    let key = match &t.chunking {
        Chunking::Whole if t.selected.partitioned => {
            return format!("COPY (SELECT {} FROM {}) TO STDOUT", cols.join(", "), t.selected.qualified());
        }
        Chunking::Whole => return format!("COPY {} ({}) TO STDOUT", t.selected.qualified(), cols.join(", ")),
        Chunking::Blocks => {
            filters.extend(range.after.as_deref().map(|b| block_bound(b, ">")));
            filters.extend(range.upto.as_deref().map(|b| block_bound(b, "<=")));
            None
        }
        Chunking::Key(key) => {
            filters.extend(range.after.as_deref().map(|a| bound(key, a, ">")));
            filters.extend(range.upto.as_deref().map(|u| bound(key, u, "<=")));
            Some(key)
        }
    };
    let filter = if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) };
    let Some(key) = key else { return format!("COPY (SELECT {} FROM {}{filter}) TO STDOUT", cols.join(", "), from(&t.selected)) };
    let order: Vec<String> = key.iter().map(|k| quote_ident(&k.name)).collect();
    format!("COPY (SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}) TO STDOUT", cols.join(", "), from(&t.selected), order.join(", "))
}

/// What a query reads: a partitioned table with its partitions, any other
/// table without the children it may have by inheritance (they are tables
/// of their own, as `COPY t` reads them).
fn from(t: &SelectedTable) -> String {
    if t.partitioned {
        t.qualified()
    } else {
        format!("ONLY {}", t.qualified())
    }
}

/// Where the copy reads from and what it reports.
pub struct CopyJob<'a> {
    pub params: &'a ConnectParams,
    pub ctx: &'a Context,
    /// The exported snapshot every worker imports.
    pub snapshot: &'a str,
    /// The snapshot's consistent point: the rows' position.
    pub at: Lsn,
    pub workers: usize,
    pub chunk_rows: u64,
    /// Send a checkpoint at `at` after each chunk (replicate), or none (sync).
    pub checkpoints: bool,
    /// Start no chunk after this: a round of an online read (see
    /// `PgSource::catch_up`); the ranges left are returned.
    pub until: Option<tokio::time::Instant>,
}

/// Reads every range of `tables` left in their progress with `job.workers`
/// connections importing the snapshot, and hands the rows to the pipeline
/// one chunk after another ([`riffle_core::parallel`]). Returns `Stopped`
/// if asked to stop or the pipeline went away.
pub async fn copy(
    job: CopyJob<'_>,
    tables: Vec<PlannedTable>,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, SnapshotProgress), PgError> {
    let planned: Vec<Planned> = tables
        .iter()
        .map(|t| Planned {
            id: t.selected.id.clone(),
            estimated_rows: t.selected.estimated_rows,
            progress: t.progress.clone(),
            first: job.ctx.read_first.contains(&t.selected.id.to_string()),
        })
        .collect();
    let held = hold_block_tables(job.params, &tables).await?;
    let tables = Arc::new(tables);
    let at = job.at;
    let opts = Forwarding {
        workers: job.workers,
        chunk_rows: job.chunk_rows,
        batch: BATCH,
        checkpoint: job.checkpoints.then_some(Offset::Postgres { lsn: at }),
        position: Box::new(move |seq| Position::Postgres(PgPosition { lsn: at, phase: Phase::Snapshot, seq })),
        until: job.until,
    };
    let (params, ctx, snapshot, chunk_rows) = (job.params.clone(), job.ctx.clone(), job.snapshot.to_string(), job.chunk_rows);
    let spawn = move |lane: Lane, (): ()| {
        let (params, ctx, snapshot, tables) = (params.clone(), ctx.clone(), snapshot.clone(), tables.clone());
        async move { worker(&params, &ctx, &snapshot, at, chunk_rows, &tables, &lane).await }
    };
    let (end, progress, _) =
        riffle_core::parallel::forward(&planned, opts, vec![(); job.workers.max(1)], spawn, PgError::Unexpected, out, stop).await?;
    if let Some(held) = held {
        held.batch_execute("COMMIT").await.map_err(PgError::session("releasing the block-range tables"))?;
    }
    Ok((end, progress))
}

/// Holds `ACCESS SHARE` locks on the tables read by block ranges, from one
/// session, until the copy ends (as `pg_dump` does): a `VACUUM FULL` or
/// `CLUSTER` rewriting such a table moves its rows to other blocks, and
/// had it run between two workers' reads, one would have read blocks
/// before the rewrite and the other after. Locked first, it waits for the
/// copy; already running, the copy waits for it, and every range is read
/// after it. A table dropped meanwhile is skipped (its chunks say so).
async fn hold_block_tables(params: &ConnectParams, tables: &[PlannedTable]) -> Result<Option<Client>, PgError> {
    let blocks: Vec<&PlannedTable> = tables.iter().filter(|t| matches!(t.chunking, Chunking::Blocks)).collect();
    if blocks.is_empty() {
        return Ok(None);
    }
    let client = params.connect().await?;
    let lock = |e: tokio_postgres::Error| PgError::session("locking the tables read by block ranges")(e);
    client.batch_execute("BEGIN").await.map_err(lock)?;
    for t in blocks {
        client.batch_execute("SAVEPOINT lock").await.map_err(lock)?;
        match client.batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", t.selected.qualified())).await {
            Ok(()) => client.batch_execute("RELEASE SAVEPOINT lock").await.map_err(lock)?,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                client.batch_execute("ROLLBACK TO SAVEPOINT lock").await.map_err(lock)?
            }
            Err(e) => return Err(copy_err(&t.selected, e)),
        }
    }
    Ok(Some(client))
}

/// A piece of COPY output this large is handed on even before it holds a
/// batch of rows: wide rows keep the pieces in flight bounded.
const PIECE_BYTES: usize = 4 << 20;

/// One worker: imports the snapshot, then takes ranges off the queue and
/// reads each chunk by chunk until the queue is empty.
async fn worker(
    params: &ConnectParams,
    ctx: &Context,
    snapshot: &str,
    at: Lsn,
    chunk_rows: u64,
    tables: &[PlannedTable],
    lane: &Lane,
) -> Result<(), PgError> {
    let client = params.connect().await?;
    let begin = |e: tokio_postgres::Error| PgError::session("starting a snapshot worker's transaction")(e);
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(begin)?;
    client.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot))).await.map_err(begin)?;
    let started_us = crate::snapshot::now_us();
    let mut limit = chunk_rows;
    'ranges: while let Some((ti, mut range)) = lane.next_range() {
        let t = &tables[ti];
        let mut first = true;
        loop {
            // The round is over: this range goes on in the next one (a
            // positional range left may still be read in this one).
            if !std::mem::take(&mut first) && lane.over() {
                continue 'ranges;
            }
            let sql = chunk_sql(t, &range, limit);
            // A table dropped meanwhile fails its COPY: the savepoint keeps
            // the worker's transaction (and snapshot) usable for the others.
            client.batch_execute("SAVEPOINT chunk").await.map_err(PgError::session("starting a chunk"))?;
            let stream = match client.copy_out(&sql).await {
                Ok(s) => s,
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT chunk").await.map_err(PgError::session("skipping a dropped table"))?;
                    tracing::warn!(table = %t.selected.id, "table dropped during its snapshot; its snapshot ends here");
                    if !lane.empty_chunk(ti, range.clone()).await {
                        return Ok(());
                    }
                    break;
                }
                Err(e) => return Err(copy_err(&t.selected, e)),
            };
            futures_util::pin_mut!(stream);
            let Some(first_of_table) = lane.start(ti) else { return Ok(()) };
            let mut reader = CopyReader::new(t.schema.clone(), ctx, at, started_us);
            // Consumers drop the block ranges committed before: the table
            // is read again whole, the truncate before its first chunk.
            if t.reload && first_of_table && !lane.send(Piece::Rows(vec![reader.truncate()])).await {
                return Ok(());
            }
            let mut rows = Vec::with_capacity(BATCH);
            let (mut seq, mut bytes, mut piece_bytes, mut total) = (0u64, 0usize, 0usize, 0u64);
            while let Some(data) = stream.next().await {
                let data = data.map_err(|e| copy_err(&t.selected, e))?;
                bytes += data.len();
                piece_bytes += data.len();
                reader.feed(data, &mut seq, &mut rows)?;
                if rows.len() >= BATCH || piece_bytes >= PIECE_BYTES {
                    total += rows.len() as u64;
                    piece_bytes = 0;
                    ctx.stats.saw(at.0);
                    if !lane.send(Piece::Rows(std::mem::replace(&mut rows, Vec::with_capacity(BATCH)))).await {
                        return Ok(());
                    }
                }
            }
            reader.finish()?;
            client.batch_execute("RELEASE SAVEPOINT chunk").await.map_err(PgError::session("ending a chunk"))?;
            ctx.stats.saw(at.0);
            total += rows.len() as u64;
            let next_after = match &t.chunking {
                Chunking::Key(key) if total >= limit => Some(reader.last_key(key)?),
                _ => None,
            };
            if bytes > CHUNK_BYTES && limit > 1 {
                limit /= 2;
            }
            if !rows.is_empty() && !lane.send(Piece::Rows(rows)).await {
                return Ok(());
            }
            let end = Piece::End { table: ti, range: range.clone(), next_after: next_after.clone(), rows: total };
            if !lane.send(end).await {
                return Ok(());
            }
            match next_after {
                Some(after) => range.advance(after).map_err(PgError::Unexpected)?,
                None => break,
            }
        }
    }
    client.batch_execute("COMMIT").await.map_err(PgError::session("ending a snapshot worker's transaction"))?;
    Ok(())
}

fn copy_err(table: &SelectedTable, e: tokio_postgres::Error) -> PgError {
    PgError::query(format!("copying {}", table.id), e, || format!("grant it: GRANT SELECT ON {} TO CURRENT_USER's role", table.qualified()))
}

/// How many workers to use: the asked number, else the cores (at most
/// four), within half the server's free connections.
pub async fn workers(client: &Client, asked: Option<usize>) -> Result<usize, PgError> {
    if let Some(n) = asked {
        return Ok(n.max(1));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
    let free = client
        .query_one(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                    - (SELECT count(*) FROM pg_stat_activity)::int",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.col::<i32>(0).ok())
        .unwrap_or(2);
    Ok(cores.min((free.max(2) / 2) as usize).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::{Column, DataType, TableId};

    /// A plan saved before the positional mark existed, cut in a keyless
    /// table's block ranges, still makes the next run reload it.
    #[test]
    fn block_ranges_of_an_older_saved_plan_are_positional() {
        let saved = r#"{"tables": [
            {"table": "public.heap", "key": ["ctid"], "left": [{"after": ["13"], "upto": ["27"]}], "rows": 900, "chunks": 1},
            {"table": "public.t", "key": ["id"], "left": [{"after": ["5"]}], "rows": 5, "chunks": 1}]}"#;
        let mut p: SnapshotProgress = serde_json::from_str(saved).unwrap();
        assert!(!p.tables[0].reloads(), "the field defaults to false");
        mark_positional(&mut p);
        assert!(p.tables[0].reloads() && !p.tables[1].positional);
    }

    fn table(key: &[(&str, &str)]) -> PlannedTable {
        let col = |name: &str| Column {
            name: name.into(),
            source_type: String::new(),
            data_type: DataType::String,
            nullable: false,
            labels: Vec::new(),
        };
        let schema =
            TableSchema { id: TableId::new("s", "t"), columns: vec![col("a"), col("b"), col("c")], key: vec![0], full_before_image: false };
        PlannedTable {
            selected: SelectedTable {
                id: schema.id.clone(),
                oid: 1,
                estimated_rows: 0,
                replica_identity: b'd',
                has_primary_key: true,
                partitioned: false,
                unlogged: false,
            },
            chunking: if key.is_empty() {
                Chunking::Whole
            } else {
                Chunking::Key(key.iter().map(|(n, t)| KeyColumn { name: n.to_string(), index: 0, type_sql: t.to_string() }).collect())
            },
            schema: Arc::new(schema),
            progress: TableProgress { table: "s.t".into(), key: vec![], left: vec![], rows: 0, chunks: 0, again: false, positional: false },
            reload: false,
        }
    }

    #[test]
    fn chunk_queries_bound_the_key_with_typed_literals() {
        let t = table(&[("a", "integer"), ("b", "text")]);
        let range = KeyRange { after: Some(vec!["7".into(), "it's".into()]), upto: Some(vec!["9".into(), "z".into()]) };
        assert_eq!(
            chunk_sql(&t, &range, 100),
            "COPY (SELECT \"a\", \"b\", \"c\" FROM ONLY \"s\".\"t\" WHERE (\"a\", \"b\") > ('7'::integer, 'it''s'::text) \
             AND (\"a\", \"b\") <= ('9'::integer, 'z'::text) ORDER BY \"a\", \"b\" LIMIT 100) TO STDOUT"
        );
        assert_eq!(
            chunk_sql(&t, &KeyRange::all(), 5),
            "COPY (SELECT \"a\", \"b\", \"c\" FROM ONLY \"s\".\"t\" ORDER BY \"a\", \"b\" LIMIT 5) TO STDOUT"
        );
        assert_eq!(chunk_sql(&table(&[]), &KeyRange::all(), 5), "COPY \"s\".\"t\" (\"a\", \"b\", \"c\") TO STDOUT");
    }

    #[test]
    fn block_ranges_bound_the_ctid_past_every_tuple_of_their_last_block() {
        let t = PlannedTable { chunking: Chunking::Blocks, ..table(&[]) };
        let range = KeyRange { after: Some(vec!["99".into()]), upto: Some(vec!["199".into()]) };
        assert_eq!(
            chunk_sql(&t, &range, 5),
            "COPY (SELECT \"a\", \"b\", \"c\" FROM ONLY \"s\".\"t\" WHERE ctid > '(99,65535)'::tid AND ctid <= '(199,65535)'::tid) TO STDOUT"
        );
        let last = KeyRange { after: Some(vec!["199".into()]), upto: None };
        assert_eq!(
            chunk_sql(&t, &last, 5),
            "COPY (SELECT \"a\", \"b\", \"c\" FROM ONLY \"s\".\"t\" WHERE ctid > '(199,65535)'::tid) TO STDOUT"
        );
    }
}
