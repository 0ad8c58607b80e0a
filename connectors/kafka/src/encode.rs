//! How a change event becomes Kafka messages: the per-schema-version
//! encodings (Kafka Connect wrappers, registered Avro schemas), the key, the
//! envelope value, the headers, and the tombstone after a delete.

use crate::debezium::Plan;
use crate::sink::KafkaSink;
use crate::{connect, connect_avro, KafkaOptions, ValueEncoding, ValueFormat};
use rdkafka::message::{Header, OwnedHeaders};
use riffle_core::{ChangeEvent, Op, SinkError, TableSchema};
use riffle_formats::{avro, jsonl};
use std::sync::Arc;

/// What a table's messages need, computed once per schema version.
pub(crate) struct TableOut {
    schema: Arc<TableSchema>,
    topic: String,
    /// JSON with schemas: the `{"schema":…,"payload":` prefixes.
    key_prefix: Vec<u8>,
    value_prefix: Vec<u8>,
    /// Avro: registered ids of the key and value schemas.
    key_id: u32,
    value_id: u32,
    /// Debezium's encodings of the columns, when the sink writes them.
    debezium: Option<Plan>,
    /// Avro in Debezium's form: the Connect key and value schemas the
    /// JSON payloads are encoded under.
    connect: Option<(serde_json::Value, serde_json::Value)>,
}

impl TableOut {
    /// The encodings of `table` (whose events come from `connector`) for
    /// `topic` under `opts`; Avro schemas are registered through
    /// `register(subject, schema)`, which returns the schema's id.
    pub(crate) fn new(
        table: &Arc<TableSchema>,
        connector: &'static str,
        opts: &KafkaOptions,
        topic: String,
        register: &mut dyn FnMut(&str, &str) -> Result<u32, SinkError>,
    ) -> Result<TableOut, SinkError> {
        let debezium = match opts.encoding {
            ValueEncoding::Debezium(modes) => Some(Plan::new(table, connector, &modes)),
            ValueEncoding::Riffle => None,
        };
        let mut out = TableOut {
            schema: table.clone(),
            topic,
            key_prefix: Vec::new(),
            value_prefix: Vec::new(),
            key_id: 0,
            value_id: 0,
            debezium,
            connect: None,
        };
        match &opts.format {
            ValueFormat::Json { schemas: true } if out.debezium.is_some() => {
                let plan = out.debezium.as_ref().expect("checked");
                out.key_prefix = connect::wrapper_prefix(&plan.key_schema(table, &out.topic));
                out.value_prefix = connect::wrapper_prefix(&plan.value_schema(table, &out.topic));
            }
            ValueFormat::Json { schemas: true } => {
                out.key_prefix = connect::wrapper_prefix(&connect::key_schema(table, &out.topic));
                out.value_prefix = connect::wrapper_prefix(&connect::value_schema(table, &out.topic));
            }
            ValueFormat::Json { schemas: false } => {}
            ValueFormat::Avro { .. } if out.debezium.is_some() => {
                // Debezium's Connect schemas, as the AvroConverter turns them into Avro.
                let plan = out.debezium.as_ref().expect("checked");
                let key = plan.key_schema(table, &out.topic);
                let value = plan.value_schema(table, &out.topic);
                if !table.key.is_empty() {
                    out.key_id = register(&format!("{}-key", out.topic), &connect_avro::avro_schema(&key).to_string())?;
                }
                out.value_id = register(&format!("{}-value", out.topic), &connect_avro::avro_schema(&value).to_string())?;
                out.connect = Some((key, value));
            }
            ValueFormat::Avro { .. } => {
                let ns = avro::avro_namespace(&out.topic);
                if let Some(k) = avro::key_schema(table, &ns) {
                    out.key_id = register(&format!("{}-key", out.topic), &k.to_string())?;
                }
                out.value_id = register(&format!("{}-value", out.topic), &avro::envelope_schema(table, &ns).to_string())?;
            }
        }
        Ok(out)
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Encodes the key into `out`; false when the message has no key.
    pub(crate) fn encode_key(&self, format: &ValueFormat, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<bool, SinkError> {
        out.clear();
        match format {
            ValueFormat::Json { schemas } => {
                if *schemas {
                    out.extend_from_slice(&self.key_prefix);
                }
                let has_key = match &self.debezium {
                    Some(plan) => plan.write_key(event, out)?,
                    None => jsonl::key_object(event, out),
                };
                if !has_key {
                    return Ok(false);
                }
                if *schemas {
                    out.push(b'}');
                }
            }
            ValueFormat::Avro { .. } => {
                out.push(0);
                out.extend_from_slice(&self.key_id.to_be_bytes());
                if let (Some(plan), Some((schema, _))) = (&self.debezium, &self.connect) {
                    let mut json = Vec::new();
                    if !plan.write_key(event, &mut json)? {
                        return Ok(false);
                    }
                    to_avro(event, schema, &json, out)?;
                } else if !avro::encode_key(event, out).map_err(|e| unrepresentable(event, e))? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Encodes the value into `out`; `order`: the event's place in its
    /// transaction, when transaction metadata is on.
    pub(crate) fn encode_value(
        &self,
        format: &ValueFormat,
        event: &ChangeEvent,
        order: Option<(u64, u64)>,
        out: &mut Vec<u8>,
    ) -> Result<(), SinkError> {
        out.clear();
        match format {
            ValueFormat::Json { schemas } => {
                if *schemas {
                    out.extend_from_slice(&self.value_prefix);
                }
                match &self.debezium {
                    Some(plan) => plan.write_envelope(event, order, out)?,
                    None => jsonl::write_envelope(event, false, out),
                }
                if *schemas {
                    out.push(b'}');
                }
            }
            ValueFormat::Avro { .. } => {
                out.push(0);
                out.extend_from_slice(&self.value_id.to_be_bytes());
                if let (Some(plan), Some((_, schema))) = (&self.debezium, &self.connect) {
                    let mut json = Vec::new();
                    plan.write_envelope(event, order, &mut json)?;
                    to_avro(event, schema, &json, out)?;
                } else {
                    avro::encode_envelope(event, out).map_err(|e| unrepresentable(event, e))?;
                }
            }
        }
        Ok(())
    }
}

impl KafkaSink {
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
            let registry = &mut self.registry;
            let mut register =
                |subject: &str, schema: &str| registry.as_mut().expect("Avro sinks have a registry").register(subject, schema);
            let out = TableOut::new(table, event.source.connector, &self.opts, topic, &mut register)?;
            self.tables.insert(table.id.clone(), out);
        }
        Ok(&self.tables[&table.id])
    }

    /// Encodes the key into `self.key`; false when the message has no key.
    fn encode_key(&mut self, event: &ChangeEvent) -> Result<bool, SinkError> {
        self.tables[&event.table.id].encode_key(&self.opts.format, event, &mut self.key)
    }

    fn encode_value(&mut self, event: &ChangeEvent, order: Option<(u64, u64)>) -> Result<(), SinkError> {
        self.tables[&event.table.id].encode_value(&self.opts.format, event, order, &mut self.value)
    }

    /// `riffle.position` lets consumers deduplicate a replay; `riffle.op` is the envelope's `op`.
    fn headers(event: &ChangeEvent, position: &str) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: "riffle.position", value: Some(position) })
            .insert(Header { key: "riffle.op", value: Some(event.op.code()) })
    }

    /// Sends the event's message, then (for a delete, when enabled) its tombstone.
    pub(crate) fn write_one(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        if self.opts.skips(event.op) {
            return Ok(());
        }
        let topic = self.table_out(event)?.topic.clone();
        let order = self.track_transaction(event)?;
        let has_key = self.encode_key(event)?;
        self.encode_value(event, order)?;
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

/// Debezium's JSON payload `json` in Avro under its Connect `schema`.
fn to_avro(event: &ChangeEvent, schema: &serde_json::Value, json: &[u8], out: &mut Vec<u8>) -> Result<(), SinkError> {
    let bug = |what: String| {
        SinkError::definite(format!(
            "the event at position {} could not be written in Avro: {what}; this is a bug in riffle",
            event.position
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| bug(e.to_string()))?;
    connect_avro::encode(schema, &value, out).map_err(|e| match e {
        connect_avro::Mismatch::Bug(why) => bug(why),
        connect_avro::Mismatch::Unsupported(why) => {
            SinkError::definite(format!("the event at position {} cannot be written in Avro: {why}", event.position))
        }
    })
}

fn unrepresentable(event: &ChangeEvent, e: avro::Unrepresentable) -> SinkError {
    SinkError::definite(format!(
        "the event at position {} cannot be written in Avro: {e}; write this table as JSON (a second sink with format json), \
         or leave the column out with a [[tables]] columns rule",
        event.position
    ))
}
