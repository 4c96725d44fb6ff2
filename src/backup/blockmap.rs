//! Block maps (`backups/<id>/blocks`): the BLAKE3 chaining value of every 8 KiB block of the
//! relation files a backup stored, so that a later incremental backup can give a file it changed
//! the hash of its whole content without reading the blocks that did not change.
//!
//! BLAKE3 is a tree hash: a file's hash is built from the chaining values of aligned subtrees, and
//! an 8 KiB block at a multiple of 8 KiB is such a subtree (eight 1 KiB chunks). An incremental
//! computes the values of the blocks it reads, takes the others from the block maps of the backups
//! that stored them, and merges them exactly as BLAKE3 would ([`root_hash`]). A restore hashes
//! what it writes the same way and compares with the manifest (G3).
//!
//! A full backup maps every relation file of at least [`MIN_MAPPED_SIZE`] whose size is a whole
//! number of blocks; an incremental maps the blocks it stored of such files. The cost is 32 bytes
//! per 8 KiB (0.4 % of the mapped data, incompressible). While a backup copies, the values wait
//! in an unnamed temporary file under the state directory ([`ValueSpill`]), and the map is encoded
//! from there: a backup's memory does not grow with the database.
//!
//! # Format (the sealed object's plaintext; little-endian)
//! ```text
//! "LBBLKMAP" (8 bytes), version u32 = 1, block size u32 = 8192
//! per file, in path order:
//!   path length u16 (1..=4096), path (UTF-8, as in the manifest)
//!   run count u32
//!   per run, in block order: first block u32, block count u32, count × 32-byte chaining values
//! end: path length u16 = 0
//! ```

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use blake3::hazmat::{ChainingValue, HasherExt};

use super::copy::merge_parts;

/// PostgreSQL's block size, the only one lifeboat backs up incrementally.
pub const BLOCK_SIZE: u64 = super::changes::BLOCK_SIZE as u64;
/// Relation files smaller than this are stored whole when they change: mapping them would save
/// little and cost a record per file.
pub const MIN_MAPPED_SIZE: u64 = 1024 * 1024;

const MAGIC: &[u8; 8] = b"LBBLKMAP";
const VERSION: u32 = 1;
const MAX_PATH: usize = 4096;

/// Consecutive blocks of one file, from `first`, with their chaining values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub first: u32,
    pub values: Vec<ChainingValue>,
}

/// The mapped blocks of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBlocks {
    pub path: String,
    pub runs: Vec<Run>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockMapError {
    #[error("the block map is not one lifeboat wrote ({0})")]
    Malformed(String),
    #[error(transparent)]
    Read(#[from] io::Error),
}

/// Whether a file of `size` bytes gets its blocks mapped (the caller checks that it is a
/// relation file).
pub fn is_mapped_size(size: u64) -> bool {
    size >= MIN_MAPPED_SIZE && size.is_multiple_of(BLOCK_SIZE)
}

/// The chaining values of consecutive 8 KiB blocks of a stream of bytes that starts at a block
/// boundary of its file; the last block may be short.
pub struct BlockHasher {
    /// The file offset of the block being hashed.
    offset: u64,
    current: blake3::Hasher,
    filled: u64,
    values: Vec<ChainingValue>,
}

impl BlockHasher {
    pub fn new(offset: u64) -> BlockHasher {
        debug_assert!(offset.is_multiple_of(BLOCK_SIZE));
        let mut current = blake3::Hasher::new();
        current.set_input_offset(offset);
        BlockHasher { offset, current, filled: 0, values: Vec::new() }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min((BLOCK_SIZE - self.filled) as usize);
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == BLOCK_SIZE {
                self.end_block();
            }
        }
    }

    fn end_block(&mut self) {
        self.values.push(self.current.finalize_non_root());
        self.offset += BLOCK_SIZE;
        self.current = blake3::Hasher::new();
        self.current.set_input_offset(self.offset);
        self.filled = 0;
    }

    pub fn finish(mut self) -> Vec<ChainingValue> {
        if self.filled > 0 {
            self.values.push(self.current.finalize_non_root());
        }
        self.values
    }
}

/// The BLAKE3 hash of a file of at least two blocks, all whole but the last, from their values.
pub fn root_hash(values: &[ChainingValue], size: u64) -> blake3::Hash {
    let last = size - (values.len() as u64 - 1) * BLOCK_SIZE;
    let leaves: Vec<(u64, ChainingValue)> = values
        .iter()
        .enumerate()
        .map(|(number, value)| (if number + 1 == values.len() { last } else { BLOCK_SIZE }, *value))
        .collect();
    merge_parts(&leaves, BLOCK_SIZE)
}

/// The chaining values of the files a backup maps, kept in an unnamed temporary file while it
/// copies rather than in memory (32 bytes per 8 KiB block: 8 GiB for a 2 TB database). Copy
/// workers append a file's or a part's values and keep the range; the block map is encoded from
/// the file at the end. The file has no name, so it disappears with the process, however it ends.
#[derive(Debug)]
pub struct ValueSpill {
    dir: std::path::PathBuf,
    file: std::fs::File,
    /// Values appended so far.
    appended: Mutex<u64>,
}

/// `count` values of a [`ValueSpill`] from value `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpilledValues {
    pub first: u64,
    pub count: u32,
}

impl ValueSpill {
    /// A spill in an unnamed file in `dir`.
    pub fn create(dir: &Path) -> io::Result<ValueSpill> {
        Ok(ValueSpill { dir: dir.to_owned(), file: ValueSpill::unnamed_file(dir)?, appended: Mutex::new(0) })
    }

    /// An unnamed file in `dir` (created if needed), readable by this process only: Linux's
    /// `O_TMPFILE`, gone once closed.
    pub fn unnamed_file(dir: &Path) -> io::Result<std::fs::File> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir)
    }

    /// The directory of the unnamed file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn append(&self, values: &[ChainingValue]) -> io::Result<SpilledValues> {
        let count = u32::try_from(values.len()).expect("a file has fewer than 2^32 blocks");
        let mut appended = self.appended.lock().expect("the spill lock is never poisoned");
        let first = *appended;
        self.file.write_all_at(values.as_flattened(), first * 32)?;
        *appended += u64::from(count);
        Ok(SpilledValues { first, count })
    }

    /// Copies the values of `range` to `out`.
    fn copy_to(&self, range: SpilledValues, out: &mut impl Write) -> io::Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut offset = range.first * 32;
        let mut left = u64::from(range.count) * 32;
        while left > 0 {
            let take = left.min(buffer.len() as u64) as usize;
            self.file.read_exact_at(&mut buffer[..take], offset)?;
            out.write_all(&buffer[..take])?;
            offset += take as u64;
            left -= take as u64;
        }
        Ok(())
    }
}

/// One file's record of a block map being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappedFile {
    /// Runs held in memory (an incremental's changed blocks).
    Runs(FileBlocks),
    /// Every block from block 0, its values in the spill, in these ranges in block order.
    Spilled { path: String, ranges: Vec<SpilledValues> },
}

impl MappedFile {
    pub fn path(&self) -> &str {
        match self {
            MappedFile::Runs(blocks) => &blocks.path,
            MappedFile::Spilled { path, .. } => path,
        }
    }
}

/// Writes the plaintext of a block map to `out`; `files` must come in path order, and
/// [`MappedFile::Spilled`] ones need the `spill` they name.
pub fn encode_to<'a>(
    out: &mut impl Write,
    files: impl IntoIterator<Item = &'a MappedFile>,
    spill: Option<&ValueSpill>,
) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&(BLOCK_SIZE as u32).to_le_bytes())?;
    let mut previous: Option<&str> = None;
    for file in files {
        let path = file.path();
        assert!(previous.is_none_or(|previous| previous < path), "block map records in path order");
        assert!(!path.is_empty() && path.len() <= MAX_PATH, "path {path:?}");
        previous = Some(path);
        out.write_all(&(path.len() as u16).to_le_bytes())?;
        out.write_all(path.as_bytes())?;
        match file {
            MappedFile::Runs(blocks) => {
                out.write_all(&(blocks.runs.len() as u32).to_le_bytes())?;
                for run in &blocks.runs {
                    out.write_all(&run.first.to_le_bytes())?;
                    out.write_all(&(run.values.len() as u32).to_le_bytes())?;
                    out.write_all(run.values.as_flattened())?;
                }
            }
            MappedFile::Spilled { ranges, .. } => {
                let spill = spill.expect("spilled values come with their spill");
                let count: u64 = ranges.iter().map(|range| u64::from(range.count)).sum();
                out.write_all(&1u32.to_le_bytes())?;
                out.write_all(&0u32.to_le_bytes())?;
                out.write_all(&u32::try_from(count).expect("a file has fewer than 2^32 blocks").to_le_bytes())?;
                for range in ranges {
                    spill.copy_to(*range, out)?;
                }
            }
        }
    }
    out.write_all(&0u16.to_le_bytes())
}

/// Reads a block map's records in path order, one at a time (a record is at most 4 MiB of
/// values for a 1 GiB segment file).
pub struct BlockMapReader<R> {
    input: R,
    /// A record read past by [`BlockMapReader::find`], handed out next.
    peeked: Option<FileBlocks>,
    ended: bool,
}

impl<R: Read> BlockMapReader<R> {
    pub fn new(mut input: R) -> Result<BlockMapReader<R>, BlockMapError> {
        let mut header = [0u8; 16];
        input.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Err(BlockMapError::Malformed("no block map header".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let block_size = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if version != VERSION || u64::from(block_size) != BLOCK_SIZE {
            return Err(BlockMapError::Malformed(format!("version {version}, block size {block_size}")));
        }
        Ok(BlockMapReader { input, peeked: None, ended: false })
    }

    /// The next record, or `None` at the end.
    pub fn next_file(&mut self) -> Result<Option<FileBlocks>, BlockMapError> {
        if let Some(peeked) = self.peeked.take() {
            return Ok(Some(peeked));
        }
        if self.ended {
            return Ok(None);
        }
        let path_len = usize::from(self.u16()?);
        if path_len == 0 {
            self.ended = true;
            return Ok(None);
        }
        if path_len > MAX_PATH {
            return Err(BlockMapError::Malformed(format!("a path of {path_len} bytes")));
        }
        let mut path = vec![0u8; path_len];
        self.input.read_exact(&mut path)?;
        let path = String::from_utf8(path).map_err(|_| BlockMapError::Malformed("a path that is not UTF-8".into()))?;
        let run_count = self.u32()?;
        let mut runs = Vec::new();
        for _ in 0..run_count {
            let first = self.u32()?;
            let count = self.u32()?;
            if u64::from(first) + u64::from(count) > u64::from(u32::MAX) {
                return Err(BlockMapError::Malformed(format!("{path}: a run of {count} blocks from {first}")));
            }
            let mut values = Vec::with_capacity(count.min(1 << 17) as usize);
            for _ in 0..count {
                let mut value = [0u8; 32];
                self.input.read_exact(&mut value)?;
                values.push(value);
            }
            runs.push(Run { first, values });
        }
        Ok(Some(FileBlocks { path, runs }))
    }

    /// The record of `path`, skipping those before it; calls must come in path order.
    pub fn find(&mut self, path: &str) -> Result<Option<FileBlocks>, BlockMapError> {
        while let Some(file) = self.next_file()? {
            match file.path.as_str().cmp(path) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(file)),
                std::cmp::Ordering::Greater => {
                    self.peeked = Some(file);
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    fn u16(&mut self) -> Result<u16, BlockMapError> {
        let mut bytes = [0u8; 2];
        self.input.read_exact(&mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    fn u32(&mut self) -> Result<u32, BlockMapError> {
        let mut bytes = [0u8; 4];
        self.input.read_exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed in uneven pieces, so block boundaries fall inside them.
    fn values_of(data: &[u8], offset: u64) -> Vec<ChainingValue> {
        let mut hasher = BlockHasher::new(offset);
        for piece in data.chunks(5000) {
            hasher.update(piece);
        }
        hasher.finish()
    }

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE as usize).map(|n| (n as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2]).collect()
    }

    #[test]
    fn block_values_merge_into_the_hash_of_the_whole_file() {
        for blocks in [2, 3, 8, 127, 128, 129, 1000] {
            let file = data(blocks);
            let values = values_of(&file, 0);
            assert_eq!(root_hash(&values, file.len() as u64), blake3::hash(&file), "{blocks} blocks");
        }
        // One block changed: its new value and the others' old ones give the new file's hash.
        let mut file = data(300);
        let mut values = values_of(&file, 0);
        file[150 * 8192 + 17] ^= 0xFF;
        values[150] = values_of(&file[150 * 8192..151 * 8192], 150 * BLOCK_SIZE)[0];
        assert_eq!(root_hash(&values, file.len() as u64), blake3::hash(&file));
    }

    #[test]
    fn maps_round_trip_and_find_skips_in_path_order() {
        let file = data(4);
        let values = values_of(&file, 0);
        let records = [
            FileBlocks { path: "base/5/16384".into(), runs: vec![Run { first: 0, values: values.clone() }] },
            FileBlocks {
                path: "base/5/16384.1".into(),
                runs: vec![Run { first: 2, values: values[..1].to_vec() }, Run { first: 9, values: vec![] }],
            },
            FileBlocks { path: "base/5/16390".into(), runs: vec![] },
        ];
        let spill = ValueSpill::create(&std::env::temp_dir()).unwrap();
        let mut mapped: Vec<MappedFile> = records.iter().cloned().map(MappedFile::Runs).collect();
        // The first file's values from the spill, in two ranges, read back exactly as if in memory.
        mapped[0] = MappedFile::Spilled {
            path: records[0].path.clone(),
            ranges: vec![spill.append(&values[..1]).unwrap(), spill.append(&values[1..]).unwrap()],
        };
        let mut bytes = Vec::new();
        encode_to(&mut bytes, &mapped, Some(&spill)).unwrap();
        let mut reader = BlockMapReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.find("base/5/16384.1").unwrap().as_ref(), Some(&records[1]));
        assert_eq!(reader.find("base/5/16389").unwrap(), None);
        assert_eq!(reader.find("base/5/16390").unwrap().as_ref(), Some(&records[2]));
        assert_eq!(reader.next_file().unwrap(), None);

        let mut truncated = BlockMapReader::new(&bytes[..bytes.len() - 40]).unwrap();
        truncated.next_file().unwrap();
        assert!(truncated.next_file().is_err(), "a cut map is an error, not an early end");
        assert!(BlockMapReader::new(&b"LBBLKMAQ\x01\0\0\0\0\x20\0\0"[..]).is_err());
    }
}
