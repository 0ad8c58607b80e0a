//! Kafka Connect schemas and values in Avro, as Confluent's `AvroConverter`
//! (its `AvroData`) writes them: how Debezium's messages look on a topic
//! written with the Avro converter. riffle makes Debezium's Connect schema
//! and JSON payload ([`crate::debezium`]), then turns both into Avro here.
//!
//! The schema mapping (checked against the real converter's output,
//! `tests/golden/debezium/<db>/schemas-avro.json`): a struct becomes a
//! record named by the struct's name (namespace = its dotted prefix) with
//! `connect.name`, `connect.version` and `connect.doc`; an optional field
//! is a union with null first and default null, or, when it has a default,
//! the type first and that default; `int8`/`int16` are `int` with
//! `connect.type`; a named, versioned or parameterised type carries
//! `connect.name`, `connect.version`, `connect.parameters` and
//! `connect.default`; Connect's `Decimal`, `Date`, `Time` and `Timestamp`
//! add Avro's logical types; a record already defined is referred to by
//! name. Schema names are made legal Avro names (`schema.name.adjustment.mode=avro`).

use riffle_formats::avro::{avro_name, avro_namespace, write_bytes, write_long as long};
use serde_json::{json, Map, Value as Json};

/// The Avro schema of a Connect schema.
pub fn avro_schema(connect: &Json) -> Json {
    let mut defined = Vec::new();
    convert(connect, &mut defined, "")
}

/// `namespace`: the enclosing record's, for references by short name.
fn convert(s: &Json, defined: &mut Vec<String>, namespace: &str) -> Json {
    let ty = s["type"].as_str().unwrap_or("string");
    let name = s["name"].as_str();
    let t = match ty {
        "struct" => {
            let full = name.unwrap_or("ConnectDefault");
            let (ns, short) = match full.rsplit_once('.') {
                Some((ns, short)) => (avro_namespace(ns), avro_name(short)),
                None => (String::new(), avro_name(full)),
            };
            let fullname = if ns.is_empty() { short.clone() } else { format!("{ns}.{short}") };
            if defined.contains(&fullname) {
                return Json::String(if ns == namespace { short } else { fullname });
            }
            defined.push(fullname);
            let fields: Vec<Json> = s["fields"].as_array().into_iter().flatten().map(|f| field(f, defined, &ns)).collect();
            let mut r = Map::new();
            r.insert("type".into(), json!("record"));
            r.insert("name".into(), json!(short));
            if ns != namespace || namespace.is_empty() {
                r.insert("namespace".into(), json!(ns));
            }
            r.insert("fields".into(), Json::Array(fields));
            if let Some(doc) = s.get("doc") {
                r.insert("connect.doc".into(), doc.clone());
            }
            if let Some(v) = s.get("version") {
                r.insert("connect.version".into(), v.clone());
            }
            if let Some(n) = name {
                r.insert("connect.name".into(), json!(n));
            }
            return Json::Object(r);
        }
        "array" => {
            let items = &s["items"];
            let inner = convert(items, defined, namespace);
            let inner = if items["optional"].as_bool().unwrap_or(false) { json!(["null", inner]) } else { inner };
            return json!({"type": "array", "items": inner});
        }
        "int8" | "int16" => {
            let mut m = Map::new();
            m.insert("type".into(), json!("int"));
            m.insert("connect.type".into(), json!(ty));
            return annotate(m, s);
        }
        "int32" => "int",
        "int64" => "long",
        "float" | "float32" => "float",
        "double" | "float64" => "double",
        "boolean" => "boolean",
        "bytes" => "bytes",
        _ => "string",
    };
    let mut m = Map::new();
    m.insert("type".into(), json!(t));
    if name == Some("org.apache.kafka.connect.data.Decimal") {
        let p = &s["parameters"];
        let scale: u64 = p["scale"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        let precision: u64 = p["connect.decimal.precision"].as_str().and_then(|v| v.parse().ok()).unwrap_or(64);
        m.insert("scale".into(), json!(scale));
        m.insert("precision".into(), json!(precision));
    }
    let plain = s.get("name").is_none() && s.get("version").is_none() && s.get("parameters").is_none() && s.get("default").is_none();
    if plain {
        return json!(t);
    }
    let mut out = annotate(m, s);
    let logical = match name {
        Some("org.apache.kafka.connect.data.Decimal") => Some("decimal"),
        Some("org.apache.kafka.connect.data.Date") => Some("date"),
        Some("org.apache.kafka.connect.data.Time") => Some("time-millis"),
        Some("org.apache.kafka.connect.data.Timestamp") => Some("timestamp-millis"),
        _ => None,
    };
    if let (Some(l), Json::Object(o)) = (logical, &mut out) {
        o.insert("logicalType".into(), json!(l));
    }
    out
}

/// Adds the `connect.*` properties of a named, versioned or parameterised type.
fn annotate(mut m: Map<String, Json>, s: &Json) -> Json {
    if let Some(v) = s.get("version") {
        m.insert("connect.version".into(), v.clone());
    }
    if let Some(p) = s.get("parameters") {
        m.insert("connect.parameters".into(), p.clone());
    }
    if let Some(d) = s.get("default") {
        m.insert("connect.default".into(), d.clone());
    }
    if let Some(n) = s.get("name") {
        m.insert("connect.name".into(), n.clone());
    }
    Json::Object(m)
}

fn field(f: &Json, defined: &mut Vec<String>, namespace: &str) -> Json {
    let t = convert(f, defined, namespace);
    let name = f["field"].as_str().unwrap_or("");
    if !f["optional"].as_bool().unwrap_or(false) {
        return json!({"name": name, "type": t});
    }
    match f.get("default") {
        Some(d) if !d.is_null() => json!({"name": name, "type": [t, "null"], "default": d}),
        _ => json!({"name": name, "type": ["null", t], "default": null}),
    }
}

/// Why a value does not fit its schema.
#[derive(Debug)]
pub enum Mismatch {
    /// riffle made both: a bug.
    Bug(String),
    /// A value riffle's JSON carries but Avro under this schema cannot: a
    /// multi-dimensional Postgres array in an array of the element type.
    Unsupported(String),
}

impl Mismatch {
    fn within(self, field: &str) -> Mismatch {
        match self {
            Mismatch::Bug(why) => Mismatch::Bug(format!("{field}: {why}")),
            Mismatch::Unsupported(why) => Mismatch::Unsupported(format!("{field}: {why}")),
        }
    }
}

/// Appends the Avro binary encoding of `value` (Debezium's JSON payload)
/// under Connect schema `connect`, as the Avro schema [`avro_schema`] makes.
pub fn encode(connect: &Json, value: &Json, out: &mut Vec<u8>) -> Result<(), Mismatch> {
    let ty = connect["type"].as_str().unwrap_or("string");
    let bad = || Mismatch::Bug(format!("a {} value does not fit Connect type {ty}", kind(value)));
    match ty {
        "struct" => {
            for f in connect["fields"].as_array().into_iter().flatten() {
                let name = f["field"].as_str().unwrap_or("");
                let v = value.get(name).unwrap_or(&Json::Null);
                if f["optional"].as_bool().unwrap_or(false) {
                    let null_first = f.get("default").is_none_or(Json::is_null);
                    let branch = match (v.is_null(), null_first) {
                        (true, true) | (false, false) => 0,
                        _ => 1,
                    };
                    long(branch, out);
                    if v.is_null() {
                        continue;
                    }
                } else if v.is_null() {
                    return Err(Mismatch::Bug(format!("field {name} is required and null")));
                }
                encode(f, v, out).map_err(|e| e.within(name))?;
            }
        }
        "array" => {
            let items = value.as_array().ok_or_else(bad)?;
            let item_schema = &connect["items"];
            let optional = item_schema["optional"].as_bool().unwrap_or(false);
            if !items.is_empty() {
                long(items.len() as i64, out);
                for item in items {
                    // Postgres lets any array column hold several dimensions.
                    if item.is_array() && item_schema["type"] != "array" {
                        return Err(Mismatch::Unsupported(
                            "a multi-dimensional array, which Avro's array of the element type cannot hold; write this table \
                             as JSON (riffle's reader takes the nested arrays back) or leave the column out ([[tables]] columns)"
                                .into(),
                        ));
                    }
                    if optional {
                        long(if item.is_null() { 0 } else { 1 }, out);
                        if item.is_null() {
                            continue;
                        }
                    }
                    encode(item_schema, item, out)?;
                }
            }
            long(0, out);
        }
        "int8" | "int16" | "int32" | "int64" => match (value.as_i64(), value.as_u64()) {
            (Some(n), _) => long(n, out),
            // An unsigned bigint above i64::MAX (written exactly in JSON): the same bits.
            (None, Some(n)) => long(n as i64, out),
            _ => return Err(bad()),
        },
        "float" | "float32" => out.extend_from_slice(&(float(value).ok_or_else(bad)? as f32).to_le_bytes()),
        "double" | "float64" => out.extend_from_slice(&float(value).ok_or_else(bad)?.to_le_bytes()),
        "boolean" => out.push(u8::from(value.as_bool().ok_or_else(bad)?)),
        "bytes" => {
            use base64::Engine;
            let b64 = value.as_str().ok_or_else(bad)?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
            write_bytes(&bytes, out);
        }
        _ => write_bytes(value.as_str().ok_or_else(bad)?.as_bytes(), out),
    }
    Ok(())
}

/// A JSON number, or the strings riffle writes for non-finite floats.
fn float(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => riffle_formats::value::non_finite(s),
        _ => None,
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_schemas_become_the_converters_avro() {
        let key = json!({"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "id"}], "optional": false, "name": "golden.dbz.t.Key"});
        assert_eq!(
            avro_schema(&key),
            json!({"type": "record", "name": "Key", "namespace": "golden.dbz.t", "fields": [{"name": "id", "type": "int"}], "connect.name": "golden.dbz.t.Key"})
        );
        let dec = json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "5"}});
        let a = avro_schema(&dec);
        assert_eq!((a["scale"].clone(), a["precision"].clone(), a["logicalType"].clone()), (json!(2), json!(5), json!("decimal")));
        let mut out = Vec::new();
        encode(
            &json!({"type": "struct", "name": "x.Y", "fields": [
                {"field": "a", "type": "int16", "optional": true},
                {"field": "s", "type": "string", "optional": true, "default": "false"},
                {"field": "l", "type": "array", "items": {"type": "int32", "optional": true}, "optional": false}
            ]}),
            &json!({"a": -1, "s": null, "l": [1, null]}),
            &mut out,
        )
        .unwrap();
        // a: branch 1, -1; s: null second (branch 1); l: 2 items (1: branch 1, value 1; null: branch 0), end.
        assert_eq!(out, [2, 1, 2, 4, 2, 2, 0, 0]);
        assert_eq!(avro_name("2-topic"), "_2_topic");
    }

    #[test]
    fn a_multi_dimensional_array_is_refused_naming_its_field_not_called_a_bug() {
        let schema = json!({"type": "struct", "name": "x.Y", "fields": [
            {"field": "m", "type": "array", "items": {"type": "int32", "optional": true}, "optional": true}
        ]});
        let err = encode(&schema, &json!({"m": [[1, 2], [3, 4]]}), &mut Vec::new()).unwrap_err();
        let Mismatch::Unsupported(why) = err else { panic!("{err:?}") };
        assert!(why.starts_with("m: a multi-dimensional array") && why.contains("leave the column out"), "{why}");
        assert!(matches!(encode(&schema, &json!({"m": ["x"]}), &mut Vec::new()), Err(Mismatch::Bug(_))));
    }
}
