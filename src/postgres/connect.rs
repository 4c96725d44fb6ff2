//! Connecting to the cluster named by `cluster.connection`.
//!
//! The setting is a libpq-style URL, because that is what DBAs write and what `pg_dump` and
//! `pg_basebackup` take as-is. sqlx parses URLs with the `url` crate, which refuses a user name
//! with an empty host (`postgresql://postgres@/postgres?host=/var/run/postgresql`, the usual way to
//! name a Unix socket). So the user and password are moved into query parameters, which both
//! accept, before sqlx sees the string.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::config::ConnectionString;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cluster.connection {redacted} is not a valid connection URL: {detail}; write it as libpq does, e.g. \
         postgresql://user@host:5432/dbname or postgresql:///dbname?host=/var/run/postgresql"
    )]
    Invalid { redacted: String, detail: String },

    #[error("cannot connect to PostgreSQL at {redacted}: {detail}; {hint}")]
    Connect { redacted: String, detail: String, hint: &'static str },
}

/// What to check after a failed connection, by what the server or the network said.
fn connect_hint(error: &sqlx::Error) -> &'static str {
    let code = match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        // invalid_password
        Some("28P01") => {
            "check the password: the one in cluster.connection (user:password@ or password=), else \
             PGPASSWORD in lifeboat's environment"
        }
        // invalid_authorization_specification: no pg_hba.conf line, peer or ident refused, no such role
        Some("28000") => {
            "check that the role of cluster.connection exists and that a pg_hba.conf line lets it in from \
             here (as this OS user, for peer authentication)"
        }
        // invalid_catalog_name
        Some("3D000") => "check the database name at the end of cluster.connection's path",
        // too_many_connections, cannot_connect_now (starting up, shutting down, in recovery)
        Some("53300" | "57P03") => "the server refuses connections for now; try again shortly",
        Some(_) => "check cluster.connection (socket directory, port, user, database) and the server log",
        None => "check that the server runs and cluster.connection (socket directory or host, port)",
    }
}

/// The sqlx options for `connection`.
pub fn connect_options(connection: &ConnectionString) -> Result<PgConnectOptions, ConnectError> {
    let normalized = move_userinfo_to_query(connection.expose());
    PgConnectOptions::from_str(&normalized).map_err(|error| ConnectError::Invalid {
        redacted: connection.redacted(),
        detail: invalid_detail(&error, connection),
    })
}

/// What is wrong with the URL: sqlx's cause (a port that is not a number, a host that does not
/// parse) when it quotes neither the URL nor its password; else only the kind of problem, since
/// sqlx's message may quote the URL.
fn invalid_detail(error: &sqlx::Error, connection: &ConnectionString) -> String {
    if let sqlx::Error::Configuration(cause) = error {
        let cause = cause.to_string();
        let quotes_password = match connection.for_libpq() {
            Ok(libpq) => libpq.password.is_some_and(|password| cause.contains(password.expose())),
            Err(_) => true,
        };
        if !quotes_password && !cause.contains(connection.expose()) {
            return cause;
        }
    }
    first_words(&error.to_string())
}

/// Opens one connection, named `application_name = lifeboat` in `pg_stat_activity`.
pub async fn connect(connection: &ConnectionString) -> Result<PgConnection, ConnectError> {
    let options = connect_options(connection)?.application_name("lifeboat");
    PgConnection::connect_with(&options).await.map_err(|error| ConnectError::Connect {
        redacted: connection.redacted(),
        detail: redact_in(&error.to_string(), connection),
        hint: connect_hint(&error),
    })
}

/// `scheme://user:password@/db?query` → `scheme:///db?query&user=user&password=password`, only
/// when the host part is empty; other URLs are returned unchanged.
fn move_userinfo_to_query(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path_and_query) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    if !host.is_empty() {
        return url.to_owned();
    }
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let mut out = format!("{scheme}://{path_and_query}");
    if path_and_query.is_empty() {
        out.push('/');
    }
    let mut separator = if out.contains('?') { '&' } else { '?' };
    for (name, value) in [("user", Some(user)), ("password", password)] {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            out.push(separator);
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            separator = '&';
        }
    }
    out
}

fn first_words(message: &str) -> String {
    message.split(':').next().unwrap_or(message).trim().to_owned()
}

/// Removes the password from a driver message, in case it echoes the connection string.
fn redact_in(message: &str, connection: &ConnectionString) -> String {
    message.replace(connection.expose(), &connection.redacted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_user_and_password_of_socket_urls_into_the_query() {
        assert_eq!(
            move_userinfo_to_query("postgresql://postgres@/postgres?host=/var/run/postgresql"),
            "postgresql:///postgres?host=/var/run/postgresql&user=postgres"
        );
        assert_eq!(
            move_userinfo_to_query("postgres://app:s3cret@/appdb"),
            "postgres:///appdb?user=app&password=s3cret"
        );
        assert_eq!(move_userinfo_to_query("postgresql://u@db.internal:5432/x"), "postgresql://u@db.internal:5432/x");
        assert_eq!(move_userinfo_to_query("postgresql:///x?host=/tmp"), "postgresql:///x?host=/tmp");
    }

    /// Defect found by tests/secrets.rs: a connection URL with a port that is not a number was
    /// "not a valid connection URL: error with configuration", which says nothing of what is
    /// wrong.
    #[test]
    fn a_bad_port_in_cluster_connection_is_named_not_just_error_with_configuration() {
        let connection =
            ConnectionString::parse("postgresql://keeper:Pw-9x7Q@db.internal:fivefourthreetwo/app").unwrap();
        let message = connect_options(&connection).unwrap_err().to_string();
        assert!(message.contains("invalid port number") || message.contains("invalid digit"), "{message}");
        assert!(!message.contains("Pw-9x7Q"), "{message}");
        assert!(message.contains("postgresql://keeper:<redacted>@db.internal"), "{message}");
    }

    #[test]
    fn the_default_connection_string_is_understood() {
        let options = connect_options(&ConnectionString::default()).unwrap();
        assert_eq!(options.get_username(), "postgres");
        assert_eq!(options.get_database(), Some("postgres"));
        assert_eq!(options.get_socket().map(|path| path.to_str().unwrap()), Some("/var/run/postgresql"));
    }
}
