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
//! per 8 KiB (0.4 % of the mapped data, incompressible).
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

use std::io::{self, Read};

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

/// The plaintext of a block map; `files` must come in path order.
pub fn encode<'a>(files: impl IntoIterator<Item = &'a FileBlocks>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    let mut previous: Option<&str> = None;
    for file in files {
        assert!(previous.is_none_or(|previous| previous < file.path.as_str()), "block map records in path order");
        assert!(!file.path.is_empty() && file.path.len() <= MAX_PATH, "path {:?}", file.path);
        previous = Some(&file.path);
        out.extend_from_slice(&(file.path.len() as u16).to_le_bytes());
        out.extend_from_slice(file.path.as_bytes());
        out.extend_from_slice(&(file.runs.len() as u32).to_le_bytes());
        for run in &file.runs {
            out.extend_from_slice(&run.first.to_le_bytes());
            out.extend_from_slice(&(run.values.len() as u32).to_le_bytes());
            for value in &run.values {
                out.extend_from_slice(value);
            }
        }
    }
    out.extend_from_slice(&0u16.to_le_bytes());
    out
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
        let records = vec![
            FileBlocks { path: "base/5/16384".into(), runs: vec![Run { first: 0, values: values.clone() }] },
            FileBlocks {
                path: "base/5/16384.1".into(),
                runs: vec![Run { first: 2, values: values[..1].to_vec() }, Run { first: 9, values: vec![] }],
            },
            FileBlocks { path: "base/5/16390".into(), runs: vec![] },
        ];
        let bytes = encode(&records);
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
