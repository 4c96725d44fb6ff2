//! `lifeboat copy`: bringing each `[[copies]]` repository up to date with the primary, and
//! checking that what a copy holds is what the primary holds (docs/format.md, "Copies").
//!
//! Objects are copied as stored: the sealed bytes go from the primary's store to the copy's, never
//! decrypted or recompressed (the copy holds the same master key). Each one is read back from the
//! copy and compared (length and BLAKE3 of the stored bytes, hashed while it streamed from the
//! primary) before anything that refers to it is written. The order keeps the copy
//! complete-or-invisible, as a backup keeps its own repository:
//!
//! 1. the cluster record (its journal event first, as `ClusterRecord::ensure` does);
//! 2. every WAL and history file (listed after the manifests, so it holds all the WAL that the
//!    backups being copied need);
//! 3. each backup and dump, oldest first: its data objects, then its manifest, then its journal
//!    entry on the copy (the copy keeps its own journal, so `list` and `verify` there see a whole
//!    history and a deletion on the copy is told from a loss, G9);
//! 4. the verification reports of what the copy holds, and their journal entries.
//!
//! A run killed anywhere resumes: a backup whose manifest is on the copy is done (and recorded in
//! the copy's journal, if the killed run had not); objects of an unfinished one that are on the
//! copy already are compared with the primary's and kept if equal. Each run ends with the sweep of
//! the copy (`catalog::leftovers`): partial uploads go, and unrecorded manifests are recorded.
//! The copy's cluster lease is held while writing, so a run on another host, or an expiry of the
//! copy, waits. Journals, audit batches and leases are the repository's own and are not copied.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::task::JoinSet;

use super::OpContext;
use super::event::{Operation, Outcome, Totals};
use super::open::{OpenError, open_copy_repository};
use super::run::{OpError, arguments, run_operation};
use crate::catalog::cluster::ClusterRecord;
use crate::catalog::id::BackupId;
use crate::catalog::journal::{self, JournalError};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::{DEFAULT_TTL, Lease, LeaseError};
use crate::catalog::leftovers;
use crate::catalog::listing;
use crate::config::Config;
use crate::format::journal_entry::{Event, Verdict, hash_hex};
use crate::report::backup::EntryView;
use crate::report::catalog::ListView;
use crate::report::copy::{
    Copied, CopyCheckResult, CopyCheckView, CopyHoldings, CopyResultView, CopyRunView, Difference, Lag,
};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, ObjectMeta, ObjectStore, PutMode, StorageError};
use crate::util::{round_to, seconds_between};

/// Objects copied or compared at once: enough to hide S3 round trips, few enough that memory
/// stays bounded (each holds one read buffer) and servers are not flooded.
const PARALLEL_OBJECTS: usize = 8;
/// What one read takes from a stream being hashed.
const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{file} configures no copies, so there is nothing to copy to; add a [[copies]] entry (name, url) and \
         create it with `lifeboat init --copy NAME`"
    )]
    NoCopies { file: String },

    #[error(
        "{location}: {key} does not read back as it was sent ({detail}); nothing that refers to it was written. \
         Run `lifeboat copy` again; if it keeps happening, the copy's storage is damaging data"
    )]
    Mismatch { location: String, key: ObjectKey, detail: String },

    #[error(
        "{location}: lost the lease of cluster {cluster:?} while copying (this process stalled past its expiry); \
         nothing more was written. Run `lifeboat copy` again: it resumes"
    )]
    LeaseLost { location: String, cluster: String },

    #[error(
        "copy {name:?} at {location} holds another master key ({found}) than the repository ({expected}), so the \
         objects copied as stored would not open there: it was not created with `lifeboat init --copy {name}`. \
         Point the copy's url at an empty location and run `lifeboat init --copy {name}` there"
    )]
    OtherMasterKey { name: String, location: String, found: String, expected: String },

    #[error(
        "{name:?} is itself a copy: `lifeboat copy` reads [repository] and writes the copies; run it without --repository"
    )]
    FromCopy { name: String },

    #[error(transparent)]
    Open(#[from] OpenError),

    #[error(transparent)]
    Lease(#[from] LeaseError),

    #[error(transparent)]
    Journal(#[from] JournalError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),

    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<crate::catalog::cluster::IdentityError> for CopyError {
    fn from(error: crate::catalog::cluster::IdentityError) -> Self {
        CopyError::Journal(error.into())
    }
}

/// What the primary holds, listed once at the start of a run.
struct Snapshot {
    /// Backups and dumps with a manifest, oldest first (listed before the objects below, so every
    /// object and WAL file they need is among those).
    ids: Vec<BackupId>,
    /// Every object of the cluster except the journal, audit batches and leases.
    objects: BTreeMap<String, ObjectMeta>,
}

impl Snapshot {
    async fn read(primary: &Repository, layout: &ClusterLayout) -> Result<Snapshot, StorageError> {
        let ids = listing::list_ids(primary, layout).await?;
        let own = [layout.journal_prefix(), layout.audit_prefix(), format!("{}locks/", layout.prefix())];
        let objects = primary
            .store()
            .list(&layout.prefix())
            .await?
            .into_iter()
            .filter(|meta| !own.iter().any(|prefix| meta.key.as_str().starts_with(prefix.as_str())))
            .map(|meta| (meta.key.to_string(), meta))
            .collect();
        Ok(Snapshot { ids, objects })
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a ObjectMeta> + 'a {
        self.objects
            .range(prefix.to_owned()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, meta)| meta)
    }
}

/// The stored sizes of what a copy holds of the cluster.
type Held = BTreeMap<ObjectKey, u64>;

/// The backups and dumps the copy's journal records as deleted on the copy.
async fn deleted_on(copy: &Repository, layout: &ClusterLayout) -> Result<BTreeSet<BackupId>, CopyError> {
    let head = journal::writable_head(copy, layout).await?;
    Ok(head.map(|(head, _)| head.state.deleted.iter().map(|deletion| deletion.id).collect()).unwrap_or_default())
}

async fn held(copy: &Repository, layout: &ClusterLayout) -> Result<Held, StorageError> {
    Ok(copy.store().list(&layout.prefix()).await?.into_iter().map(|meta| (meta.key, meta.size)).collect())
}

fn holds(held: &Held, meta: &ObjectMeta) -> bool {
    held.get(&meta.key) == Some(&meta.size)
}

/// How far `held` is behind `snapshot`; backups and dumps in `deleted` (deleted on the copy, which
/// keeps them deleted) are not behind.
fn lag(snapshot: &Snapshot, held: &Held, deleted: &BTreeSet<BackupId>, layout: &ClusterLayout) -> Lag {
    let now = Utc::now();
    let missing_backups: Vec<BackupId> = snapshot
        .ids
        .iter()
        .copied()
        .filter(|id| !deleted.contains(id) && !held.contains_key(&listing::manifest_key(layout, *id)))
        .collect();
    let wal_prefix = layout.wal_prefix();
    let missing_wal: Vec<&ObjectMeta> = snapshot.under(&wal_prefix).filter(|meta| !holds(held, meta)).collect();
    // WAL files sort by their name (timeline, then position), whatever directory they are in.
    let newest_wal = missing_wal.iter().max_by(|a, b| file_name(&a.key).cmp(file_name(&b.key)));
    let newest_backup = missing_backups.iter().max().copied();
    Lag {
        backups_missing: missing_backups.len() as u64,
        newest_backup_missing: newest_backup,
        newest_backup_missing_age_seconds: newest_backup.map(|id| round_to(seconds_between(id.started(), now), 3)),
        wal_missing: missing_wal.len() as u64,
        newest_wal_missing: newest_wal.map(|meta| file_name(&meta.key).to_owned()),
        newest_wal_missing_age_seconds: newest_wal
            .and_then(|meta| meta.modified)
            .map(|modified| round_to(seconds_between(modified, now), 3)),
    }
}

fn file_name(key: &ObjectKey) -> &str {
    key.as_str().rsplit('/').next().unwrap_or_default()
}

/// Which of the backups and dumps of `view` each configured copy holds (their manifest is there),
/// into `view.copies`. A copy that cannot be read is reported there, not as a failure.
pub async fn holdings(config: &Config, layout: &ClusterLayout, view: &mut ListView) {
    let listed: BTreeSet<String> = view
        .backups
        .iter()
        .map(|entry| match entry {
            EntryView::Full(backup) => backup.id.clone(),
            EntryView::Dump(dump) => dump.id.clone(),
        })
        .collect();
    for copy in &config.copies.list {
        let mut holding = CopyHoldings { name: copy.name.clone(), location: None, backups: Vec::new(), error: None };
        let held = async {
            let repository = open_copy_repository(config, &copy.name).await?;
            holding.location = Some(repository.location());
            Ok::<_, CopyError>(listing::list_ids(&repository, layout).await?)
        };
        match held.await {
            Ok(ids) => holding.backups = ids.into_iter().filter(|id| listed.contains(&id.to_string())).collect(),
            Err(error) => {
                tracing::warn!(copy = %copy.name, %error, "cannot read the copy to say what it holds");
                holding.error = Some(error.to_string());
            }
        }
        view.copies.push(holding);
    }
}

/// How a copy stands against the primary right now, measured without copying anything.
#[derive(Debug, Clone)]
pub struct Standing {
    /// What it lacks, as `copy --json` reports it (`lag`).
    pub lag: Lag,
    /// The primary's backups and dumps it holds complete, oldest first.
    pub holds: Vec<BackupId>,
    /// The oldest backup, dump (its id) or WAL file (its name) of the primary it lacks, and since
    /// when the primary has had it: the copy has not been up to date since then.
    pub oldest_missing: Option<(String, chrono::DateTime<Utc>)>,
}

/// How copy `name` stands against `primary`, for the daemon's watcher and `lifeboat status`.
pub async fn standing(
    config: &Config,
    primary: &Repository,
    layout: &ClusterLayout,
    name: &str,
) -> Result<Standing, CopyError> {
    let copy = open_copy_repository(config, name).await?;
    let snapshot = Snapshot::read(primary, layout).await?;
    let held = held(&copy, layout).await?;
    let deleted = deleted_on(&copy, layout).await?;
    let held_ids = snapshot
        .ids
        .iter()
        .copied()
        .filter(|id| held.contains_key(&listing::manifest_key(layout, *id)))
        .collect::<Vec<_>>();
    let oldest_backup = snapshot
        .ids
        .iter()
        .filter(|id| !deleted.contains(id) && !held_ids.contains(id))
        .min()
        .map(|id| (id.to_string(), id.started()));
    let oldest_wal = snapshot
        .under(&layout.wal_prefix())
        .filter(|meta| !holds(&held, meta))
        .filter_map(|meta| Some((file_name(&meta.key).to_owned(), meta.modified?)))
        .min_by_key(|(_, at)| *at);
    let oldest_missing = [oldest_backup, oldest_wal].into_iter().flatten().min_by_key(|(_, at)| *at);
    Ok(Standing { lag: lag(&snapshot, &held, &deleted, layout), holds: held_ids, oldest_missing })
}

/// Brings each copy (or only `to`) up to date with the primary of `context`.
pub async fn copy(context: &OpContext, to: Option<&str>) -> Result<CopyRunView, OpError> {
    let names = selected(context, to)?;
    let work = async {
        let layout = &context.layout;
        let primary = context.repository.as_ref();
        let mut copies = Vec::new();
        for name in &names {
            // Listed for each copy: what the primary gained while the previous copy was written goes too.
            let snapshot = Snapshot::read(primary, layout).await?;
            copies.push(copy_to(context, &snapshot, name).await);
        }
        Ok(CopyRunView { cluster: layout.name().to_string(), primary: context.repository.location(), copies })
    };
    let judge = |view: &CopyRunView| {
        let totals = Totals {
            bytes: view.copies.iter().map(|copy| copy.copied.bytes).sum(),
            created: view
                .copies
                .iter()
                .flat_map(|copy| copy.copied.backups.iter().map(move |id| format!("{}:{id}", copy.name)))
                .collect(),
            deleted: Vec::new(),
        };
        let failed: Vec<String> = view
            .copies
            .iter()
            .filter_map(|copy| copy.error.as_ref().map(|error| format!("copy {:?}: {error}", copy.name)))
            .collect();
        let outcome = if failed.is_empty() { Outcome::Succeeded } else { Outcome::Failed { error: failed.join("; ") } };
        (totals, outcome)
    };
    run_operation(context, Operation::Copy, arguments([("to", names.join(","))]), false, work, judge).await
}

/// The copies a run addresses: `to`, or every configured one.
fn selected(context: &OpContext, to: Option<&str>) -> Result<Vec<String>, CopyError> {
    let copies = &context.config.copies;
    if let Some(name) = &copies.opened {
        return Err(CopyError::FromCopy { name: name.clone() });
    }
    if copies.list.is_empty() {
        return Err(CopyError::NoCopies { file: context.config.source.file.display().to_string() });
    }
    match to {
        Some(name) => {
            context.config.for_copy(name).map_err(|error| CopyError::Open(error.into()))?;
            Ok(vec![name.to_owned()])
        }
        None => Ok(copies.names()),
    }
}

/// Copy `name`, opened with the primary's key material, and checked to hold the primary's master
/// key (a repository created with plain `lifeboat init` and the same passphrase would open too).
async fn open_copy(context: &OpContext, name: &str) -> Result<Repository, CopyError> {
    let copy = open_copy_repository(&context.config, name).await?;
    let describe = |file: &crate::repository::RepoFile| match &file.key_id {
        Some(key_id) => format!("key id {key_id}"),
        None => "unencrypted".to_owned(),
    };
    let (found, expected) = (copy.file(), context.repository.file());
    if found.key_id != expected.key_id || found.cipher != expected.cipher {
        return Err(CopyError::OtherMasterKey {
            name: name.to_owned(),
            location: copy.location(),
            found: describe(found),
            expected: describe(expected),
        });
    }
    Ok(copy)
}

/// One copy brought up to date; a failure is in the result, so the other copies still go.
async fn copy_to(context: &OpContext, snapshot: &Snapshot, name: &str) -> CopyResultView {
    let mut result = CopyResultView {
        name: name.to_owned(),
        location: None,
        copied: Copied::default(),
        lag_before: None,
        lag: None,
        error: None,
    };
    let copy = match open_copy(context, name).await {
        Ok(copy) => Arc::new(copy),
        Err(error) => {
            result.error = Some(error.to_string());
            return result;
        }
    };
    result.location = Some(copy.location());
    let layout = &context.layout;
    let lease = match Lease::acquire(
        copy.clone(),
        &layout.lock(listing::LOCK),
        "copy",
        DEFAULT_TTL,
        context.config.backup.lock_wait,
    )
    .await
    {
        Ok(lease) => lease,
        Err(error) => {
            result.error = Some(error.to_string());
            return result;
        }
    };
    let outcome = bring_up_to_date(context.repository.as_ref(), &copy, layout, snapshot, &lease, &mut result).await;
    // What a killed or failed run left on the copy: partial uploads, a manifest not yet recorded.
    if !lease.is_lost() {
        leftovers::sweep(&copy, layout).await;
    }
    if let Err(error) = lease.release().await {
        tracing::warn!(copy = name, %error, "could not release the copy's lease; it expires by itself");
    }
    if let Err(error) = outcome {
        result.error = Some(error.to_string());
    }
    match tokio::try_join!(async { Ok(held(&copy, layout).await?) }, deleted_on(&copy, layout)) {
        Ok((now_held, deleted)) => result.lag = Some(lag(snapshot, &now_held, &deleted, layout)),
        Err(error) => tracing::warn!(copy = name, %error, "could not read the copy to measure its lag"),
    }
    result
}

async fn bring_up_to_date(
    primary: &Repository,
    copy: &Arc<Repository>,
    layout: &ClusterLayout,
    snapshot: &Snapshot,
    lease: &Lease,
    result: &mut CopyResultView,
) -> Result<(), CopyError> {
    let mut held = held(copy, layout).await?;
    let deleted = deleted_on(copy, layout).await?;
    result.lag_before = Some(lag(snapshot, &held, &deleted, layout));
    let still_ours = || {
        if lease.is_lost() {
            Err(CopyError::LeaseLost { location: copy.location(), cluster: layout.name().to_string() })
        } else {
            Ok(())
        }
    };

    // 1. The cluster record, after the journal event that records the identity (as on the primary).
    let record_key = layout.cluster_record();
    if let Some(meta) = snapshot.objects.get(record_key.as_str())
        && !holds(&held, meta)
    {
        if let Some(record) = ClusterRecord::read(primary, layout).await? {
            let known = journal::writable_head(copy, layout).await?.and_then(|(head, _)| head.state.identity);
            if known.is_none() {
                let event = Event::Identity {
                    system_identifier: record.system_identifier,
                    wal_segment_size: record.wal_segment_size,
                    recreated: false,
                };
                journal::append(copy, layout, event).await?;
            }
        }
        copy_objects(primary, copy, [meta.clone()].into_iter(), &held, result).await?;
        held.insert(meta.key.clone(), meta.size);
    }

    // 2. WAL before the backups that need it.
    still_ours()?;
    let wal_prefix = layout.wal_prefix();
    let wal: Vec<ObjectMeta> = snapshot.under(&wal_prefix).filter(|meta| !holds(&held, meta)).cloned().collect();
    let before = result.copied.objects;
    copy_objects(primary, copy, wal.iter().cloned(), &held, result).await?;
    result.copied.wal_files += result.copied.objects - before;
    for meta in wal {
        held.insert(meta.key, meta.size);
    }

    // 3. Each backup and dump: data objects, manifest, journal entry.
    let state = journal::writable_head(copy, layout).await?.map(|(head, _)| head.state).unwrap_or_default();
    let recorded: BTreeSet<BackupId> = state.items.iter().map(|item| item.id).collect();
    for &id in &snapshot.ids {
        still_ours()?;
        if deleted.contains(&id) {
            // Deleted on the copy by lifeboat (by hand, or by the copy's own expiry): it stays deleted.
            continue;
        }
        let manifest_key = listing::manifest_key(layout, id);
        let Some(manifest) = snapshot.objects.get(manifest_key.as_str()) else { continue };
        // The hash of the manifest's plaintext, which is what journals record, read before the
        // manifest is stored so that only the journal append comes between the two.
        let manifest_blake3 = match recorded.contains(&id) {
            true => None,
            false => Some(hash_hex(&primary.get_bytes(&manifest_key).await?)),
        };
        if !held.contains_key(&manifest_key) {
            let prefix = listing::object_prefix(layout, id);
            let data = snapshot.under(&prefix).filter(|meta| meta.key != manifest_key).cloned();
            // Objects of an interrupted run are compared, not trusted: the manifest vouches for them.
            copy_objects(primary, copy, data, &Held::new(), result).await?;
            copy_objects(primary, copy, [manifest.clone()].into_iter(), &Held::new(), result).await?;
            held.insert(manifest_key.clone(), manifest.size);
            result.copied.backups.push(id);
        }
        if let Some(manifest_blake3) = manifest_blake3 {
            journal::append(copy, layout, Event::Completed { id, manifest_blake3 }).await?;
        }
    }

    // 4. Reports of what the copy holds, then their verdicts in the copy's journal.
    still_ours()?;
    let mut reports = Vec::new();
    for &id in &snapshot.ids {
        let prefix = listing::verify_prefix(layout, id);
        reports.extend(snapshot.under(&prefix).filter(|meta| !holds(&held, meta)).cloned());
    }
    let before = result.copied.objects;
    copy_objects(primary, copy, reports.into_iter(), &held, result).await?;
    result.copied.reports += result.copied.objects - before;
    record_verdicts(copy, layout).await
}

/// Appends a `Verified` entry to the copy's journal for each backup whose newest report there is
/// not the one its journal last recorded.
async fn record_verdicts(copy: &Repository, layout: &ClusterLayout) -> Result<(), CopyError> {
    let Some((head, _)) = journal::writable_head(copy, layout).await? else { return Ok(()) };
    for (id, reports) in crate::format::verify_report::read_latest(copy, layout).await? {
        let (Some(item), Ok(report)) = (head.state.item(id), &reports.latest) else { continue };
        let latest = reports.latest_key.to_string();
        if item.verification.as_ref().is_some_and(|recorded| recorded.verdict.report == latest) {
            continue;
        }
        let verdict = Verdict::of(report, &reports.latest_key, &reports.latest_bytes);
        let event = Event::Verified { id, manifest_blake3: item.manifest_blake3.clone(), verdict };
        journal::append(copy, layout, event).await?;
    }
    Ok(())
}

/// Copies `objects` to the copy, a few at a time. One already held whole (`held`, or found on the
/// copy with its length) is compared with the primary's instead, and written again only if it differs.
async fn copy_objects(
    primary: &Repository,
    copy: &Repository,
    objects: impl Iterator<Item = ObjectMeta>,
    held: &Held,
    result: &mut CopyResultView,
) -> Result<(), CopyError> {
    let mut objects = objects.filter(|meta| !holds(held, meta));
    let mut running = JoinSet::new();
    loop {
        while running.len() < PARALLEL_OBJECTS {
            let Some(meta) = objects.next() else { break };
            let (from, to) = (primary.store().clone(), copy.store().clone());
            running.spawn(async move { copy_one(from.as_ref(), to.as_ref(), &meta).await });
        }
        match running.join_next().await {
            None => return Ok(()),
            Some(joined) => match joined.expect("a copy task does not panic")? {
                Written::Copied(bytes) => {
                    result.copied.objects += 1;
                    result.copied.bytes += bytes;
                }
                Written::AlreadyThere => result.copied.already_there += 1,
            },
        }
    }
}

enum Written {
    Copied(u64),
    AlreadyThere,
}

async fn copy_one(from: &dyn ObjectStore, to: &dyn ObjectStore, meta: &ObjectMeta) -> Result<Written, CopyError> {
    let key = &meta.key;
    if to.head(key).await?.is_some_and(|there| there.size == meta.size) {
        let (theirs, ours) = tokio::try_join!(fingerprint(from, key), fingerprint(to, key))?;
        if theirs == ours {
            return Ok(Written::AlreadyThere);
        }
    }
    let hashing = HashingReader::new(from.get(key).await?);
    let sent = hashing.fingerprint.clone();
    to.put(key, Box::new(hashing), PutMode::Overwrite).await?;
    let sent = sent.lock().expect("not poisoned").finish();
    let back = fingerprint(to, key).await?;
    if back != sent {
        return Err(CopyError::Mismatch { location: to.location(), key: key.clone(), detail: sent.compare(&back) });
    }
    Ok(Written::Copied(sent.length))
}

/// The length and BLAKE3 of an object's stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    length: u64,
    blake3: [u8; 32],
}

impl Fingerprint {
    /// How `other` (the copy's) differs from this one (the primary's).
    fn compare(&self, other: &Fingerprint) -> String {
        if self.length == other.length {
            "same length, different bytes".to_owned()
        } else {
            format!("length {} on the copy, {} on the primary", other.length, self.length)
        }
    }
}

#[derive(Default)]
struct Hashing {
    hasher: blake3::Hasher,
    length: u64,
}

impl Hashing {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint { length: self.length, blake3: *self.hasher.finalize().as_bytes() }
    }
}

async fn fingerprint(store: &dyn ObjectStore, key: &ObjectKey) -> Result<Fingerprint, StorageError> {
    let mut reader = store.get(key).await?;
    let mut hashing = Hashing::default();
    let mut buffer = vec![0; READ_BUFFER];
    loop {
        let read = reader.read(&mut buffer).await.map_err(|source| StorageError::Io {
            location: store.location(),
            operation: "get",
            key: key.to_string(),
            source,
        })?;
        if read == 0 {
            return Ok(hashing.finish());
        }
        hashing.update(&buffer[..read]);
    }
}

/// Passes a stream through, hashing what goes by: the fingerprint of what was sent.
struct HashingReader {
    inner: crate::storage::ByteReader,
    fingerprint: Arc<Mutex<Hashing>>,
}

impl HashingReader {
    fn new(inner: crate::storage::ByteReader) -> HashingReader {
        HashingReader { inner, fingerprint: Arc::default() }
    }
}

impl AsyncRead for HashingReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let filled = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            self.fingerprint.lock().expect("not poisoned").update(&buf.filled()[filled..]);
        }
        polled
    }
}

/// `lifeboat copy --check`: every object each copy (or only `to`) holds is read on both sides and
/// compared; objects the primary no longer holds, or the copy does not hold yet, are counted.
pub async fn check(context: &OpContext, to: Option<&str>) -> Result<CopyCheckView, OpError> {
    let names = selected(context, to)?;
    let layout = &context.layout;
    let snapshot = Snapshot::read(&context.repository, layout).await?;
    let mut copies = Vec::new();
    for name in names {
        let mut result = CopyCheckResult {
            name: name.clone(),
            location: None,
            checked: 0,
            bytes: 0,
            only_on_copy: 0,
            not_copied: 0,
            differing: Vec::new(),
            error: None,
        };
        if let Err(error) = check_one(context, &snapshot, &name, &mut result).await {
            result.error = Some(error.to_string());
        }
        copies.push(result);
    }
    Ok(CopyCheckView { cluster: layout.name().to_string(), primary: context.repository.location(), copies })
}

async fn check_one(
    context: &OpContext,
    snapshot: &Snapshot,
    name: &str,
    result: &mut CopyCheckResult,
) -> Result<(), CopyError> {
    let copy = open_copy(context, name).await?;
    result.location = Some(copy.location());
    let layout = &context.layout;
    let own = [layout.journal_prefix(), layout.audit_prefix(), format!("{}locks/", layout.prefix())];
    let mut both = Vec::new();
    for (key, _) in held(&copy, layout).await? {
        if own.iter().any(|prefix| key.as_str().starts_with(prefix.as_str())) {
            continue;
        }
        if snapshot.objects.contains_key(key.as_str()) {
            both.push(key);
        } else {
            result.only_on_copy += 1;
        }
    }
    result.not_copied = snapshot.objects.len() as u64 - both.len() as u64;
    let mut keys = both.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < PARALLEL_OBJECTS {
            let Some(key) = keys.next() else { break };
            let (from, to) = (context.repository.store().clone(), copy.store().clone());
            running.spawn(async move {
                let compared = tokio::try_join!(fingerprint(from.as_ref(), &key), fingerprint(to.as_ref(), &key));
                (key, compared)
            });
        }
        let Some(joined) = running.join_next().await else { break };
        let (key, compared) = joined.expect("a check task does not panic");
        let (primary, copied) = compared?;
        result.checked += 1;
        result.bytes += copied.length;
        if primary != copied {
            result.differing.push(Difference { key: key.to_string(), detail: primary.compare(&copied) });
        }
    }
    result.differing.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(())
}
