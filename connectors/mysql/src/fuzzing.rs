//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): what riffle
//! does with bytes a server sends, without a server. Not an API.
#![doc(hidden)]

use crate::error::MyError;
use crate::stream::{decode_row, layout_of, Table};
use crate::types::{column_type, MyColumn, ServerCharset};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{
    DeleteRowsEvent, DeleteRowsEventV1, FormatDescriptionEvent, RowsEventData, TableMapEvent, UpdateRowsEvent, UpdateRowsEventV1,
    WriteRowsEvent, WriteRowsEventV1,
};
use mysql_common::binlog::BinlogCtx;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use riffle_core::{Offset, TableId};
use std::sync::Arc;

/// The rows event types, as `rows_event`'s first byte picks them.
const ROWS_TYPES: [u8; 6] = [23, 24, 25, 30, 31, 32];

/// A catalog column for a binlog column type, so every value reaches
/// [`crate::types::from_binlog`] with a type it meets in practice.
fn catalog_column(i: usize, ty: Option<ColumnType>, name: Option<&String>) -> MyColumn {
    use ColumnType::*;
    let (data_type, source_type) = match ty {
        Some(MYSQL_TYPE_TINY) => ("tinyint", "tinyint(3) unsigned"),
        Some(MYSQL_TYPE_SHORT) => ("smallint", "smallint(6)"),
        Some(MYSQL_TYPE_INT24) => ("mediumint", "mediumint(9)"),
        Some(MYSQL_TYPE_LONG) => ("int", "int(10) unsigned"),
        Some(MYSQL_TYPE_LONGLONG) => ("bigint", "bigint(20) unsigned"),
        Some(MYSQL_TYPE_FLOAT) => ("float", "float"),
        Some(MYSQL_TYPE_DOUBLE) => ("double", "double"),
        Some(MYSQL_TYPE_NEWDECIMAL) => ("decimal", "decimal(10,2)"),
        Some(MYSQL_TYPE_YEAR) => ("year", "year(4)"),
        Some(MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE) => ("date", "date"),
        Some(MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2) => ("time", "time(6)"),
        Some(MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2) => ("datetime", "datetime(6)"),
        Some(MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2) => ("timestamp", "timestamp(6)"),
        Some(MYSQL_TYPE_BIT) => ("bit", "bit(1)"),
        Some(MYSQL_TYPE_ENUM) => ("enum", "enum('a','b')"),
        Some(MYSQL_TYPE_SET) => ("set", "set('a','b','c')"),
        Some(MYSQL_TYPE_JSON) => ("json", "json"),
        Some(MYSQL_TYPE_BLOB | MYSQL_TYPE_GEOMETRY) => ("blob", "blob"),
        // MariaDB's UUID, INET6 and INET4 arrive as fixed strings too.
        Some(MYSQL_TYPE_STRING) => [("binary", "binary(4)"), ("uuid", "uuid"), ("inet6", "inet6"), ("inet4", "inet4")][i % 4],
        _ => ("varchar", "varchar(255)"),
    };
    let name = name.cloned().unwrap_or_else(|| format!("c{i}"));
    // Every way text is decoded: UTF-8, cp1252, the UTF-16/32 forms, and a
    // table from the server (here a made-up one with pairs and triples).
    let charset = ["utf8mb4", "latin1", "utf16", "utf16le", "ucs2", "utf32", "eucjpms"][i % 7];
    let mut c = column_type(name, data_type, source_type, true, i == 0, Some(10), Some(2), Some(6), Some(charset.into()));
    if charset == "eucjpms" {
        c.server_charset = Some(server_table());
    }
    c
}

/// A server character set table shaped as EUC-JP's: ASCII alone, other
/// bytes leading pairs, `0x8F` leading triples; some sequences unmapped.
fn server_table() -> Arc<ServerCharset> {
    static TABLE: std::sync::OnceLock<Arc<ServerCharset>> = std::sync::OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut single = [None; 256];
            for b in 0..0x80u8 {
                single[usize::from(b)] = Some(char::from(b));
            }
            let table = |base: u32| (0..0x1_0000u32).map(|n| char::from_u32(base + n % 0x5000).unwrap_or('?')).collect();
            Arc::new(ServerCharset { single, pairs: table(0x4e00), triples: table(0x3400) })
        })
        .clone()
}

/// A table map body and a rows event body, as the binlog stream hands
/// them to riffle, decoded to riffle's values. `input`: one byte picking
/// the rows event type, the table map's length (2 bytes, little-endian),
/// the table map, the rows event. Returns the number of rows.
pub fn rows_event(input: &[u8]) -> Result<usize, MyError> {
    let bad_event = |source| MyError::BadEvent { file: "fuzz".into(), pos: 0, source };
    let bad_row = |source| MyError::BadRow { file: "fuzz".into(), pos: 0, source };
    let short = || bad_event(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short input"));
    let (&kind, rest) = input.split_first().ok_or_else(short)?;
    let (len, rest) = rest.split_at_checked(2).ok_or_else(short)?;
    let (tme_bytes, rows_bytes) = rest.split_at_checked(usize::from(u16::from_le_bytes([len[0], len[1]]))).ok_or_else(short)?;
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let tme: TableMapEvent<'_> = ParseBuf(tme_bytes).parse(BinlogCtx::new(tme_bytes.len(), &fde)).map_err(bad_event)?;
    let event_type = ROWS_TYPES[usize::from(kind) % ROWS_TYPES.len()];
    crate::rows::check_rows_header(event_type, rows_bytes).map_err(bad_event)?;
    let ctx = BinlogCtx::new(rows_bytes.len(), &fde);
    let mut buf = ParseBuf(rows_bytes);
    let rows = match event_type {
        23 => RowsEventData::WriteRowsEventV1(buf.parse::<WriteRowsEventV1<'_>>(ctx).map_err(bad_event)?),
        24 => RowsEventData::UpdateRowsEventV1(buf.parse::<UpdateRowsEventV1<'_>>(ctx).map_err(bad_event)?),
        25 => RowsEventData::DeleteRowsEventV1(buf.parse::<DeleteRowsEventV1<'_>>(ctx).map_err(bad_event)?),
        30 => RowsEventData::WriteRowsEvent(buf.parse::<WriteRowsEvent<'_>>(ctx).map_err(bad_event)?),
        31 => RowsEventData::UpdateRowsEvent(buf.parse::<UpdateRowsEvent<'_>>(ctx).map_err(bad_event)?),
        _ => RowsEventData::DeleteRowsEvent(buf.parse::<DeleteRowsEvent<'_>>(ctx).map_err(bad_event)?),
    };
    let shape = crate::rows::shape(&tme).map_err(bad_row)?;
    let id = TableId::new("fuzz", "t");
    let columns: Vec<MyColumn> =
        (0..shape.names.len().max(usize::try_from(tme.columns_count()).unwrap_or(0)).min(crate::rows::MAX_COLUMNS))
            .map(|i| catalog_column(i, tme.get_column_type(i).ok().flatten(), shape.names.get(i)))
            .collect();
    let table = Table { schema: Arc::new(crate::catalog::schema_of(&id, &columns)), columns };
    let layout = layout_of(&table, &shape);
    let images = crate::rows::rows(&rows, &shape).map_err(bad_row)?;
    for (before, after) in &images {
        for image in [before, after].into_iter().flatten() {
            decode_row(&table, &layout, image.clone())?;
        }
    }
    Ok(images.len())
}

/// A snapshot row's text-protocol packet decoded to riffle's values.
/// `input`: one byte for the number of columns (1 to 16), a byte per
/// column picking its type, the packet. Returns the number of values.
pub fn text_row(input: &[u8]) -> Result<usize, MyError> {
    use ColumnType::*;
    const TYPES: [Option<ColumnType>; 20] = [
        Some(MYSQL_TYPE_TINY),
        Some(MYSQL_TYPE_SHORT),
        Some(MYSQL_TYPE_INT24),
        Some(MYSQL_TYPE_LONG),
        Some(MYSQL_TYPE_LONGLONG),
        Some(MYSQL_TYPE_FLOAT),
        Some(MYSQL_TYPE_DOUBLE),
        Some(MYSQL_TYPE_NEWDECIMAL),
        Some(MYSQL_TYPE_YEAR),
        Some(MYSQL_TYPE_DATE),
        Some(MYSQL_TYPE_TIME),
        Some(MYSQL_TYPE_DATETIME),
        Some(MYSQL_TYPE_TIMESTAMP),
        Some(MYSQL_TYPE_BIT),
        Some(MYSQL_TYPE_ENUM),
        Some(MYSQL_TYPE_SET),
        Some(MYSQL_TYPE_JSON),
        Some(MYSQL_TYPE_BLOB),
        Some(MYSQL_TYPE_STRING),
        None,
    ];
    let (&n, rest) = input.split_first().ok_or(MyError::Unexpected("short input".into()))?;
    let n = usize::from(n % 16) + 1;
    let (types, packet) = rest.split_at_checked(n).ok_or(MyError::Unexpected("short input".into()))?;
    let columns: Vec<MyColumn> =
        types.iter().enumerate().map(|(i, &t)| catalog_column(i, TYPES[usize::from(t) % TYPES.len()], None)).collect();
    let row = crate::types::text_row(&TableId::new("fuzz", "t"), &columns, packet, |_, _| {})?;
    Ok(row.len())
}

/// A JSON column's binary value as JSON text.
pub fn json(doc: &[u8]) -> std::io::Result<String> {
    crate::json::to_text(doc)
}

/// A saved GTID position as riffle reads, updates and compares it: `text`
/// holds two positions, one a line. Returns the first's position after
/// parsing (MariaDB form if `mariadb`).
pub fn gtid(text: &str, mariadb: bool) -> Option<String> {
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let mut tracker = crate::gtid::Tracker::parse(Some(a), mariadb);
    let position = tracker.position();
    // A position riffle wrote reads back the same.
    let again = crate::gtid::Tracker::parse(position.as_deref(), mariadb).position();
    assert_eq!(position, again, "a GTID position does not read back as written");
    for line in b.lines().take(16) {
        let mut f = line.split([':', '-']);
        let n: u64 = f.next_back().and_then(|n| n.parse().ok()).unwrap_or(0);
        tracker.mysql(line.rsplit_once(':').map_or(line, |(u, _)| u), n);
        tracker.mariadb(n as u32, (n >> 32) as u32, n);
    }
    // Resuming by GTID parses each set member as the driver's Sid.
    for sid in a.split(',') {
        let _ = sid.trim().parse::<mysql_async::Sid<'static>>();
    }
    let at = |gtid: &str| Offset::Mysql { file: "bin.000001".into(), pos: 4, gtid: Some(gtid.to_string()) };
    let (x, y) = (at(a), at(b));
    // Strictly before is asymmetric.
    assert!(!(x.is_before(&y) && y.is_before(&x)), "two GTID positions are each before the other");
    let _ = x.as_number();
    tracker.position()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table map of `fuzz.t` with these column types and metadata, and a
    /// WRITE_ROWS_EVENT (v2) with this after-image bitmap and row data.
    fn input(types: &[u8], meta: &[u8], present: u8, rows: &[u8]) -> Vec<u8> {
        let mut tme = vec![1, 0, 0, 0, 0, 0, 0, 0, 1, b'd', 0, 1, b't', 0, types.len() as u8];
        tme.extend_from_slice(types);
        tme.push(meta.len() as u8);
        tme.extend_from_slice(meta);
        tme.push(0xff); // nullable
        let mut out = vec![3]; // WRITE_ROWS_EVENT
        out.extend_from_slice(&(tme.len() as u16).to_le_bytes());
        out.extend_from_slice(&tme);
        out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, types.len() as u8, present]);
        out.extend_from_slice(rows);
        out
    }

    #[test]
    fn well_formed_rows_decode() {
        // One INT column, two rows: 7 and NULL.
        let rows = rows_event(&input(&[0x03], &[], 0x01, &[0x00, 7, 0, 0, 0, 0x01])).unwrap();
        assert_eq!(rows, 2);
    }

    /// Before: an image of no columns consumed no bytes, so the loop over
    /// the row data never ended (and grew a vector until memory ran out).
    #[test]
    fn an_empty_column_bitmap_with_row_data_is_an_error() {
        let e = rows_event(&input(&[0x03], &[], 0x00, &[0x00, 0x00])).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
    }

    /// Before: mysql_common indexed the missing metadata and panicked.
    #[test]
    fn a_table_map_without_column_metadata_is_an_error() {
        for ty in [0xf6, 0x0f, 0xfe, 0x10, 0x11, 0x12, 0x13, 0xf5, 0xfc, 0xfd] {
            let e = rows_event(&input(&[ty], &[], 0x01, &[0x00, 1, 2, 3, 4, 5, 6, 7, 8])).unwrap_err();
            assert!(matches!(e, MyError::BadRow { .. }), "type {ty:#x}: {e:?}");
        }
        // DECIMAL with a scale above its precision: a huge buffer before.
        let e = rows_event(&input(&[0xf6], &[2, 9], 0x01, &[0x00, 1, 2, 3, 4])).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
    }

    /// Found by the fuzzer: a DECIMAL whose digit groups exceed 9 digits
    /// overflowed in mysql_common.
    #[test]
    fn decimals_with_digit_groups_out_of_range_are_errors() {
        // DECIMAL(10,2): 4 bytes of integer part (8 digits), 1 of fraction.
        let e = rows_event(&input(&[0xf6], &[10, 2], 0x01, &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00])).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
        let e = rows_event(&input(&[0xf6], &[10, 2], 0x01, &[0x00, 0x80, 0x00, 0x00, 0x01, 0xff])).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
        let e = rows_event(&include_bytes!("../tests/fuzz/my_rows-decimal-overflow")[..]).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
    }

    /// Found by the fuzzer: a VAR_STRING column (no metadata in the table
    /// map) made mysql_common index metadata that is not there.
    #[test]
    fn var_string_columns_are_errors() {
        let e = rows_event(&include_bytes!("../tests/fuzz/my_rows-var-string")[..]).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
    }

    /// Found by the fuzzer: a SET label list claiming 2^64 labels made
    /// mysql_common allocate for them (a capacity overflow panic).
    #[test]
    fn label_lists_longer_than_their_bytes_are_errors() {
        let e = rows_event(&include_bytes!("../tests/fuzz/my_rows-set-labels")[..]).unwrap_err();
        assert!(matches!(e, MyError::BadRow { .. }), "{e:?}");
    }

    #[test]
    fn values_past_the_end_of_the_event_are_errors() {
        // INT with 2 of its 4 bytes; VARCHAR claiming 200 bytes; JSON claiming 1000.
        for (ty, meta, data) in [
            (0x03, &[][..], &[0x00, 1, 2][..]),
            (0x0f, &[0x10, 0x00][..], &[0x00, 200, b'a'][..]),
            (0xf5, &[4][..], &[0x00, 0xe8, 0x03, 0, 0, 0x00][..]),
        ] {
            let e = rows_event(&input(&[ty], meta, 0x01, data)).unwrap_err();
            assert!(matches!(e, MyError::BadRow { .. }), "type {ty:#x}: {e:?}");
        }
    }

    /// Before: mysql_common's TIME(2) decoding subtracted from an unsigned
    /// fraction (an overflow panic with debug assertions, a wrong value
    /// without).
    #[test]
    fn negative_fractional_times_decode() {
        // -00:00:00.50 as MySQL writes TIME(2): int part 0x7fffff (−1 after
        // the offset), fraction 0x32.
        assert_eq!(rows_event(&input(&[0x13], &[2], 0x01, &[0x00, 0x7f, 0xff, 0xff, 0x32])).unwrap(), 1);
    }

    #[test]
    fn rows_events_with_absurd_column_counts_are_errors() {
        let mut data = input(&[0x03], &[], 0x01, &[]);
        // Replace the rows event's column count with a 9-byte length-encoded u64::MAX.
        let tail = data.len() - 2;
        data.truncate(tail);
        data.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let e = rows_event(&data).unwrap_err();
        assert!(matches!(e, MyError::BadEvent { .. }), "{e:?}");
    }

    #[test]
    fn gtid_positions_read_back() {
        assert_eq!(gtid("0-1-10,1-2-5\n0-1-11", true).as_deref(), Some("0-1-10,1-2-5,11-0-11"));
        assert_eq!(
            gtid("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9\n", false).as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9")
        );
    }
}
