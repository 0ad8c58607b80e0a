//! Reading back what the file formats wrote, for `riffle verify`: each
//! event's operation, position and row, every cell in a canonical text of
//! its format. Two cells are equal exactly when they hold the same value in
//! that format; `riffle verify` writes the source's rows through the same
//! format and reads them back here, so both sides meet in one form and a
//! Parquet decimal is compared with a Postgres numeric as the value the
//! file holds, digit for digit.
//!
//! Never panics on a malformed file: an error says which file and what.

use crate::FormatError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType as A;

/// What the reader keeps of each row.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// The key columns, whose cells make [`ReadRow::key`] (none: the whole
    /// row is the key).
    pub key: Vec<String>,
    /// The table's number of columns: a row with fewer is partial (columns
    /// the source did not send in that event).
    pub columns: usize,
    /// Keep every cell ([`ReadRow::cells`]), not only the digest.
    pub keep_cells: bool,
}

/// A row's cells: column name and canonical text (`None` for NULL).
pub type Cells = Vec<(String, Option<String>)>;

/// One event as a file holds it: its key and a digest of its row, so a
/// table's worth of rows is compared without holding their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRow {
    /// `r`, `c`, `u`, `d`, `t` (`r` for files without metadata).
    pub op: String,
    /// The position key (`None` in files without metadata).
    pub position: Option<String>,
    /// `id=5, region=eu`: the key cells as shown (the whole row for a
    /// keyless table).
    pub key: String,
    /// Of the row's (column, cell) pairs in file order: equal rows, equal
    /// digests ([`digest`]).
    pub digest: u64,
    /// Fewer columns than the table has: the others were not sent.
    pub partial: bool,
    /// Every cell, with [`Shape::keep_cells`] or when partial.
    pub cells: Option<Cells>,
}

/// The digest of `cells`, as the readers compute it while reading.
pub fn digest(cells: &Cells) -> u64 {
    use std::hash::Hasher;
    let shape = Shape::default();
    let mut b = RowBuilder::new(&shape, false);
    for (c, v) in cells {
        b.cell(c, v.as_deref().map(str::as_bytes));
    }
    b.digest.finish()
}

/// The digests' hash: 64 bits, fixed seed (digests are compared within
/// one run, also after spilling to disk), several times faster than
/// std's SipHash.
static DIGEST: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x7269_6666_6c65);

/// Builds a [`ReadRow`] cell by cell.
struct RowBuilder<'a> {
    shape: &'a Shape,
    digest: foldhash::quality::FoldHasher<'static>,
    key: Vec<Option<String>>,
    whole: String,
    n: usize,
    /// Kept when asked for, or when the row is known to be partial.
    cells: Option<Cells>,
}

impl<'a> RowBuilder<'a> {
    fn new(shape: &'a Shape, partial: bool) -> Self {
        RowBuilder {
            shape,
            digest: std::hash::BuildHasher::build_hasher(&DIGEST),
            key: vec![None; shape.key.len()],
            whole: String::new(),
            n: 0,
            cells: (shape.keep_cells || partial).then(Vec::new),
        }
    }

    fn cell(&mut self, name: &str, text: Option<&[u8]>) {
        use std::hash::Hasher;
        self.n += 1;
        self.digest.write(name.as_bytes());
        self.digest.write_u8(0xff);
        match text {
            None => self.digest.write_u8(0),
            Some(t) => {
                self.digest.write_u8(1);
                self.digest.write(t);
                self.digest.write_u8(0xff);
            }
        }
        let shown = || text.map_or_else(|| "null".to_string(), |t| String::from_utf8_lossy(t).into_owned());
        if self.shape.key.is_empty() {
            if !self.whole.is_empty() {
                self.whole.push_str(", ");
            }
            self.whole.push_str(name);
            self.whole.push('=');
            self.whole.push_str(&shown());
        } else if let Some(i) = self.shape.key.iter().position(|k| k == name) {
            self.key[i] = Some(shown());
        }
        if let Some(cells) = &mut self.cells {
            cells.push((name.to_string(), text.map(|t| String::from_utf8_lossy(t).into_owned())));
        }
    }

    fn finish(self, op: String, position: Option<String>, partial: bool) -> ReadRow {
        use std::hash::Hasher;
        let partial = partial || self.n < self.shape.columns;
        let key = if self.shape.key.is_empty() {
            self.whole
        } else {
            // `k1=v1, k2=v2`, in one allocation: made for every row.
            let mut key = String::with_capacity(
                self.shape.key.iter().zip(&self.key).map(|(k, v)| k.len() + 3 + v.as_ref().map_or(4, String::len)).sum(),
            );
            for (i, (k, v)) in self.shape.key.iter().zip(&self.key).enumerate() {
                if i > 0 {
                    key.push_str(", ");
                }
                key.push_str(k);
                key.push('=');
                key.push_str(v.as_deref().unwrap_or("null"));
            }
            key
        };
        ReadRow { op, position, key, digest: self.digest.finish(), partial, cells: self.cells }
    }
}

/// The rows riffle's Parquet writer would write for `events` and
/// [`read_rows`] read back, made from the values directly, without the
/// file: what `riffle verify` compares a Parquet sink's rows with, at a
/// fraction of the round trip's cost. Each cell is the text [`cell`] makes
/// of the value the writer stores. `Ok(false)`, having sent nothing, when an
/// event is not a whole row read by a snapshot (the caller writes the file
/// and reads it back instead).
pub fn parquet_rows(
    table: &riffle_core::TableSchema,
    events: &[riffle_core::ChangeEvent],
    shape: &Shape,
    out: &mut dyn FnMut(ReadRow),
) -> Result<bool, FormatError> {
    use riffle_core::{Op, Value};
    let whole = |ev: &riffle_core::ChangeEvent| {
        ev.op == Op::Read
            && ev.after.as_ref().is_some_and(|row| row.len() == table.columns.len() && !row.iter().any(|v| matches!(v, Value::Unavailable)))
    };
    if !events.iter().all(whole) {
        return Ok(false);
    }
    let types: Vec<A> = table.columns.iter().map(|c| crate::parquet::arrow_type(&c.data_type)).collect();
    let mut buf = String::new();
    for ev in events {
        let row = ev.after.as_deref().expect("checked above");
        let mut b = RowBuilder::new(shape, false);
        for ((c, a), v) in table.columns.iter().zip(&types).zip(row) {
            buf.clear();
            let present = parquet_cell(a, v, &mut buf).map_err(|why| FormatError::Setting {
                what: format!("column {} of the event at position {}: {why}", c.name, ev.position),
            })?;
            b.cell(&c.name, present.then_some(buf.as_bytes()));
        }
        out(b.finish("r".into(), None, false));
    }
    Ok(true)
}

/// [`cell`]'s text of the value riffle's Parquet writer stores for `v` in
/// a column of type `a`; false for NULL. The writer's conversions, cell's
/// forms: `parquet_rows_equal_the_round_trip` holds the two together.
fn parquet_cell(a: &A, v: &riffle_core::Value, out: &mut String) -> Result<bool, String> {
    use riffle_core::Value as V;
    use std::fmt::Write;
    let unfit = || format!("{} does not fit a Parquet {a} column", crate::value::describe(v));
    let _ = match (a, v) {
        (_, V::Null | V::Unavailable) => return Ok(false),
        (A::Boolean, V::Bool(b)) => write!(out, "{b}"),
        (A::Int16, V::Int(i)) => int(out, i16::try_from(*i).map_err(|_| unfit())?),
        (A::Int16, V::UInt(u)) => int(out, i16::try_from(*u).map_err(|_| unfit())?),
        (A::Int32, V::Int(i)) => int(out, i32::try_from(*i).map_err(|_| unfit())?),
        (A::Int32, V::UInt(u)) => int(out, i32::try_from(*u).map_err(|_| unfit())?),
        (A::Int64, V::Int(i)) => int(out, *i),
        (A::Int64, V::UInt(u)) => int(out, i64::try_from(*u).map_err(|_| unfit())?),
        (A::UInt64, V::UInt(u)) => int(out, *u),
        (A::UInt64, V::Int(i)) => int(out, u64::try_from(*i).map_err(|_| unfit())?),
        (A::Float32, V::Float32(f)) => write!(out, "{f:?}"),
        (A::Float64, V::Float64(f)) => write!(out, "{f:?}"),
        (A::Float64, V::Float32(f)) => write!(out, "{:?}", f64::from(*f)),
        (A::Decimal128(p, s), V::Decimal(t) | V::Text(t)) => {
            let n = crate::parquet::decimal_i128(t, u32::try_from(*s).map_err(|_| unfit())?, *p).ok_or_else(unfit)?;
            write!(out, "{n}e-{s}")
        }
        (A::Decimal256(p, s), V::Decimal(t) | V::Text(t)) => {
            let n = crate::parquet::decimal_i256(t, u32::try_from(*s).map_err(|_| unfit())?, *p).ok_or_else(unfit)?;
            write!(out, "{n}e-{s}")
        }
        (A::Date32, V::Text(t)) => int(out, crate::temporal::date_days(t).and_then(|d| i32::try_from(d).ok()).ok_or_else(unfit)?),
        (A::Time64(_), V::Text(t)) => {
            int(out, crate::temporal::time_micros(t).filter(|us| (0..=crate::parquet::DAY_MICROS).contains(us)).ok_or_else(unfit)?)
        }
        (A::Timestamp(_, tz), V::Text(t)) => {
            write!(out, "{}{}", crate::temporal::timestamp_micros(t).ok_or_else(unfit)?, tz.as_deref().unwrap_or(""))
        }
        (A::Binary, V::Bytes(b)) => {
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            Ok(())
        }
        (A::Utf8, V::Text(s) | V::Decimal(s) | V::Json(s)) => {
            out.push_str(s);
            Ok(())
        }
        (A::Utf8, other) => {
            // The writer's text for a non-text value in a text column.
            let mut bytes = Vec::new();
            match other {
                V::Array(_) => crate::value::write_json(other, &mut bytes),
                V::Bytes(b) => {
                    use base64::Engine;
                    bytes.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes())
                }
                _ => crate::value::write_csv(other, &mut bytes),
            }
            out.push_str(std::str::from_utf8(&bytes).map_err(|_| unfit())?);
            Ok(())
        }
        (A::List(item), V::Array(items)) => {
            out.push('[');
            for (j, x) in items.iter().enumerate() {
                if matches!(x, V::Array(_)) && !matches!(item.data_type(), A::List(_)) {
                    return Err(format!("a multi-dimensional array: {}", unfit()));
                }
                if j > 0 {
                    out.push(',');
                }
                if !parquet_cell(item.data_type(), x, out)? {
                    out.push_str("null");
                }
            }
            out.push(']');
            Ok(())
        }
        _ => return Err(unfit()),
    };
    Ok(true)
}

fn bad(what: impl std::fmt::Display) -> FormatError {
    FormatError::Setting { what: format!("the file cannot be read back: {what}") }
}

/// The events of a file written in `extension`'s format (`jsonl`, `csv`,
/// `avro`, `parquet`), handed to `out` in file order as they are read.
pub fn read_rows(extension: &str, bytes: bytes::Bytes, shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    // The Avro and Parquet readers are other crates': a file that makes one
    // panic (a tampered or truncated object) is an error about that file,
    // never the end of riffle.
    let read = std::panic::AssertUnwindSafe(|| match extension {
        "jsonl" => read_jsonl(&bytes, shape, out),
        "csv" => read_csv(&bytes, shape, out),
        "avro" => read_avro(&bytes, shape, out),
        "parquet" => read_parquet(bytes.clone(), shape, out),
        other => Err(bad(format!("unknown file format {other:?}"))),
    });
    std::panic::catch_unwind(read).unwrap_or_else(|_| Err(bad(format!("the {extension} reader failed on it (a malformed file)"))))
}

/// Debezium's `unavailable.value.placeholder`, as text and as base64 bytes.
const DEBEZIUM_UNAVAILABLE: &str = "__debezium_unavailable_value";
const DEBEZIUM_UNAVAILABLE_BASE64: &str = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==";

fn read_jsonl(bytes: &[u8], shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    use serde_json::Value as J;
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: J = serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        let row = |o: Option<&J>, op: String, position: Option<String>| {
            let object = o.and_then(J::as_object);
            // Debezium's placeholder for a value the source did not send
            // (riffle leaves such columns out): the row is partial.
            let sent = |v: &J| v.as_str() != Some(DEBEZIUM_UNAVAILABLE) && v.as_str() != Some(DEBEZIUM_UNAVAILABLE_BASE64);
            let partial = object.is_some_and(|m| m.len() < shape.columns || !m.values().all(sent));
            let mut b = RowBuilder::new(shape, partial);
            for (k, v) in object.into_iter().flatten().filter(|(_, v)| sent(v)) {
                let text = (!v.is_null()).then(|| v.to_string());
                b.cell(k, text.as_deref().map(str::as_bytes));
            }
            b.finish(op, position, false)
        };
        match v.get("op").and_then(J::as_str) {
            Some(op) => {
                let image = if op == "d" { v.get("before").filter(|b| !b.is_null()).or_else(|| v.get("key")) } else { v.get("after") };
                let position = v.pointer("/source/position").and_then(J::as_str).map(str::to_string);
                out(row(image, op.to_string(), position));
            }
            // Without metadata a line is the row itself.
            None => out(row(Some(&v), "r".into(), None)),
        }
    }
    Ok(())
}

/// RFC 4180 fields, each as written (quotes included), so an empty
/// unquoted field (NULL) differs from `""` (an empty string).
fn csv_records(bytes: &[u8]) -> Result<Vec<Vec<&[u8]>>, FormatError> {
    let (mut records, mut record, mut start, mut quoted, mut i) = (Vec::new(), Vec::new(), 0usize, false, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' if quoted => {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
            b'"' if i == start => quoted = true,
            b',' if !quoted => {
                record.push(&bytes[start..i]);
                start = i + 1;
            }
            b'\n' if !quoted => {
                let end = if i > start && bytes[i - 1] == b'\r' { i - 1 } else { i };
                record.push(&bytes[start..end]);
                records.push(std::mem::take(&mut record));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(bad("a quoted field does not end"));
    }
    if start < bytes.len() {
        record.push(&bytes[start..]);
        records.push(record);
    }
    Ok(records)
}

fn unquote(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.into_owned(),
    }
}

fn read_csv(bytes: &[u8], shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    let records = csv_records(bytes)?;
    let Some((header, rows)) = records.split_first() else { return Ok(()) };
    let names: Vec<String> = header.iter().map(|f| unquote(f)).collect();
    let data = names.iter().position(|n| n == "__op").unwrap_or(names.len());
    let at = |name: &str| names.iter().position(|n| n == name);
    let (op_at, position_at, unavailable_at) = (at("__op"), at("__position"), at("__unavailable"));
    for (n, fields) in rows.iter().enumerate() {
        if fields.len() != names.len() {
            return Err(bad(format!("row {} has {} fields, the header {}", n + 2, fields.len(), names.len())));
        }
        let unavailable: Vec<String> = unavailable_at
            .map(|i| unquote(fields[i]).split(';').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let mut b = RowBuilder::new(shape, !unavailable.is_empty());
        for (name, f) in names[..data].iter().zip(fields) {
            if !unavailable.contains(name) {
                b.cell(name, (!f.is_empty()).then_some(*f));
            }
        }
        let op = op_at.map_or_else(|| "r".to_string(), |i| unquote(fields[i]));
        out(b.finish(op, position_at.map(|i| unquote(fields[i])), !unavailable.is_empty()));
    }
    Ok(())
}

fn read_avro(bytes: &[u8], shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    use apache_avro::types::Value as V;
    let reader = apache_avro::Reader::new(bytes).map_err(bad)?;
    let field = |fields: &[(String, V)], name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let unwrap = |v: Option<V>| match v {
        Some(V::Union(_, inner)) => Some(*inner),
        other => other,
    };
    for record in reader {
        let V::Record(fields) = record.map_err(bad)? else { return Err(bad("a record that is not an envelope")) };
        let Some(V::String(op)) = field(&fields, "op") else { return Err(bad("an envelope without op")) };
        let position = match unwrap(field(&fields, "source")) {
            Some(V::Record(source)) => match field(&source, "position") {
                Some(V::String(p)) => Some(p),
                _ => None,
            },
            _ => None,
        };
        let unavailable: Vec<String> = match field(&fields, "unavailable") {
            Some(V::Array(items)) => items.into_iter().filter_map(|v| if let V::String(s) = v { Some(s) } else { None }).collect(),
            _ => Vec::new(),
        };
        let mut b = RowBuilder::new(shape, !unavailable.is_empty());
        if let Some(V::Record(cols)) = unwrap(field(&fields, if op == "d" { "before" } else { "after" })) {
            for (name, v) in cols.into_iter().filter(|(name, _)| !unavailable.contains(name)) {
                let text = match v {
                    V::Union(_, inner) => avro_text(*inner),
                    other => avro_text(other),
                };
                b.cell(&name, text.as_deref().map(str::as_bytes));
            }
        }
        out(b.finish(op, position, !unavailable.is_empty()));
    }
    Ok(())
}

/// An Avro value's canonical text (`None` for null).
fn avro_text(v: apache_avro::types::Value) -> Option<String> {
    use apache_avro::types::Value as V;
    match v {
        V::Null => None,
        V::Int(i) | V::Date(i) => Some(i.to_string()),
        V::Long(l) => Some(l.to_string()),
        V::String(s) => Some(s),
        // The type stays in the text: two types never meet.
        other => Some(format!("{other:?}")),
    }
}

fn read_parquet(bytes: bytes::Bytes, shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(bad)?;
    for batch in builder.build().map_err(bad)? {
        read_batch(&batch.map_err(bad)?, shape, out)?;
    }
    Ok(())
}

fn read_batch(batch: &RecordBatch, shape: &Shape, out: &mut dyn FnMut(ReadRow)) -> Result<(), FormatError> {
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let data = names.iter().position(|n| *n == "__op").unwrap_or(names.len());
    let at = |name: &str| names.iter().position(|n| *n == name);
    let (op_at, position_at, unavailable_at) = (at("__op"), at("__position"), at("__unavailable"));
    let text = |i: Option<usize>, row: usize| -> Result<Option<String>, FormatError> {
        let mut buf = String::new();
        Ok(match i {
            Some(i) => cell(batch.column(i).as_ref(), row, &mut buf)?.then_some(buf),
            None => None,
        })
    };
    let mut buf = String::new();
    for r in 0..batch.num_rows() {
        let unavailable: Vec<String> = match unavailable_at.map(|i| batch.column(i)) {
            Some(col) if matches!(col.data_type(), A::List(_)) && !col.is_null(r) && col.as_list::<i32>().value_length(r) > 0 => {
                let items = col.as_list::<i32>().value(r);
                let mut names = Vec::new();
                for j in 0..items.len() {
                    let mut s = String::new();
                    if cell(items.as_ref(), j, &mut s)? {
                        names.push(s);
                    }
                }
                names
            }
            _ => Vec::new(),
        };
        let mut b = RowBuilder::new(shape, !unavailable.is_empty());
        for (i, name) in names[..data].iter().enumerate() {
            if !unavailable.iter().any(|u| u == name) {
                buf.clear();
                let present = cell(batch.column(i).as_ref(), r, &mut buf)?;
                b.cell(name, present.then_some(buf.as_bytes()));
            }
        }
        let op = text(op_at, r)?.unwrap_or_else(|| "r".into());
        out(b.finish(op, text(position_at, r)?, !unavailable.is_empty()));
    }
    Ok(())
}

/// An integer's digits (itoa: `write!` is several times slower).
fn int(out: &mut String, n: impl itoa::Integer) -> std::fmt::Result {
    out.push_str(itoa::Buffer::new().format(n));
    Ok(())
}

/// A cell's canonical text, written to `out`: the value itself, every
/// digit and microsecond (floats in their shortest exact form, binary in
/// hex). False for NULL.
fn cell(col: &dyn Array, i: usize, out: &mut String) -> Result<bool, FormatError> {
    use std::fmt::Write;
    if col.is_null(i) {
        return Ok(false);
    }
    let _ = match col.data_type() {
        A::Boolean => write!(out, "{}", col.as_boolean().value(i)),
        A::Int16 => int(out, col.as_primitive::<Int16Type>().value(i)),
        A::Int32 => int(out, col.as_primitive::<Int32Type>().value(i)),
        A::Int64 => int(out, col.as_primitive::<Int64Type>().value(i)),
        A::UInt64 => int(out, col.as_primitive::<UInt64Type>().value(i)),
        A::Float32 => write!(out, "{:?}", col.as_primitive::<Float32Type>().value(i)),
        A::Float64 => write!(out, "{:?}", col.as_primitive::<Float64Type>().value(i)),
        A::Decimal128(_, s) => write!(out, "{}e-{s}", col.as_primitive::<Decimal128Type>().value(i)),
        A::Decimal256(_, s) => write!(out, "{}e-{s}", col.as_primitive::<Decimal256Type>().value(i)),
        A::Date32 => int(out, col.as_primitive::<Date32Type>().value(i)),
        A::Time64(_) => int(out, col.as_primitive::<Time64MicrosecondType>().value(i)),
        A::Timestamp(_, tz) => write!(out, "{}{}", col.as_primitive::<TimestampMicrosecondType>().value(i), tz.as_deref().unwrap_or("")),
        A::Utf8 => {
            out.push_str(col.as_string::<i32>().value(i));
            Ok(())
        }
        A::Binary => {
            for b in col.as_binary::<i32>().value(i) {
                let _ = write!(out, "{b:02x}");
            }
            Ok(())
        }
        A::List(_) => {
            let items = col.as_list::<i32>().value(i);
            out.push('[');
            for j in 0..items.len() {
                if j > 0 {
                    out.push(',');
                }
                if !cell(items.as_ref(), j, out)? {
                    out.push_str("null");
                }
            }
            out.push(']');
            Ok(())
        }
        other => return Err(bad(format!("a Parquet column of type {other}, which riffle does not write"))),
    };
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape { key: vec!["id".into()], columns: 2, keep_cells: true }
    }

    #[test]
    fn csv_keeps_null_and_empty_apart_and_reads_quotes_and_newlines() {
        let file = b"id,note,__op,__position,__unavailable\r\n1,,c,p1,\r\n2,\"\",u,p2,\r\n3,\"a,\"\"b\"\"\r\nc\",d,p3,note\r\n";
        let mut rows = Vec::new();
        read_csv(file, &shape(), &mut |r| rows.push(r)).unwrap();
        assert_eq!(rows[0].cells.as_ref().unwrap(), &vec![("id".to_string(), Some("1".to_string())), ("note".into(), None)]);
        assert_eq!(rows[1].cells.as_ref().unwrap()[1], ("note".into(), Some("\"\"".into())));
        assert_ne!(rows[0].digest, rows[1].digest, "NULL and the empty string differ");
        assert_eq!(rows[0].digest, digest(rows[0].cells.as_ref().unwrap()));
        assert_eq!((rows[2].op.as_str(), rows[2].key.as_str(), rows[2].position.as_deref()), ("d", "id=3", Some("p3")));
        assert!(rows[2].partial, "an unavailable column is left out");
        assert!(read_csv(b"a\r\n\"open", &shape(), &mut |_| {}).is_err());
        assert!(read_csv(b"a,b\r\n1\r\n", &shape(), &mut |_| {}).is_err());
    }

    #[test]
    fn malformed_files_are_errors() {
        for (ext, bytes) in [("jsonl", &b"{not json"[..]), ("avro", b"Obj\x01garbage"), ("parquet", b"PAR1 not really"), ("xml", b"")] {
            assert!(read_rows(ext, bytes::Bytes::from_static(bytes), &shape(), &mut |_| {}).is_err(), "{ext}");
        }
    }
}
