//! The configuration file as written: serde types that mirror the TOML one to one, and the
//! translation of TOML and serde errors into located [`ConfigError`]s.
//!
//! Every field is optional here; defaults and validation live in one place, `resolve.rs`, so a
//! missing required key gets a message naming it instead of serde's "missing field".
//! `deny_unknown_fields` everywhere: a key lifeboat would ignore must not look accepted.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use super::{AmcheckLevel, Cipher, CompressionAlgorithm};
use crate::secret::Secret;
use crate::storage::s3::ObjectLockMode;

/// Keys whose values are secret (or may contain one): errors about them never quote the value.
pub(super) const SECRET_KEYS: &[&str] = &[
    "cluster.connection",
    "repository.passphrase",
    "repository.s3.access_key_id",
    "repository.s3.secret_access_key",
    "verify.dump_server",
    "notify.webhook",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub cluster: Option<RawCluster>,
    pub repository: Option<RawRepository>,
    pub backup: Option<RawBackup>,
    pub dump: Option<RawDump>,
    pub wal: Option<RawWal>,
    pub verify: Option<RawVerify>,
    pub audit: Option<RawAudit>,
    pub copies: Option<Vec<super::copies::RawCopy>>,
    pub daemon: Option<super::daemon::RawDaemon>,
    pub notify: Option<super::notify::RawNotify>,
    pub migrate: Option<super::migrate::RawMigrate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: Option<String>,
    pub pgdata: Option<PathBuf>,
    pub connection: Option<Secret>,
    pub bin_dir: Option<PathBuf>,
    pub os_user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub url: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase: Option<Secret>,
    pub key_file: Option<PathBuf>,
    pub cipher: Option<Cipher>,
    pub compression: Option<RawCompression>,
    pub s3: Option<RawS3>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompression {
    pub algorithm: Option<CompressionAlgorithm>,
    /// i64 rather than i32 so that any integer reaches the range check and its clear message.
    pub level: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: Option<bool>,
    pub storage_class: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub part_size_mib: Option<i64>,
    pub max_attempts: Option<i64>,
    pub object_lock: Option<RawObjectLock>,
    /// DESIGN.md's spelling: governance mode for this many days.
    pub object_lock_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjectLock {
    pub mode: Option<ObjectLockMode>,
    pub days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub workers: Option<i64>,
    pub fast_checkpoint: Option<bool>,
    pub lock_wait: Option<String>,
    pub archive_timeout: Option<String>,
    pub retention: Option<super::retention::RawRetention>,
    pub schedule: Option<super::daemon::RawBackupSchedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDump {
    pub databases: Option<Vec<String>>,
    pub lock_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWal {
    pub prefetch: Option<i64>,
    pub spool_dir: Option<PathBuf>,
    pub check_schedule: Option<String>,
    pub push_ahead: Option<i64>,
    pub compression_level: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub after_backup: Option<bool>,
    pub scratch_dir: Option<PathBuf>,
    pub dump_server: Option<Secret>,
    pub amcheck: Option<AmcheckLevel>,
    pub timeout: Option<String>,
    pub checks: Option<Vec<RawCheck>>,
    pub schedule: Option<String>,
}

/// An item of `verify.checks`: a query string (run in the database of `cluster.connection`), or
/// an inline table `{ database = "...", query = "..." }`.
///
/// Deserialised by hand rather than as an untagged enum, whose only error is "data did not match
/// any variant": this way a wrong item says what an item may be, and an unknown key in the table
/// is named as such, at `verify.checks[<index>]`.
#[derive(Debug)]
pub(super) enum RawCheck {
    Query(String),
    Table(RawCheckTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheckTable {
    pub database: Option<String>,
    pub query: Option<String>,
}

impl<'de> Deserialize<'de> for RawCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckVisitor;

        impl<'de> Visitor<'de> for CheckVisitor {
            type Value = RawCheck;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(
                    "a query string, or a table { database = \"...\", query = \"...\" } to run it in \
                     another database",
                )
            }

            fn visit_str<E: de::Error>(self, query: &str) -> Result<RawCheck, E> {
                Ok(RawCheck::Query(query.to_owned()))
            }

            fn visit_string<E: de::Error>(self, query: String) -> Result<RawCheck, E> {
                Ok(RawCheck::Query(query))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCheck, A::Error> {
                RawCheckTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawCheck::Table)
            }
        }

        deserializer.deserialize_any(CheckVisitor)
    }
}

/// Deserialises `text`, read from `file`, into the raw types.
pub(super) fn parse(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| syntax_error(file, text, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let key = (path != ".").then_some(path);
        let inner = error.into_inner();
        let span = inner.span().or_else(|| {
            let segments: Vec<&str> = key.as_deref().map(|key| key.split('.').collect()).unwrap_or_default();
            Document::parse(text).span(&segments)
        });
        let message = describe(key.as_deref(), inner.message());
        ConfigError::invalid(file, text, span, key, message)
    })
}

/// A TOML syntax error. toml's own Display quotes the offending source line, which could hold a
/// secret, so only its message (which names grammar, never content) and position are used.
fn syntax_error(file: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let span = error.span();
    let message = match (error.message(), &span) {
        ("duplicate key", Some(span)) => match text.get(span.clone()) {
            Some(key) if key.len() <= 64 && !key.contains('\n') => {
                format!("invalid TOML: the key {key} is set twice; keep one")
            }
            _ => "invalid TOML: a key is set twice; keep one".to_string(),
        },
        (message, _) => format!("invalid TOML: {message}"),
    };
    ConfigError::invalid(file, text, span, None, message)
}

/// Rewords serde's messages for a DBA (TOML words, not Rust types) and keeps secrets out.
fn describe(key: Option<&str>, message: &str) -> String {
    if key.is_some_and(|key| {
        SECRET_KEYS.contains(&key) || super::copies::is_secret_key(key) || super::migrate::is_secret_key(key)
    }) {
        // The only thing that can be wrong with a string field is the type, and serde's message
        // quotes the value.
        return "expected a string (the value is not repeated here because it may be a secret)".into();
    }
    let mut message = message
        .replace("unknown field", "unknown key")
        .replace("unknown variant", "unknown value")
        .replace("wanted string or table", "invalid type: expected a string")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected path string", "expected a string (a path)");
    for integer in ["i64", "i32", "u64", "u32", "usize"] {
        message = message.replace(&format!("expected {integer}"), "expected an integer");
    }
    if let Some(start) = message.find("expected struct ") {
        let end = message[start + "expected struct ".len()..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(message.len(), |end| start + "expected struct ".len() + end);
        message.replace_range(start..end, "expected a table");
    }
    if message.starts_with("unknown key") {
        message.push_str(
            "; lifeboat refuses keys it does not know rather than ignore them: check the spelling \
             against config/lifeboat.example.toml",
        );
    }
    message
}

/// The parsed document, kept only to find where a key is written, for errors found after
/// deserialising. Parsing twice is cheap next to the value of a line number.
pub(super) struct Document<'a> {
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Document<'a> {
    pub fn parse(text: &'a str) -> Document<'a> {
        Document { root: DeTable::parse(text).ok() }
    }

    /// The byte range of the value at `path` (for a table, its header), or of the nearest
    /// enclosing table that is written in the file. A segment may index into an array the way
    /// error paths write it: `["verify", "checks[1]", "query"]`.
    pub fn span(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut table = Some(self.root.as_ref()?.get_ref());
        let mut found = None;
        'segments: for segment in path {
            let (name, indices) = split_indices(segment);
            let Some(mut value) = table.and_then(|table| table.get(name)) else {
                break;
            };
            found = Some(value.span());
            for index in indices {
                let DeValue::Array(items) = value.get_ref() else {
                    break 'segments;
                };
                let Some(item) = items.get(index) else {
                    break 'segments;
                };
                value = item;
                found = Some(value.span());
            }
            table = match value.get_ref() {
                DeValue::Table(inner) => Some(inner),
                _ => None,
            };
        }
        found
    }
}

/// `"checks[1]"` is `("checks", [1])`; a segment without a well-formed index is all name.
fn split_indices(segment: &str) -> (&str, Vec<usize>) {
    let Some(open) = segment.find('[') else {
        return (segment, Vec::new());
    };
    let indices: Option<Vec<usize>> = segment[open..]
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .map(|inner| inner.split("][").map(|index| index.parse().ok()).collect::<Option<Vec<usize>>>())
        .unwrap_or(None);
    match indices {
        Some(indices) => (&segment[..open], indices),
        None => (segment, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_tables_and_nearest_parents() {
        let text = "[cluster]\nname = \"x\"\n\n[repository]\ncompression = { level = 42 }\n";
        let document = Document::parse(text);
        let at = |path: &[&str]| document.span(path).map(|span| &text[span]);
        assert_eq!(at(&["cluster", "name"]), Some("\"x\""));
        assert_eq!(at(&["cluster"]), Some("[cluster]"));
        assert_eq!(at(&["repository", "compression", "level"]), Some("42"));
        assert_eq!(at(&["repository", "url"]), Some("[repository]"));
        assert_eq!(at(&["nothing"]), None);

        let text = "[verify]\nchecks = [\n  \"select true\",\n  { database = \"app\", query = \"\" },\n]\n";
        let document = Document::parse(text);
        let at = |path: &[&str]| document.span(path).map(|span| &text[span]);
        assert_eq!(at(&["verify", "checks[0]"]), Some("\"select true\""));
        assert_eq!(at(&["verify", "checks[1]", "database"]), Some("\"app\""));
        assert_eq!(at(&["verify", "checks[1]", "query"]), Some("\"\""));
        // Past the end of the array, or into a string: the nearest thing that is written.
        assert!(at(&["verify", "checks[2]"]).is_some_and(|span| span.starts_with('[')));
        assert_eq!(at(&["verify", "checks[0]", "query"]), Some("\"select true\""));
        assert_eq!(split_indices("checks[1]"), ("checks", vec![1]));
        assert_eq!(split_indices("a[0][2]"), ("a", vec![0, 2]));
        assert_eq!(split_indices("odd[x]"), ("odd[x]", vec![]));
    }

    #[test]
    fn messages_speak_toml() {
        assert_eq!(
            describe(Some("cluster"), "invalid type: integer `5`, expected struct RawCluster"),
            "invalid type: integer `5`, expected a table"
        );
        assert_eq!(
            describe(Some("repository.s3.max_attempts"), "invalid type: string \"x\", expected i64"),
            "invalid type: string \"x\", expected an integer"
        );
        assert!(
            describe(Some("repository.passphrase"), "invalid type: integer `123`, expected a string")
                .starts_with("expected a string (the value is not repeated")
        );
    }
}
