//! What a restore recovers to: the recovery target, the timeline to follow, what the server does
//! on reaching the target, and the `postgresql.auto.conf` settings that say so to PostgreSQL.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, Utc};

use crate::catalog::lsn::{Lsn, Timeline};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the archived WAL (on the target timeline).
    Latest,
    /// As soon as the backup is consistent: the state at the end of the backup.
    Immediate,
    /// The last transaction that committed before (or, inclusive, at) this time.
    Time(DateTime<Utc>),
    /// This WAL location.
    Lsn(Lsn),
    /// The commit (or abort) of this transaction.
    Xid(u32),
    /// A restore point made with `pg_create_restore_point(name)`.
    Name(String),
}

impl RecoveryTarget {
    /// Parses `--target-time`: an ISO 8601 / RFC 3339 time or PostgreSQL's
    /// `2026-11-22 02:59:00+00`, with a UTC offset. A time without an offset is refused: the
    /// server would read it in its own time zone, which an incident is no time to guess.
    pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
        let text = text.trim();
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(time.with_timezone(&Utc));
        }
        let normalised = match text.as_bytes().get(10) {
            Some(b'T') => format!("{} {}", &text[..10], &text[11..]),
            _ => text.to_owned(),
        };
        for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z", "%Y-%m-%d %H:%M%#z"] {
            if let Ok(time) = DateTime::<FixedOffset>::parse_from_str(&normalised, format) {
                return Ok(time.with_timezone(&Utc));
            }
        }
        if normalised.ends_with(" UTC") || normalised.ends_with('Z') {
            let bare = normalised.trim_end_matches(" UTC").trim_end_matches('Z');
            if let Ok(time) = NaiveDateTime::parse_from_str(bare, "%Y-%m-%d %H:%M:%S%.f") {
                return Ok(time.and_utc());
            }
        }
        if NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%d %H:%M:%S%.f").is_ok() {
            return Err(format!(
                "{text:?} has no UTC offset; add one, e.g. \"{text}+00\" for UTC (lifeboat does not guess time zones)"
            ));
        }
        Err(format!("{text:?} is not a time; write it as \"2026-11-22 02:59:00+00\" or \"2026-11-22T02:59:00Z\""))
    }

    /// Parses `--target-xid`: a transaction id as `txid_current()` or `pg_current_xact_id()`
    /// show it. Those give 64-bit ids with the epoch in the high half; WAL records carry the low
    /// 32 bits, which is what recovery compares.
    pub fn parse_xid(text: &str) -> Result<u32, String> {
        let value: u64 =
            text.trim().parse().map_err(|_| format!("{text:?} is not a transaction id (a number such as 7412)"))?;
        let xid = (value & 0xFFFF_FFFF) as u32;
        if xid < 3 {
            return Err(format!("{text} is not a normal transaction id (0, 1 and 2 are reserved)"));
        }
        Ok(xid)
    }

    /// Parses `--target-name`: at most 63 bytes, as `pg_create_restore_point` allows.
    pub fn parse_name(text: &str) -> Result<String, String> {
        if text.is_empty() {
            return Err("a restore point name cannot be empty".into());
        }
        if text.len() > 63 {
            return Err(format!("restore point names have at most 63 bytes; {text:?} has {}", text.len()));
        }
        if text.contains(['\n', '\r', '\0']) {
            return Err("a restore point name cannot contain line breaks or NUL".into());
        }
        Ok(text.to_owned())
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => write!(f, "the end of the archived WAL"),
            RecoveryTarget::Immediate => write!(f, "the end of the backup (immediate)"),
            RecoveryTarget::Time(time) => write!(f, "time {}", postgres_time(*time)),
            RecoveryTarget::Lsn(lsn) => write!(f, "LSN {lsn}"),
            RecoveryTarget::Xid(xid) => write!(f, "transaction {xid}"),
            RecoveryTarget::Name(name) => write!(f, "restore point {name:?}"),
        }
    }
}

/// `--target-timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline in the archive (PostgreSQL's default since version 12).
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline; it must descend from the backup's.
    Id(Timeline),
}

impl TimelineChoice {
    pub fn parse(text: &str) -> Result<TimelineChoice, String> {
        match text {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            number => number
                .parse::<u32>()
                .ok()
                .and_then(Timeline::new)
                .map(TimelineChoice::Id)
                .ok_or_else(|| format!("{text:?} is not a timeline: use `latest`, `current` or a number such as 2")),
        }
    }
}

/// `--target-action`: what the server does once it reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    /// End recovery and accept writes, on a new timeline.
    Promote,
    /// Stay in recovery, read-only, so the data can be inspected (`pg_wal_replay_resume()` promotes).
    Pause,
    /// Stop the server; starting it again ends recovery.
    Shutdown,
}

impl TargetAction {
    fn setting(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Everything that steers recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryGoal {
    pub target: RecoveryTarget,
    pub timeline: TimelineChoice,
    pub action: TargetAction,
    /// Stop just before the target instead of just after it (`recovery_target_inclusive = off`).
    pub exclusive: bool,
}

impl RecoveryGoal {
    /// The recovery settings, as `(name, value)` pairs in the order they are written.
    /// `restore_command` comes first; `timeline` is the resolved target timeline.
    pub fn settings(&self, restore_command: &str, timeline: Timeline) -> Vec<(&'static str, String)> {
        let mut settings = vec![("restore_command", restore_command.to_owned())];
        match &self.target {
            RecoveryTarget::Latest => {}
            RecoveryTarget::Immediate => settings.push(("recovery_target", "immediate".into())),
            RecoveryTarget::Time(time) => settings.push(("recovery_target_time", postgres_time(*time))),
            RecoveryTarget::Lsn(lsn) => settings.push(("recovery_target_lsn", lsn.to_string())),
            RecoveryTarget::Xid(xid) => settings.push(("recovery_target_xid", xid.to_string())),
            RecoveryTarget::Name(name) => settings.push(("recovery_target_name", name.clone())),
        }
        settings.push(("recovery_target_timeline", timeline.id().to_string()));
        if !matches!(self.target, RecoveryTarget::Latest) {
            settings.push(("recovery_target_action", self.action.setting().into()));
            if !matches!(self.target, RecoveryTarget::Immediate) {
                let inclusive = if self.exclusive { "off" } else { "on" };
                settings.push(("recovery_target_inclusive", inclusive.into()));
            }
        }
        settings
    }
}

/// A time as PostgreSQL reads it unambiguously: `2026-11-22 02:59:00.123456+00`.
pub fn postgres_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true).replacen('T', " ", 1).replace('Z', "+00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_an_offset_and_come_out_in_utc() {
        let expected: DateTime<Utc> = "2026-11-22T02:59:00Z".parse().unwrap();
        for text in [
            "2026-11-22 02:59:00+00",
            "2026-11-22T02:59:00Z",
            "2026-11-22 03:59:00+01:00",
            "2026-11-22 03:59:00 +0100",
            "2026-11-22 02:59:00 UTC",
            "2026-11-22T02:59:00+00:00",
        ] {
            assert_eq!(RecoveryTarget::parse_time(text).unwrap(), expected, "{text}");
        }
        let error = RecoveryTarget::parse_time("2026-11-22 02:59:00").unwrap_err();
        assert!(error.contains("no UTC offset"), "{error}");
        let error = RecoveryTarget::parse_time("yesterday").unwrap_err();
        assert!(error.contains("not a time"), "{error}");
        let precise: DateTime<Utc> = "2026-11-22T02:59:00.123456Z".parse().unwrap();
        assert_eq!(postgres_time(precise), "2026-11-22 02:59:00.123456+00");
    }

    #[test]
    fn xids_keep_their_low_32_bits() {
        assert_eq!(RecoveryTarget::parse_xid("7412").unwrap(), 7412);
        assert_eq!(RecoveryTarget::parse_xid(&((1u64 << 32) + 900).to_string()).unwrap(), 900);
        assert!(RecoveryTarget::parse_xid("2").is_err());
        assert!(RecoveryTarget::parse_xid("abc").is_err());
    }

    #[test]
    fn settings_follow_the_target() {
        let timeline = Timeline::new(2).unwrap();
        let goal = |target| RecoveryGoal {
            target,
            timeline: TimelineChoice::Latest,
            action: TargetAction::Promote,
            exclusive: false,
        };
        let latest = goal(RecoveryTarget::Latest).settings("fetch %f %p", timeline);
        assert_eq!(latest, vec![("restore_command", "fetch %f %p".into()), ("recovery_target_timeline", "2".into())]);
        let mut by_xid = goal(RecoveryTarget::Xid(900));
        by_xid.exclusive = true;
        by_xid.action = TargetAction::Pause;
        assert_eq!(
            by_xid.settings("c", timeline)[1..],
            [
                ("recovery_target_xid", "900".into()),
                ("recovery_target_timeline", "2".into()),
                ("recovery_target_action", "pause".into()),
                ("recovery_target_inclusive", "off".into()),
            ]
        );
        let immediate = goal(RecoveryTarget::Immediate).settings("c", timeline);
        assert!(immediate.contains(&("recovery_target", "immediate".into())));
        assert!(!immediate.iter().any(|(name, _)| *name == "recovery_target_inclusive"));
    }

    #[test]
    fn timelines_and_names() {
        assert_eq!(TimelineChoice::parse("latest").unwrap(), TimelineChoice::Latest);
        assert_eq!(TimelineChoice::parse("3").unwrap(), TimelineChoice::Id(Timeline::new(3).unwrap()));
        assert!(TimelineChoice::parse("0").is_err());
        assert!(RecoveryTarget::parse_name(&"x".repeat(64)).is_err());
        assert_eq!(RecoveryTarget::parse_name("before_drop").unwrap(), "before_drop");
    }
}
