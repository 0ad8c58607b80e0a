//! One writer per pipeline when what it owns lives in a bucket: a lease
//! object (`<name>.lease` beside a state, `_riffle/<pipeline>.lease` in a
//! sink's prefix), taken and renewed only by conditional writes, so two
//! processes can never both believe they hold it.
//!
//! - **Take**: create the object if there is none (`If-None-Match: *`), or
//!   replace the version seen (`If-Match`) when that version is released, or
//!   its holder is known dead, or it was left unchanged for its whole time
//!   to live *as this process's own clock measures it* (as Kubernetes'
//!   leader election does: the machines' clocks need not agree).
//! - **Renew** every third of the time to live, each write with new content
//!   (a renewal count), so an ETag never repeats.
//! - **Fence**: before each commit the holder calls [`LeaseHandle::confirm`],
//!   which renews first when the last renewal is older than half the time
//!   to live (a process frozen by a pause, a swap storm or SIGSTOP finds out
//!   it lost the lease before it writes, and stops).
//! - **Release** on a clean end: the object says `released`, and the next
//!   taker starts at once.
//!
//! A holder of this machine that died (same boot and pid namespace, pid
//! gone or reused) is known dead at once; one elsewhere after the time to
//! live. What is left: a process frozen between its confirm and its write
//! for longer than the time to live could still write once; the confirm is
//! the last step before the commit's own writes to keep that window small.

use super::store::Target;
use object_store::UpdateVersion;
use riffle_core::lease::Holder;
use riffle_core::{block_on, SinkError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

/// How long a lease lives without a renewal.
pub const TTL: Duration = Duration::from_secs(15);

/// What the lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    holder: Holder,
    /// Renewals so far: every write differs, so ETags never repeat.
    renewals: u64,
    ttl_ms: u64,
    #[serde(default)]
    released: bool,
}

/// What to do when another process holds the lease.
pub enum Wait {
    /// Refuse once the holder is seen alive (it renewed); take over a lease
    /// left to expire.
    Refuse,
    /// Wait for the holder to end, until `stop` turns true.
    Standby(watch::Receiver<bool>),
}

/// Why the lease was not taken.
#[derive(Debug)]
pub enum NotTaken {
    /// Held by a live process: who, if the lease says.
    Held(Option<Holder>),
    /// `stop` turned true while waiting.
    Stopped,
    Failed(SinkError),
}

struct Mine {
    body: Body,
    version: UpdateVersion,
    renewed: Instant,
}

struct Shared {
    target: Target,
    rel: String,
    ttl: Duration,
    mine: Mutex<Mine>,
    /// Set once the lease is lost; every confirm fails from then on.
    lost: std::sync::Mutex<Option<String>>,
}

/// A held lease; renewed in the background until dropped or released.
pub struct BucketLease {
    shared: Arc<Shared>,
    renewer: tokio::task::JoinHandle<()>,
}

/// What the committer holds to confirm the lease before each commit.
#[derive(Clone)]
pub struct LeaseHandle(Arc<Shared>);

impl Shared {
    async fn read(&self) -> Result<Option<(Option<Body>, UpdateVersion)>, SinkError> {
        Ok(self.target.get_versioned(&self.rel).await?.map(|(bytes, v)| (serde_json::from_slice(&bytes).ok(), v)))
    }

    /// Writes `body` if the object is still at `seen` (or absent, for
    /// `None`): the new version, or `None` when another write came first.
    async fn write(&self, body: &Body, seen: Option<UpdateVersion>) -> Result<Option<UpdateVersion>, SinkError> {
        self.target.put_if(&self.rel, serde_json::to_vec(body).expect("a lease serializes"), seen).await
    }

    fn lose(&self, why: String) -> SinkError {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        let why = lost.get_or_insert(why).clone();
        SinkError::definite(why)
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fails when the lease is known lost.
    fn check(&self) -> Result<(), SinkError> {
        match self.lost() {
            Some(why) => Err(SinkError::definite(why)),
            None => Ok(()),
        }
    }

    /// One renewal: a new body over the version this process wrote last.
    async fn renew(&self) -> Result<(), SinkError> {
        self.check()?;
        let mut mine = self.mine.lock().await;
        let mut next = mine.body.clone();
        next.renewals += 1;
        // A renewal must end well within the time to live: a request stuck
        // on a silently dropped connection is given up (and its connection
        // with it) after a third of it, and tried again on a new one.
        let attempt = tokio::time::timeout(self.ttl / 3, self.write(&next, Some(mine.version.clone())));
        let written = attempt.await.unwrap_or_else(|_| {
            Err(SinkError::transient(format!("{}: renewing the lease {}: no answer in {:?}", self.target.shown, self.rel, self.ttl / 3)))
        });
        match written {
            Ok(Some(v)) => {
                *mine = Mine { body: next, version: v, renewed: Instant::now() };
                Ok(())
            }
            Ok(None) => {
                let by = match self.read().await {
                    Ok(Some((Some(b), _))) => b.holder.to_string(),
                    _ => "another riffle".to_string(),
                };
                Err(self.lose(format!(
                    "{}: lost the lease {} to {by} (this process could not renew it in time); stopping so that two processes never \
                     commit: the other one carries on from the saved state",
                    self.target.shown, self.rel
                )))
            }
            Err(e) => {
                if mine.renewed.elapsed() >= self.ttl {
                    return Err(self.lose(format!(
                        "{}: could not renew the lease {} for {} s ({e}): another process may have taken over; stopping",
                        self.target.shown,
                        self.rel,
                        self.ttl.as_secs()
                    )));
                }
                Err(e)
            }
        }
    }
}

impl LeaseHandle {
    /// Fails when the renewals found the lease lost; no request.
    pub fn check(&self) -> Result<(), SinkError> {
        self.0.check()
    }

    /// Fails when the lease is lost; renews first when the last renewal is
    /// older than half the time to live. Call it right before committing.
    pub fn confirm(&self) -> Result<(), SinkError> {
        self.0.check()?;
        let stale = block_on(async { self.0.mine.lock().await.renewed.elapsed() }) >= self.0.ttl / 2;
        if stale {
            block_on(self.0.renew())?;
        }
        Ok(())
    }
}

impl BucketLease {
    /// Takes the lease at `rel` under `target`'s root for `me`; see the
    /// module's documentation. Needs a tokio runtime (renewals run on it).
    pub async fn acquire(target: &Target, rel: &str, me: Holder, ttl: Duration, mut wait: Wait) -> Result<BucketLease, NotTaken> {
        let body = Body { holder: me, renewals: 0, ttl_ms: ttl.as_millis() as u64, released: false };
        let shared = Shared {
            target: target.clone(),
            rel: rel.to_string(),
            ttl,
            mine: Mutex::new(Mine { body: body.clone(), version: UpdateVersion { e_tag: None, version: None }, renewed: Instant::now() }),
            lost: std::sync::Mutex::new(None),
        };
        // The version seen and when this process first saw it.
        let mut seen: Option<(UpdateVersion, Instant)> = None;
        let mut told = false;
        loop {
            let current = shared.read().await.map_err(NotTaken::Failed)?;
            let taken = match &current {
                None => shared.write(&body, None).await.map_err(NotTaken::Failed)?,
                Some((found, version)) => {
                    let unchanged_for = match &seen {
                        Some((v, at)) if v == version => at.elapsed(),
                        _ => Duration::ZERO,
                    };
                    let ttl_then = found.as_ref().map_or(ttl, |b| Duration::from_millis(b.ttl_ms).max(Duration::from_millis(1)));
                    let free = match found {
                        Some(b) => b.released || b.holder.token == body.holder.token || b.holder.is_dead_here() || b.holder.known_dead(),
                        None => false,
                    };
                    if free || unchanged_for >= ttl_then {
                        if let Some(b) = found.as_ref().filter(|b| !b.released && !free) {
                            tracing::info!(lease = %shared.rel, holder = %b.holder, "the lease was not renewed for its time to live: taking it over");
                            b.holder.proved_dead();
                        }
                        shared.write(&body, Some(version.clone())).await.map_err(NotTaken::Failed)?
                    } else {
                        if seen.as_ref().is_some_and(|(v, _)| v != version) && matches!(wait, Wait::Refuse) {
                            // It renewed: a live holder.
                            return Err(NotTaken::Held(found.as_ref().map(|b| b.holder.clone())));
                        }
                        if seen.as_ref().is_none_or(|(v, _)| v != version) {
                            seen = Some((version.clone(), Instant::now()));
                        }
                        if !told {
                            let holder = found.as_ref().map_or_else(|| "another riffle".to_string(), |b| b.holder.to_string());
                            tracing::info!(lease = %shared.rel, holder, "the lease is held: waiting until its holder renews it (alive) or lets it expire");
                            told = true;
                        }
                        let pause = tokio::time::sleep(Duration::from_millis(500).min(ttl / 4));
                        match &mut wait {
                            Wait::Refuse => pause.await,
                            Wait::Standby(stop) => tokio::select! {
                                _ = pause => {}
                                _ = stop.wait_for(|s| *s) => return Err(NotTaken::Stopped),
                            },
                        }
                        continue;
                    }
                }
            };
            if let Some(version) = taken {
                *shared.mine.lock().await = Mine { body: body.clone(), version, renewed: Instant::now() };
                let shared = Arc::new(shared);
                let renewer = tokio::spawn(renew_until_lost(shared.clone()));
                return Ok(BucketLease { shared, renewer });
            }
            // Another process wrote first: look again.
            seen = None;
        }
    }

    pub fn handle(&self) -> LeaseHandle {
        LeaseHandle(self.shared.clone())
    }

    /// Lets the lease go: the next taker starts at once.
    pub async fn release(self) {
        self.renewer.abort();
        if self.shared.lost().is_some() {
            return;
        }
        let mine = self.shared.mine.lock().await;
        let mut body = mine.body.clone();
        body.renewals += 1;
        body.released = true;
        if let Err(e) = self.shared.write(&body, Some(mine.version.clone())).await {
            tracing::warn!(lease = %self.shared.rel, error = %e, "could not release the lease; the next run waits for it to expire");
        }
    }
}

impl Drop for BucketLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew_until_lost(shared: Arc<Shared>) {
    // After a failed renewal the next comes sooner, so one stuck request
    // does not use up the time to live.
    let mut pause = shared.ttl / 3;
    loop {
        tokio::time::sleep(pause).await;
        match shared.renew().await {
            Ok(()) => pause = shared.ttl / 3,
            Err(e) if shared.lost().is_some() => {
                tracing::error!(error = %e, "lease lost");
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %shared.rel, error = %e, "could not renew the lease; trying again");
                pause = shared.ttl / 15;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against object_store's in-memory store (a test double of a bucket,
    //! with the same conditional writes); the S3 server test is
    //! `in_a_bucket_one_writer_…` in tests/it/objects.rs.
    use super::*;
    use object_store::path::Path as ObjPath;

    fn target() -> Target {
        Target {
            store: Arc::new(object_store::memory::InMemory::new()),
            root: ObjPath::from("state"),
            shown: "memory://".into(),
            local: None,
        }
    }

    fn other(pid: u32) -> Holder {
        Holder { host: "elsewhere".into(), pid, token: format!("other-{pid}"), boot: None, pidns: None, start: None, ..Holder::me() }
    }

    const T: Duration = Duration::from_millis(600);

    #[tokio::test(flavor = "multi_thread")]
    async fn a_live_holder_is_refused_an_expired_one_taken_over_and_a_frozen_one_fenced() {
        let target = target();
        let first = BucketLease::acquire(&target, "p.lease", other(1), T, Wait::Refuse).await.unwrap();
        // Renewed every T/3: the second sees it alive and is refused.
        match BucketLease::acquire(&target, "p.lease", other(2), T, Wait::Refuse).await {
            Err(NotTaken::Held(Some(h))) => assert_eq!(h.pid, 1),
            other => panic!("expected refused, got {:?}", other.map(|_| ())),
        }
        // The holder freezes (no renewals): after T the lease is taken over.
        first.renewer.abort();
        let t0 = Instant::now();
        let second = BucketLease::acquire(&target, "p.lease", other(3), T, Wait::Refuse).await.unwrap();
        assert!(t0.elapsed() >= T, "taken over only after the time to live");
        // The frozen holder wakes up: its confirm renews, fails, and says so.
        tokio::time::sleep(T / 2).await;
        let err = tokio::task::spawn_blocking(move || first.handle().confirm()).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("lost the lease") && err.to_string().contains("pid 3"), "{err}");
        // A released lease is taken at once.
        second.release().await;
        let t0 = Instant::now();
        let third = BucketLease::acquire(&target, "p.lease", other(4), T, Wait::Refuse).await.unwrap();
        assert!(t0.elapsed() < T / 2);
        tokio::task::spawn_blocking(move || third.handle().confirm()).await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_holder_of_this_machine_is_taken_over_at_once() {
        let target = target();
        let mut dead = Holder::me();
        dead.token = "dead".into();
        dead.start = Some(u64::MAX); // not this pid's start time: the pid was reused
        let shared = BucketLease::acquire(&target, "p.lease", dead, T * 100, Wait::Refuse).await.unwrap();
        shared.renewer.abort();
        let t0 = Instant::now();
        let _mine = BucketLease::acquire(&target, "p.lease", Holder::me(), T * 100, Wait::Refuse).await.unwrap();
        assert!(t0.elapsed() < T);
    }
}
