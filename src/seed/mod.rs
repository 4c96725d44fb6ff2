//! Environment seeds: the files of `<seeds_dir>/<environment>/`, the tables each fills, the
//! order that loads parents before children, and (in [`load`]) loading, undoing and clearing them
//! with their history ([`history`]).
//!
//! A `*.csv` file fills the table its name names (`orders.csv`, `shop.orders.csv`), its header
//! naming the columns. A `*.sql` file fills the tables its `INSERT` and `COPY ... FROM`
//! statements name (found by squawk's parser), or those a `-- lifeboat:seeds <table>[, <table>]`
//! line declares, which replaces what the parser found (for a file that fills tables through a
//! function, say). `<name>.down.sql` beside `<name>.sql` undoes it for `seed rollback`.
//!
//! The order follows the foreign keys between the tables the files fill, as the catalog has
//! them: a file filling a referencing table loads after every file filling a table it references;
//! between files with no such tie, by name. Tables that reference each other in a cycle are an
//! error naming them.

pub mod history;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest as _;
use sqlx::postgres::PgConnection;
use squawk_syntax::ast::{self, AstNode as _};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read the seed directory {path}: {source}; create it with the seeds of this environment")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read seed {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed {file}: {message}")]
    Invalid { file: String, message: String },
    #[error(
        "seed {file} fills {table}, which is not a table of the database; run the migrations first (`lifeboat \
         migrate up`), or correct the file's name or its -- lifeboat:seeds line"
    )]
    NoTable { file: String, table: String },
    #[error(
        "the seeds fill tables whose foreign keys reference each other in a cycle ({tables}), so no file order loads \
         parents first; put those rows in one SQL file that defers the constraints (SET CONSTRAINTS ALL DEFERRED, \
         with DEFERRABLE keys)"
    )]
    Cycle { tables: String },
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{0}")]
    Refused(String),
}

impl SeedError {
    pub(crate) fn database(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SeedError {
        let what = what.into();
        move |source| SeedError::Database { what, source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedKind {
    Sql,
    Csv,
}

/// One seed file, read.
#[derive(Debug, Clone)]
pub struct SeedFile {
    /// The file name, the key of its history row.
    pub name: String,
    pub path: PathBuf,
    pub kind: SeedKind,
    /// Hex SHA-256 of the file's bytes.
    pub checksum: String,
    /// The tables it fills as written (file name, statements or `-- lifeboat:seeds`).
    pub written_tables: Vec<String>,
    /// For a SQL file, its `<name>.down.sql` if there is one.
    pub down: Option<PathBuf>,
}

/// The seed directory of `environment`.
pub fn directory(seeds_dir: &Path, environment: &str) -> PathBuf {
    seeds_dir.join(environment)
}

/// The seed files of `dir`, by name (`*.down.sql` are the down files of their `*.sql`).
pub fn read_dir(dir: &Path) -> Result<Vec<SeedFile>, SeedError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SeedError::Directory { path: dir.to_owned(), source })?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| SeedError::Directory { path: dir.to_owned(), source })?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            names.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let mut files = Vec::new();
    for name in &names {
        let path = dir.join(name);
        let kind = if name.ends_with(".down.sql") {
            continue;
        } else if name.ends_with(".sql") {
            SeedKind::Sql
        } else if name.ends_with(".csv") {
            SeedKind::Csv
        } else {
            continue;
        };
        let checksum = checksum(&path)?;
        let (written_tables, down) = match kind {
            SeedKind::Csv => (vec![csv_table(name)?], None),
            SeedKind::Sql => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| SeedError::File { path: path.clone(), source })?;
                let down_name = format!("{}.down.sql", name.trim_end_matches(".sql"));
                (sql_tables(&text), names.contains(&down_name).then(|| dir.join(down_name)))
            }
        };
        files.push(SeedFile { name: name.clone(), path, kind, checksum, written_tables, down });
    }
    Ok(files)
}

/// Hex SHA-256 of the file, read in pieces (a CSV seed may be large).
pub fn checksum(path: &Path) -> Result<String, SeedError> {
    let error = |source| SeedError::File { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(error)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).map_err(error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `orders.csv` → `orders`, `shop.orders.csv` → `shop.orders`, each part quoted for SQL.
fn csv_table(name: &str) -> Result<String, SeedError> {
    let stem = name.trim_end_matches(".csv");
    let parts: Vec<&str> = stem.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
        return Err(SeedError::Invalid {
            file: name.to_owned(),
            message: "a CSV seed is named after the table it fills: <table>.csv or <schema>.<table>.csv".to_owned(),
        });
    }
    Ok(parts.iter().map(|part| quote_if_needed(part)).collect::<Vec<_>>().join("."))
}

/// `part` as an SQL identifier naming exactly it: as it is when PostgreSQL would read it so (lower
/// case letters, digits, `_`), quoted otherwise (`Orders.csv` fills `"Orders"`).
fn quote_if_needed(part: &str) -> String {
    let plain = part.chars().next().is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { part.to_owned() } else { crate::util::quote_identifier(part) }
}

/// The tables a SQL seed fills: its `-- lifeboat:seeds` lines if it has any, else the targets of
/// its `INSERT` and `COPY ... FROM` statements (as written, resolved by the database later).
fn sql_tables(text: &str) -> Vec<String> {
    let declared: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-- lifeboat:seeds"))
        .flat_map(|rest| rest.split(',').map(|table| table.trim().to_owned()).collect::<Vec<_>>())
        .filter(|table| !table.is_empty())
        .collect();
    if !declared.is_empty() {
        return declared;
    }
    let parse = squawk_syntax::SourceFile::parse(text);
    let mut tables = Vec::new();
    for node in parse.syntax_node().descendants() {
        let target = if let Some(insert) = ast::Insert::cast(node.clone()) {
            insert.relation_name_ref().and_then(|name| name.path_ref()).map(|path| path.syntax().to_string())
        } else if let Some(copy) = ast::Copy::cast(node) {
            match copy.copy_direction() {
                Some(ast::CopyDirection::CopyFrom(_)) => copy
                    .copy_table()
                    .and_then(|table| table.table_name_ref())
                    .and_then(|name| name.path_ref())
                    .map(|path| path.syntax().to_string()),
                _ => None,
            }
        } else {
            None
        };
        if let Some(target) = target.map(|target| target.trim().to_owned())
            && !tables.contains(&target)
        {
            tables.push(target);
        }
    }
    tables
}

/// A seed file with its tables resolved in the database (`schema.table`, quoted as needed).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: SeedFile,
    pub tables: Vec<String>,
}

/// Resolves each file's tables and puts the files in foreign-key order.
pub async fn resolve_and_order(conn: &mut PgConnection, files: Vec<SeedFile>) -> Result<Vec<Resolved>, SeedError> {
    let mut resolved = Vec::new();
    for file in files {
        let mut tables = Vec::new();
        for written in &file.written_tables {
            match resolve_table(conn, written, &file.name).await? {
                Some(table) if !tables.contains(&table) => tables.push(table),
                Some(_) => {}
                None => return Err(SeedError::NoTable { file: file.name.clone(), table: written.clone() }),
            }
        }
        resolved.push(Resolved { file, tables });
    }
    let references = references(conn).await?;
    order(resolved, &references)
}

/// The table `written` names (as the search path resolves it), `schema.table` quoted as needed;
/// `None` when there is no such table.
pub async fn resolve_table(conn: &mut PgConnection, written: &str, file: &str) -> Result<Option<String>, SeedError> {
    sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
    )
    .bind(written)
    .fetch_optional(&mut *conn)
    .await
    .map(Option::flatten)
    .map_err(SeedError::database(format!("cannot look up table {written} of seed {file}")))
}

/// `seed clear` and `db reset` empty or drop what an environment's users work with: never in one
/// marked production.
pub fn refuse_in_production(environment: &crate::config::Environment, command: &str) -> Result<(), SeedError> {
    if environment.production {
        return Err(SeedError::Refused(format!(
            "`{command}` is refused in environment {:?}: it is marked production (production = true in its \
             [migrate] settings); nothing was changed",
            environment.name
        )));
    }
    Ok(())
}

/// Every foreign key as (referencing table, referenced table), self-references left out.
async fn references(conn: &mut PgConnection) -> Result<BTreeSet<(String, String)>, SeedError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT format('%I.%I', n.nspname, c.relname), format('%I.%I', fn.nspname, fc.relname)
           FROM pg_constraint co
           JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class fc ON fc.oid = co.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
          WHERE co.contype = 'f' AND co.conrelid <> co.confrelid",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(SeedError::database("cannot read the foreign keys"))?;
    Ok(rows.into_iter().collect())
}

/// The files in load order: a file after every file that fills a table one of its tables
/// references; otherwise by name.
fn order(files: Vec<Resolved>, references: &BTreeSet<(String, String)>) -> Result<Vec<Resolved>, SeedError> {
    let count = files.len();
    // needs[i]: the files that must load before file i.
    let needs: Vec<BTreeSet<usize>> = files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            (0..count)
                .filter(|&other| other != index)
                .filter(|&other| {
                    file.tables.iter().any(|child| {
                        files[other]
                            .tables
                            .iter()
                            .any(|parent| child != parent && references.contains(&(child.clone(), parent.clone())))
                    })
                })
                .collect()
        })
        .collect();
    let mut done = vec![false; count];
    let mut ordered = Vec::with_capacity(count);
    while ordered.len() < count {
        // Files are sorted by name, so the first ready one is the first by name.
        let Some(next) = (0..count).find(|&index| !done[index] && needs[index].iter().all(|&need| done[need])) else {
            let stuck: BTreeMap<&str, ()> = (0..count)
                .filter(|&index| !done[index])
                .flat_map(|index| files[index].tables.iter().map(|table| (table.as_str(), ())))
                .collect();
            return Err(SeedError::Cycle { tables: stuck.keys().copied().collect::<Vec<_>>().join(", ") });
        };
        done[next] = true;
        ordered.push(next);
    }
    let mut slots: Vec<Option<Resolved>> = files.into_iter().map(Some).collect();
    Ok(ordered.into_iter().map(|index| slots[index].take().expect("each file is ordered once")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sql_seed_fills_the_tables_of_its_inserts_and_copies() {
        let text = "INSERT INTO shop.customers (id) VALUES (1);\nWITH x AS (SELECT 1) INSERT INTO \"Orders\" SELECT * \
                    FROM x;\nCOPY items FROM '/tmp/items.csv' WITH (FORMAT csv);\nCOPY items TO STDOUT;\n";
        assert_eq!(sql_tables(text), vec!["shop.customers", "\"Orders\"", "items"]);
    }

    #[test]
    fn a_declaration_replaces_what_the_parser_finds() {
        assert_eq!(sql_tables("-- lifeboat:seeds a, shop.b\nSELECT load_all();\n"), vec!["a", "shop.b"]);
    }

    fn resolved(name: &str, tables: &[&str]) -> Resolved {
        let file = SeedFile {
            name: name.to_owned(),
            path: PathBuf::from(name),
            kind: SeedKind::Csv,
            checksum: String::new(),
            written_tables: Vec::new(),
            down: None,
        };
        Resolved { file, tables: tables.iter().map(|table| (*table).to_owned()).collect() }
    }

    fn names(files: &[Resolved]) -> Vec<&str> {
        files.iter().map(|file| file.file.name.as_str()).collect()
    }

    #[test]
    fn parents_load_first_whatever_the_names_and_otherwise_by_name() {
        let references: BTreeSet<(String, String)> =
            [("public.a_items", "public.b_orders"), ("public.b_orders", "public.c_customers")]
                .iter()
                .map(|(child, parent)| ((*child).to_owned(), (*parent).to_owned()))
                .collect();
        let files = vec![
            resolved("a_items.csv", &["public.a_items"]),
            resolved("b_orders.csv", &["public.b_orders"]),
            resolved("c_customers.csv", &["public.c_customers"]),
            resolved("d_notes.csv", &["public.d_notes"]),
        ];
        let ordered = order(files, &references).unwrap();
        assert_eq!(names(&ordered), vec!["c_customers.csv", "b_orders.csv", "a_items.csv", "d_notes.csv"]);
    }

    #[test]
    fn a_cycle_names_its_tables() {
        let references: BTreeSet<(String, String)> = [("public.hens", "public.eggs"), ("public.eggs", "public.hens")]
            .iter()
            .map(|(child, parent)| ((*child).to_owned(), (*parent).to_owned()))
            .collect();
        let files = vec![
            resolved("eggs.csv", &["public.eggs"]),
            resolved("hens.csv", &["public.hens"]),
            resolved("z.csv", &["public.z"]),
        ];
        match order(files, &references) {
            Err(SeedError::Cycle { tables }) => assert_eq!(tables, "public.eggs, public.hens"),
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn a_csv_seed_is_named_after_its_table() {
        assert_eq!(csv_table("orders.csv").unwrap(), "orders");
        assert_eq!(csv_table("shop.Orders.csv").unwrap(), "shop.\"Orders\"");
        assert!(csv_table("a.b.c.csv").is_err());
    }
}
