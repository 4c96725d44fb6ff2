//! `wal-fetch`: give PostgreSQL one archived WAL file, as `restore_command`, and prefetch the
//! next segments so replay is not bound by one storage round trip per segment.
//!
//! The file is written to a temporary name beside `%p` and renamed to `%p` only after the whole
//! object authenticated, so PostgreSQL never sees a partial or unauthenticated file. A file that is
//! not in the archive is a normal answer (PostgreSQL asks past the end of the WAL, and for history
//! files of timelines that do not exist), reported as [`Fetched::NotFound`], not as an error.
//!
//! Prefetch design. PostgreSQL runs `restore_command` once per file, one at a time, each a new
//! process, so there is no process that could keep downloading between calls without being
//! detached (and a detached downloader is hard to bound and to stop). Instead each call works in
//! batches: when fewer than half of the next `prefetch` segments are in the spool, the call
//! downloads all the missing ones in parallel, alongside the requested one, and returns once the
//! requested file is in place and the batch has finished (or [`PREFETCH_WAIT`] has passed). The
//! following calls are then served from the spool with a rename, so one round trip's latency is
//! shared by about `prefetch / 2` segments and downloads run `prefetch` at a time instead of one.
//! Prefetching starts only once the requested segment is known to exist, so asking past the end
//! of the archive (which a standby does every few seconds) costs one request, not a batch.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;

use super::spool::{Spool, TempPath, temp_path_in};
use crate::catalog::cluster::{ClusterRecord, IdentityError};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::object::ObjectError;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ByteReader, ObjectKey, StorageError};

/// How long a call waits for its prefetch batch after the requested file is in place. Downloads
/// still running then are abandoned (and their temporary files removed); the next call fetches
/// what it needs directly.
pub const PREFETCH_WAIT: Duration = Duration::from_secs(30);
/// At most this many downloads run at once, whatever `wal.prefetch` says.
const PARALLEL_DOWNLOADS: usize = 8;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// How many segments after the requested one to keep in the spool; 0 disables prefetching.
    pub prefetch: u32,
    /// Where prefetched segments wait; see [`super::spool`].
    pub spool_dir: PathBuf,
    pub prefetch_wait: Duration,
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Restored {
        /// Served from the spool (prefetched by an earlier call) rather than downloaded now.
        from_spool: bool,
        /// Segments this call added to the spool.
        prefetched: usize,
    },
    /// The archive has no such file.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{name:?} is not a WAL file name ({reason}); restore_command must pass %f and %p")]
    BadName { name: String, reason: String },

    #[error(
        "cannot restore {name} from {location}: {detail}. Nothing was written to {}. The archived copy is \
         damaged (or was replaced by something lifeboat did not write); recover the object from a copy of the \
         repository if there is one: recovery cannot continue past this file without it",
        target.display()
    )]
    Damaged { name: String, location: String, target: PathBuf, detail: String },

    #[error("cannot restore {name}: reading {key} from {location} failed: {detail}; nothing was written to {}", target.display())]
    Read { name: String, key: ObjectKey, location: String, target: PathBuf, detail: String },

    #[error(
        "cannot restore {name} to {}: writing {} failed: {source}. Nothing was written to {}; make room on its \
         file system (or let this user write there), and PostgreSQL asks for the file again",
        target.display(),
        path.display(),
        target.display()
    )]
    Write {
        name: String,
        /// The file PostgreSQL asked for.
        target: PathBuf,
        /// The file whose write failed: the target, or a temporary file beside it.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Identity(#[from] IdentityError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Restores the archived file `name` to `target` (relative paths are relative to the working
/// directory, the data directory when PostgreSQL runs `restore_command`).
pub async fn fetch(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    name: &str,
    target: &Path,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let bad_name = |reason: String| FetchError::BadName { name: name.to_owned(), reason };
    // Any name valid for some segment size is valid for the smallest: this finds the kind.
    let smallest = SegmentSize::new(SegmentSize::MIN.into()).expect("a valid size");
    let kind = WalFile::parse(name, smallest).map_err(|error| bad_name(error.to_string()))?;
    let spool = match (&kind, options.prefetch) {
        (WalFile::Segment(_), 1..) => open_spool(&options.spool_dir, &spool_origin(&repository, layout)),
        _ => None,
    };

    // Served from the spool: its file's length is the segment size, no request needed.
    if let Some(spool) = &spool
        && let Some(size) = spool.length_of(name).and_then(SegmentSize::new)
        && let Ok(WalFile::Segment(segment)) = WalFile::parse(name, size)
    {
        let taken = spool.take(segment, size, target).map_err(|source| FetchError::Write {
            name: name.to_owned(),
            target: target.to_owned(),
            path: target.to_owned(),
            source,
        })?;
        if taken {
            tracing::debug!("{name} served from the spool {}", spool.dir().display());
            spool.tidy(segment, size);
            let batch = start_prefetch(&repository, layout, spool, segment, size, options.prefetch);
            let prefetched = finish_prefetch(batch, options.prefetch_wait).await;
            return Ok(Fetched::Restored { from_spool: true, prefetched });
        }
    }

    let size = match kind {
        WalFile::History(_) => SegmentSize::DEFAULT,
        _ => ClusterRecord::read(&repository, layout)
            .await?
            .map_or(SegmentSize::DEFAULT, |record| record.wal_segment_size),
    };
    let file = WalFile::parse(name, size).map_err(|error| bad_name(error.to_string()))?;
    let key = layout.wal_file(&file, size);
    let stored = match repository.get(&key).await {
        Ok(stored) => stored,
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => return Ok(Fetched::NotFound),
        Err(error) => return Err(error.into()),
    };
    // The requested file exists, so the ones after it probably do too: start the batch now,
    // while the requested file downloads.
    let batch = match (&spool, file) {
        (Some(spool), WalFile::Segment(segment)) => {
            spool.tidy(segment, size);
            start_prefetch(&repository, layout, spool, segment, size, options.prefetch)
        }
        _ => None,
    };
    let expected_len = matches!(file, WalFile::Segment(_) | WalFile::Partial(_)).then(|| u64::from(size.bytes()));
    let parent = target.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let download = Download { repository: &repository, name, key: &key, target, expected_len };
    // The file at %p need not be durable: after a crash PostgreSQL asks for it again.
    download.run(stored, TempPath::new(temp_path_in(parent)), target, None).await?;
    let prefetched = finish_prefetch(batch, options.prefetch_wait).await;
    Ok(Fetched::Restored { from_spool: false, prefetched })
}

/// Whose segments a spool holds: the repository's id and the cluster's name.
pub fn spool_origin(repository: &Repository, layout: &ClusterLayout) -> String {
    format!("{}/{}", repository.file().repository_id, layout.name())
}

fn open_spool(dir: &Path, origin: &str) -> Option<Spool> {
    match Spool::open(dir, origin) {
        Ok(spool) => Some(spool),
        Err(error) => {
            tracing::warn!(
                "cannot use the spool directory {} ({error}); fetching without prefetch. Set wal.spool_dir to a \
                 directory PostgreSQL's OS user can write",
                dir.display()
            );
            None
        }
    }
}

/// Which side of a download's copy failed.
enum CopyFailure {
    /// Reading the object: damaged, or the storage failed.
    Read(std::io::Error),
    /// Writing the file.
    Write(std::io::Error),
}

/// One object streamed into a file.
struct Download<'a> {
    repository: &'a Repository,
    /// The WAL file name, for messages.
    name: &'a str,
    key: &'a ObjectKey,
    /// The file PostgreSQL asked for, for messages.
    target: &'a Path,
    /// The plaintext length a segment must have.
    expected_len: Option<u64>,
}

impl Download<'_> {
    /// Streams the authenticated plaintext into `temporary`, then renames it to `destination`.
    /// Nothing is renamed unless every chunk, the last included, authenticated. Into a spool
    /// (`spool`), the file is made durable if the spool says so, and given to its owner.
    async fn run(
        &self,
        stored: ByteReader,
        temporary: TempPath,
        destination: &Path,
        spool: Option<&Spool>,
    ) -> Result<u64, FetchError> {
        let write_error = |path: &Path, source| FetchError::Write {
            name: self.name.to_owned(),
            target: self.target.to_owned(),
            path: path.to_owned(),
            source,
        };
        // Copied on a blocking thread with plain file writes: through `tokio::fs`, each 256 KiB
        // write would be handed to another thread and back.
        let mut source = SyncIoBridge::new(stored);
        let path = temporary.path().to_owned();
        let durable = spool.is_some_and(Spool::durable);
        let copied = tokio::task::spawn_blocking(move || -> Result<u64, CopyFailure> {
            let mut file = std::fs::File::create(&path).map_err(CopyFailure::Write)?;
            let mut block = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let read = source.read(&mut block).map_err(CopyFailure::Read)?;
                if read == 0 {
                    break;
                }
                file.write_all(&block[..read]).map_err(CopyFailure::Write)?;
                total += read as u64;
            }
            if durable {
                file.sync_all().map_err(CopyFailure::Write)?;
            }
            Ok(total)
        });
        // A copy still queued when the process ends (a prefetch, after the requested file failed)
        // is cancelled by the runtime's shutdown: a failed read, not a reason to panic.
        let copied = match copied.await {
            Ok(copied) => copied,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(CopyFailure::Read(std::io::Error::other(error))),
        };
        let total = match copied {
            Ok(total) => total,
            Err(CopyFailure::Write(error)) => return Err(write_error(temporary.path(), error)),
            Err(CopyFailure::Read(error)) => return Err(self.read_error(&error)),
        };
        if let Some(expected) = self.expected_len
            && total != expected
        {
            return Err(FetchError::Damaged {
                name: self.name.to_owned(),
                location: self.repository.location(),
                target: self.target.to_owned(),
                detail: format!("object {} holds {total} bytes, but this cluster's segments have {expected}", self.key),
            });
        }
        if let Some(spool) = spool {
            spool.adopt(temporary.path()).map_err(|error| write_error(temporary.path(), error))?;
        }
        tokio::fs::rename(temporary.path(), destination).await.map_err(|error| write_error(destination, error))?;
        temporary.persist();
        Ok(total)
    }

    fn read_error(&self, error: &std::io::Error) -> FetchError {
        match ObjectError::from_io(error) {
            Some(object_error) => FetchError::Damaged {
                name: self.name.to_owned(),
                location: self.repository.location(),
                target: self.target.to_owned(),
                detail: object_error.to_string(),
            },
            None => FetchError::Read {
                name: self.name.to_owned(),
                key: self.key.clone(),
                location: self.repository.location(),
                target: self.target.to_owned(),
                detail: error.to_string(),
            },
        }
    }
}

/// Starts downloading the segments after `current` that the spool lacks, if it is time for a
/// batch (see the module documentation). Each task yields whether it spooled its segment.
fn start_prefetch(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    spool: &Spool,
    current: WalSegment,
    size: SegmentSize,
    depth: u32,
) -> Option<JoinSet<Result<bool, String>>> {
    let spooled = match spool.segments(size) {
        Ok(spooled) => spooled,
        Err(error) => {
            tracing::warn!("cannot list the spool {}: {error}; not prefetching", spool.dir().display());
            return None;
        }
    };
    let mut wanted = Vec::new();
    let mut next = current;
    for _ in 0..depth {
        next = next.next();
        wanted.push(next);
    }
    let missing: Vec<WalSegment> = wanted.into_iter().filter(|segment| !spooled.contains(segment)).collect();
    let present = depth as usize - missing.len();
    if missing.is_empty() || present > depth as usize / 2 {
        return None;
    }
    let permits = Arc::new(Semaphore::new(PARALLEL_DOWNLOADS));
    let mut batch = JoinSet::new();
    for segment in missing {
        let (repository, layout, spool, permits) = (repository.clone(), layout.clone(), spool.clone(), permits.clone());
        batch.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            spool_segment(&repository, &layout, &spool, segment, size).await
        });
    }
    Some(batch)
}

/// Downloads `segment` into `spool`; whether the archive has it.
pub async fn spool_segment(
    repository: &Repository,
    layout: &ClusterLayout,
    spool: &Spool,
    segment: WalSegment,
    size: SegmentSize,
) -> Result<bool, String> {
    let key = layout.wal_file(&WalFile::Segment(segment), size);
    let stored = match repository.get(&key).await {
        Ok(stored) => stored,
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => return Ok(false),
        Err(error) => return Err(error.to_string()),
    };
    let name = segment.name(size);
    let destination = spool.path_of(segment, size);
    let download = Download {
        repository,
        name: &name,
        key: &key,
        target: &destination,
        expected_len: Some(u64::from(size.bytes())),
    };
    // Spooled files outlive this process; the spool says whether that needs an fsync.
    match download.run(stored, TempPath::new(spool.temp_path()), &destination, Some(spool)).await {
        Ok(_) => Ok(true),
        Err(error) => Err(error.to_string()),
    }
}

/// Waits up to `wait` for the batch; abandons what is still running then. Returns how many
/// segments were spooled.
async fn finish_prefetch(batch: Option<JoinSet<Result<bool, String>>>, wait: Duration) -> usize {
    let Some(mut batch) = batch else { return 0 };
    let deadline = tokio::time::Instant::now() + wait;
    let mut spooled = 0;
    loop {
        match tokio::time::timeout_at(deadline, batch.join_next()).await {
            Ok(None) => return spooled,
            Ok(Some(Ok(Ok(true)))) => spooled += 1,
            Ok(Some(Ok(Ok(false)))) => {}
            // Not fatal: the segment is fetched (and any error reported) when PostgreSQL asks for it.
            Ok(Some(Ok(Err(error)))) => tracing::warn!("prefetch failed: {error}"),
            Ok(Some(Err(error))) => tracing::warn!("prefetch task failed: {error}"),
            Err(_) => {
                tracing::info!("prefetch did not finish within {wait:?}; abandoning {} download(s)", batch.len());
                batch.abort_all();
                // Let the aborted tasks drop their temporary files before the process exits.
                while batch.join_next().await.is_some() {}
                return spooled;
            }
        }
    }
}
