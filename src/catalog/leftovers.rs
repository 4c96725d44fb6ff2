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

use std::time::Duration;

use super::layout::ClusterLayout;
use crate::repository::Repository;
use crate::storage::Swept;

/// How long a partial upload outside `backups/` and `dumps/` must have been left alone before the
/// sweep removes it: far longer than any live writer pauses between two writes (30 times the
/// lease's time to live).
pub const IDLE: Duration = Duration::from_secs(60 * 60);

/// Sweeps the cluster's prefix. Best effort: a failure is logged and left for the next lease
/// holder. The caller must hold the cluster's lease (and not have lost it).
pub async fn sweep(repository: &Repository, layout: &ClusterLayout) -> Swept {
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
