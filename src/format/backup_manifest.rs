//! The manifest of a physical base backup, `clusters/<name>/backups/<id>/manifest`: everything a
//! restore needs to know about the backup, and the commit point that makes it exist (G1).
//!
//! A backup's data objects (`backups/<id>/data/...`) are written first; the manifest is written
//! last, with a create-only put. A directory `backups/<id>/` without a manifest is the remains of
//! an interrupted backup: it is not a backup, nothing lists it, and the next backup removes it.
//!
//! The manifest is JSON, sealed like every object. `docs/format.md` (section 6) documents every
//! field; these types are the reference implementation, and unknown fields are refused so that a
//! newer format is never half-read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::cluster::SystemIdentifier;
use crate::catalog::id::BackupId;
use crate::catalog::layout::ClusterLayout;
use crate::catalog::lsn::{Lsn, Timeline};
use crate::catalog::wal::{SegmentSize, WalSegment};
use crate::repository::{Repository, RepositoryError};
use crate::storage::{ObjectKey, StorageError};

pub const FORMAT_NAME: &str = "lifeboat-backup";
/// The version written. Version 2 added incremental backups (`incremental`, `block_map`,
/// [`Location::backup`]); version 1 manifests (full backups without a block map) are still read.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version read.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The file name of the manifest inside a backup's directory.
pub const MANIFEST: &str = "manifest";
/// The directory of a backup's data objects, inside the backup's directory.
pub const DATA_DIR: &str = "data";
/// The object holding the BLAKE3 chaining values of the blocks a backup stored
/// ([`crate::backup::blockmap`]), inside the backup's directory.
pub const BLOCK_MAP: &str = "blocks";

/// Where a backup's objects live. An inherent `impl` here rather than in `layout.rs` keeps the
/// backup format's keys next to the format.
impl ClusterLayout {
    /// `clusters/<name>/backups/<id>/`: every object of one backup.
    pub fn backup_dir(&self, id: BackupId) -> String {
        format!("{}{id}/", self.backups_prefix())
    }

    /// `clusters/<name>/backups/<id>/manifest`: the backup's commit point.
    pub fn backup_manifest(&self, id: BackupId) -> ObjectKey {
        self.backup_object(id, MANIFEST)
    }

    /// An object of a backup, by its key relative to the backup's directory (`data/000001`, as
    /// manifests record it).
    pub fn backup_object(&self, id: BackupId, relative: &str) -> ObjectKey {
        ObjectKey::new(format!("{}{relative}", self.backup_dir(id)))
            .expect("backup object keys are built from validated parts")
    }

    /// The backup id and the relative key of one of this cluster's backup objects, if `key` is one.
    pub fn parse_backup_key<'k>(&self, key: &'k ObjectKey) -> Option<(BackupId, &'k str)> {
        let prefix = self.backups_prefix();
        let rest = key.as_str().strip_prefix(prefix.as_str())?;
        let (id, relative) = rest.split_once('/')?;
        Some((id.parse().ok()?, relative))
    }
}

/// How the backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMethod {
    /// `pg_backup_start`/`pg_backup_stop` and lifeboat's own copy of the data directory.
    Native,
    /// `pg_basebackup --format=tar` streamed from a (possibly remote) server: the same files,
    /// the same `backup_label`, restored the same way.
    Basebackup,
}

impl BackupMethod {
    /// The name the manifest stores: `native` or `basebackup`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMethod::Native => "native",
            BackupMethod::Basebackup => "basebackup",
        }
    }
}

/// The manifest of one base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    /// Always "lifeboat-backup".
    pub format: String,
    pub version: u32,
    pub id: BackupId,
    pub method: BackupMethod,
    /// The cluster name it was taken for (`[cluster] name`).
    pub cluster: String,
    /// The PostgreSQL cluster's identity: restores and WAL must come from the same one.
    pub system_identifier: SystemIdentifier,
    /// `server_version_num`, e.g. 150008; the restoring binaries must have the same major version.
    pub postgres_version_num: u32,
    /// `server_version` as the server reports it, e.g. "15.8 (Debian 15.8-0+deb12u1)", for people.
    pub postgres_version: String,
    /// In bytes; WAL file names depend on it.
    pub wal_segment_size: SegmentSize,
    /// The timeline the backup started on (`START TIMELINE` of backup_label).
    pub timeline: Timeline,
    /// Where replay must start: the backup's checkpoint redo point (`pg_backup_start`).
    pub start_lsn: Lsn,
    /// Where replay must at least reach for the copy to be consistent (`pg_backup_stop`).
    pub stop_lsn: Lsn,
    /// The WAL segment holding `start_lsn`: the first one a restore needs.
    pub start_wal: String,
    /// The WAL segment holding the last byte before `stop_lsn`: the last one a restore needs.
    pub stop_wal: String,
    /// Just before `pg_backup_start` was called; the id is this time to the second.
    pub start_time: DateTime<Utc>,
    /// Just after `pg_backup_stop` returned.
    pub stop_time: DateTime<Utc>,
    /// The label given to `pg_backup_start`.
    pub label: String,
    /// The `backup_label` file returned by `pg_backup_stop`; a restore writes it into the data
    /// directory verbatim (it is what makes PostgreSQL start recovery at the right checkpoint).
    pub backup_label: String,
    /// The `tablespace_map` file returned by `pg_backup_stop`, when the cluster has tablespaces.
    pub tablespace_map: Option<String>,
    /// The host lifeboat ran on, for people.
    pub host: String,
    /// The lifeboat version that took the backup.
    pub lifeboat_version: String,
    /// The tablespaces other than pg_default and pg_global, as they were during the backup.
    pub tablespaces: Vec<Tablespace>,
    pub totals: Totals,
    /// For an incremental backup: what it was taken against and what it stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// The block map object (`blocks`): the chaining values of the 8 KiB blocks of the relation
    /// files this backup stored, which the next incremental needs to hash the files it changes.
    /// Absent in version 1 manifests, whose backups cannot be the base of an incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_map: Option<ObjectEntry>,
    /// Every data object of the backup, in key order.
    pub objects: Vec<ObjectEntry>,
    /// Every directory, file and symbolic link of the copy, sorted by path, parents first.
    pub files: Vec<FileEntry>,
}

/// A tablespace: its files are under `pg_tblspc/<oid>/...` in [`BackupManifest::files`], and
/// `pg_tblspc/<oid>` itself is recorded as a symbolic link to `location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tablespace {
    pub oid: u32,
    /// `pg_tablespace.spcname`; `None` for a tablespace created during the backup.
    pub name: Option<String>,
    /// Where it was: the target of the `pg_tblspc/<oid>` link.
    pub location: String,
}

/// Sums over the backup, for `list`/`info` and progress estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Regular files recorded.
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Plaintext bytes of all files (what a restore writes).
    pub bytes: u64,
    /// Bytes of all data objects as stored (compressed and encrypted).
    pub stored_bytes: u64,
    /// Number of data objects.
    pub objects: u64,
    /// Files that disappeared between the directory walk and their copy (dropped tables...).
    /// WAL replay accounts for them; they are not in `files`.
    pub vanished: u64,
}

/// One data object of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    /// Relative to the backup's directory, e.g. `data/000001`.
    pub key: String,
    /// Plaintext length.
    pub size: u64,
    /// Length as stored.
    pub stored_size: u64,
    /// BLAKE3 of the plaintext (lower-case hex).
    pub blake3: String,
    /// How many files' bytes it holds: 1 for a large file's own object, more for a bundle.
    pub files: u64,
}

/// What a [`FileEntry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One directory, file or symbolic link of the data directory (or of a tablespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the data directory, `/`-separated: `base/5/16384`, `pg_tblspc/16390/PG_15_202209061/5/16391`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Files: the number of bytes copied (the size when the copy read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Files: BLAKE3 of the bytes copied (lower-case hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Files: where their bytes are. The file is the concatenation of these pieces, in order:
    /// one for most files, several for a file larger than the part size (each part an object of
    /// its own, so one large file is compressed on several cores), none for an empty file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Symbolic links: the target, as `readlink` returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Where (some of) a file's bytes are: `length` bytes from `offset` of the plaintext of one data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The backup whose directory holds the object, when it is not this backup's own: an
    /// incremental refers to the unchanged bytes of files in the backups of its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupId>,
    /// Relative to the backup's directory, as in [`ObjectEntry::key`].
    pub object: String,
    pub offset: u64,
    pub length: u64,
}

/// What an incremental backup was taken against, and what it stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The backup it was taken against (full or incremental): blocks unchanged since that
    /// backup's start are not stored again.
    pub parent: BackupId,
    /// Every backup whose objects its files refer to, the full backup first and `parent` last.
    /// Restoring it needs all of them; retention keeps them as long as it is kept.
    pub chain: Vec<BackupId>,
    /// How the changed blocks were found.
    pub changes_from: ChangeSource,
    /// Why the WAL could not be used, when `changes_from` is `page-lsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Blocks of relation files stored because they (may have) changed.
    pub changed_blocks: u64,
    /// Files stored whole: new files, files that are not relation files, small files that changed.
    pub whole_files: u64,
    /// Files whose bytes all come from earlier backups.
    pub unchanged_files: u64,
    /// Plaintext bytes this backup stored (changed blocks and whole files): what it cost.
    pub stored_plaintext_bytes: u64,
}

/// Where an incremental backup learned which blocks changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeSource {
    /// The block references of the WAL between the parent's start and this backup's start.
    Wal,
    /// Every relation file read, and each block's page LSN compared with the parent's start
    /// (the WAL was incomplete).
    PageLsn,
}

impl ChangeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::Wal => "wal",
            ChangeSource::PageLsn => "page-lsn",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{location}: there is no backup {id} of cluster {cluster:?} (no {key}); `lifeboat list` shows the backups")]
    NotFound { location: String, cluster: String, id: BackupId, key: ObjectKey },

    #[error("{location}: the manifest {key} is unreadable ({detail})")]
    Invalid { location: String, key: ObjectKey, detail: String },

    #[error(
        "{location}: the manifest {key} has format {format:?} version {version}; this lifeboat reads \
         {FORMAT_NAME:?} versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}: upgrade lifeboat to read it"
    )]
    Unsupported { location: String, key: ObjectKey, format: String, version: u32 },

    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl BackupManifest {
    /// The manifest as stored: compact JSON and a final newline (large backups have many files).
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec(self).expect("a manifest serialises");
        json.push(b'\n');
        json
    }

    /// Parses a stored manifest, refusing other formats and versions by name.
    pub fn from_json(bytes: &[u8], location: &str, key: &ObjectKey) -> Result<BackupManifest, ManifestError> {
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let invalid = |error: serde_json::Error| ManifestError::Invalid {
            location: location.to_owned(),
            key: key.clone(),
            detail: error.to_string(),
        };
        let header: Header = serde_json::from_slice(bytes).map_err(invalid)?;
        if header.format != FORMAT_NAME || !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&header.version) {
            return Err(ManifestError::Unsupported {
                location: location.to_owned(),
                key: key.clone(),
                format: header.format,
                version: header.version,
            });
        }
        let manifest: BackupManifest = serde_json::from_slice(bytes).map_err(invalid)?;
        // Object names become keys under the backup's directory: one that is not a valid key
        // (empty, `..`, doubled `/`) is refused here rather than when a restore builds the key.
        let objects = manifest.objects.iter().chain(&manifest.block_map).map(|object| object.key.as_str());
        let locations = manifest.files.iter().flat_map(|file| &file.locations).map(|location| location.object.as_str());
        if let Some(bad) =
            objects.chain(locations).find(|relative| ObjectKey::new(format!("backup/{relative}")).is_err())
        {
            return Err(ManifestError::Invalid {
                location: location.to_owned(),
                key: key.clone(),
                detail: format!("it names the object {bad:?}, which is not a valid object name"),
            });
        }
        Ok(manifest)
    }

    /// Reads and authenticates the manifest of backup `id`.
    pub async fn read(
        repository: &Repository,
        layout: &ClusterLayout,
        id: BackupId,
    ) -> Result<BackupManifest, ManifestError> {
        let key = layout.backup_manifest(id);
        let bytes = match repository.get_bytes(&key).await {
            Ok(bytes) => bytes,
            Err(RepositoryError::Storage(StorageError::NotFound { .. })) => {
                return Err(ManifestError::NotFound {
                    location: repository.location(),
                    cluster: layout.name().to_string(),
                    id,
                    key,
                });
            }
            Err(error) => return Err(error.into()),
        };
        BackupManifest::from_json(&bytes, &repository.location(), &key)
    }

    /// The first WAL segment a restore of this backup needs.
    pub fn start_segment(&self) -> WalSegment {
        WalSegment::containing(self.timeline, self.start_lsn, self.wal_segment_size)
    }

    /// The last WAL segment a restore of this backup needs to reach consistency: the one holding
    /// the byte just before `stop_lsn`.
    pub fn stop_segment(&self) -> WalSegment {
        WalSegment::containing(self.timeline, Lsn(self.stop_lsn.as_u64().saturating_sub(1)), self.wal_segment_size)
    }

    /// The entry for `path`, if the backup has one.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.binary_search_by(|entry| entry.path.as_str().cmp(path)).ok().map(|index| &self.files[index])
    }

    /// The backups whose objects this one's files refer to, oldest first, itself last: only
    /// itself for a full backup.
    pub fn chain(&self) -> Vec<BackupId> {
        let mut chain = self.incremental.as_ref().map(|incremental| incremental.chain.clone()).unwrap_or_default();
        chain.push(self.id);
        chain
    }

    /// The key of the object a location names, in this backup or one of its chain.
    pub fn location_key(&self, layout: &ClusterLayout, location: &Location) -> ObjectKey {
        layout.backup_object(location.backup.unwrap_or(self.id), &location.object)
    }

    /// Plaintext bytes per stored byte (1.0 when nothing was stored).
    pub fn compression_ratio(&self) -> f64 {
        if self.totals.stored_bytes == 0 { 1.0 } else { self.totals.bytes as f64 / self.totals.stored_bytes as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;

    fn sample() -> BackupManifest {
        let id: BackupId = "20261127T034512Z-full".parse().unwrap();
        BackupManifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id,
            method: BackupMethod::Native,
            cluster: "main".into(),
            system_identifier: SystemIdentifier(7_301_234_567_890_123_456),
            postgres_version_num: 150008,
            postgres_version: "15.8".into(),
            wal_segment_size: SegmentSize::DEFAULT,
            timeline: Timeline::FIRST,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/3000000".parse().unwrap(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            start_time: id.started(),
            stop_time: id.started(),
            label: "lifeboat".into(),
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
            tablespace_map: None,
            host: "db1".into(),
            lifeboat_version: "0.1.0".into(),
            tablespaces: vec![],
            totals: Totals::default(),
            incremental: None,
            block_map: None,
            objects: vec![],
            files: vec![
                FileEntry {
                    path: "PG_VERSION".into(),
                    kind: EntryKind::File,
                    mode: 0o600,
                    mtime: 1_700_000_000,
                    size: Some(3),
                    blake3: Some(blake3::hash(b"15\n").to_hex().to_string()),
                    locations: vec![Location { backup: None, object: "data/000001".into(), offset: 0, length: 3 }],
                    target: None,
                },
                FileEntry {
                    path: "base".into(),
                    kind: EntryKind::Dir,
                    mode: 0o700,
                    mtime: 1_700_000_000,
                    size: None,
                    blake3: None,
                    locations: vec![],
                    target: None,
                },
            ],
        }
    }

    #[test]
    fn manifests_round_trip_and_read_as_documented() {
        let manifest = sample();
        let key = ObjectKey::new("clusters/main/backups/20261127T034512Z-full/manifest").unwrap();
        let json = manifest.to_json();
        assert_eq!(BackupManifest::from_json(&json, "test", &key).unwrap(), manifest);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["format"], "lifeboat-backup");
        assert_eq!(value["method"], "native");
        assert_eq!(value["id"], "20261127T034512Z-full");
        assert_eq!(value["system_identifier"], "7301234567890123456");
        assert_eq!(value["start_lsn"], "0/2000028");
        assert_eq!(value["timeline"], 1);
        assert_eq!(value["files"][0]["locations"][0]["object"], "data/000001");
        assert!(value["files"][1].get("locations").is_none(), "directories carry no locations");
        assert!(value["files"][1].get("size").is_none(), "directories carry no size");
        assert_eq!(value["files"][1]["kind"], "dir");
        // The segments follow from the LSNs: stop 0/3000000 ends in segment 2, not 3.
        assert_eq!(manifest.start_segment().name(SegmentSize::DEFAULT), "000000010000000000000002");
        assert_eq!(manifest.stop_segment().name(SegmentSize::DEFAULT), "000000010000000000000002");
        assert_eq!(manifest.file("base").unwrap().kind, EntryKind::Dir);
        assert!(manifest.file("global").is_none());
    }

    #[test]
    fn other_formats_and_versions_are_refused_by_name() {
        let key = ObjectKey::new("clusters/main/backups/20261127T034512Z-full/manifest").unwrap();
        let mut value = serde_json::to_value(sample()).unwrap();
        value["version"] = 3.into();
        let error = BackupManifest::from_json(&serde_json::to_vec(&value).unwrap(), "test", &key).unwrap_err();
        assert!(error.to_string().contains("version 3") && error.to_string().contains("upgrade"), "{error}");
        value["version"] = 1.into();
        BackupManifest::from_json(&serde_json::to_vec(&value).unwrap(), "test", &key).expect("version 1 is read");
        value["surprise"] = true.into();
        let error = BackupManifest::from_json(&serde_json::to_vec(&value).unwrap(), "test", &key).unwrap_err();
        assert!(error.to_string().contains("surprise"), "{error}");
    }

    #[test]
    fn backup_keys_follow_the_layout() {
        let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
        let id: BackupId = "20261127T034512Z-full".parse().unwrap();
        assert_eq!(layout.backup_dir(id), "clusters/main/backups/20261127T034512Z-full/");
        assert_eq!(layout.backup_manifest(id).as_str(), "clusters/main/backups/20261127T034512Z-full/manifest");
        let data = layout.backup_object(id, "data/000007");
        assert_eq!(data.as_str(), "clusters/main/backups/20261127T034512Z-full/data/000007");
        assert_eq!(layout.parse_backup_key(&data), Some((id, "data/000007")));
        for other in ["clusters/main/backups/junk/x", "clusters/other/backups/20261127T034512Z-full/manifest"] {
            assert_eq!(layout.parse_backup_key(&ObjectKey::new(other).unwrap()), None, "{other}");
        }
    }
}
