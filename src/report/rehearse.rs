//! The view of `lifeboat migrate rehearse` (`--json`): `migrate-rehearse/1`, the stored report
//! with the key it is stored under; and its text, a table per migration. docs/json.md documents it.

use serde::Serialize;

use super::Document;
use crate::migrate::rehearse::measure::StatementMeasure;
use crate::migrate::rehearse::report::RehearsalReport;
use crate::util::format_bytes;

/// `migrate rehearse`: the rehearsal as stored, and where.
#[derive(Debug, Serialize)]
pub struct MigrateRehearseView {
    pub stored_as: String,
    #[serde(flatten)]
    pub report: RehearsalReport,
}

impl Document for MigrateRehearseView {
    fn schema(&self) -> &'static str {
        "migrate-rehearse/1"
    }
}

/// What one statement did on the copy, in words: "held AccessExclusiveLock on public.orders for
/// 41200 ms, rewrote public.orders, 52.3 ms, 1.2 MiB of WAL, 10 rows".
pub fn measured(statement: &StatementMeasure) -> String {
    let mut parts: Vec<String> = statement
        .locks
        .iter()
        .map(|lock| format!("held {} on {} for {} ms", lock.mode, lock.relation, lock.held_ms))
        .collect();
    if !statement.rewritten.is_empty() {
        parts.push(format!("rewrote {}", statement.rewritten.join(", ")));
    }
    parts.push(format!("{:.1} ms", statement.ms));
    parts.push(format!("{} of WAL", format_bytes(statement.wal_bytes)));
    parts.push(format!("{} rows", statement.rows));
    parts.join(", ")
}

/// The rehearsal as text: where the copy came from, then per migration one row per statement
/// (time, rows, WAL, rewrites, locks with their held time) and the down path's verdict.
pub fn text(view: &MigrateRehearseView) -> String {
    let report = &view.report;
    let source = &report.source;
    let mut out = format!(
        "rehearsal for environment {} on {} {} (data as of {}): restore {:.1} s, migrations {:.1} s\n",
        report.environment, source.kind, source.id, source.data_as_of, source.restore_seconds, report.apply_seconds
    );
    if report.migrations.is_empty() && report.failure.is_none() {
        out.push_str("nothing to rehearse: the copy's history has every migration applied\n");
    }
    for migration in &report.migrations {
        let mode = if migration.transactional { "one transaction" } else { "no transaction" };
        out.push_str(&format!(
            "\n{} {} ({}, {mode}): {} ms\n",
            migration.version, migration.name, migration.file, migration.up_ms
        ));
        out.push_str(&format!(
            "  {:>3} {:>5} {:>11} {:>9} {:>10}  {:<18} locks held (mode relation time)\n",
            "#", "line", "time", "rows", "WAL", "rewrites"
        ));
        for statement in &migration.statements {
            let locks: Vec<String> = statement
                .locks
                .iter()
                .map(|lock| format!("{} {} {} ms", lock.mode, lock.relation, lock.held_ms))
                .collect();
            let rewritten = if statement.rewritten.is_empty() { "-".to_owned() } else { statement.rewritten.join(",") };
            out.push_str(&format!(
                "  {:>3} {:>5} {:>8.1} ms {:>9} {:>10}  {:<18} {}\n",
                statement.statement + 1,
                statement.line,
                statement.ms,
                statement.rows,
                format_bytes(statement.wal_bytes),
                rewritten,
                if locks.is_empty() { "-".to_owned() } else { locks.join("; ") }
            ));
            out.push_str(&format!("        {}\n", crate::util::first_line(&statement.text)));
            for finding in migration.findings.iter().filter(|finding| finding.statement == statement.statement) {
                let allowed =
                    finding.allowed.as_ref().map(|reason| format!(" (allowed: {reason})")).unwrap_or_default();
                out.push_str(&format!(
                    "        {} {}{allowed}: {}\n          on the copy: {}\n          fix: {}\n",
                    finding.severity.as_str(),
                    finding.rule,
                    finding.message,
                    measured(statement),
                    finding.fix
                ));
            }
        }
        let down = &migration.down;
        let mut timing = Vec::new();
        if let Some(ms) = down.down_ms {
            timing.push(format!("down {ms} ms"));
        }
        if let Some(ms) = down.up_again_ms {
            timing.push(format!("up again {ms} ms"));
        }
        let timing = if timing.is_empty() { String::new() } else { format!(" ({})", timing.join(", ")) };
        out.push_str(&format!("  down path: {}{timing}\n", down.verdict));
        for statement in &down.schema_missing {
            out.push_str(&format!("    - {statement}\n"));
        }
        for statement in &down.schema_extra {
            out.push_str(&format!("    + {statement}\n"));
        }
        for count in down.row_counts.iter().filter(|count| count.before != count.after_down) {
            out.push_str(&format!(
                "    {}: {} rows before, {} after the down\n",
                count.table, count.before, count.after_down
            ));
        }
        if let Some(detail) = &down.detail {
            out.push_str(&format!("    {detail}\n"));
        }
    }
    match &report.failure {
        Some(failure) => {
            out.push_str(&format!("\nrehearsal failed: {failure}\n"));
            if !report.not_rehearsed.is_empty() {
                out.push_str(&format!("not rehearsed after it: {}\n", report.not_rehearsed.join(", ")));
            }
        }
        None => out.push_str(&format!(
            "\nrehearsal passed: {} migration(s) applied on the copy{}\n",
            report.migrations.len(),
            if report.down_paths_hold { "" } else { "; a down path does not hold (above)" }
        )),
    }
    out.push_str(&format!("report stored as {}\n", view.stored_as));
    out
}
