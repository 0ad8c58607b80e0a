//! Postgres types: which [`DataType`] each maps to, and how its text form
//! (the same in `COPY` text output and in pgoutput) becomes a [`Value`].
//!
//! Both the snapshot session and the walsender run with the settings in
//! [`crate::SESSION_OPTIONS`] (ISO dates, ISO 8601 intervals, UTC, shortest
//! exact floats, hex bytea), so a value reads the same whichever path it
//! took. Types without a specific mapping keep their text form
//! ([`DataType::Other`]); the full table is in `schemas/postgres-types.md`.

use crate::error::{Col, PgError};
use riffle_core::{DataType, Value};
use std::collections::HashMap;

/// What riffle knows of one `pg_type` row.
#[derive(Debug, Clone)]
struct TypeRow {
    name: String,
    namespace: String,
    typtype: u8,
    category: u8,
    elem: u32,
    base: u32,
    /// An enum's labels, in order.
    labels: Vec<String>,
}

/// Resolves type OIDs to [`DataType`]s, reading `pg_type` on demand.
#[derive(Default)]
pub struct TypeCache {
    rows: HashMap<u32, TypeRow>,
}

impl TypeCache {
    /// Makes sure `oids`, their element types and domain base types are known.
    pub async fn load(&mut self, client: &tokio_postgres::Client, oids: &[u32]) -> Result<(), PgError> {
        let mut wanted: Vec<u32> = oids.iter().copied().filter(|o| !self.rows.contains_key(o)).collect();
        while !wanted.is_empty() {
            wanted.sort_unstable();
            wanted.dedup();
            let rows = client
                .query(
                    "SELECT t.oid, t.typname::text, n.nspname::text, t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype, \
                            ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) \
                     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(PgError::session("reading pg_type"))?;
            let mut next = Vec::new();
            for r in rows {
                let oid: u32 = r.col(0)?;
                let row = TypeRow {
                    name: r.col(1)?,
                    namespace: r.col(2)?,
                    typtype: r.col::<String>(3)?.bytes().next().unwrap_or(b'b'),
                    category: r.col::<String>(4)?.bytes().next().unwrap_or(b'U'),
                    elem: r.col(5)?,
                    base: r.col(6)?,
                    labels: r.col(7)?,
                };
                for dep in [row.elem, row.base] {
                    if dep != 0 && !self.rows.contains_key(&dep) {
                        next.push(dep);
                    }
                }
                self.rows.insert(oid, row);
            }
            wanted = next;
        }
        Ok(())
    }

    /// The labels of enum type `oid` (through domains); empty for other types.
    pub fn labels(&self, oid: u32) -> Vec<String> {
        let mut oid = oid;
        for _ in 0..MAX_TYPE_DEPTH {
            match self.rows.get(&oid) {
                Some(row) if row.typtype == b'd' && row.base != 0 => oid = row.base,
                Some(row) => return row.labels.clone(),
                None => break,
            }
        }
        Vec::new()
    }

    /// The [`DataType`] of a column of type `oid` with modifier `typmod`.
    pub fn data_type(&self, oid: u32, typmod: i32) -> DataType {
        self.data_type_within(oid, typmod, MAX_TYPE_DEPTH)
    }

    /// `depth` bounds the domains and element types followed: `pg_type` as
    /// the server reports it could loop.
    fn data_type_within(&self, oid: u32, typmod: i32, depth: usize) -> DataType {
        let Some(row) = self.rows.get(&oid).filter(|_| depth > 0) else {
            return DataType::Other(format!("oid {oid}"));
        };
        if row.typtype == b'd' && row.base != 0 {
            return self.data_type_within(row.base, typmod, depth - 1);
        }
        if row.typtype == b'e' {
            return DataType::Enum;
        }
        // int2vector/oidvector print without braces, and box[] separates
        // elements with ';': keep their text form.
        let odd_array = matches!(row.name.as_str(), "int2vector" | "oidvector" | "_box");
        if row.category == b'A' && row.elem != 0 && !odd_array {
            return DataType::Array(Box::new(self.data_type_within(row.elem, -1, depth - 1)));
        }
        if odd_array {
            return DataType::Other(row.name.clone());
        }
        if row.namespace != "pg_catalog" {
            return DataType::Other(row.name.clone());
        }
        builtin(&row.name, typmod)
    }
}

/// How many domains and element types [`TypeCache::data_type`] follows.
const MAX_TYPE_DEPTH: usize = 32;

/// How deeply array literals may nest. Postgres allows 6 dimensions
/// (`MAXDIM`); the bound keeps a hostile literal from overflowing the stack.
const MAX_ARRAY_DEPTH: usize = 64;

fn builtin(name: &str, typmod: i32) -> DataType {
    match name {
        "bool" => DataType::Bool,
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" | "oid" | "xid" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "numeric" => {
            let (precision, scale) = if typmod >= 4 {
                let m = (typmod - 4) as u32;
                (Some((m >> 16) & 0xffff), Some(m & 0xffff))
            } else {
                (None, None)
            };
            DataType::Decimal { precision, scale }
        }
        "text" | "varchar" | "bpchar" | "name" | "char" | "citext" | "inet" | "cidr" | "macaddr" | "macaddr8" => DataType::String,
        "bytea" => DataType::Bytes,
        "date" => DataType::Date,
        "time" => DataType::Time,
        "timetz" => DataType::TimeTz,
        "timestamp" => DataType::Timestamp,
        "timestamptz" => DataType::TimestampTz,
        "interval" => DataType::Interval,
        "uuid" => DataType::Uuid,
        "json" | "jsonb" => DataType::Json,
        other => DataType::Other(other.to_string()),
    }
}

/// The value itself is not in the message: errors end up in logs, and logs
/// never carry row data.
fn bad_value(ty: &DataType, text: &str) -> PgError {
    PgError::Value { ty: ty.clone(), len: text.len() }
}

/// Decodes a value's text form.
pub fn decode_text(ty: &DataType, text: &str) -> Result<Value, PgError> {
    Ok(match ty {
        DataType::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(bad_value(ty, text)),
        },
        DataType::Int16 | DataType::Int32 | DataType::Int64 => Value::Int(text.parse().map_err(|_| bad_value(ty, text))?),
        DataType::UInt64 => Value::UInt(text.parse().map_err(|_| bad_value(ty, text))?),
        DataType::Float32 => Value::Float32(text.parse().map_err(|_| bad_value(ty, text))?),
        DataType::Float64 => Value::Float64(text.parse().map_err(|_| bad_value(ty, text))?),
        DataType::Decimal { .. } => Value::Decimal(text.to_string()),
        DataType::Bytes => Value::Bytes(decode_hex_bytea(text).ok_or_else(|| bad_value(ty, text))?),
        DataType::Timestamp => Value::Text(iso_timestamp(text, false)),
        DataType::TimestampTz => Value::Text(iso_timestamp(text, true)),
        DataType::Json => Value::Json(text.to_string()),
        DataType::Array(elem) => {
            let mut parser = ArrayParser { s: text.as_bytes(), pos: 0, src: text };
            parser.skip_dimensions();
            parser.array(elem, MAX_ARRAY_DEPTH)?
        }
        DataType::String
        | DataType::Date
        | DataType::Time
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Uuid
        | DataType::Enum
        | DataType::Other(_) => Value::Text(text.to_string()),
    })
}

/// `2024-01-02 03:04:05.123456+00` → `2024-01-02T03:04:05.123456Z` (the
/// session runs in UTC, so the offset is always `+00`). `infinity` and BC
/// dates keep their Postgres form.
fn iso_timestamp(text: &str, utc: bool) -> String {
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) || text.ends_with(" BC") {
        return text.to_string();
    }
    match text.strip_suffix("+00") {
        Some(stripped) if utc => riffle_core::value::iso_datetime(stripped, true),
        _ => riffle_core::value::iso_datetime(text, false),
    }
}

fn decode_hex_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// Parses Postgres' array literal (`{1,NULL,"a \"b\""}`, nested for more
/// dimensions) into [`Value::Array`]s of decoded elements.
struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    src: &'a str,
}

impl ArrayParser<'_> {
    fn err(&self) -> PgError {
        PgError::ArrayLiteral { len: self.src.len(), pos: self.pos }
    }

    /// Arrays with non-default bounds print as `[0:1]={…}`; the bounds are
    /// dropped (the elements are kept in order).
    fn skip_dimensions(&mut self) {
        if self.s.first() == Some(&b'[') {
            if let Some(eq) = self.s.iter().position(|b| *b == b'=') {
                self.pos = eq + 1;
            }
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    /// An array and its nested arrays, `depth` levels at most.
    fn array(&mut self, elem: &DataType, depth: usize) -> Result<Value, PgError> {
        self.skip_ws();
        if depth == 0 || self.s.get(self.pos) != Some(&b'{') {
            return Err(self.err());
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(b'{') => items.push(self.array(elem, depth - 1)?),
                Some(b'"') => {
                    self.pos += 1;
                    let mut buf = Vec::new();
                    loop {
                        match self.s.get(self.pos) {
                            Some(b'\\') => {
                                buf.push(*self.s.get(self.pos + 1).ok_or_else(|| self.err())?);
                                self.pos += 2;
                            }
                            Some(b'"') => {
                                self.pos += 1;
                                break;
                            }
                            Some(c) => {
                                buf.push(*c);
                                self.pos += 1;
                            }
                            None => return Err(self.err()),
                        }
                    }
                    let text = String::from_utf8(buf).map_err(|_| self.err())?;
                    items.push(decode_text(elem, &text)?);
                }
                Some(_) => {
                    let start = self.pos;
                    while self.pos < self.s.len() && !matches!(self.s[self.pos], b',' | b'}') {
                        self.pos += 1;
                    }
                    let raw = self.src[start..self.pos].trim();
                    items.push(if raw.eq_ignore_ascii_case("NULL") { Value::Null } else { decode_text(elem, raw)? });
                }
                None => return Err(self.err()),
            }
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_keep_nulls_quotes_and_nesting() {
        let ty = DataType::Array(Box::new(DataType::String));
        let v = decode_text(&ty, r#"{"a b",NULL,"NULL","q\"uote",plain}"#).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Null,
                Value::Text("NULL".into()),
                Value::Text("q\"uote".into()),
                Value::Text("plain".into()),
            ])
        );
        let ints = DataType::Array(Box::new(DataType::Int32));
        assert_eq!(
            decode_text(&ints, "{{1,2},{3,4}}").unwrap(),
            Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Int(2)]), Value::Array(vec![Value::Int(3), Value::Int(4)])])
        );
        assert_eq!(decode_text(&ints, "{}").unwrap(), Value::Array(vec![]));
        assert_eq!(decode_text(&ints, "[0:1]={7,8}").unwrap(), Value::Array(vec![Value::Int(7), Value::Int(8)]));
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(
            decode_text(&DataType::TimestampTz, "2024-01-02 03:04:05.000123+00").unwrap(),
            Value::Text("2024-01-02T03:04:05.000123Z".into())
        );
        assert_eq!(decode_text(&DataType::Timestamp, "2024-01-02 03:04:05").unwrap(), Value::Text("2024-01-02T03:04:05".into()));
        assert_eq!(decode_text(&DataType::TimestampTz, "infinity").unwrap(), Value::Text("infinity".into()));
    }

    #[test]
    fn floats_keep_infinities_and_bytea_is_hex() {
        assert_eq!(decode_text(&DataType::Float64, "-Infinity").unwrap(), Value::Float64(f64::NEG_INFINITY));
        assert!(matches!(decode_text(&DataType::Float32, "NaN").unwrap(), Value::Float32(f) if f.is_nan()));
        assert_eq!(decode_text(&DataType::Bytes, "\\x00ff10").unwrap(), Value::Bytes(vec![0, 255, 16]));
        assert!(decode_text(&DataType::Bytes, "\\x0").is_err());
    }

    #[test]
    fn deeply_nested_or_broken_arrays_are_errors() {
        let ints = DataType::Array(Box::new(DataType::Int32));
        let deep = format!("{}1{}", "{".repeat(100_000), "}".repeat(100_000));
        assert!(matches!(decode_text(&ints, &deep), Err(PgError::ArrayLiteral { .. })));
        let ok = format!("{}1{}", "{".repeat(6), "}".repeat(6));
        assert!(decode_text(&ints, &ok).is_ok());
        for bad in ["", "{", "{1", "{1,", "{\"a", "{\"\\", "[1:2]", "[1:2]={1", "{{1}"] {
            assert!(decode_text(&ints, bad).is_err(), "{bad:?}");
        }
        // No value in the error.
        let e = decode_text(&ints, "{secret}").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn looping_domains_in_pg_type_end() {
        let mut cache = TypeCache::default();
        let row = |base, elem, typtype, category| TypeRow {
            name: "d".into(),
            namespace: "public".into(),
            typtype,
            category,
            elem,
            base,
            labels: Vec::new(),
        };
        // A domain over itself, and an array type of itself.
        cache.rows.insert(1, row(1, 0, b'd', b'N'));
        cache.rows.insert(2, row(0, 2, b'b', b'A'));
        assert!(matches!(cache.data_type(1, -1), DataType::Other(_)));
        let mut t = cache.data_type(2, -1);
        let mut depth = 0;
        while let DataType::Array(elem) = t {
            t = *elem;
            depth += 1;
        }
        assert!(depth <= MAX_TYPE_DEPTH && matches!(t, DataType::Other(_)), "{depth}");
    }
}
