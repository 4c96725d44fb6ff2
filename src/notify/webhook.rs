//! The webhook sink: one HTTPS (or HTTP) POST per message, retried with exponential backoff on
//! network errors, timeouts, 5xx and 429; any other 4xx is final (the request itself is wrong,
//! sending it again changes nothing). Built on the hyper 1 + rustls (aws-lc-rs) stack the S3
//! client already compiles. The URL is a secret: errors never contain it, only its origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Webhook, WebhookFormat};
use crate::secret::REDACTED;

/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause between attempts; it doubles after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a message did not reach the webhook, after every attempt it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook at {origin} answered {status} after {attempts} attempt(s){body}; check notify.webhook")]
    Status { origin: String, status: u16, attempts: u32, body: String },
    #[error("cannot reach the webhook at {origin} after {attempts} attempt(s): {reason}")]
    Unreachable { origin: String, attempts: u32, reason: String },
    #[error("cannot send to the webhook at {origin}: {reason}")]
    Tls { origin: String, reason: String },
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A webhook with its HTTP client (connections are pooled between messages).
#[derive(Debug, Clone)]
pub struct WebhookSink {
    webhook: Webhook,
    attempts: u32,
    /// `Err` when the system's CA certificates could not be loaded: deliveries then fail with
    /// that reason, instead of the notifier failing to start.
    client: Result<HttpClient, String>,
}

impl WebhookSink {
    pub fn new(webhook: Webhook, attempts: u32) -> WebhookSink {
        WebhookSink { webhook, attempts: attempts.max(1), client: client() }
    }

    /// `https://host`: where messages go, as it may be shown.
    pub fn origin(&self) -> &str {
        &self.webhook.shown
    }

    pub fn format(&self) -> WebhookFormat {
        self.webhook.format
    }

    /// POSTs `body`, retrying as the module says.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), WebhookError> {
        let origin = self.webhook.shown.clone();
        let client = self
            .client
            .as_ref()
            .map_err(|reason| WebhookError::Tls { origin: origin.clone(), reason: reason.clone() })?;
        let body = Bytes::from(body);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(client, body.clone()).await;
            let retry = match &outcome {
                Ok(()) => return Ok(()),
                Err(Failure::Status(status, _)) => {
                    status.is_server_error()
                        || *status == StatusCode::TOO_MANY_REQUESTS
                        || *status == StatusCode::REQUEST_TIMEOUT
                }
                Err(Failure::Network(_)) => true,
            };
            if !retry || attempt >= self.attempts {
                return Err(match outcome {
                    Err(Failure::Status(status, text)) => WebhookError::Status {
                        origin,
                        status: status.as_u16(),
                        attempts: attempt,
                        body: if text.is_empty() { String::new() } else { format!(" ({text})") },
                    },
                    Err(Failure::Network(reason)) => WebhookError::Unreachable { origin, attempts: attempt, reason },
                    Ok(()) => return Ok(()),
                });
            }
            tracing::debug!(origin = %origin, attempt, "webhook attempt failed; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt(&self, client: &HttpClient, body: Bytes) -> Result<(), Failure> {
        let url = self.webhook.url.expose();
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|error| Failure::Network(self.scrub(&error.to_string())))?;
        let exchange = async {
            let response =
                client.request(request).await.map_err(|error| Failure::Network(self.scrub(&chain(&error))))?;
            let status = response.status();
            // The answer's text helps when a service refuses the body (Slack says "invalid_payload").
            let text = response.into_body().collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
            Ok::<_, Failure>((status, text))
        };
        let (status, text) = tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Network(format!("no answer within {ATTEMPT_TIMEOUT:?}")))??;
        if status.is_success() {
            return Ok(());
        }
        let text: String = String::from_utf8_lossy(&text).chars().filter(|c| !c.is_control()).take(200).collect();
        Err(Failure::Status(status, self.scrub(text.trim())))
    }

    /// `text` with the URL (and its path, which may be echoed alone) replaced.
    fn scrub(&self, text: &str) -> String {
        let url = self.webhook.url.expose();
        let mut text = text.replace(url, REDACTED);
        if let Ok(uri) = url.parse::<hyper::Uri>()
            && let Some(path) = uri.path_and_query().map(|path| path.as_str()).filter(|path| path.len() > 1)
        {
            text = text.replace(path, REDACTED);
        }
        text
    }
}

enum Failure {
    Status(StatusCode, String),
    Network(String),
}

/// An error and its causes on one line: hyper's top-level errors ("client error (Connect)") say
/// little without them.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn client() -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|error| format!("cannot load the system's CA certificates ({error}); install ca-certificates"))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
