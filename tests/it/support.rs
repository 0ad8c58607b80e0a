//! Helpers: fresh databases, running the riffle binary, reading its output.

#![allow(dead_code)]

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// A variable `scripts/servers.sh` exports for the tests.
pub fn test_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the suite with scripts/test.sh"))
}

/// The admin URL of the test server, from `scripts/servers.sh`.
pub fn admin_url() -> String {
    std::env::var("RIFFLE_TEST_PG_URL").expect(
        "RIFFLE_TEST_PG_URL is not set: run the suite with scripts/test.sh, which starts the test servers \
         (or `scripts/servers.sh start` and `source /tmp/riffle-servers/env`)",
    )
}

/// The URL of database `db` on the test server.
pub fn db_url(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').expect("URL has a path").0;
    format!("{base}/{db}")
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Drops and recreates database `db` (and any slot left in it), returning a
/// client connected to it.
pub async fn fresh_db(db: &str) -> Client {
    let admin = connect(&admin_url()).await;
    admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE \"{db}\"")).await.unwrap();
    connect(&db_url(db)).await
}

/// A fresh, empty directory for a test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("riffle-it").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `replicate --source URL --tables TABLE --sink OUT --state STATE`, then `extra`.
pub fn replicate_args(url: &str, table: &str, out: &Path, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["replicate", "--source", url, "--tables", table, "--sink"].iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    args.push("--state".into());
    args.push(state.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn riffle_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riffle"));
    cmd.args(args).env_remove("PGPASSWORD").env("NO_COLOR", "1").env("RUST_LOG", "info");
    cmd
}

/// Runs riffle to completion.
pub fn riffle<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    riffle_cmd(args).output().expect("running riffle")
}

/// Runs riffle and insists it exits 0.
pub fn riffle_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let out = riffle(args);
    let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    assert!(out.status.success(), "riffle {shown:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// Starts riffle in the background; its stderr goes to `log`.
/// A riffle process that is killed when the test ends, passed or failed,
/// so a failed test never leaves it holding a slot.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn_riffle<S: AsRef<std::ffi::OsStr>>(args: &[S], stdout: Option<&Path>, log: &Path) -> Child {
    let mut cmd = riffle_cmd(args);
    cmd.stderr(std::fs::File::create(log).unwrap());
    match stdout {
        Some(p) => cmd.stdout(std::fs::File::create(p).unwrap()),
        None => cmd.stdout(Stdio::null()),
    };
    cmd.spawn().expect("spawning riffle")
}

/// Waits for `cond`, failing the test after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` (which may await) until it holds or `secs` seconds pass;
/// says whether it held. For a test that must clean up before it fails.
pub async fn poll_until(secs: u64, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] with a condition that may await.
pub async fn wait_for_async(what: &str, secs: u64, cond: impl AsyncFnMut() -> bool) {
    assert!(poll_until(secs, cond).await, "timed out after {secs}s waiting for {what}");
}

/// Sends `kill -SIGNAL` (`STOP`, `CONT`, `TERM`, …) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().expect("running kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// `kill -9` at a moment `ready` picks, so a crash test does not depend on
/// luck: `child` is frozen (SIGSTOP) while `ready` looks at what it has
/// written, and killed frozen, so what `ready` saw is what the kill leaves
/// behind. When `ready` says no, `child` runs on (SIGCONT) for a moment and
/// is looked at again; after `secs` seconds the test fails (`child` killed).
pub async fn kill_9_when(child: &mut Child, what: &str, secs: u64, mut ready: impl AsyncFnMut() -> bool) {
    // Should `ready` panic, no stopped process is left behind.
    struct KillOnPanic(u32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
            }
        }
    }
    let _guard = KillOnPanic(child.id());
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        signal(child, "STOP");
        let is_ready = ready().await;
        if is_ready || Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(is_ready, "timed out after {secs}s waiting for {what}");
            return;
        }
        signal(child, "CONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many lines of the log at `path` contain `needle`.
pub fn log_count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| l.contains(needle)).count())
}

/// A loopback port nothing listens on right now (for `--metrics-addr`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` from riffle's metrics endpoint: the status and the body, or
/// None while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// The value of one series (name and labels, exactly) in a metrics body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every final (committed) data file under `dir/<table>/`, in name order.
pub fn data_files(dir: &Path, table: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(table))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Files a sink has written but not committed: everything under
/// `_riffle/tmp/` (files being written, and uploads in progress).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("_riffle").join("tmp"), &mut out);
    out
}

/// The ids (`after.id`) of the rows a JSON-lines sink holds for `table`,
/// snapshot reads and inserts, and how many events it holds in all.
pub fn row_ids(dir: &Path, table: &str) -> (std::collections::BTreeSet<i64>, usize) {
    let events = read_jsonl(dir, table);
    let ids = events.iter().filter(|e| e["op"] == "c" || e["op"] == "r").filter_map(|e| e["after"]["id"].as_i64()).collect();
    (ids, events.len())
}

/// The JSON-lines events of one table, in file (= position) order.
pub fn read_jsonl(dir: &Path, table: &str) -> Vec<Json> {
    let mut events = Vec::new();
    for f in data_files(dir, table) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            events.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad JSON line {line:?}: {e}", f.display())));
        }
    }
    events
}

/// The CSV rows of one table (header, then rows), from all its files; the
/// header must be the same in every file.
pub fn read_csv(dir: &Path, table: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for f in data_files(dir, table) {
        let text = std::fs::read_to_string(&f).unwrap();
        let (h, r) = parse_csv(&text);
        if let Some(prev) = &header {
            assert_eq!(prev, &h, "headers differ in {}", f.display());
        }
        header = Some(h);
        rows.extend(r);
    }
    (header.unwrap_or_default(), rows)
}

/// Parses CSV keeping NULL (an empty unquoted cell) apart from "" (quoted).
pub fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let push_cell = |row: &mut Vec<Option<String>>, cell: &mut String, quoted: &mut bool| {
        row.push(if cell.is_empty() && !*quoted { None } else { Some(std::mem::take(cell)) });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => push_cell(&mut row, &mut cell, &mut quoted),
            '\r' => {}
            '\n' => {
                push_cell(&mut row, &mut cell, &mut quoted);
                rows.push(std::mem::take(&mut row));
            }
            c => cell.push(c),
        }
    }
    assert!(row.is_empty() && cell.is_empty(), "CSV does not end with a newline");
    let mut it = rows.into_iter();
    let header = it.next().map(|h| h.into_iter().map(|c| c.unwrap_or_default()).collect()).unwrap_or_default();
    (header, it.collect())
}

/// Applies change events (in order) to a map from key to row, the way a
/// consumer replaying riffle's output would.
pub fn replay(events: &[Json], key: &str) -> std::collections::BTreeMap<i64, Json> {
    let mut table = std::collections::BTreeMap::new();
    for e in events {
        match e["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                let after = e["after"].clone();
                if e["op"] == "u" {
                    let old = e["before"][key].as_i64().unwrap();
                    table.remove(&old);
                }
                table.insert(after[key].as_i64().unwrap(), after);
            }
            "d" => {
                table.remove(&e["before"][key].as_i64().unwrap());
            }
            "t" => table.clear(),
            op => panic!("unknown op {op}"),
        }
    }
    table
}

/// Rows of `sql` as JSON objects keyed by `key`, built by the server
/// (`to_jsonb`), for comparing with a replay.
pub async fn table_as_json(client: &Client, table: &str, key: &str) -> std::collections::BTreeMap<i64, Json> {
    let rows = client.query(&format!("SELECT to_jsonb(t)::text FROM {table} t"), &[]).await.unwrap();
    rows.iter()
        .map(|r| {
            let v: Json = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
            (v[key].as_i64().unwrap(), v)
        })
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The MariaDB admin URL from `scripts/servers.sh`.
pub fn my_admin_url() -> String {
    std::env::var("RIFFLE_TEST_MARIADB_URL").expect("RIFFLE_TEST_MARIADB_URL is not set: run the suite with scripts/test.sh")
}

/// riffle's own (least-privilege) user's URL for database `db`.
pub fn my_url(db: &str) -> String {
    let u = std::env::var("RIFFLE_TEST_MARIADB_RIFFLE_URL").expect("RIFFLE_TEST_MARIADB_RIFFLE_URL: run scripts/test.sh");
    format!("{}/{db}", u.rsplit_once('/').unwrap().0)
}

/// Another admin connection to MariaDB database `db` (a writer's).
pub async fn my_fresh_conn(db: &str) -> mysql_async::Conn {
    let admin = my_admin_url().replacen("mariadb://", "mysql://", 1);
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    mysql_async::Conn::from_url(&url).await.unwrap()
}

/// A fresh MariaDB database, and an admin connection to it (UTC session).
pub async fn my_fresh_db(db: &str) -> mysql_async::Conn {
    use mysql_async::prelude::Queryable;
    let admin = my_admin_url().replacen("mariadb://", "mysql://", 1);
    let mut conn = mysql_async::Conn::from_url(&admin).await.unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`")).await.unwrap();
    conn.query_drop(format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4")).await.unwrap();
    conn.query_drop(format!("USE `{db}`")).await.unwrap();
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    conn
}
