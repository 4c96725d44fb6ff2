//! `lifeboat restore` end to end on real clusters: the ledger test (rows committed in batches, a
//! base backup in the middle, and a restore to each kind of target bringing back exactly the
//! batches committed before it), recovery across a timeline switch, a delta restore that rewrites
//! only the damaged files, restores from S3, a damaged object refused before PostgreSQL starts,
//! and the refusals that protect the user (non-empty directory, running server, impossible targets).
//!
//! The source cluster archives with the built binary's `wal-push` into the test's repository, and
//! restored servers fetch with its `wal-fetch`, as in production (tests/support/archiving.rs).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat::catalog::wal::{SegmentSize, WalFile, WalSegment};
use sqlx::PgConnection;
use support::archiving::{Options, Setup, archive_current_segment, execute, layout, scalar};
use support::output::{assert_failure, assert_success, describe};
use support::restored::{Restored, free_port, restore_and_start};
use support::s3::{S3Server, S3ServerKind};

/// The batches present in the ledger, in order.
async fn batches(conn: &mut PgConnection) -> Vec<i32> {
    sqlx::query_scalar("SELECT DISTINCT batch FROM ledger ORDER BY batch").fetch_all(&mut *conn).await.unwrap()
}

/// Commits batch `batch` (100 rows) in one transaction; returns its xid and its commit time.
async fn commit_batch(conn: &mut PgConnection, batch: i32) -> (String, String) {
    // Commits at least a few milliseconds apart, so a time between two of them is easy to name.
    tokio::time::sleep(Duration::from_millis(20)).await;
    execute(conn, "BEGIN").await;
    let xid = scalar(conn, "SELECT txid_current()::text").await;
    execute(conn, &format!("INSERT INTO ledger SELECT {batch}, g, repeat('x', 200) FROM generate_series(1, 100) g"))
        .await;
    execute(conn, "COMMIT").await;
    let committed = scalar(conn, &format!("SELECT pg_xact_commit_timestamp('{xid}'::xid)::text")).await;
    (xid, committed)
}

/// A time between two commits, as PostgreSQL prints it: one millisecond after `after`.
async fn just_after(conn: &mut PgConnection, time: &str) -> String {
    scalar(conn, &format!("SELECT ('{time}'::timestamptz + interval '1 millisecond')::text")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_comes_back_exactly_to_each_kind_of_target() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    // A table large enough to be stored in several parts.
    execute(&mut conn, "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 60000) g").await;
    let mut commits = BTreeMap::new();
    for batch in 1..=3 {
        commits.insert(batch, commit_batch(&mut conn, batch).await);
    }
    let backup = setup.backup().await;
    for batch in 4..=5 {
        commits.insert(batch, commit_batch(&mut conn, batch).await);
    }
    let restore_point = scalar(&mut conn, "SELECT pg_create_restore_point('before_6')::text").await;
    commits.insert(6, commit_batch(&mut conn, 6).await);
    commits.insert(7, commit_batch(&mut conn, 7).await);
    let lsn_after_7 = scalar(&mut conn, "SELECT pg_current_wal_insert_lsn()::text").await;
    commits.insert(8, commit_batch(&mut conn, 8).await);
    archive_current_segment(&mut conn).await;
    assert!(!restore_point.is_empty());

    // A dry run says what it would do and writes nothing.
    let dry = setup.restore(&setup.restore_dir("dry"), &["--dry-run", "--target", "immediate"]);
    assert_success(&dry);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        stdout.contains(&format!("would restore backup {backup}")) && stdout.contains("nothing was written"),
        "{stdout}"
    );
    assert!(!setup.restore_dir("dry").exists(), "a dry run creates nothing");

    let time_after_5 = just_after(&mut conn, &commits[&5].1).await;
    let xid_5 = commits[&5].0.clone();
    let cases: Vec<(&str, Vec<&str>, Vec<i32>)> = vec![
        ("immediate", vec!["--target", "immediate"], vec![1, 2, 3]),
        ("time", vec!["--target-time", &time_after_5], vec![1, 2, 3, 4, 5]),
        ("xid", vec!["--target-xid", &xid_5], vec![1, 2, 3, 4, 5]),
        ("xid-exclusive", vec!["--target-xid", &xid_5, "--target-exclusive"], vec![1, 2, 3, 4]),
        ("name", vec!["--target-name", "before_6"], vec![1, 2, 3, 4, 5]),
        ("lsn", vec!["--target-lsn", &lsn_after_7], vec![1, 2, 3, 4, 5, 6, 7]),
        ("latest", vec![], vec![1, 2, 3, 4, 5, 6, 7, 8]),
    ];
    for (name, args, expected) in cases {
        let (restored, stdout) = restore_and_start(&setup, name, &args);
        assert!(stdout.contains(&format!("restored backup {backup}")), "{name}: {stdout}");
        assert!(stdout.contains("recovery finished"), "{name}: {stdout}");
        let mut restored_conn = restored.connect().await;
        assert_eq!(batches(&mut restored_conn).await, expected, "target {name}");
        let rows = scalar(&mut restored_conn, "SELECT count(*)::text FROM ledger").await;
        assert_eq!(rows, (expected.len() * 100).to_string(), "target {name}: whole batches only");
        let bulk = scalar(&mut restored_conn, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM bulk").await;
        let original = scalar(&mut conn, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM bulk").await;
        assert_eq!(bulk, original, "target {name}: the multi-part table is intact");
        drop(restored_conn);
        drop(restored);
        std::fs::remove_dir_all(setup.restore_dir(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_targets_and_unsafe_directories_are_refused_before_anything_is_written() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    let (_, before_backup) = commit_batch(&mut conn, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.backup().await;
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;
    let target = setup.restore_dir("refused");

    let error = assert_failure(&setup.restore(&target, &["--target-time", &before_backup]));
    assert!(error.contains("precedes every backup") && error.contains("becomes consistent at"), "{error}");
    let error = assert_failure(&setup.restore(&target, &["--target-time", "2099-01-01 00:00:00+00"]));
    assert!(error.contains("lies past the end of the archived WAL") && error.contains("--target latest"), "{error}");
    let error = assert_failure(&setup.restore(&target, &["--target-xid", "999999"]));
    assert!(error.contains("transaction 999999 was not found in the archived WAL"), "{error}");
    let error = assert_failure(&setup.restore(&target, &["--target-lsn", "FF/0"]));
    assert!(error.contains("past the end of the archived WAL"), "{error}");
    let usage = setup.restore(&target, &["--target-time", "2026-11-22 02:59:00"]);
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&usage));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("no UTC offset"), "{}", describe(&usage));
    assert!(!target.exists(), "refusals write nothing");

    // A non-empty directory, and a running server (the source's own data directory).
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let error = assert_failure(&setup.restore(&target, &[]));
    assert!(error.contains("is not empty") && error.contains("--delta") && error.contains("--force"), "{error}");
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");
    let error = assert_failure(&setup.restore(setup.cluster.data_dir(), &["--force"]));
    assert!(error.contains("is running on") && error.contains("pg_ctl stop"), "{error}");
    assert_eq!(batches(&mut conn).await, vec![1, 2], "the running cluster is untouched");
}

/// The files below `base/` with their inode numbers.
fn relation_inodes(pgdata: &Path) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut stack = vec![pgdata.join("base")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let relative = entry.path().strip_prefix(pgdata).unwrap().display().to_string();
                found.insert(relative, meta.ino());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_restore_rewrites_only_the_damaged_files() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    execute(&mut conn, "CREATE TABLE other (id int PRIMARY KEY, v text)").await;
    execute(&mut conn, "INSERT INTO other SELECT g, md5(g::text) FROM generate_series(1, 5000) g").await;
    commit_batch(&mut conn, 1).await;
    execute(&mut conn, "CHECKPOINT").await;
    let ledger_file = scalar(&mut conn, "SELECT pg_relation_filepath('ledger')").await;
    let other_file = scalar(&mut conn, "SELECT pg_relation_filepath('other')").await;
    setup.backup().await;
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;

    let pgdata = setup.restore_dir("delta");
    assert_success(&setup.restore(&pgdata, &["--archive-mode", "off"]));
    let before = relation_inodes(&pgdata);
    assert!(before.contains_key(&ledger_file) && before.contains_key(&other_file), "{before:?}");
    // Held open, these files keep their inodes: a file written anew cannot get the number of the one
    // it replaces (ext4 hands freed inode numbers out again, so the comparison below could miss it).
    let _held: Vec<std::fs::File> = before.keys().map(|path| std::fs::File::open(pgdata.join(path)).unwrap()).collect();
    // Damage one relation file (same size, different bytes) and delete another.
    let damaged = pgdata.join(&ledger_file);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::remove_file(pgdata.join(&other_file)).unwrap();
    std::fs::write(pgdata.join("base/stray_file"), b"not in the backup").unwrap();

    let error = assert_failure(&setup.restore(&pgdata, &["--archive-mode", "off"]));
    assert!(error.contains("is not empty"), "{error}");
    let port = free_port(&setup).to_string();
    let output = setup.restore(&pgdata, &["--delta", "--archive-mode", "off", "--start", "--port", &port]);
    let restored = Restored::of(&setup, pgdata.clone(), port.parse().unwrap());
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 removed"), "the stray file is removed: {stdout}");
    assert!(!pgdata.join("base/stray_file").exists());

    // Compare with the state right after the first restore: only the two files are new.
    let after = relation_inodes(&pgdata);
    let rewritten: Vec<&String> =
        before.iter().filter(|(path, inode)| after.get(*path) != Some(inode)).map(|(path, _)| path).collect();
    assert_eq!(rewritten, {
        let mut expected = vec![&ledger_file, &other_file];
        expected.sort();
        expected
    });
    let mut restored_conn = restored.connect().await;
    assert_eq!(batches(&mut restored_conn).await, vec![1, 2]);
    assert_eq!(scalar(&mut restored_conn, "SELECT count(*)::text FROM other").await, "5000");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_stops_the_restore_before_postgres_starts_and_names_it() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    commit_batch(&mut conn, 1).await;
    let backup = setup.backup().await;
    archive_current_segment(&mut conn).await;
    let object = setup.damage_largest_object(&backup);

    let pgdata = setup.restore_dir("damaged");
    let port = free_port(&setup).to_string();
    let error = assert_failure(&setup.restore(&pgdata, &["--start", "--port", &port]));
    assert!(error.contains(&object) && error.contains("damaged"), "{error}");
    assert!(error.contains("before starting PostgreSQL"), "{error}");
    assert!(!pgdata.join("postmaster.pid").exists(), "no server was started");
    assert!(!pgdata.join("global/pg_control").exists(), "a failed restore never looks complete");
}

/// Flips one byte in the middle of the stored object of WAL segment `name` of timeline 1; its path.
fn damage_wal_segment(setup: &Setup, name: &str) -> PathBuf {
    let segment = WalSegment::parse(name, SegmentSize::DEFAULT).unwrap();
    let key = layout().wal_file(&WalFile::Segment(segment), SegmentSize::DEFAULT);
    let path = setup.repo_dir().join(key.as_str());
    let mut bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_4_a_damaged_wal_segment_the_backup_needs_fails_the_restore_before_anything_is_written() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    commit_batch(&mut conn, 1).await;
    let manifest = setup.backup_with(|options| options.part_size = 1024 * 1024).await.manifest;
    archive_current_segment(&mut conn).await;

    // Intact, a restore says which WAL it authenticated.
    let intact = setup.restore_dir("intact");
    let output = setup.restore(&intact, &[]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{} .. {} authenticated", manifest.start_wal, manifest.stop_wal)),
        "{}",
        describe(&output)
    );

    damage_wal_segment(&setup, &manifest.start_wal);
    let pgdata = setup.restore_dir("damaged-wal");
    let error = assert_failure(&setup.restore(&pgdata, &[]));
    assert!(error.contains(&format!("WAL file {} is damaged", manifest.start_wal)), "{error}");
    assert!(error.contains(&manifest.id.to_string()) && error.contains("--backup ID"), "{error}");
    assert!(error.contains("Nothing was written"), "{error}");
    assert!(!pgdata.exists(), "a restore that cannot recover writes nothing");

    // --force must not empty a directory for a restore that cannot succeed.
    let kept = intact.join("PG_VERSION");
    let error = assert_failure(&setup.restore(&intact, &["--force"]));
    assert!(error.contains(&manifest.start_wal), "{error}");
    assert!(kept.exists() && intact.join("global/pg_control").exists(), "--force deleted nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_start_reads_the_wal_ahead_of_recovery_and_leaves_no_spool_behind() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    setup.backup().await;
    let mut last = String::new();
    for batch in 1..=6 {
        last = commit_batch(&mut conn, batch).await.1;
        archive_current_segment(&mut conn).await;
    }
    commit_batch(&mut conn, 7).await;
    archive_current_segment(&mut conn).await;
    let time = just_after(&mut conn, &last).await;

    let pgdata = setup.restore_dir("read-ahead");
    let port = free_port(&setup).to_string();
    let output = setup.restore(&pgdata, &["--target-time", &time, "--archive-mode", "off", "--start", "--port", &port]);
    let restored = Restored::of(&setup, pgdata.clone(), port.parse().unwrap());
    assert_success(&output);
    assert_eq!(batches(&mut restored.connect().await).await, vec![1, 2, 3, 4, 5, 6]);
    // lifeboat downloaded segments into the spool while the server replayed, given to the server's
    // OS user (it runs wal-fetch), and wal-fetch served them from there.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let taken: usize = stderr
        .split("recovery took ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no read-ahead line: {stderr}"));
    assert!(taken >= 1, "recovery took no segment read ahead: {stderr}");
    // Once recovery has ended, nothing is left waiting in the spool.
    let spool = pgdata.join("pg_wal/.lifeboat-spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "segments left in {}: {left:?}", spool.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_follows_a_new_timeline_after_a_promotion() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    commit_batch(&mut conn, 1).await;
    setup.backup().await;
    let (_, after_2) = commit_batch(&mut conn, 2).await;
    commit_batch(&mut conn, 3).await;
    archive_current_segment(&mut conn).await;

    // Restore to just after batch 2 and promote: timeline 2, which keeps archiving (archive mode
    // preserved) into the same repository.
    let first = setup.restore_dir("first");
    let port = free_port(&setup);
    let time = just_after(&mut conn, &after_2).await;
    let output = setup.restore(&first, &["--target-time", &time, "--start", "--port", &port.to_string()]);
    let restored = Restored::of(&setup, first.clone(), port);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("new timeline 2"), "{}", describe(&output));
    // --start has the server promote where it pauses at the target (pg_ctl promote, requested
    // while it replays), so PostgreSQL ends recovery without waiting for a full checkpoint, and the
    // restore command returns sooner.
    let server_log = std::fs::read_to_string(first.join("lifeboat-restore.log")).unwrap();
    assert!(server_log.contains("received promote request"), "{server_log}");
    assert!(!server_log.contains("end-of-recovery immediate wait"), "{server_log}");
    let mut restored_conn = restored.connect().await;
    assert_eq!(batches(&mut restored_conn).await, vec![1, 2]);
    assert_eq!(scalar(&mut restored_conn, "SELECT pg_is_in_recovery()::text").await, "false");
    let (_, after_20) = commit_batch(&mut restored_conn, 20).await;
    commit_batch(&mut restored_conn, 21).await;
    archive_current_segment(&mut restored_conn).await;
    let time = just_after(&mut restored_conn, &after_20).await;
    drop(restored_conn);
    drop(restored);

    // Restoring again to a time on timeline 2 follows the history through the switch.
    let (second, stdout) = restore_and_start(&setup, "second", &["--target-time", &time]);
    assert!(stdout.contains("timeline 2"), "{stdout}");
    let mut second_conn = second.connect().await;
    assert_eq!(batches(&mut second_conn).await, vec![1, 2, 20]);
    // And timeline 1 is still there for whoever asks for it.
    let (third, _) = restore_and_start(&setup, "third", &["--target-timeline", "1"]);
    assert_eq!(batches(&mut third.connect().await).await, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_from_s3_brings_back_every_committed_row() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let setup = Setup::with(Options::restorable().s3(&server, &bucket)).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL, note text)").await;
    execute(&mut conn, "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 60000) g").await;
    commit_batch(&mut conn, 1).await;
    setup.backup().await;
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;
    let (restored, _) = restore_and_start(&setup, "from-s3", &[]);
    let mut restored_conn = restored.connect().await;
    assert_eq!(batches(&mut restored_conn).await, vec![1, 2]);
    let bulk = scalar(&mut restored_conn, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM bulk").await;
    assert_eq!(bulk, scalar(&mut conn, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM bulk").await);
}
