//! When each scheduled job is due: the [`Timetable`] the scheduler loop asks every time it wakes,
//! and [`catch_up`], which decides at start which runs were missed while the daemon was down.
//! Pure: times come in as arguments, so the rules are tested without waiting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::jobs::{Job, Planned};
use super::state_file::SavedState;
use crate::config::Schedule;

/// The next due time of every job that has a schedule of its own.
#[derive(Debug, Clone)]
pub struct Timetable {
    zone: chrono_tz::Tz,
    entries: BTreeMap<Job, (Schedule, Option<DateTime<Utc>>)>,
}

impl Timetable {
    /// The jobs of `planned` that have a schedule, each next due after `now`.
    pub fn new(planned: &[Planned], zone: chrono_tz::Tz, now: DateTime<Utc>) -> Timetable {
        let entries = planned
            .iter()
            .filter_map(|planned| {
                let schedule = planned.schedule.clone()?;
                let next = schedule.next_after(now, zone);
                Some((planned.job.clone(), (schedule, next)))
            })
            .collect();
        Timetable { zone, entries }
    }

    /// The jobs due at `now`, with the time each was due; each is then next due after `now`
    /// (a loop that woke late fires a job once, not once per missed time).
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<(Job, DateTime<Utc>)> {
        let mut due = Vec::new();
        for (job, (schedule, next)) in &mut self.entries {
            if let Some(at) = next.filter(|at| *at <= now) {
                due.push((job.clone(), at));
                *next = schedule.next_after(now, self.zone);
            }
        }
        due
    }

    /// When `job` is next due.
    pub fn next(&self, job: &Job) -> Option<DateTime<Utc>> {
        self.entries.get(job).and_then(|(_, next)| *next)
    }

    /// The soonest due time of any job, and that job.
    pub fn soonest(&self) -> Option<(DateTime<Utc>, &Job)> {
        self.entries.iter().filter_map(|(job, (_, next))| next.map(|at| (at, job))).min()
    }
}

/// The jobs to run once at start because their schedule fired while the daemon was down: after
/// the time `saved` says it was dealt with, up to `now`. Nothing without a saved state (the
/// first start) or with `enabled` false; a job the state does not know (new in the
/// configuration) has missed nothing.
pub fn catch_up(
    planned: &[Planned],
    saved: Option<&SavedState>,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
    enabled: bool,
) -> Vec<Job> {
    let Some(saved) = saved.filter(|_| enabled) else {
        return Vec::new();
    };
    planned
        .iter()
        .filter(|planned| {
            let (Some(schedule), Some(since)) = (&planned.schedule, saved.handled_until.get(&planned.job.to_string()))
            else {
                return false;
            };
            schedule.fired_between(*since, now, zone)
        })
        .map(|planned| planned.job.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn planned(job: Job, schedule: &str) -> Planned {
        Planned { job, schedule: Some(Schedule::parse(schedule).unwrap()), chained_after: Vec::new() }
    }

    fn saved(pairs: &[(&str, &str)]) -> SavedState {
        SavedState { handled_until: pairs.iter().map(|(job, time)| ((*job).to_owned(), at(time))).collect() }
    }

    #[test]
    fn a_job_is_due_once_at_its_time_and_then_at_the_next() {
        let jobs = [planned(Job::Backup, "0 2 * * *"), planned(Job::WalCheck, "*/30 * * * *")];
        let mut table = Timetable::new(&jobs, chrono_tz::UTC, at("2026-12-05T01:10:00Z"));
        assert_eq!(table.soonest(), Some((at("2026-12-05T01:30:00Z"), &Job::WalCheck)));
        assert!(table.take_due(at("2026-12-05T01:29:59Z")).is_empty());
        assert_eq!(table.take_due(at("2026-12-05T01:30:00Z")), vec![(Job::WalCheck, at("2026-12-05T01:30:00Z"))]);
        // Woken late, past two times of wal-check: each job fires once.
        let due = table.take_due(at("2026-12-05T02:31:00Z"));
        assert_eq!(due, vec![(Job::Backup, at("2026-12-05T02:00:00Z")), (Job::WalCheck, at("2026-12-05T02:00:00Z"))]);
        assert_eq!(table.next(&Job::WalCheck), Some(at("2026-12-05T03:00:00Z")));
        assert_eq!(table.next(&Job::Backup), Some(at("2026-12-06T02:00:00Z")));
    }

    #[test]
    fn a_run_missed_while_down_is_caught_up_once_and_only_when_asked() {
        let jobs =
            [planned(Job::Backup, "0 2 * * *"), planned(Job::Dump, "30 3 * * *"), planned(Job::Verify, "0 4 * * *")];
        let zone = chrono_tz::UTC;
        // Down from 01:00 to 03:45: the 02:00 backup and the 03:30 dump were missed (the 02:00 of
        // the day before as well, but a job catches up once); verify is not known to the state.
        let state = saved(&[("backup", "2026-12-04T01:00:00Z"), ("dump", "2026-12-05T01:00:00Z")]);
        let now = at("2026-12-05T03:45:00Z");
        assert_eq!(catch_up(&jobs, Some(&state), zone, now, true), vec![Job::Backup, Job::Dump]);
        assert!(catch_up(&jobs, Some(&state), zone, now, false).is_empty(), "catch_up = false");
        assert!(catch_up(&jobs, None, zone, now, true).is_empty(), "the first start catches up nothing");
        let dealt_with = saved(&[("backup", "2026-12-05T02:00:00Z"), ("dump", "2026-12-05T03:30:00Z")]);
        assert!(catch_up(&jobs, Some(&dealt_with), zone, now, true).is_empty());
    }
}
