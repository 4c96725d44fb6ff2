//! Undoing to a restore point (`lifeboat migrate restore-before V`): what a point-in-time restore
//! to the point made before migration V would lose, read from the archived WAL before anything is
//! done ([`what_would_be_lost`]), and the restore itself with the restore operation that exists
//! ([`restore_to_point`], to the point's LSN): into a data directory, or into a scratch directory that is started,
//! checked to have stopped at the point, and removed (`--verify-only`).
//!
//! The WAL is read along the point's timeline, from the point to the end of the unbroken run of
//! archived segments that holds it: what a later timeline (after an earlier restore) wrote is not
//! counted.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::gate::RestorePoint;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::Entry;
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::wal::{WalFile, WalSegment};
use crate::ops::{OpContext, OpError};
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::cluster::{LocalCluster, LocalClusterOptions};
use crate::postgres::version;
use crate::repository::{Repository, RepositoryError};
use crate::restore::target::{RecoveryGoal, RecoveryTarget, TargetAction, TimelineChoice};
use crate::restore::target_dir::ExistingData;
use crate::restore::{ReadAheadSpool, RestoreOptions, RestoreSummary};
use crate::wal::check::CheckError;
use crate::wal::records::{ScanError, WalEvent, WalScanner};

/// The size of a WAL segment's first page header, the most that lies between two records.
const LONG_PAGE_HEADER: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("restore point {name:?} has LSN {lsn:?} and timeline {timeline}, which are not a WAL position")]
    BadPoint { name: String, lsn: String, timeline: u32 },

    #[error(
        "the WAL holding restore point {name:?} (segment {segment}) is not in {location} yet: a restore cannot \
         reach the point. Archive it (`SELECT pg_switch_wal()` on the server, then `lifeboat wal check`) and run \
         this again"
    )]
    NotArchived { name: String, segment: String, location: String },

    #[error(
        "restore point {name:?} is not in the archived WAL at {lsn} (segments {first} to {last} were read): it \
         was made on another cluster, or its WAL was replaced. `lifeboat wal check` shows the archive"
    )]
    PointNotFound { name: String, lsn: String, first: String, last: String },

    #[error("cannot read the WAL archive to say what would be lost")]
    Check(#[from] CheckError),

    #[error("cannot read archived WAL segment {segment}")]
    Read {
        segment: String,
        #[source]
        source: RepositoryError,
    },

    #[error(transparent)]
    Scan(#[from] ScanError),

    #[error(transparent)]
    Restore(#[from] OpError),

    #[error("the scratch restore for the check: {detail}")]
    Scratch { detail: String },

    #[error(
        "the restored server did not stop at restore point {name:?} ({lsn}): {detail}. The scratch directory \
         was removed"
    )]
    MissedPoint { name: String, lsn: String, detail: String },
}

/// What a restore to a point loses: everything the archived WAL holds after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Loss {
    /// Transactions committed after the point.
    pub commits: u64,
    /// Transactions rolled back after the point (they changed nothing, but show activity).
    pub aborts: u64,
    pub first_commit: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    /// Bytes of WAL written after the point, to the end of the archive.
    pub wal_bytes: u64,
    /// Where the archived WAL read ends.
    pub archive_end: String,
    /// The segments read (the point's, to the end of the archive).
    pub first_segment: String,
    pub last_segment: String,
}

/// Reads the archived WAL from the segment holding `point` to the end of the archive along its
/// timeline, checks that the point's record is there, and counts what was committed after it.
pub async fn what_would_be_lost(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    point: &RestorePoint,
) -> Result<Loss, UndoError> {
    let bad_point =
        || UndoError::BadPoint { name: point.name.clone(), lsn: point.lsn.clone(), timeline: point.timeline };
    let lsn: Lsn = point.lsn.parse().map_err(|_| bad_point())?;
    let timeline = Timeline::new(point.timeline).ok_or_else(bad_point)?;
    let archive = crate::wal::check::check(repository, layout).await?;
    let size = archive.segment_size;
    // pg_create_restore_point returns the end of its record, which may be a segment's first byte.
    let first = WalSegment::containing(timeline, Lsn(lsn.as_u64().saturating_sub(1)), size);
    let Some(end) = archive.run_end(timeline, first.number) else {
        return Err(UndoError::NotArchived {
            name: point.name.clone(),
            segment: first.name(size),
            location: repository.location(),
        });
    };
    let mut scanner = WalScanner::new(size);
    let mut loss = Loss {
        commits: 0,
        aborts: 0,
        first_commit: None,
        last_commit: None,
        wal_bytes: 0,
        archive_end: lsn.to_string(),
        first_segment: first.name(size),
        last_segment: WalSegment::new(timeline, end).name(size),
    };
    let mut found = false;
    for number in first.number..=end {
        let segment = WalSegment::new(timeline, number);
        let key = layout.wal_file(&WalFile::Segment(segment), size);
        let bytes = repository
            .get_bytes(&key)
            .await
            .map_err(|source| UndoError::Read { segment: segment.name(size), source })?;
        for event in scanner.feed(segment, &bytes)? {
            match event {
                // The point's own record: it ends where pg_create_restore_point said (a page header
                // may lie between its end as the scanner counts it and the LSN returned).
                WalEvent::RestorePoint { name, lsn: at, end, .. }
                    if name == point.name && at < lsn && lsn.as_u64() <= end.as_u64() + LONG_PAGE_HEADER =>
                {
                    found = true;
                }
                WalEvent::Commit { lsn: at, time, .. } if at >= lsn => {
                    loss.commits += 1;
                    loss.first_commit = Some(loss.first_commit.map_or(time, |seen| seen.min(time)));
                    loss.last_commit = Some(loss.last_commit.map_or(time, |seen| seen.max(time)));
                }
                WalEvent::Abort { lsn: at, .. } if at >= lsn => loss.aborts += 1,
                _ => {}
            }
        }
        if scanner.end_of_wal().is_some() {
            break;
        }
    }
    if !found {
        return Err(UndoError::PointNotFound {
            name: point.name.clone(),
            lsn: point.lsn.clone(),
            first: loss.first_segment.clone(),
            last: loss.last_segment.clone(),
        });
    }
    if let Some(reached) = scanner.last_record_end() {
        loss.wal_bytes = reached.as_u64().saturating_sub(lsn.as_u64());
        loss.archive_end = reached.to_string();
    }
    Ok(loss)
}

/// Where the restore to the point goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A data directory, with the restore's rules for one that is not empty; `start`: start the
    /// server afterwards (on this port, if given) and report the point reached.
    Pgdata { dir: PathBuf, existing: ExistingData, start: Option<Option<u16>> },
    /// A scratch directory under `verify.scratch_dir`: restored, started, checked, removed.
    VerifyOnly,
}

/// What the restore to the point did.
#[derive(Debug, Clone)]
pub struct Undone {
    pub summary: RestoreSummary,
    /// With [`Destination::VerifyOnly`]: what the server's log said where recovery stopped.
    pub verified: Option<String>,
}

/// The server programs of the newest base backup's major, which the scratch directory's server
/// is stopped with (the restore finds its own to start it).
async fn scratch_binaries(context: &OpContext) -> Result<PgBinaries, UndoError> {
    let bin_dir = context.config.cluster.bin_dir.as_deref();
    let listing = crate::catalog::listing::read_all(&context.repository, &context.layout)
        .await
        .map_err(|error| UndoError::Scratch { detail: error.to_string() })?;
    let major = listing.entries.iter().rev().find_map(|entry| match entry {
        Entry::Physical(manifest) => Some(version::major_of_version_num(manifest.postgres_version_num)),
        Entry::Dump(_) => None,
    });
    let found = match major {
        Some(major) => PgBinaries::locate(bin_dir, &Need::server(major, "the check of a restore to a restore point")),
        None => PgBinaries::find(bin_dir),
    };
    found.map_err(|error| UndoError::Scratch { detail: error.to_string() })
}

/// Restores to `point` with the restore operation (`ops::restore`, to the point's LSN on its
/// timeline, promote there). `restore_command` is what PostgreSQL fetches WAL with. Call
/// [`what_would_be_lost`] first: it checks that the point's record is archived at that LSN.
pub async fn restore_to_point(
    context: &OpContext,
    point: &RestorePoint,
    destination: &Destination,
    restore_command: String,
) -> Result<Undone, UndoError> {
    let bad_point =
        || UndoError::BadPoint { name: point.name.clone(), lsn: point.lsn.clone(), timeline: point.timeline };
    let timeline = Timeline::new(point.timeline).ok_or_else(bad_point)?;
    let lsn: Lsn = point.lsn.parse().map_err(|_| bad_point())?;
    let config = &context.config;
    let options = |pgdata: PathBuf, existing, start, action, server_settings| RestoreOptions {
        pgdata: pgdata.clone(),
        backup: None,
        goal: RecoveryGoal {
            // The point's LSN (the end of its record), exclusive: recovery replays the restore
            // point's record and stops before the next one. Not its name: recovery stops at the
            // first record of a name, and a migration undone and applied again (`redo`) has two.
            target: RecoveryTarget::Lsn(lsn),
            timeline: TimelineChoice::Id(timeline),
            action,
            exclusive: true,
        },
        existing,
        tablespace_map: Vec::new(),
        workers: config.backup.workers,
        server_settings,
        dry_run: false,
        start,
        read_ahead: ReadAheadSpool::of_wal_fetch(config, &pgdata),
        restore_command: restore_command.clone(),
        os_user: config.cluster.os_user.clone(),
        bin_dir: config.cluster.bin_dir.clone(),
        cancel: context.cancel.token().clone(),
        progress: Arc::default(),
    };
    match destination {
        Destination::Pgdata { dir, existing, start } => {
            let restore = options(dir.clone(), *existing, *start, TargetAction::Promote, Vec::new());
            let summary = crate::ops::restore(context, restore).await?;
            Ok(Undone { summary, verified: None })
        }
        Destination::VerifyOnly => {
            let binaries = scratch_binaries(context).await?;
            let scratch_options = LocalClusterOptions::default()
                .parent_dir(config.verify.scratch_dir.clone())
                .os_user(config.cluster.os_user.clone());
            let cluster = LocalCluster::prepare(&binaries, &scratch_options)
                .map_err(|error| UndoError::Scratch { detail: error.to_string() })?;
            let settings = vec![
                ("archive_mode", "off".to_owned()),
                ("listen_addresses", String::new()),
                ("port", cluster.port().to_string()),
                ("unix_socket_directories", cluster.socket_dir().to_string_lossy().into_owned()),
            ];
            // Paused at the point: read-only, no new timeline, nothing to clean up but the directory.
            let restore = options(
                cluster.data_dir().to_path_buf(),
                ExistingData::Refuse,
                Some(Some(cluster.port())),
                TargetAction::Pause,
                settings,
            );
            let restored = crate::ops::restore(context, restore).await;
            let removed = cluster.remove().await;
            let summary = restored?;
            removed.map_err(|error| UndoError::Scratch { detail: error.to_string() })?;
            let stopped = summary.reached.as_ref().and_then(|reached| reached.stopped.clone());
            match stopped {
                Some(line) if line.contains(&format!("\"{}\"", point.lsn)) => {
                    Ok(Undone { summary, verified: Some(line) })
                }
                other => Err(UndoError::MissedPoint {
                    name: point.name.clone(),
                    lsn: point.lsn.clone(),
                    detail: other.unwrap_or_else(|| "its log names no stopping point".to_owned()),
                }),
            }
        }
    }
}
