//! [`ConnectionString`]: `cluster.connection`, a libpq-style URL that may carry a password.
//!
//! The whole string is held as a [`Secret`]; what can be shown is [`ConnectionString::redacted`],
//! with the password in the user-info part and any `password=`/`sslpassword=` query parameter
//! replaced by `<redacted>`. `Debug` and `Display` show only the redacted form.

use std::fmt;

use crate::secret::{REDACTED, Secret};

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
    fn refuses_non_urls_without_quoting_them() {
        let error = ConnectionString::parse("host=db password=s3cret").unwrap_err();
        assert!(error.contains("postgresql://") && !error.contains("s3cret"), "{error}");
    }
}
