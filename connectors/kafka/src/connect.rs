//! Kafka Connect's JSON schemas (`JsonConverter` with `schemas.enable`):
//! the `{"schema": …, "payload": …}` wrapper that Kafka Connect sinks read.
//!
//! Field types follow riffle's JSON value mapping (`schemas/README.md`):
//! exact decimals, dates, times and timestamps are strings, named with the
//! Debezium semantic type that describes that string (`io.debezium.time.
//! IsoTimestamp`, `ZonedTimestamp`, …) as Debezium does with
//! `time.precision.mode=isostring` and `decimal.handling.mode=string`.

use riffle_core::{DataType, TableSchema};
use serde_json::{json, Value as Json};

fn field_type(dt: &DataType) -> Json {
    let named = |name: &str| json!({"type": "string", "name": name});
    match dt {
        DataType::Bool => json!({"type": "boolean"}),
        DataType::Int16 => json!({"type": "int16"}),
        DataType::Int32 => json!({"type": "int32"}),
        // Values above i64::MAX do not fit Connect's int64; see schemas/README.md.
        DataType::Int64 | DataType::UInt64 => json!({"type": "int64"}),
        DataType::Float32 => json!({"type": "float"}),
        DataType::Float64 => json!({"type": "double"}),
        DataType::Bytes => json!({"type": "bytes"}),
        DataType::Date => named("io.debezium.time.IsoDate"),
        DataType::Time => named("io.debezium.time.IsoTime"),
        DataType::TimeTz => named("io.debezium.time.ZonedTime"),
        DataType::Timestamp => named("io.debezium.time.IsoTimestamp"),
        DataType::TimestampTz => named("io.debezium.time.ZonedTimestamp"),
        DataType::Interval => named("io.debezium.time.Interval"),
        DataType::Uuid => named("io.debezium.data.Uuid"),
        DataType::Json => named("io.debezium.data.Json"),
        DataType::Enum => named("io.debezium.data.Enum"),
        DataType::Array(inner) => {
            let mut items = field_type(inner);
            items["optional"] = json!(true);
            json!({"type": "array", "items": items})
        }
        DataType::Decimal { .. } | DataType::String | DataType::Other(_) => json!({"type": "string"}),
    }
}

fn column_field(name: &str, dt: &DataType, optional: bool) -> Json {
    let mut f = field_type(dt);
    f["field"] = json!(name);
    f["optional"] = json!(optional);
    f
}

/// The key schema: the event's key columns, named `<topic>.Key`.
pub fn key_schema(table: &TableSchema, topic: &str) -> Json {
    let fields: Vec<Json> = table.key.iter().map(|&i| column_field(&table.columns[i].name, &table.columns[i].data_type, false)).collect();
    json!({"type": "struct", "name": format!("{topic}.Key"), "optional": false, "fields": fields})
}

fn opt(field: &str, t: &str) -> Json {
    json!({"field": field, "type": t, "optional": true})
}

fn req(field: &str, t: &str) -> Json {
    json!({"field": field, "type": t, "optional": false})
}

/// The value schema: Debezium's envelope named `<topic>.Envelope`, with the
/// row struct `<topic>.Value`, riffle's source block and `before_image`.
pub fn value_schema(table: &TableSchema, topic: &str) -> Json {
    let row_fields: Vec<Json> = table.columns.iter().map(|c| column_field(&c.name, &c.data_type, true)).collect();
    let row =
        |field: &str| json!({"field": field, "type": "struct", "name": format!("{topic}.Value"), "optional": true, "fields": row_fields});
    json!({
        "type": "struct", "name": format!("{topic}.Envelope"), "optional": false,
        "fields": [
            row("before"),
            row("after"),
            req("op", "string"),
            opt("ts_ms", "int64"),
            {"field": "source", "type": "struct", "name": "io.riffle.Source", "optional": false, "fields": [
                req("version", "string"), req("connector", "string"), req("name", "string"), req("db", "string"),
                req("schema", "string"), req("table", "string"), req("snapshot", "string"), opt("txId", "int64"),
                opt("lsn", "int64"), opt("server_id", "int64"), opt("file", "string"), opt("pos", "int64"),
                opt("row", "int32"), opt("gtid", "string"), req("ts_ms", "int64"), req("ts_us", "int64"),
                req("position", "string")
            ]},
            {"field": "transaction", "type": "struct", "name": "event.block", "optional": true, "fields": [
                req("id", "string"), req("total_order", "int64")
            ]},
            opt("before_image", "string")
        ]
    })
}

/// `{"schema":<schema>,"payload":` — the bytes a wrapped message starts
/// with; the payload and a closing `}` follow.
pub fn wrapper_prefix(schema: &Json) -> Vec<u8> {
    let mut out = b"{\"schema\":".to_vec();
    out.extend_from_slice(schema.to_string().as_bytes());
    out.extend_from_slice(b",\"payload\":");
    out
}
