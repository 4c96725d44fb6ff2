//! `lifeboat migrate new NAME`: the next pair of files in a lifeboat directory, numbered as the
//! directory already is (a `YYYYMMDDHHMMSS` timestamp for a new directory).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::{Numbering, SourceError, detect, read};
use crate::config::MigrationLayout;

/// Writes `<version>_<name>.up.sql` and `.down.sql` into `dir` (created if missing) and returns
/// their paths. A timestamp later than the newest migration is used even when the clock says
/// otherwise, so a new migration always sorts last; a sequential directory gets the next number,
/// zero-padded to the width of the newest one.
pub fn create(dir: &Path, name: &str, now: DateTime<Utc>) -> Result<Vec<PathBuf>, SourceError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(SourceError::InvalidName { name: name.to_owned() });
    }
    std::fs::create_dir_all(dir).map_err(|source| SourceError::Write { path: dir.to_path_buf(), source })?;
    if let Some(layout) = detect(dir)?.filter(|layout| *layout != MigrationLayout::Lifeboat) {
        return Err(SourceError::ForeignLayout { path: dir.to_path_buf(), layout });
    }
    let directory = read(dir, Some(MigrationLayout::Lifeboat))?;
    let newest = directory.migrations.last().map(|migration| &migration.version);
    let version = match (directory.numbering, newest) {
        (Numbering::Sequential, Some(newest)) => {
            let next = newest.to_i64().unwrap_or(0) + 1;
            format!("{next:0width$}", width = newest.as_str().len())
        }
        (_, newest) => {
            let format = |time: DateTime<Utc>| time.format("%Y%m%d%H%M%S").to_string();
            let stamp = newest
                .filter(|newest| newest.is_timestamp() && newest.as_str() >= format(now).as_str())
                .and_then(|newest| NaiveDateTime::parse_from_str(newest.as_str(), "%Y%m%d%H%M%S").ok())
                .map_or(now, |newest| newest.and_utc() + Duration::seconds(1));
            format(stamp)
        }
    };
    let mut written = Vec::new();
    for (direction, body) in [
        (
            "up",
            "-- To run it outside a transaction, statement by statement, make `-- lifeboat:no-transaction` \
                its first line.\n",
        ),
        ("down", "-- Undoes the up migration; leave it empty if it cannot be undone.\n"),
    ] {
        let path = dir.join(format!("{version}_{name}.{direction}.sql"));
        let header = format!("-- Migration {version} {name} ({direction}).\n{body}\n");
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                SourceError::Exists { path: path.clone() }
            } else {
                SourceError::Write { path: path.clone(), source }
            }
        })?;
        file.write_all(header.as_bytes()).map_err(|source| SourceError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}
