//! Tests of the whole module: the example file, every class of error (with file, line and key),
//! environment precedence, key sources, and that no secret ever reaches output (G5).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde::de::{self, Deserializer, IntoDeserializer as _, MapAccess, Visitor};

use super::file::RawConfig;
use super::*;

const ORIGIN: &str = "/etc/lifeboat/lifeboat.toml";
const EXAMPLE: &str = include_str!("../../config/lifeboat.example.toml");
const MINIMAL: &str = "[cluster]\nname = \"main\"\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new(ORIGIN), &no_env)
}

fn parse_with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_toml(text, Path::new(ORIGIN), &|name| vars.get(name).cloned())
}

fn error(text: &str) -> String {
    parse(text).expect_err("the configuration should be refused").to_string()
}

// ---------------------------------------------------------------------------------------------
// The example file

#[test]
fn the_example_parses_and_validates() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.cluster.name.as_str(), "main");
    assert_eq!(config.repository.url, RepositoryUrl::S3 { bucket: "acme-db-backups".into(), prefix: "prod".into() });
    assert_eq!(config.repository.cipher, Cipher::Aes256Gcm);
    assert_eq!(config.repository.compression, Compression::default());
    let s3 = config.s3_settings().unwrap();
    assert_eq!(s3.region, "eu-west-1");
    assert_eq!(s3.storage_class.as_deref(), Some("STANDARD_IA"));
    assert!(s3.credentials.is_none());
}

/// Every key a struct field in `file.rs` accepts, found by walking the serde field lists, so a
/// key added to the code and forgotten in the example fails here.
fn struct_keys() -> BTreeSet<String> {
    let keys = RefCell::new(BTreeSet::new());
    RawConfig::deserialize(Collector { prefix: String::new(), keys: &keys }).unwrap();
    keys.into_inner()
}

fn toml_keys(table: &toml::Table, prefix: &str, keys: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => toml_keys(inner, &path, keys),
            _ => {
                keys.insert(path);
            }
        }
    }
}

#[test]
fn the_example_documents_every_key() {
    let mut example_keys = BTreeSet::new();
    toml_keys(&EXAMPLE.parse::<toml::Table>().unwrap(), "", &mut example_keys);
    // An environment of [migrate.environments] is a map entry; the collector names it NAME, and
    // the keys an environment inherits are documented once, in [migrate]. [migrate] and an
    // environment share one shape, but `connection` belongs to environments only.
    let example_keys: BTreeSet<String> = example_keys
        .into_iter()
        .map(|key| key.replace("migrate.environments.staging.", "migrate.environments.NAME."))
        .collect();
    let all: BTreeSet<String> = struct_keys()
        .into_iter()
        .filter(|key| !key.starts_with("migrate.environments.NAME.") || example_keys.contains(key))
        .filter(|key| key != "migrate.connection")
        .collect();
    assert!(all.len() >= 20, "the collector found too few keys: {all:?}");
    assert!(example_keys.is_subset(&all), "the example has keys the code does not know");
    // Secrets (and verify.dump_server, a connection string that is unset by default) are shown
    // commented out, with their explanation, so nobody copies them live.
    let commented: BTreeSet<String> = all.difference(&example_keys).cloned().collect();
    let expected: BTreeSet<String> = [
        "repository.passphrase",
        "repository.s3.access_key_id",
        "repository.s3.object_lock_days",
        "repository.s3.secret_access_key",
        "verify.dump_server",
        "notify.format",
        "notify.webhook",
        "cluster.bin_dir",
        "migrate.layout",
        "migrate.production",
        "migrate.min_server_version",
    ]
    .map(String::from)
    .into();
    assert_eq!(commented, expected, "keys missing from config/lifeboat.example.toml");
    for key in ["passphrase", "access_key_id", "secret_access_key", "dump_server", "webhook"] {
        assert!(EXAMPLE.contains(&format!("\n# {key} = \"")), "{key} is not shown commented out");
    }
    // Each key has a comment right above it (or above its group of commented secrets), and so
    // does each inline table in an array (the items of verify.checks).
    let lines: Vec<&str> = EXAMPLE.lines().map(str::trim_start).collect();
    for (index, line) in lines.iter().enumerate() {
        let is_key = !line.starts_with('#') && !line.starts_with('[') && line.contains(" = ");
        if is_key {
            assert!(index > 0 && lines[index - 1].starts_with('#'), "no comment above {line:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile and mistaken values, for every key (issue 17, item 6)

/// Where a key is in a TOML document: table keys, and indexes into arrays of tables.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every key of the example, and every key of the code the example shows only commented out (a
/// secret, say), with its place: `[[copies]]` is walked into its first entry, an environment of
/// [migrate.environments] is `staging`, the example's.
fn every_key() -> Vec<Vec<Step>> {
    fn walk(table: &toml::Table, at: &[Step], out: &mut Vec<Vec<Step>>) {
        for (key, value) in table {
            let mut path = at.to_vec();
            path.push(Step::Key(key.clone()));
            match value {
                toml::Value::Table(inner) => walk(inner, &path, out),
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) && !items.is_empty() => {
                    path.push(Step::Index(0));
                    walk(items[0].as_table().unwrap(), &path, out);
                }
                _ => out.push(path),
            }
        }
    }
    let mut keys = Vec::new();
    walk(&EXAMPLE.parse::<toml::Table>().unwrap(), &[], &mut keys);
    let shown: BTreeSet<String> = keys.iter().map(|path| dotted(path)).collect();
    for key in struct_keys() {
        let key = key.replace("migrate.environments.NAME.", "migrate.environments.staging.");
        if !shown.contains(&key) && key != "migrate.connection" && !key.contains(".NAME") {
            keys.push(key.split('.').map(|part| Step::Key(part.to_owned())).collect());
        }
    }
    keys
}

/// `a.b.c`, with `[[copies]]`' first entry as `copies[0]`, as errors name it.
fn dotted(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// The table that holds the key `parents` leads to, made if missing.
fn table_at<'a>(table: &'a mut toml::Table, parents: &[Step]) -> &'a mut toml::Table {
    match parents {
        [] => table,
        [Step::Key(key), Step::Index(index), rest @ ..] => {
            let array = table.get_mut(key).and_then(toml::Value::as_array_mut).unwrap();
            table_at(array[*index].as_table_mut().unwrap(), rest)
        }
        [Step::Key(key), rest @ ..] => {
            let inner = table.entry(key.clone()).or_insert_with(|| toml::Table::new().into());
            table_at(inner.as_table_mut().unwrap(), rest)
        }
        [Step::Index(_), ..] => unreachable!("an index follows its array's key"),
    }
}

/// The example with `value` at `path`, or with `neighbour` (a key beside it) set to 1.
fn example_with(path: &[Step], value: Option<toml::Value>, neighbour: Option<&str>) -> String {
    let mut document = EXAMPLE.parse::<toml::Table>().unwrap();
    let (Step::Key(last), parents) = path.split_last().unwrap() else { unreachable!("a path ends in a key") };
    let table = table_at(&mut document, parents);
    if let Some(value) = value {
        table.insert(last.clone(), value);
    }
    if let Some(neighbour) = neighbour {
        table.insert(neighbour.to_owned(), toml::Value::Integer(1));
    }
    toml::to_string(&document).unwrap()
}

/// The example's value at `path`, if it sets one.
fn example_value(path: &[Step]) -> Option<toml::Value> {
    let mut value = toml::Value::Table(EXAMPLE.parse::<toml::Table>().unwrap());
    for step in path {
        value = match step {
            Step::Key(key) => value.as_table()?.get(key)?.clone(),
            Step::Index(index) => value.as_array()?.get(*index)?.clone(),
        };
    }
    Some(value)
}

/// A wrong type for a key whose example value is `current`: a string for a number, a number
/// for anything else.
fn wrong_type(current: &toml::Value) -> toml::Value {
    match current {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => "7".into(),
        _ => 7.into(),
    }
}

/// A value out of range for a key whose example value is `current`, if it has a range.
fn out_of_range(current: &toml::Value) -> Option<toml::Value> {
    match current {
        toml::Value::Integer(_) => Some((-1).into()),
        toml::Value::Float(_) => Some((-1.0).into()),
        toml::Value::String(text) if parse_duration(text).is_ok() => Some("-5m".into()),
        toml::Value::String(text) if parse_size(text).is_ok() => Some("-1MB".into()),
        _ => None,
    }
}

#[test]
fn every_key_refuses_a_wrong_type_an_out_of_range_value_and_an_unknown_neighbour() {
    let keys = every_key();
    assert!(keys.len() >= 100, "too few keys found: {}", keys.len());
    let mut failures = Vec::new();
    let mut check = |what: String, text: &str, expected: &[&str]| match parse(text) {
        Ok(_) => failures.push(format!("{what}: accepted")),
        Err(error) => {
            let message = error.to_string();
            let located = message
                .strip_prefix(&format!("{ORIGIN}:"))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            let missing: Vec<&&str> = expected.iter().filter(|part| !message.contains(**part)).collect();
            if !located || !missing.is_empty() {
                failures.push(format!("{what}: {message:?} (no file:line, or lacks {missing:?})"));
            }
        }
    };
    // The universal wrong type: no key takes a date.
    let date = toml::Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap());
    for path in &keys {
        let name = dotted(path);
        let Some(Step::Key(last)) = path.last() else { unreachable!("a path ends in a key") };
        check(format!("{name} = a date"), &example_with(path, Some(date.clone()), None), &[&name]);
        if let Some(current) = example_value(path) {
            let wrong = wrong_type(&current);
            check(format!("{name} = {wrong}"), &example_with(path, Some(wrong.clone()), None), &[&name]);
            if let Some(value) = out_of_range(&current) {
                check(format!("{name} = {value}"), &example_with(path, Some(value.clone()), None), &[&name]);
            }
        }
        // A misspelling beside it: refused, naming it and suggesting the key it resembles.
        let neighbour = format!("{last}x");
        let parent = dotted(&path[..path.len() - 1]);
        let misspelt = if parent.is_empty() { neighbour.clone() } else { format!("{parent}.{neighbour}") };
        check(
            format!("{misspelt} beside {name}"),
            &example_with(path, None, Some(&neighbour)),
            &[&misspelt, "unknown key", &format!("`{last}`")],
        );
    }
    assert!(failures.is_empty(), "{} of {} keys' cases:\n{}", failures.len(), keys.len(), failures.join("\n"));
}

/// A serde Deserializer that produces a value for any of our raw types and records the dotted
/// path of every leaf it is asked for.
struct Collector<'a> {
    prefix: String,
    keys: &'a RefCell<BTreeSet<String>>,
}

impl Collector<'_> {
    fn record(&self) {
        self.keys.borrow_mut().insert(self.prefix.clone());
    }
}

impl<'de> Deserializer<'de> for Collector<'_> {
    type Error = de::value::Error;

    /// A leaf whose type is decided by its value (`daemon.listen`, a string or a boolean):
    /// offered a string, which every such key accepts.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_str("127.0.0.1:1")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_i64(1)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_f64(0.5)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_str("/x")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }
    /// `migrate.environments`: one entry, NAME (none inside it, which would recurse forever).
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let names: &'static [&'static str] = if self.prefix.contains(".NAME") { &[] } else { &["NAME"] };
        visitor.visit_map(Fields { fields: names, next: 0, prefix: self.prefix, keys: self.keys })
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_seq(de::value::SeqDeserializer::<_, Self::Error>::new(std::iter::empty::<&str>()))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.record();
        visitor.visit_enum(variants[0].into_deserializer())
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Fields { fields, next: 0, prefix: self.prefix, keys: self.keys })
    }
    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct identifier ignored_any
    }
}

struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    prefix: String,
    keys: &'a RefCell<BTreeSet<String>>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let field = self.fields[self.next];
        self.next += 1;
        let prefix = if self.prefix.is_empty() { field.to_string() } else { format!("{}.{field}", self.prefix) };
        seed.deserialize(Collector { prefix, keys: self.keys })
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.cluster.connection.expose(), ConnectionString::DEFAULT);
    assert_eq!(config.cluster.os_user, "postgres");
    assert_eq!(config.cluster.pgdata, None);
    assert_eq!(config.cluster.bin_dir, None);
    assert_eq!(config.repository.url, RepositoryUrl::Local("/var/lib/lifeboat/repo".into()));
    assert_eq!(config.repository.cipher, Cipher::Aes256Gcm);
    assert_eq!(config.repository.compression, Compression { algorithm: CompressionAlgorithm::Zstd, level: 3 });
    assert!(config.repository.s3.is_none() && config.s3_settings().is_none());
    assert!(!config.has_key());
    assert_eq!(config.origin(), Path::new(ORIGIN));
}

#[test]
fn s3_settings_map_the_table_and_its_defaults() {
    let config = parse(&format!("{MINIMAL}[repository]\nurl = \"s3://backups/prod/db1\"\n")).unwrap();
    let s3 = config.s3_settings().unwrap();
    assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("backups", "prod/db1"));
    assert_eq!((s3.endpoint, s3.region.as_str(), s3.force_path_style), (None, "us-east-1", false));
    assert_eq!(s3.part_size, S3Settings::DEFAULT_PART_SIZE);
    assert_eq!(s3.max_attempts, S3Settings::DEFAULT_MAX_ATTEMPTS);

    let config = parse(&format!(
        "{MINIMAL}[repository]\nurl = \"s3://backups\"\n[repository.s3]\nendpoint = \"http://127.0.0.1:9000\"\n\
         force_path_style = true\naccess_key_id = \"minio\"\nsecret_access_key = \"minio-secret\"\n\
         part_size_mib = 5\nmax_attempts = 1\n"
    ))
    .unwrap();
    let s3 = config.s3_settings().unwrap();
    assert_eq!(s3.prefix, "");
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(s3.force_path_style);
    assert_eq!(s3.part_size, S3Settings::MIN_PART_SIZE);
    assert_eq!(s3.max_attempts, 1);
    let credentials = s3.credentials.unwrap();
    assert_eq!(credentials.access_key_id, "minio");
    assert_eq!(credentials.secret_access_key.expose(), "minio-secret");
    assert_eq!(config.source.s3_credentials.unwrap().to_string(), "inline in config (repository.s3.secret_access_key)");
}

#[test]
fn object_lock_takes_a_mode_and_days_or_the_governance_shorthand() {
    use crate::storage::s3::{ObjectLock, ObjectLockMode};
    let s3 = |table: &str| format!("{MINIMAL}[repository]\nurl = \"s3://backups\"\n[repository.s3]\n{table}\n");
    let lock = |table: &str| parse(&s3(table)).unwrap().repository.s3.unwrap().object_lock;
    assert_eq!(lock(""), None);
    assert_eq!(
        lock("object_lock = { mode = \"compliance\", days = 7 }"),
        Some(ObjectLock { mode: ObjectLockMode::Compliance, days: 7 })
    );
    assert_eq!(lock("object_lock_days = 30"), Some(ObjectLock { mode: ObjectLockMode::Governance, days: 30 }));

    let both = error(&s3("object_lock = { mode = \"governance\", days = 1 }\nobject_lock_days = 1"));
    assert!(both.contains("repository.s3.object_lock_days: both object_lock and object_lock_days"), "{both}");
    let zero = error(&s3("object_lock = { mode = \"governance\", days = 0 }"));
    assert!(zero.contains("repository.s3.object_lock.days: 0 is out of range (1..=36500)"), "{zero}");
    let zero = error(&s3("object_lock_days = 0"));
    assert!(zero.contains("repository.s3.object_lock_days: 0 is out of range"), "{zero}");
    let mode = error(&s3("object_lock = { mode = \"strict\", days = 1 }"));
    assert!(mode.contains("repository.s3.object_lock.mode") && mode.contains("`governance`"), "{mode}");
    assert!(mode.contains("`compliance`"), "{mode}");
    let missing = error(&s3("object_lock = { days = 1 }"));
    assert!(missing.contains("repository.s3.object_lock: needs a mode"), "{missing}");

    let local = error(&format!(
        "{MINIMAL}[repository]\nurl = \"/var/lib/lifeboat/repo\"\n[repository.s3]\nobject_lock_days = 3\n"
    ));
    assert!(local.contains("repository.s3.object_lock_days: Object Lock is an S3 feature"), "{local}");
}

// ---------------------------------------------------------------------------------------------
// Errors: file, line, column, key, message

#[test]
fn malformed_toml_names_file_and_line() {
    let message = error("[cluster]\nname = \"main\"\npgdata = \"/var/lib/pg\n");
    assert!(message.starts_with(&format!("{ORIGIN}:3:")), "{message}");
    assert!(message.contains("invalid TOML"), "{message}");

    let message = error("[cluster]\nname = \"main\"\nname = \"other\"\n");
    assert_eq!(message, format!("{ORIGIN}:3:1: invalid TOML: the key name is set twice; keep one"));
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let message = error("[cluster]\nname = \"main\"\npg_data = \"/var/lib/pg\"\n");
    assert!(message.starts_with(&format!("{ORIGIN}:3:1: cluster.pg_data: unknown key `pg_data`")), "{message}");
    assert!(message.contains("`pgdata`") && message.contains("lifeboat.example.toml"), "{message}");

    // Sections of later versions are not silently accepted either, nor keys they might have.
    let message = error(&format!("{MINIMAL}\n[alerts]\nemail = \"dba@example.com\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:2: alerts: unknown key `alerts`")), "{message}");
    let message = error(&format!("{MINIMAL}\n[notify]\nemail = \"dba@example.com\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:5:1: notify.email: unknown key `email`")), "{message}");

    let message = error(&format!("{MINIMAL}[repository]\ncompression = {{ level = 3, threads = 4 }}\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:28: repository.compression.threads: unknown key")), "{message}");
}

#[test]
fn wrong_types_name_the_key_and_the_expected_type() {
    let message = error(&format!("{MINIMAL}[repository.s3]\nforce_path_style = \"yes\"\n"));
    assert_eq!(
        message,
        format!("{ORIGIN}:4:20: repository.s3.force_path_style: invalid type: string \"yes\", expected a boolean")
    );
    let message = error("cluster = 5\n");
    assert_eq!(message, format!("{ORIGIN}:1:11: cluster: invalid type: integer `5`, expected a table"));
    let message = error(&format!("{MINIMAL}[repository]\ncipher = \"rot13\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:10: repository.cipher: unknown value `rot13`")), "{message}");
    let message = error(&format!("{MINIMAL}[repository]\ncompression = {{ level = \"high\" }}\n"));
    assert!(message.contains(":4:25: repository.compression.level: invalid type") && message.contains("integer"));
}

#[test]
fn missing_required_keys_name_the_key_and_where_it_belongs() {
    let message = error("# lifeboat\n\n[cluster]\npgdata = \"/var/lib/pg\"\n");
    assert!(message.starts_with(&format!("{ORIGIN}:3:1: cluster.name: missing required key")), "{message}");
    assert!(message.contains("name = \"main\""), "{message}");

    let message = error("[repository]\nurl = \"/srv/repo\"\n");
    assert!(message.starts_with(&format!("{ORIGIN}: cluster: the [cluster] table is missing")), "{message}");
    let message = error("");
    assert!(message.contains("cluster: the [cluster] table is missing"), "{message}");
}

#[test]
fn backup_settings_have_defaults_and_are_checked() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.backup, BackupConfig::default());
    assert!(config.backup.fast_checkpoint);
    assert_eq!(config.backup.lock_wait, std::time::Duration::from_secs(600));
    assert_eq!(config.backup.workers, BackupConfig::default_workers());
    let text = format!("{MINIMAL}\n[backup]\nworkers = 3\nfast_checkpoint = false\nlock_wait = \"1h30m\"\n");
    let expected = BackupConfig {
        workers: 3,
        fast_checkpoint: false,
        lock_wait: std::time::Duration::from_secs(5400),
        archive_timeout: std::time::Duration::from_secs(60),
        retention: Retention::default(),
        schedule: super::BackupSchedule::default(),
    };
    assert_eq!(parse(&text).unwrap().backup, expected);
    let message = error(&format!("{MINIMAL}\n[backup]\nworkers = 0\n"));
    assert_eq!(message, format!("{ORIGIN}:5:11: backup.workers: 0 is out of range (1..=256)"));
    let message = error(&format!("{MINIMAL}\n[backup]\nlock_wait = \"10 minutes\"\n"));
    assert!(message.contains(":5:13: backup.lock_wait: \"10 minutes\" is not a duration"), "{message}");
    let config = parse(&format!("{MINIMAL}\n[backup]\narchive_timeout = \"5m\"\n")).unwrap();
    assert_eq!(config.backup.archive_timeout, std::time::Duration::from_secs(300));
    let message = error(&format!("{MINIMAL}\n[backup]\narchive_timeout = \"soon\"\n"));
    assert!(message.contains("backup.archive_timeout: \"soon\" is not a duration"), "{message}");
    assert!(message.contains("\"10m\""), "{message}");
}

#[test]
fn out_of_range_numbers_say_the_range() {
    let text =
        format!("{MINIMAL}\n[repository]\nurl = \"/srv/repo\"\ncompression = {{ algorithm = \"zstd\", level = 42 }}\n");
    assert_eq!(
        error(&text),
        format!(
            "{ORIGIN}:6:45: repository.compression.level: 42 is out of range (1..=19); 3 (the default) \
             is fast, 19 is smallest and slowest"
        )
    );
    let message = error(&format!("{MINIMAL}[repository]\nurl = \"s3://b1b\"\n[repository.s3]\npart_size_mib = 4\n"));
    assert_eq!(message, format!("{ORIGIN}:6:17: repository.s3.part_size_mib: 4 is out of range (5..=5120)"));
    let message = error(&format!("{MINIMAL}[repository]\nurl = \"s3://b1b\"\n[repository.s3]\nmax_attempts = -1\n"));
    assert!(message.contains(":6:16: repository.s3.max_attempts: -1 is out of range (1..=20)"), "{message}");
}

#[test]
fn bad_values_are_located() {
    let message = error(&format!("{MINIMAL}[repository]\nurl = \"file://var/lib/repo\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:7: repository.url: \"file://var/lib/repo\"")), "{message}");
    assert!(message.contains("three slashes"), "{message}");
    let message = error(&format!("{MINIMAL}[repository]\nurl = \"s3://Backups_2026\"\n"));
    assert!(message.contains(":4:7: repository.url: the bucket name \"Backups_2026\""), "{message}");

    let message = error("[cluster]\nname = \"main/prod\"\n");
    assert!(message.starts_with(&format!("{ORIGIN}:2:8: cluster.name: \"main/prod\" is not a valid cluster name")));
    assert!(error("[cluster]\nname = \"..\"\n").contains("not a valid cluster name"));
    assert!(error(&"[cluster]\nname = \"NAME\"\n".replace("NAME", &"a".repeat(65))).contains("not a valid"));

    let message = error("[cluster]\nname = \"main\"\npgdata = \"data\"\n");
    assert!(message.starts_with(&format!("{ORIGIN}:3:10: cluster.pgdata: \"data\" is not an absolute path")));
    let message = error(&format!("{MINIMAL}[repository]\nkey_file = \"repo.key\"\n"));
    assert!(message.contains(":4:12: repository.key_file: \"repo.key\" is not an absolute path"), "{message}");

    let message = error(&format!("{MINIMAL}[repository.s3]\nregion = \"eu-west-1\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:3:1: repository.s3: [repository.s3] is set but")), "{message}");

    let message =
        error(&format!("{MINIMAL}[repository]\npassphrase = \"x\"\npassphrase_file = \"/etc/lifeboat/passphrase\"\n"));
    assert!(message.contains(":4:14: repository.passphrase: both passphrase and passphrase_file"), "{message}");
    assert!(error(&format!("{MINIMAL}[repository]\npassphrase = \"\"\n")).contains("repository.passphrase: is empty"));

    let message =
        error(&format!("{MINIMAL}[repository]\nurl = \"s3://b1b\"\n[repository.s3]\nendpoint = \"minio:9000\"\n"));
    assert!(message.contains(":6:12: repository.s3.endpoint: \"minio:9000\" must start with https://"), "{message}");
}

#[test]
fn half_of_the_s3_credentials_is_an_error() {
    let base = format!("{MINIMAL}[repository]\nurl = \"s3://backups\"\n\n[repository.s3]\nregion = \"eu-west-1\"\n");
    let message = error(&format!("{base}access_key_id = \"AKIAEXAMPLE\"\n"));
    assert!(
        message.starts_with(&format!(
            "{ORIGIN}:8:17: repository.s3.access_key_id: is set but secret_access_key is not: set both, or neither"
        )),
        "{message}"
    );
    assert!(message.contains("AWS_PROFILE") && !message.contains("AKIAEXAMPLE"), "{message}");
    let message = error(&format!("{base}secret_access_key = \"wJalrXUtnFEMI\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:8:21: repository.s3.secret_access_key: is set but")), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Environment and key sources

const WITH_FILE_SECRETS: &str = "[cluster]\nname = \"main\"\n[repository]\npassphrase_file = \"/etc/lifeboat/passphrase\"\nkey_file = \"/etc/lifeboat/repo.key\"\n";

#[test]
fn the_environment_overrides_the_file() {
    let config = parse(WITH_FILE_SECRETS).unwrap();
    assert_eq!(
        config.source.passphrase.as_ref().unwrap().to_string(),
        "file /etc/lifeboat/passphrase (from repository.passphrase_file)"
    );
    assert_eq!(
        config.source.key_file.as_ref().unwrap().to_string(),
        "file /etc/lifeboat/repo.key (from repository.key_file)"
    );

    // LIFEBOAT_PASSPHRASE beats everything the file says about the passphrase, and the file variable.
    let config = parse_with_env(
        WITH_FILE_SECRETS,
        &[(env::PASSPHRASE, "from-env"), (env::PASSPHRASE_FILE, "/run/secrets/pass")],
    )
    .unwrap();
    assert_eq!(config.repository.passphrase.as_ref().unwrap().expose(), "from-env");
    assert_eq!(config.repository.passphrase_file, None);
    assert_eq!(config.source.passphrase, Some(SecretOrigin::Env("LIFEBOAT_PASSPHRASE")));
    assert_eq!(config.source.passphrase.unwrap().to_string(), "env LIFEBOAT_PASSPHRASE");

    // LIFEBOAT_PASSPHRASE_FILE beats an inline passphrase.
    let inline = format!("{MINIMAL}[repository]\npassphrase = \"inline\"\n");
    let config = parse_with_env(&inline, &[(env::PASSPHRASE_FILE, "/run/secrets/pass")]).unwrap();
    assert!(config.repository.passphrase.is_none());
    assert_eq!(config.repository.passphrase_file.as_deref(), Some(Path::new("/run/secrets/pass")));
    assert_eq!(
        config.source.passphrase.unwrap().to_string(),
        "file /run/secrets/pass (from env LIFEBOAT_PASSPHRASE_FILE)"
    );
    let config = parse(&inline).unwrap();
    assert_eq!(config.source.passphrase.unwrap().to_string(), "inline in config (repository.passphrase)");

    // LIFEBOAT_KEY_FILE replaces key_file; a relative path is taken from the working directory.
    let config = parse_with_env(WITH_FILE_SECRETS, &[(env::KEY_FILE, "keys/repo.key")]).unwrap();
    let expected = std::env::current_dir().unwrap().join("keys/repo.key");
    assert_eq!(config.repository.key_file.as_deref(), Some(expected.as_path()));
    assert_eq!(
        config.source.key_file.unwrap().to_string(),
        format!("file {} (from env LIFEBOAT_KEY_FILE)", expected.display())
    );

    // Empty variables count as unset.
    let config = parse_with_env(WITH_FILE_SECRETS, &[(env::PASSPHRASE, ""), (env::KEY_FILE, "")]).unwrap();
    assert_eq!(config.repository.passphrase_file.as_deref(), Some(Path::new("/etc/lifeboat/passphrase")));
    assert_eq!(config.repository.key_file.as_deref(), Some(Path::new("/etc/lifeboat/repo.key")));
}

fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn passphrase_of(config: &Config) -> Result<String, ConfigError> {
    match config.key_source()? {
        KeySource::Passphrase(secret) => Ok(secret.expose().to_string()),
        KeySource::KeyFile(path) => {
            panic!("expected a passphrase, got key file {}", path.display())
        }
    }
}

#[test]
fn key_sources() {
    let dir = tempfile::tempdir().unwrap();
    let pass = |content: &[u8], mode: u32| {
        let path = write_file(dir.path(), "passphrase", content, mode);
        parse_with_env(MINIMAL, &[(env::PASSPHRASE_FILE, path.to_str().unwrap())]).unwrap()
    };

    // The key file wins: it is fast to unlock.
    let config = parse_with_env(WITH_FILE_SECRETS, &[(env::PASSPHRASE, "from-env")]).unwrap();
    match config.key_source().unwrap() {
        KeySource::KeyFile(path) => assert_eq!(path, Path::new("/etc/lifeboat/repo.key")),
        KeySource::Passphrase(_) => panic!("the key file should win"),
    }

    // Exactly one trailing newline (LF or CRLF) is stripped; other whitespace is the passphrase's.
    assert_eq!(passphrase_of(&pass(b"correct horse\n", 0o600)).unwrap(), "correct horse");
    assert_eq!(passphrase_of(&pass(b"correct horse\r\n", 0o600)).unwrap(), "correct horse");
    assert_eq!(passphrase_of(&pass(b"correct horse\n\n", 0o600)).unwrap(), "correct horse\n");
    assert_eq!(passphrase_of(&pass(b" spaced ", 0o600)).unwrap(), " spaced ");
    // Readable by others: a warning, not an error.
    assert_eq!(passphrase_of(&pass(b"open\n", 0o644)).unwrap(), "open");

    let message = passphrase_of(&pass(b"\n", 0o600)).unwrap_err().to_string();
    assert!(message.contains("is empty") && message.contains("LIFEBOAT_PASSPHRASE_FILE"), "{message}");
    let message = passphrase_of(&pass(b"\xff\xfe", 0o600)).unwrap_err().to_string();
    assert!(message.contains("not UTF-8"), "{message}");

    let missing = dir.path().join("nope");
    let config = parse_with_env(MINIMAL, &[(env::PASSPHRASE_FILE, missing.to_str().unwrap())]).unwrap();
    let message = passphrase_of(&config).unwrap_err().to_string();
    assert!(
        message.contains(&missing.display().to_string())
            && message.contains("named by env LIFEBOAT_PASSPHRASE_FILE")
            && message.contains("No such file"),
        "{message}"
    );

    assert_eq!(passphrase_of(&parse_with_env(MINIMAL, &[(env::PASSPHRASE, "env pass")]).unwrap()).unwrap(), "env pass");
    assert_eq!(
        passphrase_of(&parse(&format!("{MINIMAL}[repository]\npassphrase = \"inline\"\n")).unwrap()).unwrap(),
        "inline"
    );

    let message = parse(MINIMAL).unwrap().key_source().unwrap_err().to_string();
    for way in [
        "repository.key_file",
        "repository.passphrase_file",
        "LIFEBOAT_KEY_FILE",
        "LIFEBOAT_PASSPHRASE_FILE",
        "LIFEBOAT_PASSPHRASE",
        ORIGIN,
    ] {
        assert!(message.contains(way), "{way} missing from: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Loading from disk

#[test]
fn load_reads_the_given_file_and_explains_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "lifeboat.toml", MINIMAL.as_bytes(), 0o640);
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.origin(), path);

    let missing = dir.path().join("missing.toml");
    let message = Config::load(Some(&missing)).unwrap_err().to_string();
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert!(message.contains("config/lifeboat.example.toml") && message.contains("--config"), "{message}");

    let broken = write_file(dir.path(), "broken.toml", b"[cluster]\nname = \n", 0o640);
    let message = Config::load(Some(&broken)).unwrap_err().to_string();
    assert!(message.starts_with(&format!("{}:2:", broken.display())), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Secrets never reach output (G5)

/// The secrets of these tests. The access key id is not secret to AWS (it is an identifier), and
/// `S3Credentials` (in storage) shows it in `Debug`; config show and errors still hide it.
const SECRETS: [&str; 4] = ["inline-hunter2", "env-hunter2", "s3-hunter2", "pg-hunter2"];
const ACCESS_KEY_ID: &str = "AKIAHUNTER2";

fn assert_no_secret(what: &str, text: &str) {
    assert!(what.starts_with("Debug") || !text.contains(ACCESS_KEY_ID), "{what} shows the access key id:\n{text}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret}:\n{text}");
    }
}

#[test]
fn config_show_and_debug_never_print_secrets() {
    let text = "[cluster]\nname = \"main\"\nconnection = \"postgresql://app:pg-hunter2@db:5432/app?sslmode=require\"\n\
                [repository]\nurl = \"s3://backups/prod\"\npassphrase = \"inline-hunter2\"\n\
                [repository.s3]\naccess_key_id = \"AKIAHUNTER2\"\nsecret_access_key = \"s3-hunter2\"\n";
    for vars in [&[][..], &[(env::PASSPHRASE, "env-hunter2")][..]] {
        let config = parse_with_env(text, vars).unwrap();
        let shown = config.to_redacted_toml();
        assert_no_secret("config show", &shown);
        assert_no_secret("Debug", &format!("{config:?}"));
        assert_no_secret("Debug of s3_settings", &format!("{:?}", config.s3_settings()));
        assert!(shown.contains("connection = \"postgresql://app:<redacted>@db:5432/app?sslmode=require\""), "{shown}");
        assert!(shown.contains("passphrase = \"<redacted>\"") && shown.contains("secret_access_key = \"<redacted>\""));
        // The passphrase's origin is stated.
        let origin =
            if vars.is_empty() { "inline in config (repository.passphrase)" } else { "env LIFEBOAT_PASSPHRASE" };
        assert!(shown.contains(&format!("# passphrase:     {origin}")), "{shown}");
        assert!(shown.contains("# S3 credentials: inline in config"), "{shown}");
    }
    // The query-parameter form of a password too.
    let config =
        parse("[cluster]\nname = \"main\"\nconnection = \"postgresql://app@db/app?password=pg-hunter2\"\n").unwrap();
    assert_no_secret("config show", &config.to_redacted_toml());
    assert!(config.to_redacted_toml().contains("?password=<redacted>"));
}

#[test]
fn errors_never_print_secrets() {
    let bad = [
        // Wrong types: serde would quote the value.
        "[cluster]\nname = \"main\"\n[repository]\npassphrase = 12345\n".replace("12345", "[\"inline-hunter2\"]"),
        "[cluster]\nname = \"main\"\n[repository]\nurl = \"s3://b1b\"\n[repository.s3]\naccess_key_id = \"AKIAHUNTER2\"\nsecret_access_key = { v = \"s3-hunter2\" }\n".into(),
        // A syntax error on the secret's line: toml's own Display would quote the line.
        "[cluster]\nname = \"main\"\n[repository]\npassphrase = \"inline-hunter2\n".into(),
        "[cluster]\nname = \"main\"\n[repository]\npassphrase = inline-hunter2\n".into(),
        // Invalid values of keys that may hold secrets.
        "[cluster]\nname = \"main\"\nconnection = \"host=db password=pg-hunter2\"\n".into(),
        "[cluster]\nname = \"main\"\n[repository]\nurl = \"s3://AKIAHUNTER2:s3-hunter2@bucket/x\"\n".into(),
        "[cluster]\nname = \"main\"\n[repository]\nurl = \"https://AKIAHUNTER2:s3-hunter2@host/x\"\n".into(),
        "[cluster]\nname = \"main\"\n[repository]\nurl = \"s3://b1b\"\n[repository.s3]\nendpoint = \"https://AKIAHUNTER2:s3-hunter2@host\"\n".into(),
        "[cluster]\nname = \"main\"\n[repository]\nurl = \"s3://b1b\"\n[repository.s3]\nsecret_access_key = \"s3-hunter2\"\n".into(),
    ];
    for text in bad {
        let error = parse(&text).expect_err(&text);
        assert_no_secret("error Display", &error.to_string());
        assert_no_secret("error Debug", &format!("{error:?}"));
        assert!(error.to_string().starts_with(ORIGIN), "{error}");
    }
    // Integer "secrets" are not echoed either.
    let error = parse("[cluster]\nname = \"main\"\n[repository]\npassphrase = 987654321\n").unwrap_err();
    assert!(!error.to_string().contains("987654321"), "{error}");
    assert!(error.to_string().contains(":4:14: repository.passphrase: expected a string"), "{error}");
}

#[test]
fn config_show_round_trips() {
    for text in [MINIMAL, EXAMPLE, WITH_FILE_SECRETS] {
        let config = parse(text).unwrap();
        let shown = config.to_redacted_toml();
        let again = parse(&shown).unwrap_or_else(|error| panic!("{error}\n{shown}"));
        assert_eq!(again.to_redacted_toml(), shown);
        assert_eq!(format!("{:?}", again.repository), format!("{:?}", config.repository));
    }
    let shown = parse(EXAMPLE).unwrap().to_redacted_toml();
    assert!(
        shown.contains("# key file:       file /etc/lifeboat/repo.key (from repository.key_file); unlocking uses it"),
        "{shown}"
    );
    assert!(shown.contains("# S3 credentials: the standard AWS chain"), "{shown}");
}

#[test]
fn dump_settings_have_defaults_and_are_validated() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.dump, DumpConfig::default());
    assert_eq!(config.dump.lock_wait, std::time::Duration::from_secs(600));

    let config =
        parse(&format!("{MINIMAL}[dump]\ndatabases = [\"app\", 'Sales \"2026\"']\nlock_wait = \"90s\"\n")).unwrap();
    assert_eq!(config.dump.databases, Some(vec!["app".to_owned(), "Sales \"2026\"".to_owned()]));
    assert_eq!(config.dump.lock_wait, std::time::Duration::from_secs(90));

    let message = error(&format!("{MINIMAL}[dump]\ndatabases = []\n"));
    assert!(message.contains(":4:13: dump.databases: is an empty list"), "{message}");
    let message = error(&format!("{MINIMAL}[dump]\nlock_wait = \"soon\"\n"));
    assert!(message.contains("dump.lock_wait") && message.contains("not a duration"), "{message}");
    let message = error(&format!("{MINIMAL}[dump]\ndatabase = [\"app\"]\n"));
    assert!(message.contains("unknown key `database`"), "{message}");
}

#[test]
fn wal_settings_have_defaults_and_are_validated() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.wal, WalConfig::default());
    assert_eq!(config.wal.prefetch, 8);
    assert!(config.to_redacted_toml().contains("[wal]\nprefetch = 8\n# spool_dir: not set"));

    let config = parse(&format!("{MINIMAL}[wal]\nprefetch = 0\nspool_dir = \"/var/lib/lifeboat/spool\"\n")).unwrap();
    assert_eq!(config.wal.prefetch, 0);
    assert_eq!(config.wal.spool_dir.as_deref(), Some(Path::new("/var/lib/lifeboat/spool")));
    assert!(config.to_redacted_toml().contains("spool_dir = \"/var/lib/lifeboat/spool\""));

    let message = error(&format!("{MINIMAL}[wal]\nprefetch = 65\n"));
    assert!(message.contains(":4:12: wal.prefetch: 65 is out of range (0..=64)"), "{message}");
    let message = error(&format!("{MINIMAL}[wal]\nspool_dir = \"spool\"\n"));
    assert!(message.contains("wal.spool_dir") && message.contains("not an absolute path"), "{message}");
    let message = error(&format!("{MINIMAL}[wal]\nprefech = 4\n"));
    assert!(message.contains("unknown key `prefech`"), "{message}");
}

#[test]
fn wal_push_ahead_and_compression_level_have_defaults_are_shown_and_validated() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!((config.wal.push_ahead, config.wal.compression_level), (4, 1));
    assert!(config.to_redacted_toml().contains("push_ahead = 4\ncompression_level = 1\n"));

    let config = parse(&format!("{MINIMAL}[wal]\npush_ahead = 0\ncompression_level = 3\n")).unwrap();
    assert_eq!((config.wal.push_ahead, config.wal.compression_level), (0, 3));
    assert!(config.to_redacted_toml().contains("push_ahead = 0\ncompression_level = 3\n"));

    let message = error(&format!("{MINIMAL}[wal]\npush_ahead = 65\n"));
    assert!(message.contains("wal.push_ahead: 65 is out of range (0..=64)"), "{message}");
    let message = error(&format!("{MINIMAL}[wal]\ncompression_level = 0\n"));
    assert!(message.contains("wal.compression_level: 0 is out of range (1..=19)"), "{message}");
}

#[test]
fn verify_settings_default_when_absent() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.verify, VerifyConfig::default());
    assert!(!config.verify.after_backup);
    assert_eq!(config.verify.scratch_dir, Path::new("/var/tmp"));
    assert_eq!(config.verify.amcheck, AmcheckLevel::Indexes);
    assert_eq!(config.verify.timeout, std::time::Duration::from_secs(6 * 3600));
    assert!(config.verify.checks.is_empty());
    // An empty table and an empty list are the defaults too.
    assert_eq!(parse(&format!("{MINIMAL}[verify]\nchecks = []\n")).unwrap().verify, VerifyConfig::default());
    let shown = config.to_redacted_toml();
    assert!(
        shown.contains(
            "\n[verify]\nafter_backup = false\nscratch_dir = \"/var/tmp\"\n\
             # dump_server: not set (dumps are verified in a scratch cluster lifeboat starts)\n\
             amcheck = \"indexes\"\ntimeout = \"6h\"\nchecks = []\n"
        ),
        "{shown}"
    );
    assert_eq!(
        [AmcheckLevel::Off, AmcheckLevel::Indexes, AmcheckLevel::HeapAllIndexed].map(|level| level.as_str()),
        ["off", "indexes", "heapallindexed"]
    );
}

#[test]
fn verify_settings_are_parsed_with_both_forms_of_check() {
    let text = format!(
        "{MINIMAL}[verify]\nafter_backup = true\nscratch_dir = \"/srv/scratch\"\namcheck = \"heapallindexed\"\n\
         timeout = \"1h30m\"\nchecks = [\n  \"select count(*) > 0 from users\",\n  \
         {{ database = \"app\", query = \"select max(created_at) > now() - interval '1 day' from orders\" }},\n  \
         {{ query = \"select true\" }},\n]\n"
    );
    let config = parse(&text).unwrap();
    let expected = VerifyConfig {
        after_backup: true,
        scratch_dir: PathBuf::from("/srv/scratch"),
        dump_server: None,
        amcheck: AmcheckLevel::HeapAllIndexed,
        timeout: std::time::Duration::from_secs(5400),
        checks: vec![
            SqlCheck { database: None, query: "select count(*) > 0 from users".into() },
            SqlCheck {
                database: Some("app".into()),
                query: "select max(created_at) > now() - interval '1 day' from orders".into(),
            },
            SqlCheck { database: None, query: "select true".into() },
        ],
        schedule: None,
    };
    assert_eq!(config.verify, expected);
    assert_eq!(parse(&format!("{MINIMAL}[verify]\namcheck = \"off\"\n")).unwrap().verify.amcheck, AmcheckLevel::Off);

    // The example's section is the one documented.
    let example = parse(EXAMPLE).unwrap().verify;
    assert_eq!(example.checks.len(), 2);
    assert_eq!(example.checks[1].database.as_deref(), Some("app"));
    assert_eq!(
        VerifyConfig { checks: Vec::new(), schedule: None, ..example },
        VerifyConfig::default(),
        "the example should show the defaults"
    );

    // config show prints both forms, as TOML that reads back the same (also with awkward queries).
    let shown = config.to_redacted_toml();
    assert!(
        shown.contains(
            "\n[verify]\nafter_backup = true\nscratch_dir = \"/srv/scratch\"\n\
             # dump_server: not set (dumps are verified in a scratch cluster lifeboat starts)\n\
             amcheck = \"heapallindexed\"\n\
             timeout = \"1h30m\"\nchecks = [\n  \"select count(*) > 0 from users\",\n  \
             { database = \"app\", query = \"select max(created_at) > now() - interval '1 day' from orders\" },\n  \
             \"select true\",\n]\n"
        ),
        "{shown}"
    );
    assert_eq!(parse(&shown).unwrap().verify, expected);
    let awkward = format!(
        "{MINIMAL}[verify]\nchecks = [\"\"\"\nselect 'it''s' = \"it's\"\n  and true\"\"\", \
         {{ database = 'Sales \"2026\"', query = 'select \\d' }}]\n"
    );
    let config = parse(&awkward).unwrap();
    assert_eq!(config.verify.checks[0].query, "select 'it''s' = \"it's\"\n  and true");
    assert_eq!(config.verify.checks[1].database.as_deref(), Some("Sales \"2026\""));
    let shown = config.to_redacted_toml();
    assert_eq!(parse(&shown).unwrap_or_else(|error| panic!("{error}\n{shown}")).verify, config.verify);
}

#[test]
fn verify_settings_are_validated_with_their_place() {
    let message = error(&format!("{MINIMAL}[verify]\nscratch_dir = \"scratch\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:15: verify.scratch_dir: \"scratch\" is not an absolute path")));

    let message = error(&format!("{MINIMAL}[verify]\ntimeout = \"6 hours\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:11: verify.timeout: \"6 hours\" is not a duration")));
    assert!(message.contains("\"10m\""), "{message}");
    let message = error(&format!("{MINIMAL}[verify]\ntimeout = \"500ms\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:11: verify.timeout: \"500ms\" is too short")), "{message}");
    assert!(message.contains("at least \"1s\""), "{message}");
    assert_eq!(
        parse(&format!("{MINIMAL}[verify]\ntimeout = \"1s\"\n")).unwrap().verify.timeout,
        std::time::Duration::from_secs(1)
    );

    let message = error(&format!("{MINIMAL}[verify]\namcheck = \"full\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:11: verify.amcheck: unknown value `full`")), "{message}");
    assert!(message.contains("`off`, `indexes`, `heapallindexed`"), "{message}");

    // Checks: the item is named by its index, and the line is the item's (or its key's).
    let checks = |items: &str| error(&format!("{MINIMAL}[verify]\nchecks = [\n  \"select true\",\n  {items},\n]\n"));
    let message = checks("\"  \"");
    assert!(message.starts_with(&format!("{ORIGIN}:6:3: verify.checks[1]: is an empty query")), "{message}");
    let message = checks("{ database = \"app\", query = \"\" }");
    assert!(message.starts_with(&format!("{ORIGIN}:6:31: verify.checks[1].query: is an empty query")), "{message}");
    let message = checks("{ database = \"\", query = \"select true\" }");
    assert!(
        message.starts_with(&format!("{ORIGIN}:6:16: verify.checks[1].database: \"\" is not a database name")),
        "{message}"
    );
    assert!(message.contains("cluster.connection"), "{message}");
    let message = checks("{ database = \"app\" }");
    assert!(message.starts_with(&format!("{ORIGIN}:6:3: verify.checks[1].query: missing required key")), "{message}");
    let message = checks("{ db = \"app\", query = \"select true\" }");
    assert!(message.starts_with(&format!("{ORIGIN}:6:5: verify.checks[1].db: unknown key `db`")), "{message}");
    assert!(message.contains("`database`, `query`") || message.contains("`database` or `query`"), "{message}");
    let message = checks("42");
    assert!(message.starts_with(&format!("{ORIGIN}:6:3: verify.checks[1]: invalid type: integer `42`")), "{message}");
    assert!(message.contains("expected a query string, or a table { database"), "{message}");
    let message = error(&format!("{MINIMAL}[verify]\nchecks = \"select true\"\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:10: verify.checks: invalid type: string")), "{message}");

    let message = error(&format!("{MINIMAL}[verify]\nafter_backups = true\n"));
    assert!(message.starts_with(&format!("{ORIGIN}:4:1: verify.after_backups: unknown key")), "{message}");
}

#[test]
fn the_dump_server_is_a_secret_connection_string() {
    let config =
        parse(&format!("{MINIMAL}[verify]\ndump_server = \"postgresql://verifier:s3cret@scratch-db/postgres\"\n"))
            .unwrap();
    let server = config.verify.dump_server.as_ref().expect("dump_server is set");
    assert_eq!(server.expose(), "postgresql://verifier:s3cret@scratch-db/postgres");
    let shown = config.to_redacted_toml();
    assert!(shown.contains("dump_server = \"postgresql://verifier:<redacted>@scratch-db/postgres\""), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let message = error(&format!("{MINIMAL}[verify]\ndump_server = \"mysql://root:s3cret@db\"\n"));
    assert!(message.contains("verify.dump_server"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// [backup] retention

#[test]
fn retention_is_optional_and_accepts_an_inline_or_a_separate_table() {
    let config = parse(MINIMAL).unwrap();
    assert!(config.backup.retention.is_empty());
    assert!(config.to_redacted_toml().contains("# retention: not set"));

    let inline = parse(&format!("{MINIMAL}[backup]\nretention = {{ full = 2, recovery_window = \"14d\" }}\n")).unwrap();
    let table =
        parse(&format!("{MINIMAL}[backup]\nworkers = 2\n[backup.retention]\nfull = 2\nrecovery_window = \"14d\"\n"))
            .unwrap();
    assert_eq!(inline.backup.retention, table.backup.retention);
    let retention = &inline.backup.retention;
    assert_eq!(retention.full, Some(2));
    assert_eq!(retention.recovery_window, Some(std::time::Duration::from_secs(14 * 86_400)));
    assert_eq!(retention.max_age, None);
    assert!(retention.limits_full_backups() && !retention.limits_dumps());

    // `config show` prints it back in a form that parses to the same policy.
    let shown = inline.to_redacted_toml();
    assert!(shown.contains("retention = { full = 2, recovery_window = \"14d\" }"), "{shown}");
    let example = parse(EXAMPLE).unwrap();
    let line = example.to_redacted_toml().lines().find(|line| line.starts_with("retention = ")).unwrap().to_owned();
    let again = parse(&format!("{MINIMAL}[backup]\n{line}\n")).unwrap();
    assert_eq!(again.backup.retention, example.backup.retention);
}

#[test]
fn retention_errors_name_the_key() {
    let message = error(&format!("{MINIMAL}[backup]\nretention = {{ full = 2, keep_last = 3 }}\n"));
    assert!(message.contains("backup.retention.keep_last: unknown key"), "{message}");
    let message = error(&format!("{MINIMAL}[backup]\nretention = {{ full = -1 }}\n"));
    assert!(message.contains("backup.retention.full") && message.contains("not a count"), "{message}");
    let message = error(&format!("{MINIMAL}[backup]\nretention = {{ recovery_window = \"two weeks\" }}\n"));
    assert!(message.contains("backup.retention.recovery_window") && message.contains("10m"), "{message}");
}

#[test]
fn schedules_and_the_daemon_table_parse_show_and_fail_where_written() {
    let text = format!(
        "{MINIMAL}\n[backup]\nschedule = {{ full = \"0 2 * * SUN\", dump = \"@daily\" }}\n\
         [verify]\nschedule = \"0 4 * * *\"\n[wal]\ncheck_schedule = \"*/30 * * * *\"\n\
         [daemon]\nlisten = \"127.0.0.1:9999\"\ntimezone = \"Europe/Berlin\"\ncatch_up = false\njitter = \"30s\"\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.backup.schedule.full.as_ref().map(|s| s.as_str()), Some("0 2 * * SUN"));
    assert_eq!(config.backup.schedule.dump.as_ref().map(|s| s.as_str()), Some("@daily"));
    assert_eq!(config.backup.schedule.expire, None);
    assert_eq!(config.verify.schedule.as_ref().map(|s| s.as_str()), Some("0 4 * * *"));
    assert_eq!(config.wal.check_schedule.as_ref().map(|s| s.as_str()), Some("*/30 * * * *"));
    assert_eq!(config.daemon.listen, Some("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(config.daemon.timezone.name(), "Europe/Berlin");
    assert!(!config.daemon.catch_up);
    assert_eq!(config.daemon.jitter, std::time::Duration::from_secs(30));
    let shown = config.to_redacted_toml();
    assert!(shown.contains("schedule = { full = \"0 2 * * SUN\", dump = \"@daily\" }"), "{shown}");
    assert!(shown.contains("listen = \"127.0.0.1:9999\""), "{shown}");
    let again = Config::from_toml(&shown, Path::new("/etc/lifeboat/lifeboat.toml"), &|_| None).unwrap();
    assert_eq!(again.backup.schedule, config.backup.schedule);
    assert_eq!(again.daemon, config.daemon);

    let defaults = parse(MINIMAL).unwrap().daemon;
    assert_eq!((defaults.listen, defaults.catch_up, defaults.timezone.name()), (None, true, "UTC"));
    let on = parse(&format!("{MINIMAL}\n[daemon]\nlisten = true\n")).unwrap();
    assert_eq!(on.daemon.listen, Some("127.0.0.1:9187".parse().unwrap()));

    let message = error(&format!("{MINIMAL}\n[backup]\nschedule = {{ full = \"at two\" }}\n"));
    assert!(
        message.starts_with(&format!("{ORIGIN}:5:21: backup.schedule.full: \"at two\" is not a cron schedule")),
        "{message}"
    );
    let message = error(&format!("{MINIMAL}\n[backup]\nschedule = {{ incremental = \"daily\" }}\n"));
    assert!(message.contains("backup.schedule.incremental: \"daily\" is not a cron schedule"), "{message}");
    let scheduled =
        parse(&format!("{MINIMAL}\n[backup]\nschedule = {{ incremental = \"0 2 * * MON-SAT\" }}\n")).unwrap();
    assert_eq!(scheduled.backup.schedule.incremental.as_ref().map(|s| s.as_str()), Some("0 2 * * MON-SAT"));
    let message = error(&format!("{MINIMAL}\n[daemon]\ntimezone = \"Mars/Olympus\"\n"));
    assert!(message.contains("daemon.timezone: \"Mars/Olympus\" is not a time zone"), "{message}");
    let message = error(&format!("{MINIMAL}\n[daemon]\nlisten = \"localhost\"\n"));
    assert!(message.contains("daemon.listen: \"localhost\" is not an address and port"), "{message}");
}

#[test]
fn migrate_environments_inherit_resolve_and_fail_where_written() {
    let text = format!(
        "{MINIMAL}\n[migrate]\ndatabase = \"app\"\nenvironment = \"production\"\nlock_timeout = \"2s\"\n\
         after = [\"staging\"]\nmin_server_version = 14\n\
         [migrate.environments.staging]\nconnection = \"postgresql://deploy:hunter2@staging-db/app\"\n\
         lock_retries = 7\n"
    );
    let config = parse(&text).unwrap();
    let migrate = &config.migrate;
    assert_eq!(migrate.dir, std::path::PathBuf::from("migrations"));
    let production = migrate.environment(None).unwrap();
    assert!(production.production, "an environment named production is guarded");
    assert_eq!(production.lock_timeout, std::time::Duration::from_secs(2));
    assert!(production.connection.expose().contains("/app"), "database replaces the path");
    assert_eq!(production.after, vec!["staging".to_owned()]);
    let staging = migrate.environment(Some("staging")).unwrap();
    assert!(!staging.production);
    assert_eq!(staging.lock_timeout, std::time::Duration::from_secs(2), "inherited from [migrate]");
    assert_eq!(staging.lock_retries, 7);
    assert_eq!(staging.history_table.quoted(), "\"lifeboat\".\"migrations\"");
    assert!(migrate.environment(Some("qa")).unwrap_err().contains("production, staging"));
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    let again = Config::from_toml(&shown, Path::new("/etc/lifeboat/lifeboat.toml"), &|_| None).unwrap();
    assert_eq!(again.migrate.environment(Some("staging")).unwrap().lock_retries, 7);

    let defaults = parse(MINIMAL).unwrap().migrate;
    let default = defaults.environment(None).unwrap();
    assert_eq!((default.name.as_str(), default.production), ("default", false));

    let message = error(&format!("{MINIMAL}\n[migrate]\nafter = [\"qa\"]\n"));
    assert!(message.contains("migrate.after: names \"qa\", which is not an environment"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate.environments.qa]\nlock_timeout = \"1s\"\n"));
    assert!(message.contains("migrate.environments.qa: has no connection"), "{message}");
    let message =
        error(&format!("{MINIMAL}\n[migrate.environments.qa]\nconnection = \"postgresql:///qa\"\nproduction = true\n"));
    assert!(message.contains("migrate.environments.qa.production: the backup gate can guard only"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate]\nhistory_table = \"public.bad-name\"\n"));
    assert!(message.contains("migrate.history_table: \"public.bad-name\" is not a table name"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate]\nschema_check = \"loud\"\n"));
    assert!(message.contains("migrate.schema_check: \"loud\" is not a mode"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate]\nsequence_share_limit = 1.5\n"));
    assert!(message.contains("migrate.sequence_share_limit: 1.5 is not a share"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate.lint]\nwarn_table_size = \"lots\"\n"));
    assert!(message.contains("migrate.lint.warn_table_size: \"lots\" is not a size"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate.lint]\nwarn_table_size = \"2GB\"\n"));
    assert!(message.contains("migrate.lint.error_table_size: 1GB is below warn_table_size (2GB)"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate.lint]\nwarn_table_rows = -1\n"));
    assert!(message.contains("migrate.lint.warn_table_rows: -1 is not a row count"), "{message}");
    let message =
        error(&format!("{MINIMAL}\n[migrate.environments.qa]\nconnection = \"postgresql:///qa\"\nseeds_dir = \"x\"\n"));
    assert!(message.contains("migrate.environments.qa.seeds_dir: is a [migrate] key"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate]\nmin_server_version = \"fifteen\"\n"));
    assert!(message.contains("migrate.min_server_version") && message.contains("major.minor"), "{message}");
    let message = error(&format!("{MINIMAL}\n[migrate.environments.qa]\nconnection = 5\n"));
    assert!(message.contains("may be a secret"), "{message}");
}
