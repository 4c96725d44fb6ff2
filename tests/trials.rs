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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lifeboat::storage::faulty::Draws;
use lifeboat::util::process_alive;
use support::archiving::{
    LIFEBOAT, Options, Setup, archive_current_segment, archive_current_segment_within, execute, scalar,
};
use support::daemon::{Daemon, daemon_config};
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
        Ok("full") => Size { kills: 40, fault_runs: 10, wal_segments: 200 },
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

/// `args` for `repository` (`--repository NAME` for a copy, nothing for the primary).
fn in_repository<'a>(repository: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = repository.map_or_else(Vec::new, |name| vec!["--repository", name]);
    all.extend_from_slice(args);
    all
}

/// The ids of the backups and dumps `list` shows (in `repository`: a copy's name, or `None` for
/// the primary), and its problems, or why it could not list.
fn listed(setup: &Setup, repository: Option<&str>) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let output = run(setup, &in_repository(repository, &["list", "--json"]), None);
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

/// How a check of the listing treats a manifest that `list` reports as not recorded in the
/// journal: the state a writer leaves when it stops between storing a manifest and recording it
/// (killed there, or its journal append failed), whose backup is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unrecorded {
    /// A problem: no writer stopped in between, or the next lease holder should have recorded it.
    Refused,
    /// Right after a killed run: left for the next run of the operation, which holds the lease
    /// and must record it (a later [`Unrecorded::Refused`] check sees that it did).
    LeftForTheNextRun,
    /// After failed runs: `verify <id> --integrity-only`, which the problem names as the next
    /// step, must prove it and record it, and the listing must then be clean.
    ProvenByVerify,
}

/// The id of the manifest a problem of `list` (its JSON) is about, when its detail starts with
/// `detail`.
fn manifest_problem(problem: &str, detail: &str) -> Option<String> {
    let problem: serde_json::Value = serde_json::from_str(problem).ok()?;
    if !problem["detail"].as_str()?.starts_with(detail) {
        return None;
    }
    let key = problem["key"].as_str()?.strip_suffix("/manifest")?;
    Some(key.rsplit('/').next()?.to_owned())
}

/// The id of a manifest `list` reports as not recorded in the journal.
fn unrecorded_manifest(problem: &str) -> Option<String> {
    manifest_problem(problem, "is not recorded in the journal")
}

/// Checks what `list` shows: no problem, and every backup or dump not in `proven` reads back
/// intact (then it joins `proven`).
fn check_listing(setup: &Setup, proven: &mut BTreeSet<String>, tally: &mut Tally, after: &str) {
    check_listing_in(setup, None, Unrecorded::Refused, proven, tally, after);
}

/// [`check_listing`] in `repository` (a copy's name, or `None` for the primary), with a manifest
/// not recorded in the journal treated as `unrecorded` says.
fn check_listing_in(
    setup: &Setup,
    repository: Option<&str>,
    unrecorded: Unrecorded,
    proven: &mut BTreeSet<String>,
    tally: &mut Tally,
    after: &str,
) {
    let after = match repository {
        Some(name) => format!("{after}, on {name}"),
        None => after.to_owned(),
    };
    let (ids, problems) = match listed(setup, repository) {
        Err(why) => return tally.problem(format!("after {after}: {why}")),
        Ok(listing) => listing,
    };
    let (interrupted, others): (Vec<_>, Vec<_>) = match unrecorded {
        Unrecorded::Refused => (vec![], problems),
        _ => problems.into_iter().partition(|problem| unrecorded_manifest(problem).is_some()),
    };
    if !others.is_empty() {
        tally.problem(format!("after {after}: list reports problems: {others:?}"));
    }
    let interrupted: BTreeSet<String> = interrupted.iter().filter_map(|problem| unrecorded_manifest(problem)).collect();
    if unrecorded == Unrecorded::LeftForTheNextRun && !interrupted.is_empty() {
        println!("after {after}: {interrupted:?} stored but not recorded, left for the next run");
    }
    for id in ids.difference(&proven.clone()) {
        if unrecorded == Unrecorded::LeftForTheNextRun && interrupted.contains(id) {
            continue;
        }
        let output = run(setup, &in_repository(repository, &["verify", id, "--integrity-only"]), None);
        if output.status.success() {
            proven.insert(id.clone());
        } else {
            tally.problem(format!("after {after}: {id} is listed but does not read back\n{}", describe(&output)));
        }
    }
    if unrecorded == Unrecorded::ProvenByVerify && !interrupted.is_empty() {
        println!("after {after}: {interrupted:?} stored but not recorded, proven and recorded by verify");
        check_listing_in(setup, repository, Unrecorded::Refused, proven, tally, &format!("verify of {after}"));
    }
}

/// The servers running in the scratch directory's clusters (`lifeboat-pg-*/data`): each data
/// directory and its postmaster's process id.
fn scratch_servers(setup: &Setup) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(setup.scratch_dir()) else { return vec![] };
    entries
        .flatten()
        .filter_map(|entry| {
            let pgdata = entry.path().join("data");
            let pid =
                std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
            process_alive(pid).then_some((pgdata, pid))
        })
        .collect()
}

/// Stops every server left running in the scratch directory.
fn stop_scratch_servers(setup: &Setup) {
    for (pgdata, _) in scratch_servers(setup) {
        drop(Restored::of(setup, pgdata, 0));
    }
}

/// Checks, after the run that followed a kill, that no scratch server runs and that none of
/// `left_by_kill` (the servers the killed run left) survived, even with its directory gone.
fn no_scratch_server_survives(setup: &Setup, left_by_kill: &[(PathBuf, u32)], tally: &mut Tally, after: &str) {
    let running = scratch_servers(setup);
    let survivors: Vec<_> = left_by_kill.iter().filter(|(_, pid)| process_alive(*pid)).collect();
    if !running.is_empty() || !survivors.is_empty() {
        tally.problem(format!(
            "after the run that followed {after}, scratch servers still run: {running:?}, of the killed run: \
             {survivors:?}"
        ));
        stop_scratch_servers(setup);
    }
}

/// [`crash_trial_around`] with nothing around the runs.
fn crash_trial(setup: &Setup, trial: &str, args: &[&str], kills: u32) {
    crash_trial_around(setup, trial, args, kills, &Around { copy: None, prepare: &|_| {}, finished: &|_, _, _| {} });
}

/// What [`crash_trial_around`] does around each run of its operation, besides checking the listing.
struct Around<'a> {
    /// A copy whose listing is checked too.
    copy: Option<&'a str>,
    /// Before the measured run and before each killed one: work for the operation (a backup for
    /// `copy` to copy or `expire` to remove).
    prepare: &'a dyn Fn(&Setup),
    /// After the run that followed a kill: checks that it finished the job (its name for messages).
    finished: &'a dyn Fn(&Setup, &mut Tally, &str),
}

/// Kills `args` at random moments `kills` times, with work and checks `around` each run; after
/// each kill, checks the listing of the primary (and of `around.copy`), runs the operation again
/// to completion, checks that no scratch server outlived that run, and checks what it finished.
fn crash_trial_around(setup: &Setup, trial: &str, args: &[&str], kills: u32, around: &Around) {
    let (mut draws, seed) = draws_for_trial(trial);
    let mut tally = Tally::new(trial, seed);
    let (mut proven, mut proven_copy) = (BTreeSet::new(), BTreeSet::new());
    let mut check = |tally: &mut Tally, unrecorded: Unrecorded, after: &str| {
        check_listing_in(setup, None, unrecorded, &mut proven, tally, after);
        if let Some(copy) = around.copy {
            check_listing_in(setup, Some(copy), unrecorded, &mut proven_copy, tally, after);
        }
    };
    check(&mut tally, Unrecorded::Refused, "the setup");
    // A first run catches up with what the setup left (a copy of everything so far), so that
    // the measured one does the work of each later run.
    assert_success(&run(setup, args, None));
    (around.prepare)(setup);
    let usual = timed(setup, args);
    for kill in 0..kills {
        (around.prepare)(setup);
        let after = usual.mul_f64(draws.unit() * 1.1);
        tally.runs += 1;
        match run_and_kill(setup, args, after) {
            Some(output) if output.status.success() => tally.succeeded += 1,
            Some(output) => tally.problem(format!("run {kill} failed before the kill: {:?}", output.status)),
            None => tally.injected += 1,
        }
        check(&mut tally, Unrecorded::LeftForTheNextRun, &format!("kill {kill} at {after:?}"));
        let left_by_kill = scratch_servers(setup);
        let again = run(setup, args, None);
        tally.outcome(&format!("the run after kill {kill}"), &again);
        if !again.status.success() {
            tally.problem(format!("the run after kill {kill} failed"));
        }
        check(&mut tally, Unrecorded::Refused, &format!("the run after kill {kill}"));
        no_scratch_server_survives(setup, &left_by_kill, &mut tally, &format!("kill {kill}"));
        (around.finished)(setup, &mut tally, &format!("the run after kill {kill}"));
    }
    tally.finish();
}

/// `restore --pgdata <pgdata> --delta --json`, which must succeed: its summary.
fn delta_restore(setup: &Setup, pgdata: &str) -> serde_json::Value {
    let output = run(setup, &["restore", "--pgdata", pgdata, "--delta", "--json"], None);
    assert_success(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The newest listed backup restores, starts, and holds exactly the rows of `trial_rows`.
async fn newest_backup_restores(setup: &Setup, name: &str) {
    newest_backup_restores_in(setup, name, None).await;
}

/// [`newest_backup_restores`] from `repository` (a copy's name, or `None` for the primary).
async fn newest_backup_restores_in(setup: &Setup, name: &str, repository: Option<&str>) {
    let pgdata = setup.restore_dir(name);
    let port = free_port(setup);
    let port_text = port.to_string();
    let args = in_repository(repository, &["--archive-mode", "off", "--start", "--port", &port_text]);
    let output = setup.restore(&pgdata, &args);
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
    // What a --delta run rewrites in a complete directory: pg_control, which it always takes away
    // first, and the files the recovery settings go into.
    let rewritten_when_complete = delta_restore(&setup, &pgdata_text)["files"]["restored"].clone();
    for kill in 0..size.kills.div_ceil(2) {
        std::fs::remove_dir_all(&pgdata).unwrap();
        let after = usual.mul_f64(draws.unit() * 1.1);
        tally.runs += 1;
        match run_and_kill(&setup, &["restore", "--pgdata", &pgdata_text], after) {
            Some(output) if output.status.success() => tally.succeeded += 1,
            Some(output) => tally.problem(format!("run {kill} failed before the kill: {:?}", output.status)),
            None => tally.injected += 1,
        }
        // pg_control gets its name last (G3): a directory that has it must be complete, which
        // the --delta run that follows finds (no file to write), and one killed before must not.
        let startable = pgdata.join("global/pg_control").exists();
        let again = run(&setup, &["restore", "--pgdata", &pgdata_text, "--delta", "--json"], None);
        tally.outcome(&format!("the --delta run after kill {kill}"), &again);
        if !again.status.success() {
            tally.problem(format!("the --delta run after kill {kill} failed"));
        } else if startable {
            let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
            if summary["files"]["restored"] != rewritten_when_complete {
                tally.problem(format!(
                    "kill {kill} at {after:?} left global/pg_control in an incomplete directory: the --delta run \
                     wrote {} file(s), {rewritten_when_complete} in a complete one",
                    summary["files"]["restored"]
                ));
            }
        }
    }
    tally.finish();
    newest_backup_restores(&setup, "after-crash-trials").await;
}

/// Found by the crash and storage-fault trials of `copy`: a run that stopped between storing a
/// manifest and recording it in the journal (killed there, or its journal append failed) left a
/// complete backup that `list` named as not recorded until someone ran `verify`. The next holder
/// of the cluster's lease now records it (`catalog::leftovers`), and the failed run says what it
/// left and who records it.
#[tokio::test]
async fn trial_defect_a_manifest_stored_but_not_recorded_is_recorded_by_the_next_lease_holder() {
    let setup = trial_setup().await;
    let copy_dir = setup.dir.path().join("copy");
    with_retention_and_a_copy(&setup, &copy_dir);
    assert_success(&run(&setup, &["copy"], None));
    let journal_puts_fail = "permanent=1,only_keys=/journal/,only_operation=put";
    let unrecorded_on = |repository: Option<&str>| -> Vec<String> {
        let (ids, problems) = listed(&setup, repository).unwrap();
        let unrecorded: Vec<String> = problems.iter().filter_map(|problem| unrecorded_manifest(problem)).collect();
        assert_eq!(unrecorded.len(), problems.len(), "only the unrecorded manifest is a problem: {problems:?}");
        assert!(unrecorded.iter().all(|id| ids.contains(id)), "{unrecorded:?} must be listed: {ids:?}");
        unrecorded
    };

    let failed = run(&setup, &["backup"], Some(journal_puts_fail));
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let unrecorded = unrecorded_on(None);
    assert_eq!(unrecorded.len(), 1);
    let id = &unrecorded[0];
    assert!(
        stderr
            .contains(&format!("backup {id} is complete and stored, but recording it in the cluster's journal failed"))
            && stderr.contains("the next backup, dump, expire or delete records it"),
        "{stderr}"
    );
    let failed = run(&setup, &["copy"], Some(journal_puts_fail));
    assert!(!failed.status.success(), "the copy cannot record what it copied");
    assert_eq!(&unrecorded_on(Some(COPY)), &unrecorded, "the copy stored the manifest and could not record it");

    // The next lease holders record it, without a verification.
    assert_success(&run(&setup, &["dump"], None));
    assert_eq!(unrecorded_on(None), Vec::<String>::new());
    assert_success(&run(&setup, &["copy"], None));
    assert_eq!(unrecorded_on(Some(COPY)), Vec::<String>::new());
    let (ids, _) = listed(&setup, Some(COPY)).unwrap();
    assert!(ids.contains(id), "{ids:?}");
}

/// A verification killed while its scratch server ran left that server running: `pg_ctl start`
/// puts the postmaster in a session of its own, out of the killed process group, and nothing
/// stopped it. The next verification now stops and removes it (`postgres::abandoned`).
#[tokio::test]
async fn trial_defect_a_killed_verifications_scratch_server_is_stopped_by_the_next_one() {
    let setup = trial_setup().await;
    let child = command(&setup, &["verify", "--latest"], None).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let mut child = child.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let left = loop {
        let running = scratch_servers(&setup);
        if !running.is_empty() {
            break running;
        }
        assert!(child.try_wait().unwrap().is_none(), "the verification ended before its scratch server was seen");
        assert!(Instant::now() < deadline, "no scratch server started within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill takes a process group id and a signal number and touches no memory.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    assert!(left.iter().all(|(_, pid)| process_alive(*pid)), "the killed verification's server stopped by itself");

    let output = run(&setup, &["verify", "--latest"], None);
    assert_success(&output);
    for (pgdata, pid) in &left {
        assert!(!process_alive(*pid), "the killed verification's server {pid} still runs");
        assert!(!pgdata.parent().unwrap().exists(), "{} was not removed", pgdata.display());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("removed the scratch directory") && stderr.contains("did not end normally"),
        "the next verification does not say what it cleaned up:\n{stderr}"
    );
    assert!(scratch_servers(&setup).is_empty());
}

/// The running `wal-push` processes of the configuration at `config`.
fn wal_push_processes(config: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| is_wal_push_of(pid, config))
        .collect()
}

/// Whether process `pid` is a `wal-push` of the configuration at `config`.
fn is_wal_push_of(pid: i32, config: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let arguments: Vec<_> = cmdline.split(|&byte| byte == 0).map(String::from_utf8_lossy).collect();
    arguments.iter().any(|argument| argument == "wal-push")
        && arguments.iter().any(|argument| Path::new(argument.as_ref()) == config)
}

/// Kills `wal-push` processes of the configuration at `config` at random moments of their lives
/// until `stop`: every new one is killed with a chance of one in two, after a delay of up to
/// 60 ms drawn from `draws` (a push lives tens of milliseconds), if it still runs then. Returns
/// how many it killed.
fn kill_wal_pushes(config: &Path, mut draws: Draws, stop: &AtomicBool) -> u32 {
    let mut seen = BTreeSet::new();
    let mut doomed: Vec<(i32, Instant)> = Vec::new();
    let mut kills = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for pid in wal_push_processes(config) {
            if seen.insert(pid) && draws.below(2) == 0 {
                doomed.push((pid, now + Duration::from_millis(draws.below(60) as u64)));
            }
        }
        doomed.retain(|&(pid, at)| {
            if at > now {
                return true;
            }
            // SAFETY: kill takes a process id and a signal number and touches no memory. The
            // process may have ended (and its id been reused only by another process PostgreSQL
            // started, which the trial's checks tolerate: everything is retried).
            if is_wal_push_of(pid, config) && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                kills += 1;
            }
            false
        });
        std::thread::sleep(Duration::from_millis(3));
    }
    kills
}

/// Archives through `wal-push` (with `faults`, if any) and copies each segment `wal-push`
/// acknowledged into `acked`.
async fn archive_into(setup: &Setup, acked: &Path, faults: Option<&str>) {
    let faults = faults.map(|faults| format!("LIFEBOAT_FAULTS={faults} ")).unwrap_or_default();
    // A killed wal-push exits 137, which PostgreSQL takes for the archiver's own crash: it restarts
    // the archiver only 10 s later. `|| exit 1` turns it into a failure it retries within a second,
    // so a trial of many kills spends its time killing, not waiting.
    let command = format!(
        "{faults}{LIFEBOAT} --config {} wal-push %p || exit 1; cp %p {}/%f",
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

/// Waits until the archiver has archived everything written so far, nudging it after failures.
async fn wait_for_archiver(setup: &Setup) {
    archive_current_segment_within(&mut setup.connect().await, Duration::from_secs(300)).await;
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
    let (draws, seed) = draws_for_trial("crash: wal-push under load");
    let mut tally = Tally::new("crash: wal-push under load", seed);
    let acked = acked_dir(&setup, "acked");
    archive_into(&setup, &acked, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let killer = std::thread::spawn({
        let (config, stop) = (setup.config_path(), stop.clone());
        move || kill_wal_pushes(&config, draws, &stop)
    });
    write_segments(&setup, size.wal_segments).await;
    wait_for_archiver(&setup).await;
    stop.store(true, Ordering::Relaxed);
    tally.injected = killer.join().unwrap();
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
        check_listing_in(&setup, None, Unrecorded::ProvenByVerify, &mut proven, &mut tally, &trial);
        let checked = acknowledged_segments_read_back(&setup, &acked, &mut tally);
        tally.runs += checked as u32;
        tally.succeeded += checked as u32;
        wal_check_passes(&setup, &mut tally);
        tally.finish();
    }
    newest_backup_restores(&setup, "after-storage-faults").await;
}

/// How long the soak runs: `LIFEBOAT_SOAK_SECONDS`, else a minute at the quick size and an hour
/// at the full one.
fn soak_duration() -> Duration {
    match std::env::var("LIFEBOAT_SOAK_SECONDS") {
        Ok(text) => Duration::from_secs(
            text.parse().unwrap_or_else(|_| panic!("LIFEBOAT_SOAK_SECONDS must be a number, not {text:?}")),
        ),
        Err(_) if std::env::var("LIFEBOAT_TRIALS").as_deref() == Ok("full") => Duration::from_secs(3600),
        Err(_) => Duration::from_secs(60),
    }
}

/// The daemon's schedules for a soak of `duration`: `[backup]` keys and `[wal] check_schedule`.
/// A short soak backs up every 30 s (a full at :00, an incremental at :15, :30 and :45 of each
/// minute); a soak of ten minutes or more takes a full every ten minutes and an incremental five
/// minutes after it, and checks the WAL archive every minute.
fn soak_schedules(duration: Duration) -> (String, String) {
    let (full, incremental, wal_check) = if duration < Duration::from_secs(600) {
        ("0 * * * * *", "15,30,45 * * * * *", "*/20 * * * * *")
    } else {
        ("0 */10 * * * *", "0 5-59/10 * * * *", "30 * * * * *")
    };
    (
        format!("schedule = {{ full = \"{full}\", incremental = \"{incremental}\" }}\nretention = {{ full = 2 }}"),
        format!("[wal]\ncheck_schedule = \"{wal_check}\"\n"),
    )
}

/// The most archive lag a soak accepts, in segments waiting for the archiver (`.ready` files):
/// with the daemon's push-ahead a segment is stored within a second of being filled, so a backlog
/// this long means archiving fell minutes behind the load.
const SOAK_LAG_BOUND: usize = 8;

/// The soak's steady load, in pgbench transactions a second: about a WAL segment every ten seconds,
/// and room left on two cores for the daemon's backups and verifications.
const SOAK_TPS: u32 = 500;

/// One look at the soak: the archiver's backlog and the daemon's resident memory.
struct SoakSample {
    ready: usize,
    daemon_rss_kib: u64,
}

fn ready_segments(setup: &Setup) -> usize {
    std::fs::read_dir(setup.cluster.data_dir().join("pg_wal/archive_status"))
        .map(|entries| {
            entries.flatten().filter(|entry| entry.file_name().to_string_lossy().ends_with(".ready")).count()
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The highest daemon RSS among `samples`, in KiB.
fn peak_rss(samples: &[SoakSample]) -> u64 {
    samples.iter().map(|sample| sample.daemon_rss_kib).max().unwrap_or(0)
}

/// The soak (issue 17, item 8): a steady pgbench write load for `LIFEBOAT_SOAK_SECONDS` while
/// PostgreSQL archives through `wal-push` (handed to the daemon) and the daemon takes full and
/// incremental backups on schedule, verifies each by restoring it, expires by retention and
/// checks the WAL archive. The archiver's backlog stays under [`SOAK_LAG_BOUND`], no job fails,
/// no segment is missing, `list` is clean, the daemon's memory stays flat (checked from ten
/// minutes of soak on: the peak of the last quarter within 25% + 8 MiB of the second quarter's),
/// and the newest backup restored to the end of the archive holds exactly the load's rows.
#[tokio::test(flavor = "multi_thread")]
async fn soak_under_a_pgbench_load_with_the_daemon() {
    let duration = soak_duration();
    let (backup, wal) = soak_schedules(duration);
    let aux = tempfile::tempdir().unwrap();
    // The daemon's socket must be reachable by wal-push, which PostgreSQL runs as its own user.
    std::fs::set_permissions(aux.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = daemon_config(&backup, aux.path(), &format!("listen = \"{address}\""), &wal);
    let setup = Setup::verifying(support::archiving::Options::restorable().extra(&extra), "after_backup = true").await;
    let mut tally = Tally::new("soak", draws_for_trial("soak").1);

    let pgbench = support::archiving::binaries().require("pgbench").unwrap();
    let connection = |command: &mut Command| {
        command
            .arg("-h")
            .arg(setup.cluster.socket_dir())
            .arg("-p")
            .arg(setup.cluster.port().to_string())
            .args(["-U", "postgres", "postgres"]);
    };
    let mut init = Command::new(&pgbench);
    init.args(["-i", "-s", "5", "-q"]);
    connection(&mut init);
    assert_success(&init.output().unwrap());
    assert_success(&setup.run(&["backup"]));

    let daemon = Daemon::start(&setup);
    let started = Instant::now();
    let mut load = Command::new(&pgbench);
    load.args(["-n", "-c", "2", "-j", "1", "-R", &SOAK_TPS.to_string(), "-T", &duration.as_secs().to_string()]);
    connection(&mut load);
    let load = load.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        samples.push(SoakSample { ready: ready_segments(&setup), daemon_rss_kib: rss_kib(daemon.pid()) });
        std::thread::sleep(Duration::from_secs(2));
    }
    let load = load.wait_with_output().unwrap();
    assert_success(&load);

    let mut conn = setup.connect().await;
    let expected = scalar(&mut conn, "SELECT count(*) || ' ' || coalesce(sum(delta), 0) FROM pgbench_history").await;
    let archived = scalar(&mut conn, "SELECT archived_count::text FROM pg_stat_archiver").await;
    wait_for_archiver(&setup).await;
    let jobs = |result: &str| {
        ["backup", "incremental", "verify", "expire", "wal-check"]
            .iter()
            .map(|job| daemon.count(&format!("job {job} {result}")))
            .sum::<usize>()
    };
    let (succeeded, failed) = (jobs("succeeded"), jobs("failed"));
    let (code, metrics) = support::http::get(address, "/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    let handed_over = support::http::parse_exposition(&metrics)
        .value("lifeboat_wal_segments_pushed_total", &[("already_archived", "false")])
        .unwrap_or(0.0);
    let log = daemon.stop();
    if handed_over == 0.0 {
        tally.problem("no segment was handed over to the daemon: wal-push stored every one itself".into());
    }
    if failed > 0 {
        tally.problem(format!("{failed} job run(s) failed:\n{log}"));
    }
    tally.runs = (succeeded + failed) as u32;
    tally.succeeded = succeeded as u32;
    if daemon_count(&log, "job verify succeeded") == 0 {
        tally.problem(format!("no verification ran during the soak:\n{log}"));
    }
    wal_check_passes(&setup, &mut tally);
    let mut proven = BTreeSet::new();
    check_listing(&setup, &mut proven, &mut tally, "the soak");

    let max_ready = samples.iter().map(|sample| sample.ready).max().unwrap_or(0);
    if max_ready > SOAK_LAG_BOUND {
        tally.problem(format!("the archiver fell {max_ready} segments behind (bound {SOAK_LAG_BOUND})"));
    }
    let quarter = samples.len() / 4;
    let (second, last) = (peak_rss(&samples[quarter..2 * quarter]), peak_rss(&samples[3 * quarter..]));
    if duration >= Duration::from_secs(600) && last > second + second / 4 + 8 * 1024 {
        tally.problem(format!(
            "the daemon's memory grew: peak {second} KiB in the second quarter, {last} KiB in the last"
        ));
    }

    let pgdata = setup.restore_dir("after-soak");
    let port = free_port(&setup);
    let output = setup.restore(&pgdata, &["--archive-mode", "off", "--start", "--port", &port.to_string()]);
    let restored = Restored::of(&setup, pgdata, port);
    assert_success(&output);
    let mut restored_conn = restored.connect().await;
    let came_back =
        scalar(&mut restored_conn, "SELECT count(*) || ' ' || coalesce(sum(delta), 0) FROM pgbench_history").await;
    if came_back != expected {
        tally.problem(format!("the restore brought back {came_back} (rows, sum) of pgbench_history, not {expected}"));
    }

    let transactions = String::from_utf8_lossy(&load.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("number of transactions actually processed: ").map(str::to_owned))
        .unwrap_or_default();
    let soak = format!(
        "soak: {} s of pgbench at {SOAK_TPS} tps ({transactions} transactions), {archived} segments archived ({handed_over} \
         stored by the daemon), \
         archive lag at most {max_ready} segment(s) (bound {SOAK_LAG_BOUND}), {} job runs ({} backups, {} \
         verifications, {} expiries, {} WAL checks), {failed} failed; daemon RSS {} MiB at the start, peak {} MiB \
         in the second quarter and {} MiB in the last; the newest backup restored to the end holds the load's {} \
         (rows, sum)",
        duration.as_secs(),
        succeeded + failed,
        daemon_count(&log, "job backup succeeded") + daemon_count(&log, "job incremental succeeded"),
        daemon_count(&log, "job verify succeeded"),
        daemon_count(&log, "job expire succeeded"),
        daemon_count(&log, "job wal-check succeeded"),
        samples.first().map_or(0, |sample| sample.daemon_rss_kib) / 1024,
        second / 1024,
        last / 1024,
        came_back,
    );
    // scripts/trials prints this line under its table.
    println!("{soak}");
    tally.finish();
}

fn daemon_count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// A configuration change: `[backup] retention = { full = 1, dumps = 1 }` and a local copy named
/// [`COPY`] in `dir`, initialised.
fn with_retention_and_a_copy(setup: &Setup, dir: &Path) {
    let path = setup.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[backup]\n", "[backup]\nretention = { full = 1, dumps = 1 }\n", 1);
    std::fs::write(&path, format!("{text}\n[[copies]]\nname = \"{COPY}\"\nurl = \"file://{}\"\n", dir.display()))
        .unwrap();
    assert_success(&run(setup, &["init", "--copy", COPY], None));
}

/// The copy the trials of `copy` and `expire` write to.
const COPY: &str = "nearby";

/// The names of the directories under `backups/` and `dumps/` of the local repository in `root`.
fn stored_ids(root: &Path) -> BTreeSet<String> {
    ["backups", "dumps"]
        .iter()
        .flat_map(|kind| std::fs::read_dir(root.join("clusters/main").join(kind)).into_iter().flatten().flatten())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// After an `expire` that followed a kill: each repository (the primary, then the copy in
/// `copy_dir`) lists what `{ full = 1, dumps = 1 }` keeps, one full backup and one dump, and stores
/// nothing else under `backups/` and `dumps/` (the leftovers of the killed run are gone); the
/// primary's WAL archive is whole.
fn expire_finished(setup: &Setup, copy_dir: &Path, tally: &mut Tally, after: &str) {
    for (repository, root) in [(None, setup.repo_dir()), (Some(COPY), copy_dir.to_path_buf())] {
        let Ok((ids, _)) = listed(setup, repository) else { continue };
        if ids.len() != 2 {
            tally.problem(format!("after {after}, {repository:?} lists {ids:?}, not one full backup and one dump"));
        }
        let stored = stored_ids(&root);
        if stored != ids {
            tally.problem(format!("after {after}, {repository:?} stores {stored:?} but lists {ids:?}"));
        }
    }
    wal_check_passes(setup, tally);
}

/// The ids under `backups/` and `dumps/` of the local repository in `root` that hold a manifest.
fn stored_manifests(root: &Path) -> BTreeSet<String> {
    let cluster = root.join("clusters/main");
    stored_ids(root)
        .into_iter()
        .filter(|id| ["backups", "dumps"].iter().any(|kind| cluster.join(kind).join(id).join("manifest").exists()))
        .collect()
}

/// After a `copy` that followed a kill: the copy lists every backup and dump the primary lists
/// (and may keep more, under its own expiry) and stores no other manifest under `backups/` and
/// `dumps/`; its WAL archive is whole. What an interrupted expiry of the copy left of a backup it
/// deleted may stay, for the next expiry to finish (docs/format.md section 9; [`expire_finished`]
/// checks that it does): a directory without a manifest, or a manifest `list` names as deleted.
fn copy_finished(setup: &Setup, copy_dir: &Path, tally: &mut Tally, after: &str) {
    let (Ok((primary, _)), Ok((copied, problems))) = (listed(setup, None), listed(setup, Some(COPY))) else {
        return;
    };
    if !primary.is_subset(&copied) {
        tally.problem(format!("after {after}, the copy lists {copied:?}, without all of the primary's {primary:?}"));
    }
    let deletions: BTreeSet<String> =
        problems.iter().filter_map(|problem| manifest_problem(problem, "lifeboat deleted ")).collect();
    let stored: BTreeSet<String> = stored_manifests(copy_dir).difference(&deletions).cloned().collect();
    if stored != copied {
        tally.problem(format!("after {after}, the copy stores the manifests of {stored:?} but lists {copied:?}"));
    }
    let output = run(setup, &["--repository", COPY, "wal", "check"], None);
    if !output.status.success() {
        tally.problem(format!("after {after}, wal check on the copy failed\n{}", describe(&output)));
    }
}

/// `backup`, which gives `copy` something to copy and `expire` something to remove.
fn take_a_backup(setup: &Setup) {
    assert_success(&run(setup, &["backup"], None));
}

#[tokio::test]
async fn crash_trials_of_copy_and_expire() {
    let size = size();
    let setup = trial_setup().await;
    let copy_dir = setup.dir.path().join("copy");
    with_retention_and_a_copy(&setup, &copy_dir);
    let copy_finished = |setup: &Setup, tally: &mut Tally, after: &str| copy_finished(setup, &copy_dir, tally, after);
    let around = Around { copy: Some(COPY), prepare: &take_a_backup, finished: &copy_finished };
    crash_trial_around(&setup, "crash: copy", &["copy"], size.kills.div_ceil(2), &around);
    // Expire removes from the primary, then from the copy, which holds every backup taken so far.
    let expire_finished =
        |setup: &Setup, tally: &mut Tally, after: &str| expire_finished(setup, &copy_dir, tally, after);
    let around = Around { copy: Some(COPY), prepare: &take_a_backup, finished: &expire_finished };
    crash_trial_around(&setup, "crash: expire", &["expire"], size.kills.div_ceil(2), &around);
    newest_backup_restores(&setup, "after-crash-trials").await;
    newest_backup_restores_in(&setup, "from-the-copy", Some(COPY)).await;
}

#[tokio::test]
async fn storage_fault_trials_of_copy_and_expire() {
    let size = size();
    let setup = trial_setup().await;
    let copy_dir = setup.dir.path().join("copy");
    with_retention_and_a_copy(&setup, &copy_dir);
    for kind in FAULT_KINDS {
        let trial = format!("storage faults: copy, expire, 10% {kind}");
        let (mut draws, seed) = draws_for_trial(&trial);
        let mut tally = Tally::new(&trial, seed);
        let report = setup.dir.path().join(format!("faults-{kind}.log"));
        std::fs::File::create(&report).unwrap();
        for run_number in 0..size.fault_runs {
            take_a_backup(&setup);
            for args in [["copy"], ["expire"]] {
                let faults = format!("seed={},{kind}=0.1,report={}", draws.next_u64(), report.display());
                let output = run(&setup, &args, Some(&faults));
                tally.outcome(&format!("{args:?} (run {run_number})"), &output);
            }
        }
        tally.injected = std::fs::read_to_string(&report).unwrap().lines().count() as u32;
        let (mut proven, mut proven_copy) = (BTreeSet::new(), BTreeSet::new());
        check_listing_in(&setup, None, Unrecorded::ProvenByVerify, &mut proven, &mut tally, &trial);
        check_listing_in(&setup, Some(COPY), Unrecorded::ProvenByVerify, &mut proven_copy, &mut tally, &trial);
        // Without faults, the next runs finish what the faulty ones left.
        for (args, finished) in [
            (["copy"], copy_finished as fn(&Setup, &Path, &mut Tally, &str)),
            (["expire"], expire_finished as fn(&Setup, &Path, &mut Tally, &str)),
        ] {
            let output = run(&setup, &args, None);
            if !output.status.success() {
                tally.problem(format!("{args:?} without faults after {trial} failed\n{}", describe(&output)));
            }
            finished(&setup, &copy_dir, &mut tally, &format!("{args:?} without faults"));
        }
        let after = format!("copy and expire without faults after {trial}");
        check_listing_in(&setup, None, Unrecorded::Refused, &mut proven, &mut tally, &after);
        check_listing_in(&setup, Some(COPY), Unrecorded::Refused, &mut proven_copy, &mut tally, &after);
        tally.finish();
    }
    newest_backup_restores(&setup, "after-storage-faults").await;
    newest_backup_restores_in(&setup, "from-the-copy", Some(COPY)).await;
}

/// The daemon of the daemon's crash trial: a full backup every 5 s, each verified right after it
/// and followed by expiry (`{ full = 2 }`), so that a kill lands in a backup, a verification with
/// its scratch server, an expiry, or between them.
async fn daemon_trial_setup(aux: &Path) -> Setup {
    let extra = support::daemon::daemon_config(
        "schedule = { full = \"*/5 * * * * *\" }\nretention = { full = 2 }",
        aux,
        "",
        "",
    );
    let setup = Setup::verifying(
        support::archiving::Options::restorable().extra(&extra),
        "after_backup = true\namcheck = \"off\"",
    )
    .await;
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE trial_rows (id int PRIMARY KEY, payload text NOT NULL)").await;
    execute(&mut conn, "INSERT INTO trial_rows SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 200000) AS g")
        .await;
    archive_current_segment(&mut conn).await;
    setup
}

/// Waits up to `limit` until `daemon` logged `needle`; whether it did.
fn daemon_logged(daemon: &support::daemon::Daemon, needle: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while daemon.count(needle) == 0 {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The daemon killed with SIGKILL (as the OOM killer does it) at a random moment of its first
/// 15 s, `size.kills / 2` times. After each kill `list` is clean and every listed backup reads
/// back; the restarted daemon takes its next backup and verifies it without waiting for the dead
/// one's lease, and once it verified no scratch server is left running; at the end the newest
/// backup restores.
#[tokio::test(flavor = "multi_thread")]
async fn crash_trial_of_the_daemon() {
    let size = size();
    let aux = tempfile::tempdir().unwrap();
    let setup = daemon_trial_setup(aux.path()).await;
    let (mut draws, seed) = draws_for_trial("crash: daemon");
    let mut tally = Tally::new("crash: daemon", seed);
    let mut proven = BTreeSet::new();
    for kill in 0..size.kills.div_ceil(2) {
        let daemon = support::daemon::Daemon::start(&setup);
        let after = Duration::from_secs(15).mul_f64(draws.unit());
        std::thread::sleep(after);
        daemon.signal(libc::SIGKILL);
        let log = daemon.log();
        drop(daemon);
        tally.runs += 1;
        tally.injected += 1;
        let jobs = log.lines().filter(|line| line.contains(" started")).count();
        println!("trial crash: daemon: kill {kill} at {after:?}, after {jobs} job(s) started");
        check_listing_in(
            &setup,
            None,
            Unrecorded::LeftForTheNextRun,
            &mut proven,
            &mut tally,
            &format!("kill {kill} at {after:?}"),
        );

        let daemon = support::daemon::Daemon::start(&setup);
        tally.runs += 1;
        if daemon_logged(&daemon, "job backup succeeded", Duration::from_secs(90))
            && daemon_logged(&daemon, "job verify succeeded", Duration::from_secs(90))
        {
            tally.succeeded += 1;
        } else {
            tally.problem(format!(
                "after kill {kill}, the restarted daemon did not back up and verify:\n{}",
                daemon.log()
            ));
        }
        let log = daemon.stop();
        if log.contains("waiting for the lock") {
            tally.problem(format!("after kill {kill}, the restarted daemon waited for a lease:\n{log}"));
        }
        if log.lines().any(|line| line.contains("job ") && line.contains(" failed")) {
            tally.problem(format!("after kill {kill}, a job of the restarted daemon failed:\n{log}"));
        }
        check_listing(&setup, &mut proven, &mut tally, &format!("the daemon after kill {kill}"));
        let left = scratch_servers(&setup);
        if !left.is_empty() {
            tally
                .problem(format!("after the daemon that followed kill {kill} verified, servers still run in {left:?}"));
            stop_scratch_servers(&setup);
        }
    }
    tally.finish();
    newest_backup_restores_in(&setup, "after-daemon-kills", None).await;
}

/// The migrations of the `migrate up` trials, each with a query that counts what it creates (1 if
/// it landed, 0 if not): a table filled with 300,000 rows, a pause, an index built on that table,
/// and a column added with a pause after it. Each runs in one transaction with its history row.
const TRIAL_MIGRATIONS: [(&str, &str, &str); 4] = [
    (
        "1_ledger.sql",
        "CREATE TABLE m1_ledger (id int PRIMARY KEY, note text NOT NULL);\n\
         INSERT INTO m1_ledger SELECT g, md5(g::text) FROM generate_series(1, 300000) AS g;\n",
        "SELECT count(*)::text FROM pg_class WHERE relname = 'm1_ledger'",
    ),
    (
        "2_pause.sql",
        "SELECT pg_sleep(1);\nCREATE TABLE m2_pause (id int PRIMARY KEY);\n",
        "SELECT count(*)::text FROM pg_class WHERE relname = 'm2_pause'",
    ),
    (
        "3_index.sql",
        "CREATE INDEX m3_note ON m1_ledger (note);\n",
        "SELECT count(*)::text FROM pg_class WHERE relname = 'm3_note'",
    ),
    (
        "4_flag.sql",
        "ALTER TABLE m1_ledger ADD COLUMN m4_flag boolean;\nSELECT pg_sleep(1);\n",
        "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'm1_ledger' AND column_name = 'm4_flag'",
    ),
];

/// A production `[migrate]` environment on database `app` whose gate a fresh verified backup
/// satisfies: a backup taken and verified by restore here, good for an hour.
async fn migrate_trial_setup() -> Setup {
    let setup = Setup::start_verifying("amcheck = \"off\"").await;
    let migrations = setup.dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    for (name, text, _) in TRIAL_MIGRATIONS {
        std::fs::write(migrations.join(name), text).unwrap();
    }
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let table = format!(
        "[migrate]\ndir = \"{}\"\ndatabase = \"app\"\nenvironment = \"production\"\n\
         require_verified_backup_within = \"1h\"\narchive_timeout = \"60s\"\nlock_wait = \"120s\"\n",
        migrations.display()
    );
    std::fs::write(setup.config_path(), format!("{config}\n{table}")).unwrap();
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE DATABASE app").await;
    assert_success(&run(&setup, &["backup"], None));
    assert_success(&run(&setup, &["verify", "--latest"], None));
    setup
}

/// Drops and creates database `app`: every migration is pending again. A backend a killed runner
/// left is ended with it.
async fn fresh_app_database(setup: &Setup) {
    let mut conn = setup.connect().await;
    execute(&mut conn, "DROP DATABASE IF EXISTS app WITH (FORCE)").await;
    execute(&mut conn, "CREATE DATABASE app").await;
}

/// Waits until no session but ours is connected to `app`: a killed runner's backend ends when it
/// next writes to its closed connection, rolling back its transaction.
async fn app_sessions_ended(conn: &mut sqlx::PgConnection) {
    let until = Instant::now() + Duration::from_secs(60);
    while scalar(conn, "SELECT count(*)::text FROM pg_stat_activity WHERE datname = 'app' AND pid <> pg_backend_pid()")
        .await
        != "0"
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Compares the history (`migrate status --json`) with the schema: each migration is applied or
/// pending, and what it creates exists exactly when the history says it was applied. The number
/// of migrations applied.
async fn history_matches_the_schema(setup: &Setup, tally: &mut Tally, after: &str) -> usize {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap();
    app_sessions_ended(&mut conn).await;
    let output = run(setup, &["migrate", "status", "--json"], None);
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        tally.problem(format!("after {after}: migrate status printed no JSON\n{}", describe(&output)));
        return 0;
    };
    let mut applied = 0;
    for (entry, (name, _, landed)) in status["migrations"].as_array().unwrap().iter().zip(TRIAL_MIGRATIONS) {
        let state = entry["state"].as_str().unwrap_or_default();
        if state != "applied" && state != "pending" {
            tally.problem(format!("after {after}: the history says {name} is {state}\n{status:#}"));
        }
        let exists = scalar(&mut conn, landed).await == "1";
        if exists != (state == "applied") {
            tally.problem(format!(
                "after {after}: the history says {name} is {state}, but what it creates exists: {exists}"
            ));
        }
        applied += usize::from(state == "applied");
    }
    applied
}

/// `migrate up` (production, through the gate) on a fresh database killed at random moments of its
/// usual duration; after each kill the history says exactly which migrations landed (the schema
/// holds what each applied one creates and nothing of the others), and the next `up` applies the
/// rest. Then the same through a store that fails 10% of requests in each way: the gate reads the
/// repository's catalog, and each run succeeds or fails cleanly, with a history that matches the
/// schema, and the next `up` without faults applies the rest.
#[tokio::test]
async fn crash_and_storage_fault_trials_of_migrate_up() {
    let size = size();
    let setup = migrate_trial_setup().await;
    let up = ["migrate", "up", "--approve"];
    let (mut draws, seed) = draws_for_trial("crash: migrate up");
    let mut tally = Tally::new("crash: migrate up", seed);
    let usual = timed(&setup, &up);
    for kill in 0..size.kills {
        fresh_app_database(&setup).await;
        let after = usual.mul_f64(draws.unit() * 1.1);
        tally.runs += 1;
        match run_and_kill(&setup, &up, after) {
            Some(output) if output.status.success() => tally.succeeded += 1,
            Some(output) => tally.problem(format!("run {kill} failed before the kill: {:?}", output.status)),
            None => tally.injected += 1,
        }
        let landed = history_matches_the_schema(&setup, &mut tally, &format!("kill {kill} at {after:?}")).await;
        println!("trial crash: migrate up: kill {kill} at {after:?}: {landed} of {} landed", TRIAL_MIGRATIONS.len());
        let again = run(&setup, &up, None);
        tally.outcome(&format!("the run after kill {kill}"), &again);
        if !again.status.success() {
            tally.problem(format!("the run after kill {kill} failed"));
        }
        let landed = history_matches_the_schema(&setup, &mut tally, &format!("the run after kill {kill}")).await;
        if landed != TRIAL_MIGRATIONS.len() {
            tally.problem(format!("the run after kill {kill} left {landed} of {} applied", TRIAL_MIGRATIONS.len()));
        }
    }
    tally.finish();

    for kind in FAULT_KINDS {
        let trial = format!("storage faults: migrate up, 10% {kind}");
        let (mut draws, seed) = draws_for_trial(&trial);
        let mut tally = Tally::new(&trial, seed);
        let report = setup.dir.path().join(format!("faults-{kind}.log"));
        std::fs::File::create(&report).unwrap();
        for run_number in 0..size.fault_runs {
            fresh_app_database(&setup).await;
            let faults = format!("seed={},{kind}=0.1,report={}", draws.next_u64(), report.display());
            let output = run(&setup, &up, Some(&faults));
            tally.outcome(&format!("migrate up (run {run_number})"), &output);
            history_matches_the_schema(&setup, &mut tally, &format!("run {run_number}")).await;
            let again = run(&setup, &up, None);
            if !again.status.success() {
                tally.problem(format!("migrate up without faults after run {run_number} failed\n{}", describe(&again)));
            }
            let landed = history_matches_the_schema(&setup, &mut tally, &format!("the run after {run_number}")).await;
            if landed != TRIAL_MIGRATIONS.len() {
                tally.problem(format!("migrate up without faults left {landed} of {} applied", TRIAL_MIGRATIONS.len()));
            }
        }
        tally.injected = std::fs::read_to_string(&report).unwrap().lines().count() as u32;
        // Its integrity checks must not shut the gate of the next kind's runs (docs/trials.md).
        check_listing_in(&setup, None, Unrecorded::ProvenByVerify, &mut BTreeSet::new(), &mut tally, &trial);
        tally.finish();
    }
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
    // What read back intact once is not read again after the next kind of fault.
    let mut proven = BTreeSet::new();
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
        check_listing_in(&setup, None, Unrecorded::ProvenByVerify, &mut proven, &mut tally, &trial);
        let checked = acknowledged_segments_read_back(&setup, &acked, &mut tally);
        tally.runs += checked as u32;
        tally.succeeded += checked as u32;
        wal_check_passes(&setup, &mut tally);
        println!("trial {trial}: {}", proxy.stats().summary());
        tally.finish();
    }
    newest_backup_restores(&setup, "after-s3-faults").await;
}
