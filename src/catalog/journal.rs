//! The journal of a cluster (`clusters/<name>/journal/<seq>`): an append-only, sealed,
//! hash-chained record of every backup, dump, verification report, deletion and identity that
//! lifeboat adds to or removes from the cluster, so that a deletion made by lifeboat can be told
//! from an object that went missing (G9). docs/format.md section 12 is the normative description.
//!
//! - Each entry is a framed object (sealed: nobody without the key can write one, and an entry
//!   does not authenticate under another entry's key), written with a create-only put at the next
//!   sequence number, so concurrent writers serialise on the put and the loser retries.
//! - Each entry names the BLAKE3 of its predecessor's plaintext and carries the whole resulting
//!   [`State`] (the live backups and dumps with their manifests' hashes and newest verdicts), so a
//!   reader needs the newest entry only, plus the chain back to what it has already checked.
//! - This host remembers the newest entry it saw ([`HostMemory`]), so a journal cut back to an
//!   older entry, or removed altogether, is reported instead of silently believed.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::Problem;
use super::cluster::{ClusterRecord, IdentityError};
use super::layout::ClusterLayout;
use crate::format::journal_entry::{
    Event, FORMAT_NAME, FORMAT_VERSION, Identity, Item, JournalEntry, RecordedVerdict, SEQ_DIGITS, State, Verdict,
    entry_key, hash_hex,
};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, PutMode, StorageError};

/// Appends lost to concurrent writers before giving up (each loss means another entry landed).
const APPEND_ATTEMPTS: usize = 64;
/// How many more times [`append`] tries after a failure the store calls temporary.
const APPEND_RETRIES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "{location}: journal entry {key} cannot be read ({detail}). lifeboat does not add to a journal whose \
         newest entry it cannot authenticate. If the configured key is right, the entry was damaged or altered: \
         find out what changed the repository (docs/format.md section 12), and put the entry back from a copy"
    )]
    Unreadable { location: String, key: ObjectKey, detail: String },

    #[error(
        "{location}: the journal of cluster {cluster:?} is {found}, but this host saw it reach entry {remembered} \
         ({memory}). The repository was rolled back or entries were deleted; lifeboat will not write over that \
         history. Find out what changed the repository; if this host's memory is what is wrong (the repository was \
         deliberately restored from an older copy), remove {memory} to accept the repository as it is"
    )]
    RolledBack { location: String, cluster: String, found: String, remembered: u64, memory: String },

    #[error(
        "{location}: could not add to the journal of cluster {cluster:?}: {attempts} other writers added entries \
         first. Run the command again"
    )]
    Contended { location: String, cluster: String, attempts: usize },

    #[error(transparent)]
    Identity(Box<IdentityError>),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl JournalError {
    /// Whether the store failed in a way it calls temporary, so the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        let repository = match self {
            JournalError::Repository(error) => error,
            JournalError::Identity(error) => match error.as_ref() {
                IdentityError::Repository(error) => error,
                _ => return false,
            },
            _ => return false,
        };
        matches!(repository, RepositoryError::Storage(error) if error.is_retryable())
    }
}

impl From<StorageError> for JournalError {
    fn from(error: StorageError) -> Self {
        JournalError::Repository(error.into())
    }
}

impl From<IdentityError> for JournalError {
    fn from(error: IdentityError) -> Self {
        JournalError::Identity(Box::new(error))
    }
}

/// What [`read`] found: the newest readable entry and what is wrong with the chain.
#[derive(Debug, Clone, Default)]
pub struct JournalView {
    pub head: Option<JournalEntry>,
    pub problems: Vec<Problem>,
}

impl JournalView {
    pub fn state(&self) -> Option<&State> {
        self.head.as_ref().map(|head| &head.state)
    }
}

/// The sequence numbers of the listed entries, sorted, and the keys under `journal/` that are not
/// entries.
async fn list_entries(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<(Vec<u64>, Vec<String>), JournalError> {
    let prefix = layout.journal_prefix();
    let mut seqs = Vec::new();
    let mut strangers = Vec::new();
    for meta in repository.store().list(&prefix).await? {
        let name = meta.key.as_str().strip_prefix(prefix.as_str()).unwrap_or_default();
        match name.parse::<u64>() {
            Ok(seq) if seq > 0 && name.len() == SEQ_DIGITS => seqs.push(seq),
            _ => strangers.push(meta.key.to_string()),
        }
    }
    seqs.sort_unstable();
    Ok((seqs, strangers))
}

/// Reads entry `seq`: the entry and the BLAKE3 of its plaintext.
async fn read_entry(
    repository: &Repository,
    layout: &ClusterLayout,
    seq: u64,
) -> Result<(JournalEntry, String), EntryUnreadable> {
    let key = entry_key(layout, seq);
    let bytes = match repository.get_bytes(&key).await {
        Ok(bytes) => bytes,
        Err(RepositoryError::Storage(error)) if !error.is_not_found() => return Err(EntryUnreadable::Storage(error)),
        Err(error) => return Err(EntryUnreadable::Damaged(error.to_string())),
    };
    let entry: JournalEntry =
        serde_json::from_slice(&bytes).map_err(|error| EntryUnreadable::Damaged(error.to_string()))?;
    if entry.format != FORMAT_NAME || entry.version != FORMAT_VERSION {
        return Err(EntryUnreadable::Damaged(format!(
            "format {:?} version {}, this lifeboat reads {FORMAT_NAME:?} version {FORMAT_VERSION}",
            entry.format, entry.version
        )));
    }
    if entry.seq != seq {
        return Err(EntryUnreadable::Damaged(format!("it says it is entry {}", entry.seq)));
    }
    Ok((entry, hash_hex(&bytes)))
}

/// Why an entry could not be used.
enum EntryUnreadable {
    /// The store failed to serve it (unreachable, throttled, denied): nothing is known about the
    /// entry itself.
    Storage(StorageError),
    /// It is gone, or it does not authenticate or parse: the journal is damaged.
    Damaged(String),
}

/// Reads the journal of the cluster: the newest entry, checked against its predecessors back to
/// the newest entry this host has already checked (all of them the first time), and against what
/// this host remembers. Never fails for what it finds wrong: that is in the view's problems.
pub async fn read(repository: &Repository, layout: &ClusterLayout) -> Result<JournalView, JournalError> {
    let (seqs, strangers) = list_entries(repository, layout).await?;
    let mut view = JournalView::default();
    for key in strangers {
        view.problems.push(Problem { key, detail: "not a journal entry lifeboat wrote".into() });
    }
    let newest = seqs.last().copied().unwrap_or(0);
    let mut expected = 1;
    for &seq in &seqs {
        if seq > expected {
            let what = if seq - expected == 1 {
                format!("entry {expected} is missing")
            } else {
                format!("entries {expected} to {} are missing", seq - 1)
            };
            view.problems.push(Problem {
                key: entry_key(layout, expected).to_string(),
                detail: format!("{what} (the journal goes on at entry {seq}): deleted by someone other than lifeboat"),
            });
        }
        expected = seq + 1;
    }

    let memory = HostMemory::new(repository, layout);
    let remembered = memory.as_ref().and_then(HostMemory::load);
    // Walk back from the newest entry, checking each link, down to what this host checked before.
    let stop_at = remembered.as_ref().map_or(0, |remembered| remembered.seq.min(newest));
    let mut later: Option<(JournalEntry, String)> = None;
    let mut head_hash = None;
    for &seq in seqs.iter().rev() {
        if seq < stop_at {
            break;
        }
        let key = entry_key(layout, seq).to_string();
        match read_entry(repository, layout, seq).await {
            Ok((entry, hash)) => {
                if let Some((later_entry, _)) = &later
                    && later_entry.seq == seq + 1
                    && later_entry.previous.as_deref() != Some(hash.as_str())
                {
                    view.problems.push(Problem {
                        key: entry_key(layout, seq + 1).to_string(),
                        detail: format!("does not follow entry {seq}: one of the two was replaced"),
                    });
                }
                if let Some(remembered) = &remembered
                    && remembered.seq == seq
                    && remembered.blake3 != hash
                {
                    view.problems.push(Problem {
                        key: key.clone(),
                        detail: format!(
                            "is not the entry {seq} this host saw at {}: the journal was rewritten",
                            remembered.at.to_rfc3339()
                        ),
                    });
                }
                if view.head.is_none() {
                    view.head = Some(entry.clone());
                    head_hash = Some(hash.clone());
                }
                later = Some((entry, hash));
            }
            Err(EntryUnreadable::Storage(error)) => return Err(error.into()),
            Err(EntryUnreadable::Damaged(detail)) => {
                view.problems.push(Problem { key, detail: format!("cannot be read: {detail}") });
                later = None;
            }
        }
    }
    if let Some(remembered) = &remembered
        && remembered.seq > newest
    {
        let found = if newest == 0 { "empty".to_owned() } else { format!("at entry {newest}") };
        view.problems.push(Problem {
            key: layout.journal_prefix(),
            detail: format!(
                "the journal is {found}, but this host saw it reach entry {} at {}: the repository was rolled back \
                 or entries were deleted",
                remembered.seq,
                remembered.at.to_rfc3339()
            ),
        });
    }
    // Only a journal found whole moves this host's memory forward.
    if view.problems.is_empty()
        && let (Some(memory), Some(head), Some(hash)) = (&memory, &view.head, &head_hash)
    {
        memory.store(head.seq, hash);
    }
    Ok(view)
}

/// The newest entry and the BLAKE3 of its plaintext, checked as a writer must before adding to
/// it: it authenticates, and this host remembers no newer one. `None` for an empty journal.
/// Writers that would otherwise do hours of work before finding that they cannot record it call
/// this first; [`append`] calls it for every entry it writes.
pub async fn writable_head(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<Option<(JournalEntry, String)>, JournalError> {
    let (seqs, _) = list_entries(repository, layout).await?;
    let newest = seqs.last().copied().unwrap_or(0);
    if let Some(memory) = HostMemory::new(repository, layout)
        && let Some(remembered) = memory.load()
        && remembered.seq > newest
    {
        return Err(JournalError::RolledBack {
            location: repository.location(),
            cluster: layout.name().to_string(),
            found: if newest == 0 { "empty".to_owned() } else { format!("at entry {newest}") },
            remembered: remembered.seq,
            memory: memory.path.display().to_string(),
        });
    }
    if newest == 0 {
        return Ok(None);
    }
    let head = read_entry(repository, layout, newest).await.map_err(|unreadable| match unreadable {
        EntryUnreadable::Storage(error) => JournalError::from(error),
        EntryUnreadable::Damaged(detail) => {
            JournalError::Unreadable { location: repository.location(), key: entry_key(layout, newest), detail }
        }
    })?;
    Ok(Some(head))
}

/// Records `event` as the next entry of the cluster's journal and returns the entry. When the
/// journal has no entry yet, a first entry takes over what the repository already holds.
///
/// The entry records what an operation already stored (a manifest, a report): failing to write
/// it leaves that unrecorded, which `list` reports until a verification records it. So a
/// failure the store calls temporary is tried again, [`APPEND_RETRIES`] times with growing
/// pauses, on top of whatever retries the store makes itself.
pub async fn append(
    repository: &Repository,
    layout: &ClusterLayout,
    event: Event,
) -> Result<JournalEntry, JournalError> {
    let mut pause = Duration::from_millis(100);
    for retry in 1..=APPEND_RETRIES {
        match append_once(repository, layout, event.clone()).await {
            Err(error) if error.is_retryable() => {
                tracing::warn!(cluster = %layout.name(), "recording in the journal failed ({error}); trying again ({retry} of {APPEND_RETRIES})");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            outcome => return outcome,
        }
    }
    append_once(repository, layout, event).await
}

async fn append_once(
    repository: &Repository,
    layout: &ClusterLayout,
    event: Event,
) -> Result<JournalEntry, JournalError> {
    let memory = HostMemory::new(repository, layout);
    for _ in 0..APPEND_ATTEMPTS {
        let Some((head, hash)) = writable_head(repository, layout).await? else {
            // Whoever wins entry 1, the event goes after it, on the next turn.
            let adopted = adopt(repository, layout).await?;
            let began = Event::Began { adopted: adopted.items.iter().map(|item| item.id).collect() };
            put(repository, layout, &memory, None, adopted, 1, began).await?;
            continue;
        };
        let (previous, state, seq) = (Some(hash), head.state, head.seq + 1);
        if let Some((entry, _)) = put(repository, layout, &memory, previous, state, seq, event.clone()).await? {
            return Ok(entry);
        }
    }
    Err(JournalError::Contended {
        location: repository.location(),
        cluster: layout.name().to_string(),
        attempts: APPEND_ATTEMPTS,
    })
}

/// Writes entry `seq` (create-only); `None` when another writer wrote it first.
async fn put(
    repository: &Repository,
    layout: &ClusterLayout,
    memory: &Option<HostMemory>,
    previous: Option<String>,
    state: State,
    seq: u64,
    event: Event,
) -> Result<Option<(JournalEntry, String)>, JournalError> {
    let entry = JournalEntry {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        seq,
        previous,
        at: Utc::now(),
        host: super::lease::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_owned(),
        state: state.apply(&event, seq),
        event,
    };
    let bytes = serde_json::to_vec(&entry).expect("a journal entry serialises");
    let hash = hash_hex(&bytes);
    let key = entry_key(layout, seq);
    let written = match repository.put_bytes(&key, bytes, PutMode::CreateOnly).await {
        Ok(_) => true,
        Err(RepositoryError::Storage(StorageError::AlreadyExists { .. })) => false,
        Err(error) => match written_despite_error(repository, &key, &hash).await {
            Some(written) => written,
            None => return Err(error.into()),
        },
    };
    if !written {
        return Ok(None);
    }
    if let Some(memory) = memory {
        memory.store(seq, &hash);
    }
    tracing::debug!(cluster = %layout.name(), seq, "journal entry written");
    Ok(Some((entry, hash)))
}

/// After a put of the entry `key` failed: whether it was written after all (`Some(true)`: the
/// request reached the store and only its answer was lost), written by another writer
/// (`Some(false)`), or `None` when that cannot be told (nothing there, or the store cannot be
/// read). Without this look, an operation whose entry landed would believe it failed and undo
/// what the journal records (a dump removed that the journal says exists).
async fn written_despite_error(repository: &Repository, key: &ObjectKey, hash: &str) -> Option<bool> {
    for pause in [Duration::ZERO, Duration::from_millis(200), Duration::from_millis(800)] {
        tokio::time::sleep(pause).await;
        match repository.get_bytes(key).await {
            Ok(stored) => return Some(hash_hex(&stored) == hash),
            Err(RepositoryError::Storage(StorageError::NotFound { .. })) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// What a repository written before journals existed holds: every readable manifest, the newest
/// readable report of each, and the cluster record.
async fn adopt(repository: &Repository, layout: &ClusterLayout) -> Result<State, JournalError> {
    let mut state = State::default();
    if let Some(record) = ClusterRecord::read(repository, layout).await? {
        state.identity =
            Some(Identity { system_identifier: record.system_identifier, wal_segment_size: record.wal_segment_size });
    }
    let reports = crate::format::verify_report::read_latest(repository, layout).await?;
    for id in super::listing::list_ids(repository, layout).await? {
        let Ok(bytes) = repository.get_bytes(&super::listing::manifest_key(layout, id)).await else { continue };
        let verification = reports.get(&id).and_then(|reports| {
            let report = reports.latest.as_ref().ok()?;
            Some(RecordedVerdict {
                verdict: Verdict::of(report, &reports.latest_key, &reports.latest_bytes),
                recorded_in: 1,
            })
        });
        state.items.push(Item {
            id,
            manifest_blake3: hash_hex(&bytes),
            recorded_in: 1,
            verification,
            restore_verification: None,
        });
    }
    Ok(state)
}

/// Where this host remembers the newest journal entry it saw of one cluster of one repository:
/// `<state dir>/journal/<repository id>/<cluster>.json`. The state directory is
/// `$LIFEBOAT_STATE_DIR`, else `/var/lib/lifeboat/state` for root, else
/// `$XDG_STATE_HOME/lifeboat` or `~/.local/state/lifeboat`. Failing to read or write it never fails
/// an operation (PostgreSQL's archive_command runs as another user than a DBA's shell); it only
/// weakens what a rollback of the repository can be caught by.
struct HostMemory {
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    seq: u64,
    blake3: String,
    at: DateTime<Utc>,
}

impl HostMemory {
    fn new(repository: &Repository, layout: &ClusterLayout) -> Option<HostMemory> {
        let dir = state_dir()?;
        let path = dir.join("journal").join(&repository.file().repository_id).join(format!("{}.json", layout.name()));
        Some(HostMemory { path })
    }

    fn load(&self) -> Option<Remembered> {
        let bytes = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Remembers entry `seq` unless a newer one is remembered already.
    fn store(&self, seq: u64, blake3: &str) {
        if self.load().is_some_and(|remembered| remembered.seq > seq) {
            return;
        }
        let remembered = Remembered { seq, blake3: blake3.to_owned(), at: Utc::now() };
        let json = serde_json::to_vec(&remembered).expect("serialises");
        let temporary = self.path.with_extension(format!("tmp{}", std::process::id()));
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&temporary, json))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::debug!(%error, "cannot remember the journal head in {}", self.path.display());
        }
    }
}

/// This host's state directory (see [`HostMemory`]); also where the audit spool lives.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIFEBOAT_STATE_DIR").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/lifeboat/state"));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir).join("lifeboat"));
    }
    std::env::var_os("HOME").filter(|dir| !dir.is_empty()).map(|home| PathBuf::from(home).join(".local/state/lifeboat"))
}

#[cfg(all(test, feature = "fault-injection"))]
mod lost_answer_tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::ClusterName;
    use crate::object::{Cipher, WriteOptions};
    use crate::storage::ObjectStore;
    use crate::storage::faulty::{FaultPlan, FaultyStore};
    use crate::storage::local::LocalStore;

    /// Found by the storage-fault trials (tests/trials.rs): a journal entry whose put reached the
    /// store but whose answer was lost made the dump believe recording failed and remove itself,
    /// leaving the journal recording a dump that was gone.
    #[tokio::test]
    async fn trial_defect_a_journal_entry_whose_answer_was_lost_counts_as_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        Repository::init(store.clone(), Cipher::None, None, "", WriteOptions::default()).await.unwrap();
        let losing: Arc<dyn ObjectStore> = Arc::new(FaultyStore::new(store, FaultPlan::parse("lost=1").unwrap()));
        let repository = Repository::open(losing, None, WriteOptions::default()).await.unwrap();
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let id: crate::catalog::id::BackupId = "20260101T000000Z-dump".parse().unwrap();

        let entry = append(&repository, &layout, Event::Completed { id, manifest_blake3: "00".repeat(32) })
            .await
            .expect("every put landed; only the answers were lost");
        assert_eq!(entry.seq, 2, "entry 1 begins the journal, entry 2 records the dump, each once");
        assert!(entry.state.items.iter().any(|item| item.id == id));
        let entries = std::fs::read_dir(dir.path().join("clusters/main/journal")).unwrap().count();
        assert_eq!(entries, 2);
    }

    /// Found by the storage-fault trials: a backup whose manifest was stored, but whose journal
    /// entry failed once on a temporary storage error, stayed unrecorded, and `list` reported it.
    #[tokio::test]
    async fn trial_defect_a_temporary_failure_to_record_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")));
        Repository::init(store.clone(), Cipher::None, None, "", WriteOptions::default()).await.unwrap();
        let report = dir.path().join("faults.log");
        let plan = FaultPlan::parse(&format!("seed=1,retryable=0.1,report={}", report.display())).unwrap();
        let flaky: Arc<dyn ObjectStore> = Arc::new(FaultyStore::new(store, plan));
        let repository = Repository::open(flaky, None, WriteOptions::default()).await.unwrap();
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        for n in 0..3 {
            let id: crate::catalog::id::BackupId = format!("20260101T00000{n}Z-full").parse().unwrap();
            append(&repository, &layout, Event::Completed { id, manifest_blake3: "00".repeat(32) })
                .await
                .expect("temporary failures are tried again");
        }
        let faults = std::fs::read_to_string(&report).unwrap_or_default();
        assert!(faults.lines().count() >= 2, "the seed must make some requests fail: {faults}");
    }
}
