//! The views of restores: [`RestoreView`] (a physical restore, `restore --pgdata --json`; with
//! `--dry-run` the same shape as a plan) and [`DumpRestoreView`] (`restore --dump --json`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Document;
use crate::restore::RestoreSummary;
use crate::restore::dump::RestoreReport;
use crate::restore::start::Reached;
use crate::restore::target_dir::ExistingData;
use crate::util::round_to as round;

/// A physical restore, done or (with `dry_run`) planned.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreView {
    pub dry_run: bool,
    pub backup: RestoredBackup,
    /// The recovery target as given (`latest`, `time 2026-…`, `lsn 0/…`, …).
    pub target: String,
    /// The timeline recovery follows.
    pub timeline: u32,
    pub pgdata: String,
    /// Tablespace oid → where its files go.
    pub tablespaces: BTreeMap<String, String>,
    /// What was done with existing files: `refuse`, `delta` or `force`.
    pub mode: ExistingData,
    pub wal: RestoreWal,
    pub files: RestoreFiles,
    pub bytes: RestoreBytes,
    /// Seconds to plan and write the files (to plan, in a dry run), and in all.
    pub restore_seconds: f64,
    pub seconds: f64,
    /// How recovery ended, with `--start`; `None` otherwise.
    pub recovery: Option<Reached>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredBackup {
    pub id: String,
    pub stop_time: String,
    pub stop_lsn: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreWal {
    /// The segments recovery needs, from the backup's start to the target.
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Read and authenticated before anything was written: from `first` to the backup's
    /// consistent point.
    pub authenticated_to: String,
    pub authenticated: u64,
    /// The last archived segment on the timeline followed.
    pub archive_end: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreFiles {
    /// Files in the backup.
    pub total: u64,
    /// Written (in a dry run: to be written).
    pub restored: u64,
    /// Already intact in the target directory (`--delta`), left as they were.
    pub kept: u64,
    /// Removed from the target directory because the backup does not have them.
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreBytes {
    /// Plaintext bytes written (to be written).
    pub restored: u64,
    /// Stored bytes fetched from the repository for them.
    pub fetched: u64,
}

impl Document for RestoreView {
    fn schema(&self) -> &'static str {
        if self.dry_run { "restore-plan/1" } else { "restore/1" }
    }
}

impl RestoreView {
    pub fn new(summary: &RestoreSummary) -> RestoreView {
        RestoreView {
            dry_run: summary.dry_run,
            backup: RestoredBackup {
                id: summary.backup.to_string(),
                stop_time: summary.backup_stop_time.clone(),
                stop_lsn: summary.backup_stop_lsn.clone(),
            },
            target: summary.target.clone(),
            timeline: summary.timeline,
            pgdata: summary.pgdata.display().to_string(),
            tablespaces: summary
                .tablespaces
                .iter()
                .map(|(oid, location)| (oid.to_string(), location.display().to_string()))
                .collect(),
            mode: summary.mode,
            wal: RestoreWal {
                first: summary.first_wal.clone(),
                last: summary.last_wal.clone(),
                segments: summary.wal_segments,
                authenticated_to: summary.wal_authenticated_to.clone(),
                authenticated: summary.wal_authenticated,
                archive_end: summary.archive_end.clone(),
            },
            files: RestoreFiles {
                total: summary.files,
                restored: summary.files_written,
                kept: summary.files_kept,
                removed: summary.removed.clone(),
            },
            bytes: RestoreBytes { restored: summary.bytes_written, fetched: summary.bytes_fetched },
            restore_seconds: round(summary.restore_seconds, 3),
            seconds: round(summary.seconds, 3),
            recovery: summary.reached.clone(),
        }
    }
}

/// A logical restore of one database (or some of its tables) from a dump: the restore's report
/// as [`crate::restore::dump`] builds it (its fields are the documented shape).
#[derive(Debug, Clone, Serialize)]
pub struct DumpRestoreView {
    #[serde(flatten)]
    pub report: RestoreReport,
}

impl Document for DumpRestoreView {
    fn schema(&self) -> &'static str {
        "dump-restore/1"
    }
}

impl DumpRestoreView {
    pub fn new(report: &RestoreReport) -> DumpRestoreView {
        DumpRestoreView { report: report.clone() }
    }
}
