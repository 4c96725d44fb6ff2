//! Logical dumps: `pg_dump --format=custom` of each database plus `pg_dumpall --globals-only`,
//! streamed into the repository, with every table's exact row count.
//!
//! One dump, `lifeboat dump`, goes like this:
//! 1. Inspect the server (version, system identifier, databases) and find a `pg_dump` of its
//!    major or newer, which dumps it (an older one refuses). Record or check the
//!    cluster's identity ([`crate::catalog::cluster::ClusterRecord`]), as backups and WAL do.
//! 2. Take the cluster's lease (`locks/backup`, the lock base backups and deletes take too), then
//!    remove what a killed earlier dump left behind: objects under `dumps/<id>/` with no manifest.
//! 3. Store the globals, then each database in turn: a `REPEATABLE READ` transaction exports its
//!    snapshot ([`snapshot`]), `pg_dump --snapshot` streams the database in that snapshot straight
//!    into a repository put ([`program`]), and meanwhile the same transaction counts every table.
//! 4. Write the manifest ([`crate::format::dump_manifest`]) last, create-only: the dump exists from that moment (G1).
//!
//! A failure anywhere fails the whole dump: no manifest is written and the objects stored so far
//! are removed (or, after a crash or if removing them fails, by the next dump). Either way what
//! interrupted writes left in the cluster's prefix is swept before the lease goes ([`leftovers`]).
//! The database password is handed to the programs in `PGPASSWORD`, never on their command line,
//! and is removed from anything they print.

pub mod program;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

use self::program::{Finished, Program};
use self::snapshot::{SnapshotError, SnapshotSession};
use crate::catalog::cluster::{ClusterRecord, IdentityError, Observed, SystemIdentifier};
use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::journal::{self, JournalError};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lease::{self, Lease, LeaseError};
use crate::catalog::leftovers;
use crate::catalog::wal::SegmentSize;
use crate::config::{ClusterConfig, ConnectionString};
use crate::format::backup_manifest::MANIFEST;
use crate::format::dump_manifest::{
    DatabaseDump, DumpKeys, DumpManifest, DumpObject, FORMAT_NAME, FORMAT_VERSION, GlobalsDump,
};
use crate::format::journal_entry;
use crate::postgres::binaries::{BinariesError, Need, PgBinaries};
use crate::postgres::connect::{ConnectError, connect};
use crate::postgres::process::PgCommand;
use crate::postgres::version::{self, UnsupportedVersion};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ByteReader, ObjectKey, PutMode};

/// The lease a dump holds: the same as base backups and deletes, so none of them overlap.
pub const LOCK: &str = "backup";

/// Which databases to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every database that is not a template and allows connections.
    All,
    /// These, in this order (duplicates ignored).
    Databases(Vec<String>),
}

/// What to dump and how long to wait for the lease.
#[derive(Debug, Clone)]
pub struct DumpRequest {
    pub selection: Selection,
    pub lock_wait: Duration,
}

/// What a running dump reports, as it happens.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The lease is held and the dump's id chosen.
    Started {
        id: BackupId,
        databases: &'a [String],
    },
    GlobalsDone(&'a GlobalsDump),
    DatabaseDone(&'a DatabaseDump),
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Binaries(#[from] BinariesError),

    #[error(transparent)]
    Version(#[from] UnsupportedVersion),

    #[error("{0}")]
    Connection(String),

    #[error(transparent)]
    Connect(#[from] ConnectError),

    #[error("could not {what} on the server: {detail}")]
    Query { what: &'static str, detail: String },

    #[error("database {name:?} does not exist on the server; it has: {}", available.join(", "))]
    NoSuchDatabase { name: String, available: Vec<String> },

    #[error("database {name:?} does not allow connections (datallowconn is false), so it cannot be dumped")]
    NotConnectable { name: String },

    #[error("there is no database to dump: the server has only templates and databases that refuse connections")]
    NothingToDump,

    #[error(transparent)]
    Identity(Box<IdentityError>),

    #[error(transparent)]
    Lease(#[from] LeaseError),

    #[error(transparent)]
    Repository(#[from] RepositoryError),

    #[error("could not run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{program} of {what} failed ({status}); nothing of this dump was kept. Its last messages:\n{stderr}")]
    ProgramFailed { program: &'static str, what: String, status: String, stderr: String },

    #[error("dumping database {database:?}: {source}; nothing of this dump was kept")]
    Snapshot {
        database: String,
        #[source]
        source: SnapshotError,
    },

    #[error("no dump was taken: {source}")]
    Journal { source: JournalError },

    #[error(
        "dump {id} is complete and stored, but recording it in the cluster's journal failed: {source}\nUntil it is \
         recorded `lifeboat list` names it as not recorded; the next backup, dump, expire or delete records it \
         (or `lifeboat verify {id}`, which proves it first)"
    )]
    Record { id: BackupId, source: JournalError },

    #[error("storing {what} failed; nothing of this dump was kept: {source}")]
    Store {
        what: String,
        #[source]
        source: RepositoryError,
    },

    #[error("{source}\nRemoving what the failed dump had written under {prefix} failed too: {cleanup}")]
    LeftBehind { source: Box<DumpError>, prefix: String, cleanup: String },

    #[error(
        "lost the lease {lock} while dumping (this process stalled past its expiry and another \
         lifeboat took it over); the dump was discarded"
    )]
    LeaseLost { lock: String },
}

/// Takes a dump of the cluster `cluster` into `repository` and returns its manifest, which is
/// stored by the time this returns.
pub async fn dump(
    repository: Arc<Repository>,
    cluster: &ClusterConfig,
    request: &DumpRequest,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<DumpManifest, DumpError> {
    // Refuse a connection that cannot be passed safely before anything else happens.
    cluster.connection.for_libpq().map_err(DumpError::Connection)?;

    let server = Server::inspect(&cluster.connection).await?;
    // pg_dump refuses a server newer than itself; a newer pg_dump dumps an older server.
    let need = Need::clients(
        &["pg_dump", "pg_dumpall"],
        server.major(),
        format!("the server at {}", cluster.connection.redacted()),
    );
    let binaries = PgBinaries::locate(cluster.bin_dir.as_deref(), &need)?;
    let pg_dump = binaries.require("pg_dump")?;
    let pg_dumpall = binaries.require("pg_dumpall")?;
    let databases = server.choose(&request.selection)?;
    let pg_dump_version = program_version(&pg_dump).await?;

    let layout = ClusterLayout::new(&cluster.name);
    let observed = Observed {
        system_identifier: server.system_identifier,
        segment_size: server.segment_size,
        postgres_version: Some(server.major_version_text()),
        source: format!("the server at {}", cluster.connection.redacted()),
    };
    ClusterRecord::ensure(&repository, &layout, &observed)
        .await
        .map_err(|error| DumpError::Identity(Box::new(error)))?;
    journal::writable_head(&repository, &layout).await.map_err(|source| DumpError::Journal { source })?;

    let lock = layout.lock(LOCK);
    let lease = Lease::acquire(repository.clone(), &lock, "dump", lease::DEFAULT_TTL, request.lock_wait).await?;
    // Everything below runs under the lease, which is released whatever happens.
    let mut prefix_to_remove = None;
    let outcome = async {
        // The id first, while a killed dump's objects still mark its id as taken: a dump never
        // reuses the id of another, even one whose leftovers are about to be removed.
        let (id, started_at) = unused_id(&repository, &layout).await?;
        remove_incomplete_dumps(&repository, &layout).await;
        let keys = DumpKeys::new(&layout, id);
        prefix_to_remove = Some(keys.prefix());
        progress(Progress::Started { id, databases: &databases });

        let dumper = Dumper { repository: &repository, connection: &cluster.connection, pg_dump, pg_dumpall, keys };
        let globals = dumper.globals(&server).await?;
        progress(Progress::GlobalsDone(&globals));
        let mut dumped = Vec::with_capacity(databases.len());
        for name in &databases {
            let database = dumper.database(name).await?;
            progress(Progress::DatabaseDone(&database));
            dumped.push(database);
        }
        let manifest = DumpManifest {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            id,
            cluster: cluster.name.to_string(),
            system_identifier: server.system_identifier,
            server_version: server.version.clone(),
            server_version_num: server.version_num,
            pg_dump_version,
            started_at,
            finished_at: Utc::now(),
            globals,
            databases: dumped,
        };
        if lease.is_lost() {
            return Err(DumpError::LeaseLost { lock: lock.to_string() });
        }
        let key = dumper.keys.manifest();
        let json = manifest.to_json();
        let manifest_blake3 = journal_entry::hash_hex(&json);
        repository
            .put_bytes(&key, json, PutMode::CreateOnly)
            .await
            .map_err(|source| DumpError::Store { what: format!("the manifest {key}"), source })?;
        // Complete from here on: a failure to record it keeps it, for the sweep to record.
        prefix_to_remove = None;
        journal::append(&repository, &layout, journal_entry::Event::Completed { id: manifest.id, manifest_blake3 })
            .await
            .map_err(|source| DumpError::Record { id: manifest.id, source })?;
        Ok(manifest)
    }
    .await;

    let outcome = match (outcome, prefix_to_remove) {
        (Err(error), Some(prefix)) => match remove_objects(&repository, &prefix).await {
            Ok(()) => Err(error),
            Err(cleanup) => Err(DumpError::LeftBehind { source: Box::new(error), prefix, cleanup }),
        },
        (outcome, _) => outcome,
    };
    if !lease.is_lost() {
        leftovers::sweep(&repository, &layout).await;
    }
    if let Err(error) = lease.release().await {
        tracing::warn!(%error, "could not release the lease; it expires by itself");
    }
    outcome
}

/// What the dump needs to know about the server.
struct Server {
    version: String,
    version_num: u32,
    system_identifier: SystemIdentifier,
    segment_size: SegmentSize,
    /// Whether the connecting role is a superuser (only a superuser can read role passwords).
    superuser: bool,
    /// The database `cluster.connection` names, where `pg_dumpall` connects.
    database: String,
    /// Every database: name, allows connections, is a template.
    databases: Vec<(String, bool, bool)>,
}

impl Server {
    async fn inspect(connection: &ConnectionString) -> Result<Server, DumpError> {
        let mut conn = connect(connection).await?;
        let query = |what| move |error: sqlx::Error| DumpError::Query { what, detail: error.to_string() };
        let (version, version_num, system_identifier, segment_size, superuser, database): (
            String,
            i32,
            i64,
            i64,
            bool,
            String,
        ) = sqlx::query_as(
            "SELECT pg_catalog.current_setting('server_version'), \
                    pg_catalog.current_setting('server_version_num')::int, \
                    (SELECT system_identifier FROM pg_catalog.pg_control_system()), \
                    (SELECT bytes_per_wal_segment::bigint FROM pg_catalog.pg_control_init()), \
                    coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false), \
                    pg_catalog.current_database()::text",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(query("read the version and system identifier"))?;
        let databases: Vec<(String, bool, bool)> = sqlx::query_as(
            "SELECT datname::text, datallowconn, datistemplate FROM pg_catalog.pg_database ORDER BY datname",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(query("list the databases"))?;
        let _ = conn.close().await;
        let version_num = version_num.max(0) as u32;
        version::check_supported(
            version::major_of_version_num(version_num),
            format_args!("the server at {connection}"),
        )?;
        Ok(Server {
            version,
            version_num,
            // pg_control_system() shows the unsigned identifier as a signed bigint.
            system_identifier: SystemIdentifier(system_identifier as u64),
            segment_size: SegmentSize::new(segment_size.max(0) as u64).unwrap_or_default(),
            superuser,
            database,
            databases,
        })
    }

    /// The first number of the version: 15 for 15.18, 9 for 9.6.24 (as [`PgBinaries::major`]).
    fn major(&self) -> u32 {
        self.version_num / 10000
    }

    /// The major version as `PG_VERSION` spells it: "15", or "9.6" before version 10.
    fn major_version_text(&self) -> String {
        if self.version_num >= 100_000 {
            self.major().to_string()
        } else {
            format!("{}.{}", self.major(), self.version_num / 100 % 100)
        }
    }

    fn choose(&self, selection: &Selection) -> Result<Vec<String>, DumpError> {
        let chosen: Vec<String> = match selection {
            Selection::All => self
                .databases
                .iter()
                .filter(|(_, allows_connections, template)| *allows_connections && !template)
                .map(|(name, _, _)| name.clone())
                .collect(),
            Selection::Databases(names) => {
                let mut chosen: Vec<String> = Vec::new();
                for name in names {
                    match self.databases.iter().find(|(existing, _, _)| existing == name) {
                        None => {
                            return Err(DumpError::NoSuchDatabase {
                                name: name.clone(),
                                available: self.databases.iter().map(|(name, _, _)| name.clone()).collect(),
                            });
                        }
                        Some((_, false, _)) => return Err(DumpError::NotConnectable { name: name.clone() }),
                        Some(_) if chosen.contains(name) => {}
                        Some(_) => chosen.push(name.clone()),
                    }
                }
                chosen
            }
        };
        if chosen.is_empty() {
            return Err(DumpError::NothingToDump);
        }
        Ok(chosen)
    }
}

/// Everything a single program run needs.
struct Dumper<'a> {
    repository: &'a Arc<Repository>,
    connection: &'a ConnectionString,
    pg_dump: PathBuf,
    pg_dumpall: PathBuf,
    keys: DumpKeys,
}

impl Dumper<'_> {
    async fn globals(&self, server: &Server) -> Result<GlobalsDump, DumpError> {
        let mut command = libpq_command(&self.pg_dumpall, self.connection)?;
        command.args(["--globals-only", &format!("--database={}", server.database)]);
        if !server.superuser {
            tracing::warn!(
                "the role in cluster.connection is not a superuser, so the globals are dumped without \
                 role passwords (pg_dumpall --no-role-passwords); roles restored from this dump have no password"
            );
            command.arg("--no-role-passwords");
        }
        let (program, output) = spawn(&self.pg_dumpall, command)?;
        let key = self.keys.globals();
        let stored = self.store(&key, output, &program).await;
        let finished = program.finish().await;
        let summary = settle("pg_dumpall", "the globals", &key, stored, finished, None)?;
        Ok(GlobalsDump { object: DumpObject::new(&key, &summary), role_passwords: server.superuser })
    }

    async fn database(&self, name: &str) -> Result<DatabaseDump, DumpError> {
        let started_at = Utc::now();
        let connection = self.connection.with_database(name);
        let snapshot_error = |source| DumpError::Snapshot { database: name.to_owned(), source };
        let mut session = SnapshotSession::begin(&connection).await.map_err(snapshot_error)?;
        let snapshot = session.snapshot().to_owned();
        tracing::info!(database = name, %snapshot, "dumping");

        let mut command = libpq_command(&self.pg_dump, &connection)?;
        // The repository compresses: pg_dump's own zlib would only cost time and ratio.
        command.args(["--format=custom", "--compress=0", &format!("--snapshot={snapshot}")]);
        let (program, output) = spawn(&self.pg_dump, command)?;
        let key = self.keys.database(name);

        // The counts run in the snapshot transaction while pg_dump streams. Whichever fails first
        // stops the other: a failed count kills pg_dump, a failed put stops the counting.
        let put_failed = CancellationToken::new();
        let store = async {
            let stored = self.store(&key, output, &program).await;
            if stored.is_err() {
                put_failed.cancel();
            }
            stored
        };
        let count = async {
            tokio::select! {
                counted = session.count_rows() => {
                    if counted.is_err() {
                        program.kill();
                    }
                    Some(counted)
                }
                () = put_failed.cancelled() => None,
            }
        };
        let (stored, counted) = tokio::join!(store, count);
        let finished = program.finish().await;
        session.end().await;

        // `None` when the counting was stopped because the put failed.
        let (tables, count_error) = match counted {
            Some(Ok(tables)) => (Some(tables), None),
            Some(Err(error)) => (None, Some(snapshot_error(error))),
            None => (None, None),
        };
        let what = format!("database {name:?}");
        let summary = settle("pg_dump", &what, &key, stored, finished, count_error)?;
        let tables = tables.expect("settle fails unless the counts succeeded");
        Ok(DatabaseDump {
            name: name.to_owned(),
            object: DumpObject::new(&key, &summary),
            snapshot,
            started_at,
            finished_at: Utc::now(),
            tables,
        })
    }

    /// Stores a program's output under `key`; a failed put kills the program, which may be
    /// blocked on something other than writing.
    async fn store(
        &self,
        key: &ObjectKey,
        output: ByteReader,
        program: &Program,
    ) -> Result<crate::object::SealSummary, RepositoryError> {
        let stored = self.repository.put(key, output, PutMode::CreateOnly).await;
        if stored.is_err() {
            program.kill();
        }
        stored
    }
}

/// Decides how one program run went, from the put, the program's end and (for databases) the
/// row counts. The program's own failure explains the most; then a failed count (which killed
/// the program); then the storage error.
fn settle(
    program: &'static str,
    what: &str,
    key: &ObjectKey,
    stored: Result<crate::object::SealSummary, RepositoryError>,
    finished: Finished,
    count_error: Option<DumpError>,
) -> Result<crate::object::SealSummary, DumpError> {
    let failed_by_itself = (finished.failed_at_end && !finished.killed) || (stored.is_ok() && !finished.success());
    if failed_by_itself {
        let stderr = finished.stderr.clone();
        return Err(DumpError::ProgramFailed {
            program,
            what: what.to_owned(),
            status: finished.describe_status(),
            stderr: if stderr.trim().is_empty() { "(it printed nothing)".to_owned() } else { stderr },
        });
    }
    if let Some(error) = count_error {
        return Err(error);
    }
    let summary = stored.map_err(|source| DumpError::Store { what: format!("{what} as {key}"), source })?;
    if !finished.stderr.trim().is_empty() {
        tracing::warn!(program, "{what}: {}", finished.stderr);
    }
    Ok(summary)
}

/// A command for a libpq program connecting with `connection`: the URL without its password on
/// the command line, the password in `PGPASSWORD` (redacted from its output), and never a
/// password prompt.
fn libpq_command(program: &Path, connection: &ConnectionString) -> Result<PgCommand, DumpError> {
    let libpq = connection.for_libpq().map_err(DumpError::Connection)?;
    let mut command = PgCommand::client(program, libpq.password.as_ref());
    command.arg("--no-password").arg(format!("--dbname={}", libpq.url));
    Ok(command)
}

fn spawn(path: &Path, command: PgCommand) -> Result<(Program, ByteReader), DumpError> {
    Program::spawn(command).map_err(|source| DumpError::Spawn { program: path.to_path_buf(), source })
}

/// What `pg_dump --version` prints, e.g. "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
async fn program_version(program: &Path) -> Result<String, DumpError> {
    let mut command = PgCommand::local(program);
    command.arg("--version");
    let output =
        command.output().await.map_err(|source| DumpError::Spawn { program: program.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || text.is_empty() {
        return Err(DumpError::Spawn {
            program: program.to_path_buf(),
            source: std::io::Error::other(format!("`--version` failed ({})", output.status)),
        });
    }
    Ok(text)
}

/// A fresh dump id: the current second, or the next one if a dump already used this one.
async fn unused_id(repository: &Repository, layout: &ClusterLayout) -> Result<(BackupId, DateTime<Utc>), DumpError> {
    loop {
        let now = Utc::now();
        let id = BackupId::new(now, BackupKind::Dump);
        if repository.store().list(&DumpKeys::new(layout, id).prefix()).await.map_err(RepositoryError::from)?.is_empty()
        {
            return Ok((id, now));
        }
        let into_second = u64::from(now.timestamp_subsec_millis());
        tokio::time::sleep(Duration::from_millis(1000 - into_second.min(999))).await;
    }
}

/// Removes the objects of dumps that have no manifest: a dump killed before its end (G1). Runs
/// only under the lease, so no dump is in progress. Failures are logged and left for next time.
async fn remove_incomplete_dumps(repository: &Repository, layout: &ClusterLayout) {
    let prefix = layout.dumps_prefix();
    let listing = match repository.store().list(&prefix).await {
        Ok(listing) => listing,
        Err(error) => {
            tracing::warn!(%error, "could not look for the leftovers of interrupted dumps");
            return;
        }
    };
    let mut by_id: BTreeMap<BackupId, Vec<ObjectKey>> = BTreeMap::new();
    for meta in listing {
        let Some(id) = meta.key.as_str()[prefix.len()..].split('/').next().and_then(|id| id.parse::<BackupId>().ok())
        else {
            continue;
        };
        if id.kind() == BackupKind::Dump {
            by_id.entry(id).or_default().push(meta.key);
        }
    }
    for (id, keys) in by_id {
        let manifest = DumpKeys::new(layout, id).manifest();
        if keys.contains(&manifest) {
            continue;
        }
        tracing::warn!(%id, objects = keys.len(), "removing an incomplete dump (interrupted before its manifest)");
        for key in keys {
            if let Err(error) = repository.store().delete(&key).await {
                tracing::warn!(%error, "could not remove {key}; the next dump tries again");
            }
        }
    }
}

/// Removes what a failed dump wrote under `prefix`: its manifest first, as every deletion does
/// (docs/format.md section 9), so that a manifest is never left without the objects it names. If
/// the manifest cannot be removed nothing else is: the dump stays complete, and the next holder of
/// the cluster's lease records it (`catalog::leftovers`).
async fn remove_objects(repository: &Repository, prefix: &str) -> Result<(), String> {
    let listing = repository.store().list(prefix).await.map_err(|error| error.to_string())?;
    let is_manifest = |key: &str| key.strip_prefix(prefix) == Some(MANIFEST);
    let (manifest, data): (Vec<_>, Vec<_>) = listing.iter().partition(|meta| is_manifest(meta.key.as_str()));
    for meta in manifest {
        if let Err(error) = repository.store().delete(&meta.key).await {
            return Err(format!(
                "its manifest could not be removed ({error}), so nothing else was: the dump is complete and \
                 stays; `lifeboat list` names it as not recorded until the next backup, dump, expire or delete \
                 records it"
            ));
        }
    }
    let mut left = 0;
    let mut last_error = None;
    for meta in data {
        if let Err(error) = repository.store().delete(&meta.key).await {
            left += 1;
            last_error = Some(error);
        }
    }
    match last_error {
        None => {
            if !listing.is_empty() {
                tracing::info!("the dump failed: removed the {} objects it had written", listing.len());
            }
            Ok(())
        }
        Some(error) => Err(format!(
            "{left} of {} objects are left, without a manifest, so they are listed nowhere; the next dump removes \
             them (the last error: {error})",
            listing.len()
        )),
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod cleanup_tests {
    use std::sync::Arc;

    use super::*;
    use crate::object::{Cipher, WriteOptions};
    use crate::storage::ObjectStore;
    use crate::storage::faulty::{FaultPlan, FaultyStore};
    use crate::storage::local::LocalStore;

    /// Found by the storage-fault trials (tests/trials.rs, `permanent`): a dump whose journal entry
    /// could not be written removed its objects in listing order, data before manifest; when the
    /// manifest's delete failed, a listed dump was left without its data. The manifest now goes
    /// first, and if it stays so does everything it names.
    #[tokio::test]
    async fn trial_defect_a_failed_dumps_cleanup_never_leaves_its_manifest_without_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")));
        Repository::init(store.clone(), Cipher::None, None, "", WriteOptions::default()).await.unwrap();
        let prefix = "clusters/main/dumps/20260101T000000Z-dump/";
        let keys =
            ["data/globals.sql", "data/app.dump", MANIFEST].map(|name| ObjectKey::new(format!("{prefix}{name}")));
        let keys = keys.map(Result::unwrap);
        let stored = async |store: &Arc<dyn ObjectStore>| {
            let mut stored = Vec::new();
            for key in &keys {
                stored.push(store.head(key).await.unwrap().is_some());
            }
            stored
        };
        for key in &keys {
            let body: ByteReader = Box::new(std::io::Cursor::new(b"bytes".to_vec()));
            store.put(key, body, PutMode::Overwrite).await.unwrap();
        }
        let plan = FaultPlan::parse("permanent=1,only_keys=/manifest,only_operation=delete").unwrap();
        let stuck: Arc<dyn ObjectStore> = Arc::new(FaultyStore::new(store.clone(), plan));
        let repository = Repository::open(stuck, None, WriteOptions::default()).await.unwrap();
        let error = remove_objects(&repository, prefix).await.unwrap_err();
        assert!(error.contains("its manifest could not be removed"), "{error}");
        assert_eq!(stored(&store).await, [true, true, true], "the dump must stay whole");

        let repository = Repository::open(store.clone(), None, WriteOptions::default()).await.unwrap();
        remove_objects(&repository, prefix).await.unwrap();
        assert_eq!(stored(&store).await, [false, false, false]);
    }
}
