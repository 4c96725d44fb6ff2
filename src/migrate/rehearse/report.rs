//! The stored rehearsal report (docs/format.md section 16): one JSON object per rehearsal at
//! `clusters/<cluster>/rehearsals/<started>`, encrypted and framed like every object, beside (not
//! inside) the verification reports, which the journal hashes and `verify/<id>/` readers parse.

use chrono::{DateTime, Utc};

use super::copy::Source;
use super::measure::StatementMeasure;
use crate::catalog::layout::ClusterLayout;
use crate::migrate::lint::Finding;
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, PutMode};

pub const FORMAT: &str = "lifeboat-rehearsal";
pub const VERSION: u32 = 1;

/// The same time format as verification report keys: they sort by time.
const KEY_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// One rehearsal: where its copy came from, each pending migration measured statement by
/// statement with its down path proven (or not), and the first failure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RehearsalReport {
    pub format: String,
    pub version: u32,
    pub cluster: String,
    pub environment: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub source: Source,
    /// Seconds applying the migrations (up, down, up) on the copy, after the restore.
    pub apply_seconds: f64,
    pub seconds: f64,
    pub migrations: Vec<MigrationRehearsal>,
    /// Every pending migration applied on the copy.
    pub passed: bool,
    /// Every down file returned the schema and row counts to the state before its up, and the
    /// up applied again after it ("no down path" does not count against it).
    pub down_paths_hold: bool,
    pub failure: Option<RehearsalFailure>,
    /// Pending migrations not rehearsed because an earlier one failed.
    pub not_rehearsed: Vec<String>,
}

/// One pending migration on the copy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MigrationRehearsal {
    pub version: String,
    pub name: String,
    pub file: String,
    pub transactional: bool,
    /// The whole up, as the runner timed it (settings, statements, history row, commit).
    pub up_ms: u64,
    /// Each statement of the first up that ran (a failed statement is in [`RehearsalReport::failure`]).
    pub statements: Vec<StatementMeasure>,
    /// The lint findings of the up file, graded by the sizes of the copy's tables (the real
    /// data's), so each can be read beside what its statement measured.
    #[serde(default)]
    pub findings: Vec<Finding>,
    pub down: DownPath,
}

/// What the down path did: `verdict` is one of `restored`, `no down path`, `schema differs after
/// down`, `row counts differ after down`, `down failed`, `up failed after down`, or `not tried`
/// (the up failed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DownPath {
    pub verdict: String,
    /// The error of a failed down or second up.
    pub detail: Option<String>,
    /// Statements of the schema before the up that are missing after the down (`-`) and
    /// statements only there after the down (`+`), as `pg_dump --schema-only` normalised writes them.
    pub schema_missing: Vec<String>,
    pub schema_extra: Vec<String>,
    /// The tables the migration names that existed before it, counted before and after the down.
    pub row_counts: Vec<RowCount>,
    pub down_ms: Option<u64>,
    pub up_again_ms: Option<u64>,
}

impl DownPath {
    pub fn verdict(verdict: &str) -> DownPath {
        DownPath {
            verdict: verdict.to_owned(),
            detail: None,
            schema_missing: Vec::new(),
            schema_extra: Vec::new(),
            row_counts: Vec::new(),
            down_ms: None,
            up_again_ms: None,
        }
    }

    /// The verdict is neither `restored` nor `no down path` nor `not tried`.
    pub fn is_problem(&self) -> bool {
        !matches!(self.verdict.as_str(), "restored" | "no down path" | "not tried")
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowCount {
    pub table: String,
    pub before: i64,
    pub after_down: i64,
}

/// The statement that failed on the copy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RehearsalFailure {
    pub version: String,
    pub name: String,
    pub file: String,
    /// The statement's index in the file, from 0 (`None`: the file failed before a statement).
    pub statement: Option<usize>,
    pub line: u32,
    pub text: String,
    pub error: String,
}

impl std::fmt::Display for RehearsalFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RehearsalFailure { version, name, file, statement, line, text, error } = self;
        match statement {
            Some(index) => write!(
                f,
                "migration {version} ({name}) fails on a copy of the data: {file}:{line}, statement {}: {error}\n    {}",
                index + 1,
                crate::util::first_line(text)
            ),
            None => write!(f, "migration {version} ({name}) fails on a copy of the data: {file}: {error}"),
        }
    }
}

impl RehearsalReport {
    pub fn key(&self, layout: &ClusterLayout) -> ObjectKey {
        ObjectKey::new(format!("{}{}", prefix(layout), self.started_at.format(KEY_TIME_FORMAT)))
            .expect("report keys are built from safe parts")
    }

    pub async fn store(&self, repository: &Repository, layout: &ClusterLayout) -> Result<ObjectKey, RepositoryError> {
        let key = self.key(layout);
        let bytes = serde_json::to_vec_pretty(self).expect("a report always serialises");
        repository.put_bytes(&key, bytes, PutMode::CreateOnly).await?;
        Ok(key)
    }

    pub fn from_json(bytes: &[u8]) -> Result<RehearsalReport, String> {
        let report: RehearsalReport = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if report.format != FORMAT || report.version != VERSION {
            return Err(format!(
                "not a version {VERSION} rehearsal report (format {:?}, version {})",
                report.format, report.version
            ));
        }
        Ok(report)
    }
}

/// `clusters/<cluster>/rehearsals/`.
pub fn prefix(layout: &ClusterLayout) -> String {
    format!("{}rehearsals/", layout.prefix())
}

/// The newest stored rehearsal of the cluster (of `environment`, when given) and its key.
pub async fn newest(
    repository: &Repository,
    layout: &ClusterLayout,
    environment: Option<&str>,
) -> Result<Option<(ObjectKey, RehearsalReport)>, RepositoryError> {
    let mut keys: Vec<ObjectKey> =
        repository.store().list(&prefix(layout)).await?.into_iter().map(|meta| meta.key).collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for key in keys.into_iter().rev() {
        let bytes = repository.get_bytes(&key).await?;
        match RehearsalReport::from_json(&bytes) {
            Ok(report) if environment.is_none_or(|name| name == report.environment) => return Ok(Some((key, report))),
            Ok(_) => {}
            Err(problem) => tracing::warn!("{key}: {problem}; skipped"),
        }
    }
    Ok(None)
}
