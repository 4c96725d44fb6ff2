//! From the raw file to a [`Config`]: defaults, validation with located errors, and the
//! environment overrides for secrets.

use std::path::{Path, PathBuf};

use super::file::{
    Document, RawAudit, RawBackup, RawCheck, RawCheckTable, RawCluster, RawConfig, RawDump, RawObjectLock,
    RawRepository, RawS3, RawVerify, RawWal,
};
use super::{
    AuditConfig, BackupConfig, Cipher, ClusterConfig, ClusterName, Compression, CompressionAlgorithm, Config,
    ConfigError, ConfigSource, ConnectionString, DumpConfig, ObjectLock, ObjectLockMode, RepositoryConfig,
    RepositoryUrl, S3Config, SecretOrigin, SqlCheck, VerifyConfig, WalConfig, env,
};
use crate::secret::Secret;
use crate::storage::s3::S3Credentials;

/// Builds located errors for keys of one document.
pub(super) struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    document: Document<'a>,
}

impl Locator<'_> {
    /// An error about `path`, placed at its value, or at the table where it was expected.
    pub(super) fn error(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.file, self.text, self.document.span(path), Some(path.join(".")), message)
    }

    pub(super) fn absolute(&self, path: &[&str], value: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
        match value {
            Some(value) if !value.is_absolute() => Err(self.error(
                path,
                format!(
                    "{:?} is not an absolute path; write the full path (lifeboat runs from any \
                     working directory, the daemon from /)",
                    value.display().to_string()
                ),
            )),
            value => Ok(value),
        }
    }

    fn in_range(
        &self,
        path: &[&str],
        value: Option<i64>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match u32::try_from(value) {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(self.error(path, format!("{value} is out of range ({}..={})", range.start(), range.end()))),
        }
    }
}

pub(super) fn resolve(
    raw: RawConfig,
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let locator = Locator { file, text, document: Document::parse(text) };
    let Some(cluster) = raw.cluster else {
        return Err(ConfigError::invalid(
            file,
            text,
            None,
            Some("cluster".into()),
            "the [cluster] table is missing; add one with at least `name = \"main\"` \
             (see config/lifeboat.example.toml)",
        ));
    };
    let cluster = resolve_cluster(&locator, cluster)?;
    let (repository, mut source) = resolve_repository(&locator, raw.repository.unwrap_or_default())?;
    let repository = apply_env(repository, &mut source, env)?;
    let backup = resolve_backup(&locator, raw.backup.unwrap_or_default())?;
    let dump = resolve_dump(&locator, raw.dump.unwrap_or_default())?;
    let wal = resolve_wal(&locator, raw.wal.unwrap_or_default())?;
    let verify = resolve_verify(&locator, raw.verify.unwrap_or_default())?;
    let audit = resolve_audit(&locator, raw.audit.unwrap_or_default())?;
    let copies = super::copies::resolve(&locator, raw.copies.unwrap_or_default())?;
    let daemon = super::daemon::resolve_daemon(&locator, raw.daemon.unwrap_or_default())?;
    let notify = super::notify::resolve(&locator, raw.notify.unwrap_or_default())?;
    let migrate = super::migrate::resolve(&locator, raw.migrate.unwrap_or_default(), &cluster.connection)?;
    Ok(Config { cluster, repository, backup, dump, wal, verify, audit, copies, daemon, notify, migrate, source })
}

fn resolve_verify(locator: &Locator<'_>, raw: RawVerify) -> Result<VerifyConfig, ConfigError> {
    let key = |name: &'static str| ["verify", name];
    let defaults = VerifyConfig::default();
    let scratch_dir = locator.absolute(&key("scratch_dir"), raw.scratch_dir)?.unwrap_or(defaults.scratch_dir);
    let timeout = match raw.timeout {
        None => defaults.timeout,
        Some(text) => {
            let timeout = super::parse_duration(&text).map_err(|message| locator.error(&key("timeout"), message))?;
            if timeout < VerifyConfig::MIN_TIMEOUT {
                return Err(locator.error(
                    &key("timeout"),
                    format!(
                        "{text:?} is too short: a verification restores a whole backup or dump; give it \
                         at least \"1s\" (default \"{}\")",
                        super::format_duration(VerifyConfig::DEFAULT_TIMEOUT)
                    ),
                ));
            }
            timeout
        }
    };
    let dump_server = match raw.dump_server {
        None => None,
        Some(text) => Some(
            ConnectionString::parse(text.expose()).map_err(|message| locator.error(&key("dump_server"), message))?,
        ),
    };
    let checks = raw
        .checks
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, check)| resolve_check(locator, index, check))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VerifyConfig {
        after_backup: raw.after_backup.unwrap_or(defaults.after_backup),
        scratch_dir,
        dump_server,
        amcheck: raw.amcheck.unwrap_or(defaults.amcheck),
        timeout,
        checks,
        schedule: super::daemon::schedule(locator, &key("schedule"), raw.schedule)?,
    })
}

/// Item `index` of `verify.checks`; errors name it `verify.checks[<index>]`, as serde's do.
fn resolve_check(locator: &Locator<'_>, index: usize, check: RawCheck) -> Result<SqlCheck, ConfigError> {
    let item = format!("checks[{index}]");
    let (database, query, query_key) = match check {
        RawCheck::Query(query) => (None, query, vec!["verify", item.as_str()]),
        RawCheck::Table(RawCheckTable { database, query: Some(query) }) => {
            (database, query, vec!["verify", item.as_str(), "query"])
        }
        RawCheck::Table(RawCheckTable { query: None, .. }) => {
            return Err(locator.error(
                &["verify", &item, "query"],
                "missing required key: the table needs `query = \"...\"`, a query that returns true \
                 when the restored data is good",
            ));
        }
    };
    if query.trim().is_empty() {
        return Err(locator.error(
            &query_key,
            "is an empty query; write one that returns true when the restored data is good, \
             e.g. \"select count(*) > 0 from users\", or remove the item",
        ));
    }
    if query.contains('\0') {
        return Err(locator.error(&query_key, "contains a NUL character, which PostgreSQL cannot take; remove it"));
    }
    if let Some(database) = &database
        && (database.is_empty() || database.contains('\0'))
    {
        return Err(locator.error(
            &["verify", &item, "database"],
            format!(
                "{database:?} is not a database name; name the database the query runs in, or remove \
                 `database` to run it in the database of cluster.connection"
            ),
        ));
    }
    Ok(SqlCheck { database, query })
}

fn resolve_audit(locator: &Locator<'_>, raw: RawAudit) -> Result<AuditConfig, ConfigError> {
    let path = locator.absolute(&["audit", "path"], raw.path)?;
    if path.as_ref().is_some_and(|path| path.file_name().is_none()) {
        return Err(locator.error(&["audit", "path"], "names a directory; name the file the audit lines go to"));
    }
    Ok(path.map_or_else(AuditConfig::default, |path| AuditConfig { path }))
}

fn resolve_wal(locator: &Locator<'_>, raw: RawWal) -> Result<WalConfig, ConfigError> {
    Ok(WalConfig {
        prefetch: locator.in_range(
            &["wal", "prefetch"],
            raw.prefetch,
            WalConfig::DEFAULT_PREFETCH,
            WalConfig::PREFETCH,
        )?,
        spool_dir: locator.absolute(&["wal", "spool_dir"], raw.spool_dir)?,
        check_schedule: super::daemon::schedule(locator, &["wal", "check_schedule"], raw.check_schedule)?,
        push_ahead: locator.in_range(
            &["wal", "push_ahead"],
            raw.push_ahead,
            WalConfig::DEFAULT_PUSH_AHEAD,
            WalConfig::PUSH_AHEAD,
        )?,
        // 1..=19: always an i32.
        compression_level: locator.in_range(
            &["wal", "compression_level"],
            raw.compression_level,
            WalConfig::DEFAULT_COMPRESSION_LEVEL,
            WalConfig::COMPRESSION_LEVELS,
        )? as i32,
    })
}

fn resolve_backup(locator: &Locator<'_>, raw: RawBackup) -> Result<BackupConfig, ConfigError> {
    let defaults = BackupConfig::default();
    let workers = locator.in_range(&["backup", "workers"], raw.workers, defaults.workers, BackupConfig::WORKERS)?;
    let duration = |name: &'static str, raw: Option<String>, default| match raw {
        None => Ok(default),
        Some(text) => super::parse_duration(&text).map_err(|message| locator.error(&["backup", name], message)),
    };
    Ok(BackupConfig {
        workers,
        fast_checkpoint: raw.fast_checkpoint.unwrap_or(defaults.fast_checkpoint),
        lock_wait: duration("lock_wait", raw.lock_wait, defaults.lock_wait)?,
        archive_timeout: duration("archive_timeout", raw.archive_timeout, defaults.archive_timeout)?,
        retention: super::retention::resolve(raw.retention.unwrap_or_default(), &|name, message| {
            locator.error(&["backup", "retention", name], message)
        })?,
        schedule: super::daemon::resolve_backup_schedule(locator, raw.schedule.unwrap_or_default())?,
    })
}

fn resolve_dump(locator: &Locator<'_>, raw: RawDump) -> Result<DumpConfig, ConfigError> {
    let key = |name: &'static str| ["dump", name];
    if let Some(databases) = &raw.databases {
        if databases.is_empty() {
            return Err(locator.error(
                &key("databases"),
                "is an empty list; remove the key to dump every database, or name at least one",
            ));
        }
        if let Some(bad) = databases.iter().find(|name| name.is_empty() || name.contains('\0')) {
            return Err(locator.error(&key("databases"), format!("{bad:?} is not a database name")));
        }
    }
    let lock_wait = match raw.lock_wait {
        None => DumpConfig::DEFAULT_LOCK_WAIT,
        Some(text) => super::parse_duration(&text).map_err(|message| locator.error(&key("lock_wait"), message))?,
    };
    Ok(DumpConfig { databases: raw.databases, lock_wait })
}

fn resolve_cluster(locator: &Locator<'_>, raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
    let name = match raw.name {
        None => {
            return Err(locator.error(
                &["cluster", "name"],
                "missing required key: add `name = \"main\"` (or another name) to [cluster]; it names \
                 the cluster in the repository (clusters/<name>/)",
            ));
        }
        Some(name) => ClusterName::parse(&name).map_err(|message| locator.error(&["cluster", "name"], message))?,
    };
    let connection = match raw.connection {
        None => ConnectionString::default(),
        Some(text) => ConnectionString::parse(text.expose())
            .map_err(|message| locator.error(&["cluster", "connection"], message))?,
    };
    let os_user = raw.os_user.unwrap_or_else(|| "postgres".to_string());
    if os_user.is_empty() || os_user.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') {
        return Err(locator.error(
            &["cluster", "os_user"],
            format!("{os_user:?} is not a user name; the default \"postgres\" is usually right"),
        ));
    }
    Ok(ClusterConfig {
        name,
        pgdata: locator.absolute(&["cluster", "pgdata"], raw.pgdata)?,
        connection,
        bin_dir: locator.absolute(&["cluster", "bin_dir"], raw.bin_dir)?,
        os_user,
    })
}

fn resolve_repository(
    locator: &Locator<'_>,
    raw: RawRepository,
) -> Result<(RepositoryConfig, ConfigSource), ConfigError> {
    let url = raw.url.as_deref().unwrap_or(RepositoryUrl::DEFAULT);
    let url = RepositoryUrl::parse(url).map_err(|message| locator.error(&["repository", "url"], message))?;

    if raw.passphrase.is_some() && raw.passphrase_file.is_some() {
        return Err(locator.error(
            &["repository", "passphrase"],
            "both passphrase and passphrase_file are set; keep one (preferably passphrase_file)",
        ));
    }
    if raw.passphrase.as_ref().is_some_and(|passphrase| passphrase.expose().is_empty()) {
        return Err(locator.error(
            &["repository", "passphrase"],
            "is empty; an empty passphrase protects nothing (better: put one in a file and set passphrase_file)",
        ));
    }
    let passphrase_file = locator.absolute(&["repository", "passphrase_file"], raw.passphrase_file)?;
    let key_file = locator.absolute(&["repository", "key_file"], raw.key_file)?;

    let raw_compression = raw.compression.unwrap_or_default();
    let level = match raw_compression.level {
        None => Compression::DEFAULT_LEVEL,
        Some(level) => {
            i32::try_from(level).ok().filter(|level| Compression::LEVELS.contains(level)).ok_or_else(|| {
                locator.error(
                    &["repository", "compression", "level"],
                    format!(
                        "{level} is out of range ({}..={}); 3 (the default) is fast, 19 is smallest and slowest",
                        Compression::LEVELS.start(),
                        Compression::LEVELS.end()
                    ),
                )
            })?
        }
    };
    let compression = Compression { algorithm: raw_compression.algorithm.unwrap_or(CompressionAlgorithm::Zstd), level };

    let mut s3_credentials_origin = None;
    let s3 = match (&url, raw.s3) {
        (RepositoryUrl::S3 { .. }, s3) => {
            let s3 = resolve_s3(locator, &["repository", "s3"], s3.unwrap_or_default())?;
            if s3.credentials.is_some() {
                s3_credentials_origin = Some(SecretOrigin::Inline("repository.s3.secret_access_key"));
            }
            Some(s3)
        }
        (RepositoryUrl::Local(_), Some(s3)) if s3.object_lock.is_some() || s3.object_lock_days.is_some() => {
            let name = if s3.object_lock.is_some() { "object_lock" } else { "object_lock_days" };
            return Err(locator.error(
                &["repository", "s3", name],
                "Object Lock is an S3 feature and repository.url is a local directory, which cannot make \
                 backups immutable; use an s3:// repository whose bucket has Object Lock enabled, or remove \
                 [repository.s3]",
            ));
        }
        (RepositoryUrl::Local(_), Some(_)) => {
            return Err(locator.error(
                &["repository", "s3"],
                "[repository.s3] is set but repository.url is a local directory, so it would be ignored; \
                 remove the table, or set url = \"s3://bucket/prefix\"",
            ));
        }
        (RepositoryUrl::Local(_), None) => None,
    };

    let passphrase_origin = match (&raw.passphrase, &passphrase_file) {
        (Some(_), _) => Some(SecretOrigin::Inline("repository.passphrase")),
        (None, Some(path)) => {
            Some(SecretOrigin::File { path: path.clone(), named_by: "repository.passphrase_file".into() })
        }
        (None, None) => None,
    };
    let key_file_origin =
        key_file.as_ref().map(|path| SecretOrigin::File { path: path.clone(), named_by: "repository.key_file".into() });
    let source = ConfigSource {
        file: locator.file.to_path_buf(),
        passphrase: passphrase_origin,
        key_file: key_file_origin,
        s3_credentials: s3_credentials_origin,
    };
    let repository = RepositoryConfig {
        url,
        passphrase_file,
        passphrase: raw.passphrase,
        key_file,
        cipher: raw.cipher.unwrap_or(Cipher::Aes256Gcm),
        compression,
        s3,
    };
    Ok((repository, source))
}

/// `[repository.s3]`, or the `s3` table of a copy: `table` is where it is, for errors.
pub(super) fn resolve_s3(locator: &Locator<'_>, table: &[&str; 2], raw: RawS3) -> Result<S3Config, ConfigError> {
    let key = |name: &'static str| [table[0], table[1], name];
    if let Some(endpoint) = &raw.endpoint {
        let authority = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .map(|rest| rest.split('/').next().unwrap_or_default());
        let problem = match authority {
            None => Some(format!("{endpoint:?} must start with https:// (or http:// for a local test server)")),
            Some("") => Some(format!("{endpoint:?} names no host")),
            Some(authority) if authority.contains('@') => Some(
                "must not contain credentials; set access_key_id and secret_access_key instead \
                 (the value is not repeated here)"
                    .to_string(),
            ),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            return Err(locator.error(&key("endpoint"), problem));
        }
    }
    let region = raw.region.unwrap_or_else(|| S3Config::DEFAULT_REGION.to_string());
    if region.is_empty() || region.contains(char::is_whitespace) {
        return Err(locator.error(
            &key("region"),
            format!("{region:?} is not a region name, e.g. \"eu-west-1\" (default \"{}\")", S3Config::DEFAULT_REGION),
        ));
    }
    if let Some(class) = &raw.storage_class
        && (class.is_empty() || !class.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    {
        return Err(locator.error(
            &key("storage_class"),
            format!("{class:?} is not a storage class, e.g. \"STANDARD\" or \"STANDARD_IA\""),
        ));
    }
    let credentials = match (raw.access_key_id, raw.secret_access_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(locator.error(
                &key("access_key_id"),
                "is set but secret_access_key is not: set both, or neither to use the standard AWS chain \
                 (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role, ...)",
            ));
        }
        (None, Some(_)) => {
            return Err(locator.error(
                &key("secret_access_key"),
                "is set but access_key_id is not: set both, or neither to use the standard AWS chain \
                 (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role, ...)",
            ));
        }
        (Some(id), Some(_)) if id.is_empty() => {
            return Err(locator.error(&key("access_key_id"), "is empty"));
        }
        (Some(_), Some(secret)) if secret.expose().is_empty() => {
            return Err(locator.error(&key("secret_access_key"), "is empty"));
        }
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(S3Credentials { access_key_id, secret_access_key, session_token: None })
        }
    };
    let object_lock = resolve_object_lock(locator, raw.object_lock, raw.object_lock_days)?;
    Ok(S3Config {
        object_lock,
        endpoint: raw.endpoint,
        region,
        force_path_style: raw.force_path_style.unwrap_or(false),
        storage_class: raw.storage_class,
        credentials,
        part_size_mib: locator.in_range(
            &key("part_size_mib"),
            raw.part_size_mib,
            S3Config::DEFAULT_PART_SIZE_MIB,
            S3Config::PART_SIZE_MIB,
        )?,
        max_attempts: locator.in_range(
            &key("max_attempts"),
            raw.max_attempts,
            S3Config::DEFAULT_MAX_ATTEMPTS,
            S3Config::MAX_ATTEMPTS,
        )?,
    })
}

/// `object_lock = { mode, days }`, or its shorthand `object_lock_days = N` (governance mode).
fn resolve_object_lock(
    locator: &Locator<'_>,
    table: Option<RawObjectLock>,
    days: Option<i64>,
) -> Result<Option<ObjectLock>, ConfigError> {
    const KEY: [&str; 3] = ["repository", "s3", "object_lock"];
    let days_in_range = |path: &[&str], days: i64| {
        u32::try_from(days).ok().filter(|days| ObjectLock::DAYS.contains(days)).ok_or_else(|| {
            locator.error(
                path,
                format!(
                    "{days} is out of range ({}..={}): the number of days each backup, dump and WAL \
                     segment stays undeletable after it is written",
                    ObjectLock::DAYS.start(),
                    ObjectLock::DAYS.end()
                ),
            )
        })
    };
    match (table, days) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(locator.error(
            &["repository", "s3", "object_lock_days"],
            "both object_lock and object_lock_days are set; keep one (object_lock_days = N means \
             object_lock = { mode = \"governance\", days = N })",
        )),
        (None, Some(days)) => Ok(Some(ObjectLock {
            mode: ObjectLockMode::Governance,
            days: days_in_range(&["repository", "s3", "object_lock_days"], days)?,
        })),
        (Some(RawObjectLock { mode, days }), None) => {
            let Some(mode) = mode else {
                return Err(locator.error(
                    &KEY,
                    "needs a mode: \"governance\" (removable by users allowed to bypass it) or \
                     \"compliance\" (removable by nobody until the date), e.g. \
                     object_lock = { mode = \"governance\", days = 30 }",
                ));
            };
            let Some(days) = days else {
                return Err(locator.error(
                    &KEY,
                    "needs days: how long each object stays undeletable after it is written, e.g. \
                     object_lock = { mode = \"governance\", days = 30 }",
                ));
            };
            Ok(Some(ObjectLock { mode, days: days_in_range(&["repository", "s3", "object_lock", "days"], days)? }))
        }
    }
}

/// The environment beats the file: `LIFEBOAT_PASSPHRASE`, then `LIFEBOAT_PASSPHRASE_FILE`,
/// replace whatever passphrase setting the file has; `LIFEBOAT_KEY_FILE` replaces `key_file`.
/// An empty variable counts as unset (service managers often set variables to "").
fn apply_env(
    mut repository: RepositoryConfig,
    source: &mut ConfigSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RepositoryConfig, ConfigError> {
    let var = |name: &'static str| {
        let value = env(name)?;
        if value.is_empty() {
            tracing::warn!("{name} is set but empty; ignoring it");
            return None;
        }
        Some(value)
    };
    if let Some(passphrase) = var(env::PASSPHRASE) {
        repository.passphrase = Some(Secret::new(passphrase));
        repository.passphrase_file = None;
        source.passphrase = Some(SecretOrigin::Env(env::PASSPHRASE));
    } else if let Some(path) = var(env::PASSPHRASE_FILE) {
        let path = env_path(env::PASSPHRASE_FILE, &path)?;
        repository.passphrase = None;
        repository.passphrase_file = Some(path.clone());
        source.passphrase = Some(SecretOrigin::File { path, named_by: format!("env {}", env::PASSPHRASE_FILE) });
    }
    if let Some(path) = var(env::KEY_FILE) {
        let path = env_path(env::KEY_FILE, &path)?;
        repository.key_file = Some(path.clone());
        source.key_file = Some(SecretOrigin::File { path, named_by: format!("env {}", env::KEY_FILE) });
    }
    Ok(repository)
}

/// A path from the environment, made absolute against the working directory (where the person
/// who set it was).
fn env_path(var: &'static str, value: &str) -> Result<PathBuf, ConfigError> {
    std::path::absolute(value)
        .map_err(|error| ConfigError::Env { var, message: format!("cannot make {value:?} an absolute path: {error}") })
}
