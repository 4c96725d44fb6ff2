//! `lifeboat daemon`: the long-running process a DBA enables once. It runs the configured
//! schedules (backups, dumps, verification, expiry, copies, the WAL check), watches PostgreSQL's
//! archiver, and tells people and monitors how things stand.
//!
//! - [`state`]: what the daemon knows right now ([`state::DaemonState`]), written by the
//!   scheduler and the watcher, read by the HTTP side and the notifications.
//! - [`watch`]: the watcher, which looks at PostgreSQL's archiver and the repository.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`page`]: the status page at `/`.
//! - [`http`]: the HTTP server (`/metrics`, `/healthz`, `/status`, `/`) on `daemon.listen`.

pub mod http;
pub mod metrics;
pub mod page;
pub mod state;
pub mod watch;
