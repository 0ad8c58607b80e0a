//! Positions: where an event sits in the source's log.
//!
//! A [`Position`] totally orders every event a pipeline emits, snapshot rows
//! included, and is deterministic: replaying the log from a saved [`Offset`]
//! gives each event the position it had the first time. Sinks use that to
//! drop replays (a file sink skips what it already committed) and consumers
//! use it to deduplicate. An [`Offset`] is where a source resumes; the state
//! store never lets it move backwards.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A PostgreSQL write-ahead log location, shown as `X/Y` as Postgres does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Text that is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an LSN like 0/16B3748, found {found:?}")]
pub struct ParseLsnError {
    pub found: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLsnError { found: s.to_string() };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether an event comes from the initial snapshot or from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A row read by the snapshot, at the snapshot's consistent point.
    Snapshot,
    /// A change read from the log.
    Stream,
}

/// The position of one Postgres event.
///
/// Snapshot rows sit at the slot's consistent point, numbered in the order
/// they were read; streamed changes sit at their transaction's commit LSN,
/// numbered in the order the transaction made them. Every transaction
/// streamed from a slot commits at or after its consistent point, so
/// ordering by (lsn, phase, seq) puts the snapshot first and then the
/// transactions in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgPosition {
    pub lsn: Lsn,
    pub phase: Phase,
    pub seq: u64,
}

/// The position of one MySQL/MariaDB event: the binlog file's sequence
/// number and the offset where the event's transaction starts, then the
/// event's number within it. Binlogs are written in commit order, so this
/// orders transactions by commit; snapshot rows sit at the binlog position
/// of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MyPosition {
    pub file: u32,
    pub pos: u64,
    pub phase: Phase,
    pub seq: u64,
}

/// The position of one message read from Kafka: its partition (the
/// lane) and its offset there.
///
/// Kafka orders messages only within a partition, and the order in which a
/// consumer sees different partitions' messages is not the same from one
/// read to the next. So a Kafka position is ordered only against positions
/// of its own lane: sinks keep what they committed per lane
/// ([`Position::lane`]), and a replay is recognised lane by lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// [`kafka_lane`] of the topic and partition.
    pub lane: u64,
    pub offset: u64,
}

/// The lane of a Kafka topic's partition: a hash of the topic's name in
/// the high 32 bits, the partition in the low 32, so it is the same in
/// every run (FNV-1a; topic names are at most 249 characters).
pub fn kafka_lane(topic: &str, partition: i32) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (u64::from(h) << 32) | u64::from(partition as u32)
}

/// The position of an event, typed per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Position {
    Postgres(PgPosition),
    Mysql(MyPosition),
    Kafka(KafkaPosition),
}

impl Position {
    /// A string that sorts like the position; used in file names and the
    /// `__position` column. Postgres: `<commit lsn, 16 hex>.<s|x><seq, 10 digits>` (s: snapshot, x: transaction);
    /// Kafka: `k<lane, 16 hex>.<offset, 20 digits>`.
    pub fn key(&self) -> String {
        let mut out = Vec::with_capacity(28);
        self.write_key(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    /// Appends [`Position::key`] to `out` without allocating.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        let (phase, seq) = match self {
            Position::Postgres(p) => {
                write_hex(p.lsn.0, out);
                (p.phase, p.seq)
            }
            Position::Mysql(p) => {
                write_sortable(u64::from(p.file), 6, out);
                out.push(b'.');
                write_sortable(p.pos, 12, out);
                (p.phase, p.seq)
            }
            Position::Kafka(p) => {
                out.push(b'k');
                write_hex(p.lane, out);
                out.push(b'.');
                write_digits(p.offset, 20, out);
                return;
            }
        };
        out.push(b'.');
        // 's' < 'x': a snapshot row sorts before any change at the same place.
        out.push(match phase {
            Phase::Snapshot => b's',
            Phase::Stream => b'x',
        });
        write_sortable(seq, 10, out);
    }

    /// The event's number within its transaction (snapshot: read order;
    /// Kafka: the message's offset).
    pub fn seq(&self) -> u64 {
        match self {
            Position::Postgres(p) => p.seq,
            Position::Mysql(p) => p.seq,
            Position::Kafka(p) => p.offset,
        }
    }

    /// The lane a position is ordered in: `None` for a database's log,
    /// where every position is ordered against every other; a Kafka
    /// partition's [`kafka_lane`] otherwise, ordered only within it.
    pub fn lane(&self) -> Option<u64> {
        match self {
            Position::Kafka(p) => Some(p.lane),
            _ => None,
        }
    }
}

/// `n` as 16 lowercase hex digits.
fn write_hex(n: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// `n` zero-padded to `width` digits; a number that needs more digits is
/// written as `~` and 20 digits, which sorts after every `width`-digit one
/// (`~` follows the digits in ASCII), so keys keep sorting like positions
/// past binlog file 999999 while every key written before stays the same.
fn write_sortable(n: u64, width: usize, out: &mut Vec<u8>) {
    if (n.checked_ilog10().unwrap_or(0) as usize) < width {
        write_digits(n, width, out);
    } else {
        out.push(b'~');
        write_digits(n, 20, out);
    }
}

/// Zero-padded to `width` digits (more digits are kept whole).
fn write_digits(n: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 20];
    let mut v = n;
    let mut len = 0;
    while v > 0 || len == 0 {
        digits[19 - len] = b'0' + (v % 10) as u8;
        v /= 10;
        len += 1;
    }
    for _ in len..width {
        out.push(b'0');
    }
    out.extend_from_slice(&digits[20 - len..]);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Where a source resumes: every change before it is durable in every sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Offset {
    /// Stream from this LSN: the end of the last transaction fully written
    /// (Postgres skips every transaction that committed before it).
    Postgres { lsn: Lsn },
    /// Stream from this binlog file and offset: the end of the last
    /// transaction fully written. `gtid` is the server's GTID position there
    /// (MariaDB `domain-server-seq` list, MySQL `uuid:1-n` set) when GTIDs
    /// are on.
    Mysql { file: String, pos: u64, gtid: Option<String> },
    /// Kafka: the next offset to read in each partition, by `topic/partition`;
    /// `tables`: the tables (`schema.table`) each partition carried events
    /// of, so a restart knows where an enrichment's reference table is.
    Kafka {
        next: std::collections::BTreeMap<String, i64>,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        tables: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    },
}

/// A GTID position as a map from replication domain (MariaDB) or server
/// uuid (MySQL) to the highest sequence number seen there: MariaDB
/// `d-s-n,d-s-n` or MySQL `uuid:1-5:7-9,uuid2:1-3`.
fn gtid_marks(gtid: &str) -> Option<std::collections::BTreeMap<String, u64>> {
    let mut marks = std::collections::BTreeMap::new();
    for part in gtid.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((uuid, intervals)) = part.split_once(':') {
            let top = intervals.split(':').filter_map(|iv| iv.rsplit('-').next()?.parse::<u64>().ok()).max()?;
            marks.insert(uuid.to_lowercase(), top);
        } else {
            let mut f = part.split('-');
            let (domain, _server, seq) = (f.next()?, f.next()?, f.next()?);
            marks.insert(domain.to_string(), seq.parse().ok()?);
        }
    }
    (!marks.is_empty()).then_some(marks)
}

/// A binlog file's number (`mysql-bin.000042` → 42), then its name, for
/// ordering: names without a number sort by name, before numbered ones.
fn file_number(file: &str) -> (u64, &str) {
    (file.rsplit('.').next().and_then(|s| s.parse().ok()).unwrap_or(0), file)
}

impl Offset {
    /// Is `self` strictly before `other` in the source's history? Binlog
    /// file names differ between servers, so two MySQL offsets that both
    /// carry a GTID of the same domain (or server uuid) are compared by it.
    pub fn is_before(&self, other: &Offset) -> bool {
        match (self, other) {
            (Offset::Postgres { lsn: a }, Offset::Postgres { lsn: b }) => a < b,
            (Offset::Mysql { file: fa, pos: pa, gtid: ga }, Offset::Mysql { file: fb, pos: pb, gtid: gb }) => {
                match (ga.as_deref().and_then(gtid_marks), gb.as_deref().and_then(gtid_marks)) {
                    // Compare where both have seen the domain (or server uuid):
                    // behind in one and ahead in none.
                    (Some(a), Some(b)) if a.keys().any(|k| b.contains_key(k)) => {
                        let common: Vec<(&u64, &u64)> = a.iter().filter_map(|(k, x)| b.get(k).map(|y| (x, y))).collect();
                        common.iter().any(|(x, y)| x < y) && common.iter().all(|(x, y)| x <= y)
                    }
                    // By the file's number: `mysql-bin.1000000` follows `mysql-bin.999999`.
                    _ => (file_number(fa), pa) < (file_number(fb), pb),
                }
            }
            // Behind in one partition and ahead in none (a partition only
            // one of them has counts as at its start in the other).
            (Offset::Kafka { next: a, .. }, Offset::Kafka { next: b, .. }) => {
                let at = |m: &std::collections::BTreeMap<String, i64>, k: &String| m.get(k).copied().unwrap_or(0);
                let keys = || a.keys().chain(b.keys());
                keys().any(|k| at(a, k) < at(b, k)) && keys().all(|k| at(a, k) <= at(b, k))
            }
            _ => false,
        }
    }

    /// A number that grows with the offset, for metrics (Kafka: the
    /// messages read, summed over the partitions).
    pub fn as_number(&self) -> u64 {
        match self {
            Offset::Postgres { lsn } => lsn.0,
            Offset::Mysql { file, pos, .. } => (file_number(file).0 << 40) | (pos & ((1 << 40) - 1)),
            Offset::Kafka { next, .. } => next.values().map(|&n| n.max(0) as u64).sum(),
        }
    }

    /// The position of the first change at or after this offset: every
    /// event positioned before it is in a snapshot taken at the offset (a
    /// change at the offset itself is not).
    pub fn boundary(&self) -> Position {
        match self {
            Offset::Postgres { lsn } => Position::Postgres(PgPosition { lsn: *lsn, phase: Phase::Stream, seq: 0 }),
            Offset::Mysql { file, pos, .. } => {
                let file = u32::try_from(file_number(file).0).unwrap_or(u32::MAX);
                Position::Mysql(MyPosition { file, pos: *pos, phase: Phase::Stream, seq: 0 })
            }
            // Kafka has no snapshot: nothing is positioned before its start.
            Offset::Kafka { .. } => Position::Kafka(KafkaPosition { lane: 0, offset: 0 }),
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Postgres { lsn } => write!(f, "lsn {lsn}"),
            Offset::Mysql { file, pos, gtid: Some(g) } => write!(f, "{file}:{pos} (gtid {g})"),
            Offset::Mysql { file, pos, gtid: None } => write!(f, "{file}:{pos}"),
            Offset::Kafka { next, .. } => {
                let parts: Vec<String> = next.iter().map(|(tp, n)| format!("{tp}@{n}")).collect();
                write!(f, "kafka {}", parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_its_text_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
    }

    #[test]
    fn snapshot_rows_sort_before_changes_at_the_same_lsn() {
        let snap = Position::Postgres(PgPosition { lsn: Lsn(100), phase: Phase::Snapshot, seq: 999 });
        let change = Position::Postgres(PgPosition { lsn: Lsn(100), phase: Phase::Stream, seq: 0 });
        let later = Position::Postgres(PgPosition { lsn: Lsn(101), phase: Phase::Stream, seq: 0 });
        assert!(snap < change && change < later);
        assert!(snap.key() < change.key() && change.key() < later.key());
        assert_eq!(later.key(), "0000000000000065.x0000000000");
        let big = Position::Postgres(PgPosition { lsn: Lsn(0x16_B374_D848), phase: Phase::Snapshot, seq: 1_234_567 });
        assert_eq!(big.key(), "00000016b374d848.s0001234567");
        let my = Position::Mysql(MyPosition { file: 3, pos: 1235, phase: Phase::Stream, seq: 2 });
        assert_eq!(my.key(), "000003.000000001235.x0000000002");
        let later_file = Position::Mysql(MyPosition { file: 4, pos: 4, phase: Phase::Snapshot, seq: 1 });
        assert!(my < later_file && my.key() < later_file.key());
    }

    #[test]
    fn mysql_offsets_with_gtids_compare_by_gtid() {
        let at = |file: &str, pos, gtid: Option<&str>| Offset::Mysql { file: file.into(), pos, gtid: gtid.map(Into::into) };
        // After a failover the file names restart; the GTID still orders them.
        assert!(at("bin.000009", 900, Some("0-1-10")).is_before(&at("bin.000001", 4, Some("0-2-11"))));
        assert!(!at("bin.000001", 4, Some("0-2-11")).is_before(&at("bin.000009", 900, Some("0-1-10"))));
        assert!(at("bin.000001", 4, None).is_before(&at("bin.000001", 5, None)));
        // Several MariaDB domains: behind in one, ahead in none.
        assert!(at("bin.000009", 9, Some("0-1-10,7-1-2")).is_before(&at("bin.000001", 4, Some("0-1-11,7-1-2"))));
        assert!(!at("bin.000001", 4, Some("0-1-11,7-1-2")).is_before(&at("bin.000009", 9, Some("0-1-10,7-1-2"))));
        assert!(at("a", 1, Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5")).is_before(&at(
            "a",
            1,
            Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-6")
        )));
    }

    /// A number up to `max`, edge values often: binlog file numbers around
    /// 999,999 → 1,000,000, offsets and sequence numbers past their key's
    /// usual width.
    fn number(max: u64) -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        const EDGES: [u64; 8] = [0, 1, 9, 999_999, 1_000_000, 999_999_999_999, 1_000_000_000_000, u32::MAX as u64];
        prop_oneof![3 => proptest::sample::select(EDGES.map(|e| e.min(max)).to_vec()), 7 => 0..=max]
    }

    fn phase() -> impl proptest::strategy::Strategy<Value = Phase> {
        proptest::prop_oneof![proptest::strategy::Just(Phase::Snapshot), proptest::strategy::Just(Phase::Stream)]
    }

    fn pg_position() -> impl proptest::strategy::Strategy<Value = Position> {
        use proptest::prelude::*;
        (number(u64::MAX), phase(), number(u64::MAX))
            .prop_map(|(lsn, phase, seq)| Position::Postgres(PgPosition { lsn: Lsn(lsn), phase, seq }))
    }

    fn my_position() -> impl proptest::strategy::Strategy<Value = MyPosition> {
        use proptest::prelude::*;
        (number(u64::from(u32::MAX)), number(u64::MAX), phase(), number(u64::MAX)).prop_map(|(file, pos, phase, seq)| MyPosition {
            file: file as u32,
            pos,
            phase,
            seq,
        })
    }

    /// A MySQL offset without GTIDs, and the position its events would have.
    fn my_offset() -> impl proptest::strategy::Strategy<Value = (Offset, MyPosition)> {
        use proptest::prelude::*;
        my_position().prop_map(|p| (Offset::Mysql { file: format!("mysql-bin.{:06}", p.file), pos: p.pos, gtid: None }, p))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        #[test]
        fn postgres_keys_sort_exactly_like_positions(a in pg_position(), b in pg_position()) {
            proptest::prop_assert_eq!(a.cmp(&b), a.key().cmp(&b.key()), "{} vs {}", a.key(), b.key());
        }

        #[test]
        fn mysql_keys_sort_exactly_like_positions(a in my_position(), b in my_position()) {
            let (a, b) = (Position::Mysql(a), Position::Mysql(b));
            proptest::prop_assert_eq!(a.cmp(&b), a.key().cmp(&b.key()), "{} vs {}", a.key(), b.key());
        }

        #[test]
        fn is_before_is_a_strict_order_that_agrees_with_the_keys((a, pa) in my_offset(), (b, pb) in my_offset(), (c, _) in my_offset()) {
            proptest::prop_assert!(!a.is_before(&a), "{} before itself", a);
            proptest::prop_assert!(!(a.is_before(&b) && b.is_before(&a)), "{} and {} each before the other", a, b);
            if a.is_before(&b) && b.is_before(&c) {
                proptest::prop_assert!(a.is_before(&c), "{} < {} < {} but not {} < {}", a, b, c, a, c);
            }
            let at = |p: MyPosition| Position::Mysql(MyPosition { phase: Phase::Stream, seq: 0, ..p }).key();
            proptest::prop_assert_eq!(a.is_before(&b), at(pa) < at(pb), "{} vs {}", a, b);
        }
    }

    #[test]
    fn the_boundary_of_an_offset_splits_what_a_snapshot_there_holds() {
        let at = Offset::Postgres { lsn: Lsn(0x500) };
        let pg = |lsn, phase| Position::Postgres(PgPosition { lsn: Lsn(lsn), phase, seq: 3 });
        assert!(pg(0x4ff, Phase::Stream) < at.boundary() && pg(0x500, Phase::Snapshot) < at.boundary());
        assert!(pg(0x500, Phase::Stream) >= at.boundary());
        let at = Offset::Mysql { file: "mysql-bin.1000000".into(), pos: 900, gtid: None };
        let my = |file, pos| Position::Mysql(MyPosition { file, pos, phase: Phase::Stream, seq: 1 });
        assert!(my(999_999, 5_000) < at.boundary() && my(1_000_000, 899) < at.boundary());
        assert!(my(1_000_000, 900) >= at.boundary());
    }

    #[test]
    fn kafka_offsets_are_ordered_partition_by_partition() {
        let at = |parts: &[(&str, i64)]| Offset::Kafka {
            next: parts.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            tables: Default::default(),
        };
        assert!(at(&[("t/0", 5), ("t/1", 7)]).is_before(&at(&[("t/0", 6), ("t/1", 7)])));
        assert!(!at(&[("t/0", 6), ("t/1", 7)]).is_before(&at(&[("t/0", 5), ("t/1", 7)])));
        assert!(!at(&[("t/0", 6), ("t/1", 1)]).is_before(&at(&[("t/0", 5), ("t/1", 9)])), "ahead in one partition");
        assert!(at(&[("t/0", 6)]).is_before(&at(&[("t/0", 6), ("u/0", 1)])), "a partition added since");
        assert_eq!(at(&[("t/0", 6), ("u/0", 1)]).as_number(), 7);
        let p = Position::Kafka(KafkaPosition { lane: kafka_lane("shop.orders", 3), offset: 42 });
        assert_eq!(p.lane(), Some(kafka_lane("shop.orders", 3)));
        assert_ne!(kafka_lane("shop.orders", 3), kafka_lane("shop.orders", 4));
        assert_eq!(p.key().len(), 38);
        assert!(p.key().starts_with('k') && p.key().ends_with(".00000000000000000042"));
        let later = Position::Kafka(KafkaPosition { lane: kafka_lane("shop.orders", 3), offset: 100 });
        assert!(p < later && p.key() < later.key());
    }

    #[test]
    fn is_before_across_binlog_file_number_widths() {
        let (old, new) = (
            Offset::Mysql { file: "mysql-bin.999999".into(), pos: 900, gtid: None },
            Offset::Mysql { file: "mysql-bin.1000000".into(), pos: 4, gtid: None },
        );
        assert!(old.is_before(&new) && !new.is_before(&old), "binlog file numbers past 999999");
        let lsn = |l| Offset::Postgres { lsn: Lsn(l) };
        assert!(lsn(1).is_before(&lsn(2)) && !lsn(2).is_before(&lsn(2)));
    }
}
