//! The view of `lifeboat migrate diff` (`--json`): `migrate-diff/1`, documented in docs/json.md,
//! and its text form.

use std::path::Path;

use serde::Serialize;

use super::Document;
use crate::migrate::diff::Outcome;
use crate::migrate::diff::generate::Summary;
use crate::migrate::lint::Finding;

/// `migrate diff`: the files written (none when the schemas agree), what they change, and
/// whether they passed their proof on the scratch server.
#[derive(Debug, Serialize)]
pub struct MigrateDiffView {
    pub desired: String,
    pub directory: String,
    /// The scratch server's PostgreSQL.
    pub server: String,
    /// Whether the migrations' schema differs from the desired one.
    pub different: bool,
    /// The new migration's version, when files were written.
    pub version: Option<String>,
    /// The up and down files written.
    pub files: Vec<String>,
    pub summary: Summary,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// The up file gave the desired schema and the down file the original one.
    pub proven: bool,
    pub problems: Vec<String>,
    /// The lint of the generated up file (docs/json.md `migrate-lint/1` findings), graded by the
    /// environment's table sizes when it answered.
    pub findings: Vec<Finding>,
}

impl MigrateDiffView {
    pub fn new(desired: &Path, directory: &Path, outcome: &Outcome, findings: Vec<Finding>) -> MigrateDiffView {
        MigrateDiffView {
            desired: desired.display().to_string(),
            directory: directory.display().to_string(),
            server: outcome.server.clone(),
            different: outcome.migration.is_some(),
            version: outcome.migration.as_ref().map(|migration| migration.version.to_string()),
            files: outcome.files.iter().map(|path| path.display().to_string()).collect(),
            summary: outcome.summary.clone(),
            warnings: outcome.warnings.clone(),
            notes: outcome.notes.clone(),
            proven: outcome.migration.is_some() && outcome.problems.is_empty(),
            problems: outcome.problems.clone(),
            findings,
        }
    }
}

impl Document for MigrateDiffView {
    fn schema(&self) -> &'static str {
        "migrate-diff/1"
    }
}

pub fn print(view: &MigrateDiffView) {
    if !view.different {
        if view.problems.is_empty() {
            println!(
                "no difference: the migrations in {} build the schema {} describes; nothing written",
                view.directory, view.desired
            );
        }
        for problem in &view.problems {
            println!("{problem}");
        }
        return;
    }
    for file in &view.files {
        println!("wrote {file}");
    }
    println!("  {}", view.summary.line());
    for warning in &view.warnings {
        println!("  warning: {warning}");
    }
    for note in &view.notes {
        println!("  note: {note}");
    }
    for finding in &view.findings {
        println!("  lint: {}", super::lint::render(finding).replace('\n', "\n  "));
    }
    if view.proven {
        println!(
            "  proven on a scratch server ({}): up gives the schema of {}, down gives back the original; review the \
             files before `lifeboat migrate up`",
            view.server, view.desired
        );
    } else {
        for problem in &view.problems {
            println!("\n{problem}");
        }
    }
}
