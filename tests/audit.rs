//! The audit trail, end to end, with a real cluster and repository:
//! - every operation (backup, dump, verify, restore, delete, and wal-push run by PostgreSQL's
//!   archive_command) leaves its line in the local file and, through `lifeboat audit --json`, in
//!   the repository (an S3 repository), and no secret appears in either or in any output;
//! - SIGINT in the middle of a backup, a restore and a verification goes through the shared
//!   cancellation path: each exits 130, its audit line says cancelled, and `lifeboat list` shows
//!   nothing half-written.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};
use support::archiving::{LIFEBOAT, Options, Setup, archive_current_segment, execute};
use support::output::{assert_success, describe};
use support::s3::{S3Server, S3ServerKind, SECRET_KEY};

const PASSPHRASE: &str = "audit-passphrase-Zq81";
const PASSWORD: &str = "audit-db-password-Kx42";

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

fn finished<'a>(records: &'a [serde_json::Value], operation: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|record| record["operation"] == operation && record["event"] == "finished").collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSPHRASE, PASSWORD, SECRET_KEY] {
        assert!(!text.contains(secret), "{what} shows a secret ({secret}):\n{text}");
    }
}

fn run_checked(setup: &Setup, args: &[&str], outputs: &mut String) -> Output {
    let output = setup.command(args).output().unwrap();
    outputs.push_str(&String::from_utf8_lossy(&output.stdout));
    outputs.push_str(&String::from_utf8_lossy(&output.stderr));
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_leaves_one_audit_line_locally_and_in_the_repository_without_secrets() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    // Local connections of role `auditor` must give its password (SCRAM); the test's own
    // connections, as the bootstrap superuser, are trusted.
    let hba = "local all auditor scram-sha-256\nlocal all all trust\n";
    let setup = Setup::with(Options::restorable().s3(&server, &bucket).hba(hba)).await;
    let mut conn = setup.connect().await;
    execute(&mut conn, &format!("CREATE ROLE auditor LOGIN SUPERUSER PASSWORD '{PASSWORD}'")).await;
    let unchecked = setup.cluster.connect_options().username("auditor").password("not the password");
    assert!(PgConnection::connect_with(&unchecked).await.is_err(), "the server checks auditor's password");

    // The repository is opened with a passphrase from here on: a slot for it, the configuration
    // names its file instead of the key file, and the key file is gone.
    let passphrase_file = setup.dir.path().join("passphrase");
    std::fs::write(&passphrase_file, PASSPHRASE).unwrap();
    std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    setup.cluster.give_to_server_user(&passphrase_file).unwrap();
    let mut outputs = String::new();
    assert_success(&run_checked(
        &setup,
        &["key", "add", "--new-passphrase-file", passphrase_file.to_str().unwrap()],
        &mut outputs,
    ));
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let key_file_line = config.lines().find(|line| line.starts_with("key_file = ")).unwrap().to_owned();
    let config = config
        .replace(&key_file_line, &format!("passphrase_file = \"{}\"", passphrase_file.display()))
        .replacen("&user=postgres", &format!("&user=auditor&password={PASSWORD}"), 1);
    assert!(config.contains("user=auditor"), "{config}");
    std::fs::write(setup.config_path(), config).unwrap();
    std::fs::remove_file(setup.dir.path().join("repo.key")).unwrap();
    assert_success(&run_checked(&setup, &["key", "check"], &mut outputs));

    // wal-push, run by the server, spools its audit lines where the test's commands keep their state,
    // so the next of those mirrors them.
    let command = format!(
        "LIFEBOAT_STATE_DIR={} {LIFEBOAT} --config {} wal-push %p",
        setup.state_dir().display(),
        setup.config_path().display()
    );
    execute(&mut conn, &format!("ALTER SYSTEM SET archive_command = '{command}'")).await;
    execute(&mut conn, "SELECT pg_reload_conf()").await;
    execute(&mut conn, "CREATE TABLE things (id int, name text)").await;
    execute(&mut conn, "INSERT INTO things SELECT g, 'thing ' || g FROM generate_series(1, 1000) g").await;
    archive_current_segment(&mut conn).await;

    let backup = run_checked(&setup, &["backup", "--json"], &mut outputs);
    assert_success(&backup);
    let backup_id =
        serde_json::from_slice::<serde_json::Value>(&backup.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    let dump = run_checked(&setup, &["dump", "--json"], &mut outputs);
    assert_success(&dump);
    let dump_id = serde_json::from_slice::<serde_json::Value>(&dump.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    assert_success(&run_checked(&setup, &["verify", &backup_id, "--integrity-only"], &mut outputs));
    let pgdata = setup.restore_dir("restored");
    assert_success(&run_checked(
        &setup,
        &["restore", "--pgdata", pgdata.to_str().unwrap(), "--backup", &backup_id],
        &mut outputs,
    ));
    archive_current_segment(&mut conn).await;
    assert_success(&run_checked(&setup, &["delete", &dump_id], &mut outputs));
    let trail = run_checked(&setup, &["audit", "--json"], &mut outputs);
    assert_success(&trail);
    let text = run_checked(&setup, &["audit", "--since", "1h"], &mut outputs);
    assert_success(&text);

    let local = audit_lines(&setup.audit_path());
    let document: serde_json::Value = serde_json::from_slice(&trail.stdout).unwrap();
    assert_eq!(document["schema"], "audit/1");
    let mirrored: Vec<serde_json::Value> = serde_json::from_value(document["records"].clone()).unwrap();
    for (name, records) in [("local file", &local), ("repository", &mirrored)] {
        for operation in ["key-add", "backup", "dump", "verify", "restore", "delete"] {
            let lines = finished(records, operation);
            assert_eq!(lines.len(), 1, "{name}: one finished {operation}: {records:#?}");
            assert_eq!(lines[0]["result"], "succeeded", "{name}: {:#}", lines[0]);
            assert_eq!(lines[0]["cluster"], "main");
            assert_eq!(lines[0]["user"], "root");
        }
        assert_eq!(finished(records, "backup")[0]["created"][0], backup_id.as_str(), "{name}");
        assert_eq!(finished(records, "key-add")[0]["arguments"]["kind"], "passphrase", "{name}");
        assert_eq!(finished(records, "delete")[0]["deleted"][0], dump_id.as_str(), "{name}");
        assert_eq!(finished(records, "restore")[0]["arguments"]["backup"], backup_id.as_str(), "{name}");
        let pushed = finished(records, "wal-push");
        assert!(pushed.len() >= 2, "{name}: the segments archived during the test: {records:#?}");
        assert!(pushed.iter().all(|record| record["user"] == "postgres"), "{name}: {pushed:#?}");
        for operation in ["backup", "dump", "verify", "restore"] {
            assert!(
                records.iter().any(|record| record["operation"] == operation && record["event"] == "started"),
                "{name}: a started line for {operation}"
            );
        }
    }
    let text_lines = String::from_utf8_lossy(&text.stdout);
    assert!(text_lines.lines().any(|line| line.contains("delete") && line.contains(&dump_id)), "{text_lines}");

    assert_no_secret("the local audit log", &std::fs::read_to_string(setup.audit_path()).unwrap());
    assert_no_secret("the mirrored audit trail", &String::from_utf8_lossy(&trail.stdout));
    assert_no_secret("the commands' output", &outputs);
}

/// Starts `lifeboat <args>` and waits until its audit line says the operation started. The
/// caller waits for the child ([`interrupt`]).
#[allow(clippy::zombie_processes)]
fn start_and_wait(setup: &Setup, args: &[&str], operation: &str) -> Child {
    let before = audit_lines(&setup.audit_path()).len();
    let child =
        setup.command(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = audit_lines(&setup.audit_path());
        if lines[before.min(lines.len())..]
            .iter()
            .any(|record| record["operation"] == operation && record["event"] == "started")
        {
            return child;
        }
        assert!(Instant::now() < deadline, "{operation} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGINT to `child`; its output once it exited, which must be the cancellation's.
fn interrupt(child: Child, operation: &str) -> String {
    // SAFETY: sends SIGINT to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{operation}: {}", describe(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// About 40 MB in table `big`, so a backup, restore or verification runs long enough to be
/// interrupted, with its WAL archived.
async fn fill_and_archive(conn: &mut PgConnection) {
    execute(conn, "CREATE TABLE big (id int, payload text)").await;
    execute(conn, "INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 400000) g")
        .await;
    archive_current_segment(conn).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_cancels_a_backup_a_restore_and_a_verification_and_the_audit_log_says_so() {
    let setup = Setup::start_verifying("").await;
    let mut conn = setup.connect().await;
    fill_and_archive(&mut conn).await;

    let backup = start_and_wait(&setup, &["backup", "--workers", "1"], "backup");
    let stderr = interrupt(backup, "backup");
    assert!(stderr.contains("cancelled"), "{stderr}");
    let listed = setup.json(&["list", "--json"]);
    assert_eq!(listed["backups"], serde_json::json!([]), "nothing of the cancelled backup is listed: {listed}");
    assert_eq!(listed["problems"], serde_json::json!([]), "{listed}");

    let id = setup.json(&["backup", "--json"])["id"].as_str().unwrap().to_owned();
    let pgdata = setup.restore_dir("cancelled");
    let restore =
        start_and_wait(&setup, &["restore", "--pgdata", pgdata.to_str().unwrap(), "--workers", "1"], "restore");
    interrupt(restore, "restore");
    assert!(!pgdata.join("global/pg_control").exists(), "a cancelled restore leaves no pg_control");

    let verify = start_and_wait(&setup, &["verify", &id], "verify");
    let stderr = interrupt(verify, "verify");
    assert!(stderr.contains("interrupted"), "{stderr}");

    let records = audit_lines(&setup.audit_path());
    for operation in ["backup", "restore", "verify"] {
        let ended = finished(&records, operation);
        assert!(
            ended.iter().any(|record| record["result"] == "cancelled" && record["error"] == "SIGINT"),
            "{operation} is reported cancelled: {ended:#?}"
        );
    }
    let listed = setup.json(&["list", "--json"]);
    let ids: Vec<&str> =
        listed["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()], "only the completed backup is listed: {listed}");
    assert_eq!(listed["problems"], serde_json::json!([]), "{listed}");
    let trail = setup.json(&["audit", "--json"]);
    let cancelled =
        trail["records"].as_array().unwrap().iter().filter(|record| record["result"] == "cancelled").count();
    assert_eq!(cancelled, 3, "the repository's trail has the three cancellations too: {trail:#}");
}

/// The pid of a `pg_basebackup` that process `parent` started, once there is one.
fn pg_basebackup_of(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid ...": the command name is between the first '(' and the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|field| field.parse::<u32>().ok());
            if &stat[open + 1..close] == "pg_basebackup" && ppid == Some(parent) {
                return stat[..open].trim().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "lifeboat (pid {parent}) started no pg_basebackup");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A streamed backup (`--method basebackup`) interrupted mid-stream kills its pg_basebackup,
/// says it was cancelled in the audit trail, and is listed nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_a_streamed_backup_kills_pg_basebackup_and_leaves_no_backup_listed() {
    let setup = Setup::start().await;
    let mut conn = setup.connect().await;
    fill_and_archive(&mut conn).await;

    let backup = start_and_wait(&setup, &["backup", "--method", "basebackup", "--workers", "1"], "backup");
    let streamer = pg_basebackup_of(backup.id());
    // Only lifeboat is interrupted: pg_basebackup ends because lifeboat kills it.
    let stderr = interrupt(backup, "backup");
    assert!(stderr.contains("cancelled (while streaming from pg_basebackup)"), "{stderr}");
    assert!(!Path::new(&format!("/proc/{streamer}")).exists(), "pg_basebackup (pid {streamer}) still runs");

    let records = audit_lines(&setup.audit_path());
    let ended = finished(&records, "backup");
    assert!(
        ended.iter().any(|record| record["result"] == "cancelled" && record["error"] == "SIGINT"),
        "the streamed backup is reported cancelled: {ended:#?}"
    );
    let listed = setup.json(&["list", "--json"]);
    let backups = listed["backups"].as_array().map_or(0, |entries| {
        entries.iter().filter(|entry| entry["id"].as_str().is_some_and(|id| id.ends_with("-full"))).count()
    });
    assert_eq!(backups, 0, "nothing of the cancelled backup is listed: {listed}");

    // The cluster is left able to take the next one.
    let id = setup.json(&["backup", "--method", "basebackup", "--json"])["id"].as_str().unwrap().to_owned();
    assert!(id.ends_with("-full"), "{id}");
}
