//! The backup gate (guarantee G7): before anything changes a production database, the newest
//! backup of the cluster that completed *and passed verification by restore* must be younger than
//! the configured age, or (with `take`) one is taken and verified first; and WAL archiving must
//! work right now (a segment switched now reaches the repository within `archive_timeout`), since
//! a point-in-time restore to "before this change" needs the WAL written after the backup.
//!
//! What counts as verified is read through [`crate::catalog::audit::survey`], so it is the
//! journal's verdict: a report that is missing, replaced, unrecorded or newer than the recorded
//! one never makes a backup count (G9), nor does an integrity-only check.
//!
//! Also here: restore points ([`create_restore_point`]), made before each migration and before a
//! gated command, which `restore-before` recovers to.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::backup::BackupOptions;
use crate::catalog::audit::{self, Survey};
use crate::catalog::id::BackupId;
use crate::catalog::listing::{CatalogError, Entry, manifest_key};
use crate::catalog::wal::{SegmentSize, WalFile, WalSegment};
use crate::config::{Environment, GateBackup, format_duration};
use crate::dump::{DumpRequest, Selection};
use crate::format::journal_entry::{Verdict, hash_hex};
use crate::format::verify_report::{Mode, VerifyReport};
use crate::ops::event::{Event, Operation, Outcome, Totals};
use crate::ops::{OpContext, OpError};
use crate::postgres::connect::ConnectError;
use crate::storage::ObjectKey;
use crate::verify::VerifyOptions;

/// The longest restore point name PostgreSQL keeps (`MAXFNAMELEN - 1`).
const RESTORE_POINT_NAME_MAX: usize = 63;

/// What the gate asks for: from the environment ([`GateRequest::of`]) or `gate --max-age/--take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateRequest {
    /// The newest verified backup must have completed within this long.
    pub max_age: Duration,
    /// Take and verify a backup when there is no fresh verified one, instead of refusing.
    pub take: bool,
}

impl GateRequest {
    /// `require_verified_backup_within` and `take_backup_if_stale` of `environment`.
    pub fn of(environment: &Environment) -> GateRequest {
        GateRequest { max_age: environment.require_verified_backup_within, take: environment.take_backup_if_stale }
    }
}

/// The gate let the change through: on this backup (or dump), verified then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePass {
    /// The backup or dump id.
    pub backup: String,
    pub kind: GateBackup,
    /// When the verification that proved it restorable started.
    pub verified_at: DateTime<Utc>,
    /// How long ago the backup (or dump) completed.
    pub age: Duration,
    /// The gate took and verified it itself.
    pub taken: bool,
    /// The WAL segment the gate switched and saw arrive in the repository (base backups only).
    pub archived_segment: Option<String>,
}

impl GatePass {
    /// The verdict's word in the audit trail and the history table: `passed` or `taken`.
    pub fn verdict(&self) -> &'static str {
        if self.taken { "taken" } else { "passed" }
    }
}

/// A backup the gate found, for messages: its id and how long ago it completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: BackupId,
    pub completed_at: DateTime<Utc>,
    pub age: Duration,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (completed {} ago)", self.id, format_age(self.age))
    }
}

/// "the newest verified one is X (completed 3h ago)" or "none has passed verification".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestVerified(pub Option<Found>);

impl fmt::Display for NewestVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(found) => write!(f, "the newest verified one is {found}"),
            None => f.write_str("none has passed verification by restore"),
        }
    }
}

/// The commands that let the gate pass, for the kind of backup it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub kind: GateBackup,
    pub database: String,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let take = match self.kind {
            GateBackup::Base => "`lifeboat backup --verify`".to_owned(),
            GateBackup::Dump => format!("`lifeboat dump --db {} --verify`", self.database),
        };
        write!(
            f,
            "run {take} (or `lifeboat verify ID` on a newer one), or let the gate take one: pass --take, or set \
             take_backup_if_stale = true in [migrate]"
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the gate refuses environment {environment:?}: cluster {cluster:?} has no {what} in {location}; {fix}")]
    NoBackup { environment: String, cluster: String, what: String, location: String, fix: Fix },

    #[error(
        "the gate refuses environment {environment:?}: {newest} and the gate accepts at most {max_age}; {fix}",
        max_age = format_age(*max_age)
    )]
    TooOld { environment: String, newest: NewestVerified, max_age: Duration, fix: Fix },

    #[error(
        "the gate refuses environment {environment:?}: the newest {what}, {found}, did not pass verification: \
         {status}; {newest}. Find out why with `lifeboat info {id}`, then {fix}",
        id = found.id
    )]
    FailedVerification {
        environment: String,
        what: String,
        found: Found,
        status: String,
        newest: NewestVerified,
        fix: Fix,
    },

    #[error(
        "the gate refuses environment {environment:?}: the newest {what}, {found}, {why}; {newest}. Run \
         `lifeboat verify {id}`, or {fix}",
        id = found.id
    )]
    NotVerified { environment: String, what: String, found: Found, why: String, newest: NewestVerified, fix: Fix },

    #[error(
        "the gate took {id} but its verification by restore failed ({status}); nothing was changed. \
         `lifeboat info {id}` says why"
    )]
    TakenFailed { id: BackupId, status: String },

    #[error("the gate could not take and verify a backup")]
    Take(#[source] OpError),

    #[error("the gate cannot read the catalog of cluster {cluster:?}")]
    Catalog {
        cluster: String,
        #[source]
        source: CatalogError,
    },

    #[error("the gate cannot reach environment {environment:?}")]
    Connect {
        environment: String,
        #[source]
        source: ConnectError,
    },

    #[error("{what} failed on environment {environment:?}: {detail}")]
    Query { environment: String, what: String, detail: String },

    #[error(
        "the gate refuses environment {environment:?}: WAL archiving does not reach the repository. The gate \
         switched WAL segment {segment}, and {location} still does not have it after {waited}s \
         (archive_timeout in [migrate]){failed}. The server's archive_command is {archive_command:?}; it must run \
         `lifeboat wal-push %p` with this configuration. `lifeboat wal check` shows what the repository holds"
    )]
    NotArchived {
        environment: String,
        segment: String,
        location: String,
        waited: u64,
        failed: String,
        archive_command: String,
    },

    #[error(
        "the gate refuses environment {environment:?}: its server has system identifier {server}, but cluster \
         {cluster:?} in the repository is {recorded}: its backups are of another server. Point the environment's \
         connection at the server lifeboat backs up, or use the configuration of the repository that backs it up"
    )]
    OtherCluster { environment: String, cluster: String, server: String, recorded: String },

    #[error(
        "restore point name {name:?} is {length} bytes; PostgreSQL keeps at most {RESTORE_POINT_NAME_MAX}. Use a \
         shorter migration version"
    )]
    NameTooLong { name: String, length: usize },

    #[error("cannot create restore point {name:?}: {detail}")]
    RestorePoint { name: String, detail: String },
}

impl GateError {
    /// The verdict's word in the audit trail.
    pub fn verdict(&self) -> &'static str {
        match self {
            GateError::NoBackup { .. } => "no-backup",
            GateError::TooOld { .. } => "too-old",
            GateError::FailedVerification { .. } | GateError::TakenFailed { .. } => "failed-verification",
            GateError::NotVerified { .. } => "not-verified",
            GateError::NotArchived { .. } => "wal-not-archived",
            GateError::OtherCluster { .. } => "other-cluster",
            GateError::Take(_)
            | GateError::Catalog { .. }
            | GateError::Connect { .. }
            | GateError::Query { .. }
            | GateError::NameTooLong { .. }
            | GateError::RestorePoint { .. } => "error",
        }
    }

    /// The backup the refusal is about, if any (named in the audit line).
    fn backup(&self) -> Option<String> {
        match self {
            GateError::TooOld { newest: NewestVerified(Some(found)), .. }
            | GateError::FailedVerification { found, .. }
            | GateError::NotVerified { found, .. } => Some(found.id.to_string()),
            GateError::TakenFailed { id, .. } => Some(id.to_string()),
            _ => None,
        }
    }
}

/// Runs the gate for `environment`: emits [`Operation::Gate`] Started and Finished (arguments:
/// environment, kind, max_age, take, and at the end verdict and backup) and returns the pass, or
/// the refusal naming the newest verified backup and the command that fixes it.
pub async fn check(
    context: &OpContext,
    environment: &Environment,
    request: &GateRequest,
) -> Result<GatePass, GateError> {
    let began = Instant::now();
    let mut arguments = BTreeMap::from([
        ("environment".to_owned(), environment.name.clone()),
        ("kind".to_owned(), environment.gate_backup.as_str().to_owned()),
        ("max_age".to_owned(), format_duration(request.max_age)),
        ("take".to_owned(), request.take.to_string()),
    ]);
    context.events.emit(Event::Started { operation: Operation::Gate, arguments: arguments.clone() }).await;
    let result = judge(context, environment, request).await;
    let outcome = match &result {
        Ok(pass) => {
            arguments.insert("verdict".to_owned(), pass.verdict().to_owned());
            arguments.insert("backup".to_owned(), pass.backup.clone());
            if let Some(segment) = &pass.archived_segment {
                arguments.insert("archived_segment".to_owned(), segment.clone());
            }
            Outcome::Succeeded
        }
        Err(error) => {
            arguments.insert("verdict".to_owned(), error.verdict().to_owned());
            if let Some(backup) = error.backup() {
                arguments.insert("backup".to_owned(), backup);
            }
            Outcome::Failed { error: error.to_string() }
        }
    };
    let finished = Event::Finished {
        operation: Operation::Gate,
        arguments,
        outcome,
        duration: began.elapsed(),
        totals: Totals::default(),
    };
    context.events.emit(finished).await;
    result
}

async fn judge(context: &OpContext, environment: &Environment, request: &GateRequest) -> Result<GatePass, GateError> {
    let kind = environment.gate_backup;
    let database = database_of(environment);
    let mut pass = match newest_fresh(context, environment, request, &database).await {
        Ok(pass) => pass,
        Err(refusal) if request.take && refusal.can_take() => take(context, kind, &database).await?,
        Err(refusal) => return Err(refusal.into_error()),
    };
    if kind == GateBackup::Base {
        pass.archived_segment = Some(archive_works(context, environment).await?);
    }
    Ok(pass)
}

/// The database the environment's connection names (libpq's default: the user's name).
fn database_of(environment: &Environment) -> String {
    crate::postgres::connect::connect_options(&environment.connection)
        .ok()
        .map(|options| options.get_database().unwrap_or(options.get_username()).to_owned())
        .unwrap_or_else(|| "postgres".to_owned())
}

/// A refusal before any backup was taken; with `take`, most are answered by taking one.
struct Refusal(GateError);

impl Refusal {
    fn can_take(&self) -> bool {
        matches!(
            self.0,
            GateError::NoBackup { .. }
                | GateError::TooOld { .. }
                | GateError::FailedVerification { .. }
                | GateError::NotVerified { .. }
        )
    }

    fn into_error(self) -> GateError {
        self.0
    }
}

impl From<GateError> for Refusal {
    fn from(error: GateError) -> Self {
        Refusal(error)
    }
}

/// What the survey says about one backup or dump the gate could use.
struct Candidate {
    found: Found,
    /// `Some(true)`: verified by restore, by a verdict the journal records and a report that is
    /// stored intact; `Some(false)`: its verification failed; `None`: never (validly) verified.
    verdict: Option<bool>,
    status: String,
    verified_at: Option<DateTime<Utc>>,
    /// The passed verification by restore the journal records before the newer integrity-only
    /// check that gave the verdict; it counts once its report reads back intact
    /// ([`accept_restore_proofs`]).
    restore_proof: Option<Verdict>,
}

/// Makes the candidates whose newest check was integrity-only count as verified by restore when
/// the verification by restore before it passed and its report reads back as the journal
/// recorded it (G9).
async fn accept_restore_proofs(context: &OpContext, candidates: &mut [Candidate]) {
    for candidate in candidates.iter_mut() {
        let Some(proof) = candidate.restore_proof.take() else { continue };
        let report = match ObjectKey::new(proof.report.clone()) {
            Ok(key) => context.repository.get_bytes(&key).await.ok(),
            Err(_) => None,
        };
        let intact = report.is_some_and(|bytes| {
            hash_hex(&bytes) == proof.report_blake3
                && VerifyReport::from_json(&bytes).is_ok_and(|report| {
                    report.passed && report.mode == Mode::Restore && report.id == candidate.found.id
                })
        });
        if intact {
            candidate.verdict = Some(true);
            candidate.verified_at = Some(proof.verified_at);
            candidate.status = format!(
                "passed verification by restore on {}, and integrity checks since",
                proof.verified_at.format("%Y-%m-%d %H:%M UTC")
            );
        } else {
            candidate.status = format!(
                "was checked for integrity after its verification by restore on {}, whose report {} is missing, \
                 altered or unreadable (`lifeboat list` names the problem)",
                proof.verified_at.format("%Y-%m-%d %H:%M UTC"),
                proof.report
            );
        }
    }
}

/// The newest backup of the gate's kind that passed verification within `max_age`, or why not.
async fn newest_fresh(
    context: &OpContext,
    environment: &Environment,
    request: &GateRequest,
    database: &str,
) -> Result<GatePass, Refusal> {
    let kind = environment.gate_backup;
    let survey = audit::survey(&context.repository, &context.layout)
        .await
        .map_err(|source| GateError::Catalog { cluster: context.layout.name().as_str().to_owned(), source })?;
    let mut candidates = candidates(&survey, context, kind, database, Utc::now());
    accept_restore_proofs(context, &mut candidates).await;
    let fix = Fix { kind, database: database.to_owned() };
    let what = match kind {
        GateBackup::Base => "base backup".to_owned(),
        GateBackup::Dump => format!("dump of database {database:?}"),
    };
    let Some(newest) = candidates.last() else {
        return Err(GateError::NoBackup {
            environment: environment.name.clone(),
            cluster: context.layout.name().as_str().to_owned(),
            what: format!("{what} that can be used (listed, intact, with its WAL)"),
            location: context.repository.location(),
            fix,
        }
        .into());
    };
    let verified = candidates.iter().rev().find(|candidate| candidate.verdict == Some(true));
    let newest_verified = NewestVerified(verified.map(|candidate| candidate.found.clone()));
    if let Some(verified) = verified
        && verified.found.age <= request.max_age
    {
        return Ok(GatePass {
            backup: verified.found.id.to_string(),
            kind,
            verified_at: verified.verified_at.unwrap_or(verified.found.completed_at),
            age: verified.found.age,
            taken: false,
            archived_segment: None,
        });
    }
    let environment = environment.name.clone();
    Err(match newest.verdict {
        Some(true) => GateError::TooOld { environment, newest: newest_verified, max_age: request.max_age, fix },
        Some(false) => GateError::FailedVerification {
            environment,
            what,
            found: newest.found.clone(),
            status: newest.status.clone(),
            newest: newest_verified,
            fix,
        },
        None => GateError::NotVerified {
            environment,
            what,
            found: newest.found.clone(),
            why: newest.status.clone(),
            newest: newest_verified,
            fix,
        },
    }
    .into())
}

/// The backups (or dumps of `database`) the gate may consider, oldest first: listed, with a
/// manifest no problem names, and (for base backups) with the WAL they need to become consistent.
fn candidates(
    survey: &Survey,
    context: &OpContext,
    kind: GateBackup,
    database: &str,
    now: DateTime<Utc>,
) -> Vec<Candidate> {
    let damaged = |id: BackupId| {
        let key = manifest_key(&context.layout, id).to_string();
        survey.problems.iter().any(|problem| problem.key == key)
    };
    let mut candidates: Vec<Candidate> = survey
        .entries
        .iter()
        .filter_map(|entry| {
            let completed_at = match (entry, kind) {
                (Entry::Physical(manifest), GateBackup::Base) => manifest.stop_time,
                (Entry::Dump(manifest), GateBackup::Dump)
                    if manifest.databases.iter().any(|dumped| dumped.name == database) =>
                {
                    manifest.finished_at
                }
                _ => return None,
            };
            let id = entry.id();
            if damaged(id) {
                return None;
            }
            let age = (now - completed_at).to_std().unwrap_or_default();
            let verification = survey.verifications.get(&id);
            // Only a recorded verdict whose report is stored intact counts (G9), and only a
            // verification that restored. A failed integrity check fails the backup; a passed one
            // leaves the verification by restore before it standing (`restore_proof`).
            let verdict = verification.and_then(|verification| {
                let report = verification.latest.as_ref()?;
                let passed = verification.passed && report.passed;
                match report.mode {
                    _ if !verification.recorded => None,
                    Mode::Restore => Some(passed),
                    Mode::Integrity => (!passed).then_some(false),
                }
            });
            let restore_proof = verification
                .filter(|verification| verdict.is_none() && verification.recorded && verification.passed)
                .and_then(|verification| verification.restore_before.clone())
                .filter(|restore| restore.passed);
            let status = match (verification, verdict) {
                (None, _) => "was never verified by restore".to_owned(),
                (Some(verification), Some(_)) => verification.status.clone(),
                (Some(verification), None)
                    if verification.latest.as_ref().is_some_and(|report| report.mode == Mode::Integrity) =>
                {
                    "was only checked for integrity (`lifeboat verify` without --integrity-only restores it)".to_owned()
                }
                (Some(verification), None) => format!(
                    "has no verification that counts: the verdict was {:?}, but its report {} is missing, altered or \
                     not recorded in the journal (`lifeboat list` names the problem)",
                    verification.status, verification.report
                ),
            };
            Some(Candidate {
                found: Found { id, completed_at, age },
                verdict,
                status,
                verified_at: verification.and_then(|verification| verification.verified_at),
                restore_proof,
            })
        })
        .collect();
    candidates.sort_by_key(|candidate| candidate.found.completed_at);
    candidates
}

/// Takes a backup (or a dump of `database`) and verifies it by restore.
async fn take(context: &OpContext, kind: GateBackup, database: &str) -> Result<GatePass, GateError> {
    let verify = VerifyOptions { integrity_only: false, ..VerifyOptions::from_config(&context.config) };
    let (id, completed_at, report) = match kind {
        GateBackup::Base => {
            let options = BackupOptions::from_config(&context.config.backup);
            let taken =
                crate::ops::backup_then_verify(context, options, Some(&verify)).await.map_err(GateError::Take)?;
            (taken.summary.manifest.id, taken.summary.manifest.stop_time, taken.verification)
        }
        GateBackup::Dump => {
            let request = DumpRequest {
                selection: Selection::Databases(vec![database.to_owned()]),
                lock_wait: context.config.dump.lock_wait,
            };
            let taken = crate::ops::dump_then_verify(context, &request, &mut |_| {}, Some(&verify))
                .await
                .map_err(GateError::Take)?;
            (taken.manifest.id, taken.manifest.finished_at, taken.verification)
        }
    };
    let report = report.expect("a verification was asked for");
    if !report.passed {
        return Err(GateError::TakenFailed { id, status: report.status() });
    }
    Ok(GatePass {
        backup: id.to_string(),
        kind,
        verified_at: report.started_at,
        age: (Utc::now() - completed_at).to_std().unwrap_or_default(),
        taken: true,
        archived_segment: None,
    })
}

/// Switches WAL on the environment's server and waits until the finished segment is in the
/// repository; its name.
async fn archive_works(context: &OpContext, environment: &Environment) -> Result<String, GateError> {
    let name = &environment.name;
    let mut conn = crate::postgres::connect::connect(&environment.connection)
        .await
        .map_err(|source| GateError::Connect { environment: name.clone(), source })?;
    let query_error = |what: &str| {
        let what = what.to_owned();
        move |error: sqlx::Error| GateError::Query {
            environment: name.clone(),
            what,
            // A server's error message, which never holds the connection string.
            detail: error.to_string(),
        }
    };
    let (identifier, size): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT system_identifier FROM pg_control_system()), \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(query_error("reading the server's identity"))?;
    if let Ok(Some(record)) = crate::catalog::cluster::ClusterRecord::read(&context.repository, &context.layout).await
        && record.system_identifier.0 != identifier as u64
    {
        return Err(GateError::OtherCluster {
            environment: name.clone(),
            cluster: context.layout.name().as_str().to_owned(),
            server: (identifier as u64).to_string(),
            recorded: record.system_identifier.to_string(),
        });
    }
    // A transaction with an xid writes a commit record, so the switch has something to close:
    // with nothing written since the last switch, pg_switch_wal() does nothing.
    sqlx::query("SELECT txid_current()")
        .execute(&mut conn)
        .await
        .map_err(query_error("writing a transaction before the WAL switch"))?;
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut conn)
        .await
        .map_err(query_error("pg_switch_wal() (the role needs EXECUTE on it, or superuser)"))?;
    let size = SegmentSize::new(size as u64).ok_or_else(|| GateError::Query {
        environment: name.clone(),
        what: "reading wal_segment_size".to_owned(),
        detail: format!("{size} is not a WAL segment size"),
    })?;
    let parsed = WalSegment::parse(&segment, size).map_err(|error| GateError::Query {
        environment: name.clone(),
        what: "pg_walfile_name()".to_owned(),
        detail: error.to_string(),
    })?;
    let key = context.layout.wal_file(&WalFile::Segment(parsed), size);
    let began = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match context.repository.store().head(&key).await {
            Ok(Some(_)) => return Ok(segment),
            Ok(None) => {}
            Err(error) => {
                return Err(GateError::Query {
                    environment: name.clone(),
                    what: format!("looking for {key} in the repository"),
                    detail: error.to_string(),
                });
            }
        }
        let waited = began.elapsed();
        if waited >= environment.archive_timeout {
            let (archive_command, failed): (String, Option<String>) = sqlx::query_as(
                "SELECT current_setting('archive_command'), (SELECT last_failed_wal FROM pg_stat_archiver)",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap_or_default();
            return Err(GateError::NotArchived {
                environment: name.clone(),
                segment,
                location: context.repository.location(),
                waited: waited.as_secs(),
                failed: failed.map(|wal| format!("; the archiver last failed on {wal}")).unwrap_or_default(),
                archive_command,
            });
        }
        tokio::time::sleep(pause.min(environment.archive_timeout.saturating_sub(waited))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A restore point: what `pg_create_restore_point` returned, and when and on which timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestorePoint {
    pub name: String,
    /// Where its WAL record was written, as PostgreSQL prints it (`0/3000090`).
    pub lsn: String,
    /// The server's clock when it was made.
    pub time: DateTime<Utc>,
    pub timeline: u32,
}

/// `lifeboat-before-<version>`: the restore point made before migration `version`.
pub fn restore_point_name(version: &str) -> String {
    format!("lifeboat-before-{version}")
}

/// Makes restore point `name` on the server of `conn` (it needs superuser or EXECUTE on
/// `pg_create_restore_point`, and `wal_level` replica or higher).
pub async fn create_restore_point(conn: &mut PgConnection, name: &str) -> Result<RestorePoint, GateError> {
    if name.len() > RESTORE_POINT_NAME_MAX {
        return Err(GateError::NameTooLong { name: name.to_owned(), length: name.len() });
    }
    let row: (String, i64, String) = sqlx::query_as(
        "SELECT lsn::text, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, pg_walfile_name(lsn) \
         FROM pg_create_restore_point($1) AS point(lsn)",
    )
    .bind(name)
    .fetch_one(conn)
    .await
    .map_err(|error| GateError::RestorePoint { name: name.to_owned(), detail: error.to_string() })?;
    let (lsn, micros, walfile) = row;
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(|| GateError::RestorePoint {
        name: name.to_owned(),
        detail: format!("the server's clock says {micros} microseconds since 1970"),
    })?;
    let timeline = walfile.get(..8).and_then(|hex| u32::from_str_radix(hex, 16).ok()).ok_or_else(|| {
        GateError::RestorePoint { name: name.to_owned(), detail: format!("{walfile:?} is not a WAL file name") }
    })?;
    Ok(RestorePoint { name: name.to_owned(), lsn, time, timeline })
}

/// `3h 12min`, `45s`: an age to the second.
pub fn format_age(age: Duration) -> String {
    format_duration(Duration::from_secs(age.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_point_names_carry_the_version() {
        assert_eq!(restore_point_name("20261206120000"), "lifeboat-before-20261206120000");
    }

    #[test]
    fn refusals_name_the_newest_verified_backup_and_the_fix() {
        let id: BackupId = "20261206T010000Z-full".parse().unwrap();
        let found = Found { id, completed_at: Utc::now(), age: Duration::from_secs(7200) };
        let error = GateError::TooOld {
            environment: "production".into(),
            newest: NewestVerified(Some(found)),
            max_age: Duration::from_secs(3600),
            fix: Fix { kind: GateBackup::Base, database: "app".into() },
        };
        let message = error.to_string();
        assert!(message.contains("20261206T010000Z-full"), "{message}");
        assert!(message.contains("lifeboat backup --verify"), "{message}");
        assert!(message.contains("--take"), "{message}");
        assert_eq!(error.verdict(), "too-old");
        assert_eq!(error.backup().as_deref(), Some("20261206T010000Z-full"));
    }
}
