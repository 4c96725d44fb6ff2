//! The directory a restore writes into, before anything is written (G4): a running server on it is
//! always refused; a non-empty one is refused unless `--delta` (keep what matches the manifest) or
//! `--force` (empty it first). For `--delta`, which existing files already hold the backup's bytes.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::RestoreError;
use super::files::{Destination, hash_file, tablespace_oid};
use crate::format::backup_manifest::{BackupManifest, EntryKind};

/// How to treat a target directory that is not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingData {
    /// Refuse it (the default).
    Refuse,
    /// Keep the files whose size and hash match the manifest; rewrite the others; remove files
    /// the manifest does not know.
    Delta,
    /// Remove everything in it first.
    Force,
}

impl ExistingData {
    /// From the `--delta` and `--force` flags (which clap keeps apart).
    pub fn from_flags(delta: bool, force: bool) -> ExistingData {
        if delta {
            ExistingData::Delta
        } else if force {
            ExistingData::Force
        } else {
            ExistingData::Refuse
        }
    }
}

/// What was found in the target before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Whether the data directory exists and holds anything.
    pub pgdata_in_use: bool,
    /// Tablespace locations that exist and hold anything.
    pub tablespaces_in_use: Vec<PathBuf>,
}

/// Checks the target: no server running on it, and empty unless `existing` allows otherwise.
pub fn inspect(destination: &Destination, existing: ExistingData) -> Result<Inspection, RestoreError> {
    let pgdata = &destination.pgdata;
    if let Some(pid) = running_server(pgdata) {
        return Err(RestoreError::ServerRunning { pgdata: pgdata.clone(), pid });
    }
    let pgdata_in_use = holds_anything(pgdata)?;
    let tablespaces_in_use: Vec<PathBuf> = destination
        .tablespaces
        .values()
        .filter_map(|location| holds_anything(location).map(|used| used.then(|| location.clone())).transpose())
        .collect::<Result<_, _>>()?;
    if existing == ExistingData::Refuse && (pgdata_in_use || !tablespaces_in_use.is_empty()) {
        let path = if pgdata_in_use { pgdata.clone() } else { tablespaces_in_use[0].clone() };
        return Err(RestoreError::NotEmpty { path });
    }
    Ok(Inspection { pgdata_in_use, tablespaces_in_use })
}

/// The pid in `postmaster.pid` if that process is alive.
pub fn running_server(pgdata: &Path) -> Option<u32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    crate::util::process_alive(pid).then_some(pid)
}

fn holds_anything(path: &Path) -> Result<bool, RestoreError> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) if error.kind() == io::ErrorKind::NotADirectory => {
            Err(RestoreError::Write { path: path.to_path_buf(), action: "use as a directory", source: error })
        }
        Err(source) => Err(RestoreError::Write { path: path.to_path_buf(), action: "read", source }),
    }
}

/// Removes everything inside `dir` (not `dir` itself).
pub fn empty_directory(dir: &Path) -> Result<(), RestoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RestoreError::Write { path: dir.to_path_buf(), action: "read", source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Write { path: dir.to_path_buf(), action: "read", source })?;
        remove_entry(&entry.path())?;
    }
    Ok(())
}

fn remove_entry(path: &Path) -> Result<(), RestoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RestoreError::Write { path: path.to_path_buf(), action: "inspect", source }),
    };
    let removed = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    removed.map_err(|source| RestoreError::Write { path: path.to_path_buf(), action: "remove", source })
}

/// Files a restore writes itself (not from the manifest): replaced without being reported. So is
/// the server's log of `restore --start` ([`super::start::is_restore_log`]).
const WRITTEN_BY_RESTORE: &[&str] = &["backup_label", "tablespace_map", "recovery.signal"];

fn written_by_restore(relative: &str) -> bool {
    WRITTEN_BY_RESTORE.contains(&relative) || super::start::is_restore_log(relative)
}

/// What a delta restore does to an existing directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaPlan {
    /// Indexes of manifest files to write: missing, or different in size or content.
    pub rewrite: Vec<usize>,
    /// Manifest files already intact.
    pub kept: usize,
    /// Paths removed because the manifest does not know them (relative to the data directory).
    pub removed: Vec<String>,
}

/// Compares the existing tree with the manifest: removes what the manifest does not know (and
/// entries of the wrong kind, and files that differ, so they are written afresh) and lists the
/// files to write. Hashing runs on `workers` threads.
pub fn prepare_delta(
    manifest: &BackupManifest,
    destination: &Destination,
    workers: u32,
) -> Result<DeltaPlan, RestoreError> {
    let known: HashSet<&str> = manifest.files.iter().map(|entry| entry.path.as_str()).collect();
    let mut removed = Vec::new();
    remove_unknown(&destination.pgdata, "", &known, manifest, &mut removed)?;

    // Files that exist with the right size are hashed; the rest are rewritten.
    let mut candidates = Vec::new();
    let mut rewrite = BTreeSet::new();
    for (index, entry) in manifest.files.iter().enumerate() {
        if entry.kind != EntryKind::File {
            continue;
        }
        let path = destination.path(&entry.path);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && Some(meta.len()) == entry.size => candidates.push(index),
            Ok(_) => {
                remove_entry(&path)?;
                rewrite.insert(index);
            }
            Err(_) => {
                rewrite.insert(index);
            }
        }
    }
    let differing = hash_in_parallel(manifest, destination, &candidates, workers)?;
    for index in differing {
        remove_entry(&destination.path(&manifest.files[index].path))?;
        rewrite.insert(index);
    }
    let kept = manifest.files.iter().filter(|entry| entry.kind == EntryKind::File).count() - rewrite.len();
    Ok(DeltaPlan { rewrite: rewrite.into_iter().collect(), kept, removed })
}

/// Removes, below `dir` (`relative` in the manifest's terms), every entry the manifest does not
/// list, or lists as another kind. Tablespace links are followed into their locations.
fn remove_unknown(
    dir: &Path,
    relative: &str,
    known: &HashSet<&str>,
    manifest: &BackupManifest,
    removed: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RestoreError::Write { path: dir.to_path_buf(), action: "read", source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Write { path: dir.to_path_buf(), action: "read", source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
        let meta = fs::symlink_metadata(&path).map_err(|source| RestoreError::Write {
            path: path.clone(),
            action: "inspect",
            source,
        })?;
        let expected = known.contains(rel.as_str()).then(|| manifest.file(&rel)).flatten().map(|entry| entry.kind);
        let kind_matches = match expected {
            Some(EntryKind::Dir) => meta.is_dir(),
            Some(EntryKind::File) => meta.is_file(),
            Some(EntryKind::Symlink) => meta.file_type().is_symlink(),
            None => false,
        };
        if !kind_matches {
            remove_entry(&path)?;
            if !written_by_restore(&rel) {
                removed.push(rel);
            }
            continue;
        }
        if meta.is_dir() {
            remove_unknown(&path, &rel, known, manifest, removed)?;
        } else if meta.file_type().is_symlink() && tablespace_oid(&rel).is_some() {
            // The tablespace's own directory: its contents are compared like the data directory's.
            remove_unknown(&path, &rel, known, manifest, removed)?;
        }
    }
    Ok(())
}

/// The indexes among `candidates` whose content differs from the manifest's hash.
fn hash_in_parallel(
    manifest: &BackupManifest,
    destination: &Destination,
    candidates: &[usize],
    workers: u32,
) -> Result<Vec<usize>, RestoreError> {
    let next = Arc::new(AtomicUsize::new(0));
    let results: Vec<Result<Vec<usize>, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let next = next.clone();
                scope.spawn(move || {
                    let mut differing = Vec::new();
                    loop {
                        let position = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&index) = candidates.get(position) else {
                            return Ok(differing);
                        };
                        let entry = &manifest.files[index];
                        let path = destination.path(&entry.path);
                        let hash = hash_file(&path).map_err(|source| RestoreError::Write {
                            path: path.clone(),
                            action: "read",
                            source,
                        })?;
                        if Some(hash.to_hex().as_str()) != entry.blake3.as_deref() {
                            differing.push(index);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("hashing threads do not panic")).collect()
    });
    let mut differing = Vec::new();
    for result in results {
        differing.extend(result?);
    }
    differing.sort_unstable();
    Ok(differing)
}

/// The owner to give restored files when running as root: that of the data directory, or of its
/// nearest existing parent, unless that is root; then `fallback` (the configured unprivileged OS
/// user, which PostgreSQL needs since it refuses to run as root).
pub fn owner_for(pgdata: &Path, fallback: Option<(u32, u32)>) -> Option<(u32, u32)> {
    let nearest = pgdata.ancestors().find_map(|path| fs::metadata(path).ok());
    match nearest {
        Some(meta) if meta.uid() != 0 => Some((meta.uid(), meta.gid())),
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn non_empty_directories_are_refused_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let destination = Destination { pgdata: dir.path().join("data"), tablespaces: BTreeMap::new(), owner: None };
        let found = inspect(&destination, ExistingData::Refuse).unwrap();
        assert!(!found.pgdata_in_use, "a missing directory is empty");
        fs::create_dir(&destination.pgdata).unwrap();
        fs::write(destination.pgdata.join("PG_VERSION"), "15\n").unwrap();
        let error = inspect(&destination, ExistingData::Refuse).unwrap_err();
        assert!(matches!(error, RestoreError::NotEmpty { .. }), "{error}");
        assert!(inspect(&destination, ExistingData::Delta).unwrap().pgdata_in_use);
        // A live process in postmaster.pid is refused whatever the mode: this test's own pid.
        fs::write(destination.pgdata.join("postmaster.pid"), format!("{}\n", std::process::id())).unwrap();
        let error = inspect(&destination, ExistingData::Force).unwrap_err();
        assert!(matches!(error, RestoreError::ServerRunning { .. }), "{error}");
        empty_directory(&destination.pgdata).unwrap();
        assert!(!holds_anything(&destination.pgdata).unwrap());
    }
}
