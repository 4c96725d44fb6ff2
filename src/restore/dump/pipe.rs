//! The restore pipeline: `repository -> lifeboat (BLAKE3) -> pg_restore --file=- -> lifeboat
//! (holds back the end) -> psql`, and the pieces it is made of: feeding the object to a program
//! while hashing it ([`feed`]), relaying pg_restore's SQL to psql with its end held back and its
//! preamble filtered ([`relay`], [`SessionPreamble`]), the row counts checked before the `COMMIT`
//! ([`count_checks`]), and the run that ties them together ([`Job`]).

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::select::display_table;
use crate::format::dump_manifest::TableRows;
use crate::postgres::process::{PgCommand, RedactedTail, describe_exit, redact};
use crate::repository::Repository;
use crate::restore::files::Progress;
use crate::secret::Secret;
use crate::storage::{ByteReader, ObjectKey};
use crate::util::quote_identifier;

/// How much of pg_restore's SQL lifeboat holds back from psql. The script's `COMMIT` is followed
/// only by a short trailer (a comment, `\unrestrict`), so it is always in this tail.
const HOLD_BACK: usize = 64 * 1024;

/// How far into pg_restore's SQL its preamble (see [`SessionPreamble`]) is looked for; a script
/// whose first statement comes later is passed on untouched.
const PREAMBLE_LIMIT: usize = 64 * 1024;

/// The marker of a failed row-count check in psql's error output: `<marker> <index> <rows>`.
const COUNT_MARKER: &str = "lifeboat-row-count-mismatch";

/// What a failed repository read says: the object error (which names the object) or the I/O error.
pub(super) fn read_error(key: &ObjectKey, error: &io::Error) -> String {
    match crate::object::ObjectError::from_io(error) {
        Some(object_error) => object_error.to_string(),
        None => format!("reading dump object {key} failed: {error}"),
    }
}

/// Starts `command` with its standard input piped; the process, and its standard error's tail.
pub(super) fn spawn_piped(
    program: &Path,
    mut command: PgCommand,
    stdout: Stdio,
) -> Result<(Child, RedactedTail), RestoreError> {
    command.stdin_piped();
    let child =
        command.spawn(stdout).map_err(|source| RestoreError::Spawn { program: program.to_path_buf(), source })?;
    Ok(child.into_parts())
}

/// How much of an object was read, and its hash (of all of it, or of what was read).
pub(super) struct Fed {
    pub(super) bytes: u64,
    pub(super) hash: blake3::Hash,
}

pub(super) enum FeedError {
    /// The repository read failed: the object is missing, cut short or altered.
    Read(io::Error),
    /// Another stage failed first.
    Aborted,
}

/// Copies `source` into a program's standard input, hashing it and adding what it reads to
/// `counted` (if any). When the program stops reading (pg_restore does once it has what it needs),
/// `keep_reading` decides whether the rest is still read and hashed. Standard input is closed at
/// the end.
pub(super) async fn feed(
    mut source: ByteReader,
    sink: ChildStdin,
    keep_reading: bool,
    counted: Option<&AtomicU64>,
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
        if let Some(counted) = counted {
            counted.fetch_add(read as u64, Ordering::Relaxed);
        }
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
pub(super) struct SessionPreamble {
    /// `pg_settings.name` of the target, lower case.
    pub(super) known: HashSet<String>,
}

impl SessionPreamble {
    /// Where the first statement after the preamble starts, once a whole line of it is there.
    pub(super) fn end(script: &[u8]) -> Option<usize> {
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
    pub(super) fn filter(&self, preamble: &[u8]) -> Vec<u8> {
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
pub(super) struct Job<'a> {
    pub(super) repository: &'a Repository,
    pub(super) key: &'a ObjectKey,
    pub(super) expected_size: u64,
    pub(super) expected_hash: &'a str,
    pub(super) pg_restore: &'a Path,
    pub(super) psql: &'a Path,
    pub(super) restore_args: Vec<String>,
    /// The target URL without its password.
    pub(super) url: &'a str,
    pub(super) password: Option<&'a Secret>,
    /// The target URL redacted, for messages.
    pub(super) into: &'a str,
    /// The tables whose rows are counted before the commit.
    pub(super) tables: &'a [TableRows],
    pub(super) whole_database: bool,
    /// What the target knows of pg_restore's opening settings.
    pub(super) preamble: SessionPreamble,
    /// Advanced by the bytes read from the repository, as they are read.
    pub(super) progress: &'a Progress,
}

impl Job<'_> {
    /// Restores, and returns the bytes read from the repository.
    pub(super) async fn run(&self) -> Result<u64, RestoreError> {
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
                let fed = feed(source, restore_stdin, true, Some(&self.progress.bytes), &abort).await;
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
    }
}
