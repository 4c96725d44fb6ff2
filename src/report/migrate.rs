//! The views of `lifeboat migrate` (`--json`): `migrate-status/1`, `migrate-plan/1`,
//! `migrate-run/1` (up, down, redo), `migrate-validate/1`, `migrate-change/1` (baseline, repair,
//! adopt). docs/json.md documents them.

use serde::Serialize;

use super::Document;
use crate::migrate::plan::Entry;
use crate::migrate::run::Ran;

/// `migrate status`: each migration with its state and history row, and what needs attention.
#[derive(Debug, Serialize)]
pub struct MigrateStatusView {
    pub environment: String,
    pub production: bool,
    pub history_table: String,
    pub layout: &'static str,
    pub directory: String,
    pub migrations: Vec<Entry>,
    pub problems: Vec<String>,
}

impl Document for MigrateStatusView {
    fn schema(&self) -> &'static str {
        "migrate-status/1"
    }
}

/// `migrate plan`: what `up` would run, and the gate's verdict, without changing anything.
#[derive(Debug, Serialize)]
pub struct MigratePlanView {
    pub environment: String,
    pub production: bool,
    pub gate: String,
    pub migrations: Vec<PlannedMigration>,
    /// The newest stored rehearsal whose measurements are shown (`null`: none, or the repository
    /// did not open).
    pub rehearsal: Option<PlanRehearsal>,
}

/// Which rehearsal `plan` took its timings from.
#[derive(Debug, Serialize)]
pub struct PlanRehearsal {
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// `base` or `dump`, and its id.
    pub source_kind: String,
    pub source_id: String,
}

#[derive(Debug, Serialize)]
pub struct PlannedMigration {
    pub version: String,
    pub name: String,
    pub transactional: bool,
    pub lock_timeout_ms: u128,
    pub statements: Vec<String>,
    /// `lifeboat migrate lint`'s findings on the up file, graded by the target's table sizes
    /// (shape as in `migrate-lint/1`).
    pub findings: Vec<crate::migrate::lint::Finding>,
    /// What the newest stored rehearsal measured for the statements whose text is unchanged since
    /// (shape as in `migrate-rehearse/1`'s `statements`).
    pub rehearsed: Vec<crate::migrate::rehearse::measure::StatementMeasure>,
}

impl Document for MigratePlanView {
    fn schema(&self) -> &'static str {
        "migrate-plan/1"
    }
}

/// `migrate up`, `down`, `redo`: what ran, what a `--rollback-on-failure` reverted, the gate's
/// verdict and the exported schema.
#[derive(Debug, Serialize)]
pub struct MigrateRunView {
    pub environment: String,
    pub gate: String,
    pub backup: Option<String>,
    pub ran: Vec<Ran>,
    pub rolled_back: Vec<Ran>,
    pub schema_export: Option<String>,
    pub error: Option<String>,
}

impl Document for MigrateRunView {
    fn schema(&self) -> &'static str {
        "migrate-run/1"
    }
}

/// `migrate validate`.
#[derive(Debug, Serialize)]
pub struct MigrateValidateView {
    pub migrations: usize,
    pub problems: Vec<String>,
}

impl Document for MigrateValidateView {
    fn schema(&self) -> &'static str {
        "migrate-validate/1"
    }
}

/// `migrate baseline`, `repair`, `adopt`: the history changes made, one sentence each, and notes.
#[derive(Debug, Serialize)]
pub struct MigrateChangeView {
    pub environment: String,
    pub change: &'static str,
    pub changes: Vec<String>,
    pub notes: Vec<String>,
}

impl Document for MigrateChangeView {
    fn schema(&self) -> &'static str {
        "migrate-change/1"
    }
}
