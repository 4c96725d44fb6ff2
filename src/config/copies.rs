//! `[[copies]]`: second repositories (another region, another provider) that `lifeboat copy`
//! keeps up to date with `[repository]`, and that `--repository NAME` reads from instead of it.
//!
//! A copy has its own URL and S3 settings but no key of its own: it holds the primary's master key
//! (`lifeboat init --copy NAME` puts it there), so the key material of `[repository]` opens it.

use serde::Deserialize;

use super::file::RawS3;
use super::resolve::{Locator, resolve_s3};
use super::retention::RawRetention;
use super::{Config, ConfigError, RepositoryUrl, Retention, S3Config, Schedule};

/// The copies of the configuration, and which of them this process reads instead of the primary.
#[derive(Debug, Clone, Default)]
pub struct Copies {
    /// In the order written; names are unique.
    pub list: Vec<CopyConfig>,
    /// `Some(name)` when the configuration was turned into copy `name`'s ([`Config::for_copy`]):
    /// `repository.url` and `repository.s3` are then the copy's, and a restore's
    /// `restore_command` must read WAL from that copy too.
    pub opened: Option<String>,
}

impl Copies {
    pub fn get(&self, name: &str) -> Option<&CopyConfig> {
        self.list.iter().find(|copy| copy.name == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|copy| copy.name.clone()).collect()
    }
}

/// One `[[copies]]` entry, defaults filled in.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    /// `[a-zA-Z0-9_.-]{1,64}`: what `--to` and `--repository` name it by.
    pub name: String,
    pub url: RepositoryUrl,
    /// `Some` exactly when `url` is `s3://`.
    pub s3: Option<S3Config>,
    /// The copy's own retention policy (a copy may keep more than the primary); `None` applies
    /// `[backup] retention` to it too.
    pub retention: Option<Retention>,
    /// When the daemon brings this copy up to date; `None`: after each scheduled backup or dump
    /// that succeeded.
    pub schedule: Option<Schedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCopy {
    pub name: Option<String>,
    pub url: Option<String>,
    pub s3: Option<RawS3>,
    pub retention: Option<RawRetention>,
    pub schedule: Option<String>,
}

/// Whether `key` (an error path such as `copies[1].s3.secret_access_key`) may hold a secret.
pub(super) fn is_secret_key(key: &str) -> bool {
    key.starts_with("copies[") && (key.ends_with(".s3.access_key_id") || key.ends_with(".s3.secret_access_key"))
}

#[derive(Debug, thiserror::Error)]
pub enum CopySelectError {
    #[error("{file} has no copy named {name:?} ({available}); copies are the [[copies]] entries of the configuration")]
    Unknown { file: String, name: String, available: String },
}

pub(super) fn resolve(locator: &Locator<'_>, raw: Vec<RawCopy>) -> Result<Copies, ConfigError> {
    let mut list: Vec<CopyConfig> = Vec::new();
    for (index, copy) in raw.into_iter().enumerate() {
        let item = format!("copies[{index}]");
        let name = copy.name.ok_or_else(|| {
            locator.error(
                &[&item, "name"],
                "missing required key: each copy needs `name = \"offsite\"` (or another name); \
                 `lifeboat copy --to` and `--repository` use it",
            )
        })?;
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name.is_empty() || name.len() > 64 || !valid {
            return Err(locator.error(
                &[&item, "name"],
                format!("{name:?} is not a copy name: use 1 to 64 letters, digits, '_', '.' or '-', e.g. \"offsite\""),
            ));
        }
        if list.iter().any(|other| other.name == name) {
            return Err(locator.error(&[&item, "name"], format!("{name:?} names two copies; give each its own name")));
        }
        let url = copy.url.ok_or_else(|| {
            locator.error(&[&item, "url"], "missing required key: where the copy is, e.g. \"s3://bucket/prefix\"")
        })?;
        let url = RepositoryUrl::parse(&url).map_err(|message| locator.error(&[&item, "url"], message))?;
        let s3 = match (&url, copy.s3) {
            (RepositoryUrl::S3 { .. }, s3) => Some(resolve_s3(locator, &[&item, "s3"], s3.unwrap_or_default())?),
            (RepositoryUrl::Local(_), Some(_)) => {
                return Err(locator.error(
                    &[&item, "s3"],
                    "[copies.s3] is set but this copy's url is a local directory, so it would be ignored; \
                     remove the table, or set url = \"s3://bucket/prefix\"",
                ));
            }
            (RepositoryUrl::Local(_), None) => None,
        };
        let retention = match copy.retention {
            None => None,
            Some(raw) => Some(super::retention::resolve(raw, &|key, message| {
                locator.error(&[&item, "retention", key], message)
            })?),
        };
        let schedule = super::daemon::schedule(locator, &[&item, "schedule"], copy.schedule)?;
        list.push(CopyConfig { name, url, s3, retention, schedule });
    }
    Ok(Copies { list, opened: None })
}

impl Config {
    /// This configuration turned into copy `name`'s: its URL and S3 settings in place of
    /// `[repository]`'s, the same key material, and `copies.opened` set. Opening the result (with
    /// [`crate::ops::open`]) opens the copy.
    pub fn for_copy(&self, name: &str) -> Result<Config, CopySelectError> {
        let copy = self.copies.get(name).ok_or_else(|| CopySelectError::Unknown {
            file: self.source.file.display().to_string(),
            name: name.to_owned(),
            available: match self.copies.names() {
                names if names.is_empty() => "it has none".to_owned(),
                names => format!("it has {}", names.join(", ")),
            },
        })?;
        let mut config = self.clone();
        config.repository.url = copy.url.clone();
        config.repository.s3 = copy.s3.clone();
        if let Some(retention) = &copy.retention {
            config.backup.retention = retention.clone();
        }
        config.source.s3_credentials = copy
            .s3
            .as_ref()
            .and_then(|s3| s3.credentials.as_ref())
            .map(|_| super::SecretOrigin::Inline("copies.s3.secret_access_key"));
        config.copies.opened = Some(name.to_owned());
        Ok(config)
    }
}

/// The `[[copies]]` entries for `config show`, credentials redacted.
pub(super) fn write_redacted(copies: &Copies, out: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    for copy in &copies.list {
        writeln!(out, "\n[[copies]]")?;
        writeln!(out, "name = {}", super::show::quote(&copy.name))?;
        writeln!(out, "url = {}", super::show::quote(&copy.url.to_string()))?;
        match &copy.retention {
            Some(retention) => writeln!(out, "retention = {retention}")?,
            None => writeln!(out, "# retention: not set ([backup] retention applies)")?,
        }
        match &copy.schedule {
            Some(schedule) => writeln!(out, "schedule = {}", super::show::quote(schedule.as_str()))?,
            None => writeln!(out, "# schedule: not set (the daemon copies after each scheduled backup or dump)")?,
        }
        if let Some(s3) = &copy.s3 {
            writeln!(out, "\n[copies.s3]")?;
            super::show::write_s3(out, s3)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const PRIMARY: &str = "[cluster]\nname = \"main\"\n[repository]\nurl = \"file:///srv/primary\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{PRIMARY}{extra}"), Path::new("/etc/lifeboat/lifeboat.toml"), &|_| None)
    }

    #[test]
    fn a_copy_is_the_primary_configuration_with_the_copys_place() {
        let config = parse(
            "[[copies]]\nname = \"offsite\"\nurl = \"s3://dr-site/prod\"\n[copies.s3]\nendpoint = \"http://127.0.0.1:9\"\n\
             access_key_id = \"AKID\"\nsecret_access_key = \"very-secret-key\"\n\
             [[copies]]\nname = \"nearby\"\nurl = \"file:///srv/copy\"\n",
        )
        .unwrap();
        assert_eq!(config.copies.names(), ["offsite", "nearby"]);
        let offsite = config.for_copy("offsite").unwrap();
        assert_eq!(offsite.repository.url, RepositoryUrl::S3 { bucket: "dr-site".into(), prefix: "prod".into() });
        assert_eq!(offsite.copies.opened.as_deref(), Some("offsite"));
        assert_eq!(offsite.s3_settings().unwrap().endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert!(config.for_copy("nearby").unwrap().repository.s3.is_none());
        let unknown = config.for_copy("elsewhere").unwrap_err().to_string();
        assert!(unknown.contains("\"elsewhere\"") && unknown.contains("offsite, nearby"), "{unknown}");
        let shown = config.to_redacted_toml();
        assert!(shown.contains("[[copies]]\nname = \"offsite\"") && !shown.contains("very-secret-key"), "{shown}");
    }

    #[test]
    fn a_copy_applies_its_own_retention_or_the_primarys() {
        let config = parse(
            "[backup]\nretention = { full = 2 }\n[[copies]]\nname = \"long\"\nurl = \"file:///srv/long\"\n\
             retention = { full = 6, recovery_window = \"30d\" }\n[[copies]]\nname = \"same\"\nurl = \"file:///srv/same\"\n",
        )
        .unwrap();
        assert_eq!(
            config.for_copy("long").unwrap().backup.retention.to_string(),
            "{ full = 6, recovery_window = \"30d\" }"
        );
        assert_eq!(config.for_copy("same").unwrap().backup.retention.to_string(), "{ full = 2 }");
        let shown = config.to_redacted_toml();
        assert!(shown.contains("retention = { full = 6, recovery_window = \"30d\" }"), "{shown}");
        let error = parse("[[copies]]\nname = \"a\"\nurl = \"file:///x\"\nretention = { full = -1 }\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("copies[0].retention.full"), "{error}");
    }

    #[test]
    fn copies_are_checked_where_they_are_written() {
        let error =
            parse("[[copies]]\nname = \"a\"\nurl = \"file:///x\"\n[[copies]]\nname = \"a\"\nurl = \"file:///y\"\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("copies[1].name") && error.contains("names two copies"), "{error}");
        let error = parse("[[copies]]\nurl = \"file:///x\"\n").unwrap_err().to_string();
        assert!(error.contains("copies[0].name") && error.contains("missing required key"), "{error}");
        let error = parse("[[copies]]\nname = \"a\"\nurl = \"file:///x\"\n[copies.s3]\nregion = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("local directory"), "{error}");
        let error = parse("[[copies]]\nname = \"a\"\nurl = \"s3://bucket\"\n[copies.s3]\nsecret_access_key = 42\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("copies[0].s3.secret_access_key") && !error.contains("42"), "{error}");
    }
}
