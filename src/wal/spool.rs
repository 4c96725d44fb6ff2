//! The prefetch spool: a directory of WAL segments downloaded ahead of PostgreSQL's requests.
//!
//! Its one rule: a file named like a segment is that segment, whole and authenticated. Downloads
//! go to `.lifeboat-tmp-<random>` files and are renamed to the segment's name only after the whole
//! object authenticated (so a killed process never leaves a partial file under a segment's name).
//! Serving a segment moves it out of the spool with a rename, which is atomic, so two processes
//! can never both serve it, and a file is never served half-written.
//!
//! A spool belongs to one repository and cluster and to one boot of the operating system:
//! `.lifeboat-origin` names them, and opening a spool for another origin, or after a reboot,
//! empties it first. So WAL of another cluster is never served, and spooled files need not be
//! fsynced: what the page cache holds survives any process crash, and an operating-system crash
//! (which could leave a renamed file without its data) changes the boot id, so nothing written
//! before it is served. Skipping the fsync matters: it cost 20-40 ms per 16 MiB segment on the
//! benchmark machine, inside the wait PostgreSQL's replay sees. Where the boot id cannot be read
//! (`/proc/sys/kernel/random/boot_id` is Linux's), every spooled file is fsynced instead.
//!
//! By default the spool is `pg_wal/.lifeboat-spool` in the data directory being recovered (the
//! directory of `%p`, plus `.lifeboat-spool`): PostgreSQL's OS user can always write there, it is
//! on the same filesystem as `%p` so serving is a rename, it disappears with the data directory,
//! and PostgreSQL ignores directories in `pg_wal` it does not know (WAL-G keeps its prefetch
//! directory there too). Base backups skip `pg_wal/*`.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::catalog::wal::{SegmentSize, WalSegment};
use crate::keys::master::random_array;

/// The spool's name inside the directory of `%p` when `wal.spool_dir` is not set.
pub const DEFAULT_DIR_NAME: &str = ".lifeboat-spool";
/// Prefix of files still being written; never served.
pub const TEMP_PREFIX: &str = ".lifeboat-tmp-";
/// Names the repository and cluster the spooled segments came from.
const ORIGIN_FILE: &str = ".lifeboat-origin";
/// A temporary file this old belongs to a process that was killed; no download takes this long.
const STALE_TEMP_AGE: Duration = Duration::from_secs(15 * 60);
/// Changes at every boot of a Linux kernel.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// Spooled files must be fsynced: no boot id tells files of an earlier boot apart.
    durable: bool,
    /// The OS user (uid, gid) the spool and its files are given to: PostgreSQL's, when a process
    /// running as root fills the spool that `wal-fetch`, running as PostgreSQL, serves from.
    owner: Option<(u32, u32)>,
}

/// The spool `wal-fetch` uses for `cluster`: `<wal.spool_dir>/<cluster>` when `configured` (one
/// directory per cluster, so restores of several clusters on one host can share the setting), else
/// [`DEFAULT_DIR_NAME`] in `beside`, the directory of `%p`.
pub fn spool_dir(configured: Option<&Path>, cluster: &str, beside: &Path) -> PathBuf {
    match configured {
        Some(dir) => dir.join(cluster),
        None => beside.join(DEFAULT_DIR_NAME),
    }
}

impl Spool {
    /// Opens the spool at `dir` for segments of `origin` (a repository id and cluster name),
    /// creating it (mode 0700) if needed. Segments spooled for another origin or in an earlier
    /// boot are removed.
    pub fn open(dir: &Path, origin: &str) -> io::Result<Spool> {
        Spool::open_as(dir, origin, None)
    }

    /// [`Spool::open`], giving the directory and every file put in it to `owner` (uid, gid).
    pub fn open_as(dir: &Path, origin: &str, owner: Option<(u32, u32)>) -> io::Result<Spool> {
        let boot = std::fs::read_to_string(BOOT_ID).ok();
        Spool::open_in_boot(dir, origin, boot.as_deref().map(str::trim), owner)
    }

    /// [`Spool::open_as`] with the boot id given (`None`: unknown).
    fn open_in_boot(dir: &Path, origin: &str, boot: Option<&str>, owner: Option<(u32, u32)>) -> io::Result<Spool> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let spool = Spool { dir: dir.to_owned(), durable: boot.is_none(), owner };
        spool.adopt(dir)?;
        let origin = match boot {
            Some(boot) => format!("{origin}\nboot {boot}"),
            None => origin.to_owned(),
        };
        let recorded = std::fs::read_to_string(dir.join(ORIGIN_FILE)).ok();
        if recorded.as_deref() != Some(origin.as_str()) {
            if recorded.is_some() {
                tracing::info!(
                    "the spool {} held WAL of another repository, cluster or boot; emptied it",
                    dir.display()
                );
            }
            spool.clear()?;
            let temporary = TempPath::new(spool.temp_path());
            std::fs::write(temporary.path(), &origin)?;
            spool.adopt(temporary.path())?;
            std::fs::rename(temporary.path(), dir.join(ORIGIN_FILE))?;
            temporary.persist();
        }
        Ok(spool)
    }

    /// Removes every spooled segment (downloads in progress are left to their processes).
    pub fn clear(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(TEMP_PREFIX) && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a spooled file must be fsynced before it is renamed to its segment's name.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Gives `path` (in the spool) to the spool's owner, if it has one.
    pub fn adopt(&self, path: &Path) -> io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// Where the complete file of `segment` lives.
    pub fn path_of(&self, segment: WalSegment, size: SegmentSize) -> PathBuf {
        self.dir.join(segment.name(size))
    }

    /// A fresh name for a download in progress.
    pub fn temp_path(&self) -> PathBuf {
        temp_path_in(&self.dir)
    }

    /// The length of the spooled file `name`, if there is one.
    pub fn length_of(&self, name: &str) -> Option<u64> {
        let metadata = std::fs::metadata(self.dir.join(name)).ok()?;
        metadata.is_file().then_some(metadata.len())
    }

    /// The complete segments in the spool.
    pub fn segments(&self, size: SegmentSize) -> io::Result<BTreeSet<WalSegment>> {
        let mut segments = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(segment) = entry.file_name().to_str().and_then(|name| canonical_segment(name, size)) {
                segments.insert(segment);
            }
        }
        Ok(segments)
    }

    /// Removes segments before `current` (recovery has moved past them, on any timeline) and
    /// temporary files abandoned by killed processes. Best effort: a failure only leaves clutter.
    pub fn tidy(&self, current: WalSegment, size: SegmentSize) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let remove = match canonical_segment(name, size) {
                Some(segment) => segment.number < current.number,
                None => name.starts_with(TEMP_PREFIX) && is_older_than(&entry.path(), STALE_TEMP_AGE),
            };
            if remove && let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::debug!(%error, "could not remove {} from the spool", entry.path().display());
            }
        }
    }

    /// Moves the spooled `segment` to `target`. `Ok(false)` when the spool does not hold it (or
    /// holds a file of the wrong length, which is removed).
    pub fn take(&self, segment: WalSegment, size: SegmentSize, target: &Path) -> io::Result<bool> {
        let source = self.path_of(segment, size);
        match std::fs::metadata(&source) {
            Ok(metadata) if metadata.is_file() && metadata.len() == u64::from(size.bytes()) => {}
            Ok(_) => {
                tracing::warn!("spooled {} has the wrong size; removing it and downloading again", source.display());
                let _ = std::fs::remove_file(&source);
                return Ok(false);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        }
        match std::fs::rename(&source, target) {
            Ok(()) => Ok(true),
            // Another process served it a moment ago.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            // A spool_dir on another filesystem.
            Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
                copy_then_rename(&source, target).map(|()| true)
            }
            Err(error) => Err(error),
        }
    }
}

/// Moves `source` to `target` across filesystems: a copy beside the target, renamed into place
/// (so `target` never holds part of a file), then the source removed.
fn copy_then_rename(source: &Path, target: &Path) -> io::Result<()> {
    let parent = target.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temporary = TempPath::new(temp_path_in(parent));
    std::fs::copy(source, temporary.path())?;
    std::fs::rename(temporary.path(), target)?;
    temporary.persist();
    let _ = std::fs::remove_file(source);
    Ok(())
}

/// A segment name written exactly as lifeboat writes it (so `a` and `A` never both count).
fn canonical_segment(name: &str, size: SegmentSize) -> Option<WalSegment> {
    WalSegment::parse(name, size).ok().filter(|segment| segment.name(size) == name)
}

fn is_older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// `<dir>/.lifeboat-tmp-<random>`.
pub fn temp_path_in(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}", hex::encode(random_array::<8>())))
}

/// A temporary file that is removed when dropped unless [`TempPath::persist`] was called (after
/// it was renamed into place), so an error or a cancelled task never leaves one behind.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed away: nothing to remove.
    pub fn persist(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::lsn::Timeline;

    fn segment(number: u64) -> WalSegment {
        WalSegment::new(Timeline::FIRST, number)
    }

    /// A spool with 1 MiB segments (the smallest size keeps the test light).
    fn spool_with(numbers: &[u64]) -> (tempfile::TempDir, Spool, SegmentSize) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), "repository-a/main").unwrap();
        let size = SegmentSize::new(1024 * 1024).unwrap();
        for &number in numbers {
            std::fs::write(spool.path_of(segment(number), size), vec![7u8; size.bytes() as usize]).unwrap();
        }
        (dir, spool, size)
    }

    #[test]
    fn serves_whole_segments_by_rename_and_only_once() {
        let (dir, spool, size) = spool_with(&[5, 6]);
        let target = dir.path().join("RECOVERYXLOG");
        assert!(spool.take(segment(5), size, &target).unwrap());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), u64::from(size.bytes()));
        assert!(!spool.take(segment(5), size, &target).unwrap(), "served twice");
        assert!(!spool.take(segment(9), size, &target).unwrap());
        assert_eq!(spool.segments(size).unwrap().into_iter().collect::<Vec<_>>(), vec![segment(6)]);
    }

    #[test]
    fn a_file_of_the_wrong_length_is_never_served() {
        let (dir, spool, size) = spool_with(&[]);
        std::fs::write(spool.path_of(segment(3), size), b"short").unwrap();
        let target = dir.path().join("RECOVERYXLOG");
        assert!(!spool.take(segment(3), size, &target).unwrap());
        assert!(!target.exists());
        assert!(!spool.path_of(segment(3), size).exists(), "the damaged file should be removed");
    }

    #[test]
    fn tidy_removes_what_recovery_has_passed_and_abandoned_downloads() {
        let (_dir, spool, size) = spool_with(&[1, 2, 3, 4]);
        let other_timeline = WalSegment::new(Timeline::new(2).unwrap(), 2);
        std::fs::write(spool.path_of(other_timeline, size), b"x").unwrap();
        let fresh = spool.temp_path();
        std::fs::write(&fresh, b"in progress").unwrap();
        let stale = spool.temp_path();
        std::fs::write(&stale, b"abandoned").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(long_ago).unwrap();
        std::fs::write(spool.dir().join("notes.txt"), b"not ours").unwrap();

        spool.tidy(segment(3), size);
        let left: Vec<WalSegment> = spool.segments(size).unwrap().into_iter().collect();
        assert_eq!(left, vec![segment(3), segment(4)]);
        assert!(fresh.exists(), "a download in progress must not be removed");
        assert!(!stale.exists());
        assert!(spool.dir().join("notes.txt").exists());
    }

    #[test]
    fn a_spool_never_serves_segments_of_another_origin() {
        let (dir, spool, size) = spool_with(&[4, 5]);
        let same = Spool::open(spool.dir(), "repository-a/main").unwrap();
        assert_eq!(same.segments(size).unwrap().len(), 2);
        let other = Spool::open(spool.dir(), "repository-b/main").unwrap();
        assert!(other.segments(size).unwrap().is_empty(), "segments of another repository must go");
        assert!(!other.take(segment(4), size, &dir.path().join("RECOVERYXLOG")).unwrap());
        // A spool without an origin (made by hand, or by an older lifeboat) is emptied too.
        std::fs::remove_file(spool.dir().join(ORIGIN_FILE)).unwrap();
        std::fs::write(spool.path_of(segment(6), size), vec![0u8; size.bytes() as usize]).unwrap();
        let reopened = Spool::open(spool.dir(), "repository-b/main").unwrap();
        assert!(reopened.segments(size).unwrap().is_empty());
    }

    #[test]
    fn a_spool_never_serves_segments_of_an_earlier_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let size = SegmentSize::new(1024 * 1024).unwrap();
        let spool = Spool::open_in_boot(&path, "repository-a/main", Some("boot-1"), None).unwrap();
        assert!(!spool.durable(), "a known boot id makes fsync unnecessary");
        std::fs::write(spool.path_of(segment(4), size), vec![0u8; size.bytes() as usize]).unwrap();
        let same = Spool::open_in_boot(&path, "repository-a/main", Some("boot-1"), None).unwrap();
        assert_eq!(same.segments(size).unwrap().len(), 1);
        // After a reboot a file renamed into place may lack its data (it was not fsynced): it goes.
        let rebooted = Spool::open_in_boot(&path, "repository-a/main", Some("boot-2"), None).unwrap();
        assert!(rebooted.segments(size).unwrap().is_empty());
        std::fs::write(rebooted.path_of(segment(5), size), vec![0u8; size.bytes() as usize]).unwrap();
        let unknown = Spool::open_in_boot(&path, "repository-a/main", None, None).unwrap();
        assert!(unknown.durable(), "without a boot id, spooled files must be fsynced");
        assert!(unknown.segments(size).unwrap().is_empty());
    }

    #[test]
    fn moving_across_filesystems_copies_then_renames() {
        let (dir, spool, size) = spool_with(&[7]);
        let source = spool.path_of(segment(7), size);
        let target = dir.path().join("RECOVERYXLOG");
        copy_then_rename(&source, &target).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().len(), u64::from(size.bytes()));
        assert!(!source.exists());
        let temporary: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        assert!(temporary.is_empty());
    }

    #[test]
    fn temporary_files_vanish_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = TempPath::new(temp_path_in(dir.path()));
        std::fs::write(dropped.path(), b"x").unwrap();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists());
        let kept = TempPath::new(temp_path_in(dir.path()));
        std::fs::write(kept.path(), b"x").unwrap();
        let path = kept.path().to_owned();
        kept.persist();
        assert!(path.exists());
    }
}
