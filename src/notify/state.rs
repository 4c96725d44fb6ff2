//! What to send, as a pure decision over remembered state: which event a finished job is
//! (failure, recovery, success), whether `on` wants it, whether the rate limit lets it through
//! (and how many messages it held back since the last one), and when the newest verified backup
//! turned stale. No I/O and no clock of its own, so every rule is tested with given times.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{NotifyConfig, NotifyEvent};

use super::JobResult;

/// The memory of one notifier: per job whether its last run failed, per job and event when a
/// message was last sent and how many were held back since, and whether `stale` was sent.
#[derive(Debug)]
pub(super) struct State {
    /// When the notifier started: with no verified backup at all, the age counts from here, so a
    /// freshly started daemon has `stale_after` to take and verify its first backup.
    started: DateTime<Utc>,
    failing: HashMap<String, bool>,
    last_sent: HashMap<(String, NotifyEvent), DateTime<Utc>>,
    /// Messages held back by the rate limit, per job, not yet mentioned in a sent message.
    suppressed: HashMap<String, u64>,
    stale_sent: bool,
}

/// A message to send: the event and how many messages of the same job were held back before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub event: NotifyEvent,
    pub suppressed: u64,
}

/// The job name `stale` messages are counted under (the verified backup is the verify job's).
const STALE_KEY: &str = "stale";

impl State {
    pub fn new(started: DateTime<Utc>) -> State {
        State {
            started,
            failing: HashMap::new(),
            last_sent: HashMap::new(),
            suppressed: HashMap::new(),
            stale_sent: false,
        }
    }

    /// The event a finished run of `job` is, and whether to send it now. A cancelled run (the
    /// daemon stopping) is no event and leaves the job's failing/recovered state alone.
    pub fn job_finished(
        &mut self,
        config: &NotifyConfig,
        job: &str,
        result: JobResult,
        at: DateTime<Utc>,
    ) -> Option<Decision> {
        let event = match result {
            JobResult::Cancelled => return None,
            JobResult::Failed => {
                self.failing.insert(job.to_string(), true);
                NotifyEvent::Failure
            }
            JobResult::Succeeded => {
                if self.failing.insert(job.to_string(), false) == Some(true) {
                    NotifyEvent::Recovery
                } else {
                    NotifyEvent::Success
                }
            }
        };
        self.admit(config, job, event, at)
    }

    /// `stale` once each time the newest verified backup goes from fresh to older than
    /// `stale_after`; `None` means there is no verified backup at all.
    pub fn check_stale(
        &mut self,
        config: &NotifyConfig,
        newest_verified: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        let since = newest_verified.unwrap_or(self.started);
        let stale = now.signed_duration_since(since).to_std().is_ok_and(|age| age > config.stale_after);
        if !stale {
            self.stale_sent = false;
            return None;
        }
        if std::mem::replace(&mut self.stale_sent, true) {
            return None;
        }
        self.admit(config, STALE_KEY, NotifyEvent::Stale, now)
    }

    /// Applies `on` and the rate limit to an event of `job`.
    fn admit(&mut self, config: &NotifyConfig, job: &str, event: NotifyEvent, at: DateTime<Utc>) -> Option<Decision> {
        if !config.sends(event) {
            return None;
        }
        let key = (job.to_string(), event);
        if let Some(last) = self.last_sent.get(&key) {
            let since = at.signed_duration_since(*last).to_std().unwrap_or(Duration::ZERO);
            if since < config.min_interval {
                *self.suppressed.entry(job.to_string()).or_default() += 1;
                return None;
            }
        }
        self.last_sent.insert(key, at);
        Some(Decision { event, suppressed: self.suppressed.remove(job).unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).unwrap()
    }

    fn config(on: &[NotifyEvent]) -> NotifyConfig {
        NotifyConfig { on: on.to_vec(), ..NotifyConfig::default() }
    }

    fn sent(event: NotifyEvent, suppressed: u64) -> Option<Decision> {
        Some(Decision { event, suppressed })
    }

    #[test]
    fn failure_then_recovery_then_success() {
        let config = config(&NotifyEvent::ALL);
        let mut state = State::new(t(0));
        assert_eq!(state.job_finished(&config, "backup", JobResult::Succeeded, t(0)), sent(NotifyEvent::Success, 0));
        assert_eq!(state.job_finished(&config, "backup", JobResult::Failed, t(1)), sent(NotifyEvent::Failure, 0));
        // Another job's success is no recovery of this one.
        assert_eq!(state.job_finished(&config, "dump", JobResult::Succeeded, t(2)), sent(NotifyEvent::Success, 0));
        assert_eq!(state.job_finished(&config, "backup", JobResult::Cancelled, t(3)), None);
        assert_eq!(state.job_finished(&config, "backup", JobResult::Succeeded, t(4)), sent(NotifyEvent::Recovery, 0));
        assert_eq!(state.job_finished(&config, "backup", JobResult::Succeeded, t(30)), sent(NotifyEvent::Success, 0));
    }

    #[test]
    fn on_filters_events_but_recovery_is_still_tracked() {
        let config = config(&[NotifyEvent::Recovery]);
        let mut state = State::new(t(0));
        assert_eq!(state.job_finished(&config, "verify", JobResult::Failed, t(0)), None);
        assert_eq!(state.job_finished(&config, "verify", JobResult::Succeeded, t(1)), sent(NotifyEvent::Recovery, 0));
        assert_eq!(state.job_finished(&config, "verify", JobResult::Succeeded, t(2)), None);
    }

    #[test]
    fn a_flapping_job_is_rate_limited_and_the_next_message_counts_what_was_held_back() {
        let config = config(&NotifyEvent::ALL);
        let mut state = State::new(t(0));
        assert_eq!(state.job_finished(&config, "copy:offsite", JobResult::Failed, t(0)), sent(NotifyEvent::Failure, 0));
        for minute in 1..=10 {
            assert_eq!(state.job_finished(&config, "copy:offsite", JobResult::Failed, t(minute)), None);
        }
        // Another job is not held back by this one.
        assert_eq!(state.job_finished(&config, "backup", JobResult::Failed, t(11)), sent(NotifyEvent::Failure, 0));
        assert_eq!(
            state.job_finished(&config, "copy:offsite", JobResult::Failed, t(15)),
            sent(NotifyEvent::Failure, 10)
        );
        assert_eq!(state.job_finished(&config, "copy:offsite", JobResult::Failed, t(16)), None);
        // A recovery is its own kind: sent at once, carrying the failure held back.
        assert_eq!(
            state.job_finished(&config, "copy:offsite", JobResult::Succeeded, t(17)),
            sent(NotifyEvent::Recovery, 1)
        );
    }

    #[test]
    fn stale_is_sent_once_per_transition() {
        let config = NotifyConfig { stale_after: Duration::from_secs(3600), ..NotifyConfig::default() };
        let mut state = State::new(t(0));
        // No verified backup yet: the daemon's start counts, so nothing until an hour has passed.
        assert_eq!(state.check_stale(&config, None, t(30)), None);
        assert_eq!(state.check_stale(&config, None, t(61)), sent(NotifyEvent::Stale, 0));
        assert_eq!(state.check_stale(&config, None, t(62)), None);
        assert_eq!(state.check_stale(&config, Some(t(70)), t(75)), None);
        assert_eq!(state.check_stale(&config, Some(t(70)), t(100)), None);
        assert_eq!(state.check_stale(&config, Some(t(70)), t(131)), sent(NotifyEvent::Stale, 0));
        for minute in 132..200 {
            assert_eq!(state.check_stale(&config, Some(t(70)), t(minute)), None);
        }
        assert_eq!(state.check_stale(&config, Some(t(190)), t(200)), None);
        assert_eq!(state.check_stale(&config, Some(t(190)), t(251)), sent(NotifyEvent::Stale, 0));
    }
}
