//! The commit manifest: the last committed position and the moves that
//! make a commit's files visible. Written whole (one PUT) to
//! `_riffle/<pipeline>.json` under the sink's root.

use riffle_core::Position;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub committed: Position,
    /// For positions with a lane (Kafka partitions): the last committed
    /// position of each lane, `committed` being only the last one written.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lanes: std::collections::BTreeMap<u64, Position>,
    /// (temporary, final) paths, relative to the sink root.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// The sink instance that wrote it (each run has its own), so every
    /// write differs from the last and a conditional write can tell them
    /// apart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub writer: String,
}
