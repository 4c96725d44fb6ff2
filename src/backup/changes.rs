//! Which 8 KiB blocks of which relation files may have changed between two LSNs, for block-level
//! incremental backups: from the WAL in between ([`from_wal`]), or, when that WAL cannot be read
//! whole, from the page LSNs in the file itself ([`changed_by_page_lsn`]). Also which data-directory
//! paths are relation segment files at all ([`parse_relation_path`]).
//!
//! The WAL answer. Every change to a WAL-logged relation block is a record that references the
//! block (relation, fork, block number), so the blocks referenced by the records in `[from, to)`
//! are a superset of the blocks that differ between a backup started at `from` and one started
//! at `to`. What changes files without referencing their blocks is read too: a fork created in
//! the range (`XLOG_SMGR_CREATE`) or every file of a database created in it
//! (`XLOG_DBASE_CREATE*`, whose file-copy strategy copies files without WAL) must be copied
//! whole, and a truncation (`XLOG_SMGR_TRUNCATE`) makes every block from its new end on suspect,
//! since the file may have been extended again. What the WAL cannot tell, the copier must decide
//! from the files: a file that the previous backup does not have, and blocks past the previous
//! backup's length of a file (relations are extended with zeroed pages that are not WAL-logged
//! until first written), must be copied whatever [`FileChanges`] says.
//!
//! Where the WAL is read: the cluster's `pg_wal` first (the backup runs on the database host, and
//! the segment holding `to` is not archived yet when the backup starts), then the repository's
//! archive. A `pg_wal` file is used only if its first page header gives the segment's address
//! (recycled files carry the address of the segment they were), and the scanner checks every
//! page's address after that; a `pg_wal` copy that does not decode is read again from the
//! archive. The segment holding `to` is read only up to `to`: what follows may be stale.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::layout::ClusterLayout;
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::repository::{Repository, RepositoryError};
use crate::storage::StorageError;
use crate::wal::page::LongPageHeader;
use crate::wal::records::{Record, StorageChange, WalScanner};

/// The only block size lifeboat's block-level incremental backups support (PostgreSQL's default
/// `BLCKSZ`, and `XLOG_BLCKSZ` for WAL pages).
pub const BLOCK_SIZE: usize = 8192;
/// `DEFAULTTABLESPACE_OID`: the tablespace of `base/`.
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// `GLOBALTABLESPACE_OID`: the tablespace of `global/`, whose relations have database 0.
pub const GLOBAL_TABLESPACE: u32 = 1664;
/// `changed_by_page_lsn` reads this much of a file at a time.
const READ_CHUNK: usize = 1024 * 1024;
/// `SizeOfPageHeaderData`: the least `pd_lower` of a page with a valid header.
const PAGE_HEADER_LEN: u16 = 24;
/// `PG_PAGE_LAYOUT_VERSION`, in the low byte of `pd_pagesize_version` since PostgreSQL 8.3.
const PAGE_LAYOUT_VERSION: u16 = 4;

/// Which fork of a relation a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fork {
    Main,
    FreeSpaceMap,
    VisibilityMap,
    Init,
}

impl Fork {
    /// PostgreSQL's `ForkNumber`.
    pub fn from_number(number: u8) -> Option<Fork> {
        match number {
            0 => Some(Fork::Main),
            1 => Some(Fork::FreeSpaceMap),
            2 => Some(Fork::VisibilityMap),
            3 => Some(Fork::Init),
            _ => None,
        }
    }

    /// What the fork adds to a relation file's name.
    pub fn suffix(self) -> &'static str {
        match self {
            Fork::Main => "",
            Fork::FreeSpaceMap => "_fsm",
            Fork::VisibilityMap => "_vm",
            Fork::Init => "_init",
        }
    }
}

/// A relation fork, as the WAL names it (RelFileNode/RelFileLocator + fork number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelFork {
    pub tablespace: u32,
    pub database: u32,
    pub relation: u32,
    pub fork: Fork,
}

/// A data-directory path (manifest form, `/`-separated, relative to pgdata) that is a relation
/// segment file: `base/<db>/<rel>[_fsm|_vm|_init][.<segno>]`, `global/<rel>...` (tablespace 1664,
/// database 0), `pg_tblspc/<spc>/<PG_..._catver>/<db>/<rel>...` (base/ is tablespace 1663).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationFile {
    pub fork: RelFork,
    pub segment: u32,
}

/// The relation segment file `path` names, or `None` for anything else (`PG_VERSION`,
/// `pg_filenode.map`, `pg_internal.init`, temporary relations `t<backend>_<rel>`, `pgsql_tmp`).
/// Numbers are taken only in the form PostgreSQL writes them: no leading zeros, no oid 0, and no
/// `.0` (segment 0 has no suffix), so that a stray file is never taken for another one's segment.
pub fn parse_relation_path(path: &str) -> Option<RelationFile> {
    let parts: Vec<&str> = path.split('/').collect();
    let (tablespace, database, name) = match parts.as_slice() {
        ["base", database, name] => (DEFAULT_TABLESPACE, oid(database)?, *name),
        ["global", name] => (GLOBAL_TABLESPACE, 0, *name),
        ["pg_tblspc", tablespace, version, database, name] if version.starts_with("PG_") => {
            (oid(tablespace)?, oid(database)?, *name)
        }
        _ => return None,
    };
    let (stem, segment) = match name.split_once('.') {
        Some((stem, segment)) => (stem, number(segment).filter(|segment| *segment != 0)?),
        None => (name, 0),
    };
    let (relation, fork) = match stem.split_once('_') {
        Some((relation, "fsm")) => (relation, Fork::FreeSpaceMap),
        Some((relation, "vm")) => (relation, Fork::VisibilityMap),
        Some((relation, "init")) => (relation, Fork::Init),
        Some(_) => return None,
        None => (stem, Fork::Main),
    };
    let fork = RelFork { tablespace, database, relation: oid(relation)?, fork };
    Some(RelationFile { fork, segment })
}

/// A decimal number as PostgreSQL writes one: digits only, no leading zero.
fn number(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    if digits && canonical { text.parse().ok() } else { None }
}

/// An object id: a number other than 0 (`InvalidOid`).
fn oid(text: &str) -> Option<u32> {
    number(text).filter(|oid| *oid != 0)
}

/// What the WAL between two LSNs says about one relation segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChanges {
    /// Created (XLOG_SMGR_CREATE of that fork, or its database created: XLOG_DBASE_CREATE*) in the
    /// range: copy the whole file.
    Whole,
    /// `blocks`: block numbers WITHIN THIS SEGMENT FILE (0 = the file's first 8 KiB), sorted,
    /// deduplicated, referenced by any record in the range; `from`: every block at or after this
    /// one (within this file) may have changed too (a truncation in the range: XLOG_SMGR_TRUNCATE
    /// to fewer blocks than the file's end). Empty blocks and `from: None` = unchanged.
    Blocks { blocks: Vec<u32>, from: Option<u32> },
}

/// Where a segment was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentOrigin {
    PgWal,
    Archive,
}

/// One segment [`from_wal`] read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRead {
    pub name: String,
    pub origin: SegmentOrigin,
}

/// What [`from_wal`] read, for reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    pub from: Lsn,
    pub to: Lsn,
    /// Records that start in `[from, to)`.
    pub records: u64,
    /// Block references in those records (before deduplication).
    pub block_references: u64,
    /// Relation forks with at least one referenced block.
    pub forks: u64,
    /// Distinct blocks referenced.
    pub blocks: u64,
    /// Forks created, databases created and truncations in the range.
    pub created_forks: u64,
    pub created_databases: u64,
    pub truncations: u64,
    /// In WAL order.
    pub segments: Vec<SegmentRead>,
}

/// The blocks referenced in one fork, gathered unsorted and compacted (sorted, deduplicated) as
/// they pile up, so memory follows the distinct blocks rather than the references.
#[derive(Debug, Default)]
struct ForkBlocks {
    blocks: Vec<u32>,
    /// The length after the last compaction.
    compacted: usize,
    /// The lowest block a truncation in the range left the fork at.
    truncated_to: Option<u32>,
}

impl ForkBlocks {
    fn add(&mut self, block: u32) {
        if self.blocks.last() == Some(&block) {
            return;
        }
        self.blocks.push(block);
        if self.blocks.len() >= 2 * self.compacted.max(512) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.blocks.sort_unstable();
        self.blocks.dedup();
        self.compacted = self.blocks.len();
    }

    fn truncate(&mut self, to: u32) {
        self.truncated_to = Some(self.truncated_to.map_or(to, |known| known.min(to)));
    }
}

/// Changed blocks found in the WAL between `from` (inclusive: the previous backup's start LSN)
/// and `to` (exclusive: this backup's start LSN).
#[derive(Debug)]
pub struct ChangedBlocks {
    forks: HashMap<RelFork, ForkBlocks>,
    created_forks: HashSet<RelFork>,
    /// (tablespace, database) of the databases created.
    created_databases: HashSet<(u32, u32)>,
    summary: ScanSummary,
}

impl ChangedBlocks {
    fn new(from: Lsn, to: Lsn) -> ChangedBlocks {
        ChangedBlocks {
            forks: HashMap::new(),
            created_forks: HashSet::new(),
            created_databases: HashSet::new(),
            summary: ScanSummary {
                from,
                to,
                records: 0,
                block_references: 0,
                forks: 0,
                blocks: 0,
                created_forks: 0,
                created_databases: 0,
                truncations: 0,
                segments: Vec::new(),
            },
        }
    }

    /// Takes in one record; records before `from` (the start of the first segment) are not in
    /// the range. The scanner stops before `to`.
    fn record(&mut self, record: &Record<'_>) {
        if record.lsn < self.summary.from {
            return;
        }
        self.summary.records += 1;
        self.summary.block_references += record.blocks.len() as u64;
        for block in record.blocks {
            // The scanner refuses fork numbers PostgreSQL does not have.
            let Some(fork) = Fork::from_number(block.fork) else { continue };
            let node = block.node;
            let key = RelFork { tablespace: node.tablespace, database: node.database, relation: node.relation, fork };
            self.forks.entry(key).or_default().add(block.block);
        }
        match record.storage {
            None => {}
            Some(StorageChange::CreateFork { node, fork }) => {
                if let Some(fork) = Fork::from_number(fork) {
                    self.created_forks.insert(RelFork {
                        tablespace: node.tablespace,
                        database: node.database,
                        relation: node.relation,
                        fork,
                    });
                }
            }
            Some(StorageChange::Truncate { node, blocks, main, visibility_map, free_space_map }) => {
                self.summary.truncations += 1;
                let fork = |fork| RelFork {
                    tablespace: node.tablespace,
                    database: node.database,
                    relation: node.relation,
                    fork,
                };
                // The visibility map and free space map are cut to a length derived from `blocks`
                // that the record does not give: the whole fork is suspect.
                for (truncated, which, to) in [
                    (main, Fork::Main, blocks),
                    (visibility_map, Fork::VisibilityMap, 0),
                    (free_space_map, Fork::FreeSpaceMap, 0),
                ] {
                    if truncated {
                        self.forks.entry(fork(which)).or_default().truncate(to);
                    }
                }
            }
            Some(StorageChange::CreateDatabase { tablespace, database }) => {
                self.created_databases.insert((tablespace, database));
            }
        }
    }

    /// Sorts every fork's blocks and fills in the summary's totals.
    fn finish(mut self) -> ChangedBlocks {
        for blocks in self.forks.values_mut() {
            blocks.compact();
            blocks.blocks.shrink_to_fit();
        }
        self.summary.forks = self.forks.values().filter(|fork| !fork.blocks.is_empty()).count() as u64;
        self.summary.blocks = self.forks.values().map(|fork| fork.blocks.len() as u64).sum();
        self.summary.created_forks = self.created_forks.len() as u64;
        self.summary.created_databases = self.created_databases.len() as u64;
        self
    }

    /// `blocks_per_segment`: RELSEG_SIZE (131072 for the default 1 GiB segment files of 8 KiB blocks).
    pub fn for_file(&self, file: &RelationFile, blocks_per_segment: u32) -> FileChanges {
        let fork = file.fork;
        if self.created_forks.contains(&fork) || self.created_databases.contains(&(fork.tablespace, fork.database)) {
            return FileChanges::Whole;
        }
        let Some(changes) = self.forks.get(&fork) else {
            return FileChanges::Blocks { blocks: Vec::new(), from: None };
        };
        let per_segment = u64::from(blocks_per_segment.max(1));
        let first = u64::from(file.segment) * per_segment;
        let end = first + per_segment;
        let in_file = |block: u32| (first..end).contains(&u64::from(block));
        let start = changes.blocks.partition_point(|&block| u64::from(block) < first);
        let blocks = changes.blocks[start..]
            .iter()
            .take_while(|&&block| in_file(block))
            .map(|&block| (u64::from(block) - first) as u32)
            .collect();
        let from =
            changes.truncated_to.filter(|&to| u64::from(to) < end).map(|to| u64::from(to).saturating_sub(first) as u32);
        FileChanges::Blocks { blocks, from }
    }

    /// For reporting: records read, block references found, segments read and from where.
    pub fn summary(&self) -> ScanSummary {
        self.summary.clone()
    }
}

/// Where WAL segments are read from: the local `pg_wal` directory first (the backup runs on the
/// database host; the segment holding `to` is not archived yet when the backup starts — read it
/// from pg_wal up to `to`, treating anything after `to` as not there), the repository's archive
/// for segments no longer in pg_wal (recycled files have other names or stale page headers:
/// check the page header LSN/timeline, never trust a name alone).
pub struct WalSource<'a> {
    pub pg_wal: &'a Path,
    pub repository: &'a Repository,
    pub layout: &'a ClusterLayout,
    pub timeline: Timeline,
    pub segment_size: SegmentSize,
}

/// Why the WAL between two LSNs cannot say which blocks changed; the caller compares page LSNs
/// instead. Each names the segment at fault.
#[derive(Debug, thiserror::Error)]
pub enum IncompleteWal {
    #[error("WAL {segment} is not archived in {location} and not in {}", pg_wal.display())]
    Missing { segment: String, location: String, pg_wal: PathBuf },

    #[error("WAL {segment} is not usable in {} ({local}), and reading its archived copy failed: {detail}", pg_wal.display())]
    Unreadable { segment: String, pg_wal: PathBuf, local: String, detail: String },

    #[error("WAL {segment} does not decode: {detail}")]
    Undecodable { segment: String, detail: String },

    #[error("WAL {segment} ends at {end}, before {to}, where the backup starts")]
    EndsEarly { segment: String, end: Lsn, to: Lsn },

    #[error(
        "WAL {segment} has {found}-byte pages: block-level incremental backups support only PostgreSQL's \
         default 8192-byte blocks"
    )]
    BlockSize { segment: String, found: u32 },

    #[error("the previous backup started at {from}, after this one ({to}): there is no WAL range between them")]
    Backwards { from: Lsn, to: Lsn },
}

impl IncompleteWal {
    /// The segment at fault, if one is.
    pub fn segment(&self) -> Option<&str> {
        match self {
            IncompleteWal::Missing { segment, .. }
            | IncompleteWal::Unreadable { segment, .. }
            | IncompleteWal::Undecodable { segment, .. }
            | IncompleteWal::EndsEarly { segment, .. }
            | IncompleteWal::BlockSize { segment, .. } => Some(segment),
            IncompleteWal::Backwards { .. } => None,
        }
    }
}

/// Reads the WAL [from, to) and collects the changed blocks. `Err` when the WAL is incomplete
/// (a segment in the range is neither in pg_wal nor archived, or does not decode): the caller
/// then falls back to page-LSN comparison. The error says which segment and why (for the
/// backup's log line: "WAL 00000001000000000000002A is not archived: comparing page LSNs instead").
pub async fn from_wal(source: &WalSource<'_>, from: Lsn, to: Lsn) -> Result<ChangedBlocks, IncompleteWal> {
    if to < from {
        return Err(IncompleteWal::Backwards { from, to });
    }
    let mut changes = ChangedBlocks::new(from, to);
    if to == from {
        return Ok(changes.finish());
    }
    let size = source.segment_size;
    let segment_bytes = u64::from(size.bytes());
    let last = (to.as_u64() - 1) / segment_bytes;
    let mut scanner = WalScanner::new(size);
    for number in from.as_u64() / segment_bytes..=last {
        let segment = WalSegment::new(source.timeline, number);
        let name = segment.name(size);
        let until = (number == last).then_some(to);
        let local = read_local(source, segment).await;
        let (bytes, origin, local_problem) = match local {
            Ok(bytes) => (bytes, SegmentOrigin::PgWal, None),
            Err(problem) => (read_archived(source, segment, &problem).await?, SegmentOrigin::Archive, Some(problem)),
        };
        check_block_size(&name, &bytes)?;
        let before = scanner.clone();
        let (scanned, collected, result) = scan_segment(scanner, changes, segment, bytes, until).await;
        (scanner, changes) = (scanned, collected);
        let origin = match result {
            Ok(()) => origin,
            Err(error) if local_problem.is_none() => {
                // The pg_wal copy may have been recycled and rewritten while it was read: the
                // archived copy, if there is one, is stable. Records already taken in from the
                // pg_wal copy passed their checks, so keeping them only adds to the superset.
                tracing::debug!("WAL {name} in pg_wal does not decode ({error}); reading the archived copy");
                let bytes = read_archived(source, segment, &error.to_string()).await?;
                check_block_size(&name, &bytes)?;
                let (scanned, collected, result) = scan_segment(before, changes, segment, bytes, until).await;
                (scanner, changes) = (scanned, collected);
                result
                    .map_err(|error| IncompleteWal::Undecodable { segment: name.clone(), detail: error.to_string() })?;
                SegmentOrigin::Archive
            }
            Err(error) => return Err(IncompleteWal::Undecodable { segment: name, detail: error.to_string() }),
        };
        if let Some(end) = scanner.end_of_wal()
            && end < to
        {
            return Err(IncompleteWal::EndsEarly { segment: name, end, to });
        }
        changes.summary.segments.push(SegmentRead { name, origin });
    }
    Ok(changes.finish())
}

/// The segment's file in `pg_wal`, if it is there whole and its first page header gives the
/// segment's address; otherwise why not.
async fn read_local(source: &WalSource<'_>, segment: WalSegment) -> Result<Vec<u8>, String> {
    let size = source.segment_size;
    let path = source.pg_wal.join(segment.name(size));
    let bytes = tokio::fs::read(&path).await.map_err(|error| error.to_string())?;
    if bytes.len() as u64 != u64::from(size.bytes()) {
        return Err(format!("it is {} bytes long, not {}", bytes.len(), size.bytes()));
    }
    let header = LongPageHeader::parse(&bytes)?;
    let start = segment.start_lsn(size);
    if header.page_address != start {
        return Err(format!("it holds the WAL at {}, not {start}: it was recycled", header.page_address));
    }
    Ok(bytes)
}

/// The segment's archived copy; `local` says why the `pg_wal` copy was not used.
async fn read_archived(source: &WalSource<'_>, segment: WalSegment, local: &str) -> Result<Vec<u8>, IncompleteWal> {
    let name = segment.name(source.segment_size);
    let key = source.layout.wal_file(&WalFile::Segment(segment), source.segment_size);
    match source.repository.get_bytes(&key).await {
        Ok(bytes) => Ok(bytes),
        Err(RepositoryError::Storage(StorageError::NotFound { .. })) => Err(IncompleteWal::Missing {
            segment: name,
            location: source.repository.location(),
            pg_wal: source.pg_wal.to_owned(),
        }),
        Err(error) => Err(IncompleteWal::Unreadable {
            segment: name,
            pg_wal: source.pg_wal.to_owned(),
            local: local.to_owned(),
            detail: error.to_string(),
        }),
    }
}

fn check_block_size(name: &str, bytes: &[u8]) -> Result<(), IncompleteWal> {
    match LongPageHeader::parse(bytes) {
        Ok(header) if header.block_size as usize != BLOCK_SIZE => {
            Err(IncompleteWal::BlockSize { segment: name.to_owned(), found: header.block_size })
        }
        // A header that does not parse is the scanner's to report.
        _ => Ok(()),
    }
}

/// Feeds one segment to the scanner off the async threads (decoding 16 MiB takes milliseconds).
async fn scan_segment(
    mut scanner: WalScanner,
    mut changes: ChangedBlocks,
    segment: WalSegment,
    bytes: Vec<u8>,
    until: Option<Lsn>,
) -> (WalScanner, ChangedBlocks, Result<(), crate::wal::records::ScanError>) {
    tokio::task::spawn_blocking(move || {
        let result = scanner.feed_records(segment, &bytes, until, &mut |record| changes.record(record));
        (scanner, changes, result)
    })
    .await
    .expect("the WAL scan does not panic")
}

/// The page-LSN fallback: reads the file and returns the block numbers (within the file) whose
/// page LSN (pd_lsn, the first 8 bytes: xlogid u32, xrecoff u32, host order) is >= `since`, plus
/// every block whose LSN cannot prove it unchanged: a new (all-zero / pd_upper == 0) page, an
/// implausible header (pd_lower/pd_upper/pd_special out of order or > block size), a page LSN
/// beyond `not_after` (the current insert LSN: a LSN from the future is garbage), and a last
/// partial block. Reads in large chunks (1 MiB), constant memory.
pub fn changed_by_page_lsn(path: &Path, since: Lsn, not_after: Lsn) -> std::io::Result<Vec<u32>> {
    let mut file = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut changed = Vec::new();
    let mut block: u32 = 0;
    loop {
        let filled = fill(&mut file, &mut chunk)?;
        for page in chunk[..filled].chunks(BLOCK_SIZE) {
            if page.len() < BLOCK_SIZE || !page_proves_unchanged(page, since, not_after) {
                changed.push(block);
            }
            block += 1;
        }
        if filled < chunk.len() {
            return Ok(changed);
        }
    }
}

/// Reads until `buffer` is full or the file ends; how much was read.
fn fill(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Whether a whole page's header is plausible and its LSN says it was last changed before
/// `since` (and not after `not_after`, which no real page can be).
fn page_proves_unchanged(page: &[u8], since: Lsn, not_after: Lsn) -> bool {
    let u16_at = |at: usize| u16::from_ne_bytes(page[at..at + 2].try_into().expect("2 bytes"));
    let u32_at = |at: usize| u32::from_ne_bytes(page[at..at + 4].try_into().expect("4 bytes"));
    let lsn = Lsn((u64::from(u32_at(0)) << 32) | u64::from(u32_at(4)));
    let (lower, upper, special, size_version) = (u16_at(12), u16_at(14), u16_at(16), u16_at(18));
    // PageIsNew: never initialised (a zeroed page the relation was extended with).
    if upper == 0 {
        return false;
    }
    let plausible = lower >= PAGE_HEADER_LEN
        && lower <= upper
        && upper <= special
        && usize::from(special) <= BLOCK_SIZE
        && usize::from(size_version & 0xFF00) == BLOCK_SIZE
        && size_version & 0x00FF == PAGE_LAYOUT_VERSION;
    plausible && lsn < since && lsn <= not_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tablespace: u32, database: u32, relation: u32, fork: Fork, segment: u32) -> Option<RelationFile> {
        Some(RelationFile { fork: RelFork { tablespace, database, relation, fork }, segment })
    }

    #[test]
    fn relation_paths_in_every_form_are_recognised() {
        let cases = [
            ("base/16384/16385", file(1663, 16384, 16385, Fork::Main, 0)),
            ("base/16384/16385.1", file(1663, 16384, 16385, Fork::Main, 1)),
            ("base/16384/16385.27", file(1663, 16384, 16385, Fork::Main, 27)),
            ("base/16384/16385_fsm", file(1663, 16384, 16385, Fork::FreeSpaceMap, 0)),
            ("base/16384/16385_vm", file(1663, 16384, 16385, Fork::VisibilityMap, 0)),
            ("base/16384/16385_vm.3", file(1663, 16384, 16385, Fork::VisibilityMap, 3)),
            ("base/16384/16385_init", file(1663, 16384, 16385, Fork::Init, 0)),
            ("base/1/1259", file(1663, 1, 1259, Fork::Main, 0)),
            ("global/1262", file(1664, 0, 1262, Fork::Main, 0)),
            ("global/1262_fsm", file(1664, 0, 1262, Fork::FreeSpaceMap, 0)),
            ("global/1262.2", file(1664, 0, 1262, Fork::Main, 2)),
            ("pg_tblspc/16390/PG_15_202209061/16384/16391", file(16390, 16384, 16391, Fork::Main, 0)),
            ("pg_tblspc/16390/PG_18_202506291/5/16391_vm.1", file(16390, 5, 16391, Fork::VisibilityMap, 1)),
            ("base/4294967295/4294967295.4294967295", file(1663, u32::MAX, u32::MAX, Fork::Main, u32::MAX)),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_relation_path(path), expected, "{path}");
        }
    }

    #[test]
    fn other_files_are_not_relation_files() {
        for path in [
            "base/1/PG_VERSION",
            "base/1/pg_filenode.map",
            "base/1/pg_internal.init",
            "base/1/t3_123",
            "base/1/t3_123.1",
            "base/1/t3_123_fsm",
            "global/pg_control",
            "global/pg_filenode.map",
            "global/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp1234.0",
            "pg_tblspc/16390/PG_15_202209061/pgsql_tmp/pgsql_tmp1.0",
            "pg_tblspc/16390/PG_15_202209061/16384/PG_VERSION",
            "pg_tblspc/16390/other/16384/16391",
            "pg_tblspc/16390/16384/16391",
            "pg_wal/000000010000000000000001",
            "base/16384",
            "base/16384/16385.0",
            "base/16384/16385.01",
            "base/16384/016385",
            "base/016384/16385",
            "base/0/16385",
            "base/16384/0",
            "base/16384/16385_main",
            "base/16384/16385_vm_fsm",
            "base/16384/16385.",
            "base/16384/16385.1.1",
            "base/16384/16385.x",
            "base/16384/4294967296",
            "base/16384/+16385",
            "base/16384/16385/",
            "/base/16384/16385",
            "base//16385",
            "",
        ] {
            assert_eq!(parse_relation_path(path), None, "{path}");
        }
    }

    fn fork(relation: u32, which: Fork) -> RelFork {
        RelFork { tablespace: 1663, database: 5, relation, fork: which }
    }

    fn changes_with(blocks: &[(RelFork, u32)]) -> ChangedBlocks {
        let mut changes = ChangedBlocks::new(Lsn(0), Lsn(1));
        for (fork, block) in blocks {
            changes.forks.entry(*fork).or_default().add(*block);
        }
        changes
    }

    #[test]
    fn blocks_are_given_within_each_segment_file_sorted_and_once() {
        let main = fork(100, Fork::Main);
        let mut blocks: Vec<(RelFork, u32)> = [9, 3, 3, 10, 11, 25, 3, 9].iter().map(|b| (main, *b)).collect();
        // Enough references to force compactions on the way.
        blocks.extend((0..5000).map(|i| (main, 20 + i % 3)));
        blocks.push((fork(100, Fork::VisibilityMap), 0));
        let changes = changes_with(&blocks).finish();
        let of = |segment| changes.for_file(&RelationFile { fork: main, segment }, 10);
        assert_eq!(of(0), FileChanges::Blocks { blocks: vec![3, 9], from: None });
        assert_eq!(of(1), FileChanges::Blocks { blocks: vec![0, 1], from: None });
        assert_eq!(of(2), FileChanges::Blocks { blocks: vec![0, 1, 2, 5], from: None });
        assert_eq!(of(3), FileChanges::Blocks { blocks: vec![], from: None });
        let other = changes.for_file(&RelationFile { fork: fork(101, Fork::Main), segment: 0 }, 10);
        assert_eq!(other, FileChanges::Blocks { blocks: vec![], from: None });
        let summary = changes.summary();
        assert_eq!((summary.forks, summary.blocks), (2, 9));
    }

    #[test]
    fn truncations_make_the_rest_suspect_and_creations_the_whole_file() {
        let main = fork(100, Fork::Main);
        let mut changes = changes_with(&[(main, 2)]);
        changes.forks.entry(main).or_default().truncate(25);
        changes.forks.entry(main).or_default().truncate(27);
        changes.forks.entry(fork(100, Fork::VisibilityMap)).or_default().truncate(0);
        changes.created_forks.insert(fork(200, Fork::Init));
        changes.created_databases.insert((1663, 6));
        let changes = changes.finish();
        let of = |fork, segment| changes.for_file(&RelationFile { fork, segment }, 10);
        assert_eq!(of(main, 0), FileChanges::Blocks { blocks: vec![2], from: None });
        assert_eq!(of(main, 2), FileChanges::Blocks { blocks: vec![], from: Some(5) });
        assert_eq!(of(main, 3), FileChanges::Blocks { blocks: vec![], from: Some(0) });
        assert_eq!(of(fork(100, Fork::VisibilityMap), 0), FileChanges::Blocks { blocks: vec![], from: Some(0) });
        assert_eq!(of(fork(200, Fork::Init), 0), FileChanges::Whole);
        assert_eq!(of(fork(200, Fork::Main), 0), FileChanges::Blocks { blocks: vec![], from: None });
        let in_new_database = RelFork { tablespace: 1663, database: 6, relation: 1259, fork: Fork::Main };
        assert_eq!(of(in_new_database, 4), FileChanges::Whole);
        let same_oid_elsewhere = RelFork { tablespace: 16390, ..in_new_database };
        assert_eq!(of(same_oid_elsewhere, 0), FileChanges::Blocks { blocks: vec![], from: None });
    }

    /// A page with a valid header and LSN `lsn`.
    fn page(lsn: u64) -> Vec<u8> {
        let mut page = vec![0u8; BLOCK_SIZE];
        page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        page[12..14].copy_from_slice(&40u16.to_ne_bytes());
        page[14..16].copy_from_slice(&8000u16.to_ne_bytes());
        page[16..18].copy_from_slice(&8192u16.to_ne_bytes());
        page[18..20].copy_from_slice(&(8192u16 | 4).to_ne_bytes());
        page
    }

    #[test]
    fn page_lsns_decide_and_doubtful_pages_count_as_changed() {
        let since = 0x1_0000_0000;
        let now = 0x2_0000_0000;
        let mut pages = vec![
            page(since - 1),     // 0: before: unchanged
            page(since),         // 1: at since: changed
            page(now),           // 2: changed
            page(now + 1),       // 3: from the future
            vec![0; BLOCK_SIZE], // 4: new
            page(5),             // 5: unchanged
        ];
        let mut bad = page(5);
        bad[12..14].copy_from_slice(&8100u16.to_ne_bytes()); // pd_lower > pd_upper
        pages.push(bad); // 6
        let mut bad = page(5);
        bad[16..18].copy_from_slice(&9000u16.to_ne_bytes()); // pd_special past the page
        pages.push(bad); // 7
        let mut bad = page(5);
        bad[18..20].copy_from_slice(&(4096u16 | 4).to_ne_bytes()); // another block size
        pages.push(bad); // 8
        // Enough unchanged pages to cross a 1 MiB chunk boundary, then one changed after it.
        pages.extend((0..130).map(|_| page(7))); // 9..=138
        pages.push(page(since + 10)); // 139
        let mut bytes = pages.concat();
        bytes.extend_from_slice(&page(5)[..100]); // 140: partial
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16385");
        std::fs::write(&path, &bytes).unwrap();
        let changed = changed_by_page_lsn(&path, Lsn(since), Lsn(now)).unwrap();
        assert_eq!(changed, vec![1, 2, 3, 4, 6, 7, 8, 139, 140]);
        // A file of exactly one chunk, all unchanged.
        std::fs::write(&path, (0..128).map(|_| page(7)).collect::<Vec<_>>().concat()).unwrap();
        assert_eq!(changed_by_page_lsn(&path, Lsn(since), Lsn(now)).unwrap(), Vec::<u32>::new());
        assert!(changed_by_page_lsn(&dir.path().join("missing"), Lsn(since), Lsn(now)).is_err());
    }
}
