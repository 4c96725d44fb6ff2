//! `lifeboat daemon` end to end (issue 13): the real binary against a real cluster archiving with
//! `wal-push`, schedules seconds apart (six-field cron). Full backups, dumps, verifications (right
//! after a backup and on their own schedule), expiry and a copy happen, with a local and with an
//! S3 repository; SIGTERM in the middle of a backup exits within the deadline and leaves nothing
//! incomplete, no lease and no scratch server; a run due while the previous one still runs is
//! skipped; SIGHUP with a broken file keeps the old configuration and names the file and line;
//! a run missed while the daemon was down runs once at start (and not with `catch_up = false`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Timelike as _, Utc};
use support::archiving::{Options, Setup, archive_current_segment, execute};
use support::daemon::{Daemon, daemon_config};
use support::output::assert_success;
use support::s3::{S3Server, S3ServerKind};

fn listed(setup: &Setup, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let list = setup.json(&all);
    assert_eq!(list["problems"], serde_json::json!([]), "nothing incomplete or damaged: {list}");
    list["backups"].as_array().unwrap().clone()
}

fn of_kind<'a>(entries: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    entries.iter().filter(|entry| entry["kind"] == kind).collect()
}

/// Processes whose command line names `path` (a scratch server's data directory under it).
fn processes_under(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .filter(|line| line.contains(&needle))
        .collect()
}

/// About 150 MB of table: a backup or a verification of it takes seconds.
async fn fill(setup: &Setup) {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE big (id int, payload text)").await;
    execute(
        &mut conn,
        "INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 1500000) g",
    )
    .await;
    archive_current_segment(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_dumps_verifications_expiry_and_a_copy_happen_with_a_local_repository() {
    let aux = tempfile::tempdir().unwrap();
    let copy_dir = aux.path().join("near");
    let extra = daemon_config(
        "schedule = { full = \"*/20 * * * * *\", dump = \"10-59/20 * * * * *\" }\nretention = { full = 1, dumps = 1 }",
        aux.path(),
        "",
        &format!("[[copies]]\nname = \"near\"\nurl = \"file://{}\"\n", copy_dir.display()),
    );
    let setup = Setup::verifying(Options::restorable().extra(&extra), "after_backup = true\namcheck = \"off\"").await;
    assert_success(&setup.run(&["init", "--copy", "near"]));

    let daemon = Daemon::start(&setup);
    // Two backups (the first then expired: full = 1), a dump, each verified right after, each
    // followed by expiry and the copy without a schedule of its own.
    // The second backup's expiry has deleted the first once one full backup is left.
    daemon.wait_until(Duration::from_secs(150), "two backups, a dump, their verification, expiry and copy", || {
        daemon.count("job backup succeeded") >= 2
            && daemon.count("job dump succeeded") >= 1
            && daemon.count("job verify succeeded") >= 2
            && daemon.count("job expire succeeded") >= 2
            && daemon.count("job copy:near succeeded") >= 2
            && {
                // The counts include the dump's verification and copy: wait for the kept backup's own.
                let entries = listed(&setup, &[]);
                let fulls = of_kind(&entries, "full");
                fulls.len() == 1
                    && fulls[0]["verification"]["status"] == "passed"
                    && listed(&setup, &["--repository", "near"]).iter().any(|entry| entry["id"] == fulls[0]["id"])
            }
    });
    let log = daemon.stop();
    assert!(log.contains("job verify started (after:backup)"), "{log}");
    assert!(log.contains("job expire started (after:backup)") || log.contains("job expire started (after:dump)"));
    assert!(!log.contains("job backup failed") && !log.contains("job verify failed"), "{log}");

    let entries = listed(&setup, &[]);
    let fulls = of_kind(&entries, "full");
    assert_eq!(fulls.len(), 1, "expiry kept one full backup of the two or more taken: {entries:#?}");
    assert_eq!(of_kind(&entries, "dump").len(), 1, "and one dump: {entries:#?}");
    assert_eq!(fulls[0]["verification"]["status"], "passed", "{entries:#?}");
    let on_copy = listed(&setup, &["--repository", "near"]);
    let newest = fulls[0]["id"].as_str().unwrap();
    assert!(on_copy.iter().any(|entry| entry["id"] == newest), "the copy holds {newest}: {on_copy:#?}");
    let state = std::fs::read_to_string(aux.path().join("state/daemon-state.json")).unwrap();
    assert!(state.contains("\"backup\"") && state.contains("\"dump\""), "{state}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_s3_repository_a_scheduled_verification_proves_the_newest_unverified_backup() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    server.client().create_bucket().bucket("daemon").send().await.unwrap();
    let aux = tempfile::tempdir().unwrap();
    let extra = daemon_config(
        "schedule = { full = \"*/15 * * * * *\" }",
        aux.path(),
        "",
        "[wal]\ncheck_schedule = \"*/5 * * * * *\"\n",
    );
    let setup = Setup::verifying(
        Options::restorable().extra(&extra).s3(&server, "daemon"),
        "schedule = \"*/4 * * * * *\"\namcheck = \"off\"",
    )
    .await;
    let daemon = Daemon::start(&setup);
    daemon.wait_until(Duration::from_secs(120), "a backup and its scheduled verification", || {
        let log = daemon.log();
        log.contains("job backup succeeded")
            && log.lines().any(|line| line.contains("verification of") && line.contains(": passed"))
            && log.contains("job wal-check")
    });
    let log = daemon.stop();
    assert!(log.contains("job verify started (schedule)"), "{log}");
    let entries = listed(&setup, &[]);
    let fulls = of_kind(&entries, "full");
    assert!(!fulls.is_empty(), "{entries:#?}");
    assert!(
        fulls.iter().any(|entry| entry["verification"]["status"] == "passed"),
        "a backup was verified on the verify schedule: {entries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_backup_cancels_it_after_the_deadline_and_leaves_nothing_behind() {
    let aux = tempfile::tempdir().unwrap();
    // A deadline of 0s: the backup (about a second of copying here) cannot beat it, so the
    // cancel path always runs.
    let extra = daemon_config("schedule = { full = \"*/3 * * * * *\" }", aux.path(), "shutdown_timeout = \"0s\"", "");
    let setup = Setup::verifying(Options::restorable().extra(&extra), "amcheck = \"off\"").await;
    fill(&setup).await;

    let daemon = Daemon::start(&setup);
    daemon.wait_for("job backup started", 1, Duration::from_secs(30));
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "exit 0 after a cancelled backup ({status}):\n{log}");
    assert!(took < Duration::from_secs(20), "exited {took:?} after SIGTERM:\n{log}");
    assert!(log.contains("cancelling the running jobs"), "{log}");
    assert!(log.contains("job backup cancelled"), "the backup was cancelled, not finished:\n{log}");
    assert!(of_kind(&listed(&setup, &[]), "full").is_empty(), "the cancelled backup is not listed");
    assert!(processes_under(&setup.scratch_dir()).is_empty());

    // The lease is released: a backup now takes it at once.
    let output = setup.run(&["backup"]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("waiting for lock"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_due_while_the_previous_still_runs_is_skipped_and_shutdown_stops_the_scratch_server() {
    let aux = tempfile::tempdir().unwrap();
    // Every second, each backup followed by its verification, which sits in a check of a minute:
    // the next ones are due while it runs. SIGTERM meanwhile: cancelled after 1 s.
    let extra = daemon_config("schedule = { full = \"* * * * * *\" }", aux.path(), "shutdown_timeout = \"1s\"", "");
    let verify = "after_backup = true\namcheck = \"off\"\nchecks = [\"select pg_sleep(60) is not null\"]";
    let setup = Setup::verifying(Options::restorable().extra(&extra), verify).await;
    let daemon = Daemon::start(&setup);
    daemon.wait_for("verify: running checks", 1, Duration::from_secs(60));
    daemon.wait_for("was skipped: the previous run", 2, Duration::from_secs(10));
    assert!(!processes_under(&setup.scratch_dir()).is_empty(), "the scratch server runs the check");
    assert_eq!(daemon.count("job backup started"), 1, "one backup at a time:\n{}", daemon.log());
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{log}");
    assert!(took < Duration::from_secs(30), "{took:?}:\n{log}");
    assert!(log.contains("job verify cancelled"), "the verification was cancelled at the deadline:\n{log}");
    assert!(processes_under(&setup.scratch_dir()).is_empty(), "{:?}", processes_under(&setup.scratch_dir()));
    let left: Vec<PathBuf> = std::fs::read_dir(setup.scratch_dir()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the scratch restore was removed: {left:?}");
    let entries = listed(&setup, &[]);
    assert_eq!(of_kind(&entries, "full").len(), 1, "{entries:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_file_keeps_the_old_configuration_and_a_fixed_one_applies() {
    let aux = tempfile::tempdir().unwrap();
    let extra = daemon_config("schedule = { full = \"0 0 1 1 *\" }", aux.path(), "", "");
    let setup = Setup::with(Options::restorable().extra(&extra)).await;
    let path = setup.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    let daemon = Daemon::start(&setup);

    let broken = format!("{good}\n[wal]\ncheck_schedule = \"every two seconds\"\n");
    let line = broken.lines().position(|line| line.starts_with("check_schedule")).unwrap() + 1;
    std::fs::write(&path, &broken).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("configuration reload refused", 1, Duration::from_secs(20));
    let log = daemon.log();
    let place = format!("{}:{line}", path.display());
    assert!(log.contains(&place), "the error names {place}:\n{log}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(daemon.count("job wal-check started"), 0, "the old configuration runs on");

    std::fs::write(&path, format!("{good}\n[wal]\ncheck_schedule = \"*/2 * * * * *\"\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("configuration reloaded", 1, Duration::from_secs(20));
    daemon.wait_for("job wal-check succeeded", 1, Duration::from_secs(30));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_missed_while_down_runs_once_at_start_and_not_with_catch_up_off() {
    let aux = tempfile::tempdir().unwrap();
    // Daily at the time of day half an hour ago: it fired while the daemon was "down" (the last
    // hour) and does not fire again during the test.
    let missed = Utc::now() - chrono::Duration::minutes(30);
    let schedule = format!("{} {} {} * * *", missed.second(), missed.minute(), missed.hour());
    let state = aux.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let down_since = |file: &Path| {
        let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        std::fs::write(file, format!("{{\"handled_until\": {{\"backup\": \"{since}\"}}}}")).unwrap();
    };
    let state_file = state.join("daemon-state.json");
    down_since(&state_file);
    let extra = daemon_config(&format!("schedule = {{ full = \"{schedule}\" }}"), aux.path(), "", "");
    let setup = Setup::with(Options::restorable().extra(&extra)).await;

    let daemon = Daemon::start(&setup);
    daemon.wait_for("job backup succeeded", 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.stop();
    assert_eq!(log.matches("job backup started (catch-up)").count(), 1, "{log}");
    assert_eq!(log.matches("job backup started").count(), 1, "{log}");
    assert_eq!(of_kind(&listed(&setup, &[]), "full").len(), 1);

    // Down over the time again, but with catch_up = false: nothing runs at start.
    down_since(&state_file);
    let path = setup.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace("[daemon]\n", "[daemon]\ncatch_up = false\n");
    std::fs::write(&path, text).unwrap();
    let started = Utc::now();
    let daemon = Daemon::start(&setup);
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.stop();
    assert!(!log.contains("job backup started"), "{log}");
    assert_eq!(of_kind(&listed(&setup, &[]), "full").len(), 1);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let handled: chrono::DateTime<Utc> = saved["handled_until"]["backup"].as_str().unwrap().parse().unwrap();
    assert!(handled >= started - chrono::Duration::seconds(1), "the start is remembered: {saved}");
}

/// `/metrics` and `/status` of the running daemon, read so that both describe the same moment:
/// `/status`, `/metrics`, `/status` again, until the two statuses agree on every job's runs.
async fn metrics_and_status(address: std::net::SocketAddr) -> (support::http::Exposition, serde_json::Value) {
    let runs = |status: &serde_json::Value| {
        status["jobs"].as_array().unwrap().iter().map(|job| job["runs_total"].clone()).collect::<Vec<_>>()
    };
    for _ in 0..20 {
        let (code, before) = support::http::get(address, "/status").await;
        assert_eq!(code, 200, "{before}");
        let (code, metrics) = support::http::get(address, "/metrics").await;
        assert_eq!(code, 200, "{metrics}");
        let (_, after) = support::http::get(address, "/status").await;
        let (before, after): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&before).unwrap(), serde_json::from_str(&after).unwrap());
        if runs(&before) == runs(&after) {
            return (support::http::parse_exposition(&metrics), after);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("the daemon never stood still long enough to read /status and /metrics together");
}

/// The daemon as a monitor and a pager see it, on an S3 repository: `/metrics` parses as
/// Prometheus text and says what `/status` says and what the repository holds; when the
/// repository becomes unreachable the webhook hears one failure (however many runs fail), and one
/// recovery when it is back.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_status_agree_and_an_outage_sends_one_failure_and_one_recovery() {
    let mut server = S3Server::start(S3ServerKind::S3sFs).await;
    server.client().create_bucket().bucket("watched").send().await.unwrap();
    let receiver = support::webhook::Receiver::start().await;
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let aux = tempfile::tempdir().unwrap();
    let extra = daemon_config(
        "schedule = { full = \"*/10 * * * * *\" }",
        aux.path(),
        &format!("listen = \"{address}\"\nwatch_interval = \"1s\""),
        &format!("[notify]\nwebhook = \"{}\"\ndesktop = false\n", receiver.url("/hooks/T0KEN")),
    );
    let setup = Setup::verifying(
        Options::restorable().extra(&extra).s3(&server, "watched"),
        "after_backup = true\namcheck = \"off\"",
    )
    .await;
    let daemon = Daemon::start(&setup);
    daemon.wait_for("job verify succeeded", 1, Duration::from_secs(90));

    // The watcher looks again after each run; wait for the look that saw the verification.
    let until = Instant::now() + Duration::from_secs(30);
    let (metrics, status) = loop {
        let (metrics, status) = metrics_and_status(address).await;
        if !status["repository"]["newest_verified_backup"].is_null() {
            break (metrics, status);
        }
        assert!(Instant::now() < until, "/status never showed the verified backup: {status:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let verified = &status["repository"]["newest_verified_backup"];
    let listed_passed: Vec<String> = of_kind(&listed(&setup, &[]), "full")
        .iter()
        .filter(|entry| entry["verification"]["status"] == "passed")
        .map(|entry| entry["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        listed_passed.contains(&verified["id"].as_str().unwrap().to_owned()),
        "/status names a backup the repository lists as verified: {verified:#} not in {listed_passed:?}"
    );
    let age = metrics.value("lifeboat_last_verified_backup_age_seconds", &[]).expect("the pager's metric");
    assert!(age.is_finite() && (0.0..300.0).contains(&age), "{age}");
    let verified_at = chrono::DateTime::parse_from_rfc3339(verified["at"].as_str().unwrap()).unwrap();
    let timestamp = metrics.value("lifeboat_last_verified_backup_timestamp_seconds", &[]).unwrap();
    assert!(
        (timestamp - verified_at.timestamp_micros() as f64 / 1e6).abs() < 1e-3,
        "/metrics ({timestamp}) and /status ({verified_at}) name the same verified backup"
    );
    for job in status["jobs"].as_array().unwrap() {
        let name = job["job"].as_str().unwrap();
        assert_eq!(
            metrics.value("lifeboat_job_runs_total", &[("job", name)]),
            Some(job["runs_total"].as_f64().unwrap()),
            "runs of {name} in /metrics and /status"
        );
    }
    assert!(metrics.value("lifeboat_job_runs_total", &[("job", "backup")]).unwrap() >= 1.0);
    assert!(metrics.value("lifeboat_job_last_success_timestamp_seconds", &[("job", "verify")]).is_some());
    assert_eq!(metrics.value("lifeboat_repository_up", &[]), Some(1.0));
    assert_eq!(support::http::get(address, "/healthz").await.0, 200);
    assert!(receiver.received().is_empty(), "nothing to say while everything works: {:?}", receiver.received());

    // The outage: runs fail, the webhook hears it once.
    server.stop_for_outage();
    let messages = receiver.wait_for(1, Duration::from_secs(120)).await;
    assert_eq!(messages.len(), 1, "one failure message:\n{}", daemon.log());
    let failure = messages[0].json();
    assert_eq!(failure["event"], "failure", "{failure:#}");
    let job = failure["job"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    while support::http::get(address, "/healthz").await.0 != 503 {
        assert!(Instant::now() < until, "/healthz stayed 200 with the repository unreachable");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    daemon.wait_for(&format!("job {job} failed"), 2, Duration::from_secs(120));

    // Back: the next run of the job succeeds and the webhook hears of the recovery.
    server.resume().await;
    let messages = receiver.wait_for(2, Duration::from_secs(120)).await;
    assert_eq!(messages.len(), 2, "a recovery message:\n{}", daemon.log());
    let recovery = messages[1].json();
    assert_eq!((recovery["event"].as_str(), recovery["job"].as_str()), (Some("recovery"), Some(job.as_str())));
    let failed_runs = daemon.count(&format!("job {job} failed"));
    let log = daemon.stop();
    let failures = receiver.received().iter().filter(|message| message.json()["event"] == "failure").count();
    assert_eq!(failures, 1, "{failed_runs} failed runs of {job}, one message:\n{log}");
    assert!(!log.contains("T0KEN"), "the webhook's token never reaches the log");
}

/// A scheduled backup waiting for another holder's lock does not hold up a SIGTERM: the wait is
/// cancelled with the job (before, it could wait out `lock_wait`, 10 minutes by default, and
/// systemd would kill the daemon).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_backup_waits_for_the_lock_exits_at_once() {
    let aux = tempfile::tempdir().unwrap();
    let extra = daemon_config("schedule = { full = \"*/2 * * * * *\" }", aux.path(), "shutdown_timeout = \"0s\"", "");
    let setup = Setup::verifying(Options::restorable().extra(&extra), "amcheck = \"off\"").await;
    let hour = Duration::from_secs(3600);
    let held = lifeboat::catalog::lease::Lease::acquire(
        setup.repository().await,
        &support::archiving::layout().lock(lifeboat::backup::LOCK),
        "another backup",
        hour,
        hour,
    )
    .await
    .unwrap();

    let daemon = Daemon::start(&setup);
    daemon.wait_for("waiting for lock backup", 1, Duration::from_secs(30));
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{log}");
    assert!(took < Duration::from_secs(20), "exited {took:?} after SIGTERM:\n{log}");
    assert!(log.contains("job backup cancelled"), "{log}");
    assert!(log.contains("while waiting for the lock"), "{log}");
    held.release().await.unwrap();
}
