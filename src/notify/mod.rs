//! Notifications (`[notify]`): telling people that a scheduled job failed, recovered or succeeded,
//! and that the newest verified backup has grown stale, through a webhook (lifeboat's JSON body
//! or Slack's) and desktop notifications where a session bus exists.
//!
//! The daemon calls [`Notifier::job_finished`] after every job run and [`Notifier::check_stale`]
//! periodically; `lifeboat notify test` calls [`Notifier::send_test`]. What to send is decided in
//! `state.rs` (failure → recovery tracking, `on`, the rate limit, stale transitions), what it
//! looks like in `message.rs`, and the sinks are `webhook.rs` and `desktop.rs`. Sending never
//! fails the caller: a sink that fails after its retries is logged as a warning.

mod desktop;
mod message;
mod state;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{NotifyConfig, NotifyEvent};
pub use desktop::DesktopOutcome;
pub use message::{BODY_VERSION, Message};
pub use webhook::WebhookError;

use state::{Decision, State};
use webhook::WebhookSink;

/// How a job run ended, as the daemon reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    Succeeded,
    Failed,
    /// Stopped by the daemon's shutdown: no event, and the job's failing state is unchanged.
    Cancelled,
}

impl JobResult {
    fn as_str(self) -> &'static str {
        match self {
            JobResult::Succeeded => "succeeded",
            JobResult::Failed => "failed",
            JobResult::Cancelled => "cancelled",
        }
    }
}

/// One finished job run.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// "backup", "dump", "verify", "expire", "copy:<name>", "wal-check".
    pub job: String,
    pub result: JobResult,
    /// The error, for a failed run, as the operator should read it (no secrets).
    pub error: Option<String>,
    /// The backup or dump ids the run produced or worked on.
    pub ids: Vec<String>,
    pub duration: Duration,
    pub finished_at: DateTime<Utc>,
}

/// A sink a message went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "sink", rename_all = "lowercase")]
pub enum Sink {
    /// `origin` is `https://host[:port]`; the rest of the URL is a secret.
    Webhook {
        origin: String,
        format: &'static str,
    },
    Desktop,
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Webhook { origin, format } => write!(f, "webhook {origin} ({format})"),
            Sink::Desktop => f.write_str("desktop"),
        }
    }
}

/// What became of one message at one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Delivered,
    /// Not attempted, and not a fault (no session bus for a desktop notification).
    Skipped(String),
    Failed(String),
}

/// One message at one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub sink: Sink,
    pub event: NotifyEvent,
    #[serde(flatten)]
    pub status: DeliveryStatus,
}

/// Sends notifications for one cluster. Cheap to clone: clones share the state (which job is
/// failing, the rate limit) and the webhook's connection pool.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NotifyConfig,
    cluster: String,
    host: String,
    webhook: Option<WebhookSink>,
    /// Shared with the notifiers [`Notifier::reconfigured`] makes, so a configuration reload
    /// keeps which jobs are failing and the rate limit.
    state: Arc<Mutex<State>>,
}

impl Notifier {
    pub fn new(config: &crate::config::NotifyConfig, cluster: &str) -> Notifier {
        Notifier::with_state(config, cluster, Arc::new(Mutex::new(State::new(Utc::now()))))
    }

    /// A notifier for a reloaded configuration that remembers what this one knew: which jobs
    /// are failing (so the next success is still a recovery), the rate limit, whether `stale`
    /// was sent.
    pub fn reconfigured(&self, config: &crate::config::NotifyConfig, cluster: &str) -> Notifier {
        Notifier::with_state(config, cluster, self.inner.state.clone())
    }

    fn with_state(config: &NotifyConfig, cluster: &str, state: Arc<Mutex<State>>) -> Notifier {
        Notifier {
            inner: Arc::new(Inner {
                webhook: config.webhook.clone().map(|webhook| WebhookSink::new(webhook, config.attempts)),
                config: config.clone(),
                cluster: cluster.to_string(),
                host: crate::catalog::lease::hostname(),
                state,
            }),
        }
    }

    /// Whether any sink is configured (a webhook, or desktop notifications).
    pub fn has_sinks(&self) -> bool {
        self.inner.webhook.is_some() || self.inner.config.desktop
    }

    /// After every job run: decides failure / recovery (first success after a failure of the same
    /// job) / success, applies `on` and the rate limit, sends. Never fails (logs a warning when a
    /// sink fails after its retries). Takes as long as the webhook's retries at most.
    pub async fn job_finished(&self, outcome: &JobOutcome) {
        let decision = self.state().job_finished(&self.inner.config, &outcome.job, outcome.result, outcome.finished_at);
        let Some(Decision { event, suppressed }) = decision else {
            tracing::debug!(job = %outcome.job, result = outcome.result.as_str(), "no notification for this run (notify.on or notify.min_interval)");
            return;
        };
        let message = self.message(MessageFields {
            event,
            job: Some(outcome.job.clone()),
            result: Some(outcome.result.as_str()),
            error: outcome.error.clone(),
            ids: outcome.ids.clone(),
            duration: Some(outcome.duration),
            at: outcome.finished_at,
            newest_verified_at: None,
            suppressed,
            test: false,
        });
        self.send(&message).await;
    }

    /// Called periodically with when the newest verified backup was taken (None: there is none).
    pub async fn check_stale(&self, newest_verified: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let Some(Decision { event, suppressed }) = self.state().check_stale(&self.inner.config, newest_verified, now)
        else {
            return;
        };
        let message = self.message(MessageFields {
            event,
            job: None,
            result: None,
            error: None,
            ids: Vec::new(),
            duration: None,
            at: now,
            newest_verified_at: newest_verified,
            suppressed,
            test: false,
        });
        self.send(&message).await;
    }

    /// `lifeboat notify test`: one message of each kind to each configured sink, returning per
    /// sink and kind whether it was delivered (ignores `on` and the rate limit). The kinds are
    /// sent at once, so an unreachable webhook costs one round of retries, not four.
    pub async fn send_test(&self) -> Vec<Delivery> {
        let now = Utc::now();
        let mut sends = tokio::task::JoinSet::new();
        for event in NotifyEvent::ALL {
            let (result, error) = match event {
                NotifyEvent::Failure => {
                    (Some("failed"), Some("this is a test message from `lifeboat notify test`".to_string()))
                }
                NotifyEvent::Recovery | NotifyEvent::Success => (Some("succeeded"), None),
                NotifyEvent::Stale => (None, None),
            };
            let message = self.message(MessageFields {
                event,
                job: (event != NotifyEvent::Stale).then(|| "backup".to_string()),
                result,
                error,
                ids: Vec::new(),
                duration: (event != NotifyEvent::Stale).then_some(Duration::ZERO),
                at: now,
                newest_verified_at: None,
                suppressed: 0,
                test: true,
            });
            let notifier = self.clone();
            sends.spawn(async move { notifier.deliver(&message).await });
        }
        let mut deliveries = Vec::new();
        while let Some(sent) = sends.join_next().await {
            match sent {
                Ok(sent) => deliveries.extend(sent),
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        deliveries.sort_by_key(|delivery| (delivery.event, matches!(delivery.sink, Sink::Desktop)));
        deliveries
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave it half-written.
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn message(&self, fields: MessageFields) -> Message {
        let stale = fields.event == NotifyEvent::Stale;
        let mut message = Message {
            version: BODY_VERSION,
            event: fields.event,
            cluster: self.inner.cluster.clone(),
            job: fields.job,
            result: fields.result,
            error: fields.error,
            ids: fields.ids,
            // Seconds to the millisecond, as in every other JSON document (docs/json.md).
            duration_seconds: fields.duration.map(|duration| (duration.as_secs_f64() * 1000.0).round() / 1000.0),
            host: self.inner.host.clone(),
            at: fields.at,
            newest_verified_at: fields.newest_verified_at,
            stale_after_seconds: stale.then_some(self.inner.config.stale_after.as_secs()),
            suppressed: fields.suppressed,
            test: fields.test,
            lifeboat_version: env!("CARGO_PKG_VERSION"),
            text: String::new(),
        };
        message.text = message.summary();
        message
    }

    /// Sends to every sink, logging what failed.
    async fn send(&self, message: &Message) {
        tracing::info!(event = %message.event, job = message.job.as_deref().unwrap_or("-"), "notification: {}", message.title());
        for delivery in self.deliver(message).await {
            if let DeliveryStatus::Failed(reason) = &delivery.status {
                tracing::warn!(event = %delivery.event, "notification not delivered to the {}: {reason}", delivery.sink);
            }
        }
    }

    /// Sends `message` to each configured sink at once and reports each outcome.
    async fn deliver(&self, message: &Message) -> Vec<Delivery> {
        let webhook = async {
            let sink = self.inner.webhook.as_ref()?;
            let format = sink.format();
            let status = match sink.send(message.body(format)).await {
                Ok(()) => DeliveryStatus::Delivered,
                Err(error) => DeliveryStatus::Failed(error.to_string()),
            };
            Some(Delivery {
                sink: Sink::Webhook { origin: sink.origin().to_string(), format: format.as_str() },
                event: message.event,
                status,
            })
        };
        let desktop = async {
            if !self.inner.config.desktop {
                return None;
            }
            let status = match desktop::show(&message.title(), &message.details()).await {
                DesktopOutcome::Shown => DeliveryStatus::Delivered,
                DesktopOutcome::NoSessionBus => DeliveryStatus::Skipped("no D-Bus session bus on this host".into()),
                DesktopOutcome::Failed(reason) => DeliveryStatus::Failed(reason),
            };
            Some(Delivery { sink: Sink::Desktop, event: message.event, status })
        };
        let (webhook, desktop) = tokio::join!(webhook, desktop);
        webhook.into_iter().chain(desktop).collect()
    }
}

/// What differs between messages; the rest comes from the notifier.
struct MessageFields {
    event: NotifyEvent,
    job: Option<String>,
    result: Option<&'static str>,
    error: Option<String>,
    ids: Vec<String>,
    duration: Option<Duration>,
    at: DateTime<Utc>,
    newest_verified_at: Option<DateTime<Utc>>,
    suppressed: u64,
    test: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_serialise_as_documented() {
        let delivered = Delivery {
            sink: Sink::Webhook { origin: "https://hooks.example.com".into(), format: "slack" },
            event: NotifyEvent::Failure,
            status: DeliveryStatus::Delivered,
        };
        assert_eq!(
            serde_json::to_value(&delivered).unwrap(),
            serde_json::json!({"sink": "webhook", "origin": "https://hooks.example.com", "format": "slack", "event": "failure", "status": "delivered"})
        );
        let skipped = Delivery {
            sink: Sink::Desktop,
            event: NotifyEvent::Stale,
            status: DeliveryStatus::Skipped("no bus".into()),
        };
        assert_eq!(
            serde_json::to_value(&skipped).unwrap(),
            serde_json::json!({"sink": "desktop", "event": "stale", "status": "skipped", "reason": "no bus"})
        );
    }
}
