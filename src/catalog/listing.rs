//! The catalog of one cluster: which backups and dumps exist (those with a manifest, G1), what
//! each one is, whether verification reports exist for it, and deleting one.
//!
//! `lifeboat list`, `info` and `delete` are thin layers over this module. Deleting is recorded in
//! the cluster's journal first, then is the write order reversed: the manifest goes first, so the backup leaves every listing at once, and its
//! data objects after it (a crash in between leaves unreferenced objects, which the next backup
//! or dump of the cluster removes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::id::{BackupId, BackupKind};
use super::layout::ClusterLayout;
use super::lease::{DEFAULT_TTL, Lease, LeaseError};
use crate::format::backup_manifest::{BackupManifest, MANIFEST, ManifestError};
use crate::format::dump_manifest::{DumpKeys, DumpManifest};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, StorageError};

/// The lease a delete takes: the one base backups and dumps take, so none of them overlap.
pub const LOCK: &str = "backup";

/// One backup or dump, as its manifest describes it.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A full or incremental base backup.
    Physical(Box<BackupManifest>),
    Dump(Box<DumpManifest>),
}

impl Entry {
    pub fn id(&self) -> BackupId {
        match self {
            Entry::Physical(manifest) => manifest.id,
            Entry::Dump(manifest) => manifest.id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{location}: cluster {cluster:?} has no backup or dump {id}; {available}")]
    NotFound { location: String, cluster: String, id: String, available: String },

    #[error("{location}: cluster {cluster:?} has no backups or dumps yet, so there is no {what}")]
    Empty { location: String, cluster: String, what: String },

    #[error(
        "refusing to delete {id}: the incremental backups {} are built on it and could not be restored without \
         it. Delete them first (newest first), or let `lifeboat expire` remove whole chains",
        dependents.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NeededByIncrementals { id: BackupId, dependents: Vec<BackupId> },

    #[error("{location}: the dump manifest {key} is unreadable ({detail})")]
    DumpManifest { location: String, key: ObjectKey, detail: String },

    #[error("{location}: the manifest {key} does not authenticate ({detail}); it is damaged or was altered")]
    Damaged { location: String, key: ObjectKey, detail: String },

    #[error(
        "refusing to delete {id}: it is the only full backup of cluster {cluster:?}, and without a base \
         backup no point-in-time restore is possible and all the archived WAL is useless. Take a new backup \
         first (`lifeboat backup`), then delete this one; or pass --force to delete it anyway"
    )]
    OnlyFullBackup { id: BackupId, cluster: String },

    #[error(
        "refusing to delete {id}: its manifest {key} is under S3 Object Lock retention until {until}, so it cannot \
         be deleted before then (not even with --force). Delete it after that date"
    )]
    Locked { id: BackupId, key: ObjectKey, until: chrono::DateTime<chrono::Utc> },

    #[error(
        "lost the lock {lock} while deleting {id} (this process stalled past the lease's expiry); nothing \
         more was deleted. Run the delete again"
    )]
    LeaseLost { lock: String, id: BackupId },

    #[error(transparent)]
    Manifest(#[from] ManifestError),

    #[error(transparent)]
    Lease(#[from] LeaseError),

    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl CatalogError {
    /// The object and what is wrong with it, when the error says a manifest is damaged (as opposed
    /// to the repository being unreachable).
    pub fn damage(&self) -> Option<(ObjectKey, String)> {
        match self {
            CatalogError::Damaged { key, detail, .. } | CatalogError::DumpManifest { key, detail, .. } => {
                Some((key.clone(), detail.clone()))
            }
            CatalogError::Manifest(ManifestError::Invalid { key, detail, .. }) => Some((key.clone(), detail.clone())),
            CatalogError::Manifest(error @ ManifestError::Unsupported { key, .. }) => {
                Some((key.clone(), error.to_string()))
            }
            _ => None,
        }
    }
}

impl From<StorageError> for CatalogError {
    fn from(error: StorageError) -> Self {
        CatalogError::Repository(error.into())
    }
}

/// The key of the manifest of `id`, whatever its kind.
pub fn manifest_key(layout: &ClusterLayout, id: BackupId) -> ObjectKey {
    match id.kind() {
        BackupKind::Full | BackupKind::Incremental => layout.backup_manifest(id),
        BackupKind::Dump => DumpKeys::new(layout, id).manifest(),
    }
}

/// `clusters/<name>/backups/<id>/` or `clusters/<name>/dumps/<id>/`: every object of `id`.
pub fn object_prefix(layout: &ClusterLayout, id: BackupId) -> String {
    match id.kind() {
        BackupKind::Full | BackupKind::Incremental => layout.backup_dir(id),
        BackupKind::Dump => DumpKeys::new(layout, id).prefix(),
    }
}

/// `clusters/<name>/verify/<id>/`: the verification reports of `id`.
pub fn verify_prefix(layout: &ClusterLayout, id: BackupId) -> String {
    format!("{}{id}/", layout.verify_prefix())
}

/// The ids of every backup and dump of the cluster that has a manifest, oldest first.
pub async fn list_ids(repository: &Repository, layout: &ClusterLayout) -> Result<Vec<BackupId>, StorageError> {
    let mut ids = Vec::new();
    for (prefix, physical) in [(layout.backups_prefix(), true), (layout.dumps_prefix(), false)] {
        for meta in repository.store().list(&prefix).await? {
            let Some(rest) = meta.key.as_str().strip_prefix(prefix.as_str()) else { continue };
            let Some((id, MANIFEST)) = rest.split_once('/') else { continue };
            if let Ok(id) = id.parse::<BackupId>()
                && id.kind().is_physical() == physical
            {
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Reads the manifest of `id`.
pub async fn read_entry(repository: &Repository, layout: &ClusterLayout, id: BackupId) -> Result<Entry, CatalogError> {
    Ok(read_manifest(repository, layout, id).await?.0)
}

/// Reads and authenticates the manifest of `id`: what it says, and the BLAKE3 of its plaintext
/// (what the journal records).
pub async fn read_manifest(
    repository: &Repository,
    layout: &ClusterLayout,
    id: BackupId,
) -> Result<(Entry, String), CatalogError> {
    let key = manifest_key(layout, id);
    let bytes = match repository.get_bytes(&key).await {
        Ok(bytes) => bytes,
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => {
            return Err(not_found(repository, layout, &id.to_string(), &[]));
        }
        Err(RepositoryError::Object(error)) => {
            return Err(CatalogError::Damaged { location: repository.location(), key, detail: error.to_string() });
        }
        Err(error) => return Err(error.into()),
    };
    let entry = match id.kind() {
        BackupKind::Full | BackupKind::Incremental => {
            Entry::Physical(Box::new(BackupManifest::from_json(&bytes, &repository.location(), &key)?))
        }
        BackupKind::Dump => {
            let manifest = DumpManifest::from_json(&bytes).map_err(|detail| CatalogError::DumpManifest {
                location: repository.location(),
                key,
                detail,
            })?;
            Entry::Dump(Box::new(manifest))
        }
    };
    Ok((entry, crate::format::journal_entry::hash_hex(&bytes)))
}

/// A manifest that exists but cannot be used: it does not authenticate, or does not parse.
#[derive(Debug, Clone)]
pub struct DamagedManifest {
    pub id: BackupId,
    pub key: ObjectKey,
    pub detail: String,
}

/// Every backup and dump whose manifest could be read, oldest first, and those whose manifest could not.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// The BLAKE3 of each entry's manifest.
    pub hashes: BTreeMap<BackupId, String>,
    pub damaged: Vec<DamagedManifest>,
}

impl Listing {
    /// The ids of the readable base backups (full or incremental), for messages that suggest another one.
    pub fn intact_full_backups(&self) -> Vec<BackupId> {
        self.entries.iter().map(Entry::id).filter(|id| id.kind().is_physical()).collect()
    }
}

/// Every backup and dump. One damaged manifest does not hide the others: it is in `damaged`.
pub async fn read_all(repository: &Repository, layout: &ClusterLayout) -> Result<Listing, CatalogError> {
    let mut listing = Listing::default();
    for id in list_ids(repository, layout).await? {
        match read_manifest(repository, layout, id).await {
            Ok((entry, hash)) => {
                listing.hashes.insert(id, hash);
                listing.entries.push(entry);
            }
            // Deleted since it was listed.
            Err(CatalogError::NotFound { .. }) => {}
            Err(error) => match error.damage() {
                Some((key, detail)) => listing.damaged.push(DamagedManifest { id, key, detail }),
                None => return Err(error),
            },
        }
    }
    Ok(listing)
}

fn not_found(repository: &Repository, layout: &ClusterLayout, id: &str, existing: &[BackupId]) -> CatalogError {
    let available = if existing.is_empty() {
        "`lifeboat list` shows what exists".to_owned()
    } else {
        let names: Vec<String> = existing.iter().map(ToString::to_string).collect();
        format!("`lifeboat list` shows what exists: {}", names.join(", "))
    };
    CatalogError::NotFound {
        location: repository.location(),
        cluster: layout.name().to_string(),
        id: id.to_owned(),
        available,
    }
}

/// The id `text` names: an existing id, or `latest` (the newest backup or dump).
pub async fn resolve(repository: &Repository, layout: &ClusterLayout, text: &str) -> Result<BackupId, CatalogError> {
    let ids = list_ids(repository, layout).await?;
    if text == "latest" {
        return ids.last().copied().ok_or_else(|| CatalogError::Empty {
            location: repository.location(),
            cluster: layout.name().to_string(),
            what: "latest one".to_owned(),
        });
    }
    match text.parse::<BackupId>() {
        Ok(id) if ids.contains(&id) => Ok(id),
        _ => Err(not_found(repository, layout, text, &ids)),
    }
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub id: BackupId,
    /// Objects removed, the manifest and verification reports included.
    pub objects: usize,
    /// Their stored bytes.
    pub bytes: u64,
    /// Of those, verification reports.
    pub reports: usize,
}

/// Deletes backup or dump `id` under the cluster's lease (waiting up to `lock_wait`): the manifest
/// first, then its data objects, then its verification reports. Refuses to delete the only full
/// backup unless `force`.
pub async fn delete(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    id_text: &str,
    force: bool,
    lock_wait: Duration,
) -> Result<Deleted, CatalogError> {
    let lock = layout.lock(LOCK);
    let lease = Lease::acquire(repository.clone(), &lock, &format!("delete {id_text}"), DEFAULT_TTL, lock_wait).await?;
    let result = delete_locked(&repository, layout, id_text, force, &lease, &lock).await;
    // The deleted backup's empty directories go too, with what interrupted writes left.
    if !lease.is_lost() {
        super::leftovers::sweep(&repository, layout).await;
    }
    if let Err(error) = lease.release().await {
        tracing::warn!(%error, "could not release the lock {lock}; it expires by itself");
    }
    result
}

async fn delete_locked(
    repository: &Repository,
    layout: &ClusterLayout,
    id_text: &str,
    force: bool,
    lease: &Lease,
    lock: &ObjectKey,
) -> Result<Deleted, CatalogError> {
    // Under the lease, so no backup completes or other delete runs between the check and the delete.
    let id = resolve(repository, layout, id_text).await?;
    if id.kind() == BackupKind::Full && !force {
        let fulls = list_ids(repository, layout).await?.into_iter().filter(|id| id.kind() == BackupKind::Full).count();
        if fulls <= 1 {
            return Err(CatalogError::OnlyFullBackup { id, cluster: layout.name().to_string() });
        }
    }
    if id.kind().is_physical() {
        let dependents: Vec<BackupId> = read_all(repository, layout)
            .await?
            .entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Physical(manifest) => {
                    manifest.incremental.as_ref().map(|incremental| (manifest.id, incremental))
                }
                Entry::Dump(_) => None,
            })
            .filter(|(_, incremental)| incremental.chain.contains(&id))
            .map(|(dependent, _)| dependent)
            .collect();
        if !dependents.is_empty() {
            return Err(CatalogError::NeededByIncrementals { id, dependents });
        }
    }
    let manifest = manifest_key(layout, id);
    // Asked before the deletion is journaled: a locked backup stays listed and whole.
    if let Some(until) = repository.store().locked_until(&manifest).await?
        && until > chrono::Utc::now()
    {
        return Err(CatalogError::Locked { id, key: manifest, until });
    }
    let mut objects = repository.store().list(&object_prefix(layout, id)).await?;
    let reports = repository.store().list(&verify_prefix(layout, id)).await?;
    if lease.is_lost() {
        return Err(CatalogError::LeaseLost { lock: lock.to_string(), id });
    }
    // Recorded before anything goes, so no reader ever takes the deletion for a loss (G9); then the
    // commit point goes first: from here on the backup is not listed (G1, in reverse).
    super::journal::append(repository, layout, crate::format::journal_entry::Event::Deleted { id }).await?;
    repository.store().delete(&manifest).await?;
    let mut bytes = 0;
    let mut count = 0;
    objects.retain(|meta| {
        if meta.key == manifest {
            bytes += meta.size;
            count += 1;
            false
        } else {
            true
        }
    });
    for meta in objects.iter().chain(&reports) {
        if lease.is_lost() {
            return Err(CatalogError::LeaseLost { lock: lock.to_string(), id });
        }
        repository.store().delete(&meta.key).await?;
        bytes += meta.size;
        count += 1;
    }
    tracing::info!(%id, objects = count, bytes, "deleted");
    Ok(Deleted { id, objects: count, bytes, reports: reports.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;

    #[test]
    fn keys_of_an_id_depend_on_its_kind() {
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let full: BackupId = "20261127T034512Z-full".parse().unwrap();
        let dump: BackupId = "20261127T034512Z-dump".parse().unwrap();
        assert_eq!(manifest_key(&layout, full).as_str(), "clusters/main/backups/20261127T034512Z-full/manifest");
        assert_eq!(manifest_key(&layout, dump).as_str(), "clusters/main/dumps/20261127T034512Z-dump/manifest");
        assert_eq!(object_prefix(&layout, dump), "clusters/main/dumps/20261127T034512Z-dump/");
        assert_eq!(verify_prefix(&layout, full), "clusters/main/verify/20261127T034512Z-full/");
    }
}
