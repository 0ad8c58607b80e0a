//! `riffle verify` against real servers: an exact copy verifies (exit 0) in
//! every file format; a row changed in the source after the sink stopped, a
//! file deleted or duplicated in the sink, and (text formats, which a test
//! can edit) a row deleted from a file or a value altered in it are each
//! found and named by table and key (exit 3); a writer changing the source
//! during verify causes no false difference.

use crate::objects_support::{s3_env, s3_url, S3_GATE};
use crate::support::*;

const DDL: &str = "CREATE TABLE t (id int PRIMARY KEY, name text, price numeric(12,3), at timestamptz, data bytea, note text);
    INSERT INTO t SELECT g, 'name ' || g, g * 1.125, timestamptz '2026-01-01 00:00:00.123456+00' + g * interval '1 minute',
        decode(lpad(to_hex(g), 8, '0'), 'hex'), CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' ELSE 'a,\"b\"' END
    FROM generate_series(1, 3000) g";

fn args(cmd: &str, url: &str, out: &str, state: &std::path::Path, name: &str, format: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        [cmd, "--source", url, "--tables", "public.t", "--sink", out, "--format", format, "--name", name].map(String::from).to_vec();
    a.extend(["--state".to_string(), state.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `riffle verify`: its exit code and report.
fn verify(args: &[String]) -> (Option<i32>, String) {
    let out = riffle(args);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)))
}

fn assert_matches(args: &[String], rows: u64) {
    let (code, text) = verify(args);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the copy matches the source"), "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("public.t")).unwrap_or_else(|| panic!("{text}"));
    let counts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&counts[1..4], [rows.to_string(), rows.to_string(), rows.to_string()], "{text}");
}

fn assert_finds(args: &[String], what: &str, key: &str) {
    let (code, text) = verify(args);
    assert_eq!(code, Some(3), "{text}");
    let line = text.lines().find(|l| l.contains(&format!("public.t {what}:"))).unwrap_or_else(|| panic!("no {what:?} in: {text}"));
    assert!(line.contains(key), "{key} {what}: {text}");
}

/// An exact copy in `format` verifies; each fault is found by key.
async fn faults_are_found(format: &str, ext: &str) {
    let db = format!("it_verify_{format}");
    let client = fresh_db(&db).await;
    client.batch_execute(DDL).await.unwrap();
    let dir = temp_dir(&format!("verify-{format}"));
    let (out, state) = (dir.join("out"), dir.join("state"));
    let out_s = out.to_str().unwrap();
    let url = db_url(&db);
    let replicate = args("replicate", &url, out_s, &state, &db, format, &["--until", "now", "--max-file-rows", "500"]);
    let check = args("verify", &url, out_s, &state, &db, format, &[]);
    riffle_ok(&replicate);
    assert_matches(&check, 3000);

    // A row changed in the source after the sink stopped.
    client.batch_execute("UPDATE t SET price = 0.001 WHERE id = 7").await.unwrap();
    assert_finds(&check, "differing", "id=7");
    // The values only when asked for: the report may be shared.
    let (_, text) = verify(&[&check[..], &["--show-values".to_string()]].concat());
    let shown = text.lines().find(|l| l.contains("public.t id=7: source {")).unwrap_or_else(|| panic!("{text}"));
    assert!(shown.contains("price=") && shown.contains(" sink {"), "{text}");
    assert!(!verify(&check).1.contains("source {"), "no values without --show-values");
    riffle_ok(&replicate);
    assert_matches(&check, 3000);

    let files: Vec<std::path::PathBuf> =
        data_files(&out, "public.t").into_iter().filter(|f| f.extension().is_some_and(|e| e == ext)).collect();
    assert!(files.len() >= 6, "{files:?}");
    // A file written twice (a copy under another name).
    let first = &files[0];
    let copy = first.with_file_name(format!("{}_copy.{ext}", first.file_stem().unwrap().to_string_lossy()));
    std::fs::copy(first, &copy).unwrap();
    assert_finds(&check, "held twice", "_copy");
    std::fs::remove_file(&copy).unwrap();
    // A file lost: its rows are missing (the first file holds ids 1..=500).
    let saved = std::fs::read(first).unwrap();
    std::fs::remove_file(first).unwrap();
    assert_finds(&check, "missing in the sink", "id=1;");
    std::fs::write(first, &saved).unwrap();
    assert_matches(&check, 3000);

    // A row deleted from a file (id 2, the file's second row), then a value
    // altered in one (id 3's name): the file rewritten as its format reads.
    std::fs::write(first, edit(format, &saved, Edit::DeleteSecondRow)).unwrap();
    assert_finds(&check, "missing in the sink", "id=2");
    std::fs::write(first, edit(format, &saved, Edit::RenameThird)).unwrap();
    assert_finds(&check, "differing", "id=3");
    std::fs::write(first, &saved).unwrap();
    assert_matches(&check, 3000);
}

#[derive(Clone, Copy, PartialEq)]
enum Edit {
    DeleteSecondRow,
    RenameThird,
}

/// A sink file with its second row deleted, or its third row's `name` set
/// to `name X`, in the file's own format.
fn edit(format: &str, file: &[u8], what: Edit) -> Vec<u8> {
    match format {
        "jsonl" | "csv" => {
            let text = String::from_utf8(file.to_vec()).unwrap();
            match what {
                Edit::DeleteSecondRow => {
                    let skip = if format == "csv" { 2 } else { 1 };
                    text.split_inclusive('\n').enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| l).collect::<String>().into_bytes()
                }
                Edit::RenameThird => text.replacen("name 3", "name X", 1).into_bytes(),
            }
        }
        "avro" => {
            use apache_avro::types::Value as V;
            let reader = apache_avro::Reader::new(file).unwrap();
            let schema = reader.writer_schema().clone();
            let mut records: Vec<V> = reader.map(Result::unwrap).collect();
            match what {
                Edit::DeleteSecondRow => {
                    records.remove(1);
                }
                Edit::RenameThird => {
                    let V::Record(fields) = &mut records[2] else { panic!("an envelope") };
                    let after = fields.iter_mut().find(|(n, _)| n == "after").unwrap();
                    let V::Union(_, row) = &mut after.1 else { panic!("after is a union") };
                    let V::Record(cols) = row.as_mut() else { panic!("a row") };
                    let name = cols.iter_mut().find(|(n, _)| n == "name").unwrap();
                    name.1 = V::Union(1, Box::new(V::String("name X".into())));
                }
            }
            let mut writer = apache_avro::Writer::new(&schema, Vec::new());
            for r in records {
                writer.append(r).unwrap();
            }
            writer.into_inner().unwrap()
        }
        "parquet" => {
            use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
            // The file's rows in one batch.
            let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))
                .unwrap()
                .with_batch_size(1 << 20)
                .build()
                .unwrap();
            let all: RecordBatch = reader.next().unwrap().unwrap();
            let schema = all.schema();
            let edited = match what {
                Edit::DeleteSecondRow => vec![all.slice(0, 1), all.slice(2, all.num_rows() - 2)],
                Edit::RenameThird => {
                    let i = schema.index_of("name").unwrap();
                    let names = all.column(i).as_any().downcast_ref::<StringArray>().unwrap();
                    let renamed: StringArray = (0..names.len())
                        .map(|r| {
                            if r == 2 {
                                Some("name X")
                            } else if names.is_null(r) {
                                None
                            } else {
                                Some(names.value(r))
                            }
                        })
                        .collect();
                    let mut columns: Vec<ArrayRef> = all.columns().to_vec();
                    columns[i] = std::sync::Arc::new(renamed);
                    vec![RecordBatch::try_new(schema.clone(), columns).unwrap()]
                }
            };
            let mut out = Vec::new();
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
            for b in &edited {
                writer.write(b).unwrap();
            }
            writer.close().unwrap();
            out
        }
        other => panic!("no editor for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_jsonl_verifies_and_faults_are_found() {
    faults_are_found("jsonl", "jsonl").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_csv_verifies_and_faults_are_found() {
    faults_are_found("csv", "csv").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_avro_verifies_and_faults_are_found() {
    faults_are_found("avro", "avro").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_parquet_verifies_and_faults_are_found() {
    faults_are_found("parquet", "parquet").await;
}

/// MariaDB into S3, in every format: an exact copy verifies, and a change
/// the sink has not seen is found.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_s3_in_every_format_verifies() {
    use mysql_async::prelude::Queryable;
    let _gate = S3_GATE.read().await;
    let db = "it_verify_my";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(12,3), at DATETIME(6), data VARBINARY(16), note TEXT)",
    )
    .await
    .unwrap();
    conn.query_drop(
        "INSERT INTO t SELECT seq, CONCAT('name ', seq), seq * 1.125, TIMESTAMP'2026-01-01 00:00:00.123456' + INTERVAL seq MINUTE, \
         UNHEX(LPAD(HEX(seq), 8, '0')), IF(seq % 3 = 0, NULL, 'x') FROM seq_1_to_2000",
    )
    .await
    .unwrap();
    let url = my_url(db);
    let table = format!("{db}.t");
    let env = s3_env();
    let run = |a: &[String]| {
        let o = riffle_cmd(a).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
        (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)))
    };
    for (n, format) in ["jsonl", "csv", "avro", "parquet"].iter().enumerate() {
        let root = crate::kafka_support::unique(&format!("verify_{format}"));
        let sink = s3_url(&root);
        let state = temp_dir(&format!("verify-my-{format}"));
        let base = |cmd: &str| -> Vec<String> {
            let mut a: Vec<String> = [cmd, "--source", &url, "--tables", &table, "--sink", &sink, "--format", format, "--name", &root]
                .map(String::from)
                .to_vec();
            a.extend(["--state".to_string(), state.display().to_string()]);
            a
        };
        let mut replicate = base("replicate");
        replicate.extend(["--until".to_string(), "now".to_string()]);
        assert_eq!(run(&replicate).0, Some(0));
        let rows = (2000 - n).to_string();
        let (code, text) = run(&base("verify"));
        assert_eq!(code, Some(0), "{format}: {text}");
        let line = text.lines().find(|l| l.trim_start().starts_with(&table)).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(line.split_whitespace().skip(1).take(3).collect::<Vec<_>>(), [rows.as_str(); 3], "{format}: {text}");
        let gone = 11 + n;
        conn.query_drop(format!("DELETE FROM t WHERE id = {gone}")).await.unwrap();
        let (code, text) = run(&base("verify"));
        assert_eq!(code, Some(3), "{format}: {text}");
        assert!(text.lines().any(|l| l.contains("extra in the sink") && l.contains(&format!("id={gone}"))), "{format}: {text}");
    }
}

/// Writers keep changing the source while verify runs against a running
/// pipeline, and while `replicate --until now --verify` catches up: no
/// false difference (changes after the verify position are left out of
/// the sink's replay; the sink is brought up to that position first).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_writer_causes_no_false_difference() {
    let db = "it_verify_live";
    let client = fresh_db(db).await;
    client.batch_execute(DDL).await.unwrap();
    let dir = temp_dir("verify-live");
    let (out, state) = (dir.join("out"), dir.join("state"));
    let out_s = out.to_str().unwrap();
    let url = db_url(db);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, client) = (stop.clone(), connect(&url).await);
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "UPDATE t SET price = price + 1 WHERE id = {}; INSERT INTO t (id, name) VALUES ({}, 'w'); DELETE FROM t WHERE id = {}",
                        n % 3000 + 1,
                        100_000 + n,
                        (n * 7) % 3000 + 1
                    ))
                    .await
                    .unwrap();
                n += 1;
            }
        })
    };
    let log = dir.join("riffle.log");
    let running = Running(spawn_riffle(&args("replicate", &url, out_s, &state, db, "jsonl", &["--commit-interval", "200ms"]), None, &log));
    wait_for("the stream to start", 60, || log_count(&log, "streaming started") == 1).await;
    let (code, text) = verify(&args("verify", &url, out_s, &state, db, "jsonl", &["--wait", "60s"]));
    assert_eq!(code, Some(0), "{text}");
    drop(running);
    let (code, text) = verify(&args("replicate", &url, out_s, &state, db, "jsonl", &["--until", "now", "--verify"]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("the copy matches the source"), "{text}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}

/// A Kafka sink is read back from the topic's start (JSON, plain and with
/// Kafka Connect schemas): an exact copy verifies; a change the sink has
/// not seen is found. Standard output cannot be read back: said so.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_topics_are_read_back() {
    let db = "it_verify_kafka";
    let client = fresh_db(db).await;
    client.batch_execute(DDL).await.unwrap();
    let state = temp_dir("verify-kafka-state");
    let url = db_url(db);
    for (n, query) in ["", "?schemas_enable=true"].iter().enumerate() {
        let name = crate::kafka_support::unique(&format!("vk{n}"));
        let sink = format!("kafka://{}{query}", crate::kafka_support::brokers());
        riffle_ok(&args("replicate", &url, &sink, &state, &name, "json", &["--until", "now"]));
        let check = args("verify", &url, &sink, &state, &name, "json", &[]);
        assert_matches(&check, 3000);
        client.batch_execute(&format!("UPDATE t SET note = 'k{n}' WHERE id = 42")).await.unwrap();
        assert_finds(&check, "differing", "id=42");
        riffle_ok(&args("replicate", &url, &sink, &state, &name, "json", &["--until", "now"]));
        assert_matches(&check, 3000);
    }
    let out = riffle(&args("verify", &url, "-", &state, db, "jsonl", &[]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("standard output cannot be read back"), "{}", stderr(&out));
}

/// Avro topics (Debezium's form and riffle's; writer schemas in the
/// registry) are read back and decoded: the every-type table verifies
/// exactly (what Avro cannot hold, it loses on both sides alike), and a
/// change the topic has not seen is found by key.
#[tokio::test(flavor = "multi_thread")]
async fn avro_topics_are_read_back_through_the_registry() {
    let (registry, _registry_state) = crate::kafka_support::start_registry().await;
    let db = "it_verify_avro";
    let client = fresh_db(db).await;
    client.batch_execute(crate::pg_types::CREATE).await.unwrap();
    client.batch_execute(&crate::pg_types::rows_sql_for_avro(1, 2, 3)).await.unwrap();
    let state = temp_dir("verify-avro-state");
    let url = db_url(db);
    let b = crate::kafka_support::brokers();
    // A numeric NaN has no precise Avro form: Debezium's string mode.
    for (n, query) in ["decimal.handling.mode=string", "value_encoding=riffle"].iter().enumerate() {
        let name = crate::kafka_support::unique(&format!("va{n}"));
        let sink = format!("kafka://{b}?schema_registry={registry}&{query}");
        let run = |cmd: &str, extra: &[&str]| {
            let mut a = args(cmd, &url, &sink, &state, &name, "avro", extra);
            assert_eq!(a[3], "--tables");
            a[4] = "public.types".to_string();
            a
        };
        riffle_ok(&run("replicate", &["--until", "now"]));
        let check = run("verify", &[]);
        let (code, text) = verify(&check);
        assert_eq!(code, Some(0), "{query}: {text}");
        let line = text.lines().find(|l| l.trim_start().starts_with("public.types")).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(&line.split_whitespace().collect::<Vec<_>>()[1..4], ["3", "3", "3"], "{query}: {text}");
        client.batch_execute(&format!("UPDATE types SET c_text = 'changed {n}' WHERE id = 1")).await.unwrap();
        let (code, text) = verify(&check);
        assert_eq!(code, Some(3), "{query}: {text}");
        assert!(text.lines().any(|l| l.contains("public.types differing:") && l.contains("id=1")), "{query}: {text}");
        riffle_ok(&run("replicate", &["--until", "now"]));
        let (code, text) = verify(&check);
        assert_eq!(code, Some(0), "{query}, caught up: {text}");
    }
}

/// A 1M-row table, far larger than the sort budget (lowered to 256 KiB),
/// verifies through many spilled runs (merged in tiers as they come), in
/// bounded memory, and a difference deep in it is still found by key.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_larger_than_memory_verifies_through_spilled_runs() {
    let db = "it_verify_big";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, name text, price numeric(12,3));
             INSERT INTO t SELECT g, 'name ' || g, g * 1.5 FROM generate_series(1, 1000000) g",
        )
        .await
        .unwrap();
    let dir = temp_dir("verify-big");
    let (out, state) = (dir.join("out"), dir.join("state"));
    let out_s = out.to_str().unwrap();
    let url = db_url(db);
    riffle_ok(&args("replicate", &url, out_s, &state, db, "parquet", &["--until", "now"]));
    let check = args("verify", &url, out_s, &state, db, "parquet", &[]);
    let run = |check: &[String]| {
        let mut cmd = riffle_cmd(check);
        cmd.env("RIFFLE_VERIFY_SORT_BUDGET", "262144").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        // The high-water mark of its memory, read while it runs.
        let status = format!("/proc/{}/status", child.id());
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let watcher = {
            let peak = peak.clone();
            std::thread::spawn(move || {
                while let Ok(text) = std::fs::read_to_string(&status) {
                    if let Some(kb) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        peak.store(kb, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        let out = child.wait_with_output().unwrap();
        watcher.join().unwrap();
        (
            out.status.code(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            peak.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let (code, text, peak_kb) = run(&check);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("public.t") && l.split_whitespace().skip(1).take(3).all(|n| n == "1000000")),
        "{text}"
    );
    let runs: u64 = text.split("spilled_runs=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(runs > 10, "the rows went through many runs on disk: {text}");
    // The debug build's own baseline is large; the rows' keys and digests
    // alone would add tens of MB more.
    assert!(peak_kb > 0 && peak_kb < 250_000, "peak RSS {peak_kb} kB");
    client.batch_execute("UPDATE t SET name = 'deep' WHERE id = 787654").await.unwrap();
    let (code, text, _) = run(&check);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.lines().any(|l| l.contains("public.t differing:") && l.contains("id=787654")), "{text}");
    // Stopped (SIGINT) while rows spill: it ends within seconds, says so,
    // and leaves no temporary files behind.
    let mut cmd = riffle_cmd(&check);
    cmd.env("RIFFLE_VERIFY_SORT_BUDGET", "262144").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let spill = std::env::temp_dir().join(format!("riffle-verify-{}", child.id()));
    wait_for("rows spilled to disk", 60, || std::fs::read_dir(&spill).is_ok_and(|mut d| d.next().is_some())).await;
    signal(&child, "INT");
    let stopped = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(stopped.elapsed() < std::time::Duration::from_secs(10), "took {:?} to stop: {text}", stopped.elapsed());
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert!(!spill.exists(), "the spilled runs are removed");
}

/// A sink row known only in part (an update that left a TOASTed value
/// unsent) is compared on its known columns: an exact copy verifies, and a
/// difference in a known column of that row is found.
#[tokio::test(flavor = "multi_thread")]
async fn rows_known_only_in_part_are_compared_on_their_known_columns() {
    let db = "it_verify_partial";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, n int, big text);
             INSERT INTO t SELECT g, g, CASE WHEN g = 7 THEN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i) END
             FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    let dir = temp_dir("verify-partial");
    let (out, state) = (dir.join("out"), dir.join("state"));
    let out_s = out.to_str().unwrap();
    let url = db_url(db);
    riffle_ok(&args("replicate", &url, out_s, &state, db, "jsonl", &["--until", "now"]));
    // The TOASTed value is not sent with this update: the sink's row for 7 is partial.
    client.batch_execute("UPDATE t SET n = 70 WHERE id = 7").await.unwrap();
    riffle_ok(&args("replicate", &url, out_s, &state, db, "jsonl", &["--until", "now"]));
    let events = read_jsonl(&out, "public.t");
    assert!(events.iter().any(|e| e["op"] == "u" && e["after"].get("big").is_none()), "the update left big out");
    let check = args("verify", &url, out_s, &state, db, "jsonl", &[]);
    assert_matches(&check, 20000);
    // Source rows sorted one by one, long before the sink's thread has read
    // the partial row: the read is done again, keeping the cells.
    let one_by_one = || {
        let out = riffle_cmd(&check).env("RIFFLE_VERIFY_BATCH", "1").output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)))
    };
    let (code, text) = one_by_one();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("reading again, keeping the cells") && text.contains("public.t"), "{text}");
    client.batch_execute("UPDATE t SET n = 71 WHERE id = 7; UPDATE t SET n = n WHERE id = 7").await.unwrap();
    assert_finds(&check, "differing", "id=7");
    let (code, text) = one_by_one();
    assert_eq!(code, Some(3), "{text}");
    assert!(text.lines().any(|l| l.contains("public.t differing:") && l.contains("id=7")), "{text}");
}
