//! The daemon's jobs: which ones the configuration asks for ([`plan`]), what runs after a
//! scheduled backup or dump that succeeded ([`follow_ups`]), and one run of one job through the
//! operations of [`crate::ops`] ([`run`]), turned into the [`JobRun`] the status records.
//!
//! Chaining, as config/lifeboat.example.toml documents it: after a backup or dump that
//! succeeded come, in this order, its verification (`verify.after_backup`), expiry (when
//! `[backup] schedule.expire` is unset and a retention policy is configured: the primary, then
//! each copy), and every copy without a schedule of its own.

use std::fmt;

use chrono::Utc;

use crate::backup::BackupOptions;
use crate::catalog::listing;
use crate::config::{Config, Schedule};
use crate::dump::{DumpRequest, Selection};
use crate::ops::{self, OpContext, OpError, VerifyTarget};
use crate::report::status::{JobRun, JobStatus};
use crate::util::seconds_between;
use crate::verify::VerifyOptions;

/// One kind of scheduled work; its [`fmt::Display`] is the name the status and the logs use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    Backup,
    Incremental,
    Dump,
    Verify,
    Expire,
    WalCheck,
    Copy(String),
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Backup => f.write_str("backup"),
            Job::Incremental => f.write_str("incremental"),
            Job::Dump => f.write_str("dump"),
            Job::Verify => f.write_str("verify"),
            Job::Expire => f.write_str("expire"),
            Job::WalCheck => f.write_str("wal-check"),
            Job::Copy(name) => write!(f, "copy:{name}"),
        }
    }
}

impl Job {
    /// The job a status entry names.
    pub fn from_name(name: &str) -> Option<Job> {
        Some(match name {
            "backup" => Job::Backup,
            "incremental" => Job::Incremental,
            "dump" => Job::Dump,
            "verify" => Job::Verify,
            "expire" => Job::Expire,
            "wal-check" => Job::WalCheck,
            other => Job::Copy(other.strip_prefix("copy:")?.to_owned()),
        })
    }
}

/// A job the configuration asks for: on its own schedule, after other jobs, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub job: Job,
    pub schedule: Option<Schedule>,
    pub chained_after: Vec<Job>,
}

/// The scheduled jobs that others follow.
fn triggers(config: &Config) -> Vec<Job> {
    let schedule = &config.backup.schedule;
    [(Job::Backup, &schedule.full), (Job::Incremental, &schedule.incremental), (Job::Dump, &schedule.dump)]
        .into_iter()
        .filter(|(_, schedule)| schedule.is_some())
        .map(|(job, _)| job)
        .collect()
}

/// Whether the daemon expires after each backup or dump rather than on a schedule.
fn expires_after_runs(config: &Config) -> bool {
    config.backup.schedule.expire.is_none() && !config.backup.retention.is_empty()
}

/// What runs after a scheduled `job` succeeded, in order (nothing after the other jobs).
pub fn follow_ups(config: &Config, job: &Job) -> Vec<Job> {
    if !matches!(job, Job::Backup | Job::Incremental | Job::Dump) {
        return Vec::new();
    }
    let mut jobs = Vec::new();
    if config.verify.after_backup {
        jobs.push(Job::Verify);
    }
    if expires_after_runs(config) {
        jobs.push(Job::Expire);
    }
    jobs.extend(
        config.copies.list.iter().filter(|copy| copy.schedule.is_none()).map(|copy| Job::Copy(copy.name.clone())),
    );
    jobs
}

/// Every job of the configuration, in the status's order: backup, incremental, dump, verify,
/// expire, wal-check, then each copy.
pub fn plan(config: &Config) -> Vec<Planned> {
    let triggers = triggers(config);
    let after = |chained: bool| if chained { triggers.clone() } else { Vec::new() };
    let mut planned = vec![
        Planned { job: Job::Backup, schedule: config.backup.schedule.full.clone(), chained_after: Vec::new() },
        Planned {
            job: Job::Incremental,
            schedule: config.backup.schedule.incremental.clone(),
            chained_after: Vec::new(),
        },
        Planned { job: Job::Dump, schedule: config.backup.schedule.dump.clone(), chained_after: Vec::new() },
        Planned {
            job: Job::Verify,
            schedule: config.verify.schedule.clone(),
            chained_after: after(config.verify.after_backup),
        },
        Planned {
            job: Job::Expire,
            schedule: config.backup.schedule.expire.clone(),
            chained_after: after(expires_after_runs(config)),
        },
        Planned { job: Job::WalCheck, schedule: config.wal.check_schedule.clone(), chained_after: Vec::new() },
    ];
    planned.extend(config.copies.list.iter().map(|copy| Planned {
        job: Job::Copy(copy.name.clone()),
        schedule: copy.schedule.clone(),
        chained_after: after(copy.schedule.is_none()),
    }));
    planned.retain(|planned| planned.schedule.is_some() || !planned.chained_after.is_empty());
    planned
}

/// The status entries of `planned`, keeping the counters and last runs of those in `previous`.
pub fn statuses(planned: &[Planned], previous: &[JobStatus]) -> Vec<JobStatus> {
    planned
        .iter()
        .map(|planned| {
            let name = planned.job.to_string();
            let mut entry =
                previous.iter().find(|entry| entry.job == name).cloned().unwrap_or_else(|| JobStatus::never_run(name));
            entry.schedule = planned.schedule.as_ref().map(ToString::to_string);
            entry.chained_after = planned.chained_after.iter().map(ToString::to_string).collect();
            entry
        })
        .collect()
}

/// What one run did, beyond its [`JobRun`]: the backup or dump it took, for the verification
/// that follows it.
pub struct Done {
    pub run: JobRun,
    pub taken: Option<String>,
}

impl Done {
    pub fn succeeded(&self) -> bool {
        self.run.result == "succeeded"
    }
}

/// What a job produced when it succeeded.
#[derive(Default)]
struct Produced {
    ids: Vec<String>,
    bytes: u64,
    /// The job ran, but what it found is a failure (a verification that failed, a gap in the WAL).
    failure: Option<String>,
    taken: Option<String>,
}

/// Runs `job` once in `context` (`taken`: the backup or dump a chained verification verifies).
pub async fn run(context: &OpContext, job: &Job, trigger: &str, taken: Option<&str>) -> Done {
    let started_at = Utc::now();
    let produced = produce(context, job, taken).await;
    let finished_at = Utc::now();
    let (result, error, produced) = match produced {
        Ok(produced) => match produced.failure.clone() {
            Some(failure) => ("failed", Some(failure), produced),
            None => ("succeeded", None, produced),
        },
        Err(OpError::Cancelled { message, .. }) => ("cancelled", Some(message), Produced::default()),
        Err(error) => ("failed", Some(error_chain(&error)), Produced::default()),
    };
    let run = JobRun {
        started_at,
        finished_at,
        duration_seconds: seconds_between(started_at, finished_at),
        result: result.to_owned(),
        error,
        trigger: trigger.to_owned(),
        ids: produced.ids,
        bytes: produced.bytes,
    };
    Done { run, taken: produced.taken }
}

/// The error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn produce(context: &OpContext, job: &Job, taken: Option<&str>) -> Result<Produced, OpError> {
    let config = &context.config;
    match job {
        Job::Backup | Job::Incremental => {
            let options =
                BackupOptions { incremental: job == &Job::Incremental, ..BackupOptions::from_config(&config.backup) };
            let summary = ops::backup(context, options).await?;
            let id = summary.manifest.id.to_string();
            Ok(Produced { ids: vec![id.clone()], bytes: summary.manifest.totals.bytes, failure: None, taken: Some(id) })
        }
        Job::Dump => {
            let selection = config.dump.databases.clone().map_or(Selection::All, Selection::Databases);
            let request = DumpRequest { selection, lock_wait: config.dump.lock_wait };
            let manifest = ops::dump(context, &request, &mut |_| {}).await?;
            let id = manifest.id.to_string();
            Ok(Produced { ids: vec![id.clone()], bytes: manifest.size(), failure: None, taken: Some(id) })
        }
        Job::Verify => {
            let id = match taken {
                Some(id) => id.to_owned(),
                None => match newest_unverified(context).await? {
                    Some(id) => id,
                    None => {
                        tracing::info!(job = "verify", "verify: every backup and dump has been verified already");
                        return Ok(Produced::default());
                    }
                },
            };
            let outcome =
                ops::verify(context, &VerifyTarget::Id(id.clone()), &VerifyOptions::from_config(config)).await?;
            let failed: Vec<String> = outcome
                .reports
                .iter()
                .filter(|report| !report.passed)
                .map(|report| format!("verification of {} {}", report.id, report.status()))
                .collect();
            let failure = match (failed.is_empty(), outcome.problems.len()) {
                (true, 0) => None,
                (true, count) => Some(format!("the repository has {count} problem(s) concerning {id}")),
                (false, _) => Some(failed.join("; ")),
            };
            let bytes = outcome.reports.iter().map(|report| report.integrity.bytes).sum();
            Ok(Produced { ids: vec![id], bytes, failure, taken: None })
        }
        Job::Expire => {
            let expired = ops::expire(context, &config.backup.retention, false).await?;
            let mut ids: Vec<String> = expired.deleted_items.iter().map(ToString::to_string).collect();
            let mut bytes = expired.bytes();
            let mut failed = Vec::new();
            for copy in ops::expire_copies(config, false).await {
                match copy.result {
                    Ok(expired) => {
                        ids.extend(expired.deleted_items.iter().map(|id| format!("{}:{id}", copy.name)));
                        bytes += expired.bytes();
                    }
                    Err(error) => failed.push(format!("copy {:?} not expired: {}", copy.name, error_chain(&error))),
                }
            }
            let failure = (!failed.is_empty()).then(|| failed.join("; "));
            Ok(Produced { ids, bytes, failure, taken: None })
        }
        Job::WalCheck => {
            let report = ops::wal_check(context).await?;
            let gaps = report.gaps().count();
            let failure =
                (gaps > 0).then(|| format!("the WAL archive has {gaps} gap(s); `lifeboat wal check` names them"));
            Ok(Produced { failure, ..Produced::default() })
        }
        Job::Copy(name) => {
            let view = ops::copy::copy(context, Some(name)).await?;
            let failure = view
                .copies
                .iter()
                .find_map(|copy| copy.error.as_ref().map(|error| format!("copy {:?}: {error}", copy.name)));
            let ids = view.copies.iter().flat_map(|copy| copy.copied.backups.iter().map(ToString::to_string)).collect();
            let bytes = view.copies.iter().map(|copy| copy.copied.bytes).sum();
            Ok(Produced { ids, bytes, failure, taken: None })
        }
    }
}

/// The newest backup or dump without a verification report.
async fn newest_unverified(context: &OpContext) -> Result<Option<String>, OpError> {
    let (repository, layout) = (&context.repository, &context.layout);
    for id in listing::list_ids(repository, layout).await?.into_iter().rev() {
        if repository.store().list(&listing::verify_prefix(layout, id)).await?.is_empty() {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[cluster]\nname = \"main\"\nconnection = \"postgresql://127.0.0.1/postgres\"\n\
             [repository]\nurl = \"file:///srv/repo\"\n{extra}"
        );
        Config::from_toml(&text, Path::new("/etc/lifeboat/lifeboat.toml"), &|_| None).unwrap()
    }

    fn names(planned: &[Planned]) -> Vec<(String, Option<String>, Vec<String>)> {
        planned
            .iter()
            .map(|planned| {
                (
                    planned.job.to_string(),
                    planned.schedule.as_ref().map(ToString::to_string),
                    planned.chained_after.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn verification_expiry_and_unscheduled_copies_follow_backups_and_dumps() {
        let config = config(
            "[backup]\nschedule = { full = \"0 2 * * SUN\", incremental = \"0 2 * * MON-SAT\", dump = \"30 3 * * *\" }\n\
             retention = { full = 2 }\n\
             [verify]\nafter_backup = true\n\
             [[copies]]\nname = \"near\"\nurl = \"file:///srv/near\"\n\
             [[copies]]\nname = \"far\"\nurl = \"file:///srv/far\"\nschedule = \"0 6 * * *\"\n",
        );
        let both = vec!["backup".to_owned(), "incremental".to_owned(), "dump".to_owned()];
        assert_eq!(
            names(&plan(&config)),
            vec![
                ("backup".into(), Some("0 2 * * SUN".into()), vec![]),
                ("incremental".into(), Some("0 2 * * MON-SAT".into()), vec![]),
                ("dump".into(), Some("30 3 * * *".into()), vec![]),
                ("verify".into(), None, both.clone()),
                ("expire".into(), None, both.clone()),
                ("copy:near".into(), None, both),
                ("copy:far".into(), Some("0 6 * * *".into()), vec![]),
            ]
        );
        let after: Vec<String> = follow_ups(&config, &Job::Backup).iter().map(ToString::to_string).collect();
        assert_eq!(after, ["verify", "expire", "copy:near"]);
        let after: Vec<String> = follow_ups(&config, &Job::Incremental).iter().map(ToString::to_string).collect();
        assert_eq!(after, ["verify", "expire", "copy:near"]);
        assert!(follow_ups(&config, &Job::Verify).is_empty());
    }

    #[test]
    fn without_a_retention_policy_or_after_backup_nothing_follows_and_unscheduled_jobs_are_absent() {
        let config = config(
            "[backup]\nschedule = { full = \"0 2 * * *\" }\n[wal]\ncheck_schedule = \"*/30 * * * *\"\n\
             [verify]\nschedule = \"0 4 * * *\"\n",
        );
        assert_eq!(
            names(&plan(&config)),
            vec![
                ("backup".into(), Some("0 2 * * *".into()), vec![]),
                ("verify".into(), Some("0 4 * * *".into()), vec![]),
                ("wal-check".into(), Some("*/30 * * * *".into()), vec![]),
            ]
        );
        assert!(follow_ups(&config, &Job::Backup).is_empty());
    }
}
