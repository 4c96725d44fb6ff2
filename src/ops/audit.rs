//! The audit trail: one JSON line per finished operation (and one when a long one starts), written
//! to a local file (`[audit] path`) and mirrored into the repository under the cluster, so the
//! trail survives the loss of the host. Only [`super::event::EventSink::emit`] appends to it.
//!
//! Mirroring is batched (docs/format.md, "Audit batches"), so `wal-push`, which PostgreSQL runs
//! once per WAL segment, does not pay a repository round trip per segment. Each line is first
//! appended to a spool on this host, `<state dir>/audit/<repository id>/<cluster>.jsonl` (the
//! state directory of the journal's host memory, [`crate::catalog::journal::state_dir`]); the spool
//! is stored as one sealed, create-only object `clusters/<name>/audit/<time>-<random>` and emptied
//! when an operation other than `wal-push` finishes, when it holds [`SPOOL_MAX_LINES`] lines, or
//! when its oldest line is older than [`SPOOL_MAX_AGE`] ([`should_flush`]). `lifeboat audit`
//! flushes it too before reading. Without a usable spool (no state directory, or one this user
//! cannot write) each line is stored at once, in a batch of its own.
//!
//! Neither the local file nor the mirror ever fails an operation: a local file that cannot be
//! opened is warned about once per process, a mirror that cannot be written keeps the lines in the
//! spool for the next flush.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Operation, Outcome, Totals};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::hostname;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{PutMode, StorageError};

/// A spool with this many lines is mirrored, whatever the operation.
pub const SPOOL_MAX_LINES: usize = 100;
/// A spool whose oldest line is this old is mirrored, whatever the operation.
pub const SPOOL_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// One line of the trail (docs/format.md, "Audit batches").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    /// `started` or `finished`.
    pub event: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, String>,
    /// The OS user that ran lifeboat.
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub cluster: String,
    /// `succeeded`, `failed` or `cancelled` (finished lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

impl AuditRecord {
    pub fn started(operation: Operation, arguments: &BTreeMap<String, String>, cluster: &str) -> AuditRecord {
        AuditRecord {
            time: Utc::now(),
            event: "started".into(),
            operation: operation.as_str().into(),
            arguments: arguments.clone(),
            user: os_user(),
            host: hostname(),
            pid: std::process::id(),
            cluster: cluster.into(),
            result: None,
            error: None,
            duration_seconds: None,
            bytes: None,
            created: Vec::new(),
            deleted: Vec::new(),
        }
    }

    pub fn finished(
        operation: Operation,
        arguments: &BTreeMap<String, String>,
        cluster: &str,
        outcome: &Outcome,
        duration: Duration,
        totals: &Totals,
    ) -> AuditRecord {
        let error = match outcome {
            Outcome::Succeeded => None,
            Outcome::Failed { error } => Some(error.clone()),
            Outcome::Cancelled { reason } => Some(reason.clone()),
        };
        AuditRecord {
            event: "finished".into(),
            result: Some(outcome.as_str().into()),
            error,
            duration_seconds: Some((duration.as_secs_f64() * 1000.0).round() / 1000.0),
            bytes: Some(totals.bytes),
            created: totals.created.clone(),
            deleted: totals.deleted.clone(),
            ..AuditRecord::started(operation, arguments, cluster)
        }
    }

    fn line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("an audit record serialises");
        line.push('\n');
        line
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot list the audit trail of cluster {cluster:?}: {source}")]
    List { cluster: String, source: StorageError },
    #[error("cannot read audit batch {key}: {source}")]
    Read { key: String, source: RepositoryError },
    #[error(
        "audit batch {key}, line {line}, is not an audit record ({detail}); the object was written by something \
         other than lifeboat"
    )]
    Damaged { key: String, line: usize, detail: String },
}

/// Where the repository copy goes.
struct Mirror {
    repository: Arc<Repository>,
    layout: ClusterLayout,
    /// `None` when this host has no state directory: each line is then stored at once.
    spool: Option<PathBuf>,
}

/// The audit trail of one cluster, as seen by one process.
pub struct AuditLog {
    local: PathBuf,
    cluster: String,
    mirror: Option<Mirror>,
    warned_local: AtomicBool,
    warned_mirror: AtomicBool,
}

impl AuditLog {
    /// A trail written to `local` and mirrored into `repository` (when there is one).
    pub fn new(local: PathBuf, layout: &ClusterLayout, repository: Option<Arc<Repository>>) -> AuditLog {
        let mirror = repository.map(|repository| {
            let spool = crate::catalog::journal::state_dir().map(|dir| {
                dir.join("audit").join(&repository.file().repository_id).join(format!("{}.jsonl", layout.name()))
            });
            Mirror { repository, layout: layout.clone(), spool }
        });
        AuditLog {
            local,
            cluster: layout.name().as_str().to_owned(),
            mirror,
            warned_local: AtomicBool::new(false),
            warned_mirror: AtomicBool::new(false),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn local_path(&self) -> &Path {
        &self.local
    }

    /// Appends `record` to the local file and to the spool (or, without one, to the repository).
    pub async fn append(&self, record: &AuditRecord) {
        let line = record.line();
        if let Err(error) = append_local(&self.local, &line)
            && !self.warned_local.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(
                "cannot write the audit log {}: {error}; the audit lines of this run are only mirrored into the \
                 repository (set [audit] path to a file this user can write)",
                self.local.display()
            );
        }
        let Some(mirror) = &self.mirror else { return };
        let spooled = match &mirror.spool {
            Some(spool) => append_spool(spool, &line).map_err(|error| {
                tracing::debug!(%error, "cannot spool the audit line in {}; storing it at once", spool.display())
            }),
            None => Err(()),
        };
        if spooled.is_err() {
            self.store_batch(mirror, line.into_bytes()).await;
        }
    }

    /// Called once an operation's finished line is appended: mirrors the spool if [`should_flush`] says so.
    pub async fn after_operation(&self, operation: Operation) {
        let Some(Mirror { spool: Some(spool), .. }) = &self.mirror else { return };
        let Ok(state) = spool_state(spool) else { return };
        if should_flush(operation, state.lines, state.oldest.map(age)) {
            self.flush().await;
        }
    }

    /// Stores what the spool holds as one batch and empties it. Nothing happens when it is empty.
    pub async fn flush(&self) {
        let Some(mirror @ Mirror { spool: Some(spool), .. }) = &self.mirror else { return };
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(spool) else { return };
        // Held across the put, so a wal-push appending meanwhile waits instead of losing its line
        // to the truncation.
        if lock(&file).is_err() {
            return;
        }
        let mut pending = Vec::new();
        if file.read_to_end(&mut pending).is_err() || pending.is_empty() {
            return;
        }
        if self.store_batch(mirror, pending).await {
            let emptied = file.set_len(0).and_then(|()| file.rewind());
            if let Err(error) = emptied {
                tracing::warn!(%error, "cannot empty the audit spool {}; its lines will be stored twice", spool.display());
            }
        }
    }

    /// Stores one batch; false (after a warning, once per process) when the repository refused it.
    async fn store_batch(&self, mirror: &Mirror, bytes: Vec<u8>) -> bool {
        let key = mirror.layout.audit_batch(&batch_name(Utc::now()));
        match mirror.repository.put_bytes(&key, bytes, PutMode::CreateOnly).await {
            Ok(_) => true,
            Err(error) => {
                if !self.warned_mirror.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "cannot store the audit lines in {key}: {error}; they stay on this host and are stored with the \
                         next operation"
                    );
                }
                false
            }
        }
    }
}

/// The batching rule: a spool of `lines` lines, the oldest `oldest_age` old, is mirrored after
/// `operation` finished when the operation is not `wal-push`, or the spool is full or old.
pub fn should_flush(operation: Operation, lines: usize, oldest_age: Option<Duration>) -> bool {
    lines > 0
        && (operation != Operation::WalPush
            || lines >= SPOOL_MAX_LINES
            || oldest_age.is_some_and(|age| age >= SPOOL_MAX_AGE))
}

/// `<UTC time to the millisecond>-<8 random hex digits>`: sorts by time, and two hosts flushing in
/// the same millisecond do not collide (create-only would refuse the second).
pub fn batch_name(time: DateTime<Utc>) -> String {
    let random = getrandom::u32().unwrap_or_else(|_| std::process::id());
    format!("{}-{random:08x}", time.format("%Y%m%dT%H%M%S%.3fZ"))
}

fn batch_time(name: &str) -> Option<DateTime<Utc>> {
    let (time, _) = name.split_once('-')?;
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.3fZ").ok().map(|time| time.and_utc())
}

/// Every record stored in the repository at or after `since`, oldest first.
pub async fn read_trail(
    repository: &Repository,
    layout: &ClusterLayout,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<AuditRecord>, AuditError> {
    let prefix = layout.audit_prefix();
    let objects = repository
        .store()
        .list(&prefix)
        .await
        .map_err(|source| AuditError::List { cluster: layout.name().as_str().to_owned(), source })?;
    let mut records = Vec::new();
    for object in objects {
        let name = object.key.as_str().strip_prefix(&prefix).unwrap_or(object.key.as_str());
        // A batch is named after its flush, which comes after every line it holds.
        if let (Some(since), Some(flushed)) = (since, batch_time(name))
            && flushed < since
        {
            continue;
        }
        let key = object.key.to_string();
        let bytes =
            repository.get_bytes(&object.key).await.map_err(|source| AuditError::Read { key: key.clone(), source })?;
        for (index, line) in String::from_utf8_lossy(&bytes).lines().enumerate().filter(|(_, line)| !line.is_empty()) {
            let record: AuditRecord = serde_json::from_str(line).map_err(|error| AuditError::Damaged {
                key: key.clone(),
                line: index + 1,
                detail: error.to_string(),
            })?;
            if since.is_none_or(|since| record.time >= since) {
                records.push(record);
            }
        }
    }
    records.sort_by_key(|record| record.time);
    Ok(records)
}

fn append_local(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
    // One write of a whole line with O_APPEND: lines of concurrent processes do not interleave.
    file.write_all(line.as_bytes())
}

fn append_spool(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    lock(&file)?;
    file.write_all(line.as_bytes())
}

struct SpoolState {
    lines: usize,
    oldest: Option<DateTime<Utc>>,
}

fn spool_state(path: &Path) -> std::io::Result<SpoolState> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    let oldest =
        text.lines().next().and_then(|line| serde_json::from_str::<AuditRecord>(line).ok()).map(|record| record.time);
    Ok(SpoolState { lines: text.lines().count(), oldest })
}

fn age(time: DateTime<Utc>) -> Duration {
    (Utc::now() - time).to_std().unwrap_or_default()
}

/// An exclusive lock on the whole file, released when the file is closed.
fn lock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this function borrows; it has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The name of the effective user, or its uid when it has no name.
pub(crate) fn os_user() -> String {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        let uid = nix::unistd::geteuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            _ => uid.to_string(),
        }
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_push_waits_for_a_full_or_old_spool_and_every_other_operation_flushes() {
        let fresh = Some(Duration::from_secs(10));
        assert!(!should_flush(Operation::WalPush, 1, fresh));
        assert!(!should_flush(Operation::WalPush, SPOOL_MAX_LINES - 1, fresh));
        assert!(should_flush(Operation::WalPush, SPOOL_MAX_LINES, fresh));
        assert!(should_flush(Operation::WalPush, 1, Some(SPOOL_MAX_AGE)));
        for operation in [Operation::Backup, Operation::Dump, Operation::Verify, Operation::Restore, Operation::Delete]
        {
            assert!(should_flush(operation, 1, fresh), "{operation:?}");
        }
        assert!(!should_flush(Operation::Backup, 0, None), "an empty spool is not stored");
    }

    #[test]
    fn batch_names_sort_by_time_and_give_it_back() {
        let early: DateTime<Utc> = "2026-12-01T10:00:00.123Z".parse().unwrap();
        let late: DateTime<Utc> = "2026-12-01T10:00:01.001Z".parse().unwrap();
        let (a, b) = (batch_name(early), batch_name(late));
        assert!(a < b, "{a} {b}");
        assert_eq!(batch_time(&a), Some(early));
        assert!(a.starts_with("20261201T100000.123Z-") && a.len() == "20261201T100000.123Z-".len() + 8, "{a}");
    }
}
