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
//!    are part of it ([`select::PART_OF_TABLE`] kinds that depend on what is taken: data, indexes,
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
//!
//! The parts: [`toc`] reads and parses the table of contents, [`select`] chooses the tables and
//! entries, [`target`] runs the checks on the target, and [`pipe`] is the pg_restore → psql
//! pipeline of step 5. This file holds the request, the plan, the report, the errors, and the
//! order of the steps.

mod pipe;
mod select;
mod target;
mod toc;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use self::pipe::{Job, SessionPreamble};
pub use self::select::display_table;
use self::select::{ListFile, TableName, choose_tables, select_entries};
use self::target::Target;
use self::toc::read_toc;
use crate::catalog::id::{BackupId, BackupKind};
use crate::catalog::layout::ClusterLayout;
use crate::catalog::listing::{self, CatalogError, Entry};
use crate::config::ConnectionString;
use crate::format::dump_manifest::{DumpKeys, DumpManifest, TableRows};
use crate::postgres::binaries::{BinariesError, Need, PgBinaries};
use crate::repository::{Repository, RepositoryError};
use crate::restore::files::Progress;
use crate::storage::ObjectKey;

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
        Entry::Physical(_) => unreachable!("a dump id reads a dump manifest"),
    }
}

/// Restores `request.database` of the dump `manifest` into `request.into`, using the PostgreSQL
/// programs in `bin_dir` (or found as for every other command). `on_plan` hears what will be
/// restored before the restore starts. Either everything is restored and verified, or nothing.
/// The bytes of the database's object read for the restore are added to `progress.bytes` as they
/// are read (the caller sets the total: the object's size, [`object_size`]).
pub async fn restore(
    repository: &Repository,
    layout: &ClusterLayout,
    manifest: &DumpManifest,
    bin_dir: Option<&Path>,
    request: &RestoreRequest,
    progress: &Progress,
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
        progress,
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
        seconds: crate::util::round_to(started.elapsed().as_secs_f64(), 3),
        left_out: plan.left_out,
    })
}

/// The stored size of database `database`'s object in dump `manifest` (none: the dump has no such
/// database, which [`restore`] reports).
pub fn object_size(manifest: &DumpManifest, database: &str) -> Option<u64> {
    manifest.databases.iter().find(|dumped| dumped.name == database).map(|dumped| dumped.object.size)
}

/// The major version in `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn dump_major(version: &str) -> Option<u32> {
    let rest = version.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|major| *major > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_major_is_read_from_pg_dump_version() {
        assert_eq!(dump_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(dump_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
    }
}
