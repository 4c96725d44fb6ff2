//! `lifeboat migrate diff --to schema.sql NAME`: a new migration pair that takes the schema the
//! migration directory builds to the one a `schema.sql` describes, and back.
//!
//! On a throwaway local server ([`LocalCluster`], removed however the command ends) two
//! databases are built: `desired` from schema.sql, `current` from every migration of the
//! directory in order. Both are read from `pg_catalog` ([`catalog`]) into a [`model::Schema`],
//! and [`generate::changes`] writes the DDL from one to the other, for the up file and the down
//! file. The files are written with lifeboat's naming ([`source::create`]), and then proven on
//! the scratch server: the up file applied to `current` must give `desired`'s schema and the down
//! file must give back the original, both compared as `pg_dump --schema-only` prints them
//! ([`NormalisedSchema`]), column order aside (PostgreSQL cannot move a column; the file says so).
//! A migration that fails its proof is still written, so it can be corrected by hand, and the
//! outcome carries what differs for the command to refuse with. When the model finds nothing to
//! change the two dumps are compared all the same, so a difference in what it does not cover
//! (functions, triggers, comments) is reported rather than called agreement.

pub mod catalog;
pub mod generate;
pub mod model;

use std::path::{Path, PathBuf};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use self::catalog::Excluded;
use self::generate::{Change, Changes, Summary};
use super::export::{ExportError, schema_dump};
use super::schema_dump::{NormalisedSchema, SchemaDifference};
use super::source::{self, Migration, Script, SourceError, Statement};
use crate::config::{ConnectionString, MigrationLayout, TableName};
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::cluster::{LocalCluster, LocalClusterOptions};

/// What `migrate diff` works from.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The desired schema: a plain SQL file of CREATE statements.
    pub schema_file: &'a Path,
    pub dir: &'a Path,
    /// `[migrate] layout` (`None`: detected).
    pub layout: Option<MigrationLayout>,
    /// The new migration's name.
    pub name: &'a str,
    pub bin_dir: Option<&'a Path>,
    /// Where the scratch server's directory is made (`[verify] scratch_dir`).
    pub scratch_dir: &'a Path,
    /// Runs the scratch server when lifeboat runs as root.
    pub os_user: &'a str,
    /// The major version of the environment's server when it could be reached: the scratch server
    /// is of that major (else the newest installed), so the DDL is what that server prints.
    pub server_major: Option<u32>,
    /// Left out of the comparison, with its schema when that is `lifeboat`.
    pub history_table: &'a TableName,
}

/// What `migrate diff` did.
#[derive(Debug)]
pub struct Outcome {
    /// The written migration, read back from its files (`None`: no difference, nothing written).
    pub migration: Option<Migration>,
    pub files: Vec<PathBuf>,
    /// The scratch server's programs ("PostgreSQL 15 in /usr/lib/postgresql/15/bin").
    pub server: String,
    pub summary: Summary,
    /// What PostgreSQL cannot do in place (column order), also written into the up file.
    pub notes: Vec<String>,
    /// The warnings written into the up file (drops, enum recreation, NOT NULL without default).
    pub warnings: Vec<String>,
    /// Why the written migration failed its proof on the scratch server; empty when it passed.
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "the migration directory {} has problems, so the schema it builds is uncertain: {problems}. Fix them \
         (`lifeboat migrate validate` lists them) and run migrate diff again",
        dir.display()
    )]
    Directory { dir: PathBuf, problems: String },
    #[error("cannot read the desired schema {}: {source}", path.display())]
    ReadSchema { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {error}; fix the statement in the desired schema and run migrate diff again", path.display())]
    SchemaStatement { path: PathBuf, line: u32, error: String },
    #[error(
        "{}:{line}: applying the migration on the scratch server failed: {error}; fix the migration (it fails on an \
         empty database) and run migrate diff again",
        path.display()
    )]
    MigrationStatement { path: PathBuf, line: u32, error: String },
    #[error("cannot start the scratch PostgreSQL server for migrate diff: {0}")]
    Scratch(String),
    #[error("on the scratch database {database}: {source}")]
    Database { database: &'static str, source: sqlx::Error },
    #[error(transparent)]
    Dump(#[from] ExportError),
    #[error("migrate diff was interrupted; the scratch server was stopped and removed")]
    Interrupted,
}

/// Builds both databases on a scratch server, writes the migration that takes one to the other
/// and proves it there (see the module documentation). The scratch server is removed however
/// this ends, Ctrl-C included.
pub async fn run(request: &Request<'_>) -> Result<Outcome, DiffError> {
    // The name is checked again when the files are written; refusing it now saves the scratch work.
    let name = request.name;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(SourceError::InvalidName { name: name.to_owned() }.into());
    }
    let directory = source::read(request.dir, request.layout)?;
    if directory.layout != MigrationLayout::Lifeboat {
        return Err(SourceError::ForeignLayout { path: request.dir.to_path_buf(), layout: directory.layout }.into());
    }
    let blocking: Vec<String> =
        directory.problems.iter().filter(|problem| problem.is_blocking()).map(ToString::to_string).collect();
    if !blocking.is_empty() {
        return Err(DiffError::Directory { dir: request.dir.to_path_buf(), problems: blocking.join("; ") });
    }
    let text = std::fs::read_to_string(request.schema_file)
        .map_err(|source| DiffError::ReadSchema { path: request.schema_file.to_path_buf(), source })?;
    let (statements, _) = source::split(&source::normalise(&text));

    let binaries = match request.server_major {
        Some(major) => {
            PgBinaries::locate(request.bin_dir, &Need::server_or_newer(major, "the scratch server of migrate diff"))
        }
        None => PgBinaries::find(request.bin_dir),
    }
    .map_err(|error| DiffError::Scratch(error.to_string()))?;
    let options = LocalClusterOptions::default().parent_dir(request.scratch_dir).os_user(request.os_user);
    let cluster =
        LocalCluster::start_new(&binaries, options).await.map_err(|error| DiffError::Scratch(error.to_string()))?;
    let result = tokio::select! {
        result = on_scratch(request, &directory.migrations, &statements, &cluster) => result,
        _ = tokio::signal::ctrl_c() => Err(DiffError::Interrupted),
    };
    let root = cluster.root_dir().to_path_buf();
    if let Err(error) = cluster.remove().await {
        tracing::warn!(
            "the scratch server in {} could not be removed ({error}); stop it with `pg_ctl stop -D {}/data` and \
             remove the directory",
            root.display(),
            root.display()
        );
    }
    result
}

/// The scratch databases, the two schemas, the written files and their proof.
async fn on_scratch(
    request: &Request<'_>,
    migrations: &[Migration],
    desired_statements: &[Statement],
    cluster: &LocalCluster,
) -> Result<Outcome, DiffError> {
    let mut admin = connect(cluster, "postgres").await?;
    for database in ["current", "desired"] {
        execute(&mut admin, &format!("CREATE DATABASE {database} TEMPLATE template0"))
            .await
            .map_err(|source| DiffError::Database { database, source })?;
    }
    let _ = admin.close().await;

    let mut desired = connect(cluster, "desired").await?;
    for statement in desired_statements {
        if let Err(error) = execute(&mut desired, &statement.text).await {
            return Err(DiffError::SchemaStatement {
                path: request.schema_file.to_path_buf(),
                line: error_line(statement, &error),
                error: super::run::database_message(&error),
            });
        }
    }
    let mut current = connect(cluster, "current").await?;
    for migration in migrations {
        apply(&mut current, &migration.up).await?;
    }

    let excluded = Excluded::history(request.history_table);
    let desired_schema = catalog::read(&mut desired, &excluded)
        .await
        .map_err(|source| DiffError::Database { database: "desired", source })?;
    let current_schema = catalog::read(&mut current, &excluded)
        .await
        .map_err(|source| DiffError::Database { database: "current", source })?;
    let _ = desired.close().await;
    let up = generate::changes(&current_schema, &desired_schema);
    let down = generate::changes(&desired_schema, &current_schema);
    let mut outcome = Outcome {
        migration: None,
        files: Vec::new(),
        server: cluster.binaries().to_string(),
        summary: up.summary.clone(),
        notes: up.notes.clone(),
        warnings: up.statements.iter().filter_map(|change| change.warning.clone()).collect(),
        problems: Vec::new(),
    };
    let schema_name = request.schema_file.display().to_string();
    let major = cluster.binaries().major();
    let url = |database: &str| {
        ConnectionString::parse(&cluster.connection_url())
            .expect("a cluster URL is a connection string")
            .with_database(database)
    };
    let dump = |database: &'static str| {
        let connection = url(database);
        async move {
            let text = schema_dump(&connection, request.bin_dir, major).await?;
            Ok::<_, DiffError>(NormalisedSchema::from_dump(&text))
        }
    };
    let before = dump("current").await?;
    let wanted = dump("desired").await?;
    if up.statements.is_empty() {
        // What the model does not cover can still differ: say so rather than claim agreement.
        if let Some(difference) = compare(&wanted, &before) {
            outcome.problems.push(format!(
                "the migrations and {schema_name} differ only in what migrate diff does not compare (functions, \
                 triggers, comments, grants, ...; see docs/diff.md), so nothing was written; write that migration \
                 by hand (`lifeboat migrate new`). The difference (- only in {schema_name}, + only in the \
                 migrations' schema):\n{difference}"
            ));
        }
        let _ = current.close().await;
        return Ok(outcome);
    }

    let files = source::create(request.dir, request.name, chrono::Utc::now())?;
    for (path, changes, direction) in [(&files[0], &up, "up"), (&files[1], &down, "down")] {
        std::fs::write(path, render(&schema_name, direction, changes))
            .map_err(|source| SourceError::Write { path: path.clone(), source })?;
    }
    let directory = source::read(request.dir, Some(MigrationLayout::Lifeboat))?;
    let migration =
        directory.migrations.into_iter().find(|migration| migration.up.path == files[0]).ok_or_else(|| {
            SourceError::Io {
                path: files[0].clone(),
                source: std::io::Error::other("the written migration is not read back as a migration"),
            }
        })?;

    // The connection keeps the empty search path the catalog read set: the files are proven to
    // need none.
    match apply(&mut current, &migration.up).await {
        Err(error) => outcome.problems.push(format!("the generated up file fails on the scratch server: {error}")),
        Ok(()) => {
            if let Some(difference) = compare(&wanted, &dump("current").await?) {
                outcome.problems.push(format!(
                    "after the up file the schema differs from {schema_name} (- only in {schema_name}, + only after \
                     the migration):\n{difference}"
                ));
            }
            let down_script = migration.down.as_ref().expect("the down file was just written");
            match apply(&mut current, down_script).await {
                Err(error) => {
                    outcome.problems.push(format!("the generated down file fails on the scratch server: {error}"))
                }
                Ok(()) => {
                    if let Some(difference) = compare(&before, &dump("current").await?) {
                        outcome.problems.push(format!(
                            "after the down file the schema differs from the one the migrations build (- only \
                             before, + only after up and down):\n{difference}"
                        ));
                    }
                }
            }
        }
    }
    let _ = current.close().await;
    outcome.files = files;
    outcome.migration = Some(migration);
    Ok(outcome)
}

async fn connect(cluster: &LocalCluster, database: &'static str) -> Result<PgConnection, DiffError> {
    PgConnection::connect_with(&cluster.connect_options().database(database))
        .await
        .map_err(|source| DiffError::Database { database, source })
}

async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *conn).await.map(|_| ())
}

/// Runs a migration file's statements as `migrate up` would: in one transaction unless the file
/// says `-- lifeboat:no-transaction`.
async fn apply(conn: &mut PgConnection, script: &Script) -> Result<(), DiffError> {
    let failed = |statement: &Statement, error: sqlx::Error| DiffError::MigrationStatement {
        path: script.path.clone(),
        line: error_line(statement, &error),
        error: super::run::database_message(&error),
    };
    super::run::check_script(script).map_err(|error| DiffError::MigrationStatement {
        path: script.path.clone(),
        line: 1,
        error: error.to_string(),
    })?;
    if script.transaction {
        let mut transaction =
            conn.begin().await.map_err(|source| DiffError::Database { database: "current", source })?;
        for statement in &script.statements {
            execute(&mut transaction, &statement.text).await.map_err(|error| failed(statement, error))?;
        }
        transaction.commit().await.map_err(|source| DiffError::Database { database: "current", source })?;
    } else {
        for statement in &script.statements {
            execute(conn, &statement.text).await.map_err(|error| failed(statement, error))?;
        }
    }
    Ok(())
}

/// The file line PostgreSQL's error points at: the statement's first line, moved down to the
/// error's position inside the statement when the server gives one.
fn error_line(statement: &Statement, error: &sqlx::Error) -> u32 {
    let position = match error {
        sqlx::Error::Database(database) => {
            database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|postgres| {
                match postgres.position() {
                    Some(sqlx::postgres::PgErrorPosition::Original(position)) => Some(position),
                    _ => None,
                }
            })
        }
        _ => None,
    };
    let before = position
        .map(|position| statement.text.chars().take(position.saturating_sub(1)).filter(|c| *c == '\n').count())
        .unwrap_or(0);
    statement.line + before as u32
}

/// The difference between two dumps, column order inside `CREATE TABLE` aside.
fn compare(expected: &NormalisedSchema, found: &NormalisedSchema) -> Option<SchemaDifference> {
    without_column_order(expected).difference(&without_column_order(found))
}

/// `CREATE TABLE t ( b int, a int );` with its columns sorted, so a table whose new columns
/// PostgreSQL had to append compares equal to the one written with them in the middle.
fn without_column_order(schema: &NormalisedSchema) -> NormalisedSchema {
    let statements = schema
        .statements
        .iter()
        .map(|statement| {
            let (Some(open), Some(close)) = (statement.find('('), statement.rfind(')')) else {
                return statement.clone();
            };
            if !statement.starts_with("CREATE TABLE ") || close < open {
                return statement.clone();
            }
            let mut items = top_level_items(&statement[open + 1..close]);
            items.sort();
            format!("{}( {} ){}", &statement[..open], items.join(", "), &statement[close + 1..])
        })
        .collect();
    NormalisedSchema { statements }
}

/// `a int, b numeric(10,2)` split at the commas outside parentheses and quotes.
fn top_level_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (index, c) in text.char_indices() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                items.push(text[start..index].trim().to_owned());
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(text[start..].trim().to_owned());
    items
}

/// The text of a generated file: a header saying where it came from and that it needs review,
/// the notes, then each statement with its warning above it.
fn render(schema_file: &str, direction: &str, changes: &Changes) -> String {
    let purpose = match direction {
        "up" => format!("takes the schema the earlier migrations build to the one {schema_file} describes"),
        _ => format!("takes the schema {schema_file} describes back to the one the earlier migrations build"),
    };
    let mut text = format!(
        "-- Generated by `lifeboat migrate diff` from {schema_file} ({direction}): {purpose}.\n\
         -- Review it before applying: a renamed table or column appears as a drop and an add, and data is not\n\
         -- migrated; statements marked WARNING lose data or can fail on existing rows.\n"
    );
    for note in &changes.notes {
        text.push_str(&format!("-- Note: {note}.\n"));
    }
    for Change { warning, sql } in &changes.statements {
        text.push('\n');
        if let Some(warning) = warning {
            text.push_str(&format!("-- WARNING: {warning}.\n"));
        }
        text.push_str(sql);
        text.push_str(";\n");
    }
    text
}

#[cfg(test)]
mod tests;
