//! Streaming the binlog: row events become change events.
//!
//! riffle registers as a replica (`server_id` from the URL, or derived from
//! the pipeline name) and asks for the binlog from the saved file and
//! offset. A transaction (GTID or `BEGIN` … `XID`/`COMMIT`) gives its events
//! the position of its first event; the checkpoint after it is the offset
//! just past its commit, so resuming there never replays half a transaction.
//! Column names and types come from the catalog, matched by name with the
//! names the binlog carries (`binlog_row_metadata=FULL`), so rows written
//! before a DDL decode with the columns they had; the catalog is re-read
//! after every DDL statement.

use crate::catalog::{load_columns, schema_of, SelectedTable};
use crate::connect::ConnectParams;
use crate::error::{MyError, MysqlError};
use crate::snapshot::{file_seq, now_us, Context, BATCH};
use crate::types::{column_type, from_binlog, MyColumn};
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use riffle_core::source::RunEnd;
use riffle_core::{BeforeImage, BinlogCoords, ChangeEvent, MyPosition, Offset, Op, Phase, Position, SourceInfo, SourceItem};
use riffle_core::{TableId, TableSchema, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// How often the server sends a heartbeat event on an idle stream.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the stream may go without an event (heartbeats included), and
/// a query made while streaming may take, before the connection is presumed
/// dead and the run retried: four missed heartbeats. A network path that
/// drops packets silently never closes the socket.
pub const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `fut`, or [`MyError::Silent`] after [`SILENCE_LIMIT`].
async fn within<T>(what: &'static str, fut: impl std::future::Future<Output = Result<T, MyError>>) -> Result<T, MyError> {
    tokio::time::timeout(SILENCE_LIMIT, fut).await.map_err(|_| MyError::Silent { what, after: SILENCE_LIMIT })?
}

/// MariaDB's GTID event (`GTID_EVENT`, 162).
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB's compressed query and rows events (`log_bin_compress=ON`).
const MARIADB_COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 165..=171;

pub(crate) struct Table {
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) columns: Vec<MyColumn>,
}

struct Tx {
    pos: u64,
    seq: u64,
    /// The server the transaction was written on (the binlog event's
    /// server id: Debezium's `source.server_id`).
    origin: u32,
    gtid: Option<Arc<str>>,
    /// Opened by `BEGIN` (or a MariaDB GTID event not marked standalone):
    /// only COMMIT, ROLLBACK or XID end it, never a SAVEPOINT in between.
    explicit: bool,
}

pub struct Stream<'a> {
    pub params: &'a ConnectParams,
    pub ctx: &'a Context,
    pub selected: &'a [SelectedTable],
    pub mariadb: bool,
    /// Tables whose changes are not sent while pausing: a snapshot of them
    /// is read at the pause point and holds every change before it.
    pub skipped: Vec<TableId>,
}

impl Stream<'_> {
    /// Streams from `start` until stopped; with `until_now`, until the end of
    /// the binlog as it was when the stream started. With `pause` (a binlog
    /// file number and offset), stops once every transaction that starts
    /// before it has been sent, before any that starts at or after it.
    pub async fn run(
        &self,
        start: Offset,
        until_now: bool,
        pause: Option<(u32, u64)>,
        out: mpsc::Sender<Vec<SourceItem>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, MyError> {
        let Offset::Mysql { file, pos, gtid } = start else {
            return Err(MyError::NotMysqlPosition);
        };
        let mut catalog = self.params.connect().await?;
        crate::checks::warn_if_near_purge(&mut catalog, &file).await;
        let mut conn = self.params.connect().await?;
        let p = self.params;
        let checksum: Option<String> = conn.query_first("SELECT @@global.binlog_checksum").await.map_err(|e| MyError::connection(p, e))?;
        let checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        // Heartbeats keep an idle stream visibly alive.
        let period = format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos());
        conn.query_drop(period).await.map_err(|e| MyError::connection(p, e))?;
        if self.mariadb {
            // Send MariaDB GTID events (capability 4 = GTID).
            conn.query_drop("SET @mariadb_slave_capability = 4").await.map_err(|e| MyError::connection(p, e))?;
        }
        // With a saved GTID position, resume by GTID: it also finds the
        // place on a new primary after a failover (file names differ there).
        // MariaDB: @slave_connect_state; MySQL: COM_BINLOG_DUMP_GTID with the
        // executed set.
        let by_gtid = gtid.is_some() && (self.mariadb || mysql_gtid_mode_on(&mut conn).await);
        // COM_BINLOG_DUMP takes a 32-bit position. A saved one past 4 GiB
        // ends a transaction that made its file that large, after which the
        // server rotates (every file passed max_binlog_size, at most 1 GiB):
        // nothing but the rotation follows it, so the stream goes on at the
        // start of the next file.
        let (dump_file, dump_pos) = if pos > u64::from(u32::MAX) {
            let next = next_file(&file);
            tracing::info!(file = %file, pos, next = %next, "the saved position is past 4 GiB: resuming at the next binlog file");
            (next, 4)
        } else {
            (file.clone(), pos)
        };
        let mut request = match (&gtid, by_gtid, self.mariadb) {
            (Some(g), true, true) => {
                conn.exec_drop("SET @slave_connect_state = ?", (g,)).await.map_err(|e| MyError::connection(p, e))?;
                BinlogStreamRequest::new(self.ctx.server_id).with_pos(4)
            }
            (Some(g), true, false) => {
                let sids: Vec<mysql_async::Sid<'static>> = g
                    .split(',')
                    .map(|s| s.trim().parse::<mysql_async::Sid<'static>>())
                    .collect::<Result<_, _>>()
                    .map_err(|source| MyError::BadGtidSet { gtid: g.clone(), source })?;
                BinlogStreamRequest::new(self.ctx.server_id).with_gtid().with_gtid_set(sids).with_pos(4)
            }
            _ => BinlogStreamRequest::new(self.ctx.server_id).with_filename(dump_file.as_bytes()).with_pos(dump_pos),
        };
        if until_now {
            request = request.with_non_blocking();
        }
        // The dump's connection id, with when the server started: ids
        // start again at 1 after a restart, and must then name nothing.
        let started = crate::checks::server_started(&mut conn).await?;
        self.ctx.stats.set_session((started << 32) | u64::from(conn.id()));
        let mut stream = conn.get_binlog_stream(request).await.map_err(|e| MyError::connection(p, e))?;
        match &gtid {
            Some(g) if by_gtid => tracing::info!(gtid = %g, server_id = self.ctx.server_id, "streaming started"),
            _ => tracing::info!(file = %file, pos, server_id = self.ctx.server_id, "streaming started"),
        }
        let mut current_file: Arc<str> = Arc::from(file.as_str());
        // Where the last event read ended in `current_file`: the header's
        // 32-bit log_pos widened against it (see [`widen`]).
        let mut file_end: u64 = pos;
        let mut seen_format = false;
        let mut tracker = crate::gtid::Tracker::parse(gtid.as_deref(), self.mariadb);
        let mut tables: HashMap<TableId, Table> = HashMap::new();
        let mut shapes = crate::rows::Shapes::default();
        let mut tx: Option<Tx> = None;
        let mut batch: Vec<SourceItem> = Vec::with_capacity(BATCH);
        // Row data in `batch` (rows events' bytes): a batch of wide rows is handed on early.
        let mut batch_bytes = 0usize;
        let mut stop = stop;
        let mut stopping = false;
        loop {
            if stopping && tx.is_none() {
                return Ok(RunEnd::Stopped);
            }
            let next = tokio::select! {
                biased;
                changed = stop.changed() => {
                    stopping = changed.is_err() || *stop.borrow();
                    continue;
                }
                _ = out.closed() => return Ok(RunEnd::Stopped),
                next = tokio::time::timeout(SILENCE_LIMIT, stream.next()) => match next {
                    Ok(next) => next,
                    Err(_) => return Err(MyError::Silent { what: "binlog stream", after: SILENCE_LIMIT }),
                },
            };
            let Some(event) = next else {
                // Non-blocking mode: the end of the binlog.
                if until_now && tx.is_none() {
                    let _ = out.send(std::mem::take(&mut batch)).await;
                    return Ok(RunEnd::ReachedUntil);
                }
                return Err(MyError::StreamEnded);
            };
            let event = event.map_err(|e| match e {
                mysql_async::Error::Server(_) => MyError::connection(p, e),
                other => MyError::Stream { source: MysqlError(other) },
            })?;
            let header = event.header();
            let origin = header.server_id();
            // 0 in artificial events (the rotation and format description
            // a stream opens with), which have no place in the file.
            let end_pos = match header.log_pos() {
                0 => 0,
                p => {
                    file_end = widen(file_end, p);
                    file_end
                }
            };
            let start_pos = end_pos.saturating_sub(u64::from(header.event_size()));
            self.ctx.stats.saw(end_pos);
            let raw_type = event.header().event_type_raw();
            // Pausing: the first transaction at or after the pause point is
            // not sent (the stream goes on from there later).
            let reached = |file: &str, pos: u64| pause.is_some_and(|p| (file_seq(file), pos) >= p);
            let starts_tx = raw_type == MARIADB_GTID_EVENT
                || matches!(raw_type, 33 | 34)
                || (tx.is_none() && matches!(raw_type, 2 | 23..=25 | 30..=32));
            if tx.is_none() && starts_tx && reached(&current_file, start_pos) {
                let _ = out.send(std::mem::take(&mut batch)).await;
                return Ok(RunEnd::ReachedUntil);
            }
            if raw_type == MARIADB_GTID_EVENT {
                if let Some(g) = mariadb_gtid(event.data(), header.server_id()) {
                    // Flags byte after seq_no and domain: 0x01 is FL_STANDALONE
                    // (a DDL, its own transaction without BEGIN).
                    let standalone = event.data().get(12).is_some_and(|f| f & 0x01 != 0);
                    tx = Some(Tx { pos: start_pos, seq: 0, origin, gtid: Some(Arc::from(g.as_str())), explicit: !standalone });
                }
                continue;
            }
            if (MARIADB_COMPRESSED_EVENTS).contains(&raw_type) {
                return Err(MyError::CompressedEvent { file: current_file.to_string(), pos: start_pos });
            }
            // Rows events: mysql_common sizes their column bitmaps from
            // the column count unchecked.
            if matches!(raw_type, 23..=25 | 30..=32 | 39) {
                if let Err(source) = crate::rows::check_rows_header(raw_type, event.data()) {
                    return Err(MyError::BadEvent { file: current_file.to_string(), pos: start_pos, source });
                }
            }
            let data = match event.read_data() {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(source) => return Err(MyError::BadEvent { file: current_file.to_string(), pos: start_pos, source }),
            };
            match data {
                EventData::FormatDescriptionEvent(_) => seen_format = true,
                EventData::RotateEvent(r) => {
                    // The rotate that opens a stream comes before the format
                    // description, so the reader has not learnt to strip
                    // checksums yet: its name ends with the 4 checksum bytes.
                    let raw = r.name_raw();
                    let name = if !seen_format && checksums && raw.len() > 4 { &raw[..raw.len() - 4] } else { raw };
                    current_file = Arc::from(String::from_utf8_lossy(name).as_ref());
                    file_end = r.position();
                    // Positions order events by binlog file number. A GTID
                    // resume on a server whose numbering is behind the saved
                    // position (a failover) would sort new changes before ones
                    // the sinks hold and get them skipped as replays: stop instead.
                    if by_gtid && file_seq(&current_file) < file_seq(&file) {
                        return Err(MyError::GtidBehind { landed: current_file.to_string(), saved: file });
                    }
                }
                EventData::GtidEvent(g) => {
                    tx = Some(Tx {
                        pos: start_pos,
                        seq: 0,
                        origin,
                        gtid: Some(Arc::from(mysql_gtid(&g.sid(), g.gno()).as_str())),
                        explicit: false,
                    });
                }
                EventData::QueryEvent(qe) => {
                    let query = qe.query().trim().to_string();
                    let upper = query.to_uppercase();
                    if upper == "BEGIN" {
                        match &mut tx {
                            Some(t) => t.explicit = true,
                            None => tx = Some(Tx { pos: start_pos, seq: 0, origin, gtid: None, explicit: true }),
                        }
                        continue;
                    }
                    if upper.starts_with("XA ") {
                        return Err(MyError::Xa { file: current_file.to_string(), pos: start_pos });
                    }
                    // Inside a transaction, savepoints neither end it nor change tables.
                    let in_explicit = tx.as_ref().is_some_and(|t| t.explicit);
                    if in_explicit && !matches!(upper.as_str(), "COMMIT" | "ROLLBACK") {
                        continue;
                    }
                    if upper != "COMMIT" {
                        // DDL (its own transaction): columns may have changed.
                        tables.clear();
                        if let Some(t) = truncated_table(&query, &qe.schema()) {
                            if let Some(sel) = self.selected.iter().find(|s| s.id == t) {
                                let mut t_state = tx.take().unwrap_or(Tx { pos: start_pos, seq: 0, origin, gtid: None, explicit: false });
                                let cols = within("reading the table's columns", load_columns(&mut catalog, &sel.id)).await?;
                                let schema = Arc::new(schema_of(&sel.id, &cols));
                                t_state.seq += 1;
                                batch.push(SourceItem::Event(self.event(
                                    Op::Truncate,
                                    &schema,
                                    None,
                                    None,
                                    &current_file,
                                    &t_state,
                                    0,
                                    i64::from(header.timestamp()),
                                )));
                                tx = Some(t_state);
                            }
                        }
                    }
                    batch.push(end_transaction(&mut tx, &mut tracker, &current_file, end_pos));
                    if out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                        return Ok(RunEnd::Stopped);
                    }
                }
                EventData::XidEvent(_) => {
                    batch.push(end_transaction(&mut tx, &mut tracker, &current_file, end_pos));
                    if out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                        return Ok(RunEnd::Stopped);
                    }
                    // Pausing: the pause point is where the read's last transaction ends.
                    if reached(&current_file, end_pos) {
                        return Ok(RunEnd::ReachedUntil);
                    }
                }
                EventData::RowsEvent(rows) => {
                    let Some(tme) = stream.get_tme(rows.table_id()) else {
                        return Err(MyError::NoTableMap { file: current_file.to_string(), pos: start_pos });
                    };
                    let id = TableId::new(tme.database_name().to_string(), tme.table_name().to_string());
                    if !self.selected.iter().any(|s| s.id == id) {
                        continue;
                    }
                    if !tables.contains_key(&id) {
                        let columns = within("reading the table's columns", load_columns(&mut catalog, &id)).await?;
                        tables.insert(id.clone(), Table { schema: Arc::new(schema_of(&id, &columns)), columns });
                    }
                    let tme = stream.get_tme(rows.table_id()).expect("checked above");
                    let table = &tables[&id];
                    let t = tx.get_or_insert(Tx { pos: start_pos, seq: 0, origin, gtid: None, explicit: false });
                    let ts = i64::from(header.timestamp());
                    let op = match &rows {
                        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Create,
                        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
                        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
                        RowsEventData::PartialUpdateRowsEvent(_) => return Err(MyError::PartialJson),
                    };
                    let bad = |source: std::io::Error| MyError::BadRow { file: current_file.to_string(), pos: start_pos, source };
                    let shape = shapes.of(tme).map_err(bad)?;
                    let layout = layout_of(table, &shape);
                    let decoded = crate::rows::rows(&rows, &shape).map_err(bad)?;
                    if self.skipped.contains(&id) {
                        // Numbered all the same: positions do not depend on what is skipped.
                        t.seq += decoded.len() as u64;
                        continue;
                    }
                    for (n, (before, after)) in decoded.into_iter().enumerate() {
                        let (schema, before) = match before {
                            Some(r) => {
                                let (s, v) = decode_row(table, &layout, r)?;
                                (s, Some(v))
                            }
                            None => (table.schema.clone(), None),
                        };
                        let (schema, after) = match after {
                            Some(r) => {
                                let (s, v) = decode_row(table, &layout, r)?;
                                (s, Some(v))
                            }
                            None => (schema, None),
                        };
                        t.seq += 1;
                        batch.push(SourceItem::Event(self.event(op, &schema, before, after, &current_file, t, n as u32, ts)));
                    }
                    batch_bytes += header.event_size() as usize;
                    if batch.len() >= BATCH || batch_bytes >= riffle_core::source::BATCH_BYTES {
                        batch_bytes = 0;
                        if out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
                            return Ok(RunEnd::Stopped);
                        }
                    }
                }
                EventData::HeartbeatEvent if until_now && tx.is_none() => return Ok(RunEnd::ReachedUntil),
                // Idle and past the pause point: everything before it was sent.
                EventData::HeartbeatEvent if tx.is_none() && reached(&current_file, end_pos) => {
                    let _ = out.send(std::mem::take(&mut batch)).await;
                    return Ok(RunEnd::ReachedUntil);
                }
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        op: Op,
        schema: &Arc<TableSchema>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        file: &Arc<str>,
        t: &Tx,
        row: u32,
        ts_secs: i64,
    ) -> ChangeEvent {
        ChangeEvent {
            op,
            table: schema.clone(),
            before_image: if before.is_some() { BeforeImage::Full } else { BeforeImage::None },
            before,
            after,
            source: SourceInfo {
                connector: self.ctx.connector,
                name: self.ctx.name.clone(),
                db: Arc::from(schema.id.schema.as_str()),
                tx_id: None,
                ts_ms: ts_secs * 1000,
                ts_us: ts_secs * 1_000_000,
                lsn: None,
                binlog: Some(BinlogCoords { file: file.clone(), pos: t.pos, row, server_id: t.origin, gtid: t.gtid.clone() }),
                snapshot: riffle_core::SnapshotMark::False,
            },
            position: Position::Mysql(MyPosition { file: file_seq(file), pos: t.pos, phase: Phase::Stream, seq: t.seq }),
            ts_ms: now_us() / 1000,
        }
    }
}

/// Ends the current transaction: the checkpoint just past its commit, with
/// the GTID position there.
fn end_transaction(tx: &mut Option<Tx>, tracker: &mut crate::gtid::Tracker, file: &str, end_pos: u64) -> SourceItem {
    if let Some(g) = tx.take().and_then(|t| t.gtid) {
        // `d-s-n` (MariaDB) or `uuid:n` (MySQL): add it to the position.
        if let Some((uuid, gno)) = g.rsplit_once(':') {
            if let Ok(gno) = gno.parse() {
                tracker.mysql(uuid, gno);
            }
        } else {
            let mut f = g.split('-');
            if let (Some(Ok(d)), Some(Ok(s)), Some(Ok(n))) = (f.next().map(str::parse), f.next().map(str::parse), f.next().map(str::parse))
            {
                tracker.mariadb(d, s, n);
            }
        }
    }
    SourceItem::Checkpoint(Offset::Mysql { file: file.to_string(), pos: end_pos, gtid: tracker.position() })
}

/// Is MySQL's `gtid_mode` on (so the server accepts a GTID set to resume from)?
async fn mysql_gtid_mode_on(conn: &mut mysql_async::Conn) -> bool {
    let mode: Option<String> = conn.query_first("SELECT @@global.gtid_mode").await.ok().flatten();
    mode.is_some_and(|m| m.eq_ignore_ascii_case("ON"))
}

/// MySQL's GTID text: the server uuid and the transaction number.
fn mysql_gtid(sid: &[u8; 16], gno: u64) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}:{gno}", hex(&sid[0..4]), hex(&sid[4..6]), hex(&sid[6..8]), hex(&sid[8..10]), hex(&sid[10..16]))
}

/// MariaDB's GTID event body: sequence number (8 bytes), domain (4 bytes).
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<String> {
    let seq_no = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some(format!("{domain}-{server_id}-{seq_no}"))
}

/// `TRUNCATE [TABLE] [db.]name` → the table.
fn truncated_table(query: &str, default_db: &str) -> Option<TableId> {
    let mut words = query.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("truncate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("table") {
        name = words.next()?;
    }
    let name = name.trim_end_matches(';').replace('`', "");
    Some(match name.split_once('.') {
        Some((db, t)) => TableId::new(db, t),
        None => TableId::new(default_db, name),
    })
}

/// How the images of one rows event map to columns: the catalog's (the
/// usual case), or their own shape when the table changed since (a DDL later
/// in the binlog than these rows).
pub(crate) enum Layout {
    Catalog,
    Own(Arc<TableSchema>, Vec<MyColumn>),
}

/// Works out an event's layout from what the table map says (with
/// `binlog_row_metadata=FULL`): column names, matched with the catalog's
/// (without names, by position), and ENUM/SET labels as they were when the
/// rows were written. A column the catalog no longer has keeps the binlog's
/// name and a type inferred from its value.
pub(crate) fn layout_of(table: &Table, shape: &crate::rows::Shape) -> Layout {
    let names = &shape.names;
    let same_names =
        names.is_empty() || (names.len() == table.columns.len() && names.iter().zip(&table.columns).all(|(n, t)| *n == t.column.name));
    let mut columns: Vec<MyColumn> = if same_names {
        table.columns.clone()
    } else {
        names
            .iter()
            .map(|name| {
                table.columns.iter().find(|t| t.column.name == *name).cloned().unwrap_or_else(|| {
                    column_type(name.clone(), "unknown", "unknown", true, false, None, None, None, Some("utf8mb4".into()))
                })
            })
            .collect()
    };
    let mut relabelled = false;
    for (c, labels) in columns.iter_mut().zip(&shape.labels) {
        if let Some(labels) = labels.as_ref().filter(|l| **l != c.labels) {
            c.labels = labels.clone();
            relabelled = true;
        }
    }
    if same_names && !relabelled {
        return Layout::Catalog;
    }
    Layout::Own(Arc::new(schema_of(&table.schema.id, &columns)), columns)
}

/// Decodes one row image with its event's layout.
pub(crate) fn decode_row(
    table: &Table,
    layout: &Layout,
    values: Vec<mysql_async::Value>,
) -> Result<(Arc<TableSchema>, Vec<Value>), MyError> {
    let (schema, columns) = match layout {
        Layout::Catalog => (&table.schema, &table.columns),
        Layout::Own(schema, columns) => (schema, columns),
    };
    if values.len() != columns.len() {
        return Err(MyError::RowWidth { table: table.schema.id.clone(), values: values.len(), columns: columns.len() });
    }
    let mut out = Vec::with_capacity(values.len());
    for (v, c) in values.into_iter().zip(columns) {
        out.push(from_binlog(c, v)?);
    }
    Ok((schema.clone(), out))
}

/// The 64-bit end of an event from its header's 32-bit `log_pos`, given
/// where the previous event in the same file ended. A binlog file passes
/// 4 GiB when one transaction is that large, and `log_pos` then wraps:
/// positions in a file only grow, by less than 4 GiB an event (the server's
/// max_allowed_packet is at most 1 GiB), so the wrap is where `log_pos`
/// falls below the previous end's low 32 bits.
pub(crate) fn widen(previous_end: u64, log_pos: u32) -> u64 {
    let candidate = (previous_end & !u64::from(u32::MAX)) | u64::from(log_pos);
    if candidate < previous_end {
        candidate + (1 << 32)
    } else {
        candidate
    }
}

/// The binlog file after `file` (`mysql-bin.000123` → `mysql-bin.000124`),
/// its number as wide as the original's at least.
pub(crate) fn next_file(file: &str) -> String {
    let (base, digits) = file.rsplit_once('.').unwrap_or((file, "0"));
    let next = digits.parse::<u64>().unwrap_or(0) + 1;
    format!("{base}.{next:0width$}", width = digits.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6 GiB transaction in one file, as its events' 32-bit log_pos
    /// report it: the widened ends grow past 4 GiB without a jump back, and
    /// a resume from past 4 GiB goes to the next file.
    #[test]
    fn positions_past_4_gib_in_one_binlog_file() {
        const GIB: u64 = 1 << 30;
        let mut end = 4u64;
        let mut ends = Vec::new();
        // Events of up to 1 GiB (max_allowed_packet's ceiling) and small ones.
        for size in [100, GIB, GIB, GIB, GIB - 50, 300, GIB, GIB, 64, 31] {
            let true_end = end + size;
            end = widen(end, true_end as u32);
            assert_eq!(end, true_end);
            ends.push(end);
        }
        assert!(ends.windows(2).all(|w| w[0] < w[1]));
        assert!(end > 6 * GIB);
        assert_eq!(widen(u64::from(u32::MAX) - 10, 5), (1 << 32) + 5);
        assert_eq!(widen(4, 4), 4);
        assert_eq!(next_file("mysql-bin.000123"), "mysql-bin.000124");
        assert_eq!(next_file("mysql-bin.999999"), "mysql-bin.1000000");
        assert_eq!(next_file("log.9"), "log.10");
    }

    #[test]
    fn gtids_read_from_event_bytes() {
        // MySQL GTID_EVENT: server uuid 3E11FA47-71CA-11E1-9E33-C80AA9429562, gno 23.
        let sid = [0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62];
        assert_eq!(mysql_gtid(&sid, 23), "3e11fa47-71ca-11e1-9e33-c80aa9429562:23");
        // MariaDB GTID_EVENT body: seq_no 614, domain 0, then flags.
        let mut body = 614u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        assert_eq!(mariadb_gtid(&body, 1).as_deref(), Some("0-1-614"));
        assert_eq!(mariadb_gtid(&body[..5], 1), None);
    }

    #[test]
    fn truncate_statements_name_their_table() {
        assert_eq!(truncated_table("TRUNCATE TABLE `t`", "shop"), Some(TableId::new("shop", "t")));
        assert_eq!(truncated_table("truncate other.t2;", "shop"), Some(TableId::new("other", "t2")));
        assert_eq!(truncated_table("ALTER TABLE t ADD c int", "shop"), None);
    }
}
