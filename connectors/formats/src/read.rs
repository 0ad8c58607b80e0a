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

/// One event as a file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    /// `r`, `c`, `u`, `d`, `t` (`r` for files without metadata).
    pub op: String,
    /// The position key (`None` in files without metadata).
    pub position: Option<String>,
    /// The row (after image; for a delete the deleted row, as much of it as
    /// the file holds), column by column; a cell is `None` for NULL.
    /// Columns the source did not send in this event are left out.
    pub row: Vec<(String, Option<String>)>,
}

fn bad(what: impl std::fmt::Display) -> FormatError {
    FormatError::Setting { what: format!("the file cannot be read back: {what}") }
}

/// The events of a file written in `extension`'s format (`jsonl`, `csv`,
/// `avro`, `parquet`).
pub fn read_events(extension: &str, bytes: &[u8]) -> Result<Vec<ReadEvent>, FormatError> {
    match extension {
        "jsonl" => read_jsonl(bytes),
        "csv" => read_csv(bytes),
        "avro" => read_avro(bytes),
        "parquet" => read_parquet(bytes),
        other => Err(bad(format!("unknown file format {other:?}"))),
    }
}

fn read_jsonl(bytes: &[u8]) -> Result<Vec<ReadEvent>, FormatError> {
    use serde_json::Value as J;
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: J = serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        let cells = |o: &J| -> Vec<(String, Option<String>)> {
            o.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), (!v.is_null()).then(|| v.to_string()))).collect()).unwrap_or_default()
        };
        match v.get("op").and_then(J::as_str) {
            Some(op) => {
                let image = if op == "d" { v.get("before").filter(|b| !b.is_null()).or_else(|| v.get("key")) } else { v.get("after") };
                let position = v.pointer("/source/position").and_then(J::as_str).map(str::to_string);
                out.push(ReadEvent { op: op.to_string(), position, row: image.map(cells).unwrap_or_default() });
            }
            // Without metadata a line is the row itself.
            None => out.push(ReadEvent { op: "r".into(), position: None, row: cells(&v) }),
        }
    }
    Ok(out)
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

fn read_csv(bytes: &[u8]) -> Result<Vec<ReadEvent>, FormatError> {
    let records = csv_records(bytes)?;
    let Some((header, rows)) = records.split_first() else { return Ok(Vec::new()) };
    let names: Vec<String> = header.iter().map(|f| unquote(f)).collect();
    let data = names.iter().position(|n| n == "__op").unwrap_or(names.len());
    let at = |name: &str| names.iter().position(|n| n == name);
    let (op_at, position_at, unavailable_at) = (at("__op"), at("__position"), at("__unavailable"));
    let mut out = Vec::with_capacity(rows.len());
    for (n, fields) in rows.iter().enumerate() {
        if fields.len() != names.len() {
            return Err(bad(format!("row {} has {} fields, the header {}", n + 2, fields.len(), names.len())));
        }
        let unavailable: Vec<String> = unavailable_at
            .map(|i| unquote(fields[i]).split(';').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let row = names[..data]
            .iter()
            .zip(fields)
            .filter(|(name, _)| !unavailable.contains(name))
            .map(|(name, f)| (name.clone(), (!f.is_empty()).then(|| String::from_utf8_lossy(f).into_owned())))
            .collect();
        out.push(ReadEvent {
            op: op_at.map_or_else(|| "r".to_string(), |i| unquote(fields[i])),
            position: position_at.map(|i| unquote(fields[i])),
            row,
        });
    }
    Ok(out)
}

fn read_avro(bytes: &[u8]) -> Result<Vec<ReadEvent>, FormatError> {
    use apache_avro::types::Value as V;
    let reader = apache_avro::Reader::new(bytes).map_err(bad)?;
    let field = |fields: &[(String, V)], name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let unwrap = |v: Option<V>| match v {
        Some(V::Union(_, inner)) => Some(*inner),
        other => other,
    };
    let mut out = Vec::new();
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
        let image = unwrap(field(&fields, if op == "d" { "before" } else { "after" }));
        let row = match image {
            Some(V::Record(cols)) => cols
                .into_iter()
                .filter(|(name, _)| !unavailable.contains(name))
                .map(|(name, v)| {
                    let v = match v {
                        V::Union(_, inner) => *inner,
                        other => other,
                    };
                    let text = match v {
                        V::Null => None,
                        V::Int(i) | V::Date(i) => Some(i.to_string()),
                        V::Long(l) => Some(l.to_string()),
                        V::String(s) => Some(s),
                        // The type stays in the text: two types never meet.
                        other => Some(format!("{other:?}")),
                    };
                    (name, text)
                })
                .collect(),
            _ => Vec::new(),
        };
        out.push(ReadEvent { op, position, row });
    }
    Ok(out)
}

fn read_parquet(bytes: &[u8]) -> Result<Vec<ReadEvent>, FormatError> {
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes)).map_err(bad)?;
    let mut out = Vec::new();
    for batch in builder.build().map_err(bad)? {
        read_batch(&batch.map_err(bad)?, &mut out)?;
    }
    Ok(out)
}

fn read_batch(batch: &RecordBatch, out: &mut Vec<ReadEvent>) -> Result<(), FormatError> {
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let data = names.iter().position(|n| *n == "__op").unwrap_or(names.len());
    let text = |name: &str, row: usize| -> Result<Option<String>, FormatError> {
        match names.iter().position(|n| *n == name) {
            Some(i) => cell(batch.column(i).as_ref(), row),
            None => Ok(None),
        }
    };
    let unavailable_at = names.iter().position(|n| *n == "__unavailable");
    for r in 0..batch.num_rows() {
        let unavailable: Vec<String> = match unavailable_at.map(|i| batch.column(i)) {
            Some(col) if matches!(col.data_type(), A::List(_)) && !col.is_null(r) => {
                let items = col.as_list::<i32>().value(r);
                (0..items.len()).filter_map(|j| cell(items.as_ref(), j).ok().flatten()).collect()
            }
            _ => Vec::new(),
        };
        let mut row = Vec::with_capacity(data);
        for (i, name) in names[..data].iter().enumerate() {
            if !unavailable.iter().any(|u| u == name) {
                row.push((name.to_string(), cell(batch.column(i).as_ref(), r)?));
            }
        }
        out.push(ReadEvent { op: text("__op", r)?.unwrap_or_else(|| "r".into()), position: text("__position", r)?, row });
    }
    Ok(())
}

/// A cell's canonical text: the value itself, every digit and microsecond
/// (floats in their shortest exact form, binary in hex).
fn cell(col: &dyn Array, i: usize) -> Result<Option<String>, FormatError> {
    if col.is_null(i) {
        return Ok(None);
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok(Some(match col.data_type() {
        A::Boolean => col.as_boolean().value(i).to_string(),
        A::Int16 => col.as_primitive::<Int16Type>().value(i).to_string(),
        A::Int32 => col.as_primitive::<Int32Type>().value(i).to_string(),
        A::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
        A::UInt64 => col.as_primitive::<UInt64Type>().value(i).to_string(),
        A::Float32 => format!("{:?}", col.as_primitive::<Float32Type>().value(i)),
        A::Float64 => format!("{:?}", col.as_primitive::<Float64Type>().value(i)),
        A::Decimal128(_, s) => format!("{}e-{s}", col.as_primitive::<Decimal128Type>().value(i)),
        A::Decimal256(_, s) => format!("{}e-{s}", col.as_primitive::<Decimal256Type>().value(i)),
        A::Date32 => col.as_primitive::<Date32Type>().value(i).to_string(),
        A::Time64(_) => col.as_primitive::<Time64MicrosecondType>().value(i).to_string(),
        A::Timestamp(_, tz) => format!("{}{}", col.as_primitive::<TimestampMicrosecondType>().value(i), tz.as_deref().unwrap_or("")),
        A::Utf8 => col.as_string::<i32>().value(i).to_string(),
        A::Binary => hex(col.as_binary::<i32>().value(i)),
        A::List(_) => {
            let items = col.as_list::<i32>().value(i);
            let cells: Vec<String> =
                (0..items.len()).map(|j| cell(items.as_ref(), j).map(|c| c.unwrap_or_else(|| "null".into()))).collect::<Result<_, _>>()?;
            format!("[{}]", cells.join(","))
        }
        other => return Err(bad(format!("a Parquet column of type {other}, which riffle does not write"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keeps_null_and_empty_apart_and_reads_quotes_and_newlines() {
        let file = b"id,note,__op,__position,__unavailable\r\n1,,c,p1,\r\n2,\"\",u,p2,\r\n3,\"a,\"\"b\"\"\r\nc\",d,p3,note\r\n";
        let events = read_csv(file).unwrap();
        assert_eq!(events[0].row, vec![("id".into(), Some("1".into())), ("note".into(), None)]);
        assert_eq!(events[1].row[1], ("note".into(), Some("\"\"".into())));
        assert_eq!(events[2].op, "d");
        assert_eq!(events[2].position.as_deref(), Some("p3"));
        assert_eq!(events[2].row, vec![("id".into(), Some("3".into()))], "an unavailable column is left out");
        assert!(read_csv(b"a\r\n\"open").is_err());
        assert!(read_csv(b"a,b\r\n1\r\n").is_err());
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(read_events("jsonl", b"{not json").is_err());
        assert!(read_events("avro", b"Obj\x01garbage").is_err());
        assert!(read_events("parquet", b"PAR1 not really").is_err());
        assert!(read_events("xml", b"").is_err());
    }
}
