//! Standard output as a sink: JSON lines, or CSV with a header whenever the
//! table (or its schema) changes. At-least-once: a replay after a crash
//! prints events again, with their positions, for the reader to drop.

use riffle_core::{ChangeEvent, Position, Sink, SinkError, TableSchema};
use riffle_formats::Encoder;
use std::io::{BufWriter, Write};
use std::sync::Arc;

fn io(context: impl std::fmt::Display, e: std::io::Error) -> SinkError {
    SinkError::io(context, e)
}

/// Writes events to standard output: JSON lines, or CSV with a header
/// whenever the table (or its schema) changes. At-least-once: a replay after
/// a crash prints events again.
pub struct StdoutSink {
    encoder: Encoder,
    out: BufWriter<std::io::Stdout>,
    current: Option<Arc<TableSchema>>,
    buf: Vec<u8>,
    bytes: u64,
}

impl StdoutSink {
    pub fn new(encoder: Encoder) -> Self {
        StdoutSink { encoder, out: BufWriter::with_capacity(1 << 16, std::io::stdout()), current: None, buf: Vec::new(), bytes: 0 }
    }
}

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        format!("stdout ({})", self.encoder.format.extension())
    }

    fn committed(&self) -> Option<Position> {
        None
    }

    fn write(&mut self, event: &ChangeEvent) -> Result<(), SinkError> {
        self.buf.clear();
        if self.current.as_ref().is_none_or(|s| **s != *event.table) {
            self.encoder.header(&event.table, &mut self.buf);
            self.current = Some(event.table.clone());
        }
        self.encoder.encode(event, &mut self.buf);
        self.bytes += self.buf.len() as u64;
        self.out.write_all(&self.buf).map_err(|e| io("writing to stdout", e))
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn commit(&mut self, _through: Option<Position>) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| io("writing to stdout", e))
    }

    fn abort(&mut self) -> Result<(), SinkError> {
        // Bytes already printed cannot be taken back; consumers deduplicate
        // by position.
        self.out.flush().map_err(|e| io("writing to stdout", e))
    }
}
