//! The checks on the target database before anything is written: it accepts the connection,
//! which roles, schemas, relations, functions and types it has, and which parameters it knows.

use std::collections::HashSet;

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};

use super::RestoreError;
use super::toc::Needed;
use crate::config::ConnectionString;
use crate::postgres::connect::{ConnectError, connect};

/// A connection to the target database for the checks before a restore.
pub(super) struct Target {
    pub(super) connection: Option<PgConnection>,
    /// The URL redacted, for messages.
    pub(super) into: String,
}

impl Target {
    pub(super) async fn connect(into: &ConnectionString) -> Result<Target, RestoreError> {
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

    pub(super) fn connection(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("open until closed")
    }

    pub(super) async fn roles(&mut self) -> Result<HashSet<String>, RestoreError> {
        let rows = sqlx::query("SELECT rolname::text FROM pg_catalog.pg_roles")
            .fetch_all(self.connection())
            .await
            .map_err(self.query_error("list the roles"))?;
        Ok(rows.iter().map(|row| row.get::<String, _>(0)).collect())
    }

    /// The names of the target's parameters (`pg_settings`), lower case.
    pub(super) async fn settings(&mut self) -> Result<HashSet<String>, RestoreError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT pg_catalog.lower(name) FROM pg_catalog.pg_settings")
            .fetch_all(self.connection())
            .await
            .map_err(self.query_error("list the server's parameters"))?;
        Ok(names.into_iter().collect())
    }

    pub(super) async fn has_schema(&mut self, name: &str) -> Result<bool, RestoreError> {
        let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(self.connection())
            .await
            .map_err(self.query_error("look for a schema"))?;
        Ok(exists)
    }

    /// Whether the target has `schema.name`: a relation, a type, or a function whose name is
    /// `function(argument types)` as pg_restore lists it.
    pub(super) async fn has(&mut self, needed: Needed, schema: &str, name: &str) -> Result<bool, RestoreError> {
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

    pub(super) async fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}
