//! `lifeboat audit [--since TIME|DURATION] [--json]`: the cluster's audit trail as stored in the
//! repository (see [`crate::ops::audit`]), oldest first.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::{Config, parse_duration};
use crate::ops::audit::{AuditRecord, read_trail};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records from this time on: an RFC 3339 time ('2026-12-01T10:00:00Z') or a duration
    /// back from now ('2h', '7d')
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Print the records as a JSON array on stdout instead of one line each
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
    let context = crate::ops::open(Config::load(config_path)?).await?;
    // What this host has not mirrored yet belongs to the trail too.
    context.events.audit().flush().await;
    let records = read_trail(&context.repository, &context.layout, args.since).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        for record in &records {
            println!("{}", text_line(record));
        }
    }
    Ok(())
}

fn text_line(record: &AuditRecord) -> String {
    let mut line = format!(
        "{} {:<8} {:<9} {:<9} {}@{}",
        record.time.format("%Y-%m-%d %H:%M:%S%.3fZ"),
        record.operation,
        record.event,
        record.result.as_deref().unwrap_or("-"),
        record.user,
        record.host
    );
    for (name, value) in &record.arguments {
        line.push_str(&format!(" {name}={value}"));
    }
    if let Some(seconds) = record.duration_seconds {
        line.push_str(&format!(" {seconds:.1}s"));
    }
    if !record.created.is_empty() {
        line.push_str(&format!(" created={}", record.created.join(",")));
    }
    if !record.deleted.is_empty() {
        line.push_str(&format!(" deleted={}", record.deleted.join(",")));
    }
    if let Some(error) = &record.error {
        line.push_str(&format!(": {error}"));
    }
    line
}
