//! `[migrate]`: where the migrations are, which databases they go to (environments), how they
//! run (timeouts, retries, the advisory-lock wait), and the backup gate that guards an
//! environment marked production (guarantee G7). The runner itself is [`crate::migrate`].
//!
//! The top-level keys describe one environment, named by `environment`, whose database is
//! `cluster.connection` (with `database` replacing its database name). `[migrate.environments.NAME]`
//! adds others, each with its own `connection`; they inherit every other top-level key.
//!
//! ```toml
//! [migrate]
//! dir = "migrations"                      # relative to the working directory
//! database = "app"
//! environment = "production"              # "production" (or production = true) turns on the gate
//! require_verified_backup_within = "6h"
//! take_backup_if_stale = true
//! lock_timeout = "2s"
//! after = ["staging"]                     # applied successfully in staging first
//!
//! [migrate.environments.staging]
//! connection = "postgresql://deploy@staging-db/app"
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::resolve::Locator;
use super::show::quote;
use super::{ConnectionString, format_duration, format_size, parse_duration, parse_size};
use crate::secret::Secret;

/// `[migrate]` and each `[migrate.environments.NAME]` as written: one shape, since an
/// environment sets the same keys; [`resolve`] refuses the keys that belong to one of them only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigrate {
    pub dir: Option<PathBuf>,
    pub layout: Option<String>,
    pub database: Option<String>,
    pub environment: Option<String>,
    pub rehearse: Option<bool>,
    pub environments: Option<BTreeMap<String, RawMigrate>>,
    pub connection: Option<Secret>,
    pub production: Option<bool>,
    pub history_table: Option<String>,
    pub lock_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub lock_retries: Option<i64>,
    pub lock_wait: Option<String>,
    pub require_verified_backup_within: Option<String>,
    pub take_backup_if_stale: Option<bool>,
    pub gate_backup: Option<String>,
    pub archive_timeout: Option<String>,
    pub after: Option<Vec<String>>,
    pub min_server_version: Option<toml::Value>,
    pub lint: Option<RawLint>,
    pub schema_check: Option<String>,
    pub sequence_share_limit: Option<f64>,
    pub seeds_dir: Option<PathBuf>,
    pub seed_history_table: Option<String>,
}

/// `[migrate.lint]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLint {
    pub warn_table_size: Option<String>,
    pub error_table_size: Option<String>,
    pub warn_table_rows: Option<i64>,
    pub error_table_rows: Option<i64>,
    pub disable: Option<Vec<String>>,
    pub enable: Option<Vec<String>>,
}

/// `[migrate.lint]`: how a finding that blocks or rewrites a table is graded by that table's
/// size (its bytes or its row estimate, whichever grades higher), and which rules are off or
/// (opt-in rules) on. Rule names are checked by [`crate::migrate::lint`].
#[derive(Debug, Clone, PartialEq)]
pub struct LintConfig {
    /// From this size on a finding on the table is a warning (below: a note).
    pub warn_table_size: u64,
    /// From this size on it is an error.
    pub error_table_size: u64,
    pub warn_table_rows: u64,
    pub error_table_rows: u64,
    pub disable: Vec<String>,
    pub enable: Vec<String>,
}

impl Default for LintConfig {
    fn default() -> Self {
        LintConfig {
            warn_table_size: 32 << 20,
            error_table_size: 1 << 30,
            warn_table_rows: 100_000,
            error_table_rows: 10_000_000,
            disable: Vec::new(),
            enable: Vec::new(),
        }
    }
}

/// What `migrate up` does with `lifeboat schema check`'s problems once its migrations ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheckMode {
    Off,
    /// Print them; `up` still succeeds.
    Warn,
    /// Print them and exit non-zero (the migrations stay applied).
    Fail,
}

impl SchemaCheckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaCheckMode::Off => "off",
            SchemaCheckMode::Warn => "warn",
            SchemaCheckMode::Fail => "fail",
        }
    }
}

/// An environment's connection may carry a password: errors about it never quote the value.
pub(super) fn is_secret_key(key: &str) -> bool {
    key.starts_with("migrate.environments.") && key.ends_with(".connection")
}

/// How the migration directory is laid out: lifeboat's own files, or another tool's, read in
/// place so a team keeps generating migrations with the tool it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MigrationLayout {
    /// `<version>_<name>.up.sql` / `.down.sql`, or `<version>_<name>.sql` (up only).
    Lifeboat,
    Sqlx,
    Prisma,
    Drizzle,
    GolangMigrate,
    Dbmate,
    Flyway,
}

impl MigrationLayout {
    pub const ALL: [MigrationLayout; 7] = [
        MigrationLayout::Lifeboat,
        MigrationLayout::Sqlx,
        MigrationLayout::Prisma,
        MigrationLayout::Drizzle,
        MigrationLayout::GolangMigrate,
        MigrationLayout::Dbmate,
        MigrationLayout::Flyway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationLayout::Lifeboat => "lifeboat",
            MigrationLayout::Sqlx => "sqlx",
            MigrationLayout::Prisma => "prisma",
            MigrationLayout::Drizzle => "drizzle",
            MigrationLayout::GolangMigrate => "golang-migrate",
            MigrationLayout::Dbmate => "dbmate",
            MigrationLayout::Flyway => "flyway",
        }
    }

    pub fn parse(text: &str) -> Result<MigrationLayout, String> {
        MigrationLayout::ALL.into_iter().find(|layout| layout.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = MigrationLayout::ALL.iter().map(|layout| layout.as_str()).collect();
            format!("{text:?} is not a migration layout; write one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for MigrationLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gate accepts as the proof that the database can be brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateBackup {
    /// A physical base backup that passed verification by restore: the gate also needs WAL
    /// archiving to work, so the restore point before each migration can be reached.
    Base,
    /// A logical dump of the environment's database that passed verification by restore.
    Dump,
}

impl GateBackup {
    pub fn as_str(self) -> &'static str {
        match self {
            GateBackup::Base => "base",
            GateBackup::Dump => "dump",
        }
    }
}

/// A schema-qualified table name, both parts valid unquoted-or-quoted PostgreSQL identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `schema.name` or `name` (in schema `lifeboat`); identifiers of letters, digits and `_`.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let (schema, name) = text.split_once('.').unwrap_or(("lifeboat", text));
        for part in [schema, name] {
            let valid = !part.is_empty()
                && part.len() <= 63
                && part.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "{text:?} is not a table name; write schema.table with letters, digits and _ \
                     (at most 63 each), e.g. \"lifeboat.migrations\""
                ));
            }
        }
        Ok(TableName { schema: schema.to_owned(), name: name.to_owned() })
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.name)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A PostgreSQL server version as `min_server_version` gives it: a major, or major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// From `server_version_num` (e.g. 150004 → 15.4).
    pub fn from_num(num: u32) -> ServerVersion {
        ServerVersion { major: num / 10000, minor: num % 10000 }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One environment migrations can run against, every key resolved.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// The database the migrations change; may carry a password, so it prints redacted.
    pub connection: ConnectionString,
    /// The gate guards it (G7); `up`, `down` and `redo` ask for confirmation or `--approve`.
    pub production: bool,
    pub history_table: TableName,
    /// `SET lock_timeout` for each migration (a file may override it).
    pub lock_timeout: Duration,
    /// `SET statement_timeout` for each migration; `None`: no limit.
    pub statement_timeout: Option<Duration>,
    /// How many times a migration that hit `lock_timeout` (SQLSTATE 55P03) is tried again.
    pub lock_retries: u32,
    /// How long a runner polls for the advisory lock another runner holds before giving up.
    pub lock_wait: Duration,
    /// The gate: the newest verified backup must be younger than this.
    pub require_verified_backup_within: Duration,
    /// The gate takes and verifies a backup when the newest verified one is too old.
    pub take_backup_if_stale: bool,
    pub gate_backup: GateBackup,
    /// The gate's WAL check: a segment switched now must be archived within this long.
    pub archive_timeout: Duration,
    /// Environments whose history must show a migration applied successfully before it may be
    /// applied here.
    pub after: Vec<String>,
    pub min_server_version: Option<ServerVersion>,
}

impl Environment {
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_LOCK_RETRIES: u32 = 3;
    pub const LOCK_RETRIES: std::ops::RangeInclusive<u32> = 0..=100;
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(300);
    pub const DEFAULT_VERIFIED_WITHIN: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_HISTORY_TABLE: &str = "lifeboat.migrations";
}

/// `[migrate]`, resolved.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    /// The migration directory; relative paths are taken from the working directory.
    pub dir: PathBuf,
    /// `None`: detected from the directory's contents.
    pub layout: Option<MigrationLayout>,
    /// The database of the default environment, replacing the one in `cluster.connection`.
    pub database: Option<String>,
    /// The name of the environment of `cluster.connection`.
    pub default_environment: String,
    /// Every environment by name, the default one included.
    pub environments: BTreeMap<String, Environment>,
    /// `up` first rehearses its pending migrations on a scratch restore of the newest verified
    /// backup, and refuses when the rehearsal fails.
    pub rehearse: bool,
    pub lint: LintConfig,
    /// `lifeboat schema check` after `up`.
    pub schema_check: SchemaCheckMode,
    /// A sequence past this share of its range (0 < share <= 1) is a schema-check problem.
    pub sequence_share_limit: f64,
    /// Seeds are read from `<seeds_dir>/<environment>/`; relative to the working directory.
    pub seeds_dir: PathBuf,
    pub seed_history_table: TableName,
}

impl MigrateConfig {
    pub const DEFAULT_DIR: &str = "migrations";
    pub const DEFAULT_ENVIRONMENT: &str = "default";
    pub const DEFAULT_SEEDS_DIR: &str = "seeds";
    pub const DEFAULT_SEED_HISTORY_TABLE: &str = "lifeboat.seeds";
    pub const DEFAULT_SEQUENCE_SHARE_LIMIT: f64 = 0.75;

    /// The environment `name` (`None`: the default one), or an error naming the ones there are.
    pub fn environment(&self, name: Option<&str>) -> Result<&Environment, String> {
        let name = name.unwrap_or(&self.default_environment);
        self.environments.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            format!(
                "there is no migration environment {name:?}; the configuration has {} (add \
                 [migrate.environments.{name}] with its connection)",
                names.join(", ")
            )
        })
    }
}

pub(super) fn resolve(
    locator: &Locator<'_>,
    mut raw: RawMigrate,
    cluster_connection: &ConnectionString,
) -> Result<MigrateConfig, ConfigError> {
    if raw.connection.is_some() {
        return Err(locator.error(
            &["migrate", "connection"],
            "is not a [migrate] key: the default environment uses cluster.connection (set `database` to pick \
             the database); give other environments theirs in [migrate.environments.NAME]",
        ));
    }
    let layout = match raw.layout.take() {
        None => None,
        Some(text) => {
            Some(MigrationLayout::parse(&text).map_err(|message| locator.error(&["migrate", "layout"], message))?)
        }
    };
    let default_environment = raw.environment.take().unwrap_or_else(|| MigrateConfig::DEFAULT_ENVIRONMENT.to_owned());
    check_environment_name(locator, &["migrate", "environment"], &default_environment)?;
    let connection = match &raw.database {
        None => cluster_connection.clone(),
        Some(database) if database.is_empty() => {
            return Err(locator.error(&["migrate", "database"], "is empty; write the database name, e.g. \"app\""));
        }
        Some(database) => cluster_connection.with_database(database),
    };
    let base = resolve_settings(locator, &["migrate"], &raw, None, &default_environment)?;
    let mut environments = BTreeMap::new();
    for (name, environment) in raw.environments.take().unwrap_or_default() {
        let path = ["migrate", "environments", name.as_str()];
        check_environment_name(locator, &path, &name)?;
        let misplaced = [
            ("dir", environment.dir.is_some()),
            ("layout", environment.layout.is_some()),
            ("database", environment.database.is_some()),
            ("environment", environment.environment.is_some()),
            ("rehearse", environment.rehearse.is_some()),
            ("environments", environment.environments.is_some()),
            ("lint", environment.lint.is_some()),
            ("schema_check", environment.schema_check.is_some()),
            ("sequence_share_limit", environment.sequence_share_limit.is_some()),
            ("seeds_dir", environment.seeds_dir.is_some()),
            ("seed_history_table", environment.seed_history_table.is_some()),
        ];
        if let Some((key, _)) = misplaced.into_iter().find(|(_, set)| *set) {
            return Err(locator.error(
                &[path[0], path[1], path[2], key],
                "is a [migrate] key, the same for every environment; move it there (an environment's database is part of its connection)",
            ));
        }
        if name == default_environment {
            return Err(locator.error(
                &path,
                format!(
                    "names the environment of cluster.connection (migrate.environment = {name:?}); set its keys in \
                     [migrate] itself, or rename one of them"
                ),
            ));
        }
        let Some(connection) = &environment.connection else {
            return Err(locator.error(
                &path,
                "has no connection; add connection = \"postgresql://user@host/database\" for this environment",
            ));
        };
        let connection = ConnectionString::parse(connection.expose())
            .map_err(|message| locator.error(&[path[0], path[1], path[2], "connection"], message))?;
        let settings = resolve_settings(locator, &path, &environment, Some(&base), &name)?;
        if settings.production {
            return Err(locator.error(
                &[path[0], path[1], path[2], "production"],
                "the backup gate can guard only the database of this configuration's cluster, whose backups it \
                 checks; migrate that database with the configuration of its own host ([migrate] environment)",
            ));
        }
        environments.insert(name.clone(), settings.into_environment(name, connection));
    }
    environments.insert(default_environment.clone(), base.into_environment(default_environment.clone(), connection));
    for environment in environments.values() {
        for before in &environment.after {
            if !environments.contains_key(before) || before == &environment.name {
                let path: Vec<&str> = if environment.name == default_environment {
                    vec!["migrate", "after"]
                } else {
                    vec!["migrate", "environments", environment.name.as_str(), "after"]
                };
                let message = if before == &environment.name {
                    format!("names {before:?} itself; list the environments that must run each migration first")
                } else {
                    format!("names {before:?}, which is not an environment; add [migrate.environments.{before}]")
                };
                return Err(locator.error(&path, message));
            }
        }
    }
    let schema_check = match raw.schema_check.as_deref() {
        None | Some("warn") => SchemaCheckMode::Warn,
        Some("off") => SchemaCheckMode::Off,
        Some("fail") => SchemaCheckMode::Fail,
        Some(other) => {
            return Err(locator.error(
                &["migrate", "schema_check"],
                format!("{other:?} is not a mode; write \"off\", \"warn\" or \"fail\""),
            ));
        }
    };
    let sequence_share_limit = match raw.sequence_share_limit {
        None => MigrateConfig::DEFAULT_SEQUENCE_SHARE_LIMIT,
        Some(share) if share > 0.0 && share <= 1.0 => share,
        Some(share) => {
            return Err(locator.error(
                &["migrate", "sequence_share_limit"],
                format!(
                    "{share} is not a share of a sequence's range; write a number above 0 and at most 1, e.g. 0.75"
                ),
            ));
        }
    };
    let seed_history_table = match &raw.seed_history_table {
        None => TableName::parse(MigrateConfig::DEFAULT_SEED_HISTORY_TABLE).expect("the default table name is valid"),
        Some(text) => {
            TableName::parse(text).map_err(|message| locator.error(&["migrate", "seed_history_table"], message))?
        }
    };
    Ok(MigrateConfig {
        dir: raw.dir.unwrap_or_else(|| PathBuf::from(MigrateConfig::DEFAULT_DIR)),
        layout,
        database: raw.database,
        default_environment,
        environments,
        rehearse: raw.rehearse.unwrap_or(false),
        lint: resolve_lint(locator, raw.lint.take().unwrap_or_default())?,
        schema_check,
        sequence_share_limit,
        seeds_dir: raw.seeds_dir.unwrap_or_else(|| PathBuf::from(MigrateConfig::DEFAULT_SEEDS_DIR)),
        seed_history_table,
    })
}

fn resolve_lint(locator: &Locator<'_>, raw: RawLint) -> Result<LintConfig, ConfigError> {
    let defaults = LintConfig::default();
    let size = |key: &str, value: &Option<String>, fallback: u64| match value {
        None => Ok(fallback),
        Some(text) => parse_size(text).map_err(|message| locator.error(&["migrate", "lint", key], message)),
    };
    let rows = |key: &str, value: Option<i64>, fallback: u64| match value {
        None => Ok(fallback),
        Some(rows) => u64::try_from(rows).map_err(|_| {
            locator.error(&["migrate", "lint", key], format!("{rows} is not a row count; write a whole number >= 0"))
        }),
    };
    let lint = LintConfig {
        warn_table_size: size("warn_table_size", &raw.warn_table_size, defaults.warn_table_size)?,
        error_table_size: size("error_table_size", &raw.error_table_size, defaults.error_table_size)?,
        warn_table_rows: rows("warn_table_rows", raw.warn_table_rows, defaults.warn_table_rows)?,
        error_table_rows: rows("error_table_rows", raw.error_table_rows, defaults.error_table_rows)?,
        disable: raw.disable.unwrap_or_default(),
        enable: raw.enable.unwrap_or_default(),
    };
    for (key, names) in [("disable", &lint.disable), ("enable", &lint.enable)] {
        if let Some(unknown) = names.iter().find(|name| !crate::migrate::lint::known_rule(name)) {
            return Err(locator.error(
                &["migrate", "lint", key],
                format!("{unknown:?} is not a lint rule; `lifeboat migrate lint --rules` lists them"),
            ));
        }
    }
    if lint.error_table_size < lint.warn_table_size {
        return Err(locator.error(
            &["migrate", "lint", "error_table_size"],
            format!(
                "{} is below warn_table_size ({}); a table is an error only from a size at which it is already a warning",
                format_size(lint.error_table_size),
                format_size(lint.warn_table_size)
            ),
        ));
    }
    if lint.error_table_rows < lint.warn_table_rows {
        return Err(locator.error(
            &["migrate", "lint", "error_table_rows"],
            format!(
                "{} is below warn_table_rows ({}); a table is an error only from a row count at which it is already a warning",
                lint.error_table_rows, lint.warn_table_rows
            ),
        ));
    }
    Ok(lint)
}

fn check_environment_name(locator: &Locator<'_>, path: &[&str], name: &str) -> Result<(), ConfigError> {
    let valid =
        !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(locator.error(path, format!("{name:?} is not an environment name; use letters, digits, - and _")))
    }
}

/// An environment's settings before its name and connection are attached.
#[derive(Debug, Clone)]
struct Settings {
    production: bool,
    history_table: TableName,
    lock_timeout: Duration,
    statement_timeout: Option<Duration>,
    lock_retries: u32,
    lock_wait: Duration,
    require_verified_backup_within: Duration,
    take_backup_if_stale: bool,
    gate_backup: GateBackup,
    archive_timeout: Duration,
    after: Vec<String>,
    min_server_version: Option<ServerVersion>,
}

impl Settings {
    fn into_environment(self, name: String, connection: ConnectionString) -> Environment {
        Environment {
            name,
            connection,
            production: self.production,
            history_table: self.history_table,
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            lock_retries: self.lock_retries,
            lock_wait: self.lock_wait,
            require_verified_backup_within: self.require_verified_backup_within,
            take_backup_if_stale: self.take_backup_if_stale,
            gate_backup: self.gate_backup,
            archive_timeout: self.archive_timeout,
            after: self.after,
            min_server_version: self.min_server_version,
        }
    }
}

/// Resolves `raw` at `path`; keys it leaves out come from `inherited` (the `[migrate]` table's
/// settings) or the defaults. `production` is not inherited: it defaults to the name being
/// "production".
fn resolve_settings(
    locator: &Locator<'_>,
    path: &[&str],
    raw: &RawMigrate,
    inherited: Option<&Settings>,
    name: &str,
) -> Result<Settings, ConfigError> {
    let error = |key: &str, message: String| {
        let mut full: Vec<&str> = path.to_vec();
        full.push(key);
        locator.error(&full, message)
    };
    let duration = |key: &str, value: &Option<String>, fallback: Duration| match value {
        None => Ok(fallback),
        Some(text) => parse_duration(text).map_err(|message| error(key, message)),
    };
    let history_table = match &raw.history_table {
        Some(text) => TableName::parse(text).map_err(|message| error("history_table", message))?,
        None => match inherited {
            Some(settings) => settings.history_table.clone(),
            None => TableName::parse(Environment::DEFAULT_HISTORY_TABLE).expect("the default table name is valid"),
        },
    };
    let lock_timeout = duration(
        "lock_timeout",
        &raw.lock_timeout,
        inherited.map_or(Environment::DEFAULT_LOCK_TIMEOUT, |settings| settings.lock_timeout),
    )?;
    let statement_timeout = match &raw.statement_timeout {
        None => inherited.and_then(|settings| settings.statement_timeout),
        Some(text) => {
            let value = parse_duration(text).map_err(|message| error("statement_timeout", message))?;
            (!value.is_zero()).then_some(value)
        }
    };
    let lock_retries = match raw.lock_retries {
        None => inherited.map_or(Environment::DEFAULT_LOCK_RETRIES, |settings| settings.lock_retries),
        Some(value) => match u32::try_from(value) {
            Ok(value) if Environment::LOCK_RETRIES.contains(&value) => value,
            _ => {
                let range = Environment::LOCK_RETRIES;
                return Err(error(
                    "lock_retries",
                    format!("{value} is out of range ({}..={})", range.start(), range.end()),
                ));
            }
        },
    };
    let lock_wait = duration(
        "lock_wait",
        &raw.lock_wait,
        inherited.map_or(Environment::DEFAULT_LOCK_WAIT, |settings| settings.lock_wait),
    )?;
    let require_verified_backup_within = duration(
        "require_verified_backup_within",
        &raw.require_verified_backup_within,
        inherited.map_or(Environment::DEFAULT_VERIFIED_WITHIN, |settings| settings.require_verified_backup_within),
    )?;
    if require_verified_backup_within.is_zero() {
        return Err(error(
            "require_verified_backup_within",
            "must be longer than \"0s\", e.g. \"6h\"; no backup is ever that fresh".to_owned(),
        ));
    }
    let gate_backup = match raw.gate_backup.as_deref() {
        None => inherited.map_or(GateBackup::Base, |settings| settings.gate_backup),
        Some("base") => GateBackup::Base,
        Some("dump") => GateBackup::Dump,
        Some(other) => {
            return Err(error("gate_backup", format!("{other:?} is not a backup kind; write \"base\" or \"dump\"")));
        }
    };
    let archive_timeout = duration(
        "archive_timeout",
        &raw.archive_timeout,
        inherited.map_or(Environment::DEFAULT_ARCHIVE_TIMEOUT, |settings| settings.archive_timeout),
    )?;
    let min_server_version = match &raw.min_server_version {
        None => inherited.and_then(|settings| settings.min_server_version),
        Some(value) => Some(parse_server_version(value).map_err(|message| error("min_server_version", message))?),
    };
    Ok(Settings {
        production: raw.production.unwrap_or(name == "production"),
        history_table,
        lock_timeout,
        statement_timeout,
        lock_retries,
        lock_wait,
        require_verified_backup_within,
        take_backup_if_stale: raw
            .take_backup_if_stale
            .unwrap_or_else(|| inherited.is_some_and(|settings| settings.take_backup_if_stale)),
        gate_backup,
        archive_timeout,
        after: match &raw.after {
            Some(after) => after.clone(),
            None => Vec::new(),
        },
        min_server_version,
    })
}

/// `15`, `"15"` or `"15.4"`.
fn parse_server_version(value: &toml::Value) -> Result<ServerVersion, String> {
    let invalid = || format!("{value} is not a PostgreSQL version; write a major (15) or major.minor (\"15.4\")");
    let text = match value {
        toml::Value::Integer(major) => major.to_string(),
        toml::Value::String(text) => text.clone(),
        _ => return Err(invalid()),
    };
    let (major, minor) = text.split_once('.').unwrap_or((&text, "0"));
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(major), Ok(minor)) if (9..100).contains(&major) => Ok(ServerVersion { major, minor }),
        _ => Err(invalid()),
    }
}

/// The `[migrate]` tables for `config show`, connections redacted.
pub(super) fn write_redacted(migrate: &MigrateConfig, out: &mut String) -> fmt::Result {
    writeln!(out, "\n[migrate]")?;
    writeln!(out, "dir = {}", quote(&migrate.dir.display().to_string()))?;
    match migrate.layout {
        Some(layout) => writeln!(out, "layout = {}", quote(layout.as_str()))?,
        None => writeln!(out, "# layout: detected from the directory")?,
    }
    writeln!(out, "environment = {}", quote(&migrate.default_environment))?;
    let default = &migrate.environments[&migrate.default_environment];
    match &migrate.database {
        Some(database) => writeln!(out, "database = {}", quote(database))?,
        None => writeln!(out, "# database: the one cluster.connection names")?,
    }
    writeln!(out, "rehearse = {}", migrate.rehearse)?;
    writeln!(out, "schema_check = {}", quote(migrate.schema_check.as_str()))?;
    writeln!(out, "sequence_share_limit = {}", migrate.sequence_share_limit)?;
    writeln!(out, "seeds_dir = {}", quote(&migrate.seeds_dir.display().to_string()))?;
    writeln!(out, "seed_history_table = {}", quote(&migrate.seed_history_table.to_string()))?;
    write_settings(default, out)?;
    let lint = &migrate.lint;
    writeln!(out, "\n[migrate.lint]")?;
    writeln!(out, "warn_table_size = {}", quote(&format_size(lint.warn_table_size)))?;
    writeln!(out, "error_table_size = {}", quote(&format_size(lint.error_table_size)))?;
    writeln!(out, "warn_table_rows = {}", lint.warn_table_rows)?;
    writeln!(out, "error_table_rows = {}", lint.error_table_rows)?;
    let names = |rules: &[String]| rules.iter().map(|rule| quote(rule)).collect::<Vec<_>>().join(", ");
    writeln!(out, "disable = [{}]", names(&lint.disable))?;
    writeln!(out, "enable = [{}]", names(&lint.enable))?;
    for (name, environment) in &migrate.environments {
        if name == &migrate.default_environment {
            continue;
        }
        writeln!(out, "\n[migrate.environments.{name}]")?;
        writeln!(out, "connection = {}", quote(&environment.connection.redacted()))?;
        write_settings(environment, out)?;
    }
    Ok(())
}

fn write_settings(environment: &Environment, out: &mut String) -> fmt::Result {
    writeln!(out, "production = {}", environment.production)?;
    writeln!(out, "history_table = {}", quote(&environment.history_table.to_string()))?;
    writeln!(out, "lock_timeout = {}", quote(&format_duration(environment.lock_timeout)))?;
    match environment.statement_timeout {
        Some(timeout) => writeln!(out, "statement_timeout = {}", quote(&format_duration(timeout)))?,
        None => writeln!(out, "statement_timeout = \"0s\"  # no limit")?,
    }
    writeln!(out, "lock_retries = {}", environment.lock_retries)?;
    writeln!(out, "lock_wait = {}", quote(&format_duration(environment.lock_wait)))?;
    writeln!(
        out,
        "require_verified_backup_within = {}",
        quote(&format_duration(environment.require_verified_backup_within))
    )?;
    writeln!(out, "take_backup_if_stale = {}", environment.take_backup_if_stale)?;
    writeln!(out, "gate_backup = {}", quote(environment.gate_backup.as_str()))?;
    writeln!(out, "archive_timeout = {}", quote(&format_duration(environment.archive_timeout)))?;
    let after: Vec<String> = environment.after.iter().map(|name| quote(name)).collect();
    writeln!(out, "after = [{}]", after.join(", "))?;
    if let Some(version) = environment.min_server_version {
        writeln!(out, "min_server_version = {}", quote(&version.to_string()))?;
    }
    Ok(())
}
