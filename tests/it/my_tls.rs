//! TLS to MariaDB: the test server has TLS with a private CA and a user,
//! `tlsonly`, created `REQUIRE SSL`, so a run as that user proves the
//! snapshot connection and the binlog connection are encrypted.

use crate::support::*;
use mysql_async::prelude::Queryable;

fn tls_url(db: &str, query: &str) -> String {
    let url = my_url(db);
    let (_, rest) = url.split_once("://riffle:").unwrap();
    format!("mariadb://{}:{rest}?{query}", test_env("RIFFLE_TEST_MARIADB_TLS_USER"))
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_binlog_over_tls_and_clear_errors_when_tls_does_not_fit() {
    let db = "it_my_tls";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.unwrap();
    let ca = test_env("RIFFLE_TEST_TLS_CA");
    let (out, state) = (temp_dir("my-tls-out"), temp_dir("my-tls-state"));
    let table = format!("{db}.t");

    let url = tls_url(db, &format!("ssl-mode=verify_identity&ssl-ca={ca}"));
    riffle_ok(&replicate_args(&url, &table, &out, &state, &["--until", "now"]));
    conn.query_drop("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    riffle_ok(&replicate_args(&url, &table, &out, &state, &["--until", "now"]));
    let events = read_jsonl(&out, &table);
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c"], "snapshot and binlog, both over TLS");
    assert_eq!(events[2]["after"]["v"], "c");

    for q in ["ssl-mode=required".to_string(), format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")] {
        let out = riffle(&["check", "--source", &tls_url(db, &q), "--tables", &table, "--sink", out.to_str().unwrap()]);
        assert!(out.status.success(), "{q}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    }

    let fails = |url: &str, expected: &str| {
        let out = riffle(&["sync", "--source", url, "--tables", &table, "--sink", "-"]);
        assert_eq!(out.status.code(), Some(1), "{url}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{url}: expected {expected:?} in: {err}");
        assert!(!err.contains("riffle-test-pw"), "passwords are never shown: {err}");
    };
    fails(&tls_url(db, "ssl-mode=disabled"), "REQUIREs SSL");
    fails(&tls_url(db, &format!("ssl-mode=verify_identity&ssl-ca={}", test_env("RIFFLE_TEST_OTHER_CA"))), "TLS failed");
    fails(&tls_url(db, "ssl-mode=preferred"), "use ssl-mode=required");
    fails(&tls_url(db, &format!("ssl-mode=verify_ca&ssl-ca={ca}")), "use verify_identity");
    // A server without TLS, and TLS required.
    let nocdc = test_env("RIFFLE_TEST_MARIADB_NOCDC_URL");
    let out = riffle(&["sync", "--source", &format!("{nocdc}?ssl-mode=required"), "--tables", "mysql.db", "--sink", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("server does not have this capability"), "{}", stderr(&out));
}
