//! riffle's file sink: a local directory, or standard output.
//!
//! # Layout on disk
//!
//! ```text
//! <root>/<schema>.<table>/<first position>_<last position>.<csv|jsonl>
//! <root>/_riffle/<pipeline>.json          the commit manifest
//! ```
//!
//! One folder per table; a file holds a run of events of one table with one
//! schema, and is named by the positions of its first and last event, so
//! names sort in log order. Files roll when they reach `max_rows` or
//! `max_bytes`, when the table's schema changes, and at every commit (the
//! pipeline commits every `--commit-interval`, which bounds a file's age).
//!
//! # Commit protocol
//!
//! Events are written to hidden temporary files
//! (`.<pipeline>.<first position>.<ext>.tmp`) that readers globbing `*.csv`
//! do not see. A commit closes and fsyncs them, writes the manifest (the
//! last committed position and the renames to do) atomically, then renames
//! each file to its final name. On start the sink re-applies the manifest's
//! renames (finishing a commit a crash interrupted) and deletes its other
//! temporary files (events never committed, which the source replays). The
//! manifest's position lets the pipeline skip replayed events this sink
//! already holds, so a crash neither loses nor duplicates a change and never
//! leaves a torn file under a final name.

mod manifest;
pub mod object;

use manifest::Manifest;
use riffle_core::{ChangeEvent, Position, Sink, SinkError, TableId, TableSchema};
use riffle_formats::Encoder;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// When a file is closed and a new one started.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy { max_rows: 1_000_000, max_bytes: 128 * 1024 * 1024 }
    }
}

struct OpenFile {
    schema: Arc<TableSchema>,
    writer: BufWriter<File>,
    tmp: PathBuf,
    dir: PathBuf,
    first: Position,
    last: Position,
    rows: u64,
    bytes: u64,
}

/// Writes events into a directory tree, committing with a manifest.
pub struct DirSink {
    root: PathBuf,
    pipeline: String,
    encoder: Encoder,
    roll: RollPolicy,
    open: HashMap<TableId, OpenFile>,
    /// Closed files waiting for the next commit: (temporary, final).
    pending: Vec<(PathBuf, PathBuf)>,
    committed: Option<Position>,
    buf: Vec<u8>,
    bytes: u64,
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> SinkError {
    SinkError::io(context, e)
}

impl DirSink {
    /// Opens (creating) `root`, finishing any interrupted commit of
    /// `pipeline` and discarding its uncommitted files.
    pub fn open(root: &Path, pipeline: &str, encoder: Encoder, roll: RollPolicy) -> Result<Self, SinkError> {
        fs::create_dir_all(root).map_err(|e| io(format!("creating output directory {}", root.display()), e))?;
        let manifest_path = Manifest::path(root, pipeline);
        let manifest = Manifest::load(&manifest_path)?;
        let committed = match manifest {
            Some(m) => {
                m.apply_renames(root)?;
                Some(m.committed)
            }
            None => None,
        };
        remove_uncommitted(root, pipeline)?;
        Ok(DirSink {
            root: root.to_path_buf(),
            pipeline: pipeline.to_string(),
            encoder,
            roll,
            open: HashMap::new(),
            pending: Vec::new(),
            committed,
            buf: Vec::with_capacity(1 << 16),
            bytes: 0,
        })
    }

    fn table_dir(&self, table: &TableId) -> PathBuf {
        self.root.join(format!("{}.{}", sanitize(&table.schema), sanitize(&table.name)))
    }

    fn start_file(&mut self, event: &ChangeEvent) -> Result<OpenFile, SinkError> {
        let dir = self.table_dir(&event.table.id);
        fs::create_dir_all(&dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        let tmp = dir.join(format!(".{}.{}.{}.tmp", self.pipeline, event.position.key(), self.encoder.format.extension()));
        let file = File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::new();
        self.encoder.header(&event.table, &mut header);
        writer.write_all(&header).map_err(|e| io(format!("writing {}", tmp.display()), e))?;
        Ok(OpenFile {
            schema: event.table.clone(),
            writer,
            tmp,
            dir,
            first: event.position,
            last: event.position,
            rows: 0,
            bytes: header.len() as u64,
        })
    }

    fn close(&mut self, mut f: OpenFile) -> Result<(), SinkError> {
        f.writer.flush().map_err(|e| io(format!("writing {}", f.tmp.display()), e))?;
        let file = f.writer.into_inner().map_err(|e| io(format!("writing {}", f.tmp.display()), e.into_error()))?;
        file.sync_all().map_err(|e| io(format!("syncing {}", f.tmp.display()), e))?;
        let name = format!("{}_{}.{}", f.first.key(), f.last.key(), self.encoder.format.extension());
        self.pending.push((f.tmp, f.dir.join(name)));
        Ok(())
    }

    fn close_all(&mut self) -> Result<(), SinkError> {
        let open: Vec<OpenFile> = self.open.drain().map(|(_, f)| f).collect();
        for f in open {
            self.close(f)?;
        }
        Ok(())
    }
}

/// CSV and JSON lines for the object-store sink: the same bytes as in a
/// directory.
pub struct TextFormat(pub Encoder);

struct TextWriter {
    encoder: Encoder,
    buf: Vec<u8>,
    bytes: u64,
}

impl object::FileFormat for TextFormat {
    fn extension(&self) -> &'static str {
        self.0.format.extension()
    }

    fn name(&self) -> String {
        self.0.format.extension().to_string()
    }

    fn writer(&self, table: &Arc<TableSchema>, _namespace: &str) -> Box<dyn object::FileWriter> {
        let mut buf = Vec::with_capacity(1 << 20);
        self.0.header(table, &mut buf);
        Box::new(TextWriter { encoder: self.0, bytes: buf.len() as u64, buf })
    }
}

impl object::FileWriter for TextWriter {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), String> {
        let before = self.buf.len();
        self.encoder.encode(event, &mut self.buf);
        self.bytes += (self.buf.len() - before) as u64;
        Ok(())
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<(), String> {
        out.append(&mut self.buf);
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The position a commit records: the last event written when it is past
/// what is committed; else the committed position again when files are
/// waiting (events skipped as replays still close files); else nothing to do.
pub(crate) fn commit_point(committed: Option<Position>, through: Option<Position>, pending: bool) -> Option<Position> {
    match through {
        Some(t) if committed.is_none_or(|c| t > c) => Some(t),
        _ if pending => Some(committed.or(through).expect("pending files hold events with positions")),
        _ => None,
    }
}

/// Keeps table folder names to safe characters.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || matches!(c, '_' | '-' | '$') { c } else { '_' }).collect()
}

fn remove_uncommitted(root: &Path, pipeline: &str) -> Result<(), SinkError> {
    let prefix = format!(".{pipeline}.");
    let entries = fs::read_dir(root).map_err(|e| io(format!("reading {}", root.display()), e))?;
    for dir in entries.flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                tracing::debug!(file = %f.path().display(), "removing uncommitted file");
                fs::remove_file(f.path()).map_err(|e| io(format!("removing {}", f.path().display()), e))?;
            }
        }
    }
    Ok(())
}

impl Sink for DirSink {
    fn describe(&self) -> String {
        format!("file://{} ({})", self.root.display(), self.encoder.format.extension())
    }

    fn committed(&self) -> Option<Position> {
        self.committed
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        let id = &event.table.id;
        let same_schema = self.open.get(id).is_some_and(|f| Arc::ptr_eq(&f.schema, &event.table) || *f.schema == *event.table);
        if !same_schema {
            if let Some(old) = self.open.remove(id) {
                self.close(old)?;
            }
            let f = self.start_file(event)?;
            self.open.insert(id.clone(), f);
        }
        self.buf.clear();
        self.encoder.encode(event, &mut self.buf);
        let f = self.open.get_mut(id).expect("file opened above");
        f.writer.write_all(&self.buf).map_err(|e| io(format!("writing {}", f.tmp.display()), e))?;
        f.rows += 1;
        f.bytes += self.buf.len() as u64;
        self.bytes += self.buf.len() as u64;
        f.last = event.position;
        if f.rows >= self.roll.max_rows || f.bytes >= self.roll.max_bytes {
            let f = self.open.remove(id).expect("present");
            self.close(f)?;
        }
        Ok(())
    }

    fn commit(&mut self, through: Option<Position>) -> Result<(), SinkError> {
        self.close_all()?;
        let Some(through) = commit_point(self.committed, through, !self.pending.is_empty()) else { return Ok(()) };
        let root = &self.root;
        let relative = |p: &PathBuf| p.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| p.clone());
        let renames = self.pending.drain(..).map(|(tmp, fin)| (relative(&tmp), relative(&fin))).collect();
        let manifest = Manifest { committed: through, renames };
        manifest.save(&Manifest::path(&self.root, &self.pipeline))?;
        manifest.apply_renames(&self.root)?;
        self.committed = Some(through);
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        self.close_all()?;
        for (tmp, _) in self.pending.drain(..) {
            let _ = fs::remove_file(&tmp);
        }
        Ok(())
    }
}

/// Writes events to standard output: JSON lines, or CSV with a header
/// whenever the table (or its schema) changes. At-least-once: a replay after
/// a crash prints events again.
pub struct StdoutSink {
    encoder: Encoder,
    out: BufWriter<std::io::Stdout>,
    current: Option<Arc<TableSchema>>,
    buf: Vec<u8>,
    bytes: u64,
}

impl StdoutSink {
    pub fn new(encoder: Encoder) -> Self {
        StdoutSink { encoder, out: BufWriter::with_capacity(1 << 16, std::io::stdout()), current: None, buf: Vec::new(), bytes: 0 }
    }
}

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        format!("stdout ({})", self.encoder.format.extension())
    }

    fn committed(&self) -> Option<Position> {
        None
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        self.buf.clear();
        if self.current.as_ref().is_none_or(|s| **s != *event.table) {
            self.encoder.header(&event.table, &mut self.buf);
            self.current = Some(event.table.clone());
        }
        self.encoder.encode(event, &mut self.buf);
        self.bytes += self.buf.len() as u64;
        self.out.write_all(&self.buf).map_err(|e| io("writing to stdout", e))
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn commit(&mut self, _through: Option<Position>) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| io("writing to stdout", e))
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        // Bytes already printed cannot be taken back; consumers deduplicate
        // by position.
        self.out.flush().map_err(|e| io("writing to stdout", e))
    }
}
