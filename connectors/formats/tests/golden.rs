//! Golden files: the encoders' output for a fixed set of events must match
//! `schemas/examples/` byte for byte, so the documented shapes stay true.
//! Regenerate after an intended change with `RIFFLE_BLESS=1 cargo test -p riffle-formats`.

use riffle_core::{
    BeforeImage, ChangeEvent, Column, DataType, Lsn, Op, PgPosition, Phase, Position, SourceInfo, TableId, TableSchema, Value,
};
use riffle_formats::{Encoder, Format};
use std::path::PathBuf;
use std::sync::Arc;

fn schema() -> Arc<TableSchema> {
    let col = |name: &str, source_type: &str, data_type: DataType, nullable| Column {
        name: name.into(),
        source_type: source_type.into(),
        data_type,
        nullable,
        labels: Vec::new(),
    };
    Arc::new(TableSchema {
        id: TableId::new("public", "orders"),
        columns: vec![
            col("id", "bigint", DataType::Int64, false),
            col("amount", "numeric(12,2)", DataType::Decimal { precision: Some(12), scale: Some(2) }, true),
            col("placed_at", "timestamp with time zone", DataType::TimestampTz, true),
            col("note", "text", DataType::String, true),
            col("tags", "text[]", DataType::Array(Box::new(DataType::String)), true),
        ],
        key: vec![0],
        full_before_image: false,
    })
}

fn event(op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>, image: BeforeImage, phase: Phase, seq: u64) -> ChangeEvent {
    let lsn = Lsn(0x16C_4A10);
    ChangeEvent {
        op,
        table: schema(),
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
            lsn: Some(Lsn(lsn.0 + seq * 0x40)),
            binlog: None,
            snapshot: riffle_core::SnapshotMark::of(op),
        },
        position: Position::Postgres(PgPosition { lsn, phase, seq }),
        ts_ms: 1_700_000_000_123,
    }
}

fn events() -> Vec<ChangeEvent> {
    let t = |s: &str| Value::Text(s.into());
    let row = |id, amount: &str, note: Value| {
        vec![
            Value::Int(id),
            Value::Decimal(amount.into()),
            t("2023-11-14T22:13:20.000001Z"),
            note,
            Value::Array(vec![t("a,b"), Value::Null]),
        ]
    };
    vec![
        event(Op::Read, None, Some(row(1, "10.00", t("first"))), BeforeImage::None, Phase::Snapshot, 1),
        event(Op::Create, None, Some(row(2, "20.50", t("say \"hi\"\nbye"))), BeforeImage::None, Phase::Stream, 1),
        // Key-only before image; the note was an unchanged TOAST value.
        event(
            Op::Update,
            Some(vec![Value::Int(2), Value::Unavailable, Value::Unavailable, Value::Unavailable, Value::Unavailable]),
            Some(row(2, "21.00", Value::Unavailable)),
            BeforeImage::Key,
            Phase::Stream,
            2,
        ),
        event(Op::Delete, Some(row(1, "10.00", Value::Null)), None, BeforeImage::Full, Phase::Stream, 3),
        event(Op::Truncate, None, None, BeforeImage::None, Phase::Stream, 4),
    ]
}

fn check(name: &str, format: Format, metadata: bool) {
    let encoder = Encoder { format, metadata };
    let mut out = Vec::new();
    encoder.header(&schema(), &mut out);
    for e in events() {
        encoder.encode(&e, &mut out);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples").join(name);
    if std::env::var_os("RIFFLE_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run with RIFFLE_BLESS=1 to create it", path.display()));
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&golden), "{name} differs from the golden file");
}

#[test]
fn jsonl_matches_the_documented_example() {
    check("orders.jsonl", Format::Jsonl, true);
}

#[test]
fn csv_matches_the_documented_example() {
    check("orders.csv", Format::Csv, true);
}

#[test]
fn csv_without_metadata_is_a_plain_table() {
    check("orders.plain.csv", Format::Csv, false);
}

#[test]
fn every_jsonl_line_has_the_schema_fields() {
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../../schemas/change-event.schema.json")).unwrap();
    let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let source_required: Vec<&str> =
        schema["properties"]["source"]["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let encoder = Encoder { format: Format::Jsonl, metadata: true };
    for e in events() {
        let mut out = Vec::new();
        encoder.encode(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), required.len(), "{keys:?}");
        for k in &required {
            assert!(v.get(*k).is_some(), "missing {k}");
        }
        for k in &source_required {
            assert!(v["source"].get(*k).is_some(), "missing source.{k}");
        }
        // The schema's pattern: ^[0-9a-f]{16}\.[sx][0-9]{10}$
        let (lsn, rest) = v["source"]["position"].as_str().unwrap().split_once('.').unwrap();
        assert!(lsn.len() == 16 && lsn.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(rest.len() == 11 && matches!(&rest[..1], "s" | "x") && rest[1..].bytes().all(|b| b.is_ascii_digit()));
    }
}

/// Avro datums read back with the `apache-avro` crate against the schema
/// riffle derives: every value, logical types included.
#[test]
fn avro_envelopes_read_back_with_apache_avro() {
    use apache_avro::types::Value as A;
    use riffle_formats::avro;
    let schema_json = avro::envelope_schema(&schema(), "shop.public.orders");
    let schema = apache_avro::Schema::parse(&schema_json).unwrap();
    let key_schema = apache_avro::Schema::parse(&avro::key_schema(&self::schema(), "shop.public.orders").unwrap()).unwrap();
    let field = |rec: &A, name: &str| -> A {
        let A::Record(fields) = rec else { panic!("not a record: {rec:?}") };
        fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no field {name}")).1.clone()
    };
    let decoded: Vec<A> = events()
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            avro::encode_envelope(e, &mut out).unwrap();
            apache_avro::from_avro_datum(&schema, &mut out.as_slice(), None).unwrap()
        })
        .collect();
    // The insert: every column with its logical type.
    let after = field(&decoded[1], "after");
    let A::Union(1, row) = after else { panic!("after: {after:?}") };
    assert_eq!(field(&row, "id"), A::Union(1, Box::new(A::Long(2))));
    let A::Union(1, amount) = field(&row, "amount") else { panic!() };
    let A::Decimal(d) = *amount else { panic!("amount: {amount:?}") };
    assert_eq!(<Vec<u8>>::try_from(d).unwrap(), 2050_i64.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect::<Vec<_>>());
    // 2023-11-14T22:13:20.000001Z
    assert_eq!(field(&row, "placed_at"), A::Union(1, Box::new(A::TimestampMicros(1_700_000_000_000_001))));
    assert_eq!(field(&row, "note"), A::Union(1, Box::new(A::String("say \"hi\"\nbye".into()))));
    assert_eq!(
        field(&row, "tags"),
        A::Union(1, Box::new(A::Array(vec![A::Union(1, Box::new(A::String("a,b".into()))), A::Union(0, Box::new(A::Null))])))
    );
    assert_eq!(field(&decoded[1], "op"), A::String("c".into()));
    let A::Union(1, tx) = field(&decoded[1], "transaction") else { panic!() };
    assert_eq!(field(&tx, "id"), A::String("745".into()));
    // The update: a key-only before image, and the unchanged TOAST column listed as not sent.
    assert_eq!(field(&decoded[2], "before_image"), A::String("key".into()));
    assert_eq!(field(&decoded[2], "unavailable"), A::Array(vec![A::String("note".into())]));
    // Snapshot reads and truncates.
    assert_eq!(field(&field(&decoded[0], "source"), "snapshot"), A::String("true".into()));
    assert_eq!(field(&decoded[4], "op"), A::String("t".into()));
    assert_eq!(field(&decoded[4], "after"), A::Union(0, Box::new(A::Null)));
    // The key datum.
    let mut key = Vec::new();
    assert!(avro::encode_key(&events()[3], &mut key).unwrap());
    let k = apache_avro::from_avro_datum(&key_schema, &mut key.as_slice(), None).unwrap();
    assert_eq!(field(&k, "id"), A::Long(1));
    assert!(!avro::encode_key(&events()[4], &mut Vec::new()).unwrap());
}
