//! Running one migration, up or down, on a connection that holds the migration lock.
//!
//! A transactional file runs statement by statement inside one transaction together with its
//! history row: it lands whole or not at all. A `-- lifeboat:no-transaction` file runs statement
//! by statement in autocommit, with its history row written *before* the first statement as
//! failed ("did not finish") and advanced after each one, so a crash or an error leaves a row
//! that says exactly which statements landed.
//!
//! Each file runs under `SET lock_timeout` (and `statement_timeout` when set): a statement that
//! would queue behind another session's lock gives up after the timeout instead of blocking every
//! query that queues behind *it*. On SQLSTATE 55P03 (lock_not_available) the attempt is undone
//! and tried again after a growing pause, `lock_retries` times.
//!
//! Before an up migration, `pg_create_restore_point('lifeboat-before-<version>')` marks the
//! moment a point-in-time restore can return to (`lifeboat migrate restore-before`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};

use super::gate::{RestorePoint, create_restore_point, restore_point_name};
use super::history::{self, Row};
use super::source::{Migration, Repeatable, Script};
use crate::config::Environment;
use crate::ops::event::{Event, EventSink, Operation, Outcome, Totals};

/// SQLSTATE lock_not_available: `lock_timeout` expired.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The first pause after a lock timeout; each retry doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// What let the run through the gate, for the history rows.
#[derive(Debug, Clone, Default)]
pub struct GateRecord {
    /// `passed`, `taken` or `not required`.
    pub verdict: String,
    pub backup_id: Option<String>,
}

/// A point recorded just before a migration, or the moment just after it.
#[derive(Debug, Clone)]
pub struct WalPoint {
    pub lsn: String,
    pub time: DateTime<Utc>,
}

/// One migration that ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ran {
    pub version: String,
    pub name: String,
    pub direction: &'static str,
    pub transactional: bool,
    pub statements: usize,
    pub duration_ms: u64,
    /// Attempts given up on lock timeout before the one that succeeded.
    pub lock_retries: u32,
    pub restore_point: Option<String>,
    pub lsn_before: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A statement of the migration failed; the history row says the same.
    #[error("{0}")]
    Failed(Box<Failure>),
    #[error(
        "migration {version} ({name}) has no down file, so it cannot be reverted; write {expected}, or restore to before it with `lifeboat migrate restore-before {version}`"
    )]
    NoDown { version: String, name: String, expected: String },
    #[error(
        "{path}: {statement} is a transaction control statement in a file lifeboat runs in a transaction of its own; \
         remove it, or make the file's first line `-- lifeboat:no-transaction`"
    )]
    TransactionControl { path: String, statement: String },
    #[error(
        "{path} runs outside a transaction but does not parse ({errors}); lifeboat will not run a half-understood \
         file statement by statement. Fix the syntax (or report it if PostgreSQL accepts it)"
    )]
    Unparsed { path: String, errors: String },
    #[error("the migration history in {table}: {source}")]
    History { table: String, source: sqlx::Error },
}

/// A statement of a migration that failed; a no-transaction file's `landed` statements stay applied.
#[derive(Debug)]
pub struct Failure {
    pub version: String,
    pub name: String,
    pub direction: &'static str,
    pub transactional: bool,
    /// The failed statement's number in the file, from 1.
    pub number: usize,
    pub landed: usize,
    pub total: usize,
    pub statement: String,
    pub line: u32,
    pub error: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Failure { version, name, direction, number, total, line, error, landed, .. } = self;
        let what = if self.transactional {
            "it ran in a transaction, so none of it landed".to_owned()
        } else {
            format!("it ran outside a transaction: the {landed} statements before it landed and stay applied")
        };
        let first = crate::util::first_line(&self.statement);
        write!(
            f,
            "migration {version} ({name}) {direction} failed at statement {number} of {total} (line {line}): {error}\n    \
             {first}\n  {what}"
        )
    }
}

/// What a history row is keyed by: the version (`R__<name>` for a repeatable) and the kind.
struct Identity {
    version: String,
    kind: &'static str,
}

/// A repeatable migration as a migration without a version of its own (its rows use
/// `R__<name>`) and without a down file.
pub fn repeatable_migration(repeatable: &Repeatable) -> Migration {
    Migration {
        version: super::source::Version::parse("0").expect("0 is a version"),
        name: repeatable.name.clone(),
        up: repeatable.script.clone(),
        down: None,
    }
}

/// Told about each statement of a script as the runner executes it (rehearsal measures with
/// it), on the runner's own connection: inside the file's transaction when it has one.
#[async_trait::async_trait]
pub trait StatementObserver: Send {
    /// Just before statement `index` of `script` (each attempt, after a lock timeout too).
    async fn before(&mut self, conn: &mut PgConnection, script: &Script, index: usize);
    /// Just after it: the rows it changed, or `None` when it failed (the connection's
    /// transaction, if any, is then aborted).
    async fn after(&mut self, conn: &mut PgConnection, script: &Script, index: usize, rows: Option<u64>);
}

/// A connection holding the migration lock, and what every history row of this run shares.
pub struct Runner<'a> {
    pub conn: &'a mut PgConnection,
    pub environment: &'a Environment,
    pub events: &'a EventSink,
    pub gate: GateRecord,
    /// Watches every statement run; `None` for an ordinary run.
    pub observer: Option<&'a mut dyn StatementObserver>,
}

impl Runner<'_> {
    /// Runs `migration` in `direction`, recording it in the history and emitting its events.
    pub async fn run(&mut self, migration: &Migration, direction: Direction) -> Result<Ran, RunError> {
        let identity = Identity { version: migration.version.to_string(), kind: "versioned" };
        self.run_as(migration, direction, &identity).await
    }

    /// Applies a repeatable migration (Flyway's `R__<name>.sql`), recorded as version `R__<name>`.
    pub async fn run_repeatable(&mut self, repeatable: &Repeatable) -> Result<Ran, RunError> {
        let identity = Identity { version: super::plan::repeatable_version(&repeatable.name), kind: "repeatable" };
        self.run_as(&repeatable_migration(repeatable), Direction::Up, &identity).await
    }

    async fn run_as(
        &mut self,
        migration: &Migration,
        direction: Direction,
        identity: &Identity,
    ) -> Result<Ran, RunError> {
        let script = match direction {
            Direction::Up => &migration.up,
            Direction::Down => down_script(migration)?,
        };
        check_script(script)?;
        let mut arguments = BTreeMap::from([
            ("environment".to_owned(), self.environment.name.clone()),
            ("version".to_owned(), identity.version.clone()),
            ("name".to_owned(), migration.name.clone()),
            ("direction".to_owned(), direction.as_str().to_owned()),
            ("gate".to_owned(), self.gate.verdict.clone()),
        ]);
        if let Some(backup) = &self.gate.backup_id {
            arguments.insert("backup".to_owned(), backup.clone());
        }
        self.events.emit(Event::Started { operation: Operation::Migrate, arguments: arguments.clone() }).await;
        let began = Instant::now();
        let result = self.run_script(migration, script, direction, identity).await;
        let outcome = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(error) => Outcome::Failed { error: error.to_string() },
        };
        if let Ok(ran) = &result
            && let Some(point) = &ran.restore_point
        {
            arguments.insert("restore_point".to_owned(), point.clone());
        }
        let totals = Totals { created: Vec::new(), ..Totals::default() };
        self.events
            .emit(Event::Finished {
                operation: Operation::Migrate,
                arguments,
                outcome,
                duration: began.elapsed(),
                totals,
            })
            .await;
        result
    }

    async fn run_script(
        &mut self,
        migration: &Migration,
        script: &Script,
        direction: Direction,
        identity: &Identity,
    ) -> Result<Ran, RunError> {
        let restore_point = match direction {
            Direction::Up => self.restore_point(migration, &identity.version).await?,
            Direction::Down => None,
        };
        let before = match &restore_point {
            Some(point) => Some(WalPoint { lsn: point.lsn.clone(), time: point.time }),
            None => current_point(self.conn).await.ok(),
        };
        let mut row = Row {
            version: identity.version.clone(),
            name: migration.name.clone(),
            kind: identity.kind.to_owned(),
            checksum: migration.up.checksum.clone(),
            applied_at: Utc::now(),
            duration_ms: None,
            applied_by: history::applied_by(),
            success: false,
            transactional: script.transaction,
            gate: Some(self.gate.verdict.clone()),
            backup_id: self.gate.backup_id.clone(),
            restore_point: restore_point.as_ref().map(|point| point.name.clone()),
            timeline: restore_point.as_ref().map(|point| point.timeline as i32),
            lsn_before: before.as_ref().map(|point| point.lsn.clone()),
            time_before: before.as_ref().map(|point| point.time),
            lsn_after: None,
            time_after: None,
            statements_done: 0,
            statements_total: script.statements.len() as i32,
            failed_statement: None,
            error: None,
            adopted_from: None,
            original_checksum: None,
            allowed: super::lint::allowed_record(&migration.up),
        };
        let began = Instant::now();
        let retries = if script.transaction {
            self.run_in_transaction(script, direction, &mut row, began).await?
        } else {
            self.run_statement_by_statement(script, direction, &mut row, began).await?
        };
        Ok(Ran {
            version: row.version,
            name: row.name,
            direction: direction.as_str(),
            transactional: script.transaction,
            statements: script.statements.len(),
            duration_ms: began.elapsed().as_millis() as u64,
            lock_retries: retries,
            restore_point: restore_point.map(|point| point.name),
            lsn_before: row.lsn_before,
        })
    }

    /// The restore point before `migration`, or `None` (with a warning) where one is not required
    /// and the server refused it (the role may lack the privilege).
    async fn restore_point(&mut self, migration: &Migration, version: &str) -> Result<Option<RestorePoint>, RunError> {
        let name = restore_point_name(version);
        match create_restore_point(self.conn, &name).await {
            Ok(point) => Ok(Some(point)),
            // Production needs the point (restore-before is its promise); elsewhere a role without
            // the privilege gets a warning.
            Err(error) if !self.environment.production => {
                tracing::warn!(
                    "no restore point before migration {} ({error}); `migrate restore-before` will not be able to \
                     return to it",
                    version
                );
                Ok(None)
            }
            Err(error) => Err(RunError::Failed(Box::new(Failure {
                version: version.to_owned(),
                name: migration.name.clone(),
                direction: "up",
                transactional: true,
                number: 0,
                landed: 0,
                total: migration.up.statements.len(),
                statement: format!("SELECT pg_create_restore_point('{name}')"),
                line: 0,
                error: format!("{error} (the production gate needs a restore point before each migration)"),
            }))),
        }
    }

    /// One transaction: settings, statements, history row, commit; again on lock timeout.
    async fn run_in_transaction(
        &mut self,
        script: &Script,
        direction: Direction,
        row: &mut Row,
        began: Instant,
    ) -> Result<u32, RunError> {
        let mut retries = 0;
        loop {
            let attempt = async {
                execute(self.conn, "BEGIN").await.map_err(|error| (0, error))?;
                for setting in settings(self.environment, script, "LOCAL") {
                    execute(self.conn, &setting).await.map_err(|error| (0, error))?;
                }
                for (index, statement) in script.statements.iter().enumerate() {
                    self.statement(script, index, &statement.text).await.map_err(|error| (index, error))?;
                }
                let after = current_point(self.conn).await.map_err(|error| (script.statements.len(), error))?;
                row.success = true;
                row.statements_done = script.statements.len() as i32;
                row.duration_ms = Some(began.elapsed().as_millis() as i64);
                row.lsn_after = Some(after.lsn);
                row.time_after = Some(after.time);
                let table = &self.environment.history_table;
                match direction {
                    Direction::Up => history::upsert(self.conn, table, row).await,
                    Direction::Down => history::remove(self.conn, table, &row.version).await.map(|_| ()),
                }
                .map_err(|error| (script.statements.len(), error))?;
                execute(self.conn, "COMMIT").await.map_err(|error| (script.statements.len(), error))
            };
            match attempt.await {
                Ok(()) => return Ok(retries),
                Err((index, error)) => {
                    let _ = execute(self.conn, "ROLLBACK").await;
                    if is_lock_timeout(&error) && retries < self.environment.lock_retries {
                        retries += 1;
                        self.pause_before_retry(row, retries, &error).await;
                        continue;
                    }
                    row.success = false;
                    row.statements_done = 0;
                    return Err(self.record_failure(script, direction, row, index, &error, began).await);
                }
            }
        }
    }

    /// Autocommit, statement by statement, the history row advanced after each one.
    async fn run_statement_by_statement(
        &mut self,
        script: &Script,
        direction: Direction,
        row: &mut Row,
        began: Instant,
    ) -> Result<u32, RunError> {
        let table = self.environment.history_table.clone();
        let history_error = |source| RunError::History { table: table.to_string(), source };
        if direction == Direction::Up {
            row.error = Some("started and did not finish (the runner stopped or lost its connection)".to_owned());
            history::upsert(self.conn, &table, row).await.map_err(history_error)?;
        }
        let mut retries = 0;
        for setting in settings(self.environment, script, "SESSION") {
            execute(self.conn, &setting).await.map_err(history_error)?;
        }
        let mut failure = None;
        for (index, statement) in script.statements.iter().enumerate() {
            loop {
                match self.statement(script, index, &statement.text).await {
                    Ok(()) => break,
                    Err(error) if is_lock_timeout(&error) && retries < self.environment.lock_retries => {
                        retries += 1;
                        self.pause_before_retry(row, retries, &error).await;
                    }
                    Err(error) => {
                        failure = Some((index, error));
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            row.statements_done = index as i32 + 1;
            if direction == Direction::Up {
                history::upsert(self.conn, &table, row).await.map_err(history_error)?;
            }
        }
        execute(self.conn, "RESET lock_timeout").await.map_err(history_error)?;
        execute(self.conn, "RESET statement_timeout").await.map_err(history_error)?;
        if let Some((index, error)) = failure {
            return Err(self.record_failure(script, direction, row, index, &error, began).await);
        }
        let after = current_point(self.conn).await.map_err(history_error)?;
        row.success = true;
        row.error = None;
        row.duration_ms = Some(began.elapsed().as_millis() as i64);
        row.lsn_after = Some(after.lsn);
        row.time_after = Some(after.time);
        match direction {
            Direction::Up => history::upsert(self.conn, &table, row).await.map_err(history_error)?,
            Direction::Down => {
                history::remove(self.conn, &table, &row.version).await.map_err(history_error)?;
            }
        }
        Ok(retries)
    }

    /// Executes statement `index` of `script`, telling the observer before and after.
    async fn statement(&mut self, script: &Script, index: usize, text: &str) -> Result<(), sqlx::Error> {
        let Some(observer) = self.observer.as_deref_mut() else {
            return execute(self.conn, text).await;
        };
        observer.before(self.conn, script, index).await;
        let result = sqlx::raw_sql(AssertSqlSafe(text.to_owned())).execute(&mut *self.conn).await;
        observer.after(self.conn, script, index, result.as_ref().ok().map(|done| done.rows_affected())).await;
        result.map(|_| ())
    }

    async fn pause_before_retry(&self, row: &Row, retry: u32, error: &sqlx::Error) {
        let pause = FIRST_BACKOFF.saturating_mul(1 << (retry - 1).min(16)).min(MAX_BACKOFF);
        tracing::warn!(
            version = %row.version,
            "migration {} hit lock_timeout ({}); retry {retry} of {} in {:.1} s",
            row.version,
            database_message(error),
            self.environment.lock_retries,
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
    }

    /// Writes the failure into the history (an up's row becomes dirty; a failed transactional
    /// down changed nothing, so its row stays as it was) and builds the error.
    async fn record_failure(
        &mut self,
        script: &Script,
        direction: Direction,
        row: &mut Row,
        index: usize,
        error: &sqlx::Error,
        began: Instant,
    ) -> RunError {
        let statement = script.statements.get(index);
        let message = database_message(error);
        let landed = if script.transaction { 0 } else { index };
        row.success = false;
        row.statements_done = landed as i32;
        row.duration_ms = Some(began.elapsed().as_millis() as i64);
        row.failed_statement = statement.map(|statement| statement.text.clone());
        row.error = Some(message.clone());
        let record = direction == Direction::Up || (!script.transaction && landed > 0);
        if record {
            if direction == Direction::Down {
                row.error = Some(format!("its down file failed after {landed} statements: {message}"));
            }
            if let Err(source) = history::upsert(self.conn, &self.environment.history_table, row).await {
                return RunError::History { table: self.environment.history_table.to_string(), source };
            }
        }
        RunError::Failed(Box::new(Failure {
            version: row.version.clone(),
            name: row.name.clone(),
            direction: direction.as_str(),
            transactional: script.transaction,
            number: index + 1,
            landed,
            total: script.statements.len(),
            statement: statement.map(|statement| statement.text.clone()).unwrap_or_else(|| "COMMIT".to_owned()),
            line: statement.map_or(0, |statement| statement.line),
            error: message,
        }))
    }
}

/// The down file of `migration`, or the error saying it has none and what to do.
pub fn down_script(migration: &Migration) -> Result<&Script, RunError> {
    migration.down.as_ref().ok_or_else(|| RunError::NoDown {
        version: migration.version.to_string(),
        name: migration.name.clone(),
        expected: migration.up.path.display().to_string().replace(".up.sql", ".down.sql"),
    })
}

/// Refuses what must not run: transaction control inside a file lifeboat wraps, and a file run
/// statement by statement that the parser could not read.
pub fn check_script(script: &Script) -> Result<(), RunError> {
    let path = script.path.display().to_string();
    if script.transaction {
        for statement in &script.statements {
            let first = first_keyword(&statement.text);
            if matches!(first.as_str(), "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT") {
                return Err(RunError::TransactionControl { path, statement: first });
            }
        }
    } else if !script.syntax_errors.is_empty() {
        return Err(RunError::Unparsed { path, errors: script.syntax_errors.join("; ") });
    }
    Ok(())
}

/// The statement's first word, upper-cased, past comments.
fn first_keyword(text: &str) -> String {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default().to_ascii_uppercase()
}

/// `SET [LOCAL|SESSION] lock_timeout/statement_timeout` for `script` in `environment`.
fn settings(environment: &Environment, script: &Script, scope: &str) -> Vec<String> {
    let lock_timeout = script.lock_timeout.unwrap_or(environment.lock_timeout);
    let statement_timeout = script.statement_timeout.or(environment.statement_timeout).unwrap_or_default();
    vec![
        format!("SET {scope} lock_timeout = '{}ms'", lock_timeout.as_millis()),
        format!("SET {scope} statement_timeout = '{}ms'", statement_timeout.as_millis()),
    ]
}

async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut *conn).await.map(|_| ())
}

fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
}

/// PostgreSQL's message with its SQLSTATE, detail and hint, as the operator needs it.
pub fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => {
            let mut message = database.message().to_owned();
            if let Some(code) = database.code() {
                message.push_str(&format!(" (SQLSTATE {code})"));
            }
            if let Some(postgres) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = postgres.detail() {
                    message.push_str(&format!("; {detail}"));
                }
                if let Some(hint) = postgres.hint() {
                    message.push_str(&format!("; hint: {hint}"));
                }
            }
            message
        }
        other => other.to_string(),
    }
}

/// Where the WAL is now, and the server's clock.
async fn current_point(conn: &mut PgConnection) -> Result<WalPoint, sqlx::Error> {
    let (lsn, time): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text, clock_timestamp()").fetch_one(&mut *conn).await?;
    Ok(WalPoint { lsn, time })
}

/// Closes `conn` politely; a failure to do so changes nothing that was recorded.
pub async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}
