//! The dump manifest, `clusters/<name>/dumps/<id>/manifest`, and the keys of a dump's objects.
//!
//! The manifest is the commit point of a dump (G1): written last, create-only, so a dump is listed
//! exactly when it is complete. It names every object of the dump with its size and BLAKE3 hash,
//! and records, per database, every table's exact row count in the snapshot the dump was taken
//! from, which is what a verification compares a restored copy against. docs/format.md section 7
//! describes the JSON field by field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::cluster::SystemIdentifier;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::object::SealSummary;
use crate::storage::ObjectKey;

pub const FORMAT_NAME: &str = "lifeboat-dump";
pub const FORMAT_VERSION: u32 = 1;

/// The contents of a dump's `manifest` object (JSON, sealed like every object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpManifest {
    /// Always "lifeboat-dump".
    pub format: String,
    pub version: u32,
    pub id: BackupId,
    /// The cluster name the dump was taken under (`clusters/<name>/`).
    pub cluster: String,
    pub system_identifier: SystemIdentifier,
    /// `server_version` of the dumped server, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub server_version: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    /// What `pg_dump --version` printed, e.g. "pg_dump (PostgreSQL) 15.18". Restoring needs a
    /// `pg_restore` of this major version or newer.
    pub pg_dump_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `pg_dumpall --globals-only`: roles, memberships, tablespaces, per-role settings.
    pub globals: GlobalsDump,
    /// One entry per database, in the order they were dumped.
    pub databases: Vec<DatabaseDump>,
}

/// One stored object of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpObject {
    /// The full object key in the repository.
    pub key: String,
    /// Plaintext bytes (what the program wrote).
    pub size: u64,
    /// Bytes stored (compressed, encrypted, framed).
    pub stored_size: u64,
    /// BLAKE3 of the plaintext, 64 lowercase hex digits.
    pub blake3: String,
}

impl DumpObject {
    pub fn new(key: &ObjectKey, summary: &SealSummary) -> DumpObject {
        DumpObject {
            key: key.to_string(),
            size: summary.plaintext_len,
            stored_size: summary.stored_len,
            blake3: summary.recorded_hash().to_hex().to_string(),
        }
    }

    /// The object's key, checked (a manifest read from the repository could hold anything).
    pub fn object_key(&self) -> Result<ObjectKey, crate::storage::InvalidKey> {
        ObjectKey::new(self.key.clone())
    }

    /// Stored size over plaintext size (0.25: the object takes a quarter of the dump's size).
    pub fn ratio(&self) -> f64 {
        if self.size == 0 { 1.0 } else { self.stored_size as f64 / self.size as f64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalsDump {
    /// A plain SQL script for `psql`.
    pub object: DumpObject,
    /// Whether role passwords (their hashes) are included. Reading them needs a superuser; for
    /// anyone else lifeboat passes `--no-role-passwords` and records false.
    pub role_passwords: bool,
}

/// `pg_dump --format=custom` of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseDump {
    /// The database's real name (the object key holds an encoded form).
    pub name: String,
    /// A custom-format archive for `pg_restore`, written without pg_dump's own compression
    /// (the repository compresses).
    pub object: DumpObject,
    /// The exported snapshot both the dump and the row counts were taken in.
    pub snapshot: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Every table whose rows the dump holds, sorted by schema and name.
    pub tables: Vec<TableRows>,
}

impl DatabaseDump {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|table| table.rows).sum()
    }
}

/// The exact number of rows of one table in the dump's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

impl DumpManifest {
    /// The globals object, then each database's, in dump order.
    pub fn objects(&self) -> impl Iterator<Item = &DumpObject> {
        std::iter::once(&self.globals.object).chain(self.databases.iter().map(|database| &database.object))
    }

    /// Plaintext bytes of all its objects: what a restore reads.
    pub fn size(&self) -> u64 {
        self.objects().map(|object| object.size).sum()
    }

    /// Bytes of all its objects as stored (compressed, encrypted, framed).
    pub fn stored_size(&self) -> u64 {
        self.objects().map(|object| object.stored_size).sum()
    }

    /// Plaintext bytes per stored byte (1.0 when nothing was stored), as
    /// [`crate::format::backup_manifest::BackupManifest::compression_ratio`].
    pub fn compression_ratio(&self) -> f64 {
        let stored = self.stored_size();
        if stored == 0 { 1.0 } else { self.size() as f64 / stored as f64 }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("a dump manifest serialises");
        json.push(b'\n');
        json
    }

    /// Parses a manifest, refusing other formats and versions.
    pub fn from_json(bytes: &[u8]) -> Result<DumpManifest, String> {
        let manifest: DumpManifest = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if manifest.format != FORMAT_NAME || manifest.version != FORMAT_VERSION {
            return Err(format!(
                "format {:?} version {}; this lifeboat reads {FORMAT_NAME:?} version {FORMAT_VERSION}",
                manifest.format, manifest.version
            ));
        }
        Ok(manifest)
    }
}

/// The keys of one dump, under `clusters/<name>/dumps/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpKeys {
    /// `clusters/<name>/dumps/<id>`
    dir: String,
}

impl DumpKeys {
    pub fn new(layout: &ClusterLayout, id: BackupId) -> DumpKeys {
        DumpKeys { dir: format!("{}{id}", layout.dumps_prefix()) }
    }

    fn key(&self, suffix: &str) -> ObjectKey {
        ObjectKey::new(format!("{}/{suffix}", self.dir)).expect("dump keys are built from validated parts")
    }

    /// `clusters/<name>/dumps/<id>/`: every object of the dump.
    pub fn prefix(&self) -> String {
        format!("{}/", self.dir)
    }

    /// `.../manifest`: the commit point, written last.
    pub fn manifest(&self) -> ObjectKey {
        self.key("manifest")
    }

    /// `.../data/globals.sql`
    pub fn globals(&self) -> ObjectKey {
        self.key("data/globals.sql")
    }

    /// `.../data/<encoded name>.dump`, see [`encode_database_name`].
    pub fn database(&self, name: &str) -> ObjectKey {
        self.key(&format!("data/{}.dump", encode_database_name(name)))
    }
}

/// A database name as one object key component: lower-case ASCII letters, digits, `_` and `-`
/// stay as they are, every other byte becomes `%XX` (upper-case hex). So any name (PostgreSQL
/// allows every character but NUL) gives a valid component that cannot be `.`, `..`, contain `/`,
/// or start with `.lifeboat-`; and because upper-case letters are escaped too, two names differing
/// only in case never share a file on a case-insensitive file system.
pub fn encode_database_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::id::BackupKind;
    use crate::config::ClusterName;

    #[test]
    fn database_names_become_safe_key_components() {
        assert_eq!(encode_database_name("app_db-2"), "app_db-2");
        assert_eq!(encode_database_name("Sales"), "%53ales");
        assert_eq!(encode_database_name("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_database_name(".."), "%2E%2E");
        assert_eq!(encode_database_name(".lifeboat-x"), "%2Elifeboat-x");
        assert_eq!(encode_database_name("é"), "%C3%A9");
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let id: BackupId = "20261122T033000Z-dump".parse().unwrap();
        let keys = DumpKeys::new(&layout, id);
        for name in ["..", "a/../b", ".lifeboat-tmp", "\\", "%", "Mixed \"Case\""] {
            let key = keys.database(name);
            assert!(key.as_str().starts_with("clusters/main/dumps/20261122T033000Z-dump/data/"), "{key}");
        }
        assert_eq!(keys.manifest().as_str(), "clusters/main/dumps/20261122T033000Z-dump/manifest");
        assert_eq!(keys.globals().as_str(), "clusters/main/dumps/20261122T033000Z-dump/data/globals.sql");
        assert_eq!(keys.prefix(), "clusters/main/dumps/20261122T033000Z-dump/");
        assert_ne!(keys.database("A"), keys.database("a"));
    }

    #[test]
    fn manifests_round_trip_and_refuse_other_versions() {
        let now = Utc::now();
        let object = DumpObject { key: "k".into(), size: 100, stored_size: 25, blake3: "00".repeat(32) };
        let manifest = DumpManifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: BackupId::new(now, BackupKind::Dump),
            cluster: "main".into(),
            system_identifier: SystemIdentifier(7_301_234_567_890_123_456),
            server_version: "15.18".into(),
            server_version_num: 150018,
            pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
            started_at: now,
            finished_at: now,
            globals: GlobalsDump { object: object.clone(), role_passwords: true },
            databases: vec![DatabaseDump {
                name: "app".into(),
                object,
                snapshot: "00000003-00000002-1".into(),
                started_at: now,
                finished_at: now,
                tables: vec![TableRows { schema: "public".into(), table: "t".into(), rows: 3 }],
            }],
        };
        let json = manifest.to_json();
        assert_eq!(DumpManifest::from_json(&json).unwrap(), manifest);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["system_identifier"], "7301234567890123456");
        assert_eq!(value["databases"][0]["tables"][0]["rows"], 3);
        assert_eq!(manifest.databases[0].object.ratio(), 0.25);
        let newer = String::from_utf8(json).unwrap().replace("\"version\": 1", "\"version\": 2");
        assert!(DumpManifest::from_json(newer.as_bytes()).unwrap_err().contains("version 2"));
    }
}
