//! What one verification creates, and removes when it ends however it ends: a [`LocalCluster`]
//! directory under `verify.scratch_dir` (`lifeboat-pg-<random>/` with `data/`, `sock/` and, for
//! base backups, `wal/`), created only after the free space is checked and owned by the
//! unprivileged server user when lifeboat runs as root, its server stopped before it is removed;
//! or scratch databases on `verify.dump_server`, dropped.

use std::path::Path;

use super::VerifyOptions;
use crate::config::ConnectionString;
use crate::format::verify_report::{Failure, Phase};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::cluster::{LocalCluster, LocalClusterOptions};
use crate::util::format_bytes;
use crate::util::quote_identifier;

/// Room left over on top of the estimate: WAL written by recovery and the end-of-recovery
/// checkpoint, logs, the amcheck extension.
const MARGIN_BYTES: u64 = 256 * 1024 * 1024;

/// What one verification created, removed by [`Scratch::remove`] however the verification ends.
#[derive(Default)]
pub(crate) struct Scratch {
    cluster: Option<LocalCluster>,
    databases: Option<ScratchDatabases>,
}

/// Databases created on `verify.dump_server`.
struct ScratchDatabases {
    server: ConnectionString,
    created: Vec<String>,
}

impl Scratch {
    /// An empty scratch directory for a restored data directory (no initdb).
    pub fn restore_dir(
        &mut self,
        options: &VerifyOptions,
        binaries: &PgBinaries,
        needed: u64,
    ) -> Result<&LocalCluster, Failure> {
        let cluster_options = prepare(options, needed)?;
        let cluster = LocalCluster::prepare(binaries, &cluster_options)
            .map_err(|error| Failure::new(Phase::Scratch, format!("cannot create the scratch directory: {error}")))?;
        Ok(self.cluster.insert(cluster))
    }

    /// A new, started, empty cluster to restore dumps into.
    pub async fn start_cluster(
        &mut self,
        options: &VerifyOptions,
        binaries: &PgBinaries,
        needed: u64,
    ) -> Result<&LocalCluster, Failure> {
        let cluster_options = prepare(options, needed)?;
        let cluster = LocalCluster::start_new(binaries, cluster_options).await.map_err(|error| {
            Failure::new(Phase::Scratch, format!("cannot start a scratch PostgreSQL server: {error}"))
        })?;
        Ok(self.cluster.insert(cluster))
    }

    /// Creates database `name` on `server`; it is dropped by [`Scratch::remove`].
    pub async fn create_database(&mut self, server: &ConnectionString, name: &str) -> Result<(), Failure> {
        let databases =
            self.databases.get_or_insert_with(|| ScratchDatabases { server: server.clone(), created: Vec::new() });
        run_statement(server, &format!("create database {} template template0", quote_identifier(name)))
            .await
            .map_err(|error| {
                Failure::new(
                    Phase::Scratch,
                    format!(
                        "cannot create the scratch database {name:?} on verify.dump_server {}: {error} (the role needs CREATEDB)",
                        server.redacted()
                    ),
                )
            })?;
        databases.created.push(name.to_owned());
        Ok(())
    }

    /// Stops the server and removes every file, drops every scratch database; says what is left
    /// if that fails.
    pub async fn remove(self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(cluster) = self.cluster {
            let root = cluster.root_dir().to_path_buf();
            if let Err(error) = cluster.remove().await {
                problems.push(format!(
                    "the scratch server or files in {} could not be removed ({error}); stop it with `pg_ctl stop -D \
                     {}/data` and remove the directory",
                    root.display(),
                    root.display()
                ));
            }
        }
        if let Some(databases) = self.databases {
            for name in &databases.created {
                let statement = format!("drop database if exists {} with (force)", quote_identifier(name));
                if let Err(error) = run_statement(&databases.server, &statement).await {
                    problems.push(format!(
                        "the scratch database {name:?} on {} could not be dropped ({error}); drop it by hand",
                        databases.server.redacted()
                    ));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

/// One statement on the database `server` names.
async fn run_statement(server: &ConnectionString, statement: &str) -> Result<(), String> {
    let mut connection = crate::postgres::connect::connect(server).await.map_err(|error| error.to_string())?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut connection).await;
    let _ = sqlx::Connection::close(connection).await;
    result.map(|_| ()).map_err(|error| error.to_string())
}

/// Checks the scratch location and its free space; the options for the cluster to create there.
fn prepare(options: &VerifyOptions, needed: u64) -> Result<LocalClusterOptions, Failure> {
    let dir = &options.scratch_dir;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|error| {
            Failure::new(
                Phase::Scratch,
                format!(
                    "verify.scratch_dir {} does not exist and cannot be created ({error}); create it or choose \
                     another directory",
                    dir.display()
                ),
            )
        })?;
    }
    let needed = needed + needed / 10 + MARGIN_BYTES;
    match free_space(dir) {
        Ok(free) if free < needed => {
            return Err(Failure::new(
                Phase::Scratch,
                format!(
                    "verify.scratch_dir {} has {} free, and the restore test needs about {}; free some space or \
                     point verify.scratch_dir at a larger filesystem",
                    dir.display(),
                    format_bytes(free),
                    format_bytes(needed)
                ),
            ));
        }
        Ok(_) => {}
        Err(error) => {
            return Err(Failure::new(
                Phase::Scratch,
                format!("cannot read the free space of verify.scratch_dir {}: {error}", dir.display()),
            ));
        }
    }
    Ok(LocalClusterOptions::default().parent_dir(dir).os_user(options.os_user.clone()))
}

/// Bytes available to an unprivileged user on the filesystem holding `dir`.
fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` points to writable memory of the right size.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the structure.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_a_missing_directory_is_an_error() {
        assert!(free_space(Path::new("/")).unwrap() > 0);
        assert!(free_space(Path::new("/nonexistent/lifeboat")).is_err());
    }
}
