//! Verifying a dump.
//!
//! Integrity: every object (the globals and each database's archive) is read to its end,
//! authenticated, and its size and BLAKE3 compared with the manifest. The restore test restores
//! each dumped database, with the same code as `lifeboat restore --dump`, which reads and checks
//! the object as it goes and counts every table's rows against the manifest before committing:
//! into a scratch server lifeboat starts (the database under its own name), or, with
//! `verify.dump_server`, into a scratch database `lifeboat_verify_<random>_<name>` on that
//! server, dropped afterwards. Owners and grants are left out (`--no-owner --no-privileges`): the
//! scratch server has none of the dumped roles, and what is proven is that the data comes back.
//! Then the user's checks run on the databases the dump has.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::AsyncReadExt as _;

use super::checks::Server;
use super::scratch::Scratch;
use super::{Context, Step, round};
use crate::config::ConnectionString;
use crate::format::dump_manifest::{DumpManifest, DumpObject};
use crate::format::verify_report::{Failure, Phase, RestoredDatabase, VerifyReport};
use crate::object::ObjectError;
use crate::postgres::binaries::{Need, PgBinaries};
use crate::restore::dump::{Ownership, RestoreError, RestoreRequest};
use crate::util::quote_identifier;

/// How much larger than its dump a restored database may be (indexes are rebuilt), for the
/// free-space check.
const GROWTH: u64 = 3;

pub(crate) async fn verify(
    context: &Context<'_>,
    manifest: &DumpManifest,
    report: &mut VerifyReport,
    scratch: &mut Scratch,
) -> Result<(), Failure> {
    let options = context.options;
    // Every object is read once, through read_object or the restore.
    options.progress.restart(manifest.size());
    options.enter(Step::ReadingObjects);
    read_object(context, &manifest.globals.object, report).await?;
    if options.integrity_only {
        for database in &manifest.databases {
            read_object(context, &database.object, report).await?;
        }
        return Ok(());
    }

    // Where each database is restored: its own name on a scratch cluster, or a scratch name on
    // verify.dump_server.
    options.enter(Step::PreparingScratch);
    let (server, targets): (Server, Vec<(String, ConnectionString)>) = match &options.dump_server {
        Some(dump_server) => {
            let suffix = random_suffix()?;
            let mut targets = Vec::new();
            for database in &manifest.databases {
                let name = scratch_database_name(&suffix, &database.name);
                scratch.create_database(dump_server, &name).await?;
                targets.push((name.clone(), dump_server.with_database(&name)));
            }
            let renamed = manifest
                .databases
                .iter()
                .map(|database| (database.name.clone(), scratch_database_name(&suffix, &database.name)))
                .collect();
            let connect = crate::postgres::connect::connect_options(dump_server)
                .map_err(|error| Failure::new(Phase::Scratch, error.to_string()))?;
            (Server::configured(connect, renamed), targets)
        }
        None => {
            let binaries = scratch_binaries(options.bin_dir.as_deref(), manifest)?;
            let needed: u64 = manifest.databases.iter().map(|database| database.object.size * GROWTH).sum();
            let cluster = scratch.start_cluster(options, &binaries, needed).await?;
            let url = ConnectionString::parse(&cluster.connection_url())
                .map_err(|error| Failure::new(Phase::Scratch, format!("the scratch server's address: {error}")))?;
            for database in manifest.databases.iter().filter(|database| database.name != "postgres") {
                scratch_cluster_database(cluster, &database.name).await?;
            }
            let targets = manifest
                .databases
                .iter()
                .map(|database| (database.name.clone(), url.with_database(&database.name)))
                .collect();
            (Server::scratch(cluster), targets)
        }
    };

    options.enter(Step::RestoringDatabases);
    for (database, (restored_as, into)) in manifest.databases.iter().zip(targets) {
        let request = RestoreRequest {
            database: database.name.clone(),
            into,
            tables: Vec::new(),
            clean: false,
            ownership: Ownership::Skip,
        };
        let began = Instant::now();
        let restored = crate::restore::dump::restore(
            &context.repository,
            context.layout,
            manifest,
            options.bin_dir.as_deref(),
            &request,
            &options.progress,
            &mut |_| {},
        )
        .await
        .map_err(|error| restore_failure(&database.name, error))?;
        report.integrity.objects += 1;
        report.integrity.bytes += restored.bytes;
        report.integrity.files += 1;
        report.restored_databases.push(RestoredDatabase {
            name: database.name.clone(),
            restored_as,
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
    options.enter(Step::Checks);
    let (results, failure) = server.run_checks(&options.checks, &options.default_database, &databases, true).await;
    report.checks = results;
    failure.map_or(Ok(()), Err)
}

/// Server binaries of the dump's major version, else the closest newer one, for the scratch cluster.
fn scratch_binaries(bin_dir: Option<&std::path::Path>, manifest: &DumpManifest) -> Result<PgBinaries, Failure> {
    let major = manifest.server_version_num / 10000;
    let need = Need::server_or_newer(major, format!("a restore test of dump {}", manifest.id));
    PgBinaries::locate(bin_dir, &need).map_err(|error| {
        Failure::new(
            Phase::Scratch,
            format!(
                "the dump is of PostgreSQL {major}, and a restore test needs a server of that version or newer: \
                 {error}; set cluster.bin_dir or verify.dump_server, or verify with --integrity-only"
            ),
        )
    })
}

/// `lifeboat_verify_<suffix>_<name>`, within PostgreSQL's 63 bytes, for a dumped database.
fn scratch_database_name(suffix: &str, name: &str) -> String {
    let mut scratch = format!("lifeboat_verify_{suffix}_");
    for character in name.chars() {
        let character = if character.is_ascii_alphanumeric() { character.to_ascii_lowercase() } else { '_' };
        if scratch.len() >= 63 {
            break;
        }
        scratch.push(character);
    }
    scratch
}

fn random_suffix() -> Result<String, Failure> {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random)
        .map_err(|error| Failure::new(Phase::Scratch, format!("no randomness for a scratch database name: {error}")))?;
    Ok(hex::encode(random))
}

async fn scratch_cluster_database(cluster: &crate::postgres::cluster::LocalCluster, name: &str) -> Result<(), Failure> {
    use sqlx::Connection as _;
    let failure = |error: sqlx::Error| {
        Failure::new(Phase::Scratch, format!("cannot create database {name:?} to restore into: {error}"))
    };
    let mut connection =
        sqlx::postgres::PgConnection::connect_with(&cluster.connect_options()).await.map_err(failure)?;
    let statement = format!("create database {} template template0", quote_identifier(name));
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
        context.options.progress.bytes.fetch_add(read as u64, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_database_names_are_safe_and_short() {
        assert_eq!(scratch_database_name("0a1b2c3d", "app"), "lifeboat_verify_0a1b2c3d_app");
        assert_eq!(scratch_database_name("0a1b2c3d", "My App-2"), "lifeboat_verify_0a1b2c3d_my_app_2");
        assert_eq!(scratch_database_name("0a1b2c3d", &"x".repeat(100)).len(), 63);
        assert_eq!(scratch_database_name("0a1b2c3d", "é"), "lifeboat_verify_0a1b2c3d__");
    }
}
