//! `lifeboat status [--json]`: how the backups stand, for a person at a terminal or a script.
//! It asks the daemon at `daemon.listen` (`/status`); when none answers there (or `listen` is
//! unset) it reads the same facts from the repository and the server itself
//! ([`crate::daemon::watch::gather`], `source = "repository"`: next runs from the configured
//! schedules, no run history).
//!
//! Exit status: 0 when all is well; 1 when something needs a person (the problems are listed
//! last): no verified backup or dump, the repository cannot be read, PostgreSQL's archiver is
//! failing, or the daemon that answered reports itself unhealthy.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use http_body_util::BodyExt as _;

use super::QuietExit;
use crate::report;
use crate::report::status::{Status, StoredItem};
use crate::util::format_bytes;

/// How long the daemon has to answer before the facts are read directly.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (schema status/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: StatusArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let answered = match config.daemon.listen {
        Some(address) => match tokio::time::timeout(DAEMON_TIMEOUT, ask_daemon(address)).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(error)) => {
                tracing::info!("no daemon answered at {address} ({error:#}); reading the repository directly");
                None
            }
            Err(_) => {
                tracing::info!(
                    "the daemon at {address} did not answer within {} s; reading the repository directly",
                    DAEMON_TIMEOUT.as_secs()
                );
                None
            }
        },
        None => None,
    };
    let status = match answered {
        Some(status) => status,
        None => crate::daemon::watch::gather(&config).await,
    };
    let now = Utc::now();
    let problems = problems(&status, now);
    if args.json {
        println!("{}", report::to_json(&status));
    } else {
        print_text(&status, &problems, now);
    }
    if problems.is_empty() { Ok(()) } else { Err(QuietExit { code: 1 }.into()) }
}

/// `GET /status` from the daemon at `address`.
async fn ask_daemon(address: SocketAddr) -> anyhow::Result<Status> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/status")
        .header(hyper::header::HOST, address.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    connection.abort();
    anyhow::ensure!(code.is_success(), "/status answered {code}");
    let status: Status = serde_json::from_slice(&body)?;
    anyhow::ensure!(!status.source.is_empty(), "/status did not answer a status/1 document");
    Ok(status)
}

/// What needs a person's attention (each makes the exit status 1).
pub fn problems(status: &Status, now: DateTime<Utc>) -> Vec<String> {
    let mut problems = Vec::new();
    if status.daemon.is_some()
        && let Err(reason) = crate::daemon::http::health(status, now)
    {
        problems.push(format!("the daemon is unhealthy: {reason}"));
    }
    match &status.repository {
        None => problems.push("the repository has not been looked at yet".to_owned()),
        Some(repository) => {
            if !repository.reachable {
                problems.push(format!(
                    "the repository cannot be read: {}",
                    repository.error.as_deref().unwrap_or("no reason recorded")
                ));
            }
            if repository.reachable && repository.newest_verified_backup.is_none() {
                problems.push(
                    "no backup or dump has passed a verification: run `lifeboat verify` (or `lifeboat backup --verify`)"
                        .to_owned(),
                );
            }
        }
    }
    if let Some(archiver) = status.archiver.as_ref().filter(|archiver| archiver.failing()) {
        problems.push(format!(
            "PostgreSQL's archiver is failing ({} failures, last on {}): WAL is not reaching the repository; see \
             the server's log for archive_command's error",
            archiver.failed_count.unwrap_or_default(),
            archiver.last_failed_wal.as_deref().unwrap_or("a segment")
        ));
    }
    problems
}

fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    // Signed: next runs are in the future.
    let seconds = (now - at).num_seconds().unsigned_abs();
    let text = match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86400, seconds % 86400 / 3600),
    };
    if at <= now { format!("{text} ago") } else { format!("in {text}") }
}

fn stamp(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", at.format("%Y-%m-%d %H:%M:%S UTC"), age(at, now))
}

fn item_line(item: Option<&StoredItem>, now: DateTime<Utc>) -> String {
    let Some(item) = item else { return "none".to_owned() };
    let mut line =
        format!("{} ({}), consistent {}, {}", item.id, item.kind, stamp(item.at, now), format_bytes(item.bytes));
    match (item.verified, item.restore_seconds) {
        (Some(true), Some(seconds)) => line.push_str(&format!(", verified: restored in {seconds:.1} s")),
        (Some(true), None) => line.push_str(", verified"),
        (Some(false), _) => line.push_str(", verification FAILED"),
        (None, _) => line.push_str(", not verified"),
    }
    line
}

fn print_text(status: &Status, problems: &[String], now: DateTime<Utc>) {
    match &status.daemon {
        Some(daemon) => println!(
            "cluster {} on {}: lifeboat {} daemon (pid {}, up since {})",
            status.cluster,
            status.host,
            status.version,
            daemon.pid,
            stamp(daemon.started_at, now)
        ),
        None => println!(
            "cluster {} on {}: no daemon answered; read from the repository and the server directly",
            status.cluster, status.host
        ),
    }
    println!();
    if let Some(repository) = &status.repository {
        if let Some(error) = &repository.error {
            println!("repository:             CANNOT BE READ: {error}");
        }
        println!("newest verified backup: {}", item_line(repository.newest_verified_backup.as_ref(), now));
        println!("newest full backup:     {}", item_line(repository.newest_backup.as_ref(), now));
        println!("newest dump:            {}", item_line(repository.newest_dump.as_ref(), now));
        match (&repository.last_archived_wal, repository.last_archived_wal_at) {
            (Some(wal), Some(at)) => println!("newest WAL stored:      {wal}, {}", stamp(at, now)),
            (Some(wal), None) => println!("newest WAL stored:      {wal}"),
            _ => println!("newest WAL stored:      none"),
        }
        println!("repository size:        {}", format_bytes(repository.bytes));
        for copy in &repository.copies {
            match &copy.error {
                Some(error) => println!("copy {}: CANNOT BE READ: {error}", copy.name),
                None if copy.lag_seconds <= 0.0 => println!("copy {}: up to date", copy.name),
                None => println!(
                    "copy {}: {} behind ({} backups or dumps and {} WAL files missing, oldest {})",
                    copy.name,
                    age(now - chrono::Duration::milliseconds((copy.lag_seconds * 1000.0) as i64), now)
                        .trim_end_matches(" ago"),
                    copy.backups_missing,
                    copy.wal_missing,
                    copy.oldest_missing.as_deref().unwrap_or("-")
                ),
            }
        }
    }
    if let Some(archiver) = &status.archiver {
        println!();
        match &archiver.error {
            Some(error) => println!("archiver: PostgreSQL could not be asked: {error}"),
            None => {
                let last = match (&archiver.last_archived_wal, archiver.last_archived_time) {
                    (Some(wal), Some(at)) => format!("last {wal} {}", age(at, now)),
                    _ => "none yet".to_owned(),
                };
                println!(
                    "archiver: {} archived ({last}), {} failed{}{}",
                    archiver.archived_count.unwrap_or_default(),
                    archiver.failed_count.unwrap_or_default(),
                    match (&archiver.last_failed_wal, archiver.last_failed_time) {
                        (Some(wal), Some(at)) => format!(" (last on {wal} {})", age(at, now)),
                        _ => String::new(),
                    },
                    if archiver.failing() { ": FAILING" } else { "" }
                );
            }
        }
        if let Some(ready) = archiver.ready_files {
            println!("          {ready} segment(s) waiting to be archived (.ready)");
        }
    }
    if !status.jobs.is_empty() {
        println!();
        println!("jobs:");
        for job in &status.jobs {
            let last = match &job.last_run {
                Some(run) => format!("{} {}", run.result, age(run.finished_at, now)),
                None if status.daemon.is_some() => "never ran".to_owned(),
                None => "-".to_owned(),
            };
            let next = match (job.running_since, job.next_run) {
                (Some(since), _) => format!("running since {}", age(since, now)),
                (None, Some(next)) => stamp(next, now),
                (None, None) => format!("after {}", job.chained_after.join(", ")),
            };
            println!("  {:<12} last: {last:<24} next: {next}", job.job);
        }
    }
    if !status.recent_failures.is_empty() {
        println!();
        println!("newest failures:");
        for failure in status.recent_failures.iter().take(5) {
            println!("  {} {}: {}", failure.job, age(failure.at, now), failure.error);
        }
    }
    println!();
    if problems.is_empty() {
        println!("all is well");
    } else {
        println!("needs attention:");
        for problem in problems {
            println!("  - {problem}");
        }
    }
}
