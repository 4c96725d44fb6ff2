//! `lifeboat verify`: proving that a backup or a dump can be restored, by restoring it.
//!
//! This module owns one verification from start to cleanup:
//! - **integrity**: every object is read to its end and authenticated, every file (or dump
//!   object) hashed against the manifest; for a base backup the WAL from its start to its stop
//!   segment is read as well ([`physical`], [`logical`]);
//! - **restore test** (unless `--integrity-only`): a base backup is restored into a scratch
//!   directory and PostgreSQL recovers it to its consistent point; a dump is restored into a
//!   scratch server lifeboat starts; then `pg_amcheck` and the user's SQL checks run ([`checks`]);
//! - **cleanup**, always: the scratch server is stopped and its directory removed when the
//!   verification passes, fails, times out (`verify.timeout`) or is interrupted (Ctrl-C, SIGTERM);
//! - the **report** ([`crate::format::verify_report`]), stored in the repository unless the run was interrupted.
//!
//! A failed verification is not an error of this module: [`verify`] returns its report, with the
//! phase and cause of the failure; errors are kept for what stops a verification from being
//! attempted or recorded at all.

mod checks;
mod logical;
mod physical;
mod scratch;

pub use checks::amcheck_cluster;
pub(crate) use physical::{scratch_restore_options, write_config_files};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;

use self::scratch::Scratch;
use crate::catalog::id::BackupId;
use crate::catalog::journal::{self, JournalError};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, CatalogError, Entry};
use crate::config::{AmcheckLevel, Config, ConnectionString, SqlCheck};
use crate::format::journal_entry::{Event, Verdict};
use crate::format::verify_report::{Failure, Mode, Phase, VerifyReport};
use crate::repository::{Repository, RepositoryError};
use crate::storage::ObjectKey;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Read and authenticate everything, but restore nothing.
    pub integrity_only: bool,
    pub amcheck: AmcheckLevel,
    pub checks: Vec<SqlCheck>,
    /// Where checks without a database run: the database of `cluster.connection`.
    pub default_database: String,
    /// Role names to try first when connecting to a restored cluster (the role of
    /// `cluster.connection`); its bootstrap superuser is found from there.
    pub roles: Vec<String>,
    pub scratch_dir: PathBuf,
    /// Restore dumps into scratch databases on this server instead of a scratch cluster.
    pub dump_server: Option<ConnectionString>,
    pub timeout: Duration,
    pub workers: u32,
    pub os_user: String,
    pub bin_dir: Option<PathBuf>,
    /// Counts the bytes read (integrity only) or restored into the scratch cluster, restarted by
    /// each verification, for the caller to report progress from.
    pub progress: Arc<crate::restore::files::Progress>,
    /// Where each step the verification enters is sent, in order and none lost (a quick step
    /// still shows), for the caller to show ([`Step`]); `None` when nobody listens.
    pub steps: Option<mpsc::UnboundedSender<Step>>,
}

/// What a verification is doing, as a progress display names it. Unlike the report's
/// [`Phase`], which says where a verification failed, this says where a running one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ReadingWal,
    ReadingObjects,
    PreparingScratch,
    RestoringFiles,
    Recovering,
    RestoringDatabases,
    Amcheck,
    Checks,
    CleaningUp,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ReadingWal => "reading WAL",
            Step::ReadingObjects => "reading objects",
            Step::PreparingScratch => "preparing the scratch server",
            Step::RestoringFiles => "restoring files",
            Step::Recovering => "recovering",
            Step::RestoringDatabases => "restoring databases",
            Step::Amcheck => "running amcheck",
            Step::Checks => "running checks",
            Step::CleaningUp => "cleaning up",
        }
    }
}

impl VerifyOptions {
    /// Says the verification is now at `step`.
    fn enter(&self, step: Step) {
        if let Some(steps) = &self.steps {
            // A listener that has gone away no longer needs to know.
            let _ = steps.send(step);
        }
    }

    pub fn from_config(config: &Config) -> VerifyOptions {
        let connection = crate::postgres::connect::connect_options(&config.cluster.connection).ok();
        let default_database =
            connection.as_ref().and_then(|options| options.get_database()).unwrap_or("postgres").to_owned();
        let roles = connection.map(|options| vec![options.get_username().to_owned()]).unwrap_or_default();
        VerifyOptions {
            integrity_only: false,
            amcheck: config.verify.amcheck,
            checks: config.verify.checks.clone(),
            default_database,
            roles,
            scratch_dir: config.verify.scratch_dir.clone(),
            dump_server: config.verify.dump_server.clone(),
            timeout: config.verify.timeout,
            workers: config.backup.workers,
            os_user: config.cluster.os_user.clone(),
            bin_dir: config.cluster.bin_dir.clone(),
            progress: Arc::default(),
            steps: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),

    #[error(
        "the verification of {id} was interrupted ({signal}); its scratch server was stopped and its files \
         removed{leftover}. No report was stored"
    )]
    Interrupted { id: BackupId, signal: String, leftover: String },

    #[error("the verification of {id} finished ({status}) but its report could not be stored at {key}: {source}")]
    Store { id: BackupId, status: String, key: ObjectKey, source: RepositoryError },

    #[error("{id} was not verified: {source}")]
    Journal { id: BackupId, source: JournalError },

    #[error(
        "the verification of {id} finished ({status}), but recording its report in the cluster's journal failed, \
         so it does not count as a verification{kept}: {source}. Run it again"
    )]
    Record { id: BackupId, status: String, kept: String, source: JournalError },
}

/// What a verification needs besides its options.
pub(crate) struct Context<'a> {
    pub repository: Arc<Repository>,
    pub layout: &'a ClusterLayout,
    pub options: &'a VerifyOptions,
}

/// Verifies backup or dump `id`, cleans up, and stores the report. `interrupt` resolves (to a
/// description such as "SIGINT") when the user wants the verification stopped.
pub async fn verify(
    repository: Arc<Repository>,
    layout: &ClusterLayout,
    id: BackupId,
    options: &VerifyOptions,
    interrupt: impl Future<Output = String>,
) -> Result<VerifyReport, VerifyError> {
    let (entry, manifest_blake3) = listing::read_manifest(&repository, layout, id).await?;
    let began = Instant::now();
    let mode = if options.integrity_only { Mode::Integrity } else { Mode::Restore };
    let mut report = VerifyReport::new(id, mode, Utc::now());
    let context = Context { repository: repository.clone(), layout, options };
    let mut scratch = Scratch::default();
    tracing::info!(
        "verifying {id} ({})",
        if options.integrity_only { "integrity only" } else { "integrity and a restore test" }
    );

    // A verification whose report could not be recorded would be wasted work: find out first.
    let head =
        journal::writable_head(&repository, layout).await.map_err(|source| VerifyError::Journal { id, source })?;
    // A manifest that authenticates but is not the one the journal recorded was replaced (by
    // someone holding the key): nothing it says can be trusted.
    let replaced =
        head.as_ref().and_then(|(head, _)| head.state.item(id)).filter(|item| item.manifest_blake3 != manifest_blake3);
    let outcome = {
        let work = async {
            if let Some(item) = replaced {
                return Err(Failure::new(
                    Phase::Integrity,
                    format!(
                        "the manifest {} is not the one journal entry {} recorded (its BLAKE3 differs): it was replaced",
                        listing::manifest_key(layout, id),
                        item.recorded_in
                    ),
                ));
            }
            match &entry {
                Entry::Physical(manifest) => physical::verify(&context, manifest, &mut report, &mut scratch).await,
                Entry::Dump(manifest) => logical::verify(&context, manifest, &mut report, &mut scratch).await,
            }
        };
        tokio::select! {
            result = work => Ok(result),
            () = tokio::time::sleep(options.timeout) => Ok(Err(Failure::new(
                Phase::Timeout,
                format!(
                    "the verification took longer than verify.timeout ({}) and was stopped; raise the timeout if \
                     restoring this backup legitimately takes longer",
                    crate::config::format_duration(options.timeout)
                ),
            ))),
            signal = interrupt => Err(signal),
        }
    };

    options.enter(Step::CleaningUp);
    let cleanup = scratch.remove().await;
    let outcome = match outcome {
        Err(signal) => {
            let leftover = match cleanup {
                Ok(()) => String::new(),
                Err(problem) => format!(" (except: {problem})"),
            };
            return Err(VerifyError::Interrupted { id, signal, leftover });
        }
        Ok(result) => result,
    };
    let failure = match (outcome, cleanup) {
        (Err(failure), Ok(())) => Some(failure),
        (Err(mut failure), Err(problem)) => {
            failure.message.push_str(&format!("; and then {problem}"));
            Some(failure)
        }
        (Ok(()), Err(problem)) => Some(Failure::new(Phase::Cleanup, problem)),
        (Ok(()), Ok(())) => None,
    };
    report.passed = failure.is_none();
    report.failure = failure;
    report.finished_at = Utc::now();
    report.seconds = round(began.elapsed().as_secs_f64());
    let key = match report.store(&repository, layout).await {
        Ok(key) => key,
        Err(source) => {
            // The put may have landed with only its answer lost: take the report back, since it
            // will not be recorded (a report the journal does not record is reported by `list`).
            let key = report.key(layout);
            if let Err(error) = repository.store().delete(&key).await {
                tracing::warn!("could not remove {key}, which may hold the report that failed to store: {error}");
            }
            return Err(VerifyError::Store { id, status: report.status(), key, source });
        }
    };
    let verdict = Verdict::of(&report, &key, &report.to_json());
    match journal::append(&repository, layout, Event::Verified { id, manifest_blake3, verdict }).await {
        Ok(_) => {
            tracing::info!("verification of {id} {}: report stored at {key} and recorded", report.status());
            Ok(report)
        }
        Err(source) => {
            // An unrecorded report does not count, and `list` would report it as a problem: take
            // it back, so that the repository says what the journal says.
            let kept = match repository.store().delete(&key).await {
                Ok(()) => String::new(),
                Err(error) => format!(
                    " (its report {key} could not be removed either ({error}); `list` reports it until a later \
                     verification is recorded)"
                ),
            };
            Err(VerifyError::Record { id, status: report.status(), kept, source })
        }
    }
}

/// Seconds to the millisecond, for reports.
fn round(seconds: f64) -> f64 {
    crate::util::round_to(seconds, 3)
}
