//! What `lifeboat daemon` runs and when: `[daemon]` (where it listens, its time zone, catch-up,
//! jitter, how long it lets a running job finish on shutdown, where it keeps its state) and the
//! `schedule` keys of the other sections, each a cron expression ([`Schedule`]).
//!
//! ```toml
//! [backup]
//! schedule = { full = "0 2 * * SUN", dump = "30 3 * * *", expire = "0 5 * * *" }
//! [verify]
//! schedule = "0 4 * * *"            # the newest backup or dump not yet verified
//! [wal]
//! check_schedule = "*/30 * * * *"   # the WAL continuity check
//! [[copies]]
//! schedule = "0 6 * * *"            # per copy
//! [daemon]
//! listen = "127.0.0.1:9187"
//! timezone = "Europe/Berlin"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ConfigError;
use super::resolve::Locator;

/// A cron expression as users write them: five fields (minute hour day-of-month month
/// day-of-week), six with seconds first, or a name such as `@daily`. Day and month names
/// (`MON-FRI`, `JAN`) are accepted; day-of-month and day-of-week combine as in cron (either
/// matches).
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses `text`; the error says what a schedule looks like.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|error| {
                format!(
                    "{text:?} is not a cron schedule ({error}): write five fields, minute hour day-of-month \
                     month day-of-week, e.g. \"0 2 * * SUN\" or \"*/15 * * * *\"; six with seconds first; or \
                     @hourly, @daily, @weekly, @monthly"
                )
            })?;
        // One that never fires (February 30th) would leave a job silently never running.
        let probe = Utc::now().with_timezone(&chrono_tz::UTC);
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(format!("{text:?} never fires: no date matches it; check the day and month fields"));
        }
        Ok(Schedule { text: text.trim().to_owned(), cron })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` at which the schedule fires, reading its fields as
    /// wall-clock time in `zone` (daylight saving time changes follow cron's usual rules: a time
    /// skipped by the change fires once at the next valid time; a repeated one fires once).
    pub fn next_after(&self, after: DateTime<Utc>, zone: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|next| next.with_timezone(&Utc))
    }

    /// Whether the schedule fired at least once in `(since, until]`: what catch-up asks of a
    /// daemon that was down.
    pub fn fired_between(&self, since: DateTime<Utc>, until: DateTime<Utc>, zone: chrono_tz::Tz) -> bool {
        self.next_after(since, zone).is_some_and(|next| next <= until)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

/// `[backup] schedule` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackupSchedule {
    pub full: Option<String>,
    pub incremental: Option<String>,
    pub dump: Option<String>,
    pub expire: Option<String>,
}

/// `[backup] schedule`: the daemon's physical backups, dumps and retention runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSchedule {
    /// A full base backup (then, as `lifeboat backup` does, verification when
    /// `verify.after_backup`).
    pub full: Option<Schedule>,
    /// An incremental base backup on top of the newest one (a full one when there is none to
    /// build on); usually on the days the full backup does not run.
    pub incremental: Option<Schedule>,
    /// Logical dumps of `[dump] databases`.
    pub dump: Option<Schedule>,
    /// `lifeboat expire` on the primary and every copy. Unset: the daemon expires after each
    /// scheduled backup or dump that succeeded, when a retention policy is configured.
    pub expire: Option<Schedule>,
}

/// `[daemon]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub listen: Option<RawListen>,
    pub timezone: Option<String>,
    pub catch_up: Option<bool>,
    pub jitter: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub watch_interval: Option<String>,
}

/// `listen = "127.0.0.1:9187"`, or `true` for that default address, or `false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawListen {
    Enabled(bool),
    Address(String),
}

/// `[daemon]`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Where `/metrics`, `/healthz`, `/status` and the status page are served; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// The zone the schedules' wall-clock times are read in.
    pub timezone: chrono_tz::Tz,
    /// A scheduled run missed while the daemon was down runs once when it starts.
    pub catch_up: bool,
    /// Each scheduled run starts up to this much later, at random, so that many hosts sharing a
    /// bucket do not all start at 02:00:00.
    pub jitter: Duration,
    /// On SIGTERM, how long a running job may take to finish before it is cancelled (cleanly:
    /// what it wrote is removed or left invisible, as with any failed operation).
    pub shutdown_timeout: Duration,
    /// Where the daemon remembers when each job last ran (`daemon-state.json`), for catch-up.
    pub state_dir: PathBuf,
    /// How often the archiver (`pg_stat_archiver`, `.ready` files) and the repository are looked at.
    pub watch_interval: Duration,
}

impl DaemonConfig {
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_STATE_DIR: &str = "/var/lib/lifeboat";
    pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(60);
    pub const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: None,
            timezone: chrono_tz::UTC,
            catch_up: true,
            jitter: Duration::ZERO,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            state_dir: PathBuf::from(Self::DEFAULT_STATE_DIR),
            watch_interval: Self::DEFAULT_WATCH_INTERVAL,
        }
    }
}

/// Parses the schedule at `path`, placing an error there.
pub(super) fn schedule(
    locator: &Locator<'_>,
    path: &[&str],
    text: Option<String>,
) -> Result<Option<Schedule>, ConfigError> {
    text.map(|text| Schedule::parse(&text).map_err(|message| locator.error(path, message))).transpose()
}

pub(super) fn resolve_backup_schedule(
    locator: &Locator<'_>,
    raw: RawBackupSchedule,
) -> Result<BackupSchedule, ConfigError> {
    let key = |name: &'static str| ["backup", "schedule", name];
    Ok(BackupSchedule {
        full: schedule(locator, &key("full"), raw.full)?,
        incremental: schedule(locator, &key("incremental"), raw.incremental)?,
        dump: schedule(locator, &key("dump"), raw.dump)?,
        expire: schedule(locator, &key("expire"), raw.expire)?,
    })
}

pub(super) fn resolve_daemon(locator: &Locator<'_>, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
    let key = |name: &'static str| ["daemon", name];
    let defaults = DaemonConfig::default();
    let listen = match raw.listen {
        None | Some(RawListen::Enabled(false)) => None,
        Some(RawListen::Enabled(true)) => Some(DaemonConfig::DEFAULT_LISTEN.parse().expect("the default parses")),
        Some(RawListen::Address(text)) => Some(SocketAddr::from_str(text.trim()).map_err(|_| {
            locator.error(
                &key("listen"),
                format!(
                    "{text:?} is not an address and port; write e.g. \"127.0.0.1:9187\" (\"[::1]:9187\" for \
                     IPv6), or remove the key to serve nothing"
                ),
            )
        })?),
    };
    let timezone = match raw.timezone {
        None => defaults.timezone,
        Some(text) => text.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            locator.error(
                &key("timezone"),
                format!("{text:?} is not a time zone; write an IANA name such as \"UTC\" or \"Europe/Berlin\""),
            )
        })?,
    };
    let duration = |name: &'static str, raw: Option<String>, default: Duration| match raw {
        None => Ok(default),
        Some(text) => super::parse_duration(&text).map_err(|message| locator.error(&key(name), message)),
    };
    let watch_interval = duration("watch_interval", raw.watch_interval, defaults.watch_interval)?;
    if watch_interval < DaemonConfig::MIN_WATCH_INTERVAL {
        return Err(locator.error(&key("watch_interval"), "is too short: give it at least \"1s\" (default \"1m\")"));
    }
    Ok(DaemonConfig {
        listen,
        timezone,
        catch_up: raw.catch_up.unwrap_or(defaults.catch_up),
        jitter: duration("jitter", raw.jitter, defaults.jitter)?,
        shutdown_timeout: duration("shutdown_timeout", raw.shutdown_timeout, defaults.shutdown_timeout)?,
        state_dir: locator.absolute(&key("state_dir"), raw.state_dir)?.unwrap_or(defaults.state_dir),
        watch_interval,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_six_with_seconds_and_names_all_parse() {
        let sunday_two = Schedule::parse("0 2 * * SUN").unwrap();
        // 2026-12-06 is a Sunday.
        assert_eq!(sunday_two.next_after(at("2026-12-05T12:00:00Z"), chrono_tz::UTC), Some(at("2026-12-06T02:00:00Z")));
        let every_ten_seconds = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            every_ten_seconds.next_after(at("2026-12-05T12:00:03Z"), chrono_tz::UTC),
            Some(at("2026-12-05T12:00:10Z"))
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(daily.next_after(at("2026-12-05T12:00:00Z"), chrono_tz::UTC), Some(at("2026-12-06T00:00:00Z")));
        assert_eq!(daily.to_string(), "@daily");
    }

    #[test]
    fn wall_clock_times_are_read_in_the_configured_zone() {
        let two = Schedule::parse("0 2 * * *").unwrap();
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(two.next_after(at("2026-12-05T12:00:00Z"), berlin), Some(at("2026-12-06T01:00:00Z")));
        let next = two.next_after(at("2026-12-05T12:00:00Z"), berlin).unwrap();
        assert_eq!(next.with_timezone(&berlin), berlin.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap());
    }

    #[test]
    fn a_missed_run_is_found_between_two_times() {
        let two = Schedule::parse("0 2 * * *").unwrap();
        assert!(two.fired_between(at("2026-12-05T01:00:00Z"), at("2026-12-05T03:00:00Z"), chrono_tz::UTC));
        assert!(!two.fired_between(at("2026-12-05T02:00:00Z"), at("2026-12-06T01:59:59Z"), chrono_tz::UTC));
    }

    #[test]
    fn bad_schedules_say_what_a_schedule_looks_like() {
        for bad in ["", "every night", "61 * * * *", "0 2 * *"] {
            let message = Schedule::parse(bad).unwrap_err();
            assert!(message.contains("five fields"), "{bad:?}: {message}");
        }
        let message = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(message.contains("never fires"), "{message}");
    }
}
