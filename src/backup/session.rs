//! The backup's one connection to PostgreSQL: what the server is, `pg_backup_start`, and
//! `pg_backup_stop` on the same connection (a non-exclusive backup belongs to the session that
//! started it, and ends by itself if that session goes away, which is what makes a killed
//! backup harmless on the server side).
//!
//! PostgreSQL 15 renamed the functions (`pg_start_backup(label, fast, exclusive => false)` became
//! `pg_backup_start(label, fast)`); both spellings are used according to `server_version_num`.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use super::BackupError;
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::wal::SegmentSize;
use crate::config::ConnectionString;
use crate::postgres::connect::connect;

/// What the backup needs to know about the server, read once at the start.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150008.
    pub version_num: u32,
    /// `server_version`, e.g. "15.8 (Debian 15.8-1.pgdg120+1)".
    pub version: String,
    pub wal_level: String,
    pub archive_mode: String,
    /// `archive_command`, named when the WAL a backup needs does not reach the repository.
    pub archive_command: String,
    pub segment_size: SegmentSize,
    /// A standby: the backup is taken from a replica.
    pub in_recovery: bool,
    /// `data_directory`, if this role may read it (superuser or pg_read_all_settings).
    pub data_directory: Option<String>,
    /// From `pg_control_system()`, if this role may call it.
    pub system_identifier: Option<u64>,
    /// (oid, name, location) of every tablespace but pg_default and pg_global.
    pub tablespaces: Vec<(u32, String, String)>,
}

impl ServerInfo {
    /// The major version: 15 for 150008 (9 for 9.6, only to say it is unsupported).
    pub fn major(&self) -> u32 {
        self.version_num / 10_000
    }
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub lsn: Lsn,
    /// The `backup_label` file.
    pub label_file: String,
    /// The `tablespace_map` file; `None` without tablespaces.
    pub tablespace_map: Option<String>,
}

pub struct Session {
    connection: PgConnection,
    /// For messages: the connection string without its password.
    redacted: String,
    pub server: ServerInfo,
    /// Whether a backup is in progress on this connection.
    started: bool,
}

impl Session {
    /// Connects and reads what the backup needs to know. Timeouts that could end the session
    /// while the copy runs for hours, or cancel `pg_backup_stop` while it waits for the archive,
    /// are turned off for this session.
    pub async fn open(connection_string: &ConnectionString) -> Result<Session, BackupError> {
        let mut connection = connect(connection_string).await?;
        let redacted = connection_string.redacted();
        let row = sqlx::query(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version'), \
                    current_setting('wal_level'), current_setting('archive_mode'), \
                    (SELECT setting::int8 * CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END \
                       FROM pg_settings WHERE name = 'wal_segment_size'), \
                    pg_is_in_recovery(), current_setting('archive_command')",
        )
        .fetch_one(&mut connection)
        .await
        .map_err(|error| postgres_error("read the server's settings", &error))?;
        let version_num: i32 = row.get(0);
        let segment_bytes: i64 = row.get(4);
        let segment_size = SegmentSize::new(segment_bytes as u64).ok_or_else(|| BackupError::Postgres {
            action: "report a valid wal_segment_size".into(),
            detail: format!("the server says {segment_bytes} bytes"),
            hint: String::new(),
        })?;
        let mut server = ServerInfo {
            version_num: version_num as u32,
            version: row.get(1),
            wal_level: row.get(2),
            archive_mode: row.get(3),
            archive_command: row.get(6),
            segment_size,
            in_recovery: row.get(5),
            data_directory: None,
            system_identifier: None,
            tablespaces: Vec::new(),
        };
        // These two need privileges a backup role may lack; the data directory check copes.
        server.data_directory =
            sqlx::query_scalar("SELECT current_setting('data_directory')").fetch_one(&mut connection).await.ok();
        server.system_identifier =
            sqlx::query_scalar::<_, String>("SELECT system_identifier::text FROM pg_control_system()")
                .fetch_one(&mut connection)
                .await
                .ok()
                .and_then(|text| text.parse().ok());
        let tablespaces: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT oid::int8, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
        )
        .fetch_all(&mut connection)
        .await
        .map_err(|error| postgres_error("list the tablespaces", &error))?;
        server.tablespaces =
            tablespaces.into_iter().map(|(oid, name, location)| (oid as u32, name, location)).collect();

        let mut session = Session { connection, redacted, server, started: false };
        let mut settings = vec!["statement_timeout", "lock_timeout"];
        if session.server.version_num >= 140_000 {
            settings.push("idle_session_timeout");
        }
        for setting in settings {
            sqlx::query("SELECT set_config($1, '0', false)")
                .bind(setting)
                .execute(&mut session.connection)
                .await
                .map_err(|error| postgres_error("configure the backup session", &error))?;
        }
        Ok(session)
    }

    /// The connection string without its password, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `pg_backup_start(label, fast)`: returns the backup's start LSN once the checkpoint is done.
    pub async fn start(&mut self, label: &str, fast: bool) -> Result<Lsn, BackupError> {
        let sql = if self.server.version_num >= 150_000 {
            "SELECT pg_backup_start($1, $2)::text"
        } else {
            "SELECT pg_start_backup($1, $2, false)::text"
        };
        let text: String = sqlx::query_scalar(sql)
            .bind(label)
            .bind(fast)
            .fetch_one(&mut self.connection)
            .await
            .map_err(|error| postgres_error("start the backup (pg_backup_start)", &error))?;
        self.started = true;
        parse_lsn(&text, "pg_backup_start")
    }

    /// The server's current timeline and WAL position (the insert position on a primary, the
    /// replay position on a standby): no page of the data directory has a later LSN.
    pub async fn position(&mut self) -> Result<(Timeline, Lsn), BackupError> {
        let sql = if self.server.in_recovery {
            "SELECT timeline_id::int8, pg_last_wal_replay_lsn()::text FROM pg_control_checkpoint()"
        } else {
            "SELECT timeline_id::int8, pg_current_wal_insert_lsn()::text FROM pg_control_checkpoint()"
        };
        let (timeline, lsn): (i64, String) = sqlx::query_as(sql)
            .fetch_one(&mut self.connection)
            .await
            .map_err(|error| postgres_error("report its timeline and WAL position", &error))?;
        let timeline = u32::try_from(timeline).ok().and_then(Timeline::new).ok_or_else(|| BackupError::Postgres {
            action: "report a valid timeline".into(),
            detail: format!("pg_control_checkpoint() says timeline {timeline}"),
            hint: String::new(),
        })?;
        Ok((timeline, parse_lsn(&lsn, "the WAL position")?))
    }

    /// A trivial query: proves the connection (and so the backup on the server) is still alive.
    pub async fn ping(&mut self) -> Result<(), BackupError> {
        sqlx::query("SELECT 1").execute(&mut self.connection).await.map(|_| ()).map_err(|error| BackupError::Postgres {
            action: "keep the backup session open".into(),
            detail: error.to_string(),
            hint: "; the connection was lost, which ends the backup on the server: run it again".into(),
        })
    }

    /// `pg_backup_stop(wait_for_archive)`. With `true` it returns only once the WAL the backup
    /// needs has been archived (when archiving is on).
    pub async fn stop(&mut self, wait_for_archive: bool) -> Result<Stopped, BackupError> {
        let sql = if self.server.version_num >= 150_000 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop($1)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, $1)"
        };
        let result: Result<(String, String, Option<String>), _> =
            sqlx::query_as(sql).bind(wait_for_archive).fetch_one(&mut self.connection).await;
        self.started = false;
        let (lsn, label_file, tablespace_map) =
            result.map_err(|error| postgres_error("stop the backup (pg_backup_stop)", &error))?;
        Ok(Stopped {
            lsn: parse_lsn(&lsn, "pg_backup_stop")?,
            label_file,
            tablespace_map: tablespace_map.filter(|map| !map.is_empty()),
        })
    }

    /// Ends a failed backup: stops it on the server without waiting for the archive (closing the
    /// connection would end it too; this says so explicitly) and closes the connection.
    pub async fn abort(mut self) {
        if self.started {
            match self.stop(false).await {
                Ok(_) => tracing::info!("the failed backup was stopped on the server"),
                Err(error) => tracing::debug!(%error, "pg_backup_stop after a failure"),
            }
        }
        let _ = self.connection.close().await;
    }

    pub async fn close(self) {
        let _ = self.connection.close().await;
    }
}

fn parse_lsn(text: &str, function: &str) -> Result<Lsn, BackupError> {
    text.parse().map_err(|_| BackupError::Postgres {
        action: "return an LSN".into(),
        detail: format!("{function} returned {text:?}"),
        hint: String::new(),
    })
}

/// A failed query as a [`BackupError`], with a hint for the failures an operator can fix.
fn postgres_error(action: &str, error: &sqlx::Error) -> BackupError {
    let (detail, hint) = match error.as_database_error() {
        Some(database) => {
            let code = database.code().unwrap_or_default().into_owned();
            let message = database.message().to_owned();
            let hint = match code.as_str() {
                // insufficient_privilege
                "42501" => "; connect as a superuser, or grant the backup role what it needs: \
                            GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean) \
                            TO <role> (pg_start_backup/pg_stop_backup before PostgreSQL 15) and \
                            GRANT pg_read_all_settings TO <role>"
                    .to_owned(),
                // object_not_in_prerequisite_state: e.g. a backup already running on this session, wal_level
                "55000" => "; check wal_level (replica or logical) and that no other backup is stuck on \
                            this connection"
                    .to_owned(),
                _ => String::new(),
            };
            (format!("{message} (SQLSTATE {code})"), hint)
        }
        None => (error.to_string(), "; check that the server is still running".to_owned()),
    };
    BackupError::Postgres { action: action.to_owned(), detail, hint }
}
