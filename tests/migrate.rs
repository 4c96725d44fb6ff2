//! The migration runner on a real PostgreSQL cluster (issue 14, item 1): `lifeboat migrate up`
//! applies each migration in one transaction with its history row; a failure in the third
//! statement lands nothing (transactional) or exactly the first two (`-- lifeboat:no-transaction`),
//! and the next `up` refuses with the choices; two runners at once apply each migration once,
//! also around `CREATE INDEX CONCURRENTLY`; a lock held elsewhere is retried on lock timeout, then
//! the migration fails without having queued behind it; line endings and a BOM do not make a file
//! "modified" but an edit does; down, redo and --rollback-on-failure use the down files;
//! `after = ["staging"]` and `min_server_version` refuse, `plan` lists the statements, and
//! `baseline` records without running; a failed migration reaches the `[notify]` webhook.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use support::archiving::{Archiving, Options, Setup, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A cluster (WAL copied with `cp`: these tests need no gate) with database `app`, and
/// `[migrate]` pointing at `migrations/` in the test's directory.
async fn setup_with(extra: &str) -> (Setup, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let setup = Setup::with(Options::new().archiving(Archiving::Copy).extra(&format!(
        "\n[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nlock_timeout = \"300ms\"\nlock_wait = \"60s\"\n{extra}\n",
        migrations.display()
    )))
    .await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    // The migration directory lives as long as the setup's own directory.
    std::mem::forget(dir);
    (setup, migrations)
}

async fn app(setup: &Setup) -> PgConnection {
    use sqlx::Connection as _;
    PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status(setup: &Setup) -> serde_json::Value {
    let output = setup.run(&["migrate", "status", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("status --json: {}", describe(&output)))
}

fn states(setup: &Setup) -> Vec<(String, String)> {
    status(setup)["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["version"].as_str().unwrap().to_owned(), entry["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn pair(version: &str, state: &str) -> (String, String) {
    (version.to_owned(), state.to_owned())
}

#[tokio::test]
async fn up_applies_in_order_with_history_rows_and_a_second_up_finds_nothing() {
    let (setup, dir) = setup_with("").await;
    write(&dir, "1_accounts.up.sql", "CREATE TABLE accounts (id int PRIMARY KEY, name text);\n");
    write(&dir, "1_accounts.down.sql", "DROP TABLE accounts;\n");
    write(
        &dir,
        "2_seed.up.sql",
        "INSERT INTO accounts VALUES (1, 'a; b');\nCREATE FUNCTION one() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n",
    );
    assert_eq!(states(&setup), vec![pair("1", "pending"), pair("2", "pending")]);
    let output = setup.run(&["migrate", "up"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("applied 1 accounts") && text.contains("applied 2 seed (2 statements"), "{text}");
    let mut conn = app(&setup).await;
    assert_eq!(scalar(&mut conn, "SELECT name FROM accounts").await, "a; b");
    assert_eq!(scalar(&mut conn, "SELECT one()::text").await, "1");
    let rows: Vec<(String, bool, i32, Option<String>, String)> = sqlx::query_as(
        "SELECT version, success, statements_done, lsn_after::text, applied_by FROM lifeboat.migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(_, success, _, lsn, by)| *success && lsn.is_some() && by.contains('@')), "{rows:?}");
    assert_eq!(rows[1].2, 2, "both statements of 2 are recorded");
    // The restore point before each migration is recorded even outside production.
    let point: Option<String> = sqlx::query_scalar("SELECT restore_point FROM lifeboat.migrations WHERE version = '2'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(point.as_deref(), Some("lifeboat-before-2"));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "applied")]);

    let again = setup.run(&["migrate", "up"]);
    assert_success(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to apply"), "{}", describe(&again));
    let audit = std::fs::read_to_string(setup.audit_path()).unwrap();
    let migrate_lines: Vec<&str> =
        audit.lines().filter(|line| line.contains("\"operation\":\"migrate\"") && line.contains("succeeded")).collect();
    assert_eq!(migrate_lines.len(), 2, "{audit}");
    assert!(
        migrate_lines[0].contains("\"version\":\"1\"") && migrate_lines[0].contains("\"gate\":\"not required\""),
        "{audit}"
    );
}

#[tokio::test]
async fn a_transactional_migration_failing_in_its_third_statement_lands_nothing_and_up_then_refuses_with_the_choices() {
    let (setup, dir) = setup_with("").await;
    write(&dir, "1_base.sql", "CREATE TABLE base (id int);\n");
    write(
        &dir,
        "2_broken.sql",
        "CREATE TABLE first (id int);\nCREATE TABLE second (id int);\nINSERT INTO nowhere VALUES (1);\nCREATE TABLE fourth (id int);\n",
    );
    let output = setup.run(&["migrate", "up"]);
    let message = assert_failure(&output);
    assert!(message.contains("migration 2 (broken) up failed at statement 3 of 4"), "{message}");
    assert!(message.contains("relation \"nowhere\" does not exist"), "{message}");
    assert!(message.contains("none of it landed"), "{message}");
    assert!(message.contains("lifeboat migrate restore-before 2"), "{message}");
    let mut conn = app(&setup).await;
    let tables = scalar(&mut conn, "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname IN ('base','first','second','fourth')").await;
    assert_eq!(tables, "base", "the failed migration's first two tables were rolled back");
    let (success, done, failed, error): (bool, i32, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT success, statements_done, failed_statement, error FROM lifeboat.migrations WHERE version = '2'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!success);
    assert_eq!(done, 0);
    assert!(failed.unwrap().contains("INSERT INTO nowhere"));
    assert!(error.unwrap().contains("42P01"));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "failed")]);

    let refused = assert_failure(&setup.run(&["migrate", "up"]));
    for choice in ["restore-before 2", "migrate repair", "migrate down", "none of it landed"] {
        assert!(refused.contains(choice), "{choice} missing from: {refused}");
    }
    // Fix forward: repair clears the failed row, the fixed file runs.
    write(&dir, "2_broken.sql", "CREATE TABLE first (id int);\nCREATE TABLE second (id int);\n");
    assert_success(&setup.run(&["migrate", "repair"]));
    assert_success(&setup.run(&["migrate", "up"]));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "applied")]);
}

#[tokio::test]
async fn a_no_transaction_migration_failing_in_its_third_statement_keeps_the_first_two_and_names_them() {
    let (setup, dir) = setup_with("").await;
    write(
        &dir,
        "1_partial.sql",
        "-- lifeboat:no-transaction\nCREATE TABLE first (id int);\nCREATE TABLE second (id int);\n\
         INSERT INTO nowhere VALUES (1);\nCREATE TABLE fourth (id int);\n",
    );
    let message = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(message.contains("statement 3 of 4"), "{message}");
    assert!(message.contains("the 2 statements before it landed"), "{message}");
    let mut conn = app(&setup).await;
    let tables = scalar(
        &mut conn,
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname IN ('first','second','fourth')",
    )
    .await;
    assert_eq!(tables, "first,second");
    let (success, done, total): (bool, i32, i32) = sqlx::query_as(
        "SELECT success, statements_done, statements_total FROM lifeboat.migrations WHERE version = '1'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((success, done, total), (false, 2, 4));
    let refused = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(refused.contains("2 of its 4 statements completed"), "{refused}");
    assert!(refused.contains("restore-before 1"), "{refused}");
}

#[tokio::test]
async fn two_runners_at_once_apply_each_migration_once_and_concurrent_index_builds_do_not_deadlock() {
    let (setup, dir) = setup_with("").await;
    write(
        &dir,
        "1_items.sql",
        "CREATE TABLE items (id int, label text);\nINSERT INTO items SELECT g, g::text FROM generate_series(1, 20000) g;\n",
    );
    write(&dir, "2_slow.sql", "SELECT pg_sleep(2);\nCREATE TABLE slow_done (id int);\n");
    write(&dir, "3_index.sql", "-- lifeboat:no-transaction\nCREATE INDEX CONCURRENTLY items_label ON items (label);\n");
    let first = setup.command(&["migrate", "up"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = setup
        .command(&["migrate", "up"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert_success(&first);
    assert_success(&second);
    assert!(began.elapsed() < Duration::from_secs(60), "the runners finished (no deadlock)");
    assert!(stderr(&second).contains("waiting for the migration lock"), "{}", describe(&second));
    assert!(String::from_utf8_lossy(&second.stdout).contains("nothing to apply"), "{}", describe(&second));
    let mut conn = app(&setup).await;
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM lifeboat.migrations WHERE success").await, "3");
    let valid: bool = sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_label'::regclass")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(valid, "the concurrent index was built");
}

#[tokio::test]
async fn a_lock_held_elsewhere_is_retried_on_lock_timeout_then_fails_without_queueing_longer() {
    let (setup, dir) = setup_with("lock_retries = 2\n").await;
    write(&dir, "1_table.sql", "CREATE TABLE busy (id int);\n");
    assert_success(&setup.run(&["migrate", "up"]));
    write(&dir, "2_alter.sql", "ALTER TABLE busy ADD COLUMN note text;\n");
    let mut holder = app(&setup).await;
    execute(&mut holder, "BEGIN").await;
    execute(&mut holder, "LOCK TABLE busy IN ACCESS SHARE MODE").await;
    let began = Instant::now();
    let output = setup.command(&["migrate", "up"]).env("LIFEBOAT_LOG", "lifeboat=warn").output().unwrap();
    let elapsed = began.elapsed();
    let message = assert_failure(&output);
    assert!(message.contains("lock timeout") || message.contains("55P03"), "{message}");
    assert_eq!(message.matches("retry").count(), 2, "two retries are logged: {message}");
    // Three attempts of 300 ms plus pauses of 0.5 s and 1 s: far less than waiting for the holder.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    // While it waited, other sessions were not queued behind it for long: a read on the table
    // from a third session went through (the holder's lock does not block it).
    let mut reader = app(&setup).await;
    assert_eq!(scalar(&mut reader, "SELECT count(*)::text FROM busy").await, "0");
    execute(&mut holder, "ROLLBACK").await;
    let columns =
        scalar(&mut reader, "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'busy'").await;
    assert_eq!(columns, "1", "the ALTER did not land");
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "failed")]);
    // Once the holder is gone, repair + up applies it.
    assert_success(&setup.run(&["migrate", "repair"]));
    assert_success(&setup.run(&["migrate", "up"]));
}

#[tokio::test]
async fn crlf_endings_and_a_bom_are_not_modifications_but_an_edit_is_reported_with_both_checksums() {
    let (setup, dir) = setup_with("").await;
    write(&dir, "1_t.sql", "CREATE TABLE t (id int);\nCREATE TABLE u (id int);\n");
    assert_success(&setup.run(&["migrate", "up"]));
    write(&dir, "1_t.sql", "\u{feff}CREATE TABLE t (id int);\r\nCREATE TABLE u (id int);\r\n");
    assert_eq!(states(&setup), vec![pair("1", "applied")]);
    assert_success(&setup.run(&["migrate", "validate"]));
    write(&dir, "1_t.sql", "CREATE TABLE t (id bigint);\nCREATE TABLE u (id int);\n");
    assert_eq!(states(&setup), vec![pair("1", "modified")]);
    let output = setup.run(&["migrate", "validate"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let applied = &status(&setup)["migrations"][0]["row"]["checksum"].as_str().unwrap()[..12].to_owned();
    let file = &status(&setup)["migrations"][0]["file_checksum"].as_str().unwrap()[..12].to_owned();
    assert_ne!(applied, file);
    assert!(text.contains(applied.as_str()) && text.contains(file.as_str()), "{text}");
    write(&dir, "2_next.sql", "SELECT 1;\n");
    let refused = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(refused.contains("was edited"), "{refused}");
}

#[tokio::test]
async fn down_redo_and_rollback_on_failure_use_the_down_files() {
    let (setup, dir) = setup_with("").await;
    write(&dir, "1_a.up.sql", "CREATE TABLE a (id int);\n");
    write(&dir, "1_a.down.sql", "DROP TABLE a;\n");
    write(&dir, "2_b.up.sql", "CREATE TABLE b (id int);\n");
    write(&dir, "2_b.down.sql", "DROP TABLE b;\n");
    assert_success(&setup.run(&["migrate", "up"]));
    assert_success(&setup.run(&["migrate", "down"]));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "pending")]);
    assert_success(&setup.run(&["migrate", "up"]));
    assert_success(&setup.run(&["migrate", "redo"]));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "applied")]);
    assert_success(&setup.run(&["migrate", "down", "--to", "1"]));
    assert_eq!(states(&setup), vec![pair("1", "applied"), pair("2", "pending")]);

    write(&dir, "3_c.up.sql", "CREATE TABLE c (id int);\n");
    write(&dir, "3_c.down.sql", "DROP TABLE c;\n");
    write(&dir, "4_bad.up.sql", "CREATE TABLE d (id int);\nSELECT no_such_function();\n");
    let message = assert_failure(&setup.run(&["migrate", "up", "--rollback-on-failure"]));
    assert!(message.contains("no_such_function"), "{message}");
    let mut conn = app(&setup).await;
    let tables = scalar(&mut conn, "SELECT coalesce(string_agg(relname, ',' ORDER BY relname), '') FROM pg_class WHERE relname IN ('a','b','c','d')").await;
    assert_eq!(tables, "a", "2 and 3 were reverted, 4 landed nothing");
    assert_eq!(
        states(&setup),
        vec![pair("1", "applied"), pair("2", "pending"), pair("3", "pending"), pair("4", "pending")],
        "the history is as before the run"
    );
}

#[tokio::test]
async fn after_staging_and_min_server_version_refuse_and_plan_lists_the_statements() {
    let (setup, dir) = setup_with("").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE staging").await;
    let staging_url = setup.cluster.connection_url().replace("/postgres", "/staging");
    let config = std::fs::read_to_string(setup.config_path())
        .unwrap()
        .replace("[migrate]\n", "[migrate]\nafter = [\"staging\"]\n");
    std::fs::write(
        setup.config_path(),
        format!("{config}\n[migrate.environments.staging]\nconnection = \"{staging_url}\"\n"),
    )
    .unwrap();
    write(&dir, "1_t.sql", "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n");

    let plan = setup.json(&["migrate", "plan", "--json"]);
    assert_eq!(plan["schema"], "migrate-plan/1");
    assert_eq!(plan["gate"], "not required");
    assert_eq!(
        plan["migrations"][0]["statements"],
        serde_json::json!(["CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)"])
    );
    assert_eq!(plan["migrations"][0]["transactional"], true);

    let refused = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(refused.contains("has not been applied successfully in staging yet"), "{refused}");
    assert_success(&setup.run(&["migrate", "up", "--env", "staging"]));
    assert_success(&setup.run(&["migrate", "up"]));
    assert_eq!(states(&setup), vec![pair("1", "applied")]);

    // A newer file that staging ran differently is refused by checksum.
    write(&dir, "2_u.sql", "CREATE TABLE u (id int);\n");
    assert_success(&setup.run(&["migrate", "up", "--env", "staging"]));
    write(&dir, "2_u.sql", "CREATE TABLE u (id bigint);\n");
    let refused = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(refused.contains("ran in staging with another file"), "{refused}");

    // min_server_version above the server's major refuses before anything runs.
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config.replace("after = [\"staging\"]\n", "min_server_version = 99\n"))
        .unwrap();
    let refused = assert_failure(&setup.run(&["migrate", "status"]));
    assert!(refused.contains("older than min_server_version = 99.0"), "{refused}");
}

#[tokio::test]
async fn baseline_records_existing_migrations_without_running_them() {
    let (setup, dir) = setup_with("").await;
    write(&dir, "1_a.sql", "CREATE TABLE a (id int);\n");
    write(&dir, "2_b.sql", "CREATE TABLE b (id int);\n");
    write(&dir, "3_c.sql", "CREATE TABLE c (id int);\n");
    let mut conn = app(&setup).await;
    execute(&mut conn, "CREATE TABLE a (id int)").await;
    execute(&mut conn, "CREATE TABLE b (id int)").await;
    let baseline = setup.json(&["migrate", "baseline", "2", "--json"]);
    assert_eq!(baseline["schema"], "migrate-change/1");
    assert_eq!(baseline["changes"].as_array().unwrap().len(), 2, "{baseline}");
    assert_eq!(states(&setup), vec![pair("1", "baseline"), pair("2", "baseline"), pair("3", "pending")]);
    assert_success(&setup.run(&["migrate", "up"]));
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM pg_class WHERE relname IN ('a','b','c')").await, "3");
    let again = assert_failure(&setup.run(&["migrate", "baseline", "3"]));
    assert!(again.contains("already has 3 rows"), "{again}");
}

// Multi-threaded: the receiver answers on a worker while this thread waits for the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_is_sent_to_the_webhook_of_notify() {
    let receiver = support::webhook::Receiver::start().await;
    let (setup, dir) = setup_with("").await;
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let notify = format!("\n[notify]\nwebhook = \"{}\"\ndesktop = false\n", receiver.url("/hook"));
    std::fs::write(setup.config_path(), config + &notify).unwrap();
    write(&dir, "1_broken.sql", "INSERT INTO nowhere VALUES (1);\n");
    let message = assert_failure(&setup.run(&["migrate", "up"]));
    assert!(message.contains("nowhere"), "{message}");
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    let body = received[0].json();
    assert_eq!(body["event"], "failure", "{body}");
    assert_eq!(body["job"], "migrate:default", "{body}");
    assert_eq!(body["result"], "failed", "{body}");
    assert!(body["error"].as_str().unwrap().contains("relation \"nowhere\" does not exist"), "{body}");
    assert_eq!(body["ids"], serde_json::json!(["1"]), "{body}");
}
