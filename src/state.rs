//! The embedded state store: one JSON file per pipeline in a local
//! directory, written atomically (temporary file, fsync, rename, fsync of
//! the directory), or one object per pipeline under a bucket prefix
//! (`--state s3://bucket/riffle-state`; a PUT replaces an object whole), so
//! a stateless container or CI job can resume. The saved offset never
//! moves backwards.

use anyhow::{anyhow, Result};
use riffle_core::{ErrorKind, Offset, Position, SinkError};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the initial snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// A snapshot was started and has not completed. With no offset saved,
    /// the next run takes a new one (dropping the slot this pipeline
    /// created); with an offset and chunks left, it reads those chunks.
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
    /// The server-side session the source streamed on (Postgres walsender
    /// pid, MySQL binlog dump connection id): the next lease holder ends it
    /// if the server still holds it after this process died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session: Option<u64>,
    /// A chunked snapshot not finished: the key ranges still to read. The
    /// next run streams from `offset` and reads them (see
    /// `riffle_core::chunks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<riffle_core::SnapshotProgress>,
}

/// Why the state could not be read or saved, sorted like every other error:
/// a store that does not answer is retried, a state that cannot be right is
/// not.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The error's text is in the message, with the fix after it.
    #[error("{what} {path}: {error}{hint}", hint = riffle_core::error::io_hint(error))]
    Io { what: &'static str, path: String, error: std::io::Error },
    /// The bucket the state lives in refused or failed a request.
    #[error("{what}")]
    Store {
        what: &'static str,
        #[source]
        source: SinkError,
    },
    #[error("state {location} is not valid ({source}); restore it, or remove it to take a new snapshot")]
    Invalid { location: String, source: serde_json::Error },
    /// Another process saved the state since this one read or wrote it.
    #[error(
        "state {location} was saved by another process since this one last read it (another riffle took this pipeline over while this \
         one was frozen or cut off?); stopping without saving: the other one carries on from its saved state"
    )]
    Overtaken { location: String },
    #[error("refusing to move pipeline {name}'s saved offset back from {old} to {new}; this is a bug in riffle")]
    Backwards { name: String, old: Box<Offset>, new: Box<Offset> },
}

impl StateError {
    pub fn kind(&self) -> ErrorKind {
        use std::io::ErrorKind as K;
        match self {
            StateError::Io { error, .. } => match error.kind() {
                K::Interrupted | K::TimedOut | K::WouldBlock => ErrorKind::Transient,
                _ => ErrorKind::Definite,
            },
            StateError::Store { source, .. } => source.kind(),
            StateError::Invalid { .. } | StateError::Backwards { .. } | StateError::Overtaken { .. } => ErrorKind::Definite,
        }
    }
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |error| StateError::Io { what, path: path.display().to_string(), error }
}

/// Where the pipeline saves its state: what [`crate::pipeline`] needs of a
/// [`StateStore`], so its logic can be tested against an in-memory one.
pub trait StateSave: Send {
    fn load(&self, name: &str) -> Result<Option<PipelineState>, StateError>;
    /// Saves `state`; the offset never moves backwards.
    fn save(&self, state: &PipelineState) -> Result<(), StateError>;
    /// Table globs `riffle snapshot` asked the pipeline to read again.
    fn request(&self, _name: &str) -> Result<Vec<String>, StateError> {
        Ok(Vec::new())
    }
    /// The request has been taken into the pipeline's saved state.
    fn clear_request(&self, _name: &str) -> Result<(), StateError> {
        Ok(())
    }
    /// Adds `globs` to the request (an in-band signal asked for them).
    fn add_request(&self, _name: &str, globs: &[String]) -> Result<Vec<String>, StateError> {
        Ok(globs.to_vec())
    }
}

impl StateSave for StateStore {
    fn load(&self, name: &str) -> Result<Option<PipelineState>, StateError> {
        StateStore::load(self, name)
    }

    fn save(&self, state: &PipelineState) -> Result<(), StateError> {
        StateStore::save(self, state)
    }

    fn request(&self, name: &str) -> Result<Vec<String>, StateError> {
        StateStore::request(self, name)
    }

    fn clear_request(&self, name: &str) -> Result<(), StateError> {
        StateStore::clear_request(self, name)
    }

    fn add_request(&self, name: &str, globs: &[String]) -> Result<Vec<String>, StateError> {
        StateStore::add_request(self, name, globs)
    }
}

/// A pipeline's lease while held: a lock on a local file, or a lease object
/// in the state's bucket.
pub enum Lease {
    Local(#[allow(dead_code)] riffle_core::lease::LocalLease),
    Bucket(riffle_files::object::lease::BucketLease),
}

impl Lease {
    /// What the committer confirms before each commit (a bucket lease can
    /// be lost to a standby while this process is frozen).
    pub fn fence(&self) -> Option<riffle_files::object::lease::LeaseHandle> {
        match self {
            Lease::Local(_) => None,
            Lease::Bucket(l) => Some(l.handle()),
        }
    }

    /// Lets the lease go at the end of a run: the next one starts at once.
    pub async fn release(self) {
        if let Lease::Bucket(l) = self {
            l.release().await;
        }
    }
}

impl PipelineState {
    /// A pipeline that has saved nothing yet.
    pub fn new(name: &str, source: String, tables: Vec<String>) -> Self {
        PipelineState {
            version: 1,
            name: name.to_string(),
            source,
            tables,
            snapshot: SnapshotState::InProgress,
            snapshot_started: None,
            offset: None,
            last_position: None,
            last_source_ts_ms: None,
            events: 0,
            updated_ms: now_ms(),
            source_session: None,
            chunks: None,
        }
    }
}

pub enum StateStore {
    Dir(PathBuf),
    /// An object-store prefix (`s3://…`, `az://…`, `gs://…`, …); credentials
    /// as for sinks, options in the URL's query.
    Object(riffle_files::object::Target, Seen),
}

/// For each state in a bucket, the version this process last read or wrote
/// (`None`: there was none) and its offset. A save replaces exactly that
/// version (a conditional write), so a process that lost the pipeline to
/// another one while frozen can never put an older state over the newer
/// one, even between its checks and its write.
#[derive(Default)]
pub struct Seen(std::sync::Mutex<std::collections::HashMap<String, SeenVersion>>);

/// A state's version as last read or written (`None`: absent), and its offset.
type SeenVersion = (Option<riffle_files::object::UpdateVersion>, Option<Offset>);

impl Seen {
    fn get(&self, name: &str) -> Option<SeenVersion> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn set(&self, name: &str, version: Option<riffle_files::object::UpdateVersion>, offset: Option<Offset>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), (version, offset));
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl StateStore {
    /// A directory, or an object-store URL given where a directory goes.
    pub fn new(dir: &Path) -> Result<Self> {
        let text = dir.to_string_lossy();
        // Any other scheme is a store (an unknown one is refused there),
        // never a local directory named like a URL.
        if let Some(p) = text.strip_prefix("file://") {
            return Ok(StateStore::Dir(PathBuf::from(p)));
        }
        if !text.contains("://") {
            return Ok(StateStore::Dir(dir.to_path_buf()));
        }
        let (base, options) = riffle_files::object::split_url(&text);
        let target = riffle_files::object::open_target(&base, &options).map_err(|e| anyhow!("--state: {e}"))?;
        Ok(StateStore::Object(target, Seen::default()))
    }

    /// Takes pipeline `name`'s lease: one process replicates a pipeline at
    /// a time. Refused, naming the holder, when another process holds it;
    /// with `standby`, waits for the holder to end. A local lease is a lock
    /// on `<name>.lock`, released by the kernel the moment its process dies;
    /// in a bucket it is the object `<name>.lease`
    /// ([`riffle_files::object::lease`]): taken over when released, when its
    /// holder is known dead, or after it went unrenewed for its time to live.
    /// `Ok(None)` when `stop` turned true while waiting.
    pub async fn lease(&self, name: &str, standby: bool, stop: &tokio::sync::watch::Receiver<bool>) -> Result<Option<Lease>> {
        use riffle_core::lease::{Holder, LocalLease};
        use riffle_files::object::lease::{self, BucketLease, NotTaken, Wait};
        let refused = |holder: Option<Holder>, what: String| {
            let holder = holder.map_or_else(|| "another riffle".to_string(), |h| h.to_string());
            anyhow!("pipeline {name} is already running: {holder} holds {what}; stop it first, or pass --standby to take over when it ends")
        };
        let dir = match self {
            StateStore::Dir(dir) => dir,
            StateStore::Object(t, _) => {
                let rel = format!("{name}.lease");
                let wait = if standby { Wait::Standby(stop.clone()) } else { Wait::Refuse };
                return match BucketLease::acquire(t, &rel, Holder::me(), lease::TTL, wait).await {
                    Ok(l) => Ok(Some(Lease::Bucket(l))),
                    Err(NotTaken::Held(holder)) => Err(refused(holder, format!("{}/{rel}", t.shown.trim_end_matches('/')))),
                    Err(NotTaken::Stopped) => Ok(None),
                    Err(NotTaken::Failed(e)) => Err(anyhow::Error::new(e).context("taking the pipeline's lease")),
                };
            }
        };
        let path = dir.join(format!("{name}.lock"));
        let mut waiting = false;
        loop {
            match LocalLease::try_acquire(&path, &Holder::me()) {
                Ok(Ok(lease)) => {
                    if waiting {
                        tracing::info!(pipeline = name, "standby: the lease is ours, taking over");
                    }
                    return Ok(Some(Lease::Local(lease)));
                }
                Ok(Err(holder)) => {
                    if !standby {
                        return Err(refused(holder, path.display().to_string()));
                    }
                    if !waiting {
                        let holder = holder.map_or_else(|| "another riffle".to_string(), |h| h.to_string());
                        tracing::info!(pipeline = name, holder, "standby: waiting for the running pipeline to end");
                        waiting = true;
                    }
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = stop.wait_for(|s| *s) => return Ok(None),
                    }
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("locking {}", path.display()))),
            }
        }
    }

    /// Does a process hold pipeline `name`'s lease? On local disk: its lock
    /// is taken. In a bucket: its lease object was not released and was
    /// renewed lately (within twice its time to live, by the store's clock:
    /// a holder that died is not waited for).
    pub fn lease_held(&self, name: &str) -> bool {
        use riffle_core::lease::{Holder, LocalLease};
        let t = match self {
            StateStore::Dir(dir) => {
                let path = dir.join(format!("{name}.lock"));
                return path.exists() && matches!(LocalLease::try_acquire(&path, &Holder::me()), Ok(Err(_)));
            }
            StateStore::Object(t, _) => t,
        };
        let rel = format!("{name}.lease");
        let fresh = t.age(&rel).ok().flatten().is_some_and(|age| age < riffle_files::object::lease::TTL * 2);
        let Ok(Some(bytes)) = self.read(&rel, "reading the lease") else { return false };
        fresh && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v["released"] != serde_json::Value::Bool(true))
    }

    /// Is the state in an object store (rather than a local directory)?
    pub fn is_bucket(&self) -> bool {
        matches!(self, StateStore::Object(..))
    }

    /// Where pipeline `name`'s state lives, for messages.
    pub fn location(&self, name: &str) -> String {
        match self {
            StateStore::Dir(dir) => self::dir_path(dir, name).display().to_string(),
            StateStore::Object(t, _) => format!("{}/{name}.json", t.shown.trim_end_matches('/')),
        }
    }

    /// Where the states live, for messages.
    pub fn describe(&self) -> String {
        match self {
            StateStore::Dir(dir) => dir.display().to_string(),
            StateStore::Object(t, _) => t.shown.clone(),
        }
    }

    pub fn load(&self, name: &str) -> Result<Option<PipelineState>, StateError> {
        let rel = format!("{name}.json");
        let parse = |bytes: &[u8]| -> Result<PipelineState, StateError> {
            serde_json::from_slice(bytes).map_err(|source| StateError::Invalid { location: self.location(name), source })
        };
        match self {
            StateStore::Object(t, seen) if t.conditional() => {
                let got =
                    riffle_core::block_on(t.get_versioned(&rel)).map_err(|source| StateError::Store { what: "reading state", source })?;
                let Some((bytes, version)) = got else {
                    seen.set(name, None, None);
                    return Ok(None);
                };
                let state = parse(&bytes)?;
                seen.set(name, Some(version), state.offset.clone());
                Ok(Some(state))
            }
            _ => self.read(&rel, "reading state")?.map(|b| parse(&b)).transpose(),
        }
    }

    /// The bytes of `rel`: a file in the directory or an object under the
    /// prefix; `None` when there is none.
    fn read(&self, rel: &str, what: &'static str) -> Result<Option<Vec<u8>>, StateError> {
        match self {
            StateStore::Dir(dir) => match fs::read(dir.join(rel)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(what, &dir.join(rel))(e)),
            },
            StateStore::Object(t, _) => t.get(rel).map_err(|source| StateError::Store { what, source }),
        }
    }

    /// Writes `rel` whole or not at all: in the directory a temporary file,
    /// fsync, rename and an fsync of the directory; in a bucket one PUT.
    fn write(&self, rel: &str, bytes: Vec<u8>, what: &'static str) -> Result<(), StateError> {
        let dir = match self {
            StateStore::Dir(dir) => dir,
            StateStore::Object(t, _) => return t.put(rel, bytes).map_err(|source| StateError::Store { what, source }),
        };
        fs::create_dir_all(dir).map_err(io_error("creating state directory", dir))?;
        let path = dir.join(rel);
        let tmp = dir.join(format!("{rel}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(io_error(what, &path))
    }

    /// Every pipeline's state, sorted by name.
    pub fn list(&self) -> Result<Vec<PipelineState>> {
        let names: Vec<String> = match self {
            StateStore::Dir(dir) => match fs::read_dir(dir) {
                Ok(entries) => {
                    entries.flatten().filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string)).collect()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io_error("reading state directory", dir)(e).into()),
            },
            StateStore::Object(t, _) => t
                .list_names()
                .map_err(|source| StateError::Store { what: "listing states", source })?
                .into_iter()
                .filter_map(|n| n.strip_suffix(".json").filter(|s| !s.contains('/')).map(str::to_string))
                .collect(),
        };
        let mut all = Vec::new();
        for stem in names {
            if let Some(s) = self.load(&stem)? {
                all.push(s);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Saves `state`, refusing to move the offset backwards. In a bucket the
    /// write replaces only the version this process last read or wrote
    /// ([`Seen`]).
    pub fn save(&self, state: &PipelineState) -> Result<(), StateError> {
        let name = &state.name;
        let bytes = serde_json::to_vec_pretty(state).expect("a pipeline state serializes");
        let (seen, expect, old) = match self {
            StateStore::Object(t, seen) if t.conditional() => {
                if seen.get(name).is_none() {
                    self.load(name)?;
                }
                let (expect, old) = seen.get(name).unwrap_or_default();
                (Some((t, seen)), expect, old)
            }
            // A state that cannot be read stops the save: the check below must not be skipped.
            _ => (None, None, self.load(name)?.and_then(|s| s.offset)),
        };
        if let (Some(new), Some(old)) = (state.offset.clone(), old) {
            if new.is_before(&old) {
                return Err(StateError::Backwards { name: name.clone(), old: Box::new(old), new: Box::new(new) });
            }
        }
        riffle_core::fail::point("state.checked");
        let Some((t, seen)) = seen else { return self.write(&format!("{name}.json"), bytes, "saving state") };
        match riffle_core::block_on(t.put_if(&format!("{name}.json"), bytes, expect)) {
            Ok(Some(version)) => {
                seen.set(name, Some(version), state.offset.clone());
                Ok(())
            }
            Ok(None) => Err(StateError::Overtaken { location: self.location(name) }),
            Err(source) => Err(StateError::Store { what: "saving state", source }),
        }
    }
}

impl StateStore {
    /// The table globs `riffle snapshot` asked pipeline `name` to read
    /// again, not yet taken into its state. `riffle snapshot` writes
    /// `<name>.request` beside the state (the running process owns the
    /// state file); the pipeline first claims it by renaming it to
    /// `<name>.request.taken`, so a request written meanwhile waits for the
    /// next look instead of being deleted unread, and removes the claimed
    /// file once its state holds the request ([`StateStore::clear_request`]).
    /// In a bucket the claim is a copy and a delete: a request written
    /// between the two is lost (run `riffle snapshot` again).
    pub fn request(&self, name: &str) -> Result<Vec<String>, StateError> {
        let (rel, taken) = (format!("{name}.request"), format!("{name}.request.taken"));
        let bytes = match self {
            StateStore::Dir(dir) => {
                let taken = dir.join(&taken);
                if !taken.exists() {
                    match fs::rename(dir.join(&rel), &taken) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                        Err(e) => return Err(io_error("claiming snapshot request", &dir.join(&rel))(e)),
                    }
                }
                fs::read(&taken).map_err(io_error("reading snapshot request", &taken))?
            }
            StateStore::Object(t, _) => match self.read(&taken, "reading snapshot request")? {
                Some(b) => b,
                None => match self.read(&rel, "reading snapshot request")? {
                    Some(b) => {
                        self.write(&taken, b.clone(), "claiming snapshot request")?;
                        t.delete(&rel).map_err(|source| StateError::Store { what: "claiming snapshot request", source })?;
                        b
                    }
                    None => return Ok(Vec::new()),
                },
            },
        };
        self.parse_request(name, &bytes)
    }

    fn parse_request(&self, name: &str, bytes: &[u8]) -> Result<Vec<String>, StateError> {
        serde_json::from_slice(bytes).map_err(|source| StateError::Invalid { location: format!("{} request", self.location(name)), source })
    }

    /// Adds `globs` to pipeline `name`'s request (`<name>.request`).
    pub fn add_request(&self, name: &str, globs: &[String]) -> Result<Vec<String>, StateError> {
        let rel = format!("{name}.request");
        let mut all = match self.read(&rel, "reading snapshot request")? {
            Some(b) => self.parse_request(name, &b)?,
            None => Vec::new(),
        };
        for g in globs {
            if !all.contains(g) {
                all.push(g.clone());
            }
        }
        self.write(&rel, serde_json::to_vec(&all).expect("strings serialize"), "saving snapshot request")?;
        Ok(all)
    }

    /// Removes the request [`StateStore::request`] claimed.
    pub fn clear_request(&self, name: &str) -> Result<(), StateError> {
        let rel = format!("{name}.request.taken");
        match self {
            StateStore::Dir(dir) => match fs::remove_file(dir.join(&rel)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("removing snapshot request", &dir.join(&rel))(e)),
            },
            StateStore::Object(t, _) => t.delete(&rel).map_err(|source| StateError::Store { what: "removing snapshot request", source }),
        }
    }
}

impl PipelineState {
    /// Takes `globs` into the snapshot plan as tables to read again.
    pub fn request_snapshot(&mut self, globs: &[String]) {
        let mut plan = self.chunks.clone().unwrap_or_default();
        for g in globs {
            if !plan.requested.contains(g) {
                plan.requested.push(g.clone());
            }
        }
        self.chunks = Some(plan);
        self.snapshot = SnapshotState::InProgress;
    }
}

fn dir_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::Lsn;

    fn state(lsn: u64) -> PipelineState {
        PipelineState {
            snapshot: SnapshotState::Done,
            offset: Some(Offset::Postgres { lsn: Lsn(lsn) }),
            ..PipelineState::new("p", "postgres://u@h/db".into(), vec![])
        }
    }

    #[test]
    fn saves_atomically_and_never_moves_back() {
        let dir = std::env::temp_dir().join(format!("riffle-state-test-{}", std::process::id()));
        let store = StateStore::new(&dir).unwrap();
        store.save(&state(200)).unwrap();
        assert_eq!(store.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(200) }));
        assert!(store.save(&state(100)).is_err());
        assert_eq!(store.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(200) }));
        assert!(!dir_path(&dir, "p").with_extension("json.tmp").exists());
        // Whether a pipeline runs, for verify: its lock is taken.
        assert!(!store.lease_held("p"));
        let held = riffle_core::lease::LocalLease::try_acquire(&dir.join("p.lock"), &riffle_core::lease::Holder::me()).unwrap().unwrap();
        assert!(store.lease_held("p"));
        drop(held);
        assert!(!store.lease_held("p"));
        fs::remove_dir_all(dir).unwrap();
    }

    /// Two processes on one state in a bucket (object_store's in-memory
    /// store stands in for the bucket: same conditional writes): the one
    /// that saved last before the other took over can no longer save.
    #[test]
    fn in_a_bucket_a_save_replaces_only_the_version_this_process_saw() {
        let bucket: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(object_store::memory::InMemory::new());
        let open = || {
            let target = riffle_files::object::Target {
                store: bucket.clone(),
                root: object_store::path::Path::from("state"),
                shown: "memory://state".into(),
                local: None,
            };
            StateStore::Object(target, Seen::default())
        };
        let (frozen, standby) = (open(), open());
        frozen.save(&state(100)).unwrap();
        // The standby takes over: it reads the state and saves past it.
        assert_eq!(standby.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(100) }));
        standby.save(&state(300)).unwrap();
        // The frozen one wakes and saves what it had (older or newer): refused.
        for lsn in [200, 400] {
            let err = frozen.save(&state(lsn)).unwrap_err();
            assert!(matches!(err, StateError::Overtaken { .. }), "{err}");
            assert_eq!(err.kind(), ErrorKind::Definite);
        }
        assert_eq!(standby.load("p").unwrap().unwrap().offset, Some(Offset::Postgres { lsn: Lsn(300) }));
        standby.save(&state(500)).unwrap();
        // Whether a pipeline runs, for verify: a fresh lease not released.
        let StateStore::Object(t, _) = &standby else { unreachable!("a bucket") };
        assert!(!standby.lease_held("p"), "no lease");
        t.put("p.lease", br#"{"released": false}"#.to_vec()).unwrap();
        assert!(standby.lease_held("p"));
        t.put("p.lease", br#"{"released": true}"#.to_vec()).unwrap();
        assert!(!standby.lease_held("p"));
    }
}
