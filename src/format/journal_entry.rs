//! The journal entry (`clusters/<name>/journal/<seq>`, `lifeboat-journal` version 1,
//! docs/format.md section 12): what one entry records, the [`State`] it carries, how states follow
//! from events, and the entry's key. Reading, checking and appending the chain is
//! [`crate::catalog::journal`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::verify_report::{Mode, VerifyReport};
use crate::catalog::cluster::SystemIdentifier;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::wal::SegmentSize;
use crate::storage::ObjectKey;

pub const FORMAT_NAME: &str = "lifeboat-journal";
pub const FORMAT_VERSION: u32 = 1;
/// Sequence numbers are written with this many digits, so keys sort in sequence order.
pub const SEQ_DIGITS: usize = 20;
/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Always "lifeboat-journal".
    pub format: String,
    pub version: u32,
    /// 1 for the first entry; the entry's key ends with it.
    pub seq: u64,
    /// BLAKE3 (hex) of the previous entry's plaintext; `None` only for entry 1.
    pub previous: Option<String>,
    pub at: DateTime<Utc>,
    pub host: String,
    pub lifeboat_version: String,
    /// What happened.
    pub event: Event,
    /// What the cluster holds once `event` happened.
    pub state: State,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// The first entry: the journal began, taking over what the repository already held (backups
    /// and reports written before journals existed), as its state says.
    Began { adopted: Vec<BackupId> },
    /// The cluster record was written: first seen, or written again after it went missing.
    Identity { system_identifier: SystemIdentifier, wal_segment_size: SegmentSize, recreated: bool },
    /// A backup or dump completed: its manifest was stored.
    Completed { id: BackupId, manifest_blake3: String },
    /// A verification report was stored. It also records (adopts) the backup it verified if the
    /// journal did not know it: the verification read and authenticated every object of it. For a
    /// backup the journal knows, `manifest_blake3` is what the verification read; the recorded
    /// hash stays.
    Verified { id: BackupId, manifest_blake3: String, verdict: Verdict },
    /// lifeboat deletes a backup or dump (recorded before its manifest is removed).
    Deleted { id: BackupId },
}

/// The cluster as the journal knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub identity: Option<Identity>,
    /// Live backups and dumps, sorted by id.
    pub items: Vec<Item>,
    /// Backups and dumps lifeboat deleted, sorted by id.
    pub deleted: Vec<Deletion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub system_identifier: SystemIdentifier,
    pub wal_segment_size: SegmentSize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: BackupId,
    /// BLAKE3 (hex) of the manifest's plaintext.
    pub manifest_blake3: String,
    /// The entry that recorded it.
    pub recorded_in: u64,
    /// The newest verification recorded for it.
    pub verification: Option<RecordedVerdict>,
    /// The newest verification by restore recorded for it, when an integrity-only check came
    /// after it (and took its place as `verification`): a later check that the stored objects
    /// are intact does not undo the proof that they restore. Absent from older entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_verification: Option<RecordedVerdict>,
}

impl Item {
    /// The newest verification by restore recorded for it.
    pub fn newest_restore_verification(&self) -> Option<&RecordedVerdict> {
        self.verification
            .as_ref()
            .filter(|recorded| recorded.verdict.mode == Mode::Restore)
            .or(self.restore_verification.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    pub id: BackupId,
    pub recorded_in: u64,
}

/// What a verification concluded, as recorded in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The report's key.
    pub report: String,
    /// BLAKE3 (hex) of the report's plaintext.
    pub report_blake3: String,
    pub passed: bool,
    /// "passed" or "failed (<phase>)", as the report says.
    pub status: String,
    pub mode: Mode,
    pub verified_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedVerdict {
    pub verdict: Verdict,
    pub recorded_in: u64,
}

impl State {
    pub fn item(&self, id: BackupId) -> Option<&Item> {
        self.items.iter().find(|item| item.id == id)
    }

    pub fn deletion(&self, id: BackupId) -> Option<&Deletion> {
        self.deleted.iter().find(|deletion| deletion.id == id)
    }

    /// The state once `event` (recorded in entry `seq`) happened.
    pub fn apply(&self, event: &Event, seq: u64) -> State {
        let mut next = self.clone();
        match event {
            Event::Began { .. } => {}
            Event::Identity { system_identifier, wal_segment_size, .. } => {
                next.identity =
                    Some(Identity { system_identifier: *system_identifier, wal_segment_size: *wal_segment_size });
            }
            Event::Completed { id, manifest_blake3 } => next.record(*id, manifest_blake3, seq),
            Event::Verified { id, manifest_blake3, verdict } => {
                if next.item(*id).is_none() {
                    next.record(*id, manifest_blake3, seq);
                }
                let item = next.items.iter_mut().find(|item| item.id == *id).expect("recorded above");
                let previous =
                    item.verification.replace(RecordedVerdict { verdict: verdict.clone(), recorded_in: seq });
                match verdict.mode {
                    Mode::Restore => item.restore_verification = None,
                    Mode::Integrity => {
                        if let Some(previous) = previous.filter(|previous| previous.verdict.mode == Mode::Restore) {
                            item.restore_verification = Some(previous);
                        }
                    }
                }
            }
            Event::Deleted { id } => {
                next.items.retain(|item| item.id != *id);
                next.deleted.retain(|deletion| deletion.id != *id);
                next.deleted.push(Deletion { id: *id, recorded_in: seq });
                next.deleted.sort_by_key(|deletion| deletion.id);
            }
        }
        next
    }

    /// Records `id` with its manifest's hash. An id already recorded keeps its first hash: ids are
    /// never reused, so another hash for it can only come from a manifest that was replaced, and
    /// recording that would launder the replacement.
    fn record(&mut self, id: BackupId, manifest_blake3: &str, seq: u64) {
        self.deleted.retain(|deletion| deletion.id != id);
        match self.items.iter_mut().find(|item| item.id == id) {
            Some(_) => {}
            None => {
                self.items.push(Item {
                    id,
                    manifest_blake3: manifest_blake3.to_owned(),
                    recorded_in: seq,
                    verification: None,
                    restore_verification: None,
                });
                self.items.sort_by_key(|item| item.id);
            }
        }
    }
}

/// `clusters/<name>/journal/<seq>`.
pub fn entry_key(layout: &ClusterLayout, seq: u64) -> ObjectKey {
    ObjectKey::new(format!("{}{seq:0width$}", layout.journal_prefix(), width = SEQ_DIGITS))
        .expect("journal keys are built from safe parts")
}

impl Verdict {
    /// The verdict of `report`, stored under `key` as `bytes`.
    pub fn of(report: &VerifyReport, key: &ObjectKey, bytes: &[u8]) -> Verdict {
        Verdict {
            report: key.to_string(),
            report_blake3: hash_hex(bytes),
            passed: report.passed,
            status: report.status(),
            mode: report.mode,
            verified_at: report.started_at,
        }
    }
}

/// BLAKE3 of `bytes`, as the journal writes hashes.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> BackupId {
        text.parse().unwrap()
    }

    fn verdict(passed: bool) -> Verdict {
        Verdict {
            report: "clusters/main/verify/20261127T021500Z-full/20261127T030000.000Z".into(),
            report_blake3: "ab".repeat(32),
            passed,
            status: if passed { "passed".into() } else { "failed (recovery)".into() },
            mode: Mode::Restore,
            verified_at: Utc::now(),
        }
    }

    #[test]
    fn an_integrity_check_after_a_restore_verification_keeps_the_proof_of_restore() {
        let full = id("20261127T021500Z-full");
        let verified = |state: State, mode: Mode, passed: bool, seq: u64| {
            let verdict = Verdict { mode, ..verdict(passed) };
            state.apply(&Event::Verified { id: full, manifest_blake3: "f".into(), verdict }, seq)
        };
        let state = State::default().apply(&Event::Completed { id: full, manifest_blake3: "f".into() }, 1);
        let state = verified(state, Mode::Restore, true, 2);
        let state = verified(state, Mode::Integrity, true, 3);
        let state = verified(state, Mode::Integrity, false, 4);
        let item = state.item(full).unwrap();
        assert_eq!(item.verification.as_ref().unwrap().recorded_in, 4, "the newest verdict is the newest check");
        assert_eq!(item.newest_restore_verification().unwrap().recorded_in, 2);
        // A newer restore verification takes the place of both.
        let state = verified(state, Mode::Restore, false, 5);
        let item = state.item(full).unwrap();
        assert!(item.restore_verification.is_none());
        assert_eq!(item.newest_restore_verification().unwrap().recorded_in, 5);
        // Entries written before the field existed read as before.
        let old = r#"{"id":"20261127T021500Z-full","manifest_blake3":"f","recorded_in":1,"verification":null}"#;
        assert!(serde_json::from_str::<Item>(old).unwrap().restore_verification.is_none());
        assert!(
            !serde_json::to_string(
                &State::default().apply(&Event::Completed { id: full, manifest_blake3: "f".into() }, 1)
            )
            .unwrap()
            .contains("restore_verification")
        );
    }

    #[test]
    fn state_follows_completions_verifications_and_deletions() {
        let full = id("20261127T021500Z-full");
        let dump = id("20261127T033000Z-dump");
        let state = State::default()
            .apply(&Event::Completed { id: dump, manifest_blake3: "d".into() }, 1)
            .apply(&Event::Completed { id: full, manifest_blake3: "f".into() }, 2)
            .apply(&Event::Verified { id: full, manifest_blake3: "f".into(), verdict: verdict(false) }, 3);
        assert_eq!(state.items.iter().map(|item| item.id).collect::<Vec<_>>(), [full, dump]);
        let recorded = state.item(full).unwrap().verification.as_ref().unwrap();
        assert!(!recorded.verdict.passed);
        assert_eq!(recorded.recorded_in, 3);

        let state = state.apply(&Event::Deleted { id: dump }, 4);
        assert!(state.item(dump).is_none());
        assert_eq!(state.deletion(dump).unwrap().recorded_in, 4);
        // A verification of a deleted backup whose manifest is back adopts it again.
        let state = state.apply(&Event::Verified { id: dump, manifest_blake3: "d".into(), verdict: verdict(true) }, 5);
        assert!(state.deletion(dump).is_none());
        assert!(state.item(dump).unwrap().verification.as_ref().unwrap().verdict.passed);
    }

    #[test]
    fn entries_round_trip_and_keys_sort_by_sequence() {
        let layout = ClusterLayout::new(&crate::config::ClusterName::parse("main").unwrap());
        assert_eq!(entry_key(&layout, 7).as_str(), "clusters/main/journal/00000000000000000007");
        assert!(entry_key(&layout, 10) > entry_key(&layout, 9));
        let entry = JournalEntry {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            seq: 2,
            previous: Some("00".repeat(32)),
            at: Utc::now(),
            host: "db1".into(),
            lifeboat_version: "0.1.0".into(),
            event: Event::Verified {
                id: id("20261127T021500Z-full"),
                manifest_blake3: "f".into(),
                verdict: verdict(true),
            },
            state: State::default(),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains(r#""kind":"verified""#), "{json}");
        assert_eq!(serde_json::from_str::<JournalEntry>(&json).unwrap(), entry);
    }
}
