//! One writer per pipeline on this machine: a lock on a file, held for as
//! long as the process lives (the kernel releases it when the process
//! dies, `kill -9` included, so a standby takes over at once). The file
//! says who holds it, for the message a second process gets.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// When it took the lease, ms since the epoch.
    pub since_ms: i64,
    /// What it runs: `replicate`, `sync`.
    pub command: String,
}

impl Holder {
    /// This process; `command` is its subcommand (`replicate`, `sync`).
    pub fn me() -> Holder {
        let command = std::env::args().nth(1).unwrap_or_else(|| "riffle".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown host".into());
        let since_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Holder { host, pid: std::process::id(), since_ms, command }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64) - self.since_ms;
        write!(f, "riffle {} (pid {} on {}, for {} s)", self.command, self.pid, self.host, secs.max(0) / 1000)
    }
}

/// A held lease; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct LocalLease {
    _file: File,
    pub path: PathBuf,
}

impl LocalLease {
    /// Takes the lease at `path` for `me`, or says who holds it.
    pub fn try_acquire(path: &Path, me: &Holder) -> std::io::Result<Result<LocalLease, Option<Holder>>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Ok(Err(serde_json::from_str(&text).ok()));
            }
            Err(e) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&serde_json::to_vec(me).expect("a holder serializes"))?;
        file.sync_all()?;
        Ok(Ok(LocalLease { _file: file, path: path.to_path_buf() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_and_told_who_holds_it_until_the_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("riffle-lease-test-{}", std::process::id()));
        let path = dir.join("p.lock");
        let me = Holder::me();
        let held = LocalLease::try_acquire(&path, &me).unwrap().unwrap();
        // flock locks belong to the open file: a second open in this
        // process is refused like another process would be.
        let refused = LocalLease::try_acquire(&path, &Holder::me()).unwrap().unwrap_err();
        assert_eq!(refused, Some(me));
        drop(held);
        assert!(LocalLease::try_acquire(&path, &Holder::me()).unwrap().is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
