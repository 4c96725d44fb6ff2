//! The daemon's live state: one [`DaemonState`] shared by the scheduler (which records every
//! run), the watcher (which records what the archiver and the repository look like) and the
//! readers (`/status`, `/metrics`, `/healthz`, the status page). It holds the `status/1`
//! document itself ([`Status`]), so what is served is exactly what was recorded.

use std::sync::RwLock;

use chrono::{DateTime, Utc};

use crate::report::status::{ArchiverStatus, FailedRun, JobRun, JobStatus, RepositoryStatus, Status};

/// Shared by every task of the daemon (behind an `Arc`).
#[derive(Debug)]
pub struct DaemonState {
    status: RwLock<Status>,
}

impl DaemonState {
    pub fn new(status: Status) -> DaemonState {
        DaemonState { status: RwLock::new(status) }
    }

    /// A copy of the document as it stands.
    pub fn snapshot(&self) -> Status {
        self.status.read().expect("the status lock is not poisoned").clone()
    }

    /// Changes the document under the lock; keep `change` short (no awaiting inside).
    pub fn update<T>(&self, change: impl FnOnce(&mut Status) -> T) -> T {
        change(&mut self.status.write().expect("the status lock is not poisoned"))
    }

    /// Runs `change` on job `job`'s entry, if the configuration has that job.
    pub fn update_job(&self, job: &str, change: impl FnOnce(&mut JobStatus)) {
        self.update(|status| {
            if let Some(entry) = status.jobs.iter_mut().find(|entry| entry.job == job) {
                change(entry);
            }
        })
    }

    /// Job `job` started a run now.
    pub fn run_started(&self, job: &str, at: DateTime<Utc>) {
        self.update_job(job, |entry| entry.running_since = Some(at));
    }

    /// Job `job` finished `run`: its counters, its last (and last successful) run, and the list
    /// of newest failures.
    pub fn run_finished(&self, job: &str, run: JobRun) {
        self.update(|status| {
            if run.result == "failed" {
                let error = run.error.clone().unwrap_or_default();
                status.recent_failures.insert(0, FailedRun { job: job.to_owned(), at: run.finished_at, error });
                status.recent_failures.truncate(Status::RECENT_FAILURES);
            }
            let Some(entry) = status.jobs.iter_mut().find(|entry| entry.job == job) else {
                return;
            };
            entry.running_since = None;
            entry.runs_total += 1;
            if run.result == "failed" {
                entry.failures_total += 1;
            }
            if run.result == "succeeded" {
                entry.last_success = Some(run.clone());
            }
            entry.last_run = Some(run);
        })
    }

    /// A run of `job` was due while the previous one still ran, and was skipped.
    pub fn run_skipped(&self, job: &str) {
        self.update_job(job, |entry| entry.skipped_total += 1);
    }

    /// The scheduler loop went round at `at` (what `/healthz` looks at).
    pub fn scheduler_alive(&self, at: DateTime<Utc>) {
        self.update(|status| {
            if let Some(daemon) = &mut status.daemon {
                daemon.scheduler_alive_at = at;
            }
        })
    }

    pub fn set_archiver(&self, archiver: ArchiverStatus) {
        self.update(|status| status.archiver = Some(archiver));
    }

    pub fn set_repository(&self, repository: RepositoryStatus) {
        self.update(|status| status.repository = Some(repository));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> JobStatus {
        JobStatus { schedule: Some("0 2 * * *".into()), ..JobStatus::never_run(name.to_owned()) }
    }

    fn run(result: &str, at: DateTime<Utc>) -> JobRun {
        JobRun {
            started_at: at,
            finished_at: at,
            duration_seconds: 1.0,
            result: result.into(),
            error: (result == "failed").then(|| "the server went away".into()),
            trigger: "schedule".into(),
            ids: Vec::new(),
            bytes: 0,
        }
    }

    #[test]
    fn a_failure_counts_keeps_the_last_success_and_is_listed_newest_first() {
        let state = DaemonState::new(Status { jobs: vec![job("backup"), job("dump")], ..Status::default() });
        let t0 = Utc::now();
        state.run_started("backup", t0);
        assert_eq!(state.snapshot().jobs[0].running_since, Some(t0));
        state.run_finished("backup", run("succeeded", t0));
        state.run_finished("backup", run("failed", t0 + chrono::Duration::seconds(60)));
        state.run_finished("dump", run("failed", t0 + chrono::Duration::seconds(120)));
        state.run_skipped("dump");

        let status = state.snapshot();
        let backup = &status.jobs[0];
        assert_eq!((backup.runs_total, backup.failures_total, backup.running_since), (2, 1, None));
        assert_eq!(backup.last_run.as_ref().unwrap().result, "failed");
        assert_eq!(backup.last_success.as_ref().unwrap().finished_at, t0);
        assert_eq!(status.jobs[1].skipped_total, 1);
        let failed: Vec<&str> = status.recent_failures.iter().map(|failure| failure.job.as_str()).collect();
        assert_eq!(failed, ["dump", "backup"]);
    }
}
