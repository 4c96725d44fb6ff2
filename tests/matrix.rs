//! The version matrix: the end-to-end scenarios whose outcome depends on the PostgreSQL major
//! (WAL format, backup API, recovery settings, client programs), run against every major from 13
//! to 18, one test per scenario and major (`pg13::native_backup_restores_every_target`, ...) so
//! they run in parallel and a failure names the major. The rest of the suite runs on the default
//! major only.
//!
//! - A native base backup of a cluster archiving with `wal-push`, then a ledger of batches with
//!   known xids and commit times around a named restore point, with a transaction that drops a
//!   table (PostgreSQL 15+ log the dropped statistics in its commit record) and a prepared one:
//!   restores to a time, an xid (inclusive and exclusive), the restore point, an LSN, latest and
//!   immediate each bring back exactly the batches committed before the target (restored servers
//!   fetch WAL with `wal-fetch`), and so does a delta restore over a used restored directory.
//! - A streamed base backup (`--method basebackup`, `pg_basebackup`) restored to latest.
//! - A chain of two incremental backups found from the major's WAL (block references, a table
//!   created between them): the second restored to its own point brings back exactly its batches
//!   and rows.
//! - A timeline switch: a restore to a restore point, promoted and archiving into the same
//!   repository, commits on timeline 2, which a later restore to latest follows.
//! - A verification by restore of a base backup (amcheck at its default level), a dump verified
//!   with its exact row counts, and the dump restored into a fresh database.
//! - `lifeboat quickstart --bin-dir <the major's programs>`: the whole tour (archive, backup,
//!   verify, accident, point-in-time restore) brings the 1000 orders back.
//!
//! Each setup runs its major's server programs and names them in `[cluster] bin_dir` (the default
//! major, 15, is found by discovery), with PostgreSQL 18's client programs at the end of `PATH`
//! (tests/support/postgres.rs). Where a scenario has independent steps (the restore targets, the
//! verifications and the dump restore), each is tried and the test fails at the end with every
//! failed step's output, so one run tells what fails on a major.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, PgConnection};
use support::archiving::{LIFEBOAT, Options, Setup, archive_current_segment, execute, scalar, without_steering_env};
use support::output::describe;
use support::postgres;
use support::restored::{Restored, free_port};

/// Rows per batch: enough to tell batches apart, small enough to keep the WAL to a few segments.
const ROWS: i32 = 10;

/// What every scenario starts from: PostgreSQL `major` archiving with `wal-push`, commit
/// timestamps kept, prepared transactions allowed.
fn options(major: u32) -> Options {
    Options::restorable().postgres(major).setting("max_prepared_transactions", "2")
}

/// Restores into directory `name` with `args` and `--start`; the running server and the restore's
/// standard output.
fn restore_and_start(setup: &Setup, name: &str, args: &[&str]) -> (Restored, String) {
    let pgdata = setup.restore_dir(name);
    let port = free_port(setup);
    let port_text = port.to_string();
    let mut all = vec!["--start", "--port", port_text.as_str()];
    all.extend_from_slice(args);
    let output = setup.restore(&pgdata, &all);
    let restored = Restored::of(setup, pgdata, port);
    assert!(output.status.success(), "restore {name} ({args:?}) failed\n{}", describe(&output));
    (restored, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The batches in the ledger, in order, after checking that each is whole.
async fn batches(conn: &mut PgConnection) -> Vec<i32> {
    let counts: Vec<(i32, i64)> = sqlx::query_as("SELECT batch, count(*) FROM ledger GROUP BY batch ORDER BY batch")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for (batch, count) in &counts {
        assert_eq!(*count, i64::from(ROWS), "batch {batch} came back whole");
    }
    counts.into_iter().map(|(batch, _)| batch).collect()
}

/// Whether table `name` exists.
async fn table_exists(conn: &mut PgConnection, name: &str) -> bool {
    scalar(conn, &format!("SELECT (to_regclass('{name}') IS NOT NULL)::text")).await == "true"
}

/// The statement that inserts batch `batch`.
fn insert_batch(batch: i32) -> String {
    format!("INSERT INTO ledger SELECT {batch}, g FROM generate_series(1, {ROWS}) g")
}

/// Commits batch `batch`, with `more` in the same transaction; its xid and commit time.
async fn commit_batch_with(conn: &mut PgConnection, batch: i32, more: &str) -> (String, String) {
    // Commits some milliseconds apart, so a time between two of them is easy to name.
    tokio::time::sleep(Duration::from_millis(20)).await;
    execute(conn, "BEGIN").await;
    let xid = scalar(conn, "SELECT txid_current()::text").await;
    execute(conn, &insert_batch(batch)).await;
    if !more.is_empty() {
        execute(conn, more).await;
    }
    execute(conn, "COMMIT").await;
    let committed = scalar(conn, &format!("SELECT pg_xact_commit_timestamp('{xid}'::xid)::text")).await;
    (xid, committed)
}

async fn commit_batch(conn: &mut PgConnection, batch: i32) -> (String, String) {
    commit_batch_with(conn, batch, "").await
}

/// Commits batch `batch` in two phases (PREPARE TRANSACTION, then COMMIT PREPARED); its xid.
async fn commit_prepared_batch(conn: &mut PgConnection, batch: i32) -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    execute(conn, "BEGIN").await;
    let xid = scalar(conn, "SELECT txid_current()::text").await;
    execute(conn, &insert_batch(batch)).await;
    execute(conn, &format!("PREPARE TRANSACTION 'batch_{batch}'")).await;
    execute(conn, &format!("COMMIT PREPARED 'batch_{batch}'")).await;
    xid
}

/// A time between two commits: one millisecond after `time`.
async fn just_after(conn: &mut PgConnection, time: &str) -> String {
    scalar(conn, &format!("SELECT ('{time}'::timestamptz + interval '1 millisecond')::text")).await
}

/// The server's major version, as it reports it.
async fn server_major(conn: &mut PgConnection) -> u32 {
    let number: u32 = scalar(conn, "SHOW server_version_num").await.parse().unwrap();
    number / 10000
}

/// `lifeboat backup --json` with `args`; the backup's id.
fn backup(setup: &Setup, args: &[&str]) -> String {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    let summary = setup.json(&all);
    summary["id"].as_str().unwrap_or_else(|| panic!("backup --json printed no id: {summary}")).to_owned()
}

async fn native_backup_restores_every_target(major: u32) {
    let setup = Setup::with(options(major)).await;
    let mut conn = setup.connect().await;
    assert_eq!(server_major(&mut conn).await, major);
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    execute(&mut conn, "CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 100) g").await;
    commit_batch(&mut conn, 1).await;
    commit_batch(&mut conn, 2).await;
    let backup_id = backup(&setup, &[]);
    commit_batch(&mut conn, 3).await;
    // Batch 4's transaction drops a table: its commit record carries the dropped relation (and,
    // from PostgreSQL 15, its dropped statistics).
    let (xid_4, time_4) = commit_batch_with(&mut conn, 4, "DROP TABLE doomed").await;
    let xid_5 = commit_prepared_batch(&mut conn, 5).await;
    scalar(&mut conn, "SELECT pg_create_restore_point('before_6')::text").await;
    commit_batch(&mut conn, 6).await;
    let lsn_after_6 = scalar(&mut conn, "SELECT pg_current_wal_insert_lsn()::text").await;
    commit_batch(&mut conn, 7).await;
    archive_current_segment(&mut conn).await;

    let time_after_4 = just_after(&mut conn, &time_4).await;
    let cases: Vec<(&str, Vec<&str>, Vec<i32>)> = vec![
        ("immediate", vec!["--target", "immediate"], vec![1, 2]),
        ("time", vec!["--target-time", &time_after_4], vec![1, 2, 3, 4]),
        ("xid", vec!["--target-xid", &xid_4], vec![1, 2, 3, 4]),
        ("xid-exclusive", vec!["--target-xid", &xid_4, "--target-exclusive"], vec![1, 2, 3]),
        ("xid-prepared", vec!["--target-xid", &xid_5], vec![1, 2, 3, 4, 5]),
        ("name", vec!["--target-name", "before_6"], vec![1, 2, 3, 4, 5]),
        ("lsn", vec!["--target-lsn", &lsn_after_6], vec![1, 2, 3, 4, 5, 6]),
        ("latest", vec![], vec![1, 2, 3, 4, 5, 6, 7]),
    ];
    let mut failures = Vec::new();
    for (name, args, expected) in cases {
        let mut all = vec!["--archive-mode", "off"];
        all.extend_from_slice(&args);
        let pgdata = setup.restore_dir(name);
        let port = free_port(&setup);
        let port_text = port.to_string();
        all.extend_from_slice(&["--start", "--port", &port_text]);
        let output = setup.restore(&pgdata, &all);
        let restored = Restored::of(&setup, pgdata, port);
        if !output.status.success() {
            // Every target is tried, so one run tells which kinds fail on this major.
            failures.push(format!("target {name} ({args:?}):\n{}", describe(&output)));
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&format!("restored backup {backup_id}")), "{name}: {stdout}");
        assert!(stdout.contains("recovery finished"), "{name}: {stdout}");
        let mut restored_conn = restored.connect().await;
        assert_eq!(server_major(&mut restored_conn).await, major, "target {name}");
        assert_eq!(batches(&mut restored_conn).await, expected, "target {name}");
        let dropped = expected.contains(&4);
        assert_eq!(table_exists(&mut restored_conn, "doomed").await, !dropped, "target {name}: the dropped table");
        if !dropped {
            assert_eq!(scalar(&mut restored_conn, "SELECT count(*)::text FROM doomed").await, "100", "target {name}");
        }
        restored_conn.close().await.unwrap();
    }

    // A delta restore over the used directory of the first restore (recovered, promoted, stopped)
    // keeps the files that are intact and recovers to latest.
    let pgdata = setup.restore_dir("immediate");
    let port = free_port(&setup);
    let port_text = port.to_string();
    let output = setup.restore(&pgdata, &["--delta", "--archive-mode", "off", "--start", "--port", &port_text]);
    let restored = Restored::of(&setup, pgdata, port);
    if output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("files already intact"), "{stdout}");
        let mut restored_conn = restored.connect().await;
        assert_eq!(batches(&mut restored_conn).await, vec![1, 2, 3, 4, 5, 6, 7], "delta restore to latest");
        assert!(!table_exists(&mut restored_conn, "doomed").await);
    } else {
        failures.push(format!("delta restore to latest:\n{}", describe(&output)));
    }
    assert!(failures.is_empty(), "PostgreSQL {major}: {} restore(s) failed\n{}", failures.len(), failures.join("\n"));
}

async fn streamed_backup_restores_to_latest(major: u32) {
    let setup = Setup::with(options(major)).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    commit_batch(&mut conn, 1).await;
    let backup_id = backup(&setup, &["--method", "basebackup"]);
    commit_batch(&mut conn, 2).await;
    archive_current_segment(&mut conn).await;

    let (latest, stdout) = restore_and_start(&setup, "latest", &["--archive-mode", "off"]);
    assert!(stdout.contains(&format!("restored backup {backup_id}")), "{stdout}");
    let mut latest_conn = latest.connect().await;
    assert_eq!(server_major(&mut latest_conn).await, major);
    assert_eq!(batches(&mut latest_conn).await, vec![1, 2], "the streamed backup restored to latest");
}

async fn a_timeline_switch_is_followed(major: u32) {
    let setup = Setup::with(options(major)).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    commit_batch(&mut conn, 1).await;
    backup(&setup, &[]);
    commit_batch(&mut conn, 2).await;
    scalar(&mut conn, "SELECT pg_create_restore_point('switch')::text").await;
    commit_batch(&mut conn, 3).await;
    archive_current_segment(&mut conn).await;

    // Restored to the restore point and promoted, the server archives timeline 2 into the same
    // repository (the archive mode is kept).
    let (switched, stdout) = restore_and_start(&setup, "switched", &["--target-name", "switch"]);
    assert!(stdout.contains("new timeline 2"), "{stdout}");
    let mut switched_conn = switched.connect().await;
    assert_eq!(batches(&mut switched_conn).await, vec![1, 2]);
    commit_batch(&mut switched_conn, 20).await;
    commit_batch(&mut switched_conn, 21).await;
    archive_current_segment(&mut switched_conn).await;
    switched_conn.close().await.unwrap();
    drop(switched);

    // Restoring to latest follows the newest timeline through the switch; timeline 1 is still
    // there for whoever asks for it.
    let (followed, stdout) = restore_and_start(&setup, "followed", &["--archive-mode", "off"]);
    assert!(stdout.contains("timeline 2"), "{stdout}");
    assert_eq!(batches(&mut followed.connect().await).await, vec![1, 2, 20, 21], "timeline 2 after the switch");
    let (old, _) = restore_and_start(&setup, "old", &["--archive-mode", "off", "--target-timeline", "1"]);
    assert_eq!(batches(&mut old.connect().await).await, vec![1, 2, 3], "timeline 1");
}

/// The URL of database `database` of the setup's cluster.
fn database_url(setup: &Setup, database: &str) -> String {
    setup.cluster.connection_url().replacen("postgresql:///postgres?", &format!("postgresql:///{database}?"), 1)
}

/// Runs `verify <id> --json`; its only report, or what went wrong.
fn verify(setup: &Setup, id: &str) -> Result<Value, String> {
    let output = setup.run(&["verify", id, "--json"]);
    let report = serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|run| run["reports"].as_array().cloned())
        .filter(|reports| reports.len() == 1)
        .and_then(|reports| reports.into_iter().next());
    match report {
        Some(report) if output.status.success() && report["passed"] == true => Ok(report),
        Some(report) => Err(format!("verify {id} failed: {}\n{}", report["failure"], describe(&output))),
        None => Err(format!("verify {id} printed no single report\n{}", describe(&output))),
    }
}

async fn verification_and_dumps(major: u32) {
    let setup = Setup::verifying(options(major), "").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE shop").await;
    let mut shop = PgConnection::connect_with(&setup.cluster.connect_options().database("shop")).await.unwrap();
    execute(&mut shop, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)").await;
    execute(&mut shop, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g").await;
    execute(&mut shop, "CREATE TABLE u (id int PRIMARY KEY)").await;
    execute(&mut shop, "INSERT INTO u SELECT generate_series(1, 37)").await;
    let fingerprint = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM t";
    let source = scalar(&mut shop, fingerprint).await;
    shop.close().await.unwrap();
    // The backup returns once the WAL it needs is in the repository: nothing more to archive.
    let backup_id = backup(&setup, &[]);
    // Every step that does not depend on a failed one is tried, so one run tells which fail on
    // this major.
    let mut failures = Vec::new();

    match verify(&setup, &backup_id) {
        Ok(report) => {
            assert!(report["recovery"]["databases"].as_array().unwrap().contains(&Value::from("shop")), "{report:#}");
            let version = report["recovery"]["server_version"].as_str().unwrap();
            assert!(version.starts_with(&format!("PostgreSQL {major}")), "{report:#}");
            assert_eq!(report["amcheck"]["passed"], true, "{report:#}");
        }
        Err(failure) => failures.push(failure),
    }

    let output = setup.run(&["dump", "--db", "shop", "--json"]);
    if output.status.success() {
        let dump: Value = serde_json::from_slice(&output.stdout).unwrap();
        let dump_id = dump["id"].as_str().unwrap_or_else(|| panic!("dump --json printed no id: {dump}")).to_owned();
        match verify(&setup, &dump_id) {
            Ok(report) => {
                assert_eq!(report["kind"], "dump", "{report:#}");
                let restored = report["restored_databases"].as_array().unwrap();
                assert_eq!(restored.len(), 1, "{report:#}");
                assert_eq!(restored[0]["name"], "shop", "{report:#}");
                assert_eq!(restored[0]["tables"], 2, "{report:#}");
                assert_eq!(restored[0]["rows"], 1037, "{report:#}");
            }
            Err(failure) => failures.push(failure),
        }

        execute(&mut conn, "CREATE DATABASE shop_copy").await;
        let into = database_url(&setup, "shop_copy");
        let output = setup.run(&["restore", "--dump", &dump_id, "--db", "shop", "--into", &into]);
        if output.status.success() {
            let options = setup.cluster.connect_options().database("shop_copy");
            let mut copy = PgConnection::connect_with(&options).await.unwrap();
            assert_eq!(scalar(&mut copy, "SELECT count(*)::text FROM t").await, "1000");
            assert_eq!(scalar(&mut copy, "SELECT count(*)::text FROM u").await, "37");
            assert_eq!(scalar(&mut copy, fingerprint).await, source, "the dump restored row for row");
        } else {
            failures.push(format!("restore --dump {dump_id} failed\n{}", describe(&output)));
        }
    } else {
        failures.push(format!("dump failed\n{}", describe(&output)));
    }
    assert!(failures.is_empty(), "PostgreSQL {major}: {} step(s) failed\n{}", failures.len(), failures.join("\n"));
}

async fn quickstart(major: u32) {
    let parent = tempfile::tempdir().unwrap();
    // The tour's servers run as the postgres OS user and must reach the workspace.
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let workspace = parent.path().join("qs");
    let mut command = Command::new(LIFEBOAT);
    command.arg("quickstart").arg("--bin-dir").arg(postgres::bin_dir(major)).arg("--dir").arg(&workspace);
    without_steering_env(&mut command).env("PATH", postgres::path_with_clients());
    let output = command.output().unwrap();
    assert!(output.status.success(), "the quickstart on PostgreSQL {major} failed\n{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("server     PostgreSQL {major}.")), "{stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");
    assert!(
        stdout.lines().any(|line| line.trim_start().starts_with("restored") && line.ends_with(" 1000 orders")),
        "step 10 shows the orders back: {stdout}"
    );
    assert!(stdout.contains("gate             passed on backup"), "step 6 passes the gate: {stdout}");
    assert!(
        stdout.contains("1000 orders, 0 column named status (the migration is gone)"),
        "step 7 undoes the first migration: {stdout}"
    );
    let config = std::fs::read_to_string(workspace.join("lifeboat.toml")).unwrap();
    assert!(config.contains(&postgres::bin_dir(major).display().to_string()), "{config}");
}

async fn an_incremental_chain_restores(major: u32) {
    let setup = Setup::with(options(major)).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE ledger (batch int NOT NULL, n int NOT NULL)").await;
    // About 2.5 MB: stored block by block once it changes.
    execute(&mut conn, "CREATE TABLE wide AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 40000) g").await;
    let digest = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM wide";
    commit_batch(&mut conn, 1).await;
    backup(&setup, &[]);
    commit_batch_with(&mut conn, 2, "UPDATE wide SET v = 'two' WHERE id % 500 = 2").await;
    let first = setup.json(&["backup", "--incremental", "--json"]);
    assert_eq!(first["incremental"]["changes_from"], "wal", "PostgreSQL {major}: {first}");
    commit_batch_with(&mut conn, 3, "UPDATE wide SET v = 'three' WHERE id % 500 = 3").await;
    execute(&mut conn, "CREATE TABLE later AS SELECT g FROM generate_series(1, 100) g").await;
    let second = setup.json(&["backup", "--incremental", "--json"]);
    assert_eq!(second["incremental"]["parent"], first["id"], "PostgreSQL {major}: {second}");
    let expected = scalar(&mut conn, digest).await;
    commit_batch(&mut conn, 4).await;
    archive_current_segment(&mut conn).await;

    let id = second["id"].as_str().unwrap();
    let (restored, stdout) = restore_and_start(&setup, "incremental", &["--backup", id, "--target", "immediate"]);
    assert!(stdout.contains(&format!("restored backup {id}")), "{stdout}");
    let mut restored_conn = restored.connect().await;
    assert_eq!(batches(&mut restored_conn).await, vec![1, 2, 3], "PostgreSQL {major}");
    assert_eq!(scalar(&mut restored_conn, digest).await, expected, "PostgreSQL {major}: the changed table");
    assert!(table_exists(&mut restored_conn, "later").await, "PostgreSQL {major}: the table made between");
}

/// One module per major (`pg13`, ...), with one test per scenario.
macro_rules! matrix {
    ($($module:ident: $major:literal),* $(,)?) => {$(
        mod $module {
            #[tokio::test(flavor = "multi_thread")]
            async fn native_backup_restores_every_target() {
                super::native_backup_restores_every_target($major).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn streamed_backup_restores_to_latest() {
                super::streamed_backup_restores_to_latest($major).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn an_incremental_chain_restores() {
                super::an_incremental_chain_restores($major).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_timeline_switch_is_followed() {
                super::a_timeline_switch_is_followed($major).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn verification_and_dumps() {
                super::verification_and_dumps($major).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn quickstart() {
                super::quickstart($major).await;
            }
        }
    )*};
}

matrix!(pg13: 13, pg14: 14, pg15: 15, pg16: 16, pg17: 17, pg18: 18);
