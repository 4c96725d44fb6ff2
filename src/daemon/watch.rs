//! The watcher: what PostgreSQL's archiver and the repository look like, gathered into the
//! `status/1` document's [`ArchiverStatus`] and [`RepositoryStatus`].
//!
//! The same functions serve the daemon ([`run`] refreshes them into the [`DaemonState`] every
//! `daemon.watch_interval`, and at once when poked after a job) and `lifeboat status` without a
//! daemon ([`gather`]). Nothing here is fatal: a server that does not answer or a repository that
//! cannot be read is written into the status (`error`, `reachable = false`) and looked at again
//! next time. The repository facts come from the catalog code `lifeboat list --json` and
//! `lifeboat copy --json` use (the survey, the WAL check, each copy's standing), not from a second
//! reading of the stored formats.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::state::DaemonState;
use crate::catalog::audit::{self, Verification};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::wal::WalFile;
use crate::config::{Config, ConnectionString};
use crate::format::verify_report::VerifyReport;
use crate::ops::open::open_repository;
use crate::report::backup::EntryView;
use crate::report::catalog::ListView;
use crate::report::status::{
    ArchiverStatus, CopyStatus, JobStatus, RepositoryStatus, Status, StoredItem, Timeline, WalSpan,
};
use crate::repository::{REPO_FILE, Repository};
use crate::util::{round_to, seconds_between};

/// How long asking PostgreSQL may take: a server that hangs must not stall the watcher.
const ARCHIVER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Open(#[from] crate::ops::open::OpenError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::listing::CatalogError),
    #[error(transparent)]
    WalCheck(#[from] crate::wal::check::CheckError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(
        "{REPO_FILE} is gone from {location}: the repository is not there any more (moved, unmounted or \
         deleted?); check repository.url and the storage behind it"
    )]
    Gone { location: String },
    #[error(
        "PostgreSQL did not answer within {} s at {redacted}; check that the server runs and cluster.connection",
        ARCHIVER_TIMEOUT.as_secs()
    )]
    ArchiverTimeout { redacted: String },
    #[error("cannot read pg_stat_archiver: {0}")]
    Query(String),
}

/// `pg_stat_archiver`, and the `.ready` files under `<pgdata>/pg_wal/archive_status` when
/// `cluster.pgdata` is set and readable here.
pub async fn archiver(config: &Config) -> ArchiverStatus {
    let mut status = ArchiverStatus {
        checked_at: Some(Utc::now()),
        ready_files: config.cluster.pgdata.as_deref().and_then(ready_files),
        ..ArchiverStatus::default()
    };
    match tokio::time::timeout(ARCHIVER_TIMEOUT, read_archiver(&config.cluster.connection)).await {
        Ok(Ok(row)) => {
            status.archived_count = Some(row.0);
            status.last_archived_wal = row.1;
            status.last_archived_time = row.2.and_then(from_epoch);
            status.failed_count = Some(row.3);
            status.last_failed_wal = row.4;
            status.last_failed_time = row.5.and_then(from_epoch);
        }
        Ok(Err(error)) => status.error = Some(error.to_string()),
        Err(_) => {
            let redacted = config.cluster.connection.redacted();
            status.error = Some(WatchError::ArchiverTimeout { redacted }.to_string());
        }
    }
    status
}

type ArchiverRow = (i64, Option<String>, Option<f64>, i64, Option<String>, Option<f64>);

async fn read_archiver(connection: &ConnectionString) -> Result<ArchiverRow, WatchError> {
    use sqlx::Connection as _;
    let mut conn =
        crate::postgres::connect::connect(connection).await.map_err(|error| WatchError::Query(error.to_string()))?;
    // Times as epoch seconds: the driver is built without a date-time feature.
    let row = sqlx::query_as::<_, ArchiverRow>(
        "SELECT archived_count, last_archived_wal, extract(epoch FROM last_archived_time)::float8, \
         failed_count, last_failed_wal, extract(epoch FROM last_failed_time)::float8 FROM pg_stat_archiver",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|error| WatchError::Query(error.to_string()));
    let _ = conn.close().await;
    row
}

fn from_epoch(seconds: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros((seconds * 1e6).round() as i64)
}

/// Segments PostgreSQL finished and has not archived yet; `None` when the directory cannot be
/// read (another host, or another OS user's data directory).
fn ready_files(pgdata: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(pgdata.join("pg_wal").join("archive_status")).ok()?;
    Some(entries.filter_map(Result::ok).filter(|entry| entry.file_name().to_string_lossy().ends_with(".ready")).count()
        as u64)
}

/// The repository facts, read from an opened repository; an error when it cannot be read.
pub async fn repository_facts(config: &Config, repository: &Repository) -> Result<RepositoryStatus, WatchError> {
    // A local store lists a vanished directory as empty: lifeboat.repo must be there before and
    // after the look, or what was read may be the emptiness of a directory moved away meanwhile.
    still_there(repository).await?;
    let layout = ClusterLayout::new(&config.cluster.name);
    let survey = audit::survey(repository, &layout).await?;
    let wal = crate::wal::check::check(repository, &layout).await?;
    let view = ListView::new(&layout, &survey.entries, &survey.verifications, &wal, &survey.problems);
    // Each copy opened once per look: how far behind it is, and which backups and dumps it holds.
    let mut copies = Vec::new();
    let mut held_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if config.copies.opened.is_none() {
        for copy in &config.copies.list {
            let (status, holds) = copy_status(config, repository, &layout, &copy.name).await;
            for id in holds {
                held_by.entry(id.to_string()).or_default().push(copy.name.clone());
            }
            copies.push(status);
        }
    }
    let objects = repository.store().list(&layout.prefix()).await?;
    let bytes = objects.iter().map(|meta| meta.size).sum();

    // When each archived segment was stored, by name.
    let size = wal.segment_size;
    let mut stored_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut last_wal: Option<(String, Option<DateTime<Utc>>)> = None;
    for meta in objects.iter().filter(|meta| meta.key.as_str().starts_with(&layout.wal_prefix())) {
        let Some(file @ WalFile::Segment(_)) = layout.parse_wal_key(&meta.key, size) else { continue };
        let name = file.name(size);
        if let Some(modified) = meta.modified {
            stored_at.insert(name.clone(), modified);
        }
        // WAL file names sort by timeline, then position.
        if last_wal.as_ref().is_none_or(|(newest, _)| name > *newest) {
            last_wal = Some((name, meta.modified));
        }
    }
    let mut wal_spans: Vec<WalSpan> = wal
        .timelines
        .iter()
        .flat_map(|timeline| timeline.ranges.iter().map(move |range| (timeline.timeline, range)))
        .filter_map(|(timeline, range)| {
            Some(WalSpan {
                timeline: timeline.id(),
                from: *stored_at.get(&range.first)?,
                to: *stored_at.get(&range.last)?,
                first_segment: range.first.clone(),
                last_segment: range.last.clone(),
            })
        })
        .collect();
    wal_spans.sort_by_key(|span| span.from);

    let mut items: Vec<StoredItem> =
        view.backups.iter().map(|entry| stored_item(entry, &survey.verifications, &held_by)).collect();
    items.sort_by_key(|item| item.at);
    let newest = |keep: &dyn Fn(&StoredItem) -> bool| items.iter().rev().find(|item| keep(item)).cloned();

    still_there(repository).await?;
    Ok(RepositoryStatus {
        checked_at: Some(Utc::now()),
        reachable: true,
        error: None,
        newest_backup: newest(&|item| item.kind == "full"),
        newest_verified_backup: newest(&|item| item.verified == Some(true)),
        newest_dump: newest(&|item| item.kind == "dump"),
        last_archived_wal: last_wal.as_ref().map(|(name, _)| name.clone()),
        last_archived_wal_at: last_wal.and_then(|(_, at)| at),
        bytes,
        copies,
        timeline: Timeline { items, wal_spans },
    })
}

async fn still_there(repository: &Repository) -> Result<(), WatchError> {
    let repo_file = crate::storage::ObjectKey::new(REPO_FILE).expect("lifeboat.repo is a valid key");
    match repository.store().head(&repo_file).await? {
        Some(_) => Ok(()),
        None => Err(WatchError::Gone { location: repository.location() }),
    }
}

/// A backup or dump as the status reports it. A verification counts only when the journal
/// records its verdict (an unrecorded report may have been put there by someone else).
fn stored_item(
    entry: &EntryView,
    verifications: &BTreeMap<crate::catalog::id::BackupId, Verification>,
    held_by: &BTreeMap<String, Vec<String>>,
) -> StoredItem {
    let (id, kind, at, bytes, verification) = match entry {
        EntryView::Full(backup) => (&backup.id, "full", backup.stop_time, backup.stored_size, &backup.verification),
        EntryView::Dump(dump) => (&dump.id, "dump", dump.stop_time, dump.stored_size, &dump.verification),
    };
    let verification = verification.as_ref().filter(|verification| verification.status != "unreadable");
    let report =
        verifications.iter().find(|(key, _)| key.to_string() == *id).and_then(|(_, found)| found.latest.as_ref());
    StoredItem {
        id: id.clone(),
        kind: kind.to_owned(),
        at,
        bytes,
        verified: verification.map(|verification| verification.passed && verification.recorded),
        verified_at: verification.and_then(|verification| verification.verified_at),
        restore_seconds: report.filter(|report| report.passed).and_then(restore_seconds),
        copies: held_by.get(id).cloned().unwrap_or_default(),
    }
}

/// How long the verification's restore took until the data was usable: for a base backup the
/// restore and the recovery, for a dump the restores of its databases.
fn restore_seconds(report: &VerifyReport) -> Option<f64> {
    if let Some(recovery) = &report.recovery {
        return Some(round_to(recovery.total_seconds, 3));
    }
    if report.restored_databases.is_empty() {
        return None;
    }
    Some(round_to(report.restored_databases.iter().map(|database| database.seconds).sum(), 3))
}

/// How copy `name` stands, and the backups and dumps it holds.
async fn copy_status(
    config: &Config,
    primary: &Repository,
    layout: &ClusterLayout,
    name: &str,
) -> (CopyStatus, Vec<crate::catalog::id::BackupId>) {
    match crate::ops::copy::standing(config, primary, layout, name).await {
        Ok(standing) => {
            let now = Utc::now();
            let status = CopyStatus {
                name: name.to_owned(),
                reachable: true,
                error: None,
                lag_seconds: standing
                    .oldest_missing
                    .as_ref()
                    .map_or(0.0, |(_, since)| round_to(seconds_between(*since, now).max(0.0), 3)),
                oldest_missing: standing.oldest_missing.map(|(missing, _)| missing),
                backups_missing: standing.lag.backups_missing,
                wal_missing: standing.lag.wal_missing,
            };
            (status, standing.holds)
        }
        Err(error) => {
            let status = CopyStatus {
                name: name.to_owned(),
                reachable: false,
                error: Some(error.to_string()),
                ..CopyStatus::default()
            };
            (status, Vec::new())
        }
    }
}

/// The repository facts; an unreachable repository is reported as such, with what was known
/// before (`previous`) kept, so ages go on growing while it cannot be read.
fn unreachable(error: String, previous: Option<RepositoryStatus>) -> RepositoryStatus {
    RepositoryStatus {
        checked_at: Some(Utc::now()),
        reachable: false,
        error: Some(error),
        ..previous.unwrap_or_default()
    }
}

/// Every job the configuration schedules, in the order of `status/1` (backup, dump, verify,
/// expire, wal-check, then each copy), with its next run after `now`: what `lifeboat status`
/// shows when no daemon runs.
pub fn configured_jobs(config: &Config, now: DateTime<Utc>) -> Vec<JobStatus> {
    let planned = super::jobs::plan(config);
    let mut jobs = super::jobs::statuses(&planned, &[]);
    for (job, planned) in jobs.iter_mut().zip(&planned) {
        job.next_run = planned.schedule.as_ref().and_then(|schedule| schedule.next_after(now, config.daemon.timezone));
    }
    jobs
}

/// The whole `status/1` document read directly (`source = "repository"`): what `lifeboat status`
/// prints when no daemon answers.
pub async fn gather(config: &Config) -> Status {
    let (archiver, repository) = tokio::join!(archiver(config), async {
        match open_repository(config).await {
            Ok(repository) => {
                repository_facts(config, &repository).await.unwrap_or_else(|error| unreachable(error.to_string(), None))
            }
            Err(error) => unreachable(error.to_string(), None),
        }
    });
    Status {
        source: "repository".into(),
        cluster: config.cluster.name.as_str().to_owned(),
        host: crate::catalog::lease::hostname(),
        version: env!("CARGO_PKG_VERSION").into(),
        daemon: None,
        jobs: configured_jobs(config, Utc::now()),
        archiver: Some(archiver),
        repository: Some(repository),
        recent_failures: Vec::new(),
    }
}

/// What the watcher keeps between two looks.
#[derive(Default)]
struct Watcher {
    /// The repository, opened once (opening may derive a key from a passphrase, which is slow on
    /// purpose) and opened again after it could not be read or the configuration changed.
    repository: Option<Arc<Repository>>,
    /// The archiver failure last warned about (failed count, segment), so a failing archiver is
    /// logged once per new failure, not at every look.
    warned_failure: Option<(Option<i64>, Option<String>)>,
}

impl Watcher {
    async fn refresh(&mut self, config: &Config, state: &DaemonState) {
        let (archiver, repository) = tokio::join!(archiver(config), self.repository_status(config, state));
        self.warn_about(&archiver);
        state.set_archiver(archiver);
        state.set_repository(repository);
    }

    async fn repository_status(&mut self, config: &Config, state: &DaemonState) -> RepositoryStatus {
        let previous = state.snapshot().repository;
        let repository = match &self.repository {
            Some(repository) => repository.clone(),
            None => match open_repository(config).await {
                Ok(repository) => self.repository.insert(Arc::new(repository)).clone(),
                Err(error) => return self.failed(error.to_string(), previous),
            },
        };
        match repository_facts(config, &repository).await {
            Ok(status) => {
                if previous.as_ref().is_some_and(|previous| !previous.reachable) {
                    tracing::info!("the repository at {} can be read again", repository.location());
                }
                status
            }
            Err(error) => self.failed(error.to_string(), previous),
        }
    }

    fn failed(&mut self, error: String, previous: Option<RepositoryStatus>) -> RepositoryStatus {
        // Opened again next time: the storage may come back elsewhere, or with other credentials.
        self.repository = None;
        if previous.as_ref().is_none_or(|previous| previous.error.as_deref() != Some(error.as_str())) {
            tracing::warn!("cannot read the repository: {error}");
        }
        unreachable(error, previous)
    }

    fn warn_about(&mut self, archiver: &ArchiverStatus) {
        match self.archiver_news(archiver) {
            ArchiverNews::Nothing => {}
            ArchiverNews::Recovered => {
                tracing::info!(
                    segment = archiver.last_archived_wal.as_deref().unwrap_or_default(),
                    "PostgreSQL's archiver works again: it archived {}",
                    archiver.last_archived_wal.as_deref().unwrap_or("a segment")
                );
            }
            ArchiverNews::Failing => {
                let since_success = archiver
                    .last_archived_time
                    .map(|at| format!("the last success was at {at}"))
                    .unwrap_or_else(|| "it never archived a segment".to_owned());
                tracing::warn!(
                    failed_count = archiver.failed_count.unwrap_or_default(),
                    segment = archiver.last_failed_wal.as_deref().unwrap_or_default(),
                    ready_files = archiver.ready_files.unwrap_or_default(),
                    "PostgreSQL's archiver is failing: archive_command failed on {} ({} failures so far, \
                     {since_success}); WAL is not reaching the repository, so point-in-time recovery stops there. \
                     Check the server's log for archive_command's error",
                    archiver.last_failed_wal.as_deref().unwrap_or("a segment"),
                    archiver.failed_count.unwrap_or_default(),
                );
            }
        }
    }

    /// What changed about the archiver since the last look, remembering what was warned about.
    fn archiver_news(&mut self, archiver: &ArchiverStatus) -> ArchiverNews {
        if !archiver.failing() {
            return match self.warned_failure.take() {
                Some(_) => ArchiverNews::Recovered,
                None => ArchiverNews::Nothing,
            };
        }
        let failure = (archiver.failed_count, archiver.last_failed_wal.clone());
        if self.warned_failure.as_ref() == Some(&failure) {
            return ArchiverNews::Nothing;
        }
        self.warned_failure = Some(failure);
        ArchiverNews::Failing
    }
}

/// What [`Watcher::archiver_news`] found.
#[derive(Debug, PartialEq, Eq)]
enum ArchiverNews {
    Nothing,
    /// A failure not warned about yet (a new one, or the first seen).
    Failing,
    /// It archived again after failing.
    Recovered,
}

/// Refreshes the archiver and repository facts into `state` every `daemon.watch_interval` of
/// the current configuration, and at once when `poke` is notified (the scheduler pokes it after
/// each job) or the configuration changes, until `shutdown` fires. Never fails.
pub async fn run(
    mut current: watch::Receiver<super::Current>,
    state: Arc<DaemonState>,
    poke: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // The daemon's repository, already opened: no second key derivation.
    let mut watcher = Watcher { repository: Some(current.borrow().repository.clone()), ..Watcher::default() };
    let mut config_open = true;
    loop {
        let config = current.borrow_and_update().config.clone();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = watcher.refresh(&config, &state) => {}
        }
        let next_look = tokio::time::sleep(config.daemon.watch_interval);
        tokio::pin!(next_look);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut next_look => break,
                () = poke.notified() => break,
                changed = current.changed(), if config_open => match changed {
                    Ok(()) => {
                        // A new configuration may name another repository or key; the daemon
                        // has opened it.
                        watcher.repository = Some(current.borrow().repository.clone());
                        break;
                    }
                    // The configuration will not change any more; looks go on with this one.
                    Err(_) => config_open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn archiver(failed: i64, last_failed: Option<&str>, last_archived: Option<&str>) -> ArchiverStatus {
        ArchiverStatus {
            failed_count: Some(failed),
            last_failed_wal: last_failed.map(|_| format!("0000000100000000000000{failed:02}")),
            last_failed_time: last_failed.map(at),
            last_archived_time: last_archived.map(at),
            ..ArchiverStatus::default()
        }
    }

    #[test]
    fn a_failing_archiver_is_news_once_per_failure_and_its_recovery_once() {
        let mut watcher = Watcher::default();
        let ok = archiver(0, None, Some("2026-12-05T10:00:00Z"));
        assert_eq!(watcher.archiver_news(&ok), ArchiverNews::Nothing);
        let failing = archiver(3, Some("2026-12-05T10:05:00Z"), Some("2026-12-05T10:00:00Z"));
        assert!(failing.failing());
        assert_eq!(watcher.archiver_news(&failing), ArchiverNews::Failing);
        // The next looks, a minute apart, see the same failure: no new warning.
        assert_eq!(watcher.archiver_news(&failing), ArchiverNews::Nothing);
        assert_eq!(watcher.archiver_news(&failing), ArchiverNews::Nothing);
        // PostgreSQL retried and failed again: that is news.
        let again = archiver(4, Some("2026-12-05T10:06:00Z"), Some("2026-12-05T10:00:00Z"));
        assert_eq!(watcher.archiver_news(&again), ArchiverNews::Failing);
        let recovered = archiver(4, Some("2026-12-05T10:06:00Z"), Some("2026-12-05T10:07:00Z"));
        assert!(!recovered.failing());
        assert_eq!(watcher.archiver_news(&recovered), ArchiverNews::Recovered);
        assert_eq!(watcher.archiver_news(&recovered), ArchiverNews::Nothing);
        // Failures and never a success: failing.
        assert!(archiver(1, Some("2026-12-05T10:06:00Z"), None).failing());
    }
}
