//! [`ConnectionString`]: `cluster.connection`, a libpq-style URL that may carry a password.
//!
//! The whole string is held as a [`Secret`]; what can be shown is [`ConnectionString::redacted`],
//! with the password in the user-info part and any `password=`/`sslpassword=` query parameter
//! replaced by `<redacted>`. `Debug` and `Display` show only the redacted form.

use std::fmt;

use crate::secret::{REDACTED, Secret};
use crate::util::{URL_COMPONENT, percent_encode};

#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(Secret);

impl ConnectionString {
    pub const DEFAULT: &'static str = "postgresql://postgres@/postgres?host=/var/run/postgresql";

    /// Accepts `postgresql://` and `postgres://` URLs (what sqlx understands). The error never
    /// quotes the string, which may contain a password.
    pub fn parse(text: &str) -> Result<ConnectionString, String> {
        let Some(rest) = text.strip_prefix("postgresql://").or_else(|| text.strip_prefix("postgres://")) else {
            return Err("must be a URL starting with postgresql:// (or postgres://), e.g. \
                        \"postgresql://postgres@/postgres?host=/var/run/postgresql\" \
                        (the value is not repeated here because it may contain a password)"
                .into());
        };
        if rest.is_empty() {
            return Err(
                "names no host or database; e.g. \"postgresql://postgres@/postgres?host=/var/run/postgresql\"".into()
            );
        }
        Ok(ConnectionString(Secret::new(text)))
    }

    /// The full string, password included, for connecting. Keep it out of logs.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The string with every password replaced by `<redacted>`, safe to print.
    pub fn redacted(&self) -> String {
        redact(self.0.expose())
    }
}

/// A connection for a libpq program (`pg_dump`, `pg_dumpall`, `pg_basebackup`): the URL without
/// its password, which goes into the child's `PGPASSWORD` instead, because a command line is visible
/// to every user of the host (`ps`).
pub struct LibpqConnection {
    /// `cluster.connection` minus the password; safe to pass as an argument and to print.
    pub url: String,
    /// The password, percent-decoded, if the URL had one.
    pub password: Option<Secret>,
}

impl ConnectionString {
    /// The same connection to database `database` instead of the configured one (any `dbname`
    /// query parameter is dropped, since it would override the path). Any database name works: it
    /// is percent-encoded, and both libpq and sqlx decode it.
    pub fn with_database(&self, database: &str) -> ConnectionString {
        let url = UrlParts::split(self.expose());
        let mut out =
            format!("{}{}", url.scheme, url.userinfo.map(|userinfo| format!("{userinfo}@")).unwrap_or_default());
        out.push_str(url.hosts);
        out.push('/');
        out.push_str(&percent_encode(database.as_bytes(), URL_COMPONENT));
        let query: Vec<&str> =
            url.query_parameters().filter(|parameter| parameter_name(parameter) != "dbname").collect();
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        ConnectionString(Secret::new(out))
    }

    /// The connection split for a libpq program: the URL without a password, and the password.
    /// Refuses `sslpassword`, which libpq reads from no environment variable, so it could only be
    /// passed on the command line. The error never quotes the URL.
    pub fn for_libpq(&self) -> Result<LibpqConnection, String> {
        let url = UrlParts::split(self.expose());
        let mut password = None;
        let mut out = String::from(url.scheme);
        if let Some(userinfo) = url.userinfo {
            let user = match userinfo.split_once(':') {
                Some((user, secret)) => {
                    password = Some(percent_decode(secret)?);
                    user
                }
                None => userinfo,
            };
            out.push_str(user);
            out.push('@');
        }
        out.push_str(url.hosts);
        if let Some(path) = url.path {
            out.push('/');
            out.push_str(path);
        }
        let mut query = Vec::new();
        for parameter in url.query_parameters() {
            match parameter_name(parameter) {
                "password" => password = Some(percent_decode(parameter.split_once('=').map_or("", |(_, v)| v))?),
                name if name.to_ascii_lowercase().contains("password") => {
                    return Err(format!(
                        "cluster.connection sets {name}, which a PostgreSQL program can only receive on its \
                         command line, visible to every user of the host; remove it (for sslpassword: store \
                         the client key unencrypted, readable only by lifeboat)"
                    ));
                }
                _ => query.push(parameter),
            }
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        Ok(LibpqConnection { url: out, password })
    }
}

/// A `scheme://[userinfo@]hosts[/dbname][?query]` URL cut the way libpq cuts it: the user-info
/// ends at the first `@` unless a `/` comes first, the hosts at the next `/` or `?`.
struct UrlParts<'a> {
    /// Including `://`.
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    /// Without the leading `/`.
    path: Option<&'a str>,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> UrlParts<'a> {
        let scheme_end = url.find("://").map_or(0, |index| index + 3);
        let (scheme, rest) = url.split_at(scheme_end);
        let (userinfo, rest) = match rest.find(['@', '/']) {
            Some(at) if rest.as_bytes()[at] == b'@' => (Some(&rest[..at]), &rest[at + 1..]),
            _ => (None, rest),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (hosts, path) = match before_query.split_once('/') {
            Some((hosts, path)) => (hosts, Some(path)),
            None => (before_query, None),
        };
        UrlParts { scheme, userinfo, hosts, path, query }
    }

    fn query_parameters(&self) -> impl Iterator<Item = &'a str> {
        self.query.into_iter().flat_map(|query| query.split('&')).filter(|parameter| !parameter.is_empty())
    }
}

fn parameter_name(parameter: &str) -> &str {
    parameter.split_once('=').map_or(parameter, |(name, _)| name)
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as it is, as libpq would
/// refuse it anyway). The error never quotes the text: it is a password.
fn percent_decode(text: &str) -> Result<Secret, String> {
    let out: Vec<u8> = percent_encoding::percent_decode_str(text).collect();
    String::from_utf8(out).map(Secret::new).map_err(|error| {
        crate::secret::wipe(&mut error.into_bytes());
        "the password in cluster.connection is not valid UTF-8 once percent-decoded".to_string()
    })
}

impl Default for ConnectionString {
    fn default() -> Self {
        ConnectionString(Secret::new(Self::DEFAULT))
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of a `scheme://user:password@host/...?...` URL and the values of query
/// parameters whose name contains `password`. When the shape is ambiguous (several `@`, or an `@`
/// after the `?`, as an unescaped `@` or `?` in a password gives) everything after the scheme is
/// hidden: showing too little is harmless, showing a password is not.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else {
        return REDACTED.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let query_start = rest.find('?').unwrap_or(rest.len());
    let mut out = String::from(scheme);
    let after_userinfo = match (rest.matches('@').count(), rest.find('@')) {
        (0, _) => rest,
        (1, Some(at)) if at < query_start => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(REDACTED);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        _ => {
            out.push_str(REDACTED);
            return out;
        }
    };
    match after_userinfo.split_once('?') {
        None => out.push_str(after_userinfo),
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                        format!("{name}={REDACTED}")
                    }
                    Some(_) => parameter.to_string(),
                    // Not a parameter: perhaps the tail of a password with an unescaped '&'.
                    None => REDACTED.to_string(),
                })
                .collect();
            out.push_str(&parameters.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> String {
        ConnectionString::parse(text).unwrap().redacted()
    }

    #[test]
    fn hides_passwords_and_keeps_the_rest() {
        for (input, expected) in [
            (ConnectionString::DEFAULT, ConnectionString::DEFAULT),
            ("postgresql://app:s3cret@db.example.com:5432/app", "postgresql://app:<redacted>@db.example.com:5432/app"),
            (
                "postgres://app@db/app?password=s3cret&sslmode=require",
                "postgres://app@db/app?password=<redacted>&sslmode=require",
            ),
            (
                "postgresql://db/app?sslmode=verify-full&sslpassword=k3y",
                "postgresql://db/app?sslmode=verify-full&sslpassword=<redacted>",
            ),
            ("postgresql://app:p@ss/w?rd@db/app", "postgresql://<redacted>"),
            ("postgresql://app:pa?ss@db/app", "postgresql://<redacted>"),
            ("postgresql://db/x?password=s3cret&n=a@b", "postgresql://<redacted>"),
            ("postgresql://db/x?password=s3&cret", "postgresql://db/x?password=<redacted>&<redacted>"),
            ("postgresql://host:5432/app", "postgresql://host:5432/app"),
        ] {
            assert_eq!(redacted(input), expected, "{input}");
        }
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let connection = ConnectionString::parse("postgresql://app:s3cret@db/app").unwrap();
        assert!(!format!("{connection} {connection:?}").contains("s3cret"));
        assert_eq!(connection.expose(), "postgresql://app:s3cret@db/app");
    }

    #[test]
    fn replaces_the_database_keeping_everything_else() {
        let with = |url: &str, database: &str| ConnectionString::parse(url).unwrap().with_database(database);
        assert_eq!(
            with(ConnectionString::DEFAULT, "app").expose(),
            "postgresql://postgres@/app?host=/var/run/postgresql"
        );
        assert_eq!(with("postgresql://u:p@db:5432", "a b/c").expose(), "postgresql://u:p@db:5432/a%20b%2Fc");
        assert_eq!(
            with("postgresql:///x?dbname=y&host=/tmp&sslmode=disable", "Mixed\"Case").expose(),
            "postgresql:///Mixed%22Case?host=/tmp&sslmode=disable"
        );
        assert_eq!(with("postgres://h/old?", "é").expose(), "postgres://h/%C3%A9");
    }

    #[test]
    fn libpq_urls_carry_no_password() {
        let split = |url: &str| ConnectionString::parse(url).unwrap().for_libpq().unwrap();
        let plain = split(ConnectionString::DEFAULT);
        assert_eq!(plain.url, ConnectionString::DEFAULT);
        assert!(plain.password.is_none());
        let inline = split("postgresql://app:s%40cr%3Aet@/appdb?host=/run/pg");
        assert_eq!(inline.url, "postgresql://app@/appdb?host=/run/pg");
        assert_eq!(inline.password.unwrap().expose(), "s@cr:et");
        let query = split("postgresql://db/x?sslmode=require&password=p%26w&port=5433");
        assert_eq!(query.url, "postgresql://db/x?sslmode=require&port=5433");
        assert_eq!(query.password.unwrap().expose(), "p&w");
        let error = ConnectionString::parse("postgresql://db/x?sslpassword=k3y").unwrap().for_libpq().err().unwrap();
        assert!(error.contains("sslpassword") && !error.contains("k3y"), "{error}");
    }

    #[test]
    fn refuses_non_urls_without_quoting_them() {
        let error = ConnectionString::parse("host=db password=s3cret").unwrap_err();
        assert!(error.contains("postgresql://") && !error.contains("s3cret"), "{error}");
    }
}
