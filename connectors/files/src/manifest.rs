//! The commit manifest: the last committed position and the moves that
//! make a commit's files visible. Written whole (one PUT) to
//! `_riffle/<pipeline>.json` under the sink's root.

use riffle_core::Position;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub committed: Position,
    /// (temporary, final) paths, relative to the sink root.
    pub renames: Vec<(PathBuf, PathBuf)>,
}
