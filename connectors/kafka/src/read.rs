//! Reading a topic back from its start, for `riffle verify`: every message
//! up to the end offsets as of the call, with the position riffle put in
//! its `riffle.position` header.
//!
//! JSON messages are handed on as their envelope. Avro messages are decoded
//! (their writer schemas from the registry) by the Kafka source's decoder
//! and handed on as riffle's JSON envelope of the event; verify sends the
//! source's rows through the sink's own Avro encoding and the same decoder
//! ([`avro_lines`]), so whatever Avro cannot hold is lost on both sides alike.

use crate::encode::TableOut;
use crate::registry::Registry;
use crate::sink::kafka_error;
use crate::source::decode::{Decoded, Decoder};
use crate::{KafkaOptions, ValueFormat};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use riffle_core::SinkError;
use riffle_core::{ChangeEvent, KafkaPosition, Position};
use riffle_formats::error::FormatError;
use riffle_formats::file::{FileFormat, LineFormat};
use riffle_formats::jsonl;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One message as read back.
pub struct TopicMessage {
    /// The `riffle.position` header.
    pub position: Option<String>,
    /// The value: the change event's JSON envelope (a Kafka Connect
    /// `payload` unwrapped; an Avro event decoded, in riffle's envelope);
    /// `None` for a tombstone or a message with no row change.
    pub value: Option<Vec<u8>>,
}

/// How long a read may go without a message before it gives up.
const IDLE: Duration = Duration::from_secs(30);

impl KafkaOptions {
    /// Reads `topic` from its start to its end offsets as of now, in each
    /// partition's order. A topic that does not exist holds nothing.
    pub fn read_topic(&self, topic: &str, out: &mut dyn FnMut(TopicMessage)) -> Result<(), SinkError> {
        let (schemas, mut avro) = match &self.format {
            ValueFormat::Json { schemas } => (*schemas, None),
            ValueFormat::Avro { registry } => {
                let registry = Registry::new(registry).map_err(|e| SinkError::definite(format!("Kafka {}: {e}", self.brokers)))?;
                (false, Some(Decoder::with_registry(registry)))
            }
        };
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("riffle-verify-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("log_level", "4");
        // Security settings (SASL, TLS) as the sink uses them.
        for (k, v) in self.properties.iter().filter(|(k, _)| k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl."))
        {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config.create().map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
        let partitions: Vec<i32> =
            metadata.topics().iter().filter(|t| t.error().is_none()).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut left: HashMap<i32, i64> = HashMap::new();
        let mut assigned = TopicPartitionList::new();
        for p in partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
            if high > low {
                left.insert(p, high);
                assigned.add_partition_offset(topic, p, Offset::Offset(low)).map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        consumer.assign(&assigned).map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
        let mut heard = Instant::now();
        // The next offset to read, per partition.
        let mut next: HashMap<i32, i64> = HashMap::new();
        // Once every partition reached its end offset, messages still
        // arriving are read too until the topic is quiet this long (some
        // brokers' offsets count record batches, not records).
        // A topic written on meanwhile is read at most this much longer.
        let (quiet, at_most) = (Duration::from_secs(2), Duration::from_secs(10));
        let mut ended: Option<Instant> = None;
        let mut reached: Option<Instant> = None;
        loop {
            let done = ended.is_some_and(|at| at.elapsed() >= quiet) || reached.is_some_and(|at| at.elapsed() >= at_most);
            if left.is_empty() && done {
                // An end offset that moved meanwhile: read on.
                for (&p, &at) in &next {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(10))
                        .map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
                    if high > at {
                        left.insert(p, high);
                    }
                }
                if left.is_empty() {
                    break;
                }
                ended = None;
            }
            if left.is_empty() {
                ended.get_or_insert_with(Instant::now);
                reached.get_or_insert_with(Instant::now);
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                if !left.is_empty() && heard.elapsed() > IDLE {
                    return Err(SinkError::transient(format!(
                        "Kafka {}: reading topic {topic} back: nothing for {} s with {} partition(s) not read to their end",
                        self.brokers,
                        IDLE.as_secs(),
                        left.len()
                    )));
                }
                continue;
            };
            let msg = msg.map_err(|e| kafka_error("reading back", &self.brokers, &e))?;
            heard = Instant::now();
            if ended.is_some() {
                ended = Some(Instant::now());
            }
            let position = msg.headers().and_then(|h| {
                h.iter().find(|h| h.key == "riffle.position").and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            });
            let value = match msg.payload() {
                None => None,
                Some(v) if avro.is_some() => {
                    let decoder = avro.as_mut().expect("checked");
                    let at = Position::Kafka(KafkaPosition { lane: 0, offset: msg.offset().max(0) as u64 });
                    match decoder.decode(topic, msg.key(), Some(v), at) {
                        Ok(Decoded::Event(ev)) => {
                            let mut line = Vec::new();
                            jsonl::write_envelope(&ev, false, &mut line);
                            Some(line)
                        }
                        Ok(Decoded::Skip(_)) => None,
                        Err(why) => {
                            return Err(SinkError::definite(format!(
                                "Kafka {}: topic {topic} partition {} offset {}: {why}",
                                self.brokers,
                                msg.partition(),
                                msg.offset()
                            )))
                        }
                    }
                }
                Some(v) if schemas => {
                    let wrapped: serde_json::Value = serde_json::from_slice(v).map_err(|e| {
                        SinkError::definite(format!("Kafka {}: topic {topic}: a message that is not JSON ({e})", self.brokers))
                    })?;
                    Some(serde_json::to_vec(&wrapped["payload"]).expect("JSON serializes"))
                }
                Some(v) => Some(v.to_vec()),
            };
            out(TopicMessage { position, value });
            next.insert(msg.partition(), msg.offset() + 1);
            if left.get(&msg.partition()).is_some_and(|high| msg.offset() + 1 >= *high) {
                left.remove(&msg.partition());
            }
        }
        Ok(())
    }
}

/// The source's rows as an Avro topic holds them, for `riffle verify`:
/// each event encoded as the sink encodes it (its Avro schemas kept here,
/// not registered), decoded again by the Kafka source's decoder and
/// written as riffle's JSON envelope, as [`KafkaOptions::read_topic`]
/// hands on the topic's messages.
pub fn avro_lines(opts: KafkaOptions) -> impl FileFormat {
    LineFormat {
        name: "Avro, decoded",
        make: move || {
            let mut echo = AvroEcho { opts: opts.clone(), table: None, decoder: Decoder::default(), key: Vec::new(), value: Vec::new() };
            move |event: &ChangeEvent, out: &mut Vec<u8>| echo.echo(event, out).map_err(|what| FormatError::Unrepresentable { what })
        },
    }
}

/// One table's source rows on their way through the sink's Avro and back.
struct AvroEcho {
    opts: KafkaOptions,
    table: Option<TableOut>,
    decoder: Decoder,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl AvroEcho {
    /// `event` encoded as the sink encodes it, decoded again, and written
    /// to `out` as riffle's JSON envelope.
    fn echo(&mut self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), String> {
        if self.table.is_none() {
            let topic = self.opts.topic_for(&event.table.id, &event.source.db);
            let mut schemas = Vec::new();
            let mut register = |_: &str, schema: &str| {
                schemas.push(schema.to_string());
                Ok(schemas.len() as u32)
            };
            let made = TableOut::new(&event.table, event.source.connector, &self.opts, topic, &mut register).map_err(|e| e.to_string())?;
            for (i, schema) in schemas.iter().enumerate() {
                self.decoder.know_schema(i as u32 + 1, schema)?;
            }
            self.table = Some(made);
        }
        let made = self.table.as_ref().expect("made above");
        let format = &self.opts.format;
        let has_key = made.encode_key(format, event, &mut self.key).map_err(|e| e.to_string())?;
        made.encode_value(format, event, None, &mut self.value).map_err(|e| e.to_string())?;
        let key = has_key.then_some(&self.key[..]);
        if let Decoded::Event(ev) = self.decoder.decode(made.topic(), key, Some(&self.value), event.position)? {
            jsonl::write_envelope(&ev, false, out);
        }
        Ok(())
    }
}
