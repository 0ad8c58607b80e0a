//! Row images of a rows event, decoded with the table map read once per
//! event.
//!
//! mysql_common's own row parser rebuilds every row's column metadata (it
//! walks the table map's optional metadata and builds `Column`s per row);
//! profiled on the 350k-change benchmark that was about a quarter of the
//! stream's time. This module keeps its value parser (`BinlogValue`) and
//! does the per-event work once.

use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::value::Value as MyValue;
use std::io;

/// The most columns a table can have (MySQL and MariaDB: 4096); a table
/// map or rows event with more is malformed.
pub const MAX_COLUMNS: usize = 4096;

struct ColumnSpec {
    ty: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
}

/// Shapes of the table maps seen, by table id, with the map's bytes: a
/// server sends the same table map before every rows event, and reading
/// it again each time costs the binlog stream a tenth of its speed.
#[derive(Default)]
pub struct Shapes(std::collections::HashMap<u64, (Vec<u8>, std::sync::Arc<Shape>)>);

impl Shapes {
    /// The shape of `tme`, read again only when its bytes changed.
    pub fn of(&mut self, tme: &TableMapEvent<'_>) -> io::Result<std::sync::Arc<Shape>> {
        use mysql_common::proto::MySerialize;
        let mut raw = Vec::new();
        tme.serialize(&mut raw);
        if let Some((seen, shape)) = self.0.get(&tme.table_id()) {
            if *seen == raw {
                return Ok(shape.clone());
            }
        }
        let shape = std::sync::Arc::new(shape(tme)?);
        // Table ids change with DDL: forget old ones now and then.
        if self.0.len() >= 4096 {
            self.0.clear();
        }
        self.0.insert(tme.table_id(), (raw, shape.clone()));
        Ok(shape)
    }
}

/// What the table map says of each column.
pub struct Shape {
    columns: Vec<ColumnSpec>,
    /// Column names (`binlog_row_metadata=FULL`); empty when not sent.
    pub names: Vec<String>,
    /// ENUM and SET labels as the table had them when the rows were written
    /// (`binlog_row_metadata=FULL`), per column; `None` for other columns or
    /// when not sent.
    pub labels: Vec<Option<Vec<String>>>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// How many metadata bytes the table map holds for a column of this
/// (raw) type; `None` for types a rows event never carries.
fn meta_len(ty: ColumnType) -> Option<usize> {
    use ColumnType::*;
    Some(match ty {
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_DOUBLE
        | MYSQL_TYPE_FLOAT
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_TIME2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_JSON
        | MYSQL_TYPE_VECTOR => 1,
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_SET | MYSQL_TYPE_ENUM | MYSQL_TYPE_STRING | MYSQL_TYPE_BIT => 2,
        MYSQL_TYPE_TYPED_ARRAY => return None,
        _ => 0,
    })
}

/// The column's type as its values are stored, and whether its metadata
/// says something the value parser would misread (it indexes metadata and
/// sizes buffers from it without checks).
fn real_type(raw: ColumnType, meta: &[u8]) -> io::Result<ColumnType> {
    use ColumnType::*;
    let ty = match raw {
        // Not used since before row-based replication: it is NEWDATE.
        MYSQL_TYPE_DATE => MYSQL_TYPE_NEWDATE,
        MYSQL_TYPE_STRING if meta[0] != 0 => match meta[0] | 0x30 {
            247 => MYSQL_TYPE_ENUM,
            248 => MYSQL_TYPE_SET,
            254 => MYSQL_TYPE_STRING,
            _ => return Err(invalid("a CHAR column's metadata names an unknown type")),
        },
        other => other,
    };
    // The value parser indexes the metadata it expects of the type without
    // checking: VAR_STRING (never in rows events, no metadata in the table
    // map) reads two bytes.
    let needed = if ty == MYSQL_TYPE_VAR_STRING { Some(2) } else { meta_len(ty) };
    if needed.is_none_or(|n| meta.len() < n) {
        return Err(invalid("a column's metadata in the table map is too short for its type"));
    }
    let ok = match ty {
        // precision 1..=65, scale 0..=30 and at most the precision.
        MYSQL_TYPE_NEWDECIMAL => (1..=65).contains(&meta[0]) && meta[1] <= 30 && meta[1] <= meta[0],
        MYSQL_TYPE_TIME2 | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIMESTAMP2 => meta[0] <= 6,
        MYSQL_TYPE_JSON => (1..=4).contains(&meta[0]),
        _ => true,
    };
    if !ok {
        return Err(invalid("a column's metadata in the table map is out of range"));
    }
    Ok(ty)
}

/// Reads the table map once.
pub fn shape(tme: &TableMapEvent<'_>) -> io::Result<Shape> {
    let count = usize::try_from(tme.columns_count())
        .ok()
        .filter(|n| *n <= MAX_COLUMNS)
        .ok_or_else(|| invalid("the table map has too many columns"))?;
    // The metadata of all columns, one after another: walked once (the
    // per-column lookup of mysql_common walks from the start every time).
    let (all_meta, optional) = tme_metadata(tme)?;
    check_optional_metadata(&optional)?;
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let mut signedness = extractor.iter_signedness();
    let mut columns = Vec::with_capacity(count);
    let mut meta = all_meta.as_slice();
    for i in 0..count {
        let raw = tme
            .get_raw_column_type(i)
            .map_err(|_| invalid("the table map has a column of unknown type"))?
            .ok_or_else(|| invalid("the table map has fewer column types than columns"))?;
        let len = meta_len(raw).ok_or_else(|| invalid("the table map has a column of a type rows never carry"))?;
        let (this, rest) = meta.split_at_checked(len).ok_or_else(|| invalid("the table map's column metadata is truncated"))?;
        meta = rest;
        let ty = real_type(raw, this)?;
        let unsigned = ty.is_numeric_type().then(|| signedness.next()).flatten().unwrap_or_default();
        columns.push(ColumnSpec { ty, meta: this.to_vec(), unsigned });
    }
    let mut names = Vec::new();
    for name in extractor.iter_column_name() {
        names.push(name?.name().into_owned());
    }
    // The label lists come in column order, ENUMs in one list, SETs in another.
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta() {
        let text = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
        match field? {
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values() {
                    enums.push(e?.values().iter().map(|x| text(x.value_raw())).collect::<Vec<_>>());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for e in v.iter_values() {
                    sets.push(e?.values().iter().map(|x| text(x.value_raw())).collect::<Vec<_>>());
                }
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let labels = columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::MYSQL_TYPE_ENUM => enums.next(),
            ColumnType::MYSQL_TYPE_SET => sets.next(),
            _ => None,
        })
        .collect();
    Ok(Shape { columns, names, labels })
}

/// The table map's column metadata block, every column's one after
/// another, and its optional metadata. mysql_common keeps the first
/// private (and its per-column lookup walks from the first column each
/// time): re-serialize the event and read it.
fn tme_metadata(tme: &TableMapEvent<'_>) -> io::Result<(Vec<u8>, Vec<u8>)> {
    use mysql_common::proto::MySerialize;
    let mut raw = Vec::new();
    tme.serialize(&mut raw);
    let mut buf = ParseBuf(&raw);
    eat(&mut buf, 8)?; // table id, flags
    for _ in 0..2 {
        // database and table name: length, bytes, NUL
        let len = eat(&mut buf, 1)?[0];
        eat(&mut buf, usize::from(len) + 1)?;
    }
    let count = lenenc(&mut buf)?;
    eat(&mut buf, usize::try_from(count).map_err(|_| invalid("too many columns"))?)?;
    let len = lenenc(&mut buf)?;
    let meta = eat(&mut buf, usize::try_from(len).map_err(|_| invalid("metadata too long"))?)?.to_vec();
    eat(&mut buf, usize::try_from(count.div_ceil(8)).map_err(|_| invalid("too many columns"))?)?; // nullable bitmap
    Ok((meta, buf.0.to_vec()))
}

/// Checks the ENUM and SET label lists of the optional metadata, which
/// mysql_common allocates for by the count they claim before reading them.
fn check_optional_metadata(optional: &[u8]) -> io::Result<()> {
    const SET_STR_VALUE: u8 = 5;
    const ENUM_STR_VALUE: u8 = 6;
    let mut buf = ParseBuf(optional);
    while !buf.is_empty() {
        let kind = eat(&mut buf, 1)?[0];
        let len = usize::try_from(lenenc(&mut buf)?).map_err(|_| invalid("optional metadata too long"))?;
        let mut field = ParseBuf(eat(&mut buf, len)?);
        if matches!(kind, SET_STR_VALUE | ENUM_STR_VALUE) {
            while !field.is_empty() {
                // Each label takes at least its length byte.
                let labels = lenenc(&mut field)?;
                if labels > field.len() as u64 {
                    return Err(invalid("the table map's ENUM/SET labels are truncated"));
                }
                for _ in 0..labels {
                    let len = usize::try_from(lenenc(&mut field)?).map_err(|_| invalid("a label too long"))?;
                    eat(&mut field, len)?;
                }
            }
        }
    }
    Ok(())
}

/// A length-encoded integer.
fn lenenc(buf: &mut ParseBuf<'_>) -> io::Result<u64> {
    Ok(match eat(buf, 1)?[0] {
        n @ 0..=0xfa => u64::from(n),
        0xfc => le(eat(buf, 2)?),
        0xfd => le(eat(buf, 3)?),
        0xfe => le(eat(buf, 8)?),
        _ => return Err(invalid("a length-encoded integer is malformed")),
    })
}

/// A little-endian unsigned integer of up to 8 bytes.
pub(crate) fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// One image: the values of the columns present in it, in column order.
fn image<'a>(buf: &mut ParseBuf<'a>, shape: &'a Shape, present: &[bool]) -> io::Result<Vec<MyValue>> {
    let count = present.iter().filter(|p| **p).count();
    let nulls: &[u8] = buf.parse(count.div_ceil(8))?;
    let mut values = Vec::with_capacity(count);
    for (idx, (col, _)) in shape.columns.iter().zip(present).filter(|(_, p)| **p).enumerate() {
        if nulls[idx / 8] & (1 << (idx % 8)) != 0 {
            values.push(MyValue::NULL);
            continue;
        }
        values.push(value(buf, col)?);
    }
    Ok(values)
}

fn eat<'a>(buf: &mut ParseBuf<'a>, n: usize) -> io::Result<&'a [u8]> {
    buf.checked_eat(n).ok_or_else(|| invalid("a value runs past the end of the rows event"))
}

fn be(bytes: &[u8]) -> i64 {
    bytes.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b))
}

/// Fractional seconds of TIME2/DATETIME2 (`dec` digits): big-endian,
/// signed, scaled to microseconds.
fn frac_us(buf: &mut ParseBuf<'_>, dec: u8) -> io::Result<i64> {
    let signed = |b: &[u8]| {
        let v = be(b);
        let bits = 8 * b.len() as u32;
        if v >= 1 << (bits - 1) {
            v - (1 << bits)
        } else {
            v
        }
    };
    Ok(match dec {
        1 | 2 => signed(eat(buf, 1)?) * 10_000,
        3 | 4 => signed(eat(buf, 2)?) * 100,
        5 | 6 => signed(eat(buf, 3)?),
        _ => 0,
    })
}

/// One value of a column. JSON, TIME2, DATETIME2 and DECIMAL are decoded
/// here (mysql_common's versions overflow on some inputs, and recurse
/// without bound in JSON); the rest by mysql_common, with the metadata
/// [`shape`] checked.
fn value<'a>(buf: &mut ParseBuf<'a>, col: &'a ColumnSpec) -> io::Result<MyValue> {
    use ColumnType::*;
    match col.ty {
        MYSQL_TYPE_JSON => {
            let len_bytes = eat(buf, usize::from(col.meta[0]))?;
            let len = len_bytes.iter().rev().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            let doc = eat(buf, len)?;
            Ok(MyValue::Bytes(crate::json::to_text(doc)?.into_bytes()))
        }
        MYSQL_TYPE_TIME2 => {
            // MySQL's my_time_packed_from_binary and TIME_from_longlong_time_packed.
            let dec = col.meta[0];
            let packed = if dec >= 5 {
                be(eat(buf, 6)?) - 0x8000_0000_0000
            } else {
                let mut int = be(eat(buf, 3)?) - 0x80_0000;
                let mut frac = match dec {
                    1 | 2 => be(eat(buf, 1)?),
                    3 | 4 => be(eat(buf, 2)?),
                    _ => 0,
                };
                if int < 0 && frac > 0 {
                    int += 1;
                    frac -= if dec <= 2 { 0x100 } else { 0x1_0000 };
                }
                (int << 24) + frac * if dec <= 2 { 10_000 } else { 100 }
            };
            let neg = packed < 0;
            let abs = packed.abs();
            let hms = abs >> 24;
            let hours = ((hms >> 12) % (1 << 10)) as u32;
            Ok(MyValue::Time(neg, hours / 24, (hours % 24) as u8, ((hms >> 6) % 64) as u8, (hms % 64) as u8, (abs % (1 << 24)) as u32))
        }
        MYSQL_TYPE_DATETIME2 => {
            // MySQL's my_datetime_packed_from_binary and TIME_from_longlong_datetime_packed.
            let int = be(eat(buf, 5)?) - 0x80_0000_0000;
            let frac = frac_us(buf, col.meta[0])?;
            let packed = (i128::from(int) << 24) + i128::from(frac);
            let abs = packed.abs();
            let ymdhms = abs >> 24;
            let (ymd, hms) = (ymdhms >> 17, ymdhms % (1 << 17));
            let ym = ymd >> 5;
            Ok(MyValue::Date(
                (ym / 13) as u16,
                (ym % 13) as u8,
                (ymd % 32) as u8,
                (hms >> 12) as u8,
                ((hms >> 6) % 64) as u8,
                (hms % 64) as u8,
                (abs % (1 << 24)) as u32,
            ))
        }
        MYSQL_TYPE_NEWDECIMAL => Ok(MyValue::Bytes(decimal(buf, usize::from(col.meta[0]), usize::from(col.meta[1]))?.into_bytes())),
        _ => match buf.parse::<BinlogValue<'a>>((col.ty, col.meta.as_slice(), col.unsigned, false))? {
            BinlogValue::Value(v) => Ok(v),
            _ => Err(invalid("a value of unexpected form")),
        },
    }
}

/// A DECIMAL(precision, scale) in MySQL's binary form (decimal2bin) as
/// text: groups of 9 digits in 4 bytes, shorter groups at the ends in
/// fewer, big-endian, the sign in the top bit (negatives inverted). Here
/// rather than in mysql_common, which multiplies digits out of range (a
/// server's bytes are not checked) with overflow.
pub(crate) fn decimal(buf: &mut ParseBuf<'_>, precision: usize, scale: usize) -> io::Result<String> {
    const DIG_TO_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = precision - scale; // shape checked scale <= precision
    let (intg_full, intg_part, frac_full, frac_part) = (intg / 9, intg % 9, scale / 9, scale % 9);
    let size = intg_full * 4 + DIG_TO_BYTES[intg_part] + frac_full * 4 + DIG_TO_BYTES[frac_part];
    let mut raw = eat(buf, size)?.to_vec();
    let Some(first) = raw.first_mut() else {
        return Err(invalid("a DECIMAL of no digits"));
    };
    *first ^= 0x80;
    let negative = *first & 0x80 != 0;
    if negative {
        raw.iter_mut().for_each(|b| *b = !*b);
    }
    let mut at = 0;
    let mut group = |digits: usize, out: &mut String| -> io::Result<()> {
        let len = if digits == 9 { 4 } else { DIG_TO_BYTES[digits] };
        if len == 0 {
            return Ok(());
        }
        let v = raw[at..at + len].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        at += len;
        if v >= 10u64.pow(digits as u32) {
            return Err(invalid("a DECIMAL digit group out of range"));
        }
        crate::types::push_digits(out, v, digits);
        Ok(())
    };
    let mut int = String::new();
    group(intg_part, &mut int)?;
    for _ in 0..intg_full {
        group(9, &mut int)?;
    }
    let mut frac = String::new();
    for _ in 0..frac_full {
        group(9, &mut frac)?;
    }
    group(frac_part, &mut frac)?;
    let int = int.trim_start_matches('0');
    let zero = int.is_empty() && frac.bytes().all(|b| b == b'0');
    let mut text = String::with_capacity(precision + 3);
    if negative && !zero {
        text.push('-');
    }
    text.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    Ok(text)
}

type Images = (Option<Vec<MyValue>>, Option<Vec<MyValue>>);

/// Every (before, after) pair of a rows event.
pub fn rows<'a>(event: &'a RowsEventData<'a>, shape: &'a Shape) -> io::Result<Vec<Images>> {
    // Checked first: the column bitmaps are sliced to this count.
    if event.num_columns() != shape.columns.len() as u64 {
        return Err(invalid("the rows event and its table map disagree on the number of columns"));
    }
    let n = shape.columns.len();
    let before: Option<Vec<bool>> = event.columns_before_image().map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
    let after: Option<Vec<bool>> = event.columns_after_image().map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
    let mut buf = ParseBuf(event.rows_data());
    let mut out = Vec::new();
    while !buf.is_empty() {
        let left = buf.len();
        let b = before.as_deref().map(|p| image(&mut buf, shape, p)).transpose()?;
        let a = after.as_deref().map(|p| image(&mut buf, shape, p)).transpose()?;
        // Images of no columns take no bytes: more row data would never end.
        if buf.len() == left {
            return Err(invalid("a rows event's images name no columns but it has row data"));
        }
        out.push((b, a));
    }
    Ok(out)
}

/// Checks the column count of a rows event's body (`event_type`: the raw
/// event type) before mysql_common parses it: it sizes the column bitmaps
/// from it unchecked. Assumes the 6-byte table id every server since MySQL
/// 5.1 writes.
pub fn check_rows_header(event_type: u8, body: &[u8]) -> io::Result<()> {
    let mut buf = ParseBuf(body);
    eat(&mut buf, 8)?; // table id, flags
    if matches!(event_type, 30..=32 | 39) {
        // Version 2: extra data, its length counting its own 2 bytes.
        let extra = u16::from_le_bytes(eat(&mut buf, 2)?.try_into().map_err(|_| invalid("short"))?);
        eat(&mut buf, usize::from(extra).saturating_sub(2))?;
    }
    let count = lenenc(&mut buf)?;
    if count > MAX_COLUMNS as u64 {
        return Err(invalid("a rows event has too many columns"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{column_type, from_binlog};

    #[test]
    fn decimals_decode_as_mysql_writes_them() {
        // MySQL's decimal2bin examples: DECIMAL(14,4).
        let dec = |raw: &[u8], p, s| decimal(&mut ParseBuf(raw), p, s);
        assert_eq!(dec(&[0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2], 14, 4).unwrap(), "1234567890.1234");
        assert_eq!(dec(&[0x7e, 0xf2, 0x04, 0xc7, 0x2d, 0xfb, 0x2d], 14, 4).unwrap(), "-1234567890.1234");
        // DECIMAL(10,2): 0.50, -0.05 and 0.
        assert_eq!(dec(&[0x80, 0, 0, 0, 50], 10, 2).unwrap(), "0.50");
        assert_eq!(dec(&[0x7f, 0xff, 0xff, 0xff, !5], 10, 2).unwrap(), "-0.05");
        assert_eq!(dec(&[0x80, 0, 0, 0, 0], 10, 2).unwrap(), "0.00");
        assert_eq!(dec(&[0x80, 0, 0, 0, 7], 10, 0).unwrap(), "7");
        assert!(dec(&[0x80, 0, 0, 0], 10, 2).is_err());
    }

    /// MySQL stores JSON in the binlog in its binary form; this is
    /// `{"a": 1}` as MySQL writes it (json_binary.h: a small object with one
    /// key and an inlined int16), behind the column's 4-byte length.
    #[test]
    fn mysql_binary_json_becomes_json_text() {
        let body = [0x01, 0x00, 0x0c, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a'];
        let mut bytes = (body.len() as u32 + 1).to_le_bytes().to_vec();
        bytes.push(0x00); // small object
        bytes.extend_from_slice(&body);
        let mut buf = ParseBuf(&bytes);
        let v: BinlogValue<'_> = buf.parse((ColumnType::MYSQL_TYPE_JSON, &[4u8][..], false, false)).unwrap();
        let v = mysql_common::value::Value::try_from(v).unwrap();
        let col = column_type("doc".into(), "json", "json", true, false, None, None, None, Some("utf8mb4".into()));
        let out = from_binlog(&col, v).unwrap();
        let riffle_core::Value::Json(text) = out else { panic!("expected JSON, got {out:?}") };
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), serde_json::json!({"a": 1}));
    }
}
