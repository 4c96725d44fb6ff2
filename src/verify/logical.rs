//! Verifying a dump.
//!
//! Integrity: every object (the globals and each database's archive) is read to its end,
//! authenticated, and its size and BLAKE3 compared with the manifest. The restore test starts a
//! scratch server of its own, creates each dumped database there and restores it with the same
//! code as `lifeboat restore --dump`, which reads and checks the object as it goes and counts
//! every table's rows against the manifest before committing. Owners and grants are left out
//! (`--no-owner --no-privileges`): the scratch server has none of the dumped roles, and what is
//! proven is that the data comes back. Then the user's checks run on the databases the dump has.

use std::time::Instant;

use tokio::io::AsyncReadExt as _;

use super::checks::Server;
use super::report::{Failure, Phase, RestoredDatabase, VerifyReport};
use super::scratch::Scratch;
use super::{Context, round};
use crate::config::ConnectionString;
use crate::dump::manifest::{DumpManifest, DumpObject};
use crate::dump::restore::{Ownership, RestoreError, RestoreRequest};
use crate::object::ObjectError;
use crate::postgres::binaries::PgBinaries;

/// How much larger than its dump a restored database may be (indexes are rebuilt), for the
/// free-space check.
const GROWTH: u64 = 3;

pub(crate) async fn verify(
    context: &Context<'_>,
    manifest: &DumpManifest,
    report: &mut VerifyReport,
    scratch: &mut Option<Scratch>,
) -> Result<(), Failure> {
    let options = context.options;
    read_object(context, &manifest.globals.object, report).await?;
    if options.integrity_only {
        for database in &manifest.databases {
            read_object(context, &database.object, report).await?;
        }
        return Ok(());
    }

    let major = manifest.server_version_num / 10000;
    let binaries = PgBinaries::find(options.bin_dir.as_deref())
        .map_err(|error| error.to_string())
        .and_then(|binaries| {
            if binaries.major() >= major {
                Ok(binaries)
            } else {
                Err(format!("the PostgreSQL binaries in {} are version {}", binaries.dir().display(), binaries.major()))
            }
        })
        .map_err(|detail| {
            Failure::new(
                Phase::Scratch,
                format!(
                    "the dump is of PostgreSQL {major}, and a restore test needs a server of that version or newer: \
                     {detail}; set cluster.bin_dir, or verify with --integrity-only"
                ),
            )
        })?;
    let needed: u64 = manifest.databases.iter().map(|database| database.object.size * GROWTH).sum();
    let scratch = scratch.insert(Scratch::new_cluster(options, &binaries, needed).await?);
    let cluster = scratch.cluster();
    let server = Server { cluster, superuser: cluster.superuser().to_owned() };
    let scratch_url = ConnectionString::parse(&cluster.connection_url())
        .map_err(|error| Failure::new(Phase::Scratch, format!("the scratch server's address: {error}")))?;

    for database in &manifest.databases {
        if database.name != "postgres" {
            create_database(cluster, &database.name).await?;
        }
        let request = RestoreRequest {
            database: database.name.clone(),
            into: scratch_url.with_database(&database.name),
            tables: Vec::new(),
            clean: false,
            ownership: Ownership::Skip,
        };
        let began = Instant::now();
        let restored = crate::dump::restore::restore(
            &context.repository,
            context.layout,
            manifest,
            options.bin_dir.as_deref(),
            &request,
            &mut |_| {},
        )
        .await
        .map_err(|error| restore_failure(&database.name, error))?;
        report.integrity.objects += 1;
        report.integrity.bytes += restored.bytes;
        report.integrity.files += 1;
        report.restored_databases.push(RestoredDatabase {
            name: database.name.clone(),
            tables: restored.tables.len(),
            rows: restored.rows,
            seconds: round(began.elapsed().as_secs_f64()),
        });
        tracing::info!(
            "database {} restored: {} table(s), {} row(s), every count as in the dump",
            database.name,
            restored.tables.len(),
            restored.rows
        );
    }

    let databases: Vec<String> = manifest.databases.iter().map(|database| database.name.clone()).collect();
    let (results, failure) = server.run_checks(&options.checks, &options.default_database, &databases, true).await;
    report.checks = results;
    failure.map_or(Ok(()), Err)
}

async fn create_database(cluster: &crate::postgres::cluster::LocalCluster, name: &str) -> Result<(), Failure> {
    use sqlx::Connection as _;
    let failure = |error: sqlx::Error| {
        Failure::new(Phase::Scratch, format!("cannot create database {name:?} to restore into: {error}"))
    };
    let mut connection =
        sqlx::postgres::PgConnection::connect_with(&cluster.connect_options()).await.map_err(failure)?;
    let statement = format!("create database \"{}\" template template0", name.replace('"', "\"\""));
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await;
    let _ = connection.close().await;
    created.map(|_| ()).map_err(failure)
}

/// Reads one object to its end and compares its size and hash with the manifest.
async fn read_object(context: &Context<'_>, object: &DumpObject, report: &mut VerifyReport) -> Result<(), Failure> {
    let key = object
        .object_key()
        .map_err(|error| Failure::new(Phase::Integrity, format!("the manifest names an invalid key: {error}")))?;
    let damaged = |detail: String| Failure::new(Phase::Integrity, format!("dump object {key} {detail}"));
    let mut reader = context.repository.get(&key).await.map_err(|error| damaged(format!("cannot be read: {error}")))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let read = reader.read(&mut buffer).await.map_err(|error| match ObjectError::from_io(&error) {
            Some(object_error) => damaged(format!("is damaged: {object_error}")),
            None => damaged(format!("cannot be read: {error}")),
        })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    if size != object.size {
        return Err(damaged(format!("holds {size} bytes, the manifest says {}", object.size)));
    }
    let hash = hasher.finalize();
    if hash.to_hex().as_str() != object.blake3 {
        return Err(damaged(format!("has BLAKE3 {}, the manifest says {}", hash.to_hex(), object.blake3)));
    }
    report.integrity.objects += 1;
    report.integrity.bytes += size;
    report.integrity.files += 1;
    Ok(())
}

/// A dump restore error in the words of a verification.
fn restore_failure(database: &str, error: RestoreError) -> Failure {
    match error {
        RestoreError::RowCount { table, restored, dumped, .. } => Failure::new(
            Phase::RowCounts,
            format!(
                "table {table} of database {database:?} has {restored} rows after the restore, but the dump's \
                 manifest records {dumped}"
            ),
        ),
        error @ (RestoreError::Damaged { .. } | RestoreError::Mismatch { .. } | RestoreError::Fetch { .. }) => {
            Failure::new(Phase::Integrity, error.to_string())
        }
        error => Failure::new(Phase::Restore, format!("restoring database {database:?} failed: {error}")),
    }
}
