//! The flat shape: RFC 4180 CSV with a header row.
//!
//! Columns: the table's columns (the after image; for deletes the deleted
//! row; empty for truncates), then, unless metadata is off:
//! `__op`, `__source_ts_ms`, `__position`, `__tx`, `__lsn`, `__before_image`,
//! `__before` (the before image as a JSON object) and `__unavailable` (the
//! names of the table columns whose value the source did not send in this
//! row, `;`-separated; their cells are empty but they are not NULL).

use crate::jsonl::write_row_object;
use crate::value::{write_csv, write_csv_text, write_int};
use riffle_core::{ChangeEvent, TableSchema, Value};
use std::io::Write;

pub const METADATA_COLUMNS: [&str; 8] =
    ["__op", "__source_ts_ms", "__position", "__tx", "__lsn", "__before_image", "__before", "__unavailable"];

pub fn header(schema: &TableSchema, metadata: bool, out: &mut Vec<u8>) {
    let mut first = true;
    let names = schema.columns.iter().map(|c| c.name.as_str());
    let meta = METADATA_COLUMNS.iter().copied().filter(|_| metadata);
    for name in names.chain(meta) {
        if !first {
            out.push(b',');
        }
        first = false;
        write_csv_text(name, out);
    }
    out.extend_from_slice(b"\r\n");
}

pub fn row(event: &ChangeEvent, metadata: bool, out: &mut Vec<u8>) {
    let columns = event.table.columns.len();
    let row = event.row();
    for i in 0..columns {
        if i > 0 {
            out.push(b',');
        }
        if let Some(v) = row.and_then(|r| r.get(i)) {
            write_csv(v, out);
        }
    }
    if metadata {
        if columns > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event.op.code().as_bytes());
        out.push(b',');
        write_int(event.source.ts_ms, out);
        out.push(b',');
        event.position.write_key(out);
        out.push(b',');
        if let Some(tx) = event.source.tx_id {
            write_int(tx, out);
        }
        out.push(b',');
        if let Some(lsn) = event.source.lsn {
            let _ = write!(out, "{lsn}");
        }
        out.push(b',');
        out.extend_from_slice(event.before_image.name().as_bytes());
        out.push(b',');
        if let Some(before) = &event.before {
            let mut json = Vec::new();
            write_row_object(&event.table, before, &mut json);
            write_csv_text(&String::from_utf8_lossy(&json), out);
        }
        out.push(b',');
        if let Some(row) = row {
            let missing: Vec<&str> =
                row.iter().zip(&event.table.columns).filter(|(v, _)| **v == Value::Unavailable).map(|(_, c)| c.name.as_str()).collect();
            if !missing.is_empty() {
                write_csv_text(&missing.join(";"), out);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}
