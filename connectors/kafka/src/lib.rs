//! riffle's Kafka sink: Debezium-compatible messages, so a consumer written
//! for Debezium reads riffle's topics unchanged.
//!
//! - **Topics**: one per table, `<prefix>.<schema>.<table>` (prefix = the
//!   pipeline name), or a `[[tables]] topic` rule; created through the admin
//!   API with the configured partitions and replication factor when missing.
//! - **Key**: the primary-key columns; **value**: the envelope (`before`,
//!   `after`, `op`, `source`, `ts_ms`, `transaction`), then a tombstone (null
//!   value) after each delete. Headers carry `riffle.position` and `riffle.op`.
//! - **Encodings**: JSON, optionally wrapped in Kafka Connect's
//!   `{"schema","payload"}` ([`connect`]); or Avro in the Confluent wire
//!   format with schemas registered in a Schema Registry ([`registry`]).
//! - **Delivery**: an idempotent producer (ordering per key kept across
//!   retries); [`Sink::commit`] returns only when the broker acknowledged
//!   every message, so the pipeline never saves a position past an
//!   unacknowledged event. A full local queue blocks the pipeline
//!   (back-pressure) instead of buffering without bound.

pub mod connect;
pub mod registry;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use registry::Registry;
use riffle_core::{ChangeEvent, Op, Position, Sink, SinkError, TableId, TableSchema};
use riffle_formats::{avro, jsonl};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How message values (and keys) are encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFormat {
    /// JSON; `schemas` wraps each message in Kafka Connect's
    /// `{"schema": …, "payload": …}` (`JsonConverter` `schemas.enable`).
    Json { schemas: bool },
    /// Avro in the Confluent wire format; schemas registered at this URL.
    Avro { registry: String },
}

/// The sink's settings, from the URL's query and the `[[sinks]]` table.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port]`.
    pub brokers: String,
    pub format: ValueFormat,
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
    /// Debezium's `provide.transaction.metadata`: BEGIN/END markers here.
    pub transaction_topic: Option<String>,
    /// librdkafka settings, passed through (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `compression.type`, `message.max.bytes`, …).
    pub properties: Vec<(String, String)>,
}

impl KafkaOptions {
    /// Defaults for `brokers`, with topics named after `pipeline`.
    pub fn new(brokers: &str, pipeline: &str) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.to_string(),
            format: ValueFormat::Json { schemas: false },
            topic_prefix: pipeline.to_string(),
            topic_routes: Vec::new(),
            partitions: 1,
            replication_factor: 1,
            topic_config: Vec::new(),
            create_topics: true,
            tombstones: true,
            transaction_topic: None,
            properties: Vec::new(),
        }
    }

    /// Applies one option by name (URL query or config key). `Err` says what
    /// was expected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let boolean = |v: &str| match v {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(format!("{key}: expected true or false, found {v:?}")),
        };
        let int =
            |v: &str| v.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{key}: expected a positive integer, found {v:?}"));
        match key {
            "topic_prefix" | "topic.prefix" => self.topic_prefix = value.to_string(),
            "partitions" => self.partitions = int(value)?,
            "replication_factor" | "replication.factor" => self.replication_factor = int(value)?,
            "create_topics" => self.create_topics = boolean(value)?,
            "tombstones" | "tombstones.on.delete" => self.tombstones = boolean(value)?,
            "schemas_enable" | "schemas.enable" => match &mut self.format {
                ValueFormat::Json { schemas } => *schemas = boolean(value)?,
                ValueFormat::Avro { .. } => {
                    return Err(format!("{key}: applies to JSON values; Avro values always have a registered schema"))
                }
            },
            "schema_registry" | "schema.registry.url" => self.format = ValueFormat::Avro { registry: value.to_string() },
            "transaction_topic" => self.transaction_topic = Some(value.to_string()),
            "provide.transaction.metadata" => {
                if boolean(value)? {
                    self.transaction_topic.get_or_insert_with(String::new);
                } else {
                    self.transaction_topic = None;
                }
            }
            k if k.starts_with("topic.config.") => self.topic_config.push((k["topic.config.".len()..].to_string(), value.to_string())),
            k if k.starts_with("kafka.") => self.properties.push((k["kafka.".len()..].to_string(), value.to_string())),
            _ => {
                return Err(format!(
                    "unknown Kafka sink option {key:?}; expected one of topic_prefix, partitions, replication_factor, create_topics, \
                     tombstones, schemas_enable, schema_registry, transaction_topic, topic.config.<name>, kafka.<librdkafka setting>"
                ))
            }
        }
        Ok(())
    }

    /// Parses `kafka://host:port[,host:port][?option=value&…]`.
    pub fn from_url(url: &str, pipeline: &str) -> Result<KafkaOptions, String> {
        let rest = url.strip_prefix("kafka://").ok_or_else(|| format!("{url:?}: expected kafka://host:port[,host:port]"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty()
            || hosts.split(',').any(|h| h.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()))
        {
            return Err(format!(
                "{}: expected kafka://host:port[,host:port], with a port for every broker",
                riffle_core::url::redact_url(url)
            ));
        }
        let mut opts = KafkaOptions::new(hosts, pipeline);
        for (k, v) in riffle_core::url::query_pairs(query) {
            opts.set(&k, &v)?;
        }
        Ok(opts)
    }

    /// The topic a table's events go to.
    pub fn topic_for(&self, table: &TableId, db: &str) -> String {
        let template = self
            .topic_routes
            .iter()
            .find(|(glob, _)| riffle_core::glob_match(glob, &table.to_string()))
            .map(|(_, t)| t.as_str())
            .unwrap_or("{prefix}.{schema}.{table}");
        let name = template
            .replace("{prefix}", &self.topic_prefix)
            .replace("{db}", db)
            .replace("{schema}", &table.schema)
            .replace("{table}", &table.name);
        legal_topic(&name)
    }

    fn transaction_topic(&self) -> Option<String> {
        self.transaction_topic.as_ref().map(|t| {
            if t.is_empty() {
                legal_topic(&format!("{}.transaction", self.topic_prefix))
            } else {
                legal_topic(t)
            }
        })
    }

    fn client_config(&self) -> ClientConfig {
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
            .set("log_level", "4");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Kafka topic names hold `[a-zA-Z0-9._-]`, at most 249 characters; other
/// characters become `_` (as Debezium does).
pub fn legal_topic(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    s.truncate(249);
    s
}

/// The first delivery failure since the last commit or abort.
#[derive(Default)]
struct Deliveries {
    failure: Mutex<Option<(KafkaError, String, String)>>,
}

struct Ctx(Arc<Deliveries>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            let position = msg
                .headers()
                .and_then(|h| {
                    h.iter().find(|h| h.key == "riffle.position").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_default();
            let mut f = self.0.failure.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some((e.clone(), msg.topic().to_string(), position));
            }
        }
    }
}

/// What a table's messages need, computed once per schema version.
struct TableOut {
    schema: Arc<TableSchema>,
    topic: String,
    /// JSON with schemas: the `{"schema":…,"payload":` prefixes.
    key_prefix: Vec<u8>,
    value_prefix: Vec<u8>,
    /// Avro: registered ids of the key and value schemas.
    key_id: u32,
    value_id: u32,
}

/// A transaction whose BEGIN marker was sent and END not yet.
struct OpenTx {
    id: String,
    ts_ms: i64,
    counts: Vec<(String, u64)>,
}

pub struct KafkaSink {
    opts: KafkaOptions,
    producer: BaseProducer<Ctx>,
    admin: AdminClient<DefaultClientContext>,
    deliveries: Arc<Deliveries>,
    registry: Option<Registry>,
    tables: HashMap<TableId, TableOut>,
    topics: HashSet<String>,
    tx: Option<OpenTx>,
    key: Vec<u8>,
    value: Vec<u8>,
    bytes: u64,
    sent: u64,
}

fn kafka_error(what: &str, brokers: &str, e: &KafkaError) -> SinkError {
    let code = e.rdkafka_error_code();
    let msg = format!("Kafka {brokers}: {what}: {e}");
    match code {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => SinkError::definite(format!(
            "{msg}; the message is larger than the limit (the producer's kafka.message.max.bytes, the broker's message.max.bytes \
             or the topic's max.message.bytes): raise the limits, or drop large columns with a [[tables]] columns rule"
        )),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord,
        ) => SinkError::definite(msg),
        _ => match e {
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => SinkError::definite(msg),
            _ => SinkError::transient(msg),
        },
    }
}

impl KafkaSink {
    pub fn open(opts: KafkaOptions) -> Result<KafkaSink, SinkError> {
        let deliveries = Arc::new(Deliveries::default());
        let config = opts.client_config();
        let producer = config.create_with_context(Ctx(deliveries.clone())).map_err(|e| config_error("producer", &e))?;
        let admin = config.create().map_err(|e| config_error("admin client", &e))?;
        let registry = match &opts.format {
            ValueFormat::Avro { registry } => Some(Registry::new(registry).map_err(SinkError::definite)?),
            ValueFormat::Json { .. } => None,
        };
        Ok(KafkaSink {
            opts,
            producer,
            admin,
            deliveries,
            registry,
            tables: HashMap::new(),
            topics: HashSet::new(),
            tx: None,
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(4096),
            bytes: 0,
            sent: 0,
        })
    }

    /// Reads the cluster's metadata: the brokers answer, with these settings.
    pub fn ping(&self, timeout: Duration) -> Result<String, String> {
        let md = self.producer.client().fetch_metadata(None, timeout).map_err(|e| {
            format!(
                "no Kafka broker at {} answered within {}s ({e}); check the address, that the broker is up and its advertised \
                 listener, and TLS/SASL settings (kafka.security.protocol)",
                self.opts.brokers,
                timeout.as_secs()
            )
        })?;
        if let Some(r) = &self.registry {
            r.ping()?;
        }
        Ok(format!("{} broker(s), {} topic(s)", md.brokers().len(), md.topics().len()))
    }

    fn fail_if_delivery_failed(&self) -> Result<(), SinkError> {
        let f = self.deliveries.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        match f {
            Some((e, topic, position)) => {
                Err(kafka_error(&format!("delivering the event at position {position} to topic {topic} failed"), &self.opts.brokers, &e))
            }
            None => Ok(()),
        }
    }

    /// Creates `topic` when it does not exist.
    fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        let brokers = self.opts.brokers.clone();
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| kafka_error(&format!("reading the metadata of topic {topic}"), &brokers, &e))?;
        let exists = md.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            if !self.opts.create_topics {
                return Err(SinkError::definite(format!(
                    "Kafka {brokers}: topic {topic} does not exist and create_topics is false; create it, or let riffle create it"
                )));
            }
            let mut new = NewTopic::new(topic, self.opts.partitions, TopicReplication::Fixed(self.opts.replication_factor));
            for (k, v) in &self.opts.topic_config {
                new = new.set(k, v);
            }
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let results = riffle_core::block_on(self.admin.create_topics([&new], &opts))
                .map_err(|e| kafka_error(&format!("creating topic {topic}"), &brokers, &e))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        let e = KafkaError::AdminOp(code);
                        let fix = match code {
                            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                                "riffle's principal may not create topics: create the topic yourself (riffle then writes to it), or grant CREATE"
                            }
                            RDKafkaErrorCode::InvalidReplicationFactor | RDKafkaErrorCode::InvalidPartitions => {
                                "set partitions / replication_factor on the sink to values the cluster accepts"
                            }
                            _ => "create the topic yourself, or fix the topic settings of the sink",
                        };
                        return Err(SinkError::definite(format!(
                            "Kafka {brokers}: the broker refused to create topic {name} ({} partition(s), replication factor {}): {e}; {fix}",
                            self.opts.partitions, self.opts.replication_factor
                        )));
                    }
                }
            }
            tracing::info!(topic, partitions = self.opts.partitions, "created Kafka topic");
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }

    /// The table's topic and encodings for this schema version.
    fn table_out(&mut self, event: &ChangeEvent) -> Result<&TableOut, SinkError> {
        let table = &event.table;
        let fresh = match self.tables.get(&table.id) {
            Some(t) => !(Arc::ptr_eq(&t.schema, table) || *t.schema == **table),
            None => true,
        };
        if fresh {
            let topic = self.opts.topic_for(&table.id, &event.source.db);
            self.ensure_topic(&topic)?;
            let mut out =
                TableOut { schema: table.clone(), topic, key_prefix: Vec::new(), value_prefix: Vec::new(), key_id: 0, value_id: 0 };
            match &self.opts.format {
                ValueFormat::Json { schemas: true } => {
                    out.key_prefix = connect::wrapper_prefix(&connect::key_schema(table, &out.topic));
                    out.value_prefix = connect::wrapper_prefix(&connect::value_schema(table, &out.topic));
                }
                ValueFormat::Json { schemas: false } => {}
                ValueFormat::Avro { .. } => {
                    let registry = self.registry.as_mut().expect("Avro sinks have a registry");
                    let ns = avro::avro_namespace(&out.topic);
                    if let Some(k) = avro::key_schema(table, &ns) {
                        out.key_id = registry.register(&format!("{}-key", out.topic), &k.to_string())?;
                    }
                    out.value_id = registry.register(&format!("{}-value", out.topic), &avro::envelope_schema(table, &ns).to_string())?;
                }
            }
            self.tables.insert(table.id.clone(), out);
        }
        Ok(&self.tables[&table.id])
    }

    /// Encodes the key into `self.key`; false when the message has no key.
    fn encode_key(&mut self, event: &ChangeEvent) -> Result<bool, SinkError> {
        self.key.clear();
        let t = &self.tables[&event.table.id];
        match &self.opts.format {
            ValueFormat::Json { schemas } => {
                if *schemas {
                    self.key.extend_from_slice(&t.key_prefix);
                }
                if !jsonl::key_object(event, &mut self.key) {
                    return Ok(false);
                }
                if *schemas {
                    self.key.push(b'}');
                }
            }
            ValueFormat::Avro { .. } => {
                self.key.push(0);
                self.key.extend_from_slice(&t.key_id.to_be_bytes());
                if !avro::encode_key(event, &mut self.key).map_err(|e| unrepresentable(event, e))? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn encode_value(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        self.value.clear();
        let t = &self.tables[&event.table.id];
        match &self.opts.format {
            ValueFormat::Json { schemas } => {
                if *schemas {
                    self.value.extend_from_slice(&t.value_prefix);
                }
                jsonl::write_envelope(event, false, &mut self.value);
                if *schemas {
                    self.value.push(b'}');
                }
            }
            ValueFormat::Avro { .. } => {
                self.value.push(0);
                self.value.extend_from_slice(&t.value_id.to_be_bytes());
                avro::encode_envelope(event, &mut self.value).map_err(|e| unrepresentable(event, e))?;
            }
        }
        Ok(())
    }

    /// Sends one message, waiting (back-pressure) while the local queue is full.
    fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
        position: &str,
    ) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                    self.fail_if_delivery_failed()?;
                }
                Err((e, _)) => {
                    return Err(kafka_error(
                        &format!("producing the event at position {position} to topic {topic}"),
                        &self.opts.brokers,
                        &e,
                    ));
                }
            }
        }
        self.bytes += (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as u64;
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
            self.fail_if_delivery_failed()?;
        }
        Ok(())
    }

    fn headers(event: &ChangeEvent, position: &str) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: "riffle.position", value: Some(position) })
            .insert(Header { key: "riffle.op", value: Some(event.op.code()) })
    }

    /// Transaction metadata: END for the open transaction when another
    /// starts (or at commit), BEGIN for a new one.
    fn track_transaction(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        if self.opts.transaction_topic.is_none() {
            return Ok(());
        }
        let id = riffle_formats::transaction_id(event);
        if self.tx.as_ref().map(|t| &t.id) != id.as_ref() {
            self.end_transaction()?;
            if let Some(id) = id {
                let value = serde_json::json!({
                    "status": "BEGIN", "id": id, "event_count": null, "data_collections": null, "ts_ms": event.source.ts_ms
                });
                self.send_tx_marker(&id, &value)?;
                self.tx = Some(OpenTx { id, ts_ms: event.source.ts_ms, counts: Vec::new() });
            }
        }
        if let Some(tx) = &mut self.tx {
            let collection = format!("{}.{}", event.table.id.schema, event.table.id.name);
            match tx.counts.iter_mut().find(|(c, _)| *c == collection) {
                Some((_, n)) => *n += 1,
                None => tx.counts.push((collection, 1)),
            }
        }
        Ok(())
    }

    fn end_transaction(&mut self) -> Result<(), SinkError> {
        let Some(tx) = self.tx.take() else { return Ok(()) };
        let total: u64 = tx.counts.iter().map(|(_, n)| n).sum();
        let collections: Vec<serde_json::Value> =
            tx.counts.iter().map(|(c, n)| serde_json::json!({"data_collection": c, "event_count": n})).collect();
        let value = serde_json::json!({
            "status": "END", "id": tx.id, "event_count": total, "data_collections": collections, "ts_ms": tx.ts_ms
        });
        self.send_tx_marker(&tx.id, &value)
    }

    fn send_tx_marker(&mut self, id: &str, value: &serde_json::Value) -> Result<(), SinkError> {
        let topic = self.opts.transaction_topic().expect("transaction metadata is on");
        self.ensure_topic(&topic)?;
        let key = serde_json::json!({ "id": id }).to_string();
        let value = value.to_string();
        self.send(&topic, Some(key.as_bytes()), Some(value.as_bytes()), OwnedHeaders::new(), id)
    }
}

/// A refused librdkafka setting, named by its key only (its value may be a secret).
fn config_error(what: &str, e: &KafkaError) -> SinkError {
    match e {
        KafkaError::ClientConfig(_, _, key, _) => SinkError::definite(format!(
            "Kafka {what}: librdkafka refused the setting {key:?} (an unknown name, or a value it does not accept); \
             check kafka.{key} against librdkafka's CONFIGURATION.md"
        )),
        other => SinkError::definite(format!("Kafka {what}: {other}; check the kafka.* settings of the sink")),
    }
}

/// The key columns differ between the before and after images (an
/// unavailable before value counts as unchanged).
fn key_changed(event: &ChangeEvent) -> bool {
    let (Some(before), Some(after)) = (&event.before, &event.after) else { return false };
    event.table.key.iter().any(|&i| before[i] != riffle_core::Value::Unavailable && before[i] != after[i])
}

fn unrepresentable(event: &ChangeEvent, e: avro::Unrepresentable) -> SinkError {
    SinkError::definite(format!(
        "the event at position {} cannot be written in Avro: {e}; write this table as JSON (a second sink with format json), \
         or leave the column out with a [[tables]] columns rule",
        event.position
    ))
}

impl KafkaSink {
    fn write_one(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        let topic = self.table_out(event)?.topic.clone();
        self.track_transaction(event)?;
        let has_key = self.encode_key(event)?;
        self.encode_value(event)?;
        let position = event.position.key();
        let key = std::mem::take(&mut self.key);
        let value = std::mem::take(&mut self.value);
        let sent = self.send(&topic, has_key.then_some(&key[..]), Some(&value[..]), Self::headers(event, &position), &position);
        let sent = sent.and_then(|()| {
            if event.op == Op::Delete && self.opts.tombstones && has_key {
                self.send(&topic, Some(&key[..]), None, Self::headers(event, &position), &position)
            } else {
                Ok(())
            }
        });
        self.key = key;
        self.value = value;
        sent
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        let format = match &self.opts.format {
            ValueFormat::Json { schemas: false } => "json".to_string(),
            ValueFormat::Json { schemas: true } => "json with schemas".to_string(),
            ValueFormat::Avro { .. } => format!("avro, registry {}", self.registry.as_ref().map(Registry::describe).unwrap_or_default()),
        };
        format!("kafka://{} ({format})", self.opts.brokers)
    }

    /// Kafka keeps no record riffle reads back: delivery is at-least-once
    /// (a replay after a crash is sent again, with the same
    /// `riffle.position` header for consumers to deduplicate on).
    fn committed(&self) -> Option<Position> {
        None
    }

    /// An update that changes the primary key is sent as Debezium does: a
    /// delete (and tombstone) under the old key, then a create under the
    /// new one, so compacted topics and upserting consumers drop the old row.
    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        if event.op == Op::Update && key_changed(event) {
            let mut delete = event.clone();
            delete.op = Op::Delete;
            delete.after = None;
            self.write_one(&delete)?;
            let mut create = event.clone();
            create.op = Op::Create;
            create.before = None;
            create.before_image = riffle_core::BeforeImage::None;
            return self.write_one(&create);
        }
        self.write_one(event)
    }

    /// Waits until the brokers acknowledged every message sent.
    fn commit(&mut self, _through: Option<Position>) -> Result<(), SinkError> {
        self.end_transaction()?;
        loop {
            match self.producer.flush(Duration::from_secs(1)) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    self.fail_if_delivery_failed()?;
                    tracing::debug!(in_flight = self.producer.in_flight_count(), "waiting for Kafka acknowledgements");
                }
                Err(e) => return Err(kafka_error("flushing", &self.opts.brokers, &e)),
            }
        }
        self.fail_if_delivery_failed()?;
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return Err(SinkError::transient(format!("Kafka {}: the producer hit a fatal error ({code:?}: {reason})", self.opts.brokers)));
        }
        Ok(())
    }

    /// Starts a new producer: what was in flight is dropped (the source
    /// replays it), and a producer that hit a fatal error is replaced.
    fn abort(&mut self) -> Result<(), SinkError> {
        let mut fresh = KafkaSink::open(self.opts.clone())?;
        // Registered ids stay valid: keep the cache.
        fresh.registry = self.registry.take().or(fresh.registry);
        fresh.bytes = self.bytes;
        *self = fresh;
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }
}
