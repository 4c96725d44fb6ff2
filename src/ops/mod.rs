//! Operations: the one library-level way to run backup, dump, verify, restore, delete, wal-push,
//! the WAL check, key slot changes and copies to a second repository ([`copy`]), whoever the
//! caller (the CLI now; the daemon and the migration runner later).
//!
//! Every operation takes an [`OpContext`] (configuration, opened repository, cluster layout,
//! cancellation, event sink) and typed options, returns a typed result and prints nothing. Each
//! one emits [`event::Event::Started`] and [`event::Event::Finished`] through the context's sink,
//! which logs, counts and audits them ([`event`], [`audit`]).
//!
//! Cancellation has one path, [`Cancel`]: the caller cancels (the CLI on SIGINT or SIGTERM), and
//! the operation stops at a safe point. Backup, restore and verify watch it themselves and clean
//! up as they do on failure (a backup removes its objects, a restore leaves its documented
//! partial directory, a verification stops its scratch server); the others are dropped where they
//! are, which their crash-safe write order allows (as if the process had been killed). Either
//! way the operation ends as [`OpError::Cancelled`] and its audit line says `cancelled`.
//!
//! Applying the retention policy (`expire`) is in [`expire`].
//!
//! Reading the catalog (`list`, `info`) is here too ([`catalog`]): it changes nothing, so it is
//! not audited.

pub mod audit;
pub mod catalog;
pub mod copy;
pub mod event;
pub mod expire;
pub mod open;
mod run;

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

pub use self::expire::{CopyExpired, Expired, expire, expire_copies};
pub use self::open::OpenError;
pub use self::run::{
    BackupAndVerify, DumpAndVerify, OpError, RemovedSlot, VerifyOutcome, VerifyTarget, backup, backup_then_verify,
    delete, dump, dump_then_verify, key_add, key_remove, restore, restore_dump, verify, wal_check, wal_push,
};
use crate::catalog::layout::ClusterLayout;
use crate::config::Config;
use crate::repository::Repository;
use audit::AuditLog;
use event::{EventSink, Metrics};

/// A request to stop, with the reason (`SIGINT`, `SIGTERM`, `shutdown`) the operation reports.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Cancel {
    /// Asks every operation of this context to stop; the first reason given is kept.
    pub fn cancel(&self, reason: &str) {
        let _ = self.reason.set(reason.to_owned());
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn reason(&self) -> String {
        self.reason.get().cloned().unwrap_or_else(|| "cancelled".to_owned())
    }

    /// Resolves, to the reason, once cancelled.
    pub async fn cancelled(&self) -> String {
        self.token.cancelled().await;
        self.reason()
    }
}

/// What every operation takes.
#[derive(Clone)]
pub struct OpContext {
    pub config: Arc<Config>,
    pub repository: Arc<Repository>,
    pub layout: ClusterLayout,
    pub cancel: Cancel,
    pub events: EventSink,
}

/// Opens copy `name` (a `[[copies]]` entry) as an operation's context: the repository is the
/// copy's, opened with the primary's key material, and its configuration says so
/// (`config.copies.opened`), so an operation run on it writes to the copy only.
pub async fn open_copy(config: &Config, name: &str) -> Result<OpContext, OpenError> {
    open(config.for_copy(name)?).await
}

/// Opens the repository the configuration names and the cluster's audit trail.
pub async fn open(config: Config) -> Result<OpContext, OpenError> {
    let repository = Arc::new(open::open_repository(&config).await?);
    Ok(context_on(Arc::new(config), repository, Arc::default()))
}

/// A context on a repository opened earlier, with a fresh cancellation, whose events count into
/// `metrics`: the daemon opens the repository once and gives each run a context of its own.
pub fn context_on(config: Arc<Config>, repository: Arc<Repository>, metrics: Arc<Metrics>) -> OpContext {
    let layout = ClusterLayout::new(&config.cluster.name);
    let audit = AuditLog::new(config.audit.path.clone(), &layout, Some(repository.clone()));
    OpContext { config, repository, layout, cancel: Cancel::default(), events: EventSink::with_metrics(audit, metrics) }
}
