//! The sink connector contract.

use crate::error::SinkError;
use crate::event::ChangeEvent;
use crate::position::Position;

/// A destination for change events.
///
/// Contract:
/// - the pipeline calls [`Sink::write`] in position order and
///   [`Sink::commit`] only on a source checkpoint; when `commit` returns,
///   every event written before it is durable (a file closed, synced and
///   recorded in the commit manifest; a broker's acknowledgement) and, as
///   soon as the store allows, visible (a file under its final name: moves
///   a store refused are retried at the next commit or start);
/// - delivery is at-least-once: after a crash the pipeline replays from its
///   last saved offset, so a sink may be handed events it already committed,
///   with the same positions. A sink that knows the position it committed
///   last reports it from [`Sink::committed`] and the pipeline skips the
///   replays for it; others must tolerate duplicates. Positions with a
///   [lane](Position::lane) (Kafka partitions) are written in order within
///   their lane only, and a sink that keeps them reports what it committed
///   per lane from [`Sink::committed_in`];
/// - a sink never makes visible an event that was written after the last
///   `commit`: [`Sink::abort`] drops them, and so does a crash.
pub trait Sink: Send {
    /// A short description for logs: `file:///data/out (csv)`.
    fn describe(&self) -> String;

    /// The position of the last event this sink committed, if it keeps one.
    fn committed(&self) -> Option<Position>;

    /// The position of the last event of `lane` this sink committed, if it
    /// keeps them per lane. Sinks that do not get lane positions' replays
    /// again (at-least-once).
    fn committed_in(&self, _lane: u64) -> Option<Position> {
        None
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError>;

    /// Make everything written so far durable. `through` is the position of
    /// the last event written, if any.
    fn commit(&mut self, through: Option<Position>) -> Result<(), SinkError>;

    /// Drop everything written since the last commit.
    fn abort(&mut self) -> Result<(), SinkError>;

    /// Bytes written so far (encoded events), for metrics.
    fn bytes_written(&self) -> u64 {
        0
    }
}
