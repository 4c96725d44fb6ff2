//! The backup gate (G7) and undoing to a restore point, on real clusters archiving into a real
//! repository. It proves that:
//! - `lifeboat gate -- COMMAND` against a production environment refuses, without running the
//!   command, when there is no backup, when the newest was never verified, when the newest verified
//!   one is older than `--max-age`, and when the newest failed its verification, each time naming
//!   the backup and the fix; and without a terminal it needs `--approve`;
//! - a verification whose report was deleted does not count (G9);
//! - with a fresh verified backup it runs the command with `DATABASE_URL` and the gate's backup,
//!   passes its exit status through, and the audit lines (gate, gated-command) name the backup;
//! - `--take` takes a backup and verifies it by restore first; a non-production environment runs
//!   the command with a restore point and says the gate was not required;
//! - what a restore to a point loses is counted from the archived WAL, and the restore to a
//!   restore point (into a scratch directory that is checked and removed, or a data directory)
//!   brings back exactly the rows and schema from before the point.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use lifeboat::migrate::gate::{create_restore_point, restore_point_name};
use lifeboat::migrate::restore_before::{Destination, restore_to_point, what_would_be_lost};
use lifeboat::restore::target_dir::ExistingData;
use serde_json::Value;
use support::archiving::{LIFEBOAT, Options, Setup, archive_current_segment, execute, scalar};
use support::output::{assert_failure, describe};
use support::restored::{Restored, free_port};

/// The default environment is `production`, and needs a backup verified within the hour.
const PRODUCTION: &str = "\n[migrate]\nenvironment = \"production\"\nrequire_verified_backup_within = \"1h\"\n\
                          archive_timeout = \"30s\"\n";

async fn production(verify_settings: &str) -> Setup {
    Setup::verifying(Options::restorable().extra(PRODUCTION), verify_settings).await
}

fn gate(setup: &Setup, gate_args: &[&str], script: &str) -> Output {
    let mut args = vec!["gate"];
    args.extend_from_slice(gate_args);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut command = setup.command(&args);
    command.current_dir(setup.dir.path());
    command.output().unwrap()
}

/// The finished audit lines of `operation`, oldest first.
fn audit_lines(setup: &Setup, operation: &str) -> Vec<Value> {
    std::fs::read_to_string(setup.audit_path())
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|record| record["operation"] == operation && record["event"] == "finished")
        .collect()
}

fn backup_without_verifying(setup: &Setup) -> String {
    let view = setup.json(&["backup", "--no-verify", "--json"]);
    view["id"].as_str().unwrap().to_owned()
}

fn marker(setup: &Setup) -> std::path::PathBuf {
    setup.dir.path().join("ran")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_refuses_without_a_fresh_verified_backup_and_runs_the_command_with_one() {
    let setup = production("").await;
    let touch = "touch ran";

    // Nothing at all.
    let message = assert_failure(&gate(&setup, &["--approve"], touch));
    assert!(message.contains("has no base backup"), "{message}");
    assert!(message.contains("lifeboat backup --verify"), "{message}");
    assert!(!marker(&setup).exists(), "the command ran although the gate refused");
    let refused = audit_lines(&setup, "gate");
    assert_eq!(refused.last().unwrap()["arguments"]["verdict"], "no-backup", "{refused:?}");

    // A backup that was never verified.
    let id = backup_without_verifying(&setup);
    let message = assert_failure(&gate(&setup, &["--approve"], touch));
    assert!(message.contains(&format!("{id} (completed")), "{message}");
    assert!(message.contains("was never verified by restore"), "{message}");
    assert!(message.contains(&format!("lifeboat verify {id}")), "{message}");
    assert!(!marker(&setup).exists(), "the command ran although the gate refused");

    // Without a terminal, production needs --approve.
    let message = assert_failure(&gate(&setup, &[], touch));
    assert!(message.contains("--approve"), "{message}");

    // Verified: the command runs, with the connection and the backup, and its status comes back.
    let verified = setup.run(&["verify", &id]);
    assert!(verified.status.success(), "{}", describe(&verified));
    let output =
        gate(&setup, &["--approve"], "echo \"$DATABASE_URL\" > ran; echo \"$LIFEBOAT_GATE_BACKUP\" >> ran; exit 7");
    assert_eq!(output.status.code(), Some(7), "{}", describe(&output));
    let seen = std::fs::read_to_string(marker(&setup)).unwrap();
    assert_eq!(seen, format!("{}\n{id}\n", setup.cluster.connection_url()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("passed on base {id}")), "{stderr}");
    assert!(stderr.contains("restore point lifeboat-before-gate-"), "{stderr}");

    let passed = audit_lines(&setup, "gate");
    let last = passed.last().unwrap();
    assert_eq!(last["result"], "succeeded", "{last}");
    assert_eq!(last["arguments"]["verdict"], "passed", "{last}");
    assert_eq!(last["arguments"]["backup"], id.as_str(), "{last}");
    assert!(last["arguments"]["archived_segment"].as_str().is_some_and(|segment| segment.len() == 24), "{last}");
    let commands = audit_lines(&setup, "gated-command");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let command = &commands[0];
    assert_eq!(command["result"], "failed", "{command}");
    assert_eq!(command["arguments"]["backup"], id.as_str(), "{command}");
    assert_eq!(command["arguments"]["command"], "sh", "{command}");
    assert!(command["arguments"]["restore_point"].as_str().unwrap().starts_with("lifeboat-before-gate-"));
    assert!(command["error"].as_str().unwrap().contains("exited with status 7"), "{command}");

    // The report that said "passed" deleted: the backup no longer counts (G9).
    let reports = setup.repo_dir().join(format!("clusters/main/verify/{id}"));
    let saved = setup.dir.path().join("saved-reports");
    std::fs::rename(&reports, &saved).unwrap();
    let message = assert_failure(&gate(&setup, &["--approve"], touch));
    assert!(message.contains("is missing, altered or not recorded"), "{message}");
    assert!(message.contains("none has passed verification by restore"), "{message}");
    std::fs::rename(&saved, &reports).unwrap();

    // Too old for --max-age.
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(marker(&setup)).unwrap();
    let message = assert_failure(&gate(&setup, &["--approve", "--max-age", "1s"], touch));
    assert!(message.contains(&format!("the newest verified one is {id} (completed")), "{message}");
    assert!(message.contains("at most 1s"), "{message}");
    assert!(message.contains("--take"), "{message}");
    assert!(!marker(&setup).exists(), "the command ran although the gate refused");
    let refused = audit_lines(&setup, "gate");
    assert_eq!(refused.last().unwrap()["arguments"]["verdict"], "too-old");
    assert_eq!(refused.last().unwrap()["arguments"]["backup"], id.as_str());
}

/// Found by the storage-fault trials of `migrate up` (docs/trials.md): a routine
/// `verify --integrity-only` of a backup verified by restore took the place of that verdict, and
/// the gate then refused the backup as "only checked for integrity" until the next verification
/// by restore. The proof of restore stands through passed integrity checks, as long as its report
/// reads back as recorded; a failed integrity check fails the backup.
#[tokio::test(flavor = "multi_thread")]
async fn trial_defect_an_integrity_check_after_a_verification_by_restore_keeps_the_gate_open() {
    let setup = production("").await;
    let id = backup_without_verifying(&setup);
    let verified = setup.run(&["verify", &id]);
    assert!(verified.status.success(), "{}", describe(&verified));
    for _ in 0..2 {
        let checked = setup.run(&["verify", &id, "--integrity-only"]);
        assert!(checked.status.success(), "{}", describe(&checked));
    }
    let output = gate(&setup, &["--approve"], "touch ran");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(marker(&setup).exists(), "the gate passed but the command did not run");
    let list = setup.json(&["list", "--json"]);
    assert_eq!(list["problems"], serde_json::json!([]), "{list}");

    // The report of the verification by restore gone: it no longer counts, and list names it.
    let reports = setup.repo_dir().join(format!("clusters/main/verify/{id}"));
    let mut keys: Vec<_> = std::fs::read_dir(&reports).unwrap().flatten().map(|entry| entry.path()).collect();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let saved = setup.dir.path().join("saved-report");
    std::fs::rename(&keys[0], &saved).unwrap();
    let message = assert_failure(&gate(&setup, &["--approve"], "touch ran"));
    assert!(message.contains("after its verification by restore on"), "{message}");
    assert!(message.contains("none has passed verification by restore"), "{message}");
    let list = setup.command(&["list", "--json"]).output().unwrap();
    let problems = serde_json::from_slice::<Value>(&list.stdout).unwrap()["problems"].to_string();
    assert!(problems.contains("verification of") && problems.contains("by restore"), "{problems}");
    std::fs::rename(&saved, &keys[0]).unwrap();
    assert!(gate(&setup, &["--approve"], "true").status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_refuses_when_the_newest_backup_failed_verification() {
    let setup = production("checks = [\"select false\"]").await;
    let output = setup.run(&["backup", "--verify"]);
    assert_failure(&output);
    let id = audit_lines(&setup, "backup").last().unwrap()["created"][0].as_str().unwrap().to_owned();

    let message = assert_failure(&gate(&setup, &["--approve"], "touch ran"));
    assert!(message.contains(&format!("{id} (completed")), "{message}");
    assert!(message.contains("did not pass verification: failed (checks)"), "{message}");
    assert!(message.contains("none has passed verification by restore"), "{message}");
    assert!(!marker(&setup).exists(), "the command ran although the gate refused");
    let refused = audit_lines(&setup, "gate");
    assert_eq!(refused.last().unwrap()["arguments"]["verdict"], "failed-verification");
}

#[tokio::test(flavor = "multi_thread")]
async fn gate_take_takes_and_verifies_a_backup_first_and_other_environments_need_no_gate() {
    let staging = "\n[migrate.environments.staging]\nconnection = \"STAGING\"\n";
    let setup = production("").await;
    // The staging environment is the same server under another name.
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(setup.config_path(), config + &staging.replace("STAGING", &setup.cluster.connection_url())).unwrap();

    let output = gate(&setup, &["--approve", "--take"], "test -n \"$LIFEBOAT_GATE_BACKUP\" && touch ran");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(marker(&setup).exists());
    let backups = audit_lines(&setup, "backup");
    assert_eq!(backups.len(), 1, "{backups:?}");
    let id = backups[0]["created"][0].as_str().unwrap().to_owned();
    let verifications = audit_lines(&setup, "verify");
    assert_eq!(verifications.last().unwrap()["result"], "succeeded");
    assert_eq!(verifications.last().unwrap()["arguments"]["ids"], id.as_str());
    let gates = audit_lines(&setup, "gate");
    assert_eq!(gates.last().unwrap()["arguments"]["verdict"], "taken");
    assert_eq!(gates.last().unwrap()["arguments"]["backup"], id.as_str());
    let commands = audit_lines(&setup, "gated-command");
    assert_eq!(commands.last().unwrap()["result"], "succeeded");
    assert_eq!(commands.last().unwrap()["arguments"]["backup"], id.as_str());

    let output = gate(&setup, &["--env", "staging", "--json"], "exit 0");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not required"), "{}", describe(&output));
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verdict["gate"]["verdict"], "not-required");
    assert!(verdict["restore_point"]["name"].as_str().unwrap().starts_with("lifeboat-before-gate-"));
    let commands = audit_lines(&setup, "gated-command");
    assert_eq!(commands.last().unwrap()["arguments"]["gate"], "not-required");
    assert_eq!(commands.last().unwrap()["arguments"]["environment"], "staging");
    assert_eq!(audit_lines(&setup, "backup").len(), 1, "the non-production run took a backup");
}

async fn rows(conn: &mut sqlx::PgConnection) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT id, v FROM items ORDER BY id").fetch_all(conn).await.unwrap()
}

async fn columns(conn: &mut sqlx::PgConnection) -> String {
    scalar(
        conn,
        "SELECT string_agg(table_name || '.' || column_name, ',' ORDER BY table_name, ordinal_position) \
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .await
}

fn restore_command(setup: &Setup) -> String {
    format!("'{LIFEBOAT}' --config '{}' wal-fetch %f %p", setup.config_path().display())
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_before_brings_back_exactly_the_rows_and_schema_from_before_the_point() {
    let setup = Setup::start_verifying("").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)").await;
    execute(&mut conn, "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')").await;
    setup.backup().await;
    // A migration undone and applied again (redo) leaves two points of the same name: the undo
    // goes to the one recorded, the second.
    let name = restore_point_name("20261206120000");
    let earlier = create_restore_point(&mut conn, &name).await.unwrap();
    execute(&mut conn, "UPDATE items SET v = 'TWO' WHERE id = 2").await;
    let point = create_restore_point(&mut conn, &name).await.unwrap();
    assert_ne!(earlier.lsn, point.lsn);
    assert_eq!(point.name, "lifeboat-before-20261206120000");
    let before_rows = rows(&mut conn).await;
    let before_columns = columns(&mut conn).await;
    // What the migration and the writes after it do.
    execute(&mut conn, "INSERT INTO items VALUES (4, 'four'), (5, 'five')").await;
    execute(&mut conn, "DELETE FROM items WHERE id = 1").await;
    execute(&mut conn, "ALTER TABLE items ADD COLUMN price numeric").await;
    execute(&mut conn, "CREATE TABLE orders (id int)").await;
    archive_current_segment(&mut conn).await;
    assert_ne!(columns(&mut conn).await, before_columns);

    let context = lifeboat::ops::open(setup.config()).await.unwrap();
    let loss = what_would_be_lost(&context.repository, &context.layout, &point).await.unwrap();
    // The four statements above and the transaction that closed the segment.
    assert!(loss.commits >= 5, "{loss:?}");
    assert!(loss.first_commit.unwrap() >= point.time - chrono::Duration::seconds(1), "{loss:?}");
    assert!(loss.wal_bytes > 0, "{loss:?}");

    // --verify-only: restored, started, checked and removed.
    let undone = restore_to_point(&context, &point, &Destination::VerifyOnly, restore_command(&setup)).await.unwrap();
    let stopped = undone.verified.unwrap();
    assert!(stopped.contains(&point.lsn), "{stopped}");
    assert!(is_empty(&setup.scratch_dir()), "the check left its scratch directory");

    // Into a data directory, started: exactly the rows and schema from before the point.
    let pgdata = setup.restore_dir("undone");
    let port = free_port(&setup);
    let destination =
        Destination::Pgdata { dir: pgdata.clone(), existing: ExistingData::Refuse, start: Some(Some(port)) };
    let undone = restore_to_point(&context, &point, &destination, restore_command(&setup)).await.unwrap();
    let restored = Restored::of(&setup, pgdata, port);
    assert!(undone.summary.reached.is_some());
    let mut back = restored.connect().await;
    assert_eq!(rows(&mut back).await, before_rows);
    assert_eq!(before_rows, vec![(1, "one".to_owned()), (2, "TWO".to_owned()), (3, "three".to_owned())]);
    assert_eq!(columns(&mut back).await, before_columns);
    assert_eq!(scalar(&mut back, "SELECT (to_regclass('orders') IS NULL)::text").await.as_str(), "true");
}
