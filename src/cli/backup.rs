//! `lifeboat backup [--incremental] [--method native|basebackup] [--workers N] [--no-fast-checkpoint]
//! [--label TEXT] [--json]`: a physical base backup, native (on the database host) or streamed from
//! `pg_basebackup`; with `--incremental`, only what changed since the newest backup.

use std::path::Path;

use crate::backup::BackupOptions;
use crate::config::BackupConfig;
use crate::format::backup_manifest::BackupMethod;
use crate::report::{self, backup::BackupView};
use crate::util::format_bytes;
use clap::{Args, ValueEnum};

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// pg_backup_start/pg_backup_stop and a parallel copy of cluster.pgdata (on the database host)
    Native,
    /// Stream `pg_basebackup --format=tar` (for a remote server; no tablespaces)
    Basebackup,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Store only the blocks that changed since the newest backup (full or incremental), found
    /// from the archived WAL; a full backup is taken when there is none to build on. Native only
    #[arg(long, conflicts_with = "method")]
    pub incremental: bool,
    /// How to copy the data directory
    #[arg(long, value_enum, default_value_t = Method::Native)]
    pub method: Method,
    /// Files copied at once [default: [backup] workers, else the number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(*BackupConfig::WORKERS.end())))]
    pub workers: Option<u32>,
    /// Let the starting checkpoint spread over checkpoint_completion_target instead of running at
    /// full speed (gentler on a busy server, but the backup may take minutes to begin)
    #[arg(long)]
    pub no_fast_checkpoint: bool,
    /// The label given to pg_backup_start [default: "lifeboat <id>"]
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Verify the backup by restoring it into a scratch server right after taking it (as
    /// `lifeboat verify ID`); the default when verify.after_backup is true
    #[arg(long, conflicts_with = "no_verify")]
    pub verify: bool,
    /// Do not verify, whatever verify.after_backup says
    #[arg(long)]
    pub no_verify: bool,
    /// Print the backup as JSON (schema backup/1, docs/json.md) on stdout instead of text; progress
    /// goes to stderr either way
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: BackupArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let config = &context.config;
    let mut options = BackupOptions::from_config(&config.backup);
    if let Some(workers) = args.workers {
        options.workers = workers;
    }
    if args.no_fast_checkpoint {
        options.fast_checkpoint = false;
    }
    options.label = args.label;
    options.incremental = args.incremental;
    options.method = match args.method {
        Method::Native => BackupMethod::Native,
        Method::Basebackup => BackupMethod::Basebackup,
    };
    let verify = super::verify::after_taking(config, args.verify, args.no_verify);
    let taken = crate::ops::backup_then_verify(&context, options, verify.as_ref()).await?;
    let view = BackupView::taken(&taken.summary, &context.layout, taken.verification.as_ref());
    if args.json {
        println!("{}", report::to_json(&view));
    } else {
        print_text(&view);
        if let Some(report) = &taken.verification {
            super::verify::print_report(report, &context.layout);
        }
    }
    match &taken.verification {
        Some(report) => super::verify::failure_error(report),
        None => Ok(()),
    }
}

fn print_text(view: &BackupView) {
    let totals = &view.totals;
    println!("backup {} of cluster {} complete", view.id, view.cluster);
    println!(
        "  WAL       timeline {}, start {} ({}), stop {} ({})",
        view.timeline, view.start_lsn, view.start_wal, view.stop_lsn, view.stop_wal
    );
    let tablespaces = match view.tablespaces.len() {
        0 => String::new(),
        1 => ", 1 tablespace".to_owned(),
        count => format!(", {count} tablespaces"),
    };
    println!("  files     {} files, {} directories{tablespaces}", totals.files, totals.directories);
    match &view.incremental {
        None => println!(
            "  size      {} read, {} stored in {} objects ({:.1}x smaller)",
            format_bytes(totals.bytes),
            format_bytes(totals.stored_bytes),
            totals.objects,
            view.compression_ratio
        ),
        Some(incremental) => {
            println!(
                "  size      {} restorable, {} stored in {} objects",
                format_bytes(totals.bytes),
                format_bytes(totals.stored_bytes),
                totals.objects
            );
            let found = match &incremental.fallback_reason {
                None => "found in the WAL".to_owned(),
                Some(reason) => format!("found by page LSNs: {reason}"),
            };
            println!(
                "  changed   {} blocks and {} whole files ({} read, {found}); {} files unchanged",
                incremental.changed_blocks,
                incremental.whole_files,
                format_bytes(incremental.stored_plaintext_bytes),
                incremental.unchanged_files
            );
            println!("  base      {} (chain of {})", incremental.parent, incremental.chain.len() + 1);
        }
    }
    if let Some(run) = &view.run {
        match view.incremental {
            None => println!("  time      {:.1} s, {:.0} MB/s", run.backup_seconds, run.bytes_per_second / 1_000_000.0),
            Some(_) => println!("  time      {:.1} s", run.backup_seconds),
        }
    }
    println!("  manifest  {}", view.manifest);
}
