//! `lifeboat restore`: a physical restore with point-in-time recovery (`--pgdata DIR`), or a
//! logical restore of one database from a dump (`--dump ID --db NAME --into URL`).

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, ValueEnum};

use super::restore_dump::{self, DumpRestoreRequest};
use crate::catalog::lsn::Lsn;
use crate::config::BackupConfig;
use crate::report::{self, restore::RestoreView};
use crate::restore::start::Outcome;
use crate::restore::target::{RecoveryGoal, RecoveryTarget, TargetAction, TimelineChoice};
use crate::restore::target_dir::ExistingData;
use crate::restore::{ReadAheadSpool, RestoreOptions};
use crate::util::{format_bytes, shell_quote};

/// `--target latest|immediate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamedTarget {
    /// Everything in the archive (the default)
    Latest,
    /// Only up to the end of the backup: the earliest consistent state
    Immediate,
}

/// `--archive-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveMode {
    /// Keep the restored server's archive settings (it archives its new timeline)
    Preserve,
    /// Turn archiving off on the restored server (a copy for inspection)
    Off,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target_kind").args(["target", "target_time", "target_lsn", "target_xid", "target_name"])))]
#[command(group(ArgGroup::new("mode").args(["pgdata", "dump"]).required(true)))]
pub struct RestoreArgs {
    /// Restore a base backup into this data directory (new, empty, or with --delta/--force)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Restore this backup [default: the newest one that can reach the target]
    #[arg(long, value_name = "ID", requires = "pgdata")]
    pub backup: Option<String>,
    /// Recover to the end of the archived WAL (latest) or only to the end of the backup (immediate)
    #[arg(long, value_enum, value_name = "latest|immediate", requires = "pgdata")]
    pub target: Option<NamedTarget>,
    /// Recover to this time, with a UTC offset: '2026-11-22 02:59:00+00'
    #[arg(long, value_name = "TIME", requires = "pgdata", value_parser = RecoveryTarget::parse_time)]
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover to this WAL location, e.g. 0/3000060
    #[arg(long, value_name = "LSN", requires = "pgdata")]
    pub target_lsn: Option<Lsn>,
    /// Recover to the commit of this transaction id
    #[arg(long, value_name = "XID", requires = "pgdata", value_parser = RecoveryTarget::parse_xid)]
    pub target_xid: Option<u32>,
    /// Recover to this restore point (made with pg_create_restore_point)
    #[arg(long, value_name = "NAME", requires = "pgdata", value_parser = RecoveryTarget::parse_name)]
    pub target_name: Option<String>,
    /// The timeline to follow: latest, current (the backup's) or a number
    #[arg(long, value_name = "TIMELINE", default_value = "latest", value_parser = TimelineChoice::parse)]
    pub target_timeline: TimelineChoice,
    /// What the server does at the target: promote (accept writes), pause (read-only), shutdown
    #[arg(long, value_enum, default_value_t = TargetAction::Promote)]
    pub target_action: TargetAction,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub target_exclusive: bool,
    /// Rewrite only the files that differ from the backup and remove files it does not have
    #[arg(long, conflicts_with = "force")]
    pub delta: bool,
    /// Delete everything in --pgdata (and the tablespace directories) before restoring
    #[arg(long)]
    pub force: bool,
    /// Restore a tablespace somewhere else: OLD is its original location, name or oid
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_mapping)]
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Objects downloaded at once [default: [backup] workers, else the number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(*BackupConfig::WORKERS.end())))]
    pub workers: Option<u32>,
    /// Whether the restored server archives WAL
    #[arg(long, value_enum, default_value_t = ArchiveMode::Preserve)]
    pub archive_mode: ArchiveMode,
    /// Print the plan (backup, WAL range, bytes, files) and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Start PostgreSQL afterwards, wait for recovery to reach the target, and report the point reached
    #[arg(long)]
    pub start: bool,
    /// With --start: the port the server listens on [default: the restored configuration's]
    #[arg(long, value_name = "PORT", requires = "start")]
    pub port: Option<u16>,
    /// The restore_command written for PostgreSQL [default: this lifeboat's wal-fetch with this configuration]
    #[arg(long, value_name = "COMMAND")]
    pub restore_command: Option<String>,

    /// Restore from this dump (an id, or `latest`) instead of a base backup
    #[arg(long, value_name = "ID", requires_all = ["db", "into"])]
    pub dump: Option<String>,
    /// With --dump: the database of the dump to restore
    #[arg(long, value_name = "NAME", requires = "dump")]
    pub db: Option<String>,
    /// With --dump: a connection URL of the database to restore into
    #[arg(long, value_name = "URL", requires = "dump")]
    pub into: Option<String>,
    /// With --dump: restore only this table (`name` or `schema.name`; repeat for more)
    #[arg(long, value_name = "TABLE", requires = "dump")]
    pub table: Vec<String>,
    /// With --dump: drop the objects being restored first
    #[arg(long, requires = "dump")]
    pub clean: bool,
    /// Print the result as JSON on stdout (schema restore/1, restore-plan/1 with --dry-run,
    /// dump-restore/1 with --dump; docs/json.md)
    #[arg(long)]
    pub json: bool,
}

fn parse_mapping(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => Ok((old.to_owned(), PathBuf::from(new))),
        _ => Err(format!("{text:?} is not OLD=NEW, e.g. /srv/ts1=/mnt/restore/ts1")),
    }
}

impl RestoreArgs {
    fn target(&self) -> RecoveryTarget {
        if let Some(time) = self.target_time {
            RecoveryTarget::Time(time)
        } else if let Some(lsn) = self.target_lsn {
            RecoveryTarget::Lsn(lsn)
        } else if let Some(xid) = self.target_xid {
            RecoveryTarget::Xid(xid)
        } else if let Some(name) = &self.target_name {
            RecoveryTarget::Name(name.clone())
        } else if self.target == Some(NamedTarget::Immediate) {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::Latest
        }
    }
}

pub async fn run(config_path: Option<&Path>, args: RestoreArgs) -> anyhow::Result<()> {
    if let Some(dump) = args.dump {
        let request = DumpRestoreRequest {
            dump,
            database: args.db.unwrap_or_default(),
            into: args.into.unwrap_or_default(),
            tables: args.table,
            clean: args.clean,
            json: args.json,
        };
        return restore_dump::run(config_path, request).await;
    }
    let context = super::operation_context(config_path).await?;
    let config = &context.config;
    let pgdata = args.pgdata.clone().expect("clap requires --pgdata without --dump");
    let pgdata = std::path::absolute(&pgdata)?;
    let restore_command = match &args.restore_command {
        Some(command) => command.clone(),
        None => default_restore_command(config.origin(), config.copies.opened.as_deref())?,
    };
    let backup = match &args.backup {
        Some(text) => Some(text.parse().map_err(|error| anyhow::anyhow!("--backup {text}: {error}"))?),
        None => None,
    };
    let options = RestoreOptions {
        pgdata: pgdata.clone(),
        backup,
        goal: RecoveryGoal {
            target: args.target(),
            timeline: args.target_timeline,
            action: args.target_action,
            exclusive: args.target_exclusive,
        },
        existing: ExistingData::from_flags(args.delta, args.force),
        tablespace_map: args.tablespace_map.clone(),
        workers: args.workers.unwrap_or(config.backup.workers),
        server_settings: match args.archive_mode {
            ArchiveMode::Off => vec![("archive_mode", "off".to_owned())],
            ArchiveMode::Preserve => Vec::new(),
        },
        dry_run: args.dry_run,
        start: args.start.then_some(args.port),
        // Only lifeboat's own wal-fetch serves from the spool read-ahead fills.
        read_ahead: match args.restore_command {
            Some(_) => None,
            None => ReadAheadSpool::of_wal_fetch(config, &pgdata),
        },
        restore_command,
        os_user: config.cluster.os_user.clone(),
        bin_dir: config.cluster.bin_dir.clone(),
        cancel: context.cancel.token().clone(),
        progress: Default::default(),
    };
    let summary = crate::ops::restore(&context, options).await?;
    let view = RestoreView::new(&summary);
    if args.json {
        println!("{}", report::to_json(&view));
    } else {
        print_summary(&view);
    }
    Ok(())
}

/// `'<this lifeboat>' --config '<this configuration>' wal-fetch %f %p`, quoted for the shell
/// PostgreSQL runs it with; restoring from a copy, `--repository '<copy>'` too, so the WAL comes
/// from where the backup came from.
pub(super) fn default_restore_command(config: &Path, copy: Option<&str>) -> anyhow::Result<String> {
    let exe = std::env::current_exe().map_err(|error| anyhow::anyhow!("cannot find this program's path: {error}"))?;
    let arguments = match copy {
        Some(name) => format!("--repository {} wal-fetch %f %p", shell_quote(name)),
        None => "wal-fetch %f %p".to_owned(),
    };
    Ok(lifeboat_command(&exe, &std::path::absolute(config)?, &arguments))
}

/// `'<exe>' --config '<config>' <arguments>`: how PostgreSQL runs lifeboat (archive_command,
/// restore_command).
pub(super) fn lifeboat_command(exe: &Path, config: &Path, arguments: &str) -> String {
    format!(
        "{} --config {} {arguments}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&config.display().to_string())
    )
}

fn print_summary(view: &RestoreView) {
    let verb = if view.dry_run { "would restore" } else { "restored" };
    println!("{verb} backup {} (consistent at {}, {})", view.backup.id, view.backup.stop_lsn, view.backup.stop_time);
    println!("  into       {}", view.pgdata);
    for (oid, location) in &view.tablespaces {
        println!("  tablespace {oid} -> {location}");
    }
    println!("  target     {} on timeline {}", view.target, view.timeline);
    let wal = &view.wal;
    println!(
        "  WAL        {} .. {} ({} segments needed; the archive continues to {})",
        wal.first, wal.last, wal.segments, wal.archive_end
    );
    println!(
        "             {} .. {} authenticated ({} segments, to the backup's consistent point)",
        wal.first, wal.authenticated_to, wal.authenticated
    );
    let files = if view.dry_run { "to write" } else { "written" };
    println!(
        "  files      {} of {} {files} ({}, {} fetched)",
        view.files.restored,
        view.files.total,
        format_bytes(view.bytes.restored),
        format_bytes(view.bytes.fetched)
    );
    if view.files.kept > 0 || !view.files.removed.is_empty() {
        println!("  delta      {} files already intact, {} removed", view.files.kept, view.files.removed.len());
    }
    if view.dry_run {
        println!("dry run: nothing was written");
        return;
    }
    println!("  took       {:.1} s to write the files", view.restore_seconds);
    match &view.recovery {
        None => {
            println!("start PostgreSQL on {} to recover (or run the restore with --start)", view.pgdata)
        }
        Some(reached) => {
            let outcome = match reached.outcome {
                Outcome::Promoted => "recovery finished; the server accepts connections",
                Outcome::Paused => {
                    "recovery paused at the target; the server is read-only (pg_wal_replay_resume() promotes)"
                }
                Outcome::Shutdown => "recovery reached the target and the server shut down",
            };
            println!("{outcome}");
            for line in [&reached.stopped, &reached.redo_done].into_iter().flatten() {
                println!("  {line}");
            }
            if let Some(time) = &reached.last_transaction {
                println!("  last transaction replayed committed at {time}");
            }
            if let Some(timeline) = reached.new_timeline {
                println!("  new timeline {timeline}");
            }
            println!(
                "  {} WAL segments restored in {:.1} s; server log {}",
                reached.segments_restored,
                reached.seconds,
                reached.log_file.display()
            );
        }
    }
}
