//! What runs against a restored (or scratch) server: finding a role to connect as, listing its
//! databases, `pg_amcheck`, and the user's SQL checks from `verify.checks`.
//!
//! The scratch server accepts `trust` connections on its private socket only, so any role name
//! gets in; the bootstrap superuser (oid 10) is looked up through whichever candidate exists.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::report::{Amcheck, CheckOutcome, CheckResult, Failure, Phase};
use crate::config::{AmcheckLevel, SqlCheck};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::cluster::LocalCluster;

/// Lines of `pg_amcheck` output kept in a report.
const OUTPUT_LINES: usize = 40;

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

    /// Runs `pg_amcheck` on every database of the scratch `cluster` at `level`; `None` when the
    /// level is `off`. What it found is in the result; an error means it could not run.
    pub async fn amcheck(
        &self,
        cluster: &LocalCluster,
        level: AmcheckLevel,
        binaries: &PgBinaries,
    ) -> Result<Option<Amcheck>, Failure> {
        if level == AmcheckLevel::Off {
            return Ok(None);
        }
        let program = binaries.require("pg_amcheck").map_err(|error| {
            Failure::new(
                Phase::Amcheck,
                format!(
                    "verify.amcheck = \"{}\" needs pg_amcheck (PostgreSQL 14 or newer): {error}; install it or set \
                     verify.amcheck = \"off\"",
                    level.as_str()
                ),
            )
        })?;
        let began = Instant::now();
        let mut command = tokio::process::Command::new(&program);
        command
            .arg("--host")
            .arg(cluster.socket_dir())
            .arg("--port")
            .arg(cluster.port().to_string())
            .arg("--username")
            .arg(self.options.get_username())
            .args(["--no-password", "--all", "--install-missing"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match level {
            AmcheckLevel::Off => unreachable!("returned above"),
            // Every btree index (user and catalog), no heap checks.
            AmcheckLevel::Indexes => command.arg("--index=*"),
            // Tables and their indexes, and every heap tuple must have its index entries.
            AmcheckLevel::HeapAllIndexed => command.arg("--heapallindexed"),
        };
        for name in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS", "PGSERVICE"] {
            command.env_remove(name);
        }
        let output = command
            .output()
            .await
            .map_err(|error| Failure::new(Phase::Amcheck, format!("cannot run {}: {error}", program.display())))?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let lines: Vec<&str> = text.lines().collect();
        let output_tail = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n");
        if !output.status.success() {
            tracing::warn!("pg_amcheck found problems ({}):\n{output_tail}", output.status);
        }
        Ok(Some(Amcheck {
            level,
            passed: output.status.success(),
            seconds: super::round(began.elapsed().as_secs_f64()),
            output: output_tail,
        }))
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
