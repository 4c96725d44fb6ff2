//! `/metrics`: the daemon's state in the Prometheus text format (OpenMetrics flavour, as
//! `prometheus-client` writes it), from two sources read at each scrape:
//!
//! - the `status/1` document ([`Status`]): per job (`job` label: `backup`, `dump`, `verify`,
//!   `expire`, `wal-check`, `copy:<name>`) its last success, duration, size and counts; the
//!   newest (verified) backup's age and restore time; the archiver; the repository; each copy;
//! - the operations' own [`Metrics`] (`lifeboat_operations_finished_total`, ...), which every
//!   operation's events fill.
//!
//! Ages are computed at the scrape. `lifeboat_last_verified_backup_age_seconds`, the one a pager
//! watches, is `+Inf` when the repository was read and holds no verified backup (so one rule,
//! `> threshold`, fires for "too old" and "none"), and absent only before the repository was
//! first looked at. While the repository cannot be read the ages keep growing from what was last
//! known. The last archived segment's name is left out of the labels on purpose (a new series
//! every segment); `/status` has it, the metrics have its time.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::state::DaemonState;
use crate::ops::event::{MetricValue, Metrics};
use crate::report::status::{Status, StoredItem};
use crate::util::seconds_between;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The whole exposition for `status` and `metrics` at `now`.
pub fn render(status: &Status, metrics: &Metrics, now: DateTime<Utc>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { families: families(status, metrics, now) }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing into a String does not fail");
    text
}

/// [`render`] of the state as it stands.
pub fn render_state(state: &DaemonState, metrics: &Arc<Metrics>) -> String {
    render(&state.snapshot(), metrics, Utc::now())
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// One sample of a family.
#[derive(Debug, Clone)]
enum Sample {
    Counter(f64),
    Gauge(f64),
    /// A histogram without buckets but `+Inf`: the sum and count the operations keep.
    Histogram {
        sum: f64,
        count: u64,
    },
}

/// One metric: its name (for a counter without `_total`, which the encoder appends), its help,
/// and its samples by labels.
#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Labels, Sample)>,
}

#[derive(Debug)]
struct Snapshot {
    families: Vec<Family>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
            for (labels, sample) in &family.samples {
                if labels.is_empty() {
                    encode_sample(sample, &mut metric)?;
                } else {
                    encode_sample(sample, &mut metric.encode_family(labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_sample(sample: &Sample, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
    match sample {
        Sample::Counter(value) => {
            encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(value, None)
        }
        Sample::Gauge(value) => encoder.encode_gauge(value),
        Sample::Histogram { sum, count } => encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            *sum,
            *count,
            &[(f64::INFINITY, *count)],
            None,
        ),
    }
}

/// Families as they are filled: in order of first use.
#[derive(Default)]
struct Builder {
    families: Vec<Family>,
}

impl Builder {
    fn sample(&mut self, name: &str, help: &str, kind: MetricType, labels: &[(&str, &str)], sample: Sample) {
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let index = match self.families.iter().position(|family| family.name == name) {
            Some(index) => index,
            None => {
                self.families.push(Family { name: name.to_owned(), help: help.to_owned(), kind, samples: Vec::new() });
                self.families.len() - 1
            }
        };
        let labels = labels.iter().map(|(k, v)| (Cow::Owned((*k).to_owned()), Cow::Owned((*v).to_owned()))).collect();
        self.families[index].samples.push((labels, sample));
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, help, MetricType::Gauge, labels, Sample::Gauge(value));
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, help, MetricType::Counter, labels, Sample::Counter(value));
    }
}

fn timestamp(at: DateTime<Utc>) -> f64 {
    at.timestamp_micros() as f64 / 1e6
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

fn families(status: &Status, metrics: &Metrics, now: DateTime<Utc>) -> Vec<Family> {
    let mut out = Builder::default();
    out.gauge("lifeboat_up", "1: the lifeboat process answering this scrape runs.", &[], 1.0);
    out.gauge(
        "lifeboat_healthy",
        "1 when /healthz would answer 200 (scheduler loop alive, repository reachable), else 0.",
        &[],
        flag(super::http::health(status, now).is_ok()),
    );
    if let Some(daemon) = &status.daemon {
        out.gauge(
            "lifeboat_daemon_start_timestamp_seconds",
            "When the daemon started (Unix time).",
            &[],
            timestamp(daemon.started_at),
        );
        out.gauge(
            "lifeboat_scheduler_alive_timestamp_seconds",
            "When the scheduler loop last went round (Unix time).",
            &[],
            timestamp(daemon.scheduler_alive_at),
        );
    }
    jobs(&mut out, status);
    repository(&mut out, status, now);
    archiver(&mut out, status, now);
    operations(&mut out, metrics);
    out.families
}

fn jobs(out: &mut Builder, status: &Status) {
    for job in &status.jobs {
        let labels = [("job", job.job.as_str())];
        if let Some(success) = &job.last_success {
            out.gauge(
                "lifeboat_job_last_success_timestamp_seconds",
                "When the job's last successful run finished (Unix time).",
                &labels,
                timestamp(success.finished_at),
            );
            out.gauge(
                "lifeboat_job_last_success_size_bytes",
                "Bytes the job's last successful run wrote (a backup's or dump's size; what expire deleted).",
                &labels,
                success.bytes as f64,
            );
        }
        if let Some(run) = &job.last_run {
            out.gauge(
                "lifeboat_job_last_run_timestamp_seconds",
                "When the job's last run, successful or not, finished (Unix time).",
                &labels,
                timestamp(run.finished_at),
            );
            out.gauge(
                "lifeboat_job_last_duration_seconds",
                "How long the job's last run took, successful or not.",
                &labels,
                run.duration_seconds,
            );
            out.gauge(
                "lifeboat_job_last_run_succeeded",
                "1 when the job's last run succeeded, 0 when it failed or was cancelled.",
                &labels,
                flag(run.result == "succeeded"),
            );
        }
        if let Some(next) = job.next_run {
            out.gauge(
                "lifeboat_job_next_run_timestamp_seconds",
                "When the job runs next (Unix time).",
                &labels,
                timestamp(next),
            );
        }
        out.gauge(
            "lifeboat_job_running",
            "1 while a run of the job is in progress.",
            &labels,
            flag(job.running_since.is_some()),
        );
        out.counter(
            "lifeboat_job_runs_total",
            "Runs of the job that finished, whatever their result.",
            &labels,
            job.runs_total as f64,
        );
        out.counter("lifeboat_job_failures_total", "Runs of the job that failed.", &labels, job.failures_total as f64);
        out.counter(
            "lifeboat_job_skipped_total",
            "Runs of the job not started because the previous one still ran.",
            &labels,
            job.skipped_total as f64,
        );
    }
}

/// The age of `item` at `now`; `+Inf` without one.
fn age(item: Option<&StoredItem>, now: DateTime<Utc>) -> f64 {
    item.map_or(f64::INFINITY, |item| seconds_between(item.at, now).max(0.0))
}

fn repository(out: &mut Builder, status: &Status, now: DateTime<Utc>) {
    let Some(repository) = &status.repository else { return };
    out.gauge(
        "lifeboat_repository_up",
        "1 when the repository could be read at the last look, else 0.",
        &[],
        flag(repository.reachable),
    );
    if let Some(checked) = repository.checked_at {
        out.gauge(
            "lifeboat_repository_checked_timestamp_seconds",
            "When the repository was last looked at (Unix time).",
            &[],
            timestamp(checked),
        );
    }
    let verified = repository.newest_verified_backup.as_ref();
    out.gauge(
        "lifeboat_last_verified_backup_age_seconds",
        "Seconds since the newest backup or dump whose last verification passed became consistent; +Inf when none is verified.",
        &[],
        age(verified, now),
    );
    if let Some(verified) = verified {
        out.gauge(
            "lifeboat_last_verified_backup_timestamp_seconds",
            "When the newest verified backup or dump became consistent (Unix time).",
            &[],
            timestamp(verified.at),
        );
        if let Some(seconds) = verified.restore_seconds {
            out.gauge(
                "lifeboat_last_verified_backup_restore_seconds",
                "How long the newest verified backup's verification took to restore it to a usable server: the measured recovery time.",
                &[],
                seconds,
            );
        }
    }
    out.gauge(
        "lifeboat_newest_backup_age_seconds",
        "Seconds since the newest full base backup became consistent; +Inf when there is none.",
        &[],
        age(repository.newest_backup.as_ref(), now),
    );
    out.gauge(
        "lifeboat_newest_dump_age_seconds",
        "Seconds since the newest logical dump's snapshot; +Inf when there is none.",
        &[],
        age(repository.newest_dump.as_ref(), now),
    );
    for kind in ["full", "dump"] {
        out.gauge(
            "lifeboat_repository_items",
            "Backups (kind=full) and dumps (kind=dump) in the repository.",
            &[("kind", kind)],
            repository.timeline.items.iter().filter(|item| item.kind == kind).count() as f64,
        );
    }
    out.gauge(
        "lifeboat_repository_size_bytes",
        "Stored bytes of every object of the cluster in the repository (backups, dumps, WAL, reports).",
        &[],
        repository.bytes as f64,
    );
    if let Some(at) = repository.last_archived_wal_at {
        out.gauge(
            "lifeboat_wal_last_stored_timestamp_seconds",
            "When the newest WAL segment was stored in the repository (Unix time).",
            &[],
            timestamp(at),
        );
        out.gauge(
            "lifeboat_wal_archive_lag_seconds",
            "Seconds since the newest WAL segment was stored in the repository: how much recent history a point-in-time restore would lack.",
            &[],
            seconds_between(at, now).max(0.0),
        );
    }
    for copy in &repository.copies {
        let labels = [("copy", copy.name.as_str())];
        out.gauge(
            "lifeboat_copy_up",
            "1 when the copy could be read at the last look, else 0.",
            &labels,
            flag(copy.reachable),
        );
        if copy.reachable {
            out.gauge(
                "lifeboat_copy_lag_seconds",
                "Seconds since the oldest backup, dump or WAL file the copy lacks appeared on the primary; 0 when it holds everything.",
                &labels,
                copy.lag_seconds,
            );
            out.gauge(
                "lifeboat_copy_missing_items",
                "Backups and dumps of the primary the copy does not hold.",
                &labels,
                copy.backups_missing as f64,
            );
            out.gauge(
                "lifeboat_copy_missing_wal_files",
                "WAL files of the primary the copy does not hold.",
                &labels,
                copy.wal_missing as f64,
            );
        }
    }
}

fn archiver(out: &mut Builder, status: &Status, now: DateTime<Utc>) {
    let Some(archiver) = &status.archiver else { return };
    out.gauge(
        "lifeboat_archiver_up",
        "1 when PostgreSQL answered the last look at pg_stat_archiver, else 0.",
        &[],
        flag(archiver.error.is_none()),
    );
    if let Some(count) = archiver.archived_count {
        out.counter(
            "lifeboat_archiver_archived_total",
            "WAL files PostgreSQL archived (pg_stat_archiver.archived_count).",
            &[],
            count as f64,
        );
    }
    if let Some(count) = archiver.failed_count {
        out.counter(
            "lifeboat_archiver_failed_total",
            "Failed attempts to archive a WAL file (pg_stat_archiver.failed_count).",
            &[],
            count as f64,
        );
    }
    if let Some(at) = archiver.last_archived_time {
        out.gauge(
            "lifeboat_archiver_last_archived_timestamp_seconds",
            "When PostgreSQL last archived a WAL file (pg_stat_archiver.last_archived_time, Unix time).",
            &[],
            timestamp(at),
        );
        out.gauge(
            "lifeboat_archiver_last_archived_age_seconds",
            "Seconds since PostgreSQL last archived a WAL file.",
            &[],
            seconds_between(at, now).max(0.0),
        );
    }
    if let Some(at) = archiver.last_failed_time {
        out.gauge(
            "lifeboat_archiver_last_failed_timestamp_seconds",
            "When archiving a WAL file last failed (pg_stat_archiver.last_failed_time, Unix time).",
            &[],
            timestamp(at),
        );
    }
    out.gauge(
        "lifeboat_archiver_failing",
        "1 when archiving's last attempt failed (the last failure is newer than the last success).",
        &[],
        flag(archiver.failing()),
    );
    if let Some(ready) = archiver.ready_files {
        out.gauge(
            "lifeboat_archiver_ready_files",
            "WAL segments finished but not archived yet (.ready files in pg_wal/archive_status).",
            &[],
            ready as f64,
        );
    }
}

/// What each of the operations' metrics means.
fn operation_help(name: &str) -> Cow<'static, str> {
    Cow::Borrowed(match name {
        "lifeboat_operations_started_total" => "Operations started, by operation.",
        "lifeboat_operations_finished_total" => "Operations finished, by operation and result.",
        "lifeboat_operation_running" => "1 while an operation of the kind runs in this process.",
        "lifeboat_operation_bytes_done" => "Bytes the running (or last) operation of the kind has processed.",
        "lifeboat_operation_duration_seconds" => "How long operations took, by operation and result.",
        "lifeboat_operation_bytes_total" => "Bytes operations read or wrote, by operation.",
        "lifeboat_lease_wait_seconds" => "Time operations waited for a repository lock.",
        "lifeboat_wal_segments_pushed_total" => "WAL segments pushed by wal-push in this process.",
        "lifeboat_wal_bytes_pushed_total" => "WAL bytes pushed by wal-push in this process.",
        "lifeboat_verifications_total" => "Verifications by verdict.",
        other => return Cow::Owned(format!("lifeboat operations metric {other}.")),
    })
}

fn operations(out: &mut Builder, metrics: &Metrics) {
    for ((name, labels), value) in metrics.snapshot() {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let help = operation_help(&name);
        match value {
            MetricValue::Counter(count) => out.counter(&name, &help, &labels, count as f64),
            MetricValue::Gauge(value) => out.gauge(&name, &help, &labels, value),
            MetricValue::Summary { sum, count } => {
                out.sample(&name, &help, MetricType::Histogram, &labels, Sample::Histogram { sum, count })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::status::{ArchiverStatus, DaemonInfo, JobRun, JobStatus, RepositoryStatus};

    /// One parsed sample line: the metric name, its labels, its value.
    pub type ParsedSample = (String, BTreeMap<String, String>, f64);

    /// A small parser of the text exposition (Prometheus and OpenMetrics): every family's HELP
    /// and TYPE, and every sample. Panics on anything malformed, as a scraper would refuse it.
    pub fn parse(text: &str) -> (BTreeMap<String, (String, String)>, Vec<ParsedSample>) {
        let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut helps: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
                assert!(!help.is_empty(), "{name} has an empty HELP");
                helps.insert(name.to_owned(), help.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "info", "unknown"].contains(&kind),
                    "unknown TYPE {kind}"
                );
                let help = helps.get(name).unwrap_or_else(|| panic!("{name} has a TYPE but no HELP before it"));
                families.insert(name.to_owned(), (kind.to_owned(), help.clone()));
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = match value {
                "+Inf" | "inf" | "Inf" => f64::INFINITY,
                other => other.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    let labels = body
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) =
                                pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (key.to_owned(), value.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name {name:?}"
            );
            let family = ["_total", "_sum", "_count", "_bucket", "_info"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|base| families.contains_key(*base)))
                .unwrap_or(&name);
            assert!(families.contains_key(family), "sample {name} has no TYPE");
            samples.push((name, labels, value));
        }
        (families, samples)
    }

    pub fn value(samples: &[ParsedSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(found, found_labels, _)| {
                found == name
                    && found_labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| found_labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn item(id: &str, kind: &str, when: &str, verified: Option<bool>) -> StoredItem {
        StoredItem {
            id: id.into(),
            kind: kind.into(),
            at: at(when),
            bytes: 1000,
            verified,
            verified_at: verified.map(|_| at(when)),
            restore_seconds: verified.map(|_| 12.5),
            copies: Vec::new(),
        }
    }

    fn status(now: DateTime<Utc>) -> Status {
        let run = JobRun {
            started_at: at("2026-12-05T02:00:00Z"),
            finished_at: at("2026-12-05T02:10:00Z"),
            duration_seconds: 600.0,
            result: "succeeded".into(),
            error: None,
            trigger: "schedule".into(),
            ids: vec!["20261205T020000Z".into()],
            bytes: 4096,
        };
        let verified = item("20261204T020000Z", "full", "2026-12-04T02:05:00Z", Some(true));
        Status {
            source: "daemon".into(),
            daemon: Some(DaemonInfo {
                pid: 1,
                started_at: at("2026-12-01T00:00:00Z"),
                config_file: "/etc/lifeboat/lifeboat.toml".into(),
                config_loaded_at: at("2026-12-01T00:00:00Z"),
                reload_error: None,
                scheduler_alive_at: now,
                shutting_down: false,
            }),
            jobs: vec![JobStatus {
                job: "backup".into(),
                schedule: Some("0 2 * * *".into()),
                chained_after: Vec::new(),
                next_run: Some(at("2026-12-06T02:00:00Z")),
                running_since: None,
                last_run: Some(run.clone()),
                last_success: Some(run),
                runs_total: 3,
                failures_total: 1,
                skipped_total: 2,
            }],
            archiver: Some(ArchiverStatus {
                archived_count: Some(40),
                failed_count: Some(3),
                last_archived_time: Some(at("2026-12-05T11:00:00Z")),
                last_failed_time: Some(at("2026-12-05T11:30:00Z")),
                ready_files: Some(2),
                ..ArchiverStatus::default()
            }),
            repository: Some(RepositoryStatus {
                reachable: true,
                newest_backup: Some(item("20261205T020000Z", "full", "2026-12-05T02:05:00Z", None)),
                newest_verified_backup: Some(verified.clone()),
                bytes: 123_456,
                last_archived_wal_at: Some(at("2026-12-05T11:59:00Z")),
                timeline: crate::report::status::Timeline { items: vec![verified], wal_spans: Vec::new() },
                ..RepositoryStatus::default()
            }),
            ..Status::default()
        }
    }

    #[test]
    fn the_exposition_parses_and_every_metric_has_help_and_type() {
        let now = at("2026-12-05T12:00:00Z");
        let metrics = Metrics::default();
        let (families, samples) = parse(&render(&status(now), &metrics, now));
        assert_eq!(value(&samples, "lifeboat_last_verified_backup_age_seconds", &[]), Some(122_100.0));
        assert_eq!(families["lifeboat_last_verified_backup_age_seconds"].0, "gauge");
        assert_eq!(value(&samples, "lifeboat_last_verified_backup_restore_seconds", &[]), Some(12.5));
        assert_eq!(value(&samples, "lifeboat_job_runs_total", &[("job", "backup")]), Some(3.0));
        assert_eq!(families["lifeboat_job_runs"].0, "counter");
        assert_eq!(value(&samples, "lifeboat_job_skipped_total", &[("job", "backup")]), Some(2.0));
        assert_eq!(
            value(&samples, "lifeboat_job_last_success_timestamp_seconds", &[("job", "backup")]),
            Some(timestamp(at("2026-12-05T02:10:00Z")))
        );
        assert_eq!(value(&samples, "lifeboat_job_last_success_size_bytes", &[("job", "backup")]), Some(4096.0));
        assert_eq!(value(&samples, "lifeboat_archiver_failed_total", &[]), Some(3.0));
        assert_eq!(value(&samples, "lifeboat_archiver_failing", &[]), Some(1.0));
        assert_eq!(value(&samples, "lifeboat_archiver_ready_files", &[]), Some(2.0));
        assert_eq!(value(&samples, "lifeboat_wal_archive_lag_seconds", &[]), Some(60.0));
        assert_eq!(value(&samples, "lifeboat_repository_size_bytes", &[]), Some(123_456.0));
        assert_eq!(value(&samples, "lifeboat_healthy", &[]), Some(1.0));
    }

    #[test]
    fn without_a_verified_backup_the_age_is_infinite_and_before_the_first_look_absent() {
        let now = at("2026-12-05T12:00:00Z");
        let mut status = status(now);
        status.repository.as_mut().unwrap().newest_verified_backup = None;
        let (_, samples) = parse(&render(&status, &Metrics::default(), now));
        assert_eq!(value(&samples, "lifeboat_last_verified_backup_age_seconds", &[]), Some(f64::INFINITY));
        status.repository = None;
        let (_, samples) = parse(&render(&status, &Metrics::default(), now));
        assert_eq!(value(&samples, "lifeboat_last_verified_backup_age_seconds", &[]), None);
        assert_eq!(value(&samples, "lifeboat_healthy", &[]), Some(0.0));
    }

    #[tokio::test]
    async fn the_operations_metrics_are_exposed_with_their_types() {
        use crate::ops::event::{Event, EventSink, Operation, Outcome, Totals};
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::catalog::layout::ClusterLayout::new(&crate::config::ClusterName::parse("main").unwrap());
        let audit = crate::ops::audit::AuditLog::new(dir.path().join("audit.jsonl"), &layout, None);
        let sink = EventSink::new(audit);
        for (outcome, seconds) in [(Outcome::Succeeded, 2.0), (Outcome::Succeeded, 3.0)] {
            sink.emit(Event::Finished {
                operation: Operation::Backup,
                arguments: BTreeMap::new(),
                outcome,
                duration: std::time::Duration::from_secs_f64(seconds),
                totals: Totals { bytes: 10, ..Totals::default() },
            })
            .await;
        }
        let now = at("2026-12-05T12:00:00Z");
        let (families, samples) = parse(&render(&status(now), sink.metrics(), now));
        let labels = [("operation", "backup"), ("result", "succeeded")];
        assert_eq!(value(&samples, "lifeboat_operations_finished_total", &labels), Some(2.0));
        assert_eq!(families["lifeboat_operations_finished"].0, "counter");
        assert_eq!(value(&samples, "lifeboat_operation_duration_seconds_sum", &labels), Some(5.0));
        assert_eq!(value(&samples, "lifeboat_operation_duration_seconds_count", &labels), Some(2.0));
        assert_eq!(families["lifeboat_operation_duration_seconds"].0, "histogram");
        assert_eq!(value(&samples, "lifeboat_operation_running", &[("operation", "backup")]), Some(0.0));
    }
}
