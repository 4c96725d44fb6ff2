//! WAL archiving: `wal-push` (PostgreSQL's `archive_command`), `wal-fetch` (its
//! `restore_command`, with prefetch) and `wal check` (continuity of the archive).
//!
//! - [`page`]: the little lifeboat reads inside WAL: a segment's long page header (system
//!   identifier, segment size) and the identifier in `pg_control`.
//! - [`push`]: store one file durably, create-only, comparing content on a repeated push (G2),
//!   after checking the cluster's identity.
//! - [`handoff`]: `wal-push` handing the file to `lifeboat daemon` over a Unix socket, which
//!   answers once it is stored (the daemon end is [`crate::daemon::archive`]).
//! - [`fetch`] and [`spool`]: restore one file atomically after authentication, and keep the next
//!   segments downloaded ahead in a spool directory.
//! - [`ahead`]: during `restore --start`, download the segments recovery asks for next into the
//!   spool while replay runs.
//! - [`check`]: archived segments per timeline as ranges, and the gaps between them.
//!
//! Object keys come from [`crate::catalog::layout::ClusterLayout`], file names from
//! [`crate::catalog::wal`]. `wal-push` and `wal-fetch` run once per file, so they do only what
//! that file needs: a few requests, no listing.

pub mod ahead;
pub mod check;
pub mod fetch;
pub mod handoff;
pub mod page;
pub mod push;
pub mod records;
pub mod spool;
