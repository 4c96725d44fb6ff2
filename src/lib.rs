//! lifeboat: PostgreSQL backup and point-in-time recovery, with a migration runner that will not
//! touch a database without a fresh, restore-verified backup.
//!
//! Map of the modules:
//! - [`config`]: the TOML file, environment overrides and validation into a typed [`config::Config`].
//! - [`secret`]: the [`secret::Secret`] type that keeps passphrases and keys out of output.
//! - [`storage`]: the [`storage::ObjectStore`] trait and its local-directory and S3 backends.
//! - [`object`]: the framed object format (zstd, then AES-256-GCM in the STREAM construction).
//! - [`keys`]: the repository master key and the key slots that wrap it.
//! - [`repository`]: a store plus keys: `lifeboat.repo`, sealed object reads and writes.
//! - [`postgres`]: PostgreSQL binaries and throwaway local clusters.
//! - [`catalog`]: the per-cluster layout of the repository, typed names, and leases (one writer).
//! - [`format`]: the records lifeboat stores (backup and dump manifests, verification reports),
//!   their versions and keys, side by side.
//! - [`backup`]: native physical base backups (`pg_backup_start`, a parallel copy of the data
//!   directory, `pg_backup_stop`, the manifest written last).
//! - [`wal`]: WAL archiving: `wal-push`, `wal-fetch` with prefetch, and the continuity check.
//! - [`dump`]: logical dumps (`pg_dump` per database, `pg_dumpall --globals-only`) with row counts.
//! - [`restore`]: physical restores with point-in-time recovery, and logical restores of a dump's
//!   databases or tables (`restore::dump`).
//! - [`retention`]: the retention policy as a pure decision: what `lifeboat expire` keeps, and why.
//! - [`notify`]: notifications of job failures, recoveries and stale verified backups (webhook,
//!   desktop), rate-limited.
//! - [`verify`]: proving backups and dumps restorable, in a scratch server.
//! - [`ops`]: the one way to run an operation (backup, dump, verify, restore, delete, wal-push,
//!   WAL check) for every caller: the context, cancellation, events (log line, metric and audit
//!   record from one `emit`) and the audit trail.
//! - [`migrate`]: the migration runner, its history table, the backup gate and adoption of other
//!   tools' migrations.
//! - [`schema`]: `lifeboat schema check`: what makes a database's schema fragile, with the fixes.
//! - [`seed`]: environment seeds (`lifeboat seed`): SQL and CSV files loaded in foreign-key order,
//!   with a checksummed history.
//! - [`daemon`]: `lifeboat daemon`: schedules, the archiver watch, metrics, health and status.
//! - [`report`]: the shapes lifeboat reports in (`--json`, and the text rendered from them): one
//!   versioned view per kind of thing, documented in docs/json.md.
//! - [`util`]: small helpers written once: byte counts for people, SQL and shell quoting,
//!   percent-encoding, process liveness.
//! - [`cli`]: the command line; `main.rs` only calls [`cli::run`].

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dump;
pub mod format;
pub mod keys;
pub mod migrate;
pub mod notify;
pub mod object;
pub mod ops;
pub mod postgres;
pub mod report;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod schema;
pub mod secret;
pub mod seed;
pub mod storage;
pub mod util;
pub mod verify;
pub mod wal;
