//! [`ObjectSink`]: writes each table's events as files through a
//! [`FileFormat`], uploads them under temporary keys as they grow, and
//! commits with the manifest (load, save, re-applied moves, cleanup of
//! uncommitted objects) as the module's commit protocol describes.

use super::lease::{self, BucketLease, NotTaken};
use super::partition::Partitioning;
use super::store::{object_error, Target};
use super::upload::Upload;
use crate::manifest::Manifest;
use crate::RollPolicy;
use object_store::path::Path as ObjPath;
use object_store::UpdateVersion;
use object_store::{ObjectStoreExt, PutPayload};
use riffle_core::lease::{Holder, LocalLease};
use riffle_core::{block_on, ChangeEvent, ErrorKind, Position, Sink, SinkError, TableSchema};
use riffle_formats::file::{FileFormat, FileWriter};
use riffle_formats::FormatError;
use std::sync::Arc;

/// The pipeline's commit manifest, if it has one.
/// The manifest of `pipeline` and its version, if there is one.
fn load_manifest(target: &Target, pipeline: &str) -> Result<Option<(Manifest, UpdateVersion)>, SinkError> {
    let rel = format!("_riffle/{pipeline}.json");
    let Some((bytes, version)) = block_on(target.get_versioned(&rel))? else { return Ok(None) };
    let manifest = serde_json::from_slice(&bytes).map_err(|e| {
        SinkError::definite(format!(
            "{}: the commit manifest {rel} is not valid ({e}); it is riffle's record of what this sink holds: restore it, or write to \
             an empty prefix",
            target.shown
        ))
    })?;
    Ok(Some((manifest, version)))
}

struct OpenFile {
    schema: Arc<TableSchema>,
    /// The time partition (see [`Partitioning::bucket`]).
    bucket: i64,
    writer: Box<dyn FileWriter>,
    upload: Upload,
    tmp: String,
    dir: String,
    first: Position,
    last: Position,
    rows: u64,
    uploaded: u64,
    /// `writer.bytes()` already added to the sink's byte count.
    counted: u64,
    /// When it was last written to (the sink's write count then).
    touched: u64,
}

/// The most files a sink keeps open at once: when a new one would pass it,
/// the one written to longest ago is finished early (a smaller file). A
/// snapshot of thousands of small tables holds a bounded number of file
/// handles and buffers, not one per table.
const MAX_OPEN_FILES: usize = 64;

/// One writer per pipeline and sink: a second riffle (a `sync` with the
/// same name, a second `replicate`) would delete this one's uncommitted
/// files and overwrite its manifest. On local disk a lock on
/// `_riffle/<pipeline>.lock`; in a bucket the lease object
/// `_riffle/<pipeline>.lease` ([`super::lease`]); HDFS has no conditional
/// write, so none there.
enum SinkLease {
    Local(#[allow(dead_code)] LocalLease),
    Bucket(BucketLease),
    None,
}

fn refused(shown: &str, pipeline: &str, holder: Option<Holder>) -> SinkError {
    SinkError::definite(format!(
        "{shown}: pipeline {pipeline} is being written here by {}; stop it first, or give this run another --name",
        holder.map_or_else(|| "another riffle".to_string(), |h| h.to_string())
    ))
}

fn lease(target: &Target, pipeline: &str) -> Result<SinkLease, SinkError> {
    if let Some(dir) = &target.local {
        let path = dir.join("_riffle").join(format!("{pipeline}.lock"));
        return match LocalLease::try_acquire(&path, &Holder::me()) {
            Ok(Ok(lease)) => Ok(SinkLease::Local(lease)),
            Ok(Err(holder)) => Err(refused(&target.shown, pipeline, holder)),
            Err(e) => Err(SinkError::io(format!("locking {}", path.display()), e)),
        };
    }
    if !target.conditional() {
        return Ok(SinkLease::None);
    }
    let rel = format!("_riffle/{pipeline}.lease");
    match block_on(BucketLease::acquire(target, &rel, Holder::me(), lease::TTL, lease::Wait::Refuse)) {
        Ok(l) => Ok(SinkLease::Bucket(l)),
        Err(NotTaken::Held(holder)) => Err(refused(&target.shown, pipeline, holder)),
        Err(NotTaken::Failed(e)) => Err(e),
        Err(NotTaken::Stopped) => unreachable!("a refusing lease never waits for a stop"),
    }
}

/// Positions by lane.
type Lanes = std::collections::BTreeMap<u64, Position>;

/// A commit whose manifest write reported an error: what it said.
struct Attempt {
    through: Position,
    renames: Vec<(String, String)>,
    lanes: Lanes,
}

/// Writes events as files into an object store, committing with a manifest.
pub struct ObjectSink {
    /// Held while the sink is open.
    lease: SinkLease,
    /// The manifest's version as this sink last read or wrote it.
    manifest_version: Option<UpdateVersion>,
    manifest_writes: u64,
    target: Target,
    pipeline: String,
    format: Arc<dyn FileFormat>,
    roll: RollPolicy,
    partitioning: Partitioning,
    /// Files being written, one per table schema version and partition.
    open: Vec<OpenFile>,
    /// The index in `open` of the last event's file.
    last: usize,
    pending: Vec<(String, String)>,
    /// Moves a committed manifest lists that have not been done yet (a
    /// failed copy): retried before anything else, never deleted.
    unapplied: Vec<(String, String)>,
    /// A manifest whose write reported an error: it may still have landed.
    attempted: Option<Attempt>,
    committed: Option<Position>,
    /// The last committed position of each lane (Kafka partitions).
    lanes: Lanes,
    /// The last position written in each lane since the last commit.
    written_lanes: Lanes,
    /// Names this instance's temporary objects, so a replay never reuses the
    /// key of a file a manifest still lists.
    run: String,
    files: u64,
    /// Events written by this sink: the clock `OpenFile::touched` reads.
    writes: u64,
    chunk: Vec<u8>,
    bytes: u64,
}

impl ObjectSink {
    /// Opens the sink, finishing an interrupted commit of `pipeline` and
    /// deleting its uncommitted objects.
    pub fn open(
        target: Target,
        pipeline: &str,
        format: Arc<dyn FileFormat>,
        roll: RollPolicy,
        partitioning: Partitioning,
    ) -> Result<ObjectSink, SinkError> {
        let lease = lease(&target, pipeline)?;
        let loaded = load_manifest(&target, pipeline)?;
        let (manifest, manifest_version) = match loaded {
            Some((m, v)) => (Some(m), Some(v)),
            None => (None, None),
        };
        let mut sink = ObjectSink {
            manifest_version,
            lease,
            manifest_writes: 0,
            target,
            pipeline: pipeline.to_string(),
            format,
            roll,
            partitioning,
            open: Vec::new(),
            last: 0,
            pending: Vec::new(),
            unapplied: Vec::new(),
            attempted: None,
            committed: manifest.as_ref().map(|m| m.committed),
            lanes: manifest.as_ref().map(|m| m.lanes.clone()).unwrap_or_default(),
            written_lanes: Lanes::new(),
            run: format!(
                "{:x}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
                    ^ u128::from(std::process::id())
            ),
            files: 0,
            writes: 0,
            chunk: Vec::new(),
            bytes: 0,
        };
        if let Some(m) = manifest {
            let renames: Vec<(String, String)> =
                m.renames.iter().map(|(t, f)| (t.to_string_lossy().into_owned(), f.to_string_lossy().into_owned())).collect();
            // Leniently: a file moved then may have been taken away since by a reader.
            sink.apply_renames(&renames, false)?;
            // Made ours: a previous writer that froze before writing its
            // next manifest (and lost its lease meanwhile) now fails to.
            if sink.target.conditional() {
                sink.save_manifest(m.committed, &renames, &m.lanes)?;
            }
        }
        sink.remove_uncommitted()?;
        Ok(sink)
    }

    /// Moves each file to its final name. `strict`: a file missing under
    /// both names is an error (while this process commits), not a move
    /// done long ago (a restart re-applying an old manifest).
    fn apply_renames(&self, renames: &[(String, String)], strict: bool) -> Result<(), SinkError> {
        let shown = &self.target.shown;
        block_on(async {
            for (tmp, fin) in renames {
                let (tmp, fin) = (self.target.key(tmp), self.target.key(fin));
                match self.target.store.rename(&tmp, &fin).await {
                    Ok(()) => {}
                    // Already moved (by the run that crashed, or an earlier
                    // try)? Only if the file is there: otherwise another
                    // process removed this pipeline's uncommitted files (a
                    // second riffle with the same name on this sink), and
                    // going on would save an offset past lost events.
                    Err(object_store::Error::NotFound { .. }) if !strict => {}
                    Err(object_store::Error::NotFound { .. }) => match self.target.store.head(&fin).await {
                        Ok(_) => {}
                        Err(object_store::Error::NotFound { .. }) => {
                            return Err(SinkError::definite(format!(
                                "{shown}: {tmp} is gone and {fin} was never written: another process removed this pipeline's \
                                 uncommitted files (a second riffle with the same --name writing here?); stop it, then run riffle \
                                 again: it resumes from the last saved position and writes these events again"
                            )))
                        }
                        Err(e) => return Err(object_error(&format!("checking {fin}"), shown, e)),
                    },
                    Err(e) => return Err(object_error(&format!("moving {tmp} to {fin}"), shown, e)),
                }
            }
            Ok(())
        })?;
        // On local disk a rename is durable once its directory is synced,
        // and a new table or partition directory once its parent is.
        if let Some(root) = &self.target.local {
            let mut dirs: Vec<std::path::PathBuf> = Vec::new();
            for (_, fin) in renames {
                let mut dir = root.join(fin);
                while dir.pop() && dir.starts_with(root) {
                    if !dirs.contains(&dir) {
                        dirs.push(dir.clone());
                    }
                }
            }
            for dir in dirs {
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| SinkError::io(format!("syncing directory {}", dir.display()), e))?;
            }
        }
        Ok(())
    }

    fn finish_unapplied(&mut self) -> Result<(), SinkError> {
        if !self.unapplied.is_empty() {
            self.apply_renames(&self.unapplied, true)?;
            self.unapplied.clear();
        }
        Ok(())
    }

    fn tmp_prefix(&self) -> ObjPath {
        self.target.key(&format!("_riffle/tmp/{}", self.pipeline))
    }

    fn remove_uncommitted(&self) -> Result<(), SinkError> {
        use futures_util::TryStreamExt;
        let prefix = self.tmp_prefix();
        let shown = &self.target.shown;
        block_on(async {
            let listed: Vec<_> = self
                .target
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| object_error("listing uncommitted files", shown, e))?;
            for meta in listed {
                tracing::debug!(object = %meta.location, "removing uncommitted object");
                match self.target.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(object_error(&format!("deleting {}", meta.location), shown, e)),
                }
            }
            Ok(())
        })?;
        // On local disk, an upload a crash interrupted leaves its staging
        // file (`<key>#<n>`), which the store's listing does not show.
        if let Some(dir) = &self.target.local {
            let tmp = dir.join("_riffle").join("tmp").join(&self.pipeline);
            match std::fs::remove_dir_all(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SinkError::io(format!("removing uncommitted files under {}", tmp.display()), e)),
            }
        }
        Ok(())
    }

    /// An event the format refuses: definite, and its message names the
    /// position, never the value.
    fn unwritable(&self, event: &ChangeEvent, e: FormatError) -> SinkError {
        let message =
            format!("{}: the event at position {} cannot be written as {}", self.target.shown, event.position, self.format.name());
        SinkError::caused(ErrorKind::Definite, message, e)
    }

    fn start_file(&mut self, event: &ChangeEvent, bucket: i64) -> Result<OpenFile, SinkError> {
        let table = &event.table;
        let partition = if bucket == i64::MIN { String::new() } else { self.partitioning.dir(event.source.ts_ms) };
        let dir = format!("{}.{}/{partition}", crate::sanitize(&table.id.schema), crate::sanitize(&table.id.name));
        let ext = self.format.extension();
        self.files += 1;
        let tmp = format!("_riffle/tmp/{}/{}-{}/{dir}{}.{ext}", self.pipeline, self.run, self.files, event.position.key());
        let namespace = format!("{}.{}.{}", self.pipeline, table.id.schema, table.id.name);
        let writer = self.format.writer(table, &namespace).map_err(|e| self.unwritable(event, e))?;
        let upload = Upload::start(&self.target, &tmp)?;
        Ok(OpenFile {
            schema: table.clone(),
            bucket,
            writer,
            upload,
            tmp,
            dir,
            first: event.position,
            last: event.position,
            rows: 0,
            uploaded: 0,
            counted: 0,
            touched: self.writes,
        })
    }

    fn close(&mut self, f: OpenFile) -> Result<(), SinkError> {
        let OpenFile { writer, mut upload, tmp, dir, first, last, .. } = f;
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.clear();
        let shown = &self.target.shown;
        let finished = writer.finish(&mut chunk).map_err(|e| SinkError::caused(ErrorKind::Definite, format!("{shown}: ending {tmp}"), e));
        let res = finished.and_then(|()| upload.write(&self.target, &tmp, &chunk));
        self.chunk = chunk;
        if let Err(e) = res {
            upload.abort();
            return Err(e);
        }
        upload.finish(&self.target, &tmp)?;
        let name = format!("{dir}{}_{}.{}", first.key(), last.key(), self.format.extension());
        self.pending.push((tmp, name));
        Ok(())
    }

    fn close_all(&mut self) -> Result<(), SinkError> {
        let mut open = std::mem::take(&mut self.open).into_iter();
        while let Some(f) = open.next() {
            if let Err(e) = self.close(f) {
                // Abandon the other uploads (their parts would linger).
                for rest in open {
                    rest.upload.abort();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes the manifest; in a bucket only over the version this sink
    /// last read or wrote, so a writer that lost the sink to another
    /// process can never put an older manifest over the newer one.
    fn save_manifest(&mut self, committed: Position, renames: &[(String, String)], lanes: &Lanes) -> Result<(), SinkError> {
        self.manifest_writes += 1;
        let manifest = Manifest {
            committed,
            lanes: lanes.clone(),
            renames: renames.iter().map(|(t, f)| (t.into(), f.into())).collect(),
            writer: format!("{}-{}", self.run, self.manifest_writes),
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let rel = format!("_riffle/{}.json", self.pipeline);
        if !self.target.conditional() {
            let key = self.target.key(&rel);
            return block_on(self.target.store.put(&key, PutPayload::from(body)))
                .map(|_| ())
                .map_err(|e| object_error("writing the commit manifest", &self.target.shown, e));
        }
        match block_on(self.target.put_if(&rel, body, self.manifest_version.clone()))? {
            Some(v) => {
                self.manifest_version = Some(v);
                Ok(())
            }
            None => Err(SinkError::definite(format!(
                "{}: the commit manifest {rel} was written by another process since this one last read it (another riffle took \
                 pipeline {} over while this one was frozen or cut off?); stopping without committing: the other one carries on",
                self.target.shown, self.pipeline
            ))),
        }
    }
}

impl Drop for ObjectSink {
    /// Lets a bucket lease go, so the next run starts at once (where a
    /// blocking wait is allowed; otherwise the lease expires).
    fn drop(&mut self) {
        if let SinkLease::Bucket(l) = std::mem::replace(&mut self.lease, SinkLease::None) {
            if tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread) {
                block_on(l.release());
            }
        }
    }
}

impl Sink for ObjectSink {
    fn describe(&self) -> String {
        format!("{} ({})", self.target.shown, self.format.name())
    }

    fn committed(&self) -> Option<Position> {
        self.committed
    }

    fn committed_in(&self, lane: u64) -> Option<Position> {
        self.lanes.get(&lane).copied()
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        // Snapshot rows carry the snapshot's start time: they go in its
        // partition, so every file of a partitioned table sits in one.
        let bucket = self.partitioning.bucket(event.source.ts_ms);
        let fits = |f: &OpenFile| f.bucket == bucket && (Arc::ptr_eq(&f.schema, &event.table) || *f.schema == *event.table);
        // Consecutive events of one table hit the same file: check it first.
        let idx = match self.open.get(self.last).filter(|f| fits(f)) {
            Some(_) => self.last,
            None => match self.open.iter().position(fits) {
                Some(i) => i,
                None => {
                    // A new schema version ends the table's file in this partition.
                    if let Some(i) = self.open.iter().position(|f| f.bucket == bucket && f.schema.id == event.table.id) {
                        let old = self.open.swap_remove(i);
                        self.close(old)?;
                    }
                    if self.open.len() >= MAX_OPEN_FILES {
                        let oldest = self.open.iter().enumerate().min_by_key(|(_, f)| f.touched).map_or(0, |(i, _)| i);
                        let old = self.open.swap_remove(oldest);
                        self.close(old)?;
                    }
                    let f = self.start_file(event, bucket)?;
                    self.open.push(f);
                    self.open.len() - 1
                }
            },
        };
        self.last = idx;
        self.writes += 1;
        let f = &mut self.open[idx];
        f.touched = self.writes;
        if let Err(e) = f.writer.write(event) {
            return Err(self.unwritable(event, e));
        }
        f.rows += 1;
        f.last = event.position;
        if let Some(lane) = event.position.lane() {
            self.written_lanes.insert(lane, event.position);
        }
        // Counted as encoded (an estimate for formats that buffer), so the
        // pipeline can put each table's bytes to its name.
        let encoded = f.writer.bytes();
        self.bytes += encoded.saturating_sub(f.counted);
        f.counted = f.counted.max(encoded);
        if encoded >= f.uploaded + f.upload.chunk() as u64 {
            self.chunk.clear();
            f.writer.take(&mut self.chunk);
            f.uploaded += self.chunk.len() as u64;
            f.upload.write(&self.target, &f.tmp, &self.chunk)?;
        }
        if f.rows >= self.roll.max_rows || f.writer.bytes() >= self.roll.max_bytes {
            let f = self.open.swap_remove(idx);
            self.close(f)?;
        }
        Ok(())
    }

    fn commit(&mut self, through: Option<Position>) -> Result<(), SinkError> {
        self.close_all()?;
        self.finish_unapplied()?;
        let through = match through {
            // Lane positions are ordered only within their lane: a commit
            // is due when files wait or a lane moved on.
            Some(t) if t.lane().is_some() => (!self.pending.is_empty() || !self.written_lanes.is_empty()).then_some(t),
            through => crate::commit_point(self.committed, through, !self.pending.is_empty()),
        };
        let Some(through) = through else { return Ok(()) };
        let mut lanes = self.lanes.clone();
        lanes.extend(std::mem::take(&mut self.written_lanes));
        // The last step before the manifest: a process that lost the sink
        // to another (it froze past the lease's time to live) stops here.
        if let SinkLease::Bucket(l) = &self.lease {
            l.handle().confirm()?;
        }
        let renames = std::mem::take(&mut self.pending);
        riffle_core::fail::point("files.written");
        self.attempted = Some(Attempt { through, renames: renames.clone(), lanes: lanes.clone() });
        self.save_manifest(through, &renames, &lanes)?;
        self.attempted = None;
        self.lanes = lanes;
        riffle_core::fail::point("files.manifest");
        // The manifest holds these events now: whatever happens to the
        // moves, they are committed (a restart finishes the moves). So a
        // store that fails now does not fail the commit: the pipeline must
        // save its offset, or it would take the snapshot (or replay the
        // stream) again into a sink that already holds it.
        self.committed = Some(through);
        self.unapplied = renames;
        match self.finish_unapplied() {
            Err(e) if e.kind() == ErrorKind::Transient => {
                tracing::warn!(
                    sink = self.describe(),
                    error = riffle_core::error::chain(&e),
                    "committed (the manifest is saved); moving the files to their final names failed and is retried at the next commit or start"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Drops what was written since the last commit. Moves a saved manifest
    /// lists are finished first and their files never deleted.
    fn abort(&mut self) -> Result<(), SinkError> {
        for f in std::mem::take(&mut self.open) {
            f.upload.abort();
        }
        self.pending.clear();
        self.written_lanes.clear();
        // A manifest write that failed may have landed all the same: the
        // store says which, and its files are then kept and moved.
        if let Some(Attempt { through, renames, lanes }) = self.attempted.take() {
            match load_manifest(&self.target, &self.pipeline) {
                Ok(Some((m, v))) if m.committed == through && m.lanes == lanes => {
                    self.manifest_version = Some(v);
                    self.committed = Some(through);
                    self.lanes = lanes;
                    self.unapplied = renames;
                }
                Ok(_) => {}
                Err(e) => {
                    self.attempted = Some(Attempt { through, renames, lanes });
                    return Err(e);
                }
            }
        }
        self.finish_unapplied()?;
        self.remove_uncommitted()
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }
}
