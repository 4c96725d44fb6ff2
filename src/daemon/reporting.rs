//! What runs beside the scheduler to tell people and monitors how things stand: the HTTP server
//! on `daemon.listen` ([`super::http`]), the watcher ([`super::watch`]), and the notifications
//! ([`crate::notify`]) of every finished run and of a verified backup grown stale. All of them
//! stop on the daemon's shutdown token; none of them can stop the scheduler.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::http::{self, HttpError};
use super::state::DaemonState;
use super::{Current, Daemon, FinishedRun};
use crate::notify::{JobOutcome, JobResult, Notifier};

/// The tasks started by [`start`], for [`Reporting::finish`].
pub struct Reporting {
    tasks: Vec<JoinHandle<()>>,
}

/// Binds `daemon.listen` (an address that cannot be bound is an error, before systemd hears the
/// daemon is ready) and starts the server, the watcher and the notifications.
pub async fn start(daemon: &Daemon) -> Result<Reporting, HttpError> {
    let shutdown = daemon.shutdown_token();
    let state = daemon.state();
    let current = daemon.current();
    let config = current.borrow().config.clone();
    let mut tasks = Vec::new();
    if let Some(address) = config.daemon.listen {
        let listener = http::bind(address).await?;
        let serving = http::serve(listener, state.clone(), daemon.metrics(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = serving.await {
                tracing::warn!("{error}; /metrics, /healthz and /status are not served any more");
            }
        }));
    }
    let poke = Arc::new(Notify::new());
    tasks.push(tokio::spawn(super::watch::run(current.clone(), state.clone(), poke.clone(), shutdown.clone())));
    let notifier = Notifier::new(&config.notify, config.cluster.name.as_str());
    tasks.push(tokio::spawn(tell(daemon.finished_runs(), current, state, poke, notifier, shutdown)));
    Ok(Reporting { tasks })
}

impl Reporting {
    /// Waits for the tasks, which end once the shutdown token fired.
    pub async fn finish(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// After each finished run: a new look by the watcher, and the run's notification. At each look
/// interval: whether the newest verified backup has grown stale. On a reload: the new `[notify]`.
async fn tell(
    mut finished: broadcast::Receiver<FinishedRun>,
    mut current: watch::Receiver<Current>,
    state: Arc<DaemonState>,
    poke: Arc<Notify>,
    mut notifier: Notifier,
    shutdown: CancellationToken,
) {
    let listening = current.borrow().config.daemon.listen;
    let mut config_open = true;
    loop {
        let interval = current.borrow().config.daemon.watch_interval;
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = finished.recv() => match received {
                Ok(FinishedRun { job, run }) => {
                    poke.notify_one();
                    let result = match run.result.as_str() {
                        "succeeded" => JobResult::Succeeded,
                        "cancelled" => JobResult::Cancelled,
                        _ => JobResult::Failed,
                    };
                    let outcome = JobOutcome {
                        job,
                        result,
                        error: run.error,
                        ids: run.ids,
                        duration: std::time::Duration::from_secs_f64(run.duration_seconds.max(0.0)),
                        finished_at: run.finished_at,
                    };
                    notifier.job_finished(&outcome).await;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("{missed} finished runs were not notified (the notifications fell behind)");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tokio::time::sleep(interval) => {
                let newest_verified = state
                    .snapshot()
                    .repository
                    .and_then(|repository| repository.newest_verified_backup)
                    .map(|item| item.at);
                notifier.check_stale(newest_verified, chrono::Utc::now()).await;
            }
            changed = current.changed(), if config_open => match changed {
                Ok(()) => {
                    let config = current.borrow().config.clone();
                    notifier = notifier.reconfigured(&config.notify, config.cluster.name.as_str());
                    if config.daemon.listen != listening {
                        tracing::warn!(
                            "daemon.listen changed; the HTTP server keeps its address until the daemon restarts \
                             (systemctl restart lifeboat)"
                        );
                    }
                }
                Err(_) => config_open = false,
            },
        }
    }
}
