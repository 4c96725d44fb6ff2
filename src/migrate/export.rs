//! The schema and the history, kept in the repository after every change lifeboat makes to an
//! environment's migrations: `clusters/<cluster>/migrations/<environment>/<UTC time>`, one sealed
//! JSON object each (`lifeboat-migrations/1`, docs/format.md). So the schema at every migration can
//! be read back later, and `migrate restore-before` finds its restore point even when the database
//! (and its history table) is the thing that was broken.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::Row;
use super::source::Version;
use crate::config::{ConnectionString, Environment};
use crate::ops::OpContext;
use crate::postgres::binaries::{Need, PgBinaries};
use crate::postgres::process::PgCommand;
use crate::storage::{ObjectKey, PutMode};

pub const FORMAT: &str = "lifeboat-migrations/1";

/// One export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    pub environment: String,
    pub taken_at: DateTime<Utc>,
    /// The newest applied version then, if any.
    pub version: Option<String>,
    pub history: Vec<ExportedRow>,
    /// `pg_dump --schema-only` of the environment's database.
    pub schema: String,
}

/// A history row as exported (the fields `restore-before` and a reader of the schema need).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedRow {
    pub version: String,
    pub name: String,
    pub kind: String,
    pub checksum: String,
    pub applied_at: DateTime<Utc>,
    pub success: bool,
    pub backup_id: Option<String>,
    pub restore_point: Option<String>,
    pub timeline: Option<i32>,
    pub lsn_before: Option<String>,
    pub time_before: Option<DateTime<Utc>>,
}

impl From<&Row> for ExportedRow {
    fn from(row: &Row) -> ExportedRow {
        ExportedRow {
            version: row.version.clone(),
            name: row.name.clone(),
            kind: row.kind.clone(),
            checksum: row.checksum.clone(),
            applied_at: row.applied_at,
            success: row.success,
            backup_id: row.backup_id.clone(),
            restore_point: row.restore_point.clone(),
            timeline: row.timeline,
            lsn_before: row.lsn_before.clone(),
            time_before: row.time_before,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot export the schema: {0}")]
    Schema(String),
    #[error("cannot store the schema and history in {location}: {source}")]
    Store { location: String, source: crate::repository::RepositoryError },
    #[error("cannot read the exported migration history {key}: {detail}")]
    Read { key: String, detail: String },
}

fn prefix(context: &OpContext, environment: &str) -> String {
    format!("{}migrations/{environment}/", context.layout.prefix())
}

/// Dumps the schema of `environment`'s database and stores it with `rows`. Returns the key.
pub async fn export(
    context: &OpContext,
    environment: &Environment,
    server_major: u32,
    rows: &[Row],
) -> Result<ObjectKey, ExportError> {
    let schema = schema_dump(&environment.connection, context.config.cluster.bin_dir.as_deref(), server_major).await?;
    let taken_at = Utc::now();
    let snapshot = Snapshot {
        format: FORMAT.to_owned(),
        environment: environment.name.clone(),
        taken_at,
        version: rows
            .iter()
            .filter(|row| row.success && row.kind != "repeatable")
            .filter_map(|row| Version::parse(&row.version).ok())
            .max()
            .map(|version| version.to_string()),
        history: rows.iter().map(ExportedRow::from).collect(),
        schema,
    };
    let key =
        ObjectKey::new(format!("{}{}", prefix(context, &environment.name), taken_at.format("%Y%m%dT%H%M%S%.6fZ")))
            .expect("the export key is valid");
    let bytes = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
    context
        .repository
        .put_bytes(&key, bytes, PutMode::CreateOnly)
        .await
        .map_err(|source| ExportError::Store { location: context.repository.location(), source })?;
    Ok(key)
}

/// The newest export of `environment`, if any.
pub async fn newest(context: &OpContext, environment: &str) -> Result<Option<Snapshot>, ExportError> {
    let listed = context
        .repository
        .store()
        .list(&prefix(context, environment))
        .await
        .map_err(|error| ExportError::Read { key: prefix(context, environment), detail: error.to_string() })?;
    let Some(key) = listed.into_iter().map(|object| object.key).max_by(|a, b| a.as_str().cmp(b.as_str())) else {
        return Ok(None);
    };
    let bytes = context
        .repository
        .get_bytes(&key)
        .await
        .map_err(|error| ExportError::Read { key: key.to_string(), detail: error.to_string() })?;
    let snapshot: Snapshot = serde_json::from_slice(&bytes)
        .map_err(|error| ExportError::Read { key: key.to_string(), detail: error.to_string() })?;
    if snapshot.format != FORMAT {
        return Err(ExportError::Read {
            key: key.to_string(),
            detail: format!("format {:?}, expected {FORMAT:?}; a newer lifeboat wrote it", snapshot.format),
        });
    }
    Ok(Some(snapshot))
}

/// `pg_dump --schema-only` of the database `connection` names.
pub async fn schema_dump(
    connection: &ConnectionString,
    bin_dir: Option<&std::path::Path>,
    server_major: u32,
) -> Result<String, ExportError> {
    let need = Need::clients(&["pg_dump"], server_major, "exporting the schema after migrations");
    let binaries = PgBinaries::locate(bin_dir, &need).map_err(|error| ExportError::Schema(error.to_string()))?;
    let pg_dump = binaries.require("pg_dump").map_err(|error| ExportError::Schema(error.to_string()))?;
    let libpq = connection.for_libpq().map_err(ExportError::Schema)?;
    let mut command = PgCommand::client(&pg_dump, libpq.password.as_ref());
    command.args(["--schema-only", "--no-owner", "--no-privileges", "--dbname", &libpq.url]);
    let output =
        command.output().await.map_err(|error| ExportError::Schema(format!("{}: {error}", pg_dump.display())))?;
    if !output.status.success() {
        return Err(ExportError::Schema(format!(
            "pg_dump --schema-only failed: {}",
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
