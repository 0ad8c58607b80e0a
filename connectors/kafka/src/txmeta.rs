//! Transaction metadata (Debezium's `provide.transaction.metadata`): BEGIN
//! and END markers, with per-table event counts, on the transaction topic.

use crate::sink::KafkaSink;
use crate::topics::legal_topic;
use crate::KafkaOptions;
use rdkafka::message::OwnedHeaders;
use riffle_core::{ChangeEvent, SinkError};

/// A transaction whose BEGIN marker was sent and END not yet.
pub(crate) struct OpenTx {
    id: String,
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
                let value = serde_json::json!({
                    "status": "BEGIN", "id": id, "event_count": null, "data_collections": null, "ts_ms": event.source.ts_ms
                });
                self.send_tx_marker(&id, &value)?;
                self.tx = Some(OpenTx { id, ts_ms: event.source.ts_ms, counts: Vec::new() });
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
