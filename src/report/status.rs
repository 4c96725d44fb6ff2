//! `status/1`: what a person or a monitor asks of a running lifeboat, in one document. The
//! daemon serves it at `/status` and renders its status page and metrics from it; `lifeboat
//! status --json` prints the daemon's or, when no daemon answers, the same facts read from the
//! repository and the server (then `source` is `"repository"` and the job fields hold what the
//! configuration and the audit trail say).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// `"daemon"` (served by a running daemon) or `"repository"` (read directly, no daemon).
    pub source: String,
    pub cluster: String,
    pub host: String,
    /// lifeboat's version.
    pub version: String,
    /// Set when `source` is `"daemon"`.
    pub daemon: Option<DaemonInfo>,
    /// Every job the configuration schedules, in a fixed order: backup, dump, verify, expire,
    /// wal-check, then each copy.
    pub jobs: Vec<JobStatus>,
    /// PostgreSQL's archiver as last seen; `None` before the first look.
    pub archiver: Option<ArchiverStatus>,
    /// The repository as last seen; `None` before the first look.
    pub repository: Option<RepositoryStatus>,
    /// The newest failed runs, newest first (at most [`Status::RECENT_FAILURES`]).
    pub recent_failures: Vec<FailedRun>,
}

impl Status {
    pub const RECENT_FAILURES: usize = 20;
}

impl super::Document for Status {
    fn schema(&self) -> &'static str {
        "status/1"
    }
}

/// The daemon process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    /// The configuration file it runs on and when it was (re)loaded.
    pub config_file: String,
    pub config_loaded_at: DateTime<Utc>,
    /// Why the last SIGHUP reload was refused (file, line and message); `None` when it succeeded
    /// or there was none. The daemon goes on with the configuration it had.
    pub reload_error: Option<String>,
    /// The last time the scheduler loop went round; `/healthz` fails when it is stale.
    pub scheduler_alive_at: DateTime<Utc>,
    /// `true` from SIGTERM on: no new runs start.
    pub shutting_down: bool,
}

/// One scheduled job (`backup`, `dump`, `verify`, `expire`, `wal-check`, `copy:<name>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    /// `backup`, `dump`, `verify`, `expire`, `wal-check`, or `copy:<name>`.
    pub job: String,
    /// The cron expression, when the job has a schedule of its own; `None` when it only runs
    /// after another job (`chained_after`).
    pub schedule: Option<String>,
    /// Runs after each successful run of these jobs (e.g. `verify` after `backup` with
    /// `verify.after_backup`).
    pub chained_after: Vec<String>,
    pub next_run: Option<DateTime<Utc>>,
    /// Set while a run is in progress.
    pub running_since: Option<DateTime<Utc>>,
    pub last_run: Option<JobRun>,
    pub last_success: Option<JobRun>,
    pub runs_total: u64,
    pub failures_total: u64,
    /// Runs not started because the previous one still ran.
    pub skipped_total: u64,
}

impl JobStatus {
    /// Job `job` as it stands before its first run.
    pub fn never_run(job: String) -> JobStatus {
        JobStatus {
            job,
            schedule: None,
            chained_after: Vec::new(),
            next_run: None,
            running_since: None,
            last_run: None,
            last_success: None,
            runs_total: 0,
            failures_total: 0,
            skipped_total: 0,
        }
    }
}

/// One finished run of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// `succeeded`, `failed` or `cancelled`.
    pub result: String,
    pub error: Option<String>,
    /// What caused it: `schedule`, `catch-up`, or `after:<job>`.
    pub trigger: String,
    /// Backups, dumps or reports it created (or, for expire, deleted).
    pub ids: Vec<String>,
    pub bytes: u64,
}

/// A failed run, for the list of newest failures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedRun {
    pub job: String,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// `pg_stat_archiver` and the `.ready` files in `pg_wal/archive_status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ArchiverStatus {
    pub checked_at: Option<DateTime<Utc>>,
    pub archived_count: Option<i64>,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub failed_count: Option<i64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// Segments PostgreSQL has finished but not archived yet; `None` when `pgdata` is not
    /// readable here.
    pub ready_files: Option<u64>,
    /// Why the server could not be asked, when it could not.
    pub error: Option<String>,
}

impl ArchiverStatus {
    /// Whether PostgreSQL's newest archiving attempt failed: a failure newer than the newest
    /// success (or failures and never a success). PostgreSQL retries the same segment, so this
    /// stays true until it gets through, and `.ready` files pile up meanwhile.
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The repository: what it holds and how current it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RepositoryStatus {
    pub checked_at: Option<DateTime<Utc>>,
    pub reachable: bool,
    /// Why it could not be read, when it could not.
    pub error: Option<String>,
    pub newest_backup: Option<StoredItem>,
    pub newest_verified_backup: Option<StoredItem>,
    pub newest_dump: Option<StoredItem>,
    /// The newest WAL file in the repository and when it was stored.
    pub last_archived_wal: Option<String>,
    pub last_archived_wal_at: Option<DateTime<Utc>>,
    /// Stored bytes of every backup, dump and WAL file of the cluster.
    pub bytes: u64,
    pub copies: Vec<CopyStatus>,
    /// What the status page draws: every backup and dump, and the WAL coverage.
    pub timeline: Timeline,
}

/// A backup or dump, as the status reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredItem {
    pub id: String,
    /// `full` or `dump`.
    pub kind: String,
    /// When it became consistent (a backup's stop time, a dump's snapshot time).
    pub at: DateTime<Utc>,
    pub bytes: u64,
    /// `None`: never verified; else whether the newest verification passed.
    pub verified: Option<bool>,
    pub verified_at: Option<DateTime<Utc>>,
    /// How long the newest verification's restore took: the measured time to recover.
    pub restore_seconds: Option<f64>,
    /// The copies that hold it.
    pub copies: Vec<String>,
}

/// How far a copy is behind the primary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CopyStatus {
    pub name: String,
    pub reachable: bool,
    pub error: Option<String>,
    /// The oldest backup or dump of the primary the copy does not hold yet.
    pub oldest_missing: Option<String>,
    /// How long that one has existed on the primary without being on the copy (how long the
    /// copy has not been up to date); 0 when the copy holds everything.
    pub lag_seconds: f64,
    /// Backups and dumps of the primary the copy does not hold complete (as `copy --json`'s
    /// `lag.backups_missing`).
    #[serde(default)]
    pub backups_missing: u64,
    /// WAL files of the primary the copy does not hold (`lag.wal_missing`).
    #[serde(default)]
    pub wal_missing: u64,
}

/// The recoverable window: base backups and dumps on a time line, and the spans of WAL.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    pub items: Vec<StoredItem>,
    /// Spans of continuous archived WAL (one per gap-free run of segments), oldest first.
    pub wal_spans: Vec<WalSpan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalSpan {
    /// The WAL timeline the segments are on.
    #[serde(default)]
    pub timeline: u32,
    /// When the first and the last segment of the span were stored in the repository.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub first_segment: String,
    pub last_segment: String,
}
