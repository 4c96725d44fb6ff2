//! The view of a cluster's WAL archive (`wal check --json`, and `wal` in `list --json`): the
//! archive report as [`crate::wal::check`] builds it (its fields are the documented shape), and
//! the count of gaps.

use serde::Serialize;

use super::Document;
use crate::wal::check::ArchiveReport;

#[derive(Debug, Clone, Serialize)]
pub struct WalArchiveView {
    #[serde(flatten)]
    pub archive: ArchiveReport,
    /// Gaps on all timelines together.
    pub gaps: usize,
}

impl Document for WalArchiveView {
    fn schema(&self) -> &'static str {
        "wal-archive/1"
    }
}

impl WalArchiveView {
    pub fn new(report: &ArchiveReport) -> WalArchiveView {
        WalArchiveView { archive: report.clone(), gaps: report.gaps().count() }
    }
}
