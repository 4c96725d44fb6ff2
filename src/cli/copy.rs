//! `lifeboat copy [--to NAME] [--check] [--json]`: bring the copies up to date with the
//! repository ([`crate::ops::copy`]), or compare what they hold with it.

use std::path::Path;

use clap::Args;

use super::QuietExit;
use crate::report::copy::{CopyCheckView, CopyRunView, Lag};
use crate::report::{self};
use crate::util::format_bytes;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Only copy NAME (a [[copies]] entry) [default: every copy]
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Copy nothing: read every object each copy holds and compare its length and stored bytes with
    /// the primary's, naming each that differs
    #[arg(long)]
    pub check: bool,
    /// Print JSON (schema copy/1, or copy-check/1 with --check; docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: CopyArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    if args.check {
        let view = crate::ops::copy::check(&context, args.to.as_deref()).await?;
        if args.json {
            println!("{}", report::to_json(&view));
        } else {
            print_check(&view);
        }
        if !view.passed() {
            if args.json {
                return Err(QuietExit { code: 1 }.into());
            }
            anyhow::bail!("a copy differs from the repository or could not be checked (above)");
        }
        return Ok(());
    }
    let view = crate::ops::copy::copy(&context, args.to.as_deref()).await?;
    if args.json {
        println!("{}", report::to_json(&view));
    } else {
        print_run(&view);
    }
    if !view.succeeded() {
        if args.json {
            return Err(QuietExit { code: 1 }.into());
        }
        anyhow::bail!(
            "not every copy is up to date (above); run `lifeboat copy` again once the cause is fixed: it resumes"
        );
    }
    Ok(())
}

fn print_run(view: &CopyRunView) {
    for copy in &view.copies {
        let location = copy.location.as_deref().unwrap_or("(not opened)");
        let copied = &copy.copied;
        println!(
            "copy {:?} at {location}: {} objects copied ({}), {} already there; {} backups or dumps completed, \
             {} WAL files, {} reports",
            copy.name,
            copied.objects,
            format_bytes(copied.bytes),
            copied.already_there,
            copied.backups.len(),
            copied.wal_files,
            copied.reports
        );
        for id in &copied.backups {
            println!("  + {id}");
        }
        match &copy.lag {
            Some(lag) if lag.is_empty() => println!("  up to date with {}", view.primary),
            Some(lag) => println!("  still behind: {}", describe_lag(lag)),
            None => {}
        }
        if let Some(error) = &copy.error {
            println!("  FAILED: {error}");
        }
    }
}

fn describe_lag(lag: &Lag) -> String {
    let mut parts = Vec::new();
    if let Some(id) = &lag.newest_backup_missing {
        parts.push(format!("{} backups or dumps (newest {id})", lag.backups_missing));
    }
    if let Some(name) = &lag.newest_wal_missing {
        parts.push(format!("{} WAL files (newest {name})", lag.wal_missing));
    }
    parts.join(", ")
}

fn print_check(view: &CopyCheckView) {
    for copy in &view.copies {
        let location = copy.location.as_deref().unwrap_or("(not opened)");
        println!(
            "copy {:?} at {location}: {} objects compared with {} ({}); {} not copied yet, {} only on the copy",
            copy.name,
            copy.checked,
            view.primary,
            format_bytes(copy.bytes),
            copy.not_copied,
            copy.only_on_copy
        );
        for difference in &copy.differing {
            println!("  DIFFERS {}: {}", difference.key, difference.detail);
        }
        if !copy.differing.is_empty() {
            println!(
                "  Next: remove each object that differs from the copy's storage (with an object of a backup or dump, \
                 remove that backup's manifest from the copy too), then run `lifeboat copy --to {}`: it copies them \
                 again from the repository and checks them",
                copy.name
            );
        }
        if let Some(error) = &copy.error {
            println!("  FAILED: {error}");
        }
    }
}
