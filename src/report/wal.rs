//! The view of a cluster's WAL archive (`wal check --json`, and `wal` in `list --json`).

use serde::Serialize;

use super::Document;
use crate::catalog::lsn::Timeline;
use crate::catalog::wal::SegmentSize;
use crate::wal::check::{ArchiveReport, Gap, SegmentRange};

#[derive(Debug, Clone, Serialize)]
pub struct WalArchiveView {
    pub cluster: String,
    pub location: String,
    /// From the cluster record; `None` when nothing was ever archived.
    pub system_identifier: Option<String>,
    /// PostgreSQL majors that archived.
    pub postgres_versions: Vec<String>,
    /// Bytes per segment.
    pub segment_size: SegmentSize,
    pub timelines: Vec<TimelineView>,
    /// `00000002.history`, ...
    pub history_files: Vec<String>,
    /// Keys under `wal/` that are not WAL files lifeboat writes.
    pub unrecognised: Vec<String>,
    /// Gaps on all timelines together.
    pub gaps: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineView {
    /// The timeline's number.
    pub timeline: Timeline,
    /// Complete segments archived on this timeline.
    pub segments: u64,
    pub ranges: Vec<SegmentRange>,
    pub gaps: Vec<Gap>,
    /// `.partial` segments (the end of a timeline, archived at a promotion).
    pub partial: Vec<String>,
    /// Backup history files (`<segment>.<offset>.backup`).
    pub backup_history: Vec<String>,
}

impl Document for WalArchiveView {
    fn schema(&self) -> &'static str {
        "wal-archive/1"
    }
}

impl WalArchiveView {
    pub fn new(report: &ArchiveReport) -> WalArchiveView {
        WalArchiveView {
            cluster: report.cluster.clone(),
            location: report.location.clone(),
            system_identifier: report.system_identifier.map(|id| id.to_string()),
            postgres_versions: report.postgres_versions.clone(),
            segment_size: report.segment_size,
            timelines: report
                .timelines
                .iter()
                .map(|timeline| TimelineView {
                    timeline: timeline.timeline,
                    segments: timeline.segments,
                    ranges: timeline.ranges.clone(),
                    gaps: timeline.gaps.clone(),
                    partial: timeline.partial.clone(),
                    backup_history: timeline.backup_history.clone(),
                })
                .collect(),
            history_files: report.history_files.clone(),
            unrecognised: report.unrecognised.clone(),
            gaps: report.gaps().count(),
        }
    }
}
