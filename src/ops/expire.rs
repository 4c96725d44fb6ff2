//! `lifeboat expire`: carries out the retention policy ([`crate::retention`]) on one repository
//! (the primary, or a copy with a policy of its own: the caller passes both); [`expire_copies`]
//! does it for every `[[copies]]` entry.
//!
//! Under the cluster's lease ([`listing::LOCK`], so no backup, dump or delete runs meanwhile) it
//! surveys the repository, asks the policy, and deletes in the order that keeps every step
//! complete-or-invisible, the write order reversed (docs/format.md, "Deleting"):
//! 1. per backup or dump, oldest first: the journal's `deleted` entry, then the manifest (from
//!    here on it is not listed), then its data objects, then its verification reports;
//! 2. the other reports the policy lets go (older reports of kept backups, reports of deleted ones);
//! 3. WAL no kept backup needs (never any newer than the earliest kept backup's start, so a
//!    `wal-push` running meanwhile loses nothing it acknowledged);
//! 4. directories under `backups/` and `dumps/` without a manifest: what an interrupted expire,
//!    delete or backup left. With the lease held nothing is being written there.
//!
//! A run killed anywhere leaves only objects nothing refers to, which the next run removes: a
//! deletion the journal records whose manifest is still stored is finished, manifest-less
//! directories go (step 4), and WAL and reports are decided afresh.
//!
//! What is under S3 Object Lock retention is not an error: a manifest whose retention date lies
//! ahead keeps its backup (asked before its deletion is journaled), and a delete refused as
//! locked is reported with the date and left for a later run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::OpContext;
use super::event::{Operation, Outcome, Totals};
use super::run::{OpError, arguments, run_operation};
use crate::backup::orphans::remove_orphans_under;
use crate::catalog::audit;
use crate::catalog::cluster::ClusterRecord;
use crate::catalog::id::BackupId;
use crate::catalog::journal;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::{DEFAULT_TTL, Lease};
use crate::catalog::listing::{self, CatalogError, Entry};
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::{SegmentSize, WalFile};
use crate::config::{Config, Retention};
use crate::format::journal_entry::Event as JournalEvent;
use crate::repository::Repository;
use crate::restore::RestoreError;
use crate::restore::plan::PlanError;
use crate::retention::{self, Decision, Dump, FullBackup, Inventory, StoredReports, WalObject};
use crate::storage::{ObjectKey, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(
        "{key} cannot be read ({detail}), so expire cannot tell which WAL backup {id} needs and deletes nothing. \
         Restore the object, or remove the backup with `lifeboat delete {id} --force`, then run expire again"
    )]
    Damaged { id: BackupId, key: String, detail: String },

    #[error(
        "lost the lock {lock} during expire (this process stalled past the lease's expiry); it stopped before \
         deleting anything more. Run `lifeboat expire` again"
    )]
    LeaseLost { lock: String },

    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<StorageError> for ExpireError {
    fn from(error: StorageError) -> Self {
        ExpireError::Catalog(error.into())
    }
}

impl From<journal::JournalError> for ExpireError {
    fn from(error: journal::JournalError) -> Self {
        ExpireError::Catalog(error.into())
    }
}

/// What an expire run decided and did.
#[derive(Debug, Clone)]
pub struct Expired {
    pub cluster: String,
    pub location: String,
    pub dry_run: bool,
    pub policy: Retention,
    /// The time the policy was applied at.
    pub now: DateTime<Utc>,
    pub decision: Decision,
    /// Backups and dumps whose manifest this run deleted (they are gone from listings).
    pub deleted_items: Vec<BackupId>,
    /// Backups and dumps whose deletion the journal recorded before this run (an interrupted
    /// expire or delete), finished by it.
    pub unfinished: Vec<BackupId>,
    /// Keys deleted (backup, dump and report objects, WAL), with their stored sizes.
    pub deleted: BTreeMap<String, u64>,
    /// Objects a delete was refused for because of S3 Object Lock, with their retention date.
    pub locked: Vec<(String, DateTime<Utc>)>,
    /// Directories without a manifest that were removed, and their object count.
    pub leftovers: Vec<(String, usize)>,
    /// The stored bytes of those.
    pub leftover_bytes: u64,
    /// The stored size of each report and WAL object listed.
    sizes: BTreeMap<String, u64>,
}

impl Expired {
    /// Stored bytes deleted.
    pub fn bytes(&self) -> u64 {
        self.deleted.values().sum::<u64>() + self.leftover_bytes
    }

    /// Objects deleted, leftovers included.
    pub fn objects(&self) -> usize {
        self.deleted.len() + self.leftovers.iter().map(|(_, objects)| objects).sum::<usize>()
    }
}

/// Applies `policy` to the context's repository (`dry_run`: decides only). The caller chooses
/// the policy: the primary's `[backup] retention`, or a copy's own.
pub async fn expire(context: &OpContext, policy: &Retention, dry_run: bool) -> Result<Expired, OpError> {
    let arguments = arguments([
        ("dry_run", if dry_run { "true".to_owned() } else { String::new() }),
        ("policy", policy.to_string()),
    ]);
    let lock_wait = context.config.backup.lock_wait;
    let work = async {
        expire_repository(context.repository.clone(), &context.layout, policy, Utc::now(), dry_run, lock_wait)
            .await
            .map_err(OpError::from)
    };
    run_operation(context, Operation::Expire, arguments, false, work, |expired: &Expired| {
        let deleted = expired
            .deleted_items
            .iter()
            .map(ToString::to_string)
            .chain(
                expired
                    .decision
                    .wal
                    .iter()
                    .filter(|object| expired.deleted.contains_key(&object.key))
                    .map(|object| object.key.rsplit('/').next().unwrap_or_default().to_owned()),
            )
            .collect();
        (Totals { bytes: expired.bytes(), created: Vec::new(), deleted }, Outcome::Succeeded)
    })
    .await
}

/// What [`expire_copies`] did on one copy: its expire, or why it could not run there.
#[derive(Debug)]
pub struct CopyExpired {
    pub name: String,
    pub result: Result<Expired, OpError>,
}

/// Applies each copy's own policy (its `retention`, else `[backup] retention`) to that copy, one
/// audited operation per copy. A copy that cannot be opened or expired does not stop the others.
pub async fn expire_copies(config: &Config, dry_run: bool) -> Vec<CopyExpired> {
    let mut done = Vec::new();
    for name in config.copies.names() {
        let result = async {
            let context = super::open_copy(config, &name).await?;
            let policy = context.config.backup.retention.clone();
            expire(&context, &policy, dry_run).await
        }
        .await;
        done.push(CopyExpired { name, result });
    }
    done
}

/// The library function under [`expire`]: applies `policy` at `now` to `repository`, under the
/// cluster's lease (waiting up to `lock_wait`) unless `dry_run`.
pub async fn expire_repository(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    policy: &Retention,
    now: DateTime<Utc>,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<Expired, ExpireError> {
    if dry_run {
        return plan(&repository, layout, policy, now, true).await;
    }
    let lock = layout.lock(listing::LOCK);
    let lease = Lease::acquire(repository.clone(), &lock, "expire", DEFAULT_TTL, lock_wait)
        .await
        .map_err(CatalogError::from)?;
    let result = async {
        let mut expired = plan(&repository, layout, policy, now, false).await?;
        carry_out(&repository, layout, &lease, &lock, &mut expired).await?;
        Ok(expired)
    }
    .await;
    if !lease.is_lost() {
        crate::catalog::leftovers::sweep(&repository, layout).await;
    }
    if let Err(error) = lease.release().await {
        tracing::warn!(%error, "could not release the lock {lock}; it expires by itself");
    }
    result
}

/// Surveys the repository and decides; what is under Object Lock retention counts as kept.
async fn plan(
    repository: &Repository,
    layout: &ClusterLayout,
    policy: &Retention,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Expired, ExpireError> {
    let (mut inventory, sizes) = inventory(repository, layout).await?;
    let mut decision = retention::decide(&inventory, policy, now);
    for item in decision.items.iter().filter(|item| !item.fate.is_kept()) {
        let manifest = listing::manifest_key(layout, item.id);
        if let Some(until) = repository.store().locked_until(&manifest).await?
            && until > now
        {
            inventory.locked.insert(item.id, until);
        }
    }
    if !inventory.locked.is_empty() {
        decision = retention::decide(&inventory, policy, now);
    }
    Ok(Expired {
        cluster: layout.name().to_string(),
        location: repository.location(),
        dry_run,
        policy: policy.clone(),
        now,
        decision,
        deleted_items: Vec::new(),
        unfinished: inventory.unfinished_deletions.clone(),
        deleted: BTreeMap::new(),
        locked: inventory
            .locked
            .iter()
            .map(|(id, until)| (listing::manifest_key(layout, *id).to_string(), *until))
            .collect(),
        leftovers: Vec::new(),
        leftover_bytes: 0,
        sizes,
    })
}

/// What the repository holds, for the policy.
async fn inventory(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<(Inventory, BTreeMap<String, u64>), ExpireError> {
    let mut sizes = BTreeMap::new();
    let survey = audit::survey(repository, layout).await?;
    let journal = journal::read(repository, layout).await?;
    let state = journal.state().cloned().unwrap_or_default();
    let listed: BTreeSet<BackupId> = survey.entries.iter().map(Entry::id).collect();
    let mut inventory =
        Inventory { deleted: state.deleted.iter().map(|deletion| deletion.id).collect(), ..Inventory::default() };
    for id in listing::list_ids(repository, layout).await? {
        if listed.contains(&id) {
            continue;
        }
        if state.deletion(id).is_some() && state.item(id).is_none() {
            inventory.unfinished_deletions.push(id);
            continue;
        }
        // Not listed and not deleted: its manifest is damaged (or it vanished just now).
        if let Err(error) = listing::read_manifest(repository, layout, id).await {
            let key = listing::manifest_key(layout, id).to_string();
            match error {
                CatalogError::NotFound { .. } => {}
                error => return Err(ExpireError::Damaged { id, key, detail: error.to_string() }),
            }
        }
    }
    for entry in &survey.entries {
        let verified = survey.verifications.get(&entry.id()).map(|verification| verification.passed);
        match entry {
            Entry::Physical(manifest) => inventory.backups.push(FullBackup {
                id: manifest.id,
                chain: manifest.incremental.as_ref().map(|incremental| incremental.chain.clone()).unwrap_or_default(),
                timeline: manifest.timeline,
                start_lsn: manifest.start_lsn,
                stop_lsn: manifest.stop_lsn,
                stop_time: manifest.stop_time,
                verified,
            }),
            Entry::Dump(manifest) => {
                inventory.dumps.push(Dump { id: manifest.id, finished_at: manifest.finished_at, verified })
            }
        }
    }

    let prefix = layout.verify_prefix();
    let mut reports: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
    for meta in repository.store().list(&prefix).await? {
        let id = meta.key.as_str().strip_prefix(prefix.as_str()).and_then(|rest| rest.split_once('/'));
        if let Some(Ok(id)) = id.map(|(id, _)| id.parse::<BackupId>()) {
            sizes.insert(meta.key.to_string(), meta.size);
            reports.entry(id).or_default().push(meta.key.to_string());
        }
    }
    for (id, mut keys) in reports {
        keys.sort();
        let item = state.item(id);
        let recorded = item.and_then(|item| item.verification.as_ref()).map(|v| v.verdict.report.clone());
        let recorded_restore =
            item.and_then(|item| item.restore_verification.as_ref()).map(|v| v.verdict.report.clone());
        inventory.reports.push(StoredReports { id, keys, recorded, recorded_restore });
    }

    let size = match ClusterRecord::read(repository, layout).await {
        Ok(Some(record)) => record.wal_segment_size,
        _ => state.identity.map_or(SegmentSize::DEFAULT, |identity| identity.wal_segment_size),
    };
    inventory.segment_size = size;
    for meta in repository.store().list(&layout.wal_prefix()).await? {
        let Some(file) = layout.parse_wal_key(&meta.key, size) else { continue };
        if let WalFile::History(timeline) = file {
            // An unreadable history is left out: the policy then keeps more, never less.
            match repository.get_bytes(&meta.key).await {
                Ok(bytes) => {
                    if let Ok(history) = TimelineHistory::parse(timeline, &String::from_utf8_lossy(&bytes)) {
                        inventory.histories.insert(timeline, history);
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read {}; expire keeps more WAL for it", meta.key),
            }
        }
        sizes.insert(meta.key.to_string(), meta.size);
        inventory.wal.push(WalObject { key: meta.key.to_string(), file });
    }
    Ok((inventory, sizes))
}

/// Deletes what the decision lets go, in the documented order.
async fn carry_out(
    repository: &Repository,
    layout: &ClusterLayout,
    lease: &Lease,
    lock: &ObjectKey,
    expired: &mut Expired,
) -> Result<(), ExpireError> {
    let store = repository.store().clone();
    let check_lease = || {
        if lease.is_lost() { Err(ExpireError::LeaseLost { lock: lock.to_string() }) } else { Ok(()) }
    };
    // Newest first: an incremental goes before the backups it is built on, so an expire cut short
    // never leaves one listed without its base.
    let doomed: Vec<BackupId> =
        expired.decision.items.iter().rev().filter(|item| !item.fate.is_kept()).map(|item| item.id).collect();
    let mut handled_reports = BTreeSet::new();
    let mut locked_now = BTreeSet::new();
    for id in doomed {
        check_lease()?;
        let manifest = listing::manifest_key(layout, id);
        // Asked again right before the point of no return: retention may have been set since.
        if let Some(until) = store.locked_until(&manifest).await?
            && until > expired.now
        {
            expired.locked.push((manifest.to_string(), until));
            locked_now.insert(id);
            continue;
        }
        let mut objects = store.list(&listing::object_prefix(layout, id)).await?;
        if !expired.unfinished.contains(&id) {
            // Recorded before anything goes, so no reader takes the deletion for a loss (G9).
            journal::append(repository, layout, JournalEvent::Deleted { id }).await?;
        }
        let manifest_size = objects.iter().find(|meta| meta.key == manifest).map_or(0, |meta| meta.size);
        if !delete_one(&*store, &manifest, manifest_size, expired).await? {
            locked_now.insert(id);
            continue;
        }
        expired.deleted_items.push(id);
        objects.retain(|meta| meta.key != manifest);
        for meta in objects {
            check_lease()?;
            delete_one(&*store, &meta.key, meta.size, expired).await?;
        }
        for report in store.list(&listing::verify_prefix(layout, id)).await? {
            check_lease()?;
            handled_reports.insert(report.key.to_string());
            delete_one(&*store, &report.key, report.size, expired).await?;
        }
    }
    let reports: Vec<String> = expired
        .decision
        .reports
        .iter()
        .filter(|report| !report.fate.is_kept() && !handled_reports.contains(&report.key))
        .filter(|report| report.id.is_none_or(|id| !locked_now.contains(&id)))
        .map(|report| report.key.clone())
        .collect();
    let wal: Vec<String> =
        expired.decision.wal.iter().filter(|object| !object.fate.is_kept()).map(|object| object.key.clone()).collect();
    for key in reports.into_iter().chain(wal) {
        check_lease()?;
        let size = expired.sizes.get(&key).copied().unwrap_or_default();
        let key = ObjectKey::new(key).expect("listed keys are valid");
        delete_one(&*store, &key, size, expired).await?;
    }
    check_lease()?;
    remove_leftovers(repository, layout, expired).await?;
    Ok(())
}

/// Deletes `key`; `false` (and the date recorded) when Object Lock refuses.
async fn delete_one(
    store: &dyn crate::storage::ObjectStore,
    key: &ObjectKey,
    size: u64,
    expired: &mut Expired,
) -> Result<bool, ExpireError> {
    match store.delete(key).await {
        Ok(()) => {
            expired.deleted.insert(key.to_string(), size);
            Ok(true)
        }
        Err(StorageError::Locked { until, .. }) => {
            tracing::info!("{key} is under object lock until {until}; left for a later expire");
            expired.locked.push((key.to_string(), until));
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Removes every directory under `backups/` and `dumps/` that has no manifest: objects nothing
/// refers to (an interrupted expire, delete or backup). The caller holds the lease.
async fn remove_leftovers(
    repository: &Repository,
    layout: &ClusterLayout,
    expired: &mut Expired,
) -> Result<(), ExpireError> {
    for prefix in [layout.backups_prefix(), layout.dumps_prefix()] {
        for orphans in remove_orphans_under(repository, &prefix).await? {
            let directory = listing::object_prefix(layout, orphans.id);
            if let Some((_, until)) = orphans.retained {
                expired.locked.push((directory.clone(), until));
            }
            if orphans.objects > 0 {
                expired.leftover_bytes += orphans.bytes;
                expired.leftovers.push((directory, orphans.objects));
            }
        }
    }
    Ok(())
}

/// A restore target before every backup, in a repository with a retention policy: says what the
/// policy kept, since the backups that could have reached the target were expired.
pub(super) fn explain_refused_restore(error: RestoreError, policy: &Retention) -> RestoreError {
    match error {
        RestoreError::Plan(PlanError::BeforeEveryBackup { target, reason }) if !policy.is_empty() => {
            RestoreError::Plan(PlanError::BeforeRetention { target, reason, policy: policy.to_string() })
        }
        other => other,
    }
}
