//! `lifeboat expire` against a real cluster archiving with `wal-push` into a local repository (and,
//! for the recovery window, an S3 one):
//! the recovery window keeps every moment inside it restorable and removes what lies before it
//! from storage; an expire killed part-way leaves only whole backups and the next run removes the
//! rest; `wal-push` running meanwhile loses nothing; the newest verified backup survives any
//! settings.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use support::archiving::{Options, Setup, archive_current_segment, execute, scalar};
use support::output::{assert_failure, assert_success, describe};
use support::restored::restore_and_start;
use support::s3::{S3Server, S3ServerKind};

/// Sets `[backup] retention` to `policy` (an inline table), replacing any earlier one.
fn set_retention(setup: &Setup, policy: &str) {
    let path = setup.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().filter(|line| !line.starts_with("retention = ")).collect();
    let text = kept.join("\n").replacen("[backup]\n", &format!("[backup]\nretention = {policy}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

/// Commits batch `batch` (50 rows) in one transaction; its commit time.
async fn commit_batch(conn: &mut PgConnection, batch: i32) -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    execute(conn, "BEGIN").await;
    let xid = scalar(conn, "SELECT txid_current()::text").await;
    execute(conn, &format!("INSERT INTO ledger SELECT {batch}, g FROM generate_series(1, 50) g")).await;
    execute(conn, "COMMIT").await;
    scalar(conn, &format!("SELECT pg_xact_commit_timestamp('{xid}'::xid)::text")).await
}

async fn just_after(conn: &mut PgConnection, time: &str) -> String {
    scalar(conn, &format!("SELECT ('{time}'::timestamptz + interval '1 millisecond')::text")).await
}

async fn batches(conn: &mut PgConnection) -> Vec<i32> {
    sqlx::query_scalar("SELECT DISTINCT batch FROM ledger ORDER BY batch").fetch_all(&mut *conn).await.unwrap()
}

/// Restores to `args` with `--start`; the batches the restored server holds.
async fn restored_batches(setup: &Setup, name: &str, args: &[&str]) -> Vec<i32> {
    let (restored, _) = restore_and_start(setup, name, args);
    let mut conn = restored.connect().await;
    let found = batches(&mut conn).await;
    drop(conn);
    let pgdata = restored.pgdata.clone();
    drop(restored);
    std::fs::remove_dir_all(pgdata).unwrap();
    found
}

fn stop_time(setup: &Setup, id: &str) -> DateTime<Utc> {
    setup.json(&["info", id, "--json"])["stop_time"].as_str().unwrap().parse().unwrap()
}

fn start_wal(setup: &Setup, id: &str) -> String {
    setup.json(&["info", id, "--json"])["start_wal"].as_str().unwrap().to_owned()
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.insert(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

/// The archived segments (24 hex digits) of timeline 1 in the local repository.
fn archived_segments(setup: &Setup) -> BTreeSet<String> {
    files(&setup.repo_dir().join("clusters/main/wal/00000001")).into_iter().filter(|name| name.len() == 24).collect()
}

/// The keys under `prefix` (below `clusters/main/`) in the repository, wherever it is stored,
/// relative to `prefix`.
async fn stored(setup: &Setup, prefix: &str) -> BTreeSet<String> {
    let prefix = format!("clusters/main/{prefix}");
    let repository = setup.repository().await;
    let listed = repository.store().list(&prefix).await.unwrap();
    listed.into_iter().map(|meta| meta.key.as_str()[prefix.len()..].to_owned()).collect()
}

/// [`archived_segments`] for a repository wherever it is stored.
async fn stored_segments(setup: &Setup) -> BTreeSet<String> {
    stored(setup, "wal/00000001/").await.into_iter().filter(|name| name.len() == 24).collect()
}

fn listed_ids(setup: &Setup) -> Vec<String> {
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["problems"], serde_json::json!([]), "{list:#}");
    list["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_window_keeps_every_moment_inside_it_restorable_and_removes_what_lies_before() {
    recovery_window_scenario(Setup::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_window_on_an_s3_repository_keeps_every_moment_inside_it_restorable() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    recovery_window_scenario(Setup::with(Options::restorable().s3(&server, &bucket)).await).await;
}

/// The ledger: three backups with batches between them and WAL archived throughout; a recovery
/// window whose start falls between the second backup and batch 3.
async fn recovery_window_scenario(setup: Setup) {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    let committed_1 = commit_batch(&mut conn, 1).await;
    archive_current_segment(&mut conn).await;
    let oldest = setup.backup().await;
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;
    let anchor = setup.backup().await;
    let anchor_stop = stop_time(&setup, &anchor);
    // The window will start here: after the anchor became consistent, before batch 3.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let window_start = Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let committed_3 = commit_batch(&mut conn, 3).await;
    archive_current_segment(&mut conn).await;
    let newest = setup.backup().await;
    let committed_4 = commit_batch(&mut conn, 4).await;
    commit_batch(&mut conn, 5).await;
    archive_current_segment(&mut conn).await;
    let before_anchor = start_wal(&setup, &anchor);
    let segments_before: BTreeSet<String> = stored_segments(&setup).await;
    assert!(segments_before.iter().any(|segment| *segment < before_anchor), "WAL older than the anchor exists");

    // A window reaching back to `window_start` (expire applies it a moment later, which moves
    // the start by that moment: far less than the 1.5 s on either side).
    let window_ms = (Utc::now() - window_start).num_milliseconds();
    set_retention(&setup, &format!("{{ recovery_window = \"{window_ms}ms\", full = 1 }}"));
    let dry = setup.json(&["expire", "--dry-run", "--json"]);
    assert_eq!(dry["schema"], "expire/1");
    let action = |document: &serde_json::Value, id: &str| {
        let item = document["items"].as_array().unwrap().iter().find(|item| item["id"] == id).unwrap().clone();
        (item["action"].as_str().unwrap().to_owned(), item["reasons"].to_string())
    };
    assert_eq!(action(&dry, &oldest).0, "delete", "{dry:#}");
    let (kept, why) = action(&dry, &anchor);
    assert_eq!(kept, "keep");
    assert!(why.contains("before the window's start"), "{why}");
    assert!(action(&dry, &newest).1.contains("newest 1 full backups"), "{dry:#}");
    assert!(stored(&setup, &format!("backups/{oldest}/")).await.contains("manifest"), "a dry run deletes nothing");
    let text = setup.run(&["expire", "--dry-run"]);
    assert_success(&text);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("would delete") && text.contains(&oldest) && text.contains("keep"), "{text}");

    let expired = setup.json(&["expire", "--json"]);
    assert_eq!(action(&expired, &oldest).0, "deleted", "{expired:#}");
    assert!(expired["bytes_deleted"].as_u64().unwrap() > 0);
    assert!(DateTime::parse_from_rfc3339(expired["window_start"].as_str().unwrap()).unwrap() > anchor_stop);

    // Gone from storage: the oldest backup's objects and the WAL before the anchor's start.
    assert!(stored(&setup, &format!("backups/{oldest}/")).await.is_empty());
    let segments_after = stored_segments(&setup).await;
    assert!(segments_after.iter().all(|segment| *segment >= before_anchor), "{segments_after:?}");
    assert!(segments_after.contains(&before_anchor), "the anchor's first segment stays");
    assert_eq!(listed_ids(&setup), [anchor.clone(), newest.clone()]);

    // Every moment inside the window restores exactly the batches committed before it.
    let after_3 = just_after(&mut conn, &committed_3).await;
    let after_4 = just_after(&mut conn, &committed_4).await;
    assert_eq!(restored_batches(&setup, "after3", &["--target-time", &after_3, "--backup", &anchor]).await, [1, 2, 3]);
    assert_eq!(restored_batches(&setup, "after4", &["--target-time", &after_4]).await, [1, 2, 3, 4]);
    assert_eq!(restored_batches(&setup, "latest", &[]).await, [1, 2, 3, 4, 5]);

    // A moment before what the policy kept is refused, saying so.
    let after_1 = just_after(&mut conn, &committed_1).await;
    let refused = setup.restore(&setup.restore_dir("refused"), &["--target-time", &after_1]);
    let message = assert_failure(&refused);
    assert!(message.contains("retention policy keeps"), "{message}");
    assert!(message.contains(&format!("backup {anchor} becomes consistent")), "{message}");

    // The window slides with time; a wider one that reaches back past the anchor deletes nothing more.
    set_retention(&setup, "{ recovery_window = \"1h\" }");
    let again = setup.json(&["expire", "--json"]);
    assert_eq!(again["objects_deleted"], 0, "{again:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_newest_verified_backup_survives_settings_that_keep_nothing() {
    let setup = Setup::start_verifying("").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    commit_batch(&mut conn, 1).await;
    let first = setup.backup().await;
    let verified = setup.backup().await;
    assert_success(&setup.run(&["verify", &verified]));
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;
    let unverified = setup.backup().await;
    archive_current_segment(&mut conn).await;

    set_retention(&setup, "{ full = 0, max_age = \"1s\" }");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = setup.json(&["expire", "--json"]);
    let fates: Vec<(String, String)> = expired["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["id"].as_str().unwrap().to_owned(), item["action"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        fates,
        [(first, "deleted".to_owned()), (verified.clone(), "keep".to_owned()), (unverified, "deleted".to_owned())],
        "{expired:#}"
    );
    assert_eq!(listed_ids(&setup), std::slice::from_ref(&verified));
    assert_eq!(restored_batches(&setup, "kept", &["--target", "immediate"]).await, [1]);
}

/// Runs `lifeboat expire` and SIGKILLs it once `kill_after` more objects of the repository are gone.
fn expire_killed_after(setup: &Setup, kill_after: usize) {
    let before = files(&setup.repo_dir()).len();
    let mut child = setup.command(&["expire"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gone = before.saturating_sub(files(&setup.repo_dir()).len());
        if gone >= kill_after {
            child.kill().unwrap();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "expire ran too long");
        std::thread::sleep(Duration::from_micros(200));
    }
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expire_killed_part_way_leaves_whole_backups_and_the_next_run_removes_the_rest() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    let mut ids = Vec::new();
    for batch in 1..=4 {
        commit_batch(&mut conn, batch).await;
        archive_current_segment(&mut conn).await;
        ids.push(setup.backup().await);
    }
    archive_current_segment(&mut conn).await;
    set_retention(&setup, "{ full = 1 }");
    // Killed at several points: a few objects in (inside the first backup), later (inside the
    // second), and among the WAL.
    for kill_after in [3, 40, 80] {
        expire_killed_after(&setup, kill_after);
        // Only whole backups are listed. A kill between the journal entry and the manifest's
        // deletion leaves that one flagged as an interrupted deletion, and nothing else.
        let list = setup.json(&["list", "--json"]);
        for problem in list["problems"].as_array().unwrap() {
            assert!(problem["detail"].as_str().unwrap().contains("a delete was interrupted"), "{list:#}");
        }
        for entry in list["backups"].as_array().unwrap() {
            let id = entry["id"].as_str().unwrap();
            let info = setup.run(&["info", id]);
            assert_success(&info);
        }
    }
    let expired = setup.json(&["expire", "--json"]);
    assert_eq!(listed_ids(&setup), [ids[3].clone()], "{expired:#}");
    for gone in &ids[..3] {
        assert!(files(&setup.repo_dir().join(format!("clusters/main/backups/{gone}"))).is_empty(), "{gone}");
        assert!(files(&setup.repo_dir().join(format!("clusters/main/verify/{gone}"))).is_empty(), "{gone}");
    }
    let start = start_wal(&setup, &ids[3]);
    assert!(archived_segments(&setup).iter().all(|segment| *segment >= start));
    assert_eq!(restored_batches(&setup, "after", &[]).await, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_pushed_while_expire_runs_stays_archived() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    for batch in 1..=3 {
        commit_batch(&mut conn, batch).await;
        archive_current_segment(&mut conn).await;
        setup.backup().await;
    }
    set_retention(&setup, "{ full = 1 }");
    // While expire runs, the server keeps committing batches and switching segments, and its
    // archive_command (wal-push) acknowledges each one.
    // It starts before expire and goes on after it, so however quick the expire, segments are
    // pushed around it (how many land during it depends on timing, and is not asserted).
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    let running = std::sync::Arc::new(AtomicBool::new(true));
    let written = std::sync::Arc::new(AtomicI32::new(3));
    let writer = {
        let (running, written) = (running.clone(), written.clone());
        let mut conn = setup.connect().await;
        tokio::spawn(async move {
            let mut batch = 4;
            while running.load(Ordering::SeqCst) {
                commit_batch(&mut conn, batch).await;
                scalar(&mut conn, "SELECT pg_switch_wal()::text").await;
                written.store(batch, Ordering::SeqCst);
                batch += 1;
            }
            batch - 1
        })
    };
    while written.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut command = setup.command(&["expire"]);
    let expired = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let after_expire = written.load(Ordering::SeqCst);
    while written.load(Ordering::SeqCst) < after_expire + 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.store(false, Ordering::SeqCst);
    let last_batch = writer.await.unwrap();
    assert_success(&expired);
    archive_current_segment(&mut conn).await;
    let archived = scalar(&mut conn, "SELECT last_archived_wal FROM pg_stat_archiver").await;
    // Every segment acknowledged (archived) from the kept backup's start on is there, without a gap.
    let kept = listed_ids(&setup);
    assert_eq!(kept.len(), 1);
    let start = start_wal(&setup, &kept[0]);
    let segments = archived_segments(&setup);
    let number = |name: &str| {
        u64::from_str_radix(&name[8..16], 16).unwrap() * 256 + u64::from_str_radix(&name[16..24], 16).unwrap()
    };
    let (first, last) = (number(&start), number(&archived));
    for number in first..=last {
        let name = format!("00000001{:08X}{:08X}", number >> 8, number & 0xFF);
        assert!(segments.contains(&name), "{name} was acknowledged but is not archived: {}", describe(&expired));
    }
    let expected: Vec<i32> = (1..=last_batch).collect();
    assert_eq!(restored_batches(&setup, "after", &[]).await, expected);
}
