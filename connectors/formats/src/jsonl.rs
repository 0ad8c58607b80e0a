//! The nested shape: one Debezium-style envelope per line.
//!
//! ```json
//! {"before":null,"after":{"id":1},"op":"c","ts_ms":1700000000123,
//!  "source":{"version":"0.1.0","connector":"postgresql","name":"shop","db":"shop",
//!            "schema":"public","table":"orders","snapshot":"false","txId":745,
//!            "lsn":23873424,"ts_ms":1700000000001,"ts_us":1700000000001234,
//!            "position":"00000000016c4a10.x0000000001"},
//!  "transaction":{"id":"745","total_order":1},
//!  "key":{"id":1},"before_image":"none"}
//! ```
//!
//! A column the source did not send (unchanged TOAST, the non-key columns of
//! a key-only before image) is left out of `before`/`after`; a column that is
//! NULL is present with `null`.

use crate::value::{write_int, write_json, write_json_str};
use riffle_core::{ChangeEvent, TableSchema, Value};

/// `{"col":value,…}` with unavailable columns left out.
pub fn write_row_object(schema: &TableSchema, row: &[Value], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (v, c) in row.iter().zip(&schema.columns) {
        if *v == Value::Unavailable {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(&c.name, out);
        out.push(b':');
        write_json(v, out);
    }
    out.push(b'}');
}

fn write_image(schema: &TableSchema, row: Option<&Vec<Value>>, out: &mut Vec<u8>) {
    match row {
        Some(r) => write_row_object(schema, r, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// One JSON-lines record: the envelope with `key`, and a newline.
pub fn envelope(event: &ChangeEvent, out: &mut Vec<u8>) {
    write_envelope(event, true, out);
    out.push(b'\n');
}

/// The envelope object; `with_key` adds the `key` field (Kafka carries the
/// key in the message key instead).
pub fn write_envelope(event: &ChangeEvent, with_key: bool, out: &mut Vec<u8>) {
    let schema = &*event.table;
    let s = &event.source;
    out.extend_from_slice(b"{\"before\":");
    write_image(schema, event.before.as_ref(), out);
    out.extend_from_slice(b",\"after\":");
    write_image(schema, event.after.as_ref(), out);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(event.op.code().as_bytes());
    out.extend_from_slice(b"\",\"ts_ms\":");
    write_int(event.ts_ms, out);
    out.extend_from_slice(b",\"source\":{\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"connector\":");
    write_json_str(s.connector, out);
    out.extend_from_slice(b",\"name\":");
    write_json_str(&s.name, out);
    out.extend_from_slice(b",\"db\":");
    write_json_str(&s.db, out);
    out.extend_from_slice(b",\"schema\":");
    write_json_str(&schema.id.schema, out);
    out.extend_from_slice(b",\"table\":");
    write_json_str(&schema.id.name, out);
    out.extend_from_slice(if event.is_snapshot() { b",\"snapshot\":\"true\"" } else { b",\"snapshot\":\"false\"" });
    out.extend_from_slice(b",\"txId\":");
    match s.tx_id {
        Some(tx) => write_int(tx, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"lsn\":");
    match s.lsn {
        Some(lsn) => write_int(lsn.0, out),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(b) = &s.binlog {
        out.extend_from_slice(b",\"server_id\":");
        write_int(b.server_id, out);
        out.extend_from_slice(b",\"file\":");
        write_json_str(&b.file, out);
        out.extend_from_slice(b",\"pos\":");
        write_int(b.pos, out);
        out.extend_from_slice(b",\"row\":");
        write_int(b.row, out);
        out.extend_from_slice(b",\"gtid\":");
        match &b.gtid {
            Some(g) => write_json_str(g, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"ts_ms\":");
    write_int(s.ts_ms, out);
    out.extend_from_slice(b",\"ts_us\":");
    write_int(s.ts_us, out);
    out.extend_from_slice(b",\"position\":\"");
    event.position.write_key(out);
    out.push(b'"');
    out.extend_from_slice(b"},\"transaction\":");
    match crate::transaction_id(event) {
        Some(id) => {
            out.extend_from_slice(b"{\"id\":");
            write_json_str(&id, out);
            out.extend_from_slice(b",\"total_order\":");
            write_int(event.position.seq(), out);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    if with_key {
        write_key(event, out);
    }
    out.extend_from_slice(b",\"before_image\":\"");
    out.extend_from_slice(event.before_image.name().as_bytes());
    out.extend_from_slice(b"\"}");
}

fn write_key(event: &ChangeEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"key\":");
    if !key_object(event, out) {
        out.extend_from_slice(b"null");
    }
}

/// `{"col":value,…}` of the key columns (Kafka's JSON message key),
/// or `None` for a table without a key or an event without a row.
pub fn key_object(event: &ChangeEvent, out: &mut Vec<u8>) -> bool {
    let written = key_object_with(event, out, |_, v, out| {
        write_json(v, out);
        Ok::<(), std::convert::Infallible>(())
    });
    written.unwrap_or_else(|never| match never {})
}

/// [`key_object`] with each key value (the column's index, its value)
/// written by `value`, which may fail.
pub fn key_object_with<E>(
    event: &ChangeEvent,
    out: &mut Vec<u8>,
    mut value: impl FnMut(usize, &Value, &mut Vec<u8>) -> Result<(), E>,
) -> Result<bool, E> {
    let schema = &*event.table;
    let Some(r) = event.row() else { return Ok(false) };
    if schema.key.is_empty() {
        return Ok(false);
    }
    out.push(b'{');
    for (n, &i) in schema.key.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&schema.columns[i].name, out);
        out.push(b':');
        value(i, &r[i], out)?;
    }
    out.push(b'}');
    Ok(true)
}
