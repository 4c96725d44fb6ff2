//! What the directory and the history table say together: each migration's state, what is
//! pending, and every reason `up` must refuse (a dirty history, a modified applied file, a file
//! that sorts between applied ones, a duplicate version or a gap). Pure: no database here.

use serde::Serialize;

use super::history::Row;
use super::source::{Directory, Migration, Repeatable};

/// The state of one version, from the file and its history row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Applied,
    /// Applied, but the file changed since (`checksum` is the history's, `file_checksum` the file's).
    Modified,
    /// Recorded by `baseline`: the schema already had it; never run by lifeboat.
    Baseline,
    /// Its last run failed: the history is dirty.
    Failed,
    Pending,
    /// Pending, but older than an applied version (`up` refuses without --allow-out-of-order).
    OutOfOrder,
    /// In the history, with no file.
    Missing,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Modified => "modified",
            State::Baseline => "baseline",
            State::Failed => "failed",
            State::Pending => "pending",
            State::OutOfOrder => "out-of-order",
            State::Missing => "missing",
        }
    }
}

/// One line of `migrate status`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub version: String,
    pub name: String,
    pub state: State,
    /// The file's checksum (none for a missing file).
    pub file_checksum: Option<String>,
    /// The history row, when there is one.
    pub row: Option<Row>,
}

/// The directory and the history, reconciled.
#[derive(Debug)]
pub struct Plan<'a> {
    pub directory: &'a Directory,
    pub entries: Vec<Entry>,
    /// Repeatable migrations whose checksum is new or changed: `up` applies them after the
    /// versioned ones.
    pub repeatables_due: Vec<&'a Repeatable>,
}

impl<'a> Plan<'a> {
    pub fn new(directory: &'a Directory, rows: &[Row]) -> Plan<'a> {
        let row_of = |version: &str| rows.iter().find(|row| row.version == version && row.kind != "repeatable");
        let newest_applied = directory
            .migrations
            .iter()
            .filter(|migration| row_of(migration.version.as_str()).is_some())
            .map(|migration| &migration.version)
            .max();
        let mut entries: Vec<Entry> = directory
            .migrations
            .iter()
            .map(|migration| {
                let row = row_of(migration.version.as_str()).cloned();
                let state = match &row {
                    None if newest_applied.is_some_and(|newest| &migration.version < newest) => State::OutOfOrder,
                    None => State::Pending,
                    Some(row) if !row.success => State::Failed,
                    Some(row) if row.kind == "baseline" => State::Baseline,
                    Some(row) if row.checksum != migration.up.checksum => State::Modified,
                    Some(_) => State::Applied,
                };
                Entry {
                    version: migration.version.to_string(),
                    name: migration.name.clone(),
                    state,
                    file_checksum: Some(migration.up.checksum.clone()),
                    row,
                }
            })
            .collect();
        for row in rows.iter().filter(|row| row.kind != "repeatable") {
            if !directory.migrations.iter().any(|migration| migration.version.as_str() == row.version) {
                let state = if row.success { State::Missing } else { State::Failed };
                entries.push(Entry {
                    version: row.version.clone(),
                    name: row.name.clone(),
                    state,
                    file_checksum: None,
                    row: Some(row.clone()),
                });
            }
        }
        let repeatables_due = directory
            .repeatables
            .iter()
            .filter(|repeatable| {
                let version = repeatable_version(&repeatable.name);
                !rows
                    .iter()
                    .any(|row| row.version == version && row.success && row.checksum == repeatable.script.checksum)
            })
            .collect();
        Plan { directory, entries, repeatables_due }
    }

    /// The failed migrations (a dirty history).
    pub fn failed(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|entry| entry.state == State::Failed)
    }

    /// The migrations `up` would apply, in order: pending ones, and out-of-order ones when allowed.
    pub fn pending(&self, allow_out_of_order: bool) -> Vec<&'a Migration> {
        let directory = self.directory;
        directory
            .migrations
            .iter()
            .filter(|migration| {
                self.entries.iter().any(|entry| {
                    entry.version == migration.version.as_str()
                        && (entry.state == State::Pending || (allow_out_of_order && entry.state == State::OutOfOrder))
                })
            })
            .collect()
    }

    /// The applied migrations, newest first (what `down` reverts).
    pub fn applied_newest_first(&self) -> Vec<&'a Migration> {
        let mut applied: Vec<&Migration> = self
            .directory
            .migrations
            .iter()
            .filter(|migration| {
                self.entries.iter().any(|entry| {
                    entry.version == migration.version.as_str()
                        && matches!(entry.state, State::Applied | State::Modified | State::Baseline)
                })
            })
            .collect();
        applied.reverse();
        applied
    }

    /// Why `up` (or `down`, `redo`) must not run, each with what to do; empty when it may.
    pub fn refusals(&self, allow_out_of_order: bool) -> Vec<String> {
        let mut refusals = Vec::new();
        for entry in self.failed() {
            let row = entry.row.as_ref().expect("a failed entry has a history row");
            refusals.push(dirty_message(entry, row));
        }
        for entry in self.entries.iter().filter(|entry| entry.state == State::Modified) {
            let row = entry.row.as_ref().expect("a modified entry has a history row");
            refusals.push(format!(
                "migration {} ({}) was applied with checksum {} but its file now has checksum {}: an applied \
                 migration's file was edited. Restore the file as it was (git), or, if the edit changes nothing that \
                 ran (a comment), record the new checksum with `lifeboat migrate repair`",
                entry.version,
                entry.name,
                short(&row.checksum),
                short(entry.file_checksum.as_deref().unwrap_or_default()),
            ));
        }
        if !allow_out_of_order {
            for entry in self.entries.iter().filter(|entry| entry.state == State::OutOfOrder) {
                refusals.push(format!(
                    "migration {} ({}) is pending but sorts before migrations already applied (a branch merged \
                     late?); check that it does not depend on them, then run `lifeboat migrate up \
                     --allow-out-of-order`, or give it a newer version",
                    entry.version, entry.name
                ));
            }
        }
        for problem in &self.directory.problems {
            if problem.is_blocking() {
                refusals.push(problem.to_string());
            }
        }
        refusals
    }
}

/// Flyway's repeatable `R__name` rows have this version.
pub fn repeatable_version(name: &str) -> String {
    format!("R__{name}")
}

/// The message for a failed migration: what happened and the three ways on.
pub fn dirty_message(entry: &Entry, row: &Row) -> String {
    // A failure adopted from another tool was not watched by lifeboat: how much of it landed is
    // the tool's to say, so lifeboat claims nothing about it.
    let landed = if let Some(tool) = &row.adopted_from {
        format!(
            "It failed under {tool}, not lifeboat, so what of it landed is unknown: check the schema before choosing."
        )
    } else if row.transactional {
        "It ran in a transaction, so none of it landed.".to_owned()
    } else {
        format!(
            "It ran outside a transaction: {} of its {} statements completed and stay applied.",
            row.statements_done, row.statements_total
        )
    };
    let failed = match (&row.failed_statement, &row.error) {
        (Some(statement), Some(error)) => {
            format!(" This statement failed: {error}\n    {}", crate::util::first_line(statement))
        }
        (None, Some(error)) => format!(" It failed: {error}"),
        _ => String::new(),
    };
    // Only a run lifeboat watched has a restore point to return to; otherwise a time does.
    let back = if row.restore_point.is_some() {
        format!(
            "lifeboat migrate restore-before {}   # put the database back to the moment before it (PITR)",
            entry.version
        )
    } else {
        "lifeboat restore --pgdata DIR --target-time '<a time before it>'   # no restore point was recorded for it \
         (PITR)"
            .to_owned()
    };
    format!(
        "migration {version} ({name}) failed at {at}, so the history is dirty.{failed}\n  {landed}\n  Choose one:\n    \
         {back}\n    \
         fix the file so it can run again, then: lifeboat migrate repair && lifeboat migrate up\n    \
         lifeboat migrate down   # revert what it did with its down file, when one exists",
        version = entry.version,
        name = entry.name,
        at = row.applied_at.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

/// The first 12 hex digits of a checksum, as messages show it.
pub fn short(checksum: &str) -> &str {
    &checksum[..checksum.len().min(12)]
}
