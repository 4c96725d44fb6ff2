//! Fault trials (issue 17, items 2 and 3): lifeboat's promises (DESIGN.md G1–G8) measured under
//! processes killed at random moments and under storage that fails, on a real cluster, through
//! the built binary.
//!
//! - Crash trials: `backup` (both methods), `dump`, `verify` and `restore` are started and their
//!   whole process group is killed with SIGKILL at a random moment of their usual duration (what
//!   the OOM killer or `systemctl kill` does). After each kill, `list` may show only backups and
//!   dumps whose every object reads back intact (`verify --integrity-only`), and the next run of
//!   the same operation must succeed. `wal-push` runs as PostgreSQL's `archive_command` under a
//!   write load while running `wal-push` processes are killed: every segment it acknowledged must
//!   read back identical with `wal-fetch`, and `wal check` must find the archive whole.
//! - Storage-fault trials: the same operations through a store that fails 10% of requests in
//!   each way of `src/storage/faulty.rs` (retryable, permanent, cut mid-body, answer lost after
//!   success): each run succeeds or fails with a clear error (exit status 1, a message, no
//!   panic); afterwards, without faults, every listed backup and dump reads back intact, the
//!   newest backup restores and starts with exactly the rows it held, and every acknowledged
//!   segment reads back identical.
//!
//! Each trial prints one row (trial, runs, faults or kills injected, runs that succeeded, runs
//! that failed cleanly, problems) and fails if it found a problem, naming the seed.
//!
//! - `LIFEBOAT_TRIALS=quick` (the default: the suite, a few minutes) or `full` (`scripts/trials
//!   --full`: about ten times the runs).
//! - `LIFEBOAT_TRIALS_SEED=<n>` fixes the draws (the seed is printed; a failure names it).
//!   Without it the suite uses a fixed seed and `scripts/trials` (which sets `LIFEBOAT_TRIALS`)
//!   one from the clock.
//! - `LIFEBOAT_TRIALS_REPORT=<file>`: the rows are also appended there, for `scripts/trials`.
//!
//! Built only with the `fault-injection` feature (Cargo.toml's `[[test]]` entry).

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat::storage::faulty::Draws;
use support::archiving::{LIFEBOAT, Options, Setup, archive_current_segment, execute, scalar};
use support::faulty_proxy::{FaultyProxy, ProxyFault};
use support::output::{assert_success, describe};
use support::restored::{Restored, free_port};
use support::s3::{S3Server, S3ServerKind};

/// How many runs each trial makes.
#[derive(Debug, Clone, Copy)]
struct Size {
    kills: u32,
    fault_runs: u32,
    wal_segments: u32,
}

fn size() -> Size {
    match std::env::var("LIFEBOAT_TRIALS").as_deref() {
        Ok("full") => Size { kills: 40, fault_runs: 10, wal_segments: 120 },
        Ok("quick") | Err(_) => Size { kills: 4, fault_runs: 1, wal_segments: 12 },
        Ok(other) => panic!("LIFEBOAT_TRIALS must be quick or full, not {other:?}"),
    }
}

/// The seed of the suite's runs, so that CI draws the same kill moments and fault plans each time
/// (the processes' timing still varies); `scripts/trials` draws a new seed per run.
const SUITE_SEED: u64 = 17;

/// The draws of one trial: from the run's seed mixed with the trial's name, and that seed.
fn draws_for_trial(trial: &str) -> (Draws, u64) {
    let seed = match (std::env::var("LIFEBOAT_TRIALS_SEED"), std::env::var("LIFEBOAT_TRIALS")) {
        (Ok(text), _) => text.parse().unwrap_or_else(|_| panic!("LIFEBOAT_TRIALS_SEED must be a number, not {text:?}")),
        // scripts/trials (which sets the size) draws anew each run; the suite draws the same.
        (Err(_), Ok(_)) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
        (Err(_), Err(_)) => SUITE_SEED,
    };
    let mixed = trial.bytes().fold(seed, |acc, byte| acc.rotate_left(5) ^ u64::from(byte));
    (Draws(mixed), seed)
}

/// The counts of one trial, and what went wrong.
struct Tally {
    trial: String,
    seed: u64,
    runs: u32,
    injected: u32,
    succeeded: u32,
    failed_cleanly: u32,
    problems: Vec<String>,
}

impl Tally {
    fn new(trial: &str, seed: u64) -> Tally {
        println!("trial {trial}: seed {seed} (LIFEBOAT_TRIALS_SEED={seed} draws the same)");
        Tally { trial: trial.to_owned(), seed, runs: 0, injected: 0, succeeded: 0, failed_cleanly: 0, problems: vec![] }
    }

    /// Counts a run that was not killed: it succeeded, or it failed with a clear error.
    fn outcome(&mut self, what: &str, output: &Output) {
        self.runs += 1;
        match clean_failure(output) {
            None => self.succeeded += 1,
            Some(Ok(())) => self.failed_cleanly += 1,
            Some(Err(why)) => self.problem(format!("{what}: {why}\n{}", describe(output))),
        }
    }

    fn problem(&mut self, problem: String) {
        println!("trial {}: PROBLEM: {problem}", self.trial);
        self.problems.push(problem);
    }

    /// Prints the row, appends it to the report file, and fails on any problem.
    fn finish(self) {
        let row = format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.trial,
            self.runs,
            self.injected,
            self.succeeded,
            self.failed_cleanly,
            self.problems.len()
        );
        println!("{row}");
        if let Ok(path) = std::env::var("LIFEBOAT_TRIALS_REPORT") {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            writeln!(file, "{row}").unwrap();
        }
        assert!(
            self.problems.is_empty(),
            "trial {} (seed {}, LIFEBOAT_TRIALS_SEED={} replays it) found {} problem(s):\n{}",
            self.trial,
            self.seed,
            self.seed,
            self.problems.len(),
            self.problems.join("\n---\n")
        );
    }
}

/// `None` for a success; `Some(Ok)` for a clean failure (exit status 1 with an `error:` message
/// and no panic); `Some(Err(why))` for anything else.
fn clean_failure(output: &Output) -> Option<Result<(), String>> {
    if output.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Some(if let Some(signal) = output.status.signal() {
        Err(format!("died of signal {signal}"))
    } else if stderr.contains("panicked") {
        Err("panicked".into())
    } else if output.status.code() != Some(1) {
        Err(format!("exit status {:?}, not 1", output.status.code()))
    } else if !stderr.contains("error") {
        Err("failed without an error message".into())
    } else {
        Ok(())
    })
}

/// A cluster with data worth backing up, a verify scratch directory, and one backup and dump.
async fn trial_setup() -> Setup {
    trial_setup_with(Options::restorable()).await
}

/// [`trial_setup`] on top of `options` (an S3 repository, say).
async fn trial_setup_with(options: Options) -> Setup {
    let setup = Setup::verifying(options, "").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE trial_rows (id int PRIMARY KEY, payload text NOT NULL)").await;
    // About 40 MiB that compresses like text: backups take long enough to be killed in the middle.
    execute(&mut conn, "INSERT INTO trial_rows SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 200000) AS g")
        .await;
    archive_current_segment(&mut conn).await;
    assert_success(&setup.run(&["backup"]));
    assert_success(&setup.run(&["dump"]));
    setup
}

/// `setup`'s command for `args` in its own process group, with `LIFEBOAT_FAULTS` when given.
fn command(setup: &Setup, args: &[&str], faults: Option<&str>) -> Command {
    let mut command = setup.command(args);
    command.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(faults) = faults {
        command.env("LIFEBOAT_FAULTS", faults);
    }
    command
}

fn run(setup: &Setup, args: &[&str], faults: Option<&str>) -> Output {
    command(setup, args, faults).output().unwrap()
}

/// Runs `args` and kills its process group with SIGKILL after `after`; the output when it
/// finished first.
fn run_and_kill(setup: &Setup, args: &[&str], after: Duration) -> Option<Output> {
    let child = command(setup, args, None).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let group = child.id() as i32;
    let mut child = child;
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Output { status, stdout: vec![], stderr: vec![] });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill takes a process group id and a signal number and touches no memory.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    child.wait().unwrap();
    None
}

fn timed(setup: &Setup, args: &[&str]) -> Duration {
    let began = Instant::now();
    let output = run(setup, args, None);
    assert_success(&output);
    began.elapsed()
}

/// The ids of the backups and dumps `list` shows, and its problems, or why it could not list.
fn listed(setup: &Setup) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let output = run(setup, &["list", "--json"], None);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return Err(format!("list printed no JSON\n{}", describe(&output)));
    };
    let ids =
        json["backups"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap().to_owned()).collect();
    let problems = json["problems"]
        .as_array()
        .map(|problems| problems.iter().map(|problem| problem.to_string()).collect())
        .unwrap_or_default();
    Ok((ids, problems))
}

/// Checks what `list` shows: no problem, and every backup or dump not in `proven` reads back
/// intact (then it joins `proven`).
fn check_listing(setup: &Setup, proven: &mut BTreeSet<String>, tally: &mut Tally, after: &str) {
    match listed(setup) {
        Err(why) => tally.problem(format!("after {after}: {why}")),
        Ok((ids, problems)) => {
            if !problems.is_empty() {
                tally.problem(format!("after {after}: list reports problems: {problems:?}"));
            }
            for id in ids.difference(&proven.clone()) {
                let output = run(setup, &["verify", id, "--integrity-only"], None);
                if output.status.success() {
                    proven.insert(id.clone());
                } else {
                    tally.problem(format!(
                        "after {after}: {id} is listed but does not read back\n{}",
                        describe(&output)
                    ));
                }
            }
        }
    }
}

/// The data directories in the scratch directory with a running server (a `postmaster.pid`).
fn scratch_servers(setup: &Setup) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(setup.scratch_dir()) else { return vec![] };
    entries.flatten().map(|entry| entry.path()).filter(|pgdata| pgdata.join("postmaster.pid").exists()).collect()
}

/// Stops every server left running in the scratch directory.
fn stop_scratch_servers(setup: &Setup) {
    for pgdata in scratch_servers(setup) {
        drop(Restored::of(setup, pgdata, 0));
    }
}

/// Kills `args` at random moments `size.kills` times; after each, checks the listing and runs
/// the operation again to completion.
fn crash_trial(setup: &Setup, trial: &str, args: &[&str], kills: u32) {
    let (mut draws, seed) = draws_for_trial(trial);
    let mut tally = Tally::new(trial, seed);
    let mut proven = BTreeSet::new();
    check_listing(setup, &mut proven, &mut tally, "the setup");
    let usual = timed(setup, args);
    for kill in 0..kills {
        let after = usual.mul_f64(draws.unit() * 1.1);
        tally.runs += 1;
        match run_and_kill(setup, args, after) {
            Some(output) if output.status.success() => tally.succeeded += 1,
            Some(output) => tally.problem(format!("run {kill} failed before the kill: {:?}", output.status)),
            None => tally.injected += 1,
        }
        check_listing(setup, &mut proven, &mut tally, &format!("kill {kill} at {after:?}"));
        let again = run(setup, args, None);
        tally.outcome(&format!("the run after kill {kill}"), &again);
        if !again.status.success() {
            tally.problem(format!("the run after kill {kill} failed"));
        }
        check_listing(setup, &mut proven, &mut tally, &format!("the run after kill {kill}"));
        let left = scratch_servers(setup);
        if !left.is_empty() {
            tally.problem(format!("after the run that followed kill {kill}, servers still run in {left:?}"));
            stop_scratch_servers(setup);
        }
    }
    tally.finish();
}

/// The newest listed backup restores, starts, and holds exactly the rows of `trial_rows`.
async fn newest_backup_restores(setup: &Setup, name: &str) {
    let pgdata = setup.restore_dir(name);
    let port = free_port(setup);
    let output = setup.restore(&pgdata, &["--archive-mode", "off", "--start", "--port", &port.to_string()]);
    let restored = Restored::of(setup, pgdata, port);
    assert_success(&output);
    let mut conn = restored.connect().await;
    assert_eq!(scalar(&mut conn, "SELECT count(*)::text FROM trial_rows").await, "200000");
    assert_eq!(scalar(&mut conn, "SELECT sum(id)::text FROM trial_rows").await, "20000100000");
}

#[tokio::test]
async fn crash_trials_of_backup_dump_verify_and_restore() {
    let size = size();
    let setup = trial_setup().await;
    crash_trial(&setup, "crash: backup (native)", &["backup"], size.kills);
    crash_trial(&setup, "crash: backup (basebackup)", &["backup", "--method", "basebackup"], size.kills.div_ceil(2));
    crash_trial(&setup, "crash: dump", &["dump"], size.kills.div_ceil(2));
    crash_trial(&setup, "crash: verify", &["verify", "--latest"], size.kills.div_ceil(2));

    // A killed restore is resumed with --delta, as its error advises.
    let (mut draws, seed) = draws_for_trial("crash: restore");
    let mut tally = Tally::new("crash: restore", seed);
    let pgdata = setup.restore_dir("killed-restore");
    let pgdata_text = pgdata.display().to_string();
    let usual = timed(&setup, &["restore", "--pgdata", &pgdata_text]);
    for kill in 0..size.kills.div_ceil(2) {
        std::fs::remove_dir_all(&pgdata).unwrap();
        let after = usual.mul_f64(draws.unit() * 1.1);
        tally.runs += 1;
        match run_and_kill(&setup, &["restore", "--pgdata", &pgdata_text], after) {
            Some(output) if output.status.success() => tally.succeeded += 1,
            Some(output) => tally.problem(format!("run {kill} failed before the kill: {:?}", output.status)),
            None => {
                tally.injected += 1;
                // pg_control gets its name last (G3): a killed restore must not look startable.
                if pgdata.join("global/pg_control").exists() {
                    tally.problem(format!("kill {kill} at {after:?} left a directory with global/pg_control"));
                }
            }
        }
        let again = run(&setup, &["restore", "--pgdata", &pgdata_text, "--delta"], None);
        tally.outcome(&format!("the --delta run after kill {kill}"), &again);
        if !again.status.success() {
            tally.problem(format!("the --delta run after kill {kill} failed"));
        }
    }
    tally.finish();
    newest_backup_restores(&setup, "after-crash-trials").await;
}

/// The running `wal-push` processes of the configuration at `config`.
fn wal_push_processes(config: &Path) -> Vec<i32> {
    let config = config.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let arguments: Vec<_> = cmdline.split(|&byte| byte == 0).map(String::from_utf8_lossy).collect();
        if arguments.iter().any(|argument| argument == "wal-push")
            && arguments.iter().any(|argument| *argument == config)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Archives through `wal-push` (with `faults`, if any) and copies each segment `wal-push`
/// acknowledged into `acked`.
async fn archive_into(setup: &Setup, acked: &Path, faults: Option<&str>) {
    let faults = faults.map(|faults| format!("LIFEBOAT_FAULTS={faults} ")).unwrap_or_default();
    let command = format!(
        "{faults}{LIFEBOAT} --config {} wal-push %p && cp %p {}/%f",
        setup.config_path().display(),
        acked.display()
    );
    let mut conn = setup.connect().await;
    execute(&mut conn, &format!("ALTER SYSTEM SET archive_command = '{}'", command.replace('\'', "''"))).await;
    execute(&mut conn, "SELECT pg_reload_conf()").await;
}

/// Writes `segments` segments of WAL, each switched to the archiver.
async fn write_segments(setup: &Setup, segments: u32) {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE IF NOT EXISTS trial_load (n int, payload text)").await;
    for n in 0..segments {
        execute(
            &mut conn,
            &format!("INSERT INTO trial_load SELECT {n}, repeat(md5(g::text), 4) FROM generate_series(1, 40000) AS g"),
        )
        .await;
        scalar(&mut conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    }
}

/// Waits until the archiver has archived everything written so far: the segment being written
/// is switched out and waited for (it retries failed segments; after three failed attempts it
/// sleeps for up to a minute, and a reload wakes it). Waiting for the segment of the current
/// position instead would wait for a segment that is still being written whenever the server
/// wrote a record after the last switch (a standby snapshot every 15 s), until the deadline.
async fn wait_for_archiver(setup: &Setup) {
    let mut conn = setup.connect().await;
    scalar(&mut conn, "SELECT txid_current()::text").await;
    let segment = scalar(&mut conn, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let archived = scalar(&mut conn, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived.as_str() >= segment.as_str() || Instant::now() > deadline {
            break;
        }
        execute(&mut conn, "SELECT pg_reload_conf()").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every segment in `acked` reads back identical through `wal-fetch`; the segments checked.
fn acknowledged_segments_read_back(setup: &Setup, acked: &Path, tally: &mut Tally) -> usize {
    let fetched = setup.dir.path().join("fetched");
    let mut checked = 0;
    for entry in std::fs::read_dir(acked).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let output = run(setup, &["wal-fetch", &name, &fetched.display().to_string()], None);
        if !output.status.success() {
            tally.problem(format!("acknowledged segment {name} cannot be fetched\n{}", describe(&output)));
        } else if std::fs::read(&fetched).unwrap() != std::fs::read(entry.path()).unwrap() {
            tally.problem(format!("acknowledged segment {name} reads back different"));
        }
        let _ = std::fs::remove_file(&fetched);
        checked += 1;
    }
    checked
}

fn wal_check_passes(setup: &Setup, tally: &mut Tally) {
    let output = run(setup, &["wal", "check"], None);
    if !output.status.success() {
        tally.problem(format!("wal check failed\n{}", describe(&output)));
    }
}

/// A directory for acknowledged segments, writable by the server's OS user.
fn acked_dir(setup: &Setup, name: &str) -> PathBuf {
    let acked = setup.dir.path().join(name);
    std::fs::create_dir(&acked).unwrap();
    setup.cluster.give_to_server_user(&acked).unwrap();
    acked
}

#[tokio::test]
async fn crash_trial_of_wal_push_under_a_write_load() {
    let size = size();
    let setup = trial_setup().await;
    let (mut draws, seed) = draws_for_trial("crash: wal-push under load");
    let mut tally = Tally::new("crash: wal-push under load", seed);
    let acked = acked_dir(&setup, "acked");
    archive_into(&setup, &acked, None).await;

    let load = write_segments(&setup, size.wal_segments);
    tokio::pin!(load);
    loop {
        let pause = Duration::from_millis(20 + draws.below(200) as u64);
        tokio::select! {
            () = &mut load => break,
            () = tokio::time::sleep(pause) => {
                let running = wal_push_processes(&setup.config_path());
                if !running.is_empty() {
                    let pid = running[draws.below(running.len())];
                    // SAFETY: kill takes a process id and a signal number and touches no memory.
                    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                        tally.injected += 1;
                    }
                }
            }
        }
    }
    wait_for_archiver(&setup).await;
    let checked = acknowledged_segments_read_back(&setup, &acked, &mut tally);
    tally.runs = checked as u32;
    tally.succeeded = checked as u32;
    wal_check_passes(&setup, &mut tally);
    if checked < size.wal_segments as usize {
        tally.problem(format!("only {checked} of at least {} segments were acknowledged", size.wal_segments));
    }
    tally.finish();
}

/// The fault plans of the storage-fault trials: 10% of requests failing in each way.
const FAULT_KINDS: [&str; 4] = ["retryable", "permanent", "cut", "lost"];

#[tokio::test]
async fn storage_fault_trials() {
    let size = size();
    let setup = trial_setup().await;
    for kind in FAULT_KINDS {
        let trial = format!("storage faults: 10% {kind}");
        let (mut draws, seed) = draws_for_trial(&trial);
        let mut tally = Tally::new(&trial, seed);
        let report = setup.dir.path().join(format!("faults-{kind}.log"));
        let faults = |draws: &mut Draws| format!("seed={},{kind}=0.1,report={}", draws.next_u64(), report.display());
        let acked = acked_dir(&setup, &format!("acked-{kind}"));
        std::fs::File::create(&report).unwrap();
        setup.cluster.give_to_server_user(&report).unwrap();
        let plan = faults(&mut draws);
        archive_into(&setup, &acked, Some(&plan)).await;
        write_segments(&setup, size.wal_segments / 4).await;

        let fetched = setup.dir.path().join("fetched-under-faults").display().to_string();
        for run_number in 0..size.fault_runs {
            for args in [
                vec!["backup"],
                vec!["dump"],
                vec!["verify", "--latest", "--integrity-only"],
                vec!["wal-fetch", "000000010000000000000001", &fetched],
            ] {
                let output = run(&setup, &args, Some(&faults(&mut draws)));
                tally.outcome(&format!("{args:?} (run {run_number})"), &output);
            }
            let pgdata = setup.restore_dir(&format!("faulty-restore-{kind}-{run_number}"));
            let output =
                run(&setup, &["restore", "--pgdata", &pgdata.display().to_string()], Some(&faults(&mut draws)));
            tally.outcome(&format!("restore (run {run_number})"), &output);
            let _ = std::fs::remove_dir_all(&pgdata);
        }
        archive_into(&setup, &acked, None).await;
        wait_for_archiver(&setup).await;
        tally.injected = std::fs::read_to_string(&report).unwrap().lines().count() as u32;
        let mut proven = BTreeSet::new();
        check_listing(&setup, &mut proven, &mut tally, &trial);
        let checked = acknowledged_segments_read_back(&setup, &acked, &mut tally);
        tally.runs += checked as u32;
        tally.succeeded += checked as u32;
        wal_check_passes(&setup, &mut tally);
        tally.finish();
    }
    newest_backup_restores(&setup, "after-storage-faults").await;
}

/// The share of exchanges the S3 proxy trials break, in each way.
const PROXY_FAULT_RATE: f64 = 0.1;

/// How many times PostgreSQL's archiver has failed so far (a `wal-push` that exited non-zero).
async fn failed_archive_attempts(setup: &Setup) -> u64 {
    let mut conn = setup.connect().await;
    scalar(&mut conn, "SELECT failed_count::text FROM pg_stat_archiver").await.parse().unwrap()
}

/// The storage-fault trials for S3 on the wire: the same operations, and `wal-push` as
/// `archive_command`, against a real S3-compatible server through the loopback fault proxy
/// (tests/support/faulty_proxy.rs), which breaks 10% of the exchanges in one way at a time:
/// 500 InternalError, 503 SlowDown, responses cut short, responses held back. The SDK retries
/// 5xx and throttling (`max_attempts = 5`) and slowness stays within every timeout, so under
/// those three every run must succeed; under cuts a run may also fail cleanly. Afterwards,
/// without faults, the listing, the acknowledged segments and the WAL archive are checked as in
/// [`storage_fault_trials`].
#[tokio::test]
async fn s3_fault_trials() {
    let size = size();
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let (mut draws, _) = draws_for_trial("S3 proxy");
    let proxy = FaultyProxy::start_with(&server.endpoint(), ProxyFault::CutMidBody, 0.0, draws.next_u64());
    let setup = trial_setup_with(Options::restorable().s3_through(&proxy.endpoint(), &bucket)).await;
    for fault in ProxyFault::ALL {
        let trial = format!("S3 proxy: 10% {}", fault.name());
        let (_, seed) = draws_for_trial(&trial);
        let mut tally = Tally::new(&trial, seed);
        let must_succeed = fault != ProxyFault::CutMidBody;
        let injected_before = proxy.stats().injected(fault);
        let archive_failures_before = failed_archive_attempts(&setup).await;
        let acked = acked_dir(&setup, &format!("acked-s3-{}", fault.name()));
        archive_into(&setup, &acked, None).await;
        proxy.set_fault(fault, PROXY_FAULT_RATE);
        write_segments(&setup, size.wal_segments / 4).await;

        let fetched = setup.dir.path().join("fetched-under-faults").display().to_string();
        for run_number in 0..size.fault_runs {
            let pgdata = setup.restore_dir(&format!("s3-restore-{}-{run_number}", fault.name()));
            let pgdata_text = pgdata.display().to_string();
            for args in [
                vec!["backup"],
                vec!["dump"],
                vec!["verify", "--latest", "--integrity-only"],
                vec!["wal-fetch", "000000010000000000000001", &fetched],
                vec!["restore", "--pgdata", &pgdata_text],
            ] {
                let output = run(&setup, &args, None);
                tally.outcome(&format!("{args:?} (run {run_number})"), &output);
                if must_succeed && !output.status.success() {
                    tally.problem(format!("{args:?} (run {run_number}) failed under 10% {}", fault.name()));
                }
            }
            let _ = std::fs::remove_dir_all(&pgdata);
        }
        wait_for_archiver(&setup).await;
        proxy.set_fault(fault, 0.0);
        tally.injected = (proxy.stats().injected(fault) - injected_before) as u32;
        if tally.injected == 0 {
            tally.problem(format!("the proxy injected no {}, so nothing was tried", fault.name()));
        }
        let archive_failures = failed_archive_attempts(&setup).await - archive_failures_before;
        if must_succeed && archive_failures > 0 {
            tally.problem(format!("wal-push failed {archive_failures} time(s) under 10% {}", fault.name()));
        }
        let mut proven = BTreeSet::new();
        check_listing(&setup, &mut proven, &mut tally, &trial);
        let checked = acknowledged_segments_read_back(&setup, &acked, &mut tally);
        tally.runs += checked as u32;
        tally.succeeded += checked as u32;
        wal_check_passes(&setup, &mut tally);
        println!("trial {trial}: {}", proxy.stats().summary());
        tally.finish();
    }
    newest_backup_restores(&setup, "after-s3-faults").await;
}
