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

use serde_json::{Map, Number, Value};
use std::io;

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
    Ok(value(ty, rest, 0, &mut budget)?.to_string())
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
        INT16 => i16::from_le_bytes(bytes(data, 0)?).into(),
        UINT16 => u16::from_le_bytes(bytes(data, 0)?).into(),
        INT32 => i32::from_le_bytes(bytes(data, 0)?).into(),
        UINT32 => u32::from_le_bytes(bytes(data, 0)?).into(),
        INT64 => i64::from_le_bytes(bytes(data, 0)?).into(),
        UINT64 => u64::from_le_bytes(bytes(data, 0)?).into(),
        // Not finite: MySQL never stores one; mysql_common made it null.
        DOUBLE => Number::from_f64(f64::from_le_bytes(bytes(data, 0)?)).map_or(Value::Null, Value::Number),
        STRING => {
            let (len, at) = var_len(data)?;
            let raw = at.checked_add(len).and_then(|end| data.get(at..end)).ok_or_else(|| invalid("string runs past its container"))?;
            Value::String(std::str::from_utf8(raw).map_err(|_| invalid("string is not UTF-8"))?.to_string())
        }
        OPAQUE => return Err(invalid("opaque values (DECIMAL, dates and times inside JSON) are not supported yet")),
        _ => return Err(invalid("unknown value type")),
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
        let mut map = Map::new();
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
}
