//! `restore --start`: start PostgreSQL on the restored directory, follow recovery in the server's
//! log until it reaches the target, and report where it stopped.
//!
//! The server is started with `pg_ctl` as the directory's owner, logging to a file lifeboat reads
//! (`<pgdata>/lifeboat-restore.log`, with the logging collector off and messages in English for
//! this run), so the outcome is known without connecting: no password or `pg_hba.conf` entry is
//! needed, which matters at 3 a.m. The server keeps running afterwards; restarting it under the
//! service manager later restores the usual logging.
//!
//! Promotion. Asked to promote at the target, `restore --start` writes `recovery_target_action =
//! pause` and has the server promote where it pauses, with `pg_ctl promote` (see [`server_goal`]).
//! The outcome is the same promoted server on a new timeline, sooner: PostgreSQL ends a recovery it
//! was asked to promote with an end-of-recovery record and lets the checkpoint run in the
//! background, as on any promoted standby, while `recovery_target_action = promote` makes it write
//! and fsync every buffer replay dirtied before it accepts writes (about a second after 700 MB of
//! WAL on the benchmark machine). Both are crash-safe: the replayed WAL stays in `pg_wal` until the
//! next checkpoint. Pausing needs `hot_standby`, so the server is started with it on for this run.
//!
//! The promotion is requested as soon as replay has started, not once the server has paused: a
//! paused server (PostgreSQL 14 and later) looks for a promotion request only once a second, so a
//! request made after the pause costs up to a second of idle waiting. Archive recovery outside
//! standby mode acts on the request only where it pauses, which is at the target; a request that
//! could not be made early is made at the pause.
//!
//! The log sits at the top of the data directory because that is the only place every data
//! directory has: `log` may be PostgreSQL's log directory, the file `pg_ctl -l "$PGDATA/log"`
//! writes, or absent. It is created, never truncated: a name already taken (a log restored with
//! the backup, a file of the operator's) is left alone and the next free
//! `lifeboat-restore.<n>.log` is used.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::RestoreError;
use super::files::Owner;
use super::target::{RecoveryGoal, RecoveryTarget, TargetAction};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::process::{PgCommand, read_tail};
use crate::wal::ahead::ReadAhead;

/// How often the log is read: each look reads only what the server appended since the last, so
/// looking often is cheap, and the pause at the target and the promotion are seen within this.
const POLL: Duration = Duration::from_millis(20);
/// How often progress is reported while recovery runs.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The server's log during `restore --start`, in the data directory (see the module comment).
const LOG_STEM: &str = "lifeboat-restore";
/// How many numbered names are tried before giving up on finding a free one.
const LOG_NAMES: u32 = 1000;

/// Whether `relative` (a path in the data directory) is a server log `restore --start` writes:
/// `lifeboat-restore.log` or `lifeboat-restore.<n>.log` at the top.
pub fn is_restore_log(relative: &str) -> bool {
    let Some(rest) = relative.strip_prefix(LOG_STEM).and_then(|rest| rest.strip_suffix(".log")) else {
        return false;
    };
    rest.is_empty()
        || rest.strip_prefix('.').is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates the log file in `pgdata` under the first free name, owned by `owner` (the server writes
/// to it) and readable by it alone: a server log can quote data.
fn create_log_file(pgdata: &Path, owner: Option<Owner>) -> Result<PathBuf, RestoreError> {
    let mut last = pgdata.join(format!("{LOG_STEM}.log"));
    for number in 0..LOG_NAMES {
        let name = if number == 0 { format!("{LOG_STEM}.log") } else { format!("{LOG_STEM}.{number}.log") };
        let path = pgdata.join(name);
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(_) => {
                if let Some(owner) = owner {
                    std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid)).map_err(|source| {
                        RestoreError::Write { path: path.clone(), action: "give to the server's user", source }
                    })?;
                }
                return Ok(path);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last = path,
            Err(source) => return Err(RestoreError::Write { path, action: "create the server's log", source }),
        }
    }
    Err(RestoreError::Write {
        path: last,
        action: "create the server's log",
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{LOG_NAMES} earlier {LOG_STEM} logs are in the way; remove the old ones"),
        ),
    })
}

/// The goal written into the restored directory: `goal`, except that with `--start` (`start`) a
/// promotion at a target is written as a pause, which [`start_and_wait`] turns into a promotion
/// (see the module comment). Recovery to the end of the WAL has no target action to change.
pub fn server_goal(goal: &RecoveryGoal, start: bool) -> RecoveryGoal {
    let mut written = goal.clone();
    if start && goal.action == TargetAction::Promote && !matches!(goal.target, RecoveryTarget::Latest) {
        written.action = TargetAction::Pause;
    }
    written
}

/// How recovery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Recovery ended and the server accepts writes.
    Promoted,
    /// The server is paused at the target, read-only.
    Paused,
    /// The server shut down at the target (`--target-action shutdown`).
    Shutdown,
}

/// What the server's log said about the point reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reached {
    pub outcome: Outcome,
    /// "recovery stopping before commit of transaction 745, time 2026-11-27 06:01:02.123+00".
    pub stopped: Option<String>,
    /// "redo done at 0/5000110".
    pub redo_done: Option<String>,
    /// The commit time of the last transaction replayed.
    pub last_transaction: Option<String>,
    /// The new timeline after promotion.
    pub new_timeline: Option<u32>,
    /// WAL files fetched from the archive.
    pub segments_restored: u64,
    pub seconds: f64,
    pub log_file: PathBuf,
}

/// Starts the server and waits until recovery has reached its target (or failed), telling
/// `read_ahead` which segment recovery restored last.
pub async fn start_and_wait(
    binaries: &PgBinaries,
    pgdata: &Path,
    owner: Option<Owner>,
    port: Option<u16>,
    action: TargetAction,
    runs_to_end: bool,
    read_ahead: Option<&ReadAhead>,
) -> Result<Reached, RestoreError> {
    let began = Instant::now();
    let pg_ctl = binaries.require("pg_ctl").map_err(|error| RestoreError::Start { detail: error.to_string() })?;
    let log_file = create_log_file(pgdata, owner)?;

    // hot_standby: pausing at the target needs it (without it PostgreSQL shuts down instead).
    let mut server_options = String::from("-c logging_collector=off -c lc_messages=C -c hot_standby=on");
    if let Some(port) = port {
        server_options.push_str(&format!(" -p {port}"));
    }
    let mut command = PgCommand::local(&pg_ctl);
    command
        .args(["start", "--no-wait", "--silent", "--pgdata"])
        .arg(pgdata)
        .arg("--log")
        .arg(&log_file)
        .arg("-o")
        .arg(&server_options)
        .current_dir(pgdata);
    let output = run_pg_ctl(command, &pg_ctl, owner).await?;
    if !output.status.success() {
        return Err(RestoreError::Start {
            detail: format!(
                "pg_ctl start failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                log_tail(&log_file)
            ),
        });
    }

    let mut last_report = Instant::now();
    let mut seen_pid = false;
    let promote_at_target = action == TargetAction::Promote && !runs_to_end;
    let mut promotion = Promotion::NotRequested;
    let mut log = LogFollower::default();
    loop {
        tokio::time::sleep(POLL).await;
        let facts = log.read_new(&log_file);
        if let (Some(read_ahead), Some(segment)) = (read_ahead, &facts.last_segment) {
            read_ahead.restored(segment);
        }
        let running = super::target_dir::running_server(pgdata).is_some();
        // A FATAL line may be a client turned away while recovery runs ("the database system is
        // starting up"); recovery has failed only when the server is gone too.
        if let Some(cause) = facts.cause()
            && !running
        {
            return Err(RestoreError::Recovery { line: cause, log_file: log_file.clone(), tail: log_tail(&log_file) });
        }
        seen_pid |= running;
        // server_goal wrote a pause for this promotion: ask for it early, or at the pause.
        if promote_at_target {
            promotion = match promotion.next(facts) {
                Promotion::RequestEarly => match promote(&pg_ctl, pgdata, owner).await {
                    Ok(()) => Promotion::Requested,
                    Err(detail) => {
                        tracing::debug!("the promotion will be requested at the pause: {detail}");
                        Promotion::EarlyFailed
                    }
                },
                Promotion::RequestAtPause => {
                    promote(&pg_ctl, pgdata, owner).await.map_err(|detail| RestoreError::Start {
                        detail: format!(
                            "the server reached the recovery target and paused, but {detail}. It is still paused; \
                             promote it with `pg_ctl promote -D {}`{}",
                            pgdata.display(),
                            log_tail(&log_file)
                        ),
                    })?;
                    Promotion::Requested
                }
                unchanged => unchanged,
            };
        }
        let outcome = if facts.ready_read_write {
            Some(Outcome::Promoted)
        } else if facts.paused && action == TargetAction::Pause && !runs_to_end {
            Some(Outcome::Paused)
        } else if facts.shut_down_at_target && !running {
            Some(Outcome::Shutdown)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            return Ok(Reached {
                outcome,
                stopped: facts.stopped.clone(),
                redo_done: facts.redo_done.clone(),
                last_transaction: facts.last_transaction.clone(),
                new_timeline: facts.new_timeline,
                segments_restored: facts.segments_restored,
                seconds: began.elapsed().as_secs_f64(),
                log_file,
            });
        }
        if seen_pid && !running {
            return Err(RestoreError::Recovery {
                line: "the server stopped before reaching the recovery target".into(),
                log_file: log_file.clone(),
                tail: log_tail(&log_file),
            });
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            tracing::info!(
                "recovering: {} WAL segments restored so far{}",
                facts.segments_restored,
                facts.last_segment.as_deref().map(|name| format!(", the last {name}")).unwrap_or_default()
            );
        }
    }
}

/// Where the promotion of a server written to pause at its target stands (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promotion {
    NotRequested,
    /// Replay has started: request it now.
    RequestEarly,
    /// The early request failed; wait for the pause.
    EarlyFailed,
    /// The server paused before any request was made: request it now, or fail.
    RequestAtPause,
    Requested,
}

impl Promotion {
    /// What to do now that the log says `facts`.
    fn next(self, facts: &LogFacts) -> Promotion {
        match self {
            Promotion::NotRequested | Promotion::EarlyFailed if facts.paused => Promotion::RequestAtPause,
            Promotion::NotRequested if facts.redo_started => Promotion::RequestEarly,
            other => other,
        }
    }
}

/// `pg_ctl promote` on the server in recovery; returns once the request is made (the log tells
/// when the server accepts writes), or what `pg_ctl` said when it refused.
async fn promote(pg_ctl: &Path, pgdata: &Path, owner: Option<Owner>) -> Result<(), String> {
    let mut command = PgCommand::local(pg_ctl);
    command.args(["promote", "--no-wait", "--silent", "--pgdata"]).arg(pgdata).current_dir(pgdata);
    let output = run_pg_ctl(command, pg_ctl, owner).await.map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "pg_ctl promote failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `command` (`pg_ctl` at `pg_ctl`) as the owner of the restored directory, if any.
async fn run_pg_ctl(
    mut command: PgCommand,
    pg_ctl: &Path,
    owner: Option<Owner>,
) -> Result<std::process::Output, RestoreError> {
    if let Some(owner) = owner {
        command.run_as_ids(owner.uid, owner.gid);
    }
    command
        .output()
        .await
        .map_err(|error| RestoreError::Start { detail: format!("cannot run {}: {error}", pg_ctl.display()) })
}

/// What lifeboat looks for in the server's log (messages in English, `lc_messages=C`).
#[derive(Debug, Default, PartialEq, Eq)]
struct LogFacts {
    /// Every FATAL message and (prefixed `PANIC: `) PANIC message, in order.
    fatal: Vec<String>,
    stopped: Option<String>,
    redo_done: Option<String>,
    last_transaction: Option<String>,
    new_timeline: Option<u32>,
    segments_restored: u64,
    last_segment: Option<String>,
    ready_read_write: bool,
    /// Replay has started ("redo starts at"): the server is in archive recovery.
    redo_started: bool,
    paused: bool,
    shut_down_at_target: bool,
}

impl LogFacts {
    /// Takes in one line of the log.
    fn note(&mut self, line: &str) {
        let message = |marker: &str| line.find(marker).map(|at| line[at + marker.len()..].trim().to_owned());
        if let Some(rest) = message("PANIC:") {
            self.fatal.push(format!("PANIC: {rest}"));
        } else if let Some(rest) = message("FATAL:") {
            self.fatal.push(rest);
        } else if let Some(rest) = message("LOG:") {
            if rest.starts_with("recovery stopping") {
                self.stopped = Some(rest);
            } else if rest.starts_with("redo done at") {
                self.redo_done = Some(rest.split(" system usage").next().unwrap_or(&rest).to_owned());
            } else if let Some(time) = rest.strip_prefix("last completed transaction was at log time ") {
                self.last_transaction = Some(time.to_owned());
            } else if let Some(id) = rest.strip_prefix("selected new timeline ID: ") {
                self.new_timeline = id.trim().parse().ok();
            } else if let Some(file) = rest.strip_prefix("restored log file \"") {
                self.segments_restored += 1;
                self.last_segment = file.split('"').next().map(str::to_owned);
            } else if rest.starts_with("redo starts at") {
                self.redo_started = true;
            } else if rest == "database system is ready to accept connections" {
                self.ready_read_write = true;
            } else if rest.starts_with("pausing at the end of recovery") || rest == "recovery has paused" {
                self.paused = true;
            } else if rest.starts_with("shutdown at recovery target") {
                self.shut_down_at_target = true;
            }
        }
    }

    /// What stopped the server: its first PANIC, else its first FATAL that is not a client being
    /// turned away ("the database system is starting up", "... is shutting down"), else any FATAL.
    fn cause(&self) -> Option<String> {
        let about_clients = |line: &&String| line.starts_with("the database system is ");
        self.fatal
            .iter()
            .find(|line| line.starts_with("PANIC: "))
            .or_else(|| self.fatal.iter().find(|line| !about_clients(line)))
            .or_else(|| self.fatal.first())
            .cloned()
    }
}

/// Reads the server's log as it grows: each call takes in the lines completed since the last.
#[derive(Debug, Default)]
struct LogFollower {
    /// Bytes of the log read so far.
    offset: u64,
    /// The start of a line the server has not finished writing.
    partial: Vec<u8>,
    facts: LogFacts,
}

impl LogFollower {
    /// The facts of every complete line up to now. A log that cannot be read (yet) adds nothing.
    fn read_new(&mut self, path: &Path) -> &LogFacts {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut appended = Vec::new();
        if let Ok(mut file) = fs::File::open(path)
            && file.seek(SeekFrom::Start(self.offset)).is_ok()
            && let Ok(read) = file.read_to_end(&mut appended)
        {
            self.offset += read as u64;
        }
        self.take_in(&appended);
        &self.facts
    }

    fn take_in(&mut self, appended: &[u8]) {
        self.partial.extend_from_slice(appended);
        let Some(end) = self.partial.iter().rposition(|&byte| byte == b'\n') else { return };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&complete).lines().for_each(|line| self.facts.note(line));
    }
}

fn log_tail(log_file: &Path) -> String {
    let tail = read_tail(log_file, 20).unwrap_or_default();
    if tail.is_empty() { String::new() } else { format!("\nlast lines of {}:\n{tail}", log_file.display()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::target::TimelineChoice;

    #[test]
    fn with_start_a_promotion_at_a_target_is_written_as_a_pause() {
        let goal = |target, action| RecoveryGoal { target, timeline: TimelineChoice::Latest, action, exclusive: false };
        let promote = goal(RecoveryTarget::Immediate, TargetAction::Promote);
        assert_eq!(server_goal(&promote, true).action, TargetAction::Pause);
        assert_eq!(server_goal(&promote, false), promote, "without --start nobody would promote it");
        let latest = goal(RecoveryTarget::Latest, TargetAction::Promote);
        assert_eq!(server_goal(&latest, true), latest);
        let shutdown = goal(RecoveryTarget::Immediate, TargetAction::Shutdown);
        assert_eq!(server_goal(&shutdown, true), shutdown);
    }

    #[test]
    fn the_promotion_is_requested_once_replay_starts_or_else_at_the_pause() {
        let starting = LogFacts::default();
        let replaying = facts_of("x [10] LOG:  redo starts at 0/4F000028\n");
        let paused = facts_of("x [10] LOG:  redo starts at 0/4F000028\nx [10] LOG:  pausing at the end of recovery\n");
        assert_eq!(Promotion::NotRequested.next(&starting), Promotion::NotRequested);
        assert_eq!(Promotion::NotRequested.next(&replaying), Promotion::RequestEarly);
        assert_eq!(Promotion::NotRequested.next(&paused), Promotion::RequestAtPause, "no early request was made");
        assert_eq!(Promotion::EarlyFailed.next(&replaying), Promotion::EarlyFailed, "a failed request waits");
        assert_eq!(Promotion::EarlyFailed.next(&paused), Promotion::RequestAtPause);
        assert_eq!(Promotion::Requested.next(&paused), Promotion::Requested, "one request is enough");
    }

    fn facts_of(log: &str) -> LogFacts {
        let mut facts = LogFacts::default();
        log.lines().for_each(|line| facts.note(line));
        facts
    }

    #[test]
    fn the_log_tells_where_recovery_stopped() {
        let log = "\
2026-11-27 06:00:00.000 UTC [10] LOG:  starting point-in-time recovery to 2026-11-27 05:59:58+00
2026-11-27 06:00:00.100 UTC [10] LOG:  restored log file \"000000010000000000000003\" from archive
2026-11-27 06:00:00.200 UTC [10] LOG:  restored log file \"000000010000000000000004\" from archive
2026-11-27 06:00:00.300 UTC [10] LOG:  recovery stopping before commit of transaction 745, time 2026-11-27 05:59:59.5+00
2026-11-27 06:00:00.300 UTC [10] LOG:  redo done at 0/4000110 system usage: CPU: user: 0.00 s
2026-11-27 06:00:00.300 UTC [10] LOG:  last completed transaction was at log time 2026-11-27 05:59:57.25+00
2026-11-27 06:00:00.400 UTC [10] LOG:  selected new timeline ID: 2
2026-11-27 06:00:00.500 UTC [9] LOG:  database system is ready to accept connections
";
        let facts = facts_of(log);
        assert_eq!(facts.segments_restored, 2);
        assert_eq!(facts.last_segment.as_deref(), Some("000000010000000000000004"));
        assert!(facts.stopped.as_deref().unwrap().contains("before commit of transaction 745"));
        assert_eq!(facts.redo_done.as_deref(), Some("redo done at 0/4000110"));
        assert_eq!(facts.last_transaction.as_deref(), Some("2026-11-27 05:59:57.25+00"));
        assert_eq!(facts.new_timeline, Some(2));
        assert!(facts.ready_read_write && facts.cause().is_none());
        let mut follower = LogFollower::default();
        for piece in log.as_bytes().chunks(7) {
            follower.take_in(piece);
        }
        assert_eq!(follower.facts, facts, "read as it grows, in pieces that cut lines, the log says the same");
        follower.take_in(b"2026-11-27 06:00:01.000 UTC [9] LOG:  restored log file \"00000002000000000000000");
        assert_eq!(follower.facts.segments_restored, 2, "a line the server is still writing waits");
        follower.take_in(b"5\" from archive\n");
        assert_eq!(follower.facts.last_segment.as_deref(), Some("000000020000000000000005"));
        let failed = facts_of(
            "x [2] FATAL:  the database system is starting up\n\
             x [1] FATAL:  recovery ended before configured recovery target was reached\n",
        );
        assert_eq!(failed.cause().as_deref(), Some("recovery ended before configured recovery target was reached"));
    }

    #[test]
    fn the_log_never_replaces_what_the_data_directory_holds() {
        let pgdata = tempfile::tempdir().unwrap();
        // What `pg_ctl -l "$PGDATA/log"` leaves, and a log restored with the backup.
        fs::write(pgdata.path().join("log"), "the operator's log\n").unwrap();
        fs::write(pgdata.path().join("lifeboat-restore.log"), "an earlier restore\n").unwrap();
        let first = create_log_file(pgdata.path(), None).unwrap();
        assert_eq!(first, pgdata.path().join("lifeboat-restore.1.log"));
        let second = create_log_file(pgdata.path(), None).unwrap();
        assert_eq!(second, pgdata.path().join("lifeboat-restore.2.log"));
        assert_eq!(fs::read_to_string(pgdata.path().join("log")).unwrap(), "the operator's log\n");
        assert_eq!(fs::read_to_string(pgdata.path().join("lifeboat-restore.log")).unwrap(), "an earlier restore\n");
        for name in ["lifeboat-restore.log", "lifeboat-restore.1.log", "lifeboat-restore.12.log"] {
            assert!(is_restore_log(name), "{name}");
        }
        for name in [
            "log",
            "log/lifeboat-restore.log",
            "lifeboat-restore..log",
            "lifeboat-restore.x.log",
            "lifeboat-restore.log.1",
        ] {
            assert!(!is_restore_log(name), "{name}");
        }
    }
}
