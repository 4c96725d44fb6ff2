//! `lifeboat list`, `lifeboat info <ID>` and `lifeboat delete <ID>`: the catalog of the cluster's
//! backups and dumps (see [`crate::catalog::listing`]). The JSON shapes are documented in
//! docs/format.md section 9.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Args;
use serde::Serialize;

use crate::catalog::audit::{self, Problem, Verification};
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, Entry};
use crate::catalog::wal::WalFile;
use crate::config::Config;
use crate::format::backup_manifest::{BackupManifest, Tablespace, Totals};
use crate::format::dump_manifest::{DumpManifest, TableRows};
use crate::format::verify_report::{Mode, VerifyReport};
use crate::ops::open::open_repository;
use crate::util::format_bytes;
use crate::wal::check::{ArchiveReport, Gap, SegmentRange, check};

/// The widest a text table gets.
const WIDTH: usize = 120;
/// Tables shown per database by `info` (text); `--json` shows all.
const TOP_TABLES: usize = 10;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A backup or dump id as `lifeboat list` shows it, or `latest`
    pub id: String,
    /// Print JSON instead of text
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
}

/// `list --json`.
#[derive(Debug, Serialize)]
struct JsonList<'a> {
    cluster: String,
    location: String,
    backups: Vec<JsonListEntry<'a>>,
    wal: Vec<JsonTimeline<'a>>,
    /// Objects that are missing, altered, damaged or not recorded in the journal, by key.
    problems: &'a [Problem],
}

#[derive(Debug, Serialize)]
struct JsonListEntry<'a> {
    id: String,
    kind: &'static str,
    start_time: String,
    stop_time: String,
    duration_seconds: f64,
    /// Full backups only (null for dumps).
    timeline: Option<u32>,
    start_lsn: Option<String>,
    stop_lsn: Option<String>,
    start_wal: Option<&'a str>,
    stop_wal: Option<&'a str>,
    size: u64,
    stored_size: u64,
    compression_ratio: f64,
    /// Dumps only (empty for full backups).
    databases: Vec<&'a str>,
    /// The newest verification report, null when there is none.
    verification: Option<JsonVerification<'a>>,
}

/// What the verification reports of a backup or dump say.
#[derive(Debug, Serialize)]
struct JsonVerification<'a> {
    /// "passed", "failed (<phase>)", or "unreadable" when the newest report cannot be read.
    status: &'a str,
    passed: bool,
    /// When the verification that gave the verdict started.
    verified_at: Option<String>,
    /// How many reports exist under verify/<id>/.
    reports: usize,
    /// The key of the report the verdict comes from.
    report: &'a str,
    /// Whether the cluster's journal records the verdict: only a recorded verdict counts.
    recorded: bool,
    /// `info` only: the newest report itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<&'a VerifyReport>,
}

#[derive(Debug, Serialize)]
struct JsonTimeline<'a> {
    timeline: u32,
    segments: u64,
    ranges: &'a [SegmentRange],
    gaps: &'a [Gap],
}

pub async fn list(config_path: Option<&Path>, args: ListArgs) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let repository = open_repository(&config).await?;
    let layout = ClusterLayout::new(&config.cluster.name);
    let mut survey = audit::survey(&repository, &layout).await?;
    let wal = check(&repository, &layout).await?;
    survey.problems.extend(missing_backup_wal(&survey.entries, &wal, &layout));
    if args.json {
        let json = JsonList {
            cluster: layout.name().to_string(),
            location: repository.location(),
            backups: survey.entries.iter().map(|entry| list_entry(entry, &survey.verifications)).collect(),
            wal: wal
                .timelines
                .iter()
                .map(|timeline| JsonTimeline {
                    timeline: timeline.timeline.id(),
                    segments: timeline.segments,
                    ranges: &timeline.ranges,
                    gaps: &timeline.gaps,
                })
                .collect(),
            problems: &survey.problems,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("cluster {} in {}", layout.name(), repository.location());
        println!();
        if survey.entries.is_empty() && !survey.problems.is_empty() {
            println!("no intact backups or dumps (PROBLEMS below says what is missing)");
        } else {
            print_table(&survey.entries, &survey.verifications);
        }
        println!();
        print_wal(&wal);
        print_problems(&survey.problems);
    }
    if !survey.problems.is_empty() {
        anyhow::bail!(
            "the repository has {} problem(s), listed {}: a backup, a report or a journal entry is missing, altered \
             or unreadable. Find out what changed the repository before trusting it (docs/format.md section 12)",
            survey.problems.len(),
            if args.json { "under \"problems\"" } else { "above" }
        );
    }
    Ok(())
}

/// A segment a listed full backup needs to reach consistency that is not archived: without it
/// the backup cannot be restored, whatever else is there.
fn missing_backup_wal(entries: &[Entry], wal: &ArchiveReport, layout: &ClusterLayout) -> Vec<Problem> {
    entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Full(manifest) => Some(manifest),
            Entry::Dump(_) => None,
        })
        .filter_map(|manifest| {
            let missing = wal.first_missing(manifest.start_segment(), manifest.stop_segment())?;
            Some(Problem {
                key: layout.wal_file(&WalFile::Segment(missing), manifest.wal_segment_size).to_string(),
                detail: format!(
                    "is missing, and backup {} needs it (its WAL runs from {} to {}): that backup cannot be restored",
                    manifest.id, manifest.start_wal, manifest.stop_wal
                ),
            })
        })
        .collect()
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

fn verification<'a>(
    entry: &Entry,
    verifications: &'a BTreeMap<BackupId, Verification>,
    with_report: bool,
) -> Option<JsonVerification<'a>> {
    let verification = verifications.get(&entry.id())?;
    Some(JsonVerification {
        status: &verification.status,
        passed: verification.passed,
        verified_at: verification.verified_at.map(|at| at.to_rfc3339()),
        reports: verification.reports,
        report: &verification.report,
        recorded: verification.recorded,
        latest: verification.latest.as_ref().filter(|_| with_report),
    })
}

/// The VERIFY column: the verdict, "?" when the newest report cannot be read (PROBLEMS names it),
/// "-" without one (`info` tells when and how).
fn verification_cell(entry: &Entry, verifications: &BTreeMap<BackupId, Verification>) -> &'static str {
    match verifications.get(&entry.id()) {
        None => "-",
        Some(verification) if verification.status == "unreadable" => "?",
        Some(verification) if verification.passed => "passed",
        Some(_) => "FAILED",
    }
}

fn list_entry<'a>(entry: &'a Entry, verifications: &'a BTreeMap<BackupId, Verification>) -> JsonListEntry<'a> {
    let full = match entry {
        Entry::Full(manifest) => Some(manifest),
        Entry::Dump(_) => None,
    };
    JsonListEntry {
        id: entry.id().to_string(),
        kind: entry.kind().as_str(),
        start_time: entry.start_time().to_rfc3339(),
        stop_time: entry.stop_time().to_rfc3339(),
        duration_seconds: round(entry.duration_seconds(), 1000.0),
        timeline: full.map(|manifest| manifest.timeline.id()),
        start_lsn: full.map(|manifest| manifest.start_lsn.to_string()),
        stop_lsn: full.map(|manifest| manifest.stop_lsn.to_string()),
        start_wal: full.map(|manifest| manifest.start_wal.as_str()),
        stop_wal: full.map(|manifest| manifest.stop_wal.as_str()),
        size: entry.size(),
        stored_size: entry.stored_size(),
        compression_ratio: round(entry.compression_ratio(), 100.0),
        databases: entry.databases(),
        verification: verification(entry, verifications, false),
    }
}

fn round(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
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

/// The table of `list`: one row per backup or dump, columns sized to their content, the last
/// column (WAL of a full backup, databases of a dump) cut so a row fits [`WIDTH`] columns.
fn print_table(entries: &[Entry], verifications: &BTreeMap<BackupId, Verification>) {
    if entries.is_empty() {
        println!("no backups or dumps yet (`lifeboat backup` and `lifeboat dump` take them)");
        return;
    }
    let header =
        ["ID", "KIND", "STARTED (UTC)", "DURATION", "SIZE", "STORED", "RATIO", "VERIFY", "TL", "LSNS / DATABASES"];
    let rows: Vec<[String; 10]> = entries
        .iter()
        .map(|entry| {
            let (timeline, last) = match entry {
                Entry::Full(manifest) => {
                    (manifest.timeline.id().to_string(), format!("{}..{}", manifest.start_lsn, manifest.stop_lsn))
                }
                Entry::Dump(_) => ("-".to_owned(), entry.databases().join(", ")),
            };
            [
                entry.id().to_string(),
                entry.kind().as_str().to_owned(),
                entry.start_time().format("%m-%d %H:%M:%S").to_string(),
                format_duration(entry.duration_seconds()),
                format_bytes(entry.size()),
                format_bytes(entry.stored_size()),
                format!("{:.1}x", entry.compression_ratio()),
                verification_cell(entry, verifications).to_owned(),
                timeline,
                last,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let right_aligned = [false, false, false, true, true, true, true, false, true, false];
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                out.push_str("  ");
            }
            if index + 1 == cells.len() {
                let room = WIDTH.saturating_sub(out.chars().count());
                out.push_str(&truncate(cell, room));
            } else if right_aligned[index] {
                out.push_str(&format!("{cell:>width$}", width = widths[index]));
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[index]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `text` cut to `room` characters, ending in `…` when cut.
fn truncate(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        text.to_owned()
    } else if room == 0 {
        String::new()
    } else {
        let mut cut: String = text.chars().take(room - 1).collect();
        cut.push('…');
        cut
    }
}

fn print_wal(report: &ArchiveReport) {
    if report.timelines.is_empty() {
        println!("archived WAL: none yet (archive_command = 'lifeboat wal-push %p' stores it)");
        return;
    }
    println!("archived WAL:");
    for timeline in &report.timelines {
        println!("  timeline {}: {} segment(s)", timeline.timeline.id(), timeline.segments);
        for range in &timeline.ranges {
            println!("    {} .. {}  {} segment(s)", range.first, range.last, range.segments);
        }
        for gap in &timeline.gaps {
            println!("    GAP from {} to {} ({} missing)", gap.first_missing, gap.last_missing, gap.missing);
        }
    }
    let gaps = report.gaps().count();
    if gaps > 0 {
        println!("  {gaps} gap(s): `lifeboat wal check` explains");
    }
}

/// `info --json` of a full backup: the manifest without its file list.
#[derive(Debug, Serialize)]
struct JsonFullInfo<'a> {
    id: String,
    kind: &'static str,
    method: &'a crate::format::backup_manifest::BackupMethod,
    cluster: &'a str,
    manifest: String,
    system_identifier: String,
    postgres_version: &'a str,
    postgres_version_num: u32,
    wal_segment_size: u32,
    timeline: u32,
    start_lsn: String,
    stop_lsn: String,
    start_wal: &'a str,
    stop_wal: &'a str,
    /// Number of segments from start_wal to stop_wal.
    wal_segments: u64,
    /// Whether every segment from start_wal to stop_wal is in the archive.
    wal_archived: bool,
    /// The first of them that is not, if any.
    wal_first_missing: Option<String>,
    start_time: String,
    stop_time: String,
    duration_seconds: f64,
    label: &'a str,
    host: &'a str,
    lifeboat_version: &'a str,
    tablespaces: &'a [Tablespace],
    totals: &'a Totals,
    compression_ratio: f64,
    objects: usize,
    files: usize,
    verification: Option<JsonVerification<'a>>,
}

/// `info --json` of a dump.
#[derive(Debug, Serialize)]
struct JsonDumpInfo<'a> {
    id: String,
    kind: &'static str,
    cluster: &'a str,
    manifest: String,
    system_identifier: String,
    server_version: &'a str,
    server_version_num: u32,
    pg_dump_version: &'a str,
    start_time: String,
    stop_time: String,
    duration_seconds: f64,
    size: u64,
    stored_size: u64,
    compression_ratio: f64,
    globals: JsonObject<'a>,
    databases: Vec<JsonDatabase<'a>>,
    verification: Option<JsonVerification<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonObject<'a> {
    key: &'a str,
    size: u64,
    stored_size: u64,
}

#[derive(Debug, Serialize)]
struct JsonDatabase<'a> {
    name: &'a str,
    object: JsonObject<'a>,
    start_time: String,
    stop_time: String,
    total_rows: u64,
    tables: &'a [TableRows],
}

pub async fn info(config_path: Option<&Path>, args: InfoArgs) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let repository = open_repository(&config).await?;
    let layout = ClusterLayout::new(&config.cluster.name);
    let id = listing::resolve(&repository, &layout, &args.id).await?;
    let audit::Survey { entries, verifications, problems } = audit::survey(&repository, &layout).await?;
    // The survey read every intact manifest; one it left out is read again for its error.
    let entry = match entries.into_iter().find(|entry| entry.id() == id) {
        Some(entry) => entry,
        None => listing::read_entry(&repository, &layout, id).await?,
    };
    let verification = verification(&entry, &verifications, true);
    let id_text = id.to_string();
    for problem in problems.iter().filter(|problem| problem.key.contains(&id_text)) {
        tracing::warn!("{problem}");
    }
    let manifest_key = listing::manifest_key(&layout, id).to_string();
    match &entry {
        Entry::Full(manifest) => {
            let wal = check(&repository, &layout).await?;
            let (first, last) = (manifest.start_segment(), manifest.stop_segment());
            let missing = wal.first_missing(first, last).map(|segment| segment.name(manifest.wal_segment_size));
            let info = JsonFullInfo {
                id: id.to_string(),
                kind: "full",
                method: &manifest.method,
                cluster: &manifest.cluster,
                manifest: manifest_key,
                system_identifier: manifest.system_identifier.to_string(),
                postgres_version: &manifest.postgres_version,
                postgres_version_num: manifest.postgres_version_num,
                wal_segment_size: manifest.wal_segment_size.bytes(),
                timeline: manifest.timeline.id(),
                start_lsn: manifest.start_lsn.to_string(),
                stop_lsn: manifest.stop_lsn.to_string(),
                start_wal: &manifest.start_wal,
                stop_wal: &manifest.stop_wal,
                wal_segments: last.number.saturating_sub(first.number) + 1,
                wal_archived: missing.is_none(),
                wal_first_missing: missing,
                start_time: manifest.start_time.to_rfc3339(),
                stop_time: manifest.stop_time.to_rfc3339(),
                duration_seconds: round(entry.duration_seconds(), 1000.0),
                label: &manifest.label,
                host: &manifest.host,
                lifeboat_version: &manifest.lifeboat_version,
                tablespaces: &manifest.tablespaces,
                totals: &manifest.totals,
                compression_ratio: round(manifest.compression_ratio(), 100.0),
                objects: manifest.objects.len(),
                files: manifest.files.len(),
                verification,
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_full(manifest, &info);
            }
        }
        Entry::Dump(manifest) => {
            let info = dump_info(manifest, &entry, manifest_key, verification);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_dump(manifest, &info);
            }
        }
    }
    Ok(())
}

fn json_object(object: &crate::format::dump_manifest::DumpObject) -> JsonObject<'_> {
    JsonObject { key: &object.key, size: object.size, stored_size: object.stored_size }
}

fn dump_info<'a>(
    manifest: &'a DumpManifest,
    entry: &Entry,
    manifest_key: String,
    verification: Option<JsonVerification<'a>>,
) -> JsonDumpInfo<'a> {
    JsonDumpInfo {
        id: manifest.id.to_string(),
        kind: "dump",
        cluster: &manifest.cluster,
        manifest: manifest_key,
        system_identifier: manifest.system_identifier.to_string(),
        server_version: &manifest.server_version,
        server_version_num: manifest.server_version_num,
        pg_dump_version: &manifest.pg_dump_version,
        start_time: manifest.started_at.to_rfc3339(),
        stop_time: manifest.finished_at.to_rfc3339(),
        duration_seconds: round(entry.duration_seconds(), 1000.0),
        size: entry.size(),
        stored_size: entry.stored_size(),
        compression_ratio: round(entry.compression_ratio(), 100.0),
        globals: json_object(&manifest.globals.object),
        databases: manifest
            .databases
            .iter()
            .map(|database| JsonDatabase {
                name: &database.name,
                object: json_object(&database.object),
                start_time: database.started_at.to_rfc3339(),
                stop_time: database.finished_at.to_rfc3339(),
                total_rows: database.total_rows(),
                tables: &database.tables,
            })
            .collect(),
        verification,
    }
}

fn print_full(manifest: &BackupManifest, info: &JsonFullInfo<'_>) {
    let totals = &manifest.totals;
    println!(
        "full backup {} of cluster {} ({} method)",
        info.id,
        manifest.cluster,
        format!("{:?}", manifest.method).to_lowercase()
    );
    println!("  manifest      {}", info.manifest);
    println!("  started       {}", text_time(manifest.start_time));
    println!("  stopped       {}  ({})", text_time(manifest.stop_time), format_duration(info.duration_seconds));
    println!("  label         {}", manifest.label);
    println!("  host          {} (lifeboat {})", manifest.host, manifest.lifeboat_version);
    println!("  PostgreSQL    {} ({})", manifest.postgres_version, manifest.postgres_version_num);
    println!("  system id     {}", info.system_identifier);
    println!("  timeline      {}", info.timeline);
    println!("  start LSN     {}  ({})", manifest.start_lsn, manifest.start_wal);
    println!("  stop LSN      {}  ({})", manifest.stop_lsn, manifest.stop_wal);
    let archived = match &info.wal_first_missing {
        None => "all archived".to_owned(),
        Some(segment) => format!("NOT all archived: first missing {segment}; this backup cannot be restored yet"),
    };
    println!(
        "  WAL needed    {} .. {}  {} segment(s), {archived}",
        manifest.start_wal, manifest.stop_wal, info.wal_segments
    );
    if manifest.tablespaces.is_empty() {
        println!("  tablespaces   none");
    }
    for tablespace in &manifest.tablespaces {
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
        manifest.objects.len(),
        manifest.compression_ratio()
    );
    print_verification(info.verification.as_ref());
}

fn print_verification(verification: Option<&JsonVerification<'_>>) {
    let Some(verification) = verification else {
        println!("  verification  none yet (`lifeboat verify ID` restores it into a scratch server)");
        return;
    };
    let Some(report) = verification.latest else {
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

fn print_dump(manifest: &DumpManifest, info: &JsonDumpInfo<'_>) {
    println!("dump {} of cluster {}", info.id, manifest.cluster);
    println!("  manifest      {}", info.manifest);
    println!("  started       {}", text_time(manifest.started_at));
    println!("  stopped       {}  ({})", text_time(manifest.finished_at), format_duration(info.duration_seconds));
    println!(
        "  server        {} ({}), system id {}",
        manifest.server_version, manifest.server_version_num, info.system_identifier
    );
    println!("  pg_dump       {}", manifest.pg_dump_version);
    println!(
        "  size          {}, stored {}, {:.1}x smaller",
        format_bytes(info.size),
        format_bytes(info.stored_size),
        info.compression_ratio
    );
    println!(
        "  globals       {} (role passwords {})",
        format_bytes(manifest.globals.object.size),
        if manifest.globals.role_passwords { "included" } else { "not included" }
    );
    print_verification(info.verification.as_ref());
    for database in &manifest.databases {
        println!();
        println!(
            "  database {}: {} (stored {}), {} table(s), {} row(s)",
            database.name,
            format_bytes(database.object.size),
            format_bytes(database.object.stored_size),
            database.tables.len(),
            database.total_rows()
        );
        let mut tables: Vec<&TableRows> = database.tables.iter().collect();
        tables.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| (&a.schema, &a.table).cmp(&(&b.schema, &b.table))));
        for table in tables.iter().take(TOP_TABLES) {
            println!("    {:>14}  {}.{}", table.rows, table.schema, table.table);
        }
        if tables.len() > TOP_TABLES {
            println!("    ... and {} more table(s) (`--json` lists all)", tables.len() - TOP_TABLES);
        }
    }
}

pub async fn delete(config_path: Option<&Path>, args: DeleteArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let layout = &context.layout;
    let deleted = crate::ops::delete(&context, &args.id, args.force).await?;
    let reports =
        if deleted.reports > 0 { format!(", {} verification report(s)", deleted.reports) } else { String::new() };
    println!(
        "deleted {} of cluster {}: {} object(s), {} ({} B) stored{reports}",
        deleted.id,
        layout.name(),
        deleted.objects,
        format_bytes(deleted.bytes),
        deleted.bytes
    );
    Ok(())
}

fn text_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}
