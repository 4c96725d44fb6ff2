//! The copy a rehearsal runs on: the newest verified base backup restored into a scratch
//! directory under `verify.scratch_dir` and replayed to the end of the archived WAL (no recovery
//! target: every archived segment of the backup's timeline, then promote), so it holds today's
//! data rather than the backup's; or, with `gate_backup = "dump"`, the newest verified dump of the
//! environment's database restored into a scratch server (a dump has no WAL to replay: the copy
//! is as of the dump).
//!
//! The restore is the one `lifeboat verify` runs (the restore code, the scratch server's
//! settings and `pg_hba.conf` of [`crate::verify`]); the WAL is copied from the repository into
//! the scratch directory, where the server's `restore_command` reads it, so the server never needs
//! the repository's key. The caller owns the [`LocalCluster`] slot and removes it however the
//! rehearsal ends.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::RehearseError;
use crate::catalog::id::BackupId;
use crate::catalog::listing::{self, Entry};
use crate::catalog::wal::{WalFile, WalSegment};
use crate::config::{ConnectionString, Environment};
use crate::format::backup_manifest::BackupManifest;
use crate::format::dump_manifest::DumpManifest;
use crate::ops::OpContext;
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::cluster::{LocalCluster, LocalClusterOptions};
use crate::postgres::version;
use crate::restore::dump::{Ownership, RestoreRequest};
use crate::restore::start;
use crate::restore::target::{RecoveryTarget, TargetAction};

/// What the copy was made from, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// `base` or `dump`.
    pub kind: String,
    /// The backup or dump id.
    pub id: String,
    /// When the backup or dump completed.
    pub completed_at: chrono::DateTime<chrono::Utc>,
    /// Base backups: the archived WAL segments copied for the replay, and where redo ended.
    pub wal_segments: Option<u64>,
    pub replayed_to: Option<String>,
    /// What the copy's data is as of, in words.
    pub data_as_of: String,
    pub restore_seconds: f64,
}

/// A restored, running copy and how to reach the environment's database on it.
pub struct Copy {
    pub source: Source,
    /// The database, as a role that exists on the copy (the environment's, else the superuser).
    pub options: PgConnectOptions,
    /// The database as the scratch server's superuser, for `pg_dump --schema-only`.
    pub url: ConnectionString,
    pub server_major: u32,
}

/// Restores backup or dump `id` into a new scratch cluster kept in `slot`.
pub async fn restore(
    context: &OpContext,
    environment: &Environment,
    id: BackupId,
    slot: &mut Option<LocalCluster>,
) -> Result<Copy, RehearseError> {
    let began = std::time::Instant::now();
    let (entry, _) = listing::read_manifest(&context.repository, &context.layout, id)
        .await
        .map_err(|error| RehearseError::Restore(format!("cannot read the manifest of {id}: {error}")))?;
    let database = database_of(environment);
    let mut source = match entry {
        Entry::Physical(manifest) => restore_backup(context, &manifest, slot).await?,
        Entry::Dump(manifest) => restore_dump(context, &manifest, &database, slot).await?,
    };
    source.restore_seconds = crate::util::round_to(began.elapsed().as_secs_f64(), 3);
    let cluster = slot.as_ref().expect("the restore made the cluster");
    let server_major = cluster.binaries().major();
    let wanted = crate::postgres::connect::connect_options(&environment.connection)
        .ok()
        .map(|options| options.get_username().to_owned());
    let mut last_error = String::new();
    for role in wanted.iter().map(String::as_str).chain(["postgres", cluster.superuser()]) {
        let options = cluster.connect_options().username(role).database(&database);
        match PgConnection::connect_with(&options).await {
            Ok(conn) => {
                let _ = conn.close().await;
                let url = ConnectionString::parse(&cluster.connection_url())
                    .map_err(RehearseError::Restore)?
                    .with_database(&database);
                return Ok(Copy { source, options, url, server_major });
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(RehearseError::Restore(format!(
        "the restored copy has no database {database:?} to rehearse on that lifeboat can reach ({last_error}); the \
         environment's connection names the database"
    )))
}

/// The database the environment's connection names (libpq's default: the user's name).
pub fn database_of(environment: &Environment) -> String {
    crate::postgres::connect::connect_options(&environment.connection)
        .ok()
        .map(|options| options.get_database().unwrap_or(options.get_username()).to_owned())
        .unwrap_or_else(|| "postgres".to_owned())
}

fn scratch_options(context: &OpContext) -> Result<LocalClusterOptions, RehearseError> {
    let dir = &context.config.verify.scratch_dir;
    std::fs::create_dir_all(dir).map_err(|error| {
        RehearseError::Restore(format!(
            "verify.scratch_dir {} does not exist and cannot be created ({error})",
            dir.display()
        ))
    })?;
    Ok(LocalClusterOptions::default().parent_dir(dir.clone()).os_user(context.config.cluster.os_user.clone()))
}

async fn restore_backup(
    context: &OpContext,
    manifest: &BackupManifest,
    slot: &mut Option<LocalCluster>,
) -> Result<Source, RehearseError> {
    let config = &context.config;
    let failed = |what: &str, error: &dyn std::fmt::Display| RehearseError::Restore(format!("{what}: {error}"));
    let major = version::major_of_version_num(manifest.postgres_version_num);
    let binaries = PgBinaries::locate(
        config.cluster.bin_dir.as_deref(),
        &Need::server(major, format!("the rehearsal's restore of backup {}", manifest.id)),
    )
    .map_err(|error| failed("no server to restore into", &error))?;
    let cluster = LocalCluster::prepare(&binaries, &scratch_options(context)?)
        .map_err(|error| failed("cannot create the scratch directory", &error))?;
    let cluster = slot.insert(cluster);

    // Every archived segment from the backup's start along its timeline, to the end of the
    // unbroken run: what a restore with no target replays.
    let archive = crate::wal::check::check(&context.repository, &context.layout)
        .await
        .map_err(|error| failed("cannot read the WAL archive", &error))?;
    let size = manifest.wal_segment_size;
    let first = manifest.start_segment();
    let stop = manifest.stop_segment();
    let end = archive.run_end(manifest.timeline, first.number).filter(|end| *end >= stop.number).ok_or_else(|| {
        RehearseError::Restore(format!(
            "the WAL backup {} needs (segments {} to {}) is not all in the archive; `lifeboat wal check` shows the gap",
            manifest.id,
            first.name(size),
            stop.name(size)
        ))
    })?;
    let wal_dir = cluster.root_dir().join("wal");
    std::fs::create_dir(&wal_dir)
        .and_then(|()| std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|error| failed(&format!("cannot create {}", wal_dir.display()), &error))?;
    for number in first.number..=end {
        let segment = WalSegment::new(manifest.timeline, number);
        let key = context.layout.wal_file(&WalFile::Segment(segment), size);
        let bytes = context
            .repository
            .get_bytes(&key)
            .await
            .map_err(|error| failed(&format!("cannot read archived WAL segment {}", segment.name(size)), &error))?;
        std::fs::write(wal_dir.join(segment.name(size)), bytes)
            .map_err(|error| failed("cannot write WAL into the scratch directory", &error))?;
    }
    cluster.give_to_server_user(&wal_dir).map_err(|error| failed("the scratch WAL directory", &error))?;

    let mut options = crate::verify::scratch_restore_options(cluster, manifest, &wal_dir, RecoveryTarget::Latest);
    options.workers = config.backup.workers;
    options.os_user = config.cluster.os_user.clone();
    options.bin_dir = config.cluster.bin_dir.clone();
    options.cancel = context.cancel.token().clone();
    crate::restore::run(context.repository.clone(), &context.layout, &options)
        .await
        .map_err(|error| failed(&format!("restoring backup {}", manifest.id), &error))?;
    crate::verify::write_config_files(cluster).map_err(|failure| RehearseError::Restore(failure.message))?;
    let owner = crate::restore::resolve_owner(cluster.data_dir(), &config.cluster.os_user)
        .map_err(|error| failed("the scratch directory's owner", &error))?;
    let reached = start::start_and_wait(
        &binaries,
        cluster.data_dir(),
        owner,
        Some(cluster.port()),
        TargetAction::Promote,
        true,
        None,
    )
    .await
    .map_err(|error| failed(&format!("recovering backup {} to the end of the archived WAL", manifest.id), &error))?;
    let replayed_to = reached.redo_done.clone();
    Ok(Source {
        kind: "base".to_owned(),
        id: manifest.id.to_string(),
        completed_at: manifest.stop_time,
        wal_segments: Some(end - first.number + 1),
        data_as_of: format!(
            "the end of the archived WAL ({}), replayed on backup {}",
            replayed_to.as_deref().unwrap_or("redo end not logged"),
            manifest.id
        ),
        replayed_to,
        restore_seconds: 0.0,
    })
}

async fn restore_dump(
    context: &OpContext,
    manifest: &DumpManifest,
    database: &str,
    slot: &mut Option<LocalCluster>,
) -> Result<Source, RehearseError> {
    let config = &context.config;
    let failed = |what: &str, error: &dyn std::fmt::Display| RehearseError::Restore(format!("{what}: {error}"));
    let major = manifest.server_version_num / 10000;
    let binaries = PgBinaries::locate(
        config.cluster.bin_dir.as_deref(),
        &Need::server_or_newer(major, format!("the rehearsal's restore of dump {}", manifest.id)),
    )
    .map_err(|error| failed("no server to restore the dump into", &error))?;
    let cluster = LocalCluster::start_new(&binaries, scratch_options(context)?)
        .await
        .map_err(|error| failed("cannot start a scratch PostgreSQL server", &error))?;
    let cluster = slot.insert(cluster);
    if database != "postgres" {
        let mut conn = PgConnection::connect_with(&cluster.connect_options())
            .await
            .map_err(|error| failed("the scratch server", &error))?;
        let statement = format!("CREATE DATABASE {} TEMPLATE template0", crate::util::quote_identifier(database));
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await;
        let _ = conn.close().await;
        created
            .map_err(|error| failed(&format!("cannot create database {database:?} on the scratch server"), &error))?;
    }
    let url = ConnectionString::parse(&cluster.connection_url()).map_err(RehearseError::Restore)?;
    let request = RestoreRequest {
        database: database.to_owned(),
        into: url.with_database(database),
        tables: Vec::new(),
        clean: false,
        ownership: Ownership::Skip,
    };
    crate::restore::dump::restore(
        &context.repository,
        &context.layout,
        manifest,
        config.cluster.bin_dir.as_deref(),
        &request,
        &Arc::default(),
        &mut |_| {},
    )
    .await
    .map_err(|error| failed(&format!("restoring database {database:?} of dump {}", manifest.id), &error))?;
    Ok(Source {
        kind: "dump".to_owned(),
        id: manifest.id.to_string(),
        completed_at: manifest.finished_at,
        wal_segments: None,
        replayed_to: None,
        data_as_of: format!("the dump's time, {} (a dump has no WAL to replay)", manifest.finished_at),
        restore_seconds: 0.0,
    })
}
