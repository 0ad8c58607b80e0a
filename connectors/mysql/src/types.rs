//! MySQL/MariaDB types: which [`DataType`] each maps to, and how a value
//! becomes a [`Value`], whether it came from the snapshot (the text
//! protocol) or from the binlog (typed row images). Both paths produce the
//! same canonical forms; the mapping is in `schemas/README.md`.
//!
//! Choices: `tinyint(1)` stays an integer (MySQL has no boolean); `bit(1)` is
//! a boolean and wider bits are bytes; `enum` is its label and `set` its
//! labels joined by `,`; `year` is an integer; zero dates (`0000-00-00`) are
//! kept as written, never turned into NULL; `timestamp` is UTC with a `Z`
//! (riffle's session runs with `time_zone = '+00:00'`), `datetime` has no
//! zone; geometry is MySQL's internal form (4-byte SRID, then WKB) as bytes.

use crate::error::MyError;
use riffle_core::{Column, DataType, TableId, Value};
use std::sync::Arc;

/// What riffle needs to know of one column.
#[derive(Debug, Clone)]
pub struct MyColumn {
    pub column: Column,
    pub primary_key: bool,
    /// Digits of fractional seconds (`datetime(6)` → 6).
    pub fsp: u32,
    /// `enum`/`set` labels, in declaration order.
    pub labels: Vec<String>,
    pub is_set: bool,
    /// The column's character set (`latin1`, `utf8mb4`), for binlog strings.
    pub charset: Option<String>,
    /// `binary(n)`: the binlog drops trailing zero bytes the column keeps.
    pub binary_len: Option<usize>,
    /// The character set's table, as the server converts it, for sets
    /// riffle does not decode itself (see [`crate::catalog::load_columns`]).
    pub server_charset: Option<Arc<ServerCharset>>,
}

/// What each byte, and each two-byte (and EUC-JP's three-byte) sequence,
/// of a character set is, as the server itself converts it to utf8mb4:
/// binlog strings decoded with it read as the snapshot's text does.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerCharset {
    /// Each byte alone; `None`: it starts a longer sequence.
    pub single: [Option<char>; 256],
    /// Two-byte sequences, by `lead << 8 | trail`; empty for a single-byte set.
    pub pairs: Vec<char>,
    /// Three-byte sequences `0x8F b1 b2` (EUC-JP's JIS X 0212), by
    /// `b1 << 8 | b2`; empty for other sets.
    pub triples: Vec<char>,
}

impl ServerCharset {
    /// `bytes` in this set. A sequence cut short (the server never writes
    /// one) becomes U+FFFD.
    pub fn decode(&self, bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let (c, len) = match self.single[usize::from(b)] {
                Some(c) => (Some(c), 1),
                None if b == 0x8f && !self.triples.is_empty() => (self.sequence(&self.triples, bytes.get(i + 1..i + 3)), 3),
                None => (self.sequence(&self.pairs, bytes.get(i..i + 2)), 2),
            };
            out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            i += len;
        }
        out
    }

    fn sequence(&self, table: &[char], two: Option<&[u8]>) -> Option<char> {
        let two = two?;
        table.get(usize::from(two[0]) << 8 | usize::from(two[1])).copied()
    }
}

/// Character sets decoded without asking the server: UTF-8 (all three
/// names), MySQL's latin1 (Windows-1252), the UTF-16 and UTF-32 forms, and
/// `binary` (no text). (`ascii` is single-byte: the server's table says
/// what its bytes past 127 become.)
pub const KNOWN_CHARSETS: [&str; 9] = ["utf8mb4", "utf8mb3", "utf8", "latin1", "binary", "ucs2", "utf16", "utf16le", "utf32"];

/// `enum('a','b')` → `["a", "b"]`.
fn parse_labels(column_type: &str) -> Vec<String> {
    let inner = column_type.split_once('(').map(|(_, r)| r.trim_end_matches(')')).unwrap_or("");
    let mut labels = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, in_quote) {
            ('\'', false) => in_quote = true,
            ('\'', true) if chars.peek() == Some(&'\'') => {
                cur.push('\'');
                chars.next();
            }
            ('\'', true) => {
                in_quote = false;
                labels.push(std::mem::take(&mut cur));
            }
            ('\\', true) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (c, true) => cur.push(c),
            _ => {}
        }
    }
    labels
}

/// Maps one `information_schema.COLUMNS` row.
#[allow(clippy::too_many_arguments)]
pub fn column_type(
    name: String,
    data_type: &str,
    column_type: &str,
    nullable: bool,
    primary_key: bool,
    precision: Option<u32>,
    scale: Option<u32>,
    datetime_precision: Option<u32>,
    charset: Option<String>,
) -> MyColumn {
    let unsigned = column_type.contains("unsigned");
    let dt = match data_type {
        "tinyint" | "smallint" => DataType::Int16,
        "mediumint" | "int" | "integer" => {
            if unsigned {
                DataType::Int64
            } else {
                DataType::Int32
            }
        }
        "bigint" => {
            if unsigned {
                DataType::UInt64
            } else {
                DataType::Int64
            }
        }
        "decimal" | "numeric" => DataType::Decimal { precision, scale },
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "bit" => {
            if column_type == "bit(1)" {
                DataType::Bool
            } else {
                DataType::Bytes
            }
        }
        "year" => DataType::Int32,
        "date" => DataType::Date,
        "time" => DataType::Time,
        "datetime" => DataType::Timestamp,
        "timestamp" => DataType::TimestampTz,
        "enum" => DataType::Enum,
        "set" => DataType::String,
        "json" => DataType::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => DataType::String,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => DataType::Bytes,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon" | "geometrycollection" => {
            DataType::Bytes
        }
        other => DataType::Other(other.to_string()),
    };
    // tinyint/smallint unsigned do not fit i16: widen.
    let dt = match (&dt, unsigned) {
        (DataType::Int16, true) => DataType::Int32,
        _ => dt,
    };
    let labels = if matches!(data_type, "enum" | "set") { parse_labels(column_type) } else { Vec::new() };
    MyColumn {
        column: Column { name, source_type: column_type.to_string(), data_type: dt, nullable, labels: labels.clone() },
        primary_key,
        fsp: datetime_precision.unwrap_or(0),
        labels,
        is_set: data_type == "set",
        charset,
        binary_len: (data_type == "binary").then(|| column_type.trim_start_matches("binary(").trim_end_matches(')').parse().ok()).flatten(),
        server_charset: None,
    }
}

fn bad(col: &MyColumn, from: &'static str) -> MyError {
    MyError::Decode { column: col.column.name.clone(), source_type: col.column.source_type.clone(), from }
}

/// The values of one text-protocol row as the server sent it (a result
/// set row packet): for each column a length-encoded string, or `0xFB` for
/// NULL. Reads the packet in place; nothing is copied.
pub struct TextValues<'a> {
    rest: &'a [u8],
}

impl<'a> TextValues<'a> {
    pub fn new(packet: &'a [u8]) -> Self {
        TextValues { rest: packet }
    }

    /// The next value (`None`: NULL), or what is wrong with the packet.
    pub fn next_value(&mut self) -> Result<Option<&'a [u8]>, String> {
        let (&first, rest) = self.rest.split_first().ok_or("the row ended before its last value")?;
        let (len, rest) = match first {
            0xFB => {
                self.rest = rest;
                return Ok(None);
            }
            0xFF => return Err(format!("a value starts with byte 0x{first:02X}, which starts no length")),
            // The length in the next 2, 3 or 8 bytes, little-endian.
            0xFC..=0xFE => {
                let width = [2, 3, 8][usize::from(first - 0xFC)];
                let (length, rest) = rest.split_at_checked(width).ok_or("a value's length is cut short")?;
                (crate::rows::le(length), rest)
            }
            _ => (u64::from(first), rest),
        };
        let len = usize::try_from(len).map_err(|_| "a value's length does not fit in memory")?;
        let (value, rest) =
            rest.split_at_checked(len).ok_or_else(|| format!("a value of {len} bytes is longer than what is left of the row"))?;
        self.rest = rest;
        Ok(Some(value))
    }

    /// Whether every byte of the packet has been read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// One snapshot row of `table` (its `columns`) from its text-protocol
/// packet; `seen(i, bytes)` for each non-NULL value as sent. A packet that
/// does not hold exactly one value per column is an error naming the column.
pub fn text_row(table: &TableId, columns: &[MyColumn], packet: &[u8], mut seen: impl FnMut(usize, &[u8])) -> Result<Vec<Value>, MyError> {
    let bad = |why: String| MyError::BadSnapshotRow { table: table.clone(), why };
    let mut values = TextValues::new(packet);
    let mut row = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let v = values.next_value().map_err(|why| bad(format!("{why} (column {} of {}, {})", i + 1, columns.len(), c.column.name)))?;
        if let Some(v) = v {
            seen(i, v);
        }
        row.push(from_text(c, v)?);
    }
    if !values.is_done() {
        return Err(bad(format!("it holds more than the {} values the table has", columns.len())));
    }
    Ok(row)
}

/// A value from the snapshot's text protocol (`None`: NULL).
pub fn from_text(col: &MyColumn, v: Option<&[u8]>) -> Result<Value, MyError> {
    let Some(bytes) = v else { return Ok(Value::Null) };
    fn utf8<'a>(col: &MyColumn, bytes: &'a [u8]) -> Result<&'a str, MyError> {
        std::str::from_utf8(bytes).map_err(|_| bad(col, "the snapshot (not UTF-8)"))
    }
    let str = |bytes| utf8(col, bytes);
    let text = |bytes| str(bytes).map(str::to_owned);
    let number = || bad(col, "the snapshot");
    Ok(match &col.column.data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => Value::Int(decimal_int(bytes).ok_or_else(number)?),
        DataType::UInt64 => Value::UInt(str(bytes)?.parse().map_err(|_| number())?),
        // Read as a double (see the snapshot's SELECT), which holds the float exactly.
        DataType::Float32 => Value::Float32(str(bytes)?.parse::<f64>().map_err(|_| number())? as f32),
        DataType::Float64 => Value::Float64(str(bytes)?.parse().map_err(|_| number())?),
        DataType::Decimal { .. } => Value::Decimal(text(bytes)?),
        DataType::Bool => Value::Bool(bytes.iter().any(|b| *b != 0)),
        DataType::Bytes => Value::Bytes(bytes.to_vec()),
        DataType::Timestamp => Value::Text(riffle_core::value::iso_datetime(str(bytes)?, false)),
        DataType::TimestampTz => Value::Text(riffle_core::value::iso_datetime(str(bytes)?, true)),
        DataType::Json => Value::Json(text(bytes)?),
        _ => Value::Text(text(bytes)?),
    })
}

/// A signed integer as the text protocol sends it (`-` and ASCII digits),
/// read without a UTF-8 check first: snapshots read several per row.
/// `None` for anything else, or out of range.
fn decimal_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negative, so i64::MIN fits.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// `v` in decimal, zero-padded to `width` digits.
pub(crate) fn push_digits(s: &mut String, v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let (mut n, mut i) = (v, buf.len());
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in buf.len() - i..width {
        s.push('0');
    }
    s.extend(buf[i..].iter().map(|&b| char::from(b)));
}

/// `YYYY-MM-DD`, then `THH:MM:SS` and the first `fsp` digits of the
/// microseconds when `time` is given, then `Z` when `zulu`: written digit
/// by digit, since the stream makes one per timestamp it decodes.
fn iso(y: u64, m: u32, d: u32, time: Option<(u32, u32, u32, u32)>, fsp: u32, zulu: bool) -> String {
    let mut s = String::with_capacity(32);
    push_digits(&mut s, y, 4);
    s.push('-');
    push_digits(&mut s, m.into(), 2);
    s.push('-');
    push_digits(&mut s, d.into(), 2);
    if let Some((h, i, sec, us)) = time {
        s.push('T');
        push_digits(&mut s, h.into(), 2);
        s.push(':');
        push_digits(&mut s, i.into(), 2);
        s.push(':');
        push_digits(&mut s, sec.into(), 2);
        push_frac(&mut s, us, fsp);
    }
    if zulu {
        s.push('Z');
    }
    s
}

/// `.` and the first `fsp` of the six zero-padded digits of `us`; nothing
/// when `fsp` is 0.
fn push_frac(s: &mut String, us: u32, fsp: u32) {
    if fsp > 0 {
        let mut digits = String::with_capacity(6);
        push_digits(&mut digits, us.into(), 6);
        s.push('.');
        s.push_str(&digits[..fsp.min(6) as usize]);
    }
}

fn frac(us: u32, fsp: u32) -> String {
    let mut s = String::new();
    push_frac(&mut s, us, fsp);
    s
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Text from a binlog string column in its character set. Bytes that are
/// not valid in it (the server never writes any) become U+FFFD.
fn decode_charset(col: &MyColumn, bytes: Vec<u8>) -> String {
    if let Some(table) = &col.server_charset {
        return table.decode(&bytes);
    }
    match col.charset.as_deref() {
        // MySQL's latin1 is Windows-1252.
        Some("latin1") => bytes.iter().map(|&b| cp1252(b)).collect(),
        // ucs2 is UTF-16 without surrogates; both big-endian.
        Some("utf16" | "ucs2") => utf16(&bytes, u16::from_be_bytes),
        Some("utf16le") => utf16(&bytes, u16::from_le_bytes),
        Some("utf32") => bytes
            .chunks(4)
            .map(|c| <[u8; 4]>::try_from(c).ok().and_then(|c| char::from_u32(u32::from_be_bytes(c))).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = bytes.chunks(2).map(|c| <[u8; 2]>::try_from(c).map_or(0xfffd, unit));
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•',
        '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9f => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

/// A value from a binlog row image.
pub fn from_binlog(col: &MyColumn, v: mysql_async::Value) -> Result<Value, MyError> {
    use mysql_async::Value as V;
    Ok(match (v, &col.column.data_type) {
        (V::NULL, _) => Value::Null,
        (V::Int(i), DataType::Enum) => match usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).and_then(|i| col.labels.get(i)) {
            Some(label) => Value::Text(label.clone()),
            // Index 0 is the "invalid value" MySQL stores as ''.
            None => Value::Text(String::new()),
        },
        (V::Int(i), DataType::UInt64) => Value::UInt(i as u64),
        // Without signedness metadata (binlog_row_metadata=MINIMAL) unsigned
        // values arrive as signed: the catalog says which they are.
        (V::Int(i), _) if i < 0 && col.column.source_type.contains("unsigned") => {
            let bits = match col.column.source_type.split('(').next().unwrap_or("") {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                _ => 32,
            };
            Value::Int(i + (1i64 << bits))
        }
        // mysql_common reads a signed MEDIUMINT's 3 bytes without sign
        // extension for -8388608 (0x800000); extend it here.
        (V::Int(i), DataType::Int32) if i > 0x7f_ffff && col.column.source_type.starts_with("mediumint") => Value::Int(i - 0x100_0000),
        (V::Int(i), _) => Value::Int(i),
        (V::UInt(u), DataType::UInt64) => Value::UInt(u),
        (V::UInt(u), _) => Value::Int(i64::try_from(u).map_err(|_| bad(col, "the binlog"))?),
        (V::Float(f), _) => Value::Float32(f),
        (V::Double(d), DataType::Float32) => Value::Float32(d as f32),
        (V::Double(d), _) => Value::Float64(d),
        (V::Date(y, m, d, ..), DataType::Date) => Value::Text(iso(y.into(), m.into(), d.into(), None, 0, false)),
        (V::Date(y, m, d, h, i, s, us), DataType::TimestampTz) => {
            Value::Text(iso(y.into(), m.into(), d.into(), Some((h.into(), i.into(), s.into(), us)), col.fsp, true))
        }
        (V::Date(y, m, d, h, i, s, us), _) => {
            Value::Text(iso(y.into(), m.into(), d.into(), Some((h.into(), i.into(), s.into(), us)), col.fsp, false))
        }
        (V::Time(neg, days, h, i, s, us), _) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            Value::Text(format!("{}{hours:02}:{i:02}:{s:02}{}", if neg { "-" } else { "" }, frac(us, col.fsp)))
        }
        (V::Bytes(b), DataType::TimestampTz) => {
            // Seconds since the epoch, with ".uuuuuu" when fractional.
            let text = std::str::from_utf8(&b).map_err(|_| bad(col, "the binlog"))?;
            let (secs, micros) = text.split_once('.').unwrap_or((text, "0"));
            let secs: i64 = secs.parse().map_err(|_| bad(col, "the binlog"))?;
            if !micros.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(col, "the binlog"));
            }
            // The first six digits, zero-padded on the right.
            let micros = (0..6).fold(0u32, |us, i| us * 10 + micros.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0')));
            if secs == 0 && micros == 0 {
                Value::Text(iso(0, 0, 0, Some((0, 0, 0, 0)), col.fsp, true))
            } else {
                let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
                let rem = secs.rem_euclid(86_400) as u32;
                let time = Some((rem / 3600, rem % 3600 / 60, rem % 60, micros));
                match u64::try_from(y) {
                    Ok(y) => Value::Text(iso(y, m, d, time, col.fsp, true)),
                    Err(_) => return Err(bad(col, "the binlog")),
                }
            }
        }
        (V::Bytes(b), DataType::String) if col.is_set => {
            // A bitmap over the labels.
            let mut bits: u64 = 0;
            for (i, byte) in b.iter().enumerate().take(8) {
                bits |= u64::from(*byte) << (8 * i);
            }
            let labels: Vec<&str> =
                col.labels.iter().enumerate().filter(|(i, _)| *i < 64 && bits & (1 << i) != 0).map(|(_, l)| l.as_str()).collect();
            Value::Text(labels.join(","))
        }
        (V::Bytes(b), DataType::Bool) => Value::Bool(b.iter().any(|x| *x != 0)),
        (V::Bytes(mut b), DataType::Bytes) => {
            if let Some(n) = col.binary_len {
                if b.len() < n {
                    b.resize(n, 0);
                }
            }
            Value::Bytes(b)
        }
        (V::Bytes(b), DataType::Decimal { .. }) => Value::Decimal(String::from_utf8(b).map_err(|_| bad(col, "the binlog"))?),
        (V::Bytes(b), DataType::Int16 | DataType::Int32 | DataType::Int64) => {
            let n: i64 = String::from_utf8_lossy(&b).parse().map_err(|_| bad(col, "the binlog"))?;
            // The binlog stores YEAR as years since 1900, 0 meaning the zero
            // year 0000; the parser turns that 0 into 1900.
            if n == 1900 && col.column.source_type.starts_with("year") {
                Value::Int(0)
            } else {
                Value::Int(n)
            }
        }
        (V::Bytes(b), DataType::Json) => Value::Json(decode_charset(col, b)),
        // MariaDB's fixed-size binary types: the binlog holds their bytes
        // (trailing zero bytes dropped), the snapshot their text.
        (V::Bytes(b), DataType::Other(t)) if t == "uuid" => Value::Text(uuid_text(&fixed::<16>(col, &b)?)),
        (V::Bytes(b), DataType::Other(t)) if t == "inet6" => Value::Text(inet6_text(&fixed::<16>(col, &b)?)),
        (V::Bytes(b), DataType::Other(t)) if t == "inet4" => Value::Text(inet4_text(&fixed::<4>(col, &b)?)),
        (V::Bytes(b), _) => Value::Text(decode_charset(col, b)),
    })
}

/// A fixed-size binary value of `N` bytes, the zero bytes the binlog drops
/// at its end put back.
fn fixed<const N: usize>(col: &MyColumn, bytes: &[u8]) -> Result<[u8; N], MyError> {
    let mut out = [0u8; N];
    out.get_mut(..bytes.len()).ok_or_else(|| bad(col, "the binlog (longer than the type)"))?.copy_from_slice(bytes);
    Ok(out)
}

/// A UUID as MariaDB prints it: lowercase, `8-4-4-4-12`. (The binlog holds
/// its bytes in that order whatever order the table stores them in.)
fn uuid_text(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 15)]));
    }
    s
}

fn inet4_text(b: &[u8; 4]) -> String {
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// An IPv6 address as MariaDB's INET6 prints it, which is not quite RFC
/// 5952: the first longest run of zero groups is written `::` even when it
/// is one group long, and an address whose first six groups are zero
/// (IPv4-compatible, but not `::` or `::1`-like shorter runs) or five zero
/// groups then `ffff` (IPv4-mapped) ends in dotted IPv4.
fn inet6_text(b: &[u8; 16]) -> String {
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
    // The first longest run of zero groups: (start, length).
    let (mut gap, mut run) = ((0usize, 0usize), None::<(usize, usize)>);
    for (i, w) in words.iter().enumerate() {
        run = match (w, run) {
            (0, Some((start, len))) => Some((start, len + 1)),
            (0, None) => Some((i, 1)),
            (_, _) => None,
        };
        if let Some(r) = run.filter(|r| r.1 > gap.1) {
            gap = r;
        }
    }
    let mut s = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if gap.1 > 0 && i == gap.0 {
            s.push_str(if i == 0 { "::" } else { ":" });
            i += gap.1;
            continue;
        }
        if i == 6 && gap.0 == 0 && (gap.1 == 6 || (gap.1 == 5 && words[5] == 0xffff)) {
            s.push_str(&inet4_text(&[b[12], b[13], b[14], b[15]]));
            return s;
        }
        s.push_str(&format!("{:x}", words[i]));
        if i != 7 {
            s.push(':');
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_integers_read_exactly_or_not_at_all() {
        for n in [0, 1, -1, 42, -907, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            assert_eq!(decimal_int(n.to_string().as_bytes()), Some(n));
        }
        for bad in ["", "-", "+1", "1.0", " 1", "1 ", "9223372036854775808", "-9223372036854775809", "1e3", "--1", "١"] {
            assert_eq!(decimal_int(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn mariadb_uuid_inet6_and_inet4_bytes_read_as_the_server_prints_them() {
        let hex = |h: &str| -> Vec<u8> { (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect() };
        let text = |ty: &str, bytes: Vec<u8>| match from_binlog(&col(ty, ty, 0), mysql_async::Value::Bytes(bytes)).unwrap() {
            Value::Text(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(text("uuid", hex("6ccd780cbaba102695645b8c656024db")), "6ccd780c-baba-1026-9564-5b8c656024db");
        // Trailing zero bytes are dropped by the binlog.
        assert_eq!(text("uuid", hex("00000000000000000000000000000001")), "00000000-0000-0000-0000-000000000001");
        assert_eq!(text("uuid", Vec::new()), "00000000-0000-0000-0000-000000000000");
        assert_eq!(text("inet4", hex("01")), "1.0.0.0");
        assert_eq!(text("inet4", hex("ffffffff")), "255.255.255.255");
        for (bytes, want) in [
            ("", "::"),
            ("00000000000000000000000000000001", "::1"),
            ("00000000000000000000000001020304", "::1.2.3.4"),
            ("00000000000000000000ffff01020304", "::ffff:1.2.3.4"),
            ("20010db8000000010001000100010001", "2001:db8::1:1:1:1:1"),
            ("20010db8", "2001:db8::"),
            ("00010000000000010000000000000001", "1:0:0:1::1"),
            ("fe800000000000000001000000000001", "fe80::1:0:0:1"),
            ("ffffffffffffffffffffffffffffffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("00000000000000000000000100000000", "::1:0:0"),
            ("00010002000300040005000600070008", "1:2:3:4:5:6:7:8"),
        ] {
            assert_eq!(text("inet6", hex(bytes)), want, "{bytes}");
        }
        assert!(from_binlog(&col("inet4", "inet4", 0), mysql_async::Value::Bytes(vec![1; 5])).is_err(), "too long");
    }

    #[test]
    fn utf16_utf32_and_server_table_strings_decode_and_bad_bytes_never_panic() {
        let text = |charset: &str, bytes: &[u8]| {
            let mut c = col("varchar", "varchar(10)", 0);
            c.charset = Some(charset.into());
            decode_charset(&c, bytes.to_vec())
        };
        // é, then 🎉 as a surrogate pair.
        assert_eq!(text("utf16", &[0x00, 0xe9, 0xd8, 0x3c, 0xdf, 0x89]), "é🎉");
        assert_eq!(text("utf16le", &[0xe9, 0x00, 0x3c, 0xd8, 0x89, 0xdf]), "é🎉");
        assert_eq!(text("ucs2", &[0x20, 0xac]), "€");
        assert_eq!(text("utf32", &[0, 1, 0xf3, 0x89, 0, 0, 0, 0x7a]), "🎉z");
        // A lone surrogate, an odd byte, a code point past U+10FFFF.
        assert_eq!(text("utf16", &[0xd8, 0x3c, 0x00]), "\u{fffd}\u{fffd}");
        assert_eq!(text("utf32", &[0x00, 0x11, 0x00, 0x00, 0x41]), "\u{fffd}\u{fffd}");
        let mut c = col("varchar", "varchar(10)", 0);
        c.charset = Some("koi8r".into());
        let mut single = [Some('?'); 256];
        single[0xc1] = Some('а');
        single[0x41] = Some('A');
        c.server_charset = Some(Arc::new(ServerCharset { single, pairs: Vec::new(), triples: Vec::new() }));
        assert_eq!(decode_charset(&c, vec![0xc1, 0x41, 0xff]), "аA?");
        // A double-byte set with EUC-JP's three-byte sequences; cut short at the end.
        let mut single = [None; 256];
        single[0x41] = Some('A');
        let (mut pairs, mut triples) = (vec!['?'; 65536], vec!['?'; 65536]);
        pairs[0xa4a2] = 'あ';
        triples[0xb0a1] = '丂';
        c.server_charset = Some(Arc::new(ServerCharset { single, pairs, triples }));
        assert_eq!(decode_charset(&c, vec![0xa4, 0xa2, 0x41, 0x8f, 0xb0, 0xa1, 0xa4]), "あA丂\u{fffd}");
        assert_eq!(decode_charset(&c, vec![0x8f, 0xb0]), "\u{fffd}");
    }

    #[test]
    fn dates_and_times_are_written_digit_by_digit_as_format_would() {
        assert_eq!(iso(2024, 2, 9, None, 0, false), "2024-02-09");
        assert_eq!(iso(7, 1, 1, Some((3, 4, 5, 120)), 6, true), "0007-01-01T03:04:05.000120Z");
        assert_eq!(iso(2024, 12, 31, Some((23, 59, 59, 999_999)), 3, false), "2024-12-31T23:59:59.999");
        assert_eq!(iso(0, 0, 0, Some((0, 0, 0, 0)), 0, true), "0000-00-00T00:00:00Z");
        let mut s = String::new();
        push_digits(&mut s, 1_234_567_890, 9);
        push_digits(&mut s, 42, 9);
        assert_eq!(s, "1234567890000000042");
    }

    fn col(data_type: &str, column_type: &str, fsp: u32) -> MyColumn {
        column_type_for_test(data_type, column_type, fsp)
    }

    fn column_type_for_test(data_type: &str, ct: &str, fsp: u32) -> MyColumn {
        column_type("c".into(), data_type, ct, true, false, None, None, Some(fsp), Some("utf8mb4".into()))
    }

    /// `v` as a text-protocol value, its length written in `width` bytes
    /// after the marker (0: in the first byte).
    fn lenenc(v: &[u8], width: usize, out: &mut Vec<u8>) {
        match width {
            0 => out.push(u8::try_from(v.len()).unwrap()),
            2 => out.push(0xFC),
            3 => out.push(0xFD),
            _ => out.push(0xFE),
        }
        out.extend_from_slice(&(v.len() as u64).to_le_bytes()[..width]);
        out.extend_from_slice(v);
    }

    #[test]
    fn text_rows_read_every_length_form_and_null() {
        let long = vec![b'x'; 70_000];
        let cases: [(Option<&[u8]>, usize); 8] = [
            (Some(b""), 0),
            (Some(b"a"), 0),
            (None, 0),
            (Some(&long[..250]), 0),
            (Some(&long[..251]), 2),
            (Some(&long[..300]), 3),
            (Some(&long), 3),
            (Some(b"small, in eight"), 8),
        ];
        let mut packet = Vec::new();
        for (v, width) in &cases {
            match v {
                Some(v) => lenenc(v, *width, &mut packet),
                None => packet.push(0xFB),
            }
        }
        let mut values = TextValues::new(&packet);
        for (v, _) in &cases {
            assert_eq!(values.next_value().unwrap(), *v);
        }
        assert!(values.is_done());
        assert_eq!(values.next_value().unwrap_err(), "the row ended before its last value");
    }

    #[test]
    fn a_malformed_text_row_is_an_error_that_names_the_column() {
        let t = TableId::new("db", "t");
        let named =
            |name: &str, data_type, ct| column_type(name.into(), data_type, ct, true, false, None, None, Some(0), Some("utf8mb4".into()));
        let columns = [named("id", "int", "int(11)"), named("v", "varchar", "varchar(10)")];
        let read = |packet: &[u8]| text_row(&t, &columns, packet, |_, _| {}).map_err(|e| e.to_string());
        assert_eq!(read(b"\x0242\x02hi").unwrap(), vec![Value::Int(42), Value::Text("hi".into())]);
        assert_eq!(read(b"\x0242\xFB").unwrap(), vec![Value::Int(42), Value::Null]);
        let cases: [(&[u8], &str); 6] = [
            (b"\x0242", "the row ended before its last value (column 2 of 2, v)"),
            (b"\x0242\x05hi", "a value of 5 bytes is longer than what is left of the row (column 2 of 2, v)"),
            (b"\x0242\xFC\x01", "a value's length is cut short (column 2 of 2, v)"),
            (b"\xFF\x01", "a value starts with byte 0xFF, which starts no length (column 1 of 2, id)"),
            (b"\x0242\x02hi\x00", "it holds more than the 2 values the table has"),
            (b"", "the row ended before its last value (column 1 of 2, id)"),
        ];
        for (packet, why) in cases {
            assert_eq!(read(packet).unwrap_err(), format!("the server sent a row of db.t riffle cannot read: {why}"), "{packet:?}");
        }
        // A value that is not what its column holds is a decode error, as before.
        assert!(read(b"\x02xy\x02hi").unwrap_err().starts_with("cannot read column id (int(11))"));
        // The key's values as sent, NULLs skipped.
        let mut seen = Vec::new();
        text_row(&t, &columns, b"\x017\xFB", |i, v| seen.push((i, v.to_vec()))).unwrap();
        assert_eq!(seen, vec![(0, b"7".to_vec())]);
    }

    #[test]
    fn random_text_rows_are_read_or_refused_never_a_panic() {
        let t = TableId::new("db", "t");
        let columns: Vec<MyColumn> = [
            ("int", "int(11)"),
            ("bigint", "bigint(20) unsigned"),
            ("float", "float"),
            ("double", "double"),
            ("decimal", "decimal(10,2)"),
            ("timestamp", "timestamp(6)"),
            ("datetime", "datetime(3)"),
            ("json", "json"),
            ("varchar", "varchar(10)"),
            ("blob", "blob"),
            ("bit", "bit(3)"),
            ("enum", "enum('a','b')"),
            ("year", "year(4)"),
        ]
        .iter()
        .map(|(d, c)| col(d, c, 3))
        .collect();
        // xorshift64: the same inputs every run. Bytes lean to the length
        // markers and to short lengths, where the edges are.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut read, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let width = 1 + (next() % columns.len() as u64) as usize;
            let len = (next() % 24) as usize;
            let packet: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 => 0xFB,
                    1 => 0xFC + (next() % 4) as u8,
                    2 | 3 => (next() % 4) as u8,
                    _ => b"0123456789-.: e\"{}"[(next() % 18) as usize],
                })
                .collect();
            match text_row(&t, &columns[..width], &packet, |_, _| {}) {
                Ok(row) => {
                    assert_eq!(row.len(), width);
                    read += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(read > 100 && refused > 100, "{read} read, {refused} refused: the inputs miss a side");
    }

    #[test]
    fn labels_parse_with_quotes_and_commas() {
        assert_eq!(parse_labels("enum('a','b,c','it''s')"), vec!["a", "b,c", "it's"]);
    }

    #[test]
    fn binlog_values_match_the_text_forms() {
        let ts = col("timestamp", "timestamp(6)", 6);
        assert_eq!(
            from_binlog(&ts, mysql_async::Value::Bytes(b"1700000000.000123".to_vec())).unwrap(),
            Value::Text("2023-11-14T22:13:20.000123Z".into())
        );
        assert_eq!(from_text(&ts, Some(b"2023-11-14 22:13:20.000123")).unwrap(), Value::Text("2023-11-14T22:13:20.000123Z".into()));
        let dt = col("datetime", "datetime(3)", 3);
        assert_eq!(
            from_binlog(&dt, mysql_async::Value::Date(2024, 2, 29, 1, 2, 3, 456_000)).unwrap(),
            Value::Text("2024-02-29T01:02:03.456".into())
        );
        let t = col("time", "time", 0);
        assert_eq!(from_binlog(&t, mysql_async::Value::Time(true, 34, 22, 59, 59, 0)).unwrap(), Value::Text("-838:59:59".into()));
        let big = col("bigint", "bigint(20) unsigned", 0);
        assert_eq!(from_binlog(&big, mysql_async::Value::UInt(u64::MAX)).unwrap(), Value::UInt(u64::MAX));
        let tiny_u = col("tinyint", "tinyint(3) unsigned", 0);
        assert_eq!(from_binlog(&tiny_u, mysql_async::Value::Int(-56)).unwrap(), Value::Int(200));
        let int_u = col("int", "int(10) unsigned", 0);
        assert_eq!(from_binlog(&int_u, mysql_async::Value::Int(-1_294_967_296)).unwrap(), Value::Int(3_000_000_000));
        let year = col("year", "year(4)", 0);
        assert_eq!(from_binlog(&year, mysql_async::Value::Bytes(b"1900".to_vec())).unwrap(), Value::Int(0));
        let medium = col("mediumint", "mediumint(9)", 0);
        assert_eq!(from_binlog(&medium, mysql_async::Value::Int(8_388_608)).unwrap(), Value::Int(-8_388_608));
        assert_eq!(from_binlog(&medium, mysql_async::Value::Int(-5)).unwrap(), Value::Int(-5));
        let bin = col("binary", "binary(4)", 0);
        assert_eq!(from_binlog(&bin, mysql_async::Value::Bytes(vec![1])).unwrap(), Value::Bytes(vec![1, 0, 0, 0]));
        let set = col("set", "set('a','b','c')", 0);
        assert_eq!(from_binlog(&set, mysql_async::Value::Bytes(vec![0b101])).unwrap(), Value::Text("a,c".into()));
        let mut latin = col("varchar", "varchar(10)", 0);
        latin.charset = Some("latin1".into());
        assert_eq!(from_binlog(&latin, mysql_async::Value::Bytes(vec![b'c', 0xe9, 0x80])).unwrap(), Value::Text("cé€".into()));
    }
}
