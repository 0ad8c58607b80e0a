//! The typed file formats (Avro container files, Parquet) as the
//! object-store sink's [`FileFormat`]s; CSV and JSON lines are
//! [`riffle_files::TextFormat`].

use anyhow::{anyhow, Result};
use riffle_core::{ChangeEvent, TableSchema};
use riffle_files::object::{FileFormat, FileWriter};
use riffle_files::TextFormat;
use riffle_formats::avro_file::{AvroCodec, AvroFileWriter};
use riffle_formats::parquet::{ParquetCompression, ParquetOptions, ParquetWriter};
use riffle_formats::{Encoder, Format};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The format of an object-store sink; `compression` names the Avro codec
/// (`null`, `deflate`, `snappy`, `zstandard`) or the Parquet compression
/// (`zstd`, `snappy`, `none`).
pub fn file_format(encoder: Encoder, compression: Option<&str>) -> Result<Arc<dyn FileFormat>> {
    Ok(match encoder.format {
        Format::Csv | Format::Jsonl => {
            if let Some(c) = compression {
                anyhow::bail!("compression {c:?}: CSV and JSON lines files are written uncompressed");
            }
            Arc::new(TextFormat(encoder))
        }
        Format::Avro => {
            let codec = match compression {
                Some(c) => AvroCodec::parse(c)
                    .ok_or_else(|| anyhow!("compression: expected null, deflate, snappy or zstandard for Avro, found {c:?}"))?,
                None => AvroCodec::Zstandard,
            };
            Arc::new(AvroFormat(codec))
        }
        Format::Parquet => {
            let compression = match compression {
                Some(c) => ParquetCompression::parse(c)
                    .ok_or_else(|| anyhow!("compression: expected zstd, snappy or none for Parquet, found {c:?}"))?,
                None => ParquetCompression::default(),
            };
            Arc::new(ParquetFormat(ParquetOptions { metadata: encoder.metadata, compression, ..ParquetOptions::default() }))
        }
    })
}

struct AvroFormat(AvroCodec);

struct AvroFile(AvroFileWriter);

impl FileFormat for AvroFormat {
    fn extension(&self) -> &'static str {
        "avro"
    }

    fn name(&self) -> String {
        format!("avro, {}", self.0.name())
    }

    fn writer(&self, table: &Arc<TableSchema>, namespace: &str) -> Box<dyn FileWriter> {
        Box::new(AvroFile(AvroFileWriter::new(table, &riffle_formats::avro::avro_namespace(namespace), self.0)))
    }
}

impl FileWriter for AvroFile {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), String> {
        self.0.write(event)
    }

    fn take(&mut self, _out: &mut Vec<u8>) {}

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), String> {
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

struct ParquetFormat(ParquetOptions);

struct ParquetFile {
    writer: Result<ParquetWriter<Shared>, String>,
    out: Shared,
}

impl FileFormat for ParquetFormat {
    fn extension(&self) -> &'static str {
        "parquet"
    }

    fn name(&self) -> String {
        "parquet".into()
    }

    fn writer(&self, table: &Arc<TableSchema>, _namespace: &str) -> Box<dyn FileWriter> {
        let out = Shared::default();
        Box::new(ParquetFile { writer: ParquetWriter::with_writer(table.clone(), self.0, out.clone()), out })
    }
}

impl FileWriter for ParquetFile {
    fn write(&mut self, event: &ChangeEvent) -> Result<(), String> {
        self.writer.as_mut().map_err(|e| e.clone())?.write(event)
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<(), String> {
        self.writer?.finish()?;
        out.append(&mut self.out.0.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.bytes_estimate() as u64)
    }
}
