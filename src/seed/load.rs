//! `seed run`, `status`, `rollback` and `clear` against one database.
//!
//! Each file loads in its own transaction together with its history row, so a failed file leaves
//! neither rows nor a row saying it loaded. A CSV file streams through `COPY ... FROM STDIN WITH
//! (FORMAT csv, HEADER true)` (its header names the columns); a SQL file runs as written.
//!
//! `run` skips a file loaded before with the same checksum, and refuses (before loading anything)
//! when a loaded file has changed since: `--reapply` runs the changed files again as they are now,
//! which suits files written to be re-run (`ON CONFLICT`); otherwise `rollback` or `clear` first.
//! `rollback` undoes the newest run, newest file first: a CSV file's rows are deleted by the
//! primary-key values in the file, a SQL file's by running its `<name>.down.sql`.

use std::io::BufRead as _;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};

use super::history::{self, Row};
use super::{SeedError, SeedFile, SeedKind, resolve_and_order, resolve_table};
use crate::config::TableName;
use crate::util::quote_identifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Applied,
    Pending,
    /// Loaded, and the file has changed since.
    Changed,
    /// Loaded, and the file is gone.
    Missing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Changed => "changed",
            State::Missing => "missing",
        }
    }
}

/// One file's standing against the history.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub file: String,
    pub kind: Option<SeedKind>,
    pub state: State,
    /// The tables it fills, as written (file name, statements or `-- lifeboat:seeds`).
    pub tables: Vec<String>,
    /// The file's checksum now (none for a missing file).
    pub checksum: Option<String>,
    pub applied: Option<Row>,
}

/// The files by name, then the history rows whose files are gone.
pub fn status(files: &[SeedFile], rows: &[Row]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = files
        .iter()
        .map(|file| {
            let applied = rows.iter().find(|row| row.file == file.name).cloned();
            let state = match &applied {
                None => State::Pending,
                Some(row) if row.checksum == file.checksum => State::Applied,
                Some(_) => State::Changed,
            };
            Entry {
                file: file.name.clone(),
                kind: Some(file.kind),
                state,
                tables: file.written_tables.clone(),
                checksum: Some(file.checksum.clone()),
                applied,
            }
        })
        .collect();
    for row in rows.iter().filter(|row| !files.iter().any(|file| file.name == row.file)) {
        entries.push(Entry {
            file: row.file.clone(),
            kind: None,
            state: State::Missing,
            tables: row.tables.clone(),
            checksum: None,
            applied: Some(row.clone()),
        });
    }
    entries
}

/// What a command did with one file.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub file: String,
    /// `loaded`, `reloaded` (changed, with `--reapply`), `skipped` (loaded before, unchanged),
    /// `rolled-back`.
    pub action: &'static str,
    pub tables: Vec<String>,
    /// Rows loaded (or deleted, for a rollback).
    pub rows: i64,
    pub duration_ms: u64,
}

/// Loads the files not loaded yet, in foreign-key order.
pub async fn run(
    conn: &mut PgConnection,
    table: &TableName,
    files: Vec<SeedFile>,
    reapply: bool,
) -> Result<Vec<Done>, SeedError> {
    history::ensure(conn, table)
        .await
        .map_err(SeedError::database(format!("cannot create the seed history {table}")))?;
    let rows = history::read(conn, table).await.map_err(SeedError::database(format!("cannot read {table}")))?;
    let changed: Vec<String> = status(&files, &rows)
        .into_iter()
        .filter(|entry| entry.state == State::Changed)
        .map(|entry| {
            let old = entry.applied.map(|row| short(&row.checksum).to_owned()).unwrap_or_default();
            format!(
                "{} (checksum {old} when loaded, {} now)",
                entry.file,
                short(entry.checksum.as_deref().unwrap_or(""))
            )
        })
        .collect();
    if !changed.is_empty() && !reapply {
        return Err(SeedError::Refused(format!(
            "seeds changed since they were loaded: {}; nothing was loaded. Run them again as they are now with `lifeboat \
             seed run --reapply` (for files written to be re-run, e.g. INSERT ... ON CONFLICT), or undo them first \
             with `lifeboat seed rollback` or `lifeboat seed clear`",
            changed.join(", ")
        )));
    }
    let ordered = resolve_and_order(conn, files).await?;
    let run = rows.iter().map(|row| row.run).max().unwrap_or(0) + 1;
    let mut done = Vec::new();
    for seed in ordered {
        let previous = rows.iter().find(|row| row.file == seed.file.name);
        if previous.is_some_and(|row| row.checksum == seed.file.checksum) {
            done.push(Done {
                file: seed.file.name.clone(),
                action: "skipped",
                tables: seed.tables.clone(),
                rows: 0,
                duration_ms: 0,
            });
            continue;
        }
        let started = Instant::now();
        let mut tx = conn.begin().await.map_err(SeedError::database("cannot begin a transaction"))?;
        let loaded = match seed.file.kind {
            SeedKind::Csv => load_csv(&mut tx, &seed.tables[0], &seed.file).await?,
            SeedKind::Sql => run_sql(&mut tx, &seed.file.path, &seed.file.name).await?,
        };
        let row = Row {
            file: seed.file.name.clone(),
            checksum: seed.file.checksum.clone(),
            tables: seed.tables.clone(),
            rows: loaded,
            run,
            applied_at: chrono::Utc::now(),
            applied_by: crate::migrate::history::applied_by(),
        };
        history::upsert(&mut tx, table, &row).await.map_err(SeedError::database(format!("cannot write to {table}")))?;
        tx.commit().await.map_err(SeedError::database(format!("cannot commit seed {}", seed.file.name)))?;
        done.push(Done {
            file: seed.file.name,
            action: if previous.is_some() { "reloaded" } else { "loaded" },
            tables: seed.tables,
            rows: loaded,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(done)
}

/// Takes the seed lock of this database (a session advisory lock keyed by the history table's name,
/// released when the connection closes), so two `seed` commands at once do not both load a file.
async fn lock(conn: &mut PgConnection, table: &TableName) -> Result<(), SeedError> {
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("lifeboat seeds {table}"))
        .execute(&mut *conn)
        .await
        .map_err(SeedError::database(format!("cannot take the seed lock of {table}")))?;
    Ok(())
}

fn short(checksum: &str) -> &str {
    &checksum[..checksum.len().min(12)]
}

/// The column names of a CSV file's header (its first line).
fn csv_header(file: &SeedFile) -> Result<Vec<String>, SeedError> {
    let error = |source| SeedError::File { path: file.path.clone(), source };
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::open(&file.path).map_err(error)?).read_line(&mut line).map_err(error)?;
    let line = line.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']);
    let mut names = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => names.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    names.push(current);
    if names.iter().any(|name| name.trim().is_empty()) {
        return Err(SeedError::Invalid {
            file: file.name.clone(),
            message: "its first line must be a header naming the columns, e.g. id,name,email".to_owned(),
        });
    }
    Ok(names.into_iter().map(|name| name.trim().to_owned()).collect())
}

/// Streams `file` into `table` through `COPY ... FROM STDIN`; the rows loaded.
async fn copy_into(
    conn: &mut PgConnection,
    table: &str,
    columns: &[String],
    file: &SeedFile,
) -> Result<u64, SeedError> {
    let list: Vec<String> = columns.iter().map(|column| quote_identifier(column)).collect();
    let statement = format!("COPY {table} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)", list.join(", "));
    let source = tokio::fs::File::open(&file.path)
        .await
        .map_err(|source| SeedError::File { path: file.path.clone(), source })?;
    let what = format!("cannot load seed {} into {table}", file.name);
    let mut copy = conn.copy_in_raw(&statement).await.map_err(SeedError::database(what.clone()))?;
    if let Err(error) = copy.read_from(source).await {
        // The server drops what it received; the transaction is rolled back by the caller.
        let _ = copy.abort("lifeboat could not read the seed file").await;
        return Err(SeedError::Database { what, source: error });
    }
    copy.finish().await.map_err(SeedError::database(what))
}

async fn load_csv(conn: &mut PgConnection, table: &str, file: &SeedFile) -> Result<i64, SeedError> {
    let columns = csv_header(file)?;
    Ok(copy_into(conn, table, &columns, file).await? as i64)
}

async fn run_sql(conn: &mut PgConnection, path: &Path, name: &str) -> Result<i64, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::File { path: path.to_owned(), source })?;
    let text = text.trim_start_matches('\u{feff}').to_owned();
    let done = sqlx::raw_sql(AssertSqlSafe(text))
        .execute(&mut *conn)
        .await
        .map_err(SeedError::database(format!("seed {name} failed (nothing of it was loaded)")))?;
    Ok(done.rows_affected() as i64)
}

/// Undoes the newest run, newest file first; refuses before changing anything when a file of that
/// run cannot be undone.
pub async fn rollback(conn: &mut PgConnection, table: &TableName, files: &[SeedFile]) -> Result<Vec<Done>, SeedError> {
    lock(conn, table).await?;
    let rows = history::read(conn, table).await.map_err(SeedError::database(format!("cannot read {table}")))?;
    let Some(last) = rows.iter().map(|row| row.run).max() else {
        return Ok(Vec::new());
    };
    let mut undo: Vec<&Row> = rows.iter().filter(|row| row.run == last).collect();
    undo.sort_by(|a, b| (b.applied_at, &b.file).cmp(&(a.applied_at, &a.file)));
    let mut plans = Vec::new();
    for row in undo {
        let Some(file) = files.iter().find(|file| file.name == row.file) else {
            return Err(SeedError::Refused(format!(
                "seed {} of the last run is gone from the seed directory, so what it loaded cannot be found; restore \
                 the file (git), or empty the seeded tables with `lifeboat seed clear`; nothing was rolled back",
                row.file
            )));
        };
        if file.checksum != row.checksum {
            return Err(SeedError::Refused(format!(
                "seed {} changed since it was loaded, so its rows may not be the ones loaded; restore the loaded \
                 version (git), or use `lifeboat seed clear`; nothing was rolled back",
                row.file
            )));
        }
        let plan = match file.kind {
            SeedKind::Sql => match &file.down {
                Some(down) => Undo::Down(down.clone()),
                None => {
                    return Err(SeedError::Refused(format!(
                        "seed {} has no {}.down.sql to undo it; write one (deleting what it inserted), or use \
                         `lifeboat seed clear`; nothing was rolled back",
                        file.name,
                        file.name.trim_end_matches(".sql")
                    )));
                }
            },
            SeedKind::Csv => {
                let table = row.tables.first().cloned().unwrap_or_default();
                let key = primary_key(conn, &table, &file.name).await?;
                let columns = csv_header(file)?;
                if key.is_empty() || !key.iter().all(|column| columns.contains(column)) {
                    return Err(SeedError::Refused(format!(
                        "seed {} cannot be rolled back: {table} has {}, and its rows are deleted by the primary-key \
                         values in the file; use `lifeboat seed clear`; nothing was rolled back",
                        file.name,
                        if key.is_empty() {
                            "no primary key".to_owned()
                        } else {
                            format!("primary key ({}) not all in the file's header", key.join(", "))
                        }
                    )));
                }
                Undo::Delete { table, columns, key }
            }
        };
        plans.push((row, file, plan));
    }
    let mut done = Vec::new();
    for (row, file, plan) in plans {
        let started = Instant::now();
        let mut tx = conn.begin().await.map_err(SeedError::database("cannot begin a transaction"))?;
        let removed = match &plan {
            Undo::Down(down) => run_sql(&mut tx, down, &format!("{} (down)", file.name)).await?,
            Undo::Delete { table, columns, key } => delete_rows(&mut tx, table, columns, key, file).await?,
        };
        history::remove(&mut tx, table, &row.file)
            .await
            .map_err(SeedError::database(format!("cannot write {table}")))?;
        tx.commit().await.map_err(SeedError::database(format!("cannot commit the rollback of {}", row.file)))?;
        done.push(Done {
            file: row.file.clone(),
            action: "rolled-back",
            tables: row.tables.clone(),
            rows: removed,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(done)
}

enum Undo {
    Down(std::path::PathBuf),
    Delete { table: String, columns: Vec<String>, key: Vec<String> },
}

async fn primary_key(conn: &mut PgConnection, table: &str, file: &str) -> Result<Vec<String>, SeedError> {
    sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
          WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(SeedError::database(format!("cannot read the primary key of {table} (seed {file})")))
}

/// Deletes the rows of `table` whose primary key is in the file: the file is copied into a
/// temporary table shaped like `table`, then one `DELETE ... USING` joins on the key.
async fn delete_rows(
    conn: &mut PgConnection,
    table: &str,
    columns: &[String],
    key: &[String],
    file: &SeedFile,
) -> Result<i64, SeedError> {
    let list: Vec<String> = columns.iter().map(|column| quote_identifier(column)).collect();
    let what = format!("cannot delete the rows of seed {} from {table}", file.name);
    let create = format!(
        "CREATE TEMPORARY TABLE lifeboat_seed_keys ON COMMIT DROP AS SELECT {} FROM {table} WITH NO DATA",
        list.join(", ")
    );
    sqlx::raw_sql(AssertSqlSafe(create)).execute(&mut *conn).await.map_err(SeedError::database(what.clone()))?;
    copy_into(conn, "lifeboat_seed_keys", columns, file).await?;
    let matches: Vec<String> = key.iter().map(|column| format!("t.{0} = k.{0}", quote_identifier(column))).collect();
    let delete = format!("DELETE FROM {table} t USING lifeboat_seed_keys k WHERE {}", matches.join(" AND "));
    let done = sqlx::raw_sql(AssertSqlSafe(delete)).execute(&mut *conn).await.map_err(SeedError::database(what))?;
    Ok(done.rows_affected() as i64)
}

/// Empties every table the seeds fill (those in the history and those the files name) with one
/// `TRUNCATE`, and clears the history; one transaction. The tables emptied.
pub async fn clear(conn: &mut PgConnection, table: &TableName, files: &[SeedFile]) -> Result<Vec<String>, SeedError> {
    lock(conn, table).await?;
    let rows = history::read(conn, table).await.map_err(SeedError::database(format!("cannot read {table}")))?;
    let mut tables: Vec<String> = Vec::new();
    for row in &rows {
        for name in &row.tables {
            if let Some(resolved) = resolve_table(conn, name, &row.file).await?
                && !tables.contains(&resolved)
            {
                tables.push(resolved);
            }
        }
    }
    for file in files {
        for written in &file.written_tables {
            if let Some(resolved) = resolve_table(conn, written, &file.name).await?
                && !tables.contains(&resolved)
            {
                tables.push(resolved);
            }
        }
    }
    let mut tx = conn.begin().await.map_err(SeedError::database("cannot begin a transaction"))?;
    if !tables.is_empty() {
        // One statement: PostgreSQL checks foreign keys between the tables it truncates together,
        // so their order does not matter.
        let sql = format!("TRUNCATE {}", tables.join(", "));
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(SeedError::database(format!(
            "cannot empty {} (a table outside the seeds that references them stops TRUNCATE: empty it too)",
            tables.join(", ")
        )))?;
    }
    history::remove_all(&mut tx, table).await.map_err(SeedError::database(format!("cannot clear {table}")))?;
    tx.commit().await.map_err(SeedError::database("cannot commit seed clear"))?;
    Ok(tables)
}
