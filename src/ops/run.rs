//! The operations themselves: each one emits its start, runs the library code under the
//! context's cancellation, and emits its end with what it created or deleted ([`run_operation`]).
//! Backup, dump, restore and verify also emit their progress while they work
//! ([`reporting_progress`]), read from the counters the library code advances.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::OpContext;
use super::event::{Event, Operation, Outcome, Totals};
use crate::backup::{BackupError, BackupOptions, BackupSummary};
use crate::catalog::audit::{self, Problem};
use crate::catalog::id::BackupId;
use crate::catalog::lease::{self, LeaseWait, WaitObserver};
use crate::catalog::listing::{self, CatalogError, Deleted};
use crate::dump::{DumpError, DumpRequest, Progress, Selection};
use crate::format::dump_manifest::DumpManifest;
use crate::format::verify_report::VerifyReport;
use crate::keys::Unlock;
use crate::keys::slots::KeySlot;
use crate::restore::{RestoreError, RestoreOptions, RestoreSummary};
use crate::storage::StorageError;
use crate::verify::{Step, VerifyError, VerifyOptions};
use crate::wal::check::{ArchiveReport, CheckError};
use crate::wal::push::{PushError, Pushed};

/// How often a running operation's progress goes to the event sink: often enough for a live bar;
/// the sink logs it at its own, slower rate ([`super::event::PROGRESS_LOG_INTERVAL`]).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The operation stopped because its context was cancelled; `message` says what it left.
    #[error("{message}")]
    Cancelled { operation: &'static str, reason: String, message: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("dump of cluster {cluster:?} failed")]
    Dump { cluster: String, source: DumpError },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    DumpRestore(#[from] crate::restore::dump::RestoreError),
    #[error("restore of database {database:?} from dump {dump} failed")]
    DumpRestoreFailed { database: String, dump: BackupId, source: crate::restore::dump::RestoreError },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Expire(#[from] super::expire::ExpireError),
    #[error(transparent)]
    Open(#[from] super::OpenError),
    #[error(transparent)]
    Copy(#[from] super::copy::CopyError),
    #[error(transparent)]
    Repository(#[from] crate::repository::RepositoryError),
    #[error(
        "cluster {cluster:?} has no backups or dumps in {location} to verify; take one with `lifeboat backup` or \
         `lifeboat dump`"
    )]
    NothingToVerify { cluster: String, location: String },
}

impl From<StorageError> for OpError {
    fn from(error: StorageError) -> Self {
        OpError::Catalog(CatalogError::from(error))
    }
}

/// Emits the start, runs `work` (raced against cancellation unless `watches_cancel`: the
/// operation then stops at its own safe points), and emits the end. `judge` turns a result into
/// the totals and the outcome (a verification that ran but failed is a failed operation).
pub(super) async fn run_operation<T>(
    context: &OpContext,
    operation: Operation,
    arguments: BTreeMap<String, String>,
    watches_cancel: bool,
    work: impl Future<Output = Result<T, OpError>>,
    judge: impl FnOnce(&T) -> (Totals, Outcome),
) -> Result<T, OpError> {
    let began = Instant::now();
    context.events.emit(Event::Started { operation, arguments: arguments.clone() }).await;
    // The lease waits of the work arrive from inside it, synchronously; they are emitted here.
    let (waits_sender, mut waits) = tokio::sync::mpsc::unbounded_channel();
    let observer: WaitObserver = Arc::new(move |wait: &LeaseWait| {
        let _ = waits_sender.send(wait.clone());
    });
    let observed = lease::observing_waits(observer, work);
    tokio::pin!(observed);
    let working = async {
        loop {
            tokio::select! {
                result = &mut observed => break result,
                Some(wait) = waits.recv() => context.events.emit(lease_event(operation, wait)).await,
            }
        }
    };
    let result = if watches_cancel {
        working.await
    } else {
        tokio::select! {
            result = working => result,
            reason = context.cancel.cancelled() => Err(OpError::Cancelled {
                operation: operation.as_str(),
                message: format!("{} was cancelled ({reason}) before it finished", operation.as_str()),
                reason,
            }),
        }
    };
    while let Ok(wait) = waits.try_recv() {
        context.events.emit(lease_event(operation, wait)).await;
    }
    let result = match result {
        Err(error) if context.cancel.is_cancelled() && !matches!(error, OpError::Cancelled { .. }) => {
            Err(OpError::Cancelled {
                operation: operation.as_str(),
                reason: context.cancel.reason(),
                message: error.to_string(),
            })
        }
        other => other,
    };
    let (totals, outcome) = match &result {
        Ok(value) => judge(value),
        Err(OpError::Cancelled { reason, .. }) => (Totals::default(), Outcome::Cancelled { reason: reason.clone() }),
        Err(error) => (Totals::default(), Outcome::Failed { error: error.to_string() }),
    };
    context.events.emit(Event::Finished { operation, arguments, outcome, duration: began.elapsed(), totals }).await;
    result
}

/// The event of one lease wait of `operation`.
fn lease_event(operation: Operation, wait: LeaseWait) -> Event {
    let lock = wait.lock_name().to_owned();
    match wait {
        LeaseWait::Began { holder, .. } => Event::LeaseWaiting {
            operation,
            lock,
            host: holder.host.clone(),
            pid: holder.pid,
            holder: holder.to_string(),
        },
        LeaseWait::Ended { holder, waited, acquired, .. } => {
            Event::LeaseWaited { operation, lock, holder: holder.to_string(), waited, acquired }
        }
    }
}

/// A count of bytes done, and the total when known.
type Count = (u64, Option<u64>);

/// Runs `work`, emitting the count `read` gives every [`PROGRESS_INTERVAL`], changed or not (a
/// count that stands still still shows the operation is alive, in the periodic log line too),
/// and, once the work succeeded, the final count `last` gives (none: the work counted nothing).
async fn reporting_progress<T>(
    context: &OpContext,
    operation: Operation,
    read: impl Fn() -> Count,
    work: impl Future<Output = Result<T, OpError>>,
    last: impl FnOnce(&T) -> Option<Count>,
) -> Result<T, OpError> {
    let progressed = |(bytes_done, bytes_total): Count| Event::Progressed { operation, bytes_done, bytes_total };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tick.tick() => context.events.emit(progressed(read())).await,
        }
    };
    if let Some(count) = result.as_ref().ok().and_then(last) {
        context.events.emit(progressed(count)).await;
    }
    result
}

/// Runs `work`, emitting each step it enters (`steps`) as the operation's phase, in order.
async fn reporting_steps<T>(
    context: &OpContext,
    operation: Operation,
    mut steps: mpsc::UnboundedReceiver<Step>,
    work: impl Future<Output = Result<T, OpError>>,
) -> Result<T, OpError> {
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            Some(step) = steps.recv() => {
                context.events.emit(Event::PhaseChanged { operation, phase: step.as_str() }).await;
            }
        }
    };
    // Steps entered just before the work ended (cleaning up) are still told.
    while let Ok(step) = steps.try_recv() {
        context.events.emit(Event::PhaseChanged { operation, phase: step.as_str() }).await;
    }
    result
}

/// A total that is 0 is not known yet.
fn known(total: u64) -> Option<u64> {
    (total > 0).then_some(total)
}

pub(super) fn arguments<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().filter(|(_, value)| !value.is_empty()).map(|(key, value)| (key.to_owned(), value)).collect()
}

/// Takes a base backup (`options.cancel` and `options.progress` are the context's).
pub async fn backup(context: &OpContext, mut options: BackupOptions) -> Result<BackupSummary, OpError> {
    options.cancel = context.cancel.token().clone();
    let progress = options.progress.clone();
    let arguments = arguments([
        ("method", options.method.as_str().to_owned()),
        ("incremental", options.incremental.to_string()),
        ("workers", options.workers.to_string()),
        ("label", options.label.clone().unwrap_or_default()),
    ]);
    let copied = || progress.bytes.load(Ordering::Relaxed);
    let work = reporting_progress(
        context,
        Operation::Backup,
        || (copied(), known(progress.bytes_total.load(Ordering::Relaxed))),
        async {
            crate::backup::run(&context.config, context.repository.clone(), &options).await.map_err(OpError::from)
        },
        |summary: &BackupSummary| Some((copied(), Some(summary.manifest.totals.bytes))),
    );
    run_operation(context, Operation::Backup, arguments, true, work, |summary: &BackupSummary| {
        let totals = Totals {
            bytes: summary.manifest.totals.bytes,
            created: vec![summary.manifest.id.to_string()],
            deleted: summary.removed_orphans.iter().map(|orphans| orphans.id.to_string()).collect(),
        };
        (totals, Outcome::Succeeded)
    })
    .await
}

/// A backup and, with `verify`, its verification.
pub struct BackupAndVerify {
    pub summary: BackupSummary,
    pub verification: Option<VerifyReport>,
}

/// "Backup, then verify it": `backup --verify`.
pub async fn backup_then_verify(
    context: &OpContext,
    options: BackupOptions,
    verify: Option<&VerifyOptions>,
) -> Result<BackupAndVerify, OpError> {
    let summary = backup(context, options).await?;
    let verification = match verify {
        Some(verify_options) => Some(verify_one(context, summary.manifest.id, verify_options).await?),
        None => None,
    };
    Ok(BackupAndVerify { summary, verification })
}

/// Takes logical dumps; `progress` hears of each database as it is done (the caller renders it).
pub async fn dump(
    context: &OpContext,
    request: &DumpRequest,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<DumpManifest, OpError> {
    let selection = match &request.selection {
        Selection::All => "all".to_owned(),
        Selection::Databases(names) => names.join(","),
    };
    // A dump's size is known a database at a time, as each one is stored.
    let stored = AtomicU64::new(0);
    let mut on_progress = |event: Progress<'_>| {
        match &event {
            Progress::Started { .. } => {}
            Progress::GlobalsDone(globals) => {
                stored.fetch_add(globals.object.size, Ordering::Relaxed);
            }
            Progress::DatabaseDone(database) => {
                stored.fetch_add(database.object.size, Ordering::Relaxed);
            }
        }
        progress(event);
    };
    let dumping = async {
        crate::dump::dump(context.repository.clone(), &context.config.cluster, request, &mut on_progress)
            .await
            .map_err(|source| OpError::Dump { cluster: context.config.cluster.name.as_str().to_owned(), source })
    };
    let work = reporting_progress(
        context,
        Operation::Dump,
        || (stored.load(Ordering::Relaxed), None),
        dumping,
        |manifest: &DumpManifest| Some((stored.load(Ordering::Relaxed), Some(manifest.size()))),
    );
    run_operation(context, Operation::Dump, arguments([("databases", selection)]), false, work, |manifest| {
        let totals = Totals { bytes: manifest.size(), created: vec![manifest.id.to_string()], deleted: Vec::new() };
        (totals, Outcome::Succeeded)
    })
    .await
}

/// A dump and, with `verify`, its verification.
pub struct DumpAndVerify {
    pub manifest: DumpManifest,
    pub verification: Option<VerifyReport>,
}

/// "Dump, then verify it": `dump --verify`.
pub async fn dump_then_verify(
    context: &OpContext,
    request: &DumpRequest,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
    verify: Option<&VerifyOptions>,
) -> Result<DumpAndVerify, OpError> {
    let manifest = dump(context, request, progress).await?;
    let verification = match verify {
        Some(verify_options) => Some(verify_one(context, manifest.id, verify_options).await?),
        None => None,
    };
    Ok(DumpAndVerify { manifest, verification })
}

/// What `verify` verifies.
#[derive(Debug, Clone)]
pub enum VerifyTarget {
    /// A backup or dump id as `lifeboat list` shows it, or `latest`.
    Id(String),
    /// The newest base backup and the newest dump.
    Latest,
    /// Every backup and dump, oldest first.
    All,
}

/// The reports of a verification run, and what the repository's survey found missing or altered
/// (for one id, only what concerns it).
pub struct VerifyOutcome {
    pub reports: Vec<VerifyReport>,
    pub problems: Vec<Problem>,
}

impl VerifyOutcome {
    fn failure(&self) -> Option<String> {
        let failed: Vec<String> = self
            .reports
            .iter()
            .filter(|report| !report.passed)
            .map(|report| format!("{} ({})", report.id, report.status()))
            .collect();
        match (failed.is_empty(), self.problems.len()) {
            (true, 0) => None,
            (true, count) => Some(format!("the repository has {count} problem(s)")),
            (false, _) => Some(format!("verification failed: {}", failed.join(", "))),
        }
    }
}

/// Verifies backups and dumps by restoring them; goes on after a failed one. A failed
/// verification is a report, not an error; the outcome's audit line says failed.
pub async fn verify(
    context: &OpContext,
    target: &VerifyTarget,
    options: &VerifyOptions,
) -> Result<VerifyOutcome, OpError> {
    let (repository, layout) = (&context.repository, &context.layout);
    let ids = match target {
        VerifyTarget::Id(text) => vec![listing::resolve(repository, layout, text).await?],
        VerifyTarget::All => listing::list_ids(repository, layout).await?,
        VerifyTarget::Latest => {
            let ids = listing::list_ids(repository, layout).await?;
            let newest = |physical: bool| ids.iter().rev().find(|id| id.kind().is_physical() == physical).copied();
            [newest(true), newest(false)].into_iter().flatten().collect()
        }
    };
    if ids.is_empty() {
        return Err(OpError::NothingToVerify {
            cluster: layout.name().as_str().to_owned(),
            location: repository.location(),
        });
    }
    let work = async {
        let mut reports = Vec::new();
        for &id in &ids {
            reports.push(verify_report(context, id, options).await?);
        }
        // What was not there to verify: the repository checked against its journal (G9). With an
        // id, only what concerns that id.
        let survey = audit::survey(repository, layout).await?;
        let named: Vec<String> = if matches!(target, VerifyTarget::Id(_)) {
            ids.iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        };
        let problems = survey
            .problems
            .into_iter()
            .filter(|problem| named.is_empty() || named.iter().any(|id| problem.key.contains(id.as_str())))
            .collect();
        Ok(VerifyOutcome { reports, problems })
    };
    run_operation(context, Operation::Verify, verify_arguments(target, &ids, options), true, work, |outcome| {
        let totals =
            Totals { bytes: outcome.reports.iter().map(|report| report.integrity.bytes).sum(), ..Totals::default() };
        (totals, outcome.failure().map_or(Outcome::Succeeded, |error| Outcome::Failed { error }))
    })
    .await
}

/// One verification, audited as its own operation (after a backup or dump).
async fn verify_one(context: &OpContext, id: BackupId, options: &VerifyOptions) -> Result<VerifyReport, OpError> {
    let target = VerifyTarget::Id(id.to_string());
    let work = verify_report(context, id, options);
    run_operation(context, Operation::Verify, verify_arguments(&target, &[id], options), true, work, |report| {
        let outcome = if report.passed {
            Outcome::Succeeded
        } else {
            Outcome::Failed { error: format!("verification of {} {}", report.id, report.status()) }
        };
        (Totals { bytes: report.integrity.bytes, ..Totals::default() }, outcome)
    })
    .await
}

fn verify_arguments(target: &VerifyTarget, ids: &[BackupId], options: &VerifyOptions) -> BTreeMap<String, String> {
    let which = match target {
        VerifyTarget::Id(text) => text.clone(),
        VerifyTarget::Latest => "latest".to_owned(),
        VerifyTarget::All => "all".to_owned(),
    };
    arguments([
        ("target", which),
        ("ids", ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        ("mode", if options.integrity_only { "integrity" } else { "restore" }.to_owned()),
    ])
}

/// Verifies `id` under the context's cancellation, reporting the bytes it restores (or reads) and
/// the step it is at, and emits the verdict.
async fn verify_report(context: &OpContext, id: BackupId, options: &VerifyOptions) -> Result<VerifyReport, OpError> {
    let (step_sender, steps) = mpsc::unbounded_channel();
    let options = VerifyOptions { progress: Arc::default(), steps: Some(step_sender), ..options.clone() };
    let progress = options.progress.clone();
    let count = || (progress.bytes.load(Ordering::Relaxed), known(progress.bytes_total.load(Ordering::Relaxed)));
    let verifying = async {
        let cancelled = context.cancel.cancelled();
        Ok(crate::verify::verify(context.repository.clone(), &context.layout, id, &options, cancelled).await?)
    };
    let counted = reporting_progress(context, Operation::Verify, count, verifying, |_: &VerifyReport| {
        let (done, total) = count();
        total.map(|_| (done, total))
    });
    let report = reporting_steps(context, Operation::Verify, steps, counted).await?;
    context
        .events
        .emit(Event::Verdict { id: report.id.to_string(), passed: report.passed, status: report.status() })
        .await;
    Ok(report)
}

/// A physical restore (`options.cancel` is the context's).
pub async fn restore(context: &OpContext, mut options: RestoreOptions) -> Result<RestoreSummary, OpError> {
    options.cancel = context.cancel.token().clone();
    let arguments = arguments([
        ("pgdata", options.pgdata.display().to_string()),
        ("backup", options.backup.map(|id| id.to_string()).unwrap_or_default()),
        ("target", options.goal.target.to_string()),
        ("dry_run", if options.dry_run { "true".to_owned() } else { String::new() }),
    ]);
    options.progress = Arc::default();
    let progress = options.progress.clone();
    let written = || progress.bytes.load(Ordering::Relaxed);
    let restoring = async {
        crate::restore::run(context.repository.clone(), &context.layout, &options)
            .await
            .map_err(|error| super::expire::explain_refused_restore(error, &context.config.backup.retention).into())
    };
    // A dry run writes nothing: no progress to report.
    let count = || (written(), known(progress.bytes_total.load(Ordering::Relaxed)));
    let last = |summary: &RestoreSummary| (!options.dry_run).then(|| (written(), Some(summary.bytes_written)));
    let work = reporting_progress(context, Operation::Restore, count, restoring, last);
    run_operation(context, Operation::Restore, arguments, true, work, |summary| {
        (Totals { bytes: summary.bytes_written, ..Totals::default() }, Outcome::Succeeded)
    })
    .await
}

/// A logical restore of one database (or some of its tables) from dump `dump` (an id or `latest`).
pub async fn restore_dump(
    context: &OpContext,
    dump: &str,
    request: &crate::restore::dump::RestoreRequest,
    on_plan: &mut (dyn FnMut(&DumpManifest, &crate::restore::dump::Plan) + Send),
) -> Result<crate::restore::dump::RestoreReport, OpError> {
    let arguments = arguments([
        ("dump", dump.to_owned()),
        ("database", request.database.clone()),
        ("into", request.into.redacted()),
        ("tables", request.tables.join(",")),
    ]);
    let progress = crate::restore::files::Progress::default();
    let restoring = async {
        let manifest = crate::restore::dump::find_dump(&context.repository, &context.layout, dump).await?;
        progress.restart(crate::restore::dump::object_size(&manifest, &request.database).unwrap_or(0));
        let bin_dir = context.config.cluster.bin_dir.as_deref();
        let mut on_plan = |plan: &crate::restore::dump::Plan| on_plan(&manifest, plan);
        let (repository, layout) = (&context.repository, &context.layout);
        crate::restore::dump::restore(repository, layout, &manifest, bin_dir, request, &progress, &mut on_plan)
            .await
            .map_err(|source| OpError::DumpRestoreFailed {
                database: request.database.clone(),
                dump: manifest.id,
                source,
            })
    };
    // The bytes of the database's stored object read, of its size.
    let count = || (progress.bytes.load(Ordering::Relaxed), known(progress.bytes_total.load(Ordering::Relaxed)));
    let work = reporting_progress(context, Operation::Restore, count, restoring, |report| {
        Some((report.bytes, known(progress.bytes_total.load(Ordering::Relaxed))))
    });
    run_operation(context, Operation::Restore, arguments, false, work, |report| {
        (Totals { bytes: report.bytes, ..Totals::default() }, Outcome::Succeeded)
    })
    .await
}

/// Deletes backup or dump `id` (`force`: even the only full backup).
pub async fn delete(context: &OpContext, id: &str, force: bool) -> Result<Deleted, OpError> {
    let arguments =
        arguments([("id", id.to_owned()), ("force", if force { "true".to_owned() } else { String::new() })]);
    let lock_wait = context.config.backup.lock_wait;
    let work = async { Ok(listing::delete(context.repository.clone(), &context.layout, id, force, lock_wait).await?) };
    run_operation(context, Operation::Delete, arguments, false, work, |deleted| {
        (
            Totals { bytes: deleted.bytes, created: Vec::new(), deleted: vec![deleted.id.to_string()] },
            Outcome::Succeeded,
        )
    })
    .await
}

/// Archives one WAL file (PostgreSQL's archive_command), compressed by `compression_workers`
/// zstd threads (0: on the sealing thread).
pub async fn wal_push(context: &OpContext, path: &Path, compression_workers: u32) -> Result<Pushed, OpError> {
    let arguments = arguments([("path", path.display().to_string())]);
    let work = async {
        let options = crate::wal::push::write_options(&context.config, compression_workers);
        let pushed = crate::wal::push::push(&context.repository, &context.layout, path, options).await?;
        context
            .events
            .emit(Event::WalPushed {
                segment: pushed.name.clone(),
                bytes: pushed.bytes,
                already_archived: pushed.already_archived,
            })
            .await;
        Ok(pushed)
    };
    run_operation(context, Operation::WalPush, arguments, false, work, |pushed| {
        let created = if pushed.already_archived { Vec::new() } else { vec![pushed.name.clone()] };
        (Totals { bytes: pushed.bytes, created, deleted: Vec::new() }, Outcome::Succeeded)
    })
    .await
}

/// The WAL archive per timeline, with its gaps (`wal check`).
pub async fn wal_check(context: &OpContext) -> Result<ArchiveReport, OpError> {
    let work = async { Ok(crate::wal::check::check(&context.repository, &context.layout).await?) };
    run_operation(context, Operation::WalCheck, BTreeMap::new(), false, work, |report| {
        let gaps = report.gaps().count();
        let outcome = if gaps == 0 {
            Outcome::Succeeded
        } else {
            Outcome::Failed { error: format!("the WAL archive has {gaps} gap(s)") }
        };
        (Totals::default(), outcome)
    })
    .await
}

/// A key slot removed, and how many remain.
#[derive(Debug, Clone)]
pub struct RemovedSlot {
    pub slot: KeySlot,
    pub remaining: usize,
}

/// Adds a key slot that `unlock` (a new passphrase or key file) opens. The trail records who
/// added which kind of slot; never the secret.
pub async fn key_add(context: &OpContext, unlock: &Unlock, label: &str) -> Result<KeySlot, OpError> {
    let arguments = arguments([("kind", unlock.kind().to_string()), ("label", label.to_owned())]);
    let work = async {
        // A handle of its own: changing a slot rewrites lifeboat.repo through it.
        let mut repository = context.repository.for_slot_change().await?;
        Ok(repository.add_slot(unlock, label).await?)
    };
    run_operation(context, Operation::KeyAdd, arguments, false, work, |slot: &KeySlot| {
        (Totals { created: vec![slot.id.clone()], ..Totals::default() }, Outcome::Succeeded)
    })
    .await
}

/// Removes key slot `slot_id` (the last one is refused: nothing could open the repository).
pub async fn key_remove(context: &OpContext, slot_id: &str) -> Result<RemovedSlot, OpError> {
    let arguments = arguments([("slot", slot_id.to_owned())]);
    let work = async {
        let mut repository = context.repository.for_slot_change().await?;
        let slot = repository.remove_slot(slot_id).await?;
        Ok(RemovedSlot { slot, remaining: repository.file().slots.len() })
    };
    run_operation(context, Operation::KeyRemove, arguments, false, work, |removed: &RemovedSlot| {
        (Totals { deleted: vec![removed.slot.id.clone()], ..Totals::default() }, Outcome::Succeeded)
    })
    .await
}
