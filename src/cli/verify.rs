//! `lifeboat verify [ID | --latest | --all] [--integrity-only]`: proving backups and dumps by
//! restoring them (see [`crate::verify`]), and the `--verify` of `backup` and `dump`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args};

use super::QuietExit;
use super::context::{load_config, open_repository};
use crate::catalog::audit;
use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing;
use crate::config::{AmcheckLevel, Config, parse_duration};
use crate::format::verify_report::{CheckOutcome, Mode, VerifyReport};
use crate::repository::Repository;
use crate::util::format_bytes;
use crate::verify::{VerifyError, VerifyOptions};

/// The exit status after an interruption, as shells report a process ended by SIGINT.
const INTERRUPTED_EXIT: u8 = 130;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["id", "latest", "all"])))]
pub struct VerifyArgs {
    /// A backup or dump id as `lifeboat list` shows it, or `latest` (the newest of either kind)
    pub id: Option<String>,
    /// The newest base backup and the newest dump (the default)
    #[arg(long)]
    pub latest: bool,
    /// Every backup and dump, oldest first; goes on after a failure and fails if any failed
    #[arg(long)]
    pub all: bool,
    /// Read and authenticate every object and the WAL a backup needs, but restore nothing
    #[arg(long)]
    pub integrity_only: bool,
    /// How much pg_amcheck checks: off, indexes, heapallindexed [default: verify.amcheck]
    #[arg(long, value_name = "LEVEL", value_parser = parse_amcheck)]
    pub amcheck: Option<AmcheckLevel>,
    /// Where the scratch restore is made [default: verify.scratch_dir]
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Stop, clean up and fail a verification that runs longer [default: verify.timeout]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the reports as a JSON array on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

fn parse_amcheck(text: &str) -> Result<AmcheckLevel, String> {
    match text {
        "off" => Ok(AmcheckLevel::Off),
        "indexes" => Ok(AmcheckLevel::Indexes),
        "heapallindexed" => Ok(AmcheckLevel::HeapAllIndexed),
        _ => Err(format!("{text:?} is not an amcheck level; use off, indexes or heapallindexed")),
    }
}

pub async fn run(config_path: Option<&Path>, args: VerifyArgs) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let repository = Arc::new(open_repository(&config).await?);
    let layout = ClusterLayout::new(&config.cluster.name);
    let ids = if let Some(id) = &args.id {
        vec![listing::resolve(&repository, &layout, id).await?]
    } else if args.all {
        listing::list_ids(&repository, &layout).await?
    } else {
        latest_of_each_kind(&repository, &layout).await?
    };
    if ids.is_empty() {
        anyhow::bail!(
            "cluster {:?} has no backups or dumps in {} to verify; take one with `lifeboat backup` or `lifeboat dump`",
            layout.name().as_str(),
            repository.location()
        );
    }
    let mut options = VerifyOptions::from_config(&config);
    options.integrity_only = args.integrity_only;
    if let Some(level) = args.amcheck {
        options.amcheck = level;
    }
    if let Some(dir) = args.scratch_dir {
        options.scratch_dir = std::path::absolute(&dir)?;
    }
    if let Some(timeout) = args.timeout {
        options.timeout = timeout;
    }
    let verified = verify_and_report(&repository, &layout, &ids, &options, args.json).await.map(|_| ());
    // What was not there to verify: the repository checked against its journal (G9). With an id,
    // only what concerns that id.
    let survey = audit::survey(&repository, &layout).await?;
    let named: Vec<String> = if args.id.is_some() { ids.iter().map(ToString::to_string).collect() } else { Vec::new() };
    let problems: Vec<_> = survey
        .problems
        .iter()
        .filter(|problem| named.is_empty() || named.iter().any(|id| problem.key.contains(id.as_str())))
        .collect();
    for problem in &problems {
        eprintln!("lifeboat: problem: {problem}");
    }
    match (verified, problems.len()) {
        (verified, 0) => verified,
        (Ok(()), count) => anyhow::bail!(
            "what was verified passed, but the repository has {count} problem(s), named above: something is missing, \
             altered or not recorded (`lifeboat list` shows them all)"
        ),
        (Err(error), count) => Err(error.context(format!("and the repository has {count} problem(s), named above"))),
    }
}

/// `backup --verify` and `dump --verify`: the options from the configuration; `None` when the
/// command should not verify.
pub fn after_taking(config: &Config, verify: bool, no_verify: bool) -> Option<VerifyOptions> {
    (verify || (config.verify.after_backup && !no_verify)).then(|| VerifyOptions::from_config(config))
}

/// Verifies one id the way `backup --verify` and `dump --verify` do, printing the report as text
/// (unless `quiet`). A failed verification is a report too: [`failure_error`] turns it into the
/// command's error once the caller has printed what it prints.
pub async fn verify_taken(
    config: &Config,
    repository: &Arc<Repository>,
    id: BackupId,
    options: &VerifyOptions,
    quiet: bool,
) -> anyhow::Result<VerifyReport> {
    let layout = ClusterLayout::new(&config.cluster.name);
    let report = verify_one(repository, &layout, id, options).await?;
    if !quiet {
        print_report(&report, &layout);
    }
    Ok(report)
}

async fn verify_one(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    id: BackupId,
    options: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    match crate::verify::verify(repository.clone(), layout, id, options, interrupted()).await {
        Ok(report) => Ok(report),
        Err(error @ VerifyError::Interrupted { .. }) => {
            eprintln!("lifeboat: {error}");
            Err(QuietExit { code: INTERRUPTED_EXIT }.into())
        }
        Err(error) => Err(error.into()),
    }
}

async fn verify_and_report(
    repository: &Arc<Repository>,
    layout: &ClusterLayout,
    ids: &[BackupId],
    options: &VerifyOptions,
    json: bool,
) -> anyhow::Result<Vec<VerifyReport>> {
    let mut reports = Vec::new();
    for &id in ids {
        let report = verify_one(repository, layout, id, options).await?;
        if !json {
            print_report(&report, layout);
        }
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    let failed: Vec<&VerifyReport> = reports.iter().filter(|report| !report.passed).collect();
    match failed.as_slice() {
        [] => Ok(reports),
        [report] => {
            failure_error(report)?;
            Ok(reports)
        }
        several => anyhow::bail!(
            "{} of {} verifications failed: {}",
            several.len(),
            reports.len(),
            several.iter().map(|report| format!("{} ({})", report.id, report.status())).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The command's error for a failed verification, naming the phase and the cause.
pub fn failure_error(report: &VerifyReport) -> anyhow::Result<()> {
    match &report.failure {
        None if report.passed => Ok(()),
        Some(failure) => {
            anyhow::bail!("verification of {} failed ({}): {}", report.id, failure.phase.as_str(), failure.message)
        }
        None => anyhow::bail!("verification of {} failed", report.id),
    }
}

/// The newest base backup and the newest dump, whichever exist.
async fn latest_of_each_kind(repository: &Repository, layout: &ClusterLayout) -> anyhow::Result<Vec<BackupId>> {
    let ids = listing::list_ids(repository, layout).await?;
    let newest = |kind: BackupKind| ids.iter().rev().find(|id| id.kind() == kind).copied();
    Ok([newest(BackupKind::Full), newest(BackupKind::Dump)].into_iter().flatten().collect())
}

/// Resolves when the user asks lifeboat to stop (Ctrl-C or SIGTERM), naming the signal. The
/// signals are watched from the first call on, for the life of the process, so one that arrives
/// between two verifications of `--all` stops the next one at once.
async fn interrupted() -> String {
    static SIGNAL: std::sync::OnceLock<tokio::sync::watch::Receiver<Option<String>>> = std::sync::OnceLock::new();
    let mut receiver = SIGNAL
        .get_or_init(|| {
            use tokio::signal::unix::{SignalKind, signal};
            let (sender, receiver) = tokio::sync::watch::channel(None);
            // Registered here, before any verification starts; the task only waits.
            if let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            {
                tokio::spawn(async move {
                    let name = tokio::select! {
                        _ = interrupt.recv() => "SIGINT",
                        _ = terminate.recv() => "SIGTERM",
                    };
                    let _ = sender.send(Some(name.to_owned()));
                });
            }
            receiver
        })
        .clone();
    match receiver.wait_for(Option::is_some).await {
        Ok(signal) => signal.clone().unwrap_or_default(),
        Err(_) => std::future::pending().await,
    }
}

pub(super) fn print_report(report: &VerifyReport, layout: &ClusterLayout) {
    let what = match report.mode {
        Mode::Integrity => "integrity check",
        Mode::Restore => "restore test",
    };
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    println!("verification of {} {verdict} ({what}, {:.1} s)", report.id, report.seconds);
    let integrity = &report.integrity;
    let mut read = format!("{} object(s), {} read and authenticated", integrity.objects, format_bytes(integrity.bytes));
    if report.kind == BackupKind::Full {
        read.push_str(&format!(", {} file(s) hashed, {} WAL segment(s)", integrity.files, integrity.wal_segments));
    }
    println!("  integrity  {read}");
    if let Some(recovery) = &report.recovery {
        println!(
            "  restore    {:.1} s to write the files + {:.1} s of recovery = {:.1} s to a usable server ({} WAL \
             segment(s) replayed)",
            recovery.restore_seconds, recovery.recovery_seconds, recovery.total_seconds, recovery.wal_segments_replayed
        );
        println!("  server     {}", recovery.server_version.split(" on ").next().unwrap_or(&recovery.server_version));
        println!("  databases  {}", recovery.databases.join(", "));
    }
    for database in &report.restored_databases {
        let renamed = if database.restored_as == database.name {
            String::new()
        } else {
            format!(" (as {} on verify.dump_server, dropped)", database.restored_as)
        };
        println!(
            "  restored   {}{renamed}: {} table(s), {} row(s), every count as in the dump ({:.1} s)",
            database.name, database.tables, database.rows, database.seconds
        );
    }
    if let Some(amcheck) = &report.amcheck {
        let verdict = if amcheck.passed { "no corruption found" } else { "PROBLEMS FOUND" };
        println!("  amcheck    {}: {verdict} ({:.1} s)", amcheck.level.as_str(), amcheck.seconds);
        // The output's first line says how the checks ran (pg_amcheck, or SQL on PostgreSQL 13).
        if let Some(how) = amcheck.output.lines().next().filter(|line| !line.is_empty()) {
            println!("             {how}");
        }
    }
    if !report.checks.is_empty() {
        let count = |outcome: CheckOutcome| report.checks.iter().filter(|check| check.outcome == outcome).count();
        println!(
            "  checks     {} passed, {} failed, {} skipped",
            count(CheckOutcome::Passed),
            count(CheckOutcome::Failed),
            count(CheckOutcome::Skipped)
        );
    }
    if let Some(failure) = &report.failure {
        println!("  failed in  {}", failure.phase.as_str());
    }
    println!("  report     {}", report.key(layout));
}
