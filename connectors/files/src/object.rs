//! The object-store sink: S3 (and S3-compatible stores), Azure Blob / ADLS
//! Gen2, GCS, HDFS, and local directories for the typed formats, through
//! `object_store` (and `hdfs-native-object-store`).
//!
//! # Layout
//!
//! ```text
//! <root>/<schema>.<table>/[dt=YYYY-MM-DD/[hour=HH/]]<first position>_<last position>.<ext>
//! <root>/_riffle/<pipeline>.json                       the commit manifest
//! <root>/_riffle/tmp/<pipeline>/…                      files being written
//! ```
//!
//! # Commit protocol
//!
//! Object stores have no rename that readers could rely on being atomic
//! across a whole commit, but a single object appears whole or not at all
//! (a PUT, or a multipart upload's completion). So each file is written to
//! a temporary key under `_riffle/tmp/<pipeline>/` (multipart for large
//! files), and a commit (1) completes the uploads, (2) writes the manifest:
//! the committed position and the (temporary, final) keys, (3) copies each
//! file to its final key and deletes the temporary one. On start the sink
//! re-applies the manifest's renames (finishing a commit a crash
//! interrupted) and deletes every other temporary object of the pipeline:
//! events never committed, which the source replays. The manifest's
//! position lets the pipeline skip replayed events the sink already holds,
//! so a crash neither loses nor duplicates a change and never leaves a torn
//! or uncommitted object under a final key.

use crate::manifest::Manifest;
use crate::RollPolicy;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use riffle_core::{block_on, ChangeEvent, Position, Sink, SinkError, TableSchema};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Encodes one file's events; the bytes are taken out as they are ready.
pub trait FileWriter: Send {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), String>;
    /// Moves the bytes ready so far to `out`.
    fn take(&mut self, out: &mut Vec<u8>);
    /// Ends the file, moving its last bytes to `out`.
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), String>;
    /// Encoded bytes so far (an estimate for formats that buffer).
    fn bytes(&self) -> u64;
}

/// Makes a [`FileWriter`] for a table's schema version.
pub trait FileFormat: Send + Sync {
    fn extension(&self) -> &'static str;
    fn name(&self) -> String;
    fn writer(&self, table: &Arc<TableSchema>, namespace: &str) -> Box<dyn FileWriter>;
}

/// Hive-style time partitions of change files, from the commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    None,
    /// `dt=YYYY-MM-DD/`
    Day,
    /// `dt=YYYY-MM-DD/hour=HH/`
    Hour,
}

impl Partitioning {
    pub fn parse(s: &str) -> Option<Partitioning> {
        match s {
            "none" => Some(Partitioning::None),
            "day" | "dt" => Some(Partitioning::Day),
            "hour" => Some(Partitioning::Hour),
            _ => None,
        }
    }

    /// The partition's number: days or hours since the epoch (`i64::MIN`
    /// for no partition), compared per event instead of its folder name.
    fn bucket(self, ts_ms: i64) -> i64 {
        match self {
            Partitioning::None => i64::MIN,
            Partitioning::Day => ts_ms.div_euclid(86_400_000),
            Partitioning::Hour => ts_ms.div_euclid(3_600_000),
        }
    }

    fn dir(self, ts_ms: i64) -> String {
        if self == Partitioning::None {
            return String::new();
        }
        let days = ts_ms.div_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let hour = ts_ms.rem_euclid(86_400_000) / 3_600_000;
        match self {
            Partitioning::Day => format!("dt={y:04}-{m:02}-{d:02}/"),
            _ => format!("dt={y:04}-{m:02}-{d:02}/hour={hour:02}/"),
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A store URL as given (`gcs://…?endpoint=…`): the URL without its query,
/// with the scheme aliases spelled as object_store knows them, and the
/// query's options.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.replacen("gcs://", "gs://", 1).replacen("azure://", "az://", 1);
    (base, riffle_core::url::query_pairs(query))
}

/// An object store and the prefix riffle writes under, from a sink URL.
#[derive(Clone)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub root: ObjPath,
    /// The URL without credentials or options, for messages.
    pub shown: String,
}

fn object_error(what: &str, shown: &str, e: object_store::Error) -> SinkError {
    use object_store::Error as E;
    let text = e.to_string();
    match e {
        E::NotFound { .. } => SinkError::definite(format!(
            "{shown}: {what}: not found ({text}); the bucket or container must exist: create it, or fix the URL"
        )),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            let creds = ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthenticationFailed", "InvalidAuthenticationInfo", "AccessKeyId"]
                .iter()
                .any(|w| text.contains(w));
            SinkError::definite(if creds {
                format!("{shown}: {what}: the store refused the credentials ({text}); check the access key and secret (AWS_*/AZURE_* variables or the sink's options)")
            } else {
                format!("{shown}: {what}: permission denied ({text}); riffle's identity needs write, list and delete access under the sink's prefix")
            })
        }
        E::UnknownConfigurationKey { .. } | E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } => {
            SinkError::definite(format!("{shown}: {what}: {text}"))
        }
        _ => SinkError::transient(format!("{shown}: {what}: {text}")),
    }
}

/// Builds the store for `url` (`s3://bucket/prefix`, `az://container/prefix`,
/// `abfss://container@account.dfs.core.windows.net/prefix`, `gs://bucket/prefix`,
/// `file:///dir`). Credentials come the way each cloud's tools read them
/// (`AWS_*`, `AZURE_*`, `GOOGLE_*` environment variables) and from
/// `options`, object_store's configuration keys (`endpoint`, `region`,
/// `access_key_id`, `account_name`, `use_emulator`, `allow_http`, …).
pub fn open_target(url: &str, options: &[(String, String)]) -> Result<Target, String> {
    use object_store::{aws, azure, gcp, ObjectStoreScheme};
    use std::str::FromStr;
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if matches!(parsed.scheme(), "hdfs" | "viewfs") {
        return open_hdfs(&parsed, options);
    }
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| format!("{url:?}: {e}"))?;
    let shown = format!("{}://{}{}", parsed.scheme(), parsed.host_str().unwrap_or(""), parsed.path());
    let allow_http = |v: &str| v.starts_with("http://");
    let bad_key = |k: &str, e: object_store::Error| format!("{shown}: option {k:?}: {e}");
    let retry = object_store::RetryConfig { max_retries: 8, retry_timeout: std::time::Duration::from_secs(60), ..Default::default() };
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            std::fs::create_dir_all(parsed.path()).map_err(|e| format!("{shown}: creating {}: {e}", parsed.path()))?;
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(parsed.path()).map_err(|e| format!("{shown}: {e}"))?.with_fsync(true);
            return Ok(Target { store: Arc::new(fs), root: ObjPath::default(), shown: format!("file://{}", parsed.path()) });
        }
        ObjectStoreScheme::AmazonS3 => {
            let mut b = aws::AmazonS3Builder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                if k == "allow_http" {
                    b = b.with_allow_http(v == "true");
                    continue;
                }
                let key = aws::AmazonS3ConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                if matches!(key, aws::AmazonS3ConfigKey::Endpoint) && allow_http(v) {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, v);
            }
            if std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).is_ok_and(|v| allow_http(&v)) {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(|e| format!("{shown}: {e}"))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = azure::MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                if k == "allow_http" {
                    b = b.with_allow_http(v == "true");
                    continue;
                }
                let key = azure::AzureConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                if matches!(key, azure::AzureConfigKey::Endpoint) && allow_http(v) {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| format!("{shown}: {e}"))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = gcp::GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                let key = gcp::GoogleConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| format!("{shown}: {e}"))?)
        }
        _ => return Err(format!("{shown}: expected s3://, az://, abfss://, gs:// or file://")),
    };
    Ok(Target { store, root: path, shown })
}

/// HDFS through the pure-Rust client: `hdfs://namenode:port/path`, or a
/// name service (`hdfs://ns/path`, HA from the Hadoop configuration in
/// `HADOOP_CONF_DIR`); Kerberos as the client supports it (a ticket in the
/// credential cache). `options` are Hadoop configuration keys.
fn open_hdfs(parsed: &url::Url, options: &[(String, String)]) -> Result<Target, String> {
    let host = parsed.host_str().ok_or_else(|| format!("{parsed}: expected hdfs://NAMENODE[:PORT]/path"))?;
    let authority = match parsed.port() {
        Some(p) => format!("{}://{host}:{p}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    let shown = format!("{authority}{}", parsed.path());
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(authority)
        .with_config(options.iter().cloned())
        .build()
        .map_err(|e| format!("{shown}: {e}"))?;
    let root = ObjPath::parse(parsed.path().trim_matches('/')).map_err(|e| format!("{shown}: {e}"))?;
    Ok(Target { store: Arc::new(store), root, shown })
}

impl Target {
    fn key(&self, rel: &str) -> ObjPath {
        let mut s = self.root.to_string();
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(rel);
        ObjPath::from(s)
    }

    /// The object at `rel` under the root, if there is one.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, SinkError> {
        let key = self.key(rel);
        block_on(async {
            match self.store.get(&key).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())).map_err(|e| object_error(&format!("reading {key}"), &self.shown, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(object_error(&format!("reading {key}"), &self.shown, e)),
            }
        })
    }

    /// Writes `rel` under the root (whole, or not at all).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let key = self.key(rel);
        block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| object_error(&format!("writing {key}"), &self.shown, e))
    }

    /// The names of the objects directly under the root.
    pub fn list_names(&self) -> Result<Vec<String>, SinkError> {
        let root = self.root.clone();
        block_on(async {
            let listed = self.store.list_with_delimiter(Some(&root)).await.map_err(|e| object_error("listing", &self.shown, e))?;
            Ok(listed.objects.into_iter().filter_map(|m| m.location.filename().map(str::to_string)).collect())
        })
    }

    /// Writes, reads back the size of, and deletes a probe object: the
    /// bucket exists and riffle may write and delete there.
    pub fn probe(&self) -> Result<String, SinkError> {
        let key = self.key(&format!("_riffle/probe-{}", std::process::id()));
        block_on(async {
            self.store
                .put(&key, PutPayload::from_static(b"riffle"))
                .await
                .map_err(|e| object_error("writing a probe object", &self.shown, e))?;
            self.store.delete(&key).await.map_err(|e| object_error("deleting the probe object", &self.shown, e))?;
            Ok::<_, SinkError>(())
        })?;
        Ok("writable".into())
    }
}

/// The pipeline's commit manifest, if it has one.
fn load_manifest(target: &Target, pipeline: &str) -> Result<Option<Manifest>, SinkError> {
    let manifest_key = target.key(&format!("_riffle/{pipeline}.json"));
    let shown = &target.shown;
    block_on(async {
        match target.store.get(&manifest_key).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| object_error("reading the commit manifest", shown, e))?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    SinkError::definite(format!(
                        "{shown}: the commit manifest {manifest_key} is not valid ({e}); it is riffle's record of what this sink \
                         holds: restore it, or write to an empty prefix"
                    ))
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error("reading the commit manifest", shown, e)),
        }
    })
}

/// Hands bytes to a file's upload (parts go out as they fill).
fn upload_part(target: &Target, upload: &mut object_store::buffered::BufWriter, tmp: &str, data: &[u8]) -> Result<(), SinkError> {
    if data.is_empty() {
        return Ok(());
    }
    block_on(upload.write_all(data)).map_err(|e| SinkError::transient(format!("{}: uploading {tmp}: {e}", target.shown)))
}

struct OpenFile {
    schema: Arc<TableSchema>,
    /// The time partition (see [`Partitioning::bucket`]).
    bucket: i64,
    writer: Box<dyn FileWriter>,
    upload: object_store::buffered::BufWriter,
    tmp: String,
    dir: String,
    first: Position,
    last: Position,
    rows: u64,
    uploaded: u64,
}

/// Writes events as files into an object store, committing with a manifest.
pub struct ObjectSink {
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
    attempted: Option<(Position, Vec<(String, String)>)>,
    committed: Option<Position>,
    /// Names this instance's temporary objects, so a replay never reuses the
    /// key of a file a manifest still lists.
    run: String,
    files: u64,
    chunk: Vec<u8>,
    bytes: u64,
}

const UPLOAD_CHUNK: usize = 8 << 20;

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
        let manifest = load_manifest(&target, pipeline)?;
        let sink = ObjectSink {
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
            run: format!(
                "{:x}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
                    ^ u128::from(std::process::id())
            ),
            files: 0,
            chunk: Vec::with_capacity(UPLOAD_CHUNK + (1 << 20)),
            bytes: 0,
        };
        if let Some(m) = manifest {
            let renames: Vec<(String, String)> =
                m.renames.iter().map(|(t, f)| (t.to_string_lossy().into_owned(), f.to_string_lossy().into_owned())).collect();
            sink.apply_renames(&renames)?;
        }
        sink.remove_uncommitted()?;
        Ok(sink)
    }

    fn apply_renames(&self, renames: &[(String, String)]) -> Result<(), SinkError> {
        let shown = &self.target.shown;
        block_on(async {
            for (tmp, fin) in renames {
                let (tmp, fin) = (self.target.key(tmp), self.target.key(fin));
                match self.target.store.rename(&tmp, &fin).await {
                    Ok(()) => {}
                    // Already moved by the run that crashed.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(object_error(&format!("moving {tmp} to {fin}"), shown, e)),
                }
            }
            Ok(())
        })
    }

    fn finish_unapplied(&mut self) -> Result<(), SinkError> {
        if !self.unapplied.is_empty() {
            self.apply_renames(&self.unapplied)?;
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
        })
    }

    fn start_file(&mut self, event: &ChangeEvent, bucket: i64) -> OpenFile {
        let table = &event.table;
        let partition = if bucket == i64::MIN { String::new() } else { self.partitioning.dir(event.source.ts_ms) };
        let dir = format!("{}.{}/{partition}", crate::sanitize(&table.id.schema), crate::sanitize(&table.id.name));
        let ext = self.format.extension();
        self.files += 1;
        let tmp = format!("_riffle/tmp/{}/{}-{}/{dir}{}.{ext}", self.pipeline, self.run, self.files, event.position.key());
        let namespace = format!("{}.{}.{}", self.pipeline, table.id.schema, table.id.name);
        let upload = object_store::buffered::BufWriter::with_capacity(self.target.store.clone(), self.target.key(&tmp), 10 << 20)
            .with_max_concurrency(4);
        OpenFile {
            schema: table.clone(),
            bucket,
            writer: self.format.writer(table, &namespace),
            upload,
            tmp,
            dir,
            first: event.position,
            last: event.position,
            rows: 0,
            uploaded: 0,
        }
    }

    fn close(&mut self, f: OpenFile) -> Result<(), SinkError> {
        let OpenFile { writer, mut upload, tmp, dir, first, last, .. } = f;
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.clear();
        let finished = writer.finish(&mut chunk).map_err(SinkError::definite);
        let res = finished.and_then(|()| upload_part(&self.target, &mut upload, &tmp, &chunk));
        self.bytes += chunk.len() as u64;
        self.chunk = chunk;
        if let Err(e) = res {
            let _ = block_on(upload.abort());
            return Err(e);
        }
        let shown = &self.target.shown;
        // (A failed shutdown cannot be aborted: object_store's BufWriter
        // refuses once shut down. Stores expire incomplete multipart
        // uploads with a lifecycle rule.)
        block_on(upload.shutdown()).map_err(|e| SinkError::transient(format!("{shown}: completing the upload of {tmp}: {e}")))?;
        let name = format!("{dir}{}_{}.{}", first.key(), last.key(), self.format.extension());
        self.pending.push((tmp, name));
        Ok(())
    }

    fn close_all(&mut self) -> Result<(), SinkError> {
        let mut open = std::mem::take(&mut self.open).into_iter();
        while let Some(f) = open.next() {
            if let Err(e) = self.close(f) {
                // Abandon the other uploads (their parts would linger).
                for mut rest in open {
                    let _ = block_on(rest.upload.abort());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn save_manifest(&self, committed: Position, renames: &[(String, String)]) -> Result<(), SinkError> {
        let manifest = Manifest { committed, renames: renames.iter().map(|(t, f)| (t.into(), f.into())).collect() };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let key = self.target.key(&format!("_riffle/{}.json", self.pipeline));
        block_on(self.target.store.put(&key, PutPayload::from(body)))
            .map(|_| ())
            .map_err(|e| object_error("writing the commit manifest", &self.target.shown, e))
    }
}

impl Sink for ObjectSink {
    fn describe(&self) -> String {
        format!("{} ({})", self.target.shown, self.format.name())
    }

    fn committed(&self) -> Option<Position> {
        self.committed
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
                    let f = self.start_file(event, bucket);
                    self.open.push(f);
                    self.open.len() - 1
                }
            },
        };
        self.last = idx;
        let f = &mut self.open[idx];
        f.writer.write(event).map_err(|e| {
            SinkError::definite(format!(
                "{}: the event at position {} cannot be written as {}: {e}",
                self.target.shown,
                event.position,
                self.format.name()
            ))
        })?;
        f.rows += 1;
        f.last = event.position;
        if f.writer.bytes() >= f.uploaded + UPLOAD_CHUNK as u64 {
            self.chunk.clear();
            f.writer.take(&mut self.chunk);
            f.uploaded += self.chunk.len() as u64;
            upload_part(&self.target, &mut f.upload, &f.tmp, &self.chunk)?;
            self.bytes += self.chunk.len() as u64;
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
        let Some(through) = crate::commit_point(self.committed, through, !self.pending.is_empty()) else { return Ok(()) };
        let renames = std::mem::take(&mut self.pending);
        self.attempted = Some((through, renames.clone()));
        self.save_manifest(through, &renames)?;
        self.attempted = None;
        // The manifest holds these events now: whatever happens to the
        // copies, they are committed (a restart finishes the moves).
        self.committed = Some(through);
        self.unapplied = renames;
        self.finish_unapplied()
    }

    /// Drops what was written since the last commit. Moves a saved manifest
    /// lists are finished first and their files never deleted.
    fn abort(&mut self) -> Result<(), SinkError> {
        for mut f in std::mem::take(&mut self.open) {
            let _ = block_on(f.upload.abort());
        }
        self.pending.clear();
        // A manifest write that failed may have landed all the same: the
        // store says which, and its files are then kept and moved.
        if let Some((through, renames)) = self.attempted.take() {
            match load_manifest(&self.target, &self.pipeline) {
                Ok(Some(m)) if m.committed == through => {
                    self.committed = Some(through);
                    self.unapplied = renames;
                }
                Ok(_) => {}
                Err(e) => {
                    self.attempted = Some((through, renames));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_commit_time_in_utc() {
        assert_eq!(Partitioning::Hour.dir(0), "dt=1970-01-01/hour=00/");
        assert_eq!(Partitioning::Day.dir(1_700_000_000_000), "dt=2023-11-14/");
        assert_eq!(Partitioning::Hour.dir(1_700_000_000_000), "dt=2023-11-14/hour=22/");
        assert_eq!(Partitioning::Hour.dir(-1), "dt=1969-12-31/hour=23/");
        assert_eq!(Partitioning::None.dir(1_700_000_000_000), "");
    }
}
