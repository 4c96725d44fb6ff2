//! A store that fails on purpose, for the fault trials (`scripts/trials`, `tests/trials.rs`): it
//! wraps any [`ObjectStore`] and, at configured rates drawn from a seed, makes requests fail the
//! ways real storage fails, so that the promises of DESIGN.md (G1–G8) are tested under faults
//! rather than assumed.
//!
//! Compiled only with the cargo feature `fault-injection`, which release builds never enable; a
//! binary built with it wraps its store only when `LIFEBOAT_FAULTS` is set (see
//! [`FaultPlan::parse`] for the syntax), and says so on stderr.
//!
//! The faults, each drawn independently per request:
//! - `retryable`: the request fails before reaching the store, as throttling (S3 SlowDown) or a
//!   503 does; [`StorageError::is_retryable`] says yes.
//! - `permanent`: the request fails before reaching the store, as a 403 or a broken disk does.
//! - `cut`: the body is cut short by a connection closed mid-stream: a put's body, or a get's
//!   stream, ends with an I/O error after a random share of its bytes. A cut put stores nothing.
//! - `lost`: a put or delete reaches the store and succeeds there, but the answer is lost and the
//!   caller sees a retryable failure (the request that timed out after the server committed).
//! - `delay`: the request waits up to `delay_ms` first.
//!
//! `only_keys=<text>` and `only_operation=<put|get|get_range|head|list|delete|...>` aim the faults
//! at the requests whose key (or listed prefix) contains the text, or of that operation: a test
//! can fail exactly the step it is about (every journal append, say) and nothing before it.
//!
//! Every injected fault is appended as one line (`<fault> <operation> <key>`) to the `report`
//! file when one is named, so the trial harness can count them even across processes it kills.

use std::fmt;
use std::io::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, ReadBuf};

use super::{ByteReader, ObjectKey, ObjectMeta, ObjectStore, PutMode, StorageError, Swept};

/// The environment variable a `fault-injection` build reads its [`FaultPlan`] from.
pub const FAULTS_VARIABLE: &str = "LIFEBOAT_FAULTS";

/// What to inject, and how often (each rate a probability per request, 0 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    pub retryable: f64,
    pub permanent: f64,
    pub cut: f64,
    pub lost: f64,
    pub delay: f64,
    pub delay_max: Duration,
    /// Where each injected fault is recorded, one line each.
    pub report: Option<PathBuf>,
    /// Only requests whose key (or listed prefix) contains this text draw faults.
    pub only_keys: Option<String>,
    /// Only requests of this operation draw faults.
    pub only_operation: Option<String>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 0,
            retryable: 0.0,
            permanent: 0.0,
            cut: 0.0,
            lost: 0.0,
            delay: 0.0,
            delay_max: Duration::from_millis(50),
            report: None,
            only_keys: None,
            only_operation: None,
        }
    }
}

impl FaultPlan {
    /// Parses `seed=7,retryable=0.05,permanent=0.02,cut=0.05,lost=0.02,delay=0.1,delay_ms=40,
    /// report=/tmp/faults.log`: comma-separated `name=value` pairs, any subset, in any order.
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut plan = FaultPlan::default();
        for pair in spec.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (name, value) =
                pair.split_once('=').ok_or_else(|| format!("{FAULTS_VARIABLE}: {pair:?} is not name=value"))?;
            let rate = || -> Result<f64, String> {
                value.parse::<f64>().ok().filter(|rate| (0.0..=1.0).contains(rate)).ok_or_else(|| {
                    format!("{FAULTS_VARIABLE}: {name} must be a probability from 0 to 1, not {value:?}")
                })
            };
            let whole =
                || value.parse::<u64>().map_err(|_| format!("{FAULTS_VARIABLE}: {name} must be a whole number"));
            match name {
                "seed" => plan.seed = whole()?,
                "retryable" => plan.retryable = rate()?,
                "permanent" => plan.permanent = rate()?,
                "cut" => plan.cut = rate()?,
                "lost" => plan.lost = rate()?,
                "delay" => plan.delay = rate()?,
                "delay_ms" => plan.delay_max = Duration::from_millis(whole()?),
                "report" => plan.report = Some(PathBuf::from(value)),
                "only_keys" => plan.only_keys = Some(value.to_owned()),
                "only_operation" => plan.only_operation = Some(value.to_owned()),
                other => {
                    return Err(format!(
                        "{FAULTS_VARIABLE}: unknown setting {other:?} (known: seed, retryable, permanent, cut, lost, \
                         delay, delay_ms, report, only_keys, only_operation)"
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// The kinds of fault, as named in the report file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Retryable,
    Permanent,
    Cut,
    Lost,
    Delay,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Retryable => "retryable",
            Fault::Permanent => "permanent",
            Fault::Cut => "cut",
            Fault::Lost => "lost",
            Fault::Delay => "delay",
        }
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the same draws. The trials
/// (tests/trials.rs) draw their kill moments and fault plans with it too.
#[derive(Debug)]
pub struct Draws(pub u64);

impl Draws {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform draw in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// An [`ObjectStore`] that injects the faults of its [`FaultPlan`] in front of another store.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan,
    draws: Mutex<Draws>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore").field("inner", &self.inner).field("plan", &self.plan).finish()
    }
}

impl FaultyStore {
    /// A store whose draws follow `plan.seed` alone.
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> FaultyStore {
        let draws = Draws(plan.seed);
        FaultyStore { inner, plan, draws: Mutex::new(draws) }
    }

    /// Wraps `inner` when `LIFEBOAT_FAULTS` is set; an invalid plan is an error, never ignored.
    /// The seed is mixed with the process id, so that the processes of one trial (every
    /// `wal-push` the archiver runs) do not all draw the same faults.
    pub fn from_environment(inner: Arc<dyn ObjectStore>) -> Result<Arc<dyn ObjectStore>, String> {
        match std::env::var(FAULTS_VARIABLE) {
            Ok(spec) => {
                let mut plan = FaultPlan::parse(&spec)?;
                plan.seed ^= u64::from(std::process::id()).rotate_left(32);
                eprintln!(
                    "lifeboat: fault injection is on ({FAULTS_VARIABLE}={spec}): storage requests fail on purpose"
                );
                Ok(Arc::new(FaultyStore::new(inner, plan)))
            }
            Err(_) => Ok(inner),
        }
    }

    fn draw(&self) -> f64 {
        self.draws.lock().expect("draws lock").unit()
    }

    fn record(&self, fault: Fault, operation: &str, key: &str) {
        let Some(path) = &self.plan.report else { return };
        let line = format!("{} {operation} {key}\n", fault.name());
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// Whether this request may draw faults (`only_keys`, `only_operation`).
    fn aims_at(&self, operation: &str, key: &str) -> bool {
        self.plan.only_keys.as_deref().is_none_or(|text| key.contains(text))
            && self.plan.only_operation.as_deref().is_none_or(|only| only == operation)
    }

    /// The delay, if drawn, then a failure before the request, if drawn.
    async fn before(&self, operation: &'static str, key: &str) -> Result<(), StorageError> {
        if !self.aims_at(operation, key) {
            return Ok(());
        }
        if self.plan.delay > 0.0 && self.draw() < self.plan.delay {
            self.record(Fault::Delay, operation, key);
            let wait = self.plan.delay_max.mul_f64(self.draw());
            tokio::time::sleep(wait).await;
        }
        if self.draw() < self.plan.retryable {
            self.record(Fault::Retryable, operation, key);
            return Err(self.injected(operation, key, "503 Slow Down (injected)", true));
        }
        if self.draw() < self.plan.permanent {
            self.record(Fault::Permanent, operation, key);
            return Err(self.injected(operation, key, "403 Forbidden (injected)", false));
        }
        Ok(())
    }

    /// Whether this request's answer is lost after it succeeded.
    fn loses_answer(&self, operation: &'static str, key: &str) -> bool {
        let lost = self.plan.lost > 0.0 && self.aims_at(operation, key) && self.draw() < self.plan.lost;
        if lost {
            self.record(Fault::Lost, operation, key);
        }
        lost
    }

    /// A stream cut after a random share of `length` bytes (of unknown length: up to 1 MiB), if drawn.
    fn cut_after(&self, operation: &'static str, key: &str, length: Option<u64>) -> Option<u64> {
        if self.plan.cut == 0.0 || !self.aims_at(operation, key) || self.draw() >= self.plan.cut {
            return None;
        }
        self.record(Fault::Cut, operation, key);
        let length = length.unwrap_or(1 << 20);
        Some((length as f64 * self.draw()) as u64)
    }

    fn injected(&self, operation: &'static str, key: &str, detail: &str, retryable: bool) -> StorageError {
        StorageError::Service {
            location: self.inner.location(),
            operation,
            key: key.to_owned(),
            detail: detail.to_owned(),
            retryable,
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, body: ByteReader, mode: PutMode) -> Result<(), StorageError> {
        self.before("put", key.as_str()).await?;
        let body: ByteReader = match self.cut_after("put", key.as_str(), None) {
            Some(after) => Box::new(CutReader { inner: body, left: after }),
            None => body,
        };
        self.inner.put(key, body, mode).await?;
        if self.loses_answer("put", key.as_str()) {
            return Err(self.injected("put", key.as_str(), "connection reset after the upload (injected)", true));
        }
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteReader, StorageError> {
        self.before("get", key.as_str()).await?;
        let stream = self.inner.get(key).await?;
        Ok(match self.cut_after("get", key.as_str(), None) {
            Some(after) => Box::new(CutReader { inner: stream, left: after }),
            None => stream,
        })
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<ByteReader, StorageError> {
        self.before("get_range", key.as_str()).await?;
        let length = range.end.saturating_sub(range.start);
        let stream = self.inner.get_range(key, range).await?;
        Ok(match self.cut_after("get_range", key.as_str(), Some(length)) {
            Some(after) => Box::new(CutReader { inner: stream, left: after }),
            None => stream,
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.before("head", key.as_str()).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.before("list", prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.before("delete", key.as_str()).await?;
        self.inner.delete(key).await?;
        if self.loses_answer("delete", key.as_str()) {
            return Err(self.injected("delete", key.as_str(), "connection reset after the delete (injected)", true));
        }
        Ok(())
    }

    async fn locked_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.before("locked_until", key.as_str()).await?;
        self.inner.locked_until(key).await
    }

    async fn sweep(&self, prefix: &str, idle: Duration) -> Result<Swept, StorageError> {
        self.before("sweep", prefix).await?;
        self.inner.sweep(prefix, idle).await
    }
}

/// A stream that yields `left` more bytes of `inner`, then fails as a closed connection does.
struct CutReader {
    inner: ByteReader,
    left: u64,
}

impl AsyncRead for CutReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the connection was closed in the middle of the body (injected)",
            )));
        }
        let allowed = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.remaining());
        let mut limited = buf.take(allowed);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let filled = limited.filled().len();
        if let Poll::Ready(Ok(())) = polled {
            // SAFETY: `limited` wrote `filled` initialised bytes into `buf`'s unfilled part.
            unsafe { buf.assume_init(filled) };
            buf.advance(filled);
            self.left -= filled as u64;
            if filled == 0 {
                // The object ended before the cut: nothing was cut after all.
                self.left = u64::MAX;
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;
    use tokio::io::AsyncReadExt;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(name).unwrap()
    }

    async fn put_bytes(store: &dyn ObjectStore, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        store.put(&key(name), Box::new(std::io::Cursor::new(bytes.to_vec())), PutMode::Overwrite).await
    }

    #[test]
    fn plans_parse_and_bad_plans_are_refused_by_name() {
        let plan = FaultPlan::parse("seed=7, retryable=0.1,cut=0.05,delay_ms=5,report=/tmp/f").unwrap();
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.retryable, 0.1);
        assert_eq!(plan.cut, 0.05);
        assert_eq!(plan.delay_max, Duration::from_millis(5));
        assert_eq!(plan.report, Some(PathBuf::from("/tmp/f")));
        assert!(FaultPlan::parse("cut=2").unwrap_err().contains("cut must be a probability"));
        assert!(FaultPlan::parse("slow=0.1").unwrap_err().contains("unknown setting \"slow\""));
        assert!(FaultPlan::parse("seed").unwrap_err().contains("not name=value"));
    }

    #[tokio::test]
    async fn every_fault_happens_at_its_rate_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("faults.log");
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")));
        let plan =
            FaultPlan::parse(&format!("seed=1,retryable=0.2,permanent=0.1,report={}", report.display())).unwrap();
        let store = FaultyStore::new(inner.clone(), plan);
        let mut retryable = 0;
        let mut permanent = 0;
        for n in 0..400 {
            match put_bytes(&store, &format!("o/{n}"), b"x").await {
                Ok(()) => assert!(inner.head(&key(&format!("o/{n}"))).await.unwrap().is_some()),
                Err(error) if error.is_retryable() => retryable += 1,
                Err(_) => permanent += 1,
            }
        }
        // 20% of 400, and 10% of the remaining 80%: wide margins, the draws are fixed by the seed.
        assert!((50..=110).contains(&retryable), "{retryable}");
        assert!((15..=55).contains(&permanent), "{permanent}");
        let lines = std::fs::read_to_string(&report).unwrap();
        assert_eq!(lines.lines().count(), retryable + permanent);
        assert!(lines.lines().all(|line| line.starts_with("retryable put o/") || line.starts_with("permanent put o/")));
    }

    #[tokio::test]
    async fn a_cut_put_stores_nothing_and_a_cut_get_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let always_cut = FaultyStore::new(inner.clone(), FaultPlan::parse("cut=1").unwrap());
        let body = vec![7u8; 3 << 20];
        assert!(put_bytes(&always_cut, "cut", &body).await.is_err());
        assert!(inner.head(&key("cut")).await.unwrap().is_none(), "a cut upload must leave nothing");

        put_bytes(inner.as_ref(), "whole", &body).await.unwrap();
        let mut stream = always_cut.get(&key("whole")).await.unwrap();
        let mut read = Vec::new();
        let error = stream.read_to_end(&mut read).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(read.len() < body.len());
        assert_eq!(read, body[..read.len()], "what arrives before the cut is the object's own bytes");
    }

    #[tokio::test]
    async fn a_lost_answer_leaves_the_object_stored() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let store = FaultyStore::new(inner.clone(), FaultPlan::parse("lost=1").unwrap());
        let error = put_bytes(&store, "kept", b"bytes").await.unwrap_err();
        assert!(error.is_retryable());
        assert_eq!(inner.head(&key("kept")).await.unwrap().map(|meta| meta.size), Some(5));
    }

    #[tokio::test]
    async fn aimed_faults_hit_only_the_requests_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let plan = FaultPlan::parse("permanent=1,only_keys=/journal/,only_operation=put").unwrap();
        let store = FaultyStore::new(inner.clone(), plan);
        put_bytes(&store, "c/backups/1/manifest", b"m").await.expect("another key is not aimed at");
        put_bytes(inner.as_ref(), "c/journal/1", b"j").await.unwrap();
        assert!(store.get(&key("c/journal/1")).await.is_ok(), "another operation is not aimed at");
        assert!(store.list("c/journal/").await.is_ok());
        let error = put_bytes(&store, "c/journal/2", b"j").await.unwrap_err();
        assert!(!error.is_retryable());
        assert!(inner.head(&key("c/journal/2")).await.unwrap().is_none());
    }
}
