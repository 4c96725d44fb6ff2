//! The configuration: `/etc/lifeboat/lifeboat.toml` (or `--config`, or `$LIFEBOAT_CONFIG`), then
//! the environment, validated into a typed [`Config`] that the rest of lifeboat trusts.
//!
//! This module owns:
//! - the file format (`file.rs`, mirrored by `config/lifeboat.example.toml`, which documents
//!   every key) and the rule that unknown keys are errors;
//! - defaults and validation (`resolve.rs`), with errors that name file, line, column and key (G8);
//! - environment overrides for secrets: `LIFEBOAT_PASSPHRASE`, `LIFEBOAT_PASSPHRASE_FILE`,
//!   `LIFEBOAT_KEY_FILE` (AWS variables are left to the AWS SDK's own chain);
//! - where each secret came from ([`ConfigSource`]) and which key unlocks the repository
//!   ([`Config::key_source`]);
//! - `lifeboat config show` ([`Config::to_redacted_toml`]), which never prints a secret (G5).
//!
//! Precedence for the passphrase, first match wins: `key_file` (from `LIFEBOAT_KEY_FILE` or the
//! file) for unlocking; then `LIFEBOAT_PASSPHRASE`, `LIFEBOAT_PASSPHRASE_FILE`, and only when
//! neither is set, `repository.passphrase` or `repository.passphrase_file` from the file.

mod connection;
mod copies;
mod daemon;
mod duration;
mod error;
mod file;
mod migrate;
mod notify;
mod resolve;
mod retention;
mod show;
mod size;
mod url;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

/// The object format's cipher: `"aes-256-gcm"` (the default) or `"none"`. One type for the
/// configuration and the object headers, so `repository.cipher` needs no translation.
pub use crate::object::Cipher;
/// The object format's compression algorithm: `"zstd"` (the default) or `"none"`.
pub use crate::object::Compression as CompressionAlgorithm;
pub use connection::{ConnectionString, LibpqConnection};
pub use copies::{Copies, CopyConfig, CopySelectError};
pub use daemon::{BackupSchedule, DaemonConfig, Schedule};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, Invalid};
pub use migrate::{
    Environment, GateBackup, LintConfig, MigrateConfig, MigrationLayout, SchemaCheckMode, ServerVersion, TableName,
};
pub use notify::{NotifyConfig, NotifyEvent, Webhook, WebhookFormat};
pub use retention::Retention;
pub use size::{format_size, parse_size};
pub use url::RepositoryUrl;

use crate::secret::Secret;
use crate::storage::s3::{ObjectLock, ObjectLockMode, S3Credentials, S3Settings};

/// Where the configuration file is when neither `--config` nor `LIFEBOAT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/lifeboat/lifeboat.toml";

/// The environment variables lifeboat reads (besides `LIFEBOAT_LOG`, read by the CLI).
pub mod env {
    pub const CONFIG: &str = "LIFEBOAT_CONFIG";
    pub const PASSPHRASE: &str = "LIFEBOAT_PASSPHRASE";
    pub const PASSPHRASE_FILE: &str = "LIFEBOAT_PASSPHRASE_FILE";
    pub const KEY_FILE: &str = "LIFEBOAT_KEY_FILE";
}

/// The resolved configuration: file, defaults and environment, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub repository: RepositoryConfig,
    pub backup: BackupConfig,
    pub dump: DumpConfig,
    pub wal: WalConfig,
    pub verify: VerifyConfig,
    pub audit: AuditConfig,
    /// `[[copies]]`: second repositories kept up to date by `lifeboat copy`.
    pub copies: Copies,
    /// `[daemon]`: how `lifeboat daemon` runs its schedules and where it serves its status.
    pub daemon: DaemonConfig,
    /// `[notify]`: where the daemon reports failures, recoveries and a stale verified backup.
    pub notify: NotifyConfig,
    /// `[migrate]`: the migration directory, its environments and the backup gate.
    pub migrate: MigrateConfig,
    /// Where this configuration and its secrets came from, for `config show` and error messages.
    pub source: ConfigSource,
}

/// `[cluster]`: the PostgreSQL cluster this lifeboat looks after.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Names the cluster in the repository (`clusters/<name>/`), logs, metrics and notifications.
    pub name: ClusterName,
    /// The data directory; needed by physical backups taken on the database host.
    pub pgdata: Option<PathBuf>,
    /// How to connect; may carry a password, so it prints redacted.
    pub connection: ConnectionString,
    /// Where `pg_ctl`, `pg_basebackup`, ... are; `None` means discover them.
    pub bin_dir: Option<PathBuf>,
    /// The unprivileged user that runs `initdb`/`pg_ctl`/`postgres` when lifeboat runs as root.
    pub os_user: String,
}

/// `[repository]`: where backups go and how they are protected.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    pub url: RepositoryUrl,
    /// After environment overrides: at most one of `passphrase` and `passphrase_file` is set.
    pub passphrase_file: Option<PathBuf>,
    pub passphrase: Option<Secret>,
    /// A key file slot: unlocks without Argon2id, which matters for `wal-push` (once per segment).
    pub key_file: Option<PathBuf>,
    /// Used by `lifeboat init`; an existing repository's cipher is read from `lifeboat.repo`.
    pub cipher: Cipher,
    pub compression: Compression,
    /// `Some` exactly when `url` is `s3://`.
    pub s3: Option<S3Config>,
}

/// `repository.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: CompressionAlgorithm,
    /// zstd level, 1..=19; ignored with `algorithm = "none"`.
    pub level: i32,
}

impl Compression {
    pub const DEFAULT_LEVEL: i32 = 3;
    pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
}

impl Default for Compression {
    fn default() -> Self {
        Compression { algorithm: CompressionAlgorithm::Zstd, level: Self::DEFAULT_LEVEL }
    }
}

/// `[repository.s3]`, defaults filled in.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub storage_class: Option<String>,
    /// Static credentials; `None` leaves them to the standard AWS chain.
    pub credentials: Option<S3Credentials>,
    pub part_size_mib: u32,
    pub max_attempts: u32,
    /// Backups, dumps, WAL, verification reports, the journal, lifeboat.repo and the cluster
    /// record are written under this retention (`object_lock`, or `object_lock_days` for
    /// governance mode); see `catalog::layout::retain`.
    pub object_lock: Option<ObjectLock>,
}

impl S3Config {
    pub const DEFAULT_REGION: &str = "us-east-1";
    pub const DEFAULT_PART_SIZE_MIB: u32 = 16;
    pub const PART_SIZE_MIB: std::ops::RangeInclusive<u32> = 5..=5120;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=20;
}

/// `[backup]`: physical base backups (`lifeboat backup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// Files read, hashed, compressed, encrypted and uploaded at once. Default: the number of
    /// cores, since compression is what a backup spends its CPU on.
    pub workers: u32,
    /// `pg_backup_start(fast => true)`: an immediate checkpoint instead of a spread one, so the
    /// backup starts at once at the price of a burst of writes.
    pub fast_checkpoint: bool,
    /// How long a backup waits for another backup (or delete) of the cluster to finish before
    /// giving up, naming the holder of the lease.
    pub lock_wait: std::time::Duration,
    /// How long a backup waits, once PostgreSQL has handed its last WAL segment to
    /// `archive_command`, for the segments it needs to appear in its own repository. Past it the
    /// backup fails instead of being recorded as complete: without that WAL it cannot be restored.
    pub archive_timeout: std::time::Duration,
    /// What `lifeboat expire` keeps (`[backup] retention`); empty: everything.
    pub retention: Retention,
    /// When the daemon takes backups and dumps and applies the retention policy.
    pub schedule: BackupSchedule,
}

impl BackupConfig {
    pub const WORKERS: std::ops::RangeInclusive<u32> = 1..=256;
    pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
    pub const DEFAULT_ARCHIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    /// The default number of workers: the cores this process may use.
    pub fn default_workers() -> u32 {
        std::thread::available_parallelism().map_or(1, |cores| cores.get() as u32).clamp(1, *Self::WORKERS.end())
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            workers: Self::default_workers(),
            fast_checkpoint: true,
            lock_wait: Self::DEFAULT_LOCK_WAIT,
            archive_timeout: Self::DEFAULT_ARCHIVE_TIMEOUT,
            retention: Retention::default(),
            schedule: BackupSchedule::default(),
        }
    }
}

/// `[dump]`: logical dumps (`lifeboat dump`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpConfig {
    /// The databases `lifeboat dump` takes without `--db` or `--all`; `None` means every database
    /// that is not a template and allows connections.
    pub databases: Option<Vec<String>>,
    /// How long a dump waits for a backup, delete or other dump of the cluster to finish (they
    /// share one lease) before giving up, naming the holder.
    pub lock_wait: std::time::Duration,
}

impl DumpConfig {
    pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
}

impl Default for DumpConfig {
    fn default() -> Self {
        DumpConfig { databases: None, lock_wait: Self::DEFAULT_LOCK_WAIT }
    }
}

/// `[audit]`: the local copy of the audit trail (see `crate::ops::audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The JSON-lines file every operation appends its record to.
    pub path: PathBuf,
}

impl AuditConfig {
    pub const DEFAULT_PATH: &'static str = "/var/log/lifeboat/audit.jsonl";
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { path: PathBuf::from(Self::DEFAULT_PATH) }
    }
}

/// `[wal]`: WAL archiving (`wal-push`) and restoring (`wal-fetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// How many segments after the requested one `wal-fetch` keeps downloaded ahead; 0 turns
    /// prefetching off.
    pub prefetch: u32,
    /// Where prefetched segments wait, in a subdirectory per cluster name. `None`:
    /// `.lifeboat-spool` in the directory of `%p` (`pg_wal/.lifeboat-spool`), always writable by
    /// PostgreSQL and on the same filesystem.
    pub spool_dir: Option<PathBuf>,
    /// When the daemon runs the WAL continuity check (`lifeboat wal check`).
    pub check_schedule: Option<Schedule>,
    /// How many `.ready` segments the daemon stores ahead of PostgreSQL's archiver, in parallel,
    /// once `wal-push` hands segments to it; 0: it stores only what it is asked for.
    pub push_ahead: u32,
    /// zstd level of archived WAL (`repository.compression.level` is the rest's): WAL compresses
    /// about as well at 1 as at 3, for half the CPU of each push.
    pub compression_level: i32,
}

impl WalConfig {
    pub const DEFAULT_PREFETCH: u32 = 8;
    pub const PREFETCH: std::ops::RangeInclusive<u32> = 0..=64;
    pub const DEFAULT_PUSH_AHEAD: u32 = 4;
    pub const PUSH_AHEAD: std::ops::RangeInclusive<u32> = 0..=64;
    pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;
    pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<u32> = 1..=19;
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            prefetch: Self::DEFAULT_PREFETCH,
            spool_dir: None,
            check_schedule: None,
            push_ahead: Self::DEFAULT_PUSH_AHEAD,
            compression_level: Self::DEFAULT_COMPRESSION_LEVEL as i32,
        }
    }
}

/// `[verify]`: proving backups and dumps by restoring them (`lifeboat verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// `lifeboat backup` and `lifeboat dump` verify what they took, as with `--verify`.
    pub after_backup: bool,
    /// Where scratch restores are made, each in a `lifeboat-pg-<random>` directory under it.
    /// Always absolute.
    pub scratch_dir: PathBuf,
    /// A server to restore dumps into (scratch databases, dropped afterwards) instead of a
    /// scratch cluster lifeboat starts; may carry a password, so it prints redacted.
    pub dump_server: Option<ConnectionString>,
    /// How much of every restored database `pg_amcheck` checks.
    pub amcheck: AmcheckLevel,
    /// A verification that runs longer is stopped, cleaned up and reported failed. At least 1s.
    pub timeout: std::time::Duration,
    /// The user's checks, in the order written; each query must return true.
    pub checks: Vec<SqlCheck>,
    /// When the daemon verifies the newest backup or dump that has not been verified yet.
    pub schedule: Option<Schedule>,
}

impl VerifyConfig {
    pub const DEFAULT_SCRATCH_DIR: &str = "/var/tmp";
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 60 * 60);
    /// The shortest `timeout` accepted.
    pub const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            after_backup: false,
            scratch_dir: PathBuf::from(Self::DEFAULT_SCRATCH_DIR),
            dump_server: None,
            amcheck: AmcheckLevel::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            checks: Vec::new(),
            schedule: None,
        }
    }
}

/// How much of every restored database `pg_amcheck` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmcheckLevel {
    /// No `pg_amcheck`: the restore itself and the user's checks only.
    Off,
    /// `pg_amcheck`'s default checks, which include the structure of every B-tree index.
    #[default]
    Indexes,
    /// Also `--heapallindexed`: every table row must be found in each of its B-tree indexes.
    /// Slower (it reads every table), and finds rows missing from indexes.
    HeapAllIndexed,
}

impl AmcheckLevel {
    /// The configuration file's spelling: `"off"`, `"indexes"` or `"heapallindexed"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AmcheckLevel::Off => "off",
            AmcheckLevel::Indexes => "indexes",
            AmcheckLevel::HeapAllIndexed => "heapallindexed",
        }
    }
}

/// One user check: a query that must return true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlCheck {
    /// The database it runs in; `None`: the database of `cluster.connection`.
    pub database: Option<String>,
    pub query: String,
}

/// A cluster name: `[a-zA-Z0-9_.-]{1,64}`, not `.` or `..`. It becomes a directory name in the
/// repository, so it must be safe as one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn parse(name: &str) -> Result<ClusterName, String> {
        let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name.is_empty() || name.len() > 64 || !valid_chars || name == "." || name == ".." {
            return Err(format!(
                "{name:?} is not a valid cluster name: use 1 to 64 letters, digits, '_', '.' or '-' \
                 (it names the directory clusters/<name>/ in the repository), e.g. \"main\""
            ));
        }
        Ok(ClusterName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The configuration file (or, for [`Config::from_toml`], the origin given).
    pub file: PathBuf,
    /// Where the passphrase (or the passphrase file's name) came from; `None` if there is none.
    pub passphrase: Option<SecretOrigin>,
    pub key_file: Option<SecretOrigin>,
    /// `None`: the standard AWS chain (or not S3 at all).
    pub s3_credentials: Option<SecretOrigin>,
}

/// Where a secret (or the file holding it) was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The value itself is in this environment variable.
    Env(&'static str),
    /// The value itself is in the configuration file, under this key.
    Inline(&'static str),
    /// The value is in a file, named by `named_by` (an environment variable or a key).
    File { path: PathBuf, named_by: String },
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Env(var) => write!(f, "env {var}"),
            SecretOrigin::Inline(key) => write!(f, "inline in config ({key})"),
            SecretOrigin::File { path, named_by } => {
                write!(f, "file {} (from {named_by})", path.display())
            }
        }
    }
}

/// What unlocks the repository.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key file slot; it may not exist yet (`lifeboat init` creates it).
    KeyFile(PathBuf),
    Passphrase(Secret),
}

impl Config {
    /// Reads the configuration file and applies the process environment. The file is `explicit`
    /// (`--config`), else `$LIFEBOAT_CONFIG`, else [`DEFAULT_PATH`].
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let (path, chosen_by) = match (explicit, env(env::CONFIG).filter(|value| !value.is_empty())) {
            (Some(path), _) => (path.to_path_buf(), "given with --config"),
            (None, Some(path)) => (PathBuf::from(path), "named by LIFEBOAT_CONFIG"),
            (None, None) => (PathBuf::from(DEFAULT_PATH), "the default location"),
        };
        if path.is_dir() {
            let inside = path.join("lifeboat.toml");
            let next = if inside.is_file() {
                format!("Did you mean --config {}?", inside.display())
            } else {
                "Pass the file itself with --config <PATH> (or LIFEBOAT_CONFIG)".to_owned()
            };
            return Err(ConfigError::IsDirectory { path, chosen_by, next });
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound { path, chosen_by });
            }
            Err(error) => {
                let next = unreadable_advice(&error, "configuration file");
                return Err(ConfigError::Unreadable { path, chosen_by, error, next });
            }
        };
        let config = Config::from_toml(&text, &path, &env)?;
        config.warn_if_secrets_exposed();
        Ok(config)
    }

    /// Parses and validates `text` as if read from `origin`, taking environment variables from
    /// `env` (tests pass a map; [`Config::load`] passes the process environment).
    pub fn from_toml(text: &str, origin: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw = file::parse(text, origin)?;
        resolve::resolve(raw, text, origin, env)
    }

    /// The configuration file this came from.
    pub fn origin(&self) -> &Path {
        &self.source.file
    }

    /// Whether any key (key file or passphrase) is configured.
    pub fn has_key(&self) -> bool {
        let repository = &self.repository;
        repository.key_file.is_some() || repository.passphrase.is_some() || repository.passphrase_file.is_some()
    }

    /// The key that unlocks the repository: the key file if one is configured (fast to unlock),
    /// else the passphrase (from the environment, inline, or read from the passphrase file).
    pub fn key_source(&self) -> Result<KeySource, ConfigError> {
        let repository = &self.repository;
        if let Some(path) = &repository.key_file {
            return Ok(KeySource::KeyFile(path.clone()));
        }
        let origin = self.source.passphrase.as_ref().map_or_else(String::new, ToString::to_string);
        if let Some(passphrase) = &repository.passphrase {
            if passphrase.expose().is_empty() {
                return Err(ConfigError::EmptyPassphrase { origin });
            }
            return Ok(KeySource::Passphrase(passphrase.clone()));
        }
        if let Some(path) = &repository.passphrase_file {
            let origin = self.source.passphrase.clone().unwrap_or_else(|| SecretOrigin::File {
                path: path.clone(),
                named_by: "repository.passphrase_file".into(),
            });
            return read_passphrase_file(path, origin).map(KeySource::Passphrase);
        }
        Err(ConfigError::NoKey { file: self.source.file.clone() })
    }

    /// What the S3 backend needs, for an `s3://` repository.
    pub fn s3_settings(&self) -> Option<S3Settings> {
        let RepositoryUrl::S3 { bucket, prefix } = &self.repository.url else {
            return None;
        };
        let s3 = self.repository.s3.as_ref()?;
        Some(S3Settings {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            force_path_style: s3.force_path_style,
            storage_class: s3.storage_class.clone(),
            credentials: s3.credentials.clone(),
            part_size: s3.part_size_mib as usize * 1024 * 1024,
            max_attempts: s3.max_attempts,
        })
    }

    /// The resolved configuration as TOML for `lifeboat config show`: defaults filled in, every
    /// secret `<redacted>`, with comments saying where the key and credentials come from.
    pub fn to_redacted_toml(&self) -> String {
        show::to_redacted_toml(self)
    }

    /// A configuration file holding secrets should not be readable by everyone.
    fn warn_if_secrets_exposed(&self) {
        let inline = matches!(self.source.passphrase, Some(SecretOrigin::Inline(_)))
            || matches!(self.source.s3_credentials, Some(SecretOrigin::Inline(_)))
            || self.cluster.connection.redacted() != self.cluster.connection.expose();
        if inline
            && let Some(mode) = permission_bits(&self.source.file)
            && mode & 0o007 != 0
        {
            tracing::warn!(
                "{} holds secrets and is readable by every user (mode {mode:03o}); run `chmod 640 {}` \
                 (or 600), or move the secrets to files or the environment",
                self.source.file.display(),
                self.source.file.display(),
            );
        }
    }
}

/// Reads a passphrase file: its content minus one trailing newline (`\n` or `\r\n`).
fn read_passphrase_file(path: &Path, origin: SecretOrigin) -> Result<Secret, ConfigError> {
    let bytes = std::fs::read(path).map_err(|error| {
        let named_by = match &origin {
            SecretOrigin::File { named_by, .. } => named_by.clone(),
            other => other.to_string(),
        };
        let next = unreadable_advice(&error, "passphrase file");
        ConfigError::PassphraseFile { path: path.to_path_buf(), named_by, error, next }
    })?;
    let origin = origin.to_string();
    if let Some(mode) = permission_bits(path)
        && mode & 0o077 != 0
    {
        tracing::warn!(
            "passphrase file {} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display(),
        );
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => Secret::new(text),
        Err(error) => {
            crate::secret::wipe(&mut error.into_bytes());
            return Err(ConfigError::PassphraseNotUtf8 { origin });
        }
    };
    let content = text.expose();
    let content = content.strip_suffix('\n').map_or(content, |rest| rest.strip_suffix('\r').unwrap_or(rest));
    if content.is_empty() {
        return Err(ConfigError::EmptyPassphrase { origin });
    }
    Ok(Secret::new(content))
}

/// The next step when a file lifeboat needs (`what`: "configuration file", "passphrase file")
/// exists but cannot be read.
fn unreadable_advice(error: &std::io::Error, what: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "This user (uid {}) may not read it: run lifeboat as a user who may (root, or the user that \
             runs PostgreSQL's archive_command), or give that user read access without making it \
             world-readable (`chgrp postgres` and `chmod 640`)",
            current_uid()
        ),
        std::io::ErrorKind::InvalidData => format!("The {what} must be UTF-8 text"),
        std::io::ErrorKind::IsADirectory => format!("That is a directory: name the {what} itself"),
        std::io::ErrorKind::NotFound => format!("Create the {what}, or correct the path that names it"),
        _ => format!("Check that the path names the {what} and that it is readable"),
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn permission_bits(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).ok().map(|metadata| metadata.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn permission_bits(_path: &Path) -> Option<u32> {
    None
}
