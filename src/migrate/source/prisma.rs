//! Prisma's layout: one directory per migration, `<YYYYMMDDHHMMSS>_<name>/migration.sql` (the
//! name may hold spaces; `0_init` is Prisma's documented baseline), beside `migration_lock.toml`.
//! The directory's name is what `_prisma_migrations.migration_name` records.

use std::path::Path;

use super::{Found, Migration, Problem, Script, SourceError, entries, read_text, version_and_name};

pub(super) const LOCK_FILE: &str = "migration_lock.toml";
pub(super) const SCRIPT: &str = "migration.sql";

pub(super) fn read(dir: &Path, found: &mut Found) -> Result<(), SourceError> {
    for (name, path, is_dir) in entries(dir)? {
        if !is_dir {
            if name.ends_with(".sql") {
                found.problems.push(Problem::Unreadable {
                    path,
                    why: format!(
                        "Prisma keeps each migration in its own directory: move it to <timestamp>_<name>/{SCRIPT}"
                    ),
                });
            }
            continue;
        }
        let script_path = path.join(SCRIPT);
        let Some((version, migration_name)) = version_and_name(&name).filter(|(_, rest)| !rest.is_empty()) else {
            if script_path.is_file() {
                found.problems.push(Problem::Unreadable {
                    path,
                    why: "expected a Prisma migration directory named <timestamp>_<name> (e.g. 20240102030405_init)"
                        .to_owned(),
                });
            }
            continue;
        };
        if !script_path.is_file() {
            found.problems.push(Problem::Unreadable { path, why: format!("the migration directory has no {SCRIPT}") });
            continue;
        }
        let Some(text) = read_text(&script_path, &mut found.problems)? else { continue };
        let up = Script::new(&script_path, text, true, 1, &mut found.problems);
        found.migrations.push(Migration { version, name: migration_name.to_owned(), up, down: None });
    }
    Ok(())
}

/// The directory name Prisma records for a migration read by [`read`].
pub fn directory_name(script: &Script) -> Option<String> {
    Some(script.path.parent()?.file_name()?.to_string_lossy().into_owned())
}
