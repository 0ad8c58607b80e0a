//! Row images of a rows event, decoded with the table map read once per
//! event.
//!
//! mysql_common's own row parser rebuilds every row's column metadata (it
//! walks the table map's optional metadata and builds `Column`s per row);
//! profiled on the 350k-change benchmark that was about a quarter of the
//! stream's time. This module keeps its value parser (`BinlogValue`) and
//! does the per-event work once.

use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use std::io;

struct ColumnSpec {
    ty: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
}

/// What the table map says of each column.
pub struct Shape {
    columns: Vec<ColumnSpec>,
    /// Column names (`binlog_row_metadata=FULL`); empty when not sent.
    pub names: Vec<String>,
    /// ENUM and SET labels as the table had them when the rows were written
    /// (`binlog_row_metadata=FULL`), per column; `None` for other columns or
    /// when not sent.
    pub labels: Vec<Option<Vec<String>>>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads the table map once.
pub fn shape(tme: &TableMapEvent<'_>) -> io::Result<Shape> {
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let mut signedness = extractor.iter_signedness();
    let mut columns = Vec::with_capacity(tme.columns_count() as usize);
    for i in 0..tme.columns_count() as usize {
        let ty = tme.get_column_type(i).map_err(|e| invalid(&e.to_string()))?.ok_or_else(|| invalid("no column type"))?;
        let unsigned = ty.is_numeric_type().then(|| signedness.next()).flatten().unwrap_or_default();
        columns.push(ColumnSpec { ty, meta: tme.get_column_metadata(i).unwrap_or(&[]).to_vec(), unsigned });
    }
    let mut names = Vec::new();
    for name in extractor.iter_column_name() {
        names.push(name?.name().into_owned());
    }
    // The label lists come in column order, ENUMs in one list, SETs in another.
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta() {
        let text = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
        match field? {
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values() {
                    enums.push(e?.values().iter().map(|x| text(x.value_raw())).collect::<Vec<_>>());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for e in v.iter_values() {
                    sets.push(e?.values().iter().map(|x| text(x.value_raw())).collect::<Vec<_>>());
                }
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let labels = columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::MYSQL_TYPE_ENUM => enums.next(),
            ColumnType::MYSQL_TYPE_SET => sets.next(),
            _ => None,
        })
        .collect();
    Ok(Shape { columns, names, labels })
}

/// One image: the values of the columns present in it, in column order.
fn image<'a>(buf: &mut ParseBuf<'a>, shape: &'a Shape, present: &[bool]) -> io::Result<Vec<mysql_common::value::Value>> {
    let count = present.iter().filter(|p| **p).count();
    let nulls: &[u8] = buf.parse(count.div_ceil(8))?;
    let mut values = Vec::with_capacity(count);
    for (idx, (col, _)) in shape.columns.iter().zip(present).filter(|(_, p)| **p).enumerate() {
        if nulls[idx / 8] & (1 << (idx % 8)) != 0 {
            values.push(mysql_common::value::Value::NULL);
            continue;
        }
        let v: BinlogValue<'a> = buf.parse((col.ty, col.meta.as_slice(), col.unsigned, false))?;
        values.push(mysql_common::value::Value::try_from(v).map_err(|e| invalid(&e.to_string()))?);
    }
    Ok(values)
}

type Images = (Option<Vec<mysql_common::value::Value>>, Option<Vec<mysql_common::value::Value>>);

/// Every (before, after) pair of a rows event.
pub fn rows<'a>(event: &'a RowsEventData<'a>, shape: &'a Shape) -> io::Result<Vec<Images>> {
    let n = event.num_columns() as usize;
    let before: Option<Vec<bool>> = event.columns_before_image().map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
    let after: Option<Vec<bool>> = event.columns_after_image().map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
    if shape.columns.len() != n {
        return Err(invalid("the rows event and its table map disagree on the number of columns"));
    }
    let mut buf = ParseBuf(event.rows_data());
    let mut out = Vec::new();
    while !buf.is_empty() {
        let b = before.as_deref().map(|p| image(&mut buf, shape, p)).transpose()?;
        let a = after.as_deref().map(|p| image(&mut buf, shape, p)).transpose()?;
        out.push((b, a));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{column_type, from_binlog};

    /// MySQL stores JSON in the binlog in its binary form; this is
    /// `{"a": 1}` as MySQL writes it (json_binary.h: a small object with one
    /// key and an inlined int16), behind the column's 4-byte length.
    #[test]
    fn mysql_binary_json_becomes_json_text() {
        let body = [0x01, 0x00, 0x0c, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a'];
        let mut bytes = (body.len() as u32 + 1).to_le_bytes().to_vec();
        bytes.push(0x00); // small object
        bytes.extend_from_slice(&body);
        let mut buf = ParseBuf(&bytes);
        let v: BinlogValue<'_> = buf.parse((ColumnType::MYSQL_TYPE_JSON, &[4u8][..], false, false)).unwrap();
        let v = mysql_common::value::Value::try_from(v).unwrap();
        let col = column_type("doc".into(), "json", "json", true, false, None, None, None, Some("utf8mb4".into()));
        let out = from_binlog(&col, v).unwrap();
        let riffle_core::Value::Json(text) = out else { panic!("expected JSON, got {out:?}") };
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), serde_json::json!({"a": 1}));
    }
}
