//! The commit manifest: the last committed position and the renames that
//! make a commit's files visible.

use riffle_core::{Position, SinkError};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub committed: Position,
    /// (temporary, final) paths, relative to the sink root.
    pub renames: Vec<(PathBuf, PathBuf)>,
}

impl Manifest {
    pub fn path(root: &Path, pipeline: &str) -> PathBuf {
        root.join("_riffle").join(format!("{pipeline}.json"))
    }

    pub fn load(path: &Path) -> Result<Option<Manifest>, SinkError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                SinkError::definite(format!(
                    "the commit manifest {} is not valid ({e}); it is riffle's record of what this sink holds, restore it or remove the output directory",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Writes the manifest atomically: temporary file, fsync, rename, fsync
    /// of the directory.
    pub fn save(&self, path: &Path) -> Result<(), SinkError> {
        let dir = path.parent().expect("manifest path has a parent");
        fs::create_dir_all(dir).map_err(|e| SinkError::io(format!("creating {}", dir.display()), e))?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| SinkError::definite(format!("encoding manifest: {e}")))?;
        let mut f = fs::File::create(&tmp).map_err(|e| SinkError::io(format!("creating {}", tmp.display()), e))?;
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| SinkError::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, path).map_err(|e| SinkError::io(format!("renaming {}", tmp.display()), e))?;
        sync_dir(dir)
    }

    /// Renames every temporary file still present to its final name. Safe
    /// to repeat: a rename already done is skipped.
    pub fn apply_renames(&self, root: &Path) -> Result<(), SinkError> {
        let mut dirs = Vec::new();
        for (tmp, fin) in &self.renames {
            let (tmp, fin) = (root.join(tmp), root.join(fin));
            if tmp.exists() {
                fs::rename(&tmp, &fin).map_err(|e| SinkError::io(format!("renaming {} to {}", tmp.display(), fin.display()), e))?;
                if let Some(d) = fin.parent() {
                    if !dirs.iter().any(|x: &PathBuf| x == d) {
                        dirs.push(d.to_path_buf());
                    }
                }
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SinkError::io(format!("syncing directory {}", dir.display()), e))
}
