//! Removing what interrupted backups left behind (G1).
//!
//! A backup writes its data objects first and its manifest last, so a backup killed at any point
//! leaves a directory `backups/<id>/` without a manifest: never listed, never restorable, only
//! taking space. The next backup removes those while it holds the cluster's backup lease, so no
//! backup that is still running can be mistaken for one (only the lease holder writes there).
//! Keys under `backups/` that are not a backup id's are not lifeboat's and are left alone.
//!
//! A backup that fails (a full disk, a lost connection) does not wait for the next one: before
//! its lease is released it removes its own objects the same way ([`after_job`]), and the error
//! says what is left if that fails too.
//!
//! On a repository with S3 Object Lock the objects of a failed backup are retained like any others:
//! they stay until their retention date (never listed, since there is no manifest), and a backup
//! after that date removes them. They must not stop backups in the meantime.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::BackupError;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::Lease;
use crate::catalog::leftovers;
use crate::format::backup_manifest::MANIFEST;
use crate::repository::Repository;
use crate::storage::{ObjectKey, StorageError};

/// Deletes issued at once: enough to hide S3 round trips, few enough to be polite.
const PARALLEL_DELETES: usize = 16;

/// A directory without a manifest (an interrupted backup, dump or delete) whose objects were removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedOrphans {
    pub id: BackupId,
    /// Objects removed, and their stored bytes.
    pub objects: usize,
    pub bytes: u64,
    /// Objects left because S3 Object Lock still retains them, with the latest retention date.
    pub retained: Option<(usize, DateTime<Utc>)>,
}

/// Deletes every object of every backup directory that has no manifest. The caller must hold
/// the cluster's backup lease.
pub async fn remove_orphans(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<Vec<RemovedOrphans>, BackupError> {
    let removed = remove_orphans_under(repository, &layout.backups_prefix()).await?;
    // A directory Object Lock still retains was not removed, whatever went of it.
    Ok(removed.into_iter().filter(|orphans| orphans.retained.is_none()).collect())
}

/// Deletes every object of every directory `<prefix><id>/` (backups or dumps) that has no
/// manifest. The caller must hold the cluster's lease. Keys that are not under a backup or dump
/// id are not lifeboat's and are left alone.
pub async fn remove_orphans_under(repository: &Repository, prefix: &str) -> Result<Vec<RemovedOrphans>, StorageError> {
    let listing = repository.store().list(prefix).await?;
    let mut directories: BTreeMap<BackupId, (bool, Vec<(ObjectKey, u64)>)> = BTreeMap::new();
    for meta in listing {
        let Some((id, relative)) = meta.key.as_str().strip_prefix(prefix).and_then(|rest| rest.split_once('/')) else {
            continue;
        };
        let Ok(id) = id.parse::<BackupId>() else { continue };
        let directory = directories.entry(id).or_default();
        if relative == MANIFEST {
            directory.0 = true;
        } else {
            directory.1.push((meta.key, meta.size));
        }
    }
    let mut removed = Vec::new();
    for (id, (complete, keys)) in directories {
        if complete || keys.is_empty() {
            continue;
        }
        let mut orphans = RemovedOrphans { id, objects: 0, bytes: 0, retained: None };
        let mut keys = keys.into_iter();
        let mut deletes = JoinSet::new();
        loop {
            while deletes.len() < PARALLEL_DELETES {
                let Some((key, size)) = keys.next() else { break };
                let store = repository.store().clone();
                deletes.spawn(async move { store.delete(&key).await.map(|()| size) });
            }
            match deletes.join_next().await {
                None => break,
                Some(joined) => match joined.expect("a delete does not panic") {
                    Ok(size) => {
                        orphans.objects += 1;
                        orphans.bytes += size;
                    }
                    Err(StorageError::Locked { until, .. }) => {
                        let (count, latest) = orphans.retained.get_or_insert((0, until));
                        *count += 1;
                        *latest = (*latest).max(until);
                    }
                    Err(error) => return Err(error),
                },
            }
        }
        match orphans.retained {
            Some((_, until)) => tracing::warn!(
                %id,
                %until,
                "the objects of an interrupted or failed {id} are under Object Lock retention; they are never \
                 listed (there is no manifest) and a later run after the retention date removes them"
            ),
            None => tracing::warn!(
                %id,
                objects = orphans.objects,
                "removed the objects of an interrupted or failed {id} (it has no manifest, so it was never complete)"
            ),
        }
        removed.push(orphans);
    }
    Ok(removed)
}

/// What a backup does under its lease once its job ended: when it failed, its objects (a backup
/// directory without a manifest) are removed, and then the cluster's leftovers are swept
/// ([`leftovers`]). With the lease lost another lifeboat may be writing, so nothing is touched.
pub async fn after_job<T>(
    repository: &Repository,
    layout: &ClusterLayout,
    lease: &Lease,
    result: Result<T, BackupError>,
) -> Result<T, BackupError> {
    if lease.is_lost() {
        return result;
    }
    let result = match result {
        Ok(done) => Ok(done),
        Err(error) => match remove_orphans(repository, layout).await {
            Ok(removed) => {
                for orphan in &removed {
                    tracing::info!(
                        backup = %orphan.id,
                        "the backup failed: removed the {} objects it had written",
                        orphan.objects
                    );
                }
                Err(error)
            }
            Err(cleanup) => Err(BackupError::LeftBehind {
                source: Box::new(error),
                prefix: layout.backups_prefix(),
                cleanup: cleanup.to_string(),
            }),
        },
    };
    leftovers::sweep(repository, layout).await;
    result
}
