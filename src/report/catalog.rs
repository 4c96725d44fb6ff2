//! The views of a cluster's catalog: [`ListView`] (`list --json`) and [`DeleteView`]
//! (`delete --json`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Document;
use super::backup::{Detail, EntryView};
use super::wal::WalArchiveView;
use crate::catalog::audit::{Problem, Verification};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{Deleted, Entry};
use crate::wal::check::ArchiveReport;

/// Every backup and dump of a cluster, its WAL archive and what is wrong with the repository.
#[derive(Debug, Clone, Serialize)]
pub struct ListView {
    pub cluster: String,
    pub location: String,
    /// Oldest first, each a backup or dump view without its details.
    pub backups: Vec<EntryView>,
    pub wal: WalArchiveView,
    /// Objects that are missing, altered, damaged or not recorded in the journal.
    pub problems: Vec<Problem>,
    /// Each configured copy (`[[copies]]`) and which of these backups and dumps it holds complete;
    /// empty when none is configured, or when listing a copy.
    pub copies: Vec<super::copy::CopyHoldings>,
}

impl Document for ListView {
    fn schema(&self) -> &'static str {
        "list/1"
    }
}

impl ListView {
    pub fn new(
        layout: &ClusterLayout,
        entries: &[Entry],
        verifications: &BTreeMap<BackupId, Verification>,
        wal: &ArchiveReport,
        problems: &[Problem],
    ) -> ListView {
        ListView {
            cluster: wal.cluster.clone(),
            location: wal.location.clone(),
            backups: entries
                .iter()
                .map(|entry| EntryView::new(entry, layout, Some(wal), verifications.get(&entry.id()), Detail::Summary))
                .collect(),
            wal: WalArchiveView::new(wal),
            problems: problems.to_vec(),
            copies: Vec::new(),
        }
    }
}

/// What `delete` removed.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteView {
    pub cluster: String,
    pub id: String,
    /// `"full"` or `"dump"`.
    pub kind: &'static str,
    /// Objects removed, the manifest and verification reports included, and their stored bytes.
    pub objects: usize,
    pub bytes: u64,
    /// Of those objects, verification reports.
    pub reports: usize,
}

impl Document for DeleteView {
    fn schema(&self) -> &'static str {
        "delete/1"
    }
}

impl DeleteView {
    pub fn new(layout: &ClusterLayout, deleted: &Deleted) -> DeleteView {
        DeleteView {
            cluster: layout.name().to_string(),
            id: deleted.id.to_string(),
            kind: deleted.id.kind().as_str(),
            objects: deleted.objects,
            bytes: deleted.bytes,
            reports: deleted.reports,
        }
    }
}
