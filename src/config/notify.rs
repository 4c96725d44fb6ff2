//! `[notify]`: where the daemon reports failures, recoveries, successes and a stale newest verified
//! backup (a webhook, and desktop notifications on a machine with a session bus), and how often.
//! The sending itself lives in [`crate::notify`].
//!
//! ```toml
//! [notify]
//! webhook = "https://hooks.slack.com/services/..."   # a secret: its path is the token
//! format = "slack"
//! on = ["failure", "recovery", "stale"]
//! desktop = true
//! stale_after = "26h"
//! min_interval = "15m"
//! attempts = 5
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::resolve::Locator;
use super::show::quote;
use super::{format_duration, parse_duration};
use crate::secret::{REDACTED, Secret};

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub webhook: Option<Secret>,
    pub format: Option<WebhookFormat>,
    pub on: Option<Vec<String>>,
    pub desktop: Option<bool>,
    pub stale_after: Option<String>,
    pub min_interval: Option<String>,
    pub attempts: Option<i64>,
}

/// The body a webhook receives: lifeboat's own JSON (docs/notifications.md) or Slack's
/// `{"text": ...}` message shape, which Slack, Mattermost, Rocket.Chat and others accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyEvent {
    /// A job run failed.
    Failure,
    /// The first successful run of a job after a failed one.
    Recovery,
    /// Any other successful run.
    Success,
    /// The newest verified backup became older than `stale_after`.
    Stale,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] =
        [NotifyEvent::Failure, NotifyEvent::Recovery, NotifyEvent::Success, NotifyEvent::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failure => "failure",
            NotifyEvent::Recovery => "recovery",
            NotifyEvent::Success => "success",
            NotifyEvent::Stale => "stale",
        }
    }

    fn parse(text: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|event| event.as_str() == text)
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `notify.webhook`: a URL that usually carries its credential in the path (Slack's
/// `/services/T…/B…/secret`), so it is a [`Secret`] and only its host is ever shown.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: Secret,
    pub format: WebhookFormat,
    /// `https://host[:port]`: what logs and `notify test` may say about where messages go.
    pub shown: String,
}

/// `[notify]`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub webhook: Option<Webhook>,
    /// Desktop notifications through the session bus (a developer's laptop); skipped where there is none.
    pub desktop: bool,
    /// The events that are sent; the others are only logged.
    pub on: Vec<NotifyEvent>,
    /// The newest verified backup older than this is `stale`.
    pub stale_after: Duration,
    /// At most one message per job and event within this long; the ones in between are counted
    /// and the next message says how many there were.
    pub min_interval: Duration,
    /// Attempts per webhook message, counting the first (a 4xx answer other than 429 is final).
    pub attempts: u32,
}

impl PartialEq for Webhook {
    fn eq(&self, other: &Webhook) -> bool {
        self.url.expose() == other.url.expose() && self.format == other.format
    }
}

impl Eq for Webhook {}

impl NotifyConfig {
    pub const DEFAULT_ON: [NotifyEvent; 3] = [NotifyEvent::Failure, NotifyEvent::Recovery, NotifyEvent::Stale];
    pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(26 * 3600);
    pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_ATTEMPTS: u32 = 5;
    pub const ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=20;

    pub fn sends(&self, event: NotifyEvent) -> bool {
        self.on.contains(&event)
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook: None,
            desktop: true,
            on: Self::DEFAULT_ON.to_vec(),
            stale_after: Self::DEFAULT_STALE_AFTER,
            min_interval: Self::DEFAULT_MIN_INTERVAL,
            attempts: Self::DEFAULT_ATTEMPTS,
        }
    }
}

pub(super) fn resolve(locator: &Locator<'_>, raw: RawNotify) -> Result<NotifyConfig, ConfigError> {
    let defaults = NotifyConfig::default();
    let webhook = match raw.webhook {
        None => {
            if raw.format.is_some() {
                return Err(locator.error(
                    &["notify", "format"],
                    "is set but notify.webhook is not, so it would be ignored; set webhook = \"https://...\" \
                     or remove format",
                ));
            }
            None
        }
        Some(url) => {
            let shown =
                webhook_origin(url.expose()).map_err(|message| locator.error(&["notify", "webhook"], message))?;
            Some(Webhook { url, format: raw.format.unwrap_or_default(), shown })
        }
    };
    let on = match raw.on {
        None => defaults.on,
        Some(names) => {
            let mut on = Vec::new();
            for name in names {
                let event = NotifyEvent::parse(&name).ok_or_else(|| {
                    let allowed: Vec<&str> = NotifyEvent::ALL.iter().map(|event| event.as_str()).collect();
                    locator.error(
                        &["notify", "on"],
                        format!("{name:?} is not an event; write a list of {}", allowed.join(", ")),
                    )
                })?;
                if !on.contains(&event) {
                    on.push(event);
                }
            }
            on.sort();
            on
        }
    };
    let duration = |key: &'static str, value: Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match parse_duration(&text) {
            Ok(duration) if duration.is_zero() && key == "stale_after" => {
                Err(locator.error(&["notify", key], "must be longer than \"0s\", e.g. \"26h\" for daily backups"))
            }
            Ok(duration) => Ok(duration),
            Err(message) => Err(locator.error(&["notify", key], message)),
        },
    };
    Ok(NotifyConfig {
        webhook,
        desktop: raw.desktop.unwrap_or(defaults.desktop),
        on,
        stale_after: duration("stale_after", raw.stale_after, defaults.stale_after)?,
        min_interval: duration("min_interval", raw.min_interval, defaults.min_interval)?,
        attempts: match raw.attempts {
            None => defaults.attempts,
            Some(value) => match u32::try_from(value) {
                Ok(value) if NotifyConfig::ATTEMPTS.contains(&value) => value,
                _ => {
                    let range = NotifyConfig::ATTEMPTS;
                    return Err(locator.error(
                        &["notify", "attempts"],
                        format!("{value} is out of range ({}..={})", range.start(), range.end()),
                    ));
                }
            },
        },
    })
}

/// `scheme://host[:port]` of a webhook URL, or why it is not one. Never quotes the URL: its path
/// or query may hold the token.
fn webhook_origin(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|_| {
        "is not a URL (the value is not repeated here because it may hold a token); write \
         \"https://host/path\""
            .to_string()
    })?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => {
            return Err(
                "must start with https:// (or http://); the value is not repeated here because it may hold a token"
                    .into(),
            );
        }
    };
    let authority = uri.authority().ok_or_else(|| "has no host; write \"https://host/path\"".to_string())?;
    let after_host = authority.as_str().rsplit(']').next().unwrap_or_default();
    if after_host.contains(':') && authority.port_u16().is_none() {
        return Err("has an invalid port (the value is not repeated here because it may hold a token)".into());
    }
    if authority.as_str().contains('@') {
        return Err("must not carry user:password@ (put a token in the path or query, as the service documents)".into());
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The `[notify]` table for `config show`, the webhook redacted.
pub(super) fn write_redacted(notify: &NotifyConfig, out: &mut String) -> fmt::Result {
    writeln!(out, "\n[notify]")?;
    match &notify.webhook {
        Some(webhook) => {
            writeln!(out, "webhook = {}  # to {}", quote(REDACTED), webhook.shown)?;
            writeln!(out, "format = {}", quote(webhook.format.as_str()))?;
        }
        None => writeln!(out, "# webhook: not set (no webhook messages)")?,
    }
    let on: Vec<String> = notify.on.iter().map(|event| quote(event.as_str())).collect();
    writeln!(out, "on = [{}]", on.join(", "))?;
    writeln!(out, "desktop = {}", notify.desktop)?;
    writeln!(out, "stale_after = {}", quote(&format_duration(notify.stale_after)))?;
    writeln!(out, "min_interval = {}", quote(&format_duration(notify.min_interval)))?;
    writeln!(out, "attempts = {}", notify.attempts)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const TOKEN: &str = "T000/B000/very-secret-token";

    fn parse(notify: &str) -> Result<Config, ConfigError> {
        let text = format!("[cluster]\nname = \"main\"\n\n[notify]\n{notify}\n");
        Config::from_toml(&text, Path::new("/etc/lifeboat/lifeboat.toml"), &|_| None)
    }

    fn error(notify: &str) -> String {
        parse(notify).expect_err("should be refused").to_string()
    }

    #[test]
    fn defaults_without_a_notify_table() {
        let config = Config::from_toml("[cluster]\nname = \"main\"\n", Path::new("/x.toml"), &|_| None).unwrap();
        assert_eq!(config.notify, NotifyConfig::default());
        assert_eq!(config.notify.on, [NotifyEvent::Failure, NotifyEvent::Recovery, NotifyEvent::Stale]);
        assert!(config.notify.desktop);
        assert_eq!(config.notify.stale_after, Duration::from_secs(26 * 3600));
    }

    #[test]
    fn every_key_parses() {
        let config = parse(&format!(
            "webhook = \"https://hooks.example.com:8443/services/{TOKEN}\"\nformat = \"slack\"\non = [\"success\", \"failure\"]\n\
             desktop = false\nstale_after = \"2d\"\nmin_interval = \"1m\"\nattempts = 3"
        ))
        .unwrap();
        let notify = config.notify;
        let webhook = notify.webhook.unwrap();
        assert_eq!(webhook.format, WebhookFormat::Slack);
        assert_eq!(webhook.shown, "https://hooks.example.com:8443");
        assert_eq!(notify.on, [NotifyEvent::Failure, NotifyEvent::Success]);
        assert!(!notify.desktop);
        assert_eq!(notify.stale_after, Duration::from_secs(2 * 86400));
        assert_eq!(notify.min_interval, Duration::from_secs(60));
        assert_eq!(notify.attempts, 3);
    }

    #[test]
    fn an_unknown_event_names_the_key_and_the_allowed_values() {
        let message = error("on = [\"failure\", \"oops\"]");
        assert!(message.contains("notify.on"), "{message}");
        assert!(message.contains("\"oops\""), "{message}");
        assert!(message.contains("failure, recovery, success, stale"), "{message}");
        assert!(message.starts_with("/etc/lifeboat/lifeboat.toml:5:"), "not located: {message}");
    }

    #[test]
    fn bad_values_are_located_errors() {
        assert!(error("stale_after = \"soon\"").contains("notify.stale_after"));
        assert!(error("stale_after = \"0s\"").contains("notify.stale_after"));
        assert!(error("min_interval = \"-1m\"").contains("notify.min_interval"));
        assert!(error("attempts = 0").contains("notify.attempts"));
        assert!(error("format = \"xml\"\nwebhook = \"https://h/x\"").contains("notify.format"));
        assert!(error("format = \"slack\"").contains("notify.webhook is not"));
        assert!(error("colour = \"red\"").contains("unknown key"));
    }

    #[test]
    fn the_webhook_never_appears_in_errors() {
        for value in [
            format!("\"ftp://hooks.example.com/{TOKEN}\""),
            format!("\"not a url {TOKEN}\""),
            format!("\"https://user:{TOKEN}@hooks.example.com/\""),
            "42".to_string(),
            format!("[\"{TOKEN}\"]"),
        ] {
            let message = error(&format!("webhook = {value}"));
            assert!(message.contains("notify.webhook"), "{message}");
            assert!(!message.contains("very-secret-token"), "the token leaked: {message}");
        }
    }

    #[test]
    fn config_show_redacts_the_webhook() {
        let config = parse(&format!("webhook = \"https://hooks.example.com/services/{TOKEN}\"")).unwrap();
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(shown.contains("webhook = \"<redacted>\"  # to https://hooks.example.com"), "{shown}");
        assert!(shown.contains("on = [\"failure\", \"recovery\", \"stale\"]"), "{shown}");
        assert!(!format!("{config:?}").contains("very-secret-token"), "Debug leaks the token");
        // What config show prints parses again (the redacted webhook aside).
        let reparsed = shown.replace("\"<redacted>\"", "\"https://hooks.example.com/x\"");
        Config::from_toml(&reparsed, Path::new("/x.toml"), &|_| None).unwrap();
    }
}
