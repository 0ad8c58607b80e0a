//! The sinks riffle writes to, by URL: where a sink URL points
//! ([`SinkTarget`]), the formats each takes, its options from the URL's query
//! and `[[sinks]]` fields, its readiness check, and opening it. The one file
//! outside a sink's crate that names it.

use crate::config::{Config, RawSink};
use anyhow::{anyhow, bail, Result};
use riffle_core::{human_bytes, Check, Problem, Sink};
use riffle_files::object::Partitioning;
use riffle_files::{DirSink, StdoutSink};
use riffle_formats::{Encoder, Format};
use riffle_kafka::{KafkaOptions, KafkaSink, ValueFormat};
use std::path::{Path, PathBuf};

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    Dir(PathBuf),
    Stdout,
    Kafka(Box<KafkaOptions>),
    /// An object store (or a local directory for Avro and Parquet files).
    Object(Box<ObjectOptions>),
}

/// An object-store sink as configured.
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    /// The URL without its query.
    pub url: String,
    /// object_store configuration keys (`endpoint`, `region`, …).
    pub store: Vec<(String, String)>,
    pub partitioning: Partitioning,
    /// Avro and Parquet compression.
    pub compression: Option<String>,
}

impl ObjectOptions {
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "partition_by" => {
                self.partitioning =
                    Partitioning::parse(value).ok_or_else(|| anyhow!("partition_by: expected none, day or hour, found {value:?}"))?
            }
            "compression" => self.compression = Some(value.to_string()),
            _ => self.store.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }
}

const OBJECT_SCHEMES: [&str; 10] = ["s3", "s3a", "az", "azure", "abfs", "abfss", "gs", "gcs", "hdfs", "viewfs"];

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub target: SinkTarget,
    pub encoder: Encoder,
}

pub fn parse_sink(url: &str, encoder: Encoder, field: &str) -> Result<SinkConfig> {
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
    } else if url.starts_with("kafka://") {
        // The topic prefix defaults to the pipeline name, known later.
        let opts = KafkaOptions::from_url(url, "").map_err(|e| anyhow!("{field}: {e}"))?;
        SinkTarget::Kafka(Box::new(opts))
    } else if url.split_once("://").is_some_and(|(scheme, _)| OBJECT_SCHEMES.contains(&scheme)) {
        let (base, options) = riffle_files::object::split_url(url);
        let mut opts = ObjectOptions { url: base, store: Vec::new(), partitioning: Partitioning::None, compression: None };
        for (k, v) in options {
            opts.set(&k, &v).map_err(|e| anyhow!("{field}: {e}"))?;
        }
        SinkTarget::Object(Box::new(opts))
    } else if let Some((scheme, _)) = url.split_once("://") {
        bail!(
            "{field}: sink scheme {scheme}:// is not supported; supported: a directory path, file:///path, s3://, az://, abfss://, \
             gs://, hdfs://, kafka://host:port, or - for stdout"
        );
    } else if url.is_empty() {
        bail!("{field}: the sink is empty; give a directory, file:///path or -");
    } else {
        SinkTarget::Dir(PathBuf::from(url))
    };
    Ok(SinkConfig { name: String::new(), target, encoder })
}

/// Settles a sink's format with what its target supports: Kafka values are
/// JSON or Avro (Avro needs a schema registry; a registry alone means
/// Avro); files are CSV or JSON lines.
pub fn settle_format(sink: &mut SinkConfig, explicit: bool, field: &str) -> Result<()> {
    match &mut sink.target {
        SinkTarget::Kafka(opts) => match (sink.encoder.format, &opts.format) {
            (Format::Avro, ValueFormat::Json { .. }) => bail!(
                "{field}: Avro on Kafka needs a schema registry: add ?schema_registry=http://HOST:8081 to the URL \
                 (or schema_registry = \"…\" in the [[sinks]] table)"
            ),
            (Format::Jsonl, ValueFormat::Avro { .. }) if explicit => bail!(
                "{field}: a schema_registry is given but the format is jsonl; use --format avro, or drop the registry for JSON values"
            ),
            (Format::Jsonl, ValueFormat::Avro { .. }) => sink.encoder.format = Format::Avro,
            (Format::Csv | Format::Parquet, _) => {
                bail!(
                    "{field}: Kafka messages are json or avro, not {}; pass --format json or --format avro",
                    sink.encoder.format.extension()
                )
            }
            _ => {}
        },
        SinkTarget::Stdout if matches!(sink.encoder.format, Format::Avro | Format::Parquet) => {
            bail!("{field}: standard output takes csv or jsonl; write {} files to a directory or a bucket", sink.encoder.format.extension())
        }
        SinkTarget::Dir(_) => typed_dir_to_object(sink, field)?,
        _ => {}
    }
    Ok(())
}

/// Avro and Parquet files go through the object-store sink, on the local disk too.
pub fn typed_dir_to_object(sink: &mut SinkConfig, field: &str) -> Result<()> {
    if let SinkTarget::Dir(dir) = &sink.target {
        if matches!(sink.encoder.format, Format::Avro | Format::Parquet) {
            let abs = std::path::absolute(dir).map_err(|e| anyhow!("{field}: {}: {e}", dir.display()))?;
            sink.target = SinkTarget::Object(Box::new(ObjectOptions {
                url: format!("file://{}", abs.display()),
                store: Vec::new(),
                partitioning: Partitioning::None,
                compression: None,
            }));
        }
    }
    Ok(())
}

/// Applies a `[[sinks]]` table's Kafka fields to its options.
pub fn apply_kafka_fields(sink: &mut SinkConfig, raw: &RawSink, field: &dyn Fn(&str) -> String) -> Result<()> {
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let SinkTarget::Object(opts) = &mut sink.target {
        for (k, v) in &raw.options {
            opts.set(k, &text(v)).map_err(|e| anyhow!("{}: {e}", field(k)))?;
        }
        if let Some(k) = raw.kafka.keys().next().or(raw.topic_config.keys().next()) {
            bail!("{}: a Kafka setting on an object-store sink", field(k));
        }
        return Ok(());
    }
    let SinkTarget::Kafka(opts) = &mut sink.target else {
        if let Some(k) = raw.options.keys().next().or(raw.kafka.keys().next()).or(raw.topic_config.keys().next()) {
            bail!("{}: unknown field for a file sink (Kafka and object-store sinks take options)", field(k));
        }
        return Ok(());
    };
    for (k, v) in &raw.options {
        opts.set(k, &text(v)).map_err(|e| anyhow!("{}: {e}", field(k)))?;
    }
    for (k, v) in &raw.kafka {
        opts.properties.push((k.clone(), text(v)));
    }
    for (k, v) in &raw.topic_config {
        opts.topic_config.push((k.clone(), text(v)));
    }
    Ok(())
}

/// Where a sink's files live, to refuse two sinks that would share (and
/// clobber) one commit manifest; `None` for sinks without one.
pub fn manifest_root(target: &SinkTarget) -> Option<String> {
    match target {
        SinkTarget::Dir(d) => {
            let canonical = std::path::absolute(d).unwrap_or_else(|_| d.clone());
            let normal: PathBuf = canonical.components().collect();
            Some(format!("file://{}", normal.display()))
        }
        SinkTarget::Object(o) => Some(o.url.trim_end_matches('/').to_string()),
        _ => None,
    }
}

/// Settings a sink takes from the pipeline once it is named: Kafka's topic
/// prefix defaults to the pipeline name; `[[tables]] topic` rules.
pub fn apply_pipeline(target: &mut SinkTarget, name: &str, topic_routes: &[(String, String)]) {
    if let SinkTarget::Kafka(opts) = target {
        if opts.topic_prefix.is_empty() {
            opts.topic_prefix = name.to_lowercase();
        }
        opts.topic_routes = topic_routes.to_vec();
    }
}

/// Checks one sink: a directory must be creatable, writable (a probe file
/// is written, synced and removed) and have room for at least one file.
pub fn sink_check(target: &SinkTarget, max_file_bytes: u64) -> Check {
    let dir = match target {
        SinkTarget::Dir(dir) => dir,
        SinkTarget::Stdout => return Check { name: "sink stdout".into(), outcome: Ok("standard output".into()) },
        SinkTarget::Kafka(opts) => return kafka_check(opts),
        SinkTarget::Object(opts) => return object_check(opts),
    };
    let name = format!("sink {}", dir.display());
    let problem = |expected: &str, found: String, fix: String| Problem { setting: name.clone(), expected: expected.into(), found, fix };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check {
            name: name.clone(),
            outcome: Err(problem(
                "a directory riffle can create",
                e.to_string(),
                format!("create it, or give riffle's user write access to its parent: {}", parent(dir)),
            )),
        };
    }
    let probe = dir.join(format!(".riffle-probe-{}", std::process::id()));
    let written =
        std::fs::write(&probe, b"riffle").and_then(|_| std::fs::File::open(&probe)?.sync_all()).and_then(|_| std::fs::remove_file(&probe));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&probe);
        return Check {
            name: name.clone(),
            outcome: Err(problem("writable", e.to_string(), format!("give riffle's user write access: chown/chmod {}", dir.display()))),
        };
    }
    let needed = max_file_bytes.clamp(16 << 20, 1 << 30);
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < needed {
                Check {
                    name: name.clone(),
                    outcome: Err(problem(
                        &format!("at least {} free", human_bytes(needed)),
                        format!("{} free", human_bytes(free)),
                        "free some space on that disk, or point the sink at another one".into(),
                    )),
                }
            } else {
                Check { name, outcome: Ok(format!("writable, {} free", human_bytes(free))) }
            }
        }
        Err(_) => Check { name, outcome: Ok("writable".into()) },
    }
}

/// A Kafka sink: the brokers answer with these settings (and the schema
/// registry, for Avro).
fn kafka_check(opts: &riffle_kafka::KafkaOptions) -> Check {
    let name = format!("sink kafka://{}", opts.brokers);
    let outcome =
        riffle_kafka::KafkaSink::open(opts.clone()).map_err(|e| e.message).and_then(|s| s.ping(std::time::Duration::from_secs(10)));
    Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| Problem {
            setting: name,
            expected: "a Kafka cluster that answers (and the schema registry, for Avro)".into(),
            found,
            fix: "check the broker addresses, that the brokers are up, and the kafka.* TLS/SASL settings of the sink".into(),
        }),
    }
}

/// An object-store sink: a probe object can be written and deleted under
/// the prefix (the bucket exists, the credentials are accepted, riffle may write).
fn object_check(opts: &ObjectOptions) -> Check {
    let name = format!("sink {}", opts.url.split_once('?').map_or(opts.url.as_str(), |(u, _)| u));
    let outcome = riffle_files::object::open_target(&opts.url, &opts.store).and_then(|t| t.probe().map_err(|e| e.message));
    Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| Problem {
            setting: name,
            expected: "a bucket or container riffle can write to, list and delete from".into(),
            found,
            fix: "create the bucket, and check the credentials (AWS_*/AZURE_*/GOOGLE_* variables or the sink's options) \
                  and their permissions on the prefix"
                .into(),
        }),
    }
}

fn parent(dir: &Path) -> String {
    dir.parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into())
}

pub fn open_sinks(cfg: &Config) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for s in &cfg.sinks {
        match &s.target {
            SinkTarget::Dir(path) => sinks
                .push(Box::new(DirSink::open(path, &cfg.name, s.encoder, cfg.roll).map_err(|e| anyhow!("sink {}: {e}", path.display()))?)),
            SinkTarget::Stdout => sinks.push(Box::new(StdoutSink::new(s.encoder))),
            SinkTarget::Kafka(opts) => {
                sinks.push(Box::new(KafkaSink::open((**opts).clone()).map_err(|e| anyhow!("sink {}: {e}", s.name))?))
            }
            SinkTarget::Object(opts) => {
                let target = riffle_files::object::open_target(&opts.url, &opts.store).map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                let format = crate::file_formats::file_format(s.encoder, opts.compression.as_deref())
                    .map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                let sink = riffle_files::object::ObjectSink::open(target, &cfg.name, format, cfg.roll, opts.partitioning)
                    .map_err(|e| anyhow!("sink {}: {e}", s.name))?;
                sinks.push(Box::new(sink));
            }
        }
    }
    Ok(sinks)
}
