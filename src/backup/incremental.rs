//! Incremental backups: choosing the backup to build on, deciding what each file costs, and
//! putting the new manifest's files together from what was read and what earlier backups hold.
//!
//! An incremental stores the 8 KiB blocks of relation files that changed since its parent's
//! start LSN, whole copies of files that are new, are not relation files, or are small, and
//! nothing for files that did not change. Its manifest is complete on its own: every file lists
//! all its pieces, those in earlier backups naming the backup ([`Location::backup`]), so a
//! restore reads each needed block once without walking the chain, and each file still carries
//! the BLAKE3 of its whole content, merged from block values ([`super::blockmap`]).
//!
//! Correctness over cleverness:
//! - which blocks changed comes from the WAL between the parent's start and this backup's start
//!   (every change is logged, with creations, truncations and whole databases), or, when that
//!   WAL is incomplete, from each block's page LSN; a block that cannot be proven unchanged is
//!   copied, and blocks past the parent's end of the file are always copied;
//! - a block read while it is written is repaired by WAL replay from this backup's start, as in
//!   a full backup (its first change after the checkpoint carries a full-page image);
//! - the free space map is not WAL-logged block by block, so its files are copied whole;
//! - a backup on another timeline or of another cluster is never a base: a full backup is taken.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use blake3::hazmat::ChainingValue;

use super::BackupError;
use super::blockmap::{self, BLOCK_SIZE, BlockMapReader, FileBlocks, Run};
use super::changes::{self, ChangedBlocks, FileChanges, Fork, RelationFile};
use super::copy::{BlockRun, CONTROL_FILE, Content, FileRead, Job, JobOutcome, object_name};
use super::walk::{Walked, WalkedKind};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, Entry};
use crate::catalog::lsn::{Lsn, Timeline};
use crate::format::backup_manifest::{BackupManifest, ChangeSource, FileEntry, Location};
use crate::repository::Repository;

/// Blocks per relation segment file (RELSEG_SIZE): 1 GiB of 8 KiB blocks.
pub const BLOCKS_PER_SEGMENT: u32 = 131_072;
/// A changed-block object is closed once it holds this much.
const BLOCK_OBJECT_TARGET: u64 = 16 * 1024 * 1024;
/// A run of changed blocks is cut at this length, so no object grows past its target by much.
const MAX_RUN_BLOCKS: u32 = 2048;

/// The backup an incremental builds on.
#[derive(Debug, Clone)]
pub struct Base {
    pub parent: Arc<BackupManifest>,
    /// Every backup whose objects the parent's files refer to, oldest first, the parent last.
    pub chain: Vec<BackupId>,
}

/// Picks the newest base backup of this cluster on `timeline` to build on, or says why there
/// is none (and a full backup is taken instead).
pub async fn choose_base(
    repository: &Repository,
    layout: &ClusterLayout,
    system_identifier: u64,
    timeline: Timeline,
) -> Result<Result<Base, String>, BackupError> {
    let listing = listing::read_all(repository, layout).await.map_err(|error| BackupError::Catalog(Box::new(error)))?;
    let Some(parent) = listing.entries.iter().rev().find_map(|entry| match entry {
        Entry::Physical(manifest) => Some(manifest.clone()),
        Entry::Dump(_) => None,
    }) else {
        return Ok(Err("the cluster has no base backup yet".into()));
    };
    let id = parent.id;
    if parent.system_identifier.0 != system_identifier {
        return Ok(Err(format!("the newest backup {id} is of another cluster (system identifier)")));
    }
    if parent.timeline != timeline {
        return Ok(Err(format!(
            "the newest backup {id} is on timeline {}, the server is on timeline {timeline} now",
            parent.timeline
        )));
    }
    if parent.block_map.is_none() {
        return Ok(Err(format!(
            "the newest backup {id} has no block map (it was streamed by pg_basebackup, or taken by an older lifeboat)"
        )));
    }
    let chain = parent.chain();
    let listed: Vec<BackupId> = listing.entries.iter().map(Entry::id).collect();
    if let Some(missing) = chain.iter().find(|id| !listed.contains(id)) {
        return Ok(Err(format!("the newest backup {id} needs {missing}, which is gone or damaged")));
    }
    Ok(Ok(Base { parent: Arc::from(parent), chain }))
}

/// How this backup learns which blocks changed.
pub enum ChangeFinder {
    Wal(ChangedBlocks),
    PageLsn { since: Lsn, not_after: Lsn, reason: String },
}

impl ChangeFinder {
    pub fn source(&self) -> ChangeSource {
        match self {
            ChangeFinder::Wal(_) => ChangeSource::Wal,
            ChangeFinder::PageLsn { .. } => ChangeSource::PageLsn,
        }
    }

    pub fn fallback_reason(&self) -> Option<String> {
        match self {
            ChangeFinder::Wal(_) => None,
            ChangeFinder::PageLsn { reason, .. } => Some(reason.clone()),
        }
    }

    fn changes(&self, entry: &Walked, file: &RelationFile) -> Result<FileChanges, BackupError> {
        match self {
            ChangeFinder::Wal(changed) => Ok(changed.for_file(file, BLOCKS_PER_SEGMENT)),
            ChangeFinder::PageLsn { since, not_after, .. } => {
                match changes::changed_by_page_lsn(&entry.source, *since, *not_after) {
                    Ok(blocks) => Ok(FileChanges::Blocks { blocks, from: None }),
                    // Gone since the walk: the copy finds it gone too and records that.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(FileChanges::Whole),
                    Err(source) => Err(BackupError::Read { path: entry.source.clone(), source }),
                }
            }
        }
    }
}

/// A file stored block by block: which blocks are new, the rest coming from the parent.
#[derive(Debug)]
pub struct BlockedFile {
    /// The parent's entry, its locations naming their backups.
    parent: FileEntry,
    /// The file's size as the walk saw it (a whole number of blocks).
    size: u64,
    changed: Vec<u32>,
}

/// What an incremental does with each walked file.
#[derive(Debug, Default)]
pub struct IncrementalPlan {
    /// Files copied whole (indexes into the walk).
    pub whole: Vec<bool>,
    /// Files taken over from the parent unchanged.
    pub unchanged: BTreeMap<usize, FileEntry>,
    /// Files stored block by block.
    pub blocked: BTreeMap<usize, BlockedFile>,
}

impl IncrementalPlan {
    /// Decides for each walked file; reads every relation file when the WAL was incomplete.
    pub fn decide(entries: &[Walked], base: &Base, finder: &ChangeFinder) -> Result<IncrementalPlan, BackupError> {
        let mut plan = IncrementalPlan { whole: vec![false; entries.len()], ..IncrementalPlan::default() };
        for (index, entry) in entries.iter().enumerate() {
            let WalkedKind::File { size } = entry.kind else { continue };
            match decide_file(entry, size, base, finder)? {
                Decision::Whole => plan.whole[index] = true,
                Decision::Unchanged(parent) => {
                    plan.unchanged.insert(index, parent);
                }
                Decision::Blocks(blocked) => {
                    plan.blocked.insert(index, blocked);
                }
            }
        }
        Ok(plan)
    }

    /// The jobs that read the changed blocks, in objects numbered from `first_object`.
    pub fn block_jobs(&self, first_object: usize) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut runs: Vec<BlockRun> = Vec::new();
        let mut bytes = 0;
        let close = |runs: &mut Vec<BlockRun>, bytes: &mut u64, jobs: &mut Vec<Job>| {
            if !runs.is_empty() {
                let object = object_name(first_object + jobs.len());
                jobs.push(Job { object, content: Content::Blocks(std::mem::take(runs)), bytes: *bytes });
                *bytes = 0;
            }
        };
        for (&file, blocked) in &self.blocked {
            for range in runs_of(&blocked.changed) {
                let mut first = range.start;
                while first < range.end {
                    let count = (range.end - first).min(MAX_RUN_BLOCKS);
                    runs.push(BlockRun { file, first, count });
                    bytes += u64::from(count) * BLOCK_SIZE;
                    first += count;
                    if bytes >= BLOCK_OBJECT_TARGET {
                        close(&mut runs, &mut bytes, &mut jobs);
                    }
                }
            }
        }
        close(&mut runs, &mut bytes, &mut jobs);
        jobs
    }

    pub fn changed_blocks(&self) -> u64 {
        self.blocked.values().map(|blocked| blocked.changed.len() as u64).sum()
    }
}

enum Decision {
    Whole,
    Unchanged(FileEntry),
    Blocks(BlockedFile),
}

fn decide_file(entry: &Walked, size: u64, base: &Base, finder: &ChangeFinder) -> Result<Decision, BackupError> {
    if entry.path == CONTROL_FILE {
        return Ok(Decision::Whole);
    }
    let Some(file) = changes::parse_relation_path(&entry.path) else { return Ok(Decision::Whole) };
    let Some(previous) = base.parent.file(&entry.path) else { return Ok(Decision::Whole) };
    let Some(previous_size) = previous.size else { return Ok(Decision::Whole) };
    if file.fork.fork == Fork::FreeSpaceMap {
        return Ok(Decision::Whole);
    }
    let (blocks, from) = match finder.changes(entry, &file)? {
        FileChanges::Whole => return Ok(Decision::Whole),
        FileChanges::Blocks { blocks, from } => (blocks, from),
    };
    let parent = resolved(previous, base.parent.id);
    if blocks.is_empty() && from.is_none() && size == previous_size {
        return Ok(Decision::Unchanged(FileEntry { mode: entry.mode, mtime: entry.mtime, ..parent }));
    }
    if !blockmap::is_mapped_size(previous_size) || !blockmap::is_mapped_size(size) {
        return Ok(Decision::Whole);
    }
    let total = (size / BLOCK_SIZE) as u32;
    let old_total = (previous_size / BLOCK_SIZE) as u32;
    let mut changed: Vec<u32> = blocks.into_iter().filter(|&block| block < total).collect();
    let tail = from.unwrap_or(u32::MAX).min(old_total);
    changed.extend(tail..total);
    changed.sort_unstable();
    changed.dedup();
    // Mostly changed: a whole copy compresses better and needs no block values from the chain.
    if changed.len() as u64 * 2 > u64::from(total) {
        return Ok(Decision::Whole);
    }
    Ok(Decision::Blocks(BlockedFile { parent, size, changed }))
}

/// The entry with every location naming the backup that holds its object.
fn resolved(entry: &FileEntry, owner: BackupId) -> FileEntry {
    let mut entry = entry.clone();
    for location in &mut entry.locations {
        location.backup.get_or_insert(owner);
    }
    entry
}

/// Consecutive block numbers as ranges.
fn runs_of(blocks: &[u32]) -> Vec<Range<u32>> {
    let mut runs: Vec<Range<u32>> = Vec::new();
    for &block in blocks {
        match runs.last_mut() {
            Some(run) if run.end == block => run.end += 1,
            _ => runs.push(block..block + 1),
        }
    }
    runs
}

/// A blocked file put together: its entry, and the block map record of the blocks it stored.
pub struct Assembled {
    pub entry: FileEntry,
    pub stored: FileBlocks,
}

/// Puts together the files stored block by block from the runs the copy read and the parent's
/// pieces, and hashes each from block values (new ones and the chain's block maps). Files whose
/// values cannot all be found (or that vanished) come back in the second list: the caller copies
/// them whole.
pub async fn assemble(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    base: &Base,
    entries: &[Walked],
    plan: &IncrementalPlan,
    outcomes: &[JobOutcome],
) -> Result<(BTreeMap<usize, Assembled>, Vec<usize>), BackupError> {
    let mut reads: BTreeMap<usize, Vec<ReadRun>> = BTreeMap::new();
    let mut vanished = Vec::new();
    for (index, read) in outcomes.iter().flat_map(|outcome| outcome.reads.iter()) {
        match read {
            FileRead::Blocks { first, location, values, mode, mtime } => {
                let run = ReadRun {
                    first: *first,
                    location: location.clone(),
                    values: values.clone(),
                    mode: *mode,
                    mtime: *mtime,
                };
                reads.entry(*index).or_default().push(run);
            }
            FileRead::Vanished if plan.blocked.contains_key(index) => vanished.push(*index),
            _ => {}
        }
    }
    let mut maps = Vec::with_capacity(base.chain.len());
    for &id in &base.chain {
        let key = layout.backup_object(id, crate::format::backup_manifest::BLOCK_MAP);
        let stream = repository.get(&key).await.map_err(BackupError::from)?;
        maps.push((id, key, stream));
    }
    // Files in path order, so each chain map is read once, front to back.
    let mut work: Vec<FileWork> = plan
        .blocked
        .iter()
        .filter(|(index, _)| !vanished.contains(index))
        .map(|(&index, blocked)| FileWork {
            index,
            path: entries[index].path.clone(),
            parent: blocked.parent.clone(),
            size: blocked.size,
            runs: reads.remove(&index).unwrap_or_default(),
        })
        .collect();
    work.sort_by(|a, b| a.path.cmp(&b.path));
    let (assembled, mut unhashable) = tokio::task::spawn_blocking(move || {
        let mut readers = Vec::with_capacity(maps.len());
        for (id, key, stream) in maps {
            let reader = BlockMapReader::new(tokio_util::io::SyncIoBridge::new(stream))
                .map_err(|error| BackupError::BlockMap { key: key.to_string(), detail: error.to_string() })?;
            readers.push((id, key, reader));
        }
        let mut assembled = BTreeMap::new();
        let mut unhashable = Vec::new();
        for file in work {
            let index = file.index;
            match assemble_file(file, &mut readers)? {
                Some(file) => {
                    assembled.insert(index, file);
                }
                None => unhashable.push(index),
            }
        }
        Ok::<_, BackupError>((assembled, unhashable))
    })
    .await
    .expect("assembling files does not panic")?;
    unhashable.extend(vanished);
    Ok((assembled, unhashable))
}

/// A run of blocks the copy read.
struct ReadRun {
    first: u32,
    location: Location,
    values: Vec<ChainingValue>,
    mode: u32,
    mtime: i64,
}

/// One file stored block by block, for the blocking task that puts it together.
struct FileWork {
    index: usize,
    path: String,
    /// The parent's entry, its locations naming their backups.
    parent: FileEntry,
    size: u64,
    runs: Vec<ReadRun>,
}

type MapReader = BlockMapReader<tokio_util::io::SyncIoBridge<crate::storage::ByteReader>>;

fn assemble_file(
    file: FileWork,
    readers: &mut [(BackupId, crate::storage::ObjectKey, MapReader)],
) -> Result<Option<Assembled>, BackupError> {
    let FileWork { path, parent, size, mut runs, .. } = file;
    let total = (size / BLOCK_SIZE) as usize;
    runs.sort_by_key(|run| run.first);
    let mut values: Vec<Option<ChainingValue>> = vec![None; total];
    // Which backup holds each unchanged block, from the parent's pieces.
    let mut sources: Vec<Option<BackupId>> = vec![None; total];
    let mut offset = 0u64;
    for location in &parent.locations {
        let first = (offset / BLOCK_SIZE) as usize;
        let last = (offset + location.length).div_ceil(BLOCK_SIZE) as usize;
        for source in sources.iter_mut().take(last.min(total)).skip(first) {
            *source = location.backup;
        }
        offset += location.length;
    }
    let mut stored_runs = Vec::with_capacity(runs.len());
    let (mut mode, mut mtime) = (parent.mode, parent.mtime);
    for run in &runs {
        for (number, value) in run.values.iter().enumerate() {
            values[run.first as usize + number] = Some(*value);
        }
        stored_runs.push(Run { first: run.first, values: run.values.clone() });
        (mode, mtime) = (run.mode, run.mtime);
    }
    for (id, key, reader) in readers.iter_mut() {
        let record = reader
            .find(&path)
            .map_err(|error| BackupError::BlockMap { key: key.to_string(), detail: error.to_string() })?;
        let Some(record) = record else { continue };
        for run in record.runs {
            for (number, value) in run.values.into_iter().enumerate() {
                let block = run.first as usize + number;
                if block < total && values[block].is_none() && sources[block] == Some(*id) {
                    values[block] = Some(value);
                }
            }
        }
    }
    let Some(values) = values.into_iter().collect::<Option<Vec<ChainingValue>>>() else {
        return Ok(None);
    };
    let blake3 = blockmap::root_hash(&values, size);

    // The pieces: new runs where blocks changed, the parent's pieces in between.
    let mut locations: Vec<Location> = Vec::new();
    let mut next_block = 0u32;
    for run in &runs {
        take_from_parent(&parent.locations, next_block, run.first, &mut locations);
        push_merged(&mut locations, run.location.clone());
        next_block = run.first + (run.location.length / BLOCK_SIZE) as u32;
    }
    take_from_parent(&parent.locations, next_block, total as u32, &mut locations);
    let entry =
        FileEntry { mode, mtime, size: Some(size), blake3: Some(blake3.to_hex().to_string()), locations, ..parent };
    Ok(Some(Assembled { entry, stored: FileBlocks { path, runs: stored_runs } }))
}

/// Appends the parent's pieces covering blocks `from..to`.
fn take_from_parent(parent: &[Location], from: u32, to: u32, out: &mut Vec<Location>) {
    if from >= to {
        return;
    }
    let (start, end) = (u64::from(from) * BLOCK_SIZE, u64::from(to) * BLOCK_SIZE);
    let mut offset = 0u64;
    for location in parent {
        let (piece_start, piece_end) = (offset, offset + location.length);
        offset = piece_end;
        if piece_end <= start {
            continue;
        }
        if piece_start >= end {
            break;
        }
        let cut_start = start.max(piece_start);
        let cut_end = end.min(piece_end);
        push_merged(
            out,
            Location {
                backup: location.backup,
                object: location.object.clone(),
                offset: location.offset + (cut_start - piece_start),
                length: cut_end - cut_start,
            },
        );
    }
}

/// Appends a piece, joining it to the last one when it continues it in the same object.
fn push_merged(out: &mut Vec<Location>, piece: Location) {
    if let Some(last) = out.last_mut()
        && last.backup == piece.backup
        && last.object == piece.object
        && last.offset + last.length == piece.offset
    {
        last.length += piece.length;
        return;
    }
    out.push(piece);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(backup: Option<&str>, object: &str, offset: u64, length: u64) -> Location {
        Location { backup: backup.map(|id| id.parse().unwrap()), object: object.into(), offset, length }
    }

    #[test]
    fn runs_and_pieces_are_cut_and_joined_at_block_boundaries() {
        assert_eq!(runs_of(&[1, 2, 3, 7, 9, 10]), vec![1..4, 7..8, 9..11]);
        let full = Some("20261201T000000Z-full");
        let parent = vec![piece(full, "data/000001", 0, 4 * BLOCK_SIZE), piece(full, "data/000002", 0, 4 * BLOCK_SIZE)];
        let mut out = Vec::new();
        take_from_parent(&parent, 0, 2, &mut out);
        push_merged(&mut out, piece(None, "data/000009", 0, BLOCK_SIZE));
        take_from_parent(&parent, 3, 8, &mut out);
        assert_eq!(
            out,
            vec![
                piece(full, "data/000001", 0, 2 * BLOCK_SIZE),
                piece(None, "data/000009", 0, BLOCK_SIZE),
                piece(full, "data/000001", 3 * BLOCK_SIZE, BLOCK_SIZE),
                piece(full, "data/000002", 0, 4 * BLOCK_SIZE),
            ]
        );
        // A piece continuing the last one in the same object joins it.
        let mut joined = vec![piece(full, "data/000001", 0, BLOCK_SIZE)];
        take_from_parent(&parent, 1, 3, &mut joined);
        assert_eq!(joined, vec![piece(full, "data/000001", 0, 3 * BLOCK_SIZE)]);
    }
}
