//! Debezium's value encodings (`value_encoding = "debezium"`, the Kafka
//! default): each column written as Debezium's Postgres or MySQL connector
//! writes it under the same handling modes, with the same Kafka Connect
//! schema (type, semantic name, parameters, optionality), and the envelope's
//! `source` block with each connector's fields.
//!
//! The choices, per riffle type, follow Debezium's type mapping tables:
//!
//! | riffle type | `*.handling.mode` / `time.precision.mode` | JSON value | Connect schema |
//! |---|---|---|---|
//! | decimal with scale | `precise` (default) | base64 of the unscaled two's-complement value | `bytes` `org.apache.kafka.connect.data.Decimal` |
//! | decimal without scale (Postgres `numeric`) | `precise` | `{"scale":s,"value":base64}` | `io.debezium.data.VariableScaleDecimal` |
//! | any decimal | `double` / `string` | number / text | `double` / `string` |
//! | date | adaptive modes / `connect` | days since 1970-01-01 | `io.debezium.time.Date` / `org.apache.kafka.connect.data.Date` |
//! | time(p) | `adaptive`: p ≤ 3 ms, else µs; `adaptive_time_microseconds`: µs; `connect`: ms | integer | `io.debezium.time.Time` / `MicroTime` / `org.apache.kafka.connect.data.Time` |
//! | timestamp(p) | `adaptive*`: p ≤ 3 ms, else µs; `connect`: ms | integer | `io.debezium.time.Timestamp` / `MicroTimestamp` / `org.apache.kafka.connect.data.Timestamp` |
//! | timestamptz, MySQL `timestamp` | — | ISO 8601 in UTC, `p` fraction digits | `io.debezium.time.ZonedTimestamp` |
//! | timetz | — | ISO 8601 in UTC | `io.debezium.time.ZonedTime` |
//! | interval | `numeric` (default) / `string` | µs (a month is 30.4375 days, as Debezium) / ISO 8601 | `io.debezium.time.MicroDuration` / `io.debezium.time.Interval` |
//! | bytes | `bytes` (default) / `base64` / `hex` | base64 / base64 / hex | `bytes` / `string` / `string` |
//! | MySQL `bit(n)`, n > 1 | — | base64 of the bits, little-endian | `io.debezium.data.Bits` |
//! | MySQL `bigint unsigned` | `long` (default) / `precise` | number / decimal | `int64` / `Decimal` |
//!
//! Where Debezium loses a value riffle keeps it, and says so
//! (`schemas/debezium.md`): a Postgres `numeric` NaN or infinity cannot be
//! written in the `precise` mode (Debezium writes null; riffle stops with an
//! error naming the fix, `decimal.handling.mode=string`), and a `bigint
//! unsigned` above 2^63-1 is written as its exact number in the `long` mode
//! (Debezium writes it wrapped to a negative number).

use base64::Engine;
use riffle_core::{BeforeImage, ChangeEvent, Column, DataType, Op, SinkError, TableSchema, Value};
use riffle_formats::file::{FileFormat, LineFormat};
use riffle_formats::temporal;
use riffle_formats::value::{write_int, write_json, write_json_str};
use riffle_formats::FormatError;
use serde_json::{json, Value as Json};

/// `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalMode {
    Precise,
    Double,
    String,
}

/// `time.precision.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    Adaptive,
    AdaptiveTimeMicroseconds,
    Connect,
}

/// `binary.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryMode {
    Bytes,
    Base64,
    Hex,
}

/// `interval.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalMode {
    Numeric,
    String,
}

/// `bigint.unsigned.handling.mode` (MySQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsignedMode {
    Long,
    Precise,
}

/// Debezium's handling modes, by their Debezium names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub decimal: DecimalMode,
    /// `None`: the connector's default (Postgres `adaptive`, MySQL
    /// `adaptive_time_microseconds`).
    pub time: Option<TimeMode>,
    pub binary: BinaryMode,
    pub interval: IntervalMode,
    pub unsigned: UnsignedMode,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            decimal: DecimalMode::Precise,
            time: None,
            binary: BinaryMode::Bytes,
            interval: IntervalMode::Numeric,
            unsigned: UnsignedMode::Long,
        }
    }
}

impl Modes {
    /// Sets one mode by its Debezium name; `Ok(false)` for a key that is
    /// not a mode, `Err` with the values it takes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, &'static str> {
        match key {
            "decimal.handling.mode" => {
                self.decimal = match value {
                    "precise" => DecimalMode::Precise,
                    "double" => DecimalMode::Double,
                    "string" => DecimalMode::String,
                    _ => return Err("precise, double or string"),
                }
            }
            "time.precision.mode" => {
                self.time = Some(match value {
                    "adaptive" => TimeMode::Adaptive,
                    "adaptive_time_microseconds" => TimeMode::AdaptiveTimeMicroseconds,
                    "connect" => TimeMode::Connect,
                    _ => return Err("adaptive, adaptive_time_microseconds or connect"),
                })
            }
            "binary.handling.mode" => {
                self.binary = match value {
                    "bytes" => BinaryMode::Bytes,
                    "base64" => BinaryMode::Base64,
                    "hex" => BinaryMode::Hex,
                    _ => return Err("bytes, base64 or hex"),
                }
            }
            "interval.handling.mode" => {
                self.interval = match value {
                    "numeric" => IntervalMode::Numeric,
                    "string" => IntervalMode::String,
                    _ => return Err("numeric or string"),
                }
            }
            "bigint.unsigned.handling.mode" => {
                self.unsigned = match value {
                    "long" => UnsignedMode::Long,
                    "precise" => UnsignedMode::Precise,
                    _ => return Err("long or precise"),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq)]
enum Enc {
    /// As riffle writes it: booleans, integers, floats, text.
    Same,
    /// The unscaled value at this scale, base64.
    Decimal {
        scale: u32,
    },
    /// `{"scale":…,"value":…}`.
    VariableDecimal,
    DecimalDouble,
    DecimalString,
    Binary(BinaryMode),
    /// MySQL `bit(n)`: the bits little-endian, as Java's `BitSet`.
    Bits,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    /// ISO 8601 in UTC with this many fraction digits.
    ZonedTimestamp {
        digits: usize,
    },
    ZonedTime,
    IntervalMicros,
    IntervalIso,
    /// Kafka Connect's `Time`: milliseconds within one day; a MySQL `TIME`
    /// outside it is null, as Debezium writes it (the mode's documented loss).
    ConnectTime,
    Array(Box<Enc>),
}

/// A table's columns as Debezium writes them, made once per schema version.
pub(crate) struct Plan {
    columns: Vec<Enc>,
    /// The Connect schemas of the columns (without `field` and `optional`).
    types: Vec<Json>,
    connector: &'static str,
}

/// The precision in a type's text: `3` in `timestamp(3) without time zone`.
fn precision(source_type: &str) -> Option<usize> {
    let open = source_type.find('(')?;
    let close = source_type[open..].find(')')? + open;
    source_type[open + 1..close].trim().parse().ok()
}

fn named(ty: &str, name: &str) -> Json {
    json!({"type": ty, "name": name, "version": 1})
}

/// A column's encoding and Connect schema.
fn column(c: &Column, dt: &DataType, connector: &str, modes: &Modes) -> (Enc, Json) {
    let mysql = connector != "postgresql";
    let time_mode = modes.time.unwrap_or(if mysql { TimeMode::AdaptiveTimeMicroseconds } else { TimeMode::Adaptive });
    // Postgres types without a precision keep microseconds; MySQL's keep whole seconds.
    let p = precision(&c.source_type).unwrap_or(if mysql { 0 } else { 6 });
    let plain = |ty: &str| (Enc::Same, json!({ "type": ty }));
    // MySQL's integer types as Debezium's MySQL connector maps them (by
    // their declared type: riffle widens unsigned ones further).
    if mysql && matches!(dt, DataType::Int16 | DataType::Int32 | DataType::Int64) && !c.source_type.starts_with("year") {
        let unsigned = c.source_type.contains("unsigned");
        let ty = match (c.source_type.split(['(', ' ']).next().unwrap_or(""), unsigned) {
            ("tinyint", _) | ("smallint", false) => "int16",
            ("smallint", true) | ("mediumint", _) | ("int" | "integer", false) => "int32",
            _ => "int64",
        };
        return plain(ty);
    }
    match dt {
        DataType::Bool => plain("boolean"),
        DataType::Int16 => plain("int16"),
        DataType::Int32 if mysql && c.source_type.starts_with("year") => (Enc::Same, named("int32", "io.debezium.time.Year")),
        DataType::Int32 => plain("int32"),
        DataType::Int64 => plain("int64"),
        DataType::UInt64 => match modes.unsigned {
            UnsignedMode::Long => plain("int64"),
            // Always a Decimal, whatever decimal.handling.mode says (as Debezium).
            UnsignedMode::Precise => decimal(Some(20), Some(0), &Modes { decimal: DecimalMode::Precise, ..*modes }),
        },
        DataType::Float32 => plain("float"),
        DataType::Float64 => plain("double"),
        DataType::Decimal { precision, scale } => decimal(*precision, *scale, modes),
        DataType::Bytes if mysql && c.source_type.starts_with("bit(") => {
            let mut s = named("bytes", "io.debezium.data.Bits");
            s["parameters"] = json!({ "length": p.to_string() });
            (Enc::Bits, s)
        }
        DataType::Bytes => match modes.binary {
            BinaryMode::Bytes => (Enc::Binary(BinaryMode::Bytes), json!({"type": "bytes"})),
            m => (Enc::Binary(m), json!({"type": "string"})),
        },
        DataType::Date if time_mode == TimeMode::Connect => {
            (Enc::Date, json!({"type": "int32", "name": "org.apache.kafka.connect.data.Date", "version": 1}))
        }
        DataType::Date => (Enc::Date, named("int32", "io.debezium.time.Date")),
        DataType::Time => match time_mode {
            TimeMode::Connect => (Enc::ConnectTime, json!({"type": "int32", "name": "org.apache.kafka.connect.data.Time", "version": 1})),
            TimeMode::Adaptive if p <= 3 => (Enc::TimeMillis, named("int32", "io.debezium.time.Time")),
            _ => (Enc::TimeMicros, named("int64", "io.debezium.time.MicroTime")),
        },
        DataType::Timestamp => match time_mode {
            TimeMode::Connect => {
                (Enc::TimestampMillis, json!({"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "version": 1}))
            }
            _ if p <= 3 => (Enc::TimestampMillis, named("int64", "io.debezium.time.Timestamp")),
            _ => (Enc::TimestampMicros, named("int64", "io.debezium.time.MicroTimestamp")),
        },
        DataType::TimestampTz => (Enc::ZonedTimestamp { digits: p }, named("string", "io.debezium.time.ZonedTimestamp")),
        DataType::TimeTz => (Enc::ZonedTime, named("string", "io.debezium.time.ZonedTime")),
        DataType::Interval => match modes.interval {
            IntervalMode::Numeric => (Enc::IntervalMicros, named("int64", "io.debezium.time.MicroDuration")),
            IntervalMode::String => (Enc::IntervalIso, named("string", "io.debezium.time.Interval")),
        },
        DataType::Uuid => (Enc::Same, named("string", "io.debezium.data.Uuid")),
        DataType::Json => (Enc::Same, named("string", "io.debezium.data.Json")),
        DataType::Enum => {
            let mut s = named("string", "io.debezium.data.Enum");
            if !c.labels.is_empty() {
                s["parameters"] = json!({ "allowed": c.labels.join(",") });
            }
            (Enc::Same, s)
        }
        DataType::String if mysql && c.source_type.starts_with("set(") => {
            let mut s = named("string", "io.debezium.data.EnumSet");
            s["parameters"] = json!({ "allowed": c.labels.join(",") });
            (Enc::Same, s)
        }
        DataType::Array(inner) => {
            let (enc, mut items) = column(c, inner, connector, modes);
            items["optional"] = json!(true);
            (Enc::Array(Box::new(enc)), json!({"type": "array", "items": items}))
        }
        DataType::String | DataType::Other(_) => plain("string"),
    }
}

fn decimal(precision: Option<u32>, scale: Option<u32>, modes: &Modes) -> (Enc, Json) {
    match (modes.decimal, scale) {
        (DecimalMode::Double, _) => (Enc::DecimalDouble, json!({"type": "double"})),
        (DecimalMode::String, _) => (Enc::DecimalString, json!({"type": "string"})),
        (DecimalMode::Precise, Some(scale)) => {
            let mut params = json!({ "scale": scale.to_string() });
            if let Some(p) = precision {
                params["connect.decimal.precision"] = json!(p.to_string());
            }
            (
                Enc::Decimal { scale },
                json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": params}),
            )
        }
        (DecimalMode::Precise, None) => (
            Enc::VariableDecimal,
            json!({
                "type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
                "doc": "Variable scaled decimal",
                "fields": [
                    {"type": "int32", "optional": false, "field": "scale"},
                    {"type": "bytes", "optional": false, "field": "value"}
                ]
            }),
        ),
    }
}

impl Plan {
    pub(crate) fn new(table: &TableSchema, connector: &'static str, modes: &Modes) -> Plan {
        let (columns, types) = table.columns.iter().map(|c| column(c, &c.data_type, connector, modes)).unzip();
        Plan { columns, types, connector }
    }

    fn field(&self, table: &TableSchema, i: usize, optional: bool) -> Json {
        let mut f = self.types[i].clone();
        f["optional"] = json!(optional);
        f["field"] = json!(table.columns[i].name);
        f
    }

    /// The key's Connect schema, `<topic>.Key`.
    pub(crate) fn key_schema(&self, table: &TableSchema, topic: &str) -> Json {
        let fields: Vec<Json> = table.key.iter().map(|&i| self.field(table, i, false)).collect();
        json!({"type": "struct", "fields": fields, "optional": false, "name": format!("{topic}.Key")})
    }

    /// The envelope's Connect schema, `<topic>.Envelope`.
    pub(crate) fn value_schema(&self, table: &TableSchema, topic: &str) -> Json {
        let fields: Vec<Json> = (0..table.columns.len()).map(|i| self.field(table, i, table.columns[i].nullable)).collect();
        let row =
            |name: &str| json!({"type": "struct", "fields": fields, "optional": true, "name": format!("{topic}.Value"), "field": name});
        let f = |ty: &str, optional: bool, name: &str| json!({"type": ty, "optional": optional, "field": name});
        let snapshot = json!({
            "type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
            "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
            "default": "false", "field": "snapshot"
        });
        let mut source = vec![
            f("string", false, "version"),
            f("string", false, "connector"),
            f("string", false, "name"),
            f("int64", false, "ts_ms"),
            snapshot,
            f("string", false, "db"),
            f("string", true, "sequence"),
            f("int64", true, "ts_us"),
            f("int64", true, "ts_ns"),
        ];
        let source_name = if self.connector == "postgresql" {
            source.extend([
                f("string", false, "schema"),
                f("string", false, "table"),
                f("int64", true, "txId"),
                f("int64", true, "lsn"),
                f("int64", true, "xmin"),
                f("string", true, "origin"),
                f("int64", true, "origin_lsn"),
            ]);
            "io.debezium.connector.postgresql.Source"
        } else {
            source.extend([
                f("string", true, "table"),
                f("int64", false, "server_id"),
                f("string", true, "gtid"),
                f("string", false, "file"),
                f("int64", false, "pos"),
                f("int32", false, "row"),
                f("int64", true, "thread"),
                f("string", true, "query"),
            ]);
            if self.connector == "mariadb" {
                "io.debezium.connector.mariadb.Source"
            } else {
                "io.debezium.connector.mysql.Source"
            }
        };
        json!({
            "type": "struct",
            "fields": [
                row("before"),
                row("after"),
                {"type": "struct", "fields": source, "optional": false, "name": source_name, "version": 1, "field": "source"},
                {"type": "struct", "fields": [
                    f("string", false, "id"), f("int64", false, "total_order"), f("int64", false, "data_collection_order")
                ], "optional": true, "name": "event.block", "version": 1, "field": "transaction"},
                f("string", false, "op"),
                f("int64", true, "ts_ms"),
                f("int64", true, "ts_us"),
                f("int64", true, "ts_ns")
            ],
            "optional": false,
            "name": format!("{topic}.Envelope"),
            "version": 2
        })
    }

    /// The key object; false for a table without a key or an event without a row.
    pub(crate) fn write_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<bool, SinkError> {
        riffle_formats::jsonl::key_object_with(event, out, |i, v, out| self.write_value(event, i, v, out))
    }

    /// `key_only`: the row is a key-only before image, whose other columns
    /// Debezium writes as null (elsewhere an unsent value is its placeholder).
    fn write_row(&self, event: &ChangeEvent, row: Option<&Vec<Value>>, key_only: bool, out: &mut Vec<u8>) -> Result<(), SinkError> {
        let Some(row) = row else {
            out.extend_from_slice(b"null");
            return Ok(());
        };
        out.push(b'{');
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&event.table.columns[i].name, out);
            out.push(b':');
            if *v == Value::Unavailable && key_only {
                out.extend_from_slice(b"null");
            } else if *v == Value::Unavailable {
                self.write_unavailable(i, out);
            } else {
                self.write_value(event, i, v, out)?;
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// A value the source did not send (an unchanged TOASTed Postgres
    /// column): Debezium's `unavailable.value.placeholder` where the column
    /// holds text or bytes, null elsewhere.
    fn write_unavailable(&self, i: usize, out: &mut Vec<u8>) {
        match (&self.columns[i], &self.types[i]["type"]) {
            (Enc::Binary(BinaryMode::Hex), _) => write_json_str(&hex(UNAVAILABLE.as_bytes()), out),
            (Enc::Binary(_), _) => write_json_str(&base64::engine::general_purpose::STANDARD.encode(UNAVAILABLE), out),
            (Enc::Same, Json::String(t)) if t == "string" => write_json_str(UNAVAILABLE, out),
            _ => out.extend_from_slice(b"null"),
        }
    }

    fn write_value(&self, event: &ChangeEvent, i: usize, v: &Value, out: &mut Vec<u8>) -> Result<(), SinkError> {
        encode(&self.columns[i], v, out).map_err(|why| {
            SinkError::definite(format!(
                "the event at position {} cannot be written with Debezium's encodings: column {} of {} {why}",
                event.position, event.table.columns[i].name, event.table.id
            ))
        })
    }

    /// The envelope: `before`, `after`, `source`, `transaction`, `op`, `ts_ms`, `ts_us`, `ts_ns`.
    /// `order`: the event's `total_order` and `data_collection_order` in
    /// its transaction when Debezium's `provide.transaction.metadata` is on
    /// (the `transaction` block is null otherwise, as Debezium writes it).
    pub(crate) fn write_envelope(&self, event: &ChangeEvent, order: Option<(u64, u64)>, out: &mut Vec<u8>) -> Result<(), SinkError> {
        out.extend_from_slice(b"{\"before\":");
        // Debezium writes no before image for an update without the whole
        // row (Postgres' default replica identity).
        let before = event.before.as_ref().filter(|_| !(event.op == Op::Update && event.before_image == BeforeImage::Key));
        self.write_row(event, before, event.before_image == BeforeImage::Key, out)?;
        out.extend_from_slice(b",\"after\":");
        self.write_row(event, event.after.as_ref(), false, out)?;
        out.extend_from_slice(b",\"source\":");
        self.write_source(event, out);
        out.extend_from_slice(b",\"transaction\":");
        match (transaction_id(event), order) {
            (Some(id), Some((total, in_collection))) => {
                out.extend_from_slice(b"{\"id\":");
                write_json_str(&id, out);
                out.extend_from_slice(b",\"total_order\":");
                write_int(total, out);
                out.extend_from_slice(b",\"data_collection_order\":");
                write_int(in_collection, out);
                out.push(b'}');
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(event.op.code().as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        write_int(event.ts_ms, out);
        out.extend_from_slice(b",\"ts_us\":");
        write_int(event.ts_ms * 1000, out);
        out.extend_from_slice(b",\"ts_ns\":");
        write_int(event.ts_ms * 1_000_000, out);
        out.push(b'}');
        Ok(())
    }

    fn write_source(&self, event: &ChangeEvent, out: &mut Vec<u8>) {
        let s = &event.source;
        let opt_int = |v: Option<u64>, out: &mut Vec<u8>| match v {
            Some(n) => write_int(n, out),
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"version\":\"");
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\",\"connector\":");
        write_json_str(s.connector, out);
        out.extend_from_slice(b",\"name\":");
        write_json_str(&s.name, out);
        out.extend_from_slice(b",\"ts_ms\":");
        write_int(s.ts_ms, out);
        out.extend_from_slice(b",\"snapshot\":\"");
        out.extend_from_slice(s.snapshot.name().as_bytes());
        out.extend_from_slice(b"\",\"db\":");
        write_json_str(&s.db, out);
        out.extend_from_slice(b",\"sequence\":");
        match s.lsn {
            // Debezium's Postgres `sequence`: the last commit's LSN and this change's, as text.
            Some(lsn) if self.connector == "postgresql" => {
                let seq = format!("[null,\"{}\"]", lsn.0);
                write_json_str(&seq, out);
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"ts_us\":");
        write_int(s.ts_us, out);
        out.extend_from_slice(b",\"ts_ns\":");
        write_int(s.ts_us.saturating_mul(1000), out);
        if self.connector == "postgresql" {
            out.extend_from_slice(b",\"schema\":");
            write_json_str(&event.table.id.schema, out);
            out.extend_from_slice(b",\"table\":");
            write_json_str(&event.table.id.name, out);
            out.extend_from_slice(b",\"txId\":");
            opt_int(s.tx_id, out);
            out.extend_from_slice(b",\"lsn\":");
            opt_int(s.lsn.map(|l| l.0), out);
            out.extend_from_slice(b",\"xmin\":null,\"origin\":null,\"origin_lsn\":null}");
        } else {
            out.extend_from_slice(b",\"table\":");
            write_json_str(&event.table.id.name, out);
            let b = s.binlog.as_ref();
            out.extend_from_slice(b",\"server_id\":");
            write_int(b.map_or(0, |b| if event.is_snapshot() { 0 } else { b.server_id }), out);
            out.extend_from_slice(b",\"gtid\":");
            match b.and_then(|b| b.gtid.as_deref()) {
                Some(g) => write_json_str(g, out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"file\":");
            write_json_str(b.map_or("", |b| &b.file), out);
            out.extend_from_slice(b",\"pos\":");
            write_int(b.map_or(0, |b| b.pos), out);
            out.extend_from_slice(b",\"row\":");
            write_int(b.map_or(0, |b| b.row), out);
            out.extend_from_slice(b",\"thread\":null,\"query\":null}");
        }
    }
}

/// Writes `v` as `enc` says; `Err` says why it cannot be.
fn encode(enc: &Enc, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if matches!(v, Value::Null | Value::Unavailable) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let text = || match v {
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => Ok(s.as_str()),
        _ => Err(format!("holds a {} where text was expected", riffle_formats::value::describe(v))),
    };
    let int = |n: Option<i64>, out: &mut Vec<u8>, what: &str| match n {
        Some(n) => {
            write_int(n, out);
            Ok(())
        }
        None => Err(format!("holds {}, not a {what}", riffle_formats::value::describe(v))),
    };
    match enc {
        Enc::Same => write_json(v, out),
        Enc::Decimal { scale } => {
            let t = text()?;
            let be = temporal::decimal_unscaled_be(t, *scale).ok_or_else(|| not_precise(v))?;
            write_json_str(&base64::engine::general_purpose::STANDARD.encode(be), out);
        }
        Enc::VariableDecimal => {
            let t = text()?;
            let scale = t.split_once('.').map_or(0, |(_, f)| f.len()) as u32;
            let be = temporal::decimal_unscaled_be(t, scale).ok_or_else(|| not_precise(v))?;
            out.extend_from_slice(b"{\"scale\":");
            write_int(scale, out);
            out.extend_from_slice(b",\"value\":");
            write_json_str(&base64::engine::general_purpose::STANDARD.encode(be), out);
            out.push(b'}');
        }
        Enc::DecimalDouble => {
            let t = text()?;
            let f: f64 = match riffle_formats::value::non_finite(t) {
                Some(f) => f,
                None => t.parse().map_err(|_| format!("holds {}, not a decimal", riffle_formats::value::describe(v)))?,
            };
            write_json(&Value::Float64(f), out);
        }
        Enc::DecimalString => write_json_str(text()?, out),
        Enc::Binary(mode) => {
            let Value::Bytes(b) = v else { return Err(format!("holds {}, not bytes", riffle_formats::value::describe(v))) };
            match mode {
                BinaryMode::Hex => write_json_str(&hex(b), out),
                _ => write_json_str(&base64::engine::general_purpose::STANDARD.encode(b), out),
            }
        }
        Enc::Bits => {
            let Value::Bytes(b) = v else { return Err(format!("holds {}, not bytes", riffle_formats::value::describe(v))) };
            let le: Vec<u8> = b.iter().rev().copied().collect();
            write_json_str(&base64::engine::general_purpose::STANDARD.encode(le), out);
        }
        Enc::Date => int(temporal::date_days(text()?), out, "date")?,
        Enc::TimeMillis => int(temporal::time_micros(text()?).map(|us| us.div_euclid(1000)), out, "time")?,
        Enc::TimeMicros => int(temporal::time_micros(text()?), out, "time")?,
        Enc::TimestampMillis => int(temporal::timestamp_micros(text()?).map(|us| us.div_euclid(1000)), out, "timestamp")?,
        Enc::TimestampMicros => int(temporal::timestamp_micros(text()?), out, "timestamp")?,
        Enc::ZonedTimestamp { digits } => write_json_str(&zoned_timestamp(text()?, *digits), out),
        Enc::ZonedTime => {
            write_json_str(&zoned_time(text()?).ok_or_else(|| format!("holds {}, not a time", riffle_formats::value::describe(v)))?, out)
        }
        Enc::IntervalMicros => int(interval_micros(text()?), out, "interval")?,
        Enc::IntervalIso => write_json_str(
            &interval_iso(text()?).ok_or_else(|| format!("holds {}, not an interval", riffle_formats::value::describe(v)))?,
            out,
        ),
        Enc::ConnectTime => match temporal::time_micros(text()?) {
            Some(us) if (0..86_400_000_000).contains(&us) => write_int(us / 1000, out),
            Some(_) => out.extend_from_slice(b"null"),
            None => return Err(format!("holds {}, not a time", riffle_formats::value::describe(v))),
        },
        Enc::Array(inner) => {
            let Value::Array(items) = v else { return Err(format!("holds {}, not an array", riffle_formats::value::describe(v))) };
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                encode(inner, item, out)?;
            }
            out.push(b']');
        }
    }
    Ok(())
}

/// Debezium's transaction id of a change: Postgres `<txId>:<the change's
/// LSN>` (so it differs from one change of a transaction to the next, as
/// Debezium writes it); MySQL/MariaDB riffle's (the GTID, else
/// `file:pos`). `None` for snapshot reads.
pub(crate) fn transaction_id(event: &ChangeEvent) -> Option<String> {
    match (event.source.connector, event.source.tx_id, event.source.lsn) {
        _ if event.is_snapshot() => None,
        ("postgresql", Some(tx), Some(lsn)) => Some(format!("{tx}:{}", lsn.0)),
        _ => riffle_formats::transaction_id(event),
    }
}

/// The id of Debezium's END marker: Postgres `<txId>:<commit LSN>`.
pub(crate) fn end_transaction_id(event: &ChangeEvent) -> Option<String> {
    match (event.source.tx_id, &event.position) {
        (Some(tx), riffle_core::Position::Postgres(p)) if !event.is_snapshot() => Some(format!("{tx}:{}", p.lsn.0)),
        _ => transaction_id(event),
    }
}

/// Kafka Connect schemas of the transaction topic's keys and values.
pub(crate) fn transaction_key_schema() -> Json {
    json!({"type": "struct", "fields": [{"type": "string", "optional": false, "field": "id"}], "optional": false,
           "name": "io.debezium.connector.common.TransactionMetadataKey", "version": 1})
}

pub(crate) fn transaction_value_schema() -> Json {
    json!({"type": "struct", "fields": [
        {"type": "string", "optional": false, "field": "status"},
        {"type": "string", "optional": false, "field": "id"},
        {"type": "int64", "optional": true, "field": "event_count"},
        {"type": "array", "items": {"type": "struct", "fields": [
            {"type": "string", "optional": false, "field": "data_collection"},
            {"type": "int64", "optional": false, "field": "event_count"}
        ], "optional": true, "name": "event.collection", "version": 1}, "optional": true, "field": "data_collections"},
        {"type": "int64", "optional": false, "field": "ts_ms"}
    ], "optional": false, "name": "io.debezium.connector.common.TransactionMetadataValue", "version": 1})
}

/// Debezium's `unavailable.value.placeholder` default.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn not_precise(v: &Value) -> String {
    format!(
        "holds {}, which decimal.handling.mode=precise cannot represent (Debezium would write null and lose it); \
         set decimal.handling.mode=string on the Kafka sink to keep it",
        riffle_formats::value::describe(v)
    )
}

/// `2000-01-01T00:00:00.5Z` with `digits` fraction digits (`…00.500000Z`
/// for 6); values that are not a UTC timestamp (`infinity`) as they are.
fn zoned_timestamp(text: &str, digits: usize) -> String {
    let Some(body) = text.strip_suffix('Z') else { return text.to_string() };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut s = String::with_capacity(whole.len() + digits + 2);
    s.push_str(whole);
    if digits > 0 {
        s.push('.');
        s.extend(frac.chars().chain(std::iter::repeat('0')).take(digits));
    }
    s.push('Z');
    s
}

/// `12:34:56.5+05:30` → `07:04:56.5Z`: the time in UTC, its fraction as
/// written (Java's `ISO_OFFSET_TIME`).
fn zoned_time(text: &str) -> Option<String> {
    let split = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(split);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let oh: i64 = parts.next()?.parse().ok()?;
    let om: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let os: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    let (whole, frac) = time.split_once('.').unwrap_or((time, ""));
    let secs = temporal::time_micros(whole)? / 1_000_000;
    let utc = (secs - sign * (oh * 3600 + om * 60 + os)).rem_euclid(86_400);
    let mut s = format!("{:02}:{:02}:{:02}", utc / 3600, utc / 60 % 60, utc % 60);
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s.push('Z');
    Some(s)
}

/// An ISO 8601 duration's parts (`P1Y2M3DT4H5M6.789S`; Postgres writes
/// each part with its own sign and leaves zero parts out): years, months,
/// days, hours, minutes as integers, the seconds as written.
struct IntervalParts {
    ymdhm: [i64; 5],
    seconds: String,
}

fn interval_parts(text: &str) -> Option<IntervalParts> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut p = IntervalParts { ymdhm: [0; 5], seconds: "0".into() };
    for (part, units) in [(date, "YMWD"), (time, "HMS")] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || matches!(c, '-' | '.' | '+') {
                num.push(c);
                continue;
            }
            if !units.contains(c) || num.is_empty() {
                return None;
            }
            if (units, c) == ("HMS", 'S') {
                num.parse::<f64>().ok()?;
                p.seconds = std::mem::take(&mut num);
                continue;
            }
            let n: i64 = num.parse().ok()?;
            num.clear();
            match (units, c) {
                ("YMWD", 'Y') => p.ymdhm[0] = n,
                ("YMWD", 'M') => p.ymdhm[1] = n,
                ("YMWD", 'W') => p.ymdhm[2] += n * 7,
                ("YMWD", 'D') => p.ymdhm[2] += n,
                (_, 'H') => p.ymdhm[3] = n,
                _ => p.ymdhm[4] = n,
            }
        }
        if !num.is_empty() {
            return None;
        }
    }
    Some(p)
}

/// The duration in microseconds, a month counting 365.25 / 12 days,
/// computed as Debezium's `MicroDuration` does (in floating point, then
/// truncated: `25 days 4.772974 s` is 2160004772973).
fn interval_micros(text: &str) -> Option<i64> {
    let p = interval_parts(text)?;
    let [y, mo, d, h, mi] = p.ymdhm.map(|n| n as f64);
    let seconds: f64 = p.seconds.parse().ok()?;
    let days = (y * 12.0 + mo) * (365.25 / 12.0) + d;
    let total = ((days * 24.0 + h) * 60.0 + mi) * 60.0 + seconds;
    // Truncated, as Java's `(long)` cast in Debezium's MicroDuration.
    Some((total * 1e6) as i64)
}

/// Debezium's `interval.handling.mode=string` form: every part written,
/// `P0Y0M-1DT0H0M-1S`.
fn interval_iso(text: &str) -> Option<String> {
    let p = interval_parts(text)?;
    let [y, mo, d, h, mi] = p.ymdhm;
    let mut secs = p.seconds.trim_start_matches('+').to_string();
    if secs.contains('.') {
        secs = secs.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if secs.is_empty() || secs == "-" || secs == "-0" {
        secs = "0".into();
    }
    Some(format!("P{y}Y{mo}M{d}DT{h}H{mi}M{secs}S"))
}

/// Debezium envelopes as JSON lines: how `riffle verify` writes the
/// source's rows to compare them with a topic written in Debezium's
/// encodings (both sides then read back the same way).
pub fn debezium_lines(modes: Modes) -> impl FileFormat {
    LineFormat {
        name: "JSON in Debezium's encodings",
        make: move || {
            let mut plan = None;
            move |event: &ChangeEvent, out: &mut Vec<u8>| {
                let plan = plan.get_or_insert_with(|| Plan::new(&event.table, event.source.connector, &modes));
                plan.write_envelope(event, None, out).map_err(|e| FormatError::Unrepresentable { what: e.to_string() })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_texts_give_their_precision() {
        assert_eq!(precision("timestamp(3) without time zone"), Some(3));
        assert_eq!(precision("timestamp with time zone"), None);
        assert_eq!(precision("datetime(6)"), Some(6));
    }

    #[test]
    fn temporal_texts_become_debeziums_forms() {
        assert_eq!(zoned_timestamp("2000-01-01T00:00:00Z", 6), "2000-01-01T00:00:00.000000Z");
        assert_eq!(zoned_timestamp("2000-01-01T00:00:00.5Z", 3), "2000-01-01T00:00:00.500Z");
        assert_eq!(zoned_timestamp("2000-01-01T00:00:01Z", 0), "2000-01-01T00:00:01Z");
        assert_eq!(zoned_timestamp("infinity", 6), "infinity");
        assert_eq!(zoned_time("12:34:56.5+05:30").as_deref(), Some("07:04:56.5Z"));
        assert_eq!(zoned_time("00:00:00-08").as_deref(), Some("08:00:00Z"));
        assert_eq!(zoned_time("23:00:00.250000+00").as_deref(), Some("23:00:00.25Z"));
        assert_eq!(interval_micros("P1Y2M3DT4H5M6.789S"), Some(37_091_106_789_000));
        assert_eq!(interval_micros("P-1DT-1S"), Some(-86_401_000_000));
        assert_eq!(interval_micros("P25DT4.772974S"), Some(2_160_004_772_973));
        assert_eq!(interval_micros("PT0S"), Some(0));
        assert_eq!(interval_micros("P1X"), None);
        assert_eq!(interval_iso("P-1DT-1S").as_deref(), Some("P0Y0M-1DT0H0M-1S"));
        assert_eq!(interval_iso("P1Y2M3DT4H5M6.789000S").as_deref(), Some("P1Y2M3DT4H5M6.789S"));
        assert_eq!(interval_iso("PT0S").as_deref(), Some("P0Y0M0DT0H0M0S"));
    }

    #[test]
    fn values_that_a_mode_cannot_hold_are_an_error_not_a_loss() {
        let mut out = Vec::new();
        let err = encode(&Enc::Decimal { scale: 2 }, &Value::Decimal("NaN".into()), &mut out).unwrap_err();
        assert!(err.contains("decimal.handling.mode=string"), "{err}");
        encode(&Enc::Decimal { scale: 2 }, &Value::Decimal("-1.5".into()), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"/2o=\"");
        let mut out = Vec::new();
        encode(&Enc::VariableDecimal, &Value::Decimal("3.14".into()), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"scale":2,"value":"ATo="}"#);
        let mut out = Vec::new();
        encode(&Enc::Bits, &Value::Bytes(vec![0x00, 0x01]), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\"AQA=\"");
    }
}
