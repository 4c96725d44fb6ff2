//! The history table (`[migrate] history_table`, default `lifeboat.migrations`): one row per
//! migration version, written in the same transaction as the migration itself, so the table and
//! the schema cannot disagree about a transactional migration. A failed migration leaves its row
//! with `success = false` (the history is *dirty*) naming the statement that failed, the error,
//! and for a file run outside a transaction how many of its statements completed.
//!
//! Repeatable migrations (Flyway's `R__name.sql`, read in place) have rows too, with the version
//! `R__<name>` and kind `repeatable`; the runner re-applies one when its checksum changes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row as _};

use crate::config::TableName;

/// One row of the history table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub version: String,
    pub name: String,
    /// `versioned`, `repeatable` or `baseline` (a version recorded as the starting point, never run).
    pub kind: String,
    /// Hex SHA-256 of the up file, line endings normalised and BOM removed.
    pub checksum: String,
    pub applied_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    /// `user@host` of the runner.
    pub applied_by: String,
    pub success: bool,
    pub transactional: bool,
    /// The gate's verdict: `passed`, `taken` or `not required`.
    pub gate: Option<String>,
    /// The backup (or dump) whose verification let the migration through.
    pub backup_id: Option<String>,
    pub restore_point: Option<String>,
    /// The timeline the restore point was made on.
    pub timeline: Option<i32>,
    pub lsn_before: Option<String>,
    pub time_before: Option<DateTime<Utc>>,
    pub lsn_after: Option<String>,
    pub time_after: Option<DateTime<Utc>>,
    /// Statements of the file that completed (all of them for a success; for a failed file run
    /// outside a transaction, those that landed).
    pub statements_done: i32,
    pub statements_total: i32,
    pub failed_statement: Option<String>,
    pub error: Option<String>,
    /// For a row recorded by `migrate adopt`: the tool whose history it came from, and that
    /// tool's checksum of the file, kept for reference.
    pub adopted_from: Option<String>,
    pub original_checksum: Option<String>,
    /// The lint findings its `-- lifeboat:allow` directives accepted, as a JSON array of `{rule,
    /// line, statement, reason}` (see docs/lint.md); `None` when none.
    pub allowed: Option<String>,
}

impl Row {
    pub fn is_dirty(&self) -> bool {
        !self.success
    }
}

const COLUMNS: &str = "version, name, kind, checksum, applied_at, duration_ms, applied_by, success, transactional, \
                       gate, backup_id, restore_point, timeline, lsn_before, time_before, lsn_after, time_after, \
                       statements_done, statements_total, failed_statement, error, adopted_from, original_checksum, allowed";

/// Creates the schema and table if missing, and adds the columns later releases brought to a
/// table an older one created. Idempotent; run under the advisory lock.
pub async fn ensure(conn: &mut PgConnection, table: &TableName) -> Result<(), sqlx::Error> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS {table} (
             version text PRIMARY KEY,
             name text NOT NULL,
             kind text NOT NULL DEFAULT 'versioned' CHECK (kind IN ('versioned', 'repeatable', 'baseline')),
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             duration_ms bigint,
             applied_by text NOT NULL,
             success boolean NOT NULL,
             transactional boolean NOT NULL,
             gate text,
             backup_id text,
             restore_point text,
             timeline integer,
             lsn_before pg_lsn,
             time_before timestamptz,
             lsn_after pg_lsn,
             time_after timestamptz,
             statements_done integer NOT NULL DEFAULT 0,
             statements_total integer NOT NULL DEFAULT 0,
             failed_statement text,
             error text,
             adopted_from text,
             original_checksum text,
             allowed jsonb
         );
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS allowed jsonb;
         COMMENT ON TABLE {table} IS 'lifeboat migration history: one row per migration; success = false marks a \
         failed one (see lifeboat migrate status)';",
        schema = table.schema,
        table = table.quoted(),
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    Ok(())
}

/// Whether the table exists (reading the history of another environment must not create it).
pub async fn exists(conn: &mut PgConnection, table: &TableName) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table.quoted()).fetch_one(&mut *conn).await
}

/// Every row, oldest version first (by application time, then version). `allowed` is read through
/// `to_jsonb` so the history of an environment whose table predates that column (not yet passed
/// through [`ensure`]) still reads.
pub async fn read(conn: &mut PgConnection, table: &TableName) -> Result<Vec<Row>, sqlx::Error> {
    if !exists(conn, table).await? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT version, name, kind, checksum, applied_at, duration_ms, applied_by, success, transactional, gate, \
         backup_id, restore_point, timeline, lsn_before::text AS lsn_before, time_before, lsn_after::text AS lsn_after, \
         time_after, statements_done, statements_total, failed_statement, error, adopted_from, original_checksum, \
         nullif(to_jsonb(h) -> 'allowed', 'null')::text AS allowed FROM {} h ORDER BY applied_at, version",
        table.quoted()
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok(Row {
                version: row.try_get("version")?,
                name: row.try_get("name")?,
                kind: row.try_get("kind")?,
                checksum: row.try_get("checksum")?,
                applied_at: row.try_get("applied_at")?,
                duration_ms: row.try_get("duration_ms")?,
                applied_by: row.try_get("applied_by")?,
                success: row.try_get("success")?,
                transactional: row.try_get("transactional")?,
                gate: row.try_get("gate")?,
                backup_id: row.try_get("backup_id")?,
                restore_point: row.try_get("restore_point")?,
                timeline: row.try_get("timeline")?,
                lsn_before: row.try_get("lsn_before")?,
                time_before: row.try_get("time_before")?,
                lsn_after: row.try_get("lsn_after")?,
                time_after: row.try_get("time_after")?,
                statements_done: row.try_get("statements_done")?,
                statements_total: row.try_get("statements_total")?,
                failed_statement: row.try_get("failed_statement")?,
                error: row.try_get("error")?,
                adopted_from: row.try_get("adopted_from")?,
                original_checksum: row.try_get("original_checksum")?,
                allowed: row.try_get("allowed")?,
            })
        })
        .collect()
}

/// Writes `row`, replacing the row of the same version (a failed attempt's, or a repeatable's
/// previous application). Runs on whatever transaction `conn` is in.
pub async fn upsert(conn: &mut PgConnection, table: &TableName, row: &Row) -> Result<(), sqlx::Error> {
    let placeholders: Vec<String> = (1..=24).map(|n| format!("${n}")).collect();
    let updates: Vec<String> =
        COLUMNS.split(", ").skip(1).map(|column| format!("{column} = excluded.{column}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES ({values}) ON CONFLICT (version) DO UPDATE SET {updates}",
        table = table.quoted(),
        values = placeholders
            .iter()
            .enumerate()
            .map(|(index, placeholder)| match index {
                13 | 15 => format!("{placeholder}::pg_lsn"),
                23 => format!("{placeholder}::jsonb"),
                _ => placeholder.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        updates = updates.join(", "),
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&row.version)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(&row.checksum)
        .bind(row.applied_at)
        .bind(row.duration_ms)
        .bind(&row.applied_by)
        .bind(row.success)
        .bind(row.transactional)
        .bind(&row.gate)
        .bind(&row.backup_id)
        .bind(&row.restore_point)
        .bind(row.timeline)
        .bind(&row.lsn_before)
        .bind(row.time_before)
        .bind(&row.lsn_after)
        .bind(row.time_after)
        .bind(row.statements_done)
        .bind(row.statements_total)
        .bind(&row.failed_statement)
        .bind(&row.error)
        .bind(&row.adopted_from)
        .bind(&row.original_checksum)
        .bind(&row.allowed)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes the row of `version` (a reverted migration, or a failed one `repair` clears).
pub async fn remove(conn: &mut PgConnection, table: &TableName, version: &str) -> Result<bool, sqlx::Error> {
    let sql = format!("DELETE FROM {} WHERE version = $1", table.quoted());
    let done = sqlx::query(AssertSqlSafe(sql)).bind(version).execute(&mut *conn).await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the checksum of `version` (`repair`, after an applied file was edited on purpose).
pub async fn set_checksum(
    conn: &mut PgConnection,
    table: &TableName,
    version: &str,
    checksum: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!("UPDATE {} SET checksum = $2 WHERE version = $1", table.quoted());
    sqlx::query(AssertSqlSafe(sql)).bind(version).bind(checksum).execute(&mut *conn).await?;
    Ok(())
}

/// `user@host` of this process, for `applied_by`.
pub fn applied_by() -> String {
    let user = crate::ops::audit::os_user();
    format!("{user}@{}", crate::catalog::lease::hostname())
}
