//! Which layout a directory uses, from its marker files (the order and the rule for the shared
//! `<version>_<name>.up.sql` naming are in the module doc of [`super`]).

use std::path::Path;

use super::{SourceError, check_dir, dbmate, drizzle, entries, flyway, prisma, version_and_name};
use crate::config::MigrationLayout;

/// The layout of `dir`, or `None` when nothing in it marks one (an empty directory).
pub fn detect(dir: &Path) -> Result<Option<MigrationLayout>, SourceError> {
    check_dir(dir)?;
    let entries = entries(dir)?;
    let prisma_dir = entries.iter().any(|(_, path, is_dir)| *is_dir && path.join(prisma::SCRIPT).is_file());
    if prisma_dir || entries.iter().any(|(name, ..)| name == prisma::LOCK_FILE) {
        return Ok(Some(MigrationLayout::Prisma));
    }
    if dir.join(drizzle::JOURNAL).is_file() {
        return Ok(Some(MigrationLayout::Drizzle));
    }
    let sql: Vec<(&String, &std::path::PathBuf)> = entries
        .iter()
        .filter(|(name, _, is_dir)| !is_dir && name.ends_with(".sql"))
        .map(|(name, path, _)| (name, path))
        .collect();
    if sql.iter().any(|(name, _)| matches!(flyway::parse_name(name), Some(('V' | 'R', ..)))) {
        return Ok(Some(MigrationLayout::Flyway));
    }
    let mut pairs = false;
    let mut sqlx = false;
    for (name, path) in &sql {
        // Unreadable files are left for `read` to report.
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|line| matches!(dbmate::is_marker(line), Some((true, _)))) {
            return Ok(Some(MigrationLayout::Dbmate));
        }
        let stem = name.trim_end_matches(".sql").trim_end_matches(".up").trim_end_matches(".down");
        if version_and_name(stem).is_some() {
            pairs = true;
            sqlx |= text.trim_start_matches('\u{feff}').starts_with("-- no-transaction");
        }
    }
    Ok(match (pairs, sqlx) {
        (_, true) => Some(MigrationLayout::Sqlx),
        (true, false) => Some(MigrationLayout::Lifeboat),
        (false, false) => None,
    })
}
