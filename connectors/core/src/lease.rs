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
    /// Names this process among all processes ever (random, one per
    /// process, the same in every lease it holds).
    #[serde(default)]
    pub token: String,
    /// The kernel's boot id, pid namespace and the process's start time:
    /// with the host and pid, enough to tell that a holder on this machine
    /// is dead (its pid gone or reused) without waiting for its lease to
    /// expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

/// This process's token: random, drawn once.
fn my_token() -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{:016x}", rand::random::<u64>())).clone()
}

/// Tokens of holders this process proved dead (a lease left unrenewed for
/// its whole time to live): every other lease they hold is dead too.
static DEAD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The start time of process `pid` (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`), `None` when there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
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
        let pid = std::process::id();
        Holder {
            host,
            pid,
            since_ms,
            command,
            token: my_token(),
            boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|b| b.trim().to_string()),
            pidns: std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.display().to_string()),
            start: process_start(pid),
        }
    }

    /// Is this holder a process of this machine (same boot, same pid
    /// namespace) that is no longer running? Never true for a holder
    /// elsewhere, or one that did not say enough to tell.
    pub fn is_dead_here(&self) -> bool {
        let me = Holder::me();
        if self.token == me.token {
            return false;
        }
        let here = self.host == me.host && self.boot.is_some() && self.boot == me.boot && self.pidns.is_some() && self.pidns == me.pidns;
        here && self.start.is_some() && process_start(self.pid) != self.start
    }

    /// Was this holder proved dead by this process (see [`Holder::proved_dead`])?
    pub fn known_dead(&self) -> bool {
        !self.token.is_empty() && DEAD.lock().unwrap_or_else(|e| e.into_inner()).contains(&self.token)
    }

    /// Records that this holder is dead: its other leases are taken over at once.
    pub fn proved_dead(&self) {
        if !self.token.is_empty() {
            DEAD.lock().unwrap_or_else(|e| e.into_inner()).push(self.token.clone());
        }
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
