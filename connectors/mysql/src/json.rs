//! MySQL's binary JSON (the form JSON columns have in the binlog) to JSON
//! text.
//!
//! MySQL's `json_binary` format: a type byte, then the value. Objects and
//! arrays hold an element count and their size, then one entry per key
//! (offset, length) and per value (type, then an offset or, for small
//! scalars, the value inlined); offsets count from the container's start.
//!
//! mysql_common decodes this too, but follows offsets without bounds on
//! nesting or work: nested containers recurse without limit (a stack
//! overflow) and entries that share an offset are decoded once per entry
//! (exponential time). This decoder checks every offset and length against
//! its container, nests at most [`MAX_DEPTH`] deep and visits at most as
//! many elements as the document has bytes, which a document MySQL wrote
//! never exceeds (each element has an entry of at least 3 bytes of its own).

use serde_json::Number;
use std::collections::BTreeMap;
use std::io;

/// A decoded document. Its own tree rather than serde_json's, so that a
/// DECIMAL inside JSON keeps every digit (serde_json's numbers are f64).
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    /// A number's exact text (a DECIMAL).
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Keys sorted, as riffle has always printed them.
    Object(BTreeMap<String, Value>),
}

impl Value {
    fn write(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            // Not finite: MySQL never stores one; mysql_common made it null.
            Value::Double(d) => match Number::from_f64(*d) {
                Some(n) => out.push_str(&n.to_string()),
                None => out.push_str("null"),
            },
            Value::Number(text) => out.push_str(text),
            Value::String(text) => string(text, out),
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `text` as a JSON string literal.
fn string(text: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

/// How deep containers may nest. MySQL refuses documents deeper than 100
/// (`JSON_DOCUMENT_MAX_DEPTH`); a little more keeps every one it writes.
pub const MAX_DEPTH: usize = 128;

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("binary JSON: {what}"))
}

/// A binary JSON document (the column's bytes, without their length) as
/// JSON text. An empty document is `null`, as MySQL reads it.
pub fn to_text(doc: &[u8]) -> io::Result<String> {
    let Some((&ty, rest)) = doc.split_first() else {
        return Ok("null".to_string());
    };
    let mut budget = doc.len();
    let mut out = String::with_capacity(doc.len() * 2);
    value(ty, rest, 0, &mut budget)?.write(&mut out);
    Ok(out)
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> io::Result<[u8; N]> {
    data.get(at..at.checked_add(N).ok_or_else(|| invalid("offset overflows"))?)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("value runs past its container"))
}

/// A value of type `ty` stored at the start of `data`.
fn value(ty: u8, data: &[u8], depth: usize, budget: &mut usize) -> io::Result<Value> {
    Ok(match ty {
        SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => {
            return container(data, matches!(ty, LARGE_OBJECT | LARGE_ARRAY), matches!(ty, SMALL_OBJECT | LARGE_OBJECT), depth, budget)
        }
        LITERAL => match data.first() {
            Some(0x00) => Value::Null,
            Some(0x01) => Value::Bool(true),
            Some(0x02) => Value::Bool(false),
            _ => return Err(invalid("unknown literal")),
        },
        INT16 => Value::Int(i16::from_le_bytes(bytes(data, 0)?).into()),
        UINT16 => Value::UInt(u16::from_le_bytes(bytes(data, 0)?).into()),
        INT32 => Value::Int(i32::from_le_bytes(bytes(data, 0)?).into()),
        UINT32 => Value::UInt(u32::from_le_bytes(bytes(data, 0)?).into()),
        INT64 => Value::Int(i64::from_le_bytes(bytes(data, 0)?)),
        UINT64 => Value::UInt(u64::from_le_bytes(bytes(data, 0)?)),
        DOUBLE => Value::Double(f64::from_le_bytes(bytes(data, 0)?)),
        STRING => {
            let (len, at) = var_len(data)?;
            let raw = at.checked_add(len).and_then(|end| data.get(at..end)).ok_or_else(|| invalid("string runs past its container"))?;
            Value::String(std::str::from_utf8(raw).map_err(|_| invalid("string is not UTF-8"))?.to_string())
        }
        OPAQUE => {
            let (&field_type, rest) = data.split_first().ok_or_else(|| invalid("opaque value without its type"))?;
            let (len, at) = var_len(rest)?;
            let raw =
                at.checked_add(len).and_then(|end| rest.get(at..end)).ok_or_else(|| invalid("opaque value runs past its container"))?;
            opaque(field_type, raw)?
        }
        _ => return Err(invalid("unknown value type")),
    })
}

/// MySQL's column types an opaque value carries.
const NEWDECIMAL: u8 = 246;
const TIMESTAMP: u8 = 7;
const DATE: u8 = 10;
const TIME: u8 = 11;
const DATETIME: u8 = 12;

/// An opaque value: a DECIMAL (precision, scale, then decimal2bin) as a
/// number with every digit; a DATE, TIME, DATETIME or TIMESTAMP (MySQL's
/// packed 8-byte form) as the string MySQL prints for it in JSON
/// (`"2015-01-15"`, `"23:24:25.000000"`, `"2015-01-15 23:24:25.000000"`);
/// anything else as MySQL prints it too, `"base64:type<N>:<bytes>"`.
fn opaque(field_type: u8, raw: &[u8]) -> io::Result<Value> {
    use base64::Engine as _;
    Ok(match field_type {
        NEWDECIMAL => {
            let (&precision, rest) = raw.split_first().ok_or_else(|| invalid("DECIMAL without its precision"))?;
            let (&scale, bin) = rest.split_first().ok_or_else(|| invalid("DECIMAL without its scale"))?;
            if precision == 0 || precision > 65 || scale > 30 || scale > precision {
                return Err(invalid("DECIMAL with an impossible precision or scale"));
            }
            let mut buf = mysql_common::io::ParseBuf(bin);
            Value::Number(crate::rows::decimal(&mut buf, usize::from(precision), usize::from(scale))?)
        }
        DATE | TIME | DATETIME | TIMESTAMP => {
            let packed = i64::from_le_bytes(
                raw.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| invalid("a packed time of fewer than 8 bytes"))?,
            );
            let (negative, v) = (packed < 0, packed.unsigned_abs());
            let micros = v % (1 << 24);
            let hms = (v >> 24) % (1 << 17);
            let (hour, minute, second) = (hms >> 12, (hms >> 6) % 64, hms % 64);
            if minute > 59 || second > 59 || micros > 999_999 {
                return Err(invalid("a packed time out of range"));
            }
            if field_type == TIME {
                let hour = v >> 36;
                let sign = if negative { "-" } else { "" };
                return Ok(Value::String(format!("{sign}{hour:02}:{minute:02}:{second:02}.{micros:06}")));
            }
            let ymd = v >> 41;
            let (year, month, day) = ((ymd >> 5) / 13, (ymd >> 5) % 13, ymd % 32);
            if negative || year > 9999 || hour > 23 {
                return Err(invalid("a packed date out of range"));
            }
            if field_type == DATE {
                Value::String(format!("{year:04}-{month:02}-{day:02}"))
            } else {
                Value::String(format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}"))
            }
        }
        other => Value::String(format!("base64:type{other}:{}", base64::engine::general_purpose::STANDARD.encode(raw))),
    })
}

/// A string's or opaque value's length: 7 bits a byte, low first, at most
/// 5 bytes. Returns the length and where the bytes start.
fn var_len(data: &[u8]) -> io::Result<(usize, usize)> {
    let mut len: u64 = 0;
    for i in 0..5 {
        let b = *data.get(i).ok_or_else(|| invalid("length runs past its container"))?;
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| invalid("length too large"))?;
            return Ok((len, i + 1));
        }
    }
    Err(invalid("length longer than 5 bytes"))
}

/// An object or array starting at `data[0]`.
fn container(data: &[u8], large: bool, object: bool, depth: usize, budget: &mut usize) -> io::Result<Value> {
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return Err(invalid("nested too deep"));
    }
    let size = if large { 4 } else { 2 };
    let offset = |at: usize| -> io::Result<usize> {
        Ok(if large { u32::from_le_bytes(bytes(data, at)?) as usize } else { usize::from(u16::from_le_bytes(bytes(data, at)?)) })
    };
    let count = offset(0)?;
    let total = offset(size)?;
    if total > data.len() {
        return Err(invalid("container larger than its space"));
    }
    let data = &data[..total];
    // Every element costs one from the budget, so shared offsets cannot
    // multiply the work.
    *budget = budget.checked_sub(count).ok_or_else(|| invalid("more elements than the document has bytes"))?;
    let key_entry = size + 2;
    let value_entry = size + 1;
    let keys_at = 2 * size;
    let values_at = if object { count.checked_mul(key_entry).and_then(|k| k.checked_add(keys_at)) } else { Some(keys_at) }
        .ok_or_else(|| invalid("header overflows"))?;
    let header = count.checked_mul(value_entry).and_then(|v| v.checked_add(values_at)).ok_or_else(|| invalid("header overflows"))?;
    if header > total {
        return Err(invalid("header larger than its container"));
    }
    let element = |i: usize, budget: &mut usize| -> io::Result<Value> {
        let entry = values_at + i * value_entry;
        let ty = data[entry];
        let inlined = matches!(ty, LITERAL | INT16 | UINT16) || (large && matches!(ty, INT32 | UINT32));
        if inlined {
            return value(ty, &data[entry + 1..entry + value_entry], depth, budget);
        }
        let at = offset(entry + 1)?;
        if at < header || at >= total {
            return Err(invalid("value offset outside its container"));
        }
        value(ty, &data[at..], depth, budget)
    };
    if object {
        let mut map = BTreeMap::new();
        for i in 0..count {
            let entry = keys_at + i * key_entry;
            let key_at = offset(entry)?;
            let key_len = usize::from(u16::from_le_bytes(bytes(data, entry + size)?));
            let key = key_at
                .checked_add(key_len)
                .filter(|_| key_at >= header)
                .and_then(|end| data.get(key_at..end))
                .ok_or_else(|| invalid("key outside its container"))?;
            let key = std::str::from_utf8(key).map_err(|_| invalid("key is not UTF-8"))?;
            map.insert(key.to_string(), element(i, budget)?);
        }
        Ok(Value::Object(map))
    } else {
        (0..count).map(|i| element(i, budget)).collect::<io::Result<Vec<_>>>().map(Value::Array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_object() {
        // {"a": 1}
        let doc = [0x00, 0x01, 0x00, 0x0c, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a'];
        assert_eq!(to_text(&doc).unwrap(), r#"{"a":1}"#);
        assert_eq!(to_text(&[]).unwrap(), "null");
    }

    #[test]
    fn arrays_strings_and_large_forms() {
        // ["hi", true, 7] (small array)
        let doc = [0x02, 0x03, 0x00, 0x10, 0x00, 0x0c, 0x0d, 0x00, 0x04, 0x01, 0x00, 0x05, 0x07, 0x00, 0x02, b'h', b'i'];
        assert_eq!(to_text(&doc).unwrap(), r#"["hi",true,7]"#);
        // [70000] (large array, int32 inlined)
        let doc = [0x03, 1, 0, 0, 0, 13, 0, 0, 0, 0x07, 0x70, 0x11, 0x01, 0x00];
        assert_eq!(to_text(&doc).unwrap(), "[70000]");
    }

    /// Inputs the fuzzer found or that are known to hurt a naive decoder.
    #[test]
    fn malformed_documents_are_errors() {
        // Truncated headers, offsets past the end, a bad literal.
        for doc in [&[0x00][..], &[0x02, 0x05, 0x00, 0xff, 0xff], &[0x02, 0x01, 0x00, 0x07, 0x00, 0x0c, 0x50, 0x00], &[0x04, 0x09]] {
            assert!(to_text(doc).is_err(), "{doc:?}");
        }
        // Arrays nested 10 000 deep, each [<the next>] (large form, a
        // 13-byte header).
        let mut inner: Vec<u8> = vec![0, 0, 0, 0, 8, 0, 0, 0];
        for _ in 0..10_000 {
            let size = (13 + inner.len()) as u32;
            let mut outer = vec![1, 0, 0, 0];
            outer.extend_from_slice(&size.to_le_bytes());
            outer.push(0x03);
            outer.extend_from_slice(&13u32.to_le_bytes());
            outer.extend_from_slice(&inner);
            inner = outer;
        }
        let doc = [&[0x03][..], &inner].concat();
        assert!(to_text(&doc).unwrap_err().to_string().contains("too deep"));
        // Two entries pointing at the same nested array, 60 levels deep:
        // decoding each entry would take 2^60 steps.
        let mut inner: Vec<u8> = vec![0, 0, 4, 0];
        for _ in 0..60 {
            let size = (10 + inner.len()) as u16;
            let mut outer = vec![2, 0];
            outer.extend_from_slice(&size.to_le_bytes());
            outer.extend_from_slice(&[0x02, 10, 0, 0x02, 10, 0]);
            outer.extend_from_slice(&inner);
            inner = outer;
        }
        let doc = [&[0x02][..], &inner].concat();
        assert!(to_text(&doc).is_err());
    }

    /// `[OPAQUE, field_type, len, bytes…]`: a document of one opaque value.
    fn opaque_doc(field_type: u8, raw: &[u8]) -> Vec<u8> {
        [&[OPAQUE, field_type, raw.len() as u8][..], raw].concat()
    }

    fn packed(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64, micros: i64) -> [u8; 8] {
        let ymd = ((year * 13 + month) << 5) | day;
        let hms = (hour << 12) | (minute << 6) | second;
        ((((ymd << 17) | hms) << 24) + micros).to_le_bytes()
    }

    #[test]
    fn decimals_dates_and_times_inside_json() {
        // DECIMAL(3,2) 3.14 and -3.14 in decimal2bin, every digit kept.
        assert_eq!(to_text(&opaque_doc(NEWDECIMAL, &[3, 2, 0x83, 0x0e])).unwrap(), "3.14");
        assert_eq!(to_text(&opaque_doc(NEWDECIMAL, &[3, 2, 0x7c, 0xf1])).unwrap(), "-3.14");
        // DECIMAL(20,2) 123456789012345678.90: more digits than a double holds.
        let d20 = [20, 2, 0x87, 0x5b, 0xcd, 0x15, 0x00, 0xbc, 0x61, 0x4e, 0x5a];
        assert_eq!(to_text(&opaque_doc(NEWDECIMAL, &d20)).unwrap(), "123456789012345678.90");
        let dt = packed(2015, 1, 15, 23, 24, 25, 123);
        assert_eq!(to_text(&opaque_doc(DATETIME, &dt)).unwrap(), r#""2015-01-15 23:24:25.000123""#);
        assert_eq!(to_text(&opaque_doc(TIMESTAMP, &dt)).unwrap(), r#""2015-01-15 23:24:25.000123""#);
        assert_eq!(to_text(&opaque_doc(DATE, &packed(2015, 1, 15, 0, 0, 0, 0))).unwrap(), r#""2015-01-15""#);
        let time = (-((((12i64 << 12) | (34 << 6) | 56) << 24) + 500_000)).to_le_bytes();
        assert_eq!(to_text(&opaque_doc(TIME, &time)).unwrap(), r#""-12:34:56.500000""#);
        assert_eq!(to_text(&opaque_doc(252, b"hi")).unwrap(), r#""base64:type252:aGk=""#);
        // Out of range, or cut short: errors, never a panic.
        assert!(to_text(&opaque_doc(NEWDECIMAL, &[70, 2, 0x80])).is_err());
        assert!(to_text(&opaque_doc(DATETIME, &[1, 2, 3])).is_err());
        assert!(to_text(&opaque_doc(DATETIME, &packed(2015, 1, 15, 23, 61, 0, 0))).is_err());
        assert!(to_text(&[OPAQUE, NEWDECIMAL, 9, 3]).is_err());
    }
}
