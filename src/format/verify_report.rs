//! Verification reports: what one `lifeboat verify` run found, stored in the repository at
//! `clusters/<name>/verify/<id>/<timestamp>` (sealed JSON, docs/format.md section 10), and read
//! back by `list`, `info` and anything that asks "when was this last proven restorable?".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing;
use crate::config::AmcheckLevel;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, PutMode, StorageError};

/// The `format` field of every report.
pub const FORMAT: &str = "lifeboat-verify-report";
pub const VERSION: u32 = 1;
/// How a report's timestamp is written in its key: sortable, to the millisecond.
const KEY_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every object read and authenticated, every hash compared; nothing restored.
    Integrity,
    /// The integrity checks, and a real restore into a scratch server.
    Restore,
}

/// Where a verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Reading an object, a hash or a size that does not match the manifest.
    Integrity,
    /// WAL the backup needs is missing or unreadable.
    Wal,
    /// Preparing the scratch directory or server (space, binaries, permissions).
    Scratch,
    /// Writing the restored files, or restoring a dump.
    Restore,
    /// PostgreSQL did not recover to a consistent state.
    Recovery,
    /// A restored table's row count differs from the dump's manifest.
    RowCounts,
    /// `pg_amcheck` found corruption (or could not run).
    Amcheck,
    /// A user check did not return true.
    Checks,
    /// The verification ran longer than `verify.timeout`.
    Timeout,
    /// The scratch server or files could not be removed.
    Cleanup,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Integrity => "integrity",
            Phase::Wal => "wal",
            Phase::Scratch => "scratch",
            Phase::Restore => "restore",
            Phase::Recovery => "recovery",
            Phase::RowCounts => "row-counts",
            Phase::Amcheck => "amcheck",
            Phase::Checks => "checks",
            Phase::Timeout => "timeout",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// Why a verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub phase: Phase,
    pub message: String,
}

impl Failure {
    pub fn new(phase: Phase, message: impl Into<String>) -> Failure {
        Failure { phase, message: message.into() }
    }
}

/// What was read back from the repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    /// Objects read to their end and authenticated.
    pub objects: u64,
    /// Plaintext bytes read from them.
    pub bytes: u64,
    /// Files (of a base backup) or databases (of a dump) whose hash matched the manifest.
    pub files: u64,
    /// WAL segments from the backup's start to its stop, read and authenticated.
    pub wal_segments: u64,
}

/// The restore test of a base backup: the figures a user restoring it would face.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Seconds to fetch the WAL and write the files.
    pub restore_seconds: f64,
    /// Seconds from starting PostgreSQL to it accepting connections, recovered.
    pub recovery_seconds: f64,
    /// The two together: the time from `lifeboat restore` to a usable server.
    pub total_seconds: f64,
    /// WAL segments PostgreSQL replayed from the archive.
    pub wal_segments_replayed: u64,
    /// PostgreSQL's "redo done at ..." line.
    pub redo_done: Option<String>,
    /// `select version()` on the restored server.
    pub server_version: String,
    /// The databases found in the restored cluster.
    pub databases: Vec<String>,
}

/// One database of a dump, restored into the scratch server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredDatabase {
    pub name: String,
    /// The database it was restored into: `name` on a scratch cluster, a scratch name on
    /// `verify.dump_server`.
    pub restored_as: String,
    pub tables: usize,
    /// Rows counted after the restore; every table matched the dump's manifest.
    pub rows: u64,
    pub seconds: f64,
}

/// What `pg_amcheck` said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amcheck {
    pub level: AmcheckLevel,
    pub passed: bool,
    pub seconds: f64,
    /// The end of its output, when it reported anything.
    pub output: String,
}

/// The outcome of one user check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// Its database is not part of this dump.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub database: String,
    pub query: String,
    pub outcome: CheckOutcome,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
}

/// One verification of one backup or dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub format: String,
    pub version: u32,
    pub id: BackupId,
    pub kind: BackupKind,
    pub mode: Mode,
    pub passed: bool,
    pub failure: Option<Failure>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub host: String,
    pub lifeboat_version: String,
    pub integrity: Integrity,
    /// Base backups verified by restore.
    pub recovery: Option<Recovery>,
    /// Dumps verified by restore.
    #[serde(default)]
    pub restored_databases: Vec<RestoredDatabase>,
    pub amcheck: Option<Amcheck>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

impl VerifyReport {
    pub fn new(id: BackupId, mode: Mode, started_at: DateTime<Utc>) -> VerifyReport {
        VerifyReport {
            format: FORMAT.to_owned(),
            version: VERSION,
            id,
            kind: id.kind(),
            mode,
            passed: false,
            failure: None,
            started_at,
            finished_at: started_at,
            seconds: 0.0,
            host: crate::catalog::lease::hostname(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_owned(),
            integrity: Integrity::default(),
            recovery: None,
            restored_databases: Vec::new(),
            amcheck: None,
            checks: Vec::new(),
        }
    }

    /// `verify/<id>/<started_at>`.
    pub fn key(&self, layout: &ClusterLayout) -> ObjectKey {
        let name = format!("{}{}", listing::verify_prefix(layout, self.id), self.started_at.format(KEY_TIME_FORMAT));
        ObjectKey::new(name).expect("report keys are built from safe parts")
    }

    /// "passed" or "failed (recovery)".
    pub fn status(&self) -> String {
        match &self.failure {
            None if self.passed => "passed".to_owned(),
            Some(failure) => format!("failed ({})", failure.phase.as_str()),
            None => "failed".to_owned(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a report always serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<VerifyReport, String> {
        let report: VerifyReport = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if report.format != FORMAT || report.version != VERSION {
            return Err(format!(
                "not a version {VERSION} verification report (format {:?}, version {})",
                report.format, report.version
            ));
        }
        Ok(report)
    }

    /// Stores the report; reports are never overwritten.
    pub async fn store(&self, repository: &Repository, layout: &ClusterLayout) -> Result<ObjectKey, RepositoryError> {
        let key = self.key(layout);
        repository.put_bytes(&key, self.to_json(), PutMode::CreateOnly).await?;
        Ok(key)
    }
}

/// The verification reports of one backup or dump: their keys, and the newest.
#[derive(Debug, Clone)]
pub struct Reports {
    /// Every report's key, oldest first.
    pub keys: Vec<ObjectKey>,
    pub latest_key: ObjectKey,
    /// The newest report's plaintext (empty when it cannot be read), which the journal hashes.
    pub latest_bytes: Vec<u8>,
    /// `Err` when the newest report cannot be read or parsed (it is then reported, not hidden).
    pub latest: Result<VerifyReport, String>,
}

/// The reports of every backup and dump that has any, by id.
pub async fn read_latest(
    repository: &Repository,
    layout: &ClusterLayout,
) -> Result<BTreeMap<BackupId, Reports>, StorageError> {
    let prefix = layout.verify_prefix();
    let mut keys: BTreeMap<BackupId, Vec<ObjectKey>> = BTreeMap::new();
    for meta in repository.store().list(&prefix).await? {
        let Some((id, _)) = meta.key.as_str().strip_prefix(prefix.as_str()).and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if let Ok(id) = id.parse::<BackupId>() {
            keys.entry(id).or_default().push(meta.key.clone());
        }
    }
    let mut reports = BTreeMap::new();
    for (id, mut keys) in keys {
        keys.sort();
        let latest_key = keys.last().expect("at least one key").clone();
        let (latest_bytes, latest) = match repository.get_bytes(&latest_key).await {
            Ok(bytes) => {
                let report = VerifyReport::from_json(&bytes);
                (bytes, report)
            }
            Err(error) => (Vec::new(), Err(error.to_string())),
        };
        reports.insert(id, Reports { keys, latest_key, latest_bytes, latest });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;

    #[test]
    fn reports_round_trip_and_sort_by_time_in_their_keys() {
        let id: BackupId = "20261127T021500Z-full".parse().unwrap();
        let started = DateTime::parse_from_rfc3339("2026-11-27T03:00:00.250Z").unwrap().with_timezone(&Utc);
        let mut report = VerifyReport::new(id, Mode::Restore, started);
        report.failure = Some(Failure::new(Phase::Recovery, "recovery failed: x"));
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        assert_eq!(report.key(&layout).as_str(), "clusters/main/verify/20261127T021500Z-full/20261127T030000.250Z");
        assert_eq!(report.status(), "failed (recovery)");
        let back = VerifyReport::from_json(&report.to_json()).unwrap();
        assert_eq!(back, report);
        let later = VerifyReport::new(id, Mode::Restore, started + chrono::Duration::milliseconds(5));
        assert!(later.key(&layout) > report.key(&layout));
        assert!(VerifyReport::from_json(br#"{"format":"other"}"#).is_err());
    }
}
