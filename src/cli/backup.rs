//! `lifeboat backup [--method native|basebackup] [--workers N] [--no-fast-checkpoint] [--label TEXT] [--json]`:
//! a physical base backup, native (on the database host) or streamed from `pg_basebackup`.

use std::path::Path;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::backup::{BackupOptions, BackupSummary};
use crate::config::BackupConfig;
use crate::format::backup_manifest::BackupMethod;
use crate::util::format_bytes;

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
    /// Print a JSON summary on stdout instead of text (progress goes to stderr either way)
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints: the manifest's headline facts, without the file list.
#[derive(Debug, Serialize)]
struct JsonSummary<'a> {
    id: String,
    cluster: &'a str,
    method: &'static str,
    manifest: String,
    system_identifier: String,
    postgres_version: &'a str,
    timeline: u32,
    start_lsn: String,
    stop_lsn: String,
    start_wal: &'a str,
    stop_wal: &'a str,
    start_time: String,
    stop_time: String,
    files: u64,
    directories: u64,
    symlinks: u64,
    vanished_files: u64,
    tablespaces: usize,
    bytes: u64,
    stored_bytes: u64,
    objects: u64,
    compression_ratio: f64,
    duration_seconds: f64,
    bytes_per_second: f64,
    removed_orphans: usize,
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
    options.method = match args.method {
        Method::Native => BackupMethod::Native,
        Method::Basebackup => BackupMethod::Basebackup,
    };
    let verify = super::verify::after_taking(config, args.verify, args.no_verify);
    let taken = crate::ops::backup_then_verify(&context, options, verify.as_ref()).await?;
    let (summary, verification) = (&taken.summary, &taken.verification);
    if args.json {
        let mut json = serde_json::to_value(json_summary(summary))?;
        if let Some(report) = verification {
            json["verification"] = serde_json::to_value(report)?;
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(summary);
        if let Some(report) = verification {
            super::verify::print_report(report, &context.layout);
        }
    }
    match verification {
        Some(report) => super::verify::failure_error(report),
        None => Ok(()),
    }
}

fn json_summary(summary: &BackupSummary) -> JsonSummary<'_> {
    let manifest = &summary.manifest;
    JsonSummary {
        id: manifest.id.to_string(),
        cluster: &manifest.cluster,
        method: match manifest.method {
            BackupMethod::Native => "native",
            BackupMethod::Basebackup => "basebackup",
        },
        manifest: summary.manifest_key.to_string(),
        system_identifier: manifest.system_identifier.to_string(),
        postgres_version: &manifest.postgres_version,
        timeline: manifest.timeline.id(),
        start_lsn: manifest.start_lsn.to_string(),
        stop_lsn: manifest.stop_lsn.to_string(),
        start_wal: &manifest.start_wal,
        stop_wal: &manifest.stop_wal,
        start_time: manifest.start_time.to_rfc3339(),
        stop_time: manifest.stop_time.to_rfc3339(),
        files: manifest.totals.files,
        directories: manifest.totals.directories,
        symlinks: manifest.totals.symlinks,
        vanished_files: manifest.totals.vanished,
        tablespaces: manifest.tablespaces.len(),
        bytes: manifest.totals.bytes,
        stored_bytes: manifest.totals.stored_bytes,
        objects: manifest.totals.objects,
        compression_ratio: (manifest.compression_ratio() * 100.0).round() / 100.0,
        duration_seconds: (summary.backup_duration.as_secs_f64() * 1000.0).round() / 1000.0,
        bytes_per_second: summary.bytes_per_second().round(),
        removed_orphans: summary.removed_orphans.iter().map(|orphans| orphans.objects).sum(),
    }
}

fn print_text(summary: &BackupSummary) {
    let manifest = &summary.manifest;
    let totals = &manifest.totals;
    println!("backup {} of cluster {} complete", manifest.id, manifest.cluster);
    println!(
        "  WAL       timeline {}, start {} ({}), stop {} ({})",
        manifest.timeline.id(),
        manifest.start_lsn,
        manifest.start_wal,
        manifest.stop_lsn,
        manifest.stop_wal
    );
    let tablespaces = match manifest.tablespaces.len() {
        0 => String::new(),
        1 => ", 1 tablespace".to_owned(),
        count => format!(", {count} tablespaces"),
    };
    println!("  files     {} files, {} directories{tablespaces}", totals.files, totals.directories);
    println!(
        "  size      {} read, {} stored in {} objects ({:.1}x smaller)",
        format_bytes(totals.bytes),
        format_bytes(totals.stored_bytes),
        totals.objects,
        manifest.compression_ratio()
    );
    println!(
        "  time      {:.1} s, {:.0} MB/s",
        summary.backup_duration.as_secs_f64(),
        summary.bytes_per_second() / 1_000_000.0
    );
    println!("  manifest  {}", summary.manifest_key);
}
