//! WAL file names: segments, and the other files PostgreSQL hands to `archive_command`.
//!
//! A segment's name is three groups of 8 hex digits: timeline, then the segment number split in
//! two, `number / segments_per_id` and `number % segments_per_id`, where
//! `segments_per_id = 0x1_0000_0000 / segment_size`. With the default 16 MiB segments the last
//! group runs from `00000000` to `000000FF`; with 1 GiB segments only to `00000003`. So the same
//! name means different positions for different segment sizes, and parsing needs the size.
//!
//! Besides full segments the archive holds `<timeline>.history` files (written at promotion,
//! listing the timeline's ancestors), backup history files `<segment>.<offset>.backup` (written by
//! `pg_backup_stop`) and `<segment>.partial` (the last, incomplete segment of the old timeline,
//! archived at promotion).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lsn::{Lsn, Timeline, parse_hex8};

/// The WAL segment size fixed at `initdb --wal-segsize`: a power of two from 1 MiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentSize(u32);

impl SegmentSize {
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);
    pub const MIN: u32 = 1024 * 1024;
    pub const MAX: u32 = 1024 * 1024 * 1024;

    /// `None` unless `bytes` is a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Option<SegmentSize> {
        let valid = bytes.is_power_of_two() && (u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&bytes);
        valid.then_some(SegmentSize(bytes as u32))
    }

    pub fn bytes(self) -> u32 {
        self.0
    }

    /// How many segments share one value of a name's middle group.
    pub fn segments_per_id(self) -> u64 {
        0x1_0000_0000 / u64::from(self.0)
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        SegmentSize::DEFAULT
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0 / (1024 * 1024))
    }
}

impl Serialize for SegmentSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for SegmentSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = u64::deserialize(deserializer)?;
        SegmentSize::new(bytes).ok_or_else(|| {
            serde::de::Error::custom(format!("{bytes} is not a WAL segment size (a power of two, 1 MiB to 1 GiB)"))
        })
    }
}

/// One WAL segment: a timeline and the segment's number (its start LSN divided by the segment
/// size). Its file name depends on the segment size, see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalSegment {
    pub timeline: Timeline,
    pub number: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a WAL file name for {segment_size} segments: {reason}")]
pub struct InvalidWalName {
    pub name: String,
    pub segment_size: SegmentSize,
    pub reason: &'static str,
}

impl WalSegment {
    pub fn new(timeline: Timeline, number: u64) -> WalSegment {
        WalSegment { timeline, number }
    }

    /// The segment of `timeline` that holds the byte at `lsn`.
    pub fn containing(timeline: Timeline, lsn: Lsn, size: SegmentSize) -> WalSegment {
        WalSegment { timeline, number: lsn.as_u64() / u64::from(size.bytes()) }
    }

    /// The LSN of the segment's first byte.
    pub fn start_lsn(self, size: SegmentSize) -> Lsn {
        Lsn(self.number.wrapping_mul(u64::from(size.bytes())))
    }

    /// The following segment on the same timeline. (WAL never comes near the 2^64-byte end.)
    pub fn next(self) -> WalSegment {
        WalSegment { timeline: self.timeline, number: self.number + 1 }
    }

    /// The 24-hex-digit file name, e.g. `000000010000000A000000FF`.
    pub fn name(self, size: SegmentSize) -> String {
        let per_id = size.segments_per_id();
        format!("{}{:08X}{:08X}", self.timeline, self.number / per_id, self.number % per_id)
    }

    /// Parses a 24-hex-digit segment name (either case).
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalSegment, InvalidWalName> {
        let invalid = |reason| InvalidWalName { name: name.to_owned(), segment_size: size, reason };
        if name.len() != 24 || !name.is_ascii() {
            return Err(invalid("a segment name is 24 hex digits"));
        }
        let (Some(timeline), Some(id), Some(low)) =
            (parse_hex8(&name[..8]), parse_hex8(&name[8..16]), parse_hex8(&name[16..]))
        else {
            return Err(invalid("a segment name is 24 hex digits"));
        };
        let timeline = Timeline::new(timeline).ok_or_else(|| invalid("timeline 00000000 does not exist"))?;
        let per_id = size.segments_per_id();
        if u64::from(low) >= per_id {
            return Err(invalid("its last 8 digits are too large for this segment size"));
        }
        Ok(WalSegment { timeline, number: u64::from(id) * per_id + u64::from(low) })
    }
}

/// A file PostgreSQL archives (or asks to have restored), by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete segment: `000000010000000A000000FF`.
    Segment(WalSegment),
    /// The incomplete last segment of a timeline, archived at promotion: `<segment>.partial`.
    Partial(WalSegment),
    /// The history of a timeline (its ancestors and where it branched): `00000002.history`.
    History(Timeline),
    /// Written by `pg_backup_stop`: `<segment>.<offset of the backup start, 8 hex>.backup`.
    BackupHistory { segment: WalSegment, offset: u32 },
}

impl WalFile {
    /// Recognises any archived file name; `size` is needed to read segment numbers.
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalFile, InvalidWalName> {
        let invalid = |reason| InvalidWalName { name: name.to_owned(), segment_size: size, reason };
        if let Some(timeline) = name.strip_suffix(".history") {
            let timeline = Timeline::from_hex(timeline)
                .map_err(|_| invalid("a history file is named <8 hex digits other than 00000000>.history"))?;
            return Ok(WalFile::History(timeline));
        }
        if let Some(segment) = name.strip_suffix(".partial") {
            return Ok(WalFile::Partial(WalSegment::parse(segment, size).map_err(|error| invalid(error.reason))?));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let Some((segment, offset)) = rest.split_once('.') else {
                return Err(invalid("a backup history file is named <segment>.<8 hex digits>.backup"));
            };
            let segment = WalSegment::parse(segment, size).map_err(|error| invalid(error.reason))?;
            let offset = parse_hex8(offset)
                .ok_or_else(|| invalid("a backup history file is named <segment>.<8 hex digits>.backup"))?;
            if offset >= size.bytes() {
                return Err(invalid("the backup's offset lies beyond the end of its segment"));
            }
            return Ok(WalFile::BackupHistory { segment, offset });
        }
        WalSegment::parse(name, size).map(WalFile::Segment)
    }

    /// The file name PostgreSQL uses (canonical upper-case hex).
    pub fn name(&self, size: SegmentSize) -> String {
        match self {
            WalFile::Segment(segment) => segment.name(size),
            WalFile::Partial(segment) => format!("{}.partial", segment.name(size)),
            WalFile::History(timeline) => format!("{timeline}.history"),
            WalFile::BackupHistory { segment, offset } => format!("{}.{offset:08X}.backup", segment.name(size)),
        }
    }

    pub fn timeline(&self) -> Timeline {
        match self {
            WalFile::Segment(segment) | WalFile::Partial(segment) | WalFile::BackupHistory { segment, .. } => {
                segment.timeline
            }
            WalFile::History(timeline) => *timeline,
        }
    }

    /// The segment the file is, or belongs to; `None` for a history file.
    pub fn segment(&self) -> Option<WalSegment> {
        match self {
            WalFile::Segment(segment) | WalFile::Partial(segment) | WalFile::BackupHistory { segment, .. } => {
                Some(*segment)
            }
            WalFile::History(_) => None,
        }
    }

    /// For messages: "WAL segment", "history file", ...
    pub fn kind(&self) -> &'static str {
        match self {
            WalFile::Segment(_) => "WAL segment",
            WalFile::Partial(_) => "partial WAL segment",
            WalFile::History(_) => "timeline history file",
            WalFile::BackupHistory { .. } => "backup history file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn size(mib: u64) -> SegmentSize {
        SegmentSize::new(mib * MIB).unwrap()
    }

    fn tli(id: u32) -> Timeline {
        Timeline::new(id).unwrap()
    }

    #[test]
    fn segment_sizes_are_powers_of_two_from_1_mib_to_1_gib() {
        for mib in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            assert_eq!(u64::from(size(mib).bytes()), mib * MIB);
        }
        for bytes in [0, 512 * 1024, 3 * MIB, 2048 * MIB, 16 * MIB + 1, u64::MAX] {
            assert!(SegmentSize::new(bytes).is_none(), "{bytes} accepted");
        }
        assert_eq!(SegmentSize::DEFAULT.segments_per_id(), 256);
        assert_eq!(size(1).segments_per_id(), 4096);
        assert_eq!(size(1024).segments_per_id(), 4);
        assert_eq!(SegmentSize::DEFAULT.to_string(), "16 MiB");
        assert_eq!(serde_json::to_string(&SegmentSize::DEFAULT).unwrap(), "16777216");
        assert!(serde_json::from_str::<SegmentSize>("1000").is_err());
    }

    #[test]
    fn default_size_names_round_trip() {
        let segment = WalSegment::parse("000000010000000A000000FF", SegmentSize::DEFAULT).unwrap();
        assert_eq!(segment.timeline, tli(1));
        assert_eq!(segment.number, 0xA * 256 + 0xFF);
        assert_eq!(segment.name(SegmentSize::DEFAULT), "000000010000000A000000FF");
        // The next one carries into the middle group.
        assert_eq!(segment.next().name(SegmentSize::DEFAULT), "000000010000000B00000000");
        assert_eq!(segment.start_lsn(SegmentSize::DEFAULT).to_string(), "A/FF000000");
        // Lower case is read, and printed canonically.
        let lower = WalSegment::parse("000000020000000a000000fe", SegmentSize::DEFAULT).unwrap();
        assert_eq!(lower.name(SegmentSize::DEFAULT), "000000020000000A000000FE");
    }

    #[test]
    fn names_depend_on_the_segment_size() {
        // 1 GiB: four segments per id, so the last group stops at 3.
        let big = size(1024);
        let segment = WalSegment::parse("000000010000000500000003", big).unwrap();
        assert_eq!(segment.number, 5 * 4 + 3);
        assert_eq!(segment.next().name(big), "000000010000000600000000");
        assert_eq!(segment.start_lsn(big).to_string(), "5/C0000000");
        assert!(WalSegment::parse("000000010000000500000004", big).is_err());
        // 1 MiB: 4096 per id; a name valid there is too large for 16 MiB.
        let small = size(1);
        let segment = WalSegment::parse("0000000100000000000003FF", small).unwrap();
        assert_eq!(segment.number, 0x3FF);
        assert!(WalSegment::parse("0000000100000000000003FF", SegmentSize::DEFAULT).is_err());
        assert_eq!(WalSegment::new(tli(1), 4095).next().name(small), "000000010000000100000000");
        // 64 MiB.
        let mid = size(64);
        assert_eq!(WalSegment::new(tli(3), 64).name(mid), "000000030000000100000000");
    }

    #[test]
    fn the_segment_containing_an_lsn() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let segment = WalSegment::containing(tli(1), lsn, SegmentSize::DEFAULT);
        assert_eq!(segment.name(SegmentSize::DEFAULT), "0000000100000016000000B3");
        assert!(segment.start_lsn(SegmentSize::DEFAULT) <= lsn);
        assert!(lsn < segment.next().start_lsn(SegmentSize::DEFAULT));
        // A segment's first byte belongs to it, its last byte too.
        let start: Lsn = "0/3000000".parse().unwrap();
        assert_eq!(WalSegment::containing(tli(1), start, SegmentSize::DEFAULT).number, 3);
        assert_eq!(WalSegment::containing(tli(1), Lsn(start.as_u64() - 1), SegmentSize::DEFAULT).number, 2);
        assert_eq!(WalSegment::containing(tli(1), lsn, size(1024)).name(size(1024)), "000000010000001600000002");
    }

    #[test]
    fn the_highest_name_parses() {
        for mib in [1, 16, 1024] {
            let size = size(mib);
            let last = format!("FFFFFFFFFFFFFFFF{:08X}", size.segments_per_id() - 1);
            let segment = WalSegment::parse(&last, size).unwrap();
            assert_eq!(segment.name(size), last);
            assert_eq!(segment.start_lsn(size).as_u64(), u64::MAX - u64::from(size.bytes()) + 1);
        }
    }

    #[test]
    fn malformed_segment_names_are_refused() {
        for name in [
            "",
            "00000001000000000000000",   // 23 digits
            "0000000100000000000000001", // 25 digits
            "00000000000000000000000A",  // timeline 0
            "000000010000000000000100",  // low part 0x100 >= 256
            "00000001000000000000000G",
            "0000000100000000 0000001",
            "+00000010000000000000001",
            "00000001000000000000001é",
        ] {
            assert!(WalSegment::parse(name, SegmentSize::DEFAULT).is_err(), "{name:?} accepted");
        }
        let message = WalSegment::parse("000000010000000000000100", SegmentSize::DEFAULT).unwrap_err().to_string();
        assert!(message.contains("000000010000000000000100") && message.contains("16 MiB"), "{message}");
    }

    #[test]
    fn other_archived_files_are_recognised() {
        let size = SegmentSize::DEFAULT;
        let segment = WalSegment::new(tli(1), 2);
        assert_eq!(WalFile::parse("00000002.history", size).unwrap(), WalFile::History(tli(2)));
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup", size).unwrap(),
            WalFile::BackupHistory { segment, offset: 0x28 }
        );
        assert_eq!(WalFile::parse("000000010000000000000002.partial", size).unwrap(), WalFile::Partial(segment));
        assert_eq!(WalFile::parse("000000010000000000000002", size).unwrap(), WalFile::Segment(segment));
        for file in [
            WalFile::History(tli(0x1F)),
            WalFile::BackupHistory { segment, offset: 0x00FF_FFF8 },
            WalFile::Partial(segment),
            WalFile::Segment(segment),
        ] {
            assert_eq!(WalFile::parse(&file.name(size), size).unwrap(), file);
        }
        assert_eq!(WalFile::History(tli(0x1F)).name(size), "0000001F.history");
        assert_eq!(
            WalFile::BackupHistory { segment, offset: 0x28 }.name(size),
            "000000010000000000000002.00000028.backup"
        );
        assert_eq!(WalFile::History(tli(2)).segment(), None);
        assert_eq!(WalFile::Partial(segment).timeline(), tli(1));
    }

    #[test]
    fn malformed_other_names_are_refused() {
        let size = SegmentSize::DEFAULT;
        for name in [
            "00000000.history",
            "1.history",
            "0000000G.history",
            ".history",
            "000000010000000000000002.backup",
            "000000010000000000000002.28.backup",
            "000000010000000000000002.01000000.backup", // offset 16 MiB: beyond the segment
            "00000001000000000000002.00000028.backup",
            "000000010000000000000100.partial",
            "000000010000000000000002.partial.partial",
            "RECOVERYXLOG",
            "archive_status",
            "000000010000000000000002.tmp",
        ] {
            assert!(WalFile::parse(name, size).is_err(), "{name:?} accepted");
        }
    }
}
