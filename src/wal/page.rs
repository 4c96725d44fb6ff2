//! What lifeboat reads inside WAL files without parsing WAL records: the long page header at the
//! start of every segment, and the system identifier at the start of `global/pg_control`.
//!
//! The first page of a segment starts with `XLogLongPageHeaderData`:
//!
//! ```text
//! offset size field
//!  0     2    xlp_magic        WAL format version (0xD110 for PostgreSQL 15)
//!  2     2    xlp_info         flags; XLP_LONG_HEADER (0x0002) is set on a segment's first page
//!  4     4    xlp_tli          timeline of the page (on a new timeline's first segment, the old one)
//!  8     8    xlp_pageaddr     LSN of the page's first byte: the segment's start
//! 16     4    xlp_rem_len      bytes of a record continued from the previous page
//! 20     4    (padding to 8-byte alignment)
//! 24     8    xlp_sysid        system identifier, as in pg_control
//! 32     4    xlp_seg_size     WAL segment size in bytes
//! 36     4    xlp_xlog_blcksz  WAL block size in bytes
//! ```
//!
//! PostgreSQL writes these in the host's byte order; `wal-push` runs on the database host, so
//! native order is right. `pg_control` begins with the 8-byte system identifier, in every version.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::catalog::cluster::SystemIdentifier;
use crate::catalog::lsn::Lsn;
use crate::catalog::wal::SegmentSize;

/// Bytes of the long page header.
pub const LONG_HEADER_LEN: usize = 40;
const XLP_LONG_HEADER: u16 = 0x0002;

/// The header of a segment's first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub page_address: Lsn,
    pub system_identifier: SystemIdentifier,
    pub segment_size: SegmentSize,
    pub block_size: u32,
}

impl LongPageHeader {
    /// Decodes the first [`LONG_HEADER_LEN`] bytes of a segment; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<LongPageHeader, String> {
        let Some(bytes) = bytes.get(..LONG_HEADER_LEN) else {
            return Err(format!("it is shorter than a WAL page header ({} bytes)", bytes.len()));
        };
        let u16_at = |at: usize| u16::from_ne_bytes(bytes[at..at + 2].try_into().expect("2 bytes"));
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err("its first page has no long header (XLP_LONG_HEADER is not set)".into());
        }
        let raw_size = u32_at(32);
        let segment_size = SegmentSize::new(u64::from(raw_size)).ok_or_else(|| {
            format!("its header gives a segment size of {raw_size} bytes, which PostgreSQL never uses")
        })?;
        let block_size = u32_at(36);
        if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) {
            return Err(format!(
                "its header gives a WAL block size of {block_size} bytes, which PostgreSQL never uses"
            ));
        }
        let system_identifier = u64_at(24);
        if system_identifier == 0 {
            return Err("its header gives system identifier 0".into());
        }
        Ok(LongPageHeader {
            magic: u16_at(0),
            info,
            timeline: u32_at(4),
            page_address: Lsn(u64_at(8)),
            system_identifier: SystemIdentifier(system_identifier),
            segment_size,
            block_size,
        })
    }

    /// Reads and decodes the header at the start of the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<Result<LongPageHeader, String>> {
        let mut file = std::fs::File::open(path)?;
        let mut bytes = Vec::with_capacity(LONG_HEADER_LEN);
        file.by_ref().take(LONG_HEADER_LEN as u64).read_to_end(&mut bytes)?;
        Ok(LongPageHeader::parse(&bytes))
    }
}

/// The data directory a file in `pg_wal` belongs to, judged by its path alone: `pg_wal/X` gives
/// the working directory (where PostgreSQL runs `archive_command`), `/d/pg_wal/X` gives `/d`.
/// `None` when the file is not in a directory called `pg_wal`.
pub fn data_dir_of(wal_path: &Path) -> Option<PathBuf> {
    let parent = wal_path.parent()?;
    if parent.file_name()? != "pg_wal" {
        return None;
    }
    let data_dir = parent.parent()?;
    Some(if data_dir.as_os_str().is_empty() { PathBuf::from(".") } else { data_dir.to_path_buf() })
}

/// The system identifier recorded in `<data_dir>/global/pg_control`.
pub fn control_file_system_identifier(data_dir: &Path) -> std::io::Result<SystemIdentifier> {
    let mut bytes = [0u8; 8];
    std::fs::File::open(data_dir.join("global/pg_control"))?.read_exact(&mut bytes)?;
    Ok(SystemIdentifier(u64::from_ne_bytes(bytes)))
}

/// The major version in `<data_dir>/PG_VERSION` ("15"), if it can be read.
pub fn postgres_version(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("PG_VERSION")).ok()?;
    let version = text.trim();
    (!version.is_empty() && version.len() <= 8 && version.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 40 bytes of a real PostgreSQL 15 segment (000000010000000000000001 right after
    /// initdb; `pg_controldata` said "Database system identifier: 7712692259946650029").
    fn real_header() -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xD110u16.to_ne_bytes());
        bytes.extend_from_slice(&0x0002u16.to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes());
        bytes.extend_from_slice(&0x0100_0000u64.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&7_712_692_259_946_650_029u64.to_ne_bytes());
        bytes.extend_from_slice(&16_777_216u32.to_ne_bytes());
        bytes.extend_from_slice(&8192u32.to_ne_bytes());
        bytes
    }

    #[test]
    fn decodes_a_long_page_header() {
        let header = LongPageHeader::parse(&real_header()).unwrap();
        assert_eq!(header.magic, 0xD110);
        assert_eq!(header.timeline, 1);
        assert_eq!(header.page_address.to_string(), "0/1000000");
        assert_eq!(header.system_identifier, SystemIdentifier(7_712_692_259_946_650_029));
        assert_eq!(header.segment_size, SegmentSize::DEFAULT);
        assert_eq!(header.block_size, 8192);
    }

    #[test]
    fn refuses_what_is_not_a_segment_start() {
        assert!(LongPageHeader::parse(&real_header()[..39]).unwrap_err().contains("shorter"));
        let mut short_header = real_header();
        short_header[2..4].copy_from_slice(&0u16.to_ne_bytes());
        assert!(LongPageHeader::parse(&short_header).unwrap_err().contains("long header"));
        let mut odd_size = real_header();
        odd_size[32..36].copy_from_slice(&12_345u32.to_ne_bytes());
        assert!(LongPageHeader::parse(&odd_size).unwrap_err().contains("12345"));
        let mut odd_block = real_header();
        odd_block[36..40].copy_from_slice(&100u32.to_ne_bytes());
        assert!(LongPageHeader::parse(&odd_block).unwrap_err().contains("block size"));
        assert!(LongPageHeader::parse(&[0u8; 40]).is_err());
    }

    #[test]
    fn finds_the_data_directory_from_the_wal_path() {
        assert_eq!(data_dir_of(Path::new("pg_wal/000000010000000000000001")), Some(PathBuf::from(".")));
        assert_eq!(data_dir_of(Path::new("/var/lib/pg/main/pg_wal/00000002.history")), Some("/var/lib/pg/main".into()));
        assert_eq!(data_dir_of(Path::new("/tmp/000000010000000000000001")), None);
        assert_eq!(data_dir_of(Path::new("000000010000000000000001")), None);
    }
}
