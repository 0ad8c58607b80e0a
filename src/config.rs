//! Configuration in two stages: the raw TOML file and flags as given, then a
//! validated [`Config`]. A validation error names the field and the rule it
//! broke.
//!
//! ```toml
//! name = "shop"                       # optional; names slot, publication, state
//! commit_interval = "5s"              # how often sinks commit and state is saved
//! max_retries = 10                    # transient errors retried before giving up
//!
//! [source]
//! url = "postgres://riffle:${PGPASSWORD}@db:5432/shop"
//! tables = ["public.*"]
//! exclude = ["public.audit_*"]
//!
//! [[sinks]]
//! url = "file:///data/cdc"            # or a path, "-" for stdout, s3://, az://, gs://, hdfs://, kafka://
//! format = "jsonl"                    # csv | jsonl | avro | parquet
//! metadata = true                     # CSV and Parquet: the __ metadata columns
//!
//! [[sinks]]
//! name = "lake"
//! url = "s3://bucket/cdc"
//! format = "parquet"
//! partition_by = "hour"               # object stores: Hive dt=/hour= folders
//!
//! [[tables]]
//! match = "public.orders"
//! exclude_columns = ["card_number"]
//! sinks = ["lake"]
//!
//! [state]
//! dir = "/var/lib/riffle"
//!
//! [files]
//! max_rows = 1000000
//! max_bytes = 134217728
//! ```

use crate::cli::{FormatArg, PipelineArgs};
use crate::connectors::sinks::{self, SinkConfig, SinkTarget};
use crate::connectors::{SourceKind, SOURCE_SCHEMES};
use crate::transform::{filter, Mask, TableRule};
use anyhow::{anyhow, bail, Context, Result};
use riffle_files::RollPolicy;
use riffle_formats::{Encoder, Format};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pipeline file as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Pipeline name.
    pub name: Option<String>,
    pub source: Option<RawSource>,
    #[serde(default)]
    pub sinks: Vec<RawSink>,
    pub state: Option<RawState>,
    /// Duration like `500ms`, `5s`, `1m`.
    pub commit_interval: Option<String>,
    pub max_retries: Option<u32>,
    pub files: Option<RawFiles>,
    /// Per-table rules: columns, masks, filter, routing.
    #[serde(default)]
    pub tables: Vec<RawTable>,
    /// Salt for `hash` masks (or RIFFLE_MASK_SALT).
    pub mask_salt: Option<String>,
    /// Postgres heartbeat: a logical message this often (`0s` turns it off).
    pub heartbeat_interval: Option<String>,
    /// Serve Prometheus metrics and /health here, e.g. `127.0.0.1:9187`.
    pub metrics_addr: Option<String>,
    /// Require whole before images (Postgres REPLICA IDENTITY FULL).
    pub full_before_images: Option<bool>,
    /// `/health` turns unhealthy after this long without a message from the source.
    pub stall_timeout: Option<String>,
    /// Connections reading the snapshot at once.
    pub snapshot_workers: Option<usize>,
    /// Rows per snapshot chunk (the unit of saved progress).
    pub snapshot_chunk_rows: Option<u64>,
    /// How long one round of a snapshot read while streaming reads chunks.
    pub snapshot_round: Option<String>,
}

/// One `[[tables]]` rule as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// Glob over `schema.table`; the first matching rule applies.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Keep only these columns.
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Column name → `hash` (salted SHA-256) or `redact` (`****`).
    #[serde(default)]
    pub mask: std::collections::BTreeMap<String, String>,
    /// A predicate such as `location_id = 10` (see `riffle --help`).
    pub filter: Option<String>,
    /// Names of the sinks this table goes to (default: all).
    pub sinks: Option<Vec<String>>,
    /// Kafka: the table's topic; `{prefix}`, `{db}`, `{schema}`, `{table}`
    /// are replaced (default `{prefix}.{schema}.{table}`).
    pub topic: Option<String>,
    /// Columns joined from a reference table in the selection.
    pub enrich: Option<RawEnrich>,
}

/// `enrich = { from = "shop.products", on = { product_id = "id" }, columns = [...] }`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrich {
    /// The reference table, `schema.table`.
    pub from: String,
    /// Column of this table = column of the reference table.
    pub on: std::collections::BTreeMap<String, String>,
    /// Reference columns added to each event.
    pub columns: Vec<String>,
    /// Put in front of the added columns' names.
    #[serde(default)]
    pub prefix: String,
    /// Rows of the reference table held in memory at most.
    pub max_rows: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// In-band signals (`--signal-table`).
    pub signal_table: Option<String>,
}

/// Unknown fields are caught by `options` and refused when the sink is built.
#[derive(Deserialize)]
pub struct RawSink {
    /// A name for routing rules (`[[tables]] sinks = [...]`).
    pub name: Option<String>,
    pub url: String,
    pub format: Option<String>,
    pub metadata: Option<bool>,
    /// Kafka: `topic_prefix`, `partitions`, `replication_factor`,
    /// `create_topics`, `tombstones`, `schemas_enable`, `schema_registry`,
    /// `transaction_topic` (the URL's query options, as fields).
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
    /// Kafka: librdkafka settings passed through (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub kafka: std::collections::BTreeMap<String, toml::Value>,
    /// Kafka: settings of the topics riffle creates (`cleanup.policy`, …).
    #[serde(default)]
    pub topic_config: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: PathBuf,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    pub max_rows: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// A validated pipeline.
#[derive(Clone)]
pub struct Config {
    pub name: String,
    pub source_kind: SourceKind,
    pub source_url: String,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    pub sinks: Vec<SinkConfig>,
    pub state_dir: PathBuf,
    pub commit_interval: Duration,
    pub max_retries: u32,
    pub roll: RollPolicy,
    pub rules: Vec<TableRule>,
    pub mask_salt: String,
    pub heartbeat: Option<Duration>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub full_before_images: bool,
    /// `/health` turns unhealthy after this long without a message from the
    /// source (default: three heartbeats, at least 90 s).
    pub stall_timeout: Duration,
    pub snapshot: riffle_core::SnapshotOptions,
    /// In-band signals: inserts into this table (`schema.table`).
    pub signal_table: Option<String>,
}

/// Shown without secrets: the source URL's password, the state URL's
/// query, the mask salt.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state_dir.to_string_lossy();
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("source", &redact_source_url(&self.source_url))
            .field("tables", &self.tables)
            .field("exclude", &self.exclude)
            .field("sinks", &self.sinks)
            .field("state", &state.split('?').next().unwrap_or_default())
            .field("commit_interval", &self.commit_interval)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// What the source connector is built from.
    pub fn source_spec(&self) -> riffle_core::SourceSpec {
        riffle_core::SourceSpec {
            url: self.source_url.clone(),
            name: self.name.clone(),
            tables: self.tables.clone(),
            exclude: self.exclude.clone(),
            heartbeat: self.heartbeat,
            full_before_images: self.full_before_images,
            snapshot: self.snapshot,
            read_first: self.rules.iter().filter_map(|r| r.enrich.as_ref().map(|e| e.from.to_string())).collect(),
        }
    }
}

/// Reads a pipeline file, replacing `${VAR}` in its strings from the
/// environment.
pub fn load_file(path: &Path) -> Result<RawFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    let mut value: toml::Value = toml::from_str(&text).map_err(|e| anyhow!("config {}: {e}", path.display()))?;
    interpolate(&mut value, "", path)?;
    RawFile::deserialize(value).map_err(|e| anyhow!("config {}: {e}", path.display()))
}

fn interpolate(value: &mut toml::Value, at: &str, file: &Path) -> Result<()> {
    match value {
        toml::Value::String(s) => *s = interpolate_str(s, at, file)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{at}[{i}]"), file)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                interpolate(v, &path, file)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn interpolate_str(s: &str, at: &str, file: &Path) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| anyhow!("config {}: {at}: unterminated ${{ in value; write ${{NAME}}", file.display()))?;
        let var = &rest[start + 2..start + end];
        let val = std::env::var(var).map_err(|_| {
            anyhow!("config {}: {at}: environment variable {var} is not set; export it or remove ${{{var}}}", file.display())
        })?;
        out.push_str(&val);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A source URL without its password, for messages and the state file.
pub fn redact_source_url(url: &str) -> String {
    riffle_core::url::redact_url(url)
}

/// `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

fn format_of(arg: FormatArg) -> Format {
    match arg {
        FormatArg::Csv => Format::Csv,
        FormatArg::Jsonl | FormatArg::Json => Format::Jsonl,
        FormatArg::Avro => Format::Avro,
        FormatArg::Parquet => Format::Parquet,
    }
}

/// A stable name from the database and the table selection, so two
/// pipelines with different selections never share a slot.
pub fn default_name(source_url: &str, tables: &[String], exclude: &[String]) -> String {
    let db = url::Url::parse(source_url).map(|u| u.path().trim_start_matches('/').to_string()).unwrap_or_default();
    let mut sel: Vec<String> = tables.to_vec();
    sel.sort();
    sel.push("!".into());
    let mut ex = exclude.to_vec();
    ex.sort();
    sel.extend(ex);
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sel.join("\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let db: String = db.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(40).collect();
    format!("riffle_{db}_{:08x}", h as u32)
}

/// Flags and file merged; flags win.
pub struct Overrides<'a> {
    pub args: &'a PipelineArgs,
    pub no_metadata: bool,
    pub state: Option<&'a PathBuf>,
    pub commit_interval: Option<&'a str>,
    pub max_retries: Option<u32>,
}

impl<'a> Overrides<'a> {
    /// A command that reads a pipeline (`check`, `verify`): its flags and
    /// state, nothing of how it writes.
    pub fn reading(args: &'a PipelineArgs, state: Option<&'a PathBuf>) -> Self {
        Overrides { args, no_metadata: false, state, commit_interval: None, max_retries: None }
    }
}

pub fn build(o: Overrides<'_>) -> Result<Config> {
    let args = o.args;
    let mut debezium_kafka = Vec::new();
    let file = match (&args.config, &args.debezium_config) {
        (Some(_), Some(_)) => bail!("--config and --debezium-config: give one pipeline file"),
        (Some(p), None) => load_file(p)?,
        (None, Some(p)) => {
            if args.sinks.is_empty() {
                bail!(
                    "--debezium-config: a connector's configuration does not name the Kafka brokers (they are the Connect \
                     worker's bootstrap.servers); pass --sink kafka://BROKER:9092"
                );
            }
            let t = crate::connectors::debezium_config::load(p)?;
            debezium_kafka = t.kafka;
            t.file
        }
        (None, None) => RawFile::default(),
    };
    let where_ = |field: &str| match (&args.config, &args.debezium_config) {
        (Some(p), _) => format!("config {}: {field}", p.display()),
        (_, Some(p)) => format!("Debezium config {}: {field}", p.display()),
        _ => field.to_string(),
    };
    let raw_source = file.source.unwrap_or_default();
    let source_url = args
        .source
        .clone()
        .or(raw_source.url)
        .ok_or_else(|| anyhow!("no source given; pass --source postgres://USER@HOST/DATABASE or set source.url in --config"))?;
    let Some(source_kind) = SourceKind::of(&source_url) else {
        bail!("{}: expected {SOURCE_SCHEMES}, found {:?}", where_("source.url"), redact_source_url(&source_url));
    };
    let mut tables = if args.tables.is_empty() { raw_source.tables } else { args.tables.clone() };
    // A Kafka source's topics select what it reads: every table in them by default.
    if tables.is_empty() && source_kind == SourceKind::Kafka {
        tables.push("*".to_string());
    }
    if tables.is_empty() {
        bail!("no tables selected; pass --tables 'schema.table' (globs allowed, e.g. 'public.*') or set source.tables in --config");
    }
    // The signal table is captured like the others (its inserts are the
    // signals), so it joins the selection.
    let signal_table = args.signal_table.clone().or(raw_source.signal_table);
    if let Some(t) = &signal_table {
        if riffle_core::TableId::parse(t).is_none() || t.contains('*') || t.contains('?') {
            bail!("{}: expected one table as SCHEMA.TABLE, found {t:?}", where_("source.signal_table"));
        }
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    let exclude = if args.exclude.is_empty() { raw_source.exclude } else { args.exclude.clone() };
    let metadata_default = !o.no_metadata;
    let mut sinks = Vec::new();
    if args.sinks.is_empty() {
        for (i, s) in file.sinks.iter().enumerate() {
            let field = where_(&format!("sinks[{i}].format"));
            let format = match (&s.format, args.format) {
                (_, Some(f)) => format_of(f),
                (Some(f), None) => {
                    Format::parse(f).ok_or_else(|| anyhow!("{field}: expected csv, jsonl, json, avro or parquet, found {f:?}"))?
                }
                (None, None) => Format::Jsonl,
            };
            let encoder = Encoder { format, metadata: s.metadata.unwrap_or(metadata_default) && metadata_default };
            let mut sink = sinks::parse_sink(&s.url, encoder, &where_(&format!("sinks[{i}].url")))?;
            sink.name = s.name.clone().unwrap_or_else(|| format!("sink{i}"));
            sinks::apply_fields(&mut sink, s, &|k| where_(&format!("sinks[{i}].{k}")))?;
            sinks::settle_format(&mut sink, s.format.is_some() || args.format.is_some(), &field)?;
            sinks.push(sink);
        }
    } else {
        let format = args.format.map(format_of).unwrap_or(Format::Jsonl);
        for (i, s) in args.sinks.iter().enumerate() {
            let mut sink = sinks::parse_sink(s, Encoder { format, metadata: metadata_default }, "--sink")?;
            sink.name = format!("sink{i}");
            sinks::apply_defaults(&mut sink, s, &debezium_kafka).map_err(|e| anyhow!("{}: {e}", where_("--sink")))?;
            sinks::settle_format(&mut sink, args.format.is_some(), "--format")?;
            sinks.push(sink);
        }
    }
    if sinks.is_empty() {
        bail!("no sink given; pass --sink DIR (or file:///dir, or - for stdout) or add a [[sinks]] table to --config");
    }
    if sinks.iter().filter(|s| matches!(s.target, SinkTarget::Stdout)).count() > 1 {
        bail!("--sink -: standard output can be given once");
    }
    // Two sinks under one root would share (and clobber) one manifest.
    let mut roots: Vec<String> = Vec::new();
    for s in &sinks {
        let Some(root) = sinks::manifest_root(&s.target) else { continue };
        if roots.contains(&root) {
            bail!(
                "sink {}: two sinks write under the same place {}; their commit manifests would collide: give each its own directory or prefix",
                s.name,
                riffle_core::url::redact_url(&root)
            );
        }
        roots.push(root);
    }
    let name = args.name.clone().or(file.name).unwrap_or_else(|| default_name(&source_url, &tables, &exclude));
    if name.is_empty() || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("{}: expected 1 to 63 characters of a-z, 0-9 and _, found {name:?}", where_("name"));
    }
    let interval_text = o.commit_interval.map(str::to_string).or(file.commit_interval).unwrap_or_else(|| "5s".into());
    let commit_interval = parse_duration(&interval_text)
        .ok_or_else(|| anyhow!("{}: expected a duration like 500ms, 5s or 1m, found {interval_text:?}", where_("commit_interval")))?;
    let files = file.files.unwrap_or_default();
    let roll = RollPolicy {
        max_rows: args.max_file_rows.or(files.max_rows).unwrap_or(RollPolicy::default().max_rows).max(1),
        max_bytes: args.max_file_bytes.or(files.max_bytes).unwrap_or(RollPolicy::default().max_bytes).max(1),
    };
    let state_dir = o.state.cloned().or(file.state.map(|s| s.dir)).unwrap_or_else(|| PathBuf::from(".riffle"));
    let rules = table_rules(args, &file.tables, &sinks, (&tables, &exclude), &where_)?;
    let topic_routes: Vec<(String, String)> = file.tables.iter().filter_map(|t| Some((t.pattern.clone(), t.topic.clone()?))).collect();
    for s in &mut sinks {
        sinks::apply_pipeline(&mut s.target, &name, &topic_routes);
    }
    let mask_salt = file.mask_salt.or_else(|| std::env::var("RIFFLE_MASK_SALT").ok()).unwrap_or_default();
    if mask_salt.is_empty() && rules.iter().any(|r| r.masks.iter().any(|(_, m)| *m == Mask::Hash)) {
        bail!(
            "{}: hash masks need a secret salt (else a hash of a known value is easy to look up); set mask_salt in the config or RIFFLE_MASK_SALT",
            where_("mask_salt")
        );
    }
    let heartbeat_text = args.heartbeat_interval.clone().or(file.heartbeat_interval).unwrap_or_else(|| "60s".into());
    let heartbeat = parse_duration(&heartbeat_text)
        .ok_or_else(|| anyhow!("{}: expected a duration like 30s or 0s (off), found {heartbeat_text:?}", where_("heartbeat_interval")))?;
    let default_stall = (heartbeat * 3).max(Duration::from_secs(90));
    let stall_timeout = match args.stall_timeout.clone().or(file.stall_timeout) {
        Some(t) => parse_duration(&t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("{}: expected a duration like 2m, found {t:?}", where_("stall_timeout")))?,
        None => default_stall,
    };
    let metrics_text = args.metrics_addr.clone().or(file.metrics_addr);
    let metrics_addr = match metrics_text {
        Some(a) => Some(a.parse().map_err(|_| anyhow!("{}: expected HOST:PORT like 127.0.0.1:9187, found {a:?}", where_("metrics_addr")))?),
        None => None,
    };
    let snapshot_workers = args.snapshot_workers.or(file.snapshot_workers);
    if snapshot_workers == Some(0) {
        bail!("{}: expected at least 1 connection, found 0", where_("snapshot_workers"));
    }
    let chunk_rows = args.snapshot_chunk_rows.or(file.snapshot_chunk_rows);
    if chunk_rows == Some(0) {
        bail!("{}: expected at least 1 row, found 0", where_("snapshot_chunk_rows"));
    }
    let round_text = args.snapshot_round.clone().or(file.snapshot_round).unwrap_or_else(|| "5s".into());
    let round = parse_duration(&round_text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("{}: expected a duration like 5s, found {round_text:?}", where_("snapshot_round")))?;
    Ok(Config {
        name: name.to_lowercase(),
        source_kind,
        source_url,
        tables,
        exclude,
        sinks,
        state_dir,
        commit_interval,
        max_retries: o.max_retries.or(file.max_retries).unwrap_or(10),
        roll,
        rules,
        mask_salt,
        heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
        metrics_addr,
        full_before_images: args.full_before_images || file.full_before_images.unwrap_or(false),
        stall_timeout,
        snapshot: riffle_core::SnapshotOptions { workers: snapshot_workers, chunk_rows, round },
        signal_table,
    })
}

/// `schema.table.column` → (`schema.table`, `column`).
fn split_column(spec: &str, flag: &str) -> Result<(String, String)> {
    let (table, column) = spec
        .rsplit_once('.')
        .filter(|(t, c)| !t.is_empty() && !c.is_empty())
        .ok_or_else(|| anyhow!("{flag} {spec:?}: expected SCHEMA.TABLE.COLUMN"))?;
    let table = if table.contains('.') { table.to_string() } else { format!("public.{table}") };
    Ok((table, column.to_string()))
}

fn parse_mask(kind: &str, field: &str) -> Result<Mask> {
    match kind {
        "hash" => Ok(Mask::Hash),
        "redact" => Ok(Mask::Redact),
        other => bail!("{field}: expected hash or redact, found {other:?}"),
    }
}

/// Builds the per-table rules: those from flags first (one per table), then
/// the file's `[[tables]]`.
fn table_rules(
    args: &PipelineArgs,
    raw: &[RawTable],
    sinks: &[SinkConfig],
    selection: (&[String], &[String]),
    where_: &dyn Fn(&str) -> String,
) -> Result<Vec<TableRule>> {
    let mut from_flags: Vec<TableRule> = Vec::new();
    let mut rule_for = |table: String| -> usize {
        if let Some(i) = from_flags.iter().position(|r| r.pattern == table) {
            return i;
        }
        from_flags.push(TableRule {
            pattern: table,
            columns: None,
            exclude_columns: vec![],
            masks: vec![],
            filter: None,
            sinks: None,
            enrich: None,
        });
        from_flags.len() - 1
    };
    let mut staged: Vec<(usize, &str, String)> = Vec::new();
    for spec in &args.exclude_columns {
        let (t, c) = split_column(spec, "--exclude-column")?;
        staged.push((rule_for(t), "exclude", c));
    }
    for spec in &args.masks {
        let (col, kind) = spec.split_once('=').unwrap_or((spec.as_str(), "hash"));
        parse_mask(kind, &format!("--mask {spec}"))?;
        let (t, c) = split_column(col, "--mask")?;
        staged.push((rule_for(t), kind, c));
    }
    let mut filters = Vec::new();
    for spec in &args.filters {
        let (t, pred) = spec.split_once(':').ok_or_else(|| anyhow!("--filter {spec:?}: expected 'SCHEMA.TABLE: PREDICATE'"))?;
        let t = t.trim();
        let t = if t.contains('.') { t.to_string() } else { format!("public.{t}") };
        let expr = filter::parse(pred.trim()).map_err(|e| anyhow!("--filter {spec:?}: {e}"))?;
        filters.push((rule_for(t), pred.trim().to_string(), expr));
    }
    for (i, kind, c) in staged {
        match kind {
            "exclude" => from_flags[i].exclude_columns.push(c),
            k => from_flags[i].masks.push((c, parse_mask(k, "--mask")?)),
        }
    }
    for (i, text, expr) in filters {
        from_flags[i].filter = Some((text, expr));
    }
    let mut rules = from_flags;
    for (n, t) in raw.iter().enumerate() {
        let field = |f: &str| where_(&format!("tables[{n}].{f}"));
        let mut masks = Vec::new();
        for (col, kind) in &t.mask {
            masks.push((col.clone(), parse_mask(kind, &field(&format!("mask.{col}")))?));
        }
        let filter = match &t.filter {
            Some(text) => Some((text.clone(), filter::parse(text).map_err(|e| anyhow!("{}: {e}", field("filter")))?)),
            None => None,
        };
        let routed = match &t.sinks {
            Some(names) => {
                let mut idx = Vec::new();
                for name in names {
                    let i = sinks.iter().position(|s| &s.name == name).ok_or_else(|| {
                        let known: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
                        anyhow!("{}: no sink is named {name:?} (sinks: {})", field("sinks"), known.join(", "))
                    })?;
                    idx.push(i);
                }
                Some(idx)
            }
            None => None,
        };
        let enrich = match &t.enrich {
            Some(e) => Some(enrich_rule(e, selection, &field)?),
            None => None,
        };
        rules.push(TableRule {
            pattern: t.pattern.clone(),
            columns: t.columns.clone(),
            exclude_columns: t.exclude_columns.clone(),
            masks,
            filter,
            sinks: routed,
            enrich,
        });
    }
    crate::transform::Transformer::check(&rules).map_err(|e| anyhow!("{}: {e}", where_("tables")))?;
    Ok(rules)
}

/// An `enrich` setting checked against the selection: the reference table
/// must be captured by the pipeline, or its copy would stay empty.
fn enrich_rule(
    e: &RawEnrich,
    (tables, exclude): (&[String], &[String]),
    field: &dyn Fn(&str) -> String,
) -> Result<crate::transform::enrich::Enrich> {
    let from = riffle_core::TableId::parse(&e.from)
        .filter(|_| !e.from.contains(['*', '?']))
        .ok_or_else(|| anyhow!("{}: expected one table as SCHEMA.TABLE, found {:?}", field("enrich.from"), e.from))?;
    let name = from.to_string();
    let glob = |g: &String| crate::transform::matches(g, &name);
    if !tables.iter().any(glob) || exclude.iter().any(glob) {
        bail!(
            "{}: {name} is not in the pipeline's selection (tables: {}{}); enrichment keeps its copy of the reference table \
             from the same change stream: add it to source.tables",
            field("enrich.from"),
            tables.join(", "),
            if exclude.is_empty() { String::new() } else { format!(", exclude: {}", exclude.join(", ")) }
        );
    }
    if e.on.is_empty() {
        bail!("{}: expected at least one pair COLUMN = \"REFERENCE_COLUMN\", found none", field("enrich.on"));
    }
    if e.columns.is_empty() {
        bail!("{}: expected the reference columns to add, found none", field("enrich.columns"));
    }
    Ok(crate::transform::enrich::Enrich {
        from,
        on: e.on.iter().map(|(l, r)| (l.clone(), r.clone())).collect(),
        columns: e.columns.clone(),
        prefix: e.prefix.clone(),
        max_rows: e.max_rows.unwrap_or(crate::transform::enrich::DEFAULT_MAX_ROWS).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_files::object::Partitioning;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn default_names_differ_by_selection_and_fit_a_slot_name() {
        let a = default_name("postgres://u@h/shop", &["public.*".into()], &[]);
        let b = default_name("postgres://u@h/shop", &["public.orders".into()], &[]);
        assert_ne!(a, b);
        assert!(a.starts_with("riffle_shop_") && a.len() <= 63);
        assert_eq!(a, default_name("postgres://other@h/shop", &["public.*".into()], &[]));
    }

    #[test]
    fn missing_environment_variables_name_the_field() {
        let err = interpolate_str("postgres://u:${RIFFLE_TEST_SURELY_UNSET}@h/db", "source.url", Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("source.url: environment variable RIFFLE_TEST_SURELY_UNSET is not set"), "{err}");
    }

    #[test]
    fn the_example_pipeline_file_is_valid() {
        use clap::Parser;
        for var in ["PGPASSWORD", "REGISTRY_PASSWORD", "KAFKA_PASSWORD"] {
            std::env::set_var(var, "example");
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/config.example.toml");
        let cli = crate::cli::Cli::try_parse_from(["riffle", "replicate", "--config", path]).unwrap();
        let crate::cli::Command::Replicate(args) = cli.command else { panic!() };
        let cfg =
            build(Overrides { args: &args.pipeline, no_metadata: false, state: None, commit_interval: None, max_retries: None }).unwrap();
        let kinds: Vec<&str> = cfg
            .sinks
            .iter()
            .map(|s| match &s.target {
                SinkTarget::Stdout => "stdout",
                SinkTarget::Kafka(_) => "kafka",
                SinkTarget::Files(f) if f.local_dir().is_some() => "local files",
                SinkTarget::Files(_) => "object store",
            })
            .collect();
        assert_eq!(kinds, ["local files", "local files", "object store", "kafka"]);
        let SinkTarget::Files(lake) = &cfg.sinks[2].target else { panic!() };
        assert_eq!((lake.partitioning, lake.compression.as_deref()), (Partitioning::Hour, Some("zstd")));
        assert_eq!(lake.store, [("region".to_string(), "eu-west-1".to_string())]);
        let SinkTarget::Kafka(k) = &cfg.sinks[3].target else { panic!() };
        assert_eq!((k.partitions, k.replication_factor, k.topic_prefix.as_str()), (6, 3, "shop"));
        assert!(k.properties.contains(&("sasl.password".to_string(), "example".to_string())));
        assert_eq!(cfg.sinks[3].encoder.format, Format::Avro);
        let e = cfg.rules[0].enrich.as_ref().expect("the example's enrich rule");
        assert_eq!((e.from.to_string(), e.prefix.as_str(), e.max_rows), ("public.products".to_string(), "product_", 500_000));
        assert_eq!(cfg.source_spec().read_first, ["public.products"]);
    }

    fn build_file(text: &str) -> Result<Config> {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("riffle-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()));
        std::fs::write(&path, text).unwrap();
        let cli = crate::cli::Cli::try_parse_from(["riffle", "replicate", "--config", path.to_str().unwrap()]).unwrap();
        let crate::cli::Command::Replicate(args) = cli.command else { panic!() };
        build(Overrides { args: &args.pipeline, no_metadata: false, state: None, commit_interval: None, max_retries: None })
    }

    #[test]
    fn debeziums_option_names_are_taken_in_every_toml_spelling() {
        let cfg = build_file(
            "[source]\nurl = \"postgres://u@h/db\"\ntables = [\"public.t\"]\n\
             [[sinks]]\nurl = \"kafka://b:9092\"\nformat = \"json\"\n\"decimal.handling.mode\" = \"string\"\n\
             binary_handling_mode = \"hex\"\ninterval.handling.mode = \"string\"\n",
        )
        .unwrap();
        let SinkTarget::Kafka(k) = &cfg.sinks[0].target else { panic!() };
        use riffle_kafka::debezium::{BinaryMode, DecimalMode, IntervalMode};
        let riffle_kafka::ValueEncoding::Debezium(m) = k.encoding else { panic!("JSON on Kafka is Debezium's by default") };
        assert_eq!((m.decimal, m.binary, m.interval), (DecimalMode::String, BinaryMode::Hex, IntervalMode::String));

        let err = build_file(
            "[source]\nurl = \"postgres://u@h/db\"\ntables = [\"public.t\"]\n\
             [[sinks]]\nurl = \"kafka://b:9092\"\nvalue_encoding = \"riffle\"\n\"time.precision.mode\" = \"connect\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("time.precision.mode: applies to value_encoding = \"debezium\""), "{err}");
        let err = build_file(
            "[source]\nurl = \"postgres://u@h/db\"\ntables = [\"public.t\"]\n\
             [[sinks]]\nurl = \"kafka://b:9092?time.precision.mode=nanos\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("time.precision.mode: expected adaptive, adaptive_time_microseconds or connect, found \"nanos\""), "{err}");
    }
}
