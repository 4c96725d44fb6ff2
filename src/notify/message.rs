//! One notification and its renderings: the JSON body documented in docs/notifications.md, the
//! Slack-compatible body, and the one-line summary a desktop notification or chat message shows.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::{NotifyEvent, WebhookFormat};

/// Version of the JSON body; raised when a field changes meaning or goes away.
pub const BODY_VERSION: u32 = 1;

/// A notification, whichever sink it goes to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub version: u32,
    pub event: NotifyEvent,
    pub cluster: String,
    /// The job ("backup", "dump", "verify", "expire", "copy:<name>", "wal-check"); `None` for `stale`.
    pub job: Option<String>,
    /// "succeeded" or "failed"; `None` for `stale`.
    pub result: Option<&'static str>,
    pub error: Option<String>,
    /// Backup or dump ids the run produced or worked on.
    pub ids: Vec<String>,
    pub duration_seconds: Option<f64>,
    pub host: String,
    /// When the job finished, or when staleness was noticed.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// `stale` only: when the newest verified backup was taken (`None`: there is none).
    #[serde(serialize_with = "rfc3339_option")]
    pub newest_verified_at: Option<DateTime<Utc>>,
    /// `stale` only: the configured threshold.
    pub stale_after_seconds: Option<u64>,
    /// Messages of this job held back by `min_interval` since the last one sent.
    pub suppressed: u64,
    /// Sent by `lifeboat notify test`, not by a real event.
    pub test: bool,
    pub lifeboat_version: &'static str,
    /// [`Message::summary`], for receivers that only show text.
    pub text: String,
}

impl Serialize for NotifyEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn rfc3339<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn rfc3339_option<S: serde::Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

impl Message {
    /// One line saying what happened, where: the title of a desktop notification and of a chat message.
    pub fn title(&self) -> String {
        let test = if self.test { "[test] " } else { "" };
        let job = self.job.as_deref().unwrap_or("backup");
        match self.event {
            NotifyEvent::Failure => format!("{test}lifeboat: {job} failed on {}", self.cluster),
            NotifyEvent::Recovery => format!("{test}lifeboat: {job} recovered on {}", self.cluster),
            NotifyEvent::Success => format!("{test}lifeboat: {job} succeeded on {}", self.cluster),
            NotifyEvent::Stale => format!("{test}lifeboat: no recent verified backup of {}", self.cluster),
        }
    }

    /// The details below the title.
    pub fn details(&self) -> String {
        let mut lines = Vec::new();
        match self.event {
            NotifyEvent::Stale => lines.push(match (self.newest_verified_at, self.stale_after_seconds) {
                (Some(at), Some(after)) => format!(
                    "The newest verified backup was taken {} ({} ago), more than {} ago.",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    human_duration(self.at.signed_duration_since(at).num_seconds().max(0) as f64),
                    human_duration(after as f64)
                ),
                _ => {
                    "There is no verified backup; check that backups and verifications run (`lifeboat status`).".into()
                }
            }),
            NotifyEvent::Recovery => lines.push("It succeeded after failing.".into()),
            NotifyEvent::Failure | NotifyEvent::Success => {}
        }
        if let Some(error) = &self.error {
            lines.push(format!("Error: {error}"));
        }
        if !self.ids.is_empty() {
            lines.push(format!("Ids: {}", self.ids.join(", ")));
        }
        if let Some(seconds) = self.duration_seconds {
            lines.push(format!("Took {}.", human_duration(seconds)));
        }
        if self.suppressed > 0 {
            lines.push(format!(
                "{} more message{} about this job {} held back since the last one (notify.min_interval).",
                self.suppressed,
                if self.suppressed == 1 { "" } else { "s" },
                if self.suppressed == 1 { "was" } else { "were" }
            ));
        }
        lines.push(format!("Host {}, lifeboat {}.", self.host, self.lifeboat_version));
        lines.join("\n")
    }

    /// Title and details as one text.
    pub fn summary(&self) -> String {
        format!("{}\n{}", self.title(), self.details())
    }

    /// The webhook's request body.
    pub fn body(&self, format: WebhookFormat) -> Vec<u8> {
        let value = match format {
            WebhookFormat::Json => serde_json::to_value(self),
            WebhookFormat::Slack => Ok(self.slack()),
        };
        // A Message has string keys and plain values only, so serialising cannot fail.
        serde_json::to_vec(&value.unwrap_or_default()).unwrap_or_default()
    }

    /// Slack's message shape: `text` (the fallback shown in notifications) and blocks.
    fn slack(&self) -> serde_json::Value {
        let emoji = match self.event {
            NotifyEvent::Failure => ":red_circle:",
            NotifyEvent::Recovery | NotifyEvent::Success => ":large_green_circle:",
            NotifyEvent::Stale => ":warning:",
        };
        serde_json::json!({
            "text": self.summary(),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("{emoji} *{}*", self.title())}},
                {"type": "section", "text": {"type": "mrkdwn", "text": self.details()}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                    "event `{}` · cluster `{}` · {}", self.event, self.cluster, self.at.to_rfc3339_opts(SecondsFormat::Secs, true)
                )}]},
            ],
        })
    }
}

/// "3 s", "4 min 10 s", "26 h": durations for people, to the second.
fn human_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes, secs) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event: NotifyEvent) -> Message {
        Message {
            version: BODY_VERSION,
            event,
            cluster: "main".into(),
            job: Some("backup".into()),
            result: Some("failed"),
            error: Some("cannot reach the repository".into()),
            ids: vec!["20261206T020000Z-F".into()],
            duration_seconds: Some(250.0),
            host: "db1".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            newest_verified_at: None,
            stale_after_seconds: None,
            suppressed: 3,
            test: false,
            lifeboat_version: "0.1.0",
            text: String::new(),
        }
    }

    /// The whole body, so a field added, renamed or dropped shows here (and in docs/notifications.md).
    #[test]
    fn json_body_has_the_documented_fields() {
        let mut message = message(NotifyEvent::Failure);
        message.text = message.summary();
        let body: serde_json::Value = serde_json::from_slice(&message.body(WebhookFormat::Json)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "version": 1,
                "event": "failure",
                "cluster": "main",
                "job": "backup",
                "result": "failed",
                "error": "cannot reach the repository",
                "ids": ["20261206T020000Z-F"],
                "duration_seconds": 250.0,
                "host": "db1",
                "at": "2027-01-15T08:00:00Z",
                "newest_verified_at": null,
                "stale_after_seconds": null,
                "suppressed": 3,
                "test": false,
                "lifeboat_version": "0.1.0",
                "text": "lifeboat: backup failed on main\nError: cannot reach the repository\nIds: 20261206T020000Z-F\n\
                         Took 4 min 10 s.\n3 more messages about this job were held back since the last one \
                         (notify.min_interval).\nHost db1, lifeboat 0.1.0.",
            })
        );
    }

    #[test]
    fn slack_body_has_text_and_blocks() {
        let body: serde_json::Value =
            serde_json::from_slice(&message(NotifyEvent::Failure).body(WebhookFormat::Slack)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("lifeboat: backup failed on main\n"), "{text}");
        assert!(text.contains("Error: cannot reach the repository"), "{text}");
        assert!(text.contains("3 more messages about this job were held back"), "{text}");
        assert!(text.contains("Took 4 min 10 s."), "{text}");
        assert_eq!(body["blocks"][0]["type"], "section");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(3.4), "3 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(26.0 * 3600.0), "26 h");
        assert_eq!(human_duration(27.5 * 3600.0), "27 h 30 min");
    }
}
