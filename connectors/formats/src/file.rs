//! The four file formats behind one interface: a [`FileFormat`] makes a
//! [`FileWriter`] per file (one table, one schema version), and the file
//! sink takes the encoded bytes out as they are ready and uploads them.
//! CSV and JSON lines are written as they come; Avro container files in
//! blocks; Parquet in row groups.

use crate::avro_file::{AvroCodec, AvroFileWriter};
use crate::parquet::{ParquetCompression, ParquetOptions, ParquetWriter};
use crate::{Encoder, Format, FormatError};
use riffle_core::{ChangeEvent, TableSchema};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Encodes one file's events; the bytes are taken out as they are ready.
pub trait FileWriter: Send {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), FormatError>;
    /// Moves the bytes ready so far to `out`.
    fn take(&mut self, out: &mut Vec<u8>);
    /// Ends the file, moving its last bytes to `out`.
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), FormatError>;
    /// Encoded bytes so far (an estimate for formats that buffer).
    fn bytes(&self) -> u64;
}

/// A [`FileWriter`] of text lines, each made by `line` from one event
/// (nothing written: no line); the forms `riffle verify` writes the
/// source's rows in to meet a topic's messages.
pub struct LineWriter<F> {
    line: F,
    buf: Vec<u8>,
}

impl<F> LineWriter<F>
where
    F: FnMut(&ChangeEvent, &mut Vec<u8>) -> Result<(), FormatError> + Send + 'static,
{
    pub fn boxed(line: F) -> Box<dyn FileWriter> {
        Box::new(LineWriter { line, buf: Vec::new() })
    }
}

impl<F> FileWriter for LineWriter<F>
where
    F: FnMut(&ChangeEvent, &mut Vec<u8>) -> Result<(), FormatError> + Send,
{
    fn write(&mut self, event: &ChangeEvent) -> Result<(), FormatError> {
        let before = self.buf.len();
        (self.line)(event, &mut self.buf)?;
        if self.buf.len() > before {
            self.buf.push(b'\n');
        }
        Ok(())
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.extend_from_slice(&self.buf);
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.buf.len() as u64
    }
}

/// Makes a [`FileWriter`] for a table's schema version.
/// JSON lines made by [`LineWriter`]s: each writer gets its own line
/// function from `make` (the forms `riffle verify` writes the source's rows
/// in to meet a topic's messages).
pub struct LineFormat<M> {
    pub name: &'static str,
    pub make: M,
}

impl<M, F> FileFormat for LineFormat<M>
where
    M: Fn() -> F + Send + Sync,
    F: FnMut(&ChangeEvent, &mut Vec<u8>) -> Result<(), FormatError> + Send + 'static,
{
    fn extension(&self) -> &'static str {
        "jsonl"
    }

    fn name(&self) -> String {
        self.name.into()
    }

    fn writer(&self, _table: &Arc<TableSchema>, _namespace: &str) -> Result<Box<dyn FileWriter>, FormatError> {
        Ok(LineWriter::boxed((self.make)()))
    }
}

pub trait FileFormat: Send + Sync {
    fn extension(&self) -> &'static str;
    /// For messages: `csv`, `avro, zstandard`.
    fn name(&self) -> String;
    /// `namespace` names the Avro record (`<pipeline>.<schema>.<table>`).
    fn writer(&self, table: &Arc<TableSchema>, namespace: &str) -> Result<Box<dyn FileWriter>, FormatError>;
}

/// The file format of `encoder`; `compression` names the Avro codec
/// (`null`, `deflate`, `snappy`, `zstandard`; default zstandard) or the
/// Parquet compression (`zstd`, `snappy`, `none`; default zstd). CSV and
/// JSON lines files are written uncompressed.
pub fn file_format(encoder: Encoder, compression: Option<&str>) -> Result<Arc<dyn FileFormat>, FormatError> {
    let setting = |what: String| FormatError::Setting { what };
    Ok(match encoder.format {
        Format::Csv | Format::Jsonl => {
            if let Some(c) = compression {
                return Err(setting(format!("compression {c:?}: CSV and JSON lines files are written uncompressed")));
            }
            Arc::new(TextFormat(encoder))
        }
        Format::Avro => {
            let codec = match compression {
                Some(c) => AvroCodec::parse(c)
                    .ok_or_else(|| setting(format!("compression: expected null, deflate, snappy or zstandard for Avro, found {c:?}")))?,
                None => AvroCodec::Zstandard,
            };
            Arc::new(AvroFormat(codec))
        }
        Format::Parquet => {
            let compression = match compression {
                Some(c) => ParquetCompression::parse(c)
                    .ok_or_else(|| setting(format!("compression: expected zstd, snappy or none for Parquet, found {c:?}")))?,
                None => ParquetCompression::default(),
            };
            Arc::new(ParquetFormat(ParquetOptions { metadata: encoder.metadata, compression, ..ParquetOptions::default() }))
        }
    })
}

/// The format of files written only to be read back at once by riffle
/// (`riffle verify` writes the source's rows through the sink's format so
/// both meet in one canonical form): a cell reads back the same whatever
/// the compression, so none; for Parquet, no dictionaries or statistics.
pub fn read_back_format(encoder: Encoder) -> Arc<dyn FileFormat> {
    match encoder.format {
        Format::Csv | Format::Jsonl => Arc::new(TextFormat(encoder)),
        Format::Avro => Arc::new(AvroFormat(AvroCodec::Null)),
        Format::Parquet => Arc::new(ParquetFormat(ParquetOptions {
            metadata: encoder.metadata,
            compression: ParquetCompression::None,
            read_back: true,
            ..ParquetOptions::default()
        })),
    }
}

/// CSV and JSON lines: the encoder's bytes, a header first for CSV.
struct TextFormat(Encoder);

struct TextWriter {
    encoder: Encoder,
    buf: Vec<u8>,
    bytes: u64,
}

impl FileFormat for TextFormat {
    fn extension(&self) -> &'static str {
        self.0.format.extension()
    }

    fn name(&self) -> String {
        self.0.format.extension().to_string()
    }

    fn writer(&self, table: &Arc<TableSchema>, _namespace: &str) -> Result<Box<dyn FileWriter>, FormatError> {
        let mut buf = Vec::with_capacity(1 << 20);
        self.0.header(table, &mut buf);
        Ok(Box::new(TextWriter { encoder: self.0, bytes: buf.len() as u64, buf }))
    }
}

impl FileWriter for TextWriter {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), FormatError> {
        let before = self.buf.len();
        self.encoder.encode(event, &mut self.buf);
        self.bytes += (self.buf.len() - before) as u64;
        Ok(())
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.append(&mut self.buf);
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Avro object container files of envelopes.
struct AvroFormat(AvroCodec);

struct AvroFile(AvroFileWriter);

impl FileFormat for AvroFormat {
    fn extension(&self) -> &'static str {
        "avro"
    }

    fn name(&self) -> String {
        format!("avro, {}", self.0.name())
    }

    fn writer(&self, table: &Arc<TableSchema>, namespace: &str) -> Result<Box<dyn FileWriter>, FormatError> {
        Ok(Box::new(AvroFile(AvroFileWriter::new(table, &crate::avro::avro_namespace(namespace), self.0))))
    }
}

impl FileWriter for AvroFile {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), FormatError> {
        self.0.write(event)
    }

    fn take(&mut self, _out: &mut Vec<u8>) {}

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.extend_from_slice(&self.0.finish()?);
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.0.bytes_estimate() as u64
    }
}

/// A `Write` whose bytes the sink drains as they come (row groups as the
/// Parquet encoder finishes them).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parquet files in the flat shape.
struct ParquetFormat(ParquetOptions);

struct ParquetFile {
    writer: ParquetWriter<Shared>,
    out: Shared,
}

impl FileFormat for ParquetFormat {
    fn extension(&self) -> &'static str {
        "parquet"
    }

    fn name(&self) -> String {
        "parquet".into()
    }

    fn writer(&self, table: &Arc<TableSchema>, _namespace: &str) -> Result<Box<dyn FileWriter>, FormatError> {
        let out = Shared::default();
        Ok(Box::new(ParquetFile { writer: ParquetWriter::with_writer(table.clone(), self.0, out.clone())?, out }))
    }
}

impl FileWriter for ParquetFile {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), FormatError> {
        self.writer.write(event)
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.writer.finish()?;
        out.append(&mut self.out.0.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.writer.bytes_estimate() as u64
    }
}
