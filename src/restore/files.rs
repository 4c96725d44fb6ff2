//! Writing a backup's files into the target directory: directories and links first, then every
//! data object streamed by a pool of workers (download, authenticate, decompress) and cut into the
//! files it holds, each file checked against the manifest's BLAKE3 (G3).
//!
//! - A bundle is read from its start and only the files that are wanted are written; an object
//!   none of whose files are wanted is not downloaded at all (delta restores).
//! - A large file stored in parts is written by several workers at once, each at its own offset;
//!   each part yields the BLAKE3 chaining value of its subtree and the last part to finish merges
//!   them into the file's hash, exactly as the backup computed it.
//! - An incremental backup's files are pieces of objects of several backups of its chain (its
//!   manifest names them, [`Location::backup`]): each object is read once, from whichever backup
//!   holds it, and its pieces written where they go. A file's pieces start at multiples of a
//!   power of two (the 8 KiB block, or the part size); each such leaf is hashed on its own and the
//!   leaves merged into the file's hash, so the check is the same as for a full backup.
//! - Files are created with their recorded mode and get their recorded modification time; when
//!   lifeboat runs as root everything is handed to the owner the server runs as.
//! - Nothing is fsynced file by file: the caller syncs each filesystem once at the end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use blake3::hazmat::{ChainingValue, HasherExt};

use super::{CONTROL_FILE_PENDING, RestoreError};
use crate::backup::copy::{CONTROL_FILE, merge_parts};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::format::backup_manifest::{BackupManifest, EntryKind, FileEntry, ManifestError};
use crate::object::ObjectError;
use crate::repository::Repository;

/// Bytes per read from an object's stream.
const BLOCK: usize = 1024 * 1024;

/// Who owns what the restore creates: `None` keeps the current user (lifeboat is not root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Where the manifest's paths go on this host.
#[derive(Debug, Clone)]
pub struct Destination {
    pub pgdata: PathBuf,
    /// Tablespace oid → the directory its `pg_tblspc/<oid>` link points to.
    pub tablespaces: BTreeMap<u32, PathBuf>,
    pub owner: Option<Owner>,
}

impl Destination {
    /// The local path of a manifest path. Files of tablespaces are reached through the
    /// `pg_tblspc/<oid>` link, which is created before them.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.pgdata.join(relative)
    }

    /// Where a file's bytes are written: its own path, except `global/pg_control`, which waits
    /// under a temporary name until the whole restore is durable.
    pub fn write_path(&self, entry: &FileEntry) -> PathBuf {
        if entry.path == CONTROL_FILE { self.path(CONTROL_FILE_PENDING) } else { self.path(&entry.path) }
    }

    /// Hands `path` to the owner (not following links).
    pub fn chown(&self, path: &Path) -> io::Result<()> {
        match self.owner {
            Some(owner) => std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)),
            None => Ok(()),
        }
    }
}

/// Counts for progress reports, read by whoever runs the restore while it writes.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    /// The bytes this run is to write; 0 until the plan is made.
    pub bytes_total: AtomicU64,
}

impl Progress {
    /// Starts a new count of `bytes_total` bytes.
    pub fn restart(&self, bytes_total: u64) {
        self.bytes.store(0, Ordering::Relaxed);
        self.files.store(0, Ordering::Relaxed);
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
    }
}

/// A manifest path is relative, `/`-separated and never climbs: anything else is refused before
/// it is joined to a local directory.
pub fn check_path(path: &str) -> Result<(), RestoreError> {
    let bad = Path::new(path).components().any(|component| !matches!(component, Component::Normal(_)));
    if path.is_empty() || bad || path.contains('\0') {
        return Err(RestoreError::BadManifest { detail: format!("the manifest names an unsafe path {path:?}") });
    }
    Ok(())
}

/// Creates the directories and links of the manifest (existing directories are kept, with their
/// mode corrected). Tablespace links point to their (possibly remapped) locations, which are
/// created as needed.
pub fn create_tree(manifest: &BackupManifest, destination: &Destination) -> Result<(), RestoreError> {
    let io_error = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| RestoreError::Write { path, action, source }
    };
    for entry in &manifest.files {
        check_path(&entry.path)?;
        let path = destination.path(&entry.path);
        match entry.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => fs::create_dir(&path).map_err(io_error(&path, "create directory"))?,
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode & 0o7777))
                    .map_err(io_error(&path, "set the mode of"))?;
                destination.chown(&path).map_err(io_error(&path, "change the owner of"))?;
            }
            EntryKind::Symlink => {
                let target = link_target(entry, destination)?;
                if let Some(oid) = tablespace_oid(&entry.path) {
                    let location = destination.tablespaces.get(&oid).cloned().unwrap_or_else(|| target.clone());
                    create_tablespace_dir(&location, destination)?;
                }
                match fs::read_link(&path) {
                    Ok(existing) if existing == target => {}
                    _ => std::os::unix::fs::symlink(&target, &path).map_err(io_error(&path, "create link"))?,
                }
                destination.chown(&path).map_err(io_error(&path, "change the owner of"))?;
            }
            EntryKind::File => {}
        }
    }
    Ok(())
}

/// The target of a link entry: the remapped location for a tablespace link, else as recorded.
fn link_target(entry: &FileEntry, destination: &Destination) -> Result<PathBuf, RestoreError> {
    if let Some(oid) = tablespace_oid(&entry.path)
        && let Some(location) = destination.tablespaces.get(&oid)
    {
        return Ok(location.clone());
    }
    entry
        .target
        .as_ref()
        .map(PathBuf::from)
        .ok_or_else(|| RestoreError::BadManifest { detail: format!("the link {} has no target", entry.path) })
}

/// `Some(oid)` for `pg_tblspc/<oid>`.
pub fn tablespace_oid(path: &str) -> Option<u32> {
    path.strip_prefix("pg_tblspc/").filter(|rest| !rest.contains('/')).and_then(|oid| oid.parse().ok())
}

fn create_tablespace_dir(location: &Path, destination: &Destination) -> Result<(), RestoreError> {
    if location.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(location).map_err(|source| RestoreError::Write {
        path: location.to_path_buf(),
        action: "create the tablespace directory",
        source,
    })?;
    fs::set_permissions(location, fs::Permissions::from_mode(0o700)).map_err(|source| RestoreError::Write {
        path: location.to_path_buf(),
        action: "set the mode of",
        source,
    })?;
    destination.chown(location).map_err(|source| RestoreError::Write {
        path: location.to_path_buf(),
        action: "change the owner of",
        source,
    })
}

/// One run of a file's bytes inside an object's plaintext.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Index into the manifest's files.
    file: usize,
    /// Where the bytes go in the file.
    file_offset: u64,
    /// Where they are in the object.
    object_offset: u64,
    length: u64,
    /// The file's leaf size ([`leaf_size`]), worked out once per file: it walks all the file's
    /// locations, which for a file of a long chain are tens of thousands.
    leaf: Option<u64>,
}

/// One object to read, and the pieces of wanted files in it, by object offset.
#[derive(Debug, Clone)]
struct Job {
    /// The backup whose directory holds it.
    backup: BackupId,
    object: String,
    size: u64,
    pieces: Vec<Piece>,
}

/// The size of the leaves a file of several pieces is hashed in: the largest power of two that
/// every piece's start is a multiple of (the part size for a full backup's large file, usually
/// the 8 KiB block for an incremental's). `None` for a file of one piece, hashed whole.
fn leaf_size(entry: &FileEntry) -> Option<u64> {
    let mut offset = 0u64;
    let mut starts = 0u64;
    for location in entry.locations.iter().take(entry.locations.len().saturating_sub(1)) {
        offset += location.length;
        starts |= offset;
    }
    (entry.locations.len() > 1).then(|| 1u64 << starts.trailing_zeros().min(63))
}

/// The plaintext sizes of the objects a manifest's files refer to: its own and those of the
/// backups of its chain (read from their manifests, which must all still exist).
async fn object_sizes(
    repository: &Repository,
    layout: &ClusterLayout,
    manifest: &BackupManifest,
) -> Result<HashMap<(BackupId, String), u64>, RestoreError> {
    let mut sizes = HashMap::new();
    for id in manifest.chain() {
        let objects = if id == manifest.id {
            manifest.objects.clone()
        } else {
            match BackupManifest::read(repository, layout, id).await {
                Ok(earlier) => earlier.objects,
                Err(ManifestError::NotFound { .. }) => {
                    return Err(RestoreError::BadManifest {
                        detail: format!(
                            "the incremental backup {} needs backup {id} of its chain, which is gone; restore \
                             an older or newer backup whose chain is whole (`lifeboat list` shows chains)",
                            manifest.id
                        ),
                    });
                }
                Err(error) => {
                    return Err(RestoreError::BadManifest {
                        detail: format!("the incremental backup {} needs backup {id}: {error}", manifest.id),
                    });
                }
            }
        };
        sizes.extend(objects.into_iter().map(|object| ((id, object.key), object.size)));
    }
    Ok(sizes)
}

/// The chaining values of the leaves of files stored in several pieces, as pieces finish.
#[derive(Debug, Default)]
struct PartHashes {
    values: HashMap<usize, LeafValues>,
}

#[derive(Debug)]
struct LeafValues {
    leaves: Vec<Option<ChainingValue>>,
    missing: usize,
}

/// Writes the regular files whose indexes are in `wanted` (every file for a fresh restore), with
/// `workers` objects in flight. Empty files are created directly.
pub async fn write_files(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    manifest: Arc<BackupManifest>,
    destination: Arc<Destination>,
    wanted: &[usize],
    workers: u32,
    progress: Arc<Progress>,
) -> Result<(), RestoreError> {
    read_objects(repository, layout, manifest, Some(destination), wanted, workers, progress).await
}

/// Reads every object of the backup, authenticating it and checking every file against the
/// manifest's hash, without writing anything (`lifeboat verify --integrity-only`).
pub async fn check_files(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    manifest: Arc<BackupManifest>,
    workers: u32,
    progress: Arc<Progress>,
) -> Result<(), RestoreError> {
    let every_file: Vec<usize> =
        (0..manifest.files.len()).filter(|&index| manifest.files[index].kind == EntryKind::File).collect();
    read_objects(repository, layout, manifest, None, &every_file, workers, progress).await
}

/// Sets its flag when dropped: the blocking workers see it and stop, so a cancelled restore (the
/// future dropped on Ctrl-C or a timeout) does not go on writing into a directory being removed.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The pool of object workers; files go to `destination`, or only get hashed when it is `None`.
async fn read_objects(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    manifest: Arc<BackupManifest>,
    destination: Option<Arc<Destination>>,
    wanted: &[usize],
    workers: u32,
    progress: Arc<Progress>,
) -> Result<(), RestoreError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let object_sizes = object_sizes(&repository, layout, &manifest).await?;
    let mut jobs: BTreeMap<(BackupId, &str), Job> = BTreeMap::new();
    for &index in wanted {
        let entry = &manifest.files[index];
        if entry.locations.is_empty() {
            create_empty(entry, destination.as_deref())?;
            progress.files.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut file_offset = 0;
        let leaf = leaf_size(entry);
        for location in &entry.locations {
            let backup = location.backup.unwrap_or(manifest.id);
            let Some(&size) = object_sizes.get(&(backup, location.object.clone())) else {
                return Err(RestoreError::BadManifest {
                    detail: format!(
                        "{} refers to object {} of backup {backup}, which that backup's manifest does not list",
                        entry.path, location.object
                    ),
                });
            };
            jobs.entry((backup, location.object.as_str()))
                .or_insert_with(|| Job { backup, object: location.object.clone(), size, pieces: Vec::new() })
                .pieces
                .push(Piece {
                    file: index,
                    file_offset,
                    object_offset: location.offset,
                    length: location.length,
                    leaf,
                });
            file_offset += location.length;
        }
    }
    let mut jobs: Vec<Job> = jobs.into_values().collect();
    for job in &mut jobs {
        job.pieces.sort_by_key(|piece| piece.object_offset);
    }
    // Largest first, so no worker is left alone with a big object at the end.
    jobs.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| (a.backup, &a.object).cmp(&(b.backup, &b.object))));

    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let parts = Arc::new(Mutex::new(PartHashes::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let repository = repository.clone();
        let layout = layout.clone();
        let manifest = manifest.clone();
        let destination = destination.clone();
        let progress = progress.clone();
        let parts = parts.clone();
        let cancelled = cancelled.clone();
        tasks.spawn(async move {
            loop {
                let Some(job) = queue.lock().expect("queue lock").pop_front() else {
                    return Ok(());
                };
                let key = layout.backup_object(job.backup, &job.object);
                let stream = repository.get(&key).await.map_err(|source| RestoreError::Repository { source })?;
                let context = JobContext {
                    manifest: manifest.clone(),
                    destination: destination.clone(),
                    progress: progress.clone(),
                    parts: parts.clone(),
                    key: key.to_string(),
                    cancelled: cancelled.clone(),
                };
                tokio::task::spawn_blocking(move || context.run(&job, tokio_util::io::SyncIoBridge::new(stream)))
                    .await
                    .expect("restore workers do not panic")?;
            }
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                if first_error.is_none() {
                    first_error = Some(error);
                    // Stop handing out work; running jobs finish or fail on their own.
                    queue.lock().expect("queue lock").clear();
                }
            }
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// An empty file has no object: it is created (or, when only checking, its recorded hash is
/// compared with the hash of nothing).
fn create_empty(entry: &FileEntry, destination: Option<&Destination>) -> Result<(), RestoreError> {
    let Some(destination) = destination else {
        return check_hash(entry, blake3::hash(b""), "(no object: an empty file)");
    };
    let path = destination.write_path(entry);
    let file = open_for_writing(&path, entry.mode, true)?;
    finish_file(&file, &path, entry, destination)
}

fn check_hash(entry: &FileEntry, hash: blake3::Hash, key: &str) -> Result<(), RestoreError> {
    let expected = entry.blake3.as_deref().unwrap_or("");
    if hash.to_hex().as_str() != expected {
        return Err(RestoreError::HashMismatch {
            path: entry.path.clone(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            actual: hash.to_hex().to_string(),
        });
    }
    Ok(())
}

fn open_for_writing(path: &Path, mode: u32, truncate: bool) -> Result<File, RestoreError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(mode & 0o7777)
        .open(path)
        .map_err(|source| RestoreError::Write { path: path.to_path_buf(), action: "create", source })
}

/// Sets the recorded mode (umask may have trimmed it), modification time and owner.
fn finish_file(file: &File, path: &Path, entry: &FileEntry, destination: &Destination) -> Result<(), RestoreError> {
    let write_error = |action: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| RestoreError::Write { path, action, source }
    };
    file.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777)).map_err(write_error("set the mode of"))?;
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(entry.mtime).unwrap_or(0));
    file.set_times(fs::FileTimes::new().set_modified(mtime)).map_err(write_error("set the time of"))?;
    destination.chown(path).map_err(write_error("change the owner of"))
}

/// What a worker needs while it writes one object's files.
struct JobContext {
    manifest: Arc<BackupManifest>,
    /// `None`: the files are only hashed.
    destination: Option<Arc<Destination>>,
    progress: Arc<Progress>,
    parts: Arc<Mutex<PartHashes>>,
    key: String,
    cancelled: Arc<AtomicBool>,
}

impl JobContext {
    fn run(&self, job: &Job, mut stream: impl Read) -> Result<(), RestoreError> {
        let mut buffer = vec![0u8; BLOCK];
        let mut position = 0u64;
        // The file the last piece went to, kept open for the next piece of the same file.
        let mut open: Option<(usize, PathBuf, File)> = None;
        for piece in &job.pieces {
            self.skip(&mut stream, piece.object_offset - position, &mut buffer)?;
            position = piece.object_offset;
            self.write_piece(&mut stream, piece, &mut buffer, &mut open)?;
            position += piece.length;
        }
        // Read to the end: the last chunk's authentication and the object's length are checked there.
        let mut rest = 0u64;
        loop {
            let read = self.read(&mut stream, &mut buffer)?;
            if read == 0 {
                break;
            }
            rest += read as u64;
        }
        if position + rest != job.size {
            return Err(RestoreError::Damaged {
                key: self.key.clone(),
                detail: format!("it holds {} bytes, the manifest says {}", position + rest, job.size),
            });
        }
        Ok(())
    }

    fn read(&self, stream: &mut impl Read, buffer: &mut [u8]) -> Result<usize, RestoreError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(RestoreError::Cancelled);
        }
        loop {
            match stream.read(buffer) {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Only what fails authentication is damage; a read that fails (the storage or
                    // the network, past its retries) says nothing about the backup.
                    return Err(match ObjectError::from_io(&error) {
                        Some(object_error) => {
                            RestoreError::Damaged { key: self.key.clone(), detail: object_error.to_string() }
                        }
                        None => RestoreError::Unreadable { key: self.key.clone(), detail: error.to_string() },
                    });
                }
            }
        }
    }

    fn skip(&self, stream: &mut impl Read, mut length: u64, buffer: &mut [u8]) -> Result<(), RestoreError> {
        while length > 0 {
            let want = buffer.len().min(usize::try_from(length).unwrap_or(usize::MAX));
            let read = self.read(stream, &mut buffer[..want])?;
            if read == 0 {
                return Err(self.too_short());
            }
            length -= read as u64;
        }
        Ok(())
    }

    fn too_short(&self) -> RestoreError {
        RestoreError::Damaged {
            key: self.key.clone(),
            detail: "it ends before the bytes the manifest places in it".into(),
        }
    }

    fn write_piece(
        &self,
        stream: &mut impl Read,
        piece: &Piece,
        buffer: &mut [u8],
        open: &mut Option<(usize, PathBuf, File)>,
    ) -> Result<(), RestoreError> {
        let entry = &self.manifest.files[piece.file];
        let leaf = piece.leaf;
        if let Some(destination) = &self.destination
            && open.as_ref().is_none_or(|(file, ..)| *file != piece.file)
        {
            let path = destination.write_path(entry);
            let file = open_for_writing(&path, entry.mode, leaf.is_none())?;
            *open = Some((piece.file, path, file));
        }
        let mut hashing = match leaf {
            None => Hashing::Whole(Box::new(blake3::Hasher::new())),
            Some(leaf) => Hashing::Leaves { leaf, done: Vec::new(), current: None },
        };
        let mut done = 0u64;
        while done < piece.length {
            let want = buffer.len().min(usize::try_from(piece.length - done).unwrap_or(usize::MAX));
            let read = self.read(stream, &mut buffer[..want])?;
            if read == 0 {
                return Err(self.too_short());
            }
            if let Some((_, path, file)) = open.as_ref().filter(|_| self.destination.is_some()) {
                file.write_all_at(&buffer[..read], piece.file_offset + done).map_err(|source| RestoreError::Write {
                    path: path.clone(),
                    action: "write",
                    source,
                })?;
            }
            hashing.update(&buffer[..read], piece.file_offset + done);
            done += read as u64;
            self.progress.bytes.fetch_add(read as u64, Ordering::Relaxed);
        }
        let hash = match hashing {
            Hashing::Whole(hasher) => Some(hasher.finalize()),
            Hashing::Leaves { leaf, done, current } => {
                let done = done.into_iter().chain(current.map(|(index, hasher)| (index, hasher.finalize_non_root())));
                self.leaves_finished(entry, piece.file, leaf, done)
            }
        };
        if let Some(hash) = hash {
            check_hash(entry, hash, &self.key)?;
            if let (Some((_, path, file)), Some(destination)) = (open.as_ref(), &self.destination) {
                finish_file(file, path, entry, destination)?;
            }
            self.progress.files.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Records the values of leaves written; the file's hash once every leaf is in.
    fn leaves_finished(
        &self,
        entry: &FileEntry,
        file: usize,
        leaf: u64,
        done: impl Iterator<Item = (u64, ChainingValue)>,
    ) -> Option<blake3::Hash> {
        let size = entry.size.unwrap_or(0);
        let mut parts = self.parts.lock().expect("part hashes lock");
        let values = parts.values.entry(file).or_insert_with(|| {
            let count = size.div_ceil(leaf) as usize;
            LeafValues { leaves: vec![None; count], missing: count }
        });
        for (index, value) in done {
            if let Some(slot) = values.leaves.get_mut(index as usize)
                && slot.replace(value).is_none()
            {
                values.missing -= 1;
            }
        }
        if values.missing > 0 {
            return None;
        }
        let values = parts.values.remove(&file).expect("just looked up");
        let leaves: Vec<(u64, ChainingValue)> = values
            .leaves
            .into_iter()
            .enumerate()
            .map(|(index, value)| (leaf.min(size - index as u64 * leaf), value.expect("every leaf is in")))
            .collect();
        Some(merge_parts(&leaves, leaf))
    }
}

/// How a piece is hashed: a whole file at once, or leaf by leaf.
enum Hashing {
    Whole(Box<blake3::Hasher>),
    Leaves {
        leaf: u64,
        /// Finished leaves: index and value.
        done: Vec<(u64, ChainingValue)>,
        /// The leaf being hashed.
        current: Option<(u64, Box<blake3::Hasher>)>,
    },
}

impl Hashing {
    /// Hashes `data`, which starts at `file_offset` of its file.
    fn update(&mut self, mut data: &[u8], mut file_offset: u64) {
        match self {
            Hashing::Whole(hasher) => {
                hasher.update(data);
            }
            Hashing::Leaves { leaf, done, current } => {
                while !data.is_empty() {
                    let index = file_offset / *leaf;
                    let (_, hasher) = current.get_or_insert_with(|| {
                        let mut hasher = blake3::Hasher::new();
                        hasher.set_input_offset(index * *leaf);
                        (index, Box::new(hasher))
                    });
                    let room = (index + 1) * *leaf - file_offset;
                    let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                    hasher.update(&data[..take]);
                    data = &data[take..];
                    file_offset += take as u64;
                    if file_offset.is_multiple_of(*leaf) {
                        let (index, hasher) = current.take().expect("a leaf is being hashed");
                        done.push((index, hasher.finalize_non_root()));
                    }
                }
            }
        }
    }
}

/// BLAKE3 of a local file, for delta restores.
pub fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..read]);
    }
}
