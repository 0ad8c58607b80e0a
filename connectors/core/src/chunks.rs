//! A chunked snapshot's progress: which key ranges of which tables are still
//! to be read. The source plans it, reports each chunk it finished, and the
//! pipeline saves it with the offset at every commit, so a snapshot
//! interrupted by a crash or a stop resumes with the chunks that were not
//! committed, and reads nothing twice.
//!
//! Keys travel as the source's own text forms (what the server prints for
//! the key columns), so any key type the server can order and parse back
//! works, composite keys included.

use serde::{Deserialize, Serialize};

/// A range of a table's key: rows with `after < key <= upto`, an absent
/// bound being open. Ranges of one table never overlap, so a range's bounds
/// name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct KeyRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upto: Option<Vec<String>>,
}

impl KeyRange {
    /// The whole table.
    pub fn all() -> Self {
        KeyRange::default()
    }

    /// Goes on after `last`, the key of a full chunk's last row. A key
    /// that does not move the range on (a bound the key column does not
    /// compare by, a driver handing the key back in another form) would
    /// read the same chunk forever: an error naming what was read instead.
    pub fn advance(&mut self, last: Vec<String>) -> Result<(), String> {
        if last.is_empty() || self.after.as_ref() == Some(&last) {
            return Err(format!(
                "a full chunk ended at key {last:?}, which does not move its range (after {:?}) on; this is a bug in riffle",
                self.after
            ));
        }
        self.after = Some(last);
        Ok(())
    }
}

/// One table's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// The key columns chunks are ordered by. Empty: the table has no key
    /// and is read whole, as one unit (its rows cannot be told apart across
    /// two reads, so half of it is never committed).
    pub key: Vec<String>,
    /// Ranges not read yet. Empty: the table is done.
    pub left: Vec<KeyRange>,
    /// Rows read and committed so far.
    #[serde(default)]
    pub rows: u64,
    /// Chunks read and committed so far.
    #[serde(default)]
    pub chunks: u64,
    /// Read again (`riffle snapshot`): consumers already hold its rows, so
    /// its changes are always delivered, never left out before the read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
    /// The ranges are places in the table's storage (Postgres heap blocks
    /// of a table without a key), not key values: they hold only inside
    /// the one snapshot the plan was read in, so a later run reads a table
    /// some of whose ranges were committed again whole ([`Self::reloads`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub positional: bool,
}

impl TableProgress {
    pub fn is_done(&self) -> bool {
        self.left.is_empty()
    }

    /// Nothing of the table is in the sinks from this plan, and consumers
    /// never saw it before: its output may start with its snapshot, its
    /// earlier changes left out.
    pub fn starts_with_snapshot(&self) -> bool {
        self.chunks == 0 && !self.again
    }

    /// Some of its positional ranges were committed under a snapshot that
    /// is gone: the next run reads it again whole (after a truncate event).
    pub fn reloads(&self) -> bool {
        self.positional && self.chunks > 0 && !self.is_done()
    }
}

/// What a source reports when it has sent every row of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDone {
    pub table: String,
    /// The range the chunk was read from, as planned or left by the
    /// previous chunk.
    pub range: KeyRange,
    /// The last key the chunk read: the range continues after it. `None`:
    /// the range is exhausted.
    pub next_after: Option<Vec<String>>,
    pub rows: u64,
}

/// How a table goes on from a saved plan (see [`resume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// Chunks of it were committed: the ranges it has left.
    Ranges(TableProgress),
    /// Nothing of it was committed (or it is not in the plan): planned
    /// afresh, keeping whether it is read again.
    Fresh { again: bool },
}

/// Where `table`, chunked by `key` now, goes on from the saved plan
/// `resumed`. Ranges saved by another key cannot be found by this one:
/// `Err` holds the saved key. (A table the plan has done is skipped before.)
pub fn resume(resumed: Option<&SnapshotProgress>, table: &str, key: &[String]) -> Result<Resumed, Vec<String>> {
    match resumed.and_then(|p| p.table(table)) {
        Some(s) if s.chunks > 0 && s.key != key => Err(s.key.clone()),
        Some(s) if s.chunks > 0 => Ok(Resumed::Ranges(s.clone())),
        saved => Ok(Resumed::Fresh { again: saved.is_some_and(|s| s.again) }),
    }
}

/// The chunks of a snapshot not yet read, per table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotProgress {
    pub tables: Vec<TableProgress>,
    /// Table globs to snapshot again (`riffle snapshot`), not planned yet:
    /// the source plans them whole at its next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<String>,
}

impl SnapshotProgress {
    pub fn is_done(&self) -> bool {
        self.requested.is_empty() && self.tables.iter().all(TableProgress::is_done)
    }

    /// Tables still with ranges to read.
    pub fn pending(&self) -> impl Iterator<Item = &TableProgress> {
        self.tables.iter().filter(|t| !t.is_done())
    }

    pub fn table(&self, name: &str) -> Option<&TableProgress> {
        self.tables.iter().find(|t| t.table == name)
    }

    /// Ranges left across all tables.
    pub fn ranges_left(&self) -> usize {
        self.tables.iter().map(|t| t.left.len()).sum()
    }

    /// Records a finished chunk. A chunk of a range the plan does not hold
    /// (already recorded) changes nothing and returns false.
    pub fn record(&mut self, done: &ChunkDone) -> bool {
        let Some(t) = self.tables.iter_mut().find(|t| t.table == done.table) else { return false };
        let Some(i) = t.left.iter().position(|r| *r == done.range) else { return false };
        match &done.next_after {
            Some(next) => t.left[i].after = Some(next.clone()),
            None => {
                t.left.remove(i);
            }
        }
        t.rows += done.rows;
        t.chunks += 1;
        true
    }

    /// Asks for `table` to be read again whole (`riffle snapshot`): planned
    /// afresh (no chunk committed) and marked so that its changes are never
    /// left out, even after a crash before its first chunk.
    pub fn read_again(&mut self, table: String) {
        self.add(TableProgress { table, key: Vec::new(), left: vec![KeyRange::all()], rows: 0, chunks: 0, again: true, positional: false });
    }

    /// Drops the tables left to read that `planned` does not hold (dropped,
    /// or no longer selected), with a warning: their snapshot ends with the
    /// rows committed.
    pub fn keep_planned(&mut self, planned: impl Fn(&str) -> bool) {
        self.tables.retain(|p| {
            let here = p.is_done() || planned(&p.table);
            if !here {
                tracing::warn!(table = %p.table, "a table of the interrupted snapshot is gone (dropped, or no longer selected); its snapshot ends with the rows committed");
            }
            here
        });
    }

    /// Adds tables to read whole (a table added to the selection, or one to
    /// snapshot again), replacing what the plan held for them.
    pub fn add(&mut self, table: TableProgress) {
        self.tables.retain(|t| t.table != table.table);
        self.tables.push(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Option<Vec<String>> {
        Some(k.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_range_only_advances_forward_to_a_new_key() {
        let mut r = KeyRange::all();
        r.advance(vec!["7".into()]).unwrap();
        assert_eq!(r.after, keys(&["7"]));
        // The same key again would read the same chunk forever.
        assert!(r.advance(vec!["7".into()]).unwrap_err().contains("does not move its range"));
        assert!(r.advance(Vec::new()).is_err());
        r.advance(vec!["9".into()]).unwrap();
        assert_eq!(r.after, keys(&["9"]));
    }

    #[test]
    fn chunks_advance_their_range_and_finish_it() {
        let split = KeyRange { after: None, upto: keys(&["100"]) };
        let rest = KeyRange { after: keys(&["100"]), upto: None };
        let mut p = SnapshotProgress {
            tables: vec![TableProgress {
                table: "s.t".into(),
                key: vec!["id".into()],
                left: vec![split.clone(), rest.clone()],
                rows: 0,
                chunks: 0,
                again: false,
                positional: false,
            }],
            requested: vec![],
        };
        assert!(p.record(&ChunkDone { table: "s.t".into(), range: split.clone(), next_after: keys(&["50"]), rows: 50 }));
        let moved = KeyRange { after: keys(&["50"]), upto: keys(&["100"]) };
        assert_eq!(p.tables[0].left, vec![moved.clone(), rest.clone()]);
        assert!(!p.record(&ChunkDone { table: "s.t".into(), range: split, next_after: None, rows: 1 }), "a range already advanced");
        assert!(p.record(&ChunkDone { table: "s.t".into(), range: moved, next_after: None, rows: 50 }));
        assert!(!p.is_done());
        assert!(p.record(&ChunkDone { table: "s.t".into(), range: rest, next_after: None, rows: 7 }));
        assert!(p.is_done());
        assert_eq!((p.tables[0].rows, p.tables[0].chunks), (107, 3));
    }

    #[test]
    fn progress_round_trips_through_json() {
        let p = SnapshotProgress {
            tables: vec![TableProgress {
                table: "s.t".into(),
                key: vec!["a".into(), "b".into()],
                left: vec![KeyRange { after: keys(&["x\ty", "2"]), upto: None }],
                rows: 3,
                chunks: 1,
                again: true,
                positional: true,
            }],
            requested: vec!["s.*".into()],
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotProgress>(&text).unwrap(), p);
    }

    /// Positional ranges (storage places) committed in part are not left
    /// to read as they are: the table is read again whole.
    #[test]
    fn a_table_cut_in_positional_ranges_reloads() {
        let t = |name: &str, chunks, left: usize, positional| TableProgress {
            table: name.into(),
            key: vec!["k".into()],
            left: vec![KeyRange::all(); left],
            rows: 0,
            chunks,
            again: false,
            positional,
        };
        let p = SnapshotProgress {
            tables: vec![t("s.cut", 2, 5, true), t("s.fresh", 0, 4, true), t("s.keyed", 3, 2, false), t("s.done", 9, 0, true)],
            requested: vec![],
        };
        let reloads: Vec<&str> = p.tables.iter().filter(|t| t.reloads()).map(|t| t.table.as_str()).collect();
        assert_eq!(reloads, ["s.cut"], "only a table with committed positional ranges and some left");
    }

    #[test]
    fn a_table_resumes_its_ranges_or_is_planned_afresh() {
        let key = vec!["id".to_string()];
        let t = |chunks, again| TableProgress {
            table: "s.t".into(),
            key: key.clone(),
            left: vec![KeyRange::all()],
            rows: 0,
            chunks,
            again,
            positional: false,
        };
        let plan = |t: TableProgress| SnapshotProgress { tables: vec![t], requested: vec![] };
        assert_eq!(resume(None, "s.t", &key), Ok(Resumed::Fresh { again: false }));
        assert_eq!(
            resume(Some(&plan(t(0, true))), "s.t", &["other".into()]),
            Ok(Resumed::Fresh { again: true }),
            "nothing committed: any key"
        );
        assert_eq!(resume(Some(&plan(t(2, false))), "s.t", &key), Ok(Resumed::Ranges(t(2, false))));
        assert_eq!(resume(Some(&plan(t(2, false))), "s.t", &["other".into()]), Err(key.clone()), "committed by another key");
    }
}
