//! The policy on hand-made inventories: each rule alone, their union, the guarantees that hold
//! whatever the settings, and the WAL boundary.

use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::catalog::id::BackupKind;
use crate::catalog::wal::WalSegment;

const MIB16: u64 = 16 * 1024 * 1024;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(i64::from(hour))
}

fn tl(id: u32) -> Timeline {
    Timeline::new(id).unwrap()
}

/// A full backup started at hour `hour` on timeline 1, starting in segment `hour + 2` and
/// consistent half an hour later.
fn full(hour: u32) -> FullBackup {
    full_on(tl(1), hour)
}

fn full_on(timeline: Timeline, hour: u32) -> FullBackup {
    let start = Lsn(u64::from(hour + 2) * MIB16 + 0x28);
    FullBackup {
        id: BackupId::new(at(hour), BackupKind::Full),
        chain: Vec::new(),
        timeline,
        start_lsn: start,
        stop_lsn: Lsn(start.0 + 0x100),
        stop_time: at(hour) + chrono::Duration::minutes(30),
        verified: None,
    }
}

fn dump(hour: u32) -> Dump {
    Dump {
        id: BackupId::new(at(hour), BackupKind::Dump),
        finished_at: at(hour) + chrono::Duration::minutes(5),
        verified: None,
    }
}

fn segment_object(timeline: u32, number: u64) -> WalObject {
    let file = WalFile::Segment(WalSegment::new(tl(timeline), number));
    WalObject { key: format!("wal/{}", file.name(SegmentSize::DEFAULT)), file }
}

fn inventory(backups: Vec<FullBackup>, dumps: Vec<Dump>) -> Inventory {
    Inventory { backups, dumps, segment_size: SegmentSize::DEFAULT, ..Inventory::default() }
}

fn kept(decision: &Decision) -> Vec<BackupId> {
    decision.items.iter().filter(|item| item.fate.is_kept()).map(|item| item.id).collect()
}

fn ids(backups: &[&FullBackup]) -> Vec<BackupId> {
    backups.iter().map(|backup| backup.id).collect()
}

fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours * 3600)
}

#[test]
fn no_policy_keeps_everything_and_says_why() {
    let mut inv = inventory(vec![full(0), full(10)], vec![dump(5)]);
    inv.wal = (0..20).map(|n| segment_object(1, n)).collect();
    let decision = decide(&inv, &Retention::default(), at(100));
    assert_eq!(kept(&decision).len(), 3);
    for item in &decision.items {
        assert_eq!(item.fate, Fate::Keep(vec![NO_POLICY.into()]));
    }
    assert!(decision.wal.iter().all(|object| object.fate == Fate::Keep(vec![NO_POLICY.into()])));
}

#[test]
fn a_policy_for_dumps_only_keeps_every_full_backup_but_not_the_wal_before_them() {
    let mut inv = inventory(vec![full(0), full(10)], vec![dump(5)]);
    inv.wal = (0..20).map(|n| segment_object(1, n)).collect();
    let decision = decide(&inv, &Retention { dumps: Some(0), ..Retention::default() }, at(100));
    assert_eq!(kept(&decision), [full(0).id, full(10).id]);
    assert!(decision.fate_of(full(0).id).unwrap().explain().contains("no retention rule for full backups"));
    let deleted: Vec<&str> =
        decision.wal.iter().filter(|object| !object.fate.is_kept()).map(|object| object.key.as_str()).collect();
    assert_eq!(deleted.len(), 2, "segments 0 and 1 end before the backup at segment 2: {deleted:?}");
}

#[test]
fn full_count_keeps_the_newest_n() {
    let backups = vec![full(0), full(10), full(20), full(30)];
    let policy = Retention { full: Some(2), ..Retention::default() };
    let decision = decide(&inventory(backups.clone(), vec![]), &policy, at(100));
    assert_eq!(kept(&decision), ids(&[&backups[2], &backups[3]]));
    assert!(decision.fate_of(backups[3].id).unwrap().explain().contains("newest 2 full backups"));
    assert!(decision.fate_of(backups[0].id).unwrap().explain().contains("no retention rule keeps"));
    assert_eq!(decision.earliest_restorable, Some((backups[2].id, backups[2].stop_time)));
}

#[test]
fn max_age_keeps_recent_backups_and_unions_with_count() {
    let backups = vec![full(0), full(10), full(20), full(30)];
    let policy = Retention { full: Some(1), max_age: Some(hours(85)), ..Retention::default() };
    // At hour 100: the backups of hours 20 and 30 completed within 85 hours; hour 30 is also the newest.
    let decision = decide(&inventory(backups.clone(), vec![]), &policy, at(100));
    assert_eq!(kept(&decision), ids(&[&backups[2], &backups[3]]));
    let newest = decision.fate_of(backups[3].id).unwrap();
    assert!(matches!(newest, Fate::Keep(rules) if rules.len() == 2), "{newest:?}");
}

#[test]
fn recovery_window_keeps_the_newest_backup_before_its_start_and_everything_after() {
    let backups = vec![full(0), full(10), full(20), full(30)];
    // Window start at hour 25: the backup of hour 20 (consistent at 20:30) covers it.
    let policy = Retention { recovery_window: Some(hours(75)), ..Retention::default() };
    let decision = decide(&inventory(backups.clone(), vec![]), &policy, at(100));
    assert_eq!(kept(&decision), ids(&[&backups[2], &backups[3]]));
    assert_eq!(decision.window_start, Some(at(25)));
    assert!(decision.fate_of(backups[2].id).unwrap().explain().contains("before the window's start"));
    // WAL from the anchor's start on stays, on every timeline; before it, none.
    assert_eq!(decision.wal_cutoff, Some((backups[2].id, backups[2].start_lsn)));
}

#[test]
fn a_backup_consistent_only_after_the_window_start_does_not_anchor_it() {
    let backups = vec![full(0), full(10)];
    // Window start 10:15: the backup of hour 10 becomes consistent at 10:30, too late.
    let now = at(20);
    let policy = Retention { recovery_window: Some(Duration::from_secs(9 * 3600 + 45 * 60)), ..Retention::default() };
    let decision = decide(&inventory(backups.clone(), vec![]), &policy, now);
    assert_eq!(kept(&decision), ids(&[&backups[0], &backups[1]]));
}

#[test]
fn recovery_window_anchors_on_the_history_that_leads_to_the_present() {
    // Timeline 2 branched from 1 at segment 15 (hour 13): the backup of hour 20 on timeline 1
    // lies past the branch, on the abandoned part; the present (timeline 2) is reached from the
    // backup of hour 10.
    let mut inv = inventory(vec![full(0), full(10), full(20), full_on(tl(2), 30)], vec![]);
    inv.histories.insert(tl(2), TimelineHistory::parse(tl(2), "1\t0/F000000\tpromoted\n").unwrap());
    inv.wal = vec![segment_object(2, 40)];
    let policy = Retention { recovery_window: Some(hours(75)), ..Retention::default() };
    let decision = decide(&inv, &policy, at(100));
    let anchor = inv.backups[1].id;
    assert!(decision.fate_of(anchor).unwrap().explain().contains("before the window's start"), "{decision:?}");
    assert!(!decision.fate_of(inv.backups[0].id).unwrap().is_kept());
}

#[test]
fn with_no_backup_before_the_window_every_backup_stays() {
    let backups = vec![full(90), full(95)];
    let policy = Retention { recovery_window: Some(hours(24)), full: Some(0), ..Retention::default() };
    let decision = decide(&inventory(backups, vec![]), &policy, at(100));
    assert_eq!(kept(&decision).len(), 2);
}

#[test]
fn the_newest_verified_backup_survives_any_settings_and_a_newer_unverified_one_does_not_protect_it() {
    let mut backups = vec![full(0), full(10), full(20), full(30)];
    backups[0].verified = Some(true);
    backups[1].verified = Some(true);
    backups[2].verified = Some(false);
    let policy = Retention { full: Some(0), max_age: Some(Duration::from_secs(1)), ..Retention::default() };
    let decision = decide(&inventory(backups.clone(), vec![]), &policy, at(100));
    assert_eq!(kept(&decision), ids(&[&backups[1]]));
    assert!(decision.fate_of(backups[1].id).unwrap().explain().contains("last verification passed"));
    // Its WAL stays with it.
    assert_eq!(decision.wal_cutoff, Some((backups[1].id, backups[1].start_lsn)));
}

#[test]
fn full_zero_with_nothing_verified_deletes_every_full_backup_and_keeps_all_wal() {
    let mut inv = inventory(vec![full(0), full(10)], vec![]);
    inv.wal = (0..30).map(|n| segment_object(1, n)).collect();
    let policy = Retention { full: Some(0), ..Retention::default() };
    let decision = decide(&inv, &policy, at(100));
    assert!(kept(&decision).is_empty());
    assert!(decision.wal.iter().all(|object| object.fate.is_kept()));
    assert_eq!(decision.earliest_restorable, None);
}

#[test]
fn dumps_by_count_and_age_and_the_newest_verified_dump() {
    let mut dumps = vec![dump(0), dump(10), dump(20), dump(30)];
    dumps[0].verified = Some(true);
    // At hour 100 with 81 hours: the dump of hour 20 (finished 20:05) is recent enough.
    let policy = Retention { dumps: Some(1), dump_max_age: Some(hours(81)), ..Retention::default() };
    let decision = decide(&inventory(vec![full(0)], dumps.clone()), &policy, at(100));
    assert_eq!(kept(&decision), [full(0).id, dumps[0].id, dumps[2].id, dumps[3].id]);
}

#[test]
fn dumps_are_kept_when_only_full_backups_are_limited() {
    let policy = Retention { full: Some(1), ..Retention::default() };
    let decision = decide(&inventory(vec![full(0), full(1)], vec![dump(0)]), &policy, at(100));
    assert!(decision.fate_of(dump(0).id).unwrap().is_kept());
    assert!(!decision.fate_of(full(0).id).unwrap().is_kept());
}

#[test]
fn wal_ending_at_the_cutoff_goes_and_the_segment_holding_it_stays() {
    let mut inv = inventory(vec![full(10)], vec![]);
    // The backup starts in segment 12; segments 0..=11 end at or before its start.
    inv.wal = (0..16).map(|n| segment_object(1, n)).chain([segment_object(2, 5)]).collect();
    let history = WalFile::History(tl(2));
    inv.wal.push(WalObject { key: "wal/00000002.history".into(), file: history });
    let partial = WalFile::Partial(WalSegment::new(tl(1), 11));
    inv.wal.push(WalObject { key: "wal/partial".into(), file: partial });
    let decision = decide(&inv, &Retention { full: Some(1), ..Retention::default() }, at(100));
    let fate = |key: &str| decision.wal.iter().find(|object| object.key == key).unwrap().fate.clone();
    assert!(!fate(&segment_object(1, 11).key).is_kept());
    assert!(fate(&segment_object(1, 12).key).is_kept());
    assert!(!fate(&segment_object(2, 5).key).is_kept(), "old WAL of any timeline goes");
    assert!(!fate("wal/partial").is_kept());
    assert!(fate("wal/00000002.history").is_kept(), "history files always stay");
}

#[test]
fn reports_follow_their_backup_and_the_newest_and_recorded_ones_stay() {
    let backups = vec![full(0), full(10)];
    let mut inv = inventory(backups.clone(), vec![]);
    let gone = BackupId::new(at(1), BackupKind::Full);
    let unknown = BackupId::new(at(2), BackupKind::Full);
    inv.deleted.insert(gone);
    let keys = |id: BackupId, n: usize| (0..n).map(|i| format!("verify/{id}/{i}")).collect::<Vec<_>>();
    inv.reports = vec![
        StoredReports { id: backups[0].id, keys: keys(backups[0].id, 2), recorded: None, recorded_restore: None },
        StoredReports {
            id: backups[1].id,
            keys: keys(backups[1].id, 3),
            recorded: Some(format!("verify/{}/1", backups[1].id)),
            recorded_restore: None,
        },
        StoredReports { id: gone, keys: keys(gone, 1), recorded: None, recorded_restore: None },
        StoredReports { id: unknown, keys: keys(unknown, 1), recorded: None, recorded_restore: None },
    ];
    let decision = decide(&inv, &Retention { full: Some(1), ..Retention::default() }, at(100));
    let kept: Vec<&str> =
        decision.reports.iter().filter(|report| report.fate.is_kept()).map(|report| report.key.as_str()).collect();
    let second = backups[1].id;
    assert_eq!(kept, [format!("verify/{second}/1"), format!("verify/{second}/2"), format!("verify/{unknown}/0")]);
}

#[test]
fn the_report_of_a_verification_by_restore_stays_after_newer_integrity_checks() {
    let backups = vec![full(10)];
    let mut inv = inventory(backups.clone(), vec![]);
    let id = backups[0].id;
    let keys = (0..4).map(|i| format!("verify/{id}/{i}")).collect::<Vec<_>>();
    inv.reports = vec![StoredReports {
        id,
        keys,
        recorded: Some(format!("verify/{id}/3")),
        recorded_restore: Some(format!("verify/{id}/1")),
    }];
    let decision = decide(&inv, &Retention { full: Some(1), ..Retention::default() }, at(100));
    let kept: Vec<&str> =
        decision.reports.iter().filter(|report| report.fate.is_kept()).map(|report| report.key.as_str()).collect();
    assert_eq!(kept, [format!("verify/{id}/1"), format!("verify/{id}/3")]);
}

#[test]
fn unfinished_deletions_are_finished() {
    let mut inv = inventory(vec![full(10)], vec![]);
    let interrupted = BackupId::new(at(0), BackupKind::Full);
    inv.unfinished_deletions.push(interrupted);
    let decision = decide(&inv, &Retention::default(), at(100));
    assert!(decision.fate_of(interrupted).unwrap().explain().contains("interrupted"));
    assert!(decision.fate_of(full(10).id).unwrap().is_kept());
}

#[test]
fn the_wal_cutoff_is_the_earliest_start_among_kept_backups() {
    // Three kept backups; the one that starts first sets the boundary.
    let backups = vec![full(0), full(10), full(20)];
    let decision =
        decide(&inventory(backups.clone(), vec![]), &Retention { full: Some(2), ..Retention::default() }, at(100));
    assert_eq!(decision.wal_cutoff, Some((backups[1].id, backups[1].start_lsn)));
}

#[test]
fn a_locked_backup_stays_and_keeps_its_wal() {
    let backups = vec![full(0), full(10)];
    let mut inv = inventory(backups.clone(), vec![]);
    inv.locked.insert(backups[0].id, at(200));
    let decision = decide(&inv, &Retention { full: Some(1), ..Retention::default() }, at(100));
    assert_eq!(kept(&decision), ids(&[&backups[0], &backups[1]]));
    assert!(decision.fate_of(backups[0].id).unwrap().explain().contains("object lock until 2026-11-09T08:00:00Z"));
    assert_eq!(decision.wal_cutoff, Some((backups[0].id, backups[0].start_lsn)));
}

/// An incremental at `hour` on top of `chain` (its full backup first).
fn incremental(hour: u32, chain: &[&FullBackup]) -> FullBackup {
    FullBackup {
        id: BackupId::new(at(hour), BackupKind::Incremental),
        chain: chain.iter().map(|backup| backup.id).collect(),
        ..full(hour)
    }
}

#[test]
fn incrementals_go_with_their_full_backup_and_keep_their_chain() {
    let (old, new) = (full(0), full(10));
    let old_1 = incremental(2, &[&old]);
    let old_2 = incremental(4, &[&old, &old_1]);
    let new_1 = incremental(12, &[&new]);
    let new_2 = incremental(14, &[&new, &new_1]);
    let inventory = Inventory {
        backups: vec![old.clone(), old_1.clone(), old_2.clone(), new.clone(), new_1.clone(), new_2.clone()],
        ..Inventory::default()
    };
    // full = 1: the newest full backup and the incrementals on it stay; the older chain goes whole.
    let decision = decide(&inventory, &Retention { full: Some(1), ..Retention::default() }, at(20));
    for kept in [&new, &new_1, &new_2] {
        assert!(decision.fate_of(kept.id).unwrap().is_kept(), "{}", kept.id);
    }
    assert!(decision.fate_of(new_2.id).unwrap().explain().contains("an incremental on"));
    for gone in [&old, &old_1, &old_2] {
        assert!(!decision.fate_of(gone.id).unwrap().is_kept(), "{}", gone.id);
    }
    // max_age keeping only the newest incremental of the old chain keeps the chain under it.
    let mut recent = inventory.clone();
    for backup in &mut recent.backups {
        backup.stop_time = if backup.id == old_2.id { at(19) } else { at(1) };
    }
    let decision = decide(&recent, &Retention { max_age: Some(hours(2)), ..Retention::default() }, at(20));
    for kept in [&old, &old_1, &old_2] {
        let fate = decision.fate_of(kept.id).unwrap();
        assert!(fate.is_kept(), "{}: {fate:?}", kept.id);
    }
    assert!(decision.fate_of(old.id).unwrap().explain().contains(&format!("kept incremental {}", old_2.id)));
    assert!(!decision.fate_of(new_1.id).unwrap().is_kept());
}
