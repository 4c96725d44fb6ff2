//! Walking the data directory and its tablespaces: what a base backup copies, and what it skips.
//!
//! The rules are PostgreSQL's own (`src/backend/backup/basebackup.c`), so a restored directory
//! looks like one `pg_basebackup` would produce:
//!
//! - `pg_wal/` is kept as an empty directory (with `archive_status/` and, from PostgreSQL 17,
//!   `summaries/`): WAL comes from the archive.
//! - The contents of `pg_dynshmem`, `pg_notify`, `pg_replslot`, `pg_serial`, `pg_snapshots`,
//!   `pg_stat_tmp` and `pg_subtrans` are skipped; the directories are kept (as directories even
//!   when they are symbolic links, for instance `pg_stat_tmp` on a RAM disk).
//! - Files named `postmaster.pid`, `postmaster.opts`, `backup_label`, `tablespace_map`,
//!   `backup_manifest`, `postgresql.auto.conf.tmp`, `current_logfiles.tmp`, and anything starting
//!   with `pg_internal.init` (the relation cache, rebuilt at start) or `pgsql_tmp` (temporary files).
//! - In database directories (`base/<oid>/`, `pg_tblspc/<oid>/PG_<version>/<oid>/`): temporary
//!   relations (`t<backend>_<relfilenode>...`) and every fork but `_init` of an unlogged relation
//!   (one whose `<relfilenode>_init` exists); recovery recreates those from the init fork.
//! - `pg_tblspc/<oid>` links are recorded as links, and the tablespace's directory for this major
//!   version (`PG_<major>_<catalog version>`) is walked under the path `pg_tblspc/<oid>/...`.
//!
//! Sockets, FIFOs and devices are skipped with a warning. Entries that disappear while the walk
//! runs (a table dropped during the backup) are skipped silently: WAL replay accounts for them.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Directories whose contents a backup skips (the directory itself is kept).
const EXCLUDED_CONTENTS: &[&str] =
    &["pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// File names a backup skips wherever they are.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// Name prefixes a backup skips wherever they are.
const EXCLUDED_PREFIXES: &[&str] = &["pgsql_tmp", "pg_internal.init"];

/// Subdirectories of `pg_wal` that are kept, empty.
const WAL_SUBDIRECTORIES: &[&str] = &["archive_status", "summaries"];

/// Relation forks other than the main fork, as they appear after `<relfilenode>_`.
const FORKS: &[&str] = &["fsm", "vm", "init"];

/// One thing to record in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    /// The manifest path: relative to the data directory, `/`-separated.
    pub path: String,
    /// Where to read it.
    pub source: PathBuf,
    pub kind: WalkedKind,
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkedKind {
    /// A regular file and its size when the walk saw it.
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: String,
    },
}

/// A `pg_tblspc/<oid>` link found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTablespace {
    pub oid: u32,
    /// The link's target as `readlink` gives it.
    pub location: String,
}

#[derive(Debug, Default)]
pub struct WalkResult {
    /// Sorted by path (so parents come before their children).
    pub entries: Vec<Walked>,
    pub tablespaces: Vec<FoundTablespace>,
    /// Entries skipped by the rules above (not counting those that vanished).
    pub excluded: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "cannot read {}: {source}; run lifeboat as the OS user that owns the data directory \
         (usually postgres) or as root",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is not valid UTF-8; lifeboat records paths as text and cannot back it up", path.display())]
    NotUtf8 { path: PathBuf },
}

/// Walks `pgdata` (a data directory of PostgreSQL `major`) and its tablespaces.
pub fn walk(pgdata: &Path, major: u32) -> Result<WalkResult, WalkError> {
    let mut walker = Walker { major, result: WalkResult::default() };
    walker.directory(pgdata, "", DirKind::Root)?;
    walker.result.entries.sort_by(|a, b| a.path.cmp(&b.path));
    walker.result.tablespaces.sort_by_key(|tablespace| tablespace.oid);
    Ok(walker.result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirKind {
    /// The data directory itself.
    Root,
    /// `pg_tblspc`: its entries are tablespace links.
    Tablespaces,
    /// A database directory, which holds relation files.
    Database,
    Other,
}

struct Walker {
    major: u32,
    result: WalkResult,
}

impl Walker {
    /// Records the entries of directory `dir` (manifest path `rel`, "" for the root) and recurses.
    fn directory(&mut self, dir: &Path, rel: &str, kind: DirKind) -> Result<(), WalkError> {
        let Some(names) = list(dir)? else { return Ok(()) };
        let unlogged: HashSet<&str> = if kind == DirKind::Database {
            names.iter().filter_map(|name| name.strip_suffix("_init")).filter(|oid| is_digits(oid)).collect()
        } else {
            HashSet::new()
        };
        for name in &names {
            let path = join(rel, name);
            let source = dir.join(name);
            if is_excluded_name(name) {
                self.result.excluded += 1;
                continue;
            }
            if kind == DirKind::Database && is_unwanted_relation_file(name, &unlogged) {
                self.result.excluded += 1;
                continue;
            }
            let Some(meta) = lstat(&source)? else { continue };
            let file_type = meta.file_type();
            if kind == DirKind::Root && (name == "pg_wal" || EXCLUDED_CONTENTS.contains(&name.as_str())) {
                // Kept as a directory even when it is a link (pg_wal elsewhere, pg_stat_tmp on a RAM disk).
                let meta = if file_type.is_symlink() { stat(&source)?.unwrap_or(meta) } else { meta };
                self.record(path.clone(), source.clone(), WalkedKind::Dir, &meta);
                if name == "pg_wal" {
                    for sub in WAL_SUBDIRECTORIES {
                        if let Some(meta) = stat(&source.join(sub))?.filter(Metadata::is_dir) {
                            self.record(join(&path, sub), source.join(sub), WalkedKind::Dir, &meta);
                        }
                    }
                }
                continue;
            }
            if file_type.is_symlink() {
                let target = read_link(&source)?;
                if kind == DirKind::Tablespaces
                    && let Ok(oid) = name.parse::<u32>()
                {
                    self.tablespace(&source, &path, oid, target, &meta)?;
                } else {
                    self.record(path, source, WalkedKind::Symlink { target }, &meta);
                }
            } else if file_type.is_dir() {
                self.record(path.clone(), source.clone(), WalkedKind::Dir, &meta);
                let child_kind = match (kind, name.as_str()) {
                    (DirKind::Root, "pg_tblspc") => DirKind::Tablespaces,
                    _ if is_database_dir(&path) => DirKind::Database,
                    _ => DirKind::Other,
                };
                if kind == DirKind::Tablespaces {
                    // An in-place tablespace (allow_in_place_tablespaces): a directory, not a link.
                    self.tablespace_versions(&source, &path)?;
                } else {
                    self.directory(&source, &path, child_kind)?;
                }
            } else if file_type.is_file() {
                self.record(path, source, WalkedKind::File { size: meta.len() }, &meta);
            } else {
                tracing::warn!(path = %source.display(), "skipping a special file (socket, FIFO or device) in the data directory");
                self.result.excluded += 1;
            }
        }
        Ok(())
    }

    /// `pg_tblspc/<oid>` is a link to `target`: records the link, then walks the tablespace.
    fn tablespace(
        &mut self,
        link: &Path,
        rel: &str,
        oid: u32,
        target: String,
        meta: &Metadata,
    ) -> Result<(), WalkError> {
        self.result.tablespaces.push(FoundTablespace { oid, location: target.clone() });
        self.record(rel.to_owned(), link.to_path_buf(), WalkedKind::Symlink { target: target.clone() }, meta);
        // A relative target is relative to pg_tblspc; Path::join keeps an absolute one as is.
        let location = link.parent().unwrap_or(Path::new("/")).join(&target);
        self.tablespace_versions(&location, rel)
    }

    /// Walks the directories of a tablespace that belong to this major version (`PG_15_202209061`);
    /// those of other versions (left by pg_upgrade) are not part of this cluster.
    fn tablespace_versions(&mut self, location: &Path, rel: &str) -> Result<(), WalkError> {
        let Some(names) = list(location)? else { return Ok(()) };
        let prefix = format!("PG_{}_", self.major);
        for name in names.iter().filter(|name| name.starts_with(&prefix)) {
            let source = location.join(name);
            let Some(meta) = lstat(&source)? else { continue };
            if !meta.is_dir() {
                continue;
            }
            let path = join(rel, name);
            self.record(path.clone(), source.clone(), WalkedKind::Dir, &meta);
            self.directory(&source, &path, DirKind::Other)?;
        }
        Ok(())
    }

    fn record(&mut self, path: String, source: PathBuf, kind: WalkedKind, meta: &Metadata) {
        self.result.entries.push(Walked { path, source, kind, mode: meta.mode() & 0o7777, mtime: meta.mtime() });
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") }
}

/// The names in `dir`, sorted; `None` if the directory disappeared.
fn list(dir: &Path) -> Result<Option<Vec<String>>, WalkError> {
    let unreadable = |source| WalkError::Unreadable { path: dir.to_path_buf(), source };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(unreadable(error)),
        };
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(_) => return Err(WalkError::NotUtf8 { path: entry.path() }),
        }
    }
    names.sort_unstable();
    Ok(Some(names))
}

fn lstat(path: &Path) -> Result<Option<Metadata>, WalkError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalkError::Unreadable { path: path.to_path_buf(), source }),
    }
}

fn stat(path: &Path) -> Result<Option<Metadata>, WalkError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalkError::Unreadable { path: path.to_path_buf(), source }),
    }
}

fn read_link(path: &Path) -> Result<String, WalkError> {
    let target = fs::read_link(path).map_err(|source| WalkError::Unreadable { path: path.to_path_buf(), source })?;
    target.into_os_string().into_string().map_err(|_| WalkError::NotUtf8 { path: path.to_path_buf() })
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Names skipped in every directory.
fn is_excluded_name(name: &str) -> bool {
    EXCLUDED_FILES.contains(&name) || EXCLUDED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// `base/<digits>` or `pg_tblspc/<oid>/PG_<...>/<digits>`: a directory of relation files.
fn is_database_dir(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["base", db] => is_digits(db),
        ["pg_tblspc", oid, version, db] => is_digits(oid) && version.starts_with("PG_") && is_digits(db),
        _ => false,
    }
}

/// A relation file name without the temporary prefix: `<digits>[_<fork>][.<segment>]`, giving
/// the relfilenode and the fork (`None` for the main fork).
fn parse_relation_file(name: &str) -> Option<(&str, Option<&str>)> {
    let (stem, segment) = match name.split_once('.') {
        Some((stem, segment)) => (stem, Some(segment)),
        None => (name, None),
    };
    if segment.is_some_and(|segment| !is_digits(segment)) {
        return None;
    }
    let (oid, fork) = match stem.split_once('_') {
        Some((oid, fork)) => (oid, Some(fork)),
        None => (stem, None),
    };
    if !is_digits(oid) || fork.is_some_and(|fork| !FORKS.contains(&fork)) {
        return None;
    }
    Some((oid, fork))
}

/// `t<digits>_<relation file name>`: a temporary relation, private to one session.
fn is_temporary_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else { return false };
    let Some((backend, relation)) = rest.split_once('_') else { return false };
    is_digits(backend) && parse_relation_file(relation).is_some()
}

/// In a database directory: a temporary relation, or a fork other than `_init` of an unlogged
/// relation (whose relfilenode is in `unlogged`).
fn is_unwanted_relation_file(name: &str, unlogged: &HashSet<&str>) -> bool {
    if is_temporary_relation(name) {
        return true;
    }
    matches!(parse_relation_file(name), Some((oid, fork)) if fork != Some("init") && unlogged.contains(oid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn relation_file_names() {
        assert_eq!(parse_relation_file("16384"), Some(("16384", None)));
        assert_eq!(parse_relation_file("16384.12"), Some(("16384", None)));
        assert_eq!(parse_relation_file("16384_fsm"), Some(("16384", Some("fsm"))));
        assert_eq!(parse_relation_file("16384_init.1"), Some(("16384", Some("init"))));
        for name in ["16384_main", "16384.", "x16384", "16384_fsm.x", "", "PG_VERSION", "pg_filenode.map"] {
            assert_eq!(parse_relation_file(name), None, "{name}");
        }
        for name in ["t3_16384", "t3_16384_fsm", "t12_16384.2", "t3_16384_vm.1"] {
            assert!(is_temporary_relation(name), "{name}");
        }
        for name in ["t_16384", "t3_", "t3_x", "16384", "tx_1", "t3_16384_main"] {
            assert!(!is_temporary_relation(name), "{name}");
        }
        let unlogged: HashSet<&str> = ["16390"].into();
        for name in ["16390", "16390.1", "16390_fsm", "16390_vm", "t5_16400"] {
            assert!(is_unwanted_relation_file(name, &unlogged), "{name}");
        }
        for name in ["16390_init", "16390_init.1", "16391", "PG_VERSION", "pg_internal.init"] {
            assert!(!is_unwanted_relation_file(name, &unlogged), "{name}");
        }
    }

    #[test]
    fn database_directories() {
        assert!(is_database_dir("base/5"));
        assert!(is_database_dir("pg_tblspc/16390/PG_15_202209061/5"));
        for path in ["base", "base/pgsql_tmp", "global", "pg_tblspc/16390/PG_15_202209061", "x/base/5"] {
            assert!(!is_database_dir(path), "{path}");
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn walks_a_data_directory_with_the_exclusions() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("data");
        let space = dir.path().join("space");
        for (path, bytes) in [
            ("PG_VERSION", &b"15\n"[..]),
            ("postmaster.pid", b"123"),
            ("postmaster.opts", b"x"),
            ("backup_label", b"old"),
            ("global/pg_control", b"control"),
            ("global/pg_internal.init", b"cache"),
            ("base/5/1259", b"pg_class"),
            ("base/5/16384", b"table"),
            ("base/5/16384.1", b"table segment"),
            ("base/5/16384_fsm", b"fsm"),
            ("base/5/16390", b"unlogged main"),
            ("base/5/16390_fsm", b"unlogged fsm"),
            ("base/5/16390_init", b""),
            ("base/5/t3_16400", b"temp"),
            ("base/pgsql_tmp/pgsql_tmp123.0", b"sort"),
            ("pg_wal/000000010000000000000001", b"wal"),
            ("pg_wal/archive_status/000000010000000000000001.done", b""),
            ("pg_replslot/slot/state", b"slot"),
            ("pg_stat_tmp/global.stat", b"stats"),
            ("pg_subtrans/0000", b"x"),
            ("pg_xact/0000", b"xact"),
        ] {
            write(&pgdata.join(path), bytes);
        }
        fs::create_dir_all(pgdata.join("pg_notify")).unwrap();
        fs::create_dir_all(pgdata.join("pg_logical/snapshots")).unwrap();
        write(&space.join("PG_15_202209061/5/16500"), b"in a tablespace");
        write(&space.join("PG_15_202209061/5/16501_init"), b"");
        write(&space.join("PG_15_202209061/5/16501"), b"unlogged in a tablespace");
        write(&space.join("PG_14_202107181/5/16500"), b"old major version");
        fs::create_dir_all(pgdata.join("pg_tblspc")).unwrap();
        symlink(&space, pgdata.join("pg_tblspc/16499")).unwrap();
        symlink("../PG_VERSION", pgdata.join("global/a_link")).unwrap();

        let result = walk(&pgdata, 15).unwrap();
        let paths: Vec<&str> = result.entries.iter().map(|entry| entry.path.as_str()).collect();
        let expected = [
            "PG_VERSION",
            "base",
            "base/5",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16384_fsm",
            "base/5/16390_init",
            "global",
            "global/a_link",
            "global/pg_control",
            "pg_logical",
            "pg_logical/snapshots",
            "pg_notify",
            "pg_replslot",
            "pg_stat_tmp",
            "pg_subtrans",
            "pg_tblspc",
            "pg_tblspc/16499",
            "pg_tblspc/16499/PG_15_202209061",
            "pg_tblspc/16499/PG_15_202209061/5",
            "pg_tblspc/16499/PG_15_202209061/5/16500",
            "pg_tblspc/16499/PG_15_202209061/5/16501_init",
            "pg_wal",
            "pg_wal/archive_status",
            "pg_xact",
            "pg_xact/0000",
        ];
        assert_eq!(paths, expected);
        assert_eq!(result.tablespaces, [FoundTablespace { oid: 16499, location: space.display().to_string() }]);
        let find = |path: &str| result.entries.iter().find(|entry| entry.path == path).unwrap();
        assert_eq!(find("base/5/16384.1").kind, WalkedKind::File { size: 13 });
        assert_eq!(find("pg_tblspc/16499").kind, WalkedKind::Symlink { target: space.display().to_string() });
        assert_eq!(find("global/a_link").kind, WalkedKind::Symlink { target: "../PG_VERSION".into() });
        assert_eq!(find("pg_tblspc/16499/PG_15_202209061/5/16500").source, space.join("PG_15_202209061/5/16500"));
        assert_eq!(find("pg_wal").kind, WalkedKind::Dir);
    }
}
