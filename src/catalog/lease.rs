//! Repository leases: one writer per cluster for backups, deletes and expiry (G6).
//!
//! A lease is a small sealed object under `clusters/<name>/locks/<lock>/<generation>`, holding
//! who took it (host, pid, command) and until when. Object stores offer no compare-and-swap, but
//! they do offer create-only puts, so leases are generational: the holder is whoever wrote the
//! highest generation that has not expired. Taking a free lock, or taking over an expired one,
//! means creating the next generation with a create-only put, which exactly one contender wins.
//! The holder renews its own generation while it works and learns that it lost the lease (it
//! stalled past the expiry and someone took over) when a higher generation appears.
//!
//! A lease held by a process that died on this host is taken over at once; one held by a process
//! on another host is taken over only after it expires.
//!
//! A contender that has to wait for a live holder says so ([`LeaseWait`]) to the observer of the
//! task it runs in ([`observing_waits`]; the operations layer turns it into events), or, with no
//! observer, in a log line of its own. The observer is the task's rather than a parameter so
//! that what takes a lease (backup, dump, delete) need not carry it through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::keys::master::random_array;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, PutMode, StorageError};

/// How long a lease lasts without renewal. Long enough that a slow storage round trip never
/// loses it, short enough that a crashed holder on another host blocks others only briefly.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// Generations are zero-padded so that listing order is generation order.
const GENERATION_DIGITS: usize = 20;

/// What a lease object says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseHolder {
    /// Random per acquisition, so a holder recognises its own lease.
    pub token: String,
    pub host: String,
    pub pid: u32,
    /// What the holder is doing, e.g. "backup" or "delete 20261122T021500Z-full".
    pub purpose: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, since {}, expires {} unless renewed)",
            self.purpose,
            self.pid,
            self.host,
            self.acquired_at.format("%Y-%m-%d %H:%M:%SZ"),
            self.expires_at.format("%H:%M:%SZ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "lock {lock} is held by {holder}; gave up after waiting {waited:?}. Wait for it to finish, \
         or raise the wait time"
    )]
    Busy { lock: String, holder: Box<LeaseHolder>, waited: Duration },

    #[error("lock {lock}: lease object {key} is damaged ({detail}); delete it if no lifeboat is running")]
    Damaged { lock: String, key: ObjectKey, detail: String },

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl From<StorageError> for LeaseError {
    fn from(error: StorageError) -> Self {
        LeaseError::Repository(error.into())
    }
}

/// A contender's wait for a live holder: when it began, and how it ended.
#[derive(Debug, Clone)]
pub enum LeaseWait {
    Began {
        lock: String,
        holder: LeaseHolder,
    },
    /// `acquired` false: the contender gave up after `waited` ([`LeaseError::Busy`]).
    Ended {
        lock: String,
        holder: LeaseHolder,
        waited: Duration,
        acquired: bool,
    },
}

impl LeaseWait {
    /// The lock's own name, the last part of its prefix (`backup`, `dump`).
    pub fn lock_name(&self) -> &str {
        let (LeaseWait::Began { lock, .. } | LeaseWait::Ended { lock, .. }) = self;
        lock.rsplit('/').next().unwrap_or(lock)
    }
}

/// Hears of every [`LeaseWait`] of the task it observes.
pub type WaitObserver = Arc<dyn Fn(&LeaseWait) + Send + Sync>;

tokio::task_local! {
    static WAIT_OBSERVER: WaitObserver;
}

/// Runs `work` with `observer` hearing of the lease waits of the leases it takes (in its own
/// task: a lease taken in a task `work` spawns is not observed).
pub async fn observing_waits<F: Future>(observer: WaitObserver, work: F) -> F::Output {
    WAIT_OBSERVER.scope(observer, work).await
}

/// Tells the task's observer of `wait`; without one, logs the start of the wait.
fn tell(wait: LeaseWait) {
    if WAIT_OBSERVER.try_with(|observer| observer(&wait)).is_ok() {
        return;
    }
    if let LeaseWait::Began { lock, holder } = &wait {
        tracing::info!(%lock, %holder, "waiting for the lock");
    }
}

/// A held lease. Renewed in the background until [`Lease::release`]; dropping it without
/// releasing stops the renewal, and the lease then expires by itself.
pub struct Lease {
    lock: String,
    key: ObjectKey,
    lost: watch::Receiver<bool>,
    renewal: JoinHandle<()>,
    repository: Arc<Repository>,
}

impl Lease {
    /// Takes the lock `lock_prefix` (e.g. `clusters/main/locks/backup`), waiting up to `wait`
    /// for a live holder to release it.
    pub async fn acquire(
        repository: Arc<Repository>,
        lock_prefix: &ObjectKey,
        purpose: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LeaseError> {
        let lock = lock_prefix.to_string();
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        // The live holder this contender waits for, once it had to.
        let mut waiting_for: Option<LeaseHolder> = None;
        let ended = |holder: Option<LeaseHolder>, acquired: bool| {
            if let Some(holder) = holder {
                tell(LeaseWait::Ended { lock: lock.clone(), holder, waited: started.elapsed(), acquired });
            }
        };
        loop {
            let (generation, current) = current_holder(&repository, lock_prefix).await?;
            let free = match &current {
                None => true,
                Some(holder) => holder_is_gone(holder),
            };
            if free {
                let holder = new_holder(purpose, ttl);
                let key = generation_key(lock_prefix, generation + 1);
                let body = serde_json::to_vec(&holder).expect("a lease serialises");
                match repository.put_bytes(&key, body, PutMode::CreateOnly).await {
                    Ok(_) => {
                        if let Some(previous) = current {
                            tracing::warn!(%lock, %previous, "took over a lease whose holder is gone");
                        }
                        remove_older_generations(&repository, lock_prefix, generation + 1).await;
                        ended(waiting_for, true);
                        return Ok(Lease::start(repository, lock, key, holder, ttl));
                    }
                    // Another contender created that generation first: look again.
                    Err(RepositoryError::Storage(StorageError::AlreadyExists { .. })) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            let holder = current.expect("not free, so held");
            let waited = started.elapsed();
            if waited >= wait {
                ended(waiting_for, false);
                return Err(LeaseError::Busy { lock, holder: Box::new(holder), waited });
            }
            if waiting_for.is_none() {
                tell(LeaseWait::Began { lock: lock.clone(), holder: holder.clone() });
            }
            waiting_for = Some(holder);
            tokio::time::sleep(pause.min(wait - waited)).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn start(repository: Arc<Repository>, lock: String, key: ObjectKey, holder: LeaseHolder, ttl: Duration) -> Lease {
        let (lost_tx, lost) = watch::channel(false);
        let renewal = tokio::spawn(renew(repository.clone(), lock.clone(), key.clone(), holder, ttl, lost_tx));
        Lease { lock, key, lost, renewal, repository }
    }

    /// True once the lease was found taken over (this process stalled past its expiry). Work
    /// that must not run concurrently with another writer should stop when this turns true.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops renewing and removes the lease so the next writer need not wait for the expiry.
    pub async fn release(self) -> Result<(), LeaseError> {
        self.renewal.abort();
        if self.is_lost() {
            return Ok(());
        }
        self.repository.store().delete(&self.key).await?;
        tracing::debug!(lock = %self.lock, "lease released");
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Rewrites the lease with a later expiry every third of its lifetime, until aborted or lost.
async fn renew(
    repository: Arc<Repository>,
    lock: String,
    key: ObjectKey,
    mut holder: LeaseHolder,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let prefix = key.as_str().rsplit_once('/').map(|(prefix, _)| prefix.to_owned()).expect("a generation key");
    let prefix = ObjectKey::new(prefix).expect("the lock prefix is a valid key");
    let mut interval = tokio::time::interval(ttl / 3);
    interval.tick().await;
    loop {
        interval.tick().await;
        match current_holder(&repository, &prefix).await {
            Ok((_, Some(current))) if current.token == holder.token => {}
            Ok(_) => {
                tracing::error!(%lock, "lease lost: another process took it over after it expired");
                let _ = lost.send(true);
                return;
            }
            Err(error) => {
                tracing::warn!(%lock, %error, "could not check the lease; will retry");
                continue;
            }
        }
        holder.expires_at = Utc::now() + ttl;
        let body = serde_json::to_vec(&holder).expect("a lease serialises");
        if let Err(error) = repository.put_bytes(&key, body, PutMode::Overwrite).await {
            tracing::warn!(%lock, %error, "could not renew the lease; will retry");
        }
    }
}

/// The highest generation under `prefix` and its holder (`None` when there is no lease).
async fn current_holder(repository: &Repository, prefix: &ObjectKey) -> Result<(u64, Option<LeaseHolder>), LeaseError> {
    let listing = repository.store().list(&format!("{prefix}/")).await?;
    let Some((generation, key)) = listing
        .into_iter()
        .filter_map(|meta| {
            let generation = meta.key.as_str().rsplit('/').next()?.parse::<u64>().ok()?;
            Some((generation, meta.key))
        })
        .max_by_key(|(generation, _)| *generation)
    else {
        return Ok((0, None));
    };
    let damaged = |detail: String| LeaseError::Damaged { lock: prefix.to_string(), key: key.clone(), detail };
    let bytes = match repository.get_bytes(&key).await {
        Ok(bytes) => bytes,
        // Released between the listing and the read: the lock is free at this generation.
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => return Ok((generation, None)),
        Err(RepositoryError::Object(error)) => return Err(damaged(error.to_string())),
        Err(error) => return Err(error.into()),
    };
    let holder = serde_json::from_slice(&bytes).map_err(|error| damaged(error.to_string()))?;
    Ok((generation, Some(holder)))
}

fn generation_key(prefix: &ObjectKey, generation: u64) -> ObjectKey {
    prefix.join(&format!("{generation:0width$}", width = GENERATION_DIGITS)).expect("digits make a valid key")
}

/// Stale generations are only clutter (the highest one decides), so failing to delete is fine.
async fn remove_older_generations(repository: &Repository, prefix: &ObjectKey, current: u64) {
    let Ok(listing) = repository.store().list(&format!("{prefix}/")).await else { return };
    for meta in listing {
        let older = meta.key.as_str().rsplit('/').next().and_then(|last| last.parse::<u64>().ok()) < Some(current);
        if older {
            let _ = repository.store().delete(&meta.key).await;
        }
    }
}

fn new_holder(purpose: &str, ttl: Duration) -> LeaseHolder {
    let now = Utc::now();
    LeaseHolder {
        token: hex::encode(random_array::<16>()),
        host: hostname(),
        pid: std::process::id(),
        purpose: purpose.to_owned(),
        acquired_at: now,
        expires_at: now + ttl,
    }
}

/// Whether the holder can no longer be working: its lease expired, or it was a process on this
/// host that no longer exists.
fn holder_is_gone(holder: &LeaseHolder) -> bool {
    if holder.expires_at < Utc::now() {
        return true;
    }
    holder.host == hostname() && !crate::util::process_alive(holder.pid)
}

pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "unknown-host".to_owned();
    }
    let end = buffer.iter().position(|&byte| byte == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}
