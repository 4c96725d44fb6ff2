//! What runs against a restored (or scratch) server: finding a role to connect as, listing its
//! databases, amcheck (`pg_amcheck`, or SQL on PostgreSQL 13), and the user's SQL checks from
//! `verify.checks`.
//!
//! The scratch server accepts `trust` connections on its private socket only, so any role name
//! gets in; the bootstrap superuser (oid 10) is looked up through whichever candidate exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::config::{AmcheckLevel, SqlCheck};
use crate::format::verify_report::{Amcheck, CheckOutcome, CheckResult, Failure, Phase};
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::cluster::LocalCluster;
use crate::postgres::process::PgCommand;

/// Lines of amcheck output kept in a report.
const OUTPUT_LINES: usize = 40;

/// The first major with `pg_amcheck` (and the amcheck 1.3 it needs).
const PG_AMCHECK_SINCE: u32 = 14;

/// A ready, valid btree index of this database (user or catalog), not another session's
/// temporary one, as its oid and schema-qualified name.
const BTREE_INDEXES: &str = "select c.oid, format('%I.%I', n.nspname, c.relname) \
     from pg_index i join pg_class c on c.oid = i.indexrelid \
     join pg_namespace n on n.oid = c.relnamespace join pg_am a on a.oid = c.relam \
     where a.amname = 'btree' and i.indisready and i.indisvalid and c.relpersistence <> 't' \
     order by n.nspname, c.relname";

/// amcheck at `level` on every database of `cluster`, a cluster lifeboat started, as a restore test
/// runs it (as the cluster's superuser; `bin_dir` is `cluster.bin_dir`, where `pg_amcheck` is
/// looked for first). See [`Server::amcheck`].
pub async fn amcheck_cluster(
    cluster: &LocalCluster,
    level: AmcheckLevel,
    bin_dir: Option<&Path>,
) -> Result<Option<Amcheck>, Failure> {
    Server::scratch(cluster).amcheck(cluster, level, bin_dir).await
}

/// A server to check: how to connect (host or socket, port, role), and, on `verify.dump_server`,
/// the scratch database each dumped database was restored into.
pub(crate) struct Server {
    options: PgConnectOptions,
    renamed: BTreeMap<String, String>,
}

impl Server {
    /// A scratch cluster lifeboat started, as its superuser.
    pub fn scratch(cluster: &LocalCluster) -> Server {
        Server { options: cluster.connect_options(), renamed: BTreeMap::new() }
    }

    /// `verify.dump_server`, where each dumped database `name` was restored into `renamed[name]`.
    pub fn configured(options: PgConnectOptions, renamed: BTreeMap<String, String>) -> Server {
        Server { options, renamed }
    }

    /// Connects as one of `candidates` (then `postgres`) and finds the bootstrap superuser.
    pub async fn find_superuser(cluster: &LocalCluster, candidates: &[String]) -> Result<Server, Failure> {
        let mut names: Vec<&str> = candidates.iter().map(String::as_str).collect();
        names.push("postgres");
        names.push(cluster.superuser());
        names.dedup();
        let mut last_error = String::new();
        for name in names {
            let options = cluster.connect_options().username(name).database("template1");
            match PgConnection::connect_with(&options).await {
                Ok(mut connection) => {
                    let superuser: Result<String, sqlx::Error> =
                        sqlx::query_scalar("select rolname::text from pg_roles where oid = 10")
                            .fetch_one(&mut connection)
                            .await;
                    let _ = connection.close().await;
                    return match superuser {
                        Ok(superuser) => Ok(Server {
                            options: cluster.connect_options().username(&superuser),
                            renamed: BTreeMap::new(),
                        }),
                        Err(error) => Err(Failure::new(
                            Phase::Recovery,
                            format!("the restored server answers, but reading its roles failed: {error}"),
                        )),
                    };
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(Failure::new(
            Phase::Recovery,
            format!("cannot connect to the restored server through its socket: {last_error}"),
        ))
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, sqlx::Error> {
        let database = self.renamed.get(database).map_or(database, String::as_str);
        let options = self.options.clone().database(database).application_name("lifeboat verify");
        PgConnection::connect_with(&options).await
    }

    /// `select version()` and the databases that accept connections.
    pub async fn describe(&self) -> Result<(String, Vec<String>), Failure> {
        let failure = |error: sqlx::Error| {
            Failure::new(Phase::Recovery, format!("cannot read the restored server's databases: {error}"))
        };
        let mut connection = self.connect("template1").await.map_err(failure)?;
        let version: String =
            sqlx::query_scalar("select version()").fetch_one(&mut connection).await.map_err(failure)?;
        let databases: Vec<String> = sqlx::query_scalar(
            "select datname::text from pg_database where datallowconn and not datistemplate order by datname",
        )
        .fetch_all(&mut connection)
        .await
        .map_err(failure)?;
        let _ = connection.close().await;
        Ok((version, databases))
    }

    /// Checks every database of the scratch `cluster` with amcheck at `level`; `None` when the
    /// level is `off`. What it found is in the result, whose output starts with the way it ran;
    /// an error means it could not run.
    ///
    /// Two ways, by the scratch server's major: from PostgreSQL 14, `pg_amcheck` of that major or
    /// newer (found as client programs are, `bin_dir` first); on PostgreSQL 13, which has no
    /// `pg_amcheck` (and whose amcheck extension lacks the `verify_heapam` a newer one calls),
    /// the same index checks through SQL ([`Server::amcheck_sql`]).
    pub async fn amcheck(
        &self,
        cluster: &LocalCluster,
        level: AmcheckLevel,
        bin_dir: Option<&Path>,
    ) -> Result<Option<Amcheck>, Failure> {
        if level == AmcheckLevel::Off {
            return Ok(None);
        }
        let major = cluster.binaries().major();
        let began = Instant::now();
        let (passed, way, lines) = if major < PG_AMCHECK_SINCE {
            self.amcheck_sql(level, major).await?
        } else {
            self.pg_amcheck(cluster, level, bin_dir, major).await?
        };
        let tail = &lines[lines.len().saturating_sub(OUTPUT_LINES)..];
        let output =
            std::iter::once(way.as_str()).chain(tail.iter().map(String::as_str)).collect::<Vec<_>>().join("\n");
        if passed {
            tracing::info!("amcheck ({}) found no corruption: {way}", level.as_str());
        } else {
            tracing::warn!("amcheck found problems:\n{output}");
        }
        Ok(Some(Amcheck { level, passed, seconds: super::round(began.elapsed().as_secs_f64()), output }))
    }

    /// `pg_amcheck --all` against the scratch server: whether it passed, which program ran, and
    /// its output lines.
    async fn pg_amcheck(
        &self,
        cluster: &LocalCluster,
        level: AmcheckLevel,
        bin_dir: Option<&Path>,
        major: u32,
    ) -> Result<(bool, String, Vec<String>), Failure> {
        let need = Need::clients(&["pg_amcheck"], major, "the restored scratch server");
        let program = PgBinaries::locate(bin_dir, &need)
            .and_then(|binaries| Ok((binaries.require("pg_amcheck")?, binaries.major())))
            .map_err(|error| {
                Failure::new(
                    Phase::Amcheck,
                    format!(
                        "verify.amcheck = \"{}\" needs pg_amcheck: {error}; or set verify.amcheck = \"off\"",
                        level.as_str()
                    ),
                )
            })?;
        let (program, program_major) = program;
        let mut command = PgCommand::local(&program);
        command
            .arg("--host")
            .arg(cluster.socket_dir())
            .arg("--port")
            .arg(cluster.port().to_string())
            .arg("--username")
            .arg(self.options.get_username())
            .args(["--no-password", "--all", "--install-missing"]);
        match level {
            AmcheckLevel::Off => unreachable!("the caller returns before"),
            // Every btree index (user and catalog), no heap checks.
            AmcheckLevel::Indexes => command.arg("--index=*"),
            // Tables and their indexes, and every heap tuple must have its index entries.
            AmcheckLevel::HeapAllIndexed => command.arg("--heapallindexed"),
        };
        let output = command
            .output()
            .await
            .map_err(|error| Failure::new(Phase::Amcheck, format!("cannot run {}: {error}", program.display())))?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let way = format!("pg_amcheck of PostgreSQL {program_major} ({})", program.display());
        Ok((output.status.success(), way, text.lines().map(str::to_owned).collect()))
    }

    /// amcheck through SQL, for PostgreSQL 13: in every database that accepts connections, the
    /// extension is created if missing and `bt_index_check` runs on every btree index, user and
    /// catalog, that is ready and valid (temporary ones belong to other sessions and cannot be
    /// read); with `heapallindexed` it also checks that every heap tuple has its index entry.
    /// PostgreSQL 13's amcheck has no `verify_heapam`, so heap pages are checked only through
    /// their indexes. Returns whether every index passed, the way it ran, and one line per failure.
    async fn amcheck_sql(&self, level: AmcheckLevel, major: u32) -> Result<(bool, String, Vec<String>), Failure> {
        let cannot = |what: String, error: sqlx::Error| {
            Failure::new(
                Phase::Amcheck,
                format!("cannot run amcheck: {what}: {error}; or set verify.amcheck = \"off\""),
            )
        };
        let databases: Vec<String> = {
            let mut connection =
                self.connect("template1").await.map_err(|error| cannot("connecting to template1".to_owned(), error))?;
            let databases =
                sqlx::query_scalar("select datname::text from pg_database where datallowconn order by datname")
                    .fetch_all(&mut connection)
                    .await
                    .map_err(|error| cannot("listing the databases".to_owned(), error));
            let _ = connection.close().await;
            databases?
        };
        let heapallindexed = level == AmcheckLevel::HeapAllIndexed;
        let mut failures = Vec::new();
        let mut checked = 0;
        for database in &databases {
            let mut connection = self
                .connect(database)
                .await
                .map_err(|error| cannot(format!("connecting to database {database:?}"), error))?;
            let result = check_indexes(&mut connection, heapallindexed).await;
            let _ = connection.close().await;
            let (count, found) = result.map_err(|error| {
                cannot(
                    format!("installing the amcheck extension or listing the indexes of database {database:?}"),
                    error,
                )
            })?;
            checked += count;
            failures.extend(
                found.into_iter().map(|(index, error)| format!("database {database:?}, index {index}: {error}")),
            );
        }
        let way = format!(
            "amcheck through SQL (PostgreSQL {major} has no pg_amcheck): bt_index_check{} on {checked} btree index(es) \
             in {} database(s), {} failed",
            if heapallindexed { " with heapallindexed" } else { "" },
            databases.len(),
            failures.len()
        );
        Ok((failures.is_empty(), way, failures))
    }

    /// Runs every check; the first failure, if any, comes with all the results. A check whose
    /// database is not in `available` is skipped when `skip_missing` (a dump holds only some
    /// databases), and fails otherwise.
    pub async fn run_checks(
        &self,
        checks: &[SqlCheck],
        default_database: &str,
        available: &[String],
        skip_missing: bool,
    ) -> (Vec<CheckResult>, Option<Failure>) {
        let mut results = Vec::new();
        let mut failure = None;
        for (index, check) in checks.iter().enumerate() {
            let database = check.database.clone().unwrap_or_else(|| default_database.to_owned());
            let (outcome, detail) = if !available.contains(&database) {
                if skip_missing {
                    (CheckOutcome::Skipped, Some(format!("database {database:?} is not in this dump")))
                } else {
                    (
                        CheckOutcome::Failed,
                        Some(format!(
                            "database {database:?} does not exist in the restored cluster (it has {})",
                            available.join(", ")
                        )),
                    )
                }
            } else {
                match self.run_check(&database, &check.query).await {
                    Ok(()) => (CheckOutcome::Passed, None),
                    Err(detail) => (CheckOutcome::Failed, Some(detail)),
                }
            };
            if outcome == CheckOutcome::Failed && failure.is_none() {
                failure = Some(Failure::new(
                    Phase::Checks,
                    format!(
                        "check {} of verify.checks ({:?} in database {database:?}) {}",
                        index + 1,
                        check.query,
                        detail.as_deref().unwrap_or("failed")
                    ),
                ));
            }
            tracing::info!(
                "check {} ({database}): {}",
                index + 1,
                match outcome {
                    CheckOutcome::Passed => "passed".to_owned(),
                    CheckOutcome::Failed => format!("FAILED: {}", detail.as_deref().unwrap_or("")),
                    CheckOutcome::Skipped => format!("skipped: {}", detail.as_deref().unwrap_or("")),
                }
            );
            results.push(CheckResult { database, query: check.query.clone(), outcome, detail });
        }
        (results, failure)
    }

    /// One check: one row, one boolean column, true.
    async fn run_check(&self, database: &str, query: &str) -> Result<(), String> {
        let mut connection = self.connect(database).await.map_err(|error| format!("cannot connect: {error}"))?;
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&mut connection).await;
        let _ = connection.close().await;
        let rows = rows.map_err(|error| format!("failed: {error}"))?;
        let [row] = rows.as_slice() else {
            return Err(format!("returned {} rows; a check must return exactly one row holding true", rows.len()));
        };
        if row.len() != 1 {
            return Err(format!("returned {} columns; a check must return one boolean column", row.len()));
        }
        match row.try_get::<Option<bool>, _>(0) {
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err("returned false".to_owned()),
            Ok(None) => Err("returned NULL".to_owned()),
            Err(error) => Err(format!("must return a boolean: {error}")),
        }
    }
}

/// Creates the amcheck extension in the connected database if missing, then runs `bt_index_check`
/// on each of its btree indexes: how many were checked, and each failing index with its error. An
/// error is returned only when the checks could not run at all.
async fn check_indexes(
    connection: &mut PgConnection,
    heapallindexed: bool,
) -> Result<(usize, Vec<(String, String)>), sqlx::Error> {
    sqlx::raw_sql("create extension if not exists amcheck").execute(&mut *connection).await?;
    // Where the extension lives (it may predate this check, in any schema), to call it by that name.
    let schema: String = sqlx::query_scalar(
        "select format('%I', n.nspname) from pg_extension e join pg_namespace n on n.oid = e.extnamespace \
         where e.extname = 'amcheck'",
    )
    .fetch_one(&mut *connection)
    .await?;
    let indexes: Vec<(Oid, String)> = sqlx::query_as(BTREE_INDEXES).fetch_all(&mut *connection).await?;
    let check = format!("select {schema}.bt_index_check($1::oid::regclass, $2)");
    let mut failures = Vec::new();
    for (oid, name) in &indexes {
        match sqlx::query(sqlx::AssertSqlSafe(check.clone()))
            .bind(oid)
            .bind(heapallindexed)
            .execute(&mut *connection)
            .await
        {
            Ok(_) => {}
            // Corruption is reported as an error by the check itself; the connection stays usable.
            Err(sqlx::Error::Database(error)) => failures.push((name.clone(), error.message().to_owned())),
            Err(error) => return Err(error),
        }
    }
    Ok((indexes.len(), failures))
}
