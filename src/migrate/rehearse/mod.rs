//! `lifeboat migrate rehearse`: the pending migrations applied to a restore of the real data
//! before production sees them.
//!
//! The gate's archive step switches WAL on the cluster's server and waits for it to be archived;
//! the newest verified backup is restored into a scratch cluster and replayed to the end of the
//! archived WAL ([`copy`]). On the copy's database the pending migrations (against the copy's
//! history table) run through the same [`Runner`] `up` uses, with a [`Measurer`] watching each
//! statement ([`measure`]). Each migration with a down file then proves it: the normalised schema
//! and the row counts of the tables it names are compared before the up and after the down, and
//! the up runs once more (up → down → up). The first failed up ends the rehearsal. The scratch
//! cluster is removed however the rehearsal ends (also on SIGINT/SIGTERM), and the report is stored
//! in the repository ([`report`]).
//!
//! The runs on the copy are not migrations of the environment: their `migrate` events go nowhere,
//! and the rehearsal is audited as one `rehearse` operation.

pub mod copy;
pub mod measure;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};

use self::copy::Copy;
use self::measure::Measurer;
use self::report::{DownPath, MigrationRehearsal, RehearsalFailure, RehearsalReport, RowCount};
use super::gate::{self, GateError, GateRequest};
use super::history;
use super::lint::{self, Finding, LintSettings};
use super::plan::Plan;
use super::run::{Direction, GateRecord, RunError, Runner};
use super::schema_dump::NormalisedSchema;
use super::source::{Directory, Migration, Version};
use crate::config::{Environment, GateBackup, ServerVersion};
use crate::ops::OpContext;
use crate::ops::audit::AuditLog;
use crate::ops::event::{Event, EventSink, Operation, Outcome, Totals};
use crate::postgres::cluster::LocalCluster;
use crate::repository::RepositoryError;
use crate::storage::ObjectKey;

/// Any backup the gate would pass counts, however old: the rehearsal wants the newest.
const ANY_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    #[error(
        "there is nothing to rehearse on: cluster {cluster:?} has no {what} that passed verification by restore in \
         {location}; run {next}, then rehearse again"
    )]
    NoVerifiedBackup { cluster: String, what: String, location: String, next: String },

    #[error("the rehearsal's archive step: {0}")]
    Gate(Box<GateError>),

    #[error("the rehearsal's restore: {0}")]
    Restore(String),

    #[error("the rehearsal on the restored copy: {what}: {detail}")]
    Copy { what: String, detail: String },

    #[error(
        "the rehearsal was interrupted ({signal}); its scratch server was stopped and its files removed{leftover}. \
         No report was stored"
    )]
    Interrupted { signal: String, leftover: String },

    #[error("the rehearsal finished ({status}) but its report could not be stored at {key}: {source}")]
    Store { status: String, key: ObjectKey, source: Box<RepositoryError> },
}

/// What to rehearse: the pending migrations of `directory` against the copy of `environment`'s
/// database, up to and including `to`.
pub struct Request<'a> {
    pub environment: &'a Environment,
    pub directory: &'a Directory,
    pub to: Option<&'a Version>,
    pub allow_out_of_order: bool,
}

/// Rehearses, removes the scratch cluster, stores the report; emits `rehearse` Started and
/// Finished. A failed migration is in the report (`passed: false`), not an error.
pub async fn rehearse(
    context: &OpContext,
    request: &Request<'_>,
) -> Result<(RehearsalReport, ObjectKey), RehearseError> {
    let began = Instant::now();
    let mut arguments = BTreeMap::from([("environment".to_owned(), request.environment.name.clone())]);
    context.events.emit(Event::Started { operation: Operation::Rehearse, arguments: arguments.clone() }).await;
    let result = rehearse_and_store(context, request).await;
    let outcome = match &result {
        Ok((report, key)) => {
            arguments.insert("backup".to_owned(), report.source.id.clone());
            arguments.insert("report".to_owned(), key.to_string());
            match &report.failure {
                None => Outcome::Succeeded,
                Some(failure) => Outcome::Failed { error: failure.to_string() },
            }
        }
        Err(error) => Outcome::Failed { error: error.to_string() },
    };
    let finished = Event::Finished {
        operation: Operation::Rehearse,
        arguments,
        outcome,
        duration: began.elapsed(),
        totals: Totals::default(),
    };
    context.events.emit(finished).await;
    result
}

async fn rehearse_and_store(
    context: &OpContext,
    request: &Request<'_>,
) -> Result<(RehearsalReport, ObjectKey), RehearseError> {
    let started_at = Utc::now();
    let began = Instant::now();
    let backup = newest_verified(context, request.environment).await?;
    let mut slot: Option<LocalCluster> = None;
    let outcome = {
        let work = async {
            let copy = copy::restore(context, request.environment, backup, &mut slot).await?;
            let applied = Instant::now();
            let applied_result = apply(context, request, &copy).await?;
            Ok::<_, RehearseError>((copy, applied_result, applied.elapsed()))
        };
        tokio::select! {
            result = work => Ok(result),
            signal = context.cancel.cancelled() => Err(signal),
        }
    };
    let cleanup = match slot.take() {
        Some(cluster) => {
            let root = cluster.root_dir().display().to_string();
            cluster.remove().await.map_err(|error| {
                format!("the scratch server or files in {root} could not be removed ({error}); stop it with `pg_ctl stop -D {root}/data` and remove the directory")
            })
        }
        None => Ok(()),
    };
    let (copy, applied, apply_time) = match outcome {
        Err(signal) => {
            let leftover = cleanup.err().map(|problem| format!(" (except: {problem})")).unwrap_or_default();
            return Err(RehearseError::Interrupted { signal, leftover });
        }
        Ok(result) => {
            let result = result?;
            if let Err(problem) = cleanup {
                tracing::warn!("{problem}");
            }
            result
        }
    };
    let Applied { migrations, failure, not_rehearsed } = applied;
    let report = RehearsalReport {
        format: report::FORMAT.to_owned(),
        version: report::VERSION,
        cluster: context.layout.name().as_str().to_owned(),
        environment: request.environment.name.clone(),
        started_at,
        finished_at: Utc::now(),
        source: copy.source,
        apply_seconds: crate::util::round_to(apply_time.as_secs_f64(), 3),
        seconds: crate::util::round_to(began.elapsed().as_secs_f64(), 3),
        passed: failure.is_none(),
        down_paths_hold: !migrations.iter().any(|migration| migration.down.is_problem()),
        migrations,
        failure,
        not_rehearsed,
    };
    let status = if report.passed { "passed" } else { "failed" };
    match report.store(&context.repository, &context.layout).await {
        Ok(key) => Ok((report, key)),
        Err(source) => Err(RehearseError::Store {
            status: status.to_owned(),
            key: report.key(&context.layout),
            source: Box::new(source),
        }),
    }
}

/// The gate's choice and archive step, on the cluster's server: the newest backup (or dump of
/// the environment's database) that passed verification by restore, after a WAL switch that
/// reached the repository.
async fn newest_verified(
    context: &OpContext,
    environment: &Environment,
) -> Result<crate::catalog::id::BackupId, RehearseError> {
    let database = copy::database_of(environment);
    let mut on_cluster = environment.clone();
    on_cluster.connection = context.config.cluster.connection.with_database(&database);
    let request = GateRequest { max_age: ANY_AGE, take: false };
    match gate::check(context, &on_cluster, &request).await {
        Ok(pass) => pass.backup.parse().map_err(|error| RehearseError::Restore(format!("{}: {error}", pass.backup))),
        Err(GateError::NoBackup { .. } | GateError::NotVerified { .. } | GateError::FailedVerification { .. }) => {
            let (what, next) = match environment.gate_backup {
                GateBackup::Base => ("base backup".to_owned(), "`lifeboat backup`, then `lifeboat verify`".to_owned()),
                GateBackup::Dump => (
                    format!("dump of database {database:?}"),
                    format!("`lifeboat dump --db {database}`, then `lifeboat verify`"),
                ),
            };
            Err(RehearseError::NoVerifiedBackup {
                cluster: context.layout.name().as_str().to_owned(),
                what,
                location: context.repository.location(),
                next,
            })
        }
        Err(error) => Err(RehearseError::Gate(Box::new(error))),
    }
}

/// The migrations rehearsed, and where it stopped.
struct Applied {
    migrations: Vec<MigrationRehearsal>,
    failure: Option<RehearsalFailure>,
    not_rehearsed: Vec<String>,
}

/// Runs the pending migrations on the copy.
async fn apply(context: &OpContext, request: &Request<'_>, copy: &Copy) -> Result<Applied, RehearseError> {
    let failed = |what: &str| {
        let what = what.to_owned();
        move |error: sqlx::Error| RehearseError::Copy { what, detail: error.to_string() }
    };
    let mut conn = PgConnection::connect_with(&copy.options.clone().application_name("lifeboat rehearse"))
        .await
        .map_err(failed("connecting to the copy"))?;
    // The copy's own settings: no production gate, no restore point the copy needs.
    let mut environment = request.environment.clone();
    environment.production = false;
    let table = environment.history_table.clone();
    history::ensure(&mut conn, &table).await.map_err(failed("the copy's migration history"))?;
    let rows = history::read(&mut conn, &table).await.map_err(failed("the copy's migration history"))?;
    let plan = Plan::new(request.directory, &rows);
    let refusals = plan.refusals(request.allow_out_of_order);
    if !refusals.is_empty() {
        return Err(RehearseError::Copy {
            what: format!("the copy's history {table} (as of the backup and the archived WAL)"),
            detail: refusals.join("\n\n"),
        });
    }
    let mut pending = plan.pending(request.allow_out_of_order);
    if let Some(to) = request.to {
        pending.retain(|migration| &migration.version <= to);
    }
    let pid: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await.map_err(failed("the copy"))?;
    // The runs on the copy are not the environment's migrations: their events go nowhere.
    let events = EventSink::new(AuditLog::new(PathBuf::from("/dev/null"), &context.layout, None));
    let mut rehearsal = Rehearsal { conn: &mut conn, copy, environment: &environment, events: &events, pid, context };
    let mut migrations = Vec::new();
    let mut failure = None;
    let mut not_rehearsed = Vec::new();
    for migration in pending {
        if failure.is_some() {
            not_rehearsed.push(migration.version.to_string());
            continue;
        }
        tracing::info!("rehearsing {} {}", migration.version, migration.name);
        let (rehearsed, failed) = rehearsal.one(migration).await?;
        migrations.extend(rehearsed);
        failure = failed;
    }
    crate::migrate::run::close(conn).await;
    Ok(Applied { migrations, failure, not_rehearsed })
}

/// What every migration's rehearsal shares.
struct Rehearsal<'a> {
    conn: &'a mut PgConnection,
    copy: &'a Copy,
    environment: &'a Environment,
    events: &'a EventSink,
    pid: i32,
    context: &'a OpContext,
}

impl Rehearsal<'_> {
    fn runner<'r>(&'r mut self, observer: Option<&'r mut dyn super::run::StatementObserver>) -> Runner<'r> {
        Runner {
            conn: &mut *self.conn,
            environment: self.environment,
            events: self.events,
            gate: GateRecord { verdict: "rehearsal".to_owned(), backup_id: Some(self.copy.source.id.clone()) },
            observer,
        }
    }

    /// Up (measured), then down and up again; the failure that ends the rehearsal.
    async fn one(
        &mut self,
        migration: &Migration,
    ) -> Result<(Option<MigrationRehearsal>, Option<RehearsalFailure>), RehearseError> {
        let proving = migration.down.is_some();
        let schema_before = if proving { Some(self.schema().await?) } else { None };
        let tables = if proving { self.named_tables(migration).await? } else { Vec::new() };
        let counts_before = self.count(&tables).await?;
        let findings = self.lint(migration).await?;

        let mut measurer =
            Measurer::start(&self.copy.options, self.pid, &self.environment.history_table).await.map_err(|error| {
                RehearseError::Copy { what: "the lock sampler's connection".to_owned(), detail: error.to_string() }
            })?;
        let up = self.runner(Some(&mut measurer)).run(migration, Direction::Up).await;
        let statements = measurer.finish().await;
        let up_ms = match up {
            Ok(ran) => ran.duration_ms,
            Err(error) => return Ok((None, Some(failure_of(migration, &error)))),
        };
        let mut rehearsed = MigrationRehearsal {
            version: migration.version.to_string(),
            name: migration.name.clone(),
            file: migration.up.path.display().to_string(),
            transactional: migration.up.transaction,
            up_ms,
            statements,
            findings,
            down: DownPath::verdict("no down path"),
        };
        let Some(schema_before) = schema_before else { return Ok((Some(rehearsed), None)) };

        let down = match self.runner(None).run(migration, Direction::Down).await {
            Ok(ran) => ran,
            Err(error) => {
                rehearsed.down = DownPath { detail: Some(error.to_string()), ..DownPath::verdict("down failed") };
                // What the copy holds now is neither the state after the up nor before it.
                let stop = failure_of(migration, &error);
                return Ok((Some(rehearsed), Some(stop)));
            }
        };
        let schema_after = self.schema().await?;
        let counts_after = self.count(&tables).await?;
        let difference = schema_before.difference(&schema_after);
        let row_counts: Vec<RowCount> = tables
            .iter()
            .zip(counts_before.iter().zip(&counts_after))
            .map(|(table, (before, after))| RowCount { table: table.clone(), before: *before, after_down: *after })
            .collect();
        let verdict = if difference.is_some() {
            "schema differs after down"
        } else if row_counts.iter().any(|count| count.before != count.after_down) {
            "row counts differ after down"
        } else {
            "restored"
        };
        let (schema_missing, schema_extra) =
            difference.map(|difference| (difference.missing, difference.extra)).unwrap_or_default();
        rehearsed.down = DownPath {
            verdict: verdict.to_owned(),
            detail: None,
            schema_missing,
            schema_extra,
            row_counts,
            down_ms: Some(down.duration_ms),
            up_again_ms: None,
        };
        match self.runner(None).run(migration, Direction::Up).await {
            Ok(again) => {
                rehearsed.down.up_again_ms = Some(again.duration_ms);
                Ok((Some(rehearsed), None))
            }
            Err(error) => {
                if rehearsed.down.verdict == "restored" {
                    rehearsed.down.verdict = "up failed after down".to_owned();
                }
                rehearsed.down.detail = Some(format!("the up after the down failed: {error}"));
                // The copy is not in the state after this migration: the later ones would run on
                // something production never has.
                Ok((Some(rehearsed), Some(failure_of(migration, &error))))
            }
        }
    }

    /// The up file's lint findings, graded by the copy's table sizes and server version.
    async fn lint(&mut self, migration: &Migration) -> Result<Vec<Finding>, RehearseError> {
        let failed = |error: sqlx::Error| RehearseError::Copy {
            what: "the table sizes for the lint".to_owned(),
            detail: error.to_string(),
        };
        let num: String =
            sqlx::query_scalar("SHOW server_version_num").fetch_one(&mut *self.conn).await.map_err(failed)?;
        let server = num.trim().parse().ok().map(ServerVersion::from_num);
        let config = &self.context.config.migrate.lint;
        let mut findings = lint::lint_migration(migration, &LintSettings::new(config, server));
        lint::grade(&mut findings, self.conn, config).await.map_err(failed)?;
        Ok(findings)
    }

    /// The copy's schema, normalised.
    async fn schema(&self) -> Result<NormalisedSchema, RehearseError> {
        let text = super::export::schema_dump(
            &self.copy.url,
            self.context.config.cluster.bin_dir.as_deref(),
            self.copy.server_major,
        )
        .await
        .map_err(|error| RehearseError::Copy {
            what: "the schema of the copy".to_owned(),
            detail: error.to_string(),
        })?;
        Ok(NormalisedSchema::from_dump(&text))
    }

    /// The user tables whose names the migration's files mention, as SQL names them.
    async fn named_tables(&mut self, migration: &Migration) -> Result<Vec<String>, RehearseError> {
        let rows = sqlx::query(
            "SELECT c.oid::regclass::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT (n.nspname = $1 AND c.relname = $2) ORDER BY 1",
        )
        .bind(&self.environment.history_table.schema)
        .bind(&self.environment.history_table.name)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|error| RehearseError::Copy { what: "listing the copy's tables".to_owned(), detail: error.to_string() })?;
        let text = std::iter::once(&migration.up)
            .chain(migration.down.as_ref())
            .map(|script| script.text.to_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        let mut tables = Vec::new();
        for row in rows {
            let (qualified, name): (String, String) = (row.get(0), row.get(1));
            if mentions(&text, &name.to_lowercase()) {
                tables.push(qualified);
            }
        }
        Ok(tables)
    }

    async fn count(&mut self, tables: &[String]) -> Result<Vec<i64>, RehearseError> {
        let mut counts = Vec::new();
        for table in tables {
            // `table` is regclass output: already quoted where it needs to be.
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *self.conn)
                .await
                .map_err(|error| RehearseError::Copy {
                    what: format!("counting the rows of {table}"),
                    detail: error.to_string(),
                })?;
            counts.push(count);
        }
        Ok(counts)
    }
}

/// `name` occurs in `text` as a whole word (an identifier, not part of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The rehearsal's failure, from the runner's error.
fn failure_of(migration: &Migration, error: &RunError) -> RehearsalFailure {
    match error {
        RunError::Failed(failure) => {
            let script = if failure.direction == "down" { migration.down.as_ref() } else { Some(&migration.up) };
            RehearsalFailure {
                version: failure.version.clone(),
                name: failure.name.clone(),
                file: script.map(|script| script.path.display().to_string()).unwrap_or_default(),
                statement: (failure.number > 0 && failure.number <= failure.total).then(|| failure.number - 1),
                line: failure.line,
                text: failure.statement.clone(),
                error: failure.error.clone(),
            }
        }
        other => RehearsalFailure {
            version: migration.version.to_string(),
            name: migration.name.clone(),
            file: migration.up.path.display().to_string(),
            statement: None,
            line: 0,
            text: String::new(),
            error: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_mentioned_as_a_whole_word_only() {
        assert!(mentions("alter table orders alter column id type bigint", "orders"));
        assert!(mentions("create index on public.\"orders\" (id)", "orders"));
        assert!(!mentions("alter table orders_archive add column x int", "orders"));
        assert!(!mentions("select 1", "orders"));
    }
}
