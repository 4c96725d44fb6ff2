//! `lifeboat daemon`: the long-running process a DBA enables once. It runs the configured
//! schedules (backups, dumps, verification, expiry, copies, the WAL check), watches PostgreSQL's
//! archiver, and tells people and monitors how things stand.
//!
//! - [`state`]: what the daemon knows right now ([`state::DaemonState`]), written by the
//!   scheduler and the watcher, read by the HTTP side and the notifications.

pub mod state;
