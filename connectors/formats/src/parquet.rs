//! Parquet: the flat shape (the table's own columns, then the `__` metadata
//! columns of [`crate::csv`]), typed, one file per table schema version.
//!
//! The column mapping is written down in `schemas/files-avro-parquet.md`.
//! In short: integers, floats and booleans keep their width; decimals with a
//! declared precision are `Decimal128`/`Decimal256` (without one, text);
//! dates are `Date32`, times `Time64(µs)`, timestamps `Timestamp(µs)` (with
//! `"UTC"` when the source type has a zone); bytes are `Binary`; arrays are
//! `List`s; every other type (UUIDs, JSON, intervals, enums, times with an
//! offset, the text fallback) is `Utf8` holding the canonical text.
//!
//! [`ParquetWriter`] buffers rows in its own column buffers (no per-row
//! allocation), hands a `RecordBatch` to the `parquet` crate's
//! [`ArrowWriter`] every few thousand rows, and cuts row groups by rows and
//! bytes. A value the column's type cannot hold (`NaN` in a decimal, a zero
//! date) is an error naming the column; the row is then left out whole.

use crate::{temporal, FormatError, UnfitValue};
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType, UInt64Type,
};
use arrow_array::{ArrayRef, BinaryArray, BooleanArray, ListArray, PrimitiveArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::{i256, ArrowNativeType, BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType as A, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use riffle_core::{ChangeEvent, DataType, TableSchema, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

/// The metadata columns, after the table's columns (the same as CSV's).
pub const METADATA_COLUMNS: [&str; 8] = crate::csv::METADATA_COLUMNS;

/// Arrow's canonical extension name for JSON text, set on JSON columns.
pub const JSON_EXTENSION: &str = "arrow.json";

/// The Arrow type of a column of `dt`.
pub fn arrow_type(dt: &DataType) -> A {
    match dt {
        DataType::Bool => A::Boolean,
        DataType::Int16 => A::Int16,
        DataType::Int32 => A::Int32,
        DataType::Int64 => A::Int64,
        DataType::UInt64 => A::UInt64,
        DataType::Float32 => A::Float32,
        DataType::Float64 => A::Float64,
        DataType::Decimal { precision: Some(p), scale } => decimal_type(*p, scale.unwrap_or(0)),
        DataType::Bytes => A::Binary,
        DataType::Date => A::Date32,
        DataType::Time => A::Time64(TimeUnit::Microsecond),
        DataType::Timestamp => A::Timestamp(TimeUnit::Microsecond, None),
        DataType::TimestampTz => A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Array(inner) => A::List(Arc::new(typed_field("item", inner))),
        DataType::Decimal { precision: None, .. }
        | DataType::String
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Uuid
        | DataType::Json
        | DataType::Enum
        | DataType::Other(_) => A::Utf8,
    }
}

/// `Decimal128` up to 38 digits, `Decimal256` up to 76, text beyond. A
/// scale larger than the precision (Postgres 15's `numeric(2,5)`) widens
/// the precision to the scale, which holds every value exactly.
fn decimal_type(precision: u32, scale: u32) -> A {
    let p = precision.max(scale);
    match p {
        1..=38 => A::Decimal128(p as u8, scale as i8),
        39..=76 => A::Decimal256(p as u8, scale as i8),
        _ => A::Utf8,
    }
}

/// A nullable field of `dt`; JSON columns carry Arrow's `arrow.json`
/// extension name in the field metadata.
fn typed_field(name: &str, dt: &DataType) -> Field {
    let field = Field::new(name, arrow_type(dt), true);
    if *dt == DataType::Json {
        field.with_metadata(HashMap::from([
            ("ARROW:extension:name".to_string(), JSON_EXTENSION.to_string()),
            ("ARROW:extension:metadata".to_string(), String::new()),
        ]))
    } else {
        field
    }
}

fn table_fields(table: &TableSchema) -> Fields {
    table.columns.iter().map(|c| typed_field(&c.name, &c.data_type)).collect()
}

/// The Arrow schema of a Parquet file of `table`: its columns (all
/// nullable), then with `metadata` the `__` columns: `__op`,
/// `__source_ts_ms` (Int64), `__position`, `__tx` (nullable), `__lsn`
/// (nullable, `X/Y`), `__before_image`, `__before` (a nullable struct of the
/// table's columns) and `__unavailable` (a list of column names).
pub fn arrow_schema(table: &TableSchema, metadata: bool) -> SchemaRef {
    let mut fields: Vec<FieldRef> = table_fields(table).iter().cloned().collect();
    if metadata {
        let meta = [
            Field::new("__op", A::Utf8, false),
            Field::new("__source_ts_ms", A::Int64, false),
            Field::new("__position", A::Utf8, false),
            Field::new("__tx", A::Utf8, true),
            Field::new("__lsn", A::Utf8, true),
            Field::new("__before_image", A::Utf8, false),
            Field::new("__before", A::Struct(table_fields(table)), true),
            Field::new("__unavailable", A::List(Arc::new(Field::new("item", A::Utf8, false))), false),
        ];
        fields.extend(meta.into_iter().map(Arc::new));
    }
    Arc::new(Schema::new(fields))
}

/// Parquet's page compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    None,
    Snappy,
    /// Zstandard at a level (1..=22; 3 is zstd's default).
    Zstd(i32),
}

impl Default for ParquetCompression {
    fn default() -> Self {
        ParquetCompression::Zstd(3)
    }
}

impl ParquetCompression {
    /// `none` (or `uncompressed`), `snappy`, `zstd`, `zstd:<level>`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" | "uncompressed" => Some(ParquetCompression::None),
            "snappy" => Some(ParquetCompression::Snappy),
            "zstd" => Some(ParquetCompression::default()),
            _ => {
                let level: i32 = s.strip_prefix("zstd:")?.parse().ok()?;
                ZstdLevel::try_new(level).ok()?;
                Some(ParquetCompression::Zstd(level))
            }
        }
    }

    fn to_parquet(self) -> Result<Compression, FormatError> {
        Ok(match self {
            ParquetCompression::None => Compression::UNCOMPRESSED,
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd(level) => Compression::ZSTD(
                ZstdLevel::try_new(level).map_err(|source| FormatError::Parquet { what: format!("zstd level {level}"), source })?,
            ),
        })
    }
}

/// How a [`ParquetWriter`] lays out its file.
#[derive(Debug, Clone, Copy)]
pub struct ParquetOptions {
    /// Add the `__` metadata columns (off: a plain copy of the table).
    pub metadata: bool,
    pub compression: ParquetCompression,
    /// A row group ends after this many rows…
    pub row_group_rows: usize,
    /// …or when its estimated encoded size reaches this many bytes.
    pub row_group_bytes: usize,
    /// Rows buffered before they are handed to the Parquet encoder as one
    /// `RecordBatch` (also handed over when they hold about 32 MB).
    pub batch_rows: usize,
    /// A file only read back at once by riffle (`riffle verify`): no
    /// dictionaries, no statistics, which cost time and serve no reader.
    pub read_back: bool,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            metadata: true,
            compression: ParquetCompression::default(),
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 * 1024 * 1024,
            batch_rows: 8192,
            read_back: false,
        }
    }
}

/// Raw bytes buffered before a batch is handed over regardless of rows.
const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Writes the events of one table schema version as one Parquet file.
pub struct ParquetWriter<W: Write + Send = Vec<u8>> {
    table: Arc<TableSchema>,
    schema: SchemaRef,
    columns: Vec<Col>,
    meta: Option<Box<MetaCols>>,
    /// Rows in the column buffers.
    buffered: usize,
    rows: u64,
    batch_rows: usize,
    writer: ArrowWriter<W>,
}

/// The metadata columns' buffers, in [`METADATA_COLUMNS`] order.
struct MetaCols {
    op: Var,
    source_ts_ms: Prim<i64>,
    position: Var,
    tx: Var,
    lsn: Var,
    before_image: Var,
    before: StructCol,
    unavailable: ListCol,
}

impl ParquetWriter<Vec<u8>> {
    /// A writer building the file in memory.
    pub fn new(table: Arc<TableSchema>, options: ParquetOptions) -> Result<Self, FormatError> {
        Self::with_writer(table, options, Vec::new())
    }
}

impl<W: Write + Send> ParquetWriter<W> {
    /// A writer streaming the file to `out` (row groups are written to it as
    /// they fill; the footer on [`ParquetWriter::finish`]).
    pub fn with_writer(table: Arc<TableSchema>, options: ParquetOptions, out: W) -> Result<Self, FormatError> {
        let schema = arrow_schema(&table, options.metadata);
        let mut props = WriterProperties::builder()
            .set_compression(options.compression.to_parquet()?)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(options.row_group_bytes.max(1)))
            .set_created_by(format!("riffle version {}", env!("CARGO_PKG_VERSION")));
        // Columns whose values are (nearly) all distinct gain nothing from a
        // dictionary, and building one costs a hash and a comparison per
        // value: keys, JSON documents, positions.
        let unique = |i: usize| table.key.contains(&i) || table.columns[i].data_type == DataType::Json;
        for (_, c) in table.columns.iter().enumerate().filter(|(i, _)| unique(*i)) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), false);
            if options.metadata {
                props = props.set_column_dictionary_enabled(ColumnPath::from(vec!["__before".to_string(), c.name.clone()]), false);
            }
        }
        if options.metadata {
            props = props.set_column_dictionary_enabled(ColumnPath::from("__position"), false);
        }
        if options.read_back {
            props = props.set_dictionary_enabled(false).set_statistics_enabled(parquet::file::properties::EnabledStatistics::None);
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|source| FormatError::Parquet { what: format!("parquet file for {}", table.id), source })?;
        let columns = table.columns.iter().map(|c| Col::new(&arrow_type(&c.data_type))).collect();
        let meta = options.metadata.then(|| {
            Box::new(MetaCols {
                op: Var::default(),
                source_ts_ms: Prim::default(),
                position: Var::default(),
                tx: Var::default(),
                lsn: Var::default(),
                before_image: Var::default(),
                before: StructCol {
                    children: table.columns.iter().map(|c| Col::new(&arrow_type(&c.data_type))).collect(),
                    valid: Vec::new(),
                },
                unavailable: ListCol { offsets: vec![0], valid: Vec::new(), child: Col::Utf8(Var::default()) },
            })
        });
        Ok(ParquetWriter { table, schema, columns, meta, buffered: 0, rows: 0, batch_rows: options.batch_rows.max(1), writer })
    }

    /// The file's Arrow schema (see [`arrow_schema`]).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far (buffered ones included).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// About how large the file is so far: bytes written, plus the encoded
    /// estimate of the open row group, plus the raw size of buffered rows.
    pub fn bytes_estimate(&self) -> usize {
        let buffered: usize = self.columns.iter().map(Col::heap_bytes).sum::<usize>() + self.meta.as_ref().map_or(0, |m| m.heap_bytes());
        self.writer.bytes_written() + self.writer.in_progress_size() + buffered
    }

    /// Appends one event. It must be of the writer's table schema version.
    /// `Err` names the column whose value the Parquet type cannot hold
    /// ([`FormatError::Unrepresentable`]), or says the event is of another
    /// schema version ([`FormatError::SchemaChanged`]); the event is then not
    /// written at all. Handing a full batch to the encoder may fail too
    /// ([`FormatError::Arrow`], [`FormatError::Parquet`]).
    pub fn write(&mut self, ev: &ChangeEvent) -> Result<(), FormatError> {
        if !Arc::ptr_eq(&ev.table, &self.table) && *ev.table != *self.table {
            return Err(FormatError::SchemaChanged {
                what: format!(
                    "an event of {} with a different schema than the Parquet file's ({} columns); start a new file",
                    ev.table.id,
                    ev.table.columns.len()
                ),
            });
        }
        let n = self.buffered;
        if let Err(e) = self.append(ev) {
            for c in &mut self.columns {
                c.truncate(n);
            }
            if let Some(m) = &mut self.meta {
                m.truncate(n);
            }
            return Err(e);
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= self.batch_rows || (self.buffered & 1023 == 0 && self.buffered_bytes() >= BATCH_BYTES) {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn buffered_bytes(&self) -> usize {
        self.columns.iter().map(Col::heap_bytes).sum::<usize>() + self.meta.as_ref().map_or(0, |m| m.heap_bytes())
    }

    fn append(&mut self, ev: &ChangeEvent) -> Result<(), FormatError> {
        let table = &*self.table;
        let row = ev.row();
        for (i, col) in self.columns.iter_mut().enumerate() {
            let v = row.and_then(|r| r.get(i)).unwrap_or(&Value::Null);
            col.push(v).map_err(|unfit| unrepresentable(table, i, unfit, ""))?;
        }
        let Some(m) = &mut self.meta else { return Ok(()) };
        match &ev.before {
            Some(before) => {
                for (i, col) in m.before.children.iter_mut().enumerate() {
                    let v = before.get(i).unwrap_or(&Value::Null);
                    col.push(v).map_err(|unfit| unrepresentable(table, i, unfit, " (before image)"))?;
                }
                m.before.valid.push(true);
            }
            None => m.before.push_null(),
        }
        // The metadata columns fail only when a batch outgrows Arrow's
        // 32-bit offsets; the message is the limit's, as is.
        let full = |unfit: UnfitValue| FormatError::Unrepresentable { what: unfit.shown };
        m.op.push(ev.op.code().as_bytes()).map_err(full)?;
        m.source_ts_ms.push(ev.source.ts_ms);
        ev.position.write_key(&mut m.position.data);
        m.position.commit().map_err(full)?;
        match ev.source.tx_id {
            Some(tx) => {
                crate::value::write_int(tx, &mut m.tx.data);
                m.tx.commit().map_err(full)?;
            }
            None => m.tx.null(),
        }
        match ev.source.lsn {
            Some(lsn) => {
                let _ = write!(m.lsn.data, "{lsn}");
                m.lsn.commit().map_err(full)?;
            }
            None => m.lsn.null(),
        }
        m.before_image.push(ev.before_image.name().as_bytes()).map_err(full)?;
        let Col::Utf8(names) = &mut m.unavailable.child else { unreachable!("__unavailable holds text") };
        if let Some(row) = row {
            for (v, c) in row.iter().zip(&table.columns) {
                if *v == Value::Unavailable {
                    names.push(c.name.as_bytes()).map_err(full)?;
                }
            }
        }
        m.unavailable.end(true).map_err(full)?;
        Ok(())
    }

    /// Hands the buffered rows to the Parquet encoder as one batch.
    fn flush_batch(&mut self) -> Result<(), FormatError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let fields = self.schema.fields();
        let mut arrays = Vec::with_capacity(fields.len());
        for (col, f) in self.columns.iter_mut().zip(fields.iter()) {
            arrays.push(col.finish(f.data_type()).map_err(|source| FormatError::Arrow { what: format!("column {}", f.name()), source })?);
        }
        if let Some(m) = &mut self.meta {
            let mut f = fields[self.columns.len()..].iter();
            let mut next = || f.next().expect("metadata fields").data_type();
            let (op, ts, pos, tx, lsn, image, before, unavailable) = (next(), next(), next(), next(), next(), next(), next(), next());
            let err = |source: ArrowError| FormatError::Arrow { what: "metadata columns".into(), source };
            arrays.push(m.op.finish(op).map_err(err)?);
            arrays.push(m.source_ts_ms.finish_primitive::<Int64Type>(ts));
            arrays.push(m.position.finish(pos).map_err(err)?);
            arrays.push(m.tx.finish(tx).map_err(err)?);
            arrays.push(m.lsn.finish(lsn).map_err(err)?);
            arrays.push(m.before_image.finish(image).map_err(err)?);
            arrays.push(m.before.finish(before).map_err(err)?);
            arrays.push(m.unavailable.finish(unavailable).map_err(err)?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|source| FormatError::Arrow { what: format!("parquet batch for {}", self.table.id), source })?;
        self.buffered = 0;
        self.writer.write(&batch).map_err(|source| FormatError::Parquet { what: format!("parquet file for {}", self.table.id), source })
    }

    /// Writes the buffered rows and the footer; returns the writer (the
    /// whole file for [`ParquetWriter::new`]).
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.flush_batch()?;
        let id = self.table.id.clone();
        self.writer.into_inner().map_err(|source| FormatError::Parquet { what: format!("parquet file for {id}"), source })
    }
}

/// `unfit`, a value of `table`'s column `i`; `what` says where in the row.
fn unrepresentable(table: &TableSchema, i: usize, unfit: UnfitValue, what: &str) -> FormatError {
    let c = &table.columns[i];
    let ty = arrow_type(&c.data_type);
    FormatError::Unrepresentable {
        what: format!(
            "column {}.{}{what} holds {unfit}, which Parquet's {ty} (from {}) cannot represent; write this table as CSV or JSON lines",
            table.id, c.name, c.source_type
        ),
    }
}

impl MetaCols {
    fn heap_bytes(&self) -> usize {
        self.op.heap_bytes()
            + self.source_ts_ms.heap_bytes()
            + self.position.heap_bytes()
            + self.tx.heap_bytes()
            + self.lsn.heap_bytes()
            + self.before_image.heap_bytes()
            + self.before.heap_bytes()
            + self.unavailable.heap_bytes()
    }

    fn truncate(&mut self, n: usize) {
        self.op.truncate(n);
        self.source_ts_ms.truncate(n);
        self.position.truncate(n);
        self.tx.truncate(n);
        self.lsn.truncate(n);
        self.before_image.truncate(n);
        self.before.truncate(n);
        self.unavailable.truncate(n);
    }
}

// Column buffers. Each can be cut back to `n` rows, so a row that fails
// half-way leaves no trace.

fn nulls(valid: &[bool]) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

/// Fixed-width values and their validity.
#[derive(Default)]
struct Prim<T> {
    values: Vec<T>,
    valid: Vec<bool>,
}

impl<T: ArrowNativeType> Prim<T> {
    fn push(&mut self, v: T) {
        self.values.push(v);
        self.valid.push(true);
    }

    fn null(&mut self) {
        self.values.push(T::default());
        self.valid.push(false);
    }

    fn truncate(&mut self, n: usize) {
        self.values.truncate(n);
        self.valid.truncate(n);
    }

    fn heap_bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<T>() + self.valid.len()
    }

    fn finish_primitive<P: arrow_array::ArrowPrimitiveType<Native = T>>(&mut self, dt: &A) -> ArrayRef {
        let n = nulls(&self.valid);
        self.valid.clear();
        let values = ScalarBuffer::from(std::mem::take(&mut self.values));
        Arc::new(PrimitiveArray::<P>::new(values, n).with_data_type(dt.clone()))
    }
}

/// Variable-width values (text, bytes): one data buffer and offsets.
struct Var {
    data: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl Default for Var {
    fn default() -> Self {
        Var { data: Vec::new(), offsets: vec![0], valid: Vec::new() }
    }
}

impl Var {
    fn push(&mut self, b: &[u8]) -> Result<(), UnfitValue> {
        self.data.extend_from_slice(b);
        self.commit()
    }

    /// Ends the value appended to `data` since the last one.
    fn commit(&mut self) -> Result<(), UnfitValue> {
        let end = i32::try_from(self.data.len()).map_err(|_| UnfitValue::new("more than 2 GiB of text in one batch"))?;
        self.offsets.push(end);
        self.valid.push(true);
        Ok(())
    }

    fn null(&mut self) {
        self.data.truncate(*self.offsets.last().expect("offsets") as usize);
        self.offsets.push(self.data.len() as i32);
        self.valid.push(false);
    }

    fn truncate(&mut self, n: usize) {
        if n < self.valid.len() {
            self.valid.truncate(n);
            self.offsets.truncate(n + 1);
        }
        self.data.truncate(*self.offsets.last().expect("offsets") as usize);
    }

    fn heap_bytes(&self) -> usize {
        self.data.len() + self.offsets.len() * 4 + self.valid.len()
    }

    fn take(&mut self) -> (OffsetBuffer<i32>, Buffer, Option<NullBuffer>) {
        let n = nulls(&self.valid);
        self.valid.clear();
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        (offsets, Buffer::from_vec(std::mem::take(&mut self.data)), n)
    }

    fn finish(&mut self, dt: &A) -> Result<ArrayRef, ArrowError> {
        let (offsets, data, n) = self.take();
        Ok(match dt {
            A::Binary => Arc::new(BinaryArray::try_new(offsets, data, n)?),
            _ => Arc::new(StringArray::try_new(offsets, data, n)?),
        })
    }
}

struct ListCol {
    offsets: Vec<i32>,
    valid: Vec<bool>,
    child: Col,
}

impl ListCol {
    /// Ends a list whose items were pushed to `child` since the last one.
    fn end(&mut self, valid: bool) -> Result<(), UnfitValue> {
        let end = i32::try_from(self.child.len()).map_err(|_| UnfitValue::new("more than 2^31 array items in one batch"))?;
        self.offsets.push(end);
        self.valid.push(valid);
        Ok(())
    }

    fn truncate(&mut self, n: usize) {
        if n < self.valid.len() {
            self.valid.truncate(n);
            self.offsets.truncate(n + 1);
        }
        self.child.truncate(*self.offsets.last().expect("offsets") as usize);
    }

    fn heap_bytes(&self) -> usize {
        self.offsets.len() * 4 + self.valid.len() + self.child.heap_bytes()
    }

    fn finish(&mut self, dt: &A) -> Result<ArrayRef, ArrowError> {
        let A::List(item) = dt else { return Err(ArrowError::SchemaError(format!("expected a list, found {dt}"))) };
        let values = self.child.finish(item.data_type())?;
        let n = nulls(&self.valid);
        self.valid.clear();
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        Ok(Arc::new(ListArray::try_new(item.clone(), offsets, values, n)?))
    }
}

struct StructCol {
    children: Vec<Col>,
    valid: Vec<bool>,
}

impl StructCol {
    fn push_null(&mut self) {
        for c in &mut self.children {
            c.push_null();
        }
        self.valid.push(false);
    }

    fn truncate(&mut self, n: usize) {
        for c in &mut self.children {
            c.truncate(n);
        }
        self.valid.truncate(n);
    }

    fn heap_bytes(&self) -> usize {
        self.valid.len() + self.children.iter().map(Col::heap_bytes).sum::<usize>()
    }

    fn finish(&mut self, dt: &A) -> Result<ArrayRef, ArrowError> {
        let A::Struct(fields) = dt else { return Err(ArrowError::SchemaError(format!("expected a struct, found {dt}"))) };
        let len = self.valid.len();
        let arrays = self.children.iter_mut().zip(fields.iter()).map(|(c, f)| c.finish(f.data_type())).collect::<Result<Vec<_>, _>>()?;
        let n = nulls(&self.valid);
        self.valid.clear();
        Ok(Arc::new(StructArray::try_new_with_length(fields.clone(), arrays, n, len)?))
    }
}

/// One column's buffer, by Arrow type.
enum Col {
    Bool(Prim<bool>),
    I16(Prim<i16>),
    I32(Prim<i32>),
    I64(Prim<i64>),
    U64(Prim<u64>),
    F32(Prim<f32>),
    F64(Prim<f64>),
    D128 { b: Prim<i128>, precision: u8, scale: u32 },
    D256 { b: Prim<i256>, precision: u8, scale: u32 },
    Date(Prim<i32>),
    Time(Prim<i64>),
    Ts(Prim<i64>),
    Utf8(Var),
    Binary(Var),
    List(Box<ListCol>),
}

/// `bool` is not an Arrow native type: its own small buffer.
impl Prim<bool> {
    fn push_bool(&mut self, v: bool) {
        self.values.push(v);
        self.valid.push(true);
    }

    fn null_bool(&mut self) {
        self.values.push(false);
        self.valid.push(false);
    }

    fn truncate_bool(&mut self, n: usize) {
        self.values.truncate(n);
        self.valid.truncate(n);
    }
}

pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

impl Col {
    fn new(dt: &A) -> Col {
        match dt {
            A::Boolean => Col::Bool(Prim::default()),
            A::Int16 => Col::I16(Prim::default()),
            A::Int32 => Col::I32(Prim::default()),
            A::Int64 => Col::I64(Prim::default()),
            A::UInt64 => Col::U64(Prim::default()),
            A::Float32 => Col::F32(Prim::default()),
            A::Float64 => Col::F64(Prim::default()),
            A::Decimal128(p, s) => Col::D128 { b: Prim::default(), precision: *p, scale: *s as u32 },
            A::Decimal256(p, s) => Col::D256 { b: Prim::default(), precision: *p, scale: *s as u32 },
            A::Date32 => Col::Date(Prim::default()),
            A::Time64(_) => Col::Time(Prim::default()),
            A::Timestamp(..) => Col::Ts(Prim::default()),
            A::Binary => Col::Binary(Var::default()),
            A::List(item) => Col::List(Box::new(ListCol { offsets: vec![0], valid: Vec::new(), child: Col::new(item.data_type()) })),
            _ => Col::Utf8(Var::default()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Bool(p) => p.valid.len(),
            Col::I16(p) => p.valid.len(),
            Col::I32(p) | Col::Date(p) => p.valid.len(),
            Col::I64(p) | Col::Time(p) | Col::Ts(p) => p.valid.len(),
            Col::U64(p) => p.valid.len(),
            Col::F32(p) => p.valid.len(),
            Col::F64(p) => p.valid.len(),
            Col::D128 { b, .. } => b.valid.len(),
            Col::D256 { b, .. } => b.valid.len(),
            Col::Utf8(v) | Col::Binary(v) => v.valid.len(),
            Col::List(l) => l.valid.len(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Col::Bool(p) => p.truncate_bool(n),
            Col::I16(p) => p.truncate(n),
            Col::I32(p) | Col::Date(p) => p.truncate(n),
            Col::I64(p) | Col::Time(p) | Col::Ts(p) => p.truncate(n),
            Col::U64(p) => p.truncate(n),
            Col::F32(p) => p.truncate(n),
            Col::F64(p) => p.truncate(n),
            Col::D128 { b, .. } => b.truncate(n),
            Col::D256 { b, .. } => b.truncate(n),
            Col::Utf8(v) | Col::Binary(v) => v.truncate(n),
            Col::List(l) => l.truncate(n),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Col::Bool(p) => p.values.len() + p.valid.len(),
            Col::I16(p) => p.heap_bytes(),
            Col::I32(p) | Col::Date(p) => p.heap_bytes(),
            Col::I64(p) | Col::Time(p) | Col::Ts(p) => p.heap_bytes(),
            Col::U64(p) => p.heap_bytes(),
            Col::F32(p) => p.heap_bytes(),
            Col::F64(p) => p.heap_bytes(),
            Col::D128 { b, .. } => b.heap_bytes(),
            Col::D256 { b, .. } => b.heap_bytes(),
            Col::Utf8(v) | Col::Binary(v) => v.heap_bytes(),
            Col::List(l) => l.heap_bytes(),
        }
    }

    fn push_null(&mut self) {
        match self {
            Col::Bool(p) => p.null_bool(),
            Col::I16(p) => p.null(),
            Col::I32(p) | Col::Date(p) => p.null(),
            Col::I64(p) | Col::Time(p) | Col::Ts(p) => p.null(),
            Col::U64(p) => p.null(),
            Col::F32(p) => p.null(),
            Col::F64(p) => p.null(),
            Col::D128 { b, .. } => b.null(),
            Col::D256 { b, .. } => b.null(),
            Col::Utf8(v) | Col::Binary(v) => v.null(),
            Col::List(l) => {
                // A null list: no items (`end` cannot fail without new items).
                let _ = l.end(false);
            }
        }
    }

    /// Appends `v`; `Err` is the value as the error message shows it.
    fn push(&mut self, v: &Value) -> Result<(), UnfitValue> {
        if matches!(v, Value::Null | Value::Unavailable) {
            self.push_null();
            return Ok(());
        }
        let bad = || UnfitValue::of(v);
        match (&mut *self, v) {
            (Col::Bool(p), Value::Bool(b)) => p.push_bool(*b),
            (Col::I16(p), Value::Int(i)) => p.push(i16::try_from(*i).map_err(|_| bad())?),
            (Col::I16(p), Value::UInt(u)) => p.push(i16::try_from(*u).map_err(|_| bad())?),
            (Col::I32(p), Value::Int(i)) => p.push(i32::try_from(*i).map_err(|_| bad())?),
            (Col::I32(p), Value::UInt(u)) => p.push(i32::try_from(*u).map_err(|_| bad())?),
            (Col::I64(p), Value::Int(i)) => p.push(*i),
            (Col::I64(p), Value::UInt(u)) => p.push(i64::try_from(*u).map_err(|_| bad())?),
            (Col::U64(p), Value::UInt(u)) => p.push(*u),
            (Col::U64(p), Value::Int(i)) => p.push(u64::try_from(*i).map_err(|_| bad())?),
            (Col::F32(p), Value::Float32(f)) => p.push(*f),
            (Col::F64(p), Value::Float64(f)) => p.push(*f),
            (Col::F64(p), Value::Float32(f)) => p.push(f64::from(*f)),
            (Col::D128 { b, precision, scale }, Value::Decimal(s) | Value::Text(s)) => {
                b.push(decimal_i128(s, *scale, *precision).ok_or_else(bad)?)
            }
            (Col::D256 { b, precision, scale }, Value::Decimal(s) | Value::Text(s)) => {
                b.push(decimal_i256(s, *scale, *precision).ok_or_else(bad)?)
            }
            (Col::Date(p), Value::Text(s)) => p.push(temporal::date_days(s).and_then(|d| i32::try_from(d).ok()).ok_or_else(bad)?),
            (Col::Time(p), Value::Text(s)) => {
                // A time of day: MySQL's negative or 24h+ TIME values do not fit.
                p.push(temporal::time_micros(s).filter(|us| (0..=DAY_MICROS).contains(us)).ok_or_else(bad)?)
            }
            (Col::Ts(p), Value::Text(s)) => p.push(temporal::timestamp_micros(s).ok_or_else(bad)?),
            (Col::Binary(v), Value::Bytes(b)) => v.push(b)?,
            (Col::Utf8(v), Value::Text(s) | Value::Decimal(s) | Value::Json(s)) => v.push(s.as_bytes())?,
            (Col::Utf8(v), other) => {
                // A non-text value in a text column: its CSV text (arrays and
                // bytes: JSON and base64), unquoted.
                match other {
                    Value::Array(_) => crate::value::write_json(other, &mut v.data),
                    Value::Bytes(b) => {
                        use base64::Engine;
                        v.data.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes())
                    }
                    _ => crate::value::write_csv(other, &mut v.data),
                }
                v.commit()?
            }
            (Col::List(l), Value::Array(items)) => {
                for item in items {
                    if matches!(item, Value::Array(_)) && !matches!(l.child, Col::List(_)) {
                        return Err(UnfitValue::new(format!("a multi-dimensional array {}", bad())));
                    }
                    l.child.push(item).map_err(|e| UnfitValue::new(format!("{e} (an element of {})", bad())))?;
                }
                l.end(true)?
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    fn finish(&mut self, dt: &A) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Col::Bool(p) => {
                let n = nulls(&p.valid);
                p.valid.clear();
                Arc::new(BooleanArray::new(BooleanBuffer::from(std::mem::take(&mut p.values)), n))
            }
            Col::I16(p) => p.finish_primitive::<Int16Type>(dt),
            Col::I32(p) => p.finish_primitive::<Int32Type>(dt),
            Col::I64(p) => p.finish_primitive::<Int64Type>(dt),
            Col::U64(p) => p.finish_primitive::<UInt64Type>(dt),
            Col::F32(p) => p.finish_primitive::<Float32Type>(dt),
            Col::F64(p) => p.finish_primitive::<Float64Type>(dt),
            Col::D128 { b, .. } => b.finish_primitive::<Decimal128Type>(dt),
            Col::D256 { b, .. } => b.finish_primitive::<Decimal256Type>(dt),
            Col::Date(p) => p.finish_primitive::<Date32Type>(dt),
            Col::Time(p) => p.finish_primitive::<Time64MicrosecondType>(dt),
            Col::Ts(p) => p.finish_primitive::<TimestampMicrosecondType>(dt),
            Col::Utf8(v) | Col::Binary(v) => v.finish(dt)?,
            Col::List(l) => l.finish(dt)?,
        })
    }
}

/// A decimal's text as its unscaled `i128` at `scale`, if it has at most
/// `scale` fractional digits and `precision` digits in all.
pub fn decimal_i128(text: &str, scale: u32, precision: u8) -> Option<i128> {
    let d = temporal::decimal_digits(text, scale)?;
    let mut v: i128 = 0;
    for digit in d.digits() {
        v = v.checked_mul(10)?.checked_add(i128::from(digit))?;
    }
    if v >= 10_i128.checked_pow(u32::from(precision))? {
        return None;
    }
    Some(if d.negative { -v } else { v })
}

/// As [`decimal_i128`], for `Decimal256`.
pub fn decimal_i256(text: &str, scale: u32, precision: u8) -> Option<i256> {
    let be = temporal::decimal_unscaled_be(text, scale)?;
    if be.len() > 32 {
        return None;
    }
    let fill = if be[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 32];
    buf[32 - be.len()..].copy_from_slice(&be);
    let v = i256::from_be_bytes(buf);
    let limit = i256::from_i128(10).checked_pow(u32::from(precision))?;
    if v.checked_abs()? >= limit {
        return None;
    }
    Some(v)
}
