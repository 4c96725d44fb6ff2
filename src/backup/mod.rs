//! Physical base backups taken on the database host (`lifeboat backup`, method "native").
//!
//! The sequence, and why each step is where it is:
//!
//! 1. Check before touching anything: `cluster.pgdata` is a data directory lifeboat can read, the
//!    server at `cluster.connection` is the one that owns it (same system identifier, else same
//!    `data_directory`), its major version matches the data directory and the installed programs,
//!    and `wal_level` allows online backups. `archive_mode = off` is only warned about: the backup
//!    works, but cannot be restored without the WAL written while it ran.
//! 2. Take the cluster's backup lease (`clusters/<name>/locks/backup`), waiting up to
//!    `[backup] lock_wait` for a running backup or delete (G6). Everything below runs under it.
//! 3. Record or check the cluster's identity (`clusters/<name>/cluster`), then remove what
//!    interrupted backups left ([`orphans`]), then pick the id (the start time to the second; if a
//!    backup already has it, wait for the next second).
//! 4. `pg_backup_start` on one held connection ([`session`]), walk the data directory and its
//!    tablespaces ([`walk`]), copy the files with parallel workers ([`copy`]), `global/pg_control`
//!    last, while pinging the connection (a lost connection ends the backup on the server) and
//!    watching the lease.
//! 5. `pg_backup_stop` on the same connection, then wait until the WAL the backup needs is
//!    archived (as `wait_for_archive => true` would, but without its one-second polling).
//! 6. Write the manifest ([`crate::format::backup_manifest`]) last, create-only (G1), and release
//!    the lease. On any failure after step 4 began, `pg_backup_stop` is called without waiting,
//!    nothing is listed, and the backup removes its objects before releasing the lease (the next
//!    backup does, if that fails or the process is killed). Either way the cluster's leftovers
//!    are swept before the lease goes ([`crate::catalog::leftovers`]).

pub mod basebackup;
pub mod blockmap;
pub mod changes;
pub mod copy;
pub mod incremental;
pub mod orphans;
pub mod session;
pub mod tar;
pub mod walk;

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use self::blockmap::MappedFile;
use self::copy::{Copier, FileOutcome, Progress};
use self::incremental::{Base, ChangeFinder, IncrementalPlan};
use self::session::{ServerInfo, Session, Stopped};
use self::walk::{WalkError, WalkedKind};
use crate::catalog::cluster::{ClusterRecord, IdentityError, Observed, SystemIdentifier};
use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::journal::{self, JournalError};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::{DEFAULT_TTL, Lease, LeaseError, hostname};
use crate::catalog::listing::{self, Entry};
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::wal::{WalFile, WalSegment};
use crate::config::{BackupConfig, Config};
use crate::format::backup_manifest::{
    BLOCK_MAP, BackupManifest, BackupMethod, EntryKind, FORMAT_NAME, FORMAT_VERSION, FileEntry, Incremental,
    ObjectEntry, Tablespace, Totals,
};
use crate::format::journal_entry::{Event, hash_hex};
use crate::postgres::binaries::{BinariesError, Need, PgBinaries};
use crate::postgres::connect::ConnectError;
use crate::postgres::version::{self, UnsupportedVersion};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, PutMode, StorageError};
use crate::util::format_bytes;

/// The lease that keeps two backups (or a backup and a delete) of one cluster apart.
pub const LOCK: &str = "backup";
/// How often the held connection is pinged and the lease checked while files are copied.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How often a warning is logged while the backup waits for its WAL to be archived.
const ARCHIVE_WAIT_WARNING: Duration = Duration::from_secs(30);

/// How to take one backup; [`BackupOptions::from_config`] gives the configured defaults.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub workers: u32,
    pub fast_checkpoint: bool,
    pub lock_wait: Duration,
    /// How long to wait for the backup's WAL to reach the repository ([`BackupConfig::archive_timeout`]).
    pub archive_timeout: Duration,
    /// The label given to `pg_backup_start`; default `lifeboat <id>`.
    pub label: Option<String>,
    /// Files larger than this are cut into parts of this size, an object each, so a large file
    /// is compressed on several cores: [`copy::PART_SIZE`]. A power of two, at least 1 MiB (tests
    /// use small parts to exercise the cutting on small databases).
    pub part_size: u64,
    /// Native (lifeboat copies the data directory) or `pg_basebackup`'s tar stream ([`basebackup`]).
    pub method: BackupMethod,
    /// Store only what changed since the newest backup ([`incremental`]); a full backup is taken
    /// when there is none to build on. Native backups only.
    pub incremental: bool,
    /// Cancelled: the native backup stops before its manifest is written, cleaning up as after a
    /// failure ([`BackupError::Cancelled`]).
    pub cancel: CancellationToken,
    /// Bytes copied so far, for the caller's progress reports.
    pub progress: Arc<Progress>,
}

impl BackupOptions {
    pub fn from_config(config: &BackupConfig) -> BackupOptions {
        BackupOptions {
            workers: config.workers,
            fast_checkpoint: config.fast_checkpoint,
            lock_wait: config.lock_wait,
            archive_timeout: config.archive_timeout,
            label: None,
            part_size: copy::PART_SIZE,
            method: BackupMethod::Native,
            incremental: false,
            cancel: CancellationToken::new(),
            progress: Arc::new(Progress::default()),
        }
    }
}

/// A completed backup.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub manifest: BackupManifest,
    pub manifest_key: ObjectKey,
    /// From the start of [`run`] until the manifest was stored, lease waiting included.
    pub duration: Duration,
    /// From `pg_backup_start` until the manifest was stored.
    pub backup_duration: Duration,
    /// Interrupted backups whose objects were removed first.
    pub removed_orphans: Vec<orphans::RemovedOrphans>,
}

impl BackupSummary {
    /// Bytes of data copied per second of the backup proper.
    pub fn bytes_per_second(&self) -> f64 {
        self.manifest.totals.bytes as f64 / self.backup_duration.as_secs_f64().max(1e-3)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup was cancelled ({phase}); nothing is listed")]
    Cancelled { phase: &'static str },

    #[error(
        "cluster.pgdata is not set in {}; set it to the data directory of the running cluster (psql's \
         `SHOW data_directory` prints it): lifeboat backup reads the files itself, on the database host",
        config.display()
    )]
    NoPgdata { config: PathBuf },

    #[error("cluster.pgdata {} is not a PostgreSQL data directory ({problem}); check the path", pgdata.display())]
    NotADataDirectory { pgdata: PathBuf, problem: String },

    #[error(transparent)]
    Walk(#[from] WalkError),

    #[error(transparent)]
    Connect(#[from] ConnectError),

    #[error("PostgreSQL could not {action}: {detail}{hint}")]
    Postgres { action: String, detail: String, hint: String },

    #[error(transparent)]
    Version(#[from] UnsupportedVersion),

    #[error(
        "the server has wal_level = minimal, which makes online backups impossible; set wal_level = replica \
         (and archive_mode = on, archive_command = 'lifeboat wal-push %p') in postgresql.conf and restart PostgreSQL"
    )]
    WalLevelMinimal,

    #[error(
        "cluster.pgdata {} belongs to another PostgreSQL cluster than the server at {connection}: its \
         global/pg_control has system identifier {file}, the server reports {server}. Point cluster.pgdata at \
         the server's data directory (`SHOW data_directory`), or cluster.connection at the server that owns it; \
         lifeboat backup must run on the database host",
        pgdata.display()
    )]
    OtherCluster { pgdata: PathBuf, connection: String, file: u64, server: u64 },

    #[error(
        "cluster.pgdata {} is not the data directory of the server at {connection}, which uses {server_dir}; \
         point cluster.pgdata at it (lifeboat backup must run on the database host)",
        pgdata.display()
    )]
    OtherDirectory { pgdata: PathBuf, connection: String, server_dir: String },

    #[error(
        "cannot check that cluster.pgdata {} belongs to the server at {connection}: the connecting role may \
         neither call pg_control_system() nor read data_directory; connect as a superuser or \
         GRANT pg_read_all_settings TO the backup role",
        pgdata.display()
    )]
    CannotCheckDirectory { pgdata: PathBuf, connection: String },

    #[error(
        "cluster.pgdata {} holds a PostgreSQL {file_major} data directory (PG_VERSION) but the server at \
         {connection} runs PostgreSQL {server_major}; point cluster.pgdata at the server's data directory",
        pgdata.display()
    )]
    VersionMismatch { pgdata: PathBuf, connection: String, file_major: u32, server_major: u32 },

    #[error(transparent)]
    Binaries(#[from] BinariesError),

    #[error(transparent)]
    Identity(Box<IdentityError>),

    #[error(transparent)]
    Lease(#[from] LeaseError),

    #[error(
        "lost the backup lock {lock} (this process stalled past the lease's expiry and another lifeboat took \
         it over); the backup was abandoned and is not listed. Run it again"
    )]
    LeaseLost { lock: String },

    #[error(
        "the backup needs WAL segment {segment}, and {location} still does not have it after {waited}s \
         (backup.archive_timeout). Without it the backup cannot be restored, so it was not recorded as complete. \
         Check that {archiver} runs `lifeboat wal-push %p` with this configuration (the same repository.url and \
         [cluster] name); this server's archive_command is {archive_command:?}. `lifeboat wal check` shows what \
         the repository holds. Then take the backup again (raise backup.archive_timeout only if archiving lags)"
    )]
    WalNotInRepository {
        segment: String,
        location: String,
        waited: u64,
        archiver: &'static str,
        archive_command: String,
    },

    #[error(
        "archive_mode is off on the server, so nothing archives the WAL a backup needs and the backup could never \
         be restored; nothing was copied. Set archive_mode = on and archive_command = 'lifeboat wal-push %p' in \
         postgresql.conf, restart PostgreSQL, and take the backup again"
    )]
    ArchivingOff,

    #[error(transparent)]
    Repository(#[from] RepositoryError),

    #[error(transparent)]
    Journal(#[from] JournalError),

    #[error(
        "backup {id} is complete and stored, but recording it in the cluster's journal failed: {source}\nUntil it \
         is recorded `lifeboat list` names it as not recorded; the next backup, dump, expire or delete records it \
         (or `lifeboat verify {id}`, which proves it first)"
    )]
    Unrecorded { id: BackupId, source: JournalError },

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("cannot read {}: {source}; {}", path.display(), unreadable_advice(source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("pg_backup_stop returned a backup_label without a start timeline:\n{label}")]
    BadLabel { label: String },

    #[error(transparent)]
    Basebackup(#[from] basebackup::BasebackupError),

    #[error(transparent)]
    Catalog(Box<crate::catalog::listing::CatalogError>),

    #[error(
        "the server switched to timeline {timeline} while the incremental backup on top of {parent} ran; it was \
         abandoned. Take it again: it will be a full backup (a new timeline needs one)"
    )]
    TimelineChanged { parent: BackupId, timeline: Timeline },

    #[error(
        "the block map {key} cannot be read ({detail}); the incremental backup was abandoned. Run `lifeboat verify` \
         on the backup it names, or take a full backup (`lifeboat backup`)"
    )]
    BlockMap { key: String, detail: String },

    #[error(
        "cannot keep the block values of this backup in a temporary file under {} ({source}); nothing \
         was stored as a backup. Free space there, or set LIFEBOAT_STATE_DIR (tried first) or TMPDIR to a \
         writable directory",
        dir.display()
    )]
    Spill {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{source}\nRemoving what the failed backup had written failed too ({cleanup}): whatever it wrote is left \
         under {prefix}<its id>/, without a manifest, so it is listed nowhere; the next backup removes it"
    )]
    LeftBehind { source: Box<BackupError>, prefix: String, cleanup: String },
}

/// What to do about a file of the data directory that cannot be read: the backup is not stored
/// without it.
fn unreadable_advice(error: &std::io::Error) -> String {
    let next = "nothing of this backup was stored; run it again once the file can be read";
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "this backup runs as uid {} (run it as the OS user that owns the data directory, usually postgres), \
             which may not read the file: give it to that user, or move it out of the data directory; {next}",
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        ),
        _ => format!("check the file and the disk under it; {next}"),
    }
}

impl From<IdentityError> for BackupError {
    fn from(error: IdentityError) -> Self {
        BackupError::Identity(Box::new(error))
    }
}

/// What the data directory itself says.
#[derive(Debug, Clone, Copy)]
struct DataDirectory {
    system_identifier: u64,
    /// From `PG_VERSION`.
    major: u32,
}

/// Takes a native base backup of the configured cluster into `repository`.
pub async fn run(
    config: &Config,
    repository: Arc<Repository>,
    options: &BackupOptions,
) -> Result<BackupSummary, BackupError> {
    if options.method == BackupMethod::Basebackup {
        return basebackup::run(config, repository, options).await;
    }
    let began = Instant::now();
    let pgdata =
        config.cluster.pgdata.clone().ok_or_else(|| BackupError::NoPgdata { config: config.origin().to_path_buf() })?;
    let data_directory = inspect_data_directory(&pgdata)?;
    let session = Session::open(&config.cluster.connection).await?;
    let checked =
        check_server(&session, &pgdata, data_directory).and_then(|()| check_binaries(config, session.server.major()));
    let checked = checked.and_then(|()| check_archiving(&session.server));
    if let Err(error) = checked {
        session.close().await;
        return Err(error);
    }

    let layout = ClusterLayout::new(&config.cluster.name);
    let lock = layout.lock(LOCK);
    // Waiting for another backup's lock (up to `lock_wait`) stops on cancellation too, so a daemon
    // told to stop is not held there; nothing has been written yet.
    let acquired = tokio::select! {
        acquired = Lease::acquire(repository.clone(), &lock, "backup", DEFAULT_TTL, options.lock_wait) => {
            acquired.map_err(BackupError::from)
        }
        () = options.cancel.cancelled() => Err(BackupError::Cancelled { phase: "while waiting for the lock" }),
    };
    let lease = match acquired {
        Ok(lease) => lease,
        Err(error) => {
            session.close().await;
            return Err(error);
        }
    };
    let job = Job { repository, layout, pgdata, data_directory, options, lease: &lease, lock: lock.to_string() };
    let result = job.run(session).await;
    let result = orphans::after_job(&job.repository, &job.layout, &lease, result).await;
    let released = lease.release().await;
    let (manifest, manifest_key, removed_orphans, backup_duration) = result?;
    if let Err(error) = released {
        tracing::warn!(%error, "the backup is complete, but its lock could not be released; it expires by itself");
    }
    Ok(BackupSummary { manifest, manifest_key, duration: began.elapsed(), backup_duration, removed_orphans })
}

/// One backup, once the lease is held.
struct Job<'a> {
    repository: Arc<Repository>,
    layout: ClusterLayout,
    pgdata: PathBuf,
    data_directory: DataDirectory,
    options: &'a BackupOptions,
    lease: &'a Lease,
    lock: String,
}

/// What the copy phase produced.
struct Copied {
    files: Vec<FileEntry>,
    tablespaces: Vec<Tablespace>,
    objects: Vec<ObjectEntry>,
    /// `None` for a streamed backup, whose files are not hashed block by block.
    block_map: Option<ObjectEntry>,
    incremental: Option<Incremental>,
    vanished: u64,
}

/// An incremental backup's base and how it finds changed blocks.
struct IncrementalSource {
    base: Base,
    finder: ChangeFinder,
}

type Completed = (BackupManifest, ObjectKey, Vec<orphans::RemovedOrphans>, Duration);

impl Job<'_> {
    async fn run(&self, mut session: Session) -> Result<Completed, BackupError> {
        let server = session.server.clone();
        let observed = Observed {
            system_identifier: SystemIdentifier(self.data_directory.system_identifier),
            segment_size: server.segment_size,
            postgres_version: Some(server.major().to_string()),
            source: format!("the data directory {} (global/pg_control)", self.pgdata.display()),
        };
        ClusterRecord::ensure(&self.repository, &self.layout, &observed).await?;
        journal::writable_head(&self.repository, &self.layout).await?;
        let removed = orphans::remove_orphans(&self.repository, &self.layout).await?;
        let base = if self.options.incremental { self.choose_base(&mut session).await? } else { None };
        let kind = if base.is_some() { BackupKind::Incremental } else { BackupKind::Full };
        let (id, start_time) = choose_id(&self.repository, &self.layout, kind).await?;
        let label = self.options.label.clone().unwrap_or_else(|| format!("lifeboat {id}"));
        let checkpoint = if self.options.fast_checkpoint { "fast" } else { "spread" };
        tracing::info!(backup = %id, "starting the backup ({checkpoint} checkpoint)");
        let started = Instant::now();
        let start_lsn = session.start(&label, self.options.fast_checkpoint).await?;
        tracing::info!(backup = %id, start_lsn = %start_lsn, "backup started on the server; copying files");

        let source = match base {
            Some(base) => match self.find_changes(&mut session, &server, base, start_lsn).await {
                Ok(source) => Some(source),
                Err(error) => {
                    session.abort().await;
                    return Err(error);
                }
            },
            None => None,
        };
        let copied = match self.copy(&mut session, id, &server, source).await {
            Ok(copied) => copied,
            Err(error) => {
                session.abort().await;
                return Err(error);
            }
        };
        // PostgreSQL's own wait for the archive polls once a second; lifeboat watches the same
        // archive status files itself, more often, which saves most of that second.
        let stopped = session.stop(false).await?;
        session.close().await;
        let timeline = start_timeline(&stopped.label_file)?;
        if let Some(incremental) = &copied.incremental {
            let parent = listing::read_entry(&self.repository, &self.layout, incremental.parent)
                .await
                .map_err(|error| BackupError::Catalog(Box::new(error)))?;
            if let Entry::Physical(parent) = parent
                && parent.timeline != timeline
            {
                return Err(BackupError::TimelineChanged { parent: parent.id, timeline });
            }
        }
        let archived = async {
            if archiving_waits(&server) {
                let mut files = vec![
                    WalSegment::containing(timeline, Lsn(stopped.lsn.as_u64().saturating_sub(1)), server.segment_size)
                        .name(server.segment_size),
                ];
                if !server.in_recovery {
                    let start = WalSegment::containing(timeline, start_lsn, server.segment_size);
                    let offset = start_lsn.as_u64() - start.start_lsn(server.segment_size).as_u64();
                    files.push(
                        WalFile::BackupHistory { segment: start, offset: offset as u32 }.name(server.segment_size),
                    );
                }
                wait_for_archive(&self.pgdata, &files).await?;
            }
            wait_for_wal_in_repository(
                &self.repository,
                &self.layout,
                &server,
                timeline,
                start_lsn,
                stopped.lsn,
                self.options,
            )
            .await
        };
        tokio::select! {
            archived = archived => archived?,
            () = self.options.cancel.cancelled() => {
                return Err(BackupError::Cancelled { phase: "while waiting for its WAL to be archived" });
            }
        }
        let stop_time = Utc::now();
        let manifest = self.manifest(ManifestParts {
            id,
            server: &server,
            timeline,
            start_lsn,
            stopped,
            start_time,
            stop_time,
            label,
            copied,
        });
        if self.lease.is_lost() {
            return Err(BackupError::LeaseLost { lock: self.lock.clone() });
        }
        if self.options.cancel.is_cancelled() {
            return Err(BackupError::Cancelled { phase: "before its manifest was written" });
        }
        let key = store_manifest(&self.repository, &self.layout, &manifest).await?;
        tracing::info!(backup = %id, stop_lsn = %manifest.stop_lsn, "backup complete: manifest stored and recorded");
        Ok((manifest, key, removed, started.elapsed()))
    }

    /// The backup an incremental builds on, or `None` (said in the log) for a full backup.
    async fn choose_base(&self, session: &mut Session) -> Result<Option<Base>, BackupError> {
        let (timeline, _) = session.position().await?;
        let identifier = self.data_directory.system_identifier;
        match incremental::choose_base(&self.repository, &self.layout, identifier, timeline).await? {
            Ok(base) => {
                tracing::info!(parent = %base.parent.id, "taking an incremental backup on top of {}", base.parent.id);
                Ok(Some(base))
            }
            Err(reason) => {
                tracing::warn!("taking a full backup instead of an incremental one: {reason}");
                Ok(None)
            }
        }
    }

    /// Which blocks changed since the parent started: from the WAL in between, or, when some of
    /// it cannot be read, from page LSNs.
    async fn find_changes(
        &self,
        session: &mut Session,
        server: &ServerInfo,
        base: Base,
        start_lsn: Lsn,
    ) -> Result<IncrementalSource, BackupError> {
        let pg_wal = self.pgdata.join("pg_wal");
        let source = changes::WalSource {
            pg_wal: &pg_wal,
            repository: &self.repository,
            layout: &self.layout,
            timeline: base.parent.timeline,
            segment_size: server.segment_size,
        };
        let since = base.parent.start_lsn;
        let finder = match changes::from_wal(&source, since, start_lsn).await {
            Ok(changed) => ChangeFinder::Wal(changed),
            Err(incomplete) => {
                let reason = incomplete.to_string();
                tracing::warn!("{reason}: comparing every block's page LSN with {since} instead");
                let (_, not_after) = session.position().await?;
                ChangeFinder::PageLsn { since, not_after, reason }
            }
        };
        Ok(IncrementalSource { base, finder })
    }

    /// Walks and copies everything (for an incremental, what changed), `global/pg_control` last,
    /// pinging the session meanwhile.
    async fn copy(
        &self,
        session: &mut Session,
        id: BackupId,
        server: &ServerInfo,
        source: Option<IncrementalSource>,
    ) -> Result<Copied, BackupError> {
        let pgdata = self.pgdata.clone();
        let major = server.major();
        let walked = tokio::task::spawn_blocking(move || walk::walk(&pgdata, major))
            .await
            .expect("the directory walk does not panic")?;
        let entries = Arc::new(walked.entries);
        let (plan, decided) = match &source {
            None => (copy::plan(&entries, self.options.part_size), None),
            Some(source) => {
                let (walked, base, finder) = (entries.clone(), source.base.clone(), &source.finder);
                let decided = match finder {
                    // Reads every relation file: off the runtime.
                    ChangeFinder::PageLsn { since, not_after, reason } => {
                        let finder =
                            ChangeFinder::PageLsn { since: *since, not_after: *not_after, reason: reason.clone() };
                        tokio::task::spawn_blocking(move || IncrementalPlan::decide(&walked, &base, &finder))
                            .await
                            .expect("deciding what changed does not panic")?
                    }
                    ChangeFinder::Wal(_) => IncrementalPlan::decide(&walked, &base, finder)?,
                };
                let whole = decided.whole.clone();
                (copy::plan_selected(&entries, self.options.part_size, |index| whole[index], 1), Some(decided))
            }
        };
        let mut next_object = 1 + plan.jobs.len() + usize::from(plan.last.is_some());
        let mut jobs = plan.jobs;
        let mut bytes = plan.bytes;
        if let Some(decided) = &decided {
            let block_jobs = decided.block_jobs(next_object);
            next_object += block_jobs.len();
            bytes += block_jobs.iter().map(|job| job.bytes).sum::<u64>();
            jobs.extend(block_jobs);
        }
        let object_count = jobs.len() + usize::from(plan.last.is_some());
        let file_count = entries.iter().filter(|entry| matches!(entry.kind, WalkedKind::File { .. })).count();
        match &decided {
            None => tracing::info!(
                backup = %id,
                "copying {file_count} files ({}) into {object_count} objects with {} workers ({} excluded)",
                format_bytes(bytes),
                self.options.workers,
                walked.excluded,
            ),
            Some(decided) => tracing::info!(
                backup = %id,
                "{file_count} files: {} unchanged, {} copied whole, {} with {} changed blocks; storing {} in \
                 {object_count} objects with {} workers",
                decided.unchanged.len(),
                decided.whole.iter().filter(|whole| **whole).count(),
                decided.blocked.len(),
                decided.changed_blocks(),
                format_bytes(bytes),
                self.options.workers,
            ),
        }
        self.options.progress.bytes_total.store(bytes, Ordering::Relaxed);
        let copy_began = Instant::now();
        let spill = open_spill()?;
        let copier = Copier {
            repository: self.repository.clone(),
            layout: self.layout.clone(),
            id,
            entries: entries.clone(),
            progress: self.options.progress.clone(),
            spill: Arc::new(spill),
        };
        let mut outcomes = self.run_jobs(session, &copier, jobs).await?;
        let mut by_index = copy::assemble(&outcomes, self.options.part_size);
        let mut assembled = BTreeMap::new();
        let mut changed_blocks = 0;
        if let (Some(source), Some(decided)) = (&source, &decided) {
            let (files, unhashable) =
                incremental::assemble(&self.repository, &self.layout, &source.base, &entries, decided, &outcomes)
                    .await?;
            assembled = files;
            changed_blocks =
                assembled.values().flat_map(|file| file.stored.runs.iter()).map(|run| run.values.len() as u64).sum();
            if !unhashable.is_empty() {
                // Rare (a block map without some block's value, or a file gone meanwhile): copy
                // those files whole rather than trust an unproven hash.
                tracing::warn!(backup = %id, "copying {} files whole whose blocks could not all be hashed", unhashable.len());
                let again = copy::plan_selected(
                    &entries,
                    self.options.part_size,
                    |index| unhashable.contains(&index),
                    next_object - 1,
                );
                let more = self.run_jobs(session, &copier, again.jobs).await?;
                by_index.extend(copy::assemble(&more, self.options.part_size));
                outcomes.extend(more);
            }
        }
        if let Some(last) = plan.last {
            let outcome = copier.run_job(last).await?;
            by_index.extend(copy::assemble(std::slice::from_ref(&outcome), self.options.part_size));
            outcomes.push(outcome);
        }
        let copied_bytes = copier.progress.bytes.load(Ordering::Relaxed);
        let seconds = copy_began.elapsed().as_secs_f64();
        tracing::info!(
            backup = %id,
            "copied {} in {seconds:.2}s ({:.0} MB/s)",
            format_bytes(copied_bytes),
            copied_bytes as f64 / seconds.max(1e-3) / 1e6
        );

        let mut objects: Vec<_> = outcomes.iter().map(|outcome| outcome.object.clone()).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let empty_hash = blake3::hash(b"");
        for index in plan.empty {
            let entry = &entries[index];
            let (mode, mtime) = (entry.mode, entry.mtime);
            let empty =
                FileOutcome::Copied { size: 0, blake3: empty_hash, mode, mtime, locations: Vec::new(), blocks: None };
            by_index.insert(index, empty);
        }
        let mut unchanged = decided.as_ref().map(|decided| decided.unchanged.clone()).unwrap_or_default();
        let mut files = Vec::with_capacity(entries.len());
        let mut mapped: Vec<MappedFile> = Vec::new();
        let mut vanished = 0;
        let mut whole_files = 0;
        for (index, entry) in entries.iter().enumerate() {
            let mut file = FileEntry {
                path: entry.path.clone(),
                kind: EntryKind::Dir,
                mode: entry.mode,
                mtime: entry.mtime,
                size: None,
                blake3: None,
                locations: Vec::new(),
                target: None,
            };
            match &entry.kind {
                WalkedKind::Dir => {}
                WalkedKind::Symlink { target } => {
                    file.kind = EntryKind::Symlink;
                    file.target = Some(target.clone());
                }
                WalkedKind::File { .. } => {
                    if let Some(previous) = unchanged.remove(&index) {
                        files.push(previous);
                        continue;
                    }
                    if let Some(assembled) = assembled.remove(&index) {
                        mapped.push(MappedFile::Runs(assembled.stored));
                        files.push(assembled.entry);
                        continue;
                    }
                    match by_index.remove(&index) {
                        Some(FileOutcome::Copied { size, blake3, mode, mtime, locations, blocks }) => {
                            file.kind = EntryKind::File;
                            file.mode = mode;
                            file.mtime = mtime;
                            file.size = Some(size);
                            file.blake3 = Some(blake3.to_hex().to_string());
                            file.locations = locations;
                            whole_files += 1;
                            if let Some(ranges) = blocks {
                                mapped.push(MappedFile::Spilled { path: entry.path.clone(), ranges });
                            }
                        }
                        Some(FileOutcome::Vanished) | None => {
                            vanished += 1;
                            continue;
                        }
                    }
                }
            }
            files.push(file);
        }
        mapped.sort_by(|a, b| a.path().cmp(b.path()));
        let block_map = self.store_block_map(id, mapped, copier.spill.clone()).await?;
        let incremental = match (source, decided) {
            (Some(source), Some(decided)) => Some(Incremental {
                parent: source.base.parent.id,
                chain: source.base.chain.clone(),
                changes_from: source.finder.source(),
                fallback_reason: source.finder.fallback_reason(),
                changed_blocks,
                whole_files,
                unchanged_files: decided.unchanged.len() as u64,
                stored_plaintext_bytes: objects.iter().map(|object| object.size).sum(),
            }),
            _ => None,
        };
        let tablespaces = walked
            .tablespaces
            .into_iter()
            .map(|found| Tablespace {
                oid: found.oid,
                name: server.tablespaces.iter().find(|(oid, ..)| *oid == found.oid).map(|(_, name, _)| name.clone()),
                location: found.location,
            })
            .collect();
        Ok(Copied { files, tablespaces, objects, block_map: Some(block_map), incremental, vanished })
    }

    /// Runs copy jobs, pinging the session and watching the lease and cancellation meanwhile.
    async fn run_jobs(
        &self,
        session: &mut Session,
        copier: &Copier,
        jobs: Vec<copy::Job>,
    ) -> Result<Vec<copy::JobOutcome>, BackupError> {
        let mut task = tokio::spawn({
            let copier = copier.clone();
            let workers = self.options.workers;
            async move { copier.run(jobs, workers).await }
        });
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                () = self.options.cancel.cancelled() => {
                    task.abort();
                    return Err(BackupError::Cancelled { phase: "while copying files" });
                }
                joined = &mut task => match joined {
                    Ok(result) => return result,
                    Err(error) => std::panic::resume_unwind(error.into_panic()),
                },
                _ = tick.tick() => {
                    if self.lease.is_lost() {
                        task.abort();
                        return Err(BackupError::LeaseLost { lock: self.lock.clone() });
                    }
                    if let Err(error) = session.ping().await {
                        task.abort();
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Stores the block map (before the manifest, like every object of the backup). It is
    /// written from the spill into an unnamed temporary file beside it first, then streamed from
    /// there: its size grows with the database, so it is never held in memory.
    async fn store_block_map(
        &self,
        id: BackupId,
        mapped: Vec<MappedFile>,
        spill: Arc<blockmap::ValueSpill>,
    ) -> Result<ObjectEntry, BackupError> {
        let key = self.layout.backup_object(id, BLOCK_MAP);
        let files = mapped.len() as u64;
        let dir = spill.dir().to_owned();
        let spill_error = |source| BackupError::Spill { dir: dir.clone(), source };
        let encoded = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = blockmap::ValueSpill::unnamed_file(spill.dir())?;
            let mut out = std::io::BufWriter::with_capacity(1024 * 1024, &mut file);
            blockmap::encode_to(&mut out, &mapped, Some(&spill))?;
            out.flush()?;
            drop(out);
            file.seek(std::io::SeekFrom::Start(0))?;
            Ok(file)
        })
        .await
        .expect("encoding the block map does not panic")
        .map_err(spill_error)?;
        let summary = self.repository.put_file(&key, encoded, PutMode::CreateOnly).await?;
        Ok(ObjectEntry {
            key: BLOCK_MAP.to_owned(),
            size: summary.plaintext_len,
            stored_size: summary.stored_len,
            blake3: summary.recorded_hash().to_hex().to_string(),
            files,
        })
    }

    fn manifest(&self, parts: ManifestParts<'_>) -> BackupManifest {
        let identifier = SystemIdentifier(self.data_directory.system_identifier);
        build_manifest(&self.layout, BackupMethod::Native, identifier, parts)
    }
}

/// A new backup's id: the current time to the second. A backup that finished within the same
/// second already has it (orphans are gone by now, so any object there is a complete backup's):
/// then wait for the next second.
async fn choose_id(
    repository: &Repository,
    layout: &ClusterLayout,
    kind: BackupKind,
) -> Result<(BackupId, DateTime<Utc>), BackupError> {
    loop {
        let now = Utc::now();
        let id = BackupId::new(now, kind);
        if repository.store().list(&layout.backup_dir(id)).await?.is_empty() {
            return Ok((id, now));
        }
        let rest_of_second = 1_000_000_000 - u64::from(now.timestamp_subsec_nanos().min(999_999_999));
        tokio::time::sleep(Duration::from_nanos(rest_of_second) + Duration::from_millis(1)).await;
    }
}

/// The manifest of a backup whose files are copied, whatever the method.
fn build_manifest(
    layout: &ClusterLayout,
    method: BackupMethod,
    system_identifier: SystemIdentifier,
    parts: ManifestParts<'_>,
) -> BackupManifest {
    let ManifestParts { id, server, timeline, start_lsn, stopped, start_time, stop_time, label, copied } = parts;
    let segment_size = server.segment_size;
    let start_wal = WalSegment::containing(timeline, start_lsn, segment_size);
    let stop_wal = WalSegment::containing(timeline, Lsn(stopped.lsn.as_u64().saturating_sub(1)), segment_size);
    let count = |kind| copied.files.iter().filter(|file| file.kind == kind).count() as u64;
    let totals = Totals {
        files: count(EntryKind::File),
        directories: count(EntryKind::Dir),
        symlinks: count(EntryKind::Symlink),
        bytes: copied.files.iter().filter_map(|file| file.size).sum(),
        stored_bytes: copied.objects.iter().chain(&copied.block_map).map(|object| object.stored_size).sum(),
        objects: copied.objects.len() as u64,
        vanished: copied.vanished,
    };
    BackupManifest {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        id,
        method,
        cluster: layout.name().to_string(),
        system_identifier,
        postgres_version_num: server.version_num,
        postgres_version: server.version.clone(),
        wal_segment_size: segment_size,
        timeline,
        start_lsn,
        stop_lsn: stopped.lsn,
        start_wal: start_wal.name(segment_size),
        stop_wal: stop_wal.name(segment_size),
        start_time,
        stop_time,
        label,
        backup_label: stopped.label_file,
        tablespace_map: stopped.tablespace_map,
        host: hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_owned(),
        tablespaces: copied.tablespaces,
        totals,
        incremental: copied.incremental,
        block_map: copied.block_map,
        objects: copied.objects,
        files: copied.files,
    }
}

struct ManifestParts<'a> {
    id: BackupId,
    server: &'a ServerInfo,
    timeline: Timeline,
    start_lsn: Lsn,
    stopped: Stopped,
    start_time: DateTime<Utc>,
    stop_time: DateTime<Utc>,
    label: String,
    copied: Copied,
}

/// Whether `pg_backup_stop(wait_for_archive => true)` would wait: on a primary that archives, or
/// on a standby with `archive_mode = always`.
fn archiving_waits(server: &ServerInfo) -> bool {
    match server.archive_mode.as_str() {
        "off" => false,
        "always" => true,
        _ => !server.in_recovery,
    }
}

/// Stores the manifest (create-only: the commit point, G1), then records the backup in the
/// cluster's journal, so that its later disappearance is noticed (G9).
async fn store_manifest(
    repository: &Repository,
    layout: &ClusterLayout,
    manifest: &BackupManifest,
) -> Result<ObjectKey, BackupError> {
    let key = layout.backup_manifest(manifest.id);
    let json = manifest.to_json();
    let manifest_blake3 = hash_hex(&json);
    repository.put_bytes(&key, json, PutMode::CreateOnly).await?;
    journal::append(repository, layout, Event::Completed { id: manifest.id, manifest_blake3 })
        .await
        .map_err(|source| BackupError::Unrecorded { id: manifest.id, source })?;
    Ok(key)
}

/// Waits until every WAL segment from the one holding `start_lsn` to the one holding the byte
/// before `stop_lsn` is in the backup's own repository: PostgreSQL saying it archived them only
/// means `archive_command` succeeded, which proves nothing when that command pushes to another
/// repository (or nowhere). Waits up to `archive_timeout`.
async fn wait_for_wal_in_repository(
    repository: &Repository,
    layout: &ClusterLayout,
    server: &ServerInfo,
    timeline: Timeline,
    start_lsn: Lsn,
    stop_lsn: Lsn,
    options: &BackupOptions,
) -> Result<(), BackupError> {
    let size = server.segment_size;
    let first = WalSegment::containing(timeline, start_lsn, size);
    let last = WalSegment::containing(timeline, Lsn(stop_lsn.as_u64().saturating_sub(1)), size);
    let began = Instant::now();
    let mut pause = Duration::from_millis(10);
    for number in first.number..=last.number {
        let segment = WalSegment { timeline, number };
        let key = layout.wal_file(&WalFile::Segment(segment), size);
        while repository.store().head(&key).await?.is_none() {
            let waited = began.elapsed();
            if waited >= options.archive_timeout {
                let archiver = if server.in_recovery { "the primary's archive_command" } else { "archive_command" };
                return Err(BackupError::WalNotInRepository {
                    segment: segment.name(size),
                    location: repository.location(),
                    waited: waited.as_secs(),
                    archiver,
                    archive_command: server.archive_command.clone(),
                });
            }
            tokio::time::sleep(pause.min(options.archive_timeout.saturating_sub(waited))).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
    tracing::debug!(waited = ?began.elapsed(), "the WAL the backup needs is in the repository");
    Ok(())
}

/// Waits until the archiver is done with `files` (the backup's last WAL segment and its backup
/// history file), as `pg_backup_stop(wait_for_archive => true)` would: a file is archived when
/// `pg_wal/archive_status/<file>.done` exists, or when it has neither `.done` nor `.ready` and is
/// gone from `pg_wal` (a checkpoint removed it after archiving). Like PostgreSQL, it waits for as
/// long as the archiver keeps failing, and says so every half minute.
async fn wait_for_archive(pgdata: &Path, files: &[String]) -> Result<(), BackupError> {
    let wal = pgdata.join("pg_wal");
    let status = wal.join("archive_status");
    let began = Instant::now();
    let mut next_warning = ARCHIVE_WAIT_WARNING;
    let mut pause = Duration::from_millis(5);
    for file in files {
        loop {
            let done = status.join(format!("{file}.done"));
            let archived = exists(&done).await?
                || (!exists(&status.join(format!("{file}.ready"))).await?
                    && (exists(&done).await? || !exists(&wal.join(file)).await?));
            if archived {
                break;
            }
            if began.elapsed() >= next_warning {
                tracing::warn!(
                    "waited {}s for PostgreSQL to archive {file}, which the backup needs; if this does not end, \
                     check archive_command and the server log (`SELECT * FROM pg_stat_archiver` shows the last \
                     failure)",
                    began.elapsed().as_secs()
                );
                next_warning += ARCHIVE_WAIT_WARNING;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
    tracing::debug!(waited = ?began.elapsed(), "the WAL the backup needs is archived");
    Ok(())
}

async fn exists(path: &Path) -> Result<bool, BackupError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(WalkError::Unreadable { path: path.to_path_buf(), source }.into()),
    }
}

/// The backup's timeline, from backup_label: `START TIMELINE: 1`, or on servers before 11 the
/// file name in `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`.
pub fn start_timeline(label: &str) -> Result<Timeline, BackupError> {
    let from_timeline = label
        .lines()
        .find_map(|line| line.strip_prefix("START TIMELINE: "))
        .and_then(|value| value.trim().parse::<u32>().ok())
        .and_then(Timeline::new);
    let from_file = || {
        label
            .lines()
            .find_map(|line| line.strip_prefix("START WAL LOCATION: "))
            .and_then(|value| value.split("(file ").nth(1))
            .and_then(|file| file.get(..8))
            .and_then(|hex| Timeline::from_hex(hex).ok())
    };
    from_timeline.or_else(from_file).ok_or_else(|| BackupError::BadLabel { label: label.to_owned() })
}

/// Reads `PG_VERSION` and the system identifier at the start of `global/pg_control`.
fn inspect_data_directory(pgdata: &Path) -> Result<DataDirectory, BackupError> {
    let not_a_data_directory =
        |problem: String| BackupError::NotADataDirectory { pgdata: pgdata.to_path_buf(), problem };
    match std::fs::metadata(pgdata) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(not_a_data_directory("it is not a directory".into())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_a_data_directory("it does not exist".into()));
        }
        Err(source) => return Err(WalkError::Unreadable { path: pgdata.to_path_buf(), source }.into()),
    }
    let read = |name: &str| match std::fs::read(pgdata.join(name)) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(not_a_data_directory(format!("no {name}"))),
        Err(source) => Err(BackupError::from(WalkError::Unreadable { path: pgdata.join(name), source })),
    };
    let version = String::from_utf8_lossy(&read("PG_VERSION")?).trim().to_owned();
    let major = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| not_a_data_directory(format!("PG_VERSION holds {version:?}")))?;
    let control = read("global/pg_control")?;
    let Some(identifier) = control.get(..8) else {
        return Err(not_a_data_directory("global/pg_control is too short".into()));
    };
    // ControlFileData starts with the system identifier, in the server's byte order (this host's).
    let system_identifier = u64::from_ne_bytes(identifier.try_into().expect("8 bytes"));
    Ok(DataDirectory { system_identifier, major })
}

/// Refuses a server lifeboat cannot back up, or one that does not own `pgdata`.
fn check_server(session: &Session, pgdata: &Path, data_directory: DataDirectory) -> Result<(), BackupError> {
    let server = &session.server;
    let connection = session.redacted().to_owned();
    version::check_supported(server.major(), format_args!("the server at {connection}"))?;
    match (server.system_identifier, &server.data_directory) {
        (Some(server_identifier), _) => {
            if server_identifier != data_directory.system_identifier {
                return Err(BackupError::OtherCluster {
                    pgdata: pgdata.to_path_buf(),
                    connection,
                    file: data_directory.system_identifier,
                    server: server_identifier,
                });
            }
        }
        (None, Some(server_dir)) => {
            let ours = std::fs::canonicalize(pgdata).ok();
            if ours.is_none() || ours != std::fs::canonicalize(server_dir).ok() {
                return Err(BackupError::OtherDirectory {
                    pgdata: pgdata.to_path_buf(),
                    connection,
                    server_dir: server_dir.clone(),
                });
            }
        }
        (None, None) => return Err(BackupError::CannotCheckDirectory { pgdata: pgdata.to_path_buf(), connection }),
    }
    if data_directory.major != server.major() {
        return Err(BackupError::VersionMismatch {
            pgdata: pgdata.to_path_buf(),
            connection,
            file_major: data_directory.major,
            server_major: server.major(),
        });
    }
    if server.wal_level == "minimal" {
        return Err(BackupError::WalLevelMinimal);
    }
    Ok(())
}

/// A restore on this host needs server programs of the server's major version. A native backup runs
/// none of them, so when none are found it only warns; a configured `cluster.bin_dir` that does not
/// fit is an error, as it is for every command.
fn check_binaries(config: &Config, server_major: u32) -> Result<(), BackupError> {
    let need = Need::server(server_major, format!("the server at {}", config.cluster.connection.redacted()));
    match PgBinaries::locate(config.cluster.bin_dir.as_deref(), &need) {
        Ok(_) => Ok(()),
        Err(error) if config.cluster.bin_dir.is_some() => Err(error.into()),
        Err(error) => {
            tracing::warn!("{error}; the backup does not need them, but restoring it on this host will");
            Ok(())
        }
    }
}

/// A primary that does not archive can never have a restorable backup (G1: refuse before copying
/// anything). A standby's WAL may be archived by its primary, which the end of the backup waits for.
fn check_archiving(server: &ServerInfo) -> Result<(), BackupError> {
    if server.archive_mode == "off" && !server.in_recovery {
        return Err(BackupError::ArchivingOff);
    }
    if server.in_recovery && server.archive_mode != "always" {
        tracing::warn!(
            "backing up a standby with archive_mode = {}: the backup completes once the primary's archive_command \
             has pushed the WAL it needs into this repository (waiting up to backup.archive_timeout)",
            server.archive_mode
        );
    }
    Ok(())
}

/// The unnamed file the block values wait in: under the state directory, else (warned about)
/// under the temporary directory, so a state directory this process cannot write (a service
/// sandbox, another user's home) costs a warning, not every backup.
fn open_spill() -> Result<blockmap::ValueSpill, BackupError> {
    let temporary = std::env::temp_dir();
    if let Some(state) = crate::catalog::journal::state_dir() {
        match blockmap::ValueSpill::create(&state) {
            Ok(spill) => return Ok(spill),
            Err(error) => tracing::warn!(
                "cannot keep this backup's block values under the state directory {} ({error}); using {} instead. \
                 Set LIFEBOAT_STATE_DIR to a writable directory on a disk with room for 32 bytes per 8 KiB of data",
                state.display(),
                temporary.display()
            ),
        }
    }
    blockmap::ValueSpill::create(&temporary).map_err(|source| BackupError::Spill { dir: temporary, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_come_from_the_backup_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000030000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n\
                     BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-27 03:45:12 UTC\n\
                     LABEL: lifeboat\nSTART TIMELINE: 3\n";
        assert_eq!(start_timeline(label).unwrap().id(), 3);
        let old = "START WAL LOCATION: 0/2000028 (file 0000000A0000000000000002)\nLABEL: x\n";
        assert_eq!(start_timeline(old).unwrap().id(), 10);
        assert!(matches!(start_timeline("LABEL: x\n"), Err(BackupError::BadLabel { .. })));
    }

    #[test]
    fn a_missing_or_foreign_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = inspect_data_directory(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(error.contains("does not exist") && error.contains("cluster.pgdata"), "{error}");
        let error = inspect_data_directory(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no PG_VERSION"), "{error}");
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), 42u64.to_ne_bytes()).unwrap();
        let found = inspect_data_directory(dir.path()).unwrap();
        assert_eq!((found.system_identifier, found.major), (42, 15));
    }
}
