//! Events: every notable happening of an operation as one typed [`Event`], and the one place,
//! [`EventSink::emit`], that turns an event into its log line, its metrics and (for an
//! operation's start and end) its audit record, so the three cannot drift apart.
//!
//! The level of the log line follows one rule: ERROR is reserved for data at risk, that is a
//! verification that found a backup or dump not restorable. Everything else that went wrong (a
//! failed backup, a refused restore) is WARN: the operator must act, but what is stored is as good
//! as before. Starts, progress, successes and cancellations are INFO; each WAL segment pushed is
//! DEBUG (PostgreSQL runs `wal-push` for every segment and copies its stderr into its log).
//!
//! Metrics are kept in process ([`Metrics`]): counters, gauges and histogram sums keyed by a name
//! and labels, for the daemon to expose later.
//!
//! Progress comes often (a few times a second, for a live bar) but is logged at most every
//! [`PROGRESS_LOG_INTERVAL`] per operation, so a log file gets a line every few seconds, not a
//! flood; the audit trail never hears of it. Whoever shows events live (the CLI's progress bar)
//! registers an [`Observer`], which `emit()` calls last.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::audit::{AuditLog, AuditRecord};
use crate::util::format_bytes;

/// What an operation is; its name is the audit record's `operation` and the metrics' label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Backup,
    Dump,
    Verify,
    Restore,
    Delete,
    WalPush,
    WalCheck,
    /// A key slot added: one more passphrase or key file opens the repository.
    KeyAdd,
    /// A key slot removed: its passphrase or key file no longer opens the repository.
    KeyRemove,
    /// Backups, dumps, reports and WAL the retention policy no longer keeps were removed.
    Expire,
    /// A copy repository was brought up to date with the primary.
    Copy,
    /// One migration applied or reverted (its arguments say which, where, and the gate's backup).
    Migrate,
    /// The backup gate's verdict before migrations or a gated command.
    Gate,
    /// Another tool's command run behind the gate (`lifeboat gate -- COMMAND`).
    GatedCommand,
    /// Seed files loaded, rolled back or cleared (`lifeboat seed`).
    Seed,
    /// An environment's database dropped, recreated, migrated and seeded (`lifeboat db reset`).
    DbReset,
    /// Pending migrations rehearsed on a restored copy (`lifeboat migrate rehearse`).
    Rehearse,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Dump => "dump",
            Operation::Verify => "verify",
            Operation::Restore => "restore",
            Operation::Delete => "delete",
            Operation::WalPush => "wal-push",
            Operation::WalCheck => "wal-check",
            Operation::KeyAdd => "key-add",
            Operation::KeyRemove => "key-remove",
            Operation::Expire => "expire",
            Operation::Copy => "copy",
            Operation::Migrate => "migrate",
            Operation::Gate => "gate",
            Operation::GatedCommand => "gated-command",
            Operation::Seed => "seed",
            Operation::DbReset => "db-reset",
            Operation::Rehearse => "rehearse",
        }
    }

    /// Long operations also leave an audit line when they start, so one that never finished
    /// (the host died) still shows in the trail.
    pub fn is_long(self) -> bool {
        matches!(
            self,
            Operation::Backup
                | Operation::Dump
                | Operation::Verify
                | Operation::Restore
                | Operation::Expire
                | Operation::Copy
                | Operation::Migrate
                | Operation::GatedCommand
                | Operation::Rehearse
        )
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed { error: String },
    Cancelled { reason: String },
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled { .. } => "cancelled",
        }
    }
}

/// The facts of one finished operation beyond its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes read or written (the backup's data, the dump's size, what a restore wrote).
    pub bytes: u64,
    /// Ids (backups, dumps, WAL files) the operation created.
    pub created: Vec<String>,
    /// Ids the operation deleted.
    pub deleted: Vec<String>,
}

/// One notable happening. `arguments` are what matter to a reader of the trail (ids, targets,
/// never secrets): the caller builds them from typed options, never from a configuration value
/// that may hold a password.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        operation: Operation,
        arguments: BTreeMap<String, String>,
    },
    Progressed {
        operation: Operation,
        bytes_done: u64,
        bytes_total: Option<u64>,
    },
    /// The operation moved on to another phase (a verification: "restoring files",
    /// "recovering", ...); its progress from now on is that phase's.
    PhaseChanged {
        operation: Operation,
        phase: &'static str,
    },
    Finished {
        operation: Operation,
        arguments: BTreeMap<String, String>,
        outcome: Outcome,
        duration: Duration,
        totals: Totals,
    },
    /// The operation waits for a lock a live process holds (`holder` says who, what for and
    /// until when, as the lease records it).
    LeaseWaiting {
        operation: Operation,
        lock: String,
        holder: String,
        host: String,
        pid: u32,
    },
    /// The wait of [`Event::LeaseWaiting`] ended: the lock was taken, or (`acquired` false) the
    /// operation gave up, which its failure says.
    LeaseWaited {
        operation: Operation,
        lock: String,
        holder: String,
        waited: Duration,
        acquired: bool,
    },
    WalPushed {
        segment: String,
        bytes: u64,
        already_archived: bool,
    },
    Verdict {
        id: String,
        passed: bool,
        status: String,
    },
}

/// How often a running operation's progress is logged (its events may come more often).
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Called with every event after it was logged, counted and audited.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// A metric's identity: its name and its labels, in order.
pub type MetricKey = (String, Vec<(String, String)>);

/// A metric's current value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(f64),
    /// The sum and count of the observed values (a histogram without buckets).
    Summary {
        sum: f64,
        count: u64,
    },
}

/// In-process metrics, readable by whoever holds the sink (the daemon, later, over HTTP).
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<MetricKey, MetricValue>>,
}

impl Metrics {
    fn update(&self, name: &str, labels: &[(&str, &str)], change: impl FnOnce(Option<MetricValue>) -> MetricValue) {
        let key = (name.to_owned(), labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        let mut values = self.values.lock().expect("the metrics lock is not poisoned");
        let value = change(values.get(&key).copied());
        values.insert(key, value);
    }

    fn add(&self, name: &str, labels: &[(&str, &str)], by: u64) {
        self.update(name, labels, |old| match old {
            Some(MetricValue::Counter(count)) => MetricValue::Counter(count + by),
            _ => MetricValue::Counter(by),
        });
    }

    fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, |_| MetricValue::Gauge(value));
    }

    fn observe(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, |old| match old {
            Some(MetricValue::Summary { sum, count }) => MetricValue::Summary { sum: sum + value, count: count + 1 },
            _ => MetricValue::Summary { sum: value, count: 1 },
        });
    }

    /// The value of one metric, if it was ever set.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<MetricValue> {
        let key: MetricKey =
            (name.to_owned(), labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        self.values.lock().expect("the metrics lock is not poisoned").get(&key).copied()
    }

    /// Every metric, sorted by name and labels.
    pub fn snapshot(&self) -> Vec<(MetricKey, MetricValue)> {
        let values = self.values.lock().expect("the metrics lock is not poisoned");
        values.iter().map(|(key, value)| (key.clone(), *value)).collect()
    }
}

/// Where events go: the tracing subscriber, the metrics and the audit log. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    /// When each running operation's progress was last logged (or, before that, when it started).
    progress_logged: Arc<Mutex<BTreeMap<Operation, Instant>>>,
    observer: Option<Observer>,
}

impl EventSink {
    pub fn new(audit: AuditLog) -> EventSink {
        EventSink::with_metrics(audit, Arc::default())
    }

    /// A sink counting into `metrics`, which outlive it: the daemon keeps one set for its whole
    /// life while each run gets a sink (and an audit log) of its own.
    pub fn with_metrics(audit: AuditLog, metrics: Arc<Metrics>) -> EventSink {
        EventSink { metrics, audit: Arc::new(audit), progress_logged: Arc::default(), observer: None }
    }

    /// Has `observer` called with every event this sink (and its clones made from now on) emits.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Writes the event's log line, updates its metrics and, for an operation's start (long
    /// operations) and end, appends its audit record. Never fails: telemetry that cannot be
    /// written is warned about, and the operation goes on.
    pub async fn emit(&self, event: Event) {
        self.log(&event);
        self.count(&event);
        match &event {
            Event::Started { operation, arguments } if operation.is_long() => {
                self.audit.append(&AuditRecord::started(*operation, arguments, self.audit.cluster())).await;
            }
            Event::Finished { operation, arguments, outcome, duration, totals } => {
                let record =
                    AuditRecord::finished(*operation, arguments, self.audit.cluster(), outcome, *duration, totals);
                self.audit.append(&record).await;
                self.audit.after_operation(*operation).await;
            }
            _ => {}
        }
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    /// Whether this progress event is the one to log: the first [`PROGRESS_LOG_INTERVAL`] after
    /// the operation started or its progress was last logged.
    fn progress_due(&self, operation: Operation) -> bool {
        let mut logged = self.progress_logged.lock().expect("the progress lock is not poisoned");
        let now = Instant::now();
        let last = logged.entry(operation).or_insert(now);
        if now.duration_since(*last) < PROGRESS_LOG_INTERVAL {
            return false;
        }
        *last = now;
        true
    }

    fn log(&self, event: &Event) {
        match event {
            Event::Started { operation, arguments } => {
                self.progress_logged
                    .lock()
                    .expect("the progress lock is not poisoned")
                    .insert(*operation, Instant::now());
                tracing::info!(operation = operation.as_str(), ?arguments, "{} started", operation.as_str())
            }
            Event::Progressed { operation, bytes_done, bytes_total } => {
                if !self.progress_due(*operation) {
                    return;
                }
                let name = operation.as_str();
                let done = format_bytes(*bytes_done);
                match bytes_total {
                    Some(total) => tracing::info!(
                        operation = name,
                        bytes_done,
                        bytes_total = total,
                        "{name}: {done} of {} ({:.0}%)",
                        format_bytes(*total),
                        100.0 * *bytes_done as f64 / (*total).max(1) as f64
                    ),
                    None => tracing::info!(operation = name, bytes_done, "{name}: {done}"),
                }
            }
            Event::PhaseChanged { operation, phase } => {
                let name = operation.as_str();
                tracing::info!(operation = name, phase, "{name}: {phase}")
            }
            Event::Finished { operation, outcome, duration, .. } => {
                let seconds = duration.as_secs_f64();
                let name = operation.as_str();
                match outcome {
                    Outcome::Succeeded => tracing::info!(operation = name, seconds, "{name} succeeded"),
                    Outcome::Cancelled { reason } => {
                        tracing::info!(operation = name, seconds, "{name} cancelled ({reason})")
                    }
                    Outcome::Failed { error } => tracing::warn!(operation = name, seconds, "{name} failed: {error}"),
                }
            }
            Event::LeaseWaiting { operation, lock, holder, host, pid } => {
                let name = operation.as_str();
                tracing::info!(operation = name, lock, host, pid, "{name}: waiting for lock {lock}, held by {holder}")
            }
            Event::LeaseWaited { operation, lock, holder, waited, acquired: true } => {
                let (name, seconds) = (operation.as_str(), waited.as_secs_f64());
                tracing::info!(
                    operation = name,
                    lock,
                    seconds,
                    "{name}: took lock {lock} after {seconds:.1} s held by {holder}"
                )
            }
            // The operation's failure names the holder and the wait.
            Event::LeaseWaited { acquired: false, .. } => {}
            Event::WalPushed { segment, bytes, already_archived } => {
                tracing::debug!(segment, bytes, already_archived, "archived {segment}")
            }
            Event::Verdict { id, passed: true, status } => tracing::info!(id, "verification of {id}: {status}"),
            Event::Verdict { id, passed: false, status } => {
                tracing::error!(id, "verification of {id}: {status}; it may not be restorable")
            }
        }
    }

    fn count(&self, event: &Event) {
        let metrics = &self.metrics;
        match event {
            Event::Started { operation, .. } => {
                metrics.add("lifeboat_operations_started_total", &[("operation", operation.as_str())], 1);
                metrics.set("lifeboat_operation_running", &[("operation", operation.as_str())], 1.0);
            }
            Event::Progressed { operation, bytes_done, .. } => {
                metrics.set("lifeboat_operation_bytes_done", &[("operation", operation.as_str())], *bytes_done as f64);
            }
            Event::Finished { operation, outcome, duration, totals, .. } => {
                let labels = [("operation", operation.as_str()), ("result", outcome.as_str())];
                metrics.add("lifeboat_operations_finished_total", &labels, 1);
                metrics.observe("lifeboat_operation_duration_seconds", &labels, duration.as_secs_f64());
                metrics.add("lifeboat_operation_bytes_total", &[("operation", operation.as_str())], totals.bytes);
                metrics.set("lifeboat_operation_running", &[("operation", operation.as_str())], 0.0);
            }
            Event::LeaseWaiting { .. } | Event::PhaseChanged { .. } => {}
            Event::LeaseWaited { operation, lock, waited, acquired, .. } => {
                let acquired = if *acquired { "true" } else { "false" };
                let labels = [("operation", operation.as_str()), ("lock", lock.as_str()), ("acquired", acquired)];
                metrics.observe("lifeboat_lease_wait_seconds", &labels, waited.as_secs_f64());
            }
            Event::WalPushed { bytes, already_archived, .. } => {
                let already = if *already_archived { "true" } else { "false" };
                metrics.add("lifeboat_wal_segments_pushed_total", &[("already_archived", already)], 1);
                metrics.add("lifeboat_wal_bytes_pushed_total", &[], *bytes);
            }
            Event::Verdict { passed, .. } => {
                let verdict = if *passed { "passed" } else { "failed" };
                metrics.add("lifeboat_verifications_total", &[("verdict", verdict)], 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::catalog::layout::ClusterLayout;
    use crate::config::ClusterName;

    /// Collects what the tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink for cluster `main` whose local audit file is `audit.jsonl` in `dir`, and that path.
    fn sink_in(dir: &std::path::Path) -> (EventSink, std::path::PathBuf) {
        let local = dir.join("audit.jsonl");
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        (EventSink::new(AuditLog::new(local.clone(), &layout, None)), local)
    }

    /// Runs `events` on a fresh runtime under a subscriber logging up to `level`; what it logged.
    fn logged(level: tracing::Level, events: impl std::future::Future<Output = ()>) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(events);
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn one_finished_event_gives_a_log_line_a_metric_and_an_audit_record_that_agree() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, local) = sink_in(dir.path());
        let arguments = BTreeMap::from([("method".to_owned(), "native".to_owned())]);
        let finished = Event::Finished {
            operation: Operation::Backup,
            arguments: arguments.clone(),
            outcome: Outcome::Failed { error: "the server went away".into() },
            duration: Duration::from_millis(2500),
            totals: Totals { bytes: 4096, ..Totals::default() },
        };
        let log = logged(tracing::Level::DEBUG, async {
            sink.emit(Event::Started { operation: Operation::Backup, arguments }).await;
            sink.emit(finished).await;
        });
        let failed_line = log.lines().find(|line| line.contains("backup failed")).expect(&log);
        assert!(failed_line.contains("WARN") && failed_line.contains("the server went away"), "{log}");
        assert!(log.lines().any(|line| line.contains("INFO") && line.contains("backup started")), "{log}");

        let metrics = sink.metrics();
        let labels = [("operation", "backup"), ("result", "failed")];
        assert_eq!(metrics.get("lifeboat_operations_finished_total", &labels), Some(MetricValue::Counter(1)));
        assert_eq!(
            metrics.get("lifeboat_operation_duration_seconds", &labels),
            Some(MetricValue::Summary { sum: 2.5, count: 1 })
        );
        assert_eq!(
            metrics.get("lifeboat_operation_bytes_total", &[("operation", "backup")]),
            Some(MetricValue::Counter(4096))
        );
        assert_eq!(
            metrics.get("lifeboat_operation_running", &[("operation", "backup")]),
            Some(MetricValue::Gauge(0.0))
        );

        let text = std::fs::read_to_string(&local).unwrap();
        let records: Vec<AuditRecord> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(records.len(), 2, "a started and a finished line: {text}");
        assert_eq!((records[0].event.as_str(), records[0].result.as_deref()), ("started", None));
        let record = &records[1];
        assert_eq!((record.event.as_str(), record.operation.as_str()), ("finished", "backup"));
        assert_eq!(record.result.as_deref(), Some("failed"));
        assert_eq!(record.error.as_deref(), Some("the server went away"));
        assert_eq!((record.duration_seconds, record.bytes), (Some(2.5), Some(4096)));
        assert_eq!(record.arguments["method"], "native");
        assert_eq!(record.cluster, "main");
    }

    #[test]
    fn a_short_operation_leaves_no_started_line_and_a_verdict_that_failed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, local) = sink_in(dir.path());
        let log = logged(tracing::Level::INFO, async {
            sink.emit(Event::Started { operation: Operation::Delete, arguments: BTreeMap::new() }).await;
            sink.emit(Event::Verdict { id: "20261201T100000Z-full".into(), passed: false, status: "failed".into() })
                .await;
        });
        assert!(!local.exists(), "no audit line for a delete that has not finished");
        assert!(log.lines().any(|line| line.contains("ERROR") && line.contains("20261201T100000Z-full")), "{log}");
        assert_eq!(
            sink.metrics().get("lifeboat_verifications_total", &[("verdict", "failed")]),
            Some(MetricValue::Counter(1))
        );
    }

    #[test]
    fn a_lease_wait_is_logged_when_it_begins_naming_the_holder_and_its_seconds_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, local) = sink_in(dir.path());
        let holder = "backup (pid 4242 on db-1, since 2026-12-05 10:00:00Z, expires 10:02:00Z unless renewed)";
        let log = logged(tracing::Level::INFO, async {
            let lock = "backup".to_owned();
            sink.emit(Event::LeaseWaiting {
                operation: Operation::Delete,
                lock: lock.clone(),
                holder: holder.to_owned(),
                host: "db-1".into(),
                pid: 4242,
            })
            .await;
            let waited = Duration::from_millis(3500);
            sink.emit(Event::LeaseWaited {
                operation: Operation::Delete,
                lock,
                holder: holder.into(),
                waited,
                acquired: true,
            })
            .await;
        });
        let waiting = log.lines().find(|line| line.contains("waiting for lock backup")).expect(&log);
        assert!(
            waiting.contains("INFO") && waiting.contains("delete:") && waiting.contains("pid 4242 on db-1"),
            "{log}"
        );
        assert!(log.lines().any(|line| line.contains("took lock backup after 3.5 s")), "{log}");
        let labels = [("operation", "delete"), ("lock", "backup"), ("acquired", "true")];
        assert_eq!(
            sink.metrics().get("lifeboat_lease_wait_seconds", &labels),
            Some(MetricValue::Summary { sum: 3.5, count: 1 })
        );
        assert!(!local.exists(), "a wait is not an audit line of its own");
    }

    #[test]
    fn progress_reaches_the_observer_every_time_but_the_log_at_its_own_rate_and_never_the_audit_trail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, local) = sink_in(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let observed = seen.clone();
        sink.set_observer(Arc::new(move |event| {
            if let Event::Progressed { bytes_done, .. } = event {
                observed.lock().unwrap().push(*bytes_done);
            }
        }));
        let log = logged(tracing::Level::INFO, async {
            sink.emit(Event::Started { operation: Operation::Dump, arguments: BTreeMap::new() }).await;
            for bytes_done in [1, 2, 3] {
                let event = Event::Progressed { operation: Operation::Dump, bytes_done, bytes_total: Some(3) };
                sink.emit(event).await;
            }
        });
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        assert!(log.contains("dump started") && !log.contains("dump: "), "no progress line within 10 s: {log}");
        let text = std::fs::read_to_string(&local).unwrap();
        assert_eq!(text.lines().count(), 1, "only the start is audited: {text}");
        assert_eq!(
            sink.metrics().get("lifeboat_operation_bytes_done", &[("operation", "dump")]),
            Some(MetricValue::Gauge(3.0))
        );
    }
}
