//! riffle's encoders: change events to bytes. Pure functions, no I/O.
//!
//! Two shapes, both written down in `schemas/`:
//!
//! - **nested** ([`jsonl`]): one Debezium-style envelope per line;
//! - **flat** ([`csv`]): the table's own columns hold the after image (the
//!   deleted row for deletes) and metadata sits in `__`-prefixed columns,
//!   Debezium's "new record state" convention.
//!
//! # Layout
//!
//! - [`value`]: one value as JSON or as CSV text.
//! - [`jsonl`]: the envelope.
//! - [`csv`]: RFC 4180 rows with a header.
//! - [`avro`]: Avro schemas from table schemas, and the binary datum.
//! - [`temporal`]: dates, times and decimals as the numbers typed formats store.
//! - [`parquet`]: the flat shape as typed Parquet files.
//! - [`avro_file`]: Avro object container files of envelopes.
//! - [`file`]: the four formats behind one [`file::FileFormat`] interface, for the file sink.
//! - [`error`]: [`FormatError`], why an event could not be encoded, and [`UnfitValue`].

pub mod avro;
pub mod avro_file;
pub mod csv;
pub mod error;
pub mod file;
pub mod jsonl;
pub mod parquet;
pub mod read;
pub mod temporal;
pub mod value;

pub use error::{FormatError, UnfitValue};
use riffle_core::{ChangeEvent, TableSchema};

/// The envelope's `transaction.id`: Postgres' transaction id; MySQL's GTID,
/// or without GTIDs the binlog file and offset of the transaction (as
/// Debezium's MySQL connector). `None` for snapshot reads.
pub fn transaction_id(event: &ChangeEvent) -> Option<String> {
    if event.is_snapshot() {
        return None;
    }
    if let Some(tx) = event.source.tx_id {
        return Some(tx.to_string());
    }
    let b = event.source.binlog.as_ref()?;
    Some(match &b.gtid {
        Some(g) => g.to_string(),
        None => format!("{}:{}", b.file, b.pos),
    })
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    /// Avro: Kafka messages, or object container files.
    Avro,
    /// Parquet files.
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Avro => "avro",
            Format::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "avro" => Some(Format::Avro),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// How events are encoded.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    pub format: Format,
    /// Flat formats: add the `__` metadata columns. A snapshot-only `sync`
    /// may turn them off for a plain copy of the table.
    pub metadata: bool,
}

impl Encoder {
    /// Bytes a new file for `schema` starts with (the CSV header).
    pub fn header(&self, schema: &TableSchema, out: &mut Vec<u8>) {
        if self.format == Format::Csv {
            csv::header(schema, self.metadata, out);
        }
    }

    /// Appends one event, newline-terminated.
    pub fn encode(&self, event: &ChangeEvent, out: &mut Vec<u8>) {
        match self.format {
            Format::Csv => csv::row(event, self.metadata, out),
            // Avro and Parquet have their own writers; text sinks never get them.
            Format::Jsonl | Format::Avro | Format::Parquet => jsonl::envelope(event, out),
        }
    }
}
