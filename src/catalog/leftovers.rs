//! Sweeping what interrupted writes left in a cluster's part of the repository, by whoever holds
//! the cluster's lease (a backup, a dump or a delete), so leftovers never outlive the next of
//! those operations.
//!
//! A put killed mid-write leaves a partial upload: a `.lifeboat-tmp-*` file beside its key in a
//! local repository, an incomplete multipart upload on S3. It never holds an object (a put
//! publishes under the key only complete bytes), so removing it loses nothing; a delete or an
//! interrupted backup also leaves empty directories in a local repository. See
//! [`crate::storage::ObjectStore::sweep`].
//!
//! Who may still be writing decides how old a leftover must be:
//! - under `backups/` and `dumps/` only the lease holder writes, so with the lease held anything
//!   there that is not an object is a leftover, whatever its age;
//! - elsewhere (`wal/`, written by `wal-push` without any lease, and `verify/`, `locks/`) a
//!   running writer may own a temporary file, so only what nobody touched for [`IDLE`] goes. A
//!   local put rewrites its file every mebibyte, so an hour without a write means its writer is
//!   gone; if it was only frozen, its put fails when it wakes up (the temporary file is gone),
//!   and PostgreSQL tries `wal-push` again.
//!
//! A writer stores a manifest (the commit point, G1) and then records it in the journal. One that
//! stopped in between (killed, or its journal append failed) left a complete backup or dump that
//! `list` reports as not recorded. With the lease held no writer is between those two steps, so
//! the sweep records each such manifest that authenticates, as its writer would have
//! ([`record_stored_manifests`]); one the journal records as deleted is left to `delete`/`expire`.

use std::time::Duration;

use super::id::BackupId;
use super::journal;
use super::layout::ClusterLayout;
use super::listing::{self, CatalogError};
use crate::format::journal_entry::Event;
use crate::repository::Repository;
use crate::storage::Swept;

/// How long a partial upload outside `backups/` and `dumps/` must have been left alone before the
/// sweep removes it: far longer than any live writer pauses between two writes (30 times the
/// lease's time to live).
pub const IDLE: Duration = Duration::from_secs(60 * 60);

/// Sweeps the cluster's prefix and records the manifests an interrupted writer stored but did not
/// record. Best effort: a failure is logged and left for the next lease holder. The caller must
/// hold the cluster's lease (and not have lost it).
pub async fn sweep(repository: &Repository, layout: &ClusterLayout) -> Swept {
    match record_stored_manifests(repository, layout).await {
        Ok(recorded) => {
            for id in recorded {
                tracing::info!(
                    %id,
                    "recorded {id} in the journal: its manifest was stored (it is complete), but the run that stored \
                     it stopped before recording it"
                );
            }
        }
        Err(error) => tracing::warn!(
            %error,
            "could not record the manifests an interrupted run left unrecorded; `list` names them, and the next \
             backup, dump, expire or delete tries again"
        ),
    }
    let store = repository.store();
    let mut total = Swept::default();
    let passes =
        [(layout.backups_prefix(), Duration::ZERO), (layout.dumps_prefix(), Duration::ZERO), (layout.prefix(), IDLE)];
    for (prefix, idle) in passes {
        match store.sweep(&prefix, idle).await {
            Ok(swept) => total += swept,
            Err(error) => {
                tracing::warn!(%error, "could not remove what interrupted writes left under {prefix}; the next backup, dump or delete tries again");
            }
        }
    }
    if !total.is_empty() {
        tracing::info!(
            "removed what interrupted writes left in {}: {} partial uploads ({} bytes) and {} empty directories",
            layout.prefix(),
            total.partial,
            total.bytes,
            total.directories
        );
    }
    total
}

/// Records in the journal, as `completed`, each stored manifest that authenticates and that the
/// journal neither records nor records as deleted; returns their ids. Reads only those manifests.
/// Without a journal there is nothing to do: its first entry takes over every stored manifest.
/// The caller must hold the cluster's lease.
pub async fn record_stored_manifests(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<Vec<BackupId>, CatalogError> {
    let Some((head, _)) = journal::writable_head(repository, layout).await? else { return Ok(Vec::new()) };
    let unrecorded = listing::list_ids(repository, layout)
        .await?
        .into_iter()
        .filter(|&id| head.state.item(id).is_none() && head.state.deletion(id).is_none());
    let mut recorded = Vec::new();
    for id in unrecorded {
        let manifest_blake3 = match listing::read_manifest(repository, layout, id).await {
            Ok((_, hash)) => hash,
            // Gone since it was listed, or damaged: `list` and `verify` name a damaged one.
            Err(error) if error.damage().is_some() || matches!(error, CatalogError::NotFound { .. }) => continue,
            Err(error) => return Err(error),
        };
        journal::append(repository, layout, Event::Completed { id, manifest_blake3 }).await?;
        recorded.push(id);
    }
    Ok(recorded)
}
