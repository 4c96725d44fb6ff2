//! `lifeboat migrate restore-before V [--pgdata DIR [--delta | --force] [--start] | --verify-only]
//! [--yes] [--json]`: undo migration V and everything after it with a point-in-time restore to the
//! restore point made just before V. The runner finds V's point (its history, else the history
//! exported into the repository) and calls [`run`], which says what would be lost before doing
//! anything and asks for confirmation at a terminal unless `--yes`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args};

use crate::config::Config;
use crate::migrate::gate::RestorePoint;
use crate::migrate::restore_before::{self, Destination, Loss, Undone};
use crate::restore::target_dir::ExistingData;
use crate::util::format_bytes;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("into").args(["pgdata", "verify_only"]).required(true)))]
pub struct RestoreBeforeArgs {
    /// The migration version to undo, with everything applied after it
    pub version: String,
    /// Restore into this data directory (new, empty, or with --delta/--force; the server must
    /// be stopped)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Restore into a scratch directory under verify.scratch_dir, start it, check that recovery
    /// stopped at the restore point, and remove it: proves the undo works, changes nothing
    #[arg(long)]
    pub verify_only: bool,
    /// With --pgdata: rewrite only the files that differ and remove the ones the backup lacks
    #[arg(long, conflicts_with_all = ["force", "verify_only"])]
    pub delta: bool,
    /// With --pgdata: delete everything in it before restoring
    #[arg(long, conflicts_with = "verify_only")]
    pub force: bool,
    /// With --pgdata: start PostgreSQL afterwards and wait until it reached the restore point
    #[arg(long, conflicts_with = "verify_only")]
    pub start: bool,
    /// With --start: the port the server listens on [default: the restored configuration's]
    #[arg(long, value_name = "PORT", requires = "start")]
    pub port: Option<u16>,
    /// Do not ask for confirmation (needed when not at a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Migration V's restore point and the migrations applied after V (version, name), oldest first.
#[derive(Debug, Clone)]
pub struct Undo {
    pub point: RestorePoint,
    pub version: String,
    pub later: Vec<(String, String)>,
}

/// Says what restoring to V's point loses, asks, and restores.
pub async fn run(config: &Config, args: &RestoreBeforeArgs, undo: Undo) -> anyhow::Result<ExitCode> {
    let context = super::context_for(config.clone()).await?;
    let loss = restore_before::what_would_be_lost(&context.repository, &context.layout, &undo.point).await?;
    let destination = match &args.pgdata {
        Some(dir) => Destination::Pgdata {
            dir: std::path::absolute(dir)?,
            existing: ExistingData::from_flags(args.delta, args.force),
            start: args.start.then_some(args.port),
        },
        None => Destination::VerifyOnly,
    };
    if args.json {
        eprintln!("{}", plan_text(&undo, &loss, &destination));
    } else {
        println!("{}", plan_text(&undo, &loss, &destination));
    }
    if !args.yes && !confirmed(&undo, &destination)? {
        anyhow::bail!("not confirmed; nothing was restored");
    }
    let restore_command = super::restore::default_restore_command(config.origin(), config.copies.opened.as_deref())?;
    let undone = restore_before::restore_to_point(&context, &undo.point, &destination, restore_command).await?;
    if args.json {
        println!("{}", result_json(&undo, &loss, &undone));
    } else {
        print_result(&undo, &destination, &undone);
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_text(undo: &Undo, loss: &Loss, destination: &Destination) -> String {
    let point = &undo.point;
    let mut lines = vec![format!(
        "restore-before {}: back to restore point {} (LSN {}, {}, timeline {})",
        undo.version,
        point.name,
        point.lsn,
        point.time.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        point.timeline
    )];
    lines.push(format!("  undoes migration {} and the {} applied after it:", undo.version, undo.later.len()));
    for (version, name) in &undo.later {
        lines.push(format!("    {version} {name}"));
    }
    let span = match (loss.first_commit, loss.last_commit) {
        (Some(first), Some(last)) => format!(
            ", committed from {} to {}",
            first.format("%Y-%m-%d %H:%M:%S UTC"),
            last.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        _ => String::new(),
    };
    lines.push(format!(
        "  loses {} transaction(s) committed after the point{span}, and {} of WAL (to {}, the end of the archive \
         in segment {})",
        loss.commits,
        format_bytes(loss.wal_bytes),
        loss.archive_end,
        loss.last_segment
    ));
    lines.push(match destination {
        Destination::Pgdata { dir, .. } => format!("  into {}", dir.display()),
        Destination::VerifyOnly => {
            "  --verify-only: into a scratch directory, started, checked and removed; nothing else changes".to_owned()
        }
    });
    lines.join("\n")
}

/// Asks at a terminal; without one, only `--yes` goes ahead.
fn confirmed(undo: &Undo, destination: &Destination) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("this is not a terminal to confirm at: pass --yes to restore");
    }
    let what = match destination {
        Destination::Pgdata { dir, .. } => format!("restore into {}", dir.display()),
        Destination::VerifyOnly => "run the check".to_owned(),
    };
    eprint!("{what} to before {}? Type yes: ", undo.version);
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

fn print_result(undo: &Undo, destination: &Destination, undone: &Undone) {
    let summary = &undone.summary;
    match destination {
        Destination::Pgdata { dir, .. } => {
            println!(
                "restored backup {} into {} to restore point {} (before {})",
                summary.backup,
                dir.display(),
                undo.point.name,
                undo.version
            );
            match summary.reached.as_ref().and_then(|reached| reached.stopped.as_deref()) {
                Some(stopped) => println!("  the server reached it: {stopped}"),
                None => println!("  start PostgreSQL on it: recovery stops at the restore point and promotes"),
            }
        }
        Destination::VerifyOnly => println!(
            "verified: backup {} recovers to restore point {} ({}); the scratch directory was removed",
            summary.backup,
            undo.point.name,
            undone.verified.as_deref().unwrap_or_default()
        ),
    }
}

fn result_json(undo: &Undo, loss: &Loss, undone: &Undone) -> serde_json::Value {
    let summary = &undone.summary;
    serde_json::json!({
        "version": undo.version,
        "restore_point": undo.point,
        "later": undo.later.iter().map(|(version, name)| serde_json::json!({"version": version, "name": name}))
            .collect::<Vec<_>>(),
        "loss": loss,
        "backup": summary.backup.to_string(),
        "pgdata": summary.pgdata,
        "stopped": summary.reached.as_ref().and_then(|reached| reached.stopped.clone()),
        "verified": undone.verified,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The arguments as the runner's `migrate restore-before` subcommand embeds them.
    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: RestoreBeforeArgs,
    }

    #[test]
    fn restore_before_takes_a_pgdata_or_verify_only_and_nothing_else() {
        use clap::CommandFactory as _;
        Command::command().debug_assert();
        let parsed =
            Command::try_parse_from(["x", "20261206120000", "--pgdata", "/tmp/undo", "--delta", "--yes"]).unwrap();
        assert_eq!(parsed.args.pgdata.as_deref(), Some(std::path::Path::new("/tmp/undo")));
        assert!(parsed.args.delta && parsed.args.yes && !parsed.args.verify_only);
        assert!(Command::try_parse_from(["x", "V", "--verify-only"]).unwrap().args.verify_only);
        assert!(Command::try_parse_from(["x", "V"]).is_err(), "neither --pgdata nor --verify-only");
        assert!(Command::try_parse_from(["x", "V", "--pgdata", "d", "--verify-only"]).is_err());
        for option in ["--delta", "--force", "--start"] {
            assert!(Command::try_parse_from(["x", "V", "--verify-only", option]).is_err(), "{option}");
        }
    }
}
