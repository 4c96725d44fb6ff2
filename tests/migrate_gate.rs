//! `lifeboat migrate` against a production environment (issue 14, items 2 and 3), on a real cluster
//! archiving with `wal-push` into a local repository: `up` refuses without a verified backup (none,
//! one never verified, one too old) and passes with a fresh one, or with `--take` takes and
//! verifies one first; the history row and the audit line name the backup. Then `restore-before
//! V` after migrations V and V+1 and ordinary writes brings back exactly the rows and the schema
//! of just before V.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::{Connection as _, PgConnection};
use support::archiving::{Setup, archive_current_segment, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A verifying setup whose `[migrate]` environment is production, migrating database `app`.
async fn production(max_age: &str) -> (Setup, PathBuf) {
    let migrations = tempfile::tempdir().unwrap().keep();
    let setup = Setup::start_verifying("").await;
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), format!("{config}\n{}", migrate_table(&migrations, max_age))).unwrap();
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    (setup, migrations)
}

fn migrate_table(dir: &Path, max_age: &str) -> String {
    format!(
        "[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nenvironment = \"production\"\n\
         require_verified_backup_within = \"{max_age}\"\narchive_timeout = \"60s\"\n",
        dir.display()
    )
}

/// Replaces the `[migrate]` table's age limit.
fn set_max_age(setup: &Setup, dir: &Path, max_age: &str) {
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let base = &config[..config.find("[migrate]").unwrap()];
    std::fs::write(setup.config_path(), format!("{base}{}", migrate_table(dir, max_age))).unwrap();
}

async fn app(setup: &Setup) -> PgConnection {
    PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap()
}

fn up(setup: &Setup, extra: &[&str]) -> Output {
    let mut args = vec!["migrate", "up", "--approve"];
    args.extend_from_slice(extra);
    setup.run(&args)
}

fn backup_id(output: &Output) -> String {
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    document["id"].as_str().unwrap_or_else(|| panic!("no id: {document}")).to_owned()
}

#[tokio::test]
async fn the_gate_refuses_without_a_fresh_verified_backup_and_names_the_one_that_let_migrations_through() {
    let (setup, dir) = production("1h").await;
    std::fs::write(dir.join("1_accounts.sql"), "CREATE TABLE accounts (id int);\n").unwrap();

    let refused = assert_failure(&up(&setup, &[]));
    assert!(refused.contains("lifeboat backup"), "no backup: the fix is named: {refused}");

    let not_approved = setup.run(&["migrate", "up"]);
    let message = assert_failure(&not_approved);
    assert!(message.contains("--approve"), "a production run without a terminal needs --approve: {message}");

    let taken = setup.run(&["backup", "--json"]);
    assert_success(&taken);
    let unverified = backup_id(&taken);
    let refused = assert_failure(&up(&setup, &[]));
    assert!(refused.contains("verif"), "a backup never verified does not count: {refused}");

    assert_success(&setup.run(&["verify", &unverified]));
    set_max_age(&setup, &dir, "1s");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let refused = assert_failure(&up(&setup, &[]));
    assert!(refused.contains(&unverified), "the too-old verified backup is named: {refused}");

    set_max_age(&setup, &dir, "1h");
    let output = up(&setup, &[]);
    assert_success(&output);
    let mut conn = app(&setup).await;
    let (backup, gate, point): (Option<String>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT backup_id, gate, restore_point FROM lifeboat.migrations WHERE version = '1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(backup.as_deref(), Some(unverified.as_str()), "{}", describe(&output));
    assert_eq!(gate.as_deref(), Some("passed"));
    assert_eq!(point.as_deref(), Some("lifeboat-before-1"));
    let audit = std::fs::read_to_string(setup.audit_path()).unwrap();
    let line = audit
        .lines()
        .find(|line| line.contains("\"operation\":\"migrate\"") && line.contains("succeeded"))
        .unwrap_or_else(|| panic!("no migrate line: {audit}"));
    assert!(line.contains(&format!("\"backup\":\"{unverified}\"")), "{line}");

    // --take: with a limit no backup meets, one is taken and verified, then the migration runs.
    std::fs::write(dir.join("2_more.sql"), "CREATE TABLE more (id int);\n").unwrap();
    set_max_age(&setup, &dir, "1s");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let output = up(&setup, &["--take"]);
    assert_success(&output);
    let (backup, gate): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT backup_id, gate FROM lifeboat.migrations WHERE version = '2'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(gate.as_deref(), Some("taken"), "{}", describe(&output));
    let taken = backup.unwrap();
    assert_ne!(taken, unverified, "a new backup was taken");
    let list = setup.json(&["list", "--json"]);
    let entry = list["backups"].as_array().unwrap().iter().find(|backup| backup["id"] == taken.as_str()).cloned();
    let entry = entry.unwrap_or_else(|| panic!("{taken} is not listed: {list}"));
    assert_eq!(entry["verification"]["passed"], true, "the taken backup was verified: {entry}");
}

/// The rows and the schema of `app`, as a test compares them.
async fn snapshot(setup: &Setup, conn: &mut PgConnection) -> (String, String) {
    let socket = setup.cluster.socket_dir().display().to_string();
    snapshot_at(setup, conn, &format!("host={socket} port={} dbname=app user=postgres", setup.cluster.port())).await
}

/// The rows of `items` through `conn` and the schema of the database `dbname` names.
async fn snapshot_at(setup: &Setup, conn: &mut PgConnection, dbname: &str) -> (String, String) {
    let rows = scalar(conn, "SELECT coalesce(string_agg(id || ':' || label, ',' ORDER BY id), '') FROM items").await;
    let pg_dump = setup.cluster.binaries().path("pg_dump");
    let output = std::process::Command::new(pg_dump)
        .args(["--schema-only", "--no-owner", "--exclude-schema=lifeboat", "--dbname", dbname])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let schema: String = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with("--") && !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n");
    (rows, schema)
}

#[tokio::test]
async fn restore_before_a_migration_brings_back_exactly_the_rows_and_schema_of_just_before_it() {
    let (setup, dir) = production("1h").await;
    let mut conn = app(&setup).await;
    execute(&mut conn, "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)").await;
    execute(&mut conn, "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g").await;
    let taken = setup.run(&["backup", "--verify", "--json"]);
    assert_success(&taken);
    execute(&mut conn, "INSERT INTO items VALUES (51, 'after the backup')").await;
    let before = snapshot(&setup, &mut conn).await;

    std::fs::write(
        dir.join("10_label_upper.sql"),
        "ALTER TABLE items ADD COLUMN note text;\nUPDATE items SET label = upper(label);\n",
    )
    .unwrap();
    std::fs::write(dir.join("11_audit.sql"), "CREATE TABLE audit_log (id serial, at timestamptz DEFAULT now());\n")
        .unwrap();
    assert_success(&up(&setup, &[]));
    execute(&mut conn, "INSERT INTO items VALUES (52, 'ordinary write', NULL)").await;
    execute(&mut conn, "DELETE FROM items WHERE id = 1").await;
    archive_current_segment(&mut setup.connect().await).await;
    assert_ne!(snapshot(&setup, &mut conn).await, before);

    let pgdata = setup.restore_dir("before-10");
    let port = support::restored::free_port(&setup);
    let output = setup.run(&[
        "migrate",
        "restore-before",
        "10",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--start",
        "--port",
        &port.to_string(),
        "--yes",
    ]);
    let restored = support::restored::Restored::of(&setup, pgdata, port);
    assert_success(&output);
    let told = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(told.contains("11"), "what would be lost names the later migration: {told}");

    let options = sqlx::postgres::PgConnectOptions::new()
        .socket(&restored.socket_dir)
        .port(restored.port)
        .username("postgres")
        .database("app");
    let mut restored_conn = PgConnection::connect_with(&options).await.unwrap();
    let after = snapshot_at(
        &setup,
        &mut restored_conn,
        &format!("host={} port={port} dbname=app user=postgres", restored.socket_dir.display()),
    )
    .await;
    assert_eq!(after.0, before.0, "exactly the rows of just before migration 10");
    assert_eq!(after.1, before.1, "exactly the schema of just before migration 10");
}
