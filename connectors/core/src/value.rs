//! The lossless value a column holds in an event.
//!
//! Values keep what the source said exactly: decimals as their digits, 64-bit
//! signed and unsigned integers, floats with NaN and infinities, timestamps as
//! ISO 8601 text with every fractional digit, JSON as the source's text. How a
//! value is written (a JSON number, a CSV cell, an Avro logical type) is the
//! encoder's business, guided by the column's [`crate::DataType`].

/// One column's value in a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// The source did not send this value: an unchanged TOASTed Postgres
    /// column, or a non-key column of a before image the source keeps only
    /// the key of. Never written as NULL.
    Unavailable,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float32(f32),
    Float64(f64),
    /// An exact decimal in its canonical text form (`-12.3400`), or `NaN`,
    /// `Infinity`, `-Infinity` where the source allows them.
    Decimal(String),
    /// Text, and every type whose canonical form is text: dates, times,
    /// intervals, UUIDs, enum labels, network addresses, the text fallback.
    Text(String),
    Bytes(Vec<u8>),
    /// A JSON document, exactly as the source stored it.
    Json(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}
