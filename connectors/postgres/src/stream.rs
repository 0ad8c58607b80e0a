//! Streaming: pgoutput messages from the slot become change events.
//!
//! Each transaction arrives whole, between `Begin` and `Commit` (protocol
//! version 1 sends a transaction when it commits). Its events are positioned
//! at the commit LSN and numbered in order, and a checkpoint at the commit's
//! end LSN follows them: resuming there makes the server skip every
//! transaction already seen. The slot's confirmed flush LSN moves only to
//! what the pipeline reports durable.

use crate::catalog;
use crate::connect::ConnectParams;
use crate::error::{Col, PgError};
use crate::replication::client::{ReplicationClient, ReplicationMessage};
use crate::replication::pgoutput::{self, Message, RelationColumn, TupleValue};
use crate::replication::PG_EPOCH_OFFSET_US;
use crate::snapshot::{now_us, Context, BATCH};
use crate::types::{decode_text, TypeCache};
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{BeforeImage, ChangeEvent, Column, Lsn, Offset, Op, PgPosition, Phase, Position, SourceInfo, SourceItem};
use riffle_core::{TableId, TableSchema, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often riffle reports its position when nothing else prompts it; well
/// under the server's default `wal_sender_timeout` of 60 s. Each report asks
/// the server to answer at once, so a quiet stream still hears from it.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How long the stream may go without a message from the server, and any
/// call made while streaming may take, before the connection is presumed
/// dead and the run retried: a network path that drops packets silently
/// never closes the socket, and TCP alone would notice only after ~15 min.
/// Six pings unanswered, as long as the server's own default
/// `wal_sender_timeout`: a walsender busy decoding a large transaction may
/// answer late, and must not be taken for a dead one.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// `fut`, or [`PgError::Silent`] after [`SILENCE_LIMIT`].
async fn within<T>(what: &'static str, fut: impl std::future::Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
    tokio::time::timeout(SILENCE_LIMIT, fut).await.map_err(|_| PgError::Silent { what, after: SILENCE_LIMIT })?
}

/// Hands items to the pipeline. The time it waits there (slow sinks, a long
/// commit) is not the server's silence, so the clock restarts after it.
async fn hand_over(out: &mpsc::Sender<Vec<SourceItem>>, items: Vec<SourceItem>, heard: &mut tokio::time::Instant) -> bool {
    let delivered = out.send(items).await.is_ok();
    *heard = tokio::time::Instant::now();
    delivered
}

/// Notes when the server was last heard from, and passes `msg` on.
fn heard<T>(at: &mut tokio::time::Instant, msg: T) -> T {
    *at = tokio::time::Instant::now();
    msg
}

struct Relation {
    schema: Arc<TableSchema>,
    /// Which columns the server sends in a key (`K`) tuple.
    identity: Vec<bool>,
}

struct Transaction {
    commit_lsn: Lsn,
    xid: u32,
    ts_us: i64,
    seq: u64,
}

pub struct Stream {
    catalog: tokio_postgres::Client,
    ctx: Context,
    until: Option<Lsn>,
    stats: Arc<SourceStats>,
    heartbeat: Option<Duration>,
    types: TypeCache,
    relations: HashMap<u32, Relation>,
    /// Tables whose changes are not sent: a snapshot of them is read at
    /// the pause point, and holds every change before it.
    skipped: Vec<TableId>,
}

fn closed() -> Result<RunEnd, PgError> {
    Ok(RunEnd::Stopped)
}

impl Stream {
    pub fn new(
        catalog: tokio_postgres::Client,
        ctx: Context,
        until: Option<Lsn>,
        stats: Arc<SourceStats>,
        heartbeat: Option<Duration>,
    ) -> Self {
        Stream { catalog, ctx, until, stats, heartbeat, types: TypeCache::default(), relations: HashMap::new(), skipped: Vec::new() }
    }

    /// Leaves out the changes of `tables` until the stream is run without
    /// a pause point: tables a snapshot at the pause point reads whole
    /// (added to the selection, or with no chunk read yet), so their output
    /// starts with that snapshot rather than with changes to rows never shown.
    pub fn skip_before_pause(&mut self, tables: Vec<TableId>) {
        self.skipped = tables;
    }

    /// The regular session the stream reads schemas on.
    pub fn catalog(&self) -> &tokio_postgres::Client {
        &self.catalog
    }

    /// Streams from `start`. With `pause`, stops once every transaction
    /// that commits before it has been sent, before any that commits at or
    /// after it (and ignores `--until`): the caller reads a snapshot
    /// consistent with `pause` there, then streams on from it.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &mut self,
        params: &ConnectParams,
        slot: &str,
        start: Lsn,
        pause: Option<Lsn>,
        out: mpsc::Sender<Vec<SourceItem>>,
        mut durable: watch::Receiver<Option<Offset>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, PgError> {
        let mut repl = ReplicationClient::connect(params).await?;
        if let Some(pid) = repl.backend_pid().and_then(|p| u64::try_from(p).ok()) {
            self.stats.set_session(pid);
        }
        within("starting replication", repl.start_replication(slot, start, slot)).await?;
        let mut last_heard = tokio::time::Instant::now();
        tracing::info!(slot, start = %start, "streaming started");
        let mut received = start;
        let mut flushed = start;
        let mut last_checkpoint = start;
        let mut batch: Vec<SourceItem> = Vec::with_capacity(BATCH);
        // Row data in `batch` (pgoutput bytes): a batch of wide rows is handed on early.
        let mut batch_bytes = 0usize;
        let mut tx: Option<Transaction> = None;
        let mut stopping = *stop.borrow();
        let until = if pause.is_some() { None } else { self.until };
        if pause.is_none() {
            self.skipped.clear();
        }
        // Pausing waits for the server to say it has sent everything before
        // the pause point: ask it often.
        let mut timer = tokio::time::interval(if pause.is_some() { Duration::from_millis(100) } else { STATUS_INTERVAL });
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.heartbeat.unwrap_or(Duration::from_secs(3600)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let end = loop {
            if stopping && tx.is_none() {
                break RunEnd::Stopped;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    stopping = changed.is_err() || *stop.borrow();
                }
                // The pipeline gave up on this run (a sink failed): stop now,
                // even if the server is quiet.
                _ = out.closed() => return closed(),
                changed = durable.changed() => {
                    if changed.is_err() {
                        return closed();
                    }
                    if let Some(Offset::Postgres { lsn }) = *durable.borrow_and_update() {
                        flushed = flushed.max(lsn);
                    }
                    within("reporting the position", repl.send_status(received, flushed, false)).await?;
                }
                _ = timer.tick() => {
                    if last_heard.elapsed() >= SILENCE_LIMIT {
                        return Err(PgError::Silent { what: "replication stream", after: SILENCE_LIMIT });
                    }
                    within("reporting the position", repl.send_status(received, flushed, true)).await?;
                }
                _ = heartbeat.tick(), if self.heartbeat.is_some() => {
                    // Non-transactional: it reaches the WAL at once and moves
                    // the walsender past it, which then reports a position the
                    // slot can be confirmed at.
                    let beat = self.catalog.execute("SELECT pg_logical_emit_message(false, 'riffle_heartbeat', '')", &[]);
                    within("heartbeat", async { beat.await.map_err(PgError::session("heartbeat")) }).await?;
                }
                msg = repl.next() => match heard(&mut last_heard, msg)? {
                    None => return Err(PgError::StreamEnded),
                    Some(ReplicationMessage::Keepalive { wal_end, reply_requested }) => {
                        received = received.max(wal_end);
                        self.stats.saw(wal_end.0);
                        // Between transactions everything before wal_end has
                        // been sent, so it is a safe place to resume from; saving
                        // it lets the slot release WAL written by other
                        // databases or unselected tables.
                        // Pausing, a checkpoint never passes the pause point:
                        // the snapshot read there is positioned at it.
                        let wal_end = pause.map_or(wal_end, |p| wal_end.min(p));
                        if tx.is_none() && wal_end > last_checkpoint {
                            last_checkpoint = wal_end;
                            if !hand_over(&out, vec![SourceItem::Checkpoint(Offset::Postgres { lsn: wal_end })], &mut last_heard).await {
                                return closed();
                            }
                            if until.is_some_and(|u| wal_end >= u) {
                                break RunEnd::ReachedUntil;
                            }
                        }
                        if tx.is_none() && pause.is_some_and(|p| wal_end >= p) {
                            return Ok(RunEnd::ReachedUntil);
                        }
                        if reply_requested {
                            within("reporting the position", repl.send_status(received, flushed, false)).await?;
                        }
                    }
                    Some(ReplicationMessage::XLogData { start: at, wal_end, data }) => {
                        received = received.max(wal_end);
                        self.stats.saw(wal_end.0);
                        let size = data.len();
                        match pgoutput::decode(data)? {
                            Message::Begin { final_lsn, commit_ts_us, xid } => {
                                if pause.is_some_and(|p| final_lsn >= p) {
                                    // Sent again when the stream goes on from the pause point.
                                    return Ok(RunEnd::ReachedUntil);
                                }
                                tx = Some(Transaction { commit_lsn: final_lsn, xid, ts_us: commit_ts_us.saturating_add(PG_EPOCH_OFFSET_US), seq: 0 });
                            }
                            Message::Commit { end_lsn, .. } => {
                                tx = None;
                                last_checkpoint = last_checkpoint.max(end_lsn);
                                batch.push(SourceItem::Checkpoint(Offset::Postgres { lsn: end_lsn }));
                                if !hand_over(&out, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &mut last_heard).await {
                                    return closed();
                                }
                                if until.is_some_and(|u| end_lsn >= u) {
                                    break RunEnd::ReachedUntil;
                                }
                            }
                            Message::Relation { oid, namespace, name, replica_identity, columns } => {
                                within("reading the table's schema", self.relation(oid, TableId::new(namespace, name), replica_identity, &columns))
                                    .await?;
                            }
                            change => {
                                let t = tx.as_mut().ok_or_else(|| PgError::Unexpected("pgoutput sent a change outside a transaction".into()))?;
                                self.change(change, t, at, &mut batch)?;
                                batch_bytes += size;
                                if batch.len() >= BATCH || batch_bytes >= riffle_core::source::BATCH_BYTES {
                                    batch_bytes = 0;
                                    if !hand_over(&out, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &mut last_heard).await {
                                        return closed();
                                    }
                                }
                            }
                        }
                    }
                },
            }
        };
        // Let the pipeline commit what it has, then confirm it to the slot
        // so the server can release that WAL now rather than next run.
        drop(out);
        let wait = async {
            loop {
                if let Some(Offset::Postgres { lsn }) = *durable.borrow_and_update() {
                    flushed = flushed.max(lsn);
                }
                if flushed >= last_checkpoint || durable.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        within("reporting the position", repl.send_status(received, flushed, false)).await?;
        Ok(end)
    }

    /// A Relation message: the table's columns as of the changes that follow.
    async fn relation(&mut self, oid: u32, id: TableId, replica_identity: u8, columns: &[RelationColumn]) -> Result<(), PgError> {
        let oids: Vec<u32> = columns.iter().map(|c| c.type_oid).collect();
        self.types.load(&self.catalog, &oids).await?;
        let pk = catalog::key_columns(&self.catalog, oid).await?;
        // pgoutput does not say which columns are NOT NULL: the catalog does
        // (a table dropped meanwhile: none), so a table's schema is the same
        // in its snapshot and its stream.
        let not_null = catalog::not_null_columns(&self.catalog, oid).await?;
        let names: Vec<String> = columns.iter().map(|c| format!("{}", c.type_oid)).collect();
        let formatted = self
            .catalog
            .query(
                "SELECT format_type(t, m) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS x(t, m, i) ORDER BY i",
                &[&oids, &columns.iter().map(|c| c.type_modifier).collect::<Vec<i32>>()],
            )
            .await
            .ok()
            .and_then(|rows| rows.iter().map(|r| r.col::<String>(0)).collect::<Result<Vec<_>, _>>().ok())
            .unwrap_or(names);
        let cols: Vec<Column> = columns
            .iter()
            .zip(formatted)
            .map(|(c, source_type)| Column {
                name: c.name.clone(),
                source_type,
                data_type: self.types.data_type(c.type_oid, c.type_modifier),
                nullable: !pk.contains(&c.name) && !not_null.contains(&c.name),
                labels: self.types.labels(c.type_oid),
            })
            .collect();
        let key: Vec<usize> = cols.iter().enumerate().filter(|(_, c)| pk.contains(&c.name)).map(|(i, _)| i).collect();
        let schema = TableSchema { id, columns: cols, key, full_before_image: replica_identity == b'f' };
        tracing::debug!(table = %schema.id, columns = schema.columns.len(), "relation");
        let names = |s: &TableSchema| s.key.iter().map(|&i| s.columns[i].name.clone()).collect::<Vec<String>>();
        if let Some(before) = self.relations.get(&oid).map(|r| names(&r.schema)).filter(|before| *before != names(&schema)) {
            tracing::warn!(
                table = %schema.id,
                was = ?before,
                now = ?names(&schema),
                "the key of the table's events changed (its primary key, replica identity or unique indexes changed): consumers \
                 that apply events by key see the rows under the new columns from here on"
            );
        }
        self.relations.insert(oid, Relation { schema: Arc::new(schema), identity: columns.iter().map(|c| c.key).collect() });
        Ok(())
    }

    fn relation_of(&self, oid: u32) -> Result<&Relation, PgError> {
        self.relations
            .get(&oid)
            .ok_or_else(|| PgError::Unexpected(format!("pgoutput sent a change for relation {oid} before describing it")))
    }

    fn change(&self, msg: Message, t: &mut Transaction, at: Lsn, batch: &mut Vec<SourceItem>) -> Result<(), PgError> {
        let oid = match &msg {
            Message::Insert { oid, .. } | Message::Update { oid, .. } | Message::Delete { oid, .. } => Some(*oid),
            _ => None,
        };
        if let Some(oid) = oid.filter(|_| !self.skipped.is_empty()) {
            if self.skipped.contains(&self.relation_of(oid)?.schema.id) {
                // Numbered all the same: positions do not depend on what is skipped.
                t.seq += 1;
                return Ok(());
            }
        }
        match msg {
            Message::Insert { oid, new } => {
                let rel = self.relation_of(oid)?;
                let after = decode_tuple(&rel.schema, &new, None)?;
                batch.push(SourceItem::Event(self.event(rel, Op::Create, None, Some(after), BeforeImage::None, t, at)));
            }
            Message::Update { oid, old, new } => {
                let rel = self.relation_of(oid)?;
                let mut after = decode_tuple(&rel.schema, &new, None)?;
                let (before, image) = match old {
                    Some((b'O', old)) => (Some(decode_tuple(&rel.schema, &old, None)?), BeforeImage::Full),
                    Some((_, key)) => (Some(decode_tuple(&rel.schema, &key, Some(&rel.identity))?), BeforeImage::Key),
                    // The key did not change: the before image's key is the new row's.
                    None if rel.identity.iter().any(|k| *k) => (Some(key_only(&after, &rel.identity)), BeforeImage::Key),
                    None => (None, BeforeImage::None),
                };
                // An unchanged TOASTed value equals the old one, when it was sent.
                if let Some(b) = &before {
                    for (a, b) in after.iter_mut().zip(b) {
                        if *a == Value::Unavailable && *b != Value::Unavailable {
                            *a = b.clone();
                        }
                    }
                }
                batch.push(SourceItem::Event(self.event(rel, Op::Update, before, Some(after), image, t, at)));
            }
            Message::Delete { oid, old: (kind, old) } => {
                let rel = self.relation_of(oid)?;
                let (before, image) = if kind == b'O' {
                    (decode_tuple(&rel.schema, &old, None)?, BeforeImage::Full)
                } else {
                    (decode_tuple(&rel.schema, &old, Some(&rel.identity))?, BeforeImage::Key)
                };
                batch.push(SourceItem::Event(self.event(rel, Op::Delete, Some(before), None, image, t, at)));
            }
            Message::Truncate { oids, .. } => {
                for oid in oids {
                    let rel = self.relation_of(oid)?;
                    if self.skipped.contains(&rel.schema.id) {
                        t.seq += 1;
                        continue;
                    }
                    batch.push(SourceItem::Event(self.event(rel, Op::Truncate, None, None, BeforeImage::None, t, at)));
                }
            }
            _ => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        rel: &Relation,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        before_image: BeforeImage,
        t: &mut Transaction,
        at: Lsn,
    ) -> ChangeEvent {
        t.seq += 1;
        ChangeEvent {
            op,
            table: rel.schema.clone(),
            before,
            after,
            before_image,
            source: SourceInfo {
                connector: "postgresql",
                name: self.ctx.name.clone(),
                db: self.ctx.db.clone(),
                tx_id: Some(u64::from(t.xid)),
                ts_ms: t.ts_us.div_euclid(1000),
                ts_us: t.ts_us,
                lsn: Some(at),
                binlog: None,
                snapshot: riffle_core::SnapshotMark::False,
            },
            position: Position::Postgres(PgPosition { lsn: t.commit_lsn, phase: Phase::Stream, seq: t.seq }),
            ts_ms: now_us() / 1000,
        }
    }
}

fn key_only(row: &[Value], identity: &[bool]) -> Vec<Value> {
    row.iter().zip(identity).map(|(v, k)| if *k { v.clone() } else { Value::Unavailable }).collect()
}

/// Decodes a tuple; with `identity`, columns outside it were not sent (the
/// server fills them with nulls) and become [`Value::Unavailable`].
pub(crate) fn decode_tuple(schema: &TableSchema, tuple: &[TupleValue], identity: Option<&[bool]>) -> Result<Vec<Value>, PgError> {
    if tuple.len() != schema.columns.len() {
        return Err(PgError::TupleColumns { table: schema.id.clone(), sent: tuple.len(), expected: schema.columns.len() });
    }
    tuple
        .iter()
        .zip(&schema.columns)
        .enumerate()
        .map(|(i, (v, c))| {
            if identity.is_some_and(|k| !k[i]) {
                return Ok(Value::Unavailable);
            }
            match v {
                TupleValue::Null => Ok(Value::Null),
                TupleValue::UnchangedToast => Ok(Value::Unavailable),
                TupleValue::Text(b) => {
                    let text = std::str::from_utf8(b).map_err(|_| PgError::NotUtf8 { what: "pgoutput sent text" })?;
                    decode_text(&c.data_type, text)
                }
            }
        })
        .collect()
}
