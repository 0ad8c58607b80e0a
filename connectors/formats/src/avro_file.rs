//! Avro object container files: the nested shape (one envelope record per
//! event, [`crate::avro::envelope_schema`]) in the file format every Avro
//! reader opens.
//!
//! Layout, per the Avro specification: the magic `Obj\x01`; a metadata map
//! with `avro.schema` (the envelope schema's JSON) and `avro.codec`; a
//! random 16-byte sync marker; then blocks, each the number of records, the
//! byte size of the (compressed) records, the records, and the sync marker.
//! Records are encoded by [`crate::avro::encode_envelope`]; blocks are
//! compressed with `apache-avro`'s codecs (snappy blocks end with the CRC32
//! of the uncompressed data, as the specification says).

use crate::avro::{encode_envelope, envelope_schema, write_bytes, write_long};
use crate::FormatError;
use apache_avro::{Codec, DeflateSettings, ZstandardSettings};
use riffle_core::{ChangeEvent, TableSchema};
use std::sync::Arc;

/// How blocks are compressed (`avro.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AvroCodec {
    Null,
    /// Raw deflate (RFC 1951), zlib's default level.
    Deflate,
    Snappy,
    /// Zstandard at zstd's default level.
    #[default]
    Zstandard,
}

impl AvroCodec {
    /// `null` (or `none`), `deflate`, `snappy`, `zstandard` (or `zstd`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "null" | "none" => Some(AvroCodec::Null),
            "deflate" => Some(AvroCodec::Deflate),
            "snappy" => Some(AvroCodec::Snappy),
            "zstandard" | "zstd" => Some(AvroCodec::Zstandard),
            _ => None,
        }
    }

    /// The name `avro.codec` holds.
    pub fn name(self) -> &'static str {
        match self {
            AvroCodec::Null => "null",
            AvroCodec::Deflate => "deflate",
            AvroCodec::Snappy => "snappy",
            AvroCodec::Zstandard => "zstandard",
        }
    }

    fn codec(self) -> Codec {
        match self {
            AvroCodec::Null => Codec::Null,
            AvroCodec::Deflate => Codec::Deflate(DeflateSettings::default()),
            AvroCodec::Snappy => Codec::Snappy,
            AvroCodec::Zstandard => Codec::Zstandard(ZstandardSettings::default()),
        }
    }
}

/// Default block size: a block is closed once its records reach this many
/// bytes (before compression)…
pub const DEFAULT_BLOCK_BYTES: usize = 64 * 1024;
/// …or this many records.
pub const DEFAULT_BLOCK_RECORDS: usize = 10_000;

/// Builds one Avro container file of one table schema version in memory.
pub struct AvroFileWriter {
    table: Arc<TableSchema>,
    codec: AvroCodec,
    sync: [u8; 16],
    /// The header and the finished blocks.
    out: Vec<u8>,
    /// Encoded records of the open block.
    block: Vec<u8>,
    block_records: usize,
    max_block_bytes: usize,
    max_block_records: usize,
    rows: u64,
}

impl AvroFileWriter {
    /// A file of `table`'s envelopes, named `<namespace>.Envelope` (see
    /// [`crate::avro::avro_namespace`]), with a random sync marker.
    pub fn new(table: &TableSchema, namespace: &str, codec: AvroCodec) -> Self {
        Self::with_sync_marker(table, namespace, codec, random_sync_marker())
    }

    /// As [`AvroFileWriter::new`] with a given sync marker (for output that
    /// is the same byte for byte on every run).
    pub fn with_sync_marker(table: &TableSchema, namespace: &str, codec: AvroCodec, sync: [u8; 16]) -> Self {
        let schema = envelope_schema(table, namespace).to_string();
        let mut out = Vec::with_capacity(schema.len() + 64);
        out.extend_from_slice(b"Obj\x01");
        write_long(2, &mut out);
        write_bytes(b"avro.schema", &mut out);
        write_bytes(schema.as_bytes(), &mut out);
        write_bytes(b"avro.codec", &mut out);
        write_bytes(codec.name().as_bytes(), &mut out);
        write_long(0, &mut out);
        out.extend_from_slice(&sync);
        AvroFileWriter {
            table: Arc::new(table.clone()),
            codec,
            sync,
            out,
            block: Vec::with_capacity(DEFAULT_BLOCK_BYTES + 4096),
            block_records: 0,
            max_block_bytes: DEFAULT_BLOCK_BYTES,
            max_block_records: DEFAULT_BLOCK_RECORDS,
            rows: 0,
        }
    }

    /// Closes blocks at `bytes` (uncompressed) or `records`, whichever
    /// comes first.
    pub fn set_block_size(&mut self, bytes: usize, records: usize) {
        self.max_block_bytes = bytes.max(1);
        self.max_block_records = records.max(1);
    }

    pub fn codec(&self) -> AvroCodec {
        self.codec
    }

    /// The file's sync marker.
    pub fn sync_marker(&self) -> [u8; 16] {
        self.sync
    }

    /// Records written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file's size so far: finished blocks, plus the open block's
    /// records before compression.
    pub fn bytes_estimate(&self) -> usize {
        self.out.len() + self.block.len()
    }

    /// Appends one event's envelope. It must be of the writer's table
    /// schema version. `Err` names a column whose value the Avro type cannot
    /// hold ([`FormatError::Unrepresentable`]), or says the event is of
    /// another schema version ([`FormatError::SchemaChanged`]); the event is
    /// then not written. Compressing a full block may fail too
    /// ([`FormatError::Avro`]).
    pub fn write(&mut self, ev: &ChangeEvent) -> Result<(), FormatError> {
        if !Arc::ptr_eq(&ev.table, &self.table) {
            if *ev.table != *self.table {
                return Err(FormatError::SchemaChanged {
                    what: format!(
                        "an event of {} with a different schema than the Avro file's ({} columns); start a new file",
                        ev.table.id,
                        ev.table.columns.len()
                    ),
                });
            }
            // The same schema: compare pointers from now on.
            self.table = ev.table.clone();
        }
        let start = self.block.len();
        if let Err(e) = encode_envelope(ev, &mut self.block) {
            self.block.truncate(start);
            return Err(FormatError::Unrepresentable { what: format!("{e}; write this table as JSON lines") });
        }
        self.block_records += 1;
        self.rows += 1;
        if self.block.len() >= self.max_block_bytes || self.block_records >= self.max_block_records {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Closes the open block, if it has records.
    pub fn flush_block(&mut self) -> Result<(), FormatError> {
        if self.block_records == 0 {
            return Ok(());
        }
        write_long(self.block_records as i64, &mut self.out);
        if self.codec == AvroCodec::Null {
            write_bytes(&self.block, &mut self.out);
            self.block.clear();
        } else {
            let mut data = std::mem::replace(&mut self.block, Vec::with_capacity(self.max_block_bytes.min(1 << 20) + 4096));
            self.codec
                .codec()
                .compress(&mut data)
                .map_err(|e| FormatError::Avro { what: format!("avro {} compression", self.codec.name()), source: Box::new(e) })?;
            write_bytes(&data, &mut self.out);
        }
        self.out.extend_from_slice(&self.sync);
        self.block_records = 0;
        Ok(())
    }

    /// The whole file.
    pub fn finish(mut self) -> Result<Vec<u8>, FormatError> {
        self.flush_block()?;
        Ok(self.out)
    }
}

/// 16 random bytes from the standard library's randomly keyed hasher.
fn random_sync_marker() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(nanos);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}
