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

/// A date and time as SQL prints it (`2024-01-02 03:04:05.5`) in ISO 8601
/// (`2024-01-02T03:04:05.5`, with `Z` appended when `zulu`), in one
/// allocation: snapshots convert one per row.
pub fn iso_datetime(sql: &str, zulu: bool) -> String {
    let mut s = String::with_capacity(sql.len() + 1);
    match sql.split_once(' ') {
        Some((date, time)) => {
            s.push_str(date);
            s.push('T');
            s.push_str(time);
        }
        None => s.push_str(sql),
    }
    if zulu {
        s.push('Z');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_date_times_become_iso_8601() {
        assert_eq!(super::iso_datetime("2024-01-02 03:04:05.5", false), "2024-01-02T03:04:05.5");
        assert_eq!(super::iso_datetime("2024-01-02 03:04:05", true), "2024-01-02T03:04:05Z");
        assert_eq!(super::iso_datetime("2024-01-02", false), "2024-01-02");
    }
}
