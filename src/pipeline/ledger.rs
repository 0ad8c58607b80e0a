//! The pipeline's commit bookkeeping, without I/O: which checkpoint may be
//! committed, which events are not yet durable, what an abort goes back
//! to, and whether a sink already holds a replayed event.
//!
//! The rules it keeps:
//! - only a source checkpoint may be committed, and only when no event
//!   has arrived since it (events after it belong to an open transaction
//!   or an unfinished snapshot);
//! - an abort forgets everything since the last commit, so a sink is
//!   never told it holds events it dropped;
//! - a sink that reports the position it committed last is not handed an
//!   event at or before it again (a replay after a crash), except by a
//!   one-shot `sync`, which never replays.

use riffle_core::{Offset, Op, Position};

/// What a commit records: the sinks are committed `through` the last
/// event, then `offset` (when a checkpoint was seen) is saved.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRecord {
    pub through: Option<Position>,
    pub offset: Option<Offset>,
    /// Events made durable by this commit.
    pub events: u64,
    /// Source commit time of the last event, ms since the epoch.
    pub last_ts_ms: Option<i64>,
}

/// What to do when the source's run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEnd {
    /// Everything received ends on a checkpoint: commit it.
    Commit,
    /// Events after the last checkpoint (an interrupted snapshot or
    /// transaction): drop them.
    Abort,
    Nothing,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// A checkpoint seen and not yet committed.
    pending: Option<Offset>,
    /// Events since the last checkpoint: never committed.
    trailing: u64,
    /// Events since the last commit.
    uncommitted: u64,
    oldest_uncommitted_ms: Option<i64>,
    last_position: Option<Position>,
    last_ts_ms: Option<i64>,
    /// `last_position`/`last_ts_ms` as of the last commit: what an abort
    /// goes back to.
    committed_position: Option<Position>,
    committed_ts_ms: Option<i64>,
}

impl Ledger {
    pub fn event(&mut self, position: Position, source_ts_ms: i64) {
        self.last_position = Some(position);
        self.last_ts_ms = Some(source_ts_ms);
        self.oldest_uncommitted_ms.get_or_insert(source_ts_ms);
        self.trailing += 1;
        self.uncommitted += 1;
    }

    pub fn checkpoint(&mut self, offset: Offset) {
        self.pending = Some(offset);
        self.trailing = 0;
    }

    /// A one-shot copy is complete: its rows are one consistent read, and
    /// committed without a checkpoint.
    pub fn copy_complete(&mut self) {
        self.trailing = 0;
    }

    /// A checkpoint is waiting and nothing came after it: it can be
    /// committed while the source is quiet.
    pub fn checkpoint_waiting(&self) -> bool {
        self.pending.is_some() && self.trailing == 0
    }

    pub fn oldest_uncommitted_ms(&self) -> Option<i64> {
        self.oldest_uncommitted_ms
    }

    pub fn at_end(&self) -> AtEnd {
        if self.trailing > 0 {
            AtEnd::Abort
        } else if self.pending.is_some() || self.uncommitted > 0 {
            AtEnd::Commit
        } else {
            AtEnd::Nothing
        }
    }

    /// What to commit. Call [`Ledger::committed`] once the sinks made it
    /// durable and the offset is saved.
    pub fn to_commit(&self) -> CommitRecord {
        CommitRecord { through: self.last_position, offset: self.pending.clone(), events: self.uncommitted, last_ts_ms: self.last_ts_ms }
    }

    pub fn committed(&mut self) {
        self.pending = None;
        self.uncommitted = 0;
        self.oldest_uncommitted_ms = None;
        self.committed_position = self.last_position;
        self.committed_ts_ms = self.last_ts_ms;
    }

    /// Forgets everything since the last commit.
    pub fn aborted(&mut self) {
        self.pending = None;
        self.trailing = 0;
        self.uncommitted = 0;
        self.oldest_uncommitted_ms = None;
        self.last_position = self.committed_position;
        self.last_ts_ms = self.committed_ts_ms;
    }
}

/// What a sink gets of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Write,
    /// A replay the sink already holds.
    Skip,
    /// A snapshot row at or before what the sink holds: the sink was
    /// written from another server or an earlier history.
    Conflict(Position),
}

/// Decides whether a sink that committed through `sink_committed` (in the
/// event's lane, for positions that have one) gets an event at `position`.
pub fn delivery(sink_committed: Option<Position>, position: Position, op: Op, sync: bool) -> Delivery {
    match sink_committed {
        // A sync never replays: it writes everything.
        Some(c) if position <= c && !sync => {
            // A snapshot row read again from a database's log is another
            // history; one read again from a Kafka partition is a replay.
            if op == Op::Read && position.lane().is_none() {
                Delivery::Conflict(c)
            } else {
                Delivery::Skip
            }
        }
        _ => Delivery::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::{Lsn, PgPosition, Phase};

    fn at(lsn: u64, seq: u64) -> Position {
        Position::Postgres(PgPosition { lsn: Lsn(lsn), phase: Phase::Stream, seq })
    }

    fn offset(lsn: u64) -> Offset {
        Offset::Postgres { lsn: Lsn(lsn) }
    }

    #[test]
    fn only_a_checkpoint_with_nothing_after_it_is_committed() {
        let mut l = Ledger::default();
        l.event(at(10, 0), 1);
        l.event(at(10, 1), 1);
        assert!(!l.checkpoint_waiting());
        assert_eq!(l.at_end(), AtEnd::Abort, "events without a checkpoint are never committed");
        l.checkpoint(offset(11));
        assert!(l.checkpoint_waiting());
        l.event(at(20, 0), 2);
        assert!(!l.checkpoint_waiting(), "an event after the checkpoint opens a transaction");
        assert_eq!(l.at_end(), AtEnd::Abort);
        l.checkpoint(offset(21));
        let c = l.to_commit();
        assert_eq!((c.through, c.offset, c.events, c.last_ts_ms), (Some(at(20, 0)), Some(offset(21)), 3, Some(2)));
        l.committed();
        assert_eq!(l.at_end(), AtEnd::Nothing);
        assert_eq!(l.to_commit().offset, None);
    }

    #[test]
    fn an_abort_goes_back_to_the_last_commit() {
        let mut l = Ledger::default();
        l.event(at(10, 0), 1);
        l.checkpoint(offset(11));
        l.committed();
        l.event(at(20, 0), 2);
        l.checkpoint(offset(21));
        l.event(at(30, 0), 3);
        assert_eq!(l.oldest_uncommitted_ms(), Some(2));
        l.aborted();
        let c = l.to_commit();
        assert_eq!((c.through, c.offset, c.events, c.last_ts_ms), (Some(at(10, 0)), None, 0, Some(1)));
        assert_eq!((l.at_end(), l.oldest_uncommitted_ms()), (AtEnd::Nothing, None));
    }

    #[test]
    fn a_finished_copy_commits_without_a_checkpoint() {
        let mut l = Ledger::default();
        l.event(at(5, 0), 1);
        l.event(at(5, 1), 1);
        assert_eq!(l.at_end(), AtEnd::Abort);
        l.copy_complete();
        assert_eq!(l.at_end(), AtEnd::Commit);
        assert_eq!(l.to_commit().events, 2);
    }

    #[test]
    fn replays_are_skipped_unless_a_sync_writes_everything() {
        assert_eq!(delivery(None, at(10, 0), Op::Create, false), Delivery::Write);
        assert_eq!(delivery(Some(at(10, 0)), at(10, 0), Op::Create, false), Delivery::Skip);
        assert_eq!(delivery(Some(at(10, 0)), at(9, 7), Op::Delete, false), Delivery::Skip);
        assert_eq!(delivery(Some(at(10, 0)), at(10, 1), Op::Update, false), Delivery::Write);
        assert_eq!(delivery(Some(at(10, 0)), at(3, 0), Op::Read, false), Delivery::Conflict(at(10, 0)));
        assert_eq!(delivery(Some(at(10, 0)), at(3, 0), Op::Read, true), Delivery::Write);
    }

    #[test]
    fn a_snapshot_row_read_again_from_a_kafka_partition_is_a_replay() {
        let k = |offset| Position::Kafka(riffle_core::KafkaPosition { lane: riffle_core::kafka_lane("t", 0), offset });
        assert_eq!(delivery(Some(k(10)), k(4), Op::Read, false), Delivery::Skip);
        assert_eq!(delivery(Some(k(10)), k(11), Op::Read, false), Delivery::Write);
    }
}
