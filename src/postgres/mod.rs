//! PostgreSQL on this host: where its programs live and how lifeboat runs a cluster of its own.
//!
//! - [`abandoned`]: scratch clusters whose lifeboat was killed: found by the stamp of their
//!   creator, stopped and removed before the next one is created.
//! - [`binaries`]: finds the installed PostgreSQL programs that fit the server lifeboat talks to
//!   (server programs of exactly its major, client programs of its major or newer), in
//!   `cluster.bin_dir` first, then the usual places, and says what is needed when nothing fits.
//! - [`cluster`]: [`cluster::LocalCluster`], a throwaway cluster in a scratch directory (initdb,
//!   Unix socket only, its own port) used by the tests and by the product's scratch restores
//!   (verification, migration rehearsal, quickstart). When lifeboat runs as root it runs the
//!   server programs as an unprivileged OS user, because PostgreSQL refuses to run as root.
//! - [`connect`]: connections to the running cluster named by `cluster.connection`.
//! - [`process`]: the one way PostgreSQL programs are started: the cleaned environment, the
//!   password in `PGPASSWORD` only, the cluster's OS user when lifeboat is root, and the tail of
//!   standard error kept (password redacted) for error messages.
//! - [`version`]: the majors lifeboat supports (13 to 18), recognised by version number and by
//!   WAL page magic; anything else is refused by name.

pub mod abandoned;
pub mod binaries;
pub mod cluster;
pub mod connect;
pub mod process;
pub mod version;
