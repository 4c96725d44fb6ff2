//! `lifeboat list`, `lifeboat info <ID>` and `lifeboat delete <ID>`: the catalog of the cluster's
//! backups and dumps (read by [`crate::ops::catalog`]), printed from the views of
//! [`crate::report`] (docs/json.md).

use std::path::Path;

use clap::Args;

use crate::catalog::audit::Problem;
use crate::catalog::layout::ClusterLayout;
use crate::format::dump_manifest::TableRows;
use crate::format::verify_report::Mode;
use crate::ops::open::open_repository;
use crate::report;
use crate::report::backup::{BackupView, DumpView, EntryView, IncrementalView, VerificationView};
use crate::report::catalog::DeleteView;
use crate::report::copy::CopyHoldings;
use crate::report::wal::WalArchiveView;
use crate::util::format_bytes;

use super::table;

/// The widest the last column of `list` (LSNs or databases) gets.
const LAST_COLUMN: usize = 48;
/// Tables shown per database by `info` (text); `--json` shows all.
const TOP_TABLES: usize = 10;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON (schema list/1, docs/json.md) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A backup or dump id as `lifeboat list` shows it, or `latest`
    pub id: String,
    /// Print JSON (schema backup/1 or dump/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// A backup or dump id as `lifeboat list` shows it, or `latest`
    pub id: String,
    /// Delete even the only remaining full backup (point-in-time restore becomes impossible)
    #[arg(long)]
    pub force: bool,
    /// Print what was deleted as JSON (schema delete/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn list(config_path: Option<&Path>, args: ListArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let repository = open_repository(&config).await?;
    let layout = ClusterLayout::new(&config.cluster.name);
    let mut view = crate::ops::catalog::list(&repository, &layout).await?;
    if config.copies.opened.is_none() {
        crate::ops::copy::holdings(&config, &layout, &mut view).await;
    }
    if args.json {
        println!("{}", report::to_json(&view));
    } else {
        println!("cluster {} in {}", view.cluster, view.location);
        println!();
        if view.backups.is_empty() && !view.problems.is_empty() {
            println!("no intact backups or dumps (PROBLEMS below says what is missing)");
        } else {
            print_table(&view.backups, &view.copies);
        }
        for copy in &view.copies {
            if let Some(error) = &copy.error {
                println!("warning: copy {:?} could not be read, so COPIES may leave it out: {error}", copy.name);
            }
        }
        println!();
        print_wal(&view.wal);
        print_problems(&view.problems);
    }
    if !view.problems.is_empty() {
        anyhow::bail!(
            "the repository has {} problem(s), listed {}: a backup, a report or a journal entry is missing, altered \
             or unreadable. Find out what changed the repository before trusting it (docs/format.md section 12)",
            view.problems.len(),
            if args.json { "under \"problems\"" } else { "above" }
        );
    }
    Ok(())
}

fn print_problems(problems: &[Problem]) {
    if problems.is_empty() {
        return;
    }
    println!();
    println!("PROBLEMS ({}):", problems.len());
    for problem in problems {
        println!("  {problem}");
    }
}

/// The VERIFY column: the verdict, "?" when the newest report cannot be read (PROBLEMS names it),
/// "-" without one (`info` tells when and how).
fn verification_cell(verification: Option<&VerificationView>) -> &'static str {
    match verification {
        None => "-",
        Some(verification) if verification.status == "unreadable" => "?",
        Some(verification) if verification.passed => "passed",
        Some(_) => "FAILED",
    }
}

/// `12.3s`, `4m05s`, `2h03m`.
fn format_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let whole = seconds as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        let minutes = seconds as u64 / 60;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// The table of `list`: one row per backup or dump; the last column (LSNs of a full backup,
/// databases of a dump) cut to [`LAST_COLUMN`] characters.
fn print_table(entries: &[EntryView], copies: &[CopyHoldings]) {
    if entries.is_empty() {
        println!("no backups or dumps yet (`lifeboat backup` and `lifeboat dump` take them)");
        return;
    }
    let mut header =
        vec!["ID", "KIND", "STARTED (UTC)", "DURATION", "SIZE", "STORED", "RATIO", "VERIFY", "TL", "LSNS / DATABASES"];
    if !copies.is_empty() {
        // Before the last column, which is cut to a width.
        header.insert(9, "COPIES");
    }
    let mut rows = table::plain(&header, &[3, 4, 5, 6, 8]);
    for entry in entries {
        let (timeline, last, common) = match entry {
            EntryView::Full(view) => (
                view.timeline.to_string(),
                format!("{}..{}", view.start_lsn, view.stop_lsn),
                (view.start_time, view.duration_seconds, view.size, view.stored_size, view.compression_ratio),
            ),
            EntryView::Dump(view) => (
                "-".to_owned(),
                view.databases.iter().map(|database| database.name.as_str()).collect::<Vec<_>>().join(", "),
                (view.start_time, view.duration_seconds, view.size, view.stored_size, view.compression_ratio),
            ),
        };
        let (started, seconds, size, stored, ratio) = common;
        let (id, kind, verification) = match entry {
            EntryView::Full(view) => (&view.id, view.kind, view.verification.as_ref()),
            EntryView::Dump(view) => (&view.id, view.kind, view.verification.as_ref()),
        };
        let mut row = vec![
            id.clone(),
            kind.to_owned(),
            started.format("%m-%d %H:%M:%S").to_string(),
            format_duration(seconds),
            format_bytes(size),
            format_bytes(stored),
            format!("{ratio:.1}x"),
            verification_cell(verification).to_owned(),
            timeline,
            table::truncate(&last, LAST_COLUMN),
        ];
        if !copies.is_empty() {
            row.insert(9, copies_cell(id, copies));
        }
        rows.add_row(row);
    }
    println!("{}", table::render(&rows));
    print_chains(entries);
}

/// Under the table: each chain of incremental backups, from its full backup, with what each
/// incremental stored itself.
fn print_chains(entries: &[EntryView]) {
    let incrementals: Vec<(&BackupView, &IncrementalView)> = entries
        .iter()
        .filter_map(|entry| match entry {
            EntryView::Full(view) => view.incremental.as_ref().map(|incremental| (view.as_ref(), incremental)),
            EntryView::Dump(_) => None,
        })
        .collect();
    if incrementals.is_empty() {
        return;
    }
    println!("incremental backups (each on top of the one before it):");
    for (view, incremental) in incrementals {
        println!(
            "  {} <- {}: {} changed blocks, {} stored ({} from {})",
            incremental.chain.join(" <- "),
            view.id,
            incremental.changed_blocks,
            format_bytes(view.stored_size),
            format_bytes(incremental.stored_plaintext_bytes),
            incremental.changes_from
        );
    }
}

/// The COPIES column: the copies that hold the backup, "-" for none, "?" after one that could
/// not be read.
fn copies_cell(id: &str, copies: &[CopyHoldings]) -> String {
    let holding: Vec<&str> = copies
        .iter()
        .filter(|copy| copy.backups.iter().any(|held| held.to_string() == id))
        .map(|copy| copy.name.as_str())
        .collect();
    let unknown = copies.iter().any(|copy| copy.error.is_some());
    match (holding.is_empty(), unknown) {
        (true, false) => "-".to_owned(),
        (true, true) => "?".to_owned(),
        (false, false) => holding.join(","),
        (false, true) => format!("{},?", holding.join(",")),
    }
}

fn print_wal(wal: &WalArchiveView) {
    if wal.archive.timelines.is_empty() {
        println!("archived WAL: none yet (archive_command = 'lifeboat wal-push %p' stores it)");
        return;
    }
    println!("archived WAL:");
    for timeline in &wal.archive.timelines {
        println!("  timeline {}: {} segment(s)", timeline.timeline.id(), timeline.segments);
        for range in &timeline.ranges {
            println!("    {} .. {}  {} segment(s)", range.first, range.last, range.segments);
        }
        for gap in &timeline.gaps {
            println!("    GAP from {} to {} ({} missing)", gap.first_missing, gap.last_missing, gap.missing);
        }
    }
    if wal.gaps > 0 {
        println!("  {} gap(s): `lifeboat wal check` explains", wal.gaps);
    }
}

pub async fn info(config_path: Option<&Path>, args: InfoArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let repository = open_repository(&config).await?;
    let layout = ClusterLayout::new(&config.cluster.name);
    let described = crate::ops::catalog::describe(&repository, &layout, &args.id).await?;
    for problem in &described.problems {
        tracing::warn!("{problem}");
    }
    if args.json {
        println!("{}", report::to_json(&described.view));
        return Ok(());
    }
    match &described.view {
        EntryView::Full(view) => print_full(view),
        EntryView::Dump(view) => print_dump(view),
    }
    Ok(())
}

fn print_full(view: &BackupView) {
    let totals = &view.totals;
    let kind = if view.incremental.is_some() { "incremental" } else { "full" };
    println!("{kind} backup {} of cluster {} ({} method)", view.id, view.cluster, view.method.as_str());
    println!("  manifest      {}", view.manifest);
    if let Some(incremental) = &view.incremental {
        print_incremental(incremental);
    }
    println!("  started       {}", text_time(view.start_time));
    println!("  stopped       {}  ({})", text_time(view.stop_time), format_duration(view.duration_seconds));
    println!("  label         {}", view.label);
    println!("  host          {} (lifeboat {})", view.host, view.lifeboat_version);
    println!("  PostgreSQL    {} ({})", view.postgres_version, view.postgres_version_num);
    println!("  system id     {}", view.system_identifier);
    println!("  timeline      {}", view.timeline);
    println!("  start LSN     {}  ({})", view.start_lsn, view.start_wal);
    println!("  stop LSN      {}  ({})", view.stop_lsn, view.stop_wal);
    let archived = match (&view.wal_first_missing, view.wal_archived) {
        (Some(segment), _) => {
            format!("NOT all archived: first missing {segment}; this backup cannot be restored yet")
        }
        (None, Some(true)) => "all archived".to_owned(),
        (None, _) => "archive not checked".to_owned(),
    };
    println!("  WAL needed    {} .. {}  {} segment(s), {archived}", view.start_wal, view.stop_wal, view.wal_segments);
    if view.tablespaces.is_empty() {
        println!("  tablespaces   none");
    }
    for tablespace in &view.tablespaces {
        println!(
            "  tablespace    {} {} -> {}",
            tablespace.oid,
            tablespace.name.as_deref().unwrap_or("(created during the backup)"),
            tablespace.location
        );
    }
    println!(
        "  contents      {} files, {} directories, {} symlinks ({} vanished during the copy)",
        totals.files, totals.directories, totals.symlinks, totals.vanished
    );
    println!(
        "  size          {} ({} B), stored {} ({} B) in {} objects, {:.1}x smaller",
        format_bytes(totals.bytes),
        totals.bytes,
        format_bytes(totals.stored_bytes),
        totals.stored_bytes,
        totals.objects,
        view.compression_ratio
    );
    print_verification(view.verification.as_ref());
}

fn print_incremental(incremental: &IncrementalView) {
    println!("  base          {} (chain: {})", incremental.parent, incremental.chain.join(" <- "));
    println!(
        "  changed       {} blocks, {} files whole, {} unchanged: {} stored",
        incremental.changed_blocks,
        incremental.whole_files,
        incremental.unchanged_files,
        format_bytes(incremental.stored_plaintext_bytes)
    );
    match &incremental.fallback_reason {
        None => println!("  changes from  the WAL since the base's start"),
        Some(reason) => println!("  changes from  page LSNs ({reason})"),
    }
}

fn print_verification(verification: Option<&VerificationView>) {
    let Some(verification) = verification else {
        println!("  verification  none yet (`lifeboat verify ID` restores it into a scratch server)");
        return;
    };
    let Some(Some(report)) = &verification.latest else {
        println!(
            "  verification  {} (journal's verdict); its report {} is missing or cannot be read",
            verification.status.to_uppercase(),
            verification.report
        );
        return;
    };
    let what = match report.mode {
        Mode::Integrity => "integrity check",
        Mode::Restore => "restore test",
    };
    println!(
        "  verification  {} by a {what} at {} ({} report(s))",
        if report.passed { "PASSED" } else { "FAILED" },
        text_time(report.started_at),
        verification.reports
    );
    if let Some(recovery) = &report.recovery {
        println!(
            "                {:.1} s to a usable server ({:.1} s writing files, {:.1} s recovering)",
            recovery.total_seconds, recovery.restore_seconds, recovery.recovery_seconds
        );
    }
    if let Some(failure) = &report.failure {
        println!("                failed in {}: {}", failure.phase.as_str(), failure.message);
    }
    println!("                report {}", verification.report);
}

fn print_dump(view: &DumpView) {
    println!("dump {} of cluster {}", view.id, view.cluster);
    println!("  manifest      {}", view.manifest);
    println!("  started       {}", text_time(view.start_time));
    println!("  stopped       {}  ({})", text_time(view.stop_time), format_duration(view.duration_seconds));
    println!(
        "  server        {} ({}), system id {}",
        view.server_version, view.server_version_num, view.system_identifier
    );
    println!("  pg_dump       {}", view.pg_dump_version);
    println!(
        "  size          {}, stored {}, {:.1}x smaller",
        format_bytes(view.size),
        format_bytes(view.stored_size),
        view.compression_ratio
    );
    println!(
        "  globals       {} (role passwords {})",
        format_bytes(view.globals.size),
        if view.globals.role_passwords { "included" } else { "not included" }
    );
    print_verification(view.verification.as_ref());
    for database in &view.databases {
        let tables = database.tables.as_deref().unwrap_or_default();
        println!();
        println!(
            "  database {}: {} (stored {}), {} table(s), {} row(s)",
            database.name,
            format_bytes(database.size),
            format_bytes(database.stored_size),
            tables.len(),
            database.total_rows
        );
        let mut biggest: Vec<&TableRows> = tables.iter().collect();
        biggest.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| (&a.schema, &a.table).cmp(&(&b.schema, &b.table))));
        for table in biggest.iter().take(TOP_TABLES) {
            println!("    {:>14}  {}.{}", table.rows, table.schema, table.table);
        }
        if biggest.len() > TOP_TABLES {
            println!("    ... and {} more table(s) (`--json` lists all)", biggest.len() - TOP_TABLES);
        }
    }
}

pub async fn delete(config_path: Option<&Path>, args: DeleteArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let deleted = crate::ops::delete(&context, &args.id, args.force).await?;
    let view = DeleteView::new(&context.layout, &deleted);
    if args.json {
        println!("{}", report::to_json(&view));
        return Ok(());
    }
    let reports = if view.reports > 0 { format!(", {} verification report(s)", view.reports) } else { String::new() };
    println!(
        "deleted {} of cluster {}: {} object(s), {} ({} B) stored{reports}",
        view.id,
        view.cluster,
        view.objects,
        format_bytes(view.bytes),
        view.bytes
    );
    Ok(())
}

fn text_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}
