//! TLS to Postgres: the test server has `ssl = on` with a private CA and a
//! user, `tlsonly`, that pg_hba.conf admits only over TLS, so a run as that
//! user proves both the snapshot session and the replication connection
//! are encrypted.

use crate::support::*;

/// The database URL as the TLS-only user, with `query`.
fn tls_url(db: &str, query: &str) -> String {
    let url = db_url(db);
    let (_, rest) = url.split_once("://postgres:").unwrap();
    format!("postgres://{}:{rest}?{query}", test_env("RIFFLE_TEST_PG_TLS_USER"))
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_stream_over_tls_and_clear_errors_when_tls_does_not_fit() {
    let db = "it_tls";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.unwrap();
    let ca = test_env("RIFFLE_TEST_TLS_CA");
    let (out, state) = (temp_dir("tls-out"), temp_dir("tls-state"));

    // verify-full: the certificate is signed by the CA and names 127.0.0.1.
    let url = tls_url(db, &format!("sslmode=verify-full&sslrootcert={ca}"));
    riffle_ok(&replicate_args(&url, "public.t", &out, &state, &["--until", "now"]));
    client.batch_execute("INSERT INTO t VALUES (3, 'c')").await.unwrap();
    riffle_ok(&replicate_args(&url, "public.t", &out, &state, &["--until", "now"]));
    let events = read_jsonl(&out, "public.t");
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c"], "snapshot and stream, both over TLS");
    assert_eq!(events[2]["after"]["v"], "c");

    // verify-ca and require connect too (riffle check runs every connection).
    for q in [format!("sslmode=verify-ca&sslrootcert={ca}"), "sslmode=require".to_string()] {
        let out = riffle(&["check", "--source", &tls_url(db, &q), "--tables", "public.t", "--sink", out.to_str().unwrap()]);
        assert!(out.status.success(), "{q}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    }

    let fails = |url: &str, expected: &str| {
        let out = riffle(&["sync", "--source", url, "--tables", "public.t", "--sink", "-"]);
        assert_eq!(out.status.code(), Some(1), "{url}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{url}: expected {expected:?} in: {err}");
        assert!(!err.contains("riffle-test-pw"), "passwords are never shown: {err}");
    };
    // Without TLS the server refuses this user, and riffle says what to do.
    fails(&tls_url(db, "sslmode=disable"), "only over TLS");
    // A certificate from another CA is refused: definite, with the fix.
    fails(&tls_url(db, &format!("sslmode=verify-full&sslrootcert={}", test_env("RIFFLE_TEST_OTHER_CA"))), "certificate was not accepted");
    // No CA file for a verifying mode.
    fails(&tls_url(db, "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), "cannot read the CA certificate");
    // A server without TLS, and TLS required.
    let nocdc = std::env::var("RIFFLE_TEST_PG_NOCDC_URL").unwrap();
    fails(&format!("{nocdc}?sslmode=require"), "does not accept TLS connections");
}
