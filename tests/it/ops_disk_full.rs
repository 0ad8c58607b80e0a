//! A full disk under a file sink, and a disk whose `fsync` fails with EIO:
//! riffle stops with a definite error that says so (exit 1, the fix in the
//! message), commits nothing it did not write whole, and once the disk is
//! right again the next run finishes with nothing lost and nothing written
//! twice. The full disk is a small tmpfs (mounting it needs root, as the
//! test servers' machine has); the EIO is injected with strace.

use crate::support::*;
use std::process::Command;

/// The output replays to the table, no event written twice.
async fn assert_exact_copy(out: &std::path::Path, client: &tokio_postgres::Client) {
    let events = read_jsonl(out, "public.t");
    let mut positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    let n = positions.len();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), n, "an event was written twice");
    assert_eq!(replay(&events, "id"), table_as_json(client, "t", "id").await, "replaying the output must give the table");
}

/// A tmpfs of `mb` MiB at `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let _ = Command::new("umount").arg(dir).status();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(dir).status().unwrap().success();
        assert!(ok, "mounting a {mb} MiB tmpfs at {} failed: this test needs root (CAP_SYS_ADMIN)", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn grow(&self, mb: u32) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={mb}m")]).arg(&self.0).status().unwrap().success();
        assert!(ok, "growing the tmpfs at {} failed", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_riffle_with_the_fix_and_loses_nothing() {
    let db = "it_disk_full";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, repeat('n', 80) FROM generate_series(1, 200000) g",
        )
        .await
        .unwrap();
    let url = db_url(db);
    let root = temp_dir("disk-full");
    let disk = Tmpfs::mount(&root.join("disk"), 20);
    let out = disk.0.join("out");
    let state = root.join("state");
    let args: Vec<String> =
        ["replicate", "--source", &url, "--tables", "t", "--sink", out.to_str().unwrap(), "--state", state.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .chain(["--commit-interval", "100ms", "--max-file-rows", "2000", "--until", "now"].map(String::from))
            .collect();
    // Too little room for one file of the default size (128 MiB): refused up front.
    let refused = riffle(&args);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("free some space on that disk"), "{}", stderr(&refused));
    // Files small enough to start: the disk fills up while riffle writes.
    let mut args = args;
    args.extend(["--max-file-bytes".to_string(), "400000".to_string()]);
    let full = riffle(&args);
    assert_eq!(full.status.code(), Some(1), "a full disk is a definite error: {}", stderr(&full));
    let err = stderr(&full);
    assert!(err.contains("No space left on device") && err.contains("free some space"), "the error says what and the fix: {err}");
    assert!(!err.contains("retrying"), "a full disk is not retried: {err}");
    // Room again: the next run finishes the copy exactly.
    disk.grow(200);
    client.batch_execute("UPDATE t SET note = 'changed' WHERE id % 1000 = 0; DELETE FROM t WHERE id % 1000 = 1").await.unwrap();
    riffle_ok(&args);
    assert_exact_copy(&out, &client).await;
}

/// riffle under strace, its `fsync` calls on `path` failing with EIO (as a
/// failing disk or a lost network block device reports them).
fn riffle_with_eio(args: &[String], path: &std::path::Path) -> std::process::Output {
    let strace = Command::new("strace").arg("-V").output();
    assert!(strace.is_ok_and(|o| o.status.success()), "this test needs strace (scripts/servers.sh start installs it)");
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:error=EIO", "-P"])
        .arg(path)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_riffle"))
        .args(args)
        .env_remove("PGPASSWORD")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

/// `fsync` failing with EIO, once on the state's file (the sinks committed,
/// the position not saved) and once on a table directory (the manifest
/// saved, the moves not made durable): each stops riffle with a definite
/// error that names the file and the fix, and the next run finishes with
/// nothing lost and nothing written twice. (After an EIO the kernel may have
/// dropped the pages it could not write, so retrying the same write would be
/// a lie: riffle stops instead.)
#[tokio::test(flavor = "multi_thread")]
async fn fsync_failing_with_eio_stops_riffle_with_the_fix_and_loses_nothing() {
    let db = "it_disk_eio";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'n' FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    let url = db_url(db);
    let root = temp_dir("disk-eio");
    let (out, state) = (root.join("out"), root.join("state"));
    let args: Vec<String> = ["replicate", "--source", &url, "--tables", "t", "--sink", out.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--state", state.to_str().unwrap(), "--name", "it_disk_eio", "--until", "now"].map(String::from))
        .collect();
    riffle_ok(&args);
    // The file whose fsync fails, and the name the error gives it.
    let failing = [(state.join("it_disk_eio.json.tmp"), state.join("it_disk_eio.json")), (out.join("public.t"), out.join("public.t"))];
    for (round, (path, named)) in failing.iter().enumerate() {
        let round = round as i64;
        client
            .batch_execute(&format!(
                "UPDATE t SET note = 'r{round}' WHERE id % 7 = {round}; DELETE FROM t WHERE id % 11 = {round}; \
                 INSERT INTO t SELECT g, 'new' FROM generate_series(10000 + {round} * 100, 10000 + {round} * 100 + 99) g"
            ))
            .await
            .unwrap();
        let failed = riffle_with_eio(&args, path);
        let err = String::from_utf8_lossy(&failed.stderr).into_owned();
        assert_eq!(failed.status.code(), Some(1), "an fsync EIO is a definite error: {err}");
        assert!(
            err.contains(&named.display().to_string()) && err.contains("Input/output error") && err.contains("the disk failed to write"),
            "the error names the file, says what and the fix: {err}"
        );
        assert!(!err.contains("retrying"), "an EIO is not retried: {err}");
    }
    riffle_ok(&args);
    assert_exact_copy(&out, &client).await;
}
