//! Change events read back from Kafka messages: the inverse of the sink's
//! encodings, for topics written by riffle or by Debezium.
//!
//! A message value is a change envelope (`before`, `after`, `op`, `source`)
//! in JSON, plain or wrapped in Kafka Connect's `{"schema", "payload"}`.
//! The table's columns and their types come from the Connect schema of the
//! `after`/`before` struct: Debezium's semantic types (`io.debezium.time.
//! MicroTimestamp`, `org.apache.kafka.connect.data.Decimal`, …) and riffle's
//! own (`IsoTimestamp`, plain strings) are turned back into riffle's value
//! model, in the forms the source database's connector writes (named in
//! `source.connector`): a decimal's every digit, a Postgres timestamp's
//! fraction without trailing zeros, a MySQL `bit(n)` big-endian.
//! Without a schema the types are taken from the JSON values themselves
//! (numbers, strings, booleans, objects), which cannot tell a decimal or a
//! timestamp from text: said in docs/kafka-source.md.
//!
//! The key columns are the fields of the message key. The table is named by
//! the envelope's `source` block (`schema` or `db`, and `table`), else by the
//! topic's last two dot-separated parts.

use base64::Engine;
use riffle_core::{
    BeforeImage, BinlogCoords, ChangeEvent, Column, DataType, Lsn, Op, Position, SnapshotMark, SourceInfo, TableId, TableSchema, Value,
};
use riffle_formats::temporal::{self, Fraction};
use riffle_formats::value::non_finite;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The largest decimal scale read (Postgres allows 16383 digits after the
/// point; a larger one is a damaged message, not a number).
const MAX_SCALE: u64 = 16_383;

/// Days either side of the epoch a date may be (about ±2.7 million years).
const MAX_DAYS: i64 = 1_000_000_000;

/// Debezium's `unavailable.value.placeholder` default (an unchanged TOASTed value).
const UNAVAILABLE: &str = crate::debezium::UNAVAILABLE;

/// What one message holds. (Returned and taken apart at once: boxing the
/// event would cost an allocation per message for nothing.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Event(ChangeEvent),
    /// A message that carries no row change, read past: a tombstone, a
    /// transaction marker, a heartbeat, a Debezium `m` message.
    Skip(&'static str),
}

/// How one column's JSON values become riffle values.
#[derive(Debug, Clone, PartialEq)]
enum Col {
    /// Booleans, numbers, text as they are.
    Same,
    /// A 32-bit float (JSON holds it as a number like any other).
    Float32,
    /// Text kept as text whatever JSON holds (a schema-less column that
    /// held text first).
    Text,
    /// A JSON document written as a string (`io.debezium.data.Json`).
    Json,
    Bytes,
    /// `bit(n)`: Debezium writes the bits little-endian.
    Bits,
    /// Base64 of the unscaled value at this scale.
    Decimal(u32),
    /// `{"scale", "value"}`.
    VariableDecimal,
    /// Days since the epoch.
    Date,
    /// Time of day in ms, µs or ns.
    Time(i64),
    /// Timestamp since the epoch in ms, µs or ns (no zone).
    Timestamp(i64),
    /// The same in UTC (`…Z`): riffle's Avro `timestamp-*`.
    TimestampUtc(i64),
    /// `…Z` text: kept, its fraction as the source's connector writes it.
    ZonedTimestamp,
    /// Microseconds of an interval (`interval.handling.mode=numeric`).
    IntervalMicros,
    Array(Box<Col>),
}

/// A table as its messages describe it, made once per schema.
struct TablePlan {
    table: Arc<TableSchema>,
    columns: Vec<Col>,
    /// Fraction digits of temporal values without zone.
    fraction: Fraction,
    connector: &'static str,
    name: Arc<str>,
    db: Arc<str>,
}

/// The message wrapper: Kafka Connect's `{"schema", "payload"}`, or the
/// envelope itself (then `payload` is `None`).
#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<Image<'a>>,
    #[serde(borrow, default)]
    after: Option<Image<'a>>,
    #[serde(borrow, default)]
    source: Option<SourceBlock<'a>>,
    /// riffle's envelopes say how much of the before image there is.
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    before_image: Option<Cow<'a, str>>,
}

/// A row image's fields in the order written (no map per message: the
/// columns are looked for where the plan has them first).
struct Image<'a>(Vec<(Cow<'a, str>, Json)>);

impl Image<'_> {
    /// The field `name`, looked for at `hint` first.
    fn get(&self, name: &str, hint: usize) -> Option<&Json> {
        match self.0.get(hint) {
            Some((k, v)) if k == name => Some(v),
            _ => self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Image<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Image<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row image (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Image<'de>, A::Error> {
                let mut fields = Vec::with_capacity(a.size_hint().unwrap_or(16));
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    fields.push((k, a.next_value::<Json>()?));
                }
                Ok(Image(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// The envelope's `source` block, the fields riffle reads, borrowed from
/// the message (a map per message cost more than the rest of the decode).
/// A field of another type than expected reads as absent.
#[derive(Deserialize, Default)]
struct SourceBlock<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    db: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    table: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    snapshot: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    file: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_str")]
    gtid: Option<Cow<'a, str>>,
    #[serde(rename = "txId", default, deserialize_with = "lenient_num")]
    tx_id: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    lsn: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    ts_ms: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    ts_us: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    pos: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    row: Option<Number>,
    #[serde(default, deserialize_with = "lenient_num")]
    server_id: Option<Number>,
}

impl SourceBlock<'_> {
    /// A text field by its name in the envelope.
    fn text(&self, k: &str) -> Option<&str> {
        match k {
            "connector" => self.connector.as_deref(),
            "name" => self.name.as_deref(),
            "db" => self.db.as_deref(),
            "schema" => self.schema.as_deref(),
            "table" => self.table.as_deref(),
            "snapshot" => self.snapshot.as_deref(),
            "file" => self.file.as_deref(),
            "gtid" => self.gtid.as_deref(),
            _ => None,
        }
    }
}

/// A JSON number as written (signed or not).
type Number = serde_json::Number;

fn lenient_num<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::Number(n) => Some(n),
        _ => None,
    })
}

/// A string, borrowed where it has no escapes; anything else reads as `None`.
fn lenient_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Turns messages into change events, keeping each table's plan between
/// messages of the same schema.
#[derive(Default)]
pub struct Decoder {
    /// By topic: the schema text (or, without one, the field names) the
    /// plan was made for, and the plan.
    plans: HashMap<String, (String, Arc<TablePlan>)>,
    /// Where the writer schemas of Avro messages are.
    registry: Option<crate::registry::Registry>,
    /// Avro writer schemas, by registry id.
    avro: HashMap<u32, Arc<super::avro::AvroPlan>>,
}

/// A value in Confluent's Avro wire format: its schema id and datum.
fn confluent(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, datum @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => None,
    }
}

impl Decoder {
    /// A decoder that reads Avro messages with the schemas in `registry`.
    pub fn with_registry(registry: crate::registry::Registry) -> Decoder {
        Decoder { registry: Some(registry), ..Decoder::default() }
    }

    /// Takes `schema` as the writer schema registered under `id`, without
    /// asking a registry (`riffle verify` encodes the source's rows itself).
    pub fn know_schema(&mut self, id: u32, schema: &str) -> Result<(), String> {
        self.avro.insert(id, Arc::new(super::avro::AvroPlan::new(schema)?));
        Ok(())
    }

    fn avro_plan(&mut self, id: u32) -> Result<Arc<super::avro::AvroPlan>, String> {
        if let Some(p) = self.avro.get(&id) {
            return Ok(p.clone());
        }
        let Some(registry) = &self.registry else {
            return Err(format!(
                "the message is Avro (Confluent's wire format, schema id {id}); give the schema registry as ?schema_registry=URL"
            ));
        };
        let text = registry.schema_by_id(id).map_err(|e| e.to_string())?;
        let plan = Arc::new(super::avro::AvroPlan::new(&text)?);
        self.avro.insert(id, plan.clone());
        Ok(plan)
    }

    /// An Avro key as JSON (its field names are what the decoder needs).
    fn avro_key(&mut self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        match key.and_then(confluent) {
            Some((id, datum)) => {
                let plan = self.avro_plan(id)?;
                Ok(Some(serde_json::to_vec(&plan.payload(datum)?).expect("JSON serializes")))
            }
            None => Ok(key.map(<[u8]>::to_vec)),
        }
    }

    /// `position` is the message's own; `Err` says what is wrong with the
    /// message (the caller names topic, partition and offset).
    pub fn decode(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, position: Position) -> Result<Decoded, String> {
        let Some(value) = value else { return Ok(Decoded::Skip("tombstone")) };
        if let Some((id, datum)) = confluent(value) {
            let plan = self.avro_plan(id)?;
            let payload = serde_json::to_string(&plan.payload(datum)?).expect("JSON serializes");
            let envelope = serde_json::from_str::<Envelope>(&payload).map_err(|e| format!("the value is not a change envelope ({e})"))?;
            let key = self.avro_key(key)?;
            return self.event(topic, Some(&plan.connect), key.as_deref(), envelope, position);
        }
        let wrapped: Wrapped = serde_json::from_slice(value).map_err(|e| format!("the value is not a JSON object ({e})"))?;
        let (schema, envelope) = match wrapped.payload {
            Some(p) => (wrapped.schema.map(RawValue::get), serde_json::from_str::<Envelope>(p.get())),
            None => (None, serde_json::from_slice::<Envelope>(value)),
        };
        let envelope = envelope.map_err(|e| format!("the value is not a change envelope ({e})"))?;
        self.event(topic, schema, key, envelope, position)
    }

    fn event(
        &mut self,
        topic: &str,
        schema: Option<&str>,
        key: Option<&[u8]>,
        envelope: Envelope,
        position: Position,
    ) -> Result<Decoded, String> {
        let op = match envelope.op.as_deref() {
            Some("r") => Op::Read,
            Some("c") => Op::Create,
            Some("u") => Op::Update,
            Some("d") => Op::Delete,
            Some("t") => Op::Truncate,
            Some("m") => return Ok(Decoded::Skip("message")),
            Some(other) => return Err(format!("unknown op {other:?}; expected r, c, u, d or t")),
            // Transaction markers (`status`), heartbeats (`ts_ms` alone).
            None if envelope.before.is_none() && envelope.after.is_none() => return Ok(Decoded::Skip("no change")),
            None => return Err("a row image without an `op`".into()),
        };
        let source = envelope.source.unwrap_or_default();
        let source = &source;
        let plan = self.plan(topic, schema, key, source, &envelope.before, &envelope.after)?;
        let row = |image: &Option<Image>| -> Result<Option<Vec<Value>>, String> {
            let Some(image) = image else { return Ok(None) };
            plan.table
                .columns
                .iter()
                .zip(&plan.columns)
                .enumerate()
                .map(|(i, (c, col))| match image.get(&c.name, i) {
                    None => Ok(Value::Unavailable),
                    Some(v) => value_of(col, v, plan.fraction).map_err(|why| format!("column {}: {why}", c.name)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        let mut before = row(&envelope.before)?;
        let after = row(&envelope.after)?;
        let before_image = match (envelope.before_image.as_deref(), &before) {
            (Some("full"), _) => BeforeImage::Full,
            (Some("key"), _) => BeforeImage::Key,
            (Some(_), _) | (None, None) => BeforeImage::None,
            // Debezium writes a key-only before image (Postgres' default
            // replica identity) with nulls in the other columns.
            (None, Some(b)) if plan.connector == "postgresql" && !plan.table.key.is_empty() => {
                let others_null = b.iter().enumerate().all(|(i, v)| plan.table.key.contains(&i) || v.is_null());
                if others_null && plan.table.columns.len() > plan.table.key.len() {
                    for (i, v) in before.as_mut().expect("matched").iter_mut().enumerate() {
                        if !plan.table.key.contains(&i) {
                            *v = Value::Unavailable;
                        }
                    }
                    BeforeImage::Key
                } else {
                    BeforeImage::Full
                }
            }
            (None, Some(_)) => BeforeImage::Full,
        };
        let source_info = source_info(&plan, source, op);
        Ok(Decoded::Event(ChangeEvent {
            op,
            table: plan.table.clone(),
            before,
            after,
            before_image,
            source: source_info,
            position,
            ts_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        }))
    }

    /// The plan for this message's table: the topic's last one when its
    /// schema is the same.
    fn plan(
        &mut self,
        topic: &str,
        schema: Option<&str>,
        key: Option<&[u8]>,
        source: &SourceBlock,
        before: &Option<Image>,
        after: &Option<Image>,
    ) -> Result<Arc<TablePlan>, String> {
        let image = after.as_ref().or(before.as_ref());
        // Without a schema, the plan holds while the field names do.
        if let Some((sig, plan)) = self.plans.get(topic) {
            let same = match schema {
                Some(s) => sig == s,
                None => same_fields(sig, image),
            };
            if same && same_table(plan, topic, source) {
                return Ok(plan.clone());
            }
        }
        let signature = match schema {
            Some(s) => s.to_string(),
            None => image.map(|m| m.keys().collect::<Vec<_>>().join("\u{1}")).unwrap_or_default(),
        };
        let plan = Arc::new(make_plan(topic, schema, key, source, image)?);
        self.plans.insert(topic.to_string(), (signature, plan.clone()));
        Ok(plan)
    }
}

/// The table a message names, as `(schema, table)`.
fn table_id(topic: &str, source: &SourceBlock) -> TableId {
    let text = |k: &str| source.text(k).filter(|s| !s.is_empty());
    match (text("schema").or(text("db")), text("table")) {
        (Some(schema), Some(table)) => TableId::new(schema, table),
        _ => {
            let mut parts = topic.rsplitn(3, '.');
            let table = parts.next().unwrap_or(topic);
            TableId::new(parts.next().unwrap_or(""), table)
        }
    }
}

/// Does `image` have the field names `signature` joins (without allocating)?
fn same_fields(signature: &str, image: Option<&Image>) -> bool {
    let mut rest = signature;
    for (i, k) in image.into_iter().flat_map(|m| m.keys()).enumerate() {
        if i > 0 {
            let Some(r) = rest.strip_prefix('\u{1}') else { return false };
            rest = r;
        }
        let Some(r) = rest.strip_prefix(k) else { return false };
        rest = r;
    }
    rest.is_empty()
}

fn same_table(plan: &TablePlan, topic: &str, source: &SourceBlock) -> bool {
    let text = |k: &str| source.text(k).filter(|s| !s.is_empty());
    let id = &plan.table.id;
    let table_same = match (text("schema").or(text("db")), text("table")) {
        (Some(schema), Some(table)) => id.schema == schema && id.name == table,
        _ => *id == table_id(topic, source),
    };
    table_same && source.text("name").is_none_or(|n| *n == *plan.name)
}

fn connector_of(source: &SourceBlock) -> &'static str {
    match source.text("connector") {
        Some("postgresql") => "postgresql",
        Some("mysql") => "mysql",
        Some("mariadb") => "mariadb",
        _ => "kafka",
    }
}

fn make_plan(
    topic: &str,
    schema: Option<&str>,
    key: Option<&[u8]>,
    source: &SourceBlock,
    image: Option<&Image>,
) -> Result<TablePlan, String> {
    let connector = connector_of(source);
    let postgres = connector == "postgresql";
    let mut columns = Vec::new();
    let mut cols = Vec::new();
    match schema {
        Some(text) => {
            let schema: Json = serde_json::from_str(text).map_err(|e| format!("its Connect schema is not JSON ({e})"))?;
            let fields = schema["fields"].as_array().ok_or("its Connect schema is not a struct with fields")?;
            let row = fields
                .iter()
                .find(|f| f["field"] == "after")
                .or_else(|| fields.iter().find(|f| f["field"] == "before"))
                .ok_or("its Connect schema has no `after` or `before` field")?;
            for f in row["fields"].as_array().ok_or("the Connect schema of `after` is not a struct")? {
                let name = f["field"].as_str().ok_or("a field of `after` without a name")?;
                let (col, data_type, source_type, labels) = connect_type(f, postgres)?;
                columns.push(Column {
                    name: name.to_string(),
                    source_type,
                    data_type,
                    nullable: f["optional"].as_bool().unwrap_or(true),
                    labels,
                });
                cols.push(col);
            }
        }
        None => {
            for (name, v) in image.into_iter().flat_map(|i| i.0.iter()) {
                let (col, data_type) = match v {
                    Json::Bool(_) => (Col::Same, DataType::Bool),
                    Json::Number(n) if n.is_i64() => (Col::Same, DataType::Int64),
                    Json::Number(n) if n.is_u64() => (Col::Same, DataType::UInt64),
                    Json::Number(_) => (Col::Same, DataType::Float64),
                    Json::Object(_) | Json::Array(_) => (Col::Json, DataType::Json),
                    Json::String(_) | Json::Null => (Col::Text, DataType::String),
                };
                let source_type = match &data_type {
                    DataType::Json => "json".to_string(),
                    DataType::String => "text".to_string(),
                    other => format!("{other:?}").to_lowercase(),
                };
                columns.push(Column { name: name.to_string(), source_type, data_type, nullable: true, labels: Vec::new() });
                cols.push(col);
            }
        }
    }
    // The key: the message key's fields (Connect-wrapped or not).
    let mut key_columns = Vec::new();
    if let Some(key) = key {
        if let Ok(Json::Object(mut k)) = serde_json::from_slice::<Json>(key) {
            if let (Some(Json::Object(payload)), true) = (k.remove("payload"), k.contains_key("schema")) {
                k = payload;
            }
            for name in k.keys() {
                if let Some(i) = columns.iter().position(|c| c.name == *name) {
                    key_columns.push(i);
                }
            }
        }
    }
    let text = |k: &str| source.text(k).unwrap_or("");
    let fraction = if postgres { Fraction::Trim } else { Fraction::Digits(6) };
    Ok(TablePlan {
        table: Arc::new(TableSchema { id: table_id(topic, source), columns, key: key_columns, full_before_image: false }),
        columns: cols,
        fraction,
        connector,
        name: Arc::from(text("name")),
        db: Arc::from(text("db")),
    })
}

/// A column's decoding, type, source type name and enum labels, from its
/// Connect schema.
fn connect_type(f: &Json, postgres: bool) -> Result<(Col, DataType, String, Vec<String>), String> {
    let ty = f["type"].as_str().unwrap_or("");
    let name = f["name"].as_str().unwrap_or("");
    let param = |k: &str| f["parameters"][k].as_str();
    let labels = || param("allowed").map(|a| a.split(',').map(str::to_string).collect()).unwrap_or_default();
    let plain = |dt: DataType, st: &str| Ok((Col::Same, dt, st.to_string(), Vec::new()));
    let text = |dt: DataType, st: &str| Ok((Col::Text, dt, st.to_string(), Vec::new()));
    match (ty, name) {
        ("boolean", _) => plain(DataType::Bool, "boolean"),
        ("int8" | "int16", _) => plain(DataType::Int16, "smallint"),
        ("int32", "io.debezium.time.Year") => plain(DataType::Int32, "year"),
        ("int32", "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => Ok((Col::Date, DataType::Date, "date".into(), vec![])),
        ("int32", "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") => {
            Ok((Col::Time(1000), DataType::Time, "time".into(), vec![]))
        }
        ("int32", _) => plain(DataType::Int32, "integer"),
        ("int64", "io.debezium.time.MicroTime") => Ok((Col::Time(1), DataType::Time, "time".into(), vec![])),
        ("int64", "io.debezium.time.NanoTime") => Ok((Col::Time(-1000), DataType::Time, "time".into(), vec![])),
        ("int64", "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
            Ok((Col::Timestamp(1000), DataType::Timestamp, "timestamp".into(), vec![]))
        }
        ("int64", "io.debezium.time.MicroTimestamp") => Ok((Col::Timestamp(1), DataType::Timestamp, "timestamp".into(), vec![])),
        ("int64", "io.debezium.time.NanoTimestamp") => Ok((Col::Timestamp(-1000), DataType::Timestamp, "timestamp".into(), vec![])),
        ("int64", "riffle.UtcTimestampMicros") => {
            Ok((Col::TimestampUtc(1), DataType::TimestampTz, "timestamp with time zone".into(), vec![]))
        }
        ("int64", "riffle.UtcTimestampMillis") => {
            Ok((Col::TimestampUtc(1000), DataType::TimestampTz, "timestamp with time zone".into(), vec![]))
        }
        ("int64", "io.debezium.time.MicroDuration") => Ok((Col::IntervalMicros, DataType::Interval, "interval".into(), vec![])),
        ("int64", _) => plain(DataType::Int64, "bigint"),
        ("float", _) => Ok((Col::Float32, DataType::Float32, "real".into(), vec![])),
        ("double", _) => plain(DataType::Float64, "double precision"),
        ("bytes", "org.apache.kafka.connect.data.Decimal") => {
            let scale: u32 = param("scale")
                .and_then(|s| s.parse().ok())
                .filter(|s| u64::from(*s) <= MAX_SCALE)
                .ok_or("a Decimal without a scale parameter of 0 to 16383")?;
            let precision = param("connect.decimal.precision").and_then(|p| p.parse().ok());
            let st = match precision {
                Some(p) => format!("numeric({p},{scale})"),
                None => "numeric".into(),
            };
            Ok((Col::Decimal(scale), DataType::Decimal { precision, scale: Some(scale) }, st, vec![]))
        }
        ("bytes", "io.debezium.data.Bits") => {
            let n = param("length").unwrap_or("1");
            Ok((Col::Bits, DataType::Bytes, format!("bit({n})"), vec![]))
        }
        ("bytes", _) => Ok((Col::Bytes, DataType::Bytes, if postgres { "bytea" } else { "varbinary" }.into(), vec![])),
        ("struct", "io.debezium.data.VariableScaleDecimal") => {
            Ok((Col::VariableDecimal, DataType::Decimal { precision: None, scale: None }, "numeric".into(), vec![]))
        }
        ("string", "io.debezium.time.ZonedTimestamp") => {
            Ok((Col::ZonedTimestamp, DataType::TimestampTz, "timestamp with time zone".into(), vec![]))
        }
        ("string", "io.debezium.time.ZonedTime") => text(DataType::TimeTz, "time with time zone"),
        ("string", "io.debezium.time.IsoDate") => text(DataType::Date, "date"),
        ("string", "io.debezium.time.IsoTime") => text(DataType::Time, "time"),
        ("string", "io.debezium.time.IsoTimestamp") => text(DataType::Timestamp, "timestamp"),
        ("string", "io.debezium.time.Interval") => text(DataType::Interval, "interval"),
        ("string", "io.debezium.data.Uuid") => text(DataType::Uuid, "uuid"),
        ("string", "io.debezium.data.Json") => Ok((Col::Json, DataType::Json, "json".into(), vec![])),
        ("string", "io.debezium.data.Enum") => Ok((Col::Text, DataType::Enum, "enum".into(), labels())),
        ("string", "io.debezium.data.EnumSet") => {
            let labels = labels();
            let st = format!("set({})", labels.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(","));
            Ok((Col::Text, DataType::String, st, labels))
        }
        ("string", _) => text(DataType::String, "text"),
        ("array", _) => {
            let (inner, dt, st, labels) = connect_type(&f["items"], postgres)?;
            Ok((Col::Array(Box::new(inner)), DataType::Array(Box::new(dt)), format!("{st}[]"), labels))
        }
        (other, _) => Err(format!("a field of Connect type {other:?} {name}, which riffle does not read")),
    }
}

fn base64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| format!("{s:?} is not base64"))
}

/// One JSON value as `col` reads it.
fn value_of(col: &Col, v: &Json, fraction: Fraction) -> Result<Value, String> {
    let unexpected = |what: &str| format!("expected {what}, found {v}");
    let int = |v: &Json| v.as_i64().ok_or_else(|| unexpected("an integer"));
    Ok(match (col, v) {
        (_, Json::Null) => Value::Null,
        (Col::Array(inner), Json::Array(items)) => {
            Value::Array(items.iter().map(|i| value_of(inner, i, fraction)).collect::<Result<_, _>>()?)
        }
        // A multi-dimensional array: Connect's schema names one dimension.
        (inner, Json::Array(items)) if !matches!(inner, Col::Json | Col::Text) => {
            Value::Array(items.iter().map(|i| value_of(inner, i, fraction)).collect::<Result<_, _>>()?)
        }
        (Col::Float32, Json::Number(n)) => Value::Float32(n.as_f64().ok_or_else(|| unexpected("a number"))? as f32),
        (Col::Float32, Json::String(s)) => Value::Float32(non_finite(s).ok_or_else(|| unexpected("a number"))? as f32),
        (Col::Text | Col::ZonedTimestamp | Col::Json, Json::String(s)) if s == UNAVAILABLE => Value::Unavailable,
        (Col::Same, Json::String(s)) if s == UNAVAILABLE => Value::Unavailable,
        (Col::Same, Json::Bool(b)) => Value::Bool(*b),
        (Col::Same, Json::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float64(n.as_f64().ok_or_else(|| unexpected("a number"))?),
        },
        // riffle writes NaN and the infinities of floating columns as text.
        (Col::Same, Json::String(s)) => non_finite(s).map_or_else(|| Value::Text(s.clone()), Value::Float64),
        (Col::Text, Json::String(s)) => Value::Text(s.clone()),
        (Col::Text, other) => Value::Text(other.to_string()),
        (Col::Json, Json::String(s)) => Value::Json(s.clone()),
        (Col::Json, other) => Value::Json(other.to_string()),
        (Col::Bytes, Json::String(s)) => {
            let b = base64(s)?;
            if b == UNAVAILABLE.as_bytes() {
                Value::Unavailable
            } else {
                Value::Bytes(b)
            }
        }
        (Col::Bits, Json::String(s)) => Value::Bytes(base64(s)?.into_iter().rev().collect()),
        (Col::Decimal(scale), Json::String(s)) => Value::Decimal(temporal::decimal_from_unscaled_be(&base64(s)?, *scale)),
        (Col::VariableDecimal, Json::Object(o)) => {
            let scale =
                o.get("scale").and_then(Json::as_u64).filter(|s| *s <= MAX_SCALE).ok_or_else(|| unexpected("a scale of 0 to 16383"))?;
            let value = o.get("value").and_then(Json::as_str).ok_or_else(|| unexpected("a value"))?;
            Value::Decimal(temporal::decimal_from_unscaled_be(&base64(value)?, scale as u32))
        }
        (Col::Date, v) => {
            let days = int(v)?;
            if days.unsigned_abs() > MAX_DAYS as u64 {
                return Err(unexpected("a date"));
            }
            Value::Text(temporal::format_date(days))
        }
        (Col::Time(unit), v) => {
            let us = micros(int(v)?, *unit);
            Value::Text(temporal::format_time(us, if *unit == 1000 { millis(fraction, us) } else { fraction }))
        }
        (Col::Timestamp(unit), v) => {
            let us = micros(int(v)?, *unit);
            Value::Text(temporal::format_timestamp(us, if *unit == 1000 { millis(fraction, us) } else { fraction }))
        }
        (Col::TimestampUtc(unit), v) => {
            let us = micros(int(v)?, *unit);
            let mut text = temporal::format_timestamp(us, if *unit == 1000 { millis(fraction, us) } else { fraction });
            text.push('Z');
            Value::Text(text)
        }
        (Col::ZonedTimestamp, Json::String(s)) => Value::Text(zoned(s, fraction)),
        (Col::IntervalMicros, v) => Value::Text(interval_iso(int(v)?)),
        (col, _) => return Err(unexpected(&format!("{col:?}"))),
    })
}

/// A value in `unit` (1000: ms, 1: µs, -1000: ns) as microseconds.
fn micros(n: i64, unit: i64) -> i64 {
    match unit {
        1000 => n.saturating_mul(1000),
        -1000 => n.div_euclid(1000),
        _ => n,
    }
}

/// Millisecond values keep three digits where MySQL pads (or none for
/// whole seconds: Debezium's millisecond types are MySQL's `fsp` 0 to 3).
fn millis(fraction: Fraction, us: i64) -> Fraction {
    match fraction {
        Fraction::Trim => Fraction::Trim,
        Fraction::Digits(_) if us % 1_000_000 == 0 => Fraction::Digits(0),
        Fraction::Digits(_) => Fraction::Digits(3),
    }
}

/// Debezium pads a zoned timestamp's fraction to the column's precision;
/// Postgres (and riffle's form of it) writes it without trailing zeros.
fn zoned(s: &str, fraction: Fraction) -> String {
    match (fraction, s.strip_suffix('Z').and_then(|b| b.split_once('.'))) {
        (Fraction::Trim, Some((whole, frac))) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{frac}Z")
            }
        }
        _ => s.to_string(),
    }
}

/// Microseconds of an interval as ISO 8601, in days and seconds (what a
/// number of microseconds can say: Debezium counts a month as 30 days).
fn interval_iso(us: i64) -> String {
    let (neg, us) = (us < 0, us.unsigned_abs());
    let sign = if neg { "-" } else { "" };
    let days = us / 86_400_000_000;
    let rest = us % 86_400_000_000;
    let (h, m, s, frac) = (rest / 3_600_000_000, rest / 60_000_000 % 60, rest / 1_000_000 % 60, rest % 1_000_000);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{sign}{days}D"));
    }
    if rest > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{sign}{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{sign}{m}M"));
        }
        if s > 0 || frac > 0 || (h == 0 && m == 0) {
            let f = format!("{frac:06}");
            let f = f.trim_end_matches('0');
            out.push_str(&format!("{sign}{s}{}{f}S", if f.is_empty() { "" } else { "." }));
        }
    }
    out
}

/// The envelope's `source` block as riffle's.
fn source_info(plan: &TablePlan, source: &SourceBlock, op: Op) -> SourceInfo {
    let num = |n: &Option<Number>| n.as_ref().and_then(Number::as_i64);
    let ts_ms = num(&source.ts_ms).unwrap_or(0);
    let snapshot = match source.text("snapshot") {
        Some("true") => SnapshotMark::True,
        Some("first") => SnapshotMark::First,
        Some("first_in_data_collection") => SnapshotMark::FirstInDataCollection,
        Some("last_in_data_collection") => SnapshotMark::LastInDataCollection,
        Some("last") => SnapshotMark::Last,
        Some("incremental") => SnapshotMark::Incremental,
        Some(_) => SnapshotMark::False,
        None => SnapshotMark::of(op),
    };
    let binlog = source.text("file").filter(|f| !f.is_empty()).map(|file| BinlogCoords {
        file: Arc::from(file),
        pos: num(&source.pos).unwrap_or(0).max(0) as u64,
        row: num(&source.row).unwrap_or(0).max(0) as u32,
        server_id: num(&source.server_id).unwrap_or(0).max(0) as u32,
        gtid: source.text("gtid").map(Arc::from),
    });
    SourceInfo {
        connector: plan.connector,
        name: plan.name.clone(),
        db: plan.db.clone(),
        tx_id: source.tx_id.as_ref().and_then(Number::as_u64),
        ts_ms,
        ts_us: num(&source.ts_us).unwrap_or(ts_ms.saturating_mul(1000)),
        lsn: source.lsn.as_ref().and_then(Number::as_u64).map(Lsn),
        binlog,
        snapshot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::KafkaPosition;

    fn at(offset: u64) -> Position {
        Position::Kafka(KafkaPosition { lane: 7, offset })
    }

    #[test]
    fn debeziums_postgres_forms_come_back_in_riffles() {
        let schema = r#"{"type":"struct","name":"p.public.t.Envelope","fields":[
            {"field":"before","type":"struct","optional":true,"fields":[
                {"field":"id","type":"int32","optional":false},
                {"field":"price","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"optional":true},
                {"field":"n","type":"struct","name":"io.debezium.data.VariableScaleDecimal","optional":true,"fields":[]},
                {"field":"at","type":"int64","name":"io.debezium.time.MicroTimestamp","optional":true},
                {"field":"tz","type":"string","name":"io.debezium.time.ZonedTimestamp","optional":true},
                {"field":"d","type":"int32","name":"io.debezium.time.Date","optional":true},
                {"field":"b","type":"bytes","optional":true},
                {"field":"note","type":"string","optional":true},
                {"field":"tags","type":"array","items":{"type":"string","optional":true},"optional":true}]},
            {"field":"after","type":"struct","optional":true,"fields":[
                {"field":"id","type":"int32","optional":false},
                {"field":"price","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"optional":true},
                {"field":"n","type":"struct","name":"io.debezium.data.VariableScaleDecimal","optional":true,"fields":[]},
                {"field":"at","type":"int64","name":"io.debezium.time.MicroTimestamp","optional":true},
                {"field":"tz","type":"string","name":"io.debezium.time.ZonedTimestamp","optional":true},
                {"field":"d","type":"int32","name":"io.debezium.time.Date","optional":true},
                {"field":"b","type":"bytes","optional":true},
                {"field":"note","type":"string","optional":true},
                {"field":"tags","type":"array","items":{"type":"string","optional":true},"optional":true}]},
            {"field":"op","type":"string","optional":false}]}"#;
        let payload = r#"{"before":null,"after":{"id":1,"price":"AJY=","n":{"scale":3,"value":"/w=="},
            "at":1704164645000120,"tz":"2024-06-30T21:59:59.500000Z","d":19782,"b":"3q2+7w==",
            "note":"__debezium_unavailable_value","tags":["a",null]},
            "source":{"connector":"postgresql","name":"p","db":"postgres","schema":"public","table":"t","txId":750,"lsn":24023128,"ts_ms":1700000000000,"snapshot":"false"},
            "op":"c","ts_ms":1}"#;
        let value = format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
        let mut d = Decoder::default();
        let Decoded::Event(ev) = d.decode("p.public.t", Some(br#"{"id":1}"#), Some(value.as_bytes()), at(3)).unwrap() else { panic!() };
        assert_eq!(ev.table.id, TableId::new("public", "t"));
        assert_eq!(ev.table.key, vec![0]);
        assert_eq!(ev.op, Op::Create);
        assert_eq!(
            ev.after.unwrap(),
            vec![
                Value::Int(1),
                Value::Decimal("1.50".into()),
                Value::Decimal("-0.001".into()),
                Value::Text("2024-01-02T03:04:05.00012".into()),
                Value::Text("2024-06-30T21:59:59.5Z".into()),
                Value::Text("2024-02-29".into()),
                Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
                Value::Unavailable,
                Value::Array(vec![Value::Text("a".into()), Value::Null]),
            ]
        );
        assert_eq!(ev.table.columns[1].data_type, DataType::Decimal { precision: Some(10), scale: Some(2) });
        assert_eq!(ev.source.tx_id, Some(750));
        assert_eq!(ev.source.lsn, Some(Lsn(24023128)));
        assert_eq!(ev.position, at(3));
        // The same schema again: the same plan.
        let Decoded::Event(again) = d.decode("p.public.t", Some(br#"{"id":1}"#), Some(value.as_bytes()), at(4)).unwrap() else { panic!() };
        assert!(Arc::ptr_eq(&ev.table, &again.table));
    }

    #[test]
    fn a_postgres_delete_with_nulls_beside_the_key_has_a_key_only_before_image() {
        let value = r#"{"before":{"id":5,"note":null},"after":null,"op":"d",
            "source":{"connector":"postgresql","name":"p","db":"postgres","schema":"public","table":"t"}}"#;
        let mut d = Decoder::default();
        let Decoded::Event(ev) = d.decode("p.public.t", Some(br#"{"id":5}"#), Some(value.as_bytes()), at(1)).unwrap() else { panic!() };
        assert_eq!(ev.before_image, BeforeImage::Key);
        assert_eq!(ev.before.unwrap(), vec![Value::Int(5), Value::Unavailable]);
        assert_eq!(ev.table.columns[1].data_type, DataType::String, "a schema-less null is text");
        // A field added: a new plan (a new schema version); the same fields again: the same plan.
        let more = br#"{"before":null,"after":{"id":6,"note":"x","added":1},"op":"c","source":{"connector":"postgresql","schema":"public","table":"t"}}"#;
        let Decoded::Event(a) = d.decode("p.public.t", None, Some(more), at(2)).unwrap() else { panic!() };
        let Decoded::Event(b) = d.decode("p.public.t", None, Some(more), at(3)).unwrap() else { panic!() };
        assert_eq!(a.table.columns.len(), 3);
        assert!(Arc::ptr_eq(&a.table, &b.table));
        let other = String::from_utf8(more.to_vec()).unwrap().replace("\"table\":\"t\"", "\"table\":\"u\"");
        let Decoded::Event(c) = d.decode("p.public.t", None, Some(other.as_bytes()), at(4)).unwrap() else { panic!() };
        assert_eq!(c.table.id, TableId::new("public", "u"), "another table on the same topic: its own plan");
    }

    #[test]
    fn mysql_forms_and_riffles_envelope() {
        let value = r#"{"schema":{"type":"struct","fields":[{"field":"after","type":"struct","fields":[
                {"field":"id","type":"int64","optional":false},
                {"field":"flags","type":"bytes","name":"io.debezium.data.Bits","parameters":{"length":"16"}},
                {"field":"at","type":"int64","name":"io.debezium.time.Timestamp"},
                {"field":"t","type":"int64","name":"io.debezium.time.MicroTime"},
                {"field":"dur","type":"int64","name":"io.debezium.time.MicroDuration"}]}]},
            "payload":{"before":null,"after":{"id":9,"flags":"AQI=","at":1704164645120,"t":-3020399000000,"dur":90061500000},
            "op":"r","before_image":"none",
            "source":{"connector":"mariadb","name":"m","db":"shop","table":"orders","file":"mysql-bin.000003","pos":1234,"row":2,"server_id":1,"snapshot":"first"}}}"#;
        let mut d = Decoder::default();
        let Decoded::Event(ev) = d.decode("m.shop.orders", None, Some(value.as_bytes()), at(1)).unwrap() else { panic!() };
        assert_eq!(ev.table.id, TableId::new("shop", "orders"));
        assert!(ev.table.key.is_empty());
        assert_eq!(
            ev.after.unwrap(),
            vec![
                Value::Int(9),
                Value::Bytes(vec![2, 1]),
                Value::Text("2024-01-02T03:04:05.120".into()),
                Value::Text("-838:59:59.000000".into()),
                Value::Text("P1DT1H1M1.5S".into()),
            ]
        );
        assert_eq!(ev.source.snapshot, SnapshotMark::First);
        assert_eq!(ev.source.binlog.unwrap().pos, 1234);
        assert_eq!(ev.source.connector, "mariadb");
    }

    #[test]
    fn messages_without_a_change_are_read_past_and_bad_ones_are_named() {
        let mut d = Decoder::default();
        assert!(matches!(d.decode("t", None, None, at(1)), Ok(Decoded::Skip("tombstone"))));
        let marker = br#"{"status":"BEGIN","id":"571:53195832","event_count":null,"ts_ms":1}"#;
        assert!(matches!(d.decode("t", None, Some(marker), at(2)), Ok(Decoded::Skip(_))));
        let err = d.decode("t", None, Some(b"not json"), at(3)).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = d.decode("t", None, Some(br#"{"op":"x","after":{}}"#), at(4)).unwrap_err();
        assert!(err.contains("unknown op"), "{err}");
        let bad = br#"{"op":"c","after":{"d":"x"},"schema_less":1}"#;
        assert!(d.decode("a.b.c", None, Some(bad), at(5)).is_ok(), "schema-less text");
    }

    /// Decoding never panics, whatever the bytes: valid messages with bytes
    /// changed or cut, and messages built from random JSON values under
    /// every Connect type the decoder knows.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        const TYPES: &[(&str, &str, &str)] = &[
            ("int32", "io.debezium.time.Date", ""),
            ("int64", "io.debezium.time.MicroTimestamp", ""),
            ("int64", "io.debezium.time.NanoTime", ""),
            ("int32", "io.debezium.time.Time", ""),
            ("int64", "io.debezium.time.MicroDuration", ""),
            ("bytes", "org.apache.kafka.connect.data.Decimal", r#","parameters":{"scale":"3"}"#),
            ("bytes", "org.apache.kafka.connect.data.Decimal", r#","parameters":{"scale":"99999999999"}"#),
            ("bytes", "io.debezium.data.Bits", ""),
            ("struct", "io.debezium.data.VariableScaleDecimal", ""),
            ("string", "io.debezium.time.ZonedTimestamp", ""),
            ("string", "io.debezium.data.Json", ""),
            ("bytes", "", ""),
            ("float", "", ""),
            ("double", "", ""),
            ("boolean", "", ""),
            ("array", "", r#","items":{"type":"int64"}"#),
            ("map", "", ""),
        ];

        fn json_value() -> impl Strategy<Value = Json> {
            let leaf = prop_oneof![
                Just(Json::Null),
                any::<bool>().prop_map(Json::Bool),
                any::<i64>().prop_map(Json::from),
                any::<u64>().prop_map(Json::from),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
                "[A-Za-z0-9+/=]{0,12}".prop_map(Json::String),
                ".{0,8}".prop_map(Json::String),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                    proptest::collection::btree_map("scale|value|[a-z]{1,3}", inner, 0..3)
                        .prop_map(|m| Json::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn on_random_values_under_every_type(t in 0..TYPES.len(), v in json_value(), op in "[rcudtmx]", pg in any::<bool>()) {
                let (ty, name, extra) = TYPES[t];
                let name = if name.is_empty() { String::new() } else { format!(r#","name":"{name}""#) };
                let schema = format!(r#"{{"type":"struct","fields":[{{"field":"after","type":"struct","fields":[{{"field":"c","type":"{ty}"{name}{extra}}}]}}]}}"#);
                let connector = if pg { "postgresql" } else { "mysql" };
                let payload = serde_json::json!({"op": op, "after": {"c": v}, "before": {"c": v}, "source": {"connector": connector, "table": "t"}});
                let msg = format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
                let _ = Decoder::default().decode("a.b.t", Some(br#"{"c":1}"#), Some(msg.as_bytes()), at(1));
                let plain = payload.to_string();
                let _ = Decoder::default().decode("a.b.t", Some(b"{"), Some(plain.as_bytes()), at(2));
            }

            #[test]
            fn on_damaged_messages(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
                let valid = br#"{"schema":{"type":"struct","fields":[{"field":"after","type":"struct","fields":[{"field":"id","type":"int32"},{"field":"p","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}},{"field":"d","type":"int32","name":"io.debezium.time.Date"}]}]},"payload":{"before":null,"after":{"id":1,"p":"AJY=","d":19782},"op":"c","source":{"connector":"postgresql","schema":"public","table":"t"}}}"#;
                let mut bytes = valid.to_vec();
                for (i, b) in flips {
                    let n = bytes.len();
                    bytes[i % n] = b;
                }
                bytes.truncate(cut % (bytes.len() + 1));
                let _ = Decoder::default().decode("a.b.t", Some(&bytes), Some(&bytes), at(1));
            }
        }
    }
}
