//! The migration directory: reading lifeboat's own layout and the layouts of six other tools in
//! place (sqlx, Prisma, Drizzle, golang-migrate, dbmate, Flyway), so a team can keep generating
//! migrations with the tool it knows and still run them through the gate. Owns versions,
//! checksums, the `-- lifeboat:` directives, statement splitting and `migrate new`.
//!
//! Reading never skips quietly: a file that looks like a migration but does not parse, a
//! duplicate version, a gap in sequential numbering, a directory mixing timestamps with sequence
//! numbers and a down file without its up file are [`Problem`]s on the [`Directory`], for
//! `status` to report and `up` to refuse. Numbering (mixing and gaps) is checked where the file
//! name is the whole truth: lifeboat, sqlx, golang-migrate and dbmate. Prisma (`0_init` beside
//! timestamps is its documented baseline), Drizzle (its journal orders the files) and Flyway
//! (dotted versions) are read in their own order. Of two migrations with one version the first
//! file name is kept and the problem names both.
//!
//! Detection ([`detect`]) goes by marker files, first match wins: `migration_lock.toml` or a
//! `*/migration.sql` (Prisma); `meta/_journal.json` (Drizzle); `V<version>__*.sql` or `R__*.sql`
//! (Flyway); a `.sql` file with a `-- migrate:up` line (dbmate); a `<version>_<name>.sql` file
//! starting with sqlx's `-- no-transaction` (sqlx); then any `<version>_<name>[.up|.down].sql`
//! (lifeboat). lifeboat, sqlx and golang-migrate share that last naming and mean the same by it,
//! so such a directory is read as lifeboat's; which tool *applied* it is told by the history
//! table in the database ([`crate::migrate::adopt`]), not by the files. A directory with no
//! marker (empty, or a new project) is read as lifeboat's.

mod create;
mod dbmate;
mod detect;
pub mod drizzle;
mod flyway;
mod pairs;
pub mod prisma;
mod script;
mod split;
mod version;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use create::create;
pub use detect::detect;
pub use script::{Allow, Script, checksum, normalise, read_file};
pub use split::split;
pub use version::Version;

use crate::config::MigrationLayout;

/// One statement of a script: its text without the `;` that ends it (and without surrounding
/// comments), and the 1-based line of its first token in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub line: u32,
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: Version,
    pub name: String,
    pub up: Script,
    pub down: Option<Script>,
}

/// A Flyway `R__` script: unversioned, re-run whenever its checksum changes.
#[derive(Debug, Clone)]
pub struct Repeatable {
    pub name: String,
    pub script: Script,
}

/// How a directory numbers its migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// `YYYYMMDDHHMMSS`.
    Timestamp,
    /// Anything else: `0001`, `7`, Flyway's `4.11.0.1`.
    Sequential,
    /// No migrations yet.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    DuplicateVersion {
        version: Version,
        paths: Vec<PathBuf>,
    },
    /// Sequential numbering only: `next` is not `after + 1`.
    Gap {
        after: Version,
        next: Version,
    },
    MixedNumbering {
        timestamp: Vec<PathBuf>,
        sequential: Vec<PathBuf>,
    },
    DownWithoutUp {
        path: PathBuf,
    },
    /// A file that looks like a migration but cannot be read as one; `why` says what was expected.
    Unreadable {
        path: PathBuf,
        why: String,
    },
    /// A file the directory's tool would not run either (a Drizzle `.sql` missing from the journal,
    /// a Flyway undo or baseline script): reported, not a reason to refuse.
    Ignored {
        path: PathBuf,
        why: String,
    },
}

impl Problem {
    /// Whether `up` must refuse while the problem stands ([`Problem::Ignored`] only informs).
    pub fn is_blocking(&self) -> bool {
        !matches!(self, Problem::Ignored { .. })
    }
}

fn paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DuplicateVersion { version, paths: files } => write!(
                f,
                "version {version} is used by more than one migration ({}): renumber all but one",
                paths(files)
            ),
            Problem::Gap { after, next } => write!(
                f,
                "the sequential versions jump from {after} to {next}: add the missing migration or renumber \
                 {next} and the ones after it"
            ),
            Problem::MixedNumbering { timestamp, sequential } => write!(
                f,
                "the directory mixes timestamp versions ({}) with sequential ones ({}): rename one kind so \
                 the directory keeps one numbering",
                paths(timestamp),
                paths(sequential)
            ),
            Problem::DownWithoutUp { path } => write!(
                f,
                "{} has no up migration beside it: add the matching .up.sql or remove the down file",
                path.display()
            ),
            Problem::Unreadable { path, why } => write!(f, "{}: {why}", path.display()),
            Problem::Ignored { path, why } => write!(f, "{} is ignored: {why}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Directory {
    pub path: PathBuf,
    pub layout: MigrationLayout,
    pub numbering: Numbering,
    /// Sorted by version.
    pub migrations: Vec<Migration>,
    pub repeatables: Vec<Repeatable>,
    pub problems: Vec<Problem>,
}

impl Directory {
    pub fn migration(&self, version: &Version) -> Option<&Migration> {
        self.migrations.iter().find(|migration| &migration.version == version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "migration directory {} does not exist: create it (`lifeboat migrate new NAME` does) or set \
         [migrate] dir to where the migrations are",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("{} is not a directory: set [migrate] dir to the directory that holds the migrations", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("Drizzle journal {}: {why}", path.display())]
    Journal { path: PathBuf, why: String },
    #[error(
        "{name:?} is not a migration name: use lowercase letters, digits and underscores \
         (e.g. add_users_email)"
    )]
    InvalidName { name: String },
    #[error(
        "{} is laid out for {layout}: create its migrations with {layout} (lifeboat runs them as they are), \
         or point [migrate] dir at a lifeboat directory",
        path.display()
    )]
    ForeignLayout { path: PathBuf, layout: MigrationLayout },
    #[error("{} already exists: choose another name, or wait a second for the next timestamp", path.display())]
    Exists { path: PathBuf },
}

/// What a layout reader found, before the checks that apply to every layout.
#[derive(Default)]
struct Found {
    migrations: Vec<Migration>,
    repeatables: Vec<Repeatable>,
    problems: Vec<Problem>,
}

/// Reads the migration directory `dir` laid out as `layout` (`None`: [`detect`]ed).
pub fn read(dir: &Path, layout: Option<MigrationLayout>) -> Result<Directory, SourceError> {
    check_dir(dir)?;
    let layout = match layout {
        Some(layout) => layout,
        None => detect(dir)?.unwrap_or(MigrationLayout::Lifeboat),
    };
    let mut found = Found::default();
    match layout {
        MigrationLayout::Lifeboat | MigrationLayout::Sqlx | MigrationLayout::GolangMigrate => {
            pairs::read(dir, layout, &mut found)?
        }
        MigrationLayout::Prisma => prisma::read(dir, &mut found)?,
        MigrationLayout::Drizzle => drizzle::read(dir, &mut found)?,
        MigrationLayout::Dbmate => dbmate::read(dir, &mut found)?,
        MigrationLayout::Flyway => flyway::read(dir, &mut found)?,
    }
    Ok(finish(dir, layout, found))
}

fn check_dir(dir: &Path) -> Result<(), SourceError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(SourceError::NotADirectory { path: dir.to_path_buf() }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(SourceError::Missing { path: dir.to_path_buf() })
        }
        Err(source) => Err(SourceError::Io { path: dir.to_path_buf(), source }),
    }
}

/// Sorts, drops duplicate versions (reporting them), and checks the numbering.
fn finish(dir: &Path, layout: MigrationLayout, found: Found) -> Directory {
    let Found { mut migrations, mut repeatables, mut problems } = found;
    migrations.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.up.path.cmp(&b.up.path)));
    repeatables.sort_by(|a, b| a.script.path.cmp(&b.script.path));
    let mut by_version: BTreeMap<Version, Vec<PathBuf>> = BTreeMap::new();
    for migration in &migrations {
        by_version.entry(migration.version.clone()).or_default().push(migration.up.path.clone());
    }
    for (version, files) in by_version {
        if files.len() > 1 {
            problems.push(Problem::DuplicateVersion { version, paths: files });
        }
    }
    migrations.dedup_by(|later, earlier| later.version == earlier.version);

    let timestamp: Vec<&Migration> = migrations.iter().filter(|m| m.version.is_timestamp()).collect();
    let numbering = if migrations.is_empty() {
        Numbering::Empty
    } else if timestamp.len() * 2 >= migrations.len() {
        Numbering::Timestamp
    } else {
        Numbering::Sequential
    };
    let checks_numbering = matches!(
        layout,
        MigrationLayout::Lifeboat | MigrationLayout::Sqlx | MigrationLayout::GolangMigrate | MigrationLayout::Dbmate
    );
    if checks_numbering {
        if !timestamp.is_empty() && timestamp.len() < migrations.len() {
            let (stamped, counted): (Vec<&Migration>, Vec<&Migration>) =
                migrations.iter().partition(|m| m.version.is_timestamp());
            problems.push(Problem::MixedNumbering {
                timestamp: stamped.iter().map(|m| m.up.path.clone()).collect(),
                sequential: counted.iter().map(|m| m.up.path.clone()).collect(),
            });
        } else if numbering == Numbering::Sequential {
            for pair in migrations.windows(2) {
                let (Some(after), Some(next)) = (pair[0].version.to_i64(), pair[1].version.to_i64()) else {
                    continue;
                };
                if after.checked_add(1) != Some(next) {
                    problems.push(Problem::Gap { after: pair[0].version.clone(), next: pair[1].version.clone() });
                }
            }
        }
    }
    Directory { path: dir.to_path_buf(), layout, numbering, migrations, repeatables, problems }
}

/// The entries of `dir` sorted by name, so reading is deterministic. Hidden entries are skipped.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, SourceError> {
    let io = |source| SourceError::Io { path: dir.to_path_buf(), source };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let is_dir = std::fs::metadata(&path).map(|metadata| metadata.is_dir()).unwrap_or(false);
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            entries.push((name, path, is_dir));
        }
    }
    entries.sort();
    Ok(entries)
}

/// The file's text with a leading BOM removed; text that is not UTF-8 is a problem, not an error,
/// so one bad file does not hide the state of the others.
fn read_text(path: &Path, problems: &mut Vec<Problem>) -> Result<Option<String>, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Io { path: path.to_path_buf(), source })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))),
        Err(_) => {
            problems.push(Problem::Unreadable {
                path: path.to_path_buf(),
                why: "is not UTF-8 text; save it as UTF-8".to_owned(),
            });
            Ok(None)
        }
    }
}

/// `<digits>_<rest>` split at the first `_`, when the prefix is all digits.
fn version_and_name(stem: &str) -> Option<(Version, &str)> {
    let (version, name) = stem.split_once('_')?;
    if version.is_empty() || !version.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((Version::parse(version).ok()?, name))
}

#[cfg(test)]
mod tests;
