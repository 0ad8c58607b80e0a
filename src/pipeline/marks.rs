//! Debezium's `source.snapshot` marks: `first` on the initial snapshot's
//! first read, `first_in_data_collection` / `last_in_data_collection` where
//! the reads pass from one table to the next, `last` on its last read, `true`
//! between, and `incremental` on reads taken while the log is streamed.
//!
//! Whether a read is a table's (or the snapshot's) last is known only once
//! the next read, or the end of the snapshot, arrives; so the last read seen
//! is held back, with every item after it, until then (one event, as
//! Debezium's own snapshot buffers one record). Where two marks apply, the
//! first of `last`, `first`, `last_in_data_collection`,
//! `first_in_data_collection` wins, as in Debezium. With parallel snapshot
//! workers a table's chunks may alternate with another's: each switch is
//! marked, in the order riffle writes the reads. Holding the checkpoints that
//! follow it too keeps the contract: nothing is committed before the held
//! event is written. A source that ends without finishing its snapshot gets
//! what was held handed on unchanged ([`Marks::flush`]).
//!
//! Events read back from Kafka (positions with a lane) carry the marks the
//! pipeline that wrote them set, and keep them: a topic has no snapshot of
//! its own.

use riffle_core::{Op, SnapshotMark, SourceItem, TableId};

#[derive(Default)]
pub(super) struct Marks {
    /// The reads are the initial snapshot's (the run started with no saved
    /// position), and it has not ended.
    initial: bool,
    /// The in-band signal table: its rows go to no sink, so they take no
    /// mark (nor do events read back from Kafka: they have theirs).
    signal: Option<TableId>,
    /// The table of the last read marked.
    table: Option<TableId>,
    /// The last read of the initial snapshot, and the items after it.
    held: Vec<SourceItem>,
}

impl Marks {
    /// Marks for one source run; `initial`: it takes the initial snapshot.
    pub fn new(initial: bool, signal: Option<TableId>) -> Marks {
        Marks { initial, signal, table: None, held: Vec::new() }
    }

    /// The items of `batch` (and of earlier batches) whose marks are known,
    /// in order, with their marks set. Marks are set in place; items move
    /// only in bulk, where what is held and what is passed on split.
    pub fn pass(&mut self, mut batch: Vec<SourceItem>) -> Passed {
        // Places count through `held`, then `batch`. A held read is always
        // the first thing held.
        let base = self.held.len();
        let mut last = (base > 0).then_some(0);
        for i in 0..batch.len() {
            // The mark the read last held takes, and where the last read is now.
            let (mark_last, now_last) = match &mut batch[i] {
                SourceItem::Event(ev) if self.signal.as_ref() == Some(&ev.table.id) || ev.position.lane().is_some() => continue,
                SourceItem::Event(ev) if ev.op == Op::Read && !self.initial => {
                    ev.source.snapshot = SnapshotMark::Incremental;
                    continue;
                }
                SourceItem::Event(ev) if ev.op == Op::Read => {
                    let same = self.table.as_ref() == Some(&ev.table.id);
                    ev.source.snapshot = match (&self.table, same) {
                        (None, _) => SnapshotMark::First,
                        (Some(_), true) => SnapshotMark::True,
                        (Some(_), false) => SnapshotMark::FirstInDataCollection,
                    };
                    if !same {
                        self.table = Some(ev.table.id.clone());
                    }
                    ((!same).then_some(SnapshotMark::LastInDataCollection), Some(base + i))
                }
                SourceItem::SnapshotDone if self.initial => {
                    self.initial = false;
                    (Some(SnapshotMark::Last), None)
                }
                _ => continue,
            };
            if let (Some(mark), Some(j)) = (mark_last, last) {
                set_last(if j < base { &mut self.held[j] } else { &mut batch[j - base] }, mark);
            }
            last = now_last;
        }
        let before = std::mem::take(&mut self.held);
        match last {
            // The read held before is still the last: all waits.
            Some(j) if j < base => {
                self.held = before;
                self.held.append(&mut batch);
                Vec::new().into_iter().chain(batch)
            }
            Some(j) => {
                self.held = batch.split_off(j - base);
                before.into_iter().chain(batch)
            }
            None => before.into_iter().chain(batch),
        }
    }

    /// What is held, as it is: the source ended before its snapshot did.
    pub fn flush(&mut self) -> Vec<SourceItem> {
        std::mem::take(&mut self.held)
    }
}

/// What [`Marks::pass`] passes on: what it held before, then the new
/// batch up to what it holds now (no item copied to join them).
pub(super) type Passed = std::iter::Chain<std::vec::IntoIter<SourceItem>, std::vec::IntoIter<SourceItem>>;

/// Marks the held read `item` as a table's or the snapshot's last: `last`
/// wins over all; a table's last read keeps `first` when it is also the
/// snapshot's first.
fn set_last(item: &mut SourceItem, mark: SnapshotMark) {
    if let SourceItem::Event(ev) = item {
        if mark == SnapshotMark::Last || ev.source.snapshot != SnapshotMark::First {
            ev.source.snapshot = mark;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::{event, offset, position, table_named};
    use riffle_core::Position;

    fn read(table: &str, seq: u64) -> SourceItem {
        let mut ev = event(&table_named(table), position(1, seq));
        ev.op = Op::Read;
        ev.source.snapshot = SnapshotMark::True;
        SourceItem::Event(ev)
    }

    fn marks(items: impl IntoIterator<Item = SourceItem>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| match i {
                SourceItem::Event(ev) => format!("{}:{}", ev.table.id.name, ev.source.snapshot.name()),
                SourceItem::Checkpoint(_) => "checkpoint".into(),
                SourceItem::SnapshotDone => "done".into(),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn reads_from_kafka_keep_their_marks_and_hold_nothing_back() {
        let kafka = |offset, mark| {
            let mut ev = event(&table_named("a"), Position::Kafka(riffle_core::KafkaPosition { lane: 9, offset }));
            ev.op = Op::Read;
            ev.source.snapshot = mark;
            SourceItem::Event(ev)
        };
        let mut m = Marks::new(true, None);
        let out = m.pass(vec![kafka(0, SnapshotMark::First), kafka(1, SnapshotMark::True), SourceItem::Checkpoint(offset(5))]);
        assert_eq!(marks(out), ["a:first", "a:true", "checkpoint"], "nothing held: the checkpoint is committable");
        assert!(m.flush().is_empty());
    }

    #[test]
    fn the_initial_snapshot_is_marked_first_between_tables_and_last_and_nothing_is_lost() {
        let mut m = Marks::new(true, None);
        let a = m.pass(vec![read("a", 1), read("a", 2), SourceItem::Checkpoint(offset(1))]);
        // The second read and the checkpoint after it wait for what follows.
        assert_eq!(marks(a), ["a:first"]);
        let b = m.pass(vec![read("b", 3), SourceItem::Checkpoint(offset(2)), read("c", 4)]);
        // A table of one row: its last read (Debezium's precedence: last, first, last in table, first in table).
        assert_eq!(marks(b), ["a:last_in_data_collection", "checkpoint", "b:last_in_data_collection", "checkpoint"]);
        let c = m.pass(vec![read("c", 5), SourceItem::Checkpoint(offset(3)), SourceItem::SnapshotDone]);
        assert_eq!(marks(c), ["c:first_in_data_collection", "c:last", "checkpoint", "done"]);
        // After the initial snapshot, reads are taken while streaming.
        assert_eq!(marks(m.pass(vec![read("a", 6)])), ["a:incremental"]);
    }

    #[test]
    fn a_snapshot_of_one_row_is_last_and_a_source_that_ends_early_gets_its_items_back() {
        let mut m = Marks::new(true, None);
        assert!(marks(m.pass(vec![read("a", 1)])).is_empty());
        assert_eq!(marks(m.pass(vec![SourceItem::SnapshotDone])), ["a:last", "done"]);

        let mut m = Marks::new(true, None);
        assert_eq!(marks(m.pass(vec![read("a", 1), read("a", 2), SourceItem::Checkpoint(offset(1))])), ["a:first"]);
        // A batch without a read: the held one is still the last known.
        assert!(marks(m.pass(vec![SourceItem::Checkpoint(offset(2))])).is_empty());
        assert_eq!(marks(m.flush()), ["a:true", "checkpoint", "checkpoint"]);

        let mut m = Marks::new(false, None);
        assert_eq!(marks(m.pass(vec![read("a", 1), SourceItem::Checkpoint(offset(1))])), ["a:incremental", "checkpoint"]);

        // The signal table's rows go to no sink: the snapshot's last read is the other table's.
        let mut m = Marks::new(true, Some(TableId::new("public", "sig")));
        assert!(marks(m.pass(vec![read("a", 1), read("sig", 2)])).is_empty());
        assert_eq!(marks(m.pass(vec![SourceItem::SnapshotDone])), ["a:last", "sig:true", "done"]);
    }
}
