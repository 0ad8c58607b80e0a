//! Entry points for the cargo-fuzz targets in `fuzz/`; not an API. Each
//! feeds arbitrary bytes to what reads data a Postgres server sends, and
//! ignores the result: the targets only look for panics, hangs and huge
//! allocations.

use crate::replication::pgoutput::{self, Message};
use bytes::Bytes;
use riffle_core::{Column, DataType, Lsn, TableId, TableSchema};
use std::sync::Arc;

/// The replication connection: message framing, then every message as
/// login (authentication, SCRAM), a simple query's rows, an error and the
/// replication stream (with its XLogData decoded as pgoutput) read it.
pub fn pg_framing(data: &[u8]) {
    crate::replication::client::fuzz(data);
}

/// One pgoutput message, and its tuples decoded as a table's values.
pub fn pgoutput(data: &[u8]) {
    let Ok(msg) = pgoutput::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let tuples = match &msg {
        Message::Insert { new, .. } => vec![new],
        Message::Update { old, new, .. } => old.iter().map(|(_, t)| t).chain([new]).collect(),
        Message::Delete { old: (_, t), .. } => vec![t],
        _ => return,
    };
    for tuple in tuples {
        let schema = schema(tuple.len(), data.len());
        let identity: Vec<bool> = (0..tuple.len()).map(|i| i % 2 == 0).collect();
        let _ = crate::stream::decode_tuple(&schema, tuple, None);
        let _ = crate::stream::decode_tuple(&schema, tuple, Some(&identity));
    }
}

/// COPY text rows (split as the snapshot splits them, at the chunk
/// boundaries the input's first byte sets) and values in every type's text
/// form, array literals included.
pub fn pg_text_values(data: &[u8]) {
    let [first, second, rest @ ..] = data else {
        return;
    };
    let types = types();
    let text = String::from_utf8_lossy(rest);
    let _ = crate::types::decode_text(&types[usize::from(*first) % types.len()], &text);

    let schema = Arc::new(schema(usize::from(second % 8) + 1, usize::from(*first)));
    let ctx = crate::snapshot::Context { name: "fuzz".into(), db: "db".into(), stats: Default::default(), read_first: Arc::default() };
    let mut reader = crate::snapshot::CopyReader::new(schema, &ctx, Lsn(1), 0);
    let (mut seq, mut batch) = (0, Vec::new());
    for chunk in rest.chunks(usize::from(*first) + 1) {
        if reader.feed(Bytes::copy_from_slice(chunk), &mut seq, &mut batch).is_err() {
            return;
        }
    }
    let _ = reader.finish();
}

/// A table of `n` columns, of types picked by `seed`.
fn schema(n: usize, seed: usize) -> TableSchema {
    let types = types();
    let columns = (0..n)
        .map(|i| Column {
            name: format!("c{i}"),
            source_type: String::new(),
            data_type: types[(seed + i) % types.len()].clone(),
            nullable: true,
            labels: Vec::new(),
        })
        .collect();
    TableSchema { id: TableId::new("public", "t"), columns, key: vec![0], full_before_image: false }
}

fn types() -> Vec<DataType> {
    let array = |t: DataType| DataType::Array(Box::new(t));
    vec![
        DataType::Bool,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt64,
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal { precision: Some(10), scale: Some(2) },
        DataType::Bytes,
        DataType::Timestamp,
        DataType::TimestampTz,
        DataType::Json,
        DataType::String,
        DataType::Date,
        DataType::Interval,
        DataType::Other("point".into()),
        array(DataType::Int32),
        array(DataType::String),
        array(DataType::Bytes),
        array(DataType::Float64),
        array(DataType::TimestampTz),
        array(DataType::Bool),
        // A domain over an array, in an array: quoted elements that are
        // array literals themselves.
        array(array(DataType::Int64)),
    ]
}
