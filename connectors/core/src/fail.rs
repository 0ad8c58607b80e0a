//! Fail points: places where the test suite makes riffle die on purpose, to
//! hit one crash window at a time (a file written but its manifest not; the
//! manifest written but the moves not done; the sinks committed but the
//! state not saved; the state saved but the source not told; the middle of
//! an upload). They exist only in a build with the `failpoints` feature,
//! which `scripts/test.sh` turns on; any other build has none.
//!
//! `RIFFLE_FAIL_AT=NAME[@N]` aborts the process the N-th time (default: the
//! first) the point NAME is reached: SIGABRT, no destructor run and nothing
//! flushed, as `kill -9` would leave it.
//!
//! `RIFFLE_FREEZE_AT=NAME` stops the process (SIGSTOP, as a long pause would
//! freeze it) the first time NAME is reached once the file named by
//! `RIFFLE_FREEZE_WHEN` exists; the test lets it go on with SIGCONT.

/// The fail point `name` (see the module's documentation).
#[cfg(feature = "failpoints")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("RIFFLE_FAIL_AT").ok()?;
        Some(match v.split_once('@') {
            Some((n, c)) => (n.to_string(), c.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((at, count)) = spec {
        if at == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("riffle: fail point {name} reached, aborting");
            std::process::abort();
        }
    }
    freeze(name);
}

#[cfg(feature = "failpoints")]
fn freeze(name: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.load(Ordering::SeqCst) || std::env::var("RIFFLE_FREEZE_AT").ok().as_deref() != Some(name) {
        return;
    }
    if !std::env::var_os("RIFFLE_FREEZE_WHEN").is_some_and(|p| std::path::Path::new(&p).exists()) || DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    eprintln!("riffle: fail point {name} reached, freezing");
    let _ = std::process::Command::new("kill").args(["-STOP", &std::process::id().to_string()]).status();
}

/// The fail point `name`: nothing, in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}
