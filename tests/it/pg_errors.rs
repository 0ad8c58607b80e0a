//! Bad input gets a clear error that names the problem and the fix, exits 1
//! (2 for bad usage), and leaves nothing behind that looks complete.

use crate::support::*;

fn fails_with(args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = riffle(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "riffle {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in the error of riffle {args:?}:\n{err}");
    }
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_urls_passwords_hosts_and_tables() {
    let db = "it_errors";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE present (id int PRIMARY KEY)").await.unwrap();
    let url = db_url(db);
    let out = temp_dir("errors-out");
    let state = temp_dir("errors-state");
    let (o, s) = (out.to_str().unwrap(), state.to_str().unwrap());

    // Malformed URL, and a scheme riffle does not read.
    fails_with(&["sync", "--source", "postgres://", "--tables", "x", "--sink", o], 1, &["invalid source URL", "expected postgres://"]);
    fails_with(&["sync", "--source", "oracle://h/db", "--tables", "x", "--sink", o], 1, &["expected a postgres://"]);
    fails_with(&["sync", "--source", &url, "--tables", "x", "--sink", "ftp://h/x"], 1, &["sink scheme ftp://"]);
    // Bad usage is exit code 2.
    fails_with(&["sync", "--format", "xml"], 2, &["invalid value 'xml'"]);

    // Wrong password: says so, and never prints the password given.
    let wrong = url.replacen(":riffle-test-pw@", ":not-the-password@", 1);
    let err = fails_with(&["sync", "--source", &wrong, "--tables", "present", "--sink", o], 1, &["rejected the password", "PGPASSWORD"]);
    assert!(!err.contains("not-the-password"), "the password leaked: {err}");

    // Unreachable host: retried, then a clear error.
    fails_with(
        &["replicate", "--source", "postgres://u:p@127.0.0.1:1/db", "--tables", "t", "--sink", o, "--state", s, "--max-retries", "1"],
        1,
        &["127.0.0.1:1", "check the host and port", "gave up after 1 retries"],
    );

    // A table that does not exist, and a glob that matches nothing.
    fails_with(
        &["sync", "--source", &url, "--tables", "public.absent", "--sink", o],
        1,
        &["table does not exist: public.absent", "public.present"],
    );
    fails_with(&["sync", "--source", &url, "--tables", "nope_*", "--sink", o], 1, &["no table matches public.nope_*"]);
    assert!(data_files(&out, "public.present").is_empty());

    // Two sinks in one directory would share one manifest.
    fails_with(
        &["sync", "--source", &url, "--tables", "present", "--sink", o, "--sink", &format!("{o}/")],
        1,
        &["two sinks write under the same place"],
    );

    // Config file errors name the field.
    let cfg = state.join("bad.toml");
    std::fs::write(&cfg, format!("[source]\nurl = \"{url}\"\ntables = [\"present\"]\n[[sinks]]\nurl = \"{o}\"\nformat = \"xml\"\n"))
        .unwrap();
    fails_with(&["sync", "--config", cfg.to_str().unwrap()], 1, &["sinks[0].format", "expected csv, jsonl, json, avro or parquet", "xml"]);
    std::fs::write(&cfg, "[source]\nurll = \"x\"\n").unwrap();
    fails_with(&["sync", "--config", cfg.to_str().unwrap()], 1, &["unknown field `urll`"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_logical_wal_is_refused_with_the_fix() {
    let admin_url = std::env::var("RIFFLE_TEST_PG_NOCDC_URL").expect("RIFFLE_TEST_PG_NOCDC_URL: run scripts/test.sh");
    let admin = connect(&admin_url).await;
    admin.batch_execute("DROP DATABASE IF EXISTS it_nocdc WITH (FORCE)").await.unwrap();
    admin.batch_execute("CREATE DATABASE it_nocdc").await.unwrap();
    let url = format!("{}/it_nocdc", admin_url.rsplit_once('/').unwrap().0);
    let c = connect(&url).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)").await.unwrap();
    let out = temp_dir("nocdc-out");
    let state = temp_dir("nocdc-state");
    fails_with(
        &["replicate", "--source", &url, "--tables", "t", "--sink", out.to_str().unwrap(), "--state", state.to_str().unwrap()],
        1,
        &["wal_level", "expected logical, found replica", "ALTER SYSTEM SET wal_level = logical"],
    );
    assert!(data_files(&out, "public.t").is_empty());
    // A one-shot sync needs no logical decoding and works there.
    riffle_ok(&["sync", "--source", &url, "--tables", "t", "--sink", out.to_str().unwrap()]);
    assert_eq!(read_jsonl(&out, "public.t").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelines_on_one_server_never_collide() {
    let (a, b) = ("it_collide_a", "it_collide_b");
    let ca = fresh_db(a).await;
    let cb = fresh_db(b).await;
    for c in [&ca, &cb] {
        c.batch_execute("CREATE TABLE t1 (id int PRIMARY KEY); CREATE TABLE t2 (id int PRIMARY KEY); INSERT INTO t1 VALUES (1); INSERT INTO t2 VALUES (2);")
            .await
            .unwrap();
    }
    let state = temp_dir("collide-state");
    let s = state.to_str().unwrap();
    // Two selections in database a, one in database b, one state directory.
    let runs = [(a, "t1", "collide-a1"), (a, "t2", "collide-a2"), (b, "t1", "collide-b1")];
    for (db, table, dir) in runs {
        let out = temp_dir(dir);
        riffle_ok(&[
            "replicate",
            "--source",
            &db_url(db),
            "--tables",
            table,
            "--sink",
            out.to_str().unwrap(),
            "--state",
            s,
            "--until",
            "now",
        ]);
        assert_eq!(read_jsonl(&out, &format!("public.{table}")).len(), 1);
    }
    let status = riffle_ok(&["status", "--state", s, "--json"]);
    let saved: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 3, "three pipelines, three states");

    // A slot of that name in another database is a clear error, not a takeover.
    let admin = connect(&admin_url()).await;
    admin
        .batch_execute("SELECT pg_drop_replication_slot('shared_name') FROM pg_replication_slots WHERE slot_name = 'shared_name'")
        .await
        .unwrap();
    cb.batch_execute("SELECT pg_create_logical_replication_slot('shared_name', 'pgoutput')").await.unwrap();
    let out = temp_dir("collide-named");
    let state2 = temp_dir("collide-state2");
    fails_with(
        &[
            "replicate",
            "--source",
            &db_url(a),
            "--tables",
            "t1",
            "--name",
            "shared_name",
            "--sink",
            out.to_str().unwrap(),
            "--state",
            state2.to_str().unwrap(),
        ],
        1,
        &["belongs to database \"it_collide_b\"", "another --name"],
    );
    cb.batch_execute("SELECT pg_drop_replication_slot('shared_name')").await.unwrap();

    // A second pipeline state for a live slot never takes the slot over, not
    // even on its next attempt.
    let stolen_out = temp_dir("collide-stolen");
    let other_state = temp_dir("collide-other-state");
    for _ in 0..2 {
        fails_with(
            &[
                "replicate",
                "--source",
                &db_url(a),
                "--tables",
                "t1",
                "--sink",
                stolen_out.to_str().unwrap(),
                "--state",
                other_state.to_str().unwrap(),
                "--max-retries",
                "0",
            ],
            1,
            &["already exists but this pipeline has no saved position"],
        );
    }
    ca.batch_execute("INSERT INTO t1 VALUES (3)").await.unwrap();
    let out = temp_dir("collide-a1");
    riffle_ok(&["replicate", "--source", &db_url(a), "--tables", "t1", "--sink", out.to_str().unwrap(), "--state", s, "--until", "now"]);
    let events = read_jsonl(&out, "public.t1");
    assert_eq!(events.iter().filter(|e| e["op"] == "c").count(), 1, "the original pipeline still resumes its own slot");
}
