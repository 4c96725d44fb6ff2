//! `lifeboat verify [ID | --latest | --all] [--integrity-only]`: proving backups and dumps by
//! restoring them (see [`crate::verify`]), and the `--verify` of `backup` and `dump`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::catalog::layout::ClusterLayout;
use crate::config::{AmcheckLevel, Config, parse_duration};
use crate::format::verify_report::{CheckOutcome, Mode, VerifyReport};
use crate::ops::VerifyTarget;
use crate::report::{self, verification::VerifyRunView};
use crate::util::format_bytes;
use crate::verify::VerifyOptions;

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
    /// Print the reports as JSON (schema verify/1, docs/json.md) on stdout instead of text
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
    let context = super::operation_context(config_path).await?;
    let target = if let Some(id) = &args.id {
        VerifyTarget::Id(id.clone())
    } else if args.all {
        VerifyTarget::All
    } else {
        VerifyTarget::Latest
    };
    let mut options = VerifyOptions::from_config(&context.config);
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
    let outcome = crate::ops::verify(&context, &target, &options).await?;
    if args.json {
        println!("{}", report::to_json(&VerifyRunView::new(&context.layout, &outcome.reports, &outcome.problems)));
    } else {
        for report in &outcome.reports {
            print_report(report, &context.layout);
        }
    }
    let verified = verdict(&outcome.reports);
    for problem in &outcome.problems {
        eprintln!("lifeboat: problem: {problem}");
    }
    match (verified, outcome.problems.len()) {
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

/// The command's error when any verification failed.
fn verdict(reports: &[VerifyReport]) -> anyhow::Result<()> {
    let failed: Vec<&VerifyReport> = reports.iter().filter(|report| !report.passed).collect();
    match failed.as_slice() {
        [] => Ok(()),
        [report] => failure_error(report),
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

pub(super) fn print_report(report: &VerifyReport, layout: &ClusterLayout) {
    let what = match report.mode {
        Mode::Integrity => "integrity check",
        Mode::Restore => "restore test",
    };
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    println!("verification of {} {verdict} ({what}, {:.1} s)", report.id, report.seconds);
    let integrity = &report.integrity;
    let mut read = format!("{} object(s), {} read and authenticated", integrity.objects, format_bytes(integrity.bytes));
    if report.kind.is_physical() {
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
