//! [`KafkaSink`]: the idempotent producer, delivery-failure tracking,
//! back-pressure on a full local queue, the mapping of librdkafka errors to
//! definite or transient failures, and the [`Sink`] implementation that
//! ties topics, encodings and transaction metadata together.

use crate::encode::TableOut;
use crate::registry::Registry;
use crate::txmeta::OpenTx;
use crate::{KafkaOptions, ValueFormat};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use riffle_core::{ChangeEvent, ErrorKind, Op, Position, Sink, SinkError, TableId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The first delivery failure since the last commit or abort.
#[derive(Default)]
struct Deliveries {
    failure: Mutex<Option<(KafkaError, String, String)>>,
}

/// The producer's context: records delivery failures into [`Deliveries`].
/// Crate-visible because `topics.rs` reads metadata through the producer.
pub(crate) struct Ctx(Arc<Deliveries>);

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

pub struct KafkaSink {
    pub(crate) opts: KafkaOptions,
    pub(crate) producer: BaseProducer<Ctx>,
    pub(crate) admin: AdminClient<DefaultClientContext>,
    deliveries: Arc<Deliveries>,
    pub(crate) registry: Option<Registry>,
    pub(crate) tables: HashMap<TableId, TableOut>,
    pub(crate) topics: HashSet<String>,
    pub(crate) tx: Option<OpenTx>,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    bytes: u64,
    sent: u64,
}

/// A librdkafka error as a sink failure: definite when retrying cannot help.
pub(crate) fn kafka_error(what: &str, brokers: &str, e: &KafkaError) -> SinkError {
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
            ValueFormat::Avro { registry } => Some(Registry::new(registry).map_err(|e| SinkError::typed(ErrorKind::Definite, e))?),
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
    pub fn ping(&self, timeout: Duration) -> Result<String, SinkError> {
        let md = self.producer.client().fetch_metadata(None, timeout).map_err(|e| {
            SinkError::transient(format!(
                "no Kafka broker at {} answered within {}s ({e}); check the address, that the broker is up and its advertised \
                 listener, and TLS/SASL settings (kafka.security.protocol)",
                self.opts.brokers,
                timeout.as_secs()
            ))
        })?;
        if let Some(r) = &self.registry {
            r.ping().map_err(|e| SinkError::typed(ErrorKind::Transient, e))?;
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

    /// Sends one message, waiting (back-pressure) while the local queue is full.
    pub(crate) fn send(
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

/// A Kafka sink is ready when the brokers answer with these settings (and
/// the schema registry, for Avro).
pub fn check(opts: &KafkaOptions) -> riffle_core::Check {
    let name = format!("sink kafka://{}", opts.brokers);
    let outcome = KafkaSink::open(opts.clone()).and_then(|s| s.ping(Duration::from_secs(10))).map_err(|e| e.chain());
    riffle_core::Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| riffle_core::Problem {
            setting: name,
            expected: "a Kafka cluster that answers (and the schema registry, for Avro)".into(),
            found,
            fix: "check the broker addresses, that the brokers are up, and the kafka.* TLS/SASL settings of the sink".into(),
        }),
    }
}
