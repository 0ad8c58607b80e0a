//! Parquet and Avro container files, read back with independent readers:
//! the `parquet` crate's Arrow reader and `apache_avro::Reader`.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_buffer::i256;
use arrow_schema::{DataType as A, TimeUnit};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use riffle_core::{
    BeforeImage, ChangeEvent, Column, DataType, Lsn, Op, PgPosition, Phase, Position, SourceInfo, TableId, TableSchema, Value,
};
use riffle_formats::avro_file::{AvroCodec, AvroFileWriter};
use riffle_formats::parquet::{arrow_schema, ParquetCompression, ParquetOptions, ParquetWriter};
use riffle_formats::FormatError;
use std::sync::Arc;

const WIDE: &str = "-1234567890123456789012345678901234567890.0123456789";
const UUID: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

fn schema() -> Arc<TableSchema> {
    let col = |name: &str, source_type: &str, data_type: DataType| Column {
        name: name.into(),
        source_type: source_type.into(),
        data_type,
        nullable: name != "id",
        labels: Vec::new(),
    };
    let dec = |p, s| DataType::Decimal { precision: Some(p), scale: Some(s) };
    Arc::new(TableSchema {
        id: TableId::new("public", "things"),
        columns: vec![
            col("id", "bigint", DataType::Int64),
            col("small", "smallint", DataType::Int16),
            col("int", "integer", DataType::Int32),
            col("big", "bigint unsigned", DataType::UInt64),
            col("f32", "real", DataType::Float32),
            col("f64", "double precision", DataType::Float64),
            col("amount", "numeric(12,2)", dec(12, 2)),
            col("wide", "decimal(50,10)", dec(50, 10)),
            col("loose", "numeric", DataType::Decimal { precision: None, scale: None }),
            col("flag", "boolean", DataType::Bool),
            col("note", "text", DataType::String),
            col("data", "bytea", DataType::Bytes),
            col("day", "date", DataType::Date),
            col("tod", "time", DataType::Time),
            col("ts", "timestamp", DataType::Timestamp),
            col("tstz", "timestamptz", DataType::TimestampTz),
            col("uid", "uuid", DataType::Uuid),
            col("doc", "jsonb", DataType::Json),
            col("tags", "text[]", DataType::Array(Box::new(DataType::String))),
            col("ints", "integer[]", DataType::Array(Box::new(DataType::Int32))),
            col("iv", "interval", DataType::Interval),
        ],
        key: vec![0],
        full_before_image: false,
    })
}

const NCOLS: usize = 21;

fn event(
    table: &Arc<TableSchema>,
    op: Op,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    image: BeforeImage,
    seq: u64,
) -> ChangeEvent {
    let lsn = Lsn(0x16C_4A10);
    let phase = if op == Op::Read { Phase::Snapshot } else { Phase::Stream };
    ChangeEvent {
        op,
        table: table.clone(),
        before,
        after,
        before_image: image,
        source: SourceInfo {
            connector: "postgresql",
            name: Arc::from("shop"),
            db: Arc::from("shop"),
            tx_id: (phase == Phase::Stream).then_some(745),
            ts_ms: 1_700_000_000_001,
            ts_us: 1_700_000_000_001_234,
            lsn: (phase == Phase::Stream).then_some(Lsn(lsn.0 + seq * 0x40)),
            binlog: None,
            snapshot: riffle_core::SnapshotMark::of(op),
        },
        position: Position::Postgres(PgPosition { lsn, phase, seq }),
        ts_ms: 1_700_000_000_123,
    }
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

/// Every column with a value.
fn full_row(id: i64, amount: &str) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Int(-32768),
        Value::Int(2_147_483_647),
        Value::UInt(u64::MAX),
        Value::Float32(f32::NAN),
        Value::Float64(f64::NEG_INFINITY),
        Value::Decimal(amount.into()),
        Value::Decimal(WIDE.into()),
        Value::Decimal("NaN".into()),
        Value::Bool(true),
        t("say \"hi\"\nbye"),
        Value::Bytes(vec![0, 255, 1]),
        t("1969-07-20"),
        t("23:59:59.999999"),
        t("2024-01-02T03:04:05.000123"),
        t("2023-11-14T22:13:20.000001Z"),
        t(UUID),
        Value::Json(r#"{"a": [1, 2]}"#.into()),
        Value::Array(vec![t("a,b"), Value::Null]),
        Value::Array(vec![Value::Int(7), Value::Int(-8)]),
        t("P1Y2M3DT4H5M6.789S"),
    ]
}

fn null_row(id: i64) -> Vec<Value> {
    let mut r = vec![Value::Null; NCOLS];
    r[0] = Value::Int(id);
    r
}

/// insert, all-null insert, update with a full before image, update with
/// a key-only before image and an unchanged TOAST value, delete, truncate.
fn events(table: &Arc<TableSchema>) -> Vec<ChangeEvent> {
    let mut toast = full_row(1, "0.01");
    toast[10] = Value::Unavailable;
    let mut key_only = vec![Value::Unavailable; NCOLS];
    key_only[0] = Value::Int(1);
    vec![
        event(table, Op::Read, None, Some(full_row(1, "-12.34")), BeforeImage::None, 1),
        event(table, Op::Create, None, Some(null_row(2)), BeforeImage::None, 1),
        event(table, Op::Update, Some(full_row(1, "-12.34")), Some(full_row(1, "99.5")), BeforeImage::Full, 2),
        event(table, Op::Update, Some(key_only), Some(toast), BeforeImage::Key, 3),
        event(table, Op::Delete, Some(null_row(2)), None, BeforeImage::Full, 4),
        event(table, Op::Truncate, None, None, BeforeImage::None, 5),
    ]
}

fn write_parquet(options: ParquetOptions, events: &[ChangeEvent]) -> Vec<u8> {
    let mut w = ParquetWriter::new(events[0].table.clone(), options).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
    assert_eq!(w.rows(), events.len() as u64);
    assert!(w.bytes_estimate() > 0);
    w.finish().unwrap()
}

fn read_parquet(file: Vec<u8>, skip_arrow_metadata: bool) -> (Vec<RecordBatch>, usize) {
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(skip_arrow_metadata);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes::Bytes::from(file), options).unwrap();
    let row_groups = builder.metadata().num_row_groups();
    let batches = builder.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    (batches, row_groups)
}

fn one_batch(file: Vec<u8>) -> RecordBatch {
    let (batches, _) = read_parquet(file, false);
    assert_eq!(batches.len(), 1, "the test files fit one reader batch");
    batches[0].clone()
}

/// The cells of one RFC 4180 record (quoted cells unquoted).
fn csv_cells(line: &str) -> Vec<String> {
    let line = line.strip_suffix("\r\n").unwrap_or(line);
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[test]
fn parquet_columns_have_the_documented_types() {
    let table = schema();
    let file = write_parquet(ParquetOptions::default(), &events(&table));
    let expected = [
        A::Int64,
        A::Int16,
        A::Int32,
        A::UInt64,
        A::Float32,
        A::Float64,
        A::Decimal128(12, 2),
        A::Decimal256(50, 10),
        A::Utf8,
        A::Boolean,
        A::Utf8,
        A::Binary,
        A::Date32,
        A::Time64(TimeUnit::Microsecond),
        A::Timestamp(TimeUnit::Microsecond, None),
        A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        A::Utf8,
        A::Utf8,
    ];
    // From the Parquet schema itself (physical and logical types), not from
    // the Arrow schema the writer embeds.
    let (batches, _) = read_parquet(file.clone(), true);
    let inferred = batches[0].schema();
    for (i, dt) in expected.iter().enumerate() {
        assert_eq!(inferred.field(i).data_type(), dt, "column {}", table.columns[i].name);
        assert!(inferred.field(i).is_nullable());
    }
    let A::List(item) = inferred.field(19).data_type() else { panic!("ints: {:?}", inferred.field(19)) };
    assert_eq!(item.data_type(), &A::Int32);
    assert!(item.is_nullable());
    // With the embedded Arrow schema: exactly what `arrow_schema` says
    // (JSON columns carry the arrow.json extension name).
    let batch = one_batch(file);
    assert_eq!(batch.schema().fields(), arrow_schema(&table, true).fields());
    assert_eq!(batch.schema().field(17).metadata().get("ARROW:extension:name").map(String::as_str), Some("arrow.json"));
    let names: Vec<String> = batch.schema().fields().iter().skip(NCOLS).map(|f| f.name().clone()).collect();
    assert_eq!(names, riffle_formats::csv::METADATA_COLUMNS);
}

#[test]
fn parquet_values_read_back_exactly() {
    let table = schema();
    let b = one_batch(write_parquet(ParquetOptions::default(), &events(&table)));
    assert_eq!(b.num_rows(), 6);
    let col = |name: &str| b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).clone();
    assert_eq!(col("id").as_primitive::<Int64Type>().values().to_vec(), vec![1, 2, 1, 1, 2, 0]);
    assert_eq!(col("small").as_primitive::<Int16Type>().value(0), -32768);
    assert_eq!(col("int").as_primitive::<Int32Type>().value(0), 2_147_483_647);
    assert_eq!(col("big").as_primitive::<UInt64Type>().value(0), u64::MAX);
    assert!(col("f32").as_primitive::<Float32Type>().value(0).is_nan());
    assert_eq!(col("f64").as_primitive::<Float64Type>().value(0), f64::NEG_INFINITY);
    // Decimals: precision, scale and the unscaled value, negative ones too.
    let amount = col("amount");
    let amount = amount.as_primitive::<Decimal128Type>();
    assert_eq!((amount.precision(), amount.scale()), (12, 2));
    assert_eq!(amount.value(0), -1234);
    assert_eq!(amount.value(2), 9950);
    assert_eq!(amount.value(3), 1);
    assert_eq!(amount.value_as_string(0), "-12.34");
    let wide = col("wide");
    let wide = wide.as_primitive::<Decimal256Type>();
    assert_eq!((wide.precision(), wide.scale()), (50, 10));
    assert_eq!(wide.value(0), i256::from_string(&WIDE.replace('.', "")).unwrap());
    assert_eq!(wide.value_as_string(0), WIDE);
    assert_eq!(col("loose").as_string::<i32>().value(0), "NaN");
    assert!(col("flag").as_boolean().value(0));
    assert_eq!(col("note").as_string::<i32>().value(0), "say \"hi\"\nbye");
    assert_eq!(col("data").as_binary::<i32>().value(0), &[0, 255, 1]);
    // 1969-07-20: before the epoch.
    assert_eq!(col("day").as_primitive::<Date32Type>().value(0), -165);
    assert_eq!(col("tod").as_primitive::<Time64MicrosecondType>().value(0), 86_399_999_999);
    assert_eq!(col("ts").as_primitive::<TimestampMicrosecondType>().value(0), 1_704_164_645_000_123);
    let tstz = col("tstz");
    assert_eq!(tstz.as_primitive::<TimestampMicrosecondType>().value(0), 1_700_000_000_000_001);
    assert_eq!(tstz.data_type(), &A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(col("uid").as_string::<i32>().value(0), UUID);
    assert_eq!(col("doc").as_string::<i32>().value(0), r#"{"a": [1, 2]}"#);
    assert_eq!(col("iv").as_string::<i32>().value(0), "P1Y2M3DT4H5M6.789S");
    let tags = col("tags");
    let tags = tags.as_list::<i32>().value(0);
    let tags = tags.as_string::<i32>();
    assert_eq!((tags.len(), tags.value(0), tags.is_null(1)), (2, "a,b", true));
    let ints = col("ints");
    assert_eq!(ints.as_list::<i32>().value(0).as_primitive::<Int32Type>().values().to_vec(), vec![7, -8]);

    // The all-null row: every column but the key is NULL.
    for (i, c) in table.columns.iter().enumerate().skip(1) {
        assert!(b.column(i).is_null(1), "{} should be null", c.name);
    }
    // NULL vs not sent: the TOAST column reads as null and is listed.
    assert!(col("note").is_null(3));
    let unavailable = col("__unavailable");
    let unavailable = unavailable.as_list::<i32>();
    let names = |row: usize| {
        let v = unavailable.value(row);
        let s = v.as_string::<i32>();
        (0..s.len()).map(|i| s.value(i).to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(3), vec!["note"]);
    assert!(names(1).is_empty() && names(5).is_empty());
    assert_eq!(unavailable.null_count(), 0);
    // The truncate has no row.
    assert!(col("id").is_null(5));
}

#[test]
fn parquet_metadata_columns_match_csv() {
    let table = schema();
    let evs = events(&table);
    let b = one_batch(write_parquet(ParquetOptions::default(), &evs));
    let text = |name: &str, row: usize| -> Option<String> {
        let c = b.column_by_name(name).unwrap();
        let s = c.as_string::<i32>();
        (!s.is_null(row)).then(|| s.value(row).to_string())
    };
    let ops: Vec<String> = (0..6).map(|r| text("__op", r).unwrap()).collect();
    assert_eq!(ops, ["r", "c", "u", "u", "d", "t"]);
    let images: Vec<String> = (0..6).map(|r| text("__before_image", r).unwrap()).collect();
    assert_eq!(images, ["none", "none", "full", "key", "full", "none"]);
    assert_eq!(b.column_by_name("__source_ts_ms").unwrap().as_primitive::<Int64Type>().value(2), 1_700_000_000_001);
    assert_eq!(text("__tx", 0), None);
    assert_eq!(text("__tx", 2).as_deref(), Some("745"));
    assert_eq!(text("__lsn", 0), None);
    assert_eq!(text("__lsn", 2).as_deref(), Some("0/16C4A90"));
    assert_eq!(text("__position", 0).as_deref(), Some("00000000016c4a10.s0000000001"));
    assert_eq!(text("__position", 2).as_deref(), Some("00000000016c4a10.x0000000002"));

    // The same cells as the CSV encoder's, metadata column by metadata column.
    let unavailable = b.column_by_name("__unavailable").unwrap();
    let unavailable = unavailable.as_list::<i32>();
    let before = b.column_by_name("__before").unwrap();
    for (row, e) in evs.iter().enumerate() {
        let mut csv = Vec::new();
        riffle_formats::csv::row(e, true, &mut csv);
        let cells = csv_cells(std::str::from_utf8(&csv).unwrap());
        let meta = &cells[NCOLS..];
        let got: Vec<String> = ["__op", "__source_ts_ms", "__position", "__tx", "__lsn", "__before_image"]
            .iter()
            .map(|n| match *n {
                "__source_ts_ms" => b.column_by_name(n).unwrap().as_primitive::<Int64Type>().value(row).to_string(),
                _ => text(n, row).unwrap_or_default(),
            })
            .collect();
        assert_eq!(got, meta[..6], "row {row}");
        assert_eq!(before.is_null(row), meta[6].is_empty(), "row {row}");
        let names = unavailable.value(row);
        let names = names.as_string::<i32>();
        let names: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
        assert_eq!(names.join(";"), meta[7], "row {row}");
    }

    // __before: a struct of the table's columns.
    let before = b.column_by_name("__before").unwrap();
    let before = before.as_struct();
    assert!(before.is_null(0) && before.is_null(1) && before.is_null(5));
    assert!(before.is_valid(2) && before.is_valid(3) && before.is_valid(4));
    assert_eq!(before.column_names().len(), NCOLS);
    let amount = before.column_by_name("amount").unwrap();
    assert_eq!(amount.as_primitive::<Decimal128Type>().value(2), -1234);
    assert_eq!(before.column_by_name("tstz").unwrap().as_primitive::<TimestampMicrosecondType>().value(2), 1_700_000_000_000_001);
    assert_eq!(before.column_by_name("tags").unwrap().as_list::<i32>().value(2).len(), 2);
    // Key-only: the key, and nulls for what the source did not send.
    assert_eq!(before.column_by_name("id").unwrap().as_primitive::<Int64Type>().value(3), 1);
    assert!(amount.is_null(3));
    // The delete's row is in the table columns, and in __before.
    assert_eq!(b.column_by_name("id").unwrap().as_primitive::<Int64Type>().value(4), 2);
    assert_eq!(before.column_by_name("id").unwrap().as_primitive::<Int64Type>().value(4), 2);
}

#[test]
fn parquet_plain_copy_has_only_the_table_columns() {
    let table = schema();
    let options = ParquetOptions { metadata: false, ..ParquetOptions::default() };
    let b = one_batch(write_parquet(options, &events(&table)[..2]));
    let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
    let expected: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, expected);
    assert_eq!(b.num_rows(), 2);
}

#[test]
fn parquet_row_groups_and_compression() {
    let table = schema();
    let evs: Vec<ChangeEvent> =
        (0..25).map(|i| event(&table, Op::Read, None, Some(full_row(i, "1.5")), BeforeImage::None, i as u64)).collect();
    for compression in [ParquetCompression::None, ParquetCompression::Snappy, ParquetCompression::Zstd(3), ParquetCompression::Zstd(19)] {
        let options = ParquetOptions { row_group_rows: 10, batch_rows: 4, compression, ..ParquetOptions::default() };
        let mut w = ParquetWriter::new(table.clone(), options).unwrap();
        w.write(&evs[0]).unwrap();
        let first = w.bytes_estimate();
        for e in &evs[1..] {
            w.write(e).unwrap();
        }
        // An estimate (buffered rows count raw, encoded ones compressed),
        // but it grows with the file.
        let estimate = w.bytes_estimate();
        assert!(first > 0 && estimate > first, "{first} {estimate}");
        let file = w.finish().unwrap();
        // The footer (schema, statistics) comes on top.
        assert!(file.len() > estimate / 2, "{} {estimate}", file.len());
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        let meta = builder.metadata().clone();
        assert_eq!(meta.num_row_groups(), 3, "{compression:?}");
        assert_eq!(meta.row_groups().iter().map(|g| g.num_rows()).collect::<Vec<_>>(), vec![10, 10, 5]);
        let codec = meta.row_group(0).column(0).compression();
        assert_eq!(
            format!("{codec:?}").split('(').next().unwrap(),
            match compression {
                ParquetCompression::None => "UNCOMPRESSED",
                ParquetCompression::Snappy => "SNAPPY",
                ParquetCompression::Zstd(_) => "ZSTD",
            }
        );
        let ids: Vec<i64> =
            builder.build().unwrap().flat_map(|b| b.unwrap().column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(ids, (0..25).collect::<Vec<_>>());
    }
    assert_eq!(ParquetCompression::parse("zstd:9"), Some(ParquetCompression::Zstd(9)));
    assert_eq!(ParquetCompression::parse("snappy"), Some(ParquetCompression::Snappy));
    assert_eq!(ParquetCompression::parse("gzip"), None);
}

#[test]
fn parquet_refuses_what_the_column_type_cannot_hold_and_keeps_going() {
    let table = schema();
    let mut w = ParquetWriter::new(table.clone(), ParquetOptions::default()).unwrap();
    w.write(&events(&table)[0]).unwrap();
    let mut bad_row = |col: usize, v: Value| {
        let mut r = full_row(9, "1");
        r[col] = v;
        let e = event(&table, Op::Create, None, Some(r), BeforeImage::None, 9);
        let e = w.write(&e).unwrap_err();
        assert!(matches!(e, FormatError::Unrepresentable { .. }), "{e:?}");
        e.to_string()
    };
    let e = bad_row(6, Value::Decimal("NaN".into()));
    assert!(e.contains("public.things.amount") && e.contains("NaN") && e.contains("Decimal128(12, 2)"), "{e}");
    let e = bad_row(6, Value::Decimal("1.234".into()));
    // Row values never appear in messages, only their kind.
    assert!(e.contains("amount") && e.contains("a decimal of 5 characters") && !e.contains("1.234"), "{e}");
    let e = bad_row(6, Value::Decimal("12345678901".into()));
    assert!(e.contains("amount"), "{e}");
    let e = bad_row(12, t("0000-00-00"));
    assert!(e.contains("public.things.day") && e.contains("0000-00-00"), "{e}");
    let e = bad_row(13, t("-838:59:59"));
    assert!(e.contains("tod"), "{e}");
    let e = bad_row(1, Value::Int(40_000));
    assert!(e.contains("small") && e.contains("out of the column's range") && !e.contains("40000"), "{e}");
    let e = bad_row(19, Value::Array(vec![Value::Array(vec![Value::Int(1)])]));
    assert!(e.contains("ints") && e.contains("multi-dimensional"), "{e}");
    // A failure in the before image says so.
    let mut before = full_row(1, "1");
    before[12] = t("0000-00-00");
    let e = w.write(&event(&table, Op::Update, Some(before), Some(full_row(1, "1")), BeforeImage::Full, 10)).unwrap_err();
    assert!(matches!(e, FormatError::Unrepresentable { .. }) && e.to_string().contains("day (before image)"), "{e}");
    // An event of another schema version.
    let mut other = (*table).clone();
    other.columns.pop();
    let other = Arc::new(other);
    let mut r = full_row(1, "1");
    r.pop();
    let e = w.write(&event(&other, Op::Create, None, Some(r), BeforeImage::None, 11)).unwrap_err();
    assert!(matches!(e, FormatError::SchemaChanged { .. }) && e.to_string().contains("different schema"), "{e}");
    // The failed rows left nothing behind.
    w.write(&events(&table)[1]).unwrap();
    assert_eq!(w.rows(), 2);
    let b = one_batch(w.finish().unwrap());
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![1, 2]);
    assert_eq!(b.column_by_name("__op").unwrap().as_string::<i32>().value(1), "c");
    assert_eq!(b.column_by_name("tags").unwrap().as_list::<i32>().value(0).len(), 2);
}

// Avro container files.

use apache_avro::types::Value as Av;

fn field(rec: &Av, name: &str) -> Av {
    let Av::Record(fields) = rec else { panic!("not a record: {rec:?}") };
    fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no field {name}")).1.clone()
}

fn some(v: Av) -> Av {
    match v {
        Av::Union(1, inner) => *inner,
        other => panic!("expected a non-null union: {other:?}"),
    }
}

fn read_avro(file: &[u8]) -> (Vec<Av>, apache_avro::Schema) {
    let reader = apache_avro::Reader::new(file).unwrap();
    let schema = reader.writer_schema().clone();
    (reader.map(|r| r.unwrap()).collect(), schema)
}

#[test]
fn avro_files_read_back_with_every_codec() {
    let table = schema();
    let evs = events(&table);
    for codec in [AvroCodec::Null, AvroCodec::Deflate, AvroCodec::Snappy, AvroCodec::Zstandard] {
        for block in [1, 4, 10_000] {
            let mut w = AvroFileWriter::new(&table, "shop.public.things", codec);
            w.set_block_size(64 * 1024, block);
            for e in &evs {
                w.write(e).unwrap();
            }
            assert_eq!(w.rows(), 6);
            let sync = w.sync_marker();
            let file = w.finish().unwrap();
            assert_eq!(&file[..4], b"Obj\x01");
            // Blocks: one sync marker after the header and after each block.
            let markers = file.windows(16).filter(|w| *w == sync).count();
            assert_eq!(markers, 1 + 6_usize.div_ceil(block), "{codec:?} {block}");
            let (records, schema) = read_avro(&file);
            assert_eq!(records.len(), 6, "{codec:?}");
            let apache_avro::Schema::Record(r) = &schema else { panic!() };
            assert_eq!(r.name.fullname(None), "shop.public.things.Envelope");
            let ops: Vec<Av> = records.iter().map(|r| field(r, "op")).collect();
            assert_eq!(ops, ["r", "c", "u", "u", "d", "t"].map(|s| Av::String(s.into())));
            let needle = [b"avro.codec".as_slice(), &[(codec.name().len() * 2) as u8], codec.name().as_bytes()].concat();
            assert!(file.windows(needle.len()).any(|w| w == needle), "{codec:?}");
        }
    }
    assert_eq!(AvroCodec::parse("zstd"), Some(AvroCodec::Zstandard));
    assert_eq!(AvroCodec::parse("lz4"), None);
}

#[test]
fn avro_file_values_read_back_exactly() {
    let table = schema();
    let mut w = AvroFileWriter::with_sync_marker(&table, "shop.public.things", AvroCodec::Snappy, [7; 16]);
    for e in events(&table) {
        w.write(&e).unwrap();
    }
    let file = w.finish().unwrap();
    let (records, _) = read_avro(&file);
    let row = some(field(&records[0], "after"));
    let col = |name: &str| some(field(&row, name));
    assert_eq!(col("id"), Av::Long(1));
    assert_eq!(col("small"), Av::Int(-32768));
    assert_eq!(col("int"), Av::Int(2_147_483_647));
    let Av::Decimal(big) = col("big") else { panic!("{:?}", col("big")) };
    assert_eq!(<Vec<u8>>::try_from(big).unwrap(), [&[0u8][..], &[0xff; 8]].concat());
    let Av::Float(f) = col("f32") else { panic!() };
    assert!(f.is_nan());
    assert_eq!(col("f64"), Av::Double(f64::NEG_INFINITY));
    let Av::Decimal(amount) = col("amount") else { panic!() };
    assert_eq!(<Vec<u8>>::try_from(amount).unwrap(), (-1234_i16).to_be_bytes().to_vec());
    let Av::Decimal(wide) = col("wide") else { panic!() };
    let wide_be = i256::from_string(&WIDE.replace('.', "")).unwrap().to_be_bytes();
    let wide_bytes = <Vec<u8>>::try_from(wide).unwrap();
    assert_eq!(wide_bytes[..], wide_be[32 - wide_bytes.len()..]);
    assert_eq!(col("loose"), Av::String("NaN".into()));
    assert_eq!(col("flag"), Av::Boolean(true));
    assert_eq!(col("data"), Av::Bytes(vec![0, 255, 1]));
    assert_eq!(col("day"), Av::Date(-165));
    assert_eq!(col("tod"), Av::TimeMicros(86_399_999_999));
    assert_eq!(col("ts"), Av::LocalTimestampMicros(1_704_164_645_000_123));
    assert_eq!(col("tstz"), Av::TimestampMicros(1_700_000_000_000_001));
    assert_eq!(col("uid"), Av::Uuid(UUID.parse().unwrap()));
    assert_eq!(col("doc"), Av::String(r#"{"a": [1, 2]}"#.into()));
    assert_eq!(col("tags"), Av::Array(vec![Av::Union(1, Box::new(Av::String("a,b".into()))), Av::Union(0, Box::new(Av::Null))]));
    // NULL, and a value the source did not send (null, but listed).
    let all_null = some(field(&records[1], "after"));
    assert_eq!(field(&all_null, "amount"), Av::Union(0, Box::new(Av::Null)));
    assert_eq!(field(&records[1], "unavailable"), Av::Array(vec![]));
    let toast = some(field(&records[3], "after"));
    assert_eq!(field(&toast, "note"), Av::Union(0, Box::new(Av::Null)));
    assert_eq!(field(&records[3], "unavailable"), Av::Array(vec![Av::String("note".into())]));
    // The full before image of the update.
    let before = some(field(&records[2], "before"));
    let Av::Decimal(b_amount) = some(field(&before, "amount")) else { panic!() };
    assert_eq!(<Vec<u8>>::try_from(b_amount).unwrap(), (-1234_i16).to_be_bytes().to_vec());
    assert_eq!(field(&records[2], "before_image"), Av::String("full".into()));
    assert_eq!(field(&records[0], "before"), Av::Union(0, Box::new(Av::Null)));
    let tx = some(field(&records[2], "transaction"));
    assert_eq!(field(&tx, "id"), Av::String("745".into()));
    assert_eq!(field(&field(&records[2], "source"), "position"), Av::String("00000000016c4a10.x0000000002".into()));
    // The same input and sync marker give the same bytes.
    let mut again = AvroFileWriter::with_sync_marker(&table, "shop.public.things", AvroCodec::Snappy, [7; 16]);
    for e in events(&table) {
        again.write(&e).unwrap();
    }
    assert_eq!(again.finish().unwrap(), file);
}

#[test]
fn avro_file_refuses_unrepresentable_values_and_keeps_going() {
    let table = schema();
    let mut w = AvroFileWriter::new(&table, "shop.public.things", AvroCodec::Deflate);
    w.write(&events(&table)[0]).unwrap();
    let mut r = full_row(9, "NaN");
    r[12] = t("2024-01-01");
    let e = w.write(&event(&table, Op::Create, None, Some(r), BeforeImage::None, 9)).unwrap_err();
    assert!(matches!(e, FormatError::Unrepresentable { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("public.things.amount") && e.contains("NaN") && e.ends_with("; write this table as JSON lines"), "{e}");
    let mut other = (*table).clone();
    other.columns.pop();
    let other = Arc::new(other);
    let mut r = full_row(1, "1");
    r.pop();
    let e = w.write(&event(&other, Op::Create, None, Some(r), BeforeImage::None, 11)).unwrap_err();
    assert!(matches!(e, FormatError::SchemaChanged { .. }) && e.to_string().contains("different schema"), "{e}");
    w.write(&events(&table)[1]).unwrap();
    assert_eq!(w.rows(), 2);
    let (records, _) = read_avro(&w.finish().unwrap());
    assert_eq!(records.len(), 2);
    assert_eq!(field(&some(field(&records[1], "after")), "id"), Av::Union(1, Box::new(Av::Long(2))));
}

/// Columns at the edges of what Parquet holds (a scale above the
/// precision, infinite dates, a 2-D array, a type riffle keeps as text, a
/// time of 24:00), and `more` after them.
fn edges(more: Vec<(&str, DataType)>) -> Arc<TableSchema> {
    let col = |name: &str, data_type: DataType| Column {
        name: name.into(),
        source_type: String::new(),
        data_type,
        nullable: true,
        labels: Vec::new(),
    };
    let mut columns = vec![
        col("tiny", DataType::Decimal { precision: Some(2), scale: Some(5) }),
        col("day", DataType::Date),
        col("ts", DataType::TimestampTz),
        col("grid", DataType::Array(Box::new(DataType::Array(Box::new(DataType::Int32))))),
        col("other", DataType::Other("point".into())),
        col("midnight", DataType::Time),
    ];
    columns.extend(more.into_iter().map(|(n, dt)| col(n, dt)));
    Arc::new(TableSchema { id: TableId::new("public", "edges"), columns, key: vec![], full_before_image: false })
}

/// A row of [`edges`]' first columns, `other` in the column kept as text.
fn edge_row(other: Value) -> Vec<Value> {
    vec![
        Value::Decimal("0.00012".into()),
        t("infinity"),
        t("-infinity"),
        Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Null]), Value::Null, Value::Array(vec![])]),
        other,
        t("24:00:00"),
    ]
}

#[test]
fn parquet_edge_types() {
    use riffle_formats::parquet::{arrow_type, decimal_i128};
    let dec = |p, s| DataType::Decimal { precision: Some(p), scale: Some(s) };
    // Postgres 15's numeric(2,5): the precision widens to the scale.
    assert_eq!(arrow_type(&dec(2, 5)), A::Decimal128(5, 5));
    assert_eq!(arrow_type(&dec(38, 0)), A::Decimal128(38, 0));
    assert_eq!(arrow_type(&dec(39, 0)), A::Decimal256(39, 0));
    assert_eq!(arrow_type(&dec(77, 2)), A::Utf8);
    assert_eq!(arrow_type(&DataType::Decimal { precision: Some(10), scale: None }), A::Decimal128(10, 0));
    assert_eq!(decimal_i128("-0.001", 3, 5), Some(-1));
    assert_eq!(decimal_i128("1.500", 1, 5), Some(15));
    assert_eq!(decimal_i128("99999999999999999999999999999999999999", 0, 38), Some(10_i128.pow(38) - 1));
    assert_eq!(decimal_i128("100", 0, 2), None);
    assert_eq!(decimal_i128("Infinity", 0, 2), None);

    let table = edges(Vec::new());
    let row = edge_row(Value::Int(5));
    let b = one_batch(write_parquet(ParquetOptions::default(), &[event(&table, Op::Create, None, Some(row), BeforeImage::None, 1)]));
    assert_eq!(b.column(0).as_primitive::<Decimal128Type>().value(0), 12);
    assert_eq!(b.column(1).as_primitive::<Date32Type>().value(0), i32::MAX);
    assert_eq!(b.column(2).as_primitive::<TimestampMicrosecondType>().value(0), i64::MIN);
    let grid = b.column(3).as_list::<i32>().value(0);
    let grid = grid.as_list::<i32>();
    assert_eq!((grid.len(), grid.is_null(1), grid.value(2).len()), (3, true, 0));
    assert_eq!(grid.value(0).as_primitive::<Int32Type>().value(0), 1);
    assert!(grid.value(0).is_null(1));
    assert_eq!(b.column(4).as_string::<i32>().value(0), "5");
    assert_eq!(b.column(5).as_primitive::<Time64MicrosecondType>().value(0), 86_400_000_000);
}

/// `cargo test -p riffle-formats --release --test typed_files -- --ignored --nocapture`
#[test]
#[ignore]
fn parquet_one_million_rows() {
    let table = schema();
    let evs: Vec<ChangeEvent> =
        (0..1000).map(|i| event(&table, Op::Read, None, Some(full_row(i, "123456.78")), BeforeImage::None, i as u64)).collect();
    for metadata in [false, true] {
        let start = std::time::Instant::now();
        let mut w = ParquetWriter::new(table.clone(), ParquetOptions { metadata, ..ParquetOptions::default() }).unwrap();
        for _ in 0..1000 {
            for e in &evs {
                w.write(e).unwrap();
            }
        }
        let file = w.finish().unwrap();
        println!("parquet, metadata {metadata}: 1M rows of {NCOLS} columns in {:?}, {} bytes", start.elapsed(), file.len());
    }
    let start = std::time::Instant::now();
    let mut w = AvroFileWriter::new(&table, "shop.public.things", AvroCodec::Zstandard);
    for _ in 0..1000 {
        for e in &evs {
            w.write(e).unwrap();
        }
    }
    let file = w.finish().unwrap();
    println!("avro zstandard: 1M rows in {:?}, {} bytes", start.elapsed(), file.len());
}

#[test]
fn library_errors_keep_their_cause_and_values_stay_out_of_messages() {
    use std::error::Error as _;
    // A zstd level the parquet crate refuses: the message says what, the
    // parquet error is the source.
    let options = ParquetOptions { compression: ParquetCompression::Zstd(99), ..ParquetOptions::default() };
    let e = match ParquetWriter::new(schema(), options) {
        Ok(_) => panic!("zstd level 99 accepted"),
        Err(e) => e,
    };
    assert!(matches!(e, FormatError::Parquet { .. }), "{e:?}");
    assert_eq!(e.to_string(), "zstd level 99");
    assert!(e.source().is_some_and(|s| !s.to_string().is_empty()), "{e:?}");
    // The Avro datum helpers: the value's kind and size, never the value.
    let dec = DataType::Decimal { precision: Some(12), scale: Some(2) };
    let e = riffle_formats::avro::write_value(&Value::Decimal("1.234".into()), &dec, &mut Vec::new()).unwrap_err();
    assert_eq!(e, riffle_formats::UnfitValue::new("a decimal of 5 characters"));
    let e = riffle_formats::avro::write_nullable(&Value::Int(40_000), &DataType::Bool, &mut Vec::new()).unwrap_err();
    assert_eq!(e.to_string(), "an integer out of the column's range");
}

/// Every format riffle writes, read back by `riffle_formats::read` (what
/// `riffle verify` uses): the rows come back with their keys and the
/// unavailable column marked partial; and a file mangled any way (bytes
/// flipped, cut short) gives an error or rows, never a panic, whichever
/// reader (riffle's own or another crate's) meets it.
#[test]
fn files_read_back_and_mangled_files_never_panic_the_readers() {
    use riffle_formats::read::{read_rows, Shape};
    use riffle_formats::{file::file_format, Encoder, Format};
    let table = schema();
    let all = events(&table);
    let shape = Shape { key: vec!["id".into()], columns: NCOLS, keep_cells: false };
    // A quiet panic hook: the readers of other crates may panic on purpose here.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for format in [Format::Jsonl, Format::Csv, Format::Avro, Format::Parquet] {
        let ff = file_format(Encoder { format, metadata: true }, None).unwrap();
        let mut w = ff.writer(&table, "shop.public.t").unwrap();
        for e in &all {
            w.write(e).unwrap();
        }
        let mut file = Vec::new();
        w.finish(&mut file).unwrap();
        let mut rows = Vec::new();
        read_rows(ff.extension(), file.clone().into(), &shape, &mut |r| rows.push(r)).unwrap();
        assert_eq!(rows.len(), all.len(), "{format:?}");
        assert_eq!(rows[0].key, "id=1", "{format:?}");
        assert_eq!(rows.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(), ["r", "c", "u", "u", "d", "t"], "{format:?}");
        assert!(rows[3].partial && !rows[2].partial, "{format:?}: the unsent column makes the row partial");
        for _ in 0..300 {
            let mut mangled = file.clone();
            match next() % 3 {
                0 => mangled.truncate((next() as usize) % file.len()),
                _ => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % mangled.len();
                        mangled[i] ^= 1 << (next() % 8);
                    }
                }
            }
            let _ = read_rows(ff.extension(), mangled.into(), &shape, &mut |_| {});
        }
    }
    std::panic::set_hook(hook);
}

/// `riffle verify` makes a Parquet sink's rows from the source's values
/// directly (`read::parquet_rows`); they must equal what writing them with
/// riffle's Parquet writer and reading the file back gives, cell for cell.
#[test]
fn parquet_rows_equal_the_round_trip() {
    use riffle_formats::read::{parquet_rows, read_rows, ReadRow, Shape};
    let same = |table: &Arc<TableSchema>, rows: Vec<Vec<Value>>, key: &[&str]| {
        let events: Vec<ChangeEvent> =
            rows.into_iter().enumerate().map(|(i, r)| event(table, Op::Read, None, Some(r), BeforeImage::None, i as u64 + 1)).collect();
        let shape = Shape { key: key.iter().map(|k| k.to_string()).collect(), columns: table.columns.len(), keep_cells: true };
        for metadata in [true, false] {
            let options = ParquetOptions { metadata, compression: ParquetCompression::None, read_back: true, ..ParquetOptions::default() };
            let mut want: Vec<ReadRow> = Vec::new();
            read_rows("parquet", write_parquet(options, &events).into(), &shape, &mut |r| want.push(r)).unwrap();
            let mut got: Vec<ReadRow> = Vec::new();
            assert!(parquet_rows(table, &events, &shape, &mut |r| got.push(r)).unwrap());
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((&g.key, &g.cells, g.partial), (&w.key, &w.cells, w.partial), "metadata {metadata}");
                assert_eq!(g.digest, w.digest);
            }
        }
    };
    let table = schema();
    let mut varied = full_row(5, "-0.01");
    varied[1] = Value::UInt(7);
    varied[3] = Value::Int(0);
    varied[4] = Value::Float32(-0.0);
    varied[5] = Value::Float32(0.1);
    varied[8] = Value::Decimal("-123.4500".into());
    varied[10] = t("");
    varied[11] = Value::Bytes(vec![]);
    varied[13] = t("00:00:00");
    varied[15] = t("1900-01-01T00:00:00Z");
    varied[17] = Value::Json("[]".into());
    varied[18] = Value::Array(vec![]);
    varied[19] = Value::Array(vec![Value::Null]);
    let mut wide = full_row(6, "9999999999.99");
    wide[7] = Value::Decimal("0.0000000001".into());
    wide[5] = Value::Float64(f64::MIN_POSITIVE);
    same(&table, vec![full_row(1, "-12.34"), null_row(2), full_row(3, "0"), varied, wide], &["id"]);

    let more = vec![("flags", DataType::Array(Box::new(DataType::Bool))), ("bin", DataType::Array(Box::new(DataType::Bytes)))];
    let row = |other: Value| {
        let mut r = edge_row(other);
        r.extend([Value::Array(vec![Value::Bool(false), Value::Null]), Value::Array(vec![Value::Bytes(vec![0xab])])]);
        r
    };
    same(&edges(more), vec![row(Value::Int(5)), row(Value::Bool(true)), row(Value::Bytes(vec![1, 2])), row(t("(1,2)"))], &[]);

    // Not whole snapshot rows: left to the round trip.
    let insert = event(&table, Op::Create, None, Some(full_row(1, "1")), BeforeImage::None, 1);
    let shape = Shape { key: vec!["id".into()], columns: NCOLS, keep_cells: false };
    assert!(!parquet_rows(&table, &[insert], &shape, &mut |_| panic!("nothing is sent")).unwrap());
    let mut toast = full_row(1, "1");
    toast[10] = Value::Unavailable;
    let read = event(&table, Op::Read, None, Some(toast), BeforeImage::None, 1);
    assert!(!parquet_rows(&table, &[read], &shape, &mut |_| panic!("nothing is sent")).unwrap());
}
