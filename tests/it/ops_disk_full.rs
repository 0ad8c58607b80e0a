//! A full disk under a file sink: riffle stops with a definite error that
//! says so (exit 1, the fix in the message), commits nothing it did not
//! write whole, and once there is room again the next run finishes with
//! nothing lost and nothing written twice. The disk is a small tmpfs
//! (mounting it needs root, as the test servers' machine has).

use crate::support::*;
use std::process::Command;

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
    let events = read_jsonl(&out, "public.t");
    let mut positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    let n = positions.len();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), n, "an event was written twice");
    assert_eq!(replay(&events, "id"), table_as_json(&client, "t", "id").await, "replaying the output must give the table");
}
