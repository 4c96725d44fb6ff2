//! `lifeboat wal-push`, `lifeboat wal-fetch` and `lifeboat wal check`.
//!
//! PostgreSQL runs the first two once per WAL file, in the data directory, and writes their
//! stderr to its log: they print nothing on success, one line for the normal "not in the archive"
//! answer, and a full error (what, where, what to do) only when something is wrong. `wal-push`
//! first offers the file to `lifeboat daemon` ([`crate::wal::handoff`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::QuietExit;
use crate::catalog::layout::ClusterLayout;
use crate::ops::open::open_repository;
use crate::report::{self, wal::WalArchiveView};
use crate::wal::fetch::{FetchOptions, Fetched, PREFETCH_WAIT, fetch};
use crate::wal::handoff::{self, Handoff, Outcome};
use crate::wal::spool::spool_dir;

/// zstd threads of a lone `wal-push`: more cut little from a 16 MiB segment and cost memory.
const MAX_COMPRESSION_WORKERS: usize = 4;

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The file to archive: PostgreSQL's %p (archive_command = 'lifeboat wal-push %p')
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The WAL file PostgreSQL wants: its %f
    pub name: String,
    /// Where to write it: PostgreSQL's %p (restore_command = 'lifeboat wal-fetch %f %p')
    pub path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// List the archived WAL per timeline and name the first missing segment of every gap
    /// (exit status 1 if there is a gap)
    Check {
        /// Print JSON (schema wal-archive/1, docs/json.md) instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Hands the file to the daemon when one runs for this cluster and repository, else stores it here.
pub async fn push_command(config_path: Option<&Path>, args: WalPushArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let path = std::path::absolute(&args.path)?;
    let socket = handoff::socket_path(&config.daemon.state_dir);
    let repository = config.repository.url.to_string();
    match handoff::hand_off(&socket, config.cluster.name.as_str(), &repository, &path).await {
        Handoff::Done(reply) => {
            let how = if reply.ahead { "stored ahead" } else { "stored" };
            let how = if reply.result == Outcome::AlreadyArchived { "already archived" } else { how };
            tracing::debug!(ahead = reply.ahead, "{}: {how} by lifeboat daemon", args.path.display());
            return Ok(());
        }
        Handoff::Failed(failed) => return Err(failed.into()),
        Handoff::Unavailable(reason) => {
            tracing::debug!("no daemon takes {}: {reason}; storing it here", args.path.display())
        }
    }
    let context = super::context_for(config).await?;
    // One segment at a time, and PostgreSQL waits for it: every core compresses.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = u32::try_from(cores.min(MAX_COMPRESSION_WORKERS)).expect("a small number");
    crate::ops::wal_push(&context, &args.path, if workers > 1 { workers } else { 0 }).await?;
    Ok(())
}

pub async fn fetch_command(config_path: Option<&Path>, args: WalFetchArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let repository = Arc::new(open_repository(&config).await?);
    let layout = ClusterLayout::new(&config.cluster.name);
    let beside = args.path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let spool_dir = spool_dir(config.wal.spool_dir.as_deref(), config.cluster.name.as_str(), beside);
    let options = FetchOptions { prefetch: config.wal.prefetch, spool_dir, prefetch_wait: PREFETCH_WAIT };
    match fetch(repository, &layout, &args.name, &args.path, &options).await? {
        Fetched::Restored { from_spool, prefetched } => {
            tracing::debug!(from_spool, prefetched, "restored {}", args.name);
            Ok(())
        }
        Fetched::NotFound => {
            // The normal end of the archive: one line in PostgreSQL's log, no error.
            tracing::info!("{} is not in the archive", args.name);
            Err(QuietExit { code: 1 }.into())
        }
    }
}

pub async fn run(config_path: Option<&Path>, command: WalCommand) -> anyhow::Result<()> {
    let WalCommand::Check { json } = command;
    let context = super::operation_context(config_path).await?;
    let report = crate::ops::wal_check(&context).await?;
    let view = WalArchiveView::new(&report);
    if json {
        println!("{}", report::to_json(&view));
    } else {
        print_report(&view);
    }
    let gaps: Vec<String> =
        report.gaps().map(|(timeline, gap)| format!("{} (timeline {})", gap.first_missing, timeline.id())).collect();
    if !gaps.is_empty() {
        anyhow::bail!(
            "the WAL archive of cluster {:?} has {} gap(s); first missing segment: {}. Recovery cannot replay past \
             a gap: if the segment is still in the server's pg_wal, archive it again with `lifeboat wal-push`, and \
             take a new base backup after the gap",
            report.cluster,
            gaps.len(),
            gaps.join(", ")
        );
    }
    Ok(())
}

fn print_report(view: &WalArchiveView) {
    let report = &view.archive;
    println!("cluster   {}", report.cluster);
    println!("archive   {}", report.location);
    match report.system_identifier {
        Some(id) if report.postgres_versions.is_empty() => {
            println!("system    {id}, WAL segments of {}", report.segment_size)
        }
        Some(id) => println!(
            "system    {id}, PostgreSQL {}, WAL segments of {}",
            report.postgres_versions.join(", "),
            report.segment_size
        ),
        None if report.is_empty() => {}
        None => println!("system    unknown (no cluster record); assuming {} segments", report.segment_size),
    }
    if report.is_empty() {
        println!("\nno WAL archived yet (archive_command = 'lifeboat wal-push %p' stores it)");
    }
    for timeline in &report.timelines {
        println!("\ntimeline {} ({}): {} segment(s)", timeline.timeline.id(), timeline.timeline, timeline.segments);
        for range in &timeline.ranges {
            println!("  {} .. {}  {} segment(s)", range.first, range.last, range.segments);
        }
        for gap in &timeline.gaps {
            let until = if gap.missing > 1 { format!(" .. {}", gap.last_missing) } else { String::new() };
            println!("  GAP: first missing segment {}{until} ({} missing)", gap.first_missing, gap.missing);
        }
        for name in timeline.partial.iter().chain(&timeline.backup_history) {
            println!("  also {name}");
        }
    }
    if !report.history_files.is_empty() {
        println!("\nhistory files: {}", report.history_files.join(", "));
    }
    if !report.unrecognised.is_empty() {
        println!("\nnot WAL files (ignored): {}", report.unrecognised.join(", "));
    }
    if !report.is_empty() {
        let gaps = view.gaps;
        println!("\n{}", if gaps == 0 { "no gaps".to_string() } else { format!("{gaps} gap(s)") });
    }
}
