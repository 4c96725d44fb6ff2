//! The snapshot a database is dumped in, and the exact row counts taken in the same snapshot.
//!
//! A [`SnapshotSession`] opens a `REPEATABLE READ READ ONLY` transaction and exports its snapshot
//! (`pg_export_snapshot()`); `pg_dump --snapshot` then reads exactly what this transaction sees,
//! and the transaction counts every table's rows while the dump runs. So the counts match the
//! dump's contents exactly, whatever is written to the database meanwhile. The transaction must
//! stay open until `pg_dump` has imported the snapshot; it is kept open until `pg_dump` ends.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::config::ConnectionString;
use crate::format::dump_manifest::TableRows;
use crate::postgres::connect::{ConnectError, connect};
use crate::util::quote_identifier;

/// The tables whose rows `pg_dump` writes: ordinary tables (leaf partitions included; the
/// partitioned parents hold no rows of their own), not temporary ones, outside the system schemas,
/// and not members of an extension (pg_dump leaves those to `CREATE EXTENSION`). Unlogged tables
/// count: pg_dump dumps their data.
const TABLES: &str = "\
SELECT n.nspname::text, c.relname::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// An open snapshot transaction on one database.
pub struct SnapshotSession {
    connection: PgConnection,
    snapshot: String,
}

impl SnapshotSession {
    /// Connects and exports a snapshot. The settings mirror what `pg_dump` sets for itself: no
    /// timeout may end the transaction while the dump needs it, and row-level security must not
    /// silently hide rows from the counts (with it off, a table it would filter is an error, as
    /// it is for `pg_dump`).
    pub async fn begin(connection: &ConnectionString) -> Result<SnapshotSession, SnapshotError> {
        let mut connection = connect(connection).await?;
        sqlx::raw_sql(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL statement_timeout = 0; \
             SET LOCAL lock_timeout = 0; \
             SET LOCAL idle_in_transaction_session_timeout = 0; \
             SET LOCAL row_security = off",
        )
        .execute(&mut connection)
        .await
        .map_err(|error| SnapshotError::Query {
            what: "start the snapshot transaction".into(),
            detail: error.to_string(),
        })?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_catalog.pg_export_snapshot()")
            .fetch_one(&mut connection)
            .await
            .map_err(|error| SnapshotError::Query { what: "export a snapshot".into(), detail: error.to_string() })?;
        Ok(SnapshotSession { connection, snapshot })
    }

    /// The exported snapshot's id, for `pg_dump --snapshot`.
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// Counts every dumped table's rows exactly (`count(*)`, one table at a time).
    pub async fn count_rows(&mut self) -> Result<Vec<TableRows>, SnapshotError> {
        let tables: Vec<(String, String)> = sqlx::query_as(TABLES)
            .fetch_all(&mut self.connection)
            .await
            .map_err(|error| SnapshotError::Query { what: "list the tables".into(), detail: error.to_string() })?;
        let mut counts = Vec::with_capacity(tables.len());
        for (schema, table) in tables {
            let sql = format!("SELECT count(*) FROM {}.{}", quote_identifier(&schema), quote_identifier(&table));
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .persistent(false)
                .fetch_one(&mut self.connection)
                .await
                .map_err(|error| SnapshotError::Query {
                    what: format!("count the rows of {}.{}", quote_identifier(&schema), quote_identifier(&table)),
                    detail: error.to_string(),
                })?;
            counts.push(TableRows { schema, table, rows: rows.max(0) as u64 });
        }
        Ok(counts)
    }

    /// Ends the transaction (it changed nothing) and closes the connection.
    pub async fn end(mut self) {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.connection).await;
        let _ = self.connection.close().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Connect(#[from] ConnectError),

    #[error("could not {what}: {detail}")]
    Query { what: String, detail: String },
}
