//! The seed history table (`[migrate] seed_history_table`, default `lifeboat.seeds`): one row per
//! loaded seed file, written in the transaction that loads it, with the file's checksum (so a
//! second `seed run` skips it and an edited file is noticed), the tables it filled, the rows it
//! loaded, and the number of the run that loaded it (`seed rollback` undoes the newest run).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row as _};

use crate::config::TableName;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub file: String,
    pub checksum: String,
    pub tables: Vec<String>,
    pub rows: i64,
    pub run: i32,
    pub applied_at: DateTime<Utc>,
    pub applied_by: String,
}

pub async fn ensure(conn: &mut PgConnection, table: &TableName) -> Result<(), sqlx::Error> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS {table} (
             file text PRIMARY KEY,
             checksum text NOT NULL,
             tables text[] NOT NULL,
             rows bigint NOT NULL,
             run integer NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             applied_by text NOT NULL
         );
         COMMENT ON TABLE {table} IS 'lifeboat seed history: one row per loaded seed file (see lifeboat seed status)';",
        schema = table.schema,
        table = table.quoted(),
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    Ok(())
}

/// Every row, oldest first; none when the table does not exist yet.
pub async fn read(conn: &mut PgConnection, table: &TableName) -> Result<Vec<Row>, sqlx::Error> {
    if !crate::migrate::history::exists(conn, table).await? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT file, checksum, tables, rows, run, applied_at, applied_by FROM {} ORDER BY run, applied_at, file",
        table.quoted()
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok(Row {
                file: row.try_get("file")?,
                checksum: row.try_get("checksum")?,
                tables: row.try_get("tables")?,
                rows: row.try_get("rows")?,
                run: row.try_get("run")?,
                applied_at: row.try_get("applied_at")?,
                applied_by: row.try_get("applied_by")?,
            })
        })
        .collect()
}

/// Writes `row`, replacing the row of the same file (a reapplied seed).
pub async fn upsert(conn: &mut PgConnection, table: &TableName, row: &Row) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {} (file, checksum, tables, rows, run, applied_at, applied_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (file) DO UPDATE SET checksum = excluded.checksum, tables = excluded.tables, rows = excluded.rows,
         run = excluded.run, applied_at = excluded.applied_at, applied_by = excluded.applied_by",
        table.quoted()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&row.file)
        .bind(&row.checksum)
        .bind(&row.tables)
        .bind(row.rows)
        .bind(row.run)
        .bind(row.applied_at)
        .bind(&row.applied_by)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn remove(conn: &mut PgConnection, table: &TableName, file: &str) -> Result<(), sqlx::Error> {
    let sql = format!("DELETE FROM {} WHERE file = $1", table.quoted());
    sqlx::query(AssertSqlSafe(sql)).bind(file).execute(&mut *conn).await?;
    Ok(())
}

pub async fn remove_all(conn: &mut PgConnection, table: &TableName) -> Result<(), sqlx::Error> {
    if crate::migrate::history::exists(conn, table).await? {
        let sql = format!("DELETE FROM {}", table.quoted());
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(())
}
