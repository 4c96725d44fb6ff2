//! `lifeboat daemon`: the long-running process a DBA enables once. It runs the configured
//! schedules (backups, dumps, verification, expiry, copies, the WAL check), watches PostgreSQL's
//! archiver, and tells people and monitors how things stand.
//!
//! - [`state`]: what the daemon knows right now ([`state::DaemonState`]), written by the
//!   scheduler and the watcher, read by the HTTP side and the notifications.
//! - [`jobs`]: which jobs the configuration asks for, what follows what, one run of a job.
//! - [`scheduler`]: when each job is due, and which runs were missed while the daemon was down.
//! - [`state_file`]: `daemon-state.json`, what catch-up reads.
//! - [`systemd`]: READY, RELOADING, STOPPING, STATUS and the watchdog.
//! - [`watch`]: the watcher, which looks at PostgreSQL's archiver and the repository.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`page`]: the status page at `/`.
//! - [`http`]: the HTTP server (`/metrics`, `/healthz`, `/status`, `/`) on `daemon.listen`.
//! - [`reporting`]: starts the server, the watcher and the notifications beside the scheduler.
//! - [`archive`]: takes WAL from `wal-push` over a Unix socket and stores ready segments ahead.
//!
//! [`Daemon::start`] loads the configuration and opens the repository (a daemon that cannot does
//! not start: systemd restarts it); [`Daemon::run`] tells systemd it is ready and runs the
//! scheduler loop until SIGTERM or SIGINT. The loop is one task: it wakes when the next job is
//! due (and at least every second, for `/healthz` and the watchdog), starts each due job as a
//! task of its own, and never waits for one. A job still running when it is due again is not
//! started twice: that run is skipped and counted. A run's failure is recorded and the loop goes
//! on. SIGHUP reloads the configuration file (an invalid one is refused, saying where, and the
//! daemon goes on with the old one). On SIGTERM no new run starts, running ones get
//! `[daemon] shutdown_timeout` to finish and are then cancelled, which cleans up as a failed
//! operation does (complete-or-invisible), and the daemon exits 0 once they have.

pub mod archive;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod reporting;
pub mod scheduler;
pub mod state;
pub mod state_file;
pub mod systemd;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::broadcast;
use tokio::sync::watch as channel;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::jobs::{Done, Job, Planned};
use self::scheduler::Timetable;
use self::state::DaemonState;
use self::state_file::{SavedState, StateFileError};
use self::systemd::Notifier;
use crate::config::{Config, ConfigError};
use crate::ops::event::Metrics;
use crate::ops::{self, Cancel, OpenError};
use crate::report::status::{DaemonInfo, JobRun, Status};
use crate::repository::Repository;

/// The longest the scheduler loop sleeps: `/healthz` and the watchdog see it go round this often.
const MAX_SLEEP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("cannot listen for signals (SIGHUP, SIGTERM, SIGINT): {0}")]
    Signals(std::io::Error),
}

/// The configuration in force and the repository it names, opened. Replaced on each successful
/// reload; a run keeps the one it started with.
#[derive(Clone)]
pub struct Current {
    pub config: Arc<Config>,
    pub repository: Arc<Repository>,
}

/// A run that finished, as the notifications hear of it.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// `backup`, `dump`, `verify`, `expire`, `wal-check` or `copy:<name>`.
    pub job: String,
    pub run: JobRun,
}

/// The signals the daemon acts on, registered before it says it is ready.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn register() -> Result<Signals, DaemonError> {
        let register = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            hangup: register(SignalKind::hangup())?,
            terminate: register(SignalKind::terminate())?,
            interrupt: register(SignalKind::interrupt())?,
        })
    }
}

/// The daemon between [`Daemon::start`] and the end of [`Daemon::run`].
pub struct Daemon {
    config_path: PathBuf,
    current: channel::Sender<Current>,
    runner: Arc<Runner>,
    planned: Vec<Planned>,
    timetable: Timetable,
    saved: SavedState,
    catch_up: Vec<Job>,
    signals: Signals,
    notifier: Notifier,
}

impl Daemon {
    /// Loads the configuration (`config_path` as `--config` gives it), opens the repository,
    /// reads `daemon-state.json` to decide what to catch up, and registers the signals. Fails,
    /// saying why, when any of that fails.
    pub async fn start(config_path: Option<&Path>) -> Result<Daemon, DaemonError> {
        let config = Config::load(config_path)?;
        let repository = Arc::new(ops::open::open_repository(&config).await?);
        let now = Utc::now();
        let settings = &config.daemon;
        let saved = state_file::load(&settings.state_dir).unwrap_or_else(|error| {
            tracing::warn!(%error, "{error}; starting without it: no missed run is caught up");
            None
        });
        let planned = jobs::plan(&config);
        let catch_up = scheduler::catch_up(&planned, saved.as_ref(), settings.timezone, now, settings.catch_up);
        for job in &catch_up {
            let since = saved.as_ref().and_then(|saved| saved.handled_until.get(&job.to_string()));
            tracing::info!(
                job = %job,
                "job {job}: its schedule fired while the daemon was down (after {}); it runs once now (catch_up)",
                since.map_or_else(String::new, |since| since.to_rfc3339())
            );
        }
        let mut saved = saved.unwrap_or_default();
        mark_handled(&mut saved, &planned, now);
        state_file::save(&settings.state_dir, &saved)?;

        let timetable = Timetable::new(&planned, settings.timezone, now);
        let status = Status {
            source: "daemon".to_owned(),
            cluster: config.cluster.name.to_string(),
            host: crate::catalog::lease::hostname(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            daemon: Some(DaemonInfo {
                pid: std::process::id(),
                started_at: now,
                config_file: config.origin().display().to_string(),
                config_loaded_at: now,
                reload_error: None,
                scheduler_alive_at: now,
                shutting_down: false,
            }),
            jobs: jobs::statuses(&planned, &[]),
            ..Status::default()
        };
        let config_path = config.origin().to_path_buf();
        let (current, current_receiver) = channel::channel(Current { config: Arc::new(config), repository });
        let runner = Arc::new(Runner {
            current: current_receiver,
            state: Arc::new(DaemonState::new(status)),
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
            finished: broadcast::channel(64).0,
            running: Mutex::default(),
            cancels: Mutex::default(),
            next_run: AtomicU64::new(0),
        });
        let signals = Signals::register()?;
        Ok(Daemon {
            config_path,
            current,
            runner,
            planned,
            timetable,
            saved,
            catch_up,
            signals,
            notifier: Notifier::from_env(),
        })
    }

    /// What the daemon knows, for `/status`, `/healthz`, `/metrics` and the status page.
    pub fn state(&self) -> Arc<DaemonState> {
        self.runner.state.clone()
    }

    /// The metrics of every operation the daemon runs, for its whole life (reloads included).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.runner.metrics.clone()
    }

    /// Cancelled when the daemon starts shutting down (SIGTERM, SIGINT): the HTTP server and the
    /// watcher stop on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.runner.shutdown.clone()
    }

    /// The configuration in force and its repository; changes on each successful reload.
    pub fn current(&self) -> channel::Receiver<Current> {
        self.current.subscribe()
    }

    /// Every run that finishes from now on (scheduled, caught up, or following another).
    pub fn finished_runs(&self) -> broadcast::Receiver<FinishedRun> {
        self.runner.finished.subscribe()
    }

    /// Tells systemd the daemon is ready, then runs the scheduler loop until SIGTERM or SIGINT
    /// and shuts down (see the module's comment).
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut tasks = JoinSet::new();
        // Without the socket the daemon still runs its schedules; wal-push then stores alone.
        let bound = archive::bind(&self.current.borrow().config);
        let archiving = match bound {
            Ok(socket) => Some(tokio::spawn(archive::serve(
                socket,
                self.current.subscribe(),
                self.runner.metrics.clone(),
                self.runner.shutdown.clone(),
            ))),
            Err(error) => {
                tracing::warn!("{error}");
                None
            }
        };
        self.notifier.ready();
        tracing::info!(
            config = %self.config_path.display(),
            jobs = self.planned.len(),
            "lifeboat daemon ready (pid {}), running on {}",
            std::process::id(),
            self.config_path.display()
        );
        let now = Utc::now();
        for job in std::mem::take(&mut self.catch_up) {
            self.fire(&mut tasks, job, "catch-up", now);
        }
        #[cfg(debug_assertions)]
        let mut round: u64 = 0;
        let reason = loop {
            let now = Utc::now();
            self.runner.state.scheduler_alive(now);
            self.notifier.ping_if_due();
            #[cfg(debug_assertions)]
            {
                stall_for_tests(round).await;
                round += 1;
            }
            let due = self.timetable.take_due(now);
            if !due.is_empty() {
                for (job, at) in due {
                    self.saved.handled_until.insert(job.to_string(), now);
                    self.fire(&mut tasks, job, "schedule", at);
                }
                self.save_state();
            }
            self.refresh_status();
            tokio::select! {
                _ = tokio::time::sleep(self.sleep_time(now)) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = self.signals.hangup.recv() => self.reload().await,
                _ = self.signals.terminate.recv() => break "SIGTERM",
                _ = self.signals.interrupt.recv() => break "SIGINT",
            }
        };
        self.shut_down(reason, tasks).await;
        if let Some(archiving) = archiving {
            let _ = archiving.await;
        }
        Ok(())
    }

    /// Starts `job` (due at `due`) as a task, or skips it when its previous run still runs.
    fn fire(&self, tasks: &mut JoinSet<()>, job: Job, trigger: &'static str, due: DateTime<Utc>) {
        let Some(claim) = Runner::claim(&self.runner, &job) else {
            self.runner.skipped(&job, &format!("the run due at {}", due.format("%Y-%m-%d %H:%M:%S UTC")));
            return;
        };
        let jitter = random_up_to(self.current.borrow().config.daemon.jitter);
        tasks.spawn(self.runner.clone().run_chain(claim, trigger.to_owned(), jitter));
    }

    /// Until the next due time, but at most [`MAX_SLEEP`] and not past the next watchdog ping.
    fn sleep_time(&self, now: DateTime<Utc>) -> Duration {
        let until_due =
            self.timetable.soonest().map_or(MAX_SLEEP, |(at, _)| (at - now).to_std().unwrap_or(Duration::ZERO));
        let sleep = until_due.min(MAX_SLEEP);
        self.notifier.until_next_ping().map_or(sleep, |ping| sleep.min(ping))
    }

    fn save_state(&self) {
        if let Err(error) = state_file::save(&self.current.borrow().config.daemon.state_dir, &self.saved) {
            tracing::warn!(%error, "{error}; a run missed while the daemon is down may not be caught up");
        }
    }

    /// Each job's next run in the status, and the `STATUS=` line for systemd.
    fn refresh_status(&mut self) {
        let timetable = &self.timetable;
        let running = self.runner.state.update(|status| {
            let mut running = Vec::new();
            for entry in &mut status.jobs {
                entry.next_run = Job::from_name(&entry.job).and_then(|job| timetable.next(&job));
                if let Some(since) = entry.running_since {
                    running.push(format!("{} (since {})", entry.job, since.format("%H:%M:%S UTC")));
                }
            }
            running
        });
        let now = if running.is_empty() { "idle".to_owned() } else { format!("running {}", running.join(", ")) };
        let next = match self.timetable.soonest() {
            Some((at, job)) => format!("next: {job} at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
            None => "nothing scheduled".to_owned(),
        };
        self.notifier.status(&format!("{now}; {next}"));
    }

    /// SIGHUP: the configuration file read again and its repository opened; on any error the
    /// daemon goes on as it was and the error is logged and kept in the status.
    async fn reload(&mut self) {
        self.notifier.reloading();
        let path = self.config_path.clone();
        let loading = async {
            let config = Config::load(Some(&path))?;
            let repository = Arc::new(ops::open::open_repository(&config).await?);
            Ok::<_, DaemonError>(Current { config: Arc::new(config), repository })
        };
        tokio::pin!(loading);
        // Opening a repository that does not answer can take a while (the S3 client retries):
        // the watchdog hears from the loop meanwhile, which is alive.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let loaded = loop {
            tokio::select! {
                loaded = &mut loading => break loaded,
                _ = tick.tick() => {
                    self.runner.state.scheduler_alive(Utc::now());
                    self.notifier.ping_if_due();
                }
            }
        };
        let now = Utc::now();
        match loaded {
            Ok(current) => {
                let config = current.config.clone();
                self.planned = jobs::plan(&config);
                self.timetable = Timetable::new(&self.planned, config.daemon.timezone, now);
                let new: Vec<Planned> = self
                    .planned
                    .iter()
                    .filter(|planned| !self.saved.handled_until.contains_key(&planned.job.to_string()))
                    .cloned()
                    .collect();
                mark_handled(&mut self.saved, &new, now);
                let planned = &self.planned;
                self.runner.state.update(|status| {
                    status.jobs = jobs::statuses(planned, &status.jobs);
                    status.cluster = config.cluster.name.to_string();
                    if let Some(daemon) = &mut status.daemon {
                        daemon.config_loaded_at = now;
                        daemon.reload_error = None;
                    }
                });
                self.current.send_replace(current);
                self.save_state();
                tracing::info!(config = %path.display(), "configuration reloaded from {}", path.display());
            }
            Err(error) => {
                let message = error.to_string();
                tracing::error!(
                    config = %path.display(),
                    "configuration reload refused; still running on the configuration loaded before: {message}"
                );
                self.runner.state.update(|status| {
                    if let Some(daemon) = &mut status.daemon {
                        daemon.reload_error = Some(message);
                    }
                });
            }
        }
        self.notifier.ready();
    }

    /// No new run starts; running ones get `shutdown_timeout`, then are cancelled; returns once
    /// every one has ended (cleaned up).
    async fn shut_down(mut self, reason: &str, mut tasks: JoinSet<()>) {
        self.runner.shutdown.cancel();
        self.runner.state.update(|status| {
            if let Some(daemon) = &mut status.daemon {
                daemon.shutting_down = true;
            }
        });
        self.notifier.stopping();
        let timeout = self.current.borrow().config.daemon.shutdown_timeout;
        let running = self.runner.running.lock().expect("the running lock is not poisoned").len();
        tracing::info!(
            "{reason}: stopping; no new run starts, {running} running job(s) get {} to finish",
            crate::config::format_duration(timeout)
        );
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut cancelled = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut deadline, if !cancelled => {
                    cancelled = true;
                    tracing::warn!(
                        "shutdown_timeout ({}) passed: cancelling the running jobs; they clean up as a failed run does",
                        crate::config::format_duration(timeout)
                    );
                    self.runner.cancel_all("shutdown");
                }
                _ = tick.tick() => {
                    self.runner.state.scheduler_alive(Utc::now());
                    self.notifier.ping_if_due();
                    self.notifier.status("stopping");
                }
            }
        }
        tracing::info!("lifeboat daemon stopped");
    }
}

/// Every scheduled job of `planned` dealt with up to `now`.
fn mark_handled(saved: &mut SavedState, planned: &[Planned], now: DateTime<Utc>) {
    for planned in planned.iter().filter(|planned| planned.schedule.is_some()) {
        saved.handled_until.insert(planned.job.to_string(), now);
    }
}

/// A random delay in `[0, up_to]`.
fn random_up_to(up_to: Duration) -> Duration {
    if up_to.is_zero() {
        return Duration::ZERO;
    }
    let millis = u64::try_from(up_to.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(getrandom::u64().unwrap_or(0) % millis.saturating_add(1))
}

/// Debug builds only: `LIFEBOAT_DEBUG_STALL_SCHEDULER_AFTER=N` makes the scheduler loop hang in
/// its round N, as a deadlock would, so that a test sees the watchdog pings stop
/// (tests/systemd.rs). Release builds do not have it.
#[cfg(debug_assertions)]
async fn stall_for_tests(round: u64) {
    let stall_at = std::env::var("LIFEBOAT_DEBUG_STALL_SCHEDULER_AFTER").ok().and_then(|text| text.parse().ok());
    if stall_at == Some(round) {
        tracing::warn!("LIFEBOAT_DEBUG_STALL_SCHEDULER_AFTER: the scheduler loop hangs now (a test of the watchdog)");
        std::future::pending::<()>().await;
    }
}

/// What the scheduler loop and the run tasks share.
struct Runner {
    current: channel::Receiver<Current>,
    state: Arc<DaemonState>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    finished: broadcast::Sender<FinishedRun>,
    /// The jobs running now (a job with its follow-ups holds its place until they end).
    running: Mutex<BTreeSet<Job>>,
    /// The cancellation of each run in progress, by a number of its own.
    cancels: Mutex<BTreeMap<u64, Cancel>>,
    next_run: AtomicU64,
}

/// A job's place among the running ones, given back when dropped.
struct Claim {
    runner: Arc<Runner>,
    job: Job,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.runner.running.lock().expect("the running lock is not poisoned").remove(&self.job);
    }
}

impl Runner {
    /// `job`'s place, unless a run of it is in progress.
    fn claim(runner: &Arc<Runner>, job: &Job) -> Option<Claim> {
        let mut running = runner.running.lock().expect("the running lock is not poisoned");
        running.insert(job.clone()).then(|| Claim { runner: runner.clone(), job: job.clone() })
    }

    /// `what` (a run of `job`) was not started because the previous run of `job` still runs.
    fn skipped(&self, job: &Job, what: &str) {
        let name = job.to_string();
        let since =
            self.state.snapshot().jobs.iter().find(|entry| entry.job == name).and_then(|entry| entry.running_since);
        let since = since.map_or_else(String::new, |since| format!(" (started {})", since.format("%H:%M:%S UTC")));
        tracing::warn!(job = %name, "job {name}: {what} was skipped: the previous run{since} still runs");
        self.state.run_skipped(&name);
    }

    /// After `jitter`, runs the claimed job and, when it succeeded, what follows it.
    async fn run_chain(self: Arc<Self>, claim: Claim, trigger: String, jitter: Duration) {
        if !jitter.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(jitter) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
        let job = claim.job.clone();
        let done = self.run_recorded(&job, &trigger, None).await;
        if !done.succeeded() {
            return;
        }
        let config = self.current.borrow().config.clone();
        let trigger = format!("after:{job}");
        for next in jobs::follow_ups(&config, &job) {
            if self.shutdown.is_cancelled() {
                tracing::info!(job = %next, "job {next} does not run after {job}: the daemon is shutting down");
                break;
            }
            let Some(_follow) = Runner::claim(&self, &next) else {
                self.skipped(&next, &format!("the run after {job}"));
                continue;
            };
            let taken = if next == Job::Verify { done.taken.as_deref() } else { None };
            self.run_recorded(&next, &trigger, taken).await;
        }
    }

    /// One run of `job` in a context of its own, recorded in the status and told to whoever
    /// listens for finished runs.
    async fn run_recorded(&self, job: &Job, trigger: &str, taken: Option<&str>) -> Done {
        let current = self.current.borrow().clone();
        let context = ops::context_on(current.config, current.repository, self.metrics.clone());
        let number = self.next_run.fetch_add(1, Ordering::Relaxed);
        self.cancels.lock().expect("the cancels lock is not poisoned").insert(number, context.cancel.clone());
        let name = job.to_string();
        self.state.run_started(&name, Utc::now());
        tracing::info!(job = %name, trigger, "job {name} started ({trigger})");
        let done = jobs::run(&context, job, trigger, taken).await;
        self.cancels.lock().expect("the cancels lock is not poisoned").remove(&number);
        let run = &done.run;
        let seconds = run.duration_seconds;
        match &run.error {
            None => tracing::info!(job = %name, trigger, seconds, "job {name} {} in {seconds:.1} s", run.result),
            Some(error) => {
                tracing::warn!(job = %name, trigger, seconds, "job {name} {} after {seconds:.1} s: {error}", run.result)
            }
        }
        self.state.run_finished(&name, run.clone());
        let _ = self.finished.send(FinishedRun { job: name, run: run.clone() });
        done
    }

    fn cancel_all(&self, reason: &str) {
        for cancel in self.cancels.lock().expect("the cancels lock is not poisoned").values() {
            cancel.cancel(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Schedule;

    fn planned(job: Job, schedule: Option<&str>, after: &[Job]) -> Planned {
        Planned { job, schedule: schedule.map(|text| Schedule::parse(text).unwrap()), chained_after: after.to_vec() }
    }

    #[test]
    fn a_reload_keeps_the_counters_of_jobs_that_remain_and_drops_the_others() {
        let before = jobs::statuses(
            &[planned(Job::Backup, Some("0 2 * * *"), &[]), planned(Job::Dump, Some("0 3 * * *"), &[])],
            &[],
        );
        let state = DaemonState::new(Status { jobs: before, ..Status::default() });
        state.run_skipped("backup");
        state.run_skipped("dump");
        let after = jobs::statuses(
            &[planned(Job::Backup, Some("0 4 * * *"), &[]), planned(Job::Verify, None, &[Job::Backup])],
            &state.snapshot().jobs,
        );
        let summary: Vec<(&str, Option<&str>, u64, Vec<String>)> = after
            .iter()
            .map(|entry| {
                (entry.job.as_str(), entry.schedule.as_deref(), entry.skipped_total, entry.chained_after.clone())
            })
            .collect();
        assert_eq!(
            summary,
            vec![("backup", Some("0 4 * * *"), 1, vec![]), ("verify", None, 0, vec!["backup".to_owned()])]
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(random_up_to(Duration::ZERO), Duration::ZERO);
        let bound = Duration::from_millis(50);
        let delays: Vec<Duration> = (0..200).map(|_| random_up_to(bound)).collect();
        assert!(delays.iter().all(|delay| *delay <= bound));
        assert!(delays.iter().any(|delay| *delay != delays[0]), "the delay varies");
    }

    #[test]
    fn job_names_read_back() {
        for job in
            [Job::Backup, Job::Incremental, Job::Dump, Job::Verify, Job::Expire, Job::WalCheck, Job::Copy("far".into())]
        {
            assert_eq!(Job::from_name(&job.to_string()), Some(job));
        }
        assert_eq!(Job::from_name("restore"), None);
    }
}
