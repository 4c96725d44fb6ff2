//! The status page at `/`: one server-rendered HTML document, with no JavaScript and no external
//! assets, for people who would rather look than read. The recoverable window is drawn as an
//! inline SVG timeline (full backups as circles, dumps as diamonds, green when their last
//! verification passed with the restore time beside them, grey when not verified, red when it
//! failed; archived WAL as blue bars with the gaps between them in orange; a row per copy with a
//! mark for each backup or dump it holds). The same facts follow as plain tables, which is what a
//! terminal browser shows. Every string from the document is escaped ([`escape`]): an error
//! message or a job name cannot inject markup.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::report::status::{JobRun, Status, StoredItem};
use crate::util::{format_bytes, seconds_between};

/// Fill colours of the timeline, distinct so a picture of the page can be checked.
pub const VERIFIED_FILL: &str = "#1a9850";
pub const UNVERIFIED_FILL: &str = "#9e9e9e";
pub const FAILED_FILL: &str = "#d73027";
pub const WAL_FILL: &str = "#2c7fb8";
pub const GAP_FILL: &str = "#fdae61";
pub const COPY_FILL: &str = "#7b3294";

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 30.0;
/// The narrowest a WAL bar is drawn: WAL archived within seconds is still there to see.
const MIN_BAR: f64 = 8.0;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped: safe in element content and in quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `0.8s`, `45s`, `12m`, `3h 05m`, `2d 04h`.
fn span(seconds: f64) -> String {
    let whole = seconds.abs() as u64;
    match whole {
        0..10 => format!("{:.1}s", seconds.abs()),
        10..60 => format!("{whole}s"),
        60..3600 => format!("{}m", whole / 60),
        3600..86400 => format!("{}h {:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {:02}h", whole / 86400, whole % 86400 / 3600),
    }
}

fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    // Signed: next runs are in the future.
    let seconds = (now - at).num_milliseconds() as f64 / 1000.0;
    if seconds >= 0.0 { format!("{} ago", span(seconds)) } else { format!("in {}", span(seconds)) }
}

fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("<time datetime=\"{}\">{}</time> ({})", at.to_rfc3339(), time(at), ago(at, now))
}

fn item_fill(item: &StoredItem) -> &'static str {
    match item.verified {
        Some(true) => VERIFIED_FILL,
        Some(false) => FAILED_FILL,
        None => UNVERIFIED_FILL,
    }
}

fn verification_text(item: &StoredItem) -> String {
    match (item.verified, item.restore_seconds) {
        (Some(true), Some(seconds)) => format!("passed, restored in {seconds:.1} s"),
        (Some(true), None) => "passed".to_owned(),
        (Some(false), _) => "FAILED".to_owned(),
        (None, _) => "not verified".to_owned(),
    }
}

/// The whole page for `status` at `now`.
pub fn render(status: &Status, now: DateTime<Utc>) -> String {
    let mut html = String::new();
    let title = format!("lifeboat: {} on {}", status.cluster, status.host);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}}\
         th{{background:#f3f3f3}}.bad{{color:{FAILED_FILL};font-weight:bold}}.good{{color:{VERIFIED_FILL}}}\n\
         </style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let health = super::http::health(status, now);
    let _ = writeln!(
        html,
        "<p>lifeboat {} &middot; read from the {} &middot; {} &middot; {}</p>",
        escape(&status.version),
        if status.source == "daemon" { "running daemon" } else { "repository directly (no daemon answered)" },
        match &health {
            Ok(()) => "<span class=\"good\">healthy</span>".to_owned(),
            Err(reason) => format!("<span class=\"bad\">unhealthy: {}</span>", escape(reason)),
        },
        time(now)
    );
    timeline(&mut html, status, now);
    items_table(&mut html, status, now);
    jobs_table(&mut html, status, now);
    archiver_table(&mut html, status, now);
    copies_table(&mut html, status);
    failures_table(&mut html, status, now);
    html.push_str("</body>\n</html>\n");
    html
}

/// Maps times onto the x axis between `from` and `to`.
struct Axis {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Axis {
    fn x(&self, at: DateTime<Utc>) -> f64 {
        let whole = seconds_between(self.from, self.to).max(1.0);
        LEFT + (WIDTH - LEFT - RIGHT) * (seconds_between(self.from, at) / whole).clamp(0.0, 1.0)
    }
}

fn timeline(html: &mut String, status: &Status, now: DateTime<Utc>) {
    html.push_str("<h2>Recoverable window</h2>\n");
    let Some(repository) = &status.repository else {
        html.push_str("<p>The repository has not been looked at yet.</p>\n");
        return;
    };
    if !repository.reachable {
        let _ = writeln!(
            html,
            "<p class=\"bad\">The repository cannot be read: {}. What follows is what was known before.</p>",
            escape(repository.error.as_deref().unwrap_or("no reason recorded"))
        );
    }
    let items = &repository.timeline.items;
    let spans = &repository.timeline.wal_spans;
    let earliest = items.iter().map(|item| item.at).chain(spans.iter().map(|span| span.from)).min();
    let Some(earliest) = earliest else {
        html.push_str("<p>No backups, dumps or archived WAL yet.</p>\n");
        return;
    };
    let latest = now.max(items.iter().map(|item| item.at).chain(spans.iter().map(|span| span.to)).max().unwrap_or(now));
    let pad = chrono::Duration::milliseconds(((latest - earliest).num_milliseconds() / 30).max(60_000));
    let axis = Axis { from: earliest - pad, to: latest + pad };
    let copies: Vec<&str> = repository.copies.iter().map(|copy| copy.name.as_str()).collect();
    let height = 190.0 + 32.0 * copies.len() as f64;
    let _ = writeln!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         role=\"img\" aria-label=\"Timeline of backups, dumps and archived WAL\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    // The axis: five ticks with their times.
    let bottom = height - 30.0;
    let _ = writeln!(
        html,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#888\"/>",
        WIDTH - RIGHT
    );
    // Tick labels as precise as the window is short.
    let label = match (axis.to - axis.from).num_seconds() {
        ..7_200 => "%H:%M:%S",
        7_200..432_000 => "%m-%d %H:%M",
        _ => "%Y-%m-%d",
    };
    for tick in 0..5 {
        let at = axis.from + (axis.to - axis.from) * tick / 4;
        let x = axis.x(at);
        let anchor = match tick {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(
            html,
            "<line x1=\"{x:.1}\" y1=\"20\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" \
             text-anchor=\"{anchor}\" fill=\"#555\">{}</text>",
            bottom + 4.0,
            bottom + 18.0,
            at.format(label)
        );
    }
    let now_x = axis.x(now);
    let _ = writeln!(
        html,
        "<line x1=\"{now_x:.1}\" y1=\"14\" x2=\"{now_x:.1}\" y2=\"{bottom}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{now_x:.1}\" y=\"12\" text-anchor=\"end\" fill=\"#333\">now</text>"
    );
    for (label, y) in [("full backups", 50.0), ("dumps", 90.0), ("WAL", 130.0)] {
        let _ = writeln!(html, "<text x=\"8\" y=\"{}\" fill=\"#333\">{label}</text>", y + 4.0);
    }
    for item in items {
        let x = axis.x(item.at);
        let fill = item_fill(item);
        let tooltip = escape(&format!("{} {} at {}: {}", item.kind, item.id, time(item.at), verification_text(item)));
        let (y, shape) = if item.kind == "dump" {
            (
                90.0,
                format!(
                    "<rect x=\"{:.1}\" y=\"82\" width=\"16\" height=\"16\" transform=\"rotate(45 {x:.1} 90)\" fill=\"{fill}\"",
                    x - 8.0
                ),
            )
        } else {
            (50.0, format!("<circle cx=\"{x:.1}\" cy=\"50\" r=\"9\" fill=\"{fill}\""))
        };
        let _ = writeln!(
            html,
            "{shape}><title>{tooltip}</title>{}",
            if item.kind == "dump" { "</rect>" } else { "</circle>" }
        );
        if let (Some(true), Some(seconds)) = (item.verified, item.restore_seconds) {
            let _ = writeln!(
                html,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"{VERIFIED_FILL}\">restore {}</text>",
                y - 14.0,
                escape(&span(seconds))
            );
        }
    }
    // WAL: one bar per continuous span; between two spans of one timeline, the gap.
    for (index, wal) in spans.iter().enumerate() {
        let (x1, x2) = (axis.x(wal.from), axis.x(wal.to));
        let title = escape(&format!(
            "WAL {} to {} ({} to {})",
            wal.first_segment,
            wal.last_segment,
            time(wal.from),
            time(wal.to)
        ));
        let _ = writeln!(
            html,
            "<rect x=\"{x1:.1}\" y=\"120\" width=\"{:.1}\" height=\"20\" fill=\"{WAL_FILL}\"><title>{title}</title></rect>",
            (x2 - x1).max(MIN_BAR)
        );
        if let Some(next) = spans.get(index + 1).filter(|next| next.timeline == wal.timeline) {
            let gap_end = axis.x(next.from);
            let _ = writeln!(
                html,
                "<rect x=\"{:.1}\" y=\"120\" width=\"{:.1}\" height=\"20\" fill=\"{GAP_FILL}\"><title>gap in the WAL after {}: \
                 point-in-time recovery cannot cross it</title></rect><text x=\"{:.1}\" y=\"154\" fill=\"#b35806\">gap</text>",
                x2.max(x1 + MIN_BAR),
                (gap_end - x2).max(4.0),
                escape(&wal.last_segment),
                x2
            );
        }
    }
    for (row, copy) in copies.iter().enumerate() {
        let y = 170.0 + 32.0 * row as f64;
        let _ = writeln!(html, "<text x=\"8\" y=\"{}\" fill=\"#333\">copy {}</text>", y + 4.0, escape(copy));
        for item in items.iter().filter(|item| item.copies.iter().any(|held| held == copy)) {
            let _ = writeln!(
                html,
                "<rect x=\"{:.1}\" y=\"{}\" width=\"8\" height=\"18\" fill=\"{COPY_FILL}\"><title>{} holds {}</title></rect>",
                axis.x(item.at) - 4.0,
                y - 9.0,
                escape(copy),
                escape(&item.id)
            );
        }
    }
    html.push_str("</svg>\n");
    let _ = writeln!(
        html,
        "<p><span style=\"color:{VERIFIED_FILL}\">&#9679;</span> verified (restore time above) &middot; \
         <span style=\"color:{UNVERIFIED_FILL}\">&#9679;</span> not verified &middot; \
         <span style=\"color:{FAILED_FILL}\">&#9679;</span> verification failed &middot; circles: full backups, \
         diamonds: dumps &middot; <span style=\"color:{WAL_FILL}\">&#9632;</span> archived WAL &middot; \
         <span style=\"color:{GAP_FILL}\">&#9632;</span> gap in the WAL &middot; \
         <span style=\"color:{COPY_FILL}\">&#9632;</span> held by a copy</p>"
    );
}

fn items_table(html: &mut String, status: &Status, now: DateTime<Utc>) {
    let Some(repository) = &status.repository else { return };
    html.push_str("<h2>Backups and dumps</h2>\n");
    let _ = writeln!(
        html,
        "<p>Newest verified: {} &middot; newest full backup: {} &middot; newest dump: {} &middot; stored: {}</p>",
        newest(repository.newest_verified_backup.as_ref(), now, true),
        newest(repository.newest_backup.as_ref(), now, false),
        newest(repository.newest_dump.as_ref(), now, false),
        format_bytes(repository.bytes)
    );
    html.push_str(
        "<table>\n<thead><tr><th>id</th><th>kind</th><th>consistent at</th><th>stored</th><th>verification</th>\
         <th>held by copies</th></tr></thead>\n<tbody>\n",
    );
    for item in repository.timeline.items.iter().rev() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td></tr>",
            escape(&item.id),
            escape(&item.kind),
            when(item.at, now),
            format_bytes(item.bytes),
            if item.verified == Some(false) { " class=\"bad\"" } else { "" },
            escape(&verification_text(item)),
            escape(&item.copies.join(", "))
        );
    }
    html.push_str("</tbody>\n</table>\n");
    if let Some(wal) = &repository.last_archived_wal {
        let _ = writeln!(
            html,
            "<p>Newest WAL in the repository: {}{}</p>",
            escape(wal),
            repository.last_archived_wal_at.map(|at| format!(", stored {}", when(at, now))).unwrap_or_default()
        );
    }
}

/// `missing_is_bad`: no verified backup needs a person; no dump may be how it is configured.
fn newest(item: Option<&StoredItem>, now: DateTime<Utc>, missing_is_bad: bool) -> String {
    match item {
        Some(item) => format!("{} ({})", escape(&item.id), ago(item.at, now)),
        None if missing_is_bad => "<span class=\"bad\">none</span>".to_owned(),
        None => "none".to_owned(),
    }
}

fn run_cell(run: Option<&JobRun>, now: DateTime<Utc>) -> String {
    match run {
        None => "never".to_owned(),
        Some(run) => format!(
            "<span class=\"{}\">{}</span> {}, took {}{}",
            if run.result == "succeeded" { "good" } else { "bad" },
            escape(&run.result),
            when(run.finished_at, now),
            span(run.duration_seconds),
            run.error.as_deref().map(|error| format!(": {}", escape(error))).unwrap_or_default()
        ),
    }
}

fn jobs_table(html: &mut String, status: &Status, now: DateTime<Utc>) {
    html.push_str("<h2>Jobs</h2>\n");
    if status.jobs.is_empty() {
        html.push_str("<p>The configuration schedules no jobs.</p>\n");
        return;
    }
    html.push_str(
        "<table>\n<thead><tr><th>job</th><th>schedule</th><th>last run</th><th>next run</th><th>runs / failures / \
         skipped</th></tr></thead>\n<tbody>\n",
    );
    for job in &status.jobs {
        let schedule = match (&job.schedule, job.chained_after.is_empty()) {
            (Some(cron), true) => escape(cron),
            (Some(cron), false) => format!("{}; after {}", escape(cron), escape(&job.chained_after.join(", "))),
            (None, _) => format!("after {}", escape(&job.chained_after.join(", "))),
        };
        let next = match (job.running_since, job.next_run) {
            (Some(since), _) => format!("running since {}", when(since, now)),
            (None, Some(next)) => when(next, now),
            (None, None) => "-".to_owned(),
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{schedule}</td><td>{}</td><td>{next}</td><td>{} / {} / {}</td></tr>",
            escape(&job.job),
            run_cell(job.last_run.as_ref(), now),
            job.runs_total,
            job.failures_total,
            job.skipped_total
        );
    }
    html.push_str("</tbody>\n</table>\n");
}

fn archiver_table(html: &mut String, status: &Status, now: DateTime<Utc>) {
    let Some(archiver) = &status.archiver else { return };
    html.push_str("<h2>PostgreSQL's archiver</h2>\n");
    if let Some(error) = &archiver.error {
        let _ = writeln!(html, "<p class=\"bad\">PostgreSQL could not be asked: {}</p>", escape(error));
    }
    if archiver.failing() {
        html.push_str("<p class=\"bad\">Archiving is failing: WAL does not reach the repository.</p>\n");
    }
    let count = |value: Option<i64>| value.map_or("-".to_owned(), |value| value.to_string());
    let last = |wal: &Option<String>, at: Option<DateTime<Utc>>| match (wal, at) {
        (Some(wal), Some(at)) => format!("{} {}", escape(wal), when(at, now)),
        _ => "-".to_owned(),
    };
    let _ = writeln!(
        html,
        "<table>\n<tbody>\n<tr><th>archived</th><td>{}</td></tr>\n<tr><th>last archived</th><td>{}</td></tr>\n\
         <tr><th>failed</th><td>{}</td></tr>\n<tr><th>last failed</th><td>{}</td></tr>\n\
         <tr><th>.ready files</th><td>{}</td></tr>\n</tbody>\n</table>",
        count(archiver.archived_count),
        last(&archiver.last_archived_wal, archiver.last_archived_time),
        count(archiver.failed_count),
        last(&archiver.last_failed_wal, archiver.last_failed_time),
        archiver.ready_files.map_or("unknown (pgdata not readable here)".to_owned(), |ready| ready.to_string())
    );
}

fn copies_table(html: &mut String, status: &Status) {
    let Some(repository) = &status.repository else { return };
    if repository.copies.is_empty() {
        return;
    }
    html.push_str(
        "<h2>Copies</h2>\n<table>\n<thead><tr><th>copy</th><th>lag</th><th>missing</th><th>oldest missing</th></tr>\
         </thead>\n<tbody>\n",
    );
    for copy in &repository.copies {
        let _ = match &copy.error {
            Some(error) => writeln!(
                html,
                "<tr><td>{}</td><td colspan=\"3\" class=\"bad\">cannot be read: {}</td></tr>",
                escape(&copy.name),
                escape(error)
            ),
            None => writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{} backups or dumps, {} WAL files</td><td>{}</td></tr>",
                escape(&copy.name),
                if copy.lag_seconds > 0.0 { span(copy.lag_seconds) } else { "up to date".to_owned() },
                copy.backups_missing,
                copy.wal_missing,
                escape(copy.oldest_missing.as_deref().unwrap_or("-"))
            ),
        };
    }
    html.push_str("</tbody>\n</table>\n");
}

fn failures_table(html: &mut String, status: &Status, now: DateTime<Utc>) {
    html.push_str("<h2>Newest failures</h2>\n");
    if status.recent_failures.is_empty() {
        html.push_str("<p>None.</p>\n");
        return;
    }
    html.push_str("<table>\n<thead><tr><th>job</th><th>when</th><th>error</th></tr></thead>\n<tbody>\n");
    for failure in &status.recent_failures {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&failure.job),
            when(failure.at, now),
            escape(&failure.error)
        );
    }
    html.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status::{FailedRun, JobStatus, RepositoryStatus, Timeline, WalSpan};

    const EVIL: &str = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>&";

    #[test]
    fn every_string_from_the_document_is_escaped() {
        let now = Utc::now();
        let item = StoredItem {
            id: EVIL.into(),
            kind: "full".into(),
            at: now,
            verified: Some(true),
            restore_seconds: Some(3.0),
            copies: vec![EVIL.into()],
            ..StoredItem::default()
        };
        let status = Status {
            cluster: EVIL.into(),
            host: EVIL.into(),
            version: EVIL.into(),
            jobs: vec![JobStatus {
                schedule: Some(EVIL.into()),
                chained_after: vec![EVIL.into()],
                ..JobStatus::never_run(EVIL.into())
            }],
            repository: Some(RepositoryStatus {
                reachable: false,
                error: Some(EVIL.into()),
                newest_verified_backup: Some(item.clone()),
                last_archived_wal: Some(EVIL.into()),
                copies: vec![crate::report::status::CopyStatus {
                    name: EVIL.into(),
                    error: Some(EVIL.into()),
                    ..Default::default()
                }],
                timeline: Timeline {
                    items: vec![item],
                    wal_spans: vec![WalSpan {
                        timeline: 1,
                        from: now,
                        to: now,
                        first_segment: EVIL.into(),
                        last_segment: EVIL.into(),
                    }],
                },
                ..RepositoryStatus::default()
            }),
            recent_failures: vec![FailedRun { job: EVIL.into(), at: now, error: EVIL.into() }],
            ..Status::default()
        };
        let html = render(&status, now);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("'x'"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&gt;&lt;img"), "{html}");
        // Only the page's own markup opens elements: no raw `<` from the document survives.
        let opened: Vec<&str> =
            html.match_indices('<').map(|(at, _)| &html[at + 1..(at + 8).min(html.len())]).collect();
        assert!(opened.iter().all(|tag| !tag.starts_with("scr") && !tag.starts_with("img")), "{opened:?}");
    }

    #[test]
    fn times_say_how_long_ago_or_how_soon() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::milliseconds(800), now), "0.8s ago");
        assert_eq!(ago(now + chrono::Duration::hours(2), now), "in 2h 00m");
        assert_eq!(ago(now - chrono::Duration::days(3), now), "3d 00h ago");
    }

    #[test]
    fn the_timeline_marks_verified_backups_wal_and_gaps_in_their_colours() {
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let span = |from, to, first: &str| WalSpan {
            timeline: 1,
            from,
            to,
            first_segment: first.into(),
            last_segment: first.into(),
        };
        let status = Status {
            repository: Some(RepositoryStatus {
                reachable: true,
                timeline: Timeline {
                    items: vec![
                        StoredItem {
                            id: "a".into(),
                            kind: "full".into(),
                            at: now - hour * 5,
                            verified: Some(true),
                            restore_seconds: Some(42.0),
                            ..Default::default()
                        },
                        StoredItem { id: "b".into(), kind: "dump".into(), at: now - hour * 2, ..Default::default() },
                    ],
                    wal_spans: vec![span(now - hour * 6, now - hour * 4, "1"), span(now - hour * 3, now, "2")],
                },
                ..RepositoryStatus::default()
            }),
            ..Status::default()
        };
        let html = render(&status, now);
        assert!(html.contains(&format!("r=\"9\" fill=\"{VERIFIED_FILL}\"")), "{html}");
        assert!(html.contains(&format!("fill=\"{UNVERIFIED_FILL}\"")), "{html}");
        assert_eq!(html.matches(&format!("height=\"20\" fill=\"{WAL_FILL}\"")).count(), 2, "{html}");
        assert_eq!(html.matches(&format!("fill=\"{GAP_FILL}\"><title>gap")).count(), 1, "{html}");
        assert!(html.contains("restore 42s"), "{html}");
        assert!(html.contains("(5h 00m ago)"), "{html}");
    }
}
