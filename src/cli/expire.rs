//! `lifeboat expire [--dry-run] [--json]`: applies `[backup] retention` to the repository, then
//! each copy's policy to that copy.

use std::path::Path;

use clap::Args;

use super::QuietExit;
use crate::report::expire::{CopyExpireView, ExpireView};
use crate::report::{self};
use crate::util::format_bytes;

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Delete nothing: print what would go, and for each thing that stays the rule that keeps it
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON (schema expire/1, docs/json.md) instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: Option<&Path>, args: ExpireArgs) -> anyhow::Result<()> {
    let context = super::operation_context(config_path).await?;
    let policy = context.config.backup.retention.clone();
    let expired = crate::ops::expire(&context, &policy, args.dry_run).await?;
    let mut view = ExpireView::new(&expired);
    // Without --repository, each copy is expired too, under its own policy.
    if context.config.copies.opened.is_none() {
        let copies = crate::ops::expire_copies(&context.config, args.dry_run).await;
        view.copies = copies.iter().map(CopyExpireView::new).collect();
    }
    let failed: Vec<&str> =
        view.copies.iter().filter(|copy| copy.error.is_some()).map(|copy| copy.name.as_str()).collect();
    if args.json {
        println!("{}", report::to_json(&view));
        if !failed.is_empty() {
            return Err(QuietExit { code: 1 }.into());
        }
        return Ok(());
    }
    print_text(&view);
    for copy in &view.copies {
        println!();
        match (&copy.expire, &copy.error) {
            (Some(expired), _) => {
                println!("copy {:?} ({}):", copy.name, expired.location);
                print_text(expired);
            }
            (None, error) => println!("copy {:?}: not expired: {}", copy.name, error.as_deref().unwrap_or_default()),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "copies {} were not expired (above); the primary was. Fix the cause and run `lifeboat expire` again, or \
             `lifeboat --repository NAME expire` for one copy",
            failed.join(", ")
        );
    }
    Ok(())
}

fn print_text(view: &ExpireView) {
    if view.policy == "{}" {
        println!(
            "cluster {}: no retention policy is configured ([backup] retention in the configuration), so expire keeps \
             everything",
            view.cluster
        );
    } else {
        println!("cluster {}: retention {}", view.cluster, view.policy);
    }
    if let Some(start) = view.window_start {
        println!("recovery window starts at {}", start.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    let verb = if view.dry_run { "would delete" } else { "deleted" };
    for item in &view.items {
        let action = match item.action {
            "keep" => "keep",
            "locked" => "locked",
            _ => verb,
        };
        println!("  {action:<12} {:<24} {}", item.id, item.reasons.join("; "));
    }
    for report in &view.reports_deleted {
        println!("  {verb:<12} {} ({})", report.key, report.reason);
    }
    for group in &view.wal {
        let action = match group.action {
            "keep" => "keep",
            "locked" => "locked",
            _ => verb,
        };
        let range =
            if group.first == group.last { group.first.clone() } else { format!("{}..{}", group.first, group.last) };
        println!("  {action:<12} WAL {range} ({} file(s)): {}", group.files, group.reason);
    }
    for locked in &view.locked {
        println!(
            "  {:<12} {} (object lock until {}; a later expire deletes it)",
            "locked",
            locked.key,
            locked.until.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    for leftover in &view.leftovers {
        println!("  {verb:<12} {} ({} object(s) without a manifest)", leftover.prefix, leftover.objects);
    }
    if let Some(earliest) = &view.earliest_restorable {
        println!(
            "earliest restorable moment: {} (backup {})",
            earliest.consistent_at.format("%Y-%m-%d %H:%M:%S UTC"),
            earliest.backup
        );
    }
    if view.dry_run {
        println!("dry run: nothing was deleted (run `lifeboat expire` to delete)");
    } else {
        println!("deleted {} object(s), {} stored", view.objects_deleted, format_bytes(view.bytes_deleted));
    }
}
