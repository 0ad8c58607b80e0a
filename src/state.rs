//! The embedded state store: one JSON file per pipeline in a local
//! directory, written atomically (temporary file, fsync, rename, fsync of
//! the directory). The saved offset never moves backwards.

use anyhow::{anyhow, bail, Context, Result};
use riffle_core::{Offset, Position};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the initial snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// A snapshot was started and has not completed; the next run takes a
    /// new one (dropping the slot this pipeline created).
    InProgress,
    /// The snapshot is in the sinks; streaming resumes from `offset`.
    Done,
}

/// What riffle remembers of one pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    pub version: u32,
    pub name: String,
    /// The source URL without its password.
    pub source: String,
    pub tables: Vec<String>,
    pub snapshot: SnapshotState,
    /// Postgres: the consistent point of the slot an unfinished snapshot
    /// created; the next run drops that slot only if it is still there.
    #[serde(default)]
    pub snapshot_started: Option<Offset>,
    /// Where the source resumes; everything before it is in every sink.
    pub offset: Option<Offset>,
    /// The position of the last event committed.
    pub last_position: Option<Position>,
    /// Commit time (ms since the epoch) of the last event committed.
    pub last_source_ts_ms: Option<i64>,
    /// Events committed by this pipeline over its life.
    pub events: u64,
    /// When the state was saved, ms since the epoch.
    pub updated_ms: i64,
}

pub struct StateStore {
    dir: PathBuf,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        StateStore { dir: dir.to_path_buf() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn load(&self, name: &str) -> Result<Option<PipelineState>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| anyhow!("state file {} is not valid ({e}); restore it, or remove it to take a new snapshot", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading state file {}", path.display())),
        }
    }

    /// Every pipeline's state in the directory, sorted by name.
    pub fn list(&self) -> Result<Vec<PipelineState>> {
        let mut all = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
            Err(e) => return Err(e).with_context(|| format!("reading state directory {}", self.dir.display())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                if let Some(s) = self.load(stem)? {
                    all.push(s);
                }
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Saves `state`, refusing to move the offset backwards.
    pub fn save(&self, state: &PipelineState) -> Result<()> {
        if let (Some(new), Some(Some(old))) = (state.offset.clone(), self.load(&state.name).ok().flatten().map(|s| s.offset)) {
            if new.is_before(&old) && state.snapshot == SnapshotState::Done {
                bail!("refusing to move pipeline {}'s saved offset back from {old} to {new}; this is a bug in riffle", state.name);
            }
        }
        fs::create_dir_all(&self.dir).with_context(|| format!("creating state directory {}", self.dir.display()))?;
        let path = self.path(&state.name);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("saving state to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::Lsn;

    fn state(lsn: u64) -> PipelineState {
        PipelineState {
            version: 1,
            name: "p".into(),
            source: "postgres://u@h/db".into(),
            tables: vec![],
            snapshot: SnapshotState::Done,
            snapshot_started: None,
            offset: Some(Offset::Postgres { lsn: Lsn(lsn) }),
            last_position: None,
            last_source_ts_ms: None,
            events: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn saves_atomically_and_never_moves_back() {
        let dir = std::env::temp_dir().join(format!("riffle-state-test-{}", std::process::id()));
        let store = StateStore::new(&dir);
        store.save(&state(200)).unwrap();
        assert_eq!(store.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(200) }));
        assert!(store.save(&state(100)).is_err());
        assert_eq!(store.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(200) }));
        assert!(!store.path("p").with_extension("json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
