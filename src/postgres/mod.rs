//! PostgreSQL on this host: where its programs live and how lifeboat runs a cluster of its own.
//!
//! - [`binaries`]: finds the installed PostgreSQL programs (`cluster.bin_dir`, else
//!   `pg_config --bindir`, else the newest `/usr/lib/postgresql/<major>/bin`) and knows their major
//!   version, so callers can check that the tools match the server they talk to.
//! - [`cluster`]: [`cluster::LocalCluster`], a throwaway cluster in a scratch directory (initdb,
//!   Unix socket only, its own port) used by the tests and by the product's scratch restores
//!   (verification, migration rehearsal, quickstart). When lifeboat runs as root it runs the
//!   server programs as an unprivileged OS user, because PostgreSQL refuses to run as root.
//! - [`connect`]: connections to the running cluster named by `cluster.connection`.
//! - [`version`]: the majors lifeboat supports (13 to 18), recognised by version number and by
//!   WAL page magic; anything else is refused by name.

pub mod binaries;
pub mod cluster;
pub mod connect;
pub mod version;
