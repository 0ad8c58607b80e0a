//! The change event, in Debezium's vocabulary.

use crate::position::Position;
use crate::schema::TableSchema;
use crate::value::Value;
use std::sync::Arc;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `r`: a row read by the snapshot.
    Read,
    /// `c`: an insert.
    Create,
    /// `u`: an update.
    Update,
    /// `d`: a delete.
    Delete,
    /// `t`: the table was truncated.
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// How much of the before image the source sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeImage {
    /// No before image: reads, inserts, truncates.
    None,
    /// Every column (Postgres `REPLICA IDENTITY FULL`).
    Full,
    /// The key columns only; the others are [`Value::Unavailable`].
    Key,
}

impl BeforeImage {
    pub fn name(self) -> &'static str {
        match self {
            BeforeImage::None => "none",
            BeforeImage::Full => "full",
            BeforeImage::Key => "key",
        }
    }
}

/// Where the change came from: the envelope's `source` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// `postgresql`, `mysql`, `mariadb`.
    pub connector: &'static str,
    /// The pipeline's name (Debezium's topic prefix / server name).
    pub name: Arc<str>,
    /// The source database.
    pub db: Arc<str>,
    /// Transaction id, when the change was made in one.
    pub tx_id: Option<u64>,
    /// Commit time in milliseconds since the epoch (snapshot: when the
    /// snapshot started).
    pub ts_ms: i64,
    /// Commit time in microseconds since the epoch, for consumers that
    /// need the source's full precision.
    pub ts_us: i64,
    /// The log location of the change itself, when the source sends one.
    pub lsn: Option<crate::position::Lsn>,
    /// MySQL/MariaDB: where in the binlog the change is.
    pub binlog: Option<BinlogCoords>,
    /// Debezium's `snapshot` field: where a snapshot read stands in its
    /// snapshot. Sources send [`SnapshotMark::True`] for every read and
    /// [`SnapshotMark::False`] for changes; the pipeline marks the first and
    /// last reads of an initial snapshot, and reads taken while streaming.
    pub snapshot: SnapshotMark,
}

/// Debezium's `source.snapshot` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMark {
    /// A change read from the log.
    False,
    /// A snapshot read.
    True,
    /// The initial snapshot's first read.
    First,
    /// The first read of a table after the first.
    FirstInDataCollection,
    /// The last read of a table before the last.
    LastInDataCollection,
    /// The initial snapshot's last read.
    Last,
    /// A read taken while the log is streamed (a resumed snapshot, a table
    /// added to the selection, a `riffle snapshot` request or signal).
    Incremental,
}

impl SnapshotMark {
    /// What a source sends for an event of `op`.
    pub fn of(op: Op) -> SnapshotMark {
        if op == Op::Read {
            SnapshotMark::True
        } else {
            SnapshotMark::False
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SnapshotMark::False => "false",
            SnapshotMark::True => "true",
            SnapshotMark::First => "first",
            SnapshotMark::FirstInDataCollection => "first_in_data_collection",
            SnapshotMark::LastInDataCollection => "last_in_data_collection",
            SnapshotMark::Last => "last",
            SnapshotMark::Incremental => "incremental",
        }
    }
}

/// Debezium's MySQL `source` fields.
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogCoords {
    pub file: Arc<str>,
    /// Offset of the transaction's first event (snapshot: the snapshot's position).
    pub pos: u64,
    /// The row's number within its rows event.
    pub row: u32,
    pub server_id: u32,
    /// The transaction's GTID, when GTIDs are on.
    pub gtid: Option<Arc<str>>,
}

/// One change to one row (or, for truncates, one table).
///
/// `before` and `after` are aligned with `table.columns`. Values the source
/// did not send are [`Value::Unavailable`], never `Null`.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub op: Op,
    pub table: Arc<TableSchema>,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    pub before_image: BeforeImage,
    pub source: SourceInfo,
    pub position: Position,
    /// When riffle processed the event, milliseconds since the epoch.
    pub ts_ms: i64,
}

impl ChangeEvent {
    pub fn is_snapshot(&self) -> bool {
        self.op == Op::Read
    }

    /// The row the flat formats show in the table's own columns: the after
    /// image, or for deletes the deleted row.
    pub fn row(&self) -> Option<&[Value]> {
        self.after.as_deref().or(self.before.as_deref())
    }
}
