//! Transaction metadata (Debezium's `provide.transaction.metadata`): BEGIN
//! and END markers, with per-table event counts, on the transaction topic.

use crate::debezium;
use crate::sink::KafkaSink;
use crate::topics::legal_topic;
use crate::{KafkaOptions, ValueEncoding, ValueFormat};
use rdkafka::message::OwnedHeaders;
use riffle_core::{ChangeEvent, SinkError};

/// A transaction whose BEGIN marker was sent and END not yet.
pub(crate) struct OpenTx {
    /// What tells one transaction from the next.
    id: String,
    /// The id its END marker carries (Debezium's Postgres form differs from BEGIN's).
    end_id: String,
    ts_ms: i64,
    counts: Vec<(String, u64)>,
}

impl KafkaOptions {
    /// The transaction topic's name: `<prefix>.transaction` unless one is set.
    fn transaction_topic(&self) -> Option<String> {
        self.transaction_topic.as_ref().map(|t| {
            if t.is_empty() {
                legal_topic(&format!("{}.transaction", self.topic_prefix))
            } else {
                legal_topic(t)
            }
        })
    }
}

impl KafkaSink {
    /// Transaction metadata: END for the open transaction when another
    /// starts (or at commit), BEGIN for a new one.
    /// Returns the event's order in its transaction and among its table's
    /// events there (Debezium's `total_order`, `data_collection_order`).
    pub(crate) fn track_transaction(&mut self, event: &ChangeEvent) -> Result<Option<(u64, u64)>, SinkError> {
        if self.opts.transaction_topic.is_none() {
            return Ok(None);
        }
        let id = riffle_formats::transaction_id(event);
        if self.tx.as_ref().map(|t| &t.id) != id.as_ref() {
            self.end_transaction()?;
            if let Some(id) = id {
                // Debezium's ids where its encodings are written.
                let debezium = matches!(self.opts.encoding, ValueEncoding::Debezium(_));
                let (begin_id, end_id) = match debezium {
                    true => (debezium::transaction_id(event), debezium::end_transaction_id(event)),
                    false => (None, None),
                };
                let begin_id = begin_id.unwrap_or_else(|| id.clone());
                let value = serde_json::json!({
                    "status": "BEGIN", "id": begin_id, "event_count": null, "data_collections": null, "ts_ms": event.source.ts_ms
                });
                self.send_tx_marker(&begin_id, &value)?;
                self.tx = Some(OpenTx { end_id: end_id.unwrap_or_else(|| id.clone()), id, ts_ms: event.source.ts_ms, counts: Vec::new() });
            }
        }
        let Some(tx) = &mut self.tx else { return Ok(None) };
        let collection = format!("{}.{}", event.table.id.schema, event.table.id.name);
        let in_collection = match tx.counts.iter_mut().find(|(c, _)| *c == collection) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                tx.counts.push((collection, 1));
                1
            }
        };
        Ok(Some((tx.counts.iter().map(|(_, n)| n).sum(), in_collection)))
    }

    pub(crate) fn end_transaction(&mut self) -> Result<(), SinkError> {
        let Some(tx) = self.tx.take() else { return Ok(()) };
        let total: u64 = tx.counts.iter().map(|(_, n)| n).sum();
        let collections: Vec<serde_json::Value> =
            tx.counts.iter().map(|(c, n)| serde_json::json!({"data_collection": c, "event_count": n})).collect();
        let value = serde_json::json!({
            "status": "END", "id": tx.end_id, "event_count": total, "data_collections": collections, "ts_ms": tx.ts_ms
        });
        self.send_tx_marker(&tx.end_id, &value)
    }

    /// A marker, wrapped in its Kafka Connect schema when schemas are on
    /// (Debezium's `TransactionMetadataKey` / `TransactionMetadataValue`).
    fn send_tx_marker(&mut self, id: &str, value: &serde_json::Value) -> Result<(), SinkError> {
        let topic = self.opts.transaction_topic().expect("transaction metadata is on");
        self.ensure_topic(&topic)?;
        let mut key = serde_json::json!({ "id": id });
        let mut value = value.clone();
        if self.opts.format == (ValueFormat::Json { schemas: true }) {
            key = serde_json::json!({"schema": debezium::transaction_key_schema(), "payload": key});
            value = serde_json::json!({"schema": debezium::transaction_value_schema(), "payload": value});
        }
        let (key, value) = (key.to_string(), value.to_string());
        self.send(&topic, Some(key.as_bytes()), Some(value.as_bytes()), OwnedHeaders::new(), id)
    }
}
