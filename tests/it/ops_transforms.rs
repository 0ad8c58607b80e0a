//! Column selection, masking, row filters and routing hold in the snapshot
//! and in the stream alike.

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn columns_masks_filters_and_routing() {
    let db = "it_transforms";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, email text, ssn text, location_id int, secret text);
             CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount numeric(10,2));
             INSERT INTO users VALUES (1, 'a@x.io', '111', 10, 's1'), (2, 'b@x.io', '222', 20, 's2'), (3, NULL, NULL, 10, 's3');
             INSERT INTO orders VALUES (1, 1, 9.50);",
        )
        .await
        .unwrap();
    let (users_dir, orders_dir, state) = (temp_dir("tf-users"), temp_dir("tf-orders"), temp_dir("tf-state"));
    let cfg = state.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"name = "tf"
commit_interval = "100ms"
mask_salt = "pepper"
[source]
url = "{url}"
tables = ["public.*"]
[[sinks]]
name = "people"
url = "{u}"
[[sinks]]
name = "money"
url = "{o}"
format = "csv"
[[tables]]
match = "public.users"
exclude_columns = ["secret"]
mask = {{ email = "hash", ssn = "redact" }}
filter = "location_id = 10"
sinks = ["people"]
[[tables]]
match = "public.orders"
sinks = ["money"]
[state]
dir = "{s}"
"#,
            url = db_url(db),
            u = users_dir.display(),
            o = orders_dir.display(),
            s = state.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    riffle_ok(&["replicate", "--config", cfg, "--until", "now"]);
    client
        .batch_execute(
            "INSERT INTO users VALUES (4, 'd@x.io', '444', 10, 's4'), (5, 'e@x.io', '555', 30, 's5');
             UPDATE users SET email = 'a2@x.io' WHERE id = 1;
             UPDATE users SET ssn = '999' WHERE id = 2;
             DELETE FROM users WHERE id = 3;
             INSERT INTO orders VALUES (2, 4, 1.25);",
        )
        .await
        .unwrap();
    riffle_ok(&["replicate", "--config", cfg, "--until", "now"]);

    // The expected hash, computed by Postgres itself.
    let hash = |email: &'static str| {
        let client = &client;
        async move {
            client
                .query_one("SELECT encode(sha256(convert_to('pepper' || $1::text, 'UTF8')), 'hex')", &[&email])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    let events = read_jsonl(&users_dir, "public.users");
    let got: Vec<(String, serde_json::Value, serde_json::Value)> =
        events.iter().map(|e| (e["op"].as_str().unwrap().to_string(), e["before"].clone(), e["after"].clone())).collect();
    let expected = vec![
        ("r".to_string(), json!(null), json!({"id": 1, "email": hash("a@x.io").await, "ssn": "****", "location_id": 10})),
        ("r".to_string(), json!(null), json!({"id": 3, "email": null, "ssn": null, "location_id": 10})),
        ("c".to_string(), json!(null), json!({"id": 4, "email": hash("d@x.io").await, "ssn": "****", "location_id": 10})),
        ("u".to_string(), json!({"id": 1}), json!({"id": 1, "email": hash("a2@x.io").await, "ssn": "****", "location_id": 10})),
        // A delete with a key-only before image cannot be judged by the filter: it passes.
        ("d".to_string(), json!({"id": 3}), json!(null)),
    ];
    assert_eq!(got, expected);
    assert!(data_files(&users_dir, "public.orders").is_empty(), "orders are routed to the other sink only");
    let (header, rows) = read_csv(&orders_dir, "public.orders");
    assert_eq!(&header[..3], ["id", "user_id", "amount"]);
    assert_eq!(rows.iter().map(|r| r[0].clone().unwrap()).collect::<Vec<_>>(), ["1", "2"]);
    assert!(data_files(&orders_dir, "public.users").is_empty());

    // The same rules from flags.
    let flags_out = temp_dir("tf-flags");
    let out = riffle_cmd(&[
        "sync",
        "--source",
        &db_url(db),
        "--tables",
        "users",
        "--sink",
        flags_out.to_str().unwrap(),
        "--exclude-column",
        "public.users.secret",
        "--mask",
        "users.email",
        "--mask",
        "public.users.ssn=redact",
        "--filter",
        "users: location_id = 10 OR email IS NULL",
    ])
    .env("RIFFLE_MASK_SALT", "pepper")
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut rows: Vec<serde_json::Value> = read_jsonl(&flags_out, "public.users").into_iter().map(|e| e["after"].clone()).collect();
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "email": hash("a2@x.io").await, "ssn": "****", "location_id": 10}),
            json!({"id": 4, "email": hash("d@x.io").await, "ssn": "****", "location_id": 10}),
        ]
    );

    // A filter on a column that does not exist is a clear error.
    let bad = riffle(&[
        "sync",
        "--source",
        &db_url(db),
        "--tables",
        "users",
        "--sink",
        flags_out.to_str().unwrap(),
        "--filter",
        "users: region = 'eu'",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("column \"region\" does not exist in public.users (columns: id, email, ssn, location_id, secret)"),
        "{}",
        stderr(&bad)
    );
    // Hash masks without a salt are refused.
    let nosalt =
        riffle(&["sync", "--source", &db_url(db), "--tables", "users", "--sink", flags_out.to_str().unwrap(), "--mask", "users.email"]);
    assert_eq!(nosalt.status.code(), Some(1));
    assert!(stderr(&nosalt).contains("RIFFLE_MASK_SALT"));
}
