//! Why an event could not be encoded. Every such error is definite: the
//! same event fails the same way again. Messages name the table, the
//! column and the value's kind and size, never the value (it may be
//! personal data).
//!
//! Errors of the `parquet`, `arrow` and `apache-avro` crates are kept as
//! the [`std::error::Error::source`] of a [`FormatError`], whose own message
//! says what was being done (`parquet file for public.orders`): print the
//! chain (`{:#}` with `anyhow`) to see both.

use riffle_core::Value;

/// An event, or a file, the format cannot encode.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A value the column's type in this format cannot hold (`what` names
    /// the column and the value's kind, not the value).
    #[error("{what}")]
    Unrepresentable { what: String },
    /// The table's schema changed inside one file; the sink must start a new one.
    #[error("{what}")]
    SchemaChanged { what: String },
    /// A setting the format refuses (a compression level).
    #[error("{what}")]
    Setting { what: String },
    /// The `parquet` crate failed; `what` says at what.
    #[error("{what}")]
    Parquet {
        what: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow refused a batch or an array; `what` says which.
    #[error("{what}")]
    Arrow {
        what: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The `apache-avro` crate failed (compressing a block); `what` says at what.
    #[error("{what}")]
    Avro {
        what: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
}

/// A value a column's type cannot hold, as messages show it: its kind and
/// size (`a text value of 12 characters`, `"NaN"`), never the value itself.
/// The column is named by whoever turns it into a message
/// ([`crate::avro::Unrepresentable`], [`FormatError::Unrepresentable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown}")]
pub struct UnfitValue {
    /// The value's kind and size ([`crate::value::describe`]).
    pub shown: String,
}

impl UnfitValue {
    /// `v`'s kind and size.
    pub fn of(v: &Value) -> Self {
        UnfitValue { shown: crate::value::describe(v) }
    }

    /// A description made by the caller (it must not hold row data).
    pub fn new(shown: impl Into<String>) -> Self {
        UnfitValue { shown: shown.into() }
    }
}
