//! Avro messages (Confluent's wire format: a zero byte, the schema's
//! registry id, the datum) turned into the Kafka Connect JSON form
//! [`super::decode`] reads: the writer's schema into a Connect schema, the
//! datum into its JSON payload.
//!
//! The schema mapping inverts Confluent's AvroData (what Debezium's Avro
//! converter and riffle's `value_encoding = "debezium"` write): a type's
//! `connect.name`, `connect.parameters` and `connect.type` give its Connect
//! type back. Avro's own logical types stand in where those are missing
//! (riffle's Avro mapping): `decimal` (with its scale), `date`,
//! `time-millis`/`time-micros`, `local-timestamp-*` and `timestamp-*` (UTC).
//! The schema is parsed from its JSON text here, because the `apache-avro`
//! crate keeps no custom attributes on primitive types; the datum is read
//! with `apache-avro`.

use base64::Engine;
use riffle_formats::value::non_finite_text;
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

/// A writer schema, ready to read datums with.
pub struct AvroPlan {
    pub schema: apache_avro::Schema,
    /// The Connect schema of the value, as JSON text.
    pub connect: String,
}

impl AvroPlan {
    pub fn new(text: &str) -> Result<AvroPlan, String> {
        let schema = apache_avro::Schema::parse_str(text).map_err(|e| format!("its Avro schema does not parse ({e})"))?;
        let json: Json = serde_json::from_str(text).map_err(|e| format!("its Avro schema is not JSON ({e})"))?;
        let mut named = HashMap::new();
        collect_named(&json, "", &mut named);
        let connect = connect_type(&json, &named, "", 0)?.0;
        Ok(AvroPlan { schema, connect: connect.to_string() })
    }

    /// Reads one datum into Connect's JSON payload form.
    pub fn payload(&self, datum: &[u8]) -> Result<Json, String> {
        let mut reader = datum;
        let value =
            apache_avro::from_avro_datum(&self.schema, &mut reader, None).map_err(|e| format!("its Avro datum does not read ({e})"))?;
        to_json(value)
    }
}

/// The full name of a named type (`record`, `enum`, `fixed`).
fn full_name(t: &Map<String, Json>, namespace: &str) -> (String, String) {
    let name = t.get("name").and_then(Json::as_str).unwrap_or("");
    let ns = t.get("namespace").and_then(Json::as_str).unwrap_or(namespace);
    if name.contains('.') || ns.is_empty() {
        (name.to_string(), name.rsplit_once('.').map_or(ns.to_string(), |(n, _)| n.to_string()))
    } else {
        (format!("{ns}.{name}"), ns.to_string())
    }
}

/// Every named type of the schema, by full name (records referred to by name later).
fn collect_named(s: &Json, namespace: &str, out: &mut HashMap<String, Json>) {
    match s {
        Json::Array(items) => items.iter().for_each(|i| collect_named(i, namespace, out)),
        Json::Object(t) => {
            let mut ns = namespace.to_string();
            if matches!(t.get("type").and_then(Json::as_str), Some("record" | "enum" | "fixed")) {
                let (full, inner_ns) = full_name(t, namespace);
                out.insert(full, s.clone());
                ns = inner_ns;
            }
            for f in t.get("fields").and_then(Json::as_array).into_iter().flatten() {
                collect_named(&f["type"], &ns, out);
            }
            for k in ["items", "values", "type"] {
                if let Some(inner) = t.get(k).filter(|v| !v.is_string()) {
                    collect_named(inner, &ns, out);
                }
            }
        }
        _ => {}
    }
}

/// The Connect schema of an Avro type, and whether it is optional (a
/// union with null).
fn connect_type(s: &Json, named: &HashMap<String, Json>, namespace: &str, depth: usize) -> Result<(Json, bool), String> {
    if depth > 32 {
        return Err("its Avro schema nests deeper than 32 levels".into());
    }
    match s {
        Json::Array(branches) => {
            let others: Vec<&Json> = branches.iter().filter(|b| b.as_str() != Some("null")).collect();
            match others.as_slice() {
                [one] => Ok((connect_type(one, named, namespace, depth + 1)?.0, others.len() < branches.len())),
                _ => Err("a union of several types, which no Connect schema is".into()),
            }
        }
        Json::String(name) => match name.as_str() {
            "null" | "boolean" | "int" | "long" | "float" | "double" | "bytes" | "string" => {
                connect_type(&json!({ "type": name }), named, namespace, depth + 1)
            }
            _ => {
                let full = if name.contains('.') || namespace.is_empty() { name.clone() } else { format!("{namespace}.{name}") };
                let t =
                    named.get(&full).or_else(|| named.get(name)).ok_or_else(|| format!("its Avro schema names an unknown type {name}"))?;
                connect_type(t, named, namespace, depth + 1)
            }
        },
        Json::Object(t) => {
            let ty = match t.get("type") {
                Some(Json::String(ty)) => ty.as_str(),
                Some(inner) => return connect_type(inner, named, namespace, depth + 1),
                None => return Err("an Avro type without `type`".into()),
            };
            let logical = t.get("logicalType").and_then(Json::as_str);
            let mut out = Map::new();
            let connect_ty = match ty {
                "record" => {
                    let (_, ns) = full_name(t, namespace);
                    let mut fields = Vec::new();
                    for f in t.get("fields").and_then(Json::as_array).into_iter().flatten() {
                        let (mut c, optional) = connect_type(&f["type"], named, &ns, depth + 1)?;
                        c["field"] = f["name"].clone();
                        c["optional"] = json!(optional);
                        fields.push(c);
                    }
                    out.insert("fields".into(), Json::Array(fields));
                    "struct"
                }
                "array" => {
                    let (items, optional) = connect_type(t.get("items").unwrap_or(&Json::Null), named, namespace, depth + 1)?;
                    let mut items = items;
                    items["optional"] = json!(optional);
                    out.insert("items".into(), items);
                    "array"
                }
                "int" => t.get("connect.type").and_then(Json::as_str).unwrap_or("int32"),
                "long" => "int64",
                "float" => "float",
                "double" => "double",
                "boolean" => "boolean",
                "string" | "enum" => "string",
                "bytes" | "fixed" => "bytes",
                "map" => return Err("an Avro map, which riffle's change events never hold".into()),
                other => return Err(format!("an Avro type {other:?}")),
            };
            out.insert("type".into(), json!(connect_ty));
            let name = t.get("connect.name").and_then(Json::as_str).map(str::to_string).or_else(|| match (ty, logical) {
                ("bytes" | "fixed", Some("decimal")) => Some("org.apache.kafka.connect.data.Decimal".into()),
                ("int", Some("date")) => Some("org.apache.kafka.connect.data.Date".into()),
                ("int", Some("time-millis")) => Some("org.apache.kafka.connect.data.Time".into()),
                ("long", Some("time-micros")) => Some("io.debezium.time.MicroTime".into()),
                ("long", Some("local-timestamp-millis")) => Some("io.debezium.time.Timestamp".into()),
                ("long", Some("local-timestamp-micros")) => Some("io.debezium.time.MicroTimestamp".into()),
                ("long", Some("timestamp-millis")) => Some("riffle.UtcTimestampMillis".into()),
                ("long", Some("timestamp-micros")) => Some("riffle.UtcTimestampMicros".into()),
                ("string", Some("uuid")) => Some("io.debezium.data.Uuid".into()),
                ("record", _) => t.get("name").and_then(Json::as_str).map(str::to_string),
                _ => None,
            });
            if let Some(n) = name {
                out.insert("name".into(), json!(n));
            }
            let mut params = t.get("connect.parameters").and_then(Json::as_object).cloned().unwrap_or_default();
            if logical == Some("decimal") && !params.contains_key("scale") {
                let scale = t.get("scale").and_then(Json::as_u64).unwrap_or(0);
                params.insert("scale".into(), json!(scale.to_string()));
                if let Some(p) = t.get("precision").and_then(Json::as_u64) {
                    params.insert("connect.decimal.precision".into(), json!(p.to_string()));
                }
            }
            if ty == "enum" && !params.contains_key("allowed") {
                if let Some(symbols) = t.get("symbols").and_then(Json::as_array) {
                    let labels: Vec<&str> = symbols.iter().filter_map(Json::as_str).collect();
                    params.insert("allowed".into(), json!(labels.join(",")));
                    out.insert("name".into(), json!("io.debezium.data.Enum"));
                }
            }
            if !params.is_empty() {
                out.insert("parameters".into(), Json::Object(params));
            }
            Ok((Json::Object(out), false))
        }
        other => Err(format!("an Avro type {other}")),
    }
}

/// An Avro value in Connect's JSON form.
fn to_json(v: apache_avro::types::Value) -> Result<Json, String> {
    use apache_avro::types::Value as A;
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    let float = |f: f64| serde_json::Number::from_f64(f).map_or_else(|| Json::String(non_finite_text(f).into()), Json::Number);
    Ok(match v {
        A::Null => Json::Null,
        A::Boolean(b) => Json::Bool(b),
        A::Int(n) | A::Date(n) | A::TimeMillis(n) => json!(n),
        A::Long(n)
        | A::TimeMicros(n)
        | A::TimestampMillis(n)
        | A::TimestampMicros(n)
        | A::TimestampNanos(n)
        | A::LocalTimestampMillis(n)
        | A::LocalTimestampMicros(n)
        | A::LocalTimestampNanos(n) => json!(n),
        A::Float(f) => float(f64::from(f)),
        A::Double(f) => float(f),
        A::String(s) | A::Enum(_, s) => Json::String(s),
        A::Uuid(u) => Json::String(u.to_string()),
        A::Bytes(b) | A::Fixed(_, b) => b64(&b),
        A::Decimal(d) => {
            let be: Vec<u8> = Vec::<u8>::try_from(&d).map_err(|e| format!("a decimal that does not read ({e})"))?;
            b64(&be)
        }
        A::BigDecimal(d) => Json::String(d.to_string()),
        A::Union(_, inner) => to_json(*inner)?,
        A::Array(items) => Json::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        A::Map(m) => Json::Object(m.into_iter().map(|(k, v)| Ok((k, to_json(v)?))).collect::<Result<_, String>>()?),
        A::Record(fields) => Json::Object(fields.into_iter().map(|(k, v)| Ok((k, to_json(v)?))).collect::<Result<_, String>>()?),
        A::Duration(_) => return Err("an Avro duration, which riffle's change events never hold".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debeziums_avro_schema_becomes_its_connect_schema_and_datums_its_payload() {
        let text = r#"{"type":"record","name":"Envelope","namespace":"p.public.t","fields":[
            {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
                {"name":"id","type":"int"},
                {"name":"price","type":["null",{"type":"bytes","scale":2,"precision":10,"connect.version":1,
                    "connect.parameters":{"scale":"2","connect.decimal.precision":"10"},
                    "connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
                {"name":"at","type":["null",{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}],"default":null},
                {"name":"small","type":["null",{"type":"int","connect.type":"int16"}],"default":null},
                {"name":"tz","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null}]}],"default":null},
            {"name":"after","type":["null","Value"],"default":null},
            {"name":"op","type":"string"}]}"#;
        let plan = AvroPlan::new(text).unwrap();
        let connect: Json = serde_json::from_str(&plan.connect).unwrap();
        let after = &connect["fields"][1];
        assert_eq!(after["field"], "after");
        assert_eq!(after["fields"][1]["name"], "org.apache.kafka.connect.data.Decimal");
        assert_eq!(after["fields"][1]["parameters"]["scale"], "2");
        assert_eq!(after["fields"][2]["name"], "io.debezium.time.MicroTimestamp");
        assert_eq!(after["fields"][3]["type"], "int16");
        assert_eq!(after["fields"][4]["name"], "riffle.UtcTimestampMicros");
        // A datum: before null, after {1, 1.50, 5, 7, 9}, op "c".
        use apache_avro::types::Value as A;
        let value = A::Record(vec![
            ("before".into(), A::Union(0, Box::new(A::Null))),
            (
                "after".into(),
                A::Union(
                    1,
                    Box::new(A::Record(vec![
                        ("id".into(), A::Int(1)),
                        ("price".into(), A::Union(1, Box::new(A::Decimal(apache_avro::Decimal::from(vec![0x00, 0x96]))))),
                        ("at".into(), A::Union(1, Box::new(A::Long(5)))),
                        ("small".into(), A::Union(1, Box::new(A::Int(7)))),
                        ("tz".into(), A::Union(1, Box::new(A::TimestampMicros(9)))),
                    ])),
                ),
            ),
            ("op".into(), A::String("c".into())),
        ]);
        let datum = apache_avro::to_avro_datum(&plan.schema, value).unwrap();
        let payload = plan.payload(&datum).unwrap();
        assert_eq!(payload, json!({"before": null, "after": {"id": 1, "price": "AJY=", "at": 5, "small": 7, "tz": 9}, "op": "c"}));
        assert!(plan.payload(&datum[..3]).is_err(), "a cut datum is an error");
        assert!(AvroPlan::new(r#"{"type":"record","name":"x","fields":[{"name":"m","type":{"type":"map","values":"int"}}]}"#).is_err());
    }
}
