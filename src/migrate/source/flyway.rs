//! Flyway's layout: `V<version>__<description>.sql` with versions written with `.` or `_`
//! (`V1_1__x` is 1.1; `V4.11__` sorts before `V4.11.0.1__`), an empty description allowed
//! (`V2__.sql`), `_` in the description read as a space, `R__<description>.sql` repeatables, and
//! an optional `<file>.sql.conf` beside a script (`executeInTransaction=false` runs it outside a
//! transaction). `U<version>__` undo scripts become the down script of their version. Flyway
//! scans its locations recursively, and so does this reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Found, Migration, Problem, Repeatable, Script, SourceError, Version, entries, read_text};

const EXPECTED: &str = "expected Flyway's `V<version>__<description>.sql` (version digits separated by '.' or '_', \
                        two underscores before the description) or `R__<description>.sql`";

enum Kind {
    Versioned(Version),
    Undo(Version),
    Repeatable,
}

/// Splits a Flyway file name into its kind and description; `None` when it is not one.
pub(super) fn parse_name(file_name: &str) -> Option<(char, Option<Version>, String)> {
    let stem = file_name.strip_suffix(".sql")?;
    let prefix = stem.chars().next()?;
    if !matches!(prefix, 'V' | 'U' | 'R' | 'B') {
        return None;
    }
    let (version, description) = stem[1..].split_once("__")?;
    let description = description.replace('_', " ");
    if prefix == 'R' {
        return version.is_empty().then_some((prefix, None, description));
    }
    Some((prefix, Some(Version::parse(version).ok()?), description))
}

pub(super) fn read(dir: &Path, found: &mut Found) -> Result<(), SourceError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    let mut undo: BTreeMap<Version, Script> = BTreeMap::new();
    for (file_name, path) in files {
        if !file_name.ends_with(".sql") {
            continue;
        }
        let (kind, description) = match parse_name(&file_name) {
            Some(('V', Some(version), description)) => (Kind::Versioned(version), description),
            Some(('U', Some(version), description)) => (Kind::Undo(version), description),
            Some(('R', None, description)) => (Kind::Repeatable, description),
            Some(('B', ..)) => {
                found.problems.push(Problem::Ignored {
                    path,
                    why: "Flyway baseline migrations are not run by lifeboat; record the baseline with \
                          `lifeboat migrate baseline VERSION`"
                        .to_owned(),
                });
                continue;
            }
            _ if file_name.starts_with(|c: char| c.is_ascii_lowercase()) => {
                found.problems.push(Problem::Ignored {
                    path,
                    why: "Flyway callback scripts (beforeMigrate.sql, afterMigrate.sql, ...) are not run by lifeboat"
                        .to_owned(),
                });
                continue;
            }
            _ => {
                found.problems.push(Problem::Unreadable { path, why: EXPECTED.to_owned() });
                continue;
            }
        };
        let Some(text) = read_text(&path, &mut found.problems)? else { continue };
        let transaction = in_transaction(&path, &mut found.problems)?;
        let script = Script::new(&path, text, transaction, 1, &mut found.problems);
        match kind {
            Kind::Versioned(version) => {
                found.migrations.push(Migration { version, name: description, up: script, down: None })
            }
            Kind::Undo(version) => {
                undo.insert(version, script);
            }
            Kind::Repeatable => found.repeatables.push(Repeatable { name: description, script }),
        }
    }
    for migration in &mut found.migrations {
        migration.down = undo.remove(&migration.version);
    }
    for script in undo.into_values() {
        found.problems.push(Problem::DownWithoutUp { path: script.path });
    }
    Ok(())
}

/// Every file below `dir`, depth first in name order.
fn collect(dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), SourceError> {
    for (name, path, is_dir) in entries(dir)? {
        if is_dir {
            collect(&path, files)?;
        } else {
            files.push((name, path));
        }
    }
    Ok(())
}

/// `executeInTransaction` from `<file>.conf`, true when there is none.
fn in_transaction(path: &Path, problems: &mut Vec<Problem>) -> Result<bool, SourceError> {
    let mut conf = path.as_os_str().to_owned();
    conf.push(".conf");
    let conf = PathBuf::from(conf);
    if !conf.is_file() {
        return Ok(true);
    }
    let Some(text) = read_text(&conf, problems)? else { return Ok(true) };
    let mut transaction = true;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        if key.trim() == "executeInTransaction" {
            match value.trim() {
                "false" => transaction = false,
                "true" => transaction = true,
                other => problems.push(Problem::Unreadable {
                    path: conf.clone(),
                    why: format!("executeInTransaction is {other:?}; write true or false"),
                }),
            }
        }
    }
    Ok(transaction)
}
