//! Copying the walked files into the repository: planning objects, and the parallel workers.
//!
//! - Files under 1 MiB are concatenated into bundles of about 16 MiB, so a cluster's thousands
//!   of small catalog files cost a few dozen puts instead of thousands.
//! - Files from 1 MiB to 64 MiB get an object each.
//! - Larger files (relation segments reach 1 GiB) are cut into 64 MiB parts, an object each, so
//!   one large table is compressed on every core instead of one. The file's BLAKE3 is still the
//!   hash of the whole file: each part's reader computes the BLAKE3 chaining value of its subtree
//!   (parts are aligned on a power of two, so each is a subtree of the file's hash tree) and the
//!   values are merged afterwards, exactly as BLAKE3 itself would.
//! - Empty files get no object at all.
//!
//! Jobs run largest first, so no worker is left alone with a big object at the end. Each worker
//! handles one object at a time, so at most `workers` objects are in flight. For each object a
//! blocking thread reads the files (a bounded channel keeps it at most a few MiB ahead) and hashes
//! them, and [`Repository::put`] compresses, encrypts and stores the stream on its own threads.
//!
//! Relation files of at least 1 MiB are also hashed block by block (the chaining value of each
//! 8 KiB block, [`super::blockmap`]), for the block map an incremental backup builds on; their
//! parts' values are merged from the blocks'. An incremental backup's changed blocks are read
//! into objects of their own ([`Content::Blocks`]).
//!
//! Files change while they are copied; WAL replay repairs that. A whole file is copied up to the
//! size it has when opened, and what was read is recorded. A part of a large file is copied up to
//! the size the walk saw and padded with zeros if the file shrank meanwhile (what `pg_basebackup`
//! does too), so the parts always fit together. A file gone by the time it is opened is skipped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::BackupError;
use super::blockmap::{self, BLOCK_SIZE, BlockHasher, SpilledValues, ValueSpill};
use super::changes::parse_relation_path;
use super::walk::{Walked, WalkedKind};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::format::backup_manifest::{DATA_DIR, Location, ObjectEntry};
use crate::repository::Repository;
use crate::storage::PutMode;

/// Files smaller than this are bundled.
pub const BUNDLE_FILE_LIMIT: u64 = 1024 * 1024;
/// A bundle is closed once it holds this much.
pub const BUNDLE_TARGET: u64 = 16 * 1024 * 1024;
/// Files larger than this are cut into parts of this size. A power of two (a BLAKE3 subtree).
pub const PART_SIZE: u64 = 64 * 1024 * 1024;
/// Bytes per read, and per block handed to the sealing pipeline.
const READ_BLOCK: u64 = 1024 * 1024;
/// Blocks buffered between a reader thread and its upload.
const READ_AHEAD: usize = 3;

/// The file that is copied after all others: for a backup taken from a standby, recovery reads
/// the end of the backup from its `minRecoveryPoint`, which must be no older than the data files.
pub const CONTROL_FILE: &str = "global/pg_control";

/// One object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Relative to the backup's directory: `data/000001`.
    pub object: String,
    pub content: Content,
    /// What the walk saw, for ordering.
    pub bytes: u64,
}

/// What an object holds. Files are indexes into the walked entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// One whole file: its hash is the object's.
    File(usize),
    /// Small files, concatenated in this order.
    Bundle(Vec<usize>),
    /// `length` bytes of a large file from `offset` (a multiple of [`PART_SIZE`]).
    Part { file: usize, offset: u64, length: u64 },
    /// Runs of changed blocks of relation files (an incremental backup), concatenated in this order.
    Blocks(Vec<BlockRun>),
}

/// `count` blocks of a file from block `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRun {
    pub file: usize,
    pub first: u32,
    pub count: u32,
}

/// Whether the copy hashes a file block by block for the block map: a relation file of a mapped size.
pub fn maps_blocks(entry: &Walked) -> bool {
    matches!(entry.kind, WalkedKind::File { size } if blockmap::is_mapped_size(size))
        && parse_relation_path(&entry.path).is_some()
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Run in parallel, in this order.
    pub jobs: Vec<Job>,
    /// Run after every other job: the control file.
    pub last: Option<Job>,
    /// Files that were empty when walked: recorded without reading.
    pub empty: Vec<usize>,
    /// Bytes the walk saw in all files.
    pub bytes: u64,
}

/// Groups the walked files into objects; files larger than `part_size` (a power of two of at
/// least [`BUNDLE_FILE_LIMIT`], normally [`PART_SIZE`]) are cut into parts.
pub fn plan(entries: &[Walked], part_size: u64) -> Plan {
    plan_selected(entries, part_size, |_| true, 1)
}

/// [`plan`] for the files whose index `selected` accepts, numbering objects from `first_object`.
pub fn plan_selected(
    entries: &[Walked],
    part_size: u64,
    selected: impl Fn(usize) -> bool,
    first_object: usize,
) -> Plan {
    assert!(part_size.is_power_of_two() && part_size >= BUNDLE_FILE_LIMIT, "part size {part_size}");
    let mut plan = Plan::default();
    let mut large: Vec<(Content, u64)> = Vec::new();
    let mut bundles: Vec<(Content, u64)> = Vec::new();
    let mut bundle: (Vec<usize>, u64) = (Vec::new(), 0);
    let mut control = None;
    for (index, entry) in entries.iter().enumerate() {
        let WalkedKind::File { size } = entry.kind else { continue };
        if !selected(index) {
            continue;
        }
        plan.bytes += size;
        if entry.path == CONTROL_FILE {
            control = Some((index, size));
        } else if size == 0 {
            plan.empty.push(index);
        } else if size > part_size {
            for offset in (0..size).step_by(part_size as usize) {
                let length = part_size.min(size - offset);
                large.push((Content::Part { file: index, offset, length }, length));
            }
        } else if size >= BUNDLE_FILE_LIMIT {
            large.push((Content::File(index), size));
        } else {
            bundle.0.push(index);
            bundle.1 += size;
            if bundle.1 >= BUNDLE_TARGET {
                let (files, bytes) = std::mem::take(&mut bundle);
                bundles.push((Content::Bundle(files), bytes));
            }
        }
    }
    if !bundle.0.is_empty() {
        bundles.push((Content::Bundle(bundle.0), bundle.1));
    }
    // Largest first; the sort is stable, so the parts of a file stay in order.
    large.sort_by_key(|job| std::cmp::Reverse(job.1));
    let mut number = first_object;
    let mut name = || {
        number += 1;
        object_name(number - 1)
    };
    plan.jobs =
        large.into_iter().chain(bundles).map(|(content, bytes)| Job { object: name(), content, bytes }).collect();
    plan.last = control.map(|(index, size)| Job { object: name(), content: Content::File(index), bytes: size });
    plan
}

/// The key of data object number `number`, relative to the backup's directory: `data/000001`.
pub fn object_name(number: usize) -> String {
    format!("{DATA_DIR}/{number:06}")
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Gone when the copy reached it.
    Vanished,
    Copied {
        size: u64,
        blake3: blake3::Hash,
        mode: u32,
        mtime: i64,
        /// Empty for an empty file.
        locations: Vec<Location>,
        /// Where the chaining value of each block is, in block order, for a file whose blocks
        /// are mapped.
        blocks: Option<Vec<SpilledValues>>,
    },
}

/// The result of one job: its object, and what it read.
#[derive(Debug)]
pub struct JobOutcome {
    pub object: ObjectEntry,
    pub reads: Vec<(usize, FileRead)>,
}

/// What one job read of one file.
#[derive(Debug, Clone)]
pub enum FileRead {
    Vanished,
    /// A whole file (alone or in a bundle).
    Whole {
        location: Location,
        blake3: blake3::Hash,
        mode: u32,
        mtime: i64,
        blocks: Option<SpilledValues>,
    },
    /// A part of a large file, from `file_offset`: its subtree's chaining value.
    Part {
        location: Location,
        file_offset: u64,
        chaining_value: ChainingValue,
        mode: u32,
        mtime: i64,
        blocks: Option<SpilledValues>,
    },
    /// A run of blocks from block `first`, with each block's chaining value.
    Blocks {
        first: u32,
        location: Location,
        values: Vec<ChainingValue>,
        mode: u32,
        mtime: i64,
    },
}

/// Bytes copied so far, for progress reports, and how many the copy expects.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    /// The size of the files to copy as the walk found them; 0 until the walk is done (files may
    /// still grow or shrink while they are copied).
    pub bytes_total: AtomicU64,
}

/// Copies jobs into one backup's directory.
#[derive(Clone)]
pub struct Copier {
    pub repository: Arc<Repository>,
    pub layout: ClusterLayout,
    pub id: BackupId,
    pub entries: Arc<Vec<Walked>>,
    pub progress: Arc<Progress>,
    /// Where the values of mapped files' blocks go.
    pub spill: Arc<ValueSpill>,
}

impl Copier {
    /// Runs `jobs` on `workers` workers. The first failure stops the others and is returned:
    /// they take no new job and finish (or fail) the one they hold. They are not aborted: an
    /// object write that a backend finishes on a blocking thread cannot be called back, and the
    /// failed backup's cleanup must see every object it wrote, so nothing may still be landing.
    pub async fn run(&self, jobs: Vec<Job>, workers: u32) -> Result<Vec<JobOutcome>, BackupError> {
        let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let queue = queue.clone();
            let copier = self.clone();
            tasks.spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let next = queue.lock().expect("the job queue is never poisoned").pop_front();
                    let Some(job) = next else { break };
                    outcomes.push(copier.run_job(job).await?);
                }
                Ok::<_, BackupError>(outcomes)
            });
        }
        let mut all = Vec::new();
        let mut first_failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(outcomes)) => all.extend(outcomes),
                Ok(Err(error)) => {
                    queue.lock().expect("the job queue is never poisoned").clear();
                    first_failure.get_or_insert(error);
                }
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => {}
            }
        }
        match first_failure {
            Some(error) => Err(error),
            None => Ok(all),
        }
    }

    /// Reads the job's files into one object.
    pub async fn run_job(&self, job: Job) -> Result<JobOutcome, BackupError> {
        let key = self.layout.backup_object(self.id, &job.object);
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let progress = self.progress.clone();
        let entries = self.entries.clone();
        let content = job.content.clone();
        let object = job.object.clone();
        let spill = self.spill.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut reader = Reader { tx, progress, object, spill, offset: 0, pending: Vec::new() };
            let reads = reader.read(&entries, &content)?;
            reader.flush()?;
            Ok(reads)
        });
        let body = Box::new(ChannelReader { rx, current: Bytes::new() });
        let stored = self.repository.put(&key, body, PutMode::CreateOnly).await;
        let read = reader.await.expect("the file reader does not panic");
        let (mut reads, summary) = match (read, stored) {
            (Err(ReadFailure::Io { path, source }), _) => return Err(BackupError::Read { path, source }),
            (Err(ReadFailure::Spill(source)), _) => {
                return Err(BackupError::Spill { dir: self.spill.dir().to_owned(), source });
            }
            (Ok(_) | Err(ReadFailure::Stopped), Err(error)) => return Err(error.into()),
            (Err(ReadFailure::Stopped), Ok(_)) => {
                // The upload cannot finish before the reader ends its stream; say so if it did.
                let source = std::io::Error::other("the upload ended before all files were read");
                return Err(BackupError::Read { path: PathBuf::from(key.as_str()), source });
            }
            (Ok(reads), Ok(summary)) => (reads, summary),
        };
        if let Content::File(_) = job.content {
            // A whole file alone in its object: its hash is the object's, which the put computed.
            for (_, read) in &mut reads {
                if let FileRead::Whole { blake3, .. } = read {
                    *blake3 = summary.recorded_hash();
                }
            }
        }
        let object = ObjectEntry {
            key: job.object,
            size: summary.plaintext_len,
            stored_size: summary.stored_len,
            blake3: summary.recorded_hash().to_hex().to_string(),
            files: reads.iter().filter(|(_, read)| !matches!(read, FileRead::Vanished)).count() as u64,
        };
        Ok(JobOutcome { object, reads })
    }
}

/// Puts together what the jobs read: one outcome per file, by entry index. A large file whose
/// parts were all read gets the hash of the whole file from its parts' chaining values; if any
/// part found it gone, the file vanished (it was dropped during the backup).
pub fn assemble(outcomes: &[JobOutcome], part_size: u64) -> BTreeMap<usize, FileOutcome> {
    let mut files = BTreeMap::new();
    let mut parts: BTreeMap<usize, Vec<&FileRead>> = BTreeMap::new();
    for (index, read) in outcomes.iter().flat_map(|outcome| outcome.reads.iter()) {
        match read {
            FileRead::Vanished => {
                files.insert(*index, FileOutcome::Vanished);
            }
            FileRead::Whole { location, blake3, mode, mtime, blocks } => {
                let locations = if location.length > 0 { vec![location.clone()] } else { Vec::new() };
                let (size, blake3, mode, mtime, blocks) =
                    (location.length, *blake3, *mode, *mtime, blocks.map(|b| vec![b]));
                files.insert(*index, FileOutcome::Copied { size, blake3, mode, mtime, locations, blocks });
            }
            FileRead::Part { .. } => parts.entry(*index).or_default().push(read),
            // An incremental backup puts the runs of a file together with what it did not read.
            FileRead::Blocks { .. } => {}
        }
    }
    for (index, mut pieces) in parts {
        if files.get(&index) == Some(&FileOutcome::Vanished) {
            continue;
        }
        pieces.sort_by_key(|piece| match piece {
            FileRead::Part { file_offset, .. } => *file_offset,
            _ => 0,
        });
        let mut locations = Vec::with_capacity(pieces.len());
        let mut values = Vec::with_capacity(pieces.len());
        let (mut mode, mut mtime) = (0, 0);
        let mut blocks = Some(Vec::new());
        for (number, piece) in pieces.into_iter().enumerate() {
            let FileRead::Part {
                location,
                chaining_value,
                mode: part_mode,
                mtime: part_mtime,
                blocks: part_blocks,
                ..
            } = piece
            else {
                continue;
            };
            if number == 0 {
                (mode, mtime) = (*part_mode, *part_mtime);
            }
            values.push((location.length, *chaining_value));
            locations.push(location.clone());
            match (blocks.as_mut(), part_blocks) {
                (Some(all), Some(part_blocks)) => all.push(*part_blocks),
                _ => blocks = None,
            }
        }
        let size = locations.iter().map(|location| location.length).sum();
        let blake3 = merge_parts(&values, part_size);
        files.insert(index, FileOutcome::Copied { size, blake3, mode, mtime, locations, blocks });
    }
    files
}

/// The BLAKE3 hash of a file cut into parts of `part_size` (all but the last full), from the
/// parts' lengths and chaining values, in file order.
pub fn merge_parts(parts: &[(u64, ChainingValue)], part_size: u64) -> blake3::Hash {
    assert!(parts.len() >= 2, "a file of one part is hashed whole");
    let total: u64 = parts.iter().map(|(length, _)| length).sum();
    let left = left_subtree_len(total);
    let (left_parts, right_parts) = parts.split_at((left / part_size) as usize);
    merge_subtrees_root(&subtree(left_parts, part_size), &subtree(right_parts, part_size), Mode::Hash)
}

/// The chaining value of the subtree made of `parts` (starting at a multiple of its own size).
pub fn subtree(parts: &[(u64, ChainingValue)], part_size: u64) -> ChainingValue {
    if let [(_, value)] = parts {
        return *value;
    }
    let total: u64 = parts.iter().map(|(length, _)| length).sum();
    let left = left_subtree_len(total);
    let (left_parts, right_parts) = parts.split_at((left / part_size) as usize);
    merge_subtrees_non_root(&subtree(left_parts, part_size), &subtree(right_parts, part_size), Mode::Hash)
}

#[derive(Debug)]
enum ReadFailure {
    /// Reading a file failed; the upload was failed too.
    Io { path: PathBuf, source: std::io::Error },
    /// The upload stopped reading (it failed, or the backup is being abandoned).
    Stopped,
    /// Keeping block values in the spill failed.
    Spill(std::io::Error),
}

/// Feeds one object's plaintext to its upload, from a blocking thread.
struct Reader {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    progress: Arc<Progress>,
    object: String,
    spill: Arc<ValueSpill>,
    /// Where the next byte goes in the object's plaintext.
    offset: u64,
    /// Bytes read but not sent yet: small files are gathered into blocks of up to
    /// [`READ_BLOCK`], so a bundle of thousands of files is not thousands of hand-offs.
    pending: Vec<u8>,
}

impl Reader {
    fn read(&mut self, entries: &[Walked], content: &Content) -> Result<Vec<(usize, FileRead)>, ReadFailure> {
        match content {
            Content::File(index) => Ok(vec![(*index, self.whole(&entries[*index], false)?)]),
            Content::Bundle(files) => {
                files.iter().map(|index| Ok((*index, self.whole(&entries[*index], true)?))).collect()
            }
            Content::Part { file, offset, length } => Ok(vec![(*file, self.part(&entries[*file], *offset, *length)?)]),
            Content::Blocks(runs) => {
                runs.iter().map(|run| Ok((run.file, self.blocks(&entries[run.file].source, run)?))).collect()
            }
        }
    }

    /// A whole file, up to the size it has now. Hashed here only in a bundle (`hash`); a mapped
    /// relation file's blocks are hashed too.
    fn whole(&mut self, entry: &Walked, hash: bool) -> Result<FileRead, ReadFailure> {
        let path = &entry.source;
        let Some((mut file, meta)) = self.open(path)? else { return Ok(FileRead::Vanished) };
        let size = meta.len();
        if size >= BUNDLE_FILE_LIMIT {
            advise_sequential(&file);
        }
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut blocks = maps_blocks(entry).then(|| BlockHasher::new(0));
        let length = self.copy(path, &mut file, size, |block| {
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(block);
            }
            if let Some(blocks) = blocks.as_mut() {
                blocks.update(block);
            }
        })?;
        let location = self.location(length);
        let blake3 = hasher.map_or(blake3::Hash::from_bytes([0; 32]), |hasher| hasher.finalize());
        let blocks = match blocks {
            Some(hasher) => Some(self.spill.append(&hasher.finish()).map_err(ReadFailure::Spill)?),
            None => None,
        };
        Ok(FileRead::Whole { location, blake3, mode: meta.mode() & 0o7777, mtime: meta.mtime(), blocks })
    }

    /// `length` bytes of a large file from `offset`, padded with zeros if the file is shorter now.
    /// A mapped relation file is hashed block by block and the part's value merged from the blocks'.
    fn part(&mut self, entry: &Walked, offset: u64, length: u64) -> Result<FileRead, ReadFailure> {
        let path = &entry.source;
        let Some((mut file, meta)) = self.open(path)? else { return Ok(FileRead::Vanished) };
        advise_sequential(&file);
        file.seek(SeekFrom::Start(offset)).map_err(|error| self.fail(path, error))?;
        let mut hashing = if maps_blocks(entry) {
            PartHashing::Blocks(BlockHasher::new(offset))
        } else {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(offset);
            PartHashing::Whole(hasher)
        };
        let read = self.copy(path, &mut file, length, |block| hashing.update(block))?;
        self.pad(length - read, |zeros| hashing.update(zeros))?;
        let location = self.location(length);
        let (chaining_value, blocks) = match hashing {
            PartHashing::Whole(hasher) => (hasher.finalize_non_root(), None),
            PartHashing::Blocks(blocks) => {
                let values = blocks.finish();
                let leaves: Vec<(u64, ChainingValue)> = values
                    .iter()
                    .enumerate()
                    .map(|(number, value)| (BLOCK_SIZE.min(length - number as u64 * BLOCK_SIZE), *value))
                    .collect();
                (subtree(&leaves, BLOCK_SIZE), Some(self.spill.append(&values).map_err(ReadFailure::Spill)?))
            }
        };
        Ok(FileRead::Part {
            location,
            file_offset: offset,
            chaining_value,
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            blocks,
        })
    }

    /// A run of blocks, padded with zeros past the file's end (it was truncated since the walk;
    /// WAL replay truncates it again).
    fn blocks(&mut self, path: &Path, run: &BlockRun) -> Result<FileRead, ReadFailure> {
        let Some((mut file, meta)) = self.open(path)? else { return Ok(FileRead::Vanished) };
        let offset = u64::from(run.first) * BLOCK_SIZE;
        let length = u64::from(run.count) * BLOCK_SIZE;
        file.seek(SeekFrom::Start(offset)).map_err(|error| self.fail(path, error))?;
        let mut hasher = BlockHasher::new(offset);
        let read = self.copy(path, &mut file, length, |block| hasher.update(block))?;
        self.pad(length - read, |zeros| hasher.update(zeros))?;
        let location = self.location(length);
        Ok(FileRead::Blocks {
            first: run.first,
            location,
            values: hasher.finish(),
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
        })
    }

    /// Sends `length` zeros, shown to `inspect`.
    fn pad(&mut self, mut length: u64, mut inspect: impl FnMut(&[u8])) -> Result<(), ReadFailure> {
        while length > 0 {
            let zeros = length.min(READ_BLOCK);
            let start = self.make_room(zeros)?;
            self.pending.resize(start + zeros as usize, 0);
            inspect(&self.pending[start..]);
            length -= zeros;
            self.sent(zeros)?;
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> Result<Option<(std::fs::File, std::fs::Metadata)>, ReadFailure> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.fail(path, error)),
        };
        let meta = file.metadata().map_err(|error| self.fail(path, error))?;
        // Replaced by something else since the walk: as good as gone.
        Ok(meta.is_file().then_some((file, meta)))
    }

    /// Sends up to `limit` bytes of `file` (fewer if it ends first); returns how many.
    fn copy(
        &mut self,
        path: &Path,
        file: &mut std::fs::File,
        limit: u64,
        mut inspect: impl FnMut(&[u8]),
    ) -> Result<u64, ReadFailure> {
        let mut copied = 0;
        while copied < limit {
            let want = (limit - copied).min(READ_BLOCK);
            let start = self.make_room(want)?;
            let read = file.take(want).read_to_end(&mut self.pending).map_err(|error| self.fail(path, error))?;
            if read == 0 {
                break; // Shorter than expected: it shrank while we read.
            }
            inspect(&self.pending[start..]);
            copied += read as u64;
            self.sent(read as u64)?;
        }
        Ok(copied)
    }

    /// Makes room for `length` more bytes in the pending block (sending it first if they would
    /// not fit); returns where they will start.
    fn make_room(&mut self, length: u64) -> Result<usize, ReadFailure> {
        if !self.pending.is_empty() && self.pending.len() as u64 + length > READ_BLOCK {
            self.flush()?;
        }
        self.pending.reserve(length as usize);
        Ok(self.pending.len())
    }

    /// Counts `length` bytes just added to the pending block, and sends it once it is full.
    fn sent(&mut self, length: u64) -> Result<(), ReadFailure> {
        self.progress.bytes.fetch_add(length, Ordering::Relaxed);
        if self.pending.len() as u64 >= READ_BLOCK { self.flush() } else { Ok(()) }
    }

    /// Hands the pending block to the upload.
    fn flush(&mut self) -> Result<(), ReadFailure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.pending);
        self.tx.blocking_send(Ok(Bytes::from(block))).map_err(|_| ReadFailure::Stopped)
    }

    /// The location of the `length` bytes just sent, in this object.
    fn location(&mut self, length: u64) -> Location {
        let location = Location { backup: None, object: self.object.clone(), offset: self.offset, length };
        self.offset += length;
        location
    }

    /// Fails the upload too, so nothing incomplete is stored, and names the file.
    fn fail(&self, path: &Path, source: std::io::Error) -> ReadFailure {
        let message = format!("reading {}: {source}", path.display());
        let _ = self.tx.blocking_send(Err(std::io::Error::new(source.kind(), message)));
        ReadFailure::Io { path: path.to_path_buf(), source }
    }
}

/// How a part is hashed: as one subtree, or block by block for the block map.
enum PartHashing {
    Whole(blake3::Hasher),
    Blocks(BlockHasher),
}

impl PartHashing {
    fn update(&mut self, data: &[u8]) {
        match self {
            PartHashing::Whole(hasher) => {
                hasher.update(data);
            }
            PartHashing::Blocks(blocks) => blocks.update(data),
        }
    }
}

/// Tells the kernel a large file is read front to back, so it reads ahead further.
fn advise_sequential(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call; the advice has no memory effects.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// The plaintext of one object: blocks from the reader thread; an `Err` ends it with that error.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(Some(Ok(block))) => self.current = block,
            }
        }
        let take = self.current.len().min(buf.remaining());
        let chunk = self.current.split_to(take);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn file(path: &str, size: u64) -> Walked {
        let source = PathBuf::from("/nonexistent").join(path);
        Walked { path: path.into(), source, kind: WalkedKind::File { size }, mode: 0o600, mtime: 0 }
    }

    #[test]
    fn large_files_in_parts_first_small_ones_bundled_control_file_last() {
        let mut entries = vec![
            Walked { path: "base".into(), source: "/x".into(), kind: WalkedKind::Dir, mode: 0o700, mtime: 0 },
            file("base/5/1", 100),
            file("base/5/2", 0),
            file("base/5/3", 5 * MIB),
            file("base/5/4", 150 * MIB),
            file(CONTROL_FILE, 8192),
        ];
        for n in 0..40 {
            entries.push(file(&format!("base/5/small{n:02}"), MIB - 1));
        }
        let plan = plan(&entries, PART_SIZE);
        assert_eq!(plan.empty, [2]);
        let part = |offset, length| Content::Part { file: 4, offset, length };
        let contents: Vec<&Content> = plan.jobs.iter().map(|job| &job.content).collect();
        assert_eq!(
            contents[..4],
            [&part(0, 64 * MIB), &part(64 * MIB, 64 * MIB), &part(128 * MIB, 22 * MIB), &Content::File(3)]
        );
        assert_eq!(plan.jobs[0].object, "data/000001");
        let mut bundled: Vec<usize> = Vec::new();
        for job in &plan.jobs[4..] {
            let Content::Bundle(files) = &job.content else { panic!("{job:?} is not a bundle") };
            assert!(job.bytes <= BUNDLE_TARGET + BUNDLE_FILE_LIMIT, "{job:?}");
            bundled.extend(files.iter().copied());
        }
        assert_eq!(bundled, [1].into_iter().chain(6..46).collect::<Vec<_>>(), "small files in walk order");
        let last = plan.last.as_ref().unwrap();
        assert_eq!(last.content, Content::File(5));
        assert_eq!(last.object, format!("data/{:06}", plan.jobs.len() + 1));
        assert_eq!(plan.bytes, 100 + 5 * MIB + 150 * MIB + 8192 + 40 * (MIB - 1));
    }

    /// Merging the parts' chaining values gives BLAKE3 of the whole file, whatever its length.
    #[test]
    fn parts_hash_to_the_whole_file() {
        let part_size = 4096;
        let data: Vec<u8> = (0..40_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for length in [4097, 8192, 8193, 12_288, 12_289, 16_384 + 5, 20_480, 33_000, 40_000] {
            let file = &data[..length];
            let parts: Vec<(u64, ChainingValue)> = file
                .chunks(part_size)
                .enumerate()
                .map(|(number, piece)| {
                    let mut hasher = blake3::Hasher::new();
                    hasher.set_input_offset((number * part_size) as u64);
                    hasher.update(piece);
                    (piece.len() as u64, hasher.finalize_non_root())
                })
                .collect();
            assert_eq!(merge_parts(&parts, part_size as u64), blake3::hash(file), "length {length}");
        }
    }
}
