//! Adopting another tool's history: reading the history table that sqlx, Prisma, Drizzle,
//! golang-migrate, dbmate or Flyway keeps in the target database, exactly as that tool writes it,
//! and mapping its rows to the migrations of the directory, so lifeboat continues from where the
//! tool stands without re-running anything.
//!
//! What each table says is kept, not papered over: a failed or dirty migration is
//! [`ForeignState::Failed`] with the tool's own words; a row without a file, and a file whose text
//! differs from the checksum the tool recorded (where the tool keeps one lifeboat can compare:
//! sqlx's SHA-384, Prisma's and Drizzle's SHA-256, Flyway's CRC32), become `notes` for the runner
//! to print. Line endings and a BOM do not count as a difference, as for lifeboat's own checksum.
//! A migration of the directory without an entry is pending.
//!
//! The tables: sqlx `_sqlx_migrations`, Prisma `_prisma_migrations`, Drizzle
//! `drizzle.__drizzle_migrations` (rows matched to `meta/_journal.json` by `when`),
//! golang-migrate and dbmate `schema_migrations` (told apart by golang-migrate's `dirty` column),
//! Flyway `flyway_schema_history`; unqualified names are found on the connection's search path,
//! as the tools find them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256, Sha384};
use sqlx::{AssertSqlSafe, PgConnection};

use super::source::{Directory, Migration, SourceError, Version, drizzle, prisma};
use crate::config::MigrationLayout;

#[derive(Debug, Clone)]
pub struct ForeignHistory {
    pub tool: MigrationLayout,
    /// The table as found, schema-qualified (`public._sqlx_migrations`).
    pub table: String,
    /// One per migration of the directory the tool applied, failed or rolled back; sorted by version.
    pub entries: Vec<ForeignEntry>,
    /// Rows without a file, checksums that differ from the file, and other things to tell the operator.
    pub notes: Vec<String>,
    /// Flyway's repeatable scripts whose last successful run was of the file as it is now: lifeboat
    /// records them so `up` does not run them again. (A changed one stays due, as under Flyway.)
    pub repeatables: Vec<AdoptedRepeatable>,
}

/// A repeatable migration another tool ran, unchanged since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedRepeatable {
    /// The name as the directory's `R__<name>.sql` gives it.
    pub name: String,
    pub applied_at: Option<DateTime<Utc>>,
    pub original_checksum: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignEntry {
    pub version: Version,
    /// The migration's name in the directory.
    pub name: String,
    /// When the tool applied it, where the tool records that (not golang-migrate, dbmate, Drizzle).
    pub applied_at: Option<DateTime<Utc>>,
    /// The checksum as the tool recorded it (sqlx: hex SHA-384; Prisma, Drizzle: hex SHA-256;
    /// Flyway: the signed CRC32 in decimal).
    pub original_checksum: Option<String>,
    pub state: ForeignState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignState {
    Applied,
    /// Started and not finished: sqlx `success = false`, Prisma `finished_at` and `rolled_back_at`
    /// NULL, golang-migrate `dirty = true`, Flyway `success = false`.
    Failed {
        detail: String,
    },
    /// Prisma `rolled_back_at` set (and not applied again), Flyway undone.
    RolledBack,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "no {table} table in database {database}: {tool} has not run here; use `lifeboat migrate baseline VERSION` \
         if the schema is already in place, or plain `lifeboat migrate up`"
    )]
    NoTable { tool: MigrationLayout, table: String, database: String },
    #[error("{table} in database {database} {why}")]
    Shape { table: String, database: String, why: String },
    #[error("reading {table} in database {database}: {source}; check that the role may read it")]
    Query {
        table: String,
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the migration directory {} is laid out for {found}, not {tool}: adopt with `--from {found}`, or point \
         [migrate] dir at the {tool} directory",
        path.display()
    )]
    Layout { path: PathBuf, found: MigrationLayout, tool: MigrationLayout },
    #[error("lifeboat's own history needs no adoption: `lifeboat migrate status` reads it")]
    Own,
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Reads `tool`'s history table and maps it onto `directory`.
pub async fn read_history(
    conn: &mut PgConnection,
    tool: MigrationLayout,
    directory: &Directory,
) -> Result<ForeignHistory, AdoptError> {
    let name = table_name(tool).ok_or(AdoptError::Own)?;
    // lifeboat, sqlx and golang-migrate name files alike, and detection reads such a directory as
    // lifeboat's.
    let shares_naming = directory.layout == MigrationLayout::Lifeboat
        && matches!(tool, MigrationLayout::Sqlx | MigrationLayout::GolangMigrate);
    if directory.layout != tool && !shares_naming {
        return Err(AdoptError::Layout { path: directory.path.clone(), found: directory.layout, tool });
    }
    let database: String =
        sqlx::query_scalar("SELECT current_database()").fetch_one(&mut *conn).await.map_err(|source| {
            AdoptError::Query { table: "current_database()".to_owned(), database: "?".to_owned(), source }
        })?;
    let mut table = Table { tool, name, qualified: String::new(), database };
    table.qualified = table.locate(conn).await?;
    let mut history = History::default();
    match tool {
        MigrationLayout::Sqlx => read_sqlx(conn, &table, directory, &mut history).await?,
        MigrationLayout::Prisma => read_prisma(conn, &table, directory, &mut history).await?,
        MigrationLayout::Drizzle => read_drizzle(conn, &table, directory, &mut history).await?,
        MigrationLayout::GolangMigrate => read_golang(conn, &table, directory, &mut history).await?,
        MigrationLayout::Dbmate => read_dbmate(conn, &table, directory, &mut history).await?,
        MigrationLayout::Flyway => read_flyway(conn, &table, directory, &mut history).await?,
        MigrationLayout::Lifeboat => return Err(AdoptError::Own),
    }
    Ok(ForeignHistory {
        tool,
        table: table.qualified,
        entries: history.entries.into_values().collect(),
        notes: history.notes,
        repeatables: history.repeatables.into_values().flatten().collect(),
    })
}

/// Which of the tools' history tables exist in the connected database (for `adopt` without
/// `--from`); golang-migrate and dbmate are told apart by the `dirty` column.
pub async fn find_tools(conn: &mut PgConnection) -> Result<Vec<MigrationLayout>, AdoptError> {
    let mut found = Vec::new();
    for tool in [
        MigrationLayout::Sqlx,
        MigrationLayout::Prisma,
        MigrationLayout::Drizzle,
        MigrationLayout::GolangMigrate,
        MigrationLayout::Flyway,
    ] {
        let Some(name) = table_name(tool) else { continue };
        let table = Table { tool, name, qualified: name.to_owned(), database: String::new() };
        if table.find(conn).await?.is_some() {
            if tool == MigrationLayout::GolangMigrate && !table.columns(conn).await?.iter().any(|c| c == "dirty") {
                found.push(MigrationLayout::Dbmate);
            } else {
                found.push(tool);
            }
        }
    }
    Ok(found)
}

/// The history table `tool` writes, as it names it (found on the search path when unqualified).
fn table_name(tool: MigrationLayout) -> Option<&'static str> {
    match tool {
        MigrationLayout::Sqlx => Some("_sqlx_migrations"),
        MigrationLayout::Prisma => Some("_prisma_migrations"),
        MigrationLayout::Drizzle => Some("drizzle.__drizzle_migrations"),
        MigrationLayout::GolangMigrate | MigrationLayout::Dbmate => Some("schema_migrations"),
        MigrationLayout::Flyway => Some("flyway_schema_history"),
        MigrationLayout::Lifeboat => None,
    }
}

struct Table {
    tool: MigrationLayout,
    name: &'static str,
    qualified: String,
    database: String,
}

impl Table {
    fn error(&self, source: sqlx::Error) -> AdoptError {
        AdoptError::Query { table: self.qualified.clone(), database: self.database.clone(), source }
    }

    fn shape(&self, why: String) -> AdoptError {
        AdoptError::Shape { table: self.qualified.clone(), database: self.database.clone(), why }
    }

    async fn find(&self, conn: &mut PgConnection) -> Result<Option<String>, AdoptError> {
        sqlx::query_scalar(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        )
        .bind(self.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|source| self.error(source))
    }

    async fn locate(&self, conn: &mut PgConnection) -> Result<String, AdoptError> {
        self.find(conn).await?.ok_or_else(|| AdoptError::NoTable {
            tool: self.tool,
            table: self.name.to_owned(),
            database: self.database.clone(),
        })
    }

    async fn columns(&self, conn: &mut PgConnection) -> Result<Vec<String>, AdoptError> {
        sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        )
        .bind(&self.qualified)
        .fetch_all(&mut *conn)
        .await
        .map_err(|source| self.error(source))
    }

    async fn rows<T>(&self, conn: &mut PgConnection, select: &str) -> Result<Vec<T>, AdoptError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = select.replace("{table}", &self.qualified);
        sqlx::query_as::<_, T>(AssertSqlSafe(sql)).fetch_all(&mut *conn).await.map_err(|source| self.error(source))
    }
}

#[derive(Default)]
struct History {
    entries: BTreeMap<Version, ForeignEntry>,
    notes: Vec<String>,
    /// By name: a later run of the same repeatable replaces an earlier one.
    repeatables: BTreeMap<String, Option<AdoptedRepeatable>>,
}

impl History {
    fn record(
        &mut self,
        migration: &Migration,
        applied_at: Option<DateTime<Utc>>,
        checksum: Option<String>,
        state: ForeignState,
    ) {
        self.entries.insert(
            migration.version.clone(),
            ForeignEntry {
                version: migration.version.clone(),
                name: migration.name.clone(),
                applied_at,
                original_checksum: checksum,
                state,
            },
        );
    }

    fn no_file(&mut self, table: &Table, what: String) {
        self.notes.push(format!(
            "{} records {what}, but the directory has no such migration: lifeboat does not record it as applied",
            table.qualified
        ));
    }

    fn changed(&mut self, table: &Table, migration: &Migration, recorded: &str, now: &str) {
        self.notes.push(format!(
            "{}: migration {} ({}) was applied by {} with checksum {recorded}, but the file's is now {now}: the file \
             was edited after it ran",
            table.qualified,
            migration.version,
            migration.up.path.display(),
            table.tool
        ));
    }
}

/// Times come back from the queries as microseconds since the epoch: the driver is built without
/// date-time types.
fn time(micros: Option<i64>) -> Option<DateTime<Utc>> {
    micros.and_then(DateTime::from_timestamp_micros)
}

/// The file's bytes as they may have been when the tool read them: as they are, and with LF or
/// CRLF line endings and no BOM.
fn variants(path: &Path) -> Result<Vec<Vec<u8>>, AdoptError> {
    let raw = std::fs::read(path).map_err(|source| SourceError::Io { path: path.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&raw);
    let lf = super::source::normalise(&text);
    let crlf = lf.replace('\n', "\r\n");
    Ok(vec![raw, lf.into_bytes(), crlf.into_bytes()])
}

async fn read_sqlx(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    type Row = (i64, String, Option<i64>, bool, Vec<u8>);
    let rows: Vec<Row> = table
        .rows(
            conn,
            "SELECT version, description, (extract(epoch FROM installed_on) * 1000000)::int8, success, checksum \
             FROM {table} ORDER BY version",
        )
        .await?;
    for (version, description, installed_on, success, checksum) in rows {
        let version = Version::parse(&version.to_string()).expect("an integer is a version");
        let Some(migration) = directory.migration(&version) else {
            history.no_file(table, format!("version {version} ({description})"));
            continue;
        };
        let recorded = hex::encode(&checksum);
        let current: Vec<String> =
            variants(&migration.up.path)?.iter().map(|bytes| hex::encode(Sha384::digest(bytes))).collect();
        if !current.contains(&recorded) {
            history.changed(table, migration, &recorded, &current[0]);
        }
        let state = if success {
            ForeignState::Applied
        } else {
            ForeignState::Failed {
                detail: format!(
                    "sqlx recorded version {version} ({description}) with success = false: it failed part-way and \
                     the database may hold some of its changes"
                ),
            }
        };
        history.record(migration, time(installed_on), Some(recorded), state);
    }
    Ok(())
}

async fn read_prisma(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    type Row = (String, String, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Row> = table
        .rows(
            conn,
            "SELECT migration_name, checksum, (extract(epoch FROM finished_at) * 1000000)::int8, \
             (extract(epoch FROM rolled_back_at) * 1000000)::int8, logs \
             FROM {table} ORDER BY started_at, finished_at NULLS LAST",
        )
        .await?;
    // A migration may have several rows (an attempt rolled back, then applied): the last attempt
    // that was not rolled back decides; with none, the migration was rolled back.
    let mut by_name: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for row in rows {
        by_name.entry(row.0.clone()).or_default().push(row);
    }
    for (name, attempts) in by_name {
        let Some(migration) =
            directory.migrations.iter().find(|m| prisma::directory_name(&m.up).as_deref() == Some(name.as_str()))
        else {
            history.no_file(table, format!("migration {name:?}"));
            continue;
        };
        let decisive = attempts.iter().rev().find(|(_, _, _, rolled_back, _)| rolled_back.is_none());
        let Some((_, checksum, finished, _, logs)) = decisive else {
            let checksum = attempts.last().map(|row| row.1.clone());
            history.record(migration, None, checksum, ForeignState::RolledBack);
            continue;
        };
        let current: Vec<[u8; 32]> = variants(&migration.up.path)?.iter().map(|b| Sha256::digest(b).into()).collect();
        let matches = current.iter().any(|digest| {
            // Prisma has written its hex both zero-padded and, in older releases, without padding.
            let padded = hex::encode(digest);
            let unpadded: String = digest.iter().map(|byte| format!("{byte:x}")).collect();
            checksum.eq_ignore_ascii_case(&padded) || *checksum == unpadded
        });
        if !matches {
            history.changed(table, migration, checksum, &hex::encode(current[0]));
        }
        let state = match finished {
            Some(_) => ForeignState::Applied,
            None => ForeignState::Failed {
                detail: format!(
                    "Prisma started migration {name:?} and never finished it (finished_at and rolled_back_at are \
                     NULL){}",
                    logs.as_deref()
                        .map(crate::util::first_line)
                        .filter(|l| !l.is_empty())
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                ),
            },
        };
        history.record(migration, time(*finished), Some(checksum.clone()), state);
    }
    Ok(())
}

async fn read_drizzle(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    let journal = drizzle::read_journal(&directory.path)?;
    let rows: Vec<(i32, String, Option<i64>)> =
        table.rows(conn, "SELECT id, hash, created_at FROM {table} ORDER BY created_at, id").await?;
    let newest = rows.iter().filter_map(|row| row.2).max();
    let mut matched = vec![false; rows.len()];
    for entry in &journal.entries {
        let path = directory.path.join(format!("{}.sql", entry.tag));
        let Some(migration) = directory.migrations.iter().find(|m| m.up.path == path) else { continue };
        let Some(index) = rows.iter().position(|row| row.2 == Some(entry.when)) else {
            if newest.is_some_and(|newest| entry.when <= newest) {
                history.notes.push(format!(
                    "{}: journal entry {} ({}) has no row, but its `when` ({}) is older than the newest applied \
                     migration's: Drizzle would never run it; lifeboat counts it as pending",
                    table.qualified, entry.idx, entry.tag, entry.when
                ));
            }
            continue;
        };
        matched[index] = true;
        let hash = &rows[index].1;
        let current: Vec<String> =
            variants(&migration.up.path)?.iter().map(|bytes| hex::encode(Sha256::digest(bytes))).collect();
        if !current.iter().any(|digest| digest.eq_ignore_ascii_case(hash)) {
            history.changed(table, migration, hash, &current[0]);
        }
        history.record(migration, None, Some(hash.clone()), ForeignState::Applied);
    }
    for ((id, _, created_at), matched) in rows.iter().zip(matched) {
        if !matched {
            let when = created_at.map_or("NULL".to_owned(), |when| when.to_string());
            history.no_file(table, format!("row {id} (created_at {when}, matching no `when` in the journal)"));
        }
    }
    Ok(())
}

async fn read_golang(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    if !table.columns(conn).await?.iter().any(|column| column == "dirty") {
        return Err(table.shape(
            "has no dirty column, so golang-migrate did not write it (dbmate writes this shape): adopt with \
             `--from dbmate`"
                .to_owned(),
        ));
    }
    let rows: Vec<(i64, bool)> = table.rows(conn, "SELECT version, dirty FROM {table} ORDER BY version").await?;
    let Some(&(current, dirty)) = rows.last() else { return Ok(()) };
    if rows.len() > 1 {
        history.notes.push(format!(
            "{} holds {} rows where golang-migrate keeps one; the highest version, {current}, is taken as current",
            table.qualified,
            rows.len()
        ));
    }
    let current_version = Version::parse(&current.to_string()).expect("an integer is a version");
    if directory.migration(&current_version).is_none() {
        history.no_file(table, format!("version {current}{}", if dirty { " (dirty)" } else { "" }));
    }
    for migration in &directory.migrations {
        if migration.version > current_version {
            break;
        }
        let state = if dirty && migration.version == current_version {
            ForeignState::Failed {
                detail: format!(
                    "golang-migrate marked version {current} dirty: it failed part-way (or is still running) and the \
                     database may hold some of its changes"
                ),
            }
        } else {
            ForeignState::Applied
        };
        history.record(migration, None, None, state);
    }
    Ok(())
}

async fn read_dbmate(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    if table.columns(conn).await?.iter().any(|column| column == "dirty") {
        return Err(table.shape(
            "has a dirty column, which golang-migrate writes and dbmate does not: adopt with `--from golang-migrate`"
                .to_owned(),
        ));
    }
    let rows: Vec<(String,)> = table.rows(conn, "SELECT version::text FROM {table} ORDER BY version").await?;
    for (text,) in rows {
        let migration = Version::parse(&text).ok().and_then(|version| directory.migration(&version));
        match migration {
            Some(migration) => history.record(migration, None, None, ForeignState::Applied),
            None => history.no_file(table, format!("version {text:?}")),
        }
    }
    Ok(())
}

/// Flyway's checksum: CRC32 over the UTF-8 bytes of each line without its line ending (and the
/// first line without a BOM), fed line after line, as a signed 32-bit integer.
pub fn flyway_checksum(text: &str) -> i32 {
    let normalised = super::source::normalise(text);
    let mut crc = !0u32;
    for byte in normalised.bytes().filter(|byte| *byte != b'\n') {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc as i32
}

async fn read_flyway(
    conn: &mut PgConnection,
    table: &Table,
    directory: &Directory,
    history: &mut History,
) -> Result<(), AdoptError> {
    type Row = (i32, Option<String>, Option<String>, String, String, Option<i32>, Option<i64>, bool);
    let rows: Vec<Row> = table
        .rows(
            conn,
            "SELECT installed_rank, version, description, type, script, checksum, \
             (extract(epoch FROM installed_on::timestamptz) * 1000000)::int8, success \
             FROM {table} ORDER BY installed_rank",
        )
        .await?;
    let file_text = |path: &Path| -> Result<String, AdoptError> {
        let bytes = std::fs::read(path).map_err(|source| SourceError::Io { path: path.to_path_buf(), source })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    for (rank, version, _description, kind, script, checksum, installed_on, success) in rows {
        let applied_at = time(installed_on);
        let recorded = checksum.map(|checksum| checksum.to_string());
        let Some(version_text) = version else {
            // A repeatable: no version, re-run by Flyway when its checksum changes.
            let file = Path::new(&script).file_name().map(|name| name.to_owned());
            let repeatable = directory.repeatables.iter().find(|r| r.script.path.file_name() == file.as_deref());
            match repeatable {
                None => history.no_file(table, format!("repeatable {script} (installed_rank {rank})")),
                Some(repeatable) => {
                    let now = flyway_checksum(&file_text(&repeatable.script.path)?).to_string();
                    let unchanged = success && recorded.as_deref() == Some(now.as_str());
                    if success && !unchanged {
                        history.notes.push(format!(
                            "{}: repeatable {script} changed since Flyway ran it (checksum {} then, {now} now); \
                             `migrate up` runs it again",
                            table.qualified,
                            recorded.as_deref().unwrap_or("NULL")
                        ));
                    }
                    if success {
                        let adopted = unchanged.then(|| AdoptedRepeatable {
                            name: repeatable.name.clone(),
                            applied_at,
                            original_checksum: recorded.clone(),
                        });
                        history.repeatables.insert(repeatable.name.clone(), adopted);
                    }
                }
            }
            continue;
        };
        if kind == "SCHEMA" {
            continue;
        }
        let Ok(version) = Version::parse(&version_text) else {
            history.no_file(table, format!("version {version_text:?} (installed_rank {rank})"));
            continue;
        };
        if kind == "BASELINE" {
            history.notes.push(format!(
                "{}: Flyway baselined at version {version} (installed_rank {rank}); the migrations up to it are taken \
                 as applied",
                table.qualified
            ));
            for migration in directory.migrations.iter().filter(|m| m.version <= version) {
                history.record(migration, applied_at, None, ForeignState::Applied);
            }
            continue;
        }
        let Some(migration) = directory.migration(&version) else {
            history.no_file(table, format!("version {version} ({script}, installed_rank {rank})"));
            continue;
        };
        if kind == "DELETE" {
            history.entries.remove(&version);
            continue;
        }
        let state = if kind.starts_with("UNDO") && success {
            ForeignState::RolledBack
        } else if success {
            ForeignState::Applied
        } else {
            ForeignState::Failed {
                detail: format!(
                    "Flyway recorded version {version} ({script}) with success = false: it failed part-way and the \
                     database may hold some of its changes"
                ),
            }
        };
        if !kind.starts_with("UNDO") {
            let now = flyway_checksum(&file_text(&migration.up.path)?).to_string();
            if let Some(recorded) = recorded.as_deref().filter(|recorded| *recorded != now) {
                history.changed(table, migration, recorded, &now);
            }
        }
        history.record(migration, applied_at, recorded, state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flyway_checksum_is_crc32_of_the_lines_without_endings() {
        assert_eq!(flyway_checksum("123456789"), 0xCBF4_3926_u32 as i32);
        let lf = "CREATE TABLE items (id int PRIMARY KEY);\n";
        assert_eq!(flyway_checksum(lf), 968_145_331);
        assert_eq!(flyway_checksum(&format!("\u{feff}{}", lf.replace('\n', "\r\n"))), 968_145_331);
        assert_ne!(flyway_checksum("SELECT 1;"), flyway_checksum("SELECT 2;"));
    }
}
