//! Tables, columns and the types riffle maps them to.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A table's qualified name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId { schema: schema.into(), name: name.into() }
    }

    /// `schema.table` as [`fmt::Display`] writes it (split at the first
    /// dot); `None` without one.
    pub fn parse(text: &str) -> Option<TableId> {
        let (schema, name) = text.split_once('.').filter(|(s, n)| !s.is_empty() && !n.is_empty())?;
        Some(TableId::new(schema, name))
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What kind of value a column holds; encoders use it to pick a
/// representation (JSON number or string, Avro logical type, Arrow type).
/// The mapping from each source's types is written down in `schemas/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    Int16,
    Int32,
    Int64,
    UInt64,
    Float32,
    Float64,
    /// Exact decimal; precision and scale when the source declares them.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    String,
    Bytes,
    /// ISO 8601 date `YYYY-MM-DD`.
    Date,
    /// Time of day `HH:MM:SS[.ffffff]`.
    Time,
    /// Time of day with offset `HH:MM:SS[.ffffff]+HH[:MM]`.
    TimeTz,
    /// Timestamp without zone `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
    Timestamp,
    /// Timestamp in UTC `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
    TimestampTz,
    /// ISO 8601 duration `P1Y2M3DT4H5M6.7S`.
    Interval,
    Uuid,
    Json,
    Enum,
    Array(Box<DataType>),
    /// A type riffle has no specific mapping for, carried as the source's
    /// text form; the name is the source type's name.
    Other(String),
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The source's name for the type (`numeric(10,2)`, `timestamptz`).
    pub source_type: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// An enum's (or MySQL set's) labels in their declared order, when the
    /// source names them (Debezium's `allowed` schema parameter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// A table as the source describes it at one point of its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub id: TableId,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key (or replica identity index);
    /// empty when the table has none.
    pub key: Vec<usize>,
    /// True when updates and deletes carry the whole before image
    /// (Postgres `REPLICA IDENTITY FULL`).
    pub full_before_image: bool,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_parse_as_they_are_written() {
        let id = TableId::parse("shop.order.items").unwrap();
        assert_eq!((id.schema.as_str(), id.name.as_str()), ("shop", "order.items"));
        assert_eq!(TableId::parse(&TableId::new("public", "t").to_string()), Some(TableId::new("public", "t")));
        for bad in ["t", ".t", "public.", ""] {
            assert_eq!(TableId::parse(bad), None, "{bad:?}");
        }
    }
}
