//! `[backup] retention`: what `lifeboat expire` keeps. Every key is optional; a kind of thing
//! (full backups, dumps) with no key of its own is kept whole, and no retention at all means
//! `expire` keeps everything. The rules themselves live in [`crate::retention`].
//!
//! ```toml
//! [backup]
//! retention = { full = 4, max_age = "30d", recovery_window = "14d", dumps = 7, dump_max_age = "90d" }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::{format_duration, parse_duration};

/// The table as written (inline or `[backup.retention]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub full: Option<i64>,
    pub max_age: Option<String>,
    pub recovery_window: Option<String>,
    pub dumps: Option<i64>,
    pub dump_max_age: Option<String>,
}

/// The retention policy of a repository (the primary's `[backup] retention`; a copy may have its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The newest `full` full backups are kept.
    pub full: Option<u32>,
    /// Full backups that completed within `max_age` are kept.
    pub max_age: Option<Duration>,
    /// Every moment within this long before now stays restorable.
    pub recovery_window: Option<Duration>,
    /// The newest `dumps` dumps are kept.
    pub dumps: Option<u32>,
    /// Dumps that finished within `dump_max_age` are kept.
    pub dump_max_age: Option<Duration>,
}

impl Retention {
    /// No key set: `expire` keeps everything.
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }

    /// Whether some key says which full backups to keep (else every one is kept).
    pub fn limits_full_backups(&self) -> bool {
        self.full.is_some() || self.max_age.is_some() || self.recovery_window.is_some()
    }

    /// Whether some key says which dumps to keep (else every one is kept).
    pub fn limits_dumps(&self) -> bool {
        self.dumps.is_some() || self.dump_max_age.is_some()
    }
}

/// The policy as an inline TOML table, `{ full = 4, recovery_window = "14d" }`: what `config
/// show` prints and what messages quote.
impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(full) = self.full {
            parts.push(format!("full = {full}"));
        }
        let mut duration = |name: &str, value: Option<Duration>| {
            if let Some(value) = value {
                parts.push(format!("{name} = \"{}\"", format_duration(value)));
            }
        };
        duration("max_age", self.max_age);
        duration("recovery_window", self.recovery_window);
        if let Some(dumps) = self.dumps {
            parts.push(format!("dumps = {dumps}"));
        }
        if let Some(age) = self.dump_max_age {
            parts.push(format!("dump_max_age = \"{}\"", format_duration(age)));
        }
        if parts.is_empty() { write!(f, "{{}}") } else { write!(f, "{{ {} }}", parts.join(", ")) }
    }
}

/// Validates the table; `error(key, message)` places an error at `backup.retention.<key>`.
pub(super) fn resolve(
    raw: RawRetention,
    error: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<Retention, ConfigError> {
    let count = |name: &'static str, value: Option<i64>| match value {
        None => Ok(None),
        Some(value) => u32::try_from(value).map(Some).map_err(|_| {
            error(name, format!("{value} is not a count: write a whole number, 0 or more (0 keeps none by count)"))
        }),
    };
    let duration = |name: &'static str, value: Option<String>| match value {
        None => Ok(None),
        Some(text) => parse_duration(&text).map(Some).map_err(|message| error(name, message)),
    };
    Ok(Retention {
        full: count("full", raw.full)?,
        max_age: duration("max_age", raw.max_age)?,
        recovery_window: duration("recovery_window", raw.recovery_window)?,
        dumps: count("dumps", raw.dumps)?,
        dump_max_age: duration("dump_max_age", raw.dump_max_age)?,
    })
}
