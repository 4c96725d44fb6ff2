//! The views of `lifeboat copy`: [`CopyRunView`] (`copy --json`, what each copy received and its
//! lag) and [`CopyCheckView`] (`copy --check --json`, which copied objects differ from the
//! primary's).

use serde::Serialize;

use super::Document;
use crate::catalog::id::BackupId;

/// What one copy holds of the backups and dumps `list` shows (list/1's `copies`).
#[derive(Debug, Clone, Serialize)]
pub struct CopyHoldings {
    pub name: String,
    pub location: Option<String>,
    /// The listed backups and dumps whose manifest is on the copy, oldest first.
    pub backups: Vec<BackupId>,
    /// Why the copy could not be read (a warning: the listing of the primary stands); `None` when it was.
    pub error: Option<String>,
}

/// One run of `lifeboat copy`: a part per copy brought up to date.
#[derive(Debug, Clone, Serialize)]
pub struct CopyRunView {
    pub cluster: String,
    /// The primary repository's location.
    pub primary: String,
    pub copies: Vec<CopyResultView>,
}

impl CopyRunView {
    /// Whether every copy was brought up to date.
    pub fn succeeded(&self) -> bool {
        self.copies.iter().all(|copy| copy.error.is_none())
    }
}

/// What one copy received, and how far behind the primary it was and still is.
#[derive(Debug, Clone, Serialize)]
pub struct CopyResultView {
    /// The copy's `name` in `[[copies]]`.
    pub name: String,
    /// The copy's location; `None` when it could not even be opened.
    pub location: Option<String>,
    pub copied: Copied,
    /// What the copy lacked when the run started; `None` when it could not be read.
    pub lag_before: Option<Lag>,
    /// What the primary held when the run started and the copy still lacks: nothing after a
    /// successful run. `None` when it could not be read.
    pub lag: Option<Lag>,
    /// Why the copy could not be brought up to date; `None` on success.
    pub error: Option<String>,
}

/// What one run wrote to a copy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Copied {
    /// Objects written (and checked), of every kind.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Objects found on the copy already, whole (an interrupted run's work), and not written again.
    pub already_there: u64,
    /// WAL files (segments, partial segments, backup and timeline history files) among `objects`.
    pub wal_files: u64,
    /// Backups and dumps that became complete on the copy (their manifest was written), oldest first.
    pub backups: Vec<BackupId>,
    /// Verification reports among `objects`.
    pub reports: u64,
}

/// How far a copy is behind the primary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lag {
    /// Backups and dumps of the primary that the copy does not hold complete.
    pub backups_missing: u64,
    /// The newest of them.
    pub newest_backup_missing: Option<BackupId>,
    /// Its age: seconds since it started.
    pub newest_backup_missing_age_seconds: Option<f64>,
    /// WAL files of the primary that the copy does not hold.
    pub wal_missing: u64,
    /// The newest of them (by name: timeline, then position).
    pub newest_wal_missing: Option<String>,
    /// Its age: seconds since the primary stored it; `None` when the store keeps no time.
    pub newest_wal_missing_age_seconds: Option<f64>,
}

impl Lag {
    pub fn is_empty(&self) -> bool {
        self.backups_missing == 0 && self.wal_missing == 0
    }
}

impl Document for CopyRunView {
    fn schema(&self) -> &'static str {
        "copy/1"
    }
}

/// `lifeboat copy --check`: every object a copy holds, compared with the primary's.
#[derive(Debug, Clone, Serialize)]
pub struct CopyCheckView {
    pub cluster: String,
    pub primary: String,
    pub copies: Vec<CopyCheckResult>,
}

impl CopyCheckView {
    /// Whether every copy could be read and holds only objects equal to the primary's.
    pub fn passed(&self) -> bool {
        self.copies.iter().all(|copy| copy.error.is_none() && copy.differing.is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyCheckResult {
    pub name: String,
    pub location: Option<String>,
    /// Objects read on both sides and compared (length and BLAKE3 of the stored bytes).
    pub checked: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Objects the copy holds and the primary no longer does (they cannot be compared).
    pub only_on_copy: u64,
    /// Objects of the primary the copy does not hold yet (`lifeboat copy` brings them).
    pub not_copied: u64,
    /// Each object whose stored bytes differ from the primary's.
    pub differing: Vec<Difference>,
    /// Why the copy could not be checked; `None` when it was.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub key: String,
    /// "length 1000 on the copy, 1001 on the primary", or "same length, different bytes".
    pub detail: String,
}

impl Document for CopyCheckView {
    fn schema(&self) -> &'static str {
        "copy-check/1"
    }
}
