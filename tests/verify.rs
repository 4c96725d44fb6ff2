//! `lifeboat verify` end to end on real clusters. It proves that:
//! - a good base backup passes a real restore test: every file and the WAL from start to stop
//!   read, the restored cluster holds the test's database, `pg_amcheck` and a user check pass, the
//!   report is stored and shown by `info`, and nothing is left behind (scratch directory empty,
//!   no server running);
//! - a good dump passes, with its restored row counts in the report, in a scratch cluster and in
//!   scratch databases on `verify.dump_server` (dropped afterwards); a backup in an S3 bucket
//!   passes and its report is stored there;
//! - damage is caught and named, in the right phase, and cleaned up after: a flipped byte in a data
//!   object (integrity, with and without `--integrity-only`), a deleted WAL segment (wal), a user
//!   check returning false (checks), a dump manifest whose row count no longer matches (row-counts);
//! - Ctrl-C (SIGINT) in the middle of a check stops the scratch server, removes its files, exits
//!   130 and stores no report; `--timeout` does the same cleanup and stores a failed report;
//! - `backup --verify` verifies what it took, and `lifeboat quickstart` runs its tour end to end.
//!
//! The source cluster archives with the built binary's `wal-push` (tests/support/archiving.rs).
//! Tests run as root and the scratch servers as `postgres`, so the scratch directory is inside
//! the test's directory, which belongs to that user.

mod support;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat::catalog::id::BackupId;
use lifeboat::catalog::layout::ClusterLayout;
use lifeboat::format::dump_manifest::{DumpKeys, DumpManifest};
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use lifeboat::storage::PutMode;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use support::archiving::{
    LIFEBOAT, Options, Setup, archive_current_segment, binaries, execute, lifeboat_command, without_steering_env,
};
use support::output::{assert_failure, assert_success, describe};
use support::s3::{S3Server, S3ServerKind};

/// The database the tests fill, and a check that holds on it.
const SHOP_CHECK: &str = r#"{ database = "shop", query = "select count(*) = 1000 from t" }"#;
/// A check that keeps the verification inside its running scratch server for a minute.
const SLEEPING_CHECK: &str = r#""select pg_sleep(60) is not null""#;

/// Creates database `shop` with table `t`: 1000 rows and a primary key (an index for amcheck).
async fn create_shop(setup: &Setup) {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE shop").await;
    let mut shop = PgConnection::connect_with(&setup.cluster.connect_options().database("shop")).await.unwrap();
    execute(&mut shop, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)").await;
    execute(&mut shop, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g").await;
    shop.close().await.unwrap();
}

/// A cluster with `shop`, `[verify]` settings `settings`, and a base backup whose WAL is archived.
async fn backed_up(settings: &str) -> (Setup, String) {
    let setup = Setup::start_verifying(settings).await;
    create_shop(&setup).await;
    let id = setup.backup().await;
    archive_current_segment(&mut setup.connect().await).await;
    (setup, id)
}

/// `lifeboat dump --db shop`; its id.
fn dump_shop(setup: &Setup) -> String {
    let manifest = setup.json(&["dump", "--db", "shop", "--json"]);
    manifest["id"].as_str().expect("the dump manifest has an id").to_owned()
}

/// `info <id> --json`'s verification object (null without reports).
fn verification(setup: &Setup, id: &str) -> Value {
    setup.json(&["info", id, "--json"])["verification"].clone()
}

/// The JSON array `verify --json` printed (also when it failed).
fn reports(output: &Output) -> Vec<Value> {
    let parsed: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("verify --json printed no JSON ({error})\n{}", describe(output)));
    assert_eq!(parsed["schema"], "verify/1", "{}", describe(output));
    parsed["reports"].as_array().unwrap_or_else(|| panic!("no reports\n{}", describe(output))).clone()
}

/// The only report of a `verify <id> --json` run.
fn only_report(output: &Output) -> Value {
    let mut all = reports(output);
    assert_eq!(all.len(), 1, "{}", describe(output));
    all.remove(0)
}

/// Nothing is left in the scratch directory, and no process (a server) runs from it.
#[track_caller]
fn assert_cleaned_up(setup: &Setup) {
    let scratch = setup.scratch_dir();
    let left: Vec<PathBuf> = std::fs::read_dir(&scratch).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(left.is_empty(), "the scratch directory {} still holds {left:?}", scratch.display());
    let running = processes_mentioning(&scratch);
    assert!(running.is_empty(), "processes still run from {}: {running:?}", scratch.display());
}

/// Live (not zombie) processes whose command line names `path`, with their command lines.
fn processes_mentioning(path: &Path) -> Vec<(u32, String)> {
    let needle = path.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited; the container's init
/// may be slow to reap it).
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 delivers nothing; it only asks whether the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits up to `limit` for process `pid` to be gone.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The `postmaster.pid` of a scratch server under `scratch`, once one exists.
fn postmaster_pid_file(scratch: &Path) -> Option<PathBuf> {
    std::fs::read_dir(scratch)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("lifeboat-pg-"))
        .map(|entry| entry.path().join("data/postmaster.pid"))
        .find(|path| path.exists())
}

/// A running scratch server as its `postmaster.pid` describes it.
struct ScratchServer {
    pid: u32,
    port: u16,
    socket_dir: PathBuf,
    /// Its status line says "ready": recovered and accepting connections.
    ready: bool,
}

fn read_postmaster_pid(path: &Path) -> Option<ScratchServer> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    // pid, data directory, start time, port, socket directory, listen address, shared memory
    // key, status (written in several steps).
    Some(ScratchServer {
        pid: lines.first()?.trim().parse().ok()?,
        port: lines.get(3)?.trim().parse().ok()?,
        socket_dir: PathBuf::from(lines.get(4)?.trim()),
        ready: lines.get(7).is_some_and(|status| status.trim() == "ready"),
    })
    .filter(|server| !server.socket_dir.as_os_str().is_empty())
}

/// Starts `lifeboat verify <args>` in the background.
fn spawn_verify(setup: &Setup, args: &[&str]) -> Child {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    setup.command(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits (at most `limit`) for `child` to exit; its output. Kills it if it does not.
fn wait_for(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("lifeboat verify did not exit within {limit:?}\n{}", describe(&output));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    Output { status, stdout, stderr }
}

/// Waits until a scratch server under the setup's scratch directory runs `query_like` in a
/// session (so the verification is inside its checks); the server. Fails if `child` exits first.
///
/// It connects only once the server is ready: lifeboat takes any FATAL line in the server's log
/// during recovery for a failed recovery, including the one a connection attempt to a server that
/// is still recovering causes.
async fn wait_for_session(setup: &Setup, child: &mut Child, query_like: &str) -> ScratchServer {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("lifeboat verify exited ({status}) before its check ran: {stderr}");
        }
        assert!(Instant::now() < deadline, "no scratch server ran {query_like:?} in time");
        let server = postmaster_pid_file(&setup.scratch_dir()).and_then(|path| read_postmaster_pid(&path));
        if let Some(server) = server.filter(|server| server.ready) {
            let options = PgConnectOptions::new()
                .socket(&server.socket_dir)
                .port(server.port)
                .username("postgres")
                .database("postgres");
            if let Ok(mut conn) = PgConnection::connect_with(&options).await {
                let sql = format!(
                    "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE '%{query_like}%' \
                     AND pid <> pg_backend_pid()"
                );
                let running = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await;
                let _ = conn.close().await;
                if running.is_ok_and(|count| count != "0") {
                    return server;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_base_backup_passes_a_restore_test_and_leaves_nothing_behind() {
    let (setup, id) = backed_up(&format!("checks = [{SHOP_CHECK}]")).await;
    let output = setup.run(&["verify", &id, "--json"]);
    assert_success(&output);
    let report = only_report(&output);
    assert_eq!(report["id"], id.as_str());
    assert_eq!(report["kind"], "full");
    assert_eq!(report["mode"], "restore");
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(report["failure"].is_null(), "{report:#}");
    assert!(report["integrity"]["files"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["integrity"]["objects"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["integrity"]["wal_segments"].as_u64().unwrap() >= 1, "{report:#}");
    let databases = report["recovery"]["databases"].as_array().unwrap();
    assert!(databases.contains(&Value::from("shop")), "the restored cluster holds shop: {report:#}");
    assert!(report["recovery"]["server_version"].as_str().unwrap().starts_with("PostgreSQL "), "{report:#}");
    assert_eq!(report["amcheck"]["level"], "indexes", "{report:#}");
    assert_eq!(report["amcheck"]["passed"], true, "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{report:#}");
    assert_eq!(checks[0]["database"], "shop");
    assert_eq!(checks[0]["query"], "select count(*) = 1000 from t");
    assert_eq!(checks[0]["outcome"], "passed", "{report:#}");

    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "passed", "{verification:#}");
    assert_eq!(verification["passed"], true);
    assert_eq!(verification["reports"], 1);
    assert_eq!(verification["latest"]["id"], id.as_str(), "{verification:#}");
    assert!(verification["report"].as_str().unwrap().starts_with(&format!("clusters/main/verify/{id}/")));
    assert_cleaned_up(&setup);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_dump_passes_with_its_row_counts() {
    let setup = Setup::start_verifying(&format!("checks = [{SHOP_CHECK}, \"select true\"]")).await;
    create_shop(&setup).await;
    // dump --verify verifies what it took, and says so in its JSON.
    let taken = setup.json(&["dump", "--db", "shop", "--verify", "--json"]);
    assert_eq!(taken["schema"], "dump/1", "{taken:#}");
    let id = taken["id"].as_str().expect("the dump's id").to_owned();
    assert_eq!(taken["verification"]["latest"]["id"], id.as_str(), "{taken:#}");
    assert_eq!(taken["verification"]["passed"], true, "{taken:#}");
    assert_cleaned_up(&setup);

    let output = setup.run(&["verify", &id, "--json"]);
    assert_success(&output);
    let report = only_report(&output);
    assert_eq!(report["kind"], "dump");
    assert_eq!(report["mode"], "restore");
    assert_eq!(report["passed"], true, "{report:#}");
    let restored = report["restored_databases"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "{report:#}");
    assert_eq!(restored[0]["name"], "shop");
    assert_eq!(restored[0]["restored_as"], "shop");
    assert_eq!(restored[0]["tables"], 1);
    assert_eq!(restored[0]["rows"], 1000);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks[0]["outcome"], "passed", "{report:#}");
    // A check without a database runs in the connection's database, which is not in the dump.
    assert_eq!(checks[1]["outcome"], "skipped", "{report:#}");

    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "passed", "{verification:#}");
    assert_eq!(verification["reports"], 2, "dump --verify and verify each stored one");
    assert_eq!(verification["latest"]["id"], id.as_str());
    assert_cleaned_up(&setup);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_in_s3_is_verified_and_its_report_stored_there() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let setup = Setup::verifying(Options::restorable().s3(&server, &bucket), &format!("checks = [{SHOP_CHECK}]")).await;
    create_shop(&setup).await;
    let id = setup.backup().await;
    archive_current_segment(&mut setup.connect().await).await;
    let output = setup.run(&["verify", &id, "--json"]);
    assert_success(&output);
    let report = only_report(&output);
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["checks"][0]["outcome"], "passed", "{report:#}");
    // info reads the report back from the bucket.
    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "passed", "{verification:#}");
    assert!(verification["report"].as_str().unwrap().starts_with(&format!("clusters/main/verify/{id}/")));
    assert_cleaned_up(&setup);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_verified_on_a_configured_server_leaves_no_scratch_database() {
    let server = LocalCluster::start_new(&binaries(), LocalClusterOptions::default()).await.unwrap();
    let settings = format!("dump_server = \"{}\"\nchecks = [{SHOP_CHECK}]", server.connection_url());
    let setup = Setup::start_verifying(&settings).await;
    create_shop(&setup).await;
    let id = dump_shop(&setup);
    let output = setup.run(&["verify", &id, "--json"]);
    assert_success(&output);
    let report = only_report(&output);
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["restored_databases"][0]["name"], "shop");
    assert_eq!(report["restored_databases"][0]["rows"], 1000);
    let restored_as = report["restored_databases"][0]["restored_as"].as_str().unwrap();
    assert!(restored_as.starts_with("lifeboat_verify_") && restored_as.ends_with("_shop"), "{report:#}");
    assert_eq!(report["checks"][0]["outcome"], "passed", "{report:#}");
    // No scratch cluster was started, and the scratch database is gone from the server.
    assert_cleaned_up(&setup);
    let mut conn = PgConnection::connect_with(&server.connect_options()).await.unwrap();
    let left: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'lifeboat_verify_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(left.is_empty(), "scratch databases left on the server: {left:?}");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_data_object_fails_integrity_and_is_named() {
    let (setup, id) = backed_up("").await;
    let key = setup.damage_largest_object(&id);

    for args in [vec!["verify", id.as_str()], vec!["verify", id.as_str(), "--integrity-only"]] {
        let error = assert_failure(&setup.run(&args));
        assert!(error.contains(&format!("verification of {id} failed (integrity)")), "{args:?}: {error}");
        assert!(error.contains(&key), "{args:?} names the object {key}: {error}");
        assert_cleaned_up(&setup);
    }
    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "failed (integrity)", "{verification:#}");
    assert_eq!(verification["passed"], false);
    assert_eq!(verification["reports"], 2, "both runs stored a report");
    assert_eq!(verification["latest"]["mode"], "integrity", "{verification:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_wal_segment_fails_and_is_named() {
    let (setup, id) = backed_up("").await;
    let start_wal = setup.json(&["info", &id, "--json"])["start_wal"].as_str().unwrap().to_owned();
    let wal = setup.repo_dir().join("clusters/main/wal");
    let mut found = Vec::new();
    let mut stack = vec![wal.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap().to_string_lossy() == start_wal {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "segment {start_wal} is archived once under {}: {found:?}", wal.display());
    std::fs::remove_file(&found[0]).unwrap();

    let error = assert_failure(&setup.run(&["verify", &id]));
    assert!(error.contains(&format!("verification of {id} failed (wal)")), "{error}");
    assert!(error.contains(&format!("WAL segment {start_wal} is not in the archive")), "{error}");
    assert_cleaned_up(&setup);
    let error = assert_failure(&setup.run(&["verify", &id, "--integrity-only"]));
    assert!(error.contains("failed (wal)") && error.contains(&start_wal), "{error}");
    assert_eq!(verification(&setup, &id)["status"], "failed (wal)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_returning_false_fails_the_verification_and_is_named() {
    let failing = "select count(*) = 999 from t";
    let (setup, id) =
        backed_up(&format!("checks = [\"select true\", {{ database = \"shop\", query = \"{failing}\" }}]")).await;
    let output = setup.run(&["verify", &id, "--json"]);
    let error = assert_failure(&output);
    assert!(error.contains(&format!("verification of {id} failed (checks)")), "{error}");
    assert!(error.contains(failing) && error.contains("returned false"), "{error}");
    let report = only_report(&output);
    assert_eq!(report["passed"], false);
    assert_eq!(report["failure"]["phase"], "checks", "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{report:#}");
    assert_eq!(checks[0]["outcome"], "passed", "{report:#}");
    assert_eq!(checks[1]["query"], failing);
    assert_eq!(checks[1]["database"], "shop");
    assert_eq!(checks[1]["outcome"], "failed", "{report:#}");
    // The restore itself went well: the failure is the check's alone.
    assert_eq!(report["amcheck"]["passed"], true, "{report:#}");
    assert_cleaned_up(&setup);
    assert_eq!(verification(&setup, &id)["status"], "failed (checks)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_whose_row_count_differs_from_its_manifest_fails_row_counts() {
    let setup = Setup::start_verifying("").await;
    create_shop(&setup).await;
    let id = dump_shop(&setup);
    // Claim one row more for shop's table t in the (re-sealed) manifest.
    let (config, repository) = setup.open().await;
    let layout = ClusterLayout::new(&config.cluster.name);
    let key = DumpKeys::new(&layout, id.parse::<BackupId>().unwrap()).manifest();
    let mut manifest = DumpManifest::from_json(&repository.get_bytes(&key).await.unwrap()).unwrap();
    let shop = manifest.databases.iter_mut().find(|database| database.name == "shop").unwrap();
    let table = shop.tables.iter_mut().find(|table| table.table == "t").unwrap();
    assert_eq!(table.rows, 1000);
    table.rows += 1;
    repository.put_bytes(&key, manifest.to_json(), PutMode::Overwrite).await.unwrap();

    // The journal knows the manifest was replaced, before anything is restored.
    let error = assert_failure(&setup.run(&["verify", &id, "--integrity-only"]));
    assert!(error.contains("failed (integrity)") && error.contains("is not the one journal entry"), "{error}");
    // Without a journal (a repository from before journals, and a host that never saw one), the
    // manifest is all there is to go on, and the restored counts contradict it.
    std::fs::remove_dir_all(setup.repo_dir().join("clusters/main/journal")).unwrap();
    std::fs::remove_dir_all(setup.state_dir()).unwrap();

    let output = setup.run(&["verify", &id, "--json"]);
    let error = assert_failure(&output);
    assert!(error.contains(&format!("verification of {id} failed (row-counts)")), "{error}");
    assert!(error.contains("table public.t") && error.contains("1000") && error.contains("1001"), "{error}");
    assert_eq!(only_report(&output)["failure"]["phase"], "row-counts");
    assert_cleaned_up(&setup);
    assert_eq!(verification(&setup, &id)["status"], "failed (row-counts)");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_verification_stops_its_server_removes_its_files_and_stores_no_report() {
    let (setup, id) = backed_up(&format!("checks = [{SLEEPING_CHECK}]")).await;
    // A report to compare with: an integrity check does not run the checks.
    assert_success(&setup.run(&["verify", &id, "--integrity-only"]));
    let before = verification(&setup, &id);
    assert_eq!(before["reports"], 1, "{before:#}");

    let mut child = spawn_verify(&setup, &[&id]);
    let server = wait_for_session(&setup, &mut child, "pg_sleep(60)").await;
    assert!(alive(server.pid));
    let began = Instant::now();
    // SAFETY: sends SIGINT to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let output = wait_for(child, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(130), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the interrupt did not wait for the check: {:?}",
        began.elapsed()
    );
    assert!(gone_within(server.pid, Duration::from_secs(3)), "the scratch server {} still runs", server.pid);
    assert_cleaned_up(&setup);
    let after = verification(&setup, &id);
    assert_eq!(after["reports"], 1, "no report for the interrupted run: {after:#}");
    assert_eq!(after["report"], before["report"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verification_past_its_timeout_is_stopped_cleaned_up_and_failed() {
    let (setup, id) = backed_up(&format!("checks = [{SLEEPING_CHECK}]")).await;
    let began = Instant::now();
    // Long enough for the scratch server to start on a busy machine, short next to the check.
    let mut child = spawn_verify(&setup, &[&id, "--timeout", "8s", "--amcheck", "off"]);
    // Record the scratch server's pid while it runs.
    let mut server_pid = None;
    while child.try_wait().unwrap().is_none() && began.elapsed() < Duration::from_secs(60) {
        if server_pid.is_none() {
            server_pid = postmaster_pid_file(&setup.scratch_dir())
                .and_then(|path| read_postmaster_pid(&path))
                .map(|server| server.pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = wait_for(child, Duration::from_secs(60));
    let error = assert_failure(&output);
    assert!(error.contains(&format!("verification of {id} failed (timeout)")), "{error}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "stopped soon after 8 s, not after the check: {:?}",
        began.elapsed()
    );
    let pid = server_pid.expect("the scratch server started within the timeout");
    assert!(gone_within(pid, Duration::from_secs(3)), "the scratch server {pid} still runs");
    assert_cleaned_up(&setup);
    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "failed (timeout)", "{verification:#}");
    assert_eq!(verification["latest"]["failure"]["phase"], "timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_verify_stores_a_passed_report_for_the_new_backup() {
    let setup = Setup::start_verifying(&format!("checks = [{SHOP_CHECK}]")).await;
    create_shop(&setup).await;
    let taken = setup.json(&["backup", "--verify", "--json"]);
    let id = taken["id"].as_str().unwrap().to_owned();
    assert_eq!(taken["verification"]["latest"]["id"], id.as_str(), "{taken:#}");
    assert_eq!(taken["verification"]["passed"], true, "{taken:#}");
    let verification = verification(&setup, &id);
    assert_eq!(verification["status"], "passed", "{verification:#}");
    assert_eq!(verification["reports"], 1);
    assert_eq!(verification["latest"]["id"], id.as_str());
    assert_eq!(verification["latest"]["mode"], "restore");
    assert_eq!(verification["latest"]["checks"][0]["outcome"], "passed", "{verification:#}");
    assert_cleaned_up(&setup);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_runs_end_to_end() {
    let parent = tempfile::tempdir().unwrap();
    // The servers run as postgres and must reach the workspace.
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let workspace = parent.path().join("qs");
    let mut command = Command::new(LIFEBOAT);
    command.arg("quickstart").arg("--dir").arg(&workspace);
    let output = without_steering_env(&mut command).output().unwrap();
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|line| line.trim_start().starts_with("restored") && line.ends_with(" 1000 orders")),
        "step 8 shows the orders back: {stdout}"
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    let step = |n: u32| stdout.lines().any(|line| line.starts_with(&format!("{n}. ")));
    assert!((1..=8).all(step), "every step is shown: {stdout}");

    let left: Vec<String> = std::fs::read_dir(&workspace)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|name| name.starts_with("lifeboat-pg-")), "servers' directories left: {left:?}");
    for kept in ["lifeboat.toml", "lifeboat.key", "repo"] {
        assert!(left.iter().any(|name| name == kept), "{kept} is kept: {left:?}");
    }
    let running = processes_mentioning(&workspace);
    assert!(running.is_empty(), "processes still run from the workspace: {running:?}");

    let output = lifeboat_command(&workspace.join("lifeboat.toml"), &["list", "--json"]).output().unwrap();
    assert_success(&output);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{list:#}");
    assert_eq!(backups[0]["kind"], "full");
    assert_eq!(backups[0]["verification"]["status"], "passed", "{list:#}");
}
