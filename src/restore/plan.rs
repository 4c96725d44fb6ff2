//! Choosing what to restore, before anything is written: the target timeline and its history, the
//! newest base backup that can reach the target, and the WAL that recovery will need, checked
//! against what the archive holds.
//!
//! The planner is pure: [`Catalog`] holds what was read from the repository (backup manifests,
//! the archive's listing, timeline histories) and [`TargetPosition`] what was found by reading the
//! WAL itself (where a transaction or restore point is, when the last transaction committed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::target::{RecoveryGoal, RecoveryTarget, TimelineChoice, postgres_time};
use crate::catalog::id::BackupId;
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::timeline::TimelineHistory;
use crate::catalog::wal::WalSegment;
use crate::format::backup_manifest::BackupManifest;
use crate::wal::check::ArchiveReport;

/// What the repository holds for the cluster.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Every base backup, oldest first.
    pub backups: Vec<BackupManifest>,
    pub archive: ArchiveReport,
    /// Every timeline history file in the archive.
    pub histories: BTreeMap<Timeline, TimelineHistory>,
}

/// Where the target lies in the WAL, as found by scanning it (see [`crate::wal::records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPosition {
    /// Not needed for this kind of target (latest, immediate, LSN).
    NotNeeded,
    /// The record recovery stops at (a transaction's commit or abort, or a restore point): where
    /// it starts and ends.
    Record { lsn: Lsn, end: Lsn },
    /// For a time target: when the last transaction in the archived WAL finished (`None`: no
    /// transaction finished after the backups' start).
    LastTransaction(Option<DateTime<Utc>>),
}

/// The chosen restore.
#[derive(Debug, Clone)]
pub struct Plan {
    pub backup: BackupManifest,
    /// The timeline recovery follows, with its ancestors.
    pub history: TimelineHistory,
    /// The first WAL segment recovery reads.
    pub first_wal: WalSegment,
    /// The last segment recovery is known to need (the target's, or the archive's end when
    /// recovery runs to the end).
    pub last_wal: WalSegment,
    /// The last segment of the unbroken archive from `first_wal` along the history.
    pub archive_end: WalSegment,
}

impl Plan {
    /// How many segments recovery reads at least.
    pub fn wal_segments(&self) -> u64 {
        self.last_wal.number - self.first_wal.number + 1
    }
}

/// Why there is no restore to do.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the repository has no base backup of cluster {cluster:?}; take one with `lifeboat backup`")]
    NoBackups { cluster: String },

    #[error(
        "timeline {timeline} has no history file in the archive ({timeline}.history), so lifeboat cannot tell \
         which backups lead to it; the timelines archived are {known}"
    )]
    MissingHistory { timeline: Timeline, known: String },

    #[error("backup {id} cannot reach the target: {reason}")]
    BackupCannotReach { id: BackupId, reason: String },

    #[error("{target} precedes every backup that can reach it: {reason}. Choose a later target or an older backup")]
    BeforeEveryBackup { target: String, reason: String },

    #[error(
        "{target} was not found in the archived WAL from the oldest usable backup on: it finished before that \
         backup, never happened, or its WAL is not archived yet (`lifeboat wal check`; `SELECT pg_switch_wal()` \
         on the server archives the current segment)"
    )]
    TargetNotFound { target: String },

    #[error(
        "{target} precedes what the repository still holds: {reason}, and older backups and their WAL were expired \
         (the retention policy keeps {policy}). The earliest restorable moment is when that backup became \
         consistent; choose a later target (`lifeboat expire --dry-run` shows what the policy keeps)"
    )]
    BeforeRetention { target: String, reason: String, policy: String },

    #[error("{target} lies past the end of the archived WAL: {reason}")]
    PastArchiveEnd { target: String, reason: String },

    #[error(
        "the WAL that a restore from backup {id} needs is not all in the archive: segment {missing} is missing, \
         and recovery must read up to segment {needed}. Restore from a later backup (`--backup ID`), choose an \
         earlier target, or find the segment (`lifeboat wal check` lists the gaps)"
    )]
    MissingWal { id: BackupId, missing: String, needed: String },
}

/// The target timeline's history: `None` means "each backup's own timeline" (`current`).
pub fn target_history(catalog: &Catalog, choice: TimelineChoice) -> Result<Option<TimelineHistory>, PlanError> {
    let timeline = match choice {
        TimelineChoice::Current => return Ok(None),
        TimelineChoice::Id(timeline) => timeline,
        TimelineChoice::Latest => known_timelines(catalog).last().copied().unwrap_or(Timeline::FIRST),
    };
    history_of(catalog, timeline).map(Some)
}

fn history_of(catalog: &Catalog, timeline: Timeline) -> Result<TimelineHistory, PlanError> {
    if timeline == Timeline::FIRST {
        return Ok(TimelineHistory::root(timeline));
    }
    catalog.histories.get(&timeline).cloned().ok_or_else(|| PlanError::MissingHistory {
        timeline,
        known: known_timelines(catalog).iter().map(Timeline::to_string).collect::<Vec<_>>().join(", "),
    })
}

/// Every timeline the repository mentions, in order.
fn known_timelines(catalog: &Catalog) -> Vec<Timeline> {
    let mut timelines: Vec<Timeline> = catalog
        .archive
        .timelines
        .iter()
        .map(|timeline| timeline.timeline)
        .chain(catalog.histories.keys().copied())
        .chain(catalog.backups.iter().map(|backup| backup.timeline))
        .collect();
    timelines.sort();
    timelines.dedup();
    timelines
}

/// The backups whose WAL leads along `history` (or, without a history, along their own
/// timeline), oldest first, each with the history recovery from it follows.
pub fn reachable_backups<'c>(
    catalog: &'c Catalog,
    history: Option<&TimelineHistory>,
) -> Result<Vec<(&'c BackupManifest, TimelineHistory)>, PlanError> {
    let mut reachable = Vec::new();
    for backup in &catalog.backups {
        let history = match history {
            Some(history) => history.clone(),
            None => history_of(catalog, backup.timeline)?,
        };
        if history.reaches(backup.timeline, backup.stop_lsn) {
            reachable.push((backup, history));
        }
    }
    Ok(reachable)
}

/// Chooses the backup and checks the WAL. `position` must be what [`TargetPosition`] says for the
/// goal's target kind; `requested` is `--backup`.
pub fn choose(
    catalog: &Catalog,
    goal: &RecoveryGoal,
    position: TargetPosition,
    requested: Option<BackupId>,
) -> Result<Plan, PlanError> {
    let cluster = catalog.archive.cluster.clone();
    if catalog.backups.is_empty() {
        return Err(PlanError::NoBackups { cluster });
    }
    let history = target_history(catalog, goal.timeline)?;
    let reachable = reachable_backups(catalog, history.as_ref())?;
    let target = goal.target.to_string();
    if matches!(goal.target, RecoveryTarget::Xid(_) | RecoveryTarget::Name(_))
        && !matches!(position, TargetPosition::Record { .. })
    {
        return Err(PlanError::TargetNotFound { target });
    }

    let (backup, history) = match requested {
        Some(id) => {
            let backup = catalog.backups.iter().find(|backup| backup.id == id).ok_or_else(|| {
                PlanError::BackupCannotReach { id, reason: "it is not a base backup of this cluster".into() }
            })?;
            let Some((_, history)) = reachable.iter().find(|(candidate, _)| candidate.id == id) else {
                let timeline = history.as_ref().map_or(backup.timeline, TimelineHistory::timeline);
                return Err(PlanError::BackupCannotReach {
                    id,
                    reason: format!(
                        "it was taken on timeline {} at {}, which is not on the history of timeline {timeline}",
                        backup.timeline, backup.stop_lsn
                    ),
                });
            };
            if let Some(reason) = precedes_target(backup, &goal.target, position) {
                return Err(PlanError::BackupCannotReach { id, reason });
            }
            (backup, history.clone())
        }
        None => {
            let newest =
                reachable.iter().rev().find(|(backup, _)| precedes_target(backup, &goal.target, position).is_none());
            match newest {
                Some((backup, history)) => (*backup, history.clone()),
                None => {
                    let reason = match reachable.first() {
                        Some((oldest, _)) => precedes_target(oldest, &goal.target, position)
                            .unwrap_or_else(|| "no backup is consistent before it".into()),
                        None => format!(
                            "no backup was taken on the history of timeline {}",
                            history.as_ref().map_or(Timeline::FIRST, TimelineHistory::timeline)
                        ),
                    };
                    return Err(PlanError::BeforeEveryBackup { target, reason });
                }
            }
        }
    };

    let size = catalog.archive.segment_size;
    let first_wal = backup.start_segment();
    let archive_end = archive_end(&catalog.archive, &history, first_wal.number);
    let stop_needed = history.segment(backup.stop_segment().number, size);
    let missing = |needed: WalSegment| {
        let missing = match archive_end {
            Some(end) => history.segment(end.number + 1, size),
            None => first_wal,
        };
        PlanError::MissingWal { id: backup.id, missing: missing.name(size), needed: needed.name(size) }
    };
    let Some(archive_end) = archive_end.filter(|end| end.number >= stop_needed.number) else {
        return Err(missing(stop_needed));
    };

    let last_wal = match (&goal.target, position) {
        (RecoveryTarget::Immediate, _) => stop_needed,
        (RecoveryTarget::Lsn(lsn), _) => {
            let needed = history.segment(WalSegment::containing(history.timeline(), *lsn, size).number, size);
            if needed.number > archive_end.number {
                let end = archive_end.next().start_lsn(size);
                return Err(PlanError::PastArchiveEnd {
                    target,
                    reason: format!(
                        "the archive holds WAL up to {end} (segment {}); wait for WAL archiving to catch up \
                         (`lifeboat wal check`), or restore to `--target latest`",
                        archive_end.name(size)
                    ),
                });
            }
            needed
        }
        (RecoveryTarget::Xid(_) | RecoveryTarget::Name(_), TargetPosition::Record { end, .. }) => {
            history.segment(WalSegment::containing(history.timeline(), Lsn(end.as_u64() - 1), size).number, size)
        }
        (RecoveryTarget::Time(time), TargetPosition::LastTransaction(last)) => {
            let after_last = last.is_none_or(|last| *time >= last);
            if after_last {
                let reason = match last {
                    Some(last) => format!(
                        "the last transaction in the archived WAL finished at {}, and recovery to a time \
                         stops only at a transaction that finished after it",
                        postgres_time(last)
                    ),
                    None => "no transaction finished in the archived WAL after the backup".into(),
                };
                return Err(PlanError::PastArchiveEnd {
                    target,
                    reason: format!(
                        "{reason}; restore to `--target latest` for everything archived, or wait for the next \
                         segment to be archived"
                    ),
                });
            }
            archive_end
        }
        _ => {
            // Recovery to the end must not stop early at a hole with more WAL archived after it.
            let last_archived = last_archived(&catalog.archive, &history);
            if last_archived.is_some_and(|last| last > archive_end.number) {
                return Err(missing(history.segment(last_archived.unwrap_or_default(), size)));
            }
            archive_end
        }
    };
    if last_wal.number > archive_end.number {
        return Err(missing(last_wal));
    }
    Ok(Plan { backup: backup.clone(), history, first_wal, last_wal, archive_end })
}

/// `None` when recovery from `backup` can stop at the target; else why not (the target lies
/// before the point where the backup becomes consistent).
fn precedes_target(backup: &BackupManifest, target: &RecoveryTarget, position: TargetPosition) -> Option<String> {
    let consistent =
        format!("backup {} becomes consistent at {} ({})", backup.id, backup.stop_lsn, postgres_time(backup.stop_time));
    match (target, position) {
        (RecoveryTarget::Latest | RecoveryTarget::Immediate, _) => None,
        (RecoveryTarget::Time(time), _) => (backup.stop_time >= *time).then_some(consistent),
        (RecoveryTarget::Lsn(lsn), _) => (backup.stop_lsn > *lsn).then_some(consistent),
        (RecoveryTarget::Xid(_) | RecoveryTarget::Name(_), TargetPosition::Record { lsn, .. }) => {
            (backup.stop_lsn > lsn).then(|| format!("{consistent}, after the target's WAL record at {lsn}"))
        }
        (RecoveryTarget::Xid(_) | RecoveryTarget::Name(_), _) => Some("its WAL record was not found".into()),
    }
}

/// The last segment of the unbroken run of archived segments that starts at `first` and follows
/// `history`; `None` when `first` itself is missing.
pub fn archive_end(archive: &ArchiveReport, history: &TimelineHistory, first: u64) -> Option<WalSegment> {
    let size = archive.segment_size;
    let mut number = first;
    let mut end = None;
    loop {
        let segment = history.segment(number, size);
        let Some(range_end) = archive.run_end(segment.timeline, number) else {
            return end;
        };
        // Jump to the end of the run, but not past the point where the history changes timeline.
        let mut last = number;
        while last < range_end && history.segment(last + 1, size).timeline == segment.timeline {
            last += 1;
        }
        end = Some(WalSegment::new(segment.timeline, last));
        number = last + 1;
    }
}

/// The highest segment number archived along `history` (on the timeline recovery would read it from).
fn last_archived(archive: &ArchiveReport, history: &TimelineHistory) -> Option<u64> {
    let size = archive.segment_size;
    archive
        .timelines
        .iter()
        .filter(|report| history.includes(report.timeline))
        .flat_map(|report| {
            report.ranges.iter().flat_map(move |range| {
                let (first, last) = range.numbers;
                (first..=last).rev().find(|number| history.segment(*number, size).timeline == report.timeline)
            })
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::cluster::SystemIdentifier;
    use crate::catalog::layout::ClusterLayout;
    use crate::catalog::wal::SegmentSize;
    use crate::config::ClusterName;
    use crate::format::backup_manifest::{BackupMethod, FORMAT_NAME, FORMAT_VERSION, Totals};
    use crate::restore::target::TargetAction;
    use crate::storage::ObjectKey;

    const SIZE: SegmentSize = SegmentSize::DEFAULT;

    fn tl(id: u32) -> Timeline {
        Timeline::new(id).unwrap()
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn backup(id: &str, timeline: u32, start: &str, stop: &str, stop_time: &str) -> BackupManifest {
        let id: BackupId = id.parse().unwrap();
        let (start_lsn, stop_lsn) = (lsn(start), lsn(stop));
        BackupManifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id,
            method: BackupMethod::Native,
            cluster: "main".into(),
            system_identifier: SystemIdentifier(1),
            postgres_version_num: 150000,
            postgres_version: "15".into(),
            wal_segment_size: SIZE,
            timeline: tl(timeline),
            start_lsn,
            stop_lsn,
            start_wal: WalSegment::containing(tl(timeline), start_lsn, SIZE).name(SIZE),
            stop_wal: WalSegment::containing(tl(timeline), Lsn(stop_lsn.0 - 1), SIZE).name(SIZE),
            start_time: id.started(),
            stop_time: stop_time.parse().unwrap(),
            label: String::new(),
            backup_label: String::new(),
            tablespace_map: None,
            host: String::new(),
            lifeboat_version: String::new(),
            tablespaces: vec![],
            totals: Totals::default(),
            incremental: None,
            block_map: None,
            objects: vec![],
            files: vec![],
        }
    }

    /// Timeline 1 segments 1..=9 archived, timeline 2 (branched at 0/7000100) segments 7..=12.
    fn catalog() -> Catalog {
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let mut keys: Vec<ObjectKey> = Vec::new();
        let segment_key = |timeline: u32, number: u64| {
            ObjectKey::new(format!(
                "clusters/main/wal/{}/{}",
                tl(timeline),
                WalSegment::new(tl(timeline), number).name(SIZE)
            ))
            .unwrap()
        };
        keys.extend((1..=9).map(|number| segment_key(1, number)));
        keys.extend((7..=12).map(|number| segment_key(2, number)));
        keys.push(ObjectKey::new("clusters/main/wal/00000002.history").unwrap());
        let archive = ArchiveReport::from_keys(&layout, "test".into(), None, keys);
        let histories = BTreeMap::from([(tl(2), TimelineHistory::parse(tl(2), "1\t0/7000100\tbranch\n").unwrap())]);
        Catalog {
            backups: vec![
                backup("20261101T000000Z-full", 1, "0/1000028", "0/2000100", "2026-11-01T00:01:00Z"),
                backup("20261102T000000Z-full", 1, "0/5000028", "0/5000200", "2026-11-02T00:01:00Z"),
                backup("20261103T000000Z-full", 1, "0/8000028", "0/8000200", "2026-11-03T00:01:00Z"),
            ],
            archive,
            histories,
        }
    }

    fn goal(target: RecoveryTarget, timeline: TimelineChoice) -> RecoveryGoal {
        RecoveryGoal { target, timeline, action: TargetAction::Promote, exclusive: false }
    }

    #[test]
    fn latest_follows_the_newest_timeline_from_a_backup_before_its_branch() {
        let plan =
            choose(&catalog(), &goal(RecoveryTarget::Latest, TimelineChoice::Latest), TargetPosition::NotNeeded, None)
                .unwrap();
        // The third backup is on timeline 1 after the branch point of timeline 2.
        assert_eq!(plan.backup.id.to_string(), "20261102T000000Z-full");
        assert_eq!(plan.history.timeline(), tl(2));
        assert_eq!(plan.first_wal, WalSegment::new(tl(1), 5));
        assert_eq!(plan.archive_end, WalSegment::new(tl(2), 12));
        assert_eq!(plan.last_wal, plan.archive_end);
        assert_eq!(plan.wal_segments(), 8);
    }

    #[test]
    fn current_timeline_keeps_the_newest_backup_on_timeline_one() {
        let plan =
            choose(&catalog(), &goal(RecoveryTarget::Latest, TimelineChoice::Current), TargetPosition::NotNeeded, None)
                .unwrap();
        assert_eq!(plan.backup.id.to_string(), "20261103T000000Z-full");
        assert_eq!(plan.archive_end, WalSegment::new(tl(1), 9));
    }

    #[test]
    fn times_and_lsns_pick_the_newest_backup_consistent_before_them() {
        let catalog = catalog();
        let at = |time: &str| {
            choose(
                &catalog,
                &goal(RecoveryTarget::Time(time.parse().unwrap()), TimelineChoice::Current),
                TargetPosition::LastTransaction(Some("2026-11-04T00:00:00Z".parse().unwrap())),
                None,
            )
        };
        assert_eq!(at("2026-11-02T12:00:00Z").unwrap().backup.id.to_string(), "20261102T000000Z-full");
        assert_eq!(at("2026-11-03T00:01:01Z").unwrap().backup.id.to_string(), "20261103T000000Z-full");
        let error = at("2026-11-01T00:00:30Z").unwrap_err();
        assert!(matches!(error, PlanError::BeforeEveryBackup { .. }), "{error}");
        assert!(error.to_string().contains("20261101T000000Z-full becomes consistent at 0/2000100"), "{error}");
        let error = at("2026-11-05T00:00:00Z").unwrap_err();
        assert!(matches!(error, PlanError::PastArchiveEnd { .. }), "{error}");

        let to_lsn = |text: &str| {
            choose(
                &catalog,
                &goal(RecoveryTarget::Lsn(lsn(text)), TimelineChoice::Current),
                TargetPosition::NotNeeded,
                None,
            )
        };
        let plan = to_lsn("0/6000000").unwrap();
        assert_eq!(plan.backup.id.to_string(), "20261102T000000Z-full");
        assert_eq!(plan.last_wal, WalSegment::new(tl(1), 6));
        let error = to_lsn("0/A000000").unwrap_err();
        assert!(error.to_string().contains("archive holds WAL up to 0/A000000"), "{error}");
    }

    #[test]
    fn records_found_in_the_wal_pick_the_backup_and_an_explicit_backup_is_checked() {
        let catalog = catalog();
        let xid = goal(RecoveryTarget::Xid(900), TimelineChoice::Current);
        let position = TargetPosition::Record { lsn: lsn("0/5000100"), end: lsn("0/5000180") };
        let plan = choose(&catalog, &xid, position, None).unwrap();
        assert_eq!(plan.backup.id.to_string(), "20261101T000000Z-full", "the second backup is consistent after it");
        assert_eq!(plan.last_wal, WalSegment::new(tl(1), 5));
        let error = choose(&catalog, &xid, position, Some("20261102T000000Z-full".parse().unwrap())).unwrap_err();
        assert!(matches!(error, PlanError::BackupCannotReach { .. }), "{error}");
        let error = choose(&catalog, &xid, TargetPosition::LastTransaction(None), None).unwrap_err();
        assert!(matches!(error, PlanError::TargetNotFound { .. }), "{error}");
        assert!(error.to_string().contains("transaction 900 was not found in the archived WAL"), "{error}");
        let latest = goal(RecoveryTarget::Latest, TimelineChoice::Latest);
        let error =
            choose(&catalog, &latest, TargetPosition::NotNeeded, Some("20261103T000000Z-full".parse().unwrap()))
                .unwrap_err();
        assert!(error.to_string().contains("not on the history of timeline 00000002"), "{error}");
    }

    #[test]
    fn a_hole_in_the_archive_is_named() {
        let mut catalog = catalog();
        // Drop segment 3 of timeline 1: the first backup cannot be restored to the end.
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let keys = (1..=9).filter(|number| *number != 3).map(|number| {
            ObjectKey::new(format!("clusters/main/wal/00000001/{}", WalSegment::new(tl(1), number).name(SIZE))).unwrap()
        });
        catalog.archive = ArchiveReport::from_keys(&layout, "test".into(), None, keys);
        catalog.histories.clear();
        let error = choose(
            &catalog,
            &goal(RecoveryTarget::Latest, TimelineChoice::Latest),
            TargetPosition::NotNeeded,
            Some("20261101T000000Z-full".parse().unwrap()),
        )
        .unwrap_err();
        assert!(error.to_string().contains("segment 000000010000000000000003 is missing"), "{error}");
        let newest =
            choose(&catalog, &goal(RecoveryTarget::Latest, TimelineChoice::Latest), TargetPosition::NotNeeded, None)
                .unwrap();
        assert_eq!(newest.archive_end, WalSegment::new(tl(1), 9), "the newest backup is past the hole");
        let plan = choose(
            &catalog,
            &goal(RecoveryTarget::Immediate, TimelineChoice::Latest),
            TargetPosition::NotNeeded,
            Some("20261101T000000Z-full".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(plan.last_wal, WalSegment::new(tl(1), 2), "immediate needs only the backup's own WAL");
    }
}
