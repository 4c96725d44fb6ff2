//! The view of an expire run (`expire --json`, schema `expire/1`): the policy, what went (or, with
//! `--dry-run`, would go) and why, what stays and the rule that keeps it, and what S3 Object Lock
//! kept. WAL is summed up per reason rather than listed file by file.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Document;
use crate::ops::expire::{CopyExpired, Expired};
use crate::retention::Fate;

#[derive(Debug, Clone, Serialize)]
pub struct ExpireView {
    pub cluster: String,
    pub location: String,
    pub dry_run: bool,
    /// The policy applied, as an inline TOML table (`{}`: none, everything is kept).
    pub policy: String,
    /// The time the policy was applied at.
    pub now: DateTime<Utc>,
    /// The start of the recovery window, when one is configured.
    pub window_start: Option<DateTime<Utc>>,
    /// The oldest full backup that stays, and when it became consistent: the earliest moment a
    /// restore can reach.
    pub earliest_restorable: Option<Earliest>,
    /// Every backup and dump, oldest first, with its fate.
    pub items: Vec<ItemView>,
    /// Verification reports that go (or would go), with the reason.
    pub reports_deleted: Vec<ObjectView>,
    /// Verification reports that stay.
    pub reports_kept: usize,
    /// WAL files per fate and reason.
    pub wal: Vec<WalGroup>,
    /// Objects kept by S3 Object Lock retention, with the date it ends.
    pub locked: Vec<LockedView>,
    /// Directories without a manifest (left by an interrupted run) that were removed.
    pub leftovers: Vec<LeftoverView>,
    /// Objects deleted and their stored bytes (0 with `--dry-run`).
    pub objects_deleted: usize,
    pub bytes_deleted: u64,
    /// The same for each copy (`[[copies]]`), each under its own policy; empty when there is
    /// none, and for a run on one repository (`--repository NAME`).
    pub copies: Vec<CopyExpireView>,
}

/// One copy's expire: its document, or the error that kept it from running.
#[derive(Debug, Clone, Serialize)]
pub struct CopyExpireView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire: Option<ExpireView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CopyExpireView {
    pub fn new(copy: &CopyExpired) -> CopyExpireView {
        let (expire, error) = match &copy.result {
            Ok(expired) => (Some(ExpireView::new(expired)), None),
            Err(error) => (None, Some(error.to_string())),
        };
        CopyExpireView { name: copy.name.clone(), expire, error }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Earliest {
    pub backup: String,
    pub consistent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub id: String,
    /// `"full"` or `"dump"`.
    pub kind: &'static str,
    /// `"keep"`, `"delete"` (with `--dry-run`: would be deleted), `"deleted"`, or `"locked"`
    /// (Object Lock refused the deletion; the next run tries again).
    pub action: &'static str,
    /// The rules that keep it, or why it goes.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectView {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalGroup {
    /// `"keep"`, `"delete"` or `"deleted"`.
    pub action: &'static str,
    pub reason: String,
    pub files: usize,
    /// The first and last file name of the group, in key order.
    pub first: String,
    pub last: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockedView {
    pub key: String,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftoverView {
    pub prefix: String,
    pub objects: usize,
}

impl Document for ExpireView {
    fn schema(&self) -> &'static str {
        "expire/1"
    }
}

impl ExpireView {
    pub fn new(expired: &Expired) -> ExpireView {
        let decision = &expired.decision;
        let deleted_action = if expired.dry_run { "delete" } else { "deleted" };
        let items = decision
            .items
            .iter()
            .map(|item| {
                let (action, reasons) = match &item.fate {
                    Fate::Keep(rules) => ("keep", rules.clone()),
                    Fate::Delete(reason) if expired.dry_run || expired.deleted_items.contains(&item.id) => {
                        (deleted_action, vec![reason.clone()])
                    }
                    Fate::Delete(reason) => ("locked", vec![reason.clone()]),
                };
                ItemView { id: item.id.to_string(), kind: item.id.kind().as_str(), action, reasons }
            })
            .collect();
        let gone = |key: &str| expired.dry_run || expired.deleted.contains_key(key);
        let reports_deleted = decision
            .reports
            .iter()
            .filter(|report| !report.fate.is_kept() && gone(&report.key))
            .map(|report| ObjectView { key: report.key.clone(), reason: report.fate.explain() })
            .collect();
        let reports_kept = decision.reports.iter().filter(|report| report.fate.is_kept()).count();
        let mut groups: BTreeMap<(&'static str, String), WalGroup> = BTreeMap::new();
        for object in &decision.wal {
            let action = match &object.fate {
                Fate::Keep(_) => "keep",
                Fate::Delete(_) if gone(&object.key) => deleted_action,
                Fate::Delete(_) => "locked",
            };
            // The reason names the boundary, not the file: one group per boundary.
            let reason = object.fate.explain();
            let name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
            let group = groups.entry((action, reason.clone())).or_insert_with(|| WalGroup {
                action,
                reason,
                files: 0,
                first: name.clone(),
                last: name.clone(),
            });
            group.files += 1;
            group.last = name;
        }
        ExpireView {
            cluster: expired.cluster.clone(),
            location: expired.location.clone(),
            dry_run: expired.dry_run,
            policy: expired.policy.to_string(),
            now: expired.now,
            window_start: decision.window_start,
            earliest_restorable: decision
                .earliest_restorable
                .map(|(id, at)| Earliest { backup: id.to_string(), consistent_at: at }),
            items,
            reports_deleted,
            reports_kept,
            wal: groups.into_values().collect(),
            locked: expired.locked.iter().map(|(key, until)| LockedView { key: key.clone(), until: *until }).collect(),
            leftovers: expired
                .leftovers
                .iter()
                .map(|(prefix, objects)| LeftoverView { prefix: prefix.clone(), objects: *objects })
                .collect(),
            objects_deleted: expired.objects(),
            bytes_deleted: expired.bytes(),
            copies: Vec::new(),
        }
    }
}
