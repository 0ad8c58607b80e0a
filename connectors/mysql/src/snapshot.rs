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
//! A table is read in chunks of its primary key's order, or of a unique
//! index whose columns are all NOT NULL when it has no primary key a chunk
//! can follow ([`chunk_key`]; `WHERE key > last ORDER BY key LIMIT n`,
//! composite keys written out column by column), all
//! inside the same transaction, and each chunk is reported done and
//! followed by a checkpoint at the snapshot's position, so the pipeline
//! saves progress: an interrupted snapshot resumes with the chunks left,
//! read inside a new consistent read once the binlog stream has reached its
//! position (`MySource::catch_up`). A table without such a key, or with
//! one a literal cannot bound exactly (binary, ENUM, floating point), is
//! read whole in one streamed `SELECT`, as one chunk. Rows flow through in
//! batches either way, so memory stays flat whatever the table size.
//!
//! # Parallel reads on MariaDB, without a lock
//!
//! With more than one worker (`--snapshot-workers`), each worker connection
//! starts its own `START TRANSACTION WITH CONSISTENT SNAPSHOT`, all at
//! once, and reads its `binlog_snapshot_file`/`_position`. MariaDB takes a
//! consistent snapshot's read view and that binlog position together, under
//! the lock that orders commits into the binlog, so a snapshot holds exactly
//! the transactions committed in the binlog before its position. Two
//! snapshots at the same position therefore hold the same transactions: the
//! same database state. riffle uses the workers only when every one of them
//! reports the same position; otherwise (a commit landed between two of
//! them) it rolls them all back and starts again, a few times, then reads
//! with one connection. No lock is taken, no write waits. On a quiet server
//! the first attempt agrees; under a steady stream of commits the attempts
//! may not, and the snapshot is read by one connection (logged). The
//! workers read key ranges chunk by chunk through the engine both sources
//! share ([`riffle_core::parallel`]): each chunk is handed on whole before
//! the next, so checkpoints and resumption work as with one connection. A
//! large table with a one-column integer key is split into ranges between
//! its minimum and maximum key so that several workers read it. MySQL (not
//! MariaDB) reports no snapshot position, so its snapshot is read by one
//! connection, positioned under a brief `FLUSH TABLES WITH READ LOCK`.

use crate::catalog::{load_columns, quote_ident, schema_of, SelectedTable};
use crate::error::MyError;
use crate::types::{text_row, MyColumn};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use riffle_core::chunks::Resumed;
use riffle_core::parallel::{Forwarding, Lane, Piece, Planned};
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{BeforeImage, BinlogCoords, ChangeEvent, MyPosition, Offset, Op, Phase, Position, SourceInfo, SourceItem};
use riffle_core::{DataType, KeyRange, SnapshotProgress, TableProgress, TableSchema, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub const BATCH: usize = 1024;

/// Rows per batch a snapshot worker hands on: smaller than the stream's.
/// A worker's batches are freed by the committer's thread; at 1024 events
/// (about 270 KB of events each) the allocator kept taking fresh pages, and
/// the kernel's page zeroing was 8 % of a snapshot's CPU. At 256: riffle's
/// CPU about 7 % less and peak memory halved (90 → 48 MB for 1M rows, 2
/// workers; BENCHMARKS.md, ninth session).
const SNAPSHOT_BATCH: usize = 256;

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

#[derive(Clone)]
pub struct Context {
    pub name: Arc<str>,
    pub connector: &'static str,
    pub server_id: u32,
    pub stats: Arc<SourceStats>,
    /// Tables (`schema.table`) read whole before the others
    /// ([`riffle_core::source::SourceSpec::read_first`]).
    pub read_first: Arc<[String]>,
}

/// A consistent read and the binlog position that matches it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
    /// The number of the last row read at this position so far (by an
    /// earlier read at the same point): rows read next are numbered after it.
    pub read_through: u64,
}

impl Snapshot {
    pub fn offset(&self) -> Offset {
        Offset::Mysql { file: self.file.clone(), pos: self.pos, gtid: self.gtid.clone() }
    }

    /// Numbers this read's rows after `held` (the newest position the sinks
    /// hold, or an earlier round's last row) when that is a snapshot row at
    /// this very binlog position: a server that wrote nothing since gives
    /// every consistent read the same position, and a position is never
    /// used twice.
    pub fn follow(&mut self, held: Option<MyPosition>) {
        if let Some(h) = held.filter(|h| h.phase == Phase::Snapshot && (h.file, h.pos) == (file_seq(&self.file), self.pos)) {
            self.read_through = self.read_through.max(h.seq);
            tracing::info!(at = %self.offset(), after = h.seq, "no write since an earlier read at this binlog position: its rows are numbered after that read's");
        }
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
    Ok(Snapshot { file, pos, gtid, read_through: 0 })
}

/// How many times the workers' snapshots are started again before the
/// snapshot is read with one connection.
const AGREE_ATTEMPTS: usize = 8;

/// Starts the consistent read on `first` and, on MariaDB with more than
/// one worker, on `workers - 1` more connections at the same binlog
/// position (see the module's documentation). Returns the connections in
/// the read (one when they could not agree) and its position.
pub async fn begin_workers(
    params: &crate::connect::ConnectParams,
    mut first: Conn,
    mariadb: bool,
    workers: usize,
) -> Result<(Vec<Conn>, Snapshot), MyError> {
    if workers <= 1 || !mariadb {
        let snap = begin(&mut first, mariadb).await?;
        return Ok((vec![first], snap));
    }
    let mut conns = vec![first];
    for _ in 1..workers {
        match params.connect().await {
            Ok(c) => conns.push(c),
            Err(e) => {
                tracing::info!(error = %e, workers = conns.len(), "no further snapshot worker connection: reading with fewer");
                break;
            }
        }
    }
    for attempt in 1..=AGREE_ATTEMPTS {
        let started = futures_util::future::join_all(conns.iter_mut().map(|c| begin(c, true))).await;
        let snaps = started.into_iter().collect::<Result<Vec<Snapshot>, MyError>>()?;
        if snaps.iter().all(|s| (&s.file, s.pos) == (&snaps[0].file, snaps[0].pos)) {
            tracing::debug!(attempt, workers = conns.len(), at = %snaps[0].offset(), "snapshot workers agree on one position");
            return Ok((conns, snaps[0].clone()));
        }
        for c in &mut conns {
            c.query_drop("ROLLBACK").await.map_err(|e| MyError::query("restarting a snapshot worker", e))?;
        }
    }
    tracing::info!(
        attempts = AGREE_ATTEMPTS,
        "commits kept landing between the snapshot workers' consistent reads: reading the snapshot with one connection"
    );
    conns.truncate(1);
    let mut first = conns.pop().expect("one connection");
    let snap = begin(&mut first, true).await?;
    Ok((vec![first], snap))
}

/// How many workers to use: the asked number, else the cores (at most
/// four), within half the server's free connections.
pub async fn workers(conn: &mut Conn, asked: Option<usize>) -> usize {
    if let Some(n) = asked {
        return n.max(1);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
    let max: Option<u64> = conn.query_first("SELECT @@max_connections").await.ok().flatten();
    let used: Option<(String, u64)> = conn.query_first("SHOW STATUS LIKE 'Threads_connected'").await.ok().flatten();
    let free = match (max, used) {
        (Some(m), Some((_, u))) => m.saturating_sub(u),
        _ => 2,
    };
    cores.min((free.max(2) / 2) as usize).max(1)
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
        // MariaDB compares a string literal with these as their own type.
        DataType::Other(t) => matches!(t.as_str(), "uuid" | "inet6" | "inet4"),
        _ => false,
    }
}

/// The chunk key, as indexes (into `columns`) in the index's own order (so
/// chunk queries walk it): the key `saved` (the column names a saved plan
/// chunked the table by) while it is still a usable one, so index changes
/// during a long snapshot do not change it; else the primary key; else a
/// unique B-tree index over whole NOT NULL columns (fewest columns, then the
/// first by name). Usable: every column NOT NULL and bounded exactly by a
/// literal (see [`boundable`]); a secondary index also over whole columns
/// (a prefix cannot give the order), not a hash, and one the optimizer may
/// use (not invisible or ignored). Empty: read whole.
async fn chunk_key(conn: &mut Conn, t: &SelectedTable, columns: &[MyColumn], saved: Option<&[String]>) -> Result<Vec<usize>, MyError> {
    let rows: Vec<(String, Option<String>, Option<u64>, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART, INDEX_TYPE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (&t.id.schema, &t.id.name),
        )
        .await
        .map_err(|e| MyError::query(format!("reading the keys of {}", t.id), e))?;
    // Indexes the optimizer may not use (MySQL 8 invisible, MariaDB 10.6+
    // ignored): every chunk would be a scan and a sort. Servers without
    // the column have no such indexes.
    let mut hidden: Vec<String> = Vec::new();
    for column in ["IS_VISIBLE = 'NO'", "IGNORED = 'YES'"] {
        let sql =
            format!("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND {column}");
        if let Ok(names) = conn.exec::<String, _, _>(sql, (&t.id.schema, &t.id.name)).await {
            hidden.extend(names);
        }
    }
    let mut keys: Vec<(String, Option<Vec<usize>>)> = Vec::new();
    for (index, column, sub_part, index_type) in rows {
        if keys.last().is_none_or(|(name, _)| *name != index) {
            keys.push((index.clone(), Some(Vec::new())));
        }
        let Some((_, slot)) = keys.last_mut() else { continue };
        let Some(key) = slot else { continue };
        let primary = index == "PRIMARY";
        let walkable = primary || (sub_part.is_none() && !index_type.eq_ignore_ascii_case("HASH") && !hidden.contains(&index));
        match columns.iter().position(|c| Some(&c.column.name) == column.as_ref()) {
            Some(i) if walkable && !columns[i].column.nullable && boundable(&columns[i]) => key.push(i),
            _ => *slot = None,
        }
    }
    let usable: Vec<(String, Vec<usize>)> = keys.into_iter().filter_map(|(name, key)| Some((name, key?))).collect();
    let names = |key: &[usize]| key.iter().map(|i| columns[*i].column.name.clone()).collect::<Vec<String>>();
    if let Some((_, key)) = saved.filter(|s| !s.is_empty()).and_then(|s| usable.iter().find(|(_, k)| names(k) == s)) {
        return Ok(key.clone());
    }
    Ok(usable.into_iter().min_by_key(|(name, key)| (name != "PRIMARY", key.len(), name.clone())).map(|(_, key)| key).unwrap_or_default())
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
        let saved_key = resumed.and_then(|p| p.table(&name)).filter(|s| s.chunks > 0).map(|s| s.key.as_slice());
        let key = chunk_key(conn, t, &columns, saved_key).await?;
        if key.is_empty() {
            tracing::info!(
                table = %t.id,
                "no primary key or unique NOT NULL index a chunk can follow (none, or a binary, ENUM or floating-point column in \
                 it): read whole, in one piece (an interrupted read starts it over)"
            );
        }
        let names: Vec<String> = key.iter().map(|i| columns[*i].column.name.clone()).collect();
        let table_progress = match riffle_core::chunks::resume(resumed, &name, &names) {
            Err(saved) => return Err(MyError::ChunkKeyChanged { table: name, saved, now: names }),
            Ok(Resumed::Ranges(p)) => p,
            Ok(Resumed::Fresh { again }) => {
                let p =
                    TableProgress { table: name, key: names, left: vec![KeyRange::all()], rows: 0, chunks: 0, again, positional: false };
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

/// Reads every range `tables` have left with the connections `conns`, all
/// inside one consistent read at `snap` ([`begin_workers`]), chunk by
/// chunk, handed on one chunk at a time ([`riffle_core::parallel`]); after
/// each chunk its `ChunkDone` and, with `checkpoints`, a checkpoint at the
/// snapshot's position, so the pipeline saves progress. Returns `Stopped`
/// if asked to stop. With `until`, no chunk starts after it (a round of a
/// snapshot read while streaming). Returns the plan with every chunk read
/// recorded, and the connections (none when stopped); rows are numbered
/// after `snap.read_through`, which is left at the last row's number.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    conns: Vec<Conn>,
    ctx: &Context,
    snap: &mut Snapshot,
    tables: Vec<PlannedTable>,
    chunk_rows: u64,
    checkpoints: bool,
    until: Option<tokio::time::Instant>,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, SnapshotProgress, Vec<Conn>), MyError> {
    let planned: Vec<Planned> = tables
        .iter()
        .map(|t| Planned {
            id: t.selected.id.clone(),
            estimated_rows: t.selected.estimated_rows,
            progress: t.progress.clone(),
            first: ctx.read_first.contains(&t.selected.id.to_string()),
        })
        .collect();
    let (file, pos, after) = (file_seq(&snap.file), snap.pos, snap.read_through);
    let last = Arc::new(std::sync::atomic::AtomicU64::new(after));
    let numbered = last.clone();
    let opts = Forwarding {
        workers: conns.len(),
        chunk_rows,
        batch: SNAPSHOT_BATCH,
        checkpoint: checkpoints.then(|| snap.offset()),
        position: Box::new(move |n| {
            let seq = after.saturating_add(n);
            numbered.store(seq, std::sync::atomic::Ordering::Relaxed);
            Position::Mysql(MyPosition { file, pos, phase: Phase::Snapshot, seq })
        }),
        until,
    };
    let job = Arc::new(Job {
        ctx: ctx.clone(),
        file_name: Arc::from(snap.file.as_str()),
        file_seq: file,
        pos,
        tables,
        chunk_rows,
        started_us: now_us(),
    });
    let spawn = move |lane: Lane, conn: Conn| {
        let job = job.clone();
        async move { job.worker(conn, &lane).await }
    };
    let forwarded = riffle_core::parallel::forward(&planned, opts, conns, spawn, MyError::Unexpected, out, stop).await;
    snap.read_through = last.load(std::sync::atomic::Ordering::Relaxed);
    forwarded
}

/// What every worker of one copy shares.
struct Job {
    ctx: Context,
    file_name: Arc<str>,
    file_seq: u32,
    pos: u64,
    tables: Vec<PlannedTable>,
    chunk_rows: u64,
    started_us: i64,
}

impl Job {
    /// One worker: takes ranges off the queue and reads each chunk by chunk
    /// until the queue is empty (or the round is over); gives its
    /// connection back.
    async fn worker(&self, mut conn: Conn, lane: &Lane) -> Result<Conn, MyError> {
        let modes: Option<String> =
            conn.query_first("SELECT @@SESSION.sql_mode").await.map_err(|e| MyError::query("reading sql_mode", e))?;
        let escapes = !modes.unwrap_or_default().to_uppercase().contains("NO_BACKSLASH_ESCAPES");
        'ranges: while let Some((ti, mut range)) = lane.next_range() {
            let t = &self.tables[ti];
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
            let mut first = true;
            loop {
                // The round is over: this range goes on in the next one.
                if !std::mem::take(&mut first) && lane.over() {
                    continue 'ranges;
                }
                match self.chunk(&mut conn, lane, ti, &cols, &range, escapes).await? {
                    Chunk::Gone => return Ok(conn),
                    Chunk::Read(Some(after)) => range.advance(after).map_err(MyError::Unexpected)?,
                    Chunk::Read(None) => break,
                }
            }
        }
        Ok(conn)
    }

    /// Reads one chunk of `range` and hands it on.
    async fn chunk(
        &self,
        conn: &mut Conn,
        lane: &Lane,
        ti: usize,
        cols: &[String],
        range: &KeyRange,
        escapes: bool,
    ) -> Result<Chunk, MyError> {
        let t = &self.tables[ti];
        let sql = chunk_sql(t, cols, range, self.chunk_rows, escapes);
        let copying = || format!("copying {}", t.selected.id);
        let mut result = match conn.query_iter(sql).await {
            Ok(r) => r,
            // ER_NO_SUCH_TABLE: dropped during its snapshot.
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
                tracing::warn!(table = %t.selected.id, "table dropped during its snapshot; its snapshot ends here");
                return Ok(if lane.empty_chunk(ti, range.clone()).await { Chunk::Read(None) } else { Chunk::Gone });
            }
            Err(e) => return Err(MyError::query(copying(), e)),
        };
        if lane.start(ti).is_none() {
            return Ok(Chunk::Gone);
        }
        let mut rows_in_chunk = 0u64;
        let mut last_key: Vec<Vec<u8>> = vec![Vec::new(); t.key.len()];
        let mut batch = Vec::with_capacity(SNAPSHOT_BATCH);
        let mut batch_bytes = 0usize;
        let mut of = ReadOf { schema: &t.schema, db: Arc::from(t.schema.id.schema.as_str()), now_ms: 0 };
        // Each row is read from its packet as the server sent it, without
        // the driver's `Row` (a copy and an allocation per value).
        while let Some(row) =
            result.next_raw(|packet| (packet.len(), read_row(t, packet, &mut last_key))).await.map_err(|e| MyError::query(copying(), e))?
        {
            if rows_in_chunk.is_multiple_of(CLOCK_EVERY) {
                of.now_ms = now_us() / 1000;
            }
            let (bytes, after) = row;
            let after = after?;
            batch_bytes += bytes;
            rows_in_chunk += 1;
            batch.push(SourceItem::Event(self.read_event(&of, after)));
            if batch.len() >= SNAPSHOT_BATCH || batch_bytes >= riffle_core::source::BATCH_BYTES {
                batch_bytes = 0;
                self.ctx.stats.saw(self.pos);
                if !lane.send(Piece::Rows(std::mem::replace(&mut batch, Vec::with_capacity(SNAPSHOT_BATCH)))).await {
                    return Ok(Chunk::Gone);
                }
            }
        }
        drop(result);
        self.ctx.stats.saw(self.pos);
        let next_after = if !t.key.is_empty() && rows_in_chunk >= self.chunk_rows {
            let texts: Result<Vec<String>, _> = last_key.into_iter().map(String::from_utf8).collect();
            Some(texts.map_err(|_| MyError::KeyNotText { table: t.selected.id.clone() })?)
        } else {
            None
        };
        if !batch.is_empty() && !lane.send(Piece::Rows(batch)).await {
            return Ok(Chunk::Gone);
        }
        let end = Piece::End { table: ti, range: range.clone(), next_after: next_after.clone(), rows: rows_in_chunk };
        Ok(if lane.send(end).await { Chunk::Read(next_after) } else { Chunk::Gone })
    }
}

/// One snapshot row of `t` from its text-protocol packet; the chunk key's
/// values, as sent, into `last_key`.
fn read_row(t: &PlannedTable, packet: &[u8], last_key: &mut [Vec<u8>]) -> Result<Vec<Value>, MyError> {
    text_row(&t.selected.id, &t.columns, packet, |i, v| {
        if let Some(slot) = t.key.iter().position(|&k| k == i) {
            last_key[slot].clear();
            last_key[slot].extend_from_slice(v);
        }
    })
}

/// How a chunk ended.
enum Chunk {
    /// Read and handed on; where its range goes on (`None`: it is done).
    Read(Option<Vec<String>>),
    /// The forwarder is gone (stopped).
    Gone,
}

/// What every row of one chunk shares.
struct ReadOf<'a> {
    schema: &'a Arc<TableSchema>,
    /// The table's database, made once per chunk, not once per row.
    db: Arc<str>,
    /// When the rows were read: the clock is read once every
    /// [`CLOCK_EVERY`] rows.
    now_ms: i64,
}

/// Rows between two reads of the clock for the events' `ts_ms`.
const CLOCK_EVERY: u64 = 256;

impl Job {
    fn read_event(&self, of: &ReadOf, after: Vec<Value>) -> ChangeEvent {
        let (ctx, pos) = (&self.ctx, self.pos);
        ChangeEvent {
            op: Op::Read,
            table: of.schema.clone(),
            before: None,
            after: Some(after),
            before_image: BeforeImage::None,
            source: SourceInfo {
                connector: ctx.connector,
                name: ctx.name.clone(),
                db: of.db.clone(),
                tx_id: None,
                ts_ms: self.started_us / 1000,
                ts_us: self.started_us,
                lsn: None,
                binlog: Some(BinlogCoords { file: self.file_name.clone(), pos, row: 0, server_id: ctx.server_id, gtid: None }),
                snapshot: riffle_core::SnapshotMark::True,
            },
            // Numbered by the forwarder.
            position: Position::Mysql(MyPosition { file: self.file_seq, pos, phase: Phase::Snapshot, seq: 0 }),
            ts_ms: of.now_ms,
        }
    }
}

/// Copies `tables` in one consistent read (`riffle sync`, or the initial
/// snapshot of `replicate`, with a checkpoint after each chunk and at the
/// end) with up to `workers` connections; returns the binlog offset that
/// matches it.
#[allow(clippy::too_many_arguments)]
pub async fn copy_tables(
    params: &crate::connect::ConnectParams,
    conn: Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    checkpoints: bool,
    held: Option<MyPosition>,
    options: riffle_core::SnapshotOptions,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    copy_in(params, conn, ctx, tables, mariadb, checkpoints, held, false, options, out, stop).await
}

/// [`copy_tables`] for `riffle verify`: the read's exact binlog offset is
/// sent first ([`SourceItem::SnapshotStarted`]).
#[allow(clippy::too_many_arguments)]
pub async fn copy_tables_at(
    params: &crate::connect::ConnectParams,
    conn: Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    options: riffle_core::SnapshotOptions,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    copy_in(params, conn, ctx, tables, mariadb, false, None, true, options, out, stop).await
}

#[allow(clippy::too_many_arguments)]
async fn copy_in(
    params: &crate::connect::ConnectParams,
    mut conn: Conn,
    ctx: &Context,
    tables: &[SelectedTable],
    mariadb: bool,
    checkpoints: bool,
    held: Option<MyPosition>,
    announce: bool,
    options: riffle_core::SnapshotOptions,
    out: &mpsc::Sender<Vec<SourceItem>>,
    stop: &watch::Receiver<bool>,
) -> Result<(RunEnd, Offset), MyError> {
    let chunk_rows = options.rows_per_chunk(CHUNK_ROWS);
    let workers = workers(&mut conn, options.workers).await;
    let (mut conns, mut snap) = begin_workers(params, conn, mariadb, workers).await?;
    // A snapshot started again after its sinks committed rows the state
    // never recorded (a stop between the two), on a server idle since.
    snap.follow(held);
    if announce && out.send(vec![SourceItem::SnapshotStarted(snap.offset())]).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    let (mut progress, mut planned) = plan(&mut conns[0], tables, None).await?;
    if conns.len() > 1 {
        let parts = conns.len();
        split(&mut conns[0], &mut planned, &mut progress, chunk_rows, parts).await?;
    }
    if out.send(vec![SourceItem::SnapshotPlan(progress)]).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    let (end, _, conns) = copy(conns, ctx, &mut snap, planned, chunk_rows, checkpoints, None, out, stop).await?;
    if end != RunEnd::SnapshotComplete {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    for mut c in conns {
        c.query_drop("COMMIT").await.map_err(|e| MyError::query("ending the snapshot", e))?;
    }
    let mut last = vec![SourceItem::SnapshotDone];
    if checkpoints {
        last.push(SourceItem::Checkpoint(snap.offset()));
    }
    if out.send(last).await.is_err() {
        return Ok((RunEnd::Stopped, snap.offset()));
    }
    Ok((RunEnd::SnapshotComplete, snap.offset()))
}

/// Splits each large table with a one-column integer key into ranges
/// between its minimum and maximum key (inside the snapshot), so that
/// `parts` workers can read it; the plan records the ranges.
async fn split(
    conn: &mut Conn,
    planned: &mut [PlannedTable],
    progress: &mut SnapshotProgress,
    chunk_rows: u64,
    parts: usize,
) -> Result<(), MyError> {
    for t in planned.iter_mut() {
        let integer =
            t.key.len() == 1 && matches!(t.columns[t.key[0]].column.data_type, DataType::Int16 | DataType::Int32 | DataType::Int64);
        let wanted = (t.selected.estimated_rows / chunk_rows.max(1)).min(parts as u64);
        if !integer || wanted < 2 || t.progress.left != [KeyRange::all()] {
            continue;
        }
        let k = quote_ident(&t.columns[t.key[0]].column.name);
        let bounds: Option<(Option<i64>, Option<i64>)> = conn
            .query_first(format!("SELECT MIN({k}), MAX({k}) FROM {}", t.selected.qualified()))
            .await
            .map_err(|e| MyError::query(format!("reading the key range of {}", t.selected.id), e))?;
        let Some((Some(lo), Some(hi))) = bounds else { continue };
        t.progress.left = riffle_core::parallel::integer_ranges(lo, hi, wanted);
        if let Some(p) = progress.tables.iter_mut().find(|p| p.table == t.progress.table) {
            p.left = t.progress.left.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_at_the_point_of_an_earlier_one_numbers_its_rows_after_it() {
        let at = |pos| Snapshot { file: "mariadb-bin.000003".into(), pos, gtid: None, read_through: 0 };
        let held = |file, pos, phase, seq| Some(MyPosition { file, pos, phase, seq });
        let mut same = at(400);
        same.follow(held(3, 400, Phase::Snapshot, 150));
        assert_eq!(same.read_through, 150);
        // Elsewhere, or a change (the stream), leaves the numbering alone.
        for other in [held(3, 399, Phase::Snapshot, 150), held(2, 400, Phase::Snapshot, 150), held(3, 400, Phase::Stream, 7), None] {
            let mut snap = at(400);
            snap.follow(other);
            assert_eq!(snap.read_through, 0);
        }
    }

    #[test]
    fn bounds_are_written_out_column_by_column() {
        let key = vec!["`a`".to_string(), "`b`".to_string()];
        let vals = vec!["1".to_string(), "it's \\ x".to_string()];
        assert_eq!(bound(&key, &vals, false, true), "((`a` > _utf8mb4'1') OR (`a` = _utf8mb4'1' AND `b` > _utf8mb4'it''s \\\\ x'))");
        assert_eq!(bound(&key, &vals, true, false), "((`a` < _utf8mb4'1') OR (`a` = _utf8mb4'1' AND `b` <= _utf8mb4'it''s \\ x'))");
    }
}
