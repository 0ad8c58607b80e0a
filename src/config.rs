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
//! url = "file:///data/cdc"            # or a path, or "-" for stdout
//! format = "jsonl"                    # csv | jsonl
//! metadata = true                     # CSV: the __ metadata columns
//!
//! [state]
//! dir = "/var/lib/riffle"
//!
//! [files]
//! max_rows = 1000000
//! max_bytes = 134217728
//! ```

use crate::cli::{FormatArg, PipelineArgs};
use anyhow::{anyhow, bail, Context, Result};
use riffle_files::RollPolicy;
use riffle_formats::{Encoder, Format};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pipeline file as written.
#[derive(Debug, Default, Deserialize)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub url: String,
    pub format: Option<String>,
    pub metadata: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    pub max_rows: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    Dir(PathBuf),
    Stdout,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub target: SinkTarget,
    pub encoder: Encoder,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub source_url: String,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    pub sinks: Vec<SinkConfig>,
    pub state_dir: PathBuf,
    pub commit_interval: Duration,
    pub max_retries: u32,
    pub roll: RollPolicy,
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

fn parse_sink(url: &str, encoder: Encoder, field: &str) -> Result<SinkConfig> {
    let target = if url == "-" {
        if encoder.format == Format::Csv {
            tracing::debug!("CSV on stdout: a header is printed whenever the table changes");
        }
        SinkTarget::Stdout
    } else if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            bail!("{field}: {url:?} is not an absolute file URL; write file:///absolute/path or a plain path");
        }
        SinkTarget::Dir(PathBuf::from(path))
    } else if let Some((scheme, _)) = url.split_once("://") {
        bail!("{field}: sink scheme {scheme}:// is not supported yet; supported here: a directory path, file:///path, or - for stdout");
    } else if url.is_empty() {
        bail!("{field}: the sink is empty; give a directory, file:///path or -");
    } else {
        SinkTarget::Dir(PathBuf::from(url))
    };
    Ok(SinkConfig { target, encoder })
}

fn format_of(arg: FormatArg) -> Format {
    match arg {
        FormatArg::Csv => Format::Csv,
        FormatArg::Jsonl => Format::Jsonl,
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

pub fn build(o: Overrides<'_>) -> Result<Config> {
    let args = o.args;
    let file = match &args.config {
        Some(p) => load_file(p)?,
        None => RawFile::default(),
    };
    let where_ = |field: &str| match &args.config {
        Some(p) => format!("config {}: {field}", p.display()),
        None => field.to_string(),
    };
    let raw_source = file.source.unwrap_or_default();
    let source_url = args
        .source
        .clone()
        .or(raw_source.url)
        .ok_or_else(|| anyhow!("no source given; pass --source postgres://USER@HOST/DATABASE or set source.url in --config"))?;
    if !(source_url.starts_with("postgres://") || source_url.starts_with("postgresql://")) {
        let scheme = source_url.split("://").next().unwrap_or("");
        if matches!(scheme, "mysql" | "mariadb") {
            bail!("{}: MySQL/MariaDB sources are not available in this build yet; supported: postgres://", where_("source.url"));
        }
        bail!(
            "{}: expected a postgres:// or postgresql:// URL, found {:?}",
            where_("source.url"),
            riffle_postgres::connect::redact_url(&source_url)
        );
    }
    let tables = if args.tables.is_empty() { raw_source.tables } else { args.tables.clone() };
    if tables.is_empty() {
        bail!("no tables selected; pass --tables 'schema.table' (globs allowed, e.g. 'public.*') or set source.tables in --config");
    }
    let exclude = if args.exclude.is_empty() { raw_source.exclude } else { args.exclude.clone() };
    let metadata_default = !o.no_metadata;
    let mut sinks = Vec::new();
    if args.sinks.is_empty() {
        for (i, s) in file.sinks.iter().enumerate() {
            let field = where_(&format!("sinks[{i}].format"));
            let format = match (&s.format, args.format) {
                (_, Some(f)) => format_of(f),
                (Some(f), None) => Format::parse(f).ok_or_else(|| anyhow!("{field}: expected csv or jsonl, found {f:?}"))?,
                (None, None) => Format::Jsonl,
            };
            let encoder = Encoder { format, metadata: s.metadata.unwrap_or(metadata_default) && metadata_default };
            sinks.push(parse_sink(&s.url, encoder, &where_(&format!("sinks[{i}].url")))?);
        }
    } else {
        let format = args.format.map(format_of).unwrap_or(Format::Jsonl);
        for s in &args.sinks {
            sinks.push(parse_sink(s, Encoder { format, metadata: metadata_default }, "--sink")?);
        }
    }
    if sinks.is_empty() {
        bail!("no sink given; pass --sink DIR (or file:///dir, or - for stdout) or add a [[sinks]] table to --config");
    }
    if sinks.iter().filter(|s| s.target == SinkTarget::Stdout).count() > 1 {
        bail!("--sink -: standard output can be given once");
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
    Ok(Config {
        name: name.to_lowercase(),
        source_url,
        tables,
        exclude,
        sinks,
        state_dir,
        commit_interval,
        max_retries: o.max_retries.or(file.max_retries).unwrap_or(10),
        roll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
