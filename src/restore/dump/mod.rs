//! Logical restore of one database of a dump, or chosen tables of it, into a running server
//! (`lifeboat restore --dump ID --db NAME --into URL [--table T ...] [--clean]`).
//!
//! One restore goes like this:
//! 1. [`find_dump`] resolves the id (`latest`: the newest dump). The manifest names the database's
//!    object with its size and BLAKE3 hash, and every table's exact row count.
//! 2. The archive's table of contents: `pg_restore --list --verbose` reads the start of the object
//!    (it stops after the TOC, a few kilobytes in) and prints every entry with its dependencies.
//!    Requested tables are looked up in the manifest (and partitioned tables, which hold no rows of
//!    their own and so are not in it, in the TOC), so a table the dump lacks is an error before the
//!    target is touched.
//! 3. With `--table`, lifeboat chooses the entries and hands pg_restore a `--use-list`, because
//!    pg_restore's own filters cannot say "these tables": `-n` and `-t` are combined with AND
//!    across all switches (`-n a -t x -n b -t y` restores `b.x` and `a.y` too, when they exist),
//!    and `-t` restores only a table's definition and data, not its indexes, constraints, column
//!    defaults, owned sequences or triggers. lifeboat takes each table's entry, the entries that
//!    are part of it ([`PART_OF_TABLE`] kinds that depend on what is taken: data, indexes,
//!    constraints, defaults, owned and identity sequences and their values, triggers, policies,
//!    comments, grants...) and, if the target lacks it, the table's schema. It leaves out what
//!    merely depends on a table (views, other tables' foreign keys), and a part that needs a
//!    relation which is neither restored nor already on the target (a foreign key to a table not
//!    restored, say); those are listed in the report. A partitioned table brings its partitions.
//! 4. Checks on the target, before anything is written: it accepts the connection, and (owners
//!    being restored, see [`Ownership`]) every role that owns a restored object exists.
//! 5. The restore proper is one transaction, committed only once everything checks out:
//!    `repository -> lifeboat (BLAKE3) -> pg_restore --file=- -> lifeboat (holds back the end) -> psql`.
//!    `pg_restore --dbname --single-transaction` alone would not do: it commits as soon as it has
//!    read what it needs, which for chosen tables is often long before the end of the object, so
//!    a damaged object or one that does not match its manifest would be noticed only after the
//!    commit. Instead pg_restore writes the SQL (with `--single-transaction`: one `BEGIN` ...
//!    `COMMIT`), psql executes it as it arrives (`ON_ERROR_STOP`), and lifeboat withholds the end of
//!    the script, where the `COMMIT` is, until the whole object has been read and authenticated,
//!    its size and hash match the manifest, and pg_restore has succeeded. Then, just before the
//!    `COMMIT`, the same transaction counts every restored table's rows: a count that differs from
//!    the manifest's raises an error, and the transaction rolls back. Any failure kills psql
//!    without a `COMMIT`, so the target is left exactly as it was.
//!
//! The password of the target never reaches a command line: programs get the URL without it, and
//! psql the password in `PGPASSWORD`; messages show the URL redacted, and the programs' output
//! with the password removed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, CatalogError, Entry};
use crate::config::ConnectionString;
use crate::dump::snapshot::quote_identifier;
use crate::format::dump_manifest::{DatabaseDump, DumpKeys, DumpManifest, TableRows};
use crate::postgres::binaries::{BinariesError, Need, PgBinaries};
use crate::postgres::connect::{ConnectError, connect};
use crate::postgres::process::{PgCommand, RedactedTail, describe_exit, redact};
use crate::repository::{Repository, RepositoryError};
use crate::secret::Secret;
use crate::storage::{ByteReader, ObjectKey};

/// Entry kinds (pg_restore's "desc") that belong to the table they depend on, and so are restored
/// with it.
pub const PART_OF_TABLE: &[&str] = &[
    "TABLE DATA",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "DEFAULT",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TABLE ATTACH",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "COMMENT",
    "ACL",
    "SECURITY LABEL",
    "STATISTICS",
    "STATISTICS DATA",
];

/// Kinds that are relations, which a restored part may need to exist on the target.
const RELATIONS: &[&str] = &["TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE", "INDEX"];

/// Kinds that are functions (a trigger's, a default's, a check's).
const FUNCTIONS: &[&str] = &["FUNCTION", "PROCEDURE", "AGGREGATE"];

/// Kinds that are types (a column's type is the table's own dependency; a part may need one too).
const TYPES: &[&str] = &["TYPE", "DOMAIN"];

/// Kinds that belong to a schema restored with the chosen tables (when the target lacks it).
const PART_OF_SCHEMA: &[&str] = &["COMMENT", "ACL", "SECURITY LABEL"];

/// Kinds that are constraints; the relation they stand for is their table.
const CONSTRAINTS: &[&str] = &["CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT"];

/// Kinds of more than one word, so a TOC line can be cut into kind and names.
const MULTI_WORD_KINDS: &[&str] = &[
    "TEXT SEARCH CONFIGURATION",
    "PUBLICATION TABLES IN SCHEMA",
    "MATERIALIZED VIEW DATA",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH TEMPLATE",
    "FOREIGN DATA WRAPPER",
    "DATABASE PROPERTIES",
    "PROCEDURAL LANGUAGE",
    "TEXT SEARCH PARSER",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW",
    "PUBLICATION TABLE",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "STATISTICS DATA",
    "OPERATOR CLASS",
    "SECURITY LABEL",
    "BLOB METADATA",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN TABLE",
    "ACCESS METHOD",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "DEFAULT ACL",
    "SHELL TYPE",
    "TABLE DATA",
];

/// Kinds pg_restore applies only with `--create`, which a restore into an existing database never
/// uses; their owners need not exist on the target.
const DATABASE_LEVEL: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES"];

/// How much of pg_restore's SQL lifeboat holds back from psql. The script's `COMMIT` is followed
/// only by a short trailer (a comment, `\unrestrict`), so it is always in this tail.
const HOLD_BACK: usize = 64 * 1024;

/// How far into pg_restore's SQL its preamble (see [`SessionPreamble`]) is looked for; a script
/// whose first statement comes later is passed on untouched.
const PREAMBLE_LIMIT: usize = 64 * 1024;

/// The marker of a failed row-count check in psql's error output: `<marker> <index> <rows>`.
const COUNT_MARKER: &str = "lifeboat-row-count-mismatch";

/// What to restore, and how.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The database of the dump.
    pub database: String,
    /// The database to restore into; it must exist.
    pub into: ConnectionString,
    /// `name` or `schema.name` (with `"quoted"` parts for names holding dots); empty: everything.
    pub tables: Vec<String>,
    /// Drop the restored objects first (`pg_restore --clean --if-exists`).
    pub clean: bool,
    pub ownership: Ownership,
}

/// Whether restored objects keep the owners and privileges they had when dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// As dumped: `ALTER ... OWNER TO` and `GRANT` are restored, so the restored database behaves
    /// like the original (an application role keeps its access). The owning roles must exist on
    /// the target; lifeboat checks that before restoring anything, and names the missing ones.
    #[default]
    Keep,
    /// `--no-owner --no-privileges`: everything belongs to the role of the target connection and
    /// no grants are restored; for a target without the original roles.
    Skip,
}

/// What will be restored, known once the archive's table of contents has been read.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub whole_database: bool,
    /// The tables whose rows are restored and checked, with the dump's counts.
    pub tables: Vec<TableRows>,
    /// Archive entries restored (all of them for a whole database).
    pub entries: usize,
    /// Entries related to the chosen tables that are not restored, and why.
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    /// pg_restore's description of the entry: kind, schema and name.
    pub entry: String,
    pub reason: String,
}

/// A completed restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub dump: BackupId,
    pub database: String,
    /// The target, password redacted.
    pub into: String,
    pub clean: bool,
    pub whole_database: bool,
    /// Every restored table with its rows, which matched the dump's count.
    pub tables: Vec<TableRows>,
    pub rows: u64,
    /// Bytes of the dump read from the repository.
    pub bytes: u64,
    pub seconds: f64,
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),

    #[error(
        "{location}: cluster {cluster:?} has no dumps yet, so there is no latest one; take one with `lifeboat dump`"
    )]
    NoDumps { location: String, cluster: String },

    #[error(
        "{id} is a base backup, not a dump: --dump takes a dump id ({dumps}); a base backup is \
         restored with `lifeboat restore --pgdata DIR --backup {id}`"
    )]
    NotADump { id: BackupId, dumps: String },

    #[error("dump {id} has no database {name:?}; it has: {}", available.join(", "))]
    NoSuchDatabase { id: BackupId, name: String, available: Vec<String> },

    #[error("--table {name:?}: {reason}")]
    BadTableName { name: String, reason: &'static str },

    #[error("database {database:?} of dump {id} has no table {name:?}; {available}")]
    NoSuchTable { id: BackupId, database: String, name: String, available: String },

    #[error(
        "table {name:?} is in several schemas of database {database:?} of dump {id}: {}; name one as schema.table",
        candidates.join(", ")
    )]
    AmbiguousTable { id: BackupId, database: String, name: String, candidates: Vec<String> },

    #[error(
        "table {table} has child tables in the dump ({}), and its row count in the dump includes \
         theirs; restore them with it (add --table for each)",
        children.join(", ")
    )]
    InheritanceChildren { table: String, children: Vec<String> },

    #[error(
        "the archive of database {database:?} has no entry for table {table}, which its manifest \
         lists; the dump is inconsistent, restore from another one (`lifeboat list` shows them)"
    )]
    NotInArchive { database: String, table: String },

    #[error(transparent)]
    Binaries(#[from] BinariesError),

    #[error("dump {id} records an unreadable pg_dump version {text:?}")]
    DumpVersion { id: BackupId, text: String },

    #[error("--into {0}")]
    Into(String),

    #[error("cannot connect to the target database {into}: {detail}; {hint}")]
    Connect { into: String, detail: String, hint: &'static str },

    #[error("could not {what} on the target database {into}: {detail}")]
    TargetQuery { what: &'static str, into: String, detail: String },

    #[error(
        "the restored objects belong to role(s) that {into} does not have: {}; create them first \
         (the dump's globals, {globals}, define every role), then run the restore again. Nothing \
         was restored",
        roles.join(", ")
    )]
    MissingRoles { into: String, roles: Vec<String>, globals: String },

    #[error("could not read dump object {key} from the repository: {source}")]
    Fetch {
        key: ObjectKey,
        #[source]
        source: RepositoryError,
    },

    #[error(
        "{detail}; nothing was restored into {into}. Restore from another dump (`lifeboat list` \
         shows them)"
    )]
    Damaged { detail: String, into: String },

    #[error(
        "dump object {key} does not match its manifest ({what}); nothing was restored into {into}. \
         Restore from another dump (`lifeboat list` shows them)"
    )]
    Mismatch { key: ObjectKey, what: String, into: String },

    #[error("pg_restore could not read the table of contents of {key} ({status}):\n{stderr}")]
    List { key: ObjectKey, status: String, stderr: String },

    #[error(
        "pg_restore in {} does not list the dependencies between archive entries, which choosing \
         tables needs; use the pg_restore of a newer PostgreSQL (cluster.bin_dir), or restore the \
         whole database",
        dir.display()
    )]
    NoDependencies { dir: PathBuf },

    #[error("could not run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not write the list of entries to restore to {}: {source}", path.display())]
    ListFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("pg_restore failed ({status}); nothing was restored into {into}. Its last messages:\n{stderr}")]
    PgRestore { into: String, status: String, stderr: String },

    #[error("restoring into {into} failed and was rolled back: nothing was restored. psql said:\n{stderr}{hint}")]
    Sql { into: String, stderr: String, hint: String },

    #[error(
        "table {table} has {restored} rows after the restore, but the dump recorded {dumped}; the \
         restore was rolled back, nothing was restored into {into}"
    )]
    RowCount { table: String, restored: u64, dumped: u64, into: String },

    #[error(
        "the connection to {into} ended while committing the restore, so whether it was committed \
         is unknown; look at the target before trying again. psql said:\n{stderr}"
    )]
    CommitUnknown { into: String, stderr: String },

    #[error("passing pg_restore's output to psql failed: {detail}; nothing was restored into {into}")]
    Relay { into: String, detail: String },
}

/// The dump `text` names: a dump id, or `latest` (the newest dump; base backups do not count).
pub async fn find_dump(
    repository: &Repository,
    layout: &ClusterLayout,
    text: &str,
) -> Result<DumpManifest, RestoreError> {
    let dumps: Vec<BackupId> = listing::list_ids(repository, layout)
        .await
        .map_err(CatalogError::from)?
        .into_iter()
        .filter(|id| id.kind() == BackupKind::Dump)
        .collect();
    let id = if text == "latest" {
        *dumps.last().ok_or_else(|| RestoreError::NoDumps {
            location: repository.location(),
            cluster: layout.name().to_string(),
        })?
    } else {
        listing::resolve(repository, layout, text).await?
    };
    if id.kind() != BackupKind::Dump {
        let dumps = match dumps.last() {
            Some(newest) => format!("`lifeboat list` shows them; the newest is {newest}"),
            None => "the cluster has none yet; take one with `lifeboat dump`".to_owned(),
        };
        return Err(RestoreError::NotADump { id, dumps });
    }
    match listing::read_entry(repository, layout, id).await? {
        Entry::Dump(manifest) => Ok(*manifest),
        Entry::Full(_) => unreachable!("a dump id reads a dump manifest"),
    }
}

/// Restores `request.database` of the dump `manifest` into `request.into`, using the PostgreSQL
/// programs in `bin_dir` (or found as for every other command). `on_plan` hears what will be
/// restored before the restore starts. Either everything is restored and verified, or nothing.
pub async fn restore(
    repository: &Repository,
    layout: &ClusterLayout,
    manifest: &DumpManifest,
    bin_dir: Option<&Path>,
    request: &RestoreRequest,
    on_plan: &mut (dyn FnMut(&Plan) + Send),
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let id = manifest.id;
    let database = manifest.databases.iter().find(|database| database.name == request.database).ok_or_else(|| {
        RestoreError::NoSuchDatabase {
            id,
            name: request.database.clone(),
            available: manifest.databases.iter().map(|database| database.name.clone()).collect(),
        }
    })?;
    let requested = request.tables.iter().map(|name| TableName::parse(name)).collect::<Result<Vec<_>, _>>()?;

    // pg_restore reads archives of its own major and older ones, never newer: the dump's pg_dump
    // decides, whatever the server it came from.
    let dumped = dump_major(&manifest.pg_dump_version)
        .ok_or_else(|| RestoreError::DumpVersion { id, text: manifest.pg_dump_version.clone() })?;
    let need = Need::clients(
        &["pg_restore", "psql"],
        dumped,
        format!("dump {id} (written by {})", manifest.pg_dump_version.trim()),
    );
    let binaries = PgBinaries::locate(bin_dir, &need)?;
    let pg_restore = binaries.require("pg_restore")?;
    let psql = binaries.require("psql")?;
    let into = request.into.redacted();
    let libpq =
        request.into.for_libpq().map_err(|error| RestoreError::Into(error.replace("cluster.connection", "it")))?;

    let key = database.object.object_key().map_err(|error| RestoreError::Damaged {
        detail: format!("the manifest of dump {id} names an invalid object key ({error})"),
        into: into.clone(),
    })?;
    let toc = read_toc(repository, &key, &pg_restore, &into).await?;
    let chosen = if requested.is_empty() {
        None
    } else {
        if !toc.has_dependencies() {
            return Err(RestoreError::NoDependencies { dir: binaries.dir().to_path_buf() });
        }
        Some(choose_tables(id, database, &toc, &requested)?)
    };

    let mut target = Target::connect(&request.into).await?;
    let outcome = async {
        let (plan, list) = match &chosen {
            None => (
                Plan {
                    whole_database: true,
                    tables: database.tables.clone(),
                    entries: toc.entries.len(),
                    left_out: Vec::new(),
                },
                None,
            ),
            Some(chosen) => {
                let selection = select_entries(&toc, chosen, &mut target).await?;
                let plan = Plan {
                    whole_database: false,
                    tables: chosen.tables.clone(),
                    entries: selection.included.len(),
                    left_out: selection.left_out.clone(),
                };
                (plan, Some(selection.included))
            }
        };
        if request.ownership == Ownership::Keep {
            let included = |id: u32| list.as_ref().is_none_or(|ids| ids.contains(&id));
            let missing = toc.missing_owners(&target.roles().await?, &included);
            if !missing.is_empty() {
                return Err(RestoreError::MissingRoles {
                    into: into.clone(),
                    roles: missing,
                    globals: DumpKeys::new(layout, id).globals().to_string(),
                });
            }
        }
        let settings = target.settings().await?;
        Ok((plan, list, settings))
    }
    .await;
    target.close().await;
    let (plan, list, settings) = outcome?;
    on_plan(&plan);

    let list_file = match &list {
        Some(ids) => Some(ListFile::write(&toc, ids)?),
        None => None,
    };
    let mut restore_args: Vec<String> =
        vec!["--file=-".into(), "--single-transaction".into(), "--exit-on-error".into()];
    if request.clean {
        restore_args.extend(["--clean".into(), "--if-exists".into()]);
    }
    if request.ownership == Ownership::Skip {
        restore_args.extend(["--no-owner".into(), "--no-privileges".into()]);
    }
    if let Some(file) = &list_file {
        restore_args.push(format!("--use-list={}", file.path.display()));
    }
    let job = Job {
        repository,
        key: &key,
        expected_size: database.object.size,
        expected_hash: &database.object.blake3,
        pg_restore: &pg_restore,
        psql: &psql,
        restore_args,
        url: &libpq.url,
        password: libpq.password.as_ref(),
        into: &into,
        tables: &plan.tables,
        whole_database: plan.whole_database,
        preamble: SessionPreamble { known: settings },
    };
    let bytes = job.run().await?;
    drop(list_file);

    Ok(RestoreReport {
        dump: id,
        database: database.name.clone(),
        into,
        clean: request.clean,
        whole_database: plan.whole_database,
        rows: plan.tables.iter().map(|table| table.rows).sum(),
        tables: plan.tables,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        left_out: plan.left_out,
    })
}

/// The major version in `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn dump_major(version: &str) -> Option<u32> {
    let rest = version.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|major| *major > 0)
}

/// `name`, `schema.name`, or the same with `"quoted"` parts (for names holding dots or quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableName {
    /// What the user typed, for messages.
    text: String,
    /// The ways to read it: (schema if given, table). Without quotes, every dot may be the
    /// separator (or none is), so `a.b.c` is tried as `a`.`b.c`, `a.b`.`c` and `a.b.c` in any schema.
    readings: Vec<(Option<String>, String)>,
}

impl TableName {
    fn parse(text: &str) -> Result<TableName, RestoreError> {
        let bad = |reason| RestoreError::BadTableName { name: text.to_owned(), reason };
        if text.is_empty() {
            return Err(bad("a table name cannot be empty"));
        }
        let readings = if text.contains('"') {
            let parts = split_quoted(text).ok_or_else(|| bad("unbalanced double quotes"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([schema, table]) => vec![(Some(schema), table)],
                Err(parts) if parts.len() == 1 => vec![(None, parts.into_iter().next().expect("one part"))],
                Err(_) => return Err(bad("expected `table` or `schema.table`")),
            }
        } else {
            let mut readings = vec![(None, text.to_owned())];
            for (dot, _) in text.match_indices('.') {
                readings.push((Some(text[..dot].to_owned()), text[dot + 1..].to_owned()));
            }
            readings
        };
        Ok(TableName { text: text.to_owned(), readings })
    }

    fn matches(&self, schema: &str, table: &str) -> bool {
        self.readings.iter().any(|(want_schema, want_table)| {
            want_table == table && want_schema.as_deref().is_none_or(|want_schema| want_schema == schema)
        })
    }
}

/// `"a.b".c` → `["a.b", "c"]`: parts separated by dots, each quoted (`""` for a quote) or not
/// (taken as it is: no case folding). `None` when a quote is unbalanced.
fn split_quoted(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            ('"', true) => quoted = false,
            ('.', false) => parts.push(std::mem::take(&mut current)),
            (c, _) => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    parts.push(current);
    Some(parts)
}

/// `schema.table` for messages: each part quoted only when it needs to be.
pub fn display_table(schema: &str, table: &str) -> String {
    format!("{}.{}", display_identifier(schema), display_identifier(table))
}

fn display_identifier(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_owned() } else { quote_identifier(name) }
}

/// One entry of `pg_restore --list --verbose`.
#[derive(Debug, Clone)]
struct TocEntry {
    id: u32,
    /// The line as pg_restore printed it (`--use-list` reads only its leading id).
    line: String,
    /// The kind: `TABLE`, `TABLE DATA`, `FK CONSTRAINT`...
    kind: String,
    /// What follows the kind: `<schema> <name> <owner>`, with `-` for no schema and an empty owner
    /// for none. Names are printed raw, so a name holding a space makes this ambiguous; see
    /// [`TocEntry::named`] and [`TocEntry::readings`].
    names: String,
    dependencies: Vec<u32>,
}

impl TocEntry {
    /// Whether the entry is `<schema> <name>` (names as in the catalog).
    fn named(&self, schema: &str, name: &str) -> bool {
        let prefix = format!("{} {} ", sanitize(schema), sanitize(name));
        self.names.starts_with(&prefix)
    }

    /// Every way to cut the names into (schema, name, owner).
    fn readings(&self) -> Vec<(&str, &str)> {
        let spaces: Vec<usize> = self.names.match_indices(' ').map(|(at, _)| at).collect();
        let mut readings = Vec::new();
        for (index, &first) in spaces.iter().enumerate() {
            for &second in &spaces[index + 1..] {
                readings.push((&self.names[..first], &self.names[first + 1..second]));
            }
        }
        readings
    }

    /// The entry as pg_restore describes it, without the owner: `FK CONSTRAINT public orders orders_fkey`.
    fn describe(&self) -> String {
        let names = self.names.rsplit_once(' ').map_or(self.names.as_str(), |(names, _)| names);
        format!("{} {names}", self.kind)
    }
}

/// pg_restore prints names with line breaks turned into spaces.
fn sanitize(name: &str) -> String {
    name.replace(['\n', '\r'], " ")
}

/// The archive's table of contents.
#[derive(Debug, Default)]
struct Toc {
    /// In archive order, the order pg_restore restores them in.
    entries: Vec<TocEntry>,
    position: HashMap<u32, usize>,
    /// Entry id → the entries that depend on it.
    dependents: HashMap<u32, Vec<u32>>,
}

impl Toc {
    fn parse(listing: &str) -> Toc {
        let mut entries: Vec<TocEntry> = Vec::new();
        for line in listing.lines() {
            if let Some(dependencies) = line.strip_prefix(";\tdepends on:") {
                if let Some(last) = entries.last_mut() {
                    last.dependencies.extend(dependencies.split_whitespace().filter_map(|id| id.parse::<u32>().ok()));
                }
                continue;
            }
            if let Some(entry) = parse_entry(line) {
                entries.push(entry);
            }
        }
        let position = entries.iter().enumerate().map(|(index, entry)| (entry.id, index)).collect();
        let mut dependents: HashMap<u32, Vec<u32>> = HashMap::new();
        for entry in &entries {
            for &dependency in &entry.dependencies {
                dependents.entry(dependency).or_default().push(entry.id);
            }
        }
        Toc { entries, position, dependents }
    }

    fn get(&self, id: u32) -> Option<&TocEntry> {
        self.position.get(&id).map(|&index| &self.entries[index])
    }

    fn dependents(&self, id: u32) -> &[u32] {
        self.dependents.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Whether this pg_restore printed dependencies (every table's data depends on the table).
    fn has_dependencies(&self) -> bool {
        !self.dependents.is_empty() || !self.entries.iter().any(|entry| entry.kind == "TABLE DATA")
    }

    /// The `TABLE` entries named `schema.table`.
    fn tables_named(&self, schema: &str, table: &str) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|entry| entry.kind == "TABLE" && entry.named(schema, table))
            .map(|entry| entry.id)
            .collect()
    }

    /// What an entry stands for when a restored part depends on it and it is not restored itself:
    /// the object that must then exist on the target. A constraint stands for its table; relations,
    /// functions and types for themselves; anything else (schemas, extensions, collations...) is
    /// taken to be there.
    fn needed(&self, id: u32) -> Option<(u32, Needed)> {
        let entry = self.get(id)?;
        let kind = entry.kind.as_str();
        if RELATIONS.contains(&kind) {
            Some((id, Needed::Relation))
        } else if FUNCTIONS.contains(&kind) {
            Some((id, Needed::Function))
        } else if TYPES.contains(&kind) {
            Some((id, Needed::Type))
        } else if CONSTRAINTS.contains(&kind) {
            let table = entry
                .dependencies
                .iter()
                .copied()
                .find(|&dependency| self.get(dependency).is_some_and(|table| table.kind == "TABLE"))?;
            Some((table, Needed::Relation))
        } else {
            None
        }
    }

    /// The owners of the entries `included` accepts that are not among `roles`, sorted. An owner
    /// counts as present when the entry's line ends with ` <role>` for some existing role (so a
    /// role name holding a space is recognised); the missing name is the line's last word.
    fn missing_owners(&self, roles: &HashSet<String>, included: &dyn Fn(u32) -> bool) -> Vec<String> {
        let database_level: HashSet<u32> = self
            .entries
            .iter()
            .filter(|entry| DATABASE_LEVEL.contains(&entry.kind.as_str()))
            .map(|entry| entry.id)
            .collect();
        let mut missing = BTreeSet::new();
        for entry in &self.entries {
            if !included(entry.id)
                || database_level.contains(&entry.id)
                || entry.dependencies.iter().any(|dependency| database_level.contains(dependency))
                || entry.line.ends_with(' ')
            {
                continue;
            }
            if roles.iter().any(|role| entry.line.ends_with(&format!(" {}", sanitize(role)))) {
                continue;
            }
            if let Some((_, owner)) = entry.line.rsplit_once(' ') {
                missing.insert(owner.to_owned());
            }
        }
        missing.into_iter().collect()
    }
}

/// `3391; 0 16398 TABLE DATA app orders app_owner` → an entry (dependencies come on later lines).
fn parse_entry(line: &str) -> Option<TocEntry> {
    let (id, rest) = line.split_once("; ")?;
    let id: u32 = id.trim().parse().ok()?;
    // The catalog ids (table oid, object oid) come before the kind.
    let mut fields = rest.splitn(3, ' ');
    let (_tableoid, _oid, described) = (fields.next()?, fields.next()?, fields.next()?);
    let kind = MULTI_WORD_KINDS
        .iter()
        .find(|kind| described.strip_prefix(**kind).is_some_and(|after| after.starts_with(' ')))
        .map(|kind| (*kind).to_owned())
        .unwrap_or_else(|| described.split(' ').next().unwrap_or_default().to_owned());
    let names = described.get(kind.len() + 1..).unwrap_or_default().to_owned();
    Some(TocEntry { id, line: line.to_owned(), kind, names, dependencies: Vec::new() })
}

/// The tables a `--table` restore takes, found in the manifest and the archive.
#[derive(Debug)]
struct ChosenTables {
    /// `TABLE` entries: the chosen tables, and the partitions of chosen partitioned tables.
    entries: Vec<u32>,
    /// Those that hold rows, with the dump's counts, in manifest order.
    tables: Vec<TableRows>,
}

fn choose_tables(
    id: BackupId,
    database: &DatabaseDump,
    toc: &Toc,
    requested: &[TableName],
) -> Result<ChosenTables, RestoreError> {
    let mut chosen_rows: BTreeSet<usize> = BTreeSet::new();
    let mut containers: Vec<u32> = Vec::new();
    for name in requested {
        let in_manifest: Vec<usize> = database
            .tables
            .iter()
            .enumerate()
            .filter(|(_, table)| name.matches(&table.schema, &table.table))
            .map(|(index, _)| index)
            .collect();
        match in_manifest.as_slice() {
            [index] => {
                chosen_rows.insert(*index);
                continue;
            }
            [] => {}
            several => {
                return Err(RestoreError::AmbiguousTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    candidates: several
                        .iter()
                        .map(|&index| display_table(&database.tables[index].schema, &database.tables[index].table))
                        .collect(),
                });
            }
        }
        // Not a table with rows: perhaps a partitioned table, which only the archive lists.
        let mut in_archive: Vec<(u32, String)> = Vec::new();
        for entry in toc.entries.iter().filter(|entry| entry.kind == "TABLE") {
            if let Some((schema, table)) =
                entry.readings().into_iter().find(|(schema, table)| name.matches(schema, table))
            {
                in_archive.push((entry.id, display_table(schema, table)));
            }
        }
        match in_archive.as_slice() {
            [(entry, _)] => containers.push(*entry),
            [] => {
                return Err(RestoreError::NoSuchTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    available: describe_available(id, database),
                });
            }
            several => {
                return Err(RestoreError::AmbiguousTable {
                    id,
                    database: database.name.clone(),
                    name: name.text.clone(),
                    candidates: several.iter().map(|(_, name)| name.clone()).collect(),
                });
            }
        }
    }

    // Every table of the manifest by its archive entry, to find rows of partitions.
    let mut entry_rows: HashMap<u32, usize> = HashMap::new();
    for (index, table) in database.tables.iter().enumerate() {
        for entry in toc.tables_named(&table.schema, &table.table) {
            entry_rows.entry(entry).or_insert(index);
        }
    }
    let mut entries: Vec<u32> = Vec::new();
    for &index in &chosen_rows {
        let table = &database.tables[index];
        let found = toc.tables_named(&table.schema, &table.table);
        // With names holding spaces, two entries may read alike; the one the manifest maps to it wins.
        let entry = found
            .iter()
            .copied()
            .find(|entry| entry_rows.get(entry) == Some(&index))
            .or_else(|| found.first().copied())
            .ok_or_else(|| RestoreError::NotInArchive {
                database: database.name.clone(),
                table: display_table(&table.schema, &table.table),
            })?;
        entries.push(entry);
    }
    for container in containers {
        for entry in partitions_of(toc, container) {
            if let Some(&index) = entry_rows.get(&entry) {
                chosen_rows.insert(index);
            }
            entries.push(entry);
        }
    }
    entries.sort_unstable();
    entries.dedup();

    // A table's count in the dump includes the rows of its inheritance children: without them the
    // restored count could not match.
    let taken: HashSet<u32> = entries.iter().copied().collect();
    for &entry in &entries {
        let children: Vec<String> = toc
            .dependents(entry)
            .iter()
            .filter_map(|&child| toc.get(child))
            .filter(|child| child.kind == "TABLE" && !taken.contains(&child.id))
            .map(|child| child.describe().trim_start_matches("TABLE ").to_owned())
            .collect();
        if !children.is_empty() && entry_rows.contains_key(&entry) {
            let table = &database.tables[entry_rows[&entry]];
            return Err(RestoreError::InheritanceChildren {
                table: display_table(&table.schema, &table.table),
                children,
            });
        }
    }
    let tables = chosen_rows.into_iter().map(|index| database.tables[index].clone()).collect();
    Ok(ChosenTables { entries, tables })
}

/// `container` and every table attached below it (partitions, their partitions...).
fn partitions_of(toc: &Toc, container: u32) -> Vec<u32> {
    let mut found = vec![container];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        index += 1;
        for &dependent in toc.dependents(parent) {
            let Some(entry) = toc.get(dependent) else { continue };
            let children: Vec<u32> = match entry.kind.as_str() {
                // `CREATE TABLE ... PARTITION OF` (older pg_dump) or inheritance.
                "TABLE" => vec![dependent],
                // `ALTER TABLE parent ATTACH PARTITION child`: the other table it depends on.
                "TABLE ATTACH" => entry
                    .dependencies
                    .iter()
                    .copied()
                    .filter(|&other| other != parent && toc.get(other).is_some_and(|other| other.kind == "TABLE"))
                    .collect(),
                _ => Vec::new(),
            };
            for child in children {
                if !found.contains(&child) {
                    found.push(child);
                }
            }
        }
    }
    found
}

/// The tables a database of a dump has, for an error message (the first few).
fn describe_available(id: BackupId, database: &DatabaseDump) -> String {
    const SHOWN: usize = 20;
    if database.tables.is_empty() {
        return "the database has no tables".to_owned();
    }
    let names: Vec<String> =
        database.tables.iter().take(SHOWN).map(|table| display_table(&table.schema, &table.table)).collect();
    let more = database.tables.len().saturating_sub(SHOWN);
    if more == 0 {
        format!("it has: {}", names.join(", "))
    } else {
        format!("it has: {} and {more} more (`lifeboat info {id} --json` lists them all)", names.join(", "))
    }
}

/// What kind of object a restored part needs on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needed {
    Relation,
    Function,
    Type,
}

/// The entries a `--table` restore hands pg_restore.
#[derive(Debug)]
struct Selection {
    included: HashSet<u32>,
    left_out: Vec<LeftOut>,
}

/// Chooses the entries for `chosen` tables: the tables, their schemas when the target lacks
/// them, and the parts of the tables that can be restored (see the module documentation).
async fn select_entries(toc: &Toc, chosen: &ChosenTables, target: &mut Target) -> Result<Selection, RestoreError> {
    let tables: HashSet<u32> = chosen.entries.iter().copied().collect();
    // A schema the target lacks is created, with its comment and grants.
    let mut schemas: HashSet<u32> = HashSet::new();
    for &table in &chosen.entries {
        for &dependency in &toc.get(table).map(|entry| entry.dependencies.clone()).unwrap_or_default() {
            let Some(schema) = toc.get(dependency).filter(|entry| entry.kind == "SCHEMA") else { continue };
            if schemas.contains(&dependency) {
                continue;
            }
            let mut exists = false;
            for (_, name) in schema.readings().into_iter().filter(|(no_schema, _)| *no_schema == "-") {
                exists |= target.has_schema(name).await?;
            }
            if !exists {
                schemas.insert(dependency);
            }
        }
    }
    let mut seeds: HashSet<u32> = tables.union(&schemas).copied().collect();
    for &schema in &schemas {
        seeds.extend(toc.dependents(schema).iter().copied().filter(|&dependent| {
            toc.get(dependent).is_some_and(|entry| {
                PART_OF_SCHEMA.contains(&entry.kind.as_str()) && entry.dependencies.iter().all(|&on| on == schema)
            })
        }));
    }

    // Everything of a kind that is part of a table and depends, directly or through other such
    // entries, on a chosen table. What else depends on them is related, but not restored.
    let mut scope: HashSet<u32> = HashSet::new();
    let mut related: BTreeSet<u32> = BTreeSet::new();
    let mut queue: Vec<u32> = chosen.entries.clone();
    while let Some(id) = queue.pop() {
        for &dependent in toc.dependents(id) {
            if seeds.contains(&dependent) || scope.contains(&dependent) {
                continue;
            }
            let Some(entry) = toc.get(dependent) else { continue };
            if PART_OF_TABLE.contains(&entry.kind.as_str()) {
                scope.insert(dependent);
                queue.push(dependent);
            } else {
                related.insert(dependent);
            }
        }
    }
    let restored = |id: &u32| seeds.contains(id) || scope.contains(id);

    // The objects outside the selection that parts need: are they on the target?
    let mut present: HashMap<u32, bool> = HashMap::new();
    for &id in &scope {
        for &dependency in &toc.get(id).expect("scope holds entries").dependencies {
            let Some((object, needed)) =
                toc.needed(dependency).filter(|(object, _)| !restored(&dependency) && !restored(object))
            else {
                continue;
            };
            if present.contains_key(&object) {
                continue;
            }
            let mut exists = false;
            for (schema, name) in toc.get(object).expect("needed returns entries").readings() {
                if target.has(needed, schema, name).await? {
                    exists = true;
                    break;
                }
            }
            present.insert(object, exists);
        }
    }

    // Decide, then leave out whatever depends on something left out, until nothing changes.
    let mut left_out: Vec<(u32, String)> = Vec::new();
    for &id in &scope {
        let entry = toc.get(id).expect("scope holds entries");
        if entry.kind == "FK CONSTRAINT"
            && let Some(owner) = own_table(toc, entry)
            && !tables.contains(&owner)
        {
            left_out
                .push((id, format!("a foreign key of {}, which is not restored", describe_in_sentence(toc, owner))));
            continue;
        }
        let missing = entry.dependencies.iter().find_map(|&dependency| {
            let (object, _) = toc.needed(dependency).filter(|_| !restored(&dependency))?;
            (present.get(&object) == Some(&false)).then_some(object)
        });
        if let Some(object) = missing {
            left_out.push((
                id,
                format!("needs {}, which is neither restored nor on the target", describe_in_sentence(toc, object)),
            ));
        }
    }
    let mut included: HashSet<u32> =
        scope.iter().copied().filter(|id| !left_out.iter().any(|(out, _)| out == id)).collect();
    loop {
        let dropped: Vec<(u32, String)> = included
            .iter()
            .filter_map(|&id| {
                let entry = toc.get(id)?;
                let missing =
                    entry.dependencies.iter().find(|dependency| left_out.iter().any(|(out, _)| out == *dependency))?;
                Some((id, format!("depends on {}, which is left out", describe_in_sentence(toc, *missing))))
            })
            .collect();
        if dropped.is_empty() {
            break;
        }
        for (id, reason) in dropped {
            included.remove(&id);
            left_out.push((id, reason));
        }
    }
    included.extend(seeds);

    for id in related {
        if !included.contains(&id) {
            left_out.push((id, "uses a restored table but is not part of it".to_owned()));
        }
    }
    left_out.sort_by_key(|(id, _)| toc.position.get(id).copied());
    let left_out = left_out
        .into_iter()
        .filter_map(|(id, reason)| Some(LeftOut { entry: toc.get(id)?.describe(), reason }))
        .collect();
    Ok(Selection { included, left_out })
}

/// The table a foreign key belongs to (not the one it references): the `TABLE` it depends on
/// whose name begins the constraint's name (`<schema> <table> <constraint>`).
fn own_table(toc: &Toc, constraint: &TocEntry) -> Option<u32> {
    constraint.dependencies.iter().copied().find(|&dependency| {
        toc.get(dependency).is_some_and(|table| {
            table.kind == "TABLE"
                && table
                    .readings()
                    .iter()
                    .any(|(schema, name)| constraint.names.starts_with(&format!("{schema} {name} ")))
        })
    })
}

/// `table public customers`: an entry as a sentence names it.
fn describe_in_sentence(toc: &Toc, id: u32) -> String {
    let Some(entry) = toc.get(id) else { return format!("entry {id}") };
    let description = entry.describe();
    match description.split_once(' ') {
        Some((kind, rest)) => format!("{} {rest}", kind.to_lowercase()),
        None => description,
    }
}

/// Reads the archive's table of contents: `pg_restore --list --verbose` on the start of the object.
async fn read_toc(
    repository: &Repository,
    key: &ObjectKey,
    pg_restore: &Path,
    into: &str,
) -> Result<Toc, RestoreError> {
    let mut command = PgCommand::local(pg_restore);
    command.args(["--list", "--verbose"]);
    let (mut child, stderr) = spawn_piped(pg_restore, command, Stdio::piped())?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");

    let source = repository.get(key).await.map_err(|source| RestoreError::Fetch { key: key.clone(), source })?;
    let never = CancellationToken::new();
    let reading = async {
        let mut listing = String::new();
        stdout.read_to_string(&mut listing).await.map(|_| listing)
    };
    // pg_restore stops reading after the table of contents: the rest need not be read here.
    let (fed, listing) = tokio::join!(feed(source, stdin, false, &never), reading);
    let status = child.wait().await;
    let stderr = stderr.lines().await;
    if let Err(FeedError::Read(error)) = fed {
        return Err(RestoreError::Damaged { detail: read_error(key, &error), into: into.to_owned() });
    }
    let succeeded = matches!(&status, Ok(status) if status.success());
    match listing {
        Ok(listing) if succeeded => Ok(Toc::parse(&listing)),
        _ => Err(RestoreError::List {
            key: key.clone(),
            status: describe_exit(&status),
            stderr: if stderr.is_empty() { "(it printed nothing)".to_owned() } else { stderr },
        }),
    }
}

/// What a failed repository read says: the object error (which names the object) or the I/O error.
fn read_error(key: &ObjectKey, error: &io::Error) -> String {
    match crate::object::ObjectError::from_io(error) {
        Some(object_error) => object_error.to_string(),
        None => format!("reading dump object {key} failed: {error}"),
    }
}

/// Starts `command` with its standard input piped; the process, and its standard error's tail.
fn spawn_piped(program: &Path, mut command: PgCommand, stdout: Stdio) -> Result<(Child, RedactedTail), RestoreError> {
    command.stdin_piped();
    let child =
        command.spawn(stdout).map_err(|source| RestoreError::Spawn { program: program.to_path_buf(), source })?;
    Ok(child.into_parts())
}

/// How much of an object was read, and its hash (of all of it, or of what was read).
struct Fed {
    bytes: u64,
    hash: blake3::Hash,
}

enum FeedError {
    /// The repository read failed: the object is missing, cut short or altered.
    Read(io::Error),
    /// Another stage failed first.
    Aborted,
}

/// Copies `source` into a program's standard input, hashing it. When the program stops reading
/// (pg_restore does once it has what it needs), `keep_reading` decides whether the rest is still
/// read and hashed. Standard input is closed at the end.
async fn feed(
    mut source: ByteReader,
    sink: ChildStdin,
    keep_reading: bool,
    abort: &CancellationToken,
) -> Result<Fed, FeedError> {
    let mut sink = Some(sink);
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = tokio::select! {
            read = source.read(&mut buffer) => read.map_err(FeedError::Read)?,
            () = abort.cancelled() => return Err(FeedError::Aborted),
        };
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
        if let Some(stdin) = sink.as_mut() {
            let written = tokio::select! {
                written = stdin.write_all(&buffer[..read]) => written,
                () = abort.cancelled() => return Err(FeedError::Aborted),
            };
            if written.is_err() {
                // The program closed its input: it has read all it wants (or failed, which its
                // exit status tells).
                sink = None;
                if !keep_reading {
                    break;
                }
            }
        }
    }
    drop(sink);
    Ok(Fed { bytes, hash: hasher.finalize() })
}

/// The SQL from pg_restore reached its end; `tail` is what was held back.
struct Relayed {
    psql_stdin: ChildStdin,
    tail: Vec<u8>,
}

enum RelayError {
    /// psql stopped reading: it exited (an SQL error, which its output tells).
    PsqlGone,
    /// Reading pg_restore's output failed.
    Read(io::Error),
    Aborted,
}

/// Copies pg_restore's output to psql, holding back the last [`HOLD_BACK`] bytes (which hold the
/// `COMMIT`) until the end, and leaving out of the script's preamble the settings the target does
/// not know ([`SessionPreamble`]).
async fn relay(
    mut from: ChildStdout,
    mut to: ChildStdin,
    preamble: &SessionPreamble,
    abort: &CancellationToken,
) -> Result<Relayed, RelayError> {
    let mut held: Vec<u8> = Vec::with_capacity(3 * HOLD_BACK);
    let mut buffer = vec![0u8; HOLD_BACK];
    let mut in_preamble = true;
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read.map_err(RelayError::Read)?,
            () = abort.cancelled() => return Err(RelayError::Aborted),
        };
        if read == 0 {
            if in_preamble {
                held = preamble.filter(&held);
            }
            return Ok(Relayed { psql_stdin: to, tail: held });
        }
        held.extend_from_slice(&buffer[..read]);
        if in_preamble {
            match SessionPreamble::end(&held) {
                Some(end) => {
                    let mut filtered = preamble.filter(&held[..end]);
                    filtered.extend_from_slice(&held[end..]);
                    held = filtered;
                    in_preamble = false;
                }
                None if held.len() < PREAMBLE_LIMIT => continue,
                None => in_preamble = false,
            }
        }
        if held.len() > 2 * HOLD_BACK {
            let forward = held.len() - HOLD_BACK;
            tokio::select! {
                written = to.write_all(&held[..forward]) => written.map_err(|_| RelayError::PsqlGone)?,
                () = abort.cancelled() => return Err(RelayError::Aborted),
            }
            held.drain(..forward);
        }
    }
}

/// The session settings at the start of pg_restore's script, and the ones the target knows.
///
/// pg_restore begins its SQL by setting session parameters as of its own major version (pg_restore
/// 17 and newer write `SET transaction_timeout = 0;`). It must be at least as new as the pg_dump
/// that wrote the archive, so restoring into an older server (a dump verified in a scratch
/// server of the dumped major, a table brought back into a PostgreSQL 13 database) can mean a
/// pg_restore newer than the target, which stops at the first parameter the target has never had.
/// Such a setting changes nothing on that server, so its line is left out, with a note in the log.
/// Only the preamble is touched: the lines before the first one that is not blank, a comment,
/// psql's `\restrict`, `BEGIN;`, a `SET` or a `SELECT pg_catalog.set_config(...)`.
struct SessionPreamble {
    /// `pg_settings.name` of the target, lower case.
    known: HashSet<String>,
}

impl SessionPreamble {
    /// Where the first statement after the preamble starts, once a whole line of it is there.
    fn end(script: &[u8]) -> Option<usize> {
        let mut offset = 0;
        for line in script.split_inclusive(|&byte| byte == b'\n') {
            if !line.ends_with(b"\n") {
                return None;
            }
            if !Self::is_preamble(line) {
                return Some(offset);
            }
            offset += line.len();
        }
        None
    }

    fn is_preamble(line: &[u8]) -> bool {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        line.is_empty()
            || line.starts_with("--")
            || line.starts_with("\\restrict ")
            || line == "BEGIN;"
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config(")
    }

    /// `preamble` without the `SET` lines of parameters the target does not know.
    fn filter(&self, preamble: &[u8]) -> Vec<u8> {
        let mut kept = Vec::with_capacity(preamble.len());
        for line in preamble.split_inclusive(|&byte| byte == b'\n') {
            match Self::set_parameter(line) {
                Some(name) if !self.known.contains(&name) => tracing::info!(
                    "left out pg_restore's `{}`: the target server has no parameter {name} (pg_restore is newer than it)",
                    String::from_utf8_lossy(line).trim()
                ),
                _ => kept.extend_from_slice(line),
            }
        }
        kept
    }

    /// The parameter a `SET name = value;` (or `SET name TO value;`) line sets, lower case.
    fn set_parameter(line: &[u8]) -> Option<String> {
        let line = std::str::from_utf8(line).ok()?.trim();
        let rest = line.strip_prefix("SET ")?.strip_suffix(';')?;
        let (name, value) = rest.split_once(" = ").or_else(|| rest.split_once(" TO "))?;
        let plain = !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.".contains(&byte));
        (plain && !value.is_empty()).then(|| name.to_ascii_lowercase())
    }
}

/// One run of the restore pipeline (see the module documentation).
struct Job<'a> {
    repository: &'a Repository,
    key: &'a ObjectKey,
    expected_size: u64,
    expected_hash: &'a str,
    pg_restore: &'a Path,
    psql: &'a Path,
    restore_args: Vec<String>,
    /// The target URL without its password.
    url: &'a str,
    password: Option<&'a Secret>,
    /// The target URL redacted, for messages.
    into: &'a str,
    /// The tables whose rows are counted before the commit.
    tables: &'a [TableRows],
    whole_database: bool,
    /// What the target knows of pg_restore's opening settings.
    preamble: SessionPreamble,
}

impl Job<'_> {
    /// Restores, and returns the bytes read from the repository.
    async fn run(&self) -> Result<u64, RestoreError> {
        let mut restore_command = PgCommand::local(self.pg_restore);
        restore_command.args(&self.restore_args);
        let (mut pg_restore, restore_stderr) = spawn_piped(self.pg_restore, restore_command, Stdio::piped())?;
        let mut psql_command = PgCommand::client(self.psql, self.password);
        psql_command
            .args(["--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", self.url))
            .env("PGAPPNAME", "lifeboat restore");
        let (mut psql, psql_stderr) = spawn_piped(self.psql, psql_command, Stdio::null())?;

        let source = match self.repository.get(self.key).await {
            Ok(source) => source,
            Err(source) => {
                stop(&mut psql).await;
                return Err(RestoreError::Fetch { key: self.key.clone(), source });
            }
        };
        let restore_stdin = pg_restore.stdin.take().expect("stdin is piped");
        let restore_stdout = pg_restore.stdout.take().expect("stdout is piped");
        let psql_stdin = psql.stdin.take().expect("stdin is piped");

        // Any stage that fails stops the others; psql exiting before it has the whole script is
        // a failure too (an SQL error, or a lost connection).
        let abort = CancellationToken::new();
        let stages_done = CancellationToken::new();
        let stages = async {
            let feeding = async {
                // Keep reading to the end even after pg_restore has what it needs: the hash covers it all.
                let fed = feed(source, restore_stdin, true, &abort).await;
                if matches!(fed, Err(FeedError::Read(_))) {
                    abort.cancel();
                }
                fed
            };
            let relaying = async {
                let relayed = relay(restore_stdout, psql_stdin, &self.preamble, &abort).await;
                if relayed.is_err() {
                    abort.cancel();
                }
                relayed
            };
            let restoring = async {
                let status = tokio::select! {
                    status = pg_restore.wait() => status,
                    () = abort.cancelled() => {
                        let _ = pg_restore.start_kill();
                        pg_restore.wait().await
                    }
                };
                if !matches!(&status, Ok(status) if status.success()) {
                    abort.cancel();
                }
                status
            };
            let outcome = tokio::join!(feeding, relaying, restoring);
            stages_done.cancel();
            outcome
        };
        let watching = async {
            tokio::select! {
                status = psql.wait() => {
                    abort.cancel();
                    Some(status)
                }
                () = stages_done.cancelled() => None,
            }
        };
        let ((fed, relayed, restore_status), psql_ended) = tokio::join!(stages, watching);
        // Redacted like everything shown about the target, although pg_restore never has the password.
        let restore_stderr = redact(&restore_stderr.lines().await, self.password);

        // Failures, the most fundamental first. psql is stopped before anything is reported, and
        // it never received the COMMIT, so the target is unchanged.
        let failure = if let Err(FeedError::Read(error)) = &fed {
            Some(RestoreError::Damaged { detail: read_error(self.key, error), into: self.into.to_owned() })
        } else if psql_ended.is_some() || matches!(relayed, Err(RelayError::PsqlGone)) {
            let status = match psql_ended {
                Some(status) => status,
                None => psql.wait().await,
            };
            let stderr = psql_stderr.lines().await;
            return Err(self.sql_failure(&status, stderr, false));
        } else if !matches!(&restore_status, Ok(status) if status.success()) {
            Some(RestoreError::PgRestore {
                into: self.into.to_owned(),
                status: describe_exit(&restore_status),
                stderr: if restore_stderr.is_empty() {
                    "(it printed nothing)".to_owned()
                } else {
                    restore_stderr.clone()
                },
            })
        } else if let Err(RelayError::Read(error)) = &relayed {
            Some(RestoreError::Relay { into: self.into.to_owned(), detail: error.to_string() })
        } else {
            match &fed {
                Ok(fed) if fed.bytes != self.expected_size => Some(RestoreError::Mismatch {
                    key: self.key.clone(),
                    what: format!("{} bytes read, the manifest records {}", fed.bytes, self.expected_size),
                    into: self.into.to_owned(),
                }),
                Ok(fed) if fed.hash.to_hex().as_str() != self.expected_hash => Some(RestoreError::Mismatch {
                    key: self.key.clone(),
                    what: format!("BLAKE3 {}, the manifest records {}", fed.hash.to_hex(), self.expected_hash),
                    into: self.into.to_owned(),
                }),
                Ok(_) => None,
                Err(_) => Some(RestoreError::Relay {
                    into: self.into.to_owned(),
                    detail: "the restore was stopped".to_owned(),
                }),
            }
        };
        let (Some(relayed), None) = (relayed.ok(), &failure) else {
            stop(&mut psql).await;
            return Err(failure.unwrap_or_else(|| RestoreError::Relay {
                into: self.into.to_owned(),
                detail: "the restore was stopped".to_owned(),
            }));
        };
        if !restore_stderr.is_empty() {
            tracing::warn!("pg_restore: {restore_stderr}");
        }
        let bytes = fed.as_ref().map_or(0, |fed| fed.bytes);

        // Everything checks out: the row counts, then pg_restore's COMMIT.
        let Relayed { mut psql_stdin, tail } = relayed;
        let Some(commit) = find_last(&tail, b"\nCOMMIT;\n") else {
            stop(&mut psql).await;
            return Err(RestoreError::Relay {
                into: self.into.to_owned(),
                detail: "pg_restore's script does not end with the COMMIT of its single transaction".to_owned(),
            });
        };
        let (before, after) = tail.split_at(commit + 1);
        let checks = count_checks(self.tables);
        let mut sent = Ok(());
        for piece in [before, checks.as_bytes(), after] {
            sent = sent.and(psql_stdin.write_all(piece).await);
        }
        drop(psql_stdin);
        let status = psql.wait().await;
        let stderr = psql_stderr.lines().await;
        if sent.is_ok() && matches!(&status, Ok(status) if status.success()) {
            if !stderr.is_empty() {
                tracing::warn!("psql: {stderr}");
            }
            tracing::debug!(bytes, whole_database = self.whole_database, "restore committed");
            return Ok(bytes);
        }
        Err(self.sql_failure(&status, stderr, true))
    }

    /// Why psql failed, from its exit status and last messages.
    fn sql_failure(&self, status: &io::Result<ExitStatus>, stderr: String, commit_sent: bool) -> RestoreError {
        let into = self.into.to_owned();
        if let Some((index, restored)) = count_mismatch(&stderr)
            && let Some(table) = self.tables.get(index)
        {
            return RestoreError::RowCount {
                table: display_table(&table.schema, &table.table),
                restored,
                dumped: table.rows,
                into,
            };
        }
        // psql exits with 2 when the connection is lost, 3 after an SQL error (ON_ERROR_STOP).
        let connection_lost = matches!(status, Ok(status) if status.code() == Some(2));
        if commit_sent && connection_lost {
            return RestoreError::CommitUnknown { into, stderr };
        }
        let stderr =
            if stderr.is_empty() { format!("(nothing; it ended with {})", describe_exit(status)) } else { stderr };
        let hint = sql_hint(&stderr, self.whole_database);
        RestoreError::Sql { into, stderr, hint }
    }
}

/// The next step for an SQL error psql reported.
fn sql_hint(stderr: &str, whole_database: bool) -> String {
    let hint = if stderr.contains("already exists") {
        "the target already has objects of this dump: add --clean to drop and recreate them (what \
         they hold now is lost), or restore into an empty database"
    } else if stderr.contains("cannot drop") {
        "objects on the target that this restore does not recreate depend on what --clean drops \
         (see DETAIL); drop them first, or restore them too"
    } else if stderr.contains("role \"") && stderr.contains("does not exist") {
        "create the missing role on the target first (the dump's globals define every role), then \
         run the restore again"
    } else if stderr.contains("must be owner")
        || stderr.contains("permission denied")
        || stderr.contains("must be member")
    {
        "connect as a superuser, or as a role that owns (or is a member of the owners of) the \
         restored objects"
    } else if stderr.contains("does not exist") && !whole_database {
        "a restored table needs something that --table does not restore (a type, a function, a \
         schema, a sequence...); create it on the target first, or restore the whole database into \
         an empty one"
    } else {
        return String::new();
    };
    format!("\nhint: {hint}")
}

/// One statement per table that fails, naming the table (by its index) and the count, when the
/// table does not hold exactly the rows the dump recorded. Plain SQL (no PL/pgSQL): a cast of the
/// message to an integer is what raises the error.
fn count_checks(tables: &[TableRows]) -> String {
    let mut sql = String::new();
    for (index, table) in tables.iter().enumerate() {
        sql.push_str(&format!(
            "SELECT CASE WHEN n = {rows} THEN 0 ELSE ('{COUNT_MARKER} {index} ' || n)::integer END \
             FROM (SELECT pg_catalog.count(*) AS n FROM {schema}.{table}) AS restored;\n",
            rows = table.rows,
            schema = quote_identifier(&table.schema),
            table = quote_identifier(&table.table),
        ));
    }
    sql
}

/// `(table index, rows)` from psql's message about a failed count check.
fn count_mismatch(stderr: &str) -> Option<(usize, u64)> {
    let rest = &stderr[stderr.find(COUNT_MARKER)? + COUNT_MARKER.len()..];
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit()).filter(|part| !part.is_empty());
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The `--use-list` file: the chosen entries' lines in archive order, private to this user, and
/// removed when dropped.
struct ListFile {
    path: PathBuf,
}

impl ListFile {
    fn write(toc: &Toc, ids: &HashSet<u32>) -> Result<ListFile, RestoreError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system provides random numbers");
        let path =
            std::env::temp_dir().join(format!("lifeboat-restore-{}-{}.list", std::process::id(), hex::encode(random)));
        let error = |source| RestoreError::ListFile { path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(error)?;
        let list = ListFile { path: path.clone() };
        let mut text = String::new();
        for entry in toc.entries.iter().filter(|entry| ids.contains(&entry.id)) {
            text.push_str(&entry.line);
            text.push('\n');
        }
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(error)?;
        Ok(list)
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connection to the target database for the checks before a restore.
struct Target {
    connection: Option<PgConnection>,
    /// The URL redacted, for messages.
    into: String,
}

impl Target {
    async fn connect(into: &ConnectionString) -> Result<Target, RestoreError> {
        let redacted = into.redacted();
        match connect(into).await {
            Ok(connection) => Ok(Target { connection: Some(connection), into: redacted }),
            Err(ConnectError::Invalid { detail, .. }) => {
                Err(RestoreError::Into(format!("{redacted} is not a valid connection URL: {detail}")))
            }
            Err(ConnectError::Connect { detail, .. }) => {
                let hint = if detail.contains("does not exist") && detail.contains("database") {
                    "create the database first (CREATE DATABASE), then run the restore again"
                } else {
                    "check --into (host or socket directory, port, user, database) and that the server runs"
                };
                Err(RestoreError::Connect { into: redacted, detail, hint })
            }
        }
    }

    fn query_error(&self, what: &'static str) -> impl Fn(sqlx::Error) -> RestoreError + '_ {
        move |error| RestoreError::TargetQuery { what, into: self.into.clone(), detail: error.to_string() }
    }

    fn connection(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("open until closed")
    }

    async fn roles(&mut self) -> Result<HashSet<String>, RestoreError> {
        let rows = sqlx::query("SELECT rolname::text FROM pg_catalog.pg_roles")
            .fetch_all(self.connection())
            .await
            .map_err(self.query_error("list the roles"))?;
        Ok(rows.iter().map(|row| row.get::<String, _>(0)).collect())
    }

    /// The names of the target's parameters (`pg_settings`), lower case.
    async fn settings(&mut self) -> Result<HashSet<String>, RestoreError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT pg_catalog.lower(name) FROM pg_catalog.pg_settings")
            .fetch_all(self.connection())
            .await
            .map_err(self.query_error("list the server's parameters"))?;
        Ok(names.into_iter().collect())
    }

    async fn has_schema(&mut self, name: &str) -> Result<bool, RestoreError> {
        let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(self.connection())
            .await
            .map_err(self.query_error("look for a schema"))?;
        Ok(exists)
    }

    /// Whether the target has `schema.name`: a relation, a type, or a function whose name is
    /// `function(argument types)` as pg_restore lists it.
    async fn has(&mut self, needed: Needed, schema: &str, name: &str) -> Result<bool, RestoreError> {
        let (function, name, arguments) = match needed {
            Needed::Relation => ("to_regclass", name, ""),
            Needed::Type => ("to_regtype", name, ""),
            Needed::Function => match name.find('(') {
                Some(open) => ("to_regprocedure", &name[..open], &name[open..]),
                None => return Ok(false),
            },
        };
        let sql = format!(
            "SELECT pg_catalog.{function}(pg_catalog.format('%I.%I', $1::text, $2::text) || $3::text) IS NOT NULL"
        );
        // A name that does not parse (to_reg* raise errors for malformed input) is not there.
        let exists = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(schema)
            .bind(name)
            .bind(arguments)
            .fetch_one(self.connection())
            .await;
        match exists {
            Ok(exists) => Ok(exists),
            Err(sqlx::Error::Database(_)) => Ok(false),
            Err(error) => Err(self.query_error("look for an object")(error)),
        }
    }

    async fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of `pg_restore --file=- --single-transaction` as PostgreSQL 18's writes it.
    const SCRIPT_18: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n\
        -- Dumped from database version 13.23\n-- Dumped by pg_dump version 18.6\n\nBEGIN;\n\n\
        SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
        SET transaction_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
        SELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\n\
        SET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\n\
        SET default_tablespace = '';\n\nCREATE TABLE public.t (i integer);\nSET transaction_timeout = 0;\n";

    #[test]
    fn settings_an_older_target_lacks_are_left_out_of_the_preamble_only() {
        let known: HashSet<String> = [
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "client_encoding",
            "standard_conforming_strings",
            "check_function_bodies",
            "xmloption",
            "client_min_messages",
            "row_security",
            "default_tablespace",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let preamble = SessionPreamble { known };
        let script = SCRIPT_18.as_bytes();
        let end = SessionPreamble::end(script).expect("the preamble ends at the first statement");
        assert!(SCRIPT_18[end..].starts_with("CREATE TABLE"), "{}", &SCRIPT_18[end..]);
        let filtered = String::from_utf8(preamble.filter(&script[..end])).unwrap();
        assert!(!filtered.contains("transaction_timeout"), "{filtered}");
        assert!(filtered.contains("BEGIN;\n") && filtered.contains("\\restrict AbC123\n"), "{filtered}");
        assert!(filtered.contains("SET idle_in_transaction_session_timeout = 0;\nSET client_encoding"), "{filtered}");
        assert_eq!(filtered.len(), end - "SET transaction_timeout = 0;\n".len());
        // A target that knows every parameter gets the preamble unchanged.
        let everything = SessionPreamble {
            known: SCRIPT_18.lines().filter_map(|line| SessionPreamble::set_parameter(line.as_bytes())).collect(),
        };
        assert_eq!(everything.filter(&script[..end]), &script[..end]);
        // No end until a whole line of the first statement is there.
        assert_eq!(SessionPreamble::end(&script[..end + 5]), None);
        assert_eq!(SessionPreamble::set_parameter(b"SET search_path TO public;\n"), Some("search_path".into()));
        assert_eq!(SessionPreamble::set_parameter(b"SET SESSION AUTHORIZATION 'x';\n"), None);
        assert_eq!(SessionPreamble::set_parameter(b"SET ROLE admin;\n"), None);
    }

    const LISTING: &str = "\
;
; Archive created at 2026-11-27 05:32:56 UTC
;     dbname: src
;
; Selected TOC Entries:
;
3387; 0 0 ENCODING - ENCODING 
3390; 1262 16384 DATABASE - src postgres
6; 2615 16385 SCHEMA - app postgres
223; 1255 16419 FUNCTION app trg() postgres
;\tdepends on: 6
219; 1259 16410 TABLE app customers postgres
;\tdepends on: 6
218; 1259 16398 TABLE app orders app_owner
;\tdepends on: 6
3391; 0 0 ACL app TABLE orders app_owner
;\tdepends on: 218
217; 1259 16397 SEQUENCE app orders_id_seq app_owner
;\tdepends on: 218 6
220; 1259 16415 VIEW app v postgres
;\tdepends on: 218 218 218 6
216; 1259 16388 TABLE public customers postgres
215; 1259 16387 SEQUENCE public customers_id_seq postgres
;\tdepends on: 216
3393; 0 0 SEQUENCE OWNED BY public customers_id_seq postgres
;\tdepends on: 215
221; 1259 16421 TABLE public parted postgres
222; 1259 16424 TABLE public parted_1 postgres
;\tdepends on: 221
3220; 0 0 TABLE ATTACH public parted_1 postgres
;\tdepends on: 222 221
3221; 2604 16391 DEFAULT public customers id postgres
;\tdepends on: 215 216 216
3381; 0 16410 TABLE DATA app customers postgres
;\tdepends on: 219
3380; 0 16398 TABLE DATA app orders app_owner
;\tdepends on: 218
3378; 0 16388 TABLE DATA public customers postgres
;\tdepends on: 216
3382; 0 16424 TABLE DATA public parted_1 postgres
;\tdepends on: 222
3394; 0 0 SEQUENCE SET app orders_id_seq app_owner
;\tdepends on: 217
3395; 0 0 SEQUENCE SET public customers_id_seq postgres
;\tdepends on: 215
3228; 2606 16414 CONSTRAINT app customers customers_pkey postgres
;\tdepends on: 219
3226; 2606 16404 CONSTRAINT app orders orders_pkey app_owner
;\tdepends on: 218
3224; 2606 16395 CONSTRAINT public customers customers_pkey postgres
;\tdepends on: 216
3229; 1259 16427 INDEX public parted_id_idx postgres
;\tdepends on: 221
3230; 1259 16428 INDEX public parted_1_id_idx postgres
;\tdepends on: 222 222 3229
3231; 0 0 INDEX ATTACH public parted_1_id_idx postgres
;\tdepends on: 3230 3229 222 221
3233; 2620 16420 TRIGGER app orders t app_owner
;\tdepends on: 218 223
3232; 2606 16405 FK CONSTRAINT app orders orders_customer_id_fkey app_owner
;\tdepends on: 3224 218 216
";

    fn manifest_database() -> DatabaseDump {
        let now = chrono::Utc::now();
        let rows = |schema: &str, table: &str, rows| TableRows { schema: schema.into(), table: table.into(), rows };
        DatabaseDump {
            name: "src".into(),
            object: crate::format::dump_manifest::DumpObject {
                key: "k".into(),
                size: 1,
                stored_size: 1,
                blake3: String::new(),
            },
            snapshot: String::new(),
            started_at: now,
            finished_at: now,
            tables: vec![
                rows("app", "customers", 3),
                rows("app", "orders", 10),
                rows("public", "customers", 10),
                rows("public", "parted_1", 0),
            ],
        }
    }

    fn id() -> BackupId {
        "20261127T053000Z-dump".parse().unwrap()
    }

    #[test]
    fn parses_entries_kinds_names_and_dependencies() {
        let toc = Toc::parse(LISTING);
        assert_eq!(toc.entries.len(), 30);
        let data = toc.get(3380).unwrap();
        assert_eq!((data.kind.as_str(), data.names.as_str()), ("TABLE DATA", "app orders app_owner"));
        assert_eq!(data.dependencies, [218]);
        let owned = toc.get(3393).unwrap();
        assert_eq!(owned.kind, "SEQUENCE OWNED BY");
        assert_eq!(toc.get(3387).unwrap().names, "- ENCODING ");
        assert_eq!(toc.get(3232).unwrap().describe(), "FK CONSTRAINT app orders orders_customer_id_fkey");
        assert!(toc.has_dependencies());
        assert_eq!(toc.tables_named("app", "orders"), [218]);
        assert_eq!(toc.needed(3224), Some((216, Needed::Relation)), "a constraint stands for its table");
        assert_eq!(toc.needed(223), Some((223, Needed::Function)));
        assert_eq!(toc.needed(6), None, "a schema is taken to be there");
        assert_eq!(own_table(&toc, toc.get(3232).unwrap()), Some(218));
    }

    #[test]
    fn table_names_are_read_every_way_they_can_be() {
        let plain = TableName::parse("orders").unwrap();
        assert!(plain.matches("app", "orders") && plain.matches("public", "orders"));
        let qualified = TableName::parse("app.orders").unwrap();
        assert!(qualified.matches("app", "orders") && !qualified.matches("public", "orders"));
        let dotted = TableName::parse("a.b.c").unwrap();
        assert!(dotted.matches("a", "b.c") && dotted.matches("a.b", "c") && dotted.matches("x", "a.b.c"));
        let quoted = TableName::parse(r#""Sales Data"."Big ""Quoted"" Table""#).unwrap();
        assert_eq!(quoted.readings, [(Some("Sales Data".to_owned()), "Big \"Quoted\" Table".to_owned())]);
        assert!(TableName::parse(r#""unbalanced"#).is_err());
        assert!(TableName::parse(r#""a"."b"."c""#).is_err());
        assert!(TableName::parse("").is_err());
        assert_eq!(display_table("Sales Data", "t"), "\"Sales Data\".t");
    }

    #[test]
    fn chosen_tables_come_from_the_manifest_and_partitioned_ones_from_the_archive() {
        let toc = Toc::parse(LISTING);
        let database = manifest_database();
        let names = |names: &[&str]| names.iter().map(|name| TableName::parse(name).unwrap()).collect::<Vec<_>>();

        let chosen = choose_tables(id(), &database, &toc, &names(&["app.orders"])).unwrap();
        assert_eq!(chosen.entries, [218]);
        assert_eq!(chosen.tables, [database.tables[1].clone()]);

        let error = choose_tables(id(), &database, &toc, &names(&["customers"])).unwrap_err().to_string();
        assert!(error.contains("several schemas") && error.contains("app.customers, public.customers"), "{error}");
        let error = choose_tables(id(), &database, &toc, &names(&["nope"])).unwrap_err().to_string();
        assert!(error.contains("no table \"nope\"") && error.contains("app.orders"), "{error}");
        let error = choose_tables(id(), &database, &toc, &names(&["v"])).unwrap_err().to_string();
        assert!(error.contains("no table \"v\""), "a view is not a table: {error}");

        // A partitioned table holds no rows (it is not in the manifest) and brings its partitions.
        let chosen = choose_tables(id(), &database, &toc, &names(&["parted"])).unwrap();
        assert_eq!(chosen.entries, [221, 222]);
        assert_eq!(chosen.tables, [database.tables[3].clone()]);
    }

    #[test]
    fn owners_are_missing_only_when_no_role_ends_the_line() {
        let toc = Toc::parse(LISTING);
        let roles: HashSet<String> = ["postgres".to_owned()].into();
        assert_eq!(toc.missing_owners(&roles, &|_| true), ["app_owner"]);
        assert_eq!(toc.missing_owners(&roles, &|id| id == 216 || id == 3387 || id == 3390), Vec::<String>::new());
        let roles: HashSet<String> = ["postgres".to_owned(), "app_owner".to_owned()].into();
        assert!(toc.missing_owners(&roles, &|_| true).is_empty());
    }

    #[test]
    fn count_checks_name_the_table_that_differs() {
        let tables = [TableRows { schema: "a\"b".into(), table: "t".into(), rows: 7 }];
        let sql = count_checks(&tables);
        assert!(sql.contains("WHEN n = 7") && sql.contains("FROM \"a\"\"b\".\"t\""), "{sql}");
        let stderr =
            "psql:<stdin>:99: ERROR:  invalid input syntax for type integer: \"lifeboat-row-count-mismatch 0 6\"";
        assert_eq!(count_mismatch(stderr), Some((0, 6)));
        assert_eq!(count_mismatch("ERROR: something else"), None);
        assert_eq!(find_last(b"a\nCOMMIT;\nb\nCOMMIT;\n--\n", b"\nCOMMIT;\n"), Some(11));
        assert_eq!(dump_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(dump_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
    }
}
