//! The sinks riffle writes to, by URL: which sink a URL picks
//! ([`SinkTarget`]), the formats each takes, and the dispatch to each
//! sink's own options, readiness check and opening. The one file outside a
//! sink's crate that names it.

use crate::config::{Config, RawSink};
use anyhow::{anyhow, bail, Result};
use riffle_core::{Check, Sink};
use riffle_files::{FileSinkOptions, StdoutSink};
use riffle_formats::{Encoder, Format};
use riffle_kafka::{KafkaOptions, KafkaSink, ValueFormat};

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    Stdout,
    Kafka(Box<KafkaOptions>),
    /// Files in a local directory or an object store, in any of the four formats.
    Files(Box<FileSinkOptions>),
}

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
    } else if url.starts_with("kafka://") {
        // The topic prefix defaults to the pipeline name, known later.
        let opts = KafkaOptions::from_url(url, "").map_err(|e| anyhow!("{field}: {e}"))?;
        SinkTarget::Kafka(Box::new(opts))
    } else if FileSinkOptions::accepts(url) {
        SinkTarget::Files(Box::new(FileSinkOptions::from_url(url).map_err(|e| anyhow!("{field}: {e}"))?))
    } else if let Some((scheme, _)) = url.split_once("://") {
        bail!(
            "{field}: sink scheme {scheme}:// is not supported; supported: a directory path, file:///path, s3://, az://, abfss://, \
             gs://, hdfs://, kafka://host:port, or - for stdout"
        );
    } else {
        bail!("{field}: the sink is empty; give a directory, file:///path or -");
    };
    Ok(SinkConfig { name: String::new(), target, encoder })
}

/// Settles a sink's format with what its target supports: Kafka values are
/// JSON or Avro (Avro needs a schema registry; a registry alone means
/// Avro); standard output CSV or JSON lines; files any of the four, with
/// the compression the format takes.
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
        SinkTarget::Stdout => {}
        SinkTarget::Files(opts) => {
            riffle_formats::file::file_format(sink.encoder, opts.compression.as_deref()).map_err(|e| anyhow!("{field}: {e}"))?;
        }
    }
    Ok(())
}

/// Applies a `[[sinks]]` table's fields to its options.
pub fn apply_fields(sink: &mut SinkConfig, raw: &RawSink, field: &dyn Fn(&str) -> String) -> Result<()> {
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match &mut sink.target {
        SinkTarget::Files(opts) => {
            for (k, v) in &raw.options {
                opts.set(k, &text(v)).map_err(|e| anyhow!("{}: {e}", field(k)))?;
            }
            if let Some(k) = raw.kafka.keys().next().or(raw.topic_config.keys().next()) {
                bail!("{}: a Kafka setting on a file sink", field(k));
            }
        }
        SinkTarget::Kafka(opts) => {
            // Debezium's dotted names written unquoted in TOML are nested tables.
            let mut flat = Vec::new();
            for (k, v) in &raw.options {
                flatten(k, v, &mut flat);
            }
            for (k, v) in &flat {
                opts.set(k, &text(v)).map_err(|e| anyhow!("{}: {e}", field(k)))?;
            }
            opts.validate().map_err(|e| anyhow!("{}: {e}", field("value_encoding")))?;
            for (k, v) in &raw.kafka {
                opts.set_property(k, &text(v)).map_err(|e| anyhow!("{}: {e}", field(&format!("kafka.{k}"))))?;
            }
            for (k, v) in &raw.topic_config {
                opts.topic_config.push((k.clone(), text(v)));
            }
        }
        SinkTarget::Stdout => {
            if let Some(k) = raw.options.keys().next().or(raw.kafka.keys().next()).or(raw.topic_config.keys().next()) {
                bail!("{}: unknown field for standard output (Kafka and file sinks take options)", field(k));
            }
        }
    }
    Ok(())
}

/// Options a sink takes unless its URL sets them (a Debezium connector's
/// settings, for Kafka sinks; other sinks have no use for them).
pub fn apply_defaults(sink: &mut SinkConfig, url: &str, options: &[(String, String)]) -> Result<()> {
    let SinkTarget::Kafka(opts) = &mut sink.target else { return Ok(()) };
    // One name for the options that have two.
    let canonical = |k: &str| match k.replace('_', ".").as_str() {
        "tombstones" => "tombstones.on.delete".to_string(),
        "transaction.topic" => "provide.transaction.metadata".to_string(),
        other => other.to_string(),
    };
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let given: Vec<String> = riffle_core::url::query_pairs(query).into_iter().map(|(k, _)| canonical(&k)).collect();
    for (k, v) in options.iter().filter(|(k, _)| !given.contains(&canonical(k))) {
        opts.set(k, v).map_err(|e| anyhow!("{e}"))?;
    }
    opts.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `a = { b = { c = 1 } }` as `("a.b.c", 1)`.
fn flatten<'a>(key: &str, v: &'a toml::Value, out: &mut Vec<(String, &'a toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
        _ => out.push((key.to_string(), v)),
    }
}

/// Where a sink's files live, to refuse two sinks that would share (and
/// clobber) one commit manifest; `None` for sinks without one.
pub fn manifest_root(target: &SinkTarget) -> Option<String> {
    match target {
        SinkTarget::Files(o) => Some(o.manifest_root()),
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

/// Is the sink ready? (`riffle check`, and before every run reads anything.)
pub fn sink_check(target: &SinkTarget, max_file_bytes: u64) -> Check {
    match target {
        SinkTarget::Stdout => Check::passed("sink stdout", "standard output"),
        SinkTarget::Kafka(opts) => riffle_kafka::check(opts),
        SinkTarget::Files(opts) => riffle_files::check(opts, max_file_bytes),
    }
}

pub fn open_sinks(cfg: &Config) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for s in &cfg.sinks {
        let sink: Box<dyn Sink> = match &s.target {
            SinkTarget::Stdout => Box::new(StdoutSink::new(s.encoder)),
            SinkTarget::Kafka(opts) => Box::new(KafkaSink::open((**opts).clone()).map_err(|e| anyhow!("sink {}: {e}", s.name))?),
            SinkTarget::Files(opts) => {
                Box::new(riffle_files::open(opts, &cfg.name, s.encoder, cfg.roll).map_err(|e| anyhow!("sink {}: {e:#}", s.name))?)
            }
        };
        sinks.push(sink);
    }
    Ok(sinks)
}
