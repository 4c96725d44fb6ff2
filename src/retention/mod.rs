//! The retention policy as a pure decision: given what a repository holds (its [`Inventory`]),
//! the time, and a [`Retention`], which backups, dumps, verification reports and WAL files stay
//! (and the rule that keeps each one) and which go. No I/O: `lifeboat expire`
//! ([`crate::ops::expire`]) gathers the inventory, asks [`decide`], and deletes in its crash-safe
//! order.
//!
//! The rules (DESIGN.md, "Retention"); keep-rules combine as a union, a thing stays when any rule
//! keeps it:
//! - base backups: the newest `full` full backups and the incrementals built on them; those
//!   (full or incremental) that completed within `max_age`; for a `recovery_window`, the newest
//!   backup that completed at or before the window's start on the history that leads to the
//!   present (so every moment inside the window is restorable from it) and every backup after it.
//!   A policy with none of the three keeps every backup.
//! - chains: a kept incremental keeps every backup of its chain (the full backup and the
//!   incrementals between), so expire never leaves an incremental without its base.
//! - dumps: the newest `dumps`; those that finished within `dump_max_age`. With neither, every dump.
//! - no policy at all: everything stays (an interrupted deletion is still finished).
//! - never deleted, whatever the settings: the newest full backup, and the newest dump, whose last
//!   verification passed.
//! - verification reports go with their backup or dump; of a kept one, the newest report, the
//!   one whose verdict the journal records and the one of the newest verification by restore the
//!   journal records (the migration gate's proof, after integrity-only checks) stay, older ones go. Reports of something the journal
//!   records as deleted go; any other report is left alone.
//! - WAL: a segment (or `.partial`, or backup history file) whose end is at or before the start of
//!   the kept full backup that starts first is needed by nothing kept, and goes. Everything after
//!   that point stays, on every timeline: this is what lets `wal-push` run during an expire (what
//!   it has just acknowledged is newer than any kept backup's start). With no full backup kept,
//!   no WAL goes. Timeline history files always stay: recovery reads them, and PostgreSQL picks a
//!   new timeline's id by looking for them in the archive.
//! - a backup or dump under S3 Object Lock retention stays (as kept) until its date.
//! - a backup or dump the journal records as deleted, whose manifest is still stored (an
//!   interrupted delete or expire), goes: its deletion is finished.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::{SegmentSize, WalFile};
use crate::config::{Retention, format_duration};

/// A base backup (full or incremental), as far as retention cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullBackup {
    pub id: BackupId,
    /// For an incremental: the backups it needs, its full backup first.
    pub chain: Vec<BackupId>,
    pub timeline: Timeline,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// When it became consistent: the earliest moment it restores.
    pub stop_time: DateTime<Utc>,
    /// Whether its last verification passed (`None`: never verified).
    pub verified: Option<bool>,
}

/// A dump, as far as retention cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub id: BackupId,
    pub finished_at: DateTime<Utc>,
    pub verified: Option<bool>,
}

/// The verification reports stored for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReports {
    pub id: BackupId,
    /// Their keys, oldest first.
    pub keys: Vec<String>,
    /// The key of the report whose verdict the journal records, if any.
    pub recorded: Option<String>,
    /// The key of the report of the newest verification by restore the journal records, when a
    /// newer integrity-only check gave the recorded verdict: the migration gate relies on it.
    pub recorded_restore: Option<String>,
}

/// One archived WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub key: String,
    pub file: WalFile,
}

/// What the repository holds for one cluster.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Listed full backups (manifest stored, not recorded as deleted).
    pub backups: Vec<FullBackup>,
    pub dumps: Vec<Dump>,
    /// Backups and dumps whose manifest is stored although the journal records their deletion.
    pub unfinished_deletions: Vec<BackupId>,
    /// Ids the journal records as deleted.
    pub deleted: BTreeSet<BackupId>,
    pub reports: Vec<StoredReports>,
    pub wal: Vec<WalObject>,
    pub segment_size: SegmentSize,
    /// Every timeline history in the archive.
    pub histories: BTreeMap<Timeline, TimelineHistory>,
    /// Backups and dumps whose manifest is under S3 Object Lock retention, and until when: they
    /// cannot be deleted yet, so they count as kept (their WAL stays with them).
    pub locked: BTreeMap<BackupId, DateTime<Utc>>,
}

/// What happens to one thing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It stays; every rule that keeps it.
    Keep(Vec<String>),
    /// It goes; why no rule keeps it.
    Delete(String),
}

impl Fate {
    pub fn is_kept(&self) -> bool {
        matches!(self, Fate::Keep(_))
    }

    /// The rules, or the reason, as one line.
    pub fn explain(&self) -> String {
        match self {
            Fate::Keep(rules) => rules.join("; "),
            Fate::Delete(reason) => reason.clone(),
        }
    }
}

/// A backup or dump and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub id: BackupId,
    pub fate: Fate,
}

/// An object (a report, a WAL file) and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedObject {
    pub key: String,
    /// The backup or dump a report belongs to.
    pub id: Option<BackupId>,
    pub fate: Fate,
}

/// The decision on everything in an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Full backups and dumps, oldest first, then unfinished deletions.
    pub items: Vec<Decided>,
    pub reports: Vec<DecidedObject>,
    pub wal: Vec<DecidedObject>,
    /// The start of the recovery window, when one is configured.
    pub window_start: Option<DateTime<Utc>>,
    /// WAL ending at or before this point goes (the start of the kept backup that starts first).
    pub wal_cutoff: Option<(BackupId, Lsn)>,
    /// The oldest kept full backup and when it became consistent: the earliest moment a restore
    /// can reach once the decision is carried out.
    pub earliest_restorable: Option<(BackupId, DateTime<Utc>)>,
}

impl Decision {
    pub fn fate_of(&self, id: BackupId) -> Option<&Fate> {
        self.items.iter().find(|item| item.id == id).map(|item| &item.fate)
    }
}

/// Why everything stays when no retention is configured.
pub const NO_POLICY: &str = "no retention policy is configured ([backup] retention): everything is kept";

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> std::time::Duration {
    (now - then).to_std().unwrap_or_default()
}

/// Decides the fate of everything in `inventory` at `now` under `policy`.
pub fn decide(inventory: &Inventory, policy: &Retention, now: DateTime<Utc>) -> Decision {
    let mut backups: Vec<&FullBackup> = inventory.backups.iter().collect();
    backups.sort_by_key(|backup| backup.id);
    let mut dumps: Vec<&Dump> = inventory.dumps.iter().collect();
    dumps.sort_by_key(|dump| dump.id);

    let window_start =
        policy.recovery_window.and_then(|window| chrono::Duration::from_std(window).ok()).map(|w| now - w);
    let mut rules: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
    let mut keep = |id: BackupId, rule: String| rules.entry(id).or_default().push(rule);

    // Full backups.
    if policy.is_empty() {
        for id in backups.iter().map(|backup| backup.id).chain(dumps.iter().map(|dump| dump.id)) {
            keep(id, NO_POLICY.into());
        }
    } else if !policy.limits_full_backups() {
        for backup in &backups {
            keep(backup.id, "no retention rule for full backups is configured (full, max_age, recovery_window)".into());
        }
    }
    if let Some(count) = policy.full {
        let newest: Vec<BackupId> = backups
            .iter()
            .rev()
            .filter(|backup| backup.id.kind() == BackupKind::Full)
            .take(count as usize)
            .map(|backup| backup.id)
            .collect();
        for backup in &backups {
            if newest.contains(&backup.id) {
                keep(backup.id, format!("newest {count} full backups (full = {count})"));
            } else if let Some(full) = backup.chain.first().filter(|full| newest.contains(full)) {
                keep(
                    backup.id,
                    format!("an incremental on {full}, one of the newest {count} full backups (full = {count})"),
                );
            }
        }
    }
    if let Some(max_age) = policy.max_age {
        for backup in backups.iter().filter(|backup| age(now, backup.stop_time) <= max_age) {
            keep(backup.id, format!("completed within max_age {}", format_duration(max_age)));
        }
    }
    if let (Some(window), Some(start)) = (policy.recovery_window, window_start) {
        let window = format_duration(window);
        let present = present_history(inventory);
        let anchor = backups
            .iter()
            .rev()
            .find(|backup| backup.stop_time <= start && present.reaches(backup.timeline, backup.stop_lsn));
        for backup in &backups {
            match anchor {
                Some(anchor) if backup.id == anchor.id => keep(
                    backup.id,
                    format!("recovery_window {window}: the newest backup consistent before the window's start"),
                ),
                Some(anchor) if backup.id > anchor.id => {
                    keep(backup.id, format!("recovery_window {window}: taken after the window's oldest backup"))
                }
                Some(_) => {}
                // No backup before the window's start leads to the present: the window cannot be
                // covered whole, so nothing that might serve it goes.
                None => keep(
                    backup.id,
                    format!(
                        "recovery_window {window}: no backup consistent before the window's start leads to the \
                         present timeline, so every backup is kept"
                    ),
                ),
            }
        }
    }
    if let Some(newest) = backups.iter().rev().find(|backup| backup.verified == Some(true)) {
        keep(newest.id, "the newest full backup whose last verification passed (never deleted)".into());
    }

    // Dumps.
    if !policy.is_empty() && !policy.limits_dumps() {
        for dump in &dumps {
            keep(dump.id, "no retention rule for dumps is configured (dumps, dump_max_age)".into());
        }
    }
    if let Some(count) = policy.dumps {
        for dump in dumps.iter().rev().take(count as usize) {
            keep(dump.id, format!("newest {count} dumps (dumps = {count})"));
        }
    }
    if let Some(max_age) = policy.dump_max_age {
        for dump in dumps.iter().filter(|dump| age(now, dump.finished_at) <= max_age) {
            keep(dump.id, format!("finished within dump_max_age {}", format_duration(max_age)));
        }
    }
    if let Some(newest) = dumps.iter().rev().find(|dump| dump.verified == Some(true)) {
        keep(newest.id, "the newest dump whose last verification passed (never deleted)".into());
    }

    for (id, until) in &inventory.locked {
        keep(*id, format!("object lock until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    // Last: whatever keeps an incremental keeps what it is built on.
    let kept_incrementals: Vec<&FullBackup> =
        backups.iter().copied().filter(|backup| !backup.chain.is_empty() && rules.contains_key(&backup.id)).collect();
    for incremental in kept_incrementals {
        for base in &incremental.chain {
            rules.entry(*base).or_default().push(format!("kept incremental {} is built on it", incremental.id));
        }
    }

    let fate = |id: BackupId, what: &str| match rules.get(&id) {
        Some(kept) => Fate::Keep(kept.clone()),
        None => Fate::Delete(format!("no retention rule keeps this {what} (policy {policy})")),
    };
    let mut items: Vec<Decided> = backups
        .iter()
        .map(|backup| Decided { id: backup.id, fate: fate(backup.id, "backup") })
        .chain(dumps.iter().map(|dump| Decided { id: dump.id, fate: fate(dump.id, "dump") }))
        .collect();
    items.sort_by_key(|item| item.id);
    for id in &inventory.unfinished_deletions {
        let fate = match rules.get(id) {
            Some(locked) => Fate::Keep(locked.clone()),
            None => Fate::Delete("the journal records its deletion, which was interrupted; finishing it".into()),
        };
        items.push(Decided { id: *id, fate });
    }

    let kept_backups: Vec<&FullBackup> =
        backups.iter().copied().filter(|backup| rules.contains_key(&backup.id)).collect();
    let wal_cutoff =
        kept_backups.iter().min_by_key(|backup| (backup.start_lsn, backup.id)).map(|b| (b.id, b.start_lsn));
    let earliest_restorable = kept_backups.first().map(|backup| (backup.id, backup.stop_time));

    let reports = decide_reports(inventory, &items, policy.is_empty());
    let wal = if policy.is_empty() {
        let keep = || Fate::Keep(vec![NO_POLICY.into()]);
        inventory.wal.iter().map(|object| DecidedObject { key: object.key.clone(), id: None, fate: keep() }).collect()
    } else {
        decide_wal(inventory, wal_cutoff)
    };
    Decision { items, reports, wal, window_start, wal_cutoff, earliest_restorable }
}

/// The history recovery to the present follows: that of the newest timeline anything was
/// archived or backed up on (a timeline without its history file is taken as having no ancestors,
/// which only keeps more).
fn present_history(inventory: &Inventory) -> TimelineHistory {
    let newest = inventory
        .wal
        .iter()
        .map(|object| object.file.timeline())
        .chain(inventory.backups.iter().map(|backup| backup.timeline))
        .chain(inventory.histories.keys().copied())
        .max()
        .unwrap_or(Timeline::FIRST);
    inventory.histories.get(&newest).cloned().unwrap_or_else(|| TimelineHistory::root(newest))
}

fn decide_reports(inventory: &Inventory, items: &[Decided], no_policy: bool) -> Vec<DecidedObject> {
    let mut decided = Vec::new();
    for stored in &inventory.reports {
        let id = stored.id;
        let item = items.iter().find(|item| item.id == id);
        let newest = stored.keys.last();
        for key in &stored.keys {
            let fate = match item.map(|item| &item.fate) {
                Some(Fate::Delete(_)) => Fate::Delete(format!("a verification report of {id}, which goes")),
                Some(Fate::Keep(_)) => {
                    let mut rules = Vec::new();
                    if Some(key) == newest {
                        rules.push(format!("the newest verification report of {id}, which stays"));
                    }
                    if stored.recorded.as_ref() == Some(key) {
                        rules.push(format!("the report whose verdict on {id} the journal records"));
                    }
                    if stored.recorded_restore.as_ref() == Some(key) {
                        rules.push(format!(
                            "the report of the newest verification of {id} by restore, which the journal records"
                        ));
                    }
                    if rules.is_empty() && no_policy {
                        Fate::Keep(vec![NO_POLICY.into()])
                    } else if rules.is_empty() {
                        Fate::Delete(format!("an older verification report of {id} (a newer one stays)"))
                    } else {
                        Fate::Keep(rules)
                    }
                }
                None if inventory.deleted.contains(&id) => {
                    Fate::Delete(format!("a verification report of {id}, which lifeboat deleted"))
                }
                None => Fate::Keep(vec![format!(
                    "a report of {id}, which is neither stored nor recorded as deleted: left for `lifeboat list` to \
                     explain"
                )]),
            };
            decided.push(DecidedObject { key: key.clone(), id: Some(id), fate });
        }
    }
    decided
}

fn decide_wal(inventory: &Inventory, cutoff: Option<(BackupId, Lsn)>) -> Vec<DecidedObject> {
    let size = inventory.segment_size;
    let mut wal: Vec<&WalObject> = inventory.wal.iter().collect();
    wal.sort_by(|a, b| a.key.cmp(&b.key));
    wal.into_iter()
        .map(|object| {
            let fate = match (object.file.segment(), cutoff) {
                (None, _) => Fate::Keep(vec![
                    "a timeline history file (recovery follows it; PostgreSQL reads it to choose new timeline ids)"
                        .into(),
                ]),
                (Some(_), None) => Fate::Keep(vec!["no full backup is kept, so no WAL is deleted".into()]),
                (Some(segment), Some((id, start))) => {
                    if segment.next().start_lsn(size) <= start {
                        Fate::Delete(format!(
                            "ends at or before {start}, where the earliest-starting kept backup {id} starts"
                        ))
                    } else {
                        Fate::Keep(vec![format!("WAL from the start of kept backup {id} ({start}) on")])
                    }
                }
            };
            DecidedObject { key: object.key.clone(), id: None, fate }
        })
        .collect()
}

#[cfg(test)]
mod tests;
