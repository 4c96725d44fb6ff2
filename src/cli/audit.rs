//! `lifeboat audit [--since TIME|DURATION] [--json]`: the cluster's audit trail as stored in the
//! repository (see [`crate::ops::audit`]), oldest first.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use super::table;
use crate::config::parse_duration;
use crate::ops::audit::{AuditRecord, read_trail};
use crate::report::{self, audit::AuditView};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records from this time on: an RFC 3339 time ('2026-12-01T10:00:00Z') or a duration
    /// back from now ('2h', '7d')
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Print JSON (schema audit/1, docs/json.md) on stdout instead of a table
    #[arg(long)]
    pub json: bool,
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = parse_duration(text)
        .map_err(|_| format!("{text:?} is neither a time like 2026-12-01T10:00:00Z nor a duration like 2h"))?;
    let duration = chrono::Duration::from_std(duration).map_err(|error| format!("{text:?}: {error}"))?;
    Ok(Utc::now() - duration)
}

pub async fn run(config_path: Option<&Path>, args: AuditArgs) -> anyhow::Result<()> {
    let context = crate::ops::open(super::load_config(config_path)?).await?;
    // What this host has not mirrored yet belongs to the trail too.
    context.events.audit().flush().await;
    let records = read_trail(&context.repository, &context.layout, args.since).await?;
    let view = AuditView {
        cluster: context.layout.name().to_string(),
        since: args.since.map(|since| since.to_rfc3339()),
        records,
    };
    if args.json {
        println!("{}", report::to_json(&view));
    } else if view.records.is_empty() {
        println!("no audit records for cluster {}{}", view.cluster, since_text(args.since));
    } else {
        print_table(&view.records);
    }
    Ok(())
}

fn since_text(since: Option<DateTime<Utc>>) -> String {
    since.map(|since| format!(" since {}", since.format("%Y-%m-%d %H:%M:%SZ"))).unwrap_or_default()
}

/// One row per record; DETAIL holds the arguments, the duration, what was created or deleted and
/// the error, in that order.
fn print_table(records: &[AuditRecord]) {
    let mut rows = table::plain(&["TIME (UTC)", "OPERATION", "EVENT", "RESULT", "BY", "DETAIL"], &[]);
    for record in records {
        rows.add_row(vec![
            record.time.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            record.operation.clone(),
            record.event.clone(),
            record.result.clone().unwrap_or_else(|| "-".to_owned()),
            format!("{}@{}", record.user, record.host),
            detail(record),
        ]);
    }
    println!("{}", table::render(&rows));
}

fn detail(record: &AuditRecord) -> String {
    let mut parts: Vec<String> = record.arguments.iter().map(|(name, value)| format!("{name}={value}")).collect();
    if let Some(seconds) = record.duration_seconds {
        parts.push(format!("{seconds:.1}s"));
    }
    if !record.created.is_empty() {
        parts.push(format!("created={}", record.created.join(",")));
    }
    if !record.deleted.is_empty() {
        parts.push(format!("deleted={}", record.deleted.join(",")));
    }
    let mut text = parts.join(" ");
    if let Some(error) = &record.error {
        text.push_str(&format!(": {error}"));
    }
    text
}
