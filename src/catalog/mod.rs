//! The catalog: the repository's layout for each cluster and the typed names in it, so the rest
//! of lifeboat never builds an object key or parses a WAL file name by hand.
//!
//! - [`layout`]: [`layout::ClusterLayout`], the object keys of one cluster (`clusters/<name>/...`).
//! - [`lsn`]: [`lsn::Lsn`] and [`lsn::Timeline`], positions in the WAL.
//! - [`wal`]: WAL file names ([`wal::WalSegment`], [`wal::WalFile`]) for a [`wal::SegmentSize`].
//! - [`cluster`]: the cluster record (system identifier, segment size) that keeps two PostgreSQL
//!   clusters from sharing one cluster name.
//! - [`id`]: backup and dump ids.
//! - [`lease`]: repository leases (one writer per cluster).
//! - [`leftovers`]: sweeping partial uploads and empty directories, by the lease holder.
//! - [`timeline`]: timeline histories, and which segment recovery reads on a timeline.
//! - [`listing`]: which backups and dumps exist, reading them, deleting one.
//! - [`journal`]: the append-only, hash-chained record of what lifeboat added and removed.
//! - [`audit`]: the catalog as stored, checked against the journal: what is missing or altered.

pub mod audit;
pub mod cluster;
pub mod id;
pub mod journal;
pub mod layout;
pub mod lease;
pub mod leftovers;
pub mod listing;
pub mod lsn;
pub mod timeline;
pub mod wal;
