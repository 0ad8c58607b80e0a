//! One value as JSON or as CSV text. The mapping per type is in
//! `schemas/README.md`.

use base64::Engine;
use riffle_core::Value;

pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    // Most strings need no escaping: copy them straight.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends an integer's decimal digits.
pub fn write_int(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_float(f: f64, single: Option<f32>, json: bool, out: &mut Vec<u8>) {
    if f.is_finite() {
        // Shortest text that reads back to the same float (as serde_json writes).
        let mut buf = ryu::Buffer::new();
        let text = match single {
            Some(s) => buf.format_finite(s),
            None => buf.format_finite(f),
        };
        out.extend_from_slice(text.as_bytes());
    } else {
        let text = non_finite_text(f);
        if json {
            write_json_str(text, out);
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// The text riffle writes for a float that is not finite (a JSON string):
/// `NaN`, `Infinity`, `-Infinity`.
pub fn non_finite_text(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// The float [`non_finite_text`] wrote, if `text` is one of its forms.
pub fn non_finite(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A value as JSON: numbers for integers and finite floats, strings for
/// decimals (exact), NaN and infinities, text, base64 for bytes, the
/// document's text for JSON columns (as Debezium does), arrays as arrays.
pub fn write_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null | Value::Unavailable => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(*i, out),
        Value::UInt(u) => write_int(*u, out),
        Value::Float32(f) => write_float(f64::from(*f), Some(*f), true, out),
        Value::Float64(f) => write_float(*f, None, true, out),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => write_json_str(s, out),
        Value::Bytes(b) => write_json_str(&base64::engine::general_purpose::STANDARD.encode(b), out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
    }
}

/// Describes a value for an error message without showing row data (logs
/// never carry values): special values that identify nothing (`NaN`,
/// `infinity`, zero dates, BC dates) are shown, anything else only by kind
/// and size.
pub fn describe(v: &Value) -> String {
    let special = |s: &str| {
        matches!(s, "NaN" | "Infinity" | "-Infinity" | "infinity" | "-infinity") || s.starts_with("0000-00-00") || s.ends_with(" BC")
    };
    match v {
        Value::Null => "NULL".into(),
        Value::Unavailable => "a value the source did not send".into(),
        Value::Text(s) | Value::Decimal(s) if special(s) => format!("{s:?}"),
        Value::Decimal(s) => format!("a decimal of {} characters", s.len()),
        Value::Text(s) => format!("a text value of {} characters", s.chars().count()),
        Value::Json(s) => format!("a JSON document of {} bytes", s.len()),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Int(_) | Value::UInt(_) => "an integer out of the column's range".into(),
        Value::Float32(f) if !f.is_finite() => format!("{f}"),
        Value::Float64(f) if !f.is_finite() => format!("{f}"),
        Value::Float32(_) | Value::Float64(_) => "a floating-point value".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Array(items) => format!("an array of {} elements (nested arrays are not supported)", items.len()),
    }
}

/// A CSV cell per RFC 4180. NULL (and a value the source did not send) is an
/// empty unquoted cell; an empty string is `""`, so the two stay apart, as in
/// PostgreSQL's own CSV. Arrays are written as JSON arrays.
pub fn write_csv(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null | Value::Unavailable => {}
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(*i, out),
        Value::UInt(u) => write_int(*u, out),
        Value::Float32(f) => write_float(f64::from(*f), Some(*f), false, out),
        Value::Float64(f) => write_float(*f, None, false, out),
        Value::Decimal(s) => out.extend_from_slice(s.as_bytes()),
        Value::Text(s) | Value::Json(s) => write_csv_text(s, out),
        Value::Bytes(b) => write_csv_text(&base64::engine::general_purpose::STANDARD.encode(b), out),
        Value::Array(_) => {
            let mut json = Vec::new();
            write_json(v, &mut json);
            write_csv_text(&String::from_utf8_lossy(&json), out);
        }
    }
}

/// `s` as one CSV field (RFC 4180): as it is, or quoted with its quotes
/// doubled when it is empty or holds a comma, quote or line break.
pub fn write_csv_text(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    if !bytes.is_empty() && !needs_csv_quotes(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    // Byte by byte into reserved room: the quoted fields are short JSON
    // documents and text with a few quotes, where a copy per quote costs more
    // (measured with callgrind: filling the room with quotes and writing over
    // it, or copying the runs between quotes, both cost more instructions).
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Whether `bytes` holds a comma, quote, CR or LF: eight bytes at a time
/// (a zero byte in `word ^ c` for each `c`, the classic bit trick).
fn needs_csv_quotes(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    let special = |b: u8| matches!(b, b',' | b'"' | b'\n' | b'\r');
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if has_zero(w ^ (ONES * u64::from(b',')))
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\n')))
            || has_zero(w ^ (ONES * u64::from(b'\r')))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| special(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> String {
        let mut out = Vec::new();
        write_json(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn csv(v: &Value) -> String {
        let mut out = Vec::new();
        write_csv(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_keeps_every_value_exact() {
        assert_eq!(json(&Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(json(&Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(json(&Value::Float32(1.1)), "1.1");
        assert_eq!(json(&Value::Float64(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(json(&Value::Decimal("12345678901234567890123456789012345678".into())), "\"12345678901234567890123456789012345678\"");
        assert_eq!(json(&Value::Bytes(vec![0, 255])), "\"AP8=\"");
        assert_eq!(json(&Value::Array(vec![Value::Int(1), Value::Null])), "[1,null]");
        assert_eq!(json(&Value::Text("é\"\n".into())), "\"é\\\"\\n\"");
    }

    #[test]
    fn csv_tells_null_from_empty_and_quotes_per_rfc_4180() {
        assert_eq!(csv(&Value::Null), "");
        assert_eq!(csv(&Value::Text(String::new())), "\"\"");
        assert_eq!(csv(&Value::Bytes(vec![])), "\"\"");
        assert_eq!(csv(&Value::Text("a,\"b\"\nc".into())), "\"a,\"\"b\"\"\nc\"");
        assert_eq!(csv(&Value::Text("carriage\rreturn".into())), "\"carriage\rreturn\"");
        assert_eq!(csv(&Value::Text("\"\"".into())), "\"\"\"\"\"\"");
        assert_eq!(
            csv(&Value::Text("plain text, but long enough for a wide scan".repeat(3))),
            format!("\"{}\"", "plain text, but long enough for a wide scan".repeat(3))
        );
        assert_eq!(
            csv(&Value::Text("no specials in this long cell at all, none".replace(',', ";"))),
            "no specials in this long cell at all; none"
        );
        assert_eq!(csv(&Value::Float64(f64::NAN)), "NaN");
        assert_eq!(csv(&Value::Array(vec![Value::Text("x".into())])), "\"[\"\"x\"\"]\"");
    }

    /// The word-at-a-time scan agrees with a byte-by-byte one for every
    /// byte value at every place of fields up to three words long.
    #[test]
    fn the_quote_scan_finds_every_special_byte_anywhere() {
        for len in 1..=24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut field = vec![b'a'; len];
                    field[at] = b;
                    let expected = matches!(b, b',' | b'"' | b'\n' | b'\r');
                    assert_eq!(needs_csv_quotes(&field), expected, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        // A byte just above or below a special one, next to a high byte.
        assert!(!needs_csv_quotes(&[0xff, b'+', b'-', b'!', b'#', 0x0b, 0x0c, 0x0e, 0x80]));
    }

    /// Every field of up to six characters from quotes, commas, LF, CR,
    /// ASCII and a two-byte letter, written after other output:
    /// what RFC 4180 says, written simply.
    #[test]
    fn quoting_doubles_every_quote_wherever_it_is() {
        let alphabet = ['a', '"', ',', '\n', '\r', 'é'];
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let field: String = (0..len)
                    .map(|_| {
                        let c = alphabet[n % alphabet.len()];
                        n /= alphabet.len();
                        c
                    })
                    .collect();
                let plain = !field.is_empty() && !field.contains(['"', ',', '\n', '\r']);
                let expected = if plain { field.clone() } else { format!("\"{}\"", field.replace('"', "\"\"")) };
                let mut out = b"before,".to_vec();
                write_csv_text(&field, &mut out);
                assert_eq!(String::from_utf8(out).unwrap(), format!("before,{expected}"), "{field:?}");
            }
        }
    }
}
