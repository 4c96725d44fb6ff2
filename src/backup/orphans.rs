//! Removing what interrupted backups left behind (G1).
//!
//! A backup writes its data objects first and its manifest last, so a backup killed at any point
//! leaves a directory `backups/<id>/` without a manifest: never listed, never restorable, only
//! taking space. The next backup removes those while it holds the cluster's backup lease, so no
//! backup that is still running can be mistaken for one (only the lease holder writes there).
//! Keys under `backups/` that are not a backup id's are not lifeboat's and are left alone.

use std::collections::BTreeMap;

use tokio::task::JoinSet;

use super::BackupError;
use crate::catalog::backup_manifest::MANIFEST;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::repository::Repository;
use crate::storage::ObjectKey;

/// Deletes issued at once: enough to hide S3 round trips, few enough to be polite.
const PARALLEL_DELETES: usize = 16;

/// An interrupted backup whose objects were removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedOrphans {
    pub id: BackupId,
    pub objects: usize,
}

/// Deletes every object of every backup directory that has no manifest. The caller must hold
/// the cluster's backup lease.
pub async fn remove_orphans(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<Vec<RemovedOrphans>, BackupError> {
    let listing = repository.store().list(&layout.backups_prefix()).await?;
    let mut directories: BTreeMap<BackupId, (bool, Vec<ObjectKey>)> = BTreeMap::new();
    for meta in listing {
        let Some((id, relative)) = layout.parse_backup_key(&meta.key) else { continue };
        let directory = directories.entry(id).or_default();
        if relative == MANIFEST {
            directory.0 = true;
        } else {
            directory.1.push(meta.key);
        }
    }
    let mut removed = Vec::new();
    for (id, (complete, keys)) in directories {
        if complete || keys.is_empty() {
            continue;
        }
        let count = keys.len();
        let mut keys = keys.into_iter();
        let mut deletes = JoinSet::new();
        loop {
            while deletes.len() < PARALLEL_DELETES {
                let Some(key) = keys.next() else { break };
                let store = repository.store().clone();
                deletes.spawn(async move { store.delete(&key).await });
            }
            match deletes.join_next().await {
                None => break,
                Some(joined) => joined.expect("a delete does not panic")?,
            }
        }
        tracing::warn!(
            backup = %id,
            objects = count,
            "removed the objects of an interrupted backup (it has no manifest, so it was never a backup)"
        );
        removed.push(RemovedOrphans { id, objects: count });
    }
    Ok(removed)
}
