//! Backup and dump ids: `20261122T021500Z-full`, sortable by time, with the kind as a suffix.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// A physical base backup of the whole cluster.
    Full,
    /// A physical backup that stores only what changed since the backup before it (its parent)
    /// and refers to the objects of earlier backups for the rest.
    Incremental,
    /// Logical dumps (`pg_dump -Fc` per database plus globals).
    Dump,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incr",
            BackupKind::Dump => "dump",
        }
    }

    /// A copy of the data directory (full or incremental), restored by `lifeboat restore`, as
    /// opposed to a logical dump.
    pub fn is_physical(self) -> bool {
        matches!(self, BackupKind::Full | BackupKind::Incremental)
    }
}

/// The id of a backup or dump: its start time to the second (UTC) and its kind. Ids sort by time,
/// so listing `backups/` gives them oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupId {
    started: NaiveDateTime,
    kind: BackupKind,
}

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl BackupId {
    pub fn new(started: DateTime<Utc>, kind: BackupKind) -> BackupId {
        let whole_seconds = started.naive_utc().with_nanosecond(0).expect("0 ns is valid");
        BackupId { started: whole_seconds, kind }
    }

    pub fn kind(self) -> BackupKind {
        self.kind
    }

    pub fn started(self) -> DateTime<Utc> {
        self.started.and_utc()
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.started.format(TIME_FORMAT), self.kind.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{text:?} is not a backup id (expected e.g. 20261122T021500Z-full, 20261123T021500Z-incr or 20261122T033000Z-dump)"
)]
pub struct InvalidBackupId {
    pub text: String,
}

impl FromStr for BackupId {
    type Err = InvalidBackupId;

    fn from_str(text: &str) -> Result<BackupId, InvalidBackupId> {
        let invalid = || InvalidBackupId { text: text.to_owned() };
        let (time, kind) = text.split_once('-').ok_or_else(invalid)?;
        let kind = match kind {
            "full" => BackupKind::Full,
            "incr" => BackupKind::Incremental,
            "dump" => BackupKind::Dump,
            _ => return Err(invalid()),
        };
        let started = NaiveDateTime::parse_from_str(time, TIME_FORMAT).map_err(|_| invalid())?;
        Ok(BackupId { started, kind })
    }
}

impl Serialize for BackupId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_by_time() {
        let earlier: BackupId = "20261122T021500Z-full".parse().unwrap();
        let later: BackupId = "20261122T033000Z-dump".parse().unwrap();
        assert_eq!(earlier.to_string(), "20261122T021500Z-full");
        assert!(earlier < later);
        assert_eq!(later.kind(), BackupKind::Dump);
        let now = BackupId::new(Utc::now(), BackupKind::Full);
        assert_eq!(now.to_string().parse::<BackupId>().unwrap(), now);
    }

    #[test]
    fn rejects_what_is_not_an_id() {
        assert_eq!("20261122T021500Z-incr".parse::<BackupId>().unwrap().kind(), BackupKind::Incremental);
        for text in ["", "20261122T021500Z", "20261122T021500Z-diff", "2026-11-22-full", "../x-full"] {
            assert!(text.parse::<BackupId>().is_err(), "{text}");
        }
    }
}
