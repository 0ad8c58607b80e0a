//! Where one file's bytes go while it is written: straight into a file on
//! local disk (synced when it ends), or a multipart upload to an object
//! store (parts sent as they fill, completed when it ends). Either way the
//! file sits under a temporary name until a commit moves it.

use super::store::Target;
use riffle_core::{block_on, SinkError};
use std::io::Write;
use tokio::io::AsyncWriteExt;

/// Bytes gathered before they are handed on: small for a local file (the
/// kernel buffers), parts worth a request for a store.
const LOCAL_CHUNK: usize = 1 << 20;
const STORE_CHUNK: usize = 8 << 20;

pub(super) enum Upload {
    Local { file: std::fs::File, path: std::path::PathBuf },
    Store(object_store::buffered::BufWriter),
}

impl Upload {
    /// Starts the file `tmp` (relative to the sink's root).
    pub(super) fn start(target: &Target, tmp: &str) -> Result<Upload, SinkError> {
        if let Some(dir) = &target.local {
            let path = dir.join(tmp);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| SinkError::io(format!("creating {}", parent.display()), e))?;
            }
            let file = std::fs::File::create(&path).map_err(|e| SinkError::io(format!("creating {}", path.display()), e))?;
            return Ok(Upload::Local { file, path });
        }
        let upload =
            object_store::buffered::BufWriter::with_capacity(target.store.clone(), target.key(tmp), 10 << 20).with_max_concurrency(4);
        Ok(Upload::Store(upload))
    }

    pub(super) fn chunk(&self) -> usize {
        match self {
            Upload::Local { .. } => LOCAL_CHUNK,
            Upload::Store(_) => STORE_CHUNK,
        }
    }

    pub(super) fn write(&mut self, target: &Target, tmp: &str, data: &[u8]) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        riffle_core::fail::point("files.mid_upload");
        match self {
            Upload::Local { file, path } => file.write_all(data).map_err(|e| SinkError::io(format!("writing {}", path.display()), e)),
            Upload::Store(upload) => {
                block_on(upload.write_all(data)).map_err(|e| SinkError::transient(format!("{}: uploading {tmp}: {e}", target.shown)))
            }
        }
    }

    /// Makes the file whole and durable under its temporary name.
    pub(super) fn finish(self, target: &Target, tmp: &str) -> Result<(), SinkError> {
        match self {
            Upload::Local { file, path } => file.sync_all().map_err(|e| SinkError::io(format!("syncing {}", path.display()), e)),
            // (A failed shutdown cannot be aborted: object_store's BufWriter
            // refuses once shut down. Stores expire incomplete multipart
            // uploads with a lifecycle rule.)
            Upload::Store(mut upload) => block_on(upload.shutdown())
                .map_err(|e| SinkError::transient(format!("{}: completing the upload of {tmp}: {e}", target.shown))),
        }
    }

    /// Drops the file (best effort: what is left is removed with the
    /// pipeline's other uncommitted files on the next start).
    pub(super) fn abort(self) {
        match self {
            Upload::Local { file, path } => {
                drop(file);
                let _ = std::fs::remove_file(path);
            }
            Upload::Store(mut upload) => {
                let _ = block_on(upload.abort());
            }
        }
    }
}
