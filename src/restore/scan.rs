//! Reading archived WAL to place a target before a restore: where a transaction committed or a
//! restore point was made, and when the last transaction in the archive finished. Segments are
//! downloaded a few at a time ahead of the scanner.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::RestoreError;
use super::plan::TargetPosition;
use super::target::RecoveryTarget;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::repository::Repository;
use crate::wal::records::{WalEvent, WalScanner};

/// Segments downloaded ahead of the one being scanned.
const READ_AHEAD: usize = 4;

/// One segment's download.
type Download = tokio::task::JoinHandle<Result<Vec<u8>, RestoreError>>;

/// Segments along a history, fetched in order with a few in flight.
struct SegmentFeed {
    repository: Arc<Repository>,
    layout: ClusterLayout,
    size: SegmentSize,
    pending: VecDeque<(WalSegment, Download)>,
    upcoming: VecDeque<WalSegment>,
}

impl SegmentFeed {
    fn new(
        repository: Arc<Repository>,
        layout: ClusterLayout,
        size: SegmentSize,
        segments: impl IntoIterator<Item = WalSegment>,
    ) -> SegmentFeed {
        let mut feed = SegmentFeed {
            repository,
            layout,
            size,
            pending: VecDeque::new(),
            upcoming: segments.into_iter().collect(),
        };
        feed.fill();
        feed
    }

    fn fill(&mut self) {
        while self.pending.len() < READ_AHEAD {
            let Some(segment) = self.upcoming.pop_front() else { return };
            let key = self.layout.wal_file(&WalFile::Segment(segment), self.size);
            let repository = self.repository.clone();
            let task = tokio::spawn(async move {
                repository.get_bytes(&key).await.map_err(|error| RestoreError::WalScan {
                    detail: format!("cannot read archived WAL {key}: {error}"),
                })
            });
            self.pending.push_back((segment, task));
        }
    }

    async fn next(&mut self) -> Option<Result<(WalSegment, Vec<u8>), RestoreError>> {
        let (segment, task) = self.pending.pop_front()?;
        self.fill();
        Some(task.await.expect("segment downloads do not panic").map(|bytes| (segment, bytes)))
    }
}

impl Drop for SegmentFeed {
    fn drop(&mut self) {
        for (_, task) in &self.pending {
            task.abort();
        }
    }
}

/// Finds the record an xid or name target stops at, scanning segment numbers `first..=last`
/// along `history`.
pub async fn find_record(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    size: SegmentSize,
    history: &TimelineHistory,
    first: u64,
    last: u64,
    target: &RecoveryTarget,
) -> Result<TargetPosition, RestoreError> {
    let segments = (first..=last).map(|number| history.segment(number, size));
    let mut feed = SegmentFeed::new(repository, layout.clone(), size, segments);
    let mut scanner = WalScanner::new(size);
    while let Some(next) = feed.next().await {
        let (segment, bytes) = next?;
        for event in scan(&mut scanner, segment, &bytes)? {
            let found = match (&event, target) {
                (
                    WalEvent::Commit { xid, lsn, end, .. } | WalEvent::Abort { xid, lsn, end, .. },
                    RecoveryTarget::Xid(want),
                ) => (xid == want).then_some((*lsn, *end)),
                (WalEvent::RestorePoint { name, lsn, end, .. }, RecoveryTarget::Name(want)) => {
                    (name == want).then_some((*lsn, *end))
                }
                _ => None,
            };
            if let Some((lsn, end)) = found {
                return Ok(TargetPosition::Record { lsn, end });
            }
        }
    }
    Ok(TargetPosition::LastTransaction(None))
}

/// When the last transaction in segments `first..=last` along `history` finished, scanning
/// backwards from `last` and stopping at the first segment with one. Each segment is scanned
/// together with the one after it (already downloaded), so a record that crosses into a segment
/// is seen whole; the downloads run ahead backwards.
pub async fn last_transaction(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    size: SegmentSize,
    history: &TimelineHistory,
    first: u64,
    last: u64,
) -> Result<Option<DateTime<Utc>>, RestoreError> {
    let newest_first = (first..=last).rev().map(|number| history.segment(number, size));
    let mut feed = SegmentFeed::new(repository, layout.clone(), size, newest_first);
    let mut later: Option<(WalSegment, Vec<u8>)> = None;
    while let Some(next) = feed.next().await {
        let (segment, bytes) = next?;
        let mut scanner = WalScanner::new(size);
        let mut latest: Option<DateTime<Utc>> = None;
        let window = std::iter::once((segment, bytes.as_slice()))
            .chain(later.as_ref().map(|(segment, bytes)| (*segment, bytes.as_slice())));
        for (segment, bytes) in window {
            for event in scan(&mut scanner, segment, bytes)? {
                if let WalEvent::Commit { time, .. } | WalEvent::Abort { time, .. } = event {
                    latest = Some(latest.map_or(time, |seen| seen.max(time)));
                }
            }
        }
        if latest.is_some() {
            return Ok(latest);
        }
        later = Some((segment, bytes));
    }
    Ok(None)
}

/// The events of one more segment.
fn scan(scanner: &mut WalScanner, segment: WalSegment, bytes: &[u8]) -> Result<Vec<WalEvent>, RestoreError> {
    scanner.feed(segment, bytes).map_err(|error| RestoreError::WalScan { detail: error.to_string() })
}
