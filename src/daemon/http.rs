//! The daemon's HTTP side on `daemon.listen` (axum): `/metrics` (Prometheus text), `/healthz`
//! (200 `ok` while the scheduler loop goes round and the repository can be read, 503 with the
//! reason otherwise), `/status` (the `status/1` document) and `/` (the status page). Everything is
//! read from the [`DaemonState`] at request time; nothing here writes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::state::DaemonState;
use crate::ops::event::Metrics;
use crate::report::status::Status;

/// How long the scheduler loop may go without marking itself alive
/// ([`DaemonState::scheduler_alive`]) before `/healthz` fails: the loop must go round at least
/// every third of this (it also pings systemd's watchdog, so it ticks often anyway).
pub const SCHEDULER_STALE_AFTER: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {address} (daemon.listen): {source}; {hint}")]
    Bind { address: SocketAddr, hint: &'static str, source: std::io::Error },
    #[error("the HTTP server on {address} (daemon.listen) stopped: {source}")]
    Serve { address: String, source: std::io::Error },
}

/// Binds `address`; the error names it, `daemon.listen`, and what to do.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(address).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process listens there (another lifeboat daemon?): stop it, or set another port in [daemon] listen"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges the daemon does not have: choose a port above 1024 in [daemon] listen"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the address is not one of this host's: use 127.0.0.1, or an address of one of its interfaces"
            }
            _ => "check [daemon] listen, or remove it to serve nothing",
        };
        HttpError::Bind { address, hint, source }
    })
}

#[derive(Clone)]
struct Shared {
    state: Arc<DaemonState>,
    metrics: Arc<Metrics>,
}

/// The routes, for [`serve`] (and tests that drive them without a socket).
pub fn router(state: Arc<DaemonState>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(Shared { state, metrics })
}

/// Serves on `listener` until `shutdown` fires (requests in flight are finished).
pub async fn serve(
    listener: TcpListener,
    state: Arc<DaemonState>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let address = listener.local_addr().map_or_else(|_| "?".to_owned(), |address| address.to_string());
    tracing::info!("serving /metrics, /healthz, /status and the status page on http://{address}/");
    axum::serve(listener, router(state, metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| HttpError::Serve { address, source })
}

/// Whether the daemon is healthy at `now`: its scheduler loop went round within
/// [`SCHEDULER_STALE_AFTER`] and the repository could be read at the watcher's last look.
/// The reason when not.
pub fn health(status: &Status, now: DateTime<Utc>) -> Result<(), String> {
    let Some(daemon) = &status.daemon else {
        return Err("no daemon runs: this status was read directly from the repository".to_owned());
    };
    if daemon.shutting_down {
        return Err("the daemon is shutting down (SIGTERM): no new runs start".to_owned());
    }
    let silent = (now - daemon.scheduler_alive_at).to_std().unwrap_or(Duration::ZERO);
    if silent > SCHEDULER_STALE_AFTER {
        return Err(format!(
            "the scheduler loop last went round at {} ({} s ago, more than {} s): it is stuck; restart the daemon \
             (systemd's watchdog does) and report its log",
            daemon.scheduler_alive_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            silent.as_secs(),
            SCHEDULER_STALE_AFTER.as_secs()
        ));
    }
    match &status.repository {
        None => Err("the repository has not been looked at yet".to_owned()),
        Some(repository) if !repository.reachable => Err(format!(
            "the repository cannot be read: {}",
            repository.error.as_deref().unwrap_or("no reason recorded")
        )),
        Some(_) => Ok(()),
    }
}

async fn healthz(State(shared): State<Shared>) -> Response {
    match health(&shared.state.snapshot(), Utc::now()) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{reason}\n"),
        )
            .into_response(),
    }
}

async fn status(State(shared): State<Shared>) -> Response {
    let json = crate::report::to_json(&shared.state.snapshot());
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn metrics_text(State(shared): State<Shared>) -> Response {
    let text = super::metrics::render_state(&shared.state, &shared.metrics);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

async fn page(State(shared): State<Shared>) -> Response {
    let html = super::page::render(&shared.state.snapshot(), Utc::now());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status::{DaemonInfo, RepositoryStatus};

    fn daemon_status(alive_at: DateTime<Utc>, reachable: bool) -> Status {
        Status {
            source: "daemon".into(),
            daemon: Some(DaemonInfo {
                pid: 1,
                started_at: alive_at,
                config_file: "lifeboat.toml".into(),
                config_loaded_at: alive_at,
                reload_error: None,
                scheduler_alive_at: alive_at,
                shutting_down: false,
            }),
            repository: Some(RepositoryStatus {
                reachable,
                error: (!reachable).then(|| "lifeboat.repo is gone from /srv/repo".into()),
                ..RepositoryStatus::default()
            }),
            ..Status::default()
        }
    }

    #[test]
    fn healthy_only_with_a_live_scheduler_and_a_readable_repository() {
        let now = Utc::now();
        assert_eq!(health(&daemon_status(now - chrono::Duration::seconds(10), true), now), Ok(()));

        let stale = health(&daemon_status(now - chrono::Duration::seconds(600), true), now).unwrap_err();
        assert!(stale.contains("scheduler loop") && stale.contains("600 s ago"), "{stale}");

        let unreachable = health(&daemon_status(now, false), now).unwrap_err();
        assert!(unreachable.contains("lifeboat.repo is gone"), "{unreachable}");

        let mut never_looked = daemon_status(now, true);
        never_looked.repository = None;
        assert!(health(&never_looked, now).unwrap_err().contains("not been looked at"));

        let mut stopping = daemon_status(now, true);
        stopping.daemon.as_mut().unwrap().shutting_down = true;
        assert!(health(&stopping, now).unwrap_err().contains("shutting down"));

        assert!(health(&Status::default(), now).is_err());
    }

    #[tokio::test]
    async fn a_taken_port_is_named_with_daemon_listen() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = taken.local_addr().unwrap();
        let message = bind(address).await.unwrap_err().to_string();
        assert!(message.contains(&address.to_string()) && message.contains("daemon.listen"), "{message}");
        assert!(message.contains("another process listens there"), "{message}");
    }
}
