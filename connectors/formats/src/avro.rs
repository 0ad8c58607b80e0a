//! Avro: schemas derived from a table's columns, and riffle's own encoder of
//! Avro's binary datum (the format is small and encoding straight from
//! [`Value`] avoids building a generic value tree per row). Readers check
//! the output with the `apache-avro` crate in the tests.
//!
//! The type mapping is written down in `schemas/README.md`. In short: every
//! column is a union `["null", T]` with default `null` (so that a column
//! added by a DDL is a BACKWARD-compatible schema change), with Avro's
//! logical types where one fits: `decimal` (bytes, with the source's
//! precision and scale), `date`, `time-micros`, `timestamp-micros`
//! (timestamps with a time zone, UTC), `local-timestamp-micros` (without),
//! `uuid`. Unsigned 64-bit integers are `decimal(20,0)`.

use crate::{temporal, UnfitValue};
use riffle_core::{ChangeEvent, DataType, TableSchema, Value};
use serde_json::{json, Value as Json};

/// An Avro name: letters, digits and `_`, not starting with a digit. Other
/// characters become `_` (as Debezium's `field.name.adjustment.mode=avro`).
pub fn avro_name(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A dotted Avro namespace from a topic or path (`shop.public.orders`).
pub fn avro_namespace(s: &str) -> String {
    s.split('.').map(avro_name).collect::<Vec<_>>().join(".")
}

/// The Avro type of a non-null value of `dt`.
pub fn column_type(dt: &DataType) -> Json {
    match dt {
        DataType::Bool => json!("boolean"),
        DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::UInt64 => json!({"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0}),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Decimal { precision: Some(p), scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": scale.unwrap_or(0)})
        }
        DataType::Bytes => json!("bytes"),
        DataType::Date => json!({"type": "int", "logicalType": "date"}),
        DataType::Time => json!({"type": "long", "logicalType": "time-micros"}),
        DataType::Timestamp => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
        DataType::TimestampTz => json!({"type": "long", "logicalType": "timestamp-micros"}),
        DataType::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        DataType::Array(inner) => json!({"type": "array", "items": ["null", column_type(inner)]}),
        _ => json!("string"),
    }
}

/// The types Avro (and Parquet) carry as text: unconstrained decimals (any
/// scale, NaN), times with an offset, intervals, JSON documents, enum labels
/// that may change, unmapped types.
pub fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Decimal { precision: None, .. }
            | DataType::String
            | DataType::TimeTz
            | DataType::Interval
            | DataType::Json
            | DataType::Enum
            | DataType::Other(_)
    )
}

/// The Avro field names of a table's columns: [`avro_name`], made unique
/// with `_2`, `_3`… when two columns clean up to the same name.
pub fn field_names(table: &TableSchema) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(table.columns.len());
    for c in &table.columns {
        let base = avro_name(&c.name);
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        names.push(name);
    }
    names
}

/// A record of the table's columns, each `["null", T]` with default null.
pub fn row_schema(table: &TableSchema, name: &str, namespace: &str) -> Json {
    let fields: Vec<Json> = table
        .columns
        .iter()
        .zip(field_names(table))
        .map(|(c, n)| json!({"name": n, "type": ["null", column_type(&c.data_type)], "default": null, "doc": c.source_type}))
        .collect();
    json!({"type": "record", "name": name, "namespace": namespace, "fields": fields})
}

/// The key record (the event's key columns, not null), or `None` for a
/// table without a key (its messages have a null key).
pub fn key_schema(table: &TableSchema, namespace: &str) -> Option<Json> {
    if table.key.is_empty() {
        return None;
    }
    let names = field_names(table);
    let fields: Vec<Json> =
        table.key.iter().map(|&i| json!({"name": names[i], "type": column_type(&table.columns[i].data_type)})).collect();
    Some(json!({"type": "record", "name": "Key", "namespace": namespace, "fields": fields}))
}

fn opt(t: &str) -> Json {
    json!(["null", t])
}

/// The `source` block: one record for both connector families; the
/// binlog fields are null for Postgres, `txId`/`lsn` for MySQL.
fn source_schema() -> Json {
    json!({
        "type": "record", "name": "Source", "namespace": "io.riffle",
        "fields": [
            {"name": "version", "type": "string"},
            {"name": "connector", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "ts_ms", "type": "long"},
            {"name": "ts_us", "type": "long"},
            {"name": "snapshot", "type": "string"},
            {"name": "db", "type": "string"},
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            {"name": "txId", "type": opt("long"), "default": null},
            {"name": "lsn", "type": opt("long"), "default": null},
            {"name": "server_id", "type": opt("long"), "default": null},
            {"name": "file", "type": opt("string"), "default": null},
            {"name": "pos", "type": opt("long"), "default": null},
            {"name": "row", "type": opt("int"), "default": null},
            {"name": "gtid", "type": opt("string"), "default": null},
            {"name": "position", "type": "string"}
        ]
    })
}

/// Debezium's envelope as an Avro record named `<namespace>.Envelope`, with
/// the row record `<namespace>.Value` in `before` and `after`, plus
/// riffle's `before_image` and `unavailable` (the names of columns the
/// source did not send: they read as null but were not NULL).
pub fn envelope_schema(table: &TableSchema, namespace: &str) -> Json {
    let row = row_schema(table, "Value", namespace);
    json!({
        "type": "record", "name": "Envelope", "namespace": namespace,
        "fields": [
            {"name": "before", "type": ["null", row], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "source", "type": source_schema()},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": opt("long"), "default": null},
            {"name": "transaction", "type": ["null", {
                "type": "record", "name": "block", "namespace": "event",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "total_order", "type": "long"}
                ]
            }], "default": null},
            {"name": "before_image", "type": "string"},
            {"name": "unavailable", "type": {"type": "array", "items": "string"}, "default": []}
        ]
    })
}

/// Why a value could not be written in Avro's type for its column.
#[derive(Debug, thiserror::Error)]
#[error("column {column} holds {value} which Avro's {avro_type} cannot represent")]
pub struct Unrepresentable {
    pub column: String,
    /// The value's kind and size ([`UnfitValue`]), never the value.
    pub value: String,
    pub avro_type: String,
}

impl Unrepresentable {
    /// `unfit`, a value of `table`'s column `c`.
    fn new(table: &TableSchema, c: &riffle_core::Column, unfit: UnfitValue) -> Self {
        Unrepresentable { column: format!("{}.{}", table.id, c.name), value: unfit.shown, avro_type: column_type(&c.data_type).to_string() }
    }
}

pub fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

fn write_opt_long(v: Option<i64>, out: &mut Vec<u8>) {
    match v {
        Some(n) => {
            out.push(2); // union branch 1
            write_long(n, out);
        }
        None => out.push(0),
    }
}

fn write_opt_str(v: Option<&str>, out: &mut Vec<u8>) {
    match v {
        Some(s) => {
            out.push(2);
            write_bytes(s.as_bytes(), out);
        }
        None => out.push(0),
    }
}

/// Writes a non-null value of `dt`; `Err` names what did not fit.
pub fn write_value(v: &Value, dt: &DataType, out: &mut Vec<u8>) -> Result<(), UnfitValue> {
    let bad = || UnfitValue::of(v);
    match (dt, v) {
        (DataType::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
        (DataType::Int16 | DataType::Int32 | DataType::Int64, Value::Int(i)) => write_long(*i, out),
        (DataType::Int16 | DataType::Int32 | DataType::Int64, Value::UInt(u)) => write_long(i64::try_from(*u).map_err(|_| bad())?, out),
        (DataType::UInt64, Value::UInt(u)) => write_bytes(&temporal::decimal_unscaled_be(&u.to_string(), 0).ok_or_else(bad)?, out),
        (DataType::UInt64, Value::Int(i)) => write_bytes(&temporal::decimal_unscaled_be(&i.to_string(), 0).ok_or_else(bad)?, out),
        (DataType::Float32, Value::Float32(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (DataType::Float64, Value::Float64(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (DataType::Float64, Value::Float32(f)) => out.extend_from_slice(&f64::from(*f).to_le_bytes()),
        (DataType::Decimal { precision: Some(_), scale }, Value::Decimal(s) | Value::Text(s)) => {
            write_bytes(&temporal::decimal_unscaled_be(s, scale.unwrap_or(0)).ok_or_else(bad)?, out)
        }
        (DataType::Bytes, Value::Bytes(b)) => write_bytes(b, out),
        (DataType::Date, Value::Text(s)) => write_long(temporal::date_days(s).ok_or_else(bad)?, out),
        (DataType::Time, Value::Text(s)) => write_long(temporal::time_micros(s).ok_or_else(bad)?, out),
        (DataType::Timestamp | DataType::TimestampTz, Value::Text(s)) => write_long(temporal::timestamp_micros(s).ok_or_else(bad)?, out),
        (DataType::Array(inner), Value::Array(items)) => {
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for item in items {
                    write_nullable(item, inner, out)?;
                }
            }
            out.push(0);
        }
        (_, Value::Text(s) | Value::Decimal(s) | Value::Json(s)) if is_text(dt) || *dt == DataType::Uuid => write_bytes(s.as_bytes(), out),
        // A value in the text-typed columns that is not text (say an
        // integer in a column riffle maps to text): its JSON form.
        (_, v) if is_text(dt) => {
            let mut text = Vec::new();
            crate::value::write_json(v, &mut text);
            write_bytes(&text, out);
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// A `["null", T]` union value. Unavailable values are written as null
/// (the envelope's `unavailable` lists them).
pub fn write_nullable(v: &Value, dt: &DataType, out: &mut Vec<u8>) -> Result<(), UnfitValue> {
    match v {
        Value::Null | Value::Unavailable => out.push(0),
        v => {
            out.push(2);
            write_value(v, dt, out)?;
        }
    }
    Ok(())
}

fn write_row(table: &TableSchema, row: &[Value], out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    for (v, c) in row.iter().zip(&table.columns) {
        write_nullable(v, &c.data_type, out).map_err(|unfit| Unrepresentable::new(table, c, unfit))?;
    }
    Ok(())
}

fn write_opt_row(table: &TableSchema, row: Option<&Vec<Value>>, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    match row {
        Some(r) => {
            out.push(2);
            write_row(table, r, out)
        }
        None => {
            out.push(0);
            Ok(())
        }
    }
}

/// The key datum (the row's key columns), or `None` when the table
/// has no key or the event no row (truncates).
pub fn encode_key(event: &ChangeEvent, out: &mut Vec<u8>) -> Result<bool, Unrepresentable> {
    let table = &*event.table;
    let Some(row) = event.row() else { return Ok(false) };
    if table.key.is_empty() {
        return Ok(false);
    }
    for &i in &table.key {
        let c = &table.columns[i];
        write_value(&row[i], &c.data_type, out).map_err(|unfit| Unrepresentable::new(table, c, unfit))?;
    }
    Ok(true)
}

/// The envelope datum matching [`envelope_schema`].
pub fn encode_envelope(event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
    let table = &*event.table;
    let s = &event.source;
    write_opt_row(table, event.before.as_ref(), out)?;
    write_opt_row(table, event.after.as_ref(), out)?;
    write_bytes(env!("CARGO_PKG_VERSION").as_bytes(), out);
    write_bytes(s.connector.as_bytes(), out);
    write_bytes(s.name.as_bytes(), out);
    write_long(s.ts_ms, out);
    write_long(s.ts_us, out);
    write_bytes(if event.is_snapshot() { b"true" } else { b"false" }, out);
    write_bytes(s.db.as_bytes(), out);
    write_bytes(table.id.schema.as_bytes(), out);
    write_bytes(table.id.name.as_bytes(), out);
    write_opt_long(s.tx_id.map(|t| t as i64), out);
    write_opt_long(s.lsn.map(|l| l.0 as i64), out);
    let b = s.binlog.as_ref();
    write_opt_long(b.map(|b| i64::from(b.server_id)), out);
    write_opt_str(b.map(|b| &*b.file), out);
    write_opt_long(b.map(|b| b.pos as i64), out);
    write_opt_long(b.map(|b| i64::from(b.row)), out);
    write_opt_str(b.and_then(|b| b.gtid.as_deref()), out);
    let mut pos = Vec::with_capacity(32);
    event.position.write_key(&mut pos);
    write_bytes(&pos, out);
    write_bytes(event.op.code().as_bytes(), out);
    write_opt_long(Some(event.ts_ms), out);
    match crate::transaction_id(event) {
        Some(id) => {
            out.push(2);
            write_bytes(id.as_bytes(), out);
            write_long(event.position.seq() as i64, out);
        }
        None => out.push(0),
    }
    write_bytes(event.before_image.name().as_bytes(), out);
    let unavailable: Vec<&str> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let missing = |r: Option<&Vec<Value>>| r.is_some_and(|r| r[*i] == Value::Unavailable);
            missing(event.after.as_ref()) || (event.before_image != riffle_core::BeforeImage::Key && missing(event.before.as_ref()))
        })
        .map(|(_, c)| c.name.as_str())
        .collect();
    if !unavailable.is_empty() {
        write_long(unavailable.len() as i64, out);
        for n in unavailable {
            write_bytes(n.as_bytes(), out);
        }
    }
    out.push(0);
    Ok(())
}
