//! Read-ahead for `restore --start`: while lifeboat follows the recovery it started, it downloads
//! the segments recovery will ask for next into the prefetch spool ([`super::spool`]), so each
//! `wal-fetch` (PostgreSQL's `restore_command`) serves its segment with a rename and replay never
//! waits for a download.
//!
//! A lone `wal-fetch` can only prefetch in batches that replay waits for (see [`super::fetch`]):
//! it is a process per segment, and nothing else runs. During `restore --start` lifeboat itself
//! runs until recovery ends, so it downloads here instead, one segment at a time on a core replay
//! does not use, in the order of the restore's plan (each number on the timeline the plan's history
//! gives it), from the first segment recovery reads to the last one the plan knows it needs. It
//! stays at most `depth` segments ahead of the last one the server's log reports restored, so the
//! spool never holds more than that. Read-ahead never fails a restore: a segment it could not
//! spool is downloaded by `wal-fetch` when recovery asks for it, which reports any error then.
//! When recovery ends, what is left in the spool is removed: nothing will ask for it.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fetch::spool_segment;
use super::spool::Spool;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::{SegmentSize, WalSegment};
use crate::repository::Repository;

/// The segments a restore's recovery reads, in order.
#[derive(Debug, Clone)]
pub struct RecoveryWal {
    pub history: TimelineHistory,
    pub first: u64,
    pub last: u64,
    pub size: SegmentSize,
}

/// Downloads running ahead of recovery; [`ReadAhead::stop`] ends them.
pub struct ReadAhead {
    task: JoinHandle<()>,
    spool: Spool,
    size: SegmentSize,
    /// The names of the segments put in the spool.
    spooled: Arc<Mutex<Vec<String>>>,
    /// The number of the last segment the server reported restored.
    restored: watch::Sender<u64>,
}

impl ReadAhead {
    /// Starts downloading `wal` into `spool`, at most `depth` segments ahead of recovery.
    pub fn start(
        repository: Arc<Repository>,
        layout: ClusterLayout,
        spool: Spool,
        wal: RecoveryWal,
        depth: u32,
    ) -> ReadAhead {
        let (restored, progress) = watch::channel(wal.first.saturating_sub(1));
        let size = wal.size;
        let spooled = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(read_ahead(
            Downloader { repository, layout, spool: spool.clone(), spooled: spooled.clone() },
            wal,
            u64::from(depth),
            progress,
        ));
        ReadAhead { task, spool, size, spooled, restored }
    }

    /// The server's log says it restored the file `name` (a segment, or another WAL file).
    pub fn restored(&self, name: &str) {
        if let Ok(segment) = WalSegment::parse(name, self.size) {
            self.restored.send_if_modified(|last| {
                let newer = segment.number > *last;
                *last = (*last).max(segment.number);
                newer
            });
        }
    }

    /// Stops downloading and empties the spool: recovery has ended, nothing will ask for what is
    /// left in it. Logs how many segments were read ahead and how many of them recovery took.
    pub async fn stop(self) {
        self.task.abort();
        // An aborted download removes its temporary file as it is dropped.
        let _ = self.task.await;
        let spooled = std::mem::take(&mut *self.spooled.lock().expect("the list lock is never poisoned"));
        let taken = spooled.iter().filter(|name| self.spool.length_of(name).is_none()).count();
        tracing::info!(
            "read {} WAL segments ahead of recovery into {}; recovery took {taken} of them",
            spooled.len(),
            self.spool.dir().display()
        );
        if let Err(error) = self.spool.clear() {
            tracing::debug!(%error, "could not empty the spool {}", self.spool.dir().display());
        }
    }
}

/// What the read-ahead task downloads with, and where it notes what it spooled.
struct Downloader {
    repository: Arc<Repository>,
    layout: ClusterLayout,
    spool: Spool,
    spooled: Arc<Mutex<Vec<String>>>,
}

async fn read_ahead(downloader: Downloader, wal: RecoveryWal, depth: u64, mut restored: watch::Receiver<u64>) {
    let Downloader { repository, layout, spool, spooled } = downloader;
    for number in wal.first..=wal.last {
        // Wait until recovery is close enough; a segment it has passed is not needed any more.
        let Ok(last) = restored.wait_for(|&last| number <= last.saturating_add(depth)).await.map(|last| *last) else {
            return;
        };
        if number <= last {
            continue;
        }
        let segment = wal.history.segment(number, wal.size);
        let name = segment.name(wal.size);
        if spool.length_of(&name) == Some(u64::from(wal.size.bytes())) {
            continue;
        }
        match spool_segment(&repository, &layout, &spool, segment, wal.size).await {
            Ok(true) => {
                tracing::trace!("read ahead {name}");
                spooled.lock().expect("the list lock is never poisoned").push(name);
            }
            Ok(false) => {
                tracing::debug!("read-ahead stops at {name}: not in the archive");
                return;
            }
            Err(error) => {
                tracing::debug!("read-ahead stops: {error}; wal-fetch downloads the rest");
                return;
            }
        }
    }
}
