//! `lifeboat restore --pgdata DIR`: a physical restore and point-in-time recovery.
//!
//! Everything that can refuse the restore happens before the first byte is written: the catalog
//! is read, the target is placed in the WAL ([`scan`]), the backup is chosen and the WAL it needs is
//! checked ([`plan`]), the target directory is inspected ([`target_dir`], G4), and the WAL up to
//! the backup's consistent point is read and authenticated ([`wal`]; also on a dry run). Then:
//!
//! 1. `--force` empties the directory; `--delta` removes what the manifest does not know and lists
//!    the files that differ; otherwise the directory is new or empty.
//! 2. Directories and links, then every file from its objects, hashed against the manifest
//!    ([`files`], G3). `global/pg_control` is written under a temporary name.
//! 3. `backup_label`, `tablespace_map`, `recovery.signal` and the recovery settings ([`recovery`]).
//! 4. One `syncfs` per filesystem, then `pg_control` gets its name: a directory without it is
//!    never mistaken for a complete one (PostgreSQL refuses to start without it).
//! 5. With `--start`, the server is started and recovery followed to its target ([`start`]).
//!
//! A failure in steps 1 to 4 leaves a directory without `pg_control`, and its error says so and
//! what to run next: the same restore with `--delta` to resume, or `--force` to start over.
//!
//! `lifeboat restore --dump ID` (a logical restore of one database of a dump into a running
//! server) is [`dump`].

pub mod dump;
pub mod files;
pub mod plan;
pub mod recovery;
pub mod scan;
pub mod start;
pub mod target;
pub mod target_dir;
pub mod wal;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use self::files::{Destination, Owner, Progress};
use self::plan::{Catalog, Plan, PlanError, TargetPosition};
use self::start::Reached;
use self::target::{RecoveryGoal, RecoveryTarget};
use self::target_dir::{DeltaPlan, ExistingData};
use crate::backup::copy::CONTROL_FILE;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, CatalogError, Entry};
use crate::catalog::lsn::Timeline;
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::WalFile;
use crate::config::Config;
use crate::format::backup_manifest::{BackupManifest, ManifestError};
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::version::{self, UnsupportedVersion};
use crate::repository::{Repository, RepositoryError};
use crate::util::format_bytes;
use crate::wal::ahead::{ReadAhead, RecoveryWal};
use crate::wal::check::{CheckError, check};
use crate::wal::fetch::spool_origin;
use crate::wal::spool::{Spool, spool_dir};

/// Where `global/pg_control` is written until the rest of the restore is complete and synced.
pub const CONTROL_FILE_PENDING: &str = "global/pg_control.lifeboat-restoring";

/// What to restore, where, and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    /// `--backup`: this backup instead of the newest one that reaches the target.
    pub backup: Option<BackupId>,
    pub goal: RecoveryGoal,
    pub existing: ExistingData,
    /// `--tablespace-map OLD=NEW`: OLD is a tablespace's original location, name or oid.
    pub tablespace_map: Vec<(String, PathBuf)>,
    pub workers: u32,
    /// Server settings written after the recovery settings, such as `archive_mode = off` so the
    /// restored server does not archive into the repository (a copy for inspection, say).
    pub server_settings: Vec<(&'static str, String)>,
    pub dry_run: bool,
    /// `--start`, with an optional port for the server.
    pub start: Option<Option<u16>>,
    /// The `restore_command` written for PostgreSQL.
    pub restore_command: String,
    /// With `--start` and lifeboat's own `wal-fetch` as `restore_command`: the spool it serves
    /// from, which lifeboat fills ahead of replay while it waits ([`crate::wal::ahead`]). `None`:
    /// nothing is downloaded ahead.
    pub read_ahead: Option<ReadAheadSpool>,
    /// The OS user that owns the restored files when lifeboat runs as root, unless the data
    /// directory (or its parent) already belongs to another non-root user.
    pub os_user: String,
    pub bin_dir: Option<PathBuf>,
    /// Cancelled: the restore stops writing files and ends as [`RestoreError::Interrupted`], leaving
    /// the partial directory a failure leaves.
    pub cancel: CancellationToken,
    /// Counts the files and bytes written, restarted when writing begins, for the caller to report
    /// progress from (the restore prints nothing).
    pub progress: Arc<Progress>,
}

/// Where `wal-fetch` looks for segments downloaded ahead, and how many may wait there.
#[derive(Debug, Clone)]
pub struct ReadAheadSpool {
    pub dir: PathBuf,
    /// `wal.prefetch`.
    pub depth: u32,
}

impl ReadAheadSpool {
    /// The spool `wal-fetch` with `config` serves from when recovery runs in `pgdata`; `None`
    /// when prefetching is off (`wal.prefetch = 0`).
    pub fn of_wal_fetch(config: &Config, pgdata: &Path) -> Option<ReadAheadSpool> {
        let dir = spool_dir(config.wal.spool_dir.as_deref(), config.cluster.name.as_str(), &pgdata.join("pg_wal"));
        (config.wal.prefetch > 0).then_some(ReadAheadSpool { dir, depth: config.wal.prefetch })
    }
}

/// The outcome of a restore (or of a dry run: the plan, and nothing written).
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub backup: BackupId,
    pub backup_stop_time: String,
    pub backup_stop_lsn: String,
    pub target: String,
    pub timeline: u32,
    pub first_wal: String,
    pub last_wal: String,
    pub wal_segments: u64,
    /// The WAL from `first_wal` to this segment (the backup's consistent point) was read and
    /// authenticated before anything was written: this many segments.
    pub wal_authenticated_to: String,
    pub wal_authenticated: u64,
    pub archive_end: String,
    pub pgdata: PathBuf,
    pub tablespaces: BTreeMap<u32, PathBuf>,
    pub mode: ExistingData,
    pub dry_run: bool,
    /// Files the backup has, and how many of them are (to be) written.
    pub files: u64,
    pub files_written: u64,
    pub files_kept: u64,
    pub removed: Vec<String>,
    /// Plaintext bytes (to be) written, and the stored bytes fetched for them.
    pub bytes_written: u64,
    pub bytes_fetched: u64,
    /// Seconds to write the files (planning included), and in all (recovery included with --start).
    pub restore_seconds: f64,
    pub seconds: f64,
    pub reached: Option<Reached>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the restore was cancelled ({phase})")]
    Interrupted { phase: &'static str },

    #[error(transparent)]
    Plan(#[from] PlanError),

    #[error("{0}; nothing was written")]
    Version(#[from] UnsupportedVersion),

    #[error(transparent)]
    Catalog(#[from] CatalogError),

    #[error(transparent)]
    Manifest(#[from] ManifestError),

    #[error(transparent)]
    Check(#[from] CheckError),

    #[error("{source}")]
    Repository { source: RepositoryError },

    #[error("the backup manifest is not usable: {detail}")]
    BadManifest { detail: String },

    #[error(
        "object {key} is damaged: {detail}. The restore stopped before starting PostgreSQL; restore from another \
         backup (`lifeboat list`, then `--backup ID`) and run `lifeboat verify` on this one"
    )]
    Damaged { key: String, detail: String },

    #[error(
        "could not read object {key} from the repository ({detail}); this says nothing about the backup. Check \
         that the repository is reachable (on a flaky network raise repository.s3.max_attempts), then run the same \
         restore again with --delta to resume"
    )]
    Unreadable { key: String, detail: String },

    #[error(
        "{path} restored from {key} does not match the backup manifest (BLAKE3 {actual}, expected {expected}); \
         the restore stopped before starting PostgreSQL. Restore from another backup (`--backup ID`)"
    )]
    HashMismatch { path: String, key: String, expected: String, actual: String },

    #[error("cannot {action} {}: {source}", path.display())]
    Write { path: PathBuf, action: &'static str, source: std::io::Error },

    #[error(
        "{} is not empty; restore into an empty or new directory, or pass --delta (rewrite only what differs \
         from the backup) or --force (delete everything in it first)", path.display()
    )]
    NotEmpty { path: PathBuf },

    #[error(
        "a PostgreSQL server (pid {pid}) is running on {}; stop it first (`pg_ctl stop -D {}`); lifeboat never \
         restores under a running server", pgdata.display(), pgdata.display()
    )]
    ServerRunning { pgdata: PathBuf, pid: u32 },

    #[error("--tablespace-map {old}: {reason}")]
    TablespaceMap { old: String, reason: String },

    #[error("cannot place the target in the archived WAL: {detail}")]
    WalScan { detail: String },

    #[error("{detail}")]
    Binaries { detail: String },

    #[error(
        "{source}. Backup {backup} cannot be restored from this archive: recovery needs WAL {first} .. {last} to \
         reach a consistent state. Nothing was written to {}. Restore from another backup (`lifeboat list`, then \
         `--backup ID`), and run `lifeboat wal check`", pgdata.display()
    )]
    Wal { source: Box<wal::WalReadError>, backup: BackupId, first: String, last: String, pgdata: PathBuf },

    #[error(
        "{source}\n{} holds a partial restore ({written}) and no global/pg_control, so PostgreSQL will not start \
         on it. Once the cause is fixed, run the same restore with --delta to resume (intact files are kept) or \
         with --force to start over (everything in it is deleted first)", pgdata.display()
    )]
    Partial { source: Box<RestoreError>, pgdata: PathBuf, written: String },

    #[error("the restore was cancelled")]
    Cancelled,

    #[error(
        "the manifest {key} cannot be read ({detail}), so lifeboat cannot tell whether that backup is the one to \
         restore, and nothing was written. Choose an intact backup with --backup <id> (intact full backups: \
         {intact}); `lifeboat list` shows every problem in the repository"
    )]
    DamagedManifest { key: String, detail: String, intact: String },

    #[error("cannot start PostgreSQL on the restored directory: {detail}")]
    Start { detail: String },

    #[error("recovery failed: {line} (server log: {}){tail}", log_file.display())]
    Recovery { line: String, log_file: PathBuf, tail: String },
}

/// Reads what the repository knows about the cluster: backups, the archive, timeline histories.
/// With `only` (a base backup chosen by `--backup`, or being verified), just that backup's
/// manifest is read, not every one in the repository.
pub async fn load_catalog(
    repository: &Repository,
    layout: &ClusterLayout,
    only: Option<BackupId>,
) -> Result<Catalog, RestoreError> {
    let entries = match only {
        Some(id) if id.kind().is_physical() => vec![listing::read_entry(repository, layout, id).await?],
        _ => {
            let listing = listing::read_all(repository, layout).await?;
            if let Some(damaged) = listing.damaged.first() {
                let intact: Vec<String> = listing.intact_full_backups().iter().map(ToString::to_string).collect();
                return Err(RestoreError::DamagedManifest {
                    key: damaged.key.to_string(),
                    detail: damaged.detail.clone(),
                    intact: if intact.is_empty() { "none".to_owned() } else { intact.join(", ") },
                });
            }
            warn_about_missing_backups(repository, layout, &listing).await;
            listing.entries
        }
    };
    let backups: Vec<BackupManifest> = entries
        .into_iter()
        .filter_map(|entry| match entry {
            Entry::Physical(manifest) => Some(*manifest),
            Entry::Dump(_) => None,
        })
        .collect();
    let archive = check(repository, layout).await?;
    let mut histories = BTreeMap::new();
    for name in &archive.history_files {
        let Ok(WalFile::History(timeline)) = WalFile::parse(name, archive.segment_size) else { continue };
        let key = layout.wal_file(&WalFile::History(timeline), archive.segment_size);
        let bytes = repository.get_bytes(&key).await.map_err(|source| RestoreError::Repository { source })?;
        let history = TimelineHistory::parse(timeline, &String::from_utf8_lossy(&bytes))
            .map_err(|error| RestoreError::WalScan { detail: error.to_string() })?;
        histories.insert(timeline, history);
    }
    Ok(Catalog { backups, archive, histories })
}

/// Choosing among the backups that are there, one the journal records but that is gone (deleted
/// behind lifeboat's back) would silently not be chosen: say so, without stopping a restore over
/// it (`lifeboat list` names every problem). A journal that cannot be read is only a debug line.
async fn warn_about_missing_backups(repository: &Repository, layout: &ClusterLayout, listing: &listing::Listing) {
    let journal = match crate::catalog::journal::read(repository, layout).await {
        Ok(journal) => journal,
        Err(error) => {
            tracing::debug!(%error, "could not read the journal to check for missing backups");
            return;
        }
    };
    for problem in &journal.problems {
        tracing::warn!("the repository's journal has a problem: {problem}");
    }
    let Some(state) = journal.state() else { return };
    for item in state.items.iter().filter(|item| !listing.entries.iter().any(|entry| entry.id() == item.id)) {
        tracing::warn!(
            "{} is missing from the repository although the journal records it and lifeboat never deleted it; \
             this restore chooses among the backups that remain (`lifeboat list` names every problem)",
            item.id
        );
    }
}

/// Places the target in the WAL where the plan needs it.
async fn locate_target(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    catalog: &Catalog,
    goal: &RecoveryGoal,
) -> Result<TargetPosition, RestoreError> {
    let needs_scan = matches!(goal.target, RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) | RecoveryTarget::Time(_));
    if !needs_scan || catalog.backups.is_empty() {
        return Ok(TargetPosition::NotNeeded);
    }
    let history = match plan::target_history(catalog, goal.timeline)? {
        Some(history) => history,
        None => {
            let newest = catalog.backups.last().map_or(Timeline::FIRST, |backup| backup.timeline);
            plan::target_history(catalog, target::TimelineChoice::Id(newest))?.expect("an explicit timeline")
        }
    };
    let reachable = plan::reachable_backups(catalog, Some(&history))?;
    let size = catalog.archive.segment_size;
    let (Some((oldest, _)), Some((newest, _))) = (reachable.first(), reachable.last()) else {
        return Ok(TargetPosition::LastTransaction(None));
    };
    match &goal.target {
        RecoveryTarget::Time(_) => {
            let first = newest.start_segment().number;
            let Some(end) = plan::archive_end(&catalog.archive, &history, first) else {
                return Ok(TargetPosition::LastTransaction(None));
            };
            let last = scan::last_transaction(repository.clone(), layout, size, &history, first, end.number).await?;
            Ok(TargetPosition::LastTransaction(last))
        }
        target => {
            let first = oldest.start_segment().number;
            let Some(end) = plan::archive_end(&catalog.archive, &history, first) else {
                return Ok(TargetPosition::LastTransaction(None));
            };
            scan::find_record(repository.clone(), layout, size, &history, first, end.number, target).await
        }
    }
}

/// Runs a restore: plans, checks, writes, and (with `--start`) recovers.
pub async fn run(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    options: &RestoreOptions,
) -> Result<RestoreSummary, RestoreError> {
    let began = Instant::now();
    let catalog = load_catalog(&repository, layout, options.backup).await?;
    let position = locate_target(&repository, layout, &catalog, &options.goal).await?;
    let plan = plan::choose(&catalog, &options.goal, position, options.backup)?;
    // Every manifest of the repository was read to choose; only the chosen one is needed now.
    drop(catalog);
    let manifest = &plan.backup;
    tracing::info!(
        backup = %manifest.id,
        "restoring backup {} (consistent at {}) to {}, following timeline {}",
        manifest.id,
        manifest.stop_lsn,
        options.goal.target,
        plan.history.timeline()
    );

    version::check_supported(
        version::major_of_version_num(manifest.postgres_version_num),
        format_args!("backup {}", manifest.id),
    )?;
    let binaries = find_binaries(options, manifest)?;
    let owner = resolve_owner(&options.pgdata, &options.os_user)?;
    let tablespaces = map_tablespaces(manifest, &options.tablespace_map)?;
    let destination = Arc::new(Destination { pgdata: options.pgdata.clone(), tablespaces, owner });
    let inspection = target_dir::inspect(&destination, options.existing)?;
    if options.cancel.is_cancelled() {
        return Err(RestoreError::Interrupted { phase: "before anything was written" });
    }

    let mut summary = summarise(&plan, options, &destination);
    authenticate_wal(&repository, layout, &plan, options, &mut summary).await?;
    if options.dry_run {
        if options.existing == ExistingData::Delta && inspection.pgdata_in_use {
            tracing::info!(
                "dry run: --delta compares every file by hash when it runs; the counts assume all are rewritten"
            );
        }
        summary.seconds = began.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let progress = &options.progress;
    let written =
        write_directory(&repository, layout, &plan, options, &destination, inspection.pgdata_in_use, &mut summary)
            .await;
    if let Err(error) = written {
        let files = progress.files.load(Ordering::Relaxed);
        let bytes = progress.bytes.load(Ordering::Relaxed);
        return Err(RestoreError::Partial {
            source: Box::new(error),
            pgdata: options.pgdata.clone(),
            written: format!("{files} files, {}, written by this run", format_bytes(bytes)),
        });
    }
    summary.restore_seconds = began.elapsed().as_secs_f64();
    summary.seconds = summary.restore_seconds;
    tracing::info!(
        "restored {} files ({}) into {} in {:.1} s",
        summary.files_written,
        format_bytes(summary.bytes_written),
        options.pgdata.display(),
        summary.seconds
    );

    if let Some(port) = options.start {
        let binaries = binaries.ok_or_else(|| RestoreError::Binaries {
            detail: "--start needs the PostgreSQL server binaries; set cluster.bin_dir".into(),
        })?;
        let runs_to_end = matches!(options.goal.target, RecoveryTarget::Latest);
        let read_ahead =
            options.read_ahead.as_ref().and_then(|spool| start_read_ahead(&repository, layout, &plan, spool, owner));
        let reached = start::start_and_wait(
            &binaries,
            &options.pgdata,
            owner,
            port,
            options.goal.action,
            runs_to_end,
            read_ahead.as_ref(),
        )
        .await;
        if let Some(read_ahead) = read_ahead {
            read_ahead.stop().await;
        }
        let reached = reached?;
        summary.seconds = began.elapsed().as_secs_f64();
        summary.reached = Some(reached);
    }
    Ok(summary)
}

/// Starts downloading the WAL recovery will read into `spool`, given to `owner` so that `wal-fetch`
/// (run by the server as its OS user) can serve it; `None` when the spool cannot be used.
fn start_read_ahead(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    plan: &Plan,
    spool: &ReadAheadSpool,
    owner: Option<Owner>,
) -> Option<ReadAhead> {
    let origin = spool_origin(repository, layout);
    let opened = Spool::open_as(&spool.dir, &origin, owner.map(|owner| (owner.uid, owner.gid)));
    let opened = match opened {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(
                "cannot download WAL ahead of recovery into {} ({error}); wal-fetch downloads each segment when \
                 recovery asks for it",
                spool.dir.display()
            );
            return None;
        }
    };
    let wal = RecoveryWal {
        history: plan.history.clone(),
        first: plan.first_wal.number,
        last: plan.last_wal.number,
        size: plan.backup.wal_segment_size,
    };
    Some(ReadAhead::start(repository.clone(), layout.clone(), opened, wal, spool.depth))
}

/// Reads the WAL recovery needs to reach the backup's consistent point, authenticated, before
/// anything is written (see [`wal`]). The segments after it, up to the target, are checked for
/// presence by the planner and authenticated by `wal-fetch` as recovery reads them.
async fn authenticate_wal(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    plan: &Plan,
    options: &RestoreOptions,
    summary: &mut RestoreSummary,
) -> Result<(), RestoreError> {
    let size = plan.backup.wal_segment_size;
    let consistent = plan.history.segment(plan.backup.stop_segment().number, size);
    let segments: Vec<_> =
        (plan.first_wal.number..=consistent.number).map(|number| plan.history.segment(number, size)).collect();
    let began = Instant::now();
    wal::read_segments(repository.clone(), layout, size, &segments, options.workers as usize, None).await.map_err(
        |source| RestoreError::Wal {
            source: Box::new(source),
            backup: plan.backup.id,
            first: plan.first_wal.name(size),
            last: consistent.name(size),
            pgdata: options.pgdata.clone(),
        },
    )?;
    summary.wal_authenticated_to = consistent.name(size);
    summary.wal_authenticated = segments.len() as u64;
    tracing::info!(
        "WAL {} to {} authenticated ({} segments, up to the backup's consistent point) in {:.1} s",
        summary.first_wal,
        summary.wal_authenticated_to,
        summary.wal_authenticated,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Empties or compares the directory, writes every file, the recovery settings, syncs, and
/// gives `pg_control` its name last.
#[allow(clippy::too_many_arguments)]
async fn write_directory(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    plan: &Plan,
    options: &RestoreOptions,
    destination: &Arc<Destination>,
    in_use: bool,
    summary: &mut RestoreSummary,
) -> Result<(), RestoreError> {
    let manifest = Arc::new(plan.backup.clone());
    let wanted = prepare_directory(&manifest, destination, options, in_use)?;
    if let Some(delta) = &wanted.delta {
        tracing::info!(
            "delta: {} files intact, {} to write, {} removed",
            delta.kept,
            delta.rewrite.len(),
            delta.removed.len()
        );
        summary.files_kept = delta.kept as u64;
        summary.removed = delta.removed.clone();
    }
    summary.files_written = wanted.files.len() as u64;
    summary.bytes_written = wanted.files.iter().map(|&index| manifest.files[index].size.unwrap_or(0)).sum();
    summary.bytes_fetched = fetched_bytes(&manifest, &wanted.files);

    files::create_tree(&manifest, destination)?;
    options.progress.restart(summary.bytes_written);
    let writing = files::write_files(
        repository.clone(),
        layout,
        manifest.clone(),
        destination.clone(),
        &wanted.files,
        options.workers,
        options.progress.clone(),
    );
    tokio::select! {
        result = writing => result?,
        () = options.cancel.cancelled() => return Err(RestoreError::Interrupted { phase: "while writing files" }),
    }
    if options.cancel.is_cancelled() {
        return Err(RestoreError::Interrupted { phase: "before the recovery settings were written" });
    }

    let header = format!(
        "restore of backup {} to {}, by lifeboat {}",
        manifest.id,
        options.goal.target,
        env!("CARGO_PKG_VERSION")
    );
    let goal = start::server_goal(&options.goal, options.start.is_some());
    let mut settings = goal.settings(&options.restore_command, plan.history.timeline());
    settings.extend(options.server_settings.iter().cloned());
    recovery::write_recovery_files(&manifest, destination, &settings, &header)?;
    ensure_wal_directory(destination)?;
    sync_filesystems(destination)?;
    commit_control_file(destination, wanted.files.iter().any(|&index| manifest.files[index].path == CONTROL_FILE))
}

/// The server binaries, which must be of the backup's major version. Only `--start` needs them;
/// otherwise their absence is a warning (the files can be restored for another host).
fn find_binaries(options: &RestoreOptions, manifest: &BackupManifest) -> Result<Option<PgBinaries>, RestoreError> {
    let major = manifest.postgres_version_num / 10000;
    let need = Need::server(major, format!("backup {}", manifest.id));
    let found = PgBinaries::locate(options.bin_dir.as_deref(), &need).map_err(|error| error.to_string());
    match found {
        Ok(binaries) => Ok(Some(binaries)),
        Err(detail) if options.start.is_some() => Err(RestoreError::Binaries {
            detail: format!("the backup is of PostgreSQL {major}, and --start needs its binaries: {detail}"),
        }),
        Err(detail) => {
            tracing::warn!(
                "the backup is of PostgreSQL {major}; starting the restored copy will need its binaries ({detail})"
            );
            Ok(None)
        }
    }
}

/// Who owns the restored files: `None` unless lifeboat runs as root (then the owner of the
/// directory or its parent, else `os_user`).
pub fn resolve_owner(pgdata: &Path, os_user: &str) -> Result<Option<Owner>, RestoreError> {
    if !crate::postgres::cluster::running_as_root() {
        return Ok(None);
    }
    let fallback = crate::postgres::cluster::OsUser::lookup(os_user)
        .map_err(|error| RestoreError::Binaries { detail: format!("{error} (cluster.os_user owns restored files)") })?;
    let (uid, gid) = target_dir::owner_for(pgdata, Some((fallback.uid, fallback.gid))).expect("a fallback is given");
    Ok(Some(Owner { uid, gid }))
}

/// Each tablespace's location on this host: as recorded, or remapped by `--tablespace-map`.
fn map_tablespaces(
    manifest: &BackupManifest,
    requested: &[(String, PathBuf)],
) -> Result<BTreeMap<u32, PathBuf>, RestoreError> {
    let mut locations: BTreeMap<u32, PathBuf> =
        manifest.tablespaces.iter().map(|tablespace| (tablespace.oid, PathBuf::from(&tablespace.location))).collect();
    for (old, new) in requested {
        let matching: Vec<u32> = manifest
            .tablespaces
            .iter()
            .filter(|tablespace| {
                tablespace.location == *old
                    || tablespace.name.as_deref() == Some(old.as_str())
                    || tablespace.oid.to_string() == *old
            })
            .map(|tablespace| tablespace.oid)
            .collect();
        let [oid] = matching[..] else {
            let known: Vec<String> = manifest
                .tablespaces
                .iter()
                .map(|t| format!("{} (oid {}, {})", t.location, t.oid, t.name.as_deref().unwrap_or("unnamed")))
                .collect();
            return Err(RestoreError::TablespaceMap {
                old: old.clone(),
                reason: if known.is_empty() {
                    "the backup has no tablespaces".into()
                } else {
                    format!("no single tablespace of the backup matches it; the backup has {}", known.join(", "))
                },
            });
        };
        if !new.is_absolute() {
            return Err(RestoreError::TablespaceMap {
                old: old.clone(),
                reason: "the new location must be absolute".into(),
            });
        }
        locations.insert(oid, new.clone());
    }
    Ok(locations)
}

fn summarise(plan: &Plan, options: &RestoreOptions, destination: &Destination) -> RestoreSummary {
    let manifest = &plan.backup;
    let size = manifest.wal_segment_size;
    let all: Vec<usize> = (0..manifest.files.len()).filter(|&index| manifest.files[index].size.is_some()).collect();
    RestoreSummary {
        backup: manifest.id,
        backup_stop_time: target::postgres_time(manifest.stop_time),
        backup_stop_lsn: manifest.stop_lsn.to_string(),
        target: options.goal.target.to_string(),
        timeline: plan.history.timeline().id(),
        first_wal: plan.first_wal.name(size),
        last_wal: plan.last_wal.name(size),
        wal_segments: plan.wal_segments(),
        wal_authenticated_to: String::new(),
        wal_authenticated: 0,
        archive_end: plan.archive_end.name(size),
        pgdata: options.pgdata.clone(),
        tablespaces: destination.tablespaces.clone(),
        mode: options.existing,
        dry_run: options.dry_run,
        files: manifest.totals.files,
        files_written: manifest.totals.files,
        files_kept: 0,
        removed: Vec::new(),
        bytes_written: manifest.totals.bytes,
        bytes_fetched: fetched_bytes(manifest, &all),
        restore_seconds: 0.0,
        seconds: 0.0,
        reached: None,
    }
}

/// Stored bytes of the objects holding any of `files`.
fn fetched_bytes(manifest: &BackupManifest, files: &[usize]) -> u64 {
    let objects: std::collections::BTreeSet<&str> = files
        .iter()
        .flat_map(|&index| manifest.files[index].locations.iter().map(|location| location.object.as_str()))
        .collect();
    manifest
        .objects
        .iter()
        .filter(|object| objects.contains(object.key.as_str()))
        .map(|object| object.stored_size)
        .sum()
}

/// The files to write, after emptying (`--force`) or comparing (`--delta`) an existing directory.
struct Wanted {
    files: Vec<usize>,
    delta: Option<DeltaPlan>,
}

fn prepare_directory(
    manifest: &BackupManifest,
    destination: &Destination,
    options: &RestoreOptions,
    in_use: bool,
) -> Result<Wanted, RestoreError> {
    let pgdata = &destination.pgdata;
    if !pgdata.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pgdata)
            .map_err(|source| RestoreError::Write { path: pgdata.clone(), action: "create", source })?;
    }
    std::fs::set_permissions(pgdata, std::os::unix::fs::PermissionsExt::from_mode(data_directory_mode(manifest)))
        .map_err(|source| RestoreError::Write { path: pgdata.clone(), action: "set the mode of", source })?;
    destination.chown(pgdata).map_err(|source| RestoreError::Write {
        path: pgdata.clone(),
        action: "change the owner of",
        source,
    })?;
    // A directory without pg_control is never taken for a restored one: it goes first and comes back last.
    for control in [CONTROL_FILE, CONTROL_FILE_PENDING] {
        let path = destination.path(control);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| RestoreError::Write { path, action: "remove", source })?;
        }
    }
    let every_file = || (0..manifest.files.len()).filter(|&index| manifest.files[index].size.is_some()).collect();
    match options.existing {
        ExistingData::Delta if in_use => {
            let delta = target_dir::prepare_delta(manifest, destination, options.workers)?;
            Ok(Wanted { files: delta.rewrite.clone(), delta: Some(delta) })
        }
        ExistingData::Force => {
            target_dir::empty_directory(pgdata)?;
            for location in destination.tablespaces.values() {
                target_dir::empty_directory(location)?;
            }
            Ok(Wanted { files: every_file(), delta: None })
        }
        _ => Ok(Wanted { files: every_file(), delta: None }),
    }
}

/// 0750 when the cluster allows group access (its directories are group-readable), else 0700.
fn data_directory_mode(manifest: &BackupManifest) -> u32 {
    match manifest.file("global") {
        Some(global) if global.mode & 0o050 == 0o050 => 0o750,
        _ => 0o700,
    }
}

/// `pg_wal` and `pg_wal/archive_status` exist and are empty of WAL (the manifest records them
/// as directories; this covers backups of clusters whose `pg_wal` was a link).
fn ensure_wal_directory(destination: &Destination) -> Result<(), RestoreError> {
    for dir in ["pg_wal", "pg_wal/archive_status"] {
        let path = destination.path(dir);
        if !path.is_dir() {
            std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|source| RestoreError::Write {
                path: path.clone(),
                action: "create",
                source,
            })?;
            destination.chown(&path).map_err(|source| RestoreError::Write {
                path,
                action: "change the owner of",
                source,
            })?;
        }
    }
    Ok(())
}

/// Flushes every filesystem written to: the data directory's and each tablespace's.
fn sync_filesystems(destination: &Destination) -> Result<(), RestoreError> {
    for dir in std::iter::once(&destination.pgdata).chain(destination.tablespaces.values()) {
        let file = std::fs::File::open(dir).map_err(|source| RestoreError::Write {
            path: dir.clone(),
            action: "open",
            source,
        })?;
        // SAFETY: syncfs takes a valid, open descriptor and touches no memory.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&file)) } != 0 {
            let source = std::io::Error::last_os_error();
            return Err(RestoreError::Write { path: dir.clone(), action: "sync", source });
        }
    }
    Ok(())
}

/// Gives `pg_control` its name once everything else is durable, and makes the rename durable.
fn commit_control_file(destination: &Destination, written: bool) -> Result<(), RestoreError> {
    let pending = destination.path(CONTROL_FILE_PENDING);
    let control = destination.path(CONTROL_FILE);
    if written {
        std::fs::rename(&pending, &control).map_err(|source| RestoreError::Write {
            path: control.clone(),
            action: "rename into place",
            source,
        })?;
    }
    let global = destination.path("global");
    std::fs::File::open(&global).and_then(|dir| dir.sync_all()).map_err(|source| RestoreError::Write {
        path: global,
        action: "sync",
        source,
    })
}
