//! `wal check`: the archived WAL of a cluster per timeline, as contiguous ranges, and the gaps
//! between them, each named by its first missing segment (the one recovery would stop at).
//!
//! For now every timeline is checked from its first archived segment to its last. (Once backups
//! exist, the check narrows to the WAL a kept backup needs.)

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::cluster::{ClusterRecord, IdentityError, SystemIdentifier};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lsn::Timeline;
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::repository::{Repository, RepositoryError};
use crate::storage::ObjectKey;

/// The state of a cluster's WAL archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    pub cluster: String,
    pub location: String,
    /// From the cluster record; `None` when nothing was ever pushed.
    pub system_identifier: Option<SystemIdentifier>,
    /// PostgreSQL major versions that archived, from the cluster record.
    pub postgres_versions: Vec<String>,
    pub segment_size: SegmentSize,
    pub timelines: Vec<TimelineReport>,
    /// `00000002.history`, ...
    pub history_files: Vec<String>,
    /// Keys under `wal/` that are not WAL files lifeboat writes (left by hand, or by another tool).
    pub unrecognised: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    pub timeline: Timeline,
    /// Number of complete segments archived on this timeline.
    pub segments: u64,
    /// Runs of consecutive segments, in order.
    pub ranges: Vec<SegmentRange>,
    /// What is missing between the ranges.
    pub gaps: Vec<Gap>,
    /// `.partial` segments (the end of the timeline, archived at a promotion).
    pub partial: Vec<String>,
    /// Backup history files (`<segment>.<offset>.backup`).
    pub backup_history: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRange {
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// The segment numbers of `first` and `last`, for lookups without parsing the names.
    #[serde(skip)]
    pub numbers: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The segment recovery would stop at.
    pub first_missing: String,
    pub last_missing: String,
    pub missing: u64,
}

impl ArchiveReport {
    /// Builds the report from the keys listed under the cluster's `wal/` prefix.
    pub fn from_keys(
        layout: &ClusterLayout,
        location: String,
        record: Option<&ClusterRecord>,
        keys: impl IntoIterator<Item = ObjectKey>,
    ) -> ArchiveReport {
        let size = record.map_or(SegmentSize::DEFAULT, |record| record.wal_segment_size);
        let mut timelines: BTreeMap<Timeline, (Vec<WalSegment>, TimelineReport)> = BTreeMap::new();
        let mut history_files = Vec::new();
        let mut unrecognised = Vec::new();
        for key in keys {
            let Some(file) = layout.parse_wal_key(&key, size) else {
                unrecognised.push(key.to_string());
                continue;
            };
            if let WalFile::History(_) = file {
                history_files.push(file.name(size));
                continue;
            }
            let timeline = file.timeline();
            let (segments, report) =
                timelines.entry(timeline).or_insert_with(|| (Vec::new(), TimelineReport::empty(timeline)));
            match file {
                WalFile::Segment(segment) => segments.push(segment),
                WalFile::Partial(_) => report.partial.push(file.name(size)),
                WalFile::BackupHistory { .. } => report.backup_history.push(file.name(size)),
                WalFile::History(_) => unreachable!("handled above"),
            }
        }
        let timelines = timelines
            .into_values()
            .map(|(mut segments, mut report)| {
                segments.sort();
                segments.dedup();
                report.fill_ranges(&segments, size);
                report
            })
            .collect();
        ArchiveReport {
            cluster: layout.name().to_string(),
            location,
            system_identifier: record.map(|record| record.system_identifier),
            postgres_versions: record.map(|record| record.postgres_versions.clone()).unwrap_or_default(),
            segment_size: size,
            timelines,
            history_files,
            unrecognised,
        }
    }

    /// Whether nothing was ever archived (no segment, no history file).
    pub fn is_empty(&self) -> bool {
        self.timelines.is_empty() && self.history_files.is_empty()
    }

    /// Every gap, with its timeline.
    pub fn gaps(&self) -> impl Iterator<Item = (Timeline, &Gap)> {
        self.timelines.iter().flat_map(|timeline| timeline.gaps.iter().map(|gap| (timeline.timeline, gap)))
    }

    /// The last segment number of the run of archived segments on `timeline` that holds segment
    /// number `number`; `None` when that segment is not archived.
    pub fn run_end(&self, timeline: Timeline, number: u64) -> Option<u64> {
        let report = self.timelines.iter().find(|report| report.timeline == timeline)?;
        report
            .ranges
            .iter()
            .find(|range| range.numbers.0 <= number && number <= range.numbers.1)
            .map(|range| range.numbers.1)
    }

    /// The first segment from `first` to `last` (same timeline) that is not archived, if any.
    pub fn first_missing(&self, first: WalSegment, last: WalSegment) -> Option<WalSegment> {
        let mut number = first.number;
        while number <= last.number {
            match self.run_end(first.timeline, number) {
                Some(end) => number = end + 1,
                None => return Some(WalSegment::new(first.timeline, number)),
            }
        }
        None
    }
}

impl TimelineReport {
    fn empty(timeline: Timeline) -> TimelineReport {
        TimelineReport {
            timeline,
            segments: 0,
            ranges: Vec::new(),
            gaps: Vec::new(),
            partial: Vec::new(),
            backup_history: Vec::new(),
        }
    }

    /// `segments` sorted and without duplicates.
    fn fill_ranges(&mut self, segments: &[WalSegment], size: SegmentSize) {
        self.segments = segments.len() as u64;
        let mut start = 0;
        for index in 1..=segments.len() {
            let run_ends = index == segments.len() || segments[index].number != segments[index - 1].number + 1;
            if !run_ends {
                continue;
            }
            let (first, last) = (segments[start], segments[index - 1]);
            self.ranges.push(SegmentRange {
                first: first.name(size),
                last: last.name(size),
                segments: last.number - first.number + 1,
                numbers: (first.number, last.number),
            });
            if index < segments.len() {
                let next = segments[index];
                self.gaps.push(Gap {
                    first_missing: last.next().name(size),
                    last_missing: WalSegment::new(next.timeline, next.number - 1).name(size),
                    missing: next.number - last.number - 1,
                });
            }
            start = index;
        }
    }
}

/// Lists the cluster's archived WAL and reports its ranges and gaps.
pub async fn check(repository: &Repository, layout: &ClusterLayout) -> Result<ArchiveReport, CheckError> {
    let record = ClusterRecord::read(repository, layout).await?;
    let listing = repository.store().list(&layout.wal_prefix()).await.map_err(RepositoryError::from)?;
    Ok(ArchiveReport::from_keys(
        layout,
        repository.location(),
        record.as_ref(),
        listing.into_iter().map(|meta| meta.key),
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Identity(#[from] IdentityError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;

    fn layout() -> ClusterLayout {
        ClusterLayout::new(&ClusterName::parse("main").unwrap())
    }

    #[test]
    fn first_missing_names_the_first_segment_not_archived() {
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let size = SegmentSize::DEFAULT;
        let one = Timeline::FIRST;
        let segment = |number| WalSegment::new(one, number);
        let keys = [1, 2, 3, 5, 6].map(|number| layout.wal_file(&WalFile::Segment(segment(number)), size));
        let report = ArchiveReport::from_keys(&layout, "test".into(), None, keys);
        assert_eq!(report.first_missing(segment(1), segment(3)), None);
        assert_eq!(report.first_missing(segment(2), segment(2)), None);
        assert_eq!(report.first_missing(segment(2), segment(6)), Some(segment(4)));
        assert_eq!(report.first_missing(segment(5), segment(7)), Some(segment(7)));
        assert_eq!(report.first_missing(segment(0), segment(1)), Some(segment(0)));
        let two = WalSegment::new(Timeline::new(2).unwrap(), 1);
        assert_eq!(report.first_missing(two, two), Some(two));
    }

    fn key(text: &str) -> ObjectKey {
        ObjectKey::new(format!("clusters/main/wal/{text}")).unwrap()
    }

    fn report(keys: &[&str]) -> ArchiveReport {
        ArchiveReport::from_keys(&layout(), "file:///repo".into(), None, keys.iter().map(|text| key(text)))
    }

    #[test]
    fn contiguous_segments_make_one_range() {
        let report = report(&[
            "00000001/000000010000000000000001",
            "00000001/000000010000000000000002",
            "00000001/000000010000000000000003",
        ]);
        assert_eq!(report.timelines.len(), 1);
        let timeline = &report.timelines[0];
        assert_eq!(timeline.segments, 3);
        assert_eq!(
            timeline.ranges,
            vec![SegmentRange {
                first: "000000010000000000000001".into(),
                last: "000000010000000000000003".into(),
                segments: 3,
                numbers: (1, 3),
            }]
        );
        assert!(timeline.gaps.is_empty());
        assert_eq!(report.gaps().count(), 0);
    }

    #[test]
    fn gaps_name_their_first_missing_segment_across_the_middle_group() {
        let report = report(&[
            "00000001/0000000100000000000000FD",
            "00000001/0000000100000000000000FE",
            // FF, 1/00 and 1/01 missing
            "00000001/000000010000000100000002",
            "00000001/000000010000000100000004", // 1/03 missing
        ]);
        let gaps: Vec<(Timeline, &Gap)> = report.gaps().collect();
        assert_eq!(gaps.len(), 2);
        assert_eq!(gaps[0].1.first_missing, "0000000100000000000000FF");
        assert_eq!(gaps[0].1.last_missing, "000000010000000100000001");
        assert_eq!(gaps[0].1.missing, 3);
        assert_eq!(gaps[1].1.first_missing, "000000010000000100000003");
        assert_eq!(gaps[1].1.missing, 1);
        assert_eq!(report.timelines[0].ranges.len(), 3);
    }

    #[test]
    fn timelines_history_and_other_files_are_reported_separately() {
        let report = report(&[
            "00000001/000000010000000000000001",
            "00000001/000000010000000000000002.partial",
            "00000001/000000010000000000000002.00000028.backup",
            "00000002.history",
            "00000002/000000020000000000000002",
            "00000002/000000020000000000000003",
            "00000001/stray-file",
        ]);
        assert_eq!(report.timelines.len(), 2);
        assert_eq!(report.timelines[0].partial, vec!["000000010000000000000002.partial"]);
        assert_eq!(report.timelines[0].backup_history, vec!["000000010000000000000002.00000028.backup"]);
        assert_eq!(report.timelines[1].ranges[0].first, "000000020000000000000002");
        assert_eq!(report.history_files, vec!["00000002.history"]);
        assert_eq!(report.unrecognised, vec!["clusters/main/wal/00000001/stray-file"]);
        assert_eq!(report.gaps().count(), 0, "each timeline is checked on its own");
    }

    #[test]
    fn json_names_fields_for_scripts() {
        let report = report(&["00000001/000000010000000000000001", "00000001/000000010000000000000003"]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["segment_size"], 16_777_216);
        assert_eq!(json["timelines"][0]["timeline"], 1);
        assert_eq!(json["timelines"][0]["gaps"][0]["first_missing"], "000000010000000000000002");
    }
}
