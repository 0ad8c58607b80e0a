//! `riffle check` reports each problem with its fix and exits non-zero;
//! against a ready server it exits 0.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_every_problem_with_its_fix() {
    let db = "it_check";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY, v text);
             CREATE TABLE nokey (v text);
             CREATE TABLE secret (id int PRIMARY KEY);
             DO $$ BEGIN
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'it_check_user') THEN
                 EXECUTE 'DROP OWNED BY it_check_user'; EXECUTE 'DROP ROLE it_check_user';
               END IF;
             END $$;
             CREATE ROLE it_check_user LOGIN PASSWORD 'pw';
             GRANT SELECT ON good, nokey TO it_check_user;",
        )
        .await
        .unwrap();
    let out = temp_dir("check-out");
    let o = out.to_str().unwrap();

    // A ready server and selection: exit 0.
    let ok = riffle(&["check", "--source", &db_url(db), "--tables", "good", "--sink", o]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}\n{}", stderr(&ok));
    assert!(text.contains("ok    wal_level: logical") && text.contains("all checks passed"), "{text}");

    // A user without REPLICATION or SELECT, a table without a key.
    let url = db_url(db).replacen("postgres:riffle-test-pw@", "it_check_user:pw@", 1);
    let bad = riffle(&["check", "--source", &url, "--tables", "good", "--tables", "nokey", "--tables", "secret", "--sink", o]);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    for needle in [
        "FAIL  role it_check_user: expected the REPLICATION attribute",
        "fix: ALTER ROLE \"it_check_user\" WITH REPLICATION;",
        "FAIL  replica identity of public.nokey: expected a primary key, or REPLICA IDENTITY FULL (or USING INDEX)",
        "ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;",
        "FAIL  SELECT on public.secret: expected granted, found not granted",
        "fix: GRANT SELECT ON \"public\".\"secret\" TO \"it_check_user\";",
        "ok    table public.good",
        "some checks failed",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    // Full before images asked for: a keyed table that is not FULL fails.
    let full = riffle(&["check", "--source", &db_url(db), "--tables", "good", "--sink", o, "--full-before-images"]);
    let text = String::from_utf8_lossy(&full.stdout);
    assert_eq!(full.status.code(), Some(1));
    assert!(text.contains("expected FULL (full before images were asked for)"), "{text}");

    // wal_level = replica.
    let nocdc = std::env::var("RIFFLE_TEST_PG_NOCDC_URL").unwrap();
    let wal = riffle(&["check", "--source", &nocdc, "--tables", "*", "--sink", o]);
    let text = String::from_utf8_lossy(&wal.stdout);
    assert_eq!(wal.status.code(), Some(1));
    assert!(
        text.contains("FAIL  wal_level: expected logical, found replica") && text.contains("fix: ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );

    // A sink that cannot be written: the check fails, and replicate refuses
    // before reading anything.
    let file_in_the_way = out.join("not-a-dir");
    std::fs::write(&file_in_the_way, b"x").unwrap();
    let sink = file_in_the_way.join("sub");
    let bad_sink = riffle(&["check", "--source", &db_url(db), "--tables", "good", "--sink", sink.to_str().unwrap()]);
    assert_eq!(bad_sink.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_sink.stdout).contains("expected a directory riffle can create"));
    let state = temp_dir("check-state");
    let refused = riffle(&[
        "replicate",
        "--source",
        &db_url(db),
        "--tables",
        "good",
        "--sink",
        sink.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("nothing was read from the source"), "{}", stderr(&refused));
    let admin = connect(&admin_url()).await;
    let slots: i64 = admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_are_listed_and_dropped_only_when_confirmed() {
    let db = "it_slots";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("slots-out"), temp_dir("slots-state"));
    let url = db_url(db);
    riffle_ok(&[
        "replicate",
        "--source",
        &url,
        "--tables",
        "t",
        "--name",
        "it_slots_pipe",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--until",
        "now",
    ]);
    let list = riffle_ok(&["slots", "list", "--source", &url]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("it_slots_pipe  database=it_slots  inactive") && text.contains("(riffle: has a publication of the same name)"),
        "{text}"
    );
    // Without --yes and without a terminal to ask on: refused, nothing dropped.
    let refused = riffle_cmd(&["slots", "drop", "--source", &url, "it_slots_pipe"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("pass --yes"), "{}", stderr(&refused));
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'it_slots_pipe'").await, 1);
    riffle_ok(&["slots", "drop", "--source", &url, "it_slots_pipe", "--yes"]);
    assert_eq!(count("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'it_slots_pipe'").await, 0);
    assert_eq!(count("SELECT count(*) FROM pg_publication WHERE pubname = 'it_slots_pipe'").await, 0);
    let again = riffle(&["slots", "drop", "--source", &url, "it_slots_pipe", "--yes"]);
    assert!(stderr(&again).contains("no slot or publication named"));
}

/// Shell completions and the manual page come from the same definition as
/// `--help`, so they name every command.
#[test]
fn completions_and_the_manual_page_name_every_command() {
    let bash = riffle_ok(&["completions", "bash"]);
    let script = String::from_utf8(bash.stdout).unwrap();
    for command in ["sync", "replicate", "verify", "snapshot", "status", "check", "slots"] {
        assert!(script.contains(command), "bash completion lacks {command}");
    }
    for shell in ["zsh", "fish"] {
        assert!(!riffle_ok(&["completions", shell]).stdout.is_empty(), "{shell}");
    }
    let man = String::from_utf8(riffle_ok(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH riffle 1") && man.contains("verify") && man.contains("Exit codes"), "{man}");
    assert_eq!(riffle(&["completions", "tcsh"]).status.code(), Some(2), "an unknown shell is bad usage");
}
