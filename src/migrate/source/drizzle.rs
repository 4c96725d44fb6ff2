//! Drizzle's layout: `<out>/<NNNN>_<tag>.sql` files listed in `<out>/meta/_journal.json`, which
//! alone decides what runs and in which order (a `.sql` file missing from the journal never runs:
//! it is reported as ignored). Statements are separated by `--> statement-breakpoint` lines,
//! which are SQL comments, so the parser splits such files like any other. The journal entry's
//! `when` (milliseconds) is what `drizzle.__drizzle_migrations.created_at` records.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{Found, Migration, Problem, Script, SourceError, entries, read_text, version_and_name};

pub(super) const JOURNAL: &str = "meta/_journal.json";

#[derive(Debug, Clone, Deserialize)]
pub struct Journal {
    #[serde(default)]
    pub dialect: Option<String>,
    pub entries: Vec<JournalEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JournalEntry {
    pub idx: u64,
    /// Milliseconds since the Unix epoch, recorded as `created_at` when the migration is applied.
    pub when: i64,
    /// The file name without `.sql`.
    pub tag: String,
    #[serde(default)]
    pub breakpoints: bool,
}

/// Reads `<dir>/meta/_journal.json`.
pub fn read_journal(dir: &Path) -> Result<Journal, SourceError> {
    let path = dir.join(JOURNAL);
    let text = std::fs::read_to_string(&path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
    let journal: Journal = serde_json::from_str(&text).map_err(|error| SourceError::Journal {
        path: path.clone(),
        why: format!("{error}; regenerate it with drizzle-kit"),
    })?;
    if let Some(dialect) = journal.dialect.as_deref().filter(|d| !matches!(*d, "postgresql" | "pg")) {
        return Err(SourceError::Journal { path, why: format!("the journal is for {dialect:?}, not PostgreSQL") });
    }
    Ok(journal)
}

pub(super) fn read(dir: &Path, found: &mut Found) -> Result<(), SourceError> {
    let journal = read_journal(dir)?;
    let mut listed = BTreeSet::new();
    for entry in &journal.entries {
        let file_name = format!("{}.sql", entry.tag);
        let path = dir.join(&file_name);
        listed.insert(file_name);
        let Some((version, name)) = version_and_name(&entry.tag) else {
            found.problems.push(Problem::Unreadable {
                path: dir.join(JOURNAL),
                why: format!(
                    "journal entry {} has tag {:?}; expected <NNNN>_<name> as drizzle-kit writes it",
                    entry.idx, entry.tag
                ),
            });
            continue;
        };
        if !path.is_file() {
            found.problems.push(Problem::Unreadable {
                path,
                why: format!("listed in {JOURNAL} (entry {}) but missing; restore the file or regenerate", entry.idx),
            });
            continue;
        }
        let Some(text) = read_text(&path, &mut found.problems)? else { continue };
        let up = Script::new(&path, text, true, 1, &mut found.problems);
        found.migrations.push(Migration { version, name: name.to_owned(), up, down: None });
    }
    for (file_name, path, is_dir) in entries(dir)? {
        if !is_dir && file_name.ends_with(".sql") && !listed.contains(&file_name) {
            found.problems.push(Problem::Ignored {
                path,
                why: format!("it is not in {JOURNAL}, so Drizzle never runs it either; add it with drizzle-kit"),
            });
        }
    }
    Ok(())
}
