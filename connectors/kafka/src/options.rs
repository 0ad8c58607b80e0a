//! The sink's settings: [`KafkaOptions`] and [`ValueFormat`], parsed from the
//! sink URL's query and the `[[sinks]]` table, and the librdkafka client
//! configuration they imply. Kept apart from the sink so `riffle check` and
//! config parsing need no producer.

use crate::debezium::Modes;
use rdkafka::config::ClientConfig;

/// An option the Kafka sink does not take, or a value it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("{key}: expected {expected}, found {found:?}")]
    Value { key: String, expected: &'static str, found: String },
    #[error("{key}: applies to JSON values; Avro values always have a registered schema")]
    NotForAvro { key: String },
    #[error("{key}: applies to value_encoding = \"debezium\"; this sink writes riffle's own value forms")]
    NotForRiffle { key: String },
    #[error(
        "unknown Kafka sink option {key:?}; expected one of topic_prefix, partitions, replication_factor, create_topics, \
         tombstones, schemas_enable, schema_registry, transaction_topic, value_encoding, skipped.operations, decimal.handling.mode, \
         time.precision.mode, binary.handling.mode, interval.handling.mode, bigint.unsigned.handling.mode, \
         topic.config.<name>, kafka.<librdkafka setting>"
    )]
    Unknown { key: String },
    /// `shown` is the URL without its password.
    #[error("{shown}: expected kafka://host:port[,host:port], with a port for every broker")]
    Brokers { shown: String },
}

/// How message values (and keys) are encoded.
#[derive(Clone, PartialEq)]
pub enum ValueFormat {
    /// JSON; `schemas` wraps each message in Kafka Connect's
    /// `{"schema": …, "payload": …}` (`JsonConverter` `schemas.enable`).
    Json { schemas: bool },
    /// Avro in the Confluent wire format; schemas registered at this URL.
    Avro { registry: String },
}

/// Shown without the registry's credentials.
impl std::fmt::Debug for ValueFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueFormat::Json { schemas } => f.debug_struct("Json").field("schemas", schemas).finish(),
            ValueFormat::Avro { registry } => f.debug_struct("Avro").field("registry", &riffle_core::url::redact_url(registry)).finish(),
        }
    }
}

/// How column values are written in JSON messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// Debezium's forms under its handling modes (the default): see
    /// [`crate::debezium`] and, for Avro, [`crate::connect_avro`].
    Debezium(Modes),
    /// riffle's readable forms, as in JSON-lines files, and riffle's Avro
    /// mapping (`schemas/README.md`).
    Riffle,
}

/// The sink's settings, from the URL's query and the `[[sinks]]` table.
#[derive(Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port]`.
    pub brokers: String,
    pub format: ValueFormat,
    /// Debezium's encodings (in JSON, or in Avro as Confluent's
    /// AvroConverter writes them) or riffle's own forms.
    pub encoding: ValueEncoding,
    /// Debezium's modes as set, kept apart so `value_encoding` may come after them.
    modes: Modes,
    /// A mode was set (refused with `value_encoding = "riffle"`).
    modes_set: Option<String>,
    /// Topic names start with this (default: the pipeline name).
    pub topic_prefix: String,
    /// `(table glob, topic)`: the first match names the table's topic;
    /// `{prefix}`, `{db}`, `{schema}`, `{table}` are replaced.
    pub topic_routes: Vec<(String, String)>,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level settings for topics riffle creates (`cleanup.policy`, …).
    pub topic_config: Vec<(String, String)>,
    pub create_topics: bool,
    /// A null-value message after each delete (Debezium's default).
    pub tombstones: bool,
    /// Debezium's `skipped.operations`: ops (`c`, `u`, `d`, `t`) not
    /// written; `None` until set: Debezium's default (`t`) with its
    /// encodings, nothing with riffle's.
    pub skipped_ops: Option<String>,
    /// Debezium's `provide.transaction.metadata`: BEGIN/END markers here.
    pub transaction_topic: Option<String>,
    /// librdkafka settings, passed through (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `compression.type`, `message.max.bytes`, …).
    pub properties: Vec<(String, String)>,
}

/// Shown with the librdkafka settings' names only: their values hold
/// passwords (`sasl.password`, `ssl.key.password`).
impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("format", &self.format)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("properties", &names)
            .finish_non_exhaustive()
    }
}

impl KafkaOptions {
    /// Defaults for `brokers`, with topics named after `pipeline`.
    pub fn new(brokers: &str, pipeline: &str) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.to_string(),
            format: ValueFormat::Json { schemas: false },
            encoding: ValueEncoding::Debezium(Modes::default()),
            modes: Modes::default(),
            modes_set: None,
            topic_prefix: pipeline.to_string(),
            topic_routes: Vec::new(),
            partitions: 1,
            replication_factor: 1,
            topic_config: Vec::new(),
            create_topics: true,
            tombstones: true,
            transaction_topic: None,
            skipped_ops: None,
            properties: Vec::new(),
        }
    }

    /// Applies one option by name (URL query or config key). `Err` says what
    /// was expected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let bad = |expected: &'static str, v: &str| OptionError::Value { key: key.into(), expected, found: v.into() };
        let boolean = |v: &str| match v {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(bad("true or false", v)),
        };
        let int = |v: &str| v.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| bad("a positive integer", v));
        match key {
            "topic_prefix" | "topic.prefix" => self.topic_prefix = value.to_string(),
            "partitions" => self.partitions = int(value)?,
            "replication_factor" | "replication.factor" => self.replication_factor = int(value)?,
            "create_topics" => self.create_topics = boolean(value)?,
            "tombstones" | "tombstones.on.delete" => self.tombstones = boolean(value)?,
            "schemas_enable" | "schemas.enable" => match &mut self.format {
                ValueFormat::Json { schemas } => *schemas = boolean(value)?,
                ValueFormat::Avro { .. } => return Err(OptionError::NotForAvro { key: key.into() }),
            },
            "schema_registry" | "schema.registry.url" => self.format = ValueFormat::Avro { registry: value.to_string() },
            "value_encoding" | "value.encoding" => {
                self.encoding = match value {
                    "debezium" => ValueEncoding::Debezium(self.modes),
                    "riffle" => ValueEncoding::Riffle,
                    _ => return Err(bad("debezium or riffle", value)),
                }
            }
            "transaction_topic" => self.transaction_topic = Some(value.to_string()),
            "skipped.operations" | "skipped_operations" => {
                let ops: Vec<&str> = value.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
                if ops == ["none"] || ops.is_empty() {
                    self.skipped_ops = Some(String::new());
                } else if ops.iter().all(|o| matches!(*o, "c" | "u" | "d" | "t")) {
                    self.skipped_ops = Some(ops.concat());
                } else {
                    return Err(bad("none, or a comma-separated list of c, u, d, t", value));
                }
            }
            "provide.transaction.metadata" => {
                if boolean(value)? {
                    self.transaction_topic.get_or_insert_with(String::new);
                } else {
                    self.transaction_topic = None;
                }
            }
            // Debezium's names, or with underscores (`decimal_handling_mode`).
            k if k.ends_with(".mode") || k.ends_with("_mode") => {
                if !self.modes.set(&k.replace('_', "."), value).map_err(|expected| bad(expected, value))? {
                    return Err(OptionError::Unknown { key: key.into() });
                }
                self.modes_set = Some(k.to_string());
                if let ValueEncoding::Debezium(m) = &mut self.encoding {
                    *m = self.modes;
                }
            }
            k if k.starts_with("topic.config.") => self.topic_config.push((k["topic.config.".len()..].to_string(), value.to_string())),
            k if k.starts_with("kafka.") => self.set_property(&k["kafka.".len()..], value)?,
            _ => return Err(OptionError::Unknown { key: key.into() }),
        }
        Ok(())
    }

    /// Is an event of `op` left out (`skipped.operations`)?
    pub fn skips(&self, op: riffle_core::Op) -> bool {
        let default = match self.encoding {
            ValueEncoding::Debezium(_) => "t",
            ValueEncoding::Riffle => "",
        };
        self.skipped_ops.as_deref().unwrap_or(default).contains(op.code())
    }

    /// Settings that contradict each other, once all are set.
    pub fn validate(&self) -> Result<(), OptionError> {
        match (&self.modes_set, self.encoding) {
            (Some(key), ValueEncoding::Riffle) => Err(OptionError::NotForRiffle { key: key.clone() }),
            _ => Ok(()),
        }
    }

    /// A librdkafka setting passed through, except those that would break
    /// riffle's delivery guarantee (a commit waits for every message to be
    /// acknowledged by all in-sync replicas, once): they are refused, not
    /// silently overridden.
    pub fn set_property(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let refused = |expected: &'static str| OptionError::Value { key: format!("kafka.{key}"), expected, found: value.into() };
        match key {
            "enable.idempotence" if value != "true" => return Err(refused("true (riffle's producer must be idempotent)")),
            "acks" | "request.required.acks" if !matches!(value, "all" | "-1") => {
                return Err(refused("all (a commit waits for every in-sync replica)"))
            }
            _ => {}
        }
        self.properties.push((key.to_string(), value.to_string()));
        Ok(())
    }

    /// Parses `kafka://host:port[,host:port][?option=value&…]`.
    pub fn from_url(url: &str, pipeline: &str) -> Result<KafkaOptions, OptionError> {
        let (hosts, query) = split_url(url).ok_or_else(|| OptionError::Brokers { shown: riffle_core::url::redact_url(url) })?;
        let mut opts = KafkaOptions::new(hosts, pipeline);
        for (k, v) in riffle_core::url::query_pairs(query) {
            opts.set(&k, &v)?;
        }
        opts.validate()?;
        Ok(opts)
    }

    /// The producer's (and admin client's) librdkafka settings.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("riffle-{}", self.topic_prefix))
            .set("enable.idempotence", "true")
            // Java clients' partitioner, so keys land where Debezium's would.
            .set("partitioner", "murmur2_random")
            .set("allow.auto.create.topics", "false")
            // Back-pressure: a bounded local queue.
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "100000")
            .set("linger.ms", "20")
            .set("message.timeout.ms", "120000")
            // A request unanswered this long closes its connection and is
            // sent again on a new one: a silently dropped path to a broker
            // is noticed within 30 s (librdkafka's default is 60 s; Java
            // clients' request.timeout.ms is 30 s).
            .set("socket.timeout.ms", "30000")
            .set("log_level", "4");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// `kafka://host:port[,host:port][?query]` → (the brokers, the query);
/// `None` unless every broker has a host and a port.
pub(crate) fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("kafka://")?;
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let hosts = hosts.trim_end_matches('/');
    let valid = |h: &str| h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    (!hosts.is_empty() && hosts.split(',').all(valid)).then_some((hosts, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_weaken_delivery_are_refused_and_secrets_never_shown() {
        let mut o = KafkaOptions::from_url("kafka://b:9092?kafka.sasl.password=hunter2", "p").unwrap();
        assert!(!format!("{o:?}").contains("hunter2"));
        let err = o.set("kafka.acks", "0").unwrap_err().to_string();
        assert_eq!(err, "kafka.acks: expected all (a commit waits for every in-sync replica), found \"0\"");
        assert!(o.set_property("enable.idempotence", "false").is_err());
        assert!(o.set_property("acks", "all").is_ok() && o.set_property("compression.type", "zstd").is_ok());
    }
}
