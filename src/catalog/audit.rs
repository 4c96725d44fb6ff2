//! The catalog as stored, checked against the journal (G9): which backups and dumps exist, what
//! their verifications concluded, and every object that is missing, altered, damaged or not
//! recorded, by name. `list`, `info`, `verify` and (later) the migration gate read the catalog
//! through [`survey`], so none of them can be told "verified" by a deleted report.
//!
//! The rules, for a cluster whose journal has entries:
//! - a backup or dump the journal records, whose manifest is gone, was deleted by someone other
//!   than lifeboat (lifeboat records a deletion before removing the manifest);
//! - a manifest whose BLAKE3 is not the one recorded was replaced;
//! - a manifest the journal does not know was written by a lifeboat that stopped before recording
//!   it, or put back after lifeboat deleted it; it is listed, flagged;
//! - a verdict is the journal's: deleting the report that said "failed" leaves "failed", and a
//!   report the journal does not record is flagged and does not count;
//! - the cluster record must hold the identity the journal recorded.
//!
//! A writer at work (a backup storing its manifest, a verification its report, a delete removing
//! what it recorded as deleted) is briefly in one of these states: such findings are reported
//! only if a second survey, two seconds later, still makes them.
//!
//! A repository whose journal is empty (written before journals existed, or brand new) has only
//! what is stored to go on; the first lifeboat that writes to the cluster starts its journal.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::cluster::ClusterRecord;
use super::id::BackupId;
use super::journal;
use super::layout::ClusterLayout;
use super::listing::{self, CatalogError, Entry, manifest_key};
use crate::format::journal_entry;
use crate::format::verify_report::{self, Reports, VerifyReport};
use crate::repository::Repository;

/// Something wrong with one stored object, found by [`survey`] or the journal reader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The object concerned (or the prefix, when a whole range is concerned).
    pub key: String,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.detail)
    }
}

/// What the verifications of one backup or dump concluded.
#[derive(Debug, Clone)]
pub struct Verification {
    /// "passed", "failed (<phase>)", or "unreadable" when the newest report cannot be read and the
    /// journal does not record a verdict.
    pub status: String,
    pub passed: bool,
    /// When the verification that gave this verdict started.
    pub verified_at: Option<DateTime<Utc>>,
    /// Reports stored under `verify/<id>/`.
    pub reports: usize,
    /// The key of the report the verdict comes from.
    pub report: String,
    /// That report, when it is stored and readable.
    pub latest: Option<VerifyReport>,
    /// Whether the journal records this verdict (only recorded verdicts can be trusted: an
    /// unrecorded one may come from a report put there by someone else).
    pub recorded: bool,
    /// The newest verification by restore the journal records, when a newer integrity-only
    /// check gave the verdict above; its report is among the stored ones (else a problem names
    /// it), and whoever relies on it reads it and checks its hash.
    pub restore_before: Option<journal_entry::Verdict>,
}

/// The catalog of a cluster, checked.
#[derive(Debug, Clone)]
pub struct Survey {
    /// Backups and dumps whose manifest is stored and readable, oldest first (those lifeboat
    /// deleted are not, even if their manifest is back).
    pub entries: Vec<Entry>,
    pub verifications: BTreeMap<BackupId, Verification>,
    pub problems: Vec<Problem>,
}

/// Writers store a manifest or a verification report first and record it in the journal right
/// after: a survey in between sees an object the journal does not record. Such a finding is
/// reported only if it is still there this long after (a writer records within milliseconds; a
/// planted object, or one whose writer died, stays).
const IN_FLIGHT_SETTLE: Duration = Duration::from_secs(2);

/// Reads every manifest, the newest report of each backup and dump, the cluster record and the
/// journal, and checks them against each other.
pub async fn survey(repository: &Repository, layout: &ClusterLayout) -> Result<Survey, CatalogError> {
    let first = survey_once(repository, layout).await?;
    if !first.maybe_in_flight {
        return Ok(first.survey);
    }
    tokio::time::sleep(IN_FLIGHT_SETTLE).await;
    Ok(survey_once(repository, layout).await?.survey)
}

struct OneSurvey {
    survey: Survey,
    /// Whether a problem found could be a writer between storing an object and recording it.
    maybe_in_flight: bool,
}

async fn survey_once(repository: &Repository, layout: &ClusterLayout) -> Result<OneSurvey, CatalogError> {
    let journal = journal::read(repository, layout).await?;
    let listing = listing::read_all(repository, layout).await?;
    let reports = verify_report::read_latest(repository, layout).await?;
    let mut problems = journal.problems.clone();
    let mut maybe_in_flight = false;
    let state = journal.state().cloned();

    for damaged in &listing.damaged {
        problems.push(Problem {
            key: damaged.key.to_string(),
            detail: format!("cannot be read ({}); {} is not listed", damaged.detail, damaged.id),
        });
    }
    let mut entries = Vec::new();
    for entry in listing.entries {
        let id = entry.id();
        let key = manifest_key(layout, id).to_string();
        let hash = &listing.hashes[&id];
        let Some(state) = &state else {
            entries.push(entry);
            continue;
        };
        match (state.item(id), state.deletion(id)) {
            (Some(item), _) if &item.manifest_blake3 != hash => problems.push(Problem {
                key,
                detail: format!(
                    "is not the manifest journal entry {} recorded (its BLAKE3 differs): it was replaced",
                    item.recorded_in
                ),
            }),
            (Some(_), _) => {}
            (None, Some(deletion)) => {
                maybe_in_flight = true;
                problems.push(Problem {
                    key,
                    detail: format!(
                        "lifeboat deleted {id} (journal entry {}), but its manifest is stored: a delete was \
                         interrupted, or the object was put back. It is not listed; `lifeboat delete {id}` removes it",
                        deletion.recorded_in
                    ),
                });
                continue;
            }
            (None, None) => {
                maybe_in_flight = true;
                problems.push(Problem {
                key,
                detail: format!(
                    "is not recorded in the journal: lifeboat stopped between storing it and recording it, or it was \
                     put there by someone else. `lifeboat verify {id}` proves it and records it"
                    ),
                });
            }
        }
        entries.push(entry);
    }
    if let Some(state) = &state {
        let stored = |id: BackupId| {
            entries.iter().any(|entry| entry.id() == id) || listing.damaged.iter().any(|damaged| damaged.id == id)
        };
        for item in state.items.iter().filter(|item| !stored(item.id)) {
            problems.push(Problem {
                key: manifest_key(layout, item.id).to_string(),
                detail: format!(
                    "is missing: journal entry {} recorded {}, and lifeboat never deleted it; its backup is gone",
                    item.recorded_in, item.id
                ),
            });
        }
    }

    let mut verifications = BTreeMap::new();
    let ids: Vec<BackupId> = entries.iter().map(Entry::id).collect();
    for id in ids {
        let item = state.as_ref().and_then(|state| state.item(id));
        let recorded = item.and_then(|item| item.verification.as_ref());
        let before = problems.len();
        if let Some(mut verification) = judge(id, state.is_some(), recorded, reports.get(&id), &mut problems) {
            maybe_in_flight |= recorded.is_none() && problems.len() > before;
            if let Some(restore) = item.and_then(|item| item.restore_verification.as_ref()) {
                let stored = reports
                    .get(&id)
                    .is_some_and(|reports| reports.keys.iter().any(|key| key.as_str() == restore.verdict.report));
                if !stored {
                    problems.push(Problem {
                        key: restore.verdict.report.clone(),
                        detail: format!(
                            "is missing: journal entry {} recorded this verification of {id} by restore ({}), and \
                             lifeboat never deletes a report of a backup it keeps",
                            restore.recorded_in, restore.verdict.status
                        ),
                    });
                }
                verification.restore_before = Some(restore.verdict.clone());
            }
            verifications.insert(id, verification);
        }
    }

    if let Some(identity) = state.as_ref().and_then(|state| state.identity) {
        let key = layout.cluster_record().to_string();
        match ClusterRecord::read(repository, layout).await {
            Ok(None) => problems.push(Problem {
                key,
                detail: format!(
                    "is missing: the journal records system identifier {}; the next wal-push or backup of that \
                     cluster writes it again",
                    identity.system_identifier
                ),
            }),
            Ok(Some(record)) if record.system_identifier != identity.system_identifier => problems.push(Problem {
                key,
                detail: format!(
                    "records system identifier {}, but the journal recorded {}: it was replaced",
                    record.system_identifier, identity.system_identifier
                ),
            }),
            Ok(Some(_)) => {}
            Err(error) => problems.push(Problem { key, detail: error.to_string() }),
        }
    }
    for (key, detail) in repository.check_repo_files().await? {
        problems.push(Problem { key, detail });
    }
    Ok(OneSurvey { survey: Survey { entries, verifications, problems }, maybe_in_flight })
}

/// The verdict on `id`: the journal's when it records one, else what the stored reports say,
/// flagging every report that is missing, altered, unreadable or not recorded.
fn judge(
    id: BackupId,
    journaled: bool,
    recorded: Option<&journal_entry::RecordedVerdict>,
    reports: Option<&Reports>,
    problems: &mut Vec<Problem>,
) -> Option<Verification> {
    let count = reports.map_or(0, |reports| reports.keys.len());
    if let Some(recorded) = recorded {
        let verdict = &recorded.verdict;
        // The reports that hold the recorded one (which is then stored), if any.
        let holding = reports.filter(|reports| reports.keys.iter().any(|key| key.as_str() == verdict.report));
        let mut latest = None;
        match holding {
            None => problems.push(Problem {
                key: verdict.report.clone(),
                detail: format!(
                    "is missing: journal entry {} recorded this verification of {id} ({}), and lifeboat never deletes \
                     a report of a backup it keeps; the verdict stands",
                    recorded.recorded_in, verdict.status
                ),
            }),
            Some(reports) if reports.latest_key.as_str() == verdict.report => {
                if journal_entry::hash_hex(&reports.latest_bytes) != verdict.report_blake3 {
                    problems.push(Problem {
                        key: verdict.report.clone(),
                        detail: format!(
                            "is not the report journal entry {} recorded: it was replaced or cannot be read",
                            recorded.recorded_in
                        ),
                    });
                } else {
                    latest = reports.latest.as_ref().ok().cloned();
                }
            }
            Some(reports) => problems.push(Problem {
                key: reports.latest_key.to_string(),
                detail: format!(
                    "is a newer report on {id} than the one the journal recorded (entry {}): it does not count",
                    recorded.recorded_in
                ),
            }),
        }
        return Some(Verification {
            status: verdict.status.clone(),
            passed: verdict.passed,
            verified_at: Some(verdict.verified_at),
            reports: count,
            report: verdict.report.clone(),
            latest,
            recorded: true,
            restore_before: None,
        });
    }
    let reports = reports?;
    if journaled {
        problems.push(Problem {
            key: reports.latest_key.to_string(),
            detail: format!(
                "is a verification report on {id} that the journal does not record (the verification stopped before \
                 recording it, or someone else put it there): it does not count as a verification"
            ),
        });
    }
    let latest = match &reports.latest {
        Ok(report) => Some(report.clone()),
        Err(detail) => {
            problems.push(Problem {
                key: reports.latest_key.to_string(),
                detail: format!("the newest verification report on {id} cannot be read ({detail})"),
            });
            None
        }
    };
    Some(Verification {
        status: latest.as_ref().map_or_else(|| "unreadable".to_owned(), VerifyReport::status),
        passed: latest.as_ref().is_some_and(|report| report.passed),
        verified_at: latest.as_ref().map(|report| report.started_at),
        reports: reports.keys.len(),
        report: reports.latest_key.to_string(),
        latest,
        recorded: false,
        restore_before: None,
    })
}
